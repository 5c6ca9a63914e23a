//! TLS with certificates made in the test: STARTTLS then AUTH, the STARTTLS injection case
//! (CVE-2011-0411), and implicit TLS.

mod common;

use common::{Client, Recorder, b64, start, tls_configs, tls_connect};
use smtp_auth::MemoryProvider;
use smtp_server::{Server, ServerConfig};
use tokio::io::BufReader;

fn users() -> MemoryProvider {
    MemoryProvider::new().with_user("alice", "wonderland")
}

#[tokio::test]
async fn starttls_then_auth() {
    let (server_tls, client_tls, _) = tls_configs();
    let cfg = ServerConfig::builder()
        .tls(server_tls)
        .auth_failure_delay(std::time::Duration::ZERO)
        .build();
    let rec = Recorder::default();
    let srv = start(Server::new(cfg, rec.clone()).provider(users())).await;
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.ends_with("250 STARTTLS"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let tls = tls_connect(client_tls, c.into_inner()).await;
    let mut c = Client {
        io: BufReader::new(tls),
    };
    // RFC 3207 §4.2: the client must greet again; AUTH before it is refused.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "503 5.5.1 Send HELO/EHLO first"
    );
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS").await, "503 5.5.1 TLS already active");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    c.cmd("MAIL FROM:<alice@example.org>").await;
    c.cmd("RCPT TO:<bob@example.org>").await;
    c.cmd("DATA").await;
    assert_eq!(c.cmd("secret mail\r\n.").await, "250 2.0.0 OK: queued");
    let m = rec.taken();
    assert!(m[0].tls && m[0].authenticated);
    assert_eq!(m[0].login.as_deref(), Some("alice"));
    srv.shutdown().await;
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let (server_tls, client_tls, _) = tls_configs();
    let cfg = ServerConfig::builder().tls(server_tls).build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    // The injection: plaintext commands after STARTTLS in the same packet.
    c.send("STARTTLS\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    let tls = tls_connect(client_tls, c.into_inner()).await;
    let mut c = Client {
        io: BufReader::new(tls),
    };
    // Had MAIL been executed, the greeting would be there and RCPT would get 250.
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert_eq!(
        c.cmd("RCPT TO:<x@y.z>").await,
        "503 5.5.1 Need MAIL command"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn implicit_tls() {
    let (server_tls, client_tls, _) = tls_configs();
    let cfg = ServerConfig::builder()
        .tls(server_tls)
        .implicit_tls(true)
        .build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(users())).await;
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let tls = tls_connect(client_tls, tcp).await;
    let mut c = Client {
        io: BufReader::new(tls),
    };
    assert!(c.reply().await.starts_with("220 localhost"));
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        ehlo.ends_with("250 AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}
