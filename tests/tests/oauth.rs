//! `[auth.oauth]` through the real `smtpd` with real clients: curl (`--oauth2-bearer`, which
//! speaks XOAUTH2 or OAUTHBEARER, whichever the server offers) and Python's smtplib speaking
//! OAUTHBEARER by hand, against an identity provider whose JWKS Python's `http.server`
//! publishes, with keys made in the test. Passwords (PLAIN, the users file) work beside tokens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use e2e::{Smtpd, free_port, maildir_messages, python, run, temp_dir, users_file};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

const ISSUER: &str = "https://idp.example.org/realms/mail";

/// An ES256 key: the signing key and its public JWK.
fn key(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    (
        EncodingKey::from_ec_der(&pair.serialize_der()),
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..])}),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(kid: &str, key: &EncodingKey, email: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": "smtp", "email": email,
        "scope": "openid email smtp.send", "exp": now() + 300,
    });
    change(&mut claims);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// Python's http.server publishing `dir/jwks.json` on loopback: the process (killed when
/// dropped) and its port.
fn idp(dir: &Path, keys: &[&Value]) -> (e2e::KillOnDrop, u16) {
    std::fs::write(dir.join("jwks.json"), json!({"keys": keys}).to_string()).unwrap();
    e2e::python_http_server(dir)
}

fn config(dir: &Path, port: u16, jwks_port: u16) -> String {
    let users = users_file(dir, &[("alice@example.org", "wonder land")]);
    format!(
        r#"
[server]
hostname = "mx.example.org"
auth_require_tls = false
auth_failure_delay_ms = 0
auth_timeout_secs = 2
max_auth_failures = 20
max_auth_failures_per_ip = 0
max_auth_failures_per_user = 0
mechanisms = ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[auth.oauth]
jwks_url = "http://127.0.0.1:{jwks_port}/jwks.json"
issuer = "{ISSUER}"
audience = ["smtp"]
scopes = ["smtp.send"]
openid_configuration = "{ISSUER}/.well-known/openid-configuration"
jwks_refetch_secs = 1
[delivery]
kind = "maildir"
path = {maildir:?}
"#,
        maildir = dir.join("Maildir")
    )
}

/// OAUTHBEARER as `user` with `token` (smtplib by hand): the reply to AUTH and, after an error
/// challenge, the reply to the client's dummy response.
fn oauthbearer(port: u16, user: &str, token: &str) -> String {
    python(&format!(
        r#"
import smtplib, base64
s = smtplib.SMTP('127.0.0.1', {port}, timeout=10)
s.ehlo('client.test')
ir = base64.b64encode(('n,a={user},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01').encode()).decode()
code, text = s.docmd('AUTH', 'OAUTHBEARER ' + ir)
if code == 334:
    print(code, base64.b64decode(text).decode())
    code, text = s.docmd('AQ==')
print(code, text.decode())
"#
    ))
    .trim_end()
    .to_owned()
}

/// curl sends `msg` from alice with `token` (`--oauth2-bearer`), with the mechanism it picks or
/// the one given.
fn curl_with_token(
    port: u16,
    token: &str,
    mechanism: Option<&str>,
    msg: &Path,
) -> std::process::Output {
    let mut c = Command::new("curl");
    c.args(["-s", "-S", &format!("smtp://127.0.0.1:{port}"), "--crlf"])
        .args(["--user", "alice@example.org:", "--oauth2-bearer", token]);
    if let Some(m) = mechanism {
        c.args(["--login-options", &format!("AUTH={m}")]);
    }
    c.args([
        "--mail-from",
        "alice@example.org",
        "--mail-rcpt",
        "carol@example.net",
    ])
    .arg("--upload-file")
    .arg(msg);
    run(&mut c)
}

#[test]
fn tokens_are_checked_in_the_server_beside_passwords() {
    setup();
    let dir = temp_dir("oauth");
    let (k1, jwk1) = key("2026-11");
    let idp = idp(&dir, &[&jwk1]);
    let port = free_port();
    let srv = Smtpd::start(&dir, &config(&dir, port, idp.1), port);
    let ok = "235 2.7.0 Authentication successful";
    let refused = "334 {\"status\":\"invalid_token\",\"scope\":\"smtp.send\",\"openid-configuration\":\"https://idp.example.org/realms/mail/.well-known/openid-configuration\"}\n535 5.7.8 Authentication credentials invalid";

    // A good token logs in (OAUTHBEARER), and curl sends mail with one.
    let good = token("2026-11", &k1, "alice@example.org", |_| {});
    assert_eq!(oauthbearer(port, "alice@example.org", &good), ok);
    let msg = dir.join("msg.txt");
    std::fs::write(
        &msg,
        "From: alice@example.org\nSubject: token\n\nsent with a token\n",
    )
    .unwrap();
    let out = curl_with_token(port, &good, None, &msg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = maildir_messages(&dir.join("Maildir"));
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].contains("sent with a token"));

    // Each bad token: the RFC 7628 error challenge with the scope and discovery URL, then 535.
    let cases = [
        (
            "a wrong audience",
            token("2026-11", &k1, "alice@example.org", |c| {
                c["aud"] = json!("webmail")
            }),
        ),
        (
            "a wrong issuer",
            token("2026-11", &k1, "alice@example.org", |c| {
                c["iss"] = json!("https://evil.example/")
            }),
        ),
        (
            "an expired token",
            token("2026-11", &k1, "alice@example.org", |c| {
                c["exp"] = json!(now() - 120)
            }),
        ),
        (
            "a missing scope",
            token("2026-11", &k1, "alice@example.org", |c| {
                c["scope"] = json!("openid email")
            }),
        ),
        (
            "bob's token as alice",
            token("2026-11", &k1, "bob@example.org", |_| {}),
        ),
    ];
    for (what, t) in &cases {
        assert_eq!(oauthbearer(port, "alice@example.org", t), refused, "{what}");
    }
    // XOAUTH2 with bob's token as alice, as curl sends it: refused too.
    let bobs = &cases[4].1;
    let out = curl_with_token(port, bobs, Some("XOAUTH2"), &msg);
    assert_eq!(out.status.code(), Some(67), "login denied");
    assert_eq!(maildir_messages(&dir.join("Maildir")).len(), 1);

    // The identity provider rotates its key: the new kid is fetched and accepted.
    let (k2, jwk2) = key("2026-12");
    std::fs::write(
        dir.join("jwks.json"),
        json!({"keys": [jwk1, jwk2]}).to_string(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let rotated = token("2026-12", &k2, "alice@example.org", |_| {});
    assert_eq!(oauthbearer(port, "alice@example.org", &rotated), ok);

    // SIGHUP drops the keys and remembered tokens: the JWKS is fetched again.
    srv.sighup();
    srv.wait_for_log("OAuth keys and remembered tokens dropped", 1);
    assert_eq!(oauthbearer(port, "alice@example.org", &rotated), ok);
    // XOAUTH2 with a good token, as curl sends it when told to.
    let out = curl_with_token(port, &rotated, Some("XOAUTH2"), &msg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(maildir_messages(&dir.join("Maildir")).len(), 2);
    // Passwords still log in beside tokens.
    let out = python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=10)\nprint(s.login('alice@example.org', 'wonder land')[0])\n"
    ));
    assert_eq!(out.trim(), "235");
    let log = srv.log();
    assert!(log.contains("OAuth tokens checked in the server"), "{log}");
    assert!(!log.contains(&good[..40]), "no token in the log");
    drop(srv);
    drop(idp);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_identity_provider_down_gets_454() {
    setup();
    let dir = temp_dir("oauth-down");
    let (k, _) = key("k");
    let port = free_port();
    // Nothing listens where the JWKS should be.
    let srv = Smtpd::start(&dir, &config(&dir, port, free_port()), port);
    let t = token("k", &k, "alice@example.org", |_| {});
    let started = std::time::Instant::now();
    assert_eq!(
        oauthbearer(port, "alice@example.org", &t),
        "454 4.7.0 Temporary authentication failure"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}
