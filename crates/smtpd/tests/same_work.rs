//! Unknown user, wrong password and locked user through a real server with the file backend:
//! the same reply for the first two, and the same work (one argon2 verification each); a
//! locked user gets the same 454 whether it exists or not, without a verification.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use smtp_server::{AcceptAll, AuthLimiter, ProviderAuthenticator, Server, ServerConfig};
use smtpd::users::{FileUsers, hash_password};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn reply(r: &mut BufReader<TcpStream>) -> String {
    let mut all = Vec::new();
    loop {
        let mut l = String::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut l))
            .await
            .expect("a reply")
            .unwrap();
        let l = l.trim_end().to_owned();
        let more = l.as_bytes().get(3) == Some(&b'-');
        all.push(l);
        if !more {
            return all.join("\n");
        }
    }
}

/// AUTH LOGIN as `user` with `password`: the final reply.
async fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    reply(&mut r).await;
    r.get_mut()
        .write_all(b"EHLO client.test\r\n")
        .await
        .unwrap();
    reply(&mut r).await;
    r.get_mut().write_all(b"AUTH LOGIN\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, "334 VXNlcm5hbWU6");
    r.get_mut()
        .write_all(format!("{}\r\n", b64(user)).as_bytes())
        .await
        .unwrap();
    assert_eq!(reply(&mut r).await, "334 UGFzc3dvcmQ6");
    r.get_mut()
        .write_all(format!("{}\r\n", b64(password)).as_bytes())
        .await
        .unwrap();
    reply(&mut r).await
}

#[tokio::test]
async fn unknown_wrong_and_locked_users_look_alike() {
    let users = FileUsers::parse(&format!("alice:{}\n", hash_password("right").unwrap())).unwrap();
    let cfg = ServerConfig::builder()
        .auth_require_tls(false)
        .auth_failure_delay(Duration::ZERO)
        .build();
    let limiter = Arc::new(AuthLimiter::new(100, 2, Duration::from_secs(60)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(cfg, AcceptAll)
        .authenticator(ProviderAuthenticator::new(users.clone()))
        .limiter(limiter);
    tokio::spawn(server.serve(listener));

    let wrong = login(addr, "alice", "wrong").await;
    assert_eq!(users.verifications(), 1);
    let unknown = login(addr, "mallory", "right").await;
    assert_eq!(
        users.verifications(),
        2,
        "an unknown user costs a verification too"
    );
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, "535 5.7.8 Authentication credentials invalid");

    // Lock both (2 failures each), then: the same 454, and no verification at all.
    login(addr, "alice", "wrong2").await;
    login(addr, "mallory", "x").await;
    let before = users.verifications();
    let locked_known = login(addr, "alice", "right").await;
    let locked_unknown = login(addr, "mallory", "right").await;
    assert_eq!(locked_known, "454 4.7.0 Temporary authentication failure");
    assert_eq!(locked_known, locked_unknown);
    assert_eq!(users.verifications(), before);
}
