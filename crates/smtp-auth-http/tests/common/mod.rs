//! A real hyper 1 server on 127.0.0.1 that records requests and answers as told.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// How to answer: status, body, delay before answering.
pub type Answer = Arc<dyn Fn(&Seen) -> (u16, Vec<u8>, Duration) + Send + Sync>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("http://{}/auth", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub async fn serve(answer: Answer) -> TestServer {
    serve_with(answer, None).await
}

/// With `tls`, the server speaks HTTPS.
pub async fn serve_with(answer: Answer, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c2.fetch_add(1, Ordering::SeqCst);
            let (seen, answer, tls) = (s2.clone(), answer.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap_or("").to_owned())
                        };
                        let mut s = Seen {
                            method: req.method().to_string(),
                            path: req.uri().path().to_owned(),
                            content_type: header("content-type"),
                            authorization: header("authorization"),
                            body: Vec::new(),
                        };
                        s.body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        seen.lock().unwrap().push(s.clone());
                        let (status, body, delay) = answer(&s);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                match tls {
                    Some(cfg) => {
                        let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        seen,
        connections,
    }
}

pub fn fixed(status: u16, body: &'static str) -> Answer {
    Arc::new(move |_| (status, body.as_bytes().to_vec(), Duration::ZERO))
}

/// `{"ok":true}` when the password is "right", else `{"ok":false}`.
pub fn checks_password() -> Answer {
    Arc::new(|s: &Seen| {
        let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        let ok = v["password"] == "right";
        (200, format!("{{\"ok\":{ok}}}").into_bytes(), Duration::ZERO)
    })
}
