//! Authentications per second through `HttpAuthProvider` against a local hyper server, at 1 and
//! 64 concurrent requests, with a bare hyper client doing the same POSTs in the same run as the
//! reference. `cargo xtask bench` prints the ratios.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use smtp_auth::{AuthDecision, AuthRequest, Password, SessionInfo};
use smtp_auth_http::HttpAuthProvider;

const BODY: &str = r#"{"username":"alice","password":"right","mechanism":"PLAIN","remoteIp":"127.0.0.1","heloName":"bench"}"#;

fn request() -> AuthRequest {
    let mut info = SessionInfo::default();
    info.remote_ip = Some("127.0.0.1".parse().unwrap());
    info.helo_name = Some("bench".into());
    AuthRequest::new(
        &info,
        "PLAIN",
        "alice".into(),
        Password::new("right".into()),
        None,
    )
}

/// Runs `iters` batches of `concurrency` tasks made by `task`; returns the elapsed time.
async fn batches<F, Fut>(iters: u64, concurrency: usize, task: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    for _ in 0..iters {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            set.spawn(task());
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(common::serve(common::fixed(200, r#"{"ok":true}"#)));
    let url = server.url();
    let provider = HttpAuthProvider::builder(&url).build().unwrap();
    let bare: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let uri: hyper::Uri = url.parse().unwrap();

    for concurrency in [1usize, 64] {
        let mut g = c.benchmark_group(format!("http_auth_c{concurrency}"));
        g.throughput(Throughput::Elements(concurrency as u64));
        g.measurement_time(Duration::from_secs(4));
        // Both sides run through the same driver, so only the request differs.
        g.bench_function("provider", |b| {
            b.iter_custom(|iters| {
                rt.block_on(batches(iters, concurrency, || {
                    let p = provider.clone();
                    async move { assert_eq!(p.decide(&request()).await, AuthDecision::Ok) }
                }))
            })
        });
        g.bench_function("bare_hyper", |b| {
            b.iter_custom(|iters| {
                rt.block_on(batches(iters, concurrency, || {
                    let (client, uri) = (bare.clone(), uri.clone());
                    async move {
                        let req = hyper::Request::post(uri)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                            .unwrap();
                        let resp = client.request(req).await.unwrap();
                        assert!(
                            !resp
                                .into_body()
                                .collect()
                                .await
                                .unwrap()
                                .to_bytes()
                                .is_empty()
                        );
                    }
                }))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
