//! smtp-server with this provider: a real client logs in, the HTTP server decides.

mod common;

use std::time::Duration;

use common::{checks_password, serve};
use smtp_auth_http::HttpAuthProvider;
use smtp_server::{AcceptAll, Server, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn cmd(io: &mut BufReader<tokio::net::TcpStream>, line: &str) -> String {
    io.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    read_reply(io).await
}

async fn read_reply(io: &mut BufReader<tokio::net::TcpStream>) -> String {
    let mut all = Vec::new();
    loop {
        let mut l = String::new();
        io.read_line(&mut l).await.unwrap();
        let l = l.trim_end().to_owned();
        let more = l.as_bytes().get(3) == Some(&b'-');
        all.push(l);
        if !more {
            return all.join("\n");
        }
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn server_logins_decided_over_http() {
    let http = serve(checks_password()).await;
    let provider = HttpAuthProvider::new(&http.url(), "svc-token", 1200).unwrap();
    let cfg = ServerConfig::builder()
        .auth_require_tls(false)
        .auth_failure_delay(Duration::ZERO)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new(cfg, AcceptAll)
            .provider(provider)
            .serve_with_shutdown(listener, async {
                let _ = rx.await;
            }),
    );
    let mut c = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    assert!(read_reply(&mut c).await.starts_with("220"));
    cmd(&mut c, "EHLO client.example").await;
    assert_eq!(
        cmd(&mut c, &format!("AUTH PLAIN {}", b64("\0alice\0wrong"))).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(cmd(&mut c, "AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(cmd(&mut c, &b64("alice")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        cmd(&mut c, &b64("right")).await,
        "235 2.7.0 Authentication successful"
    );
    let seen = http.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer svc-token"));
    let body: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(body["mechanism"], "LOGIN");
    assert_eq!(body["remoteIp"], "127.0.0.1");
    assert_eq!(body["heloName"], "client.example");
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn auth_service_down_is_454() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/auth", listener.local_addr().unwrap());
    drop(listener);
    let cfg = ServerConfig::builder().auth_require_tls(false).build();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        Server::new(cfg, AcceptAll)
            .provider(HttpAuthProvider::new(&dead, "", 1200).unwrap())
            .serve(l),
    );
    let mut c = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    read_reply(&mut c).await;
    cmd(&mut c, "EHLO client.example").await;
    assert_eq!(
        cmd(&mut c, &format!("AUTH PLAIN {}", b64("\0alice\0right"))).await,
        "454 4.7.0 Temporary authentication failure"
    );
}
