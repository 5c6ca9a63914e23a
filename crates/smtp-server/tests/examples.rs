//! The examples in `examples/`, each driven by a real client on 127.0.0.1: Python's smtplib
//! for the minimal server and the relayer, raw transcripts for the custom mechanism and the
//! `handle_auth` hook.
#![cfg(feature = "tokio")]

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/minimal.rs"]
mod minimal;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/custom_mechanism.rs"]
mod custom_mechanism;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/handle_auth.rs"]
mod handle_auth;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/relayer.rs"]
mod relayer;

use base64::Engine as _;
use common::{Client, b64, python, start};

fn unb64(reply: &str) -> String {
    let text = reply
        .strip_prefix("334 ")
        .unwrap_or_else(|| panic!("{reply}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn minimal_server_with_smtplib() {
    let inbox = minimal::Inbox::default();
    let srv = start(minimal::server(inbox.clone())).await;
    let port = srv.addr.port();
    let out = python(format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=10)
try:
    s.sendmail('alice@example.org', ['bob@example.net'], 'Subject: no\r\n\r\nx\r\n')
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code)
print(s.login('alice', 'wonderland')[0])
print(s.sendmail('alice@example.org', ['bob@example.net'], 'Subject: hi\r\n\r\nHello\r\n'))
s.quit()
"#
    ))
    .await;
    assert_eq!(out, "530\n235\n{}\n");
    let kept = inbox.0.lock().unwrap().clone();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].login.as_deref(), Some("alice"));
    assert_eq!(kept[0].from, "<alice@example.org>");
    assert_eq!(kept[0].to, vec!["<bob@example.net>".to_string()]);
    assert_eq!(kept[0].content, b"Subject: hi\r\n\r\nHello\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn custom_mechanism_exchange() {
    let srv = start(custom_mechanism::server()).await;
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN X-KNOCK"), "{ehlo}");
    for (password, outcome) in [
        ("nope", "535 5.7.8 Authentication credentials invalid"),
        ("wonderland", "235 2.7.0 Authentication successful"),
    ] {
        assert_eq!(unb64(&c.cmd("AUTH X-KNOCK").await), "Who's there?");
        assert_eq!(unb64(&c.cmd(&b64(b"alice")).await), "alice who?");
        assert_eq!(c.cmd(&b64(password.as_bytes())).await, outcome);
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn handle_auth_hook_runs_its_own_exchange() {
    let srv = start(handle_auth::server()).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    // A blocked account: the hook's own reply, exactly one.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0mallory\0whatever")))
            .await,
        "535 5.7.8 This account is blocked"
    );
    // X-PIN, driven by the hook with challenges.
    assert_eq!(unb64(&c.cmd("AUTH X-PIN").await), "User?");
    assert_eq!(unb64(&c.cmd(&b64(b"carol")).await), "PIN?");
    assert_eq!(
        c.cmd(&b64(b"0000")).await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(unb64(&c.cmd("AUTH X-PIN").await), "User?");
    assert_eq!(unb64(&c.cmd(&b64(b"carol")).await), "PIN?");
    assert_eq!(
        c.cmd(&b64(b"1234")).await,
        "235 2.7.0 Authentication successful"
    );
    // Built-in mechanisms still work on another connection.
    let mut d = Client::connect(srv.addr).await;
    d.cmd("EHLO client.example").await;
    assert_eq!(
        d.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn relayer_passes_mail_upstream_and_hands_back_refusals() {
    // The upstream: the minimal example's server with the relay's account.
    let upstream_inbox = minimal::Inbox::default();
    let upstream = start(minimal::server(upstream_inbox.clone())).await;
    let relay = relayer::Relay {
        upstream: upstream.addr,
        user: "alice".into(),
        password: "wonderland".into(),
    };
    let users = smtp_auth::MemoryProvider::new().with_user("dave", "secret");
    let srv = start(relayer::server(relay, users)).await;
    let port = srv.addr.port();
    let out = python(format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
print(s.login('dave', 'secret')[0])
print(s.sendmail('dave@example.org', ['erin@example.net', 'frank@example.net'], 'Subject: via relay\r\n\r\n.leading dot\r\nbody\r\n'))
s.quit()
"#
    ))
    .await;
    assert_eq!(out, "235\n{}\n");
    let got = upstream_inbox.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].login.as_deref(), Some("alice"));
    assert_eq!(got[0].from, "<dave@example.org>");
    assert_eq!(got[0].to.len(), 2);
    assert_eq!(
        got[0].content,
        b"Subject: via relay\r\n\r\n.leading dot\r\nbody\r\n"
    );
    srv.shutdown().await;

    // An upstream that refuses the relay's login: its reply reaches the client.
    let relay = relayer::Relay {
        upstream: upstream.addr,
        user: "alice".into(),
        password: "wrong".into(),
    };
    let users = smtp_auth::MemoryProvider::new().with_user("dave", "secret");
    let srv = start(relayer::server(relay, users)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.cmd(&format!("AUTH PLAIN {}", b64(b"\0dave\0secret")))
        .await;
    c.cmd("MAIL FROM:<dave@example.org>").await;
    c.cmd("RCPT TO:<erin@example.net>").await;
    c.cmd("DATA").await;
    assert_eq!(
        c.cmd("Subject: x\r\n\r\ny\r\n.").await,
        "535 5.7.8 Authentication credentials invalid"
    );
    srv.shutdown().await;
    upstream.shutdown().await;
}
