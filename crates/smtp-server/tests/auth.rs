//! AUTH over real sockets: every reply of RFC 4954 the server sends, with exact texts.
#![cfg(feature = "tokio")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Recorder, b64, plain_config, start};
use smtp_auth::{AuthDecision, AuthRequest, MemoryProvider, provider_fn};
use smtp_server::{Server, ServerConfig};

fn users() -> MemoryProvider {
    MemoryProvider::new().with_user("alice", "wonderland")
}

fn plain(user: &str, pw: &str) -> String {
    b64(format!("\0{user}\0{pw}").as_bytes())
}

#[tokio::test]
async fn plain_success_invalid_and_login_data() {
    let rec = Recorder::default();
    let srv = start(Server::new(plain_config().build(), rec.clone()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.ends_with("\n250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "nope")))
            .await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "503 5.5.1 Already authenticated"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.org> AUTH=<>").await,
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.net>").await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(c.cmd("DATA").await, "354 End data with <CR><LF>.<CR><LF>");
    assert_eq!(
        c.cmd("Subject: hi\r\n\r\nHello\r\n.").await,
        "250 2.0.0 OK: queued"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    let m = rec.taken();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].login.as_deref(), Some("alice"));
    assert!(m[0].authenticated);
    assert_eq!(m[0].auth, Some(smtp_proto::AuthParam::Unknown));
    assert_eq!(m[0].content, b"Subject: hi\r\n\r\nHello\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn login_prompts_cancel_and_errors() {
    let srv =
        start(Server::new(plain_config().build(), Recorder::default()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "503 5.5.1 Send HELO/EHLO first");
    c.cmd("EHLO client.example").await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd("*").await, "501 5.7.0 Authentication cancelled");
    assert_eq!(
        c.cmd("AUTH PLAIN !!!").await,
        "501 5.5.2 Cannot decode response"
    );
    assert_eq!(
        c.cmd("AUTH CRAM-MD5").await,
        "504 5.5.4 Unrecognized authentication type"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(b"alice")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&b64(b"wonderland")).await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn auth_inside_a_transaction_is_503() {
    let srv =
        start(Server::new(plain_config().build(), Recorder::default()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.cmd("MAIL FROM:<a@b.c>").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "503 5.5.1 AUTH not permitted during a mail transaction"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn provider_failure_is_454() {
    let failing = provider_fn(|_req: AuthRequest| async { AuthDecision::Failure });
    let srv =
        start(Server::new(plain_config().build(), Recorder::default()).provider(failing)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x"))).await,
        "454 4.7.0 Temporary authentication failure"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn without_authenticator_every_attempt_is_535() {
    let srv = start(Server::new(plain_config().build(), Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "535 5.7.8 Authentication credentials invalid"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn tls_required_by_default() {
    let srv =
        start(Server::new(ServerConfig::default(), Recorder::default()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH not advertised before TLS: {ehlo}"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    assert_eq!(c.cmd("STARTTLS").await, "454 4.7.0 TLS not available");
    srv.shutdown().await;
}

#[tokio::test]
async fn auth_required_gates_mail() {
    let cfg = plain_config().auth_required(true).build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c>").await,
        "530 5.7.0 Authentication required"
    );
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
        .await;
    assert_eq!(c.cmd("MAIL FROM:<a@b.c>").await, "250 2.1.0 Sender OK");
    srv.shutdown().await;
}

#[tokio::test]
async fn too_many_failures_closes_with_421() {
    let cfg = plain_config().max_auth_failures(2).build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "1"))).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "2"))).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many failed authentication attempts, closing connection"
    );
    assert_eq!(c.reply().await, "", "connection closed");
    srv.shutdown().await;
}

#[tokio::test]
async fn failures_are_limited_per_ip_across_connections() {
    let cfg = plain_config()
        .max_auth_failures(10)
        .max_auth_failures_per_ip(3, Duration::from_secs(60))
        .build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(users())).await;
    for _ in 0..3 {
        let mut c = Client::connect(srv.addr).await;
        c.cmd("EHLO client.example").await;
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x"))).await,
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "421 4.7.0 Too many failed authentication attempts, closing connection"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn provider_sees_remote_ip_and_helo() {
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let s2 = seen.clone();
    let p = provider_fn(move |req: AuthRequest| {
        s2.lock().unwrap().push((
            req.remote_ip.clone(),
            req.helo_name.clone(),
            req.mechanism.clone(),
        ));
        async { AuthDecision::Ok }
    });
    let srv = start(Server::new(plain_config().build(), Recorder::default()).provider(p)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x"))).await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![("127.0.0.1".into(), "client.example".into(), "PLAIN".into())]
    );
    srv.shutdown().await;
}

/// A PROXY-protocol server whose provider accepts everyone and records each `remote_ip`.
async fn proxy_server_recording_ips() -> (Arc<Mutex<Vec<String>>>, common::Running) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let p = provider_fn(move |req: AuthRequest| {
        s2.lock().unwrap().push(req.remote_ip.clone());
        async { AuthDecision::Ok }
    });
    let cfg = plain_config().proxy_protocol(true).build();
    (
        seen,
        start(Server::new(cfg, Recorder::default()).provider(p)).await,
    )
}

#[tokio::test]
async fn proxy_protocol_address_reaches_the_provider() {
    let (seen, srv) = proxy_server_recording_ips().await;
    let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(s),
    };
    c.send("PROXY TCP4 203.0.113.9 10.0.0.1 40000 587\r\n")
        .await;
    assert!(c.reply().await.starts_with("220 "));
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("a", "b"))).await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["203.0.113.9".to_string()]
    );
    // A connection without the header is dropped.
    let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(s),
    };
    c.send("EHLO client.example\r\n").await;
    assert_eq!(c.reply().await, "");
    // A v1 header that does not match the format exactly aborts the connection: a bad
    // destination address, a port with a leading zero, a double space.
    for bad in [
        "PROXY TCP4 203.0.113.9 10.0.0.999 40000 587\r\n",
        "PROXY TCP4 203.0.113.9 10.0.0.1 040000 587\r\n",
        "PROXY TCP4 203.0.113.9  10.0.0.1 40000 587\r\n",
    ] {
        let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let mut c = Client {
            io: tokio::io::BufReader::new(s),
        };
        c.send(&format!("{bad}EHLO client.example\r\n")).await;
        assert_eq!(c.reply().await, "", "{bad}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn excluded_mechanism_is_neither_listed_nor_accepted() {
    let cfg = plain_config().exclude_mechanism("LOGIN").build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.ends_with("\n250 AUTH PLAIN"), "{ehlo}");
    assert_eq!(
        c.cmd("AUTH LOGIN").await,
        "504 5.5.4 Unrecognized authentication type"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn scram_and_cram_with_a_secret_store() {
    use smtp_auth::mechanism::ScramSha256Client;
    use smtp_auth::{ClientMechanism, Registry};
    use smtp_server::ProviderAuthenticator;
    let cfg = plain_config().registry(Registry::all_builtin()).build();
    let auth = ProviderAuthenticator::new(users()).with_secrets(users());
    let srv = start(Server::new(cfg, Recorder::default()).authenticator(auth)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    let mut scram = ScramSha256Client::new("alice", "wonderland", None);
    let first = scram.initial_response().unwrap();
    let r = c
        .cmd(&format!(
            "AUTH SCRAM-SHA-256 {}",
            b64(first.expose_secret())
        ))
        .await;
    use base64::Engine as _;
    let dec = |r: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(r.strip_prefix("334 ").unwrap())
            .unwrap()
    };
    let fin = scram.respond(&dec(&r)).unwrap();
    let r = c.cmd(&b64(fin.expose_secret())).await;
    let ack = scram.respond(&dec(&r)).unwrap();
    assert_eq!(
        c.cmd(&b64(ack.expose_secret())).await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn tower_layers_compose_with_a_provider() {
    use tower::ServiceBuilder;
    // A provider that never answers in time, behind tower's timeout and concurrency limit.
    let slow = provider_fn(|_req: AuthRequest| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        AuthDecision::Ok
    });
    let layered = ServiceBuilder::new()
        .concurrency_limit(4)
        .timeout(Duration::from_millis(200))
        .service(slow);
    let srv =
        start(Server::new(plain_config().build(), Recorder::default()).provider(layered)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    let t = std::time::Instant::now();
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x"))).await,
        "454 4.7.0 Temporary authentication failure"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // And a fast provider through the same layers succeeds.
    let fast = ServiceBuilder::new()
        .concurrency_limit(4)
        .timeout(Duration::from_secs(5))
        .service(users());
    let srv2 = start(Server::new(plain_config().build(), Recorder::default()).provider(fast)).await;
    let mut c = Client::connect(srv2.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
    srv2.shutdown().await;
}

#[tokio::test]
async fn the_server_bounds_a_hanging_authenticator() {
    let hang = provider_fn(|_req: AuthRequest| async {
        std::future::pending::<()>().await;
        AuthDecision::Ok
    });
    let cfg = plain_config()
        .auth_timeout(Duration::from_millis(200))
        .build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(hang)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "x"))).await,
        "454 4.7.0 Temporary authentication failure"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn proxy_protocol_v2_address_reaches_the_provider() {
    let (seen, srv) = proxy_server_recording_ips().await;
    let s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut c = Client {
        io: tokio::io::BufReader::new(s),
    };
    // v2 signature, PROXY command, TCP over IPv6, 36 octets of addresses.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    header.extend_from_slice(
        &"2001:db8::42"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend_from_slice(&[0x9c, 0x40, 0x02, 0x4b]);
    // The header and the first command in one packet: nothing after the header is lost.
    header.extend_from_slice(b"EHLO client.example\r\n");
    c.send_bytes(&header).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.reply().await.starts_with("250-localhost"));
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("a", "b"))).await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["2001:db8::42".to_string()]
    );
    srv.shutdown().await;
}
