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
    let info = SessionInfo {
        remote_ip: Some("127.0.0.1".parse().unwrap()),
        helo_name: Some("bench".into()),
        ..Default::default()
    };
    AuthRequest::new(
        &info,
        "PLAIN",
        "alice".into(),
        Password::new("right".into()),
        None,
    )
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
        g.bench_function("provider", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut set = tokio::task::JoinSet::new();
                        for _ in 0..concurrency {
                            let p = provider.clone();
                            set.spawn(async move { p.decide(&request()).await });
                        }
                        while let Some(r) = set.join_next().await {
                            assert_eq!(r.unwrap(), AuthDecision::Ok);
                        }
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function("bare_hyper", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut set = tokio::task::JoinSet::new();
                        for _ in 0..concurrency {
                            let (client, uri) = (bare.clone(), uri.clone());
                            set.spawn(async move {
                                let req = hyper::Request::post(uri)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                                    .unwrap();
                                let resp = client.request(req).await.unwrap();
                                resp.into_body().collect().await.unwrap().to_bytes().len()
                            });
                        }
                        while let Some(r) = set.join_next().await {
                            assert!(r.unwrap() > 0);
                        }
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
