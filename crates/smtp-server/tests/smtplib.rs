//! Python's smtplib as a real client: login() with PLAIN and LOGIN, starttls(), sendmail();
//! each checked against what the handler got.
#![cfg(feature = "tokio")]

mod common;

use common::{Recorder, python, start, tls_configs};
use smtp_auth::MemoryProvider;
use smtp_server::{Server, ServerConfig};

#[tokio::test]
async fn starttls_login_and_sendmail() {
    let (server_tls, _, pem) = tls_configs();
    let dir = std::env::temp_dir().join(format!("smtp-server-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let cfg = ServerConfig::builder()
        .tls(server_tls)
        .auth_failure_delay(std::time::Duration::ZERO)
        .build();
    let rec = Recorder::default();
    let users = MemoryProvider::new().with_user("alice", "wonder land");
    let srv = start(Server::new(cfg, rec.clone()).provider(users)).await;
    let port = srv.addr.port();
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.check_hostname = False
for mech in ['PLAIN', 'LOGIN']:
    s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.example', timeout=10)
    s.ehlo()
    print('auth before tls:', 'auth' in s.esmtp_features)
    print(s.starttls(context=ctx)[0])
    s.ehlo()
    print(sorted(s.esmtp_features['auth'].split()))
    s.user, s.password = 'alice', 'wonder land'
    code, msg = s.auth(mech, getattr(s, 'auth_' + mech.lower()))
    print(mech, code, msg.decode())
    refused = s.sendmail('alice@example.org', ['bob@example.net', 'carol@example.net'],
                         'Subject: ' + mech + '\r\n\r\nHello via ' + mech + '\r\n.dot line\r\n')
    print('refused', refused)
    s.quit()
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.example', timeout=10)
s.starttls(context=ctx)
try:
    s.login('alice', 'wrong')
except smtplib.SMTPAuthenticationError as e:
    print('wrong', e.smtp_code, e.smtp_error.decode())
"#,
        ca = ca.to_string_lossy()
    );
    let out = python(script).await;
    assert_eq!(
        out,
        "auth before tls: False\n220\n['LOGIN', 'PLAIN']\nPLAIN 235 2.7.0 Authentication successful\nrefused {}\n\
         auth before tls: False\n220\n['LOGIN', 'PLAIN']\nLOGIN 235 2.7.0 Authentication successful\nrefused {}\n\
         wrong 535 5.7.8 Authentication credentials invalid\n"
    );
    let m = rec.taken();
    assert_eq!(m.len(), 2);
    for (msg, mech) in m.iter().zip(["PLAIN", "LOGIN"]) {
        assert_eq!(msg.from, "<alice@example.org>");
        assert_eq!(msg.to, vec!["<bob@example.net>", "<carol@example.net>"]);
        assert_eq!(msg.login.as_deref(), Some("alice"));
        assert!(msg.tls);
        let expect = format!("Subject: {mech}\r\n\r\nHello via {mech}\r\n.dot line\r\n");
        assert_eq!(String::from_utf8_lossy(&msg.content), expect);
    }
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
