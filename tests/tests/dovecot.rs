//! The Dovecot identity store, against a real Dovecot (Debian's `dovecot-core`) started by each
//! test from its own configuration in a temporary folder: the library provider and proxy over
//! the Unix socket and TCP, and `smtpd` with `backend = "dovecot"` driven by smtplib, swaks and
//! gsasl, with Dovecot down and hanging.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Dovecot, Smtpd, doveadm_hash, free_port, maildir_messages, python, run, temp_dir};
use smtp_auth::sasl::Response;
use smtp_auth::{AuthDecision, AuthRequest, AuthStatus, Password, SecretBytes, SessionInfo};
use smtp_auth_dovecot::{
    DovecotClient, DovecotConfig, DovecotProvider, Endpoint, Proxy, ProxyStep, RequestInfo,
};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

/// One user per scheme Dovecot writes, each with the password `pw-<user>`.
const SCHEMES: [(&str, &str); 7] = [
    ("sha512", "SHA512-CRYPT"),
    ("sha256", "SHA256-CRYPT"),
    ("blf", "BLF-CRYPT"),
    ("ssha512", "SSHA512"),
    ("pbkdf2", "PBKDF2"),
    ("argon", "ARGON2ID"),
    ("scram", "SCRAM-SHA-256"),
];

fn passwd() -> String {
    SCHEMES
        .iter()
        .map(|(u, s)| format!("{u}:{}\n", doveadm_hash(s, &format!("pw-{u}"))))
        .collect()
}

fn request(user: &str, password: &str) -> AuthRequest {
    let mut info = SessionInfo::default();
    info.remote_ip = Some("127.0.0.1".parse().unwrap());
    info.local_ip = Some("127.0.0.1".parse().unwrap());
    AuthRequest::new(
        &info,
        "PLAIN",
        user.into(),
        Password::new(password.into()),
        None,
    )
}

fn client(endpoint: &str, timeout: Duration) -> DovecotClient {
    let mut c = DovecotConfig::new(Endpoint::parse(endpoint).unwrap());
    c.timeout = timeout;
    c.connections = 2;
    // Dovecot's per-address penalty would delay each request after a failure from
    // 127.0.0.1 by up to 15 s (smtpd's tests of the penalty's key are in config.rs).
    c.penalty = false;
    DovecotClient::new(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_and_the_proxy_against_a_real_dovecot() {
    let dir = temp_dir("dovecot-lib");
    let mut dovecot = Dovecot::start(&dir, &passwd(), "plain login scram-sha-256");
    let socket = dovecot.socket.display().to_string();
    for endpoint in [socket.clone(), dovecot.tcp()] {
        let provider = DovecotProvider::new(client(&endpoint, Duration::from_secs(5)));
        for (user, scheme) in SCHEMES {
            assert_eq!(
                provider.check(&request(user, &format!("pw-{user}"))).await,
                AuthDecision::Ok,
                "{user} ({scheme}) over {endpoint}"
            );
            assert_eq!(
                provider.check(&request(user, "pw-wrong")).await,
                AuthDecision::Invalid,
                "{user} with a wrong password"
            );
        }
        assert_eq!(
            provider.check(&request("nobody", "pw-nobody")).await,
            AuthDecision::Invalid
        );
        // Many logins at once share the two connections (the protocol numbers them).
        let many: Vec<_> = (0..40)
            .map(|i| {
                let p = provider.clone();
                let (user, _) = SCHEMES[i % 4];
                tokio::spawn(async move {
                    let right = i % 2 == 0;
                    let pw = if right {
                        format!("pw-{user}")
                    } else {
                        "x".into()
                    };
                    (right, p.check(&request(user, &pw)).await)
                })
            })
            .collect();
        for h in many {
            let (right, d) = h.await.unwrap();
            let want = if right {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            };
            assert_eq!(d, want);
        }
    }

    // LOGIN runs inside Dovecot: its challenges reach the caller, its answer names the user.
    let c = client(&socket, Duration::from_secs(5));
    let mut info = RequestInfo::default();
    info.remote_ip = Some("192.0.2.9".parse().unwrap());
    info.local_ip = Some("127.0.0.1".parse().unwrap());
    info.secured = true;
    let (mut proxy, step) = Proxy::start(&c, "LOGIN", &info, None).await;
    let ProxyStep::Challenge(ch) = step else {
        panic!("{step:?}")
    };
    assert_eq!(ch, b"Username:");
    let data = |s: &str| Response::Data(SecretBytes::new(s.as_bytes().to_vec()));
    let ProxyStep::Challenge(ch) = proxy.respond(data("blf")).await else {
        panic!("no password challenge")
    };
    assert_eq!(ch, b"Password:");
    let ProxyStep::Done(r) = proxy.respond(data("pw-blf")).await else {
        panic!("not done")
    };
    assert!(r.is_success(), "{r}");
    assert_eq!(r.auth_data.unwrap().login(), Some("blf"));
    // A wrong password: invalid, and the failure names its user (for the limiter).
    let (mut proxy, _) = Proxy::start(&c, "LOGIN", &info, None).await;
    proxy.respond(data("blf")).await;
    let ProxyStep::Done(r) = proxy.respond(data("nope")).await else {
        panic!("not done")
    };
    assert_eq!(r.status, AuthStatus::Invalid);
    assert_eq!(r.auth_data.unwrap().login(), Some("blf"));
    // Dovecot saw the client's address, not ours.
    let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap();
    assert!(
        log.contains("passwd-file(blf,192.0.2.9): Password mismatch"),
        "{log}"
    );
    // The client cancels: the exchange ends without asking Dovecot.
    let (mut proxy, _) = Proxy::start(&c, "LOGIN", &info, None).await;
    let ProxyStep::Done(r) = proxy.respond(Response::Cancelled).await else {
        panic!("not done")
    };
    assert_eq!(r.status, AuthStatus::Cancelled);
    // A mechanism Dovecot does not offer.
    let (_, step) = Proxy::start(&c, "CRAM-MD5", &info, None).await;
    assert!(
        matches!(&step, ProxyStep::Done(r) if r.status == AuthStatus::UnknownMechanism),
        "{step:?}"
    );

    // Dovecot down: a temporary failure, quickly; back up: the same client logs in again.
    let provider = DovecotProvider::new(c.clone());
    dovecot.daemon.stop();
    let started = Instant::now();
    assert_eq!(
        provider.check(&request("sha512", "pw-sha512")).await,
        AuthDecision::Failure
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A client that must connect learns why it cannot. (The pooled one may still hold a
    // connection whose end it has not read yet: its handshake would answer.)
    let e = client(&socket, Duration::from_secs(5))
        .mechanisms()
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("Dovecot unavailable: {socket}: ")),
        "{e}"
    );
    dovecot.daemon.resume_service();
    assert_eq!(
        provider.check(&request("sha512", "pw-sha512")).await,
        AuthDecision::Ok
    );

    // Hanging: the timeout answers.
    let slow = DovecotProvider::new(client(&socket, Duration::from_millis(500)));
    assert_eq!(
        slow.check(&request("sha512", "pw-sha512")).await,
        AuthDecision::Ok
    );
    dovecot.daemon.freeze();
    assert_eq!(
        slow.check(&request("sha512", "pw-sha512")).await,
        AuthDecision::Failure
    );
    dovecot.daemon.thaw();
    assert_eq!(
        slow.check(&request("sha512", "pw-sha512")).await,
        AuthDecision::Ok
    );

    // No secret in what the types show.
    let shown = format!(
        "{c:?} {provider:?} {:?} {e}",
        request("sha512", "pw-sha512")
    );
    assert!(!shown.contains("pw-sha512"), "{shown}");
    drop(dovecot);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[server]` gets `server` lines (its mechanisms among them), `[auth]` `auth` lines.
fn smtpd_config(
    port: u16,
    socket: &str,
    maildir: &std::path::Path,
    server: &str,
    auth: &str,
) -> String {
    format!(
        r#"
[server]
hostname = "mx.test"
auth_require_tls = false
auth_failure_delay_ms = 0
{server}
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "dovecot"
socket = "{socket}"
{auth}
[delivery]
kind = "maildir"
path = {maildir:?}
"#
    )
}

#[test]
fn smtpd_logs_in_through_dovecot_with_smtplib_swaks_and_gsasl() {
    setup();
    let dir = temp_dir("dovecot-smtpd");
    let passwd = format!(
        "alice:{}\ncarol:{}\n",
        doveadm_hash("SHA512-CRYPT", "wonder land"),
        doveadm_hash("SCRAM-SHA-256", "pencil")
    );
    let dovecot = Dovecot::start(&dir, &passwd, "plain login scram-sha-256");
    let (port, metrics) = (free_port(), free_port());
    let maildir = dir.join("Maildir");
    let config = smtpd_config(
        port,
        &dovecot.socket.display().to_string(),
        &maildir,
        "mechanisms = [\"PLAIN\", \"LOGIN\", \"SCRAM-SHA-256\"]",
        // Three failures from 127.0.0.1 would slow the next logins by Dovecot's penalty.
        "penalty = false",
    ) + &format!("[metrics]\naddress = \"127.0.0.1:{metrics}\"\n");
    let srv = Smtpd::start(&dir, &config, port);
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
print(s.ehlo()[1].decode().splitlines()[-1])
try:
    s.login('alice', 'wrong')
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
s.user, s.password = 'alice', 'wonder land'
print(s.auth('PLAIN', s.auth_plain)[0])
s.sendmail('alice@mx.test', ['bob@example.org'], 'Subject: via dovecot\r\n\r\nHello\r\n')
s.quit()
"#
    ));
    assert_eq!(
        out,
        "AUTH PLAIN LOGIN SCRAM-SHA-256\n535 5.7.8 Authentication credentials invalid\n235\n"
    );
    e2e::swaks_send(
        port,
        "alice",
        "wonder land",
        "alice@mx.test",
        "bob@example.org",
        "swaks through dovecot",
    );
    let msgs = maildir_messages(&maildir);
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        assert!(m.contains("\r\n\t(authenticated user alice)\r\n"), "{m}");
    }
    assert!(msgs.iter().any(|m| m.ends_with("\r\n\r\nHello\r\n")));
    assert!(msgs.iter().any(|m| m.contains("swaks through dovecot")));

    // SCRAM-SHA-256 runs inside Dovecot against its {SCRAM-SHA-256} hash: gsasl verifies
    // Dovecot's server signature through us.
    let gsasl = |password: &str| e2e::gsasl_scram(port, "carol", password);
    let out = gsasl("pencil");
    assert!(
        out.contains("\n235 2.7.0 Authentication successful"),
        "{out}"
    );
    assert!(out.contains("server trusted"), "{out}");
    let out = gsasl("crayon");
    assert!(
        out.contains("535 5.7.8 Authentication credentials invalid"),
        "{out}"
    );
    srv.wait_for_log("mechanism=\"SCRAM-SHA-256\" user=\"carol\" success=true", 1);
    // A name with NUL or CR in SCRAM's first message is refused by us, as the server's own
    // exchange refuses it, before Dovecot sees it: in the initial response, and in the answer
    // to Dovecot's first (empty) challenge.
    let out = python(&format!(
        r#"
import base64, smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.ehlo()
first = lambda name: base64.b64encode(b'n,,n=' + name + b',r=fyko+d2lbbFgONRv9qkxdawL').decode()
print(*s.docmd('AUTH', 'SCRAM-SHA-256 ' + first(b'car\0ol')))
print(s.docmd('AUTH', 'SCRAM-SHA-256')[0])
print(*s.docmd(first(b'car\rol')))
s.quit()
"#
    ));
    assert_eq!(
        out,
        "501 b'5.5.2 Malformed authentication data'\n334\n501 b'5.5.2 Malformed authentication data'\n"
    );

    // Requests that reached Dovecot: alice's wrong password twice (smtplib's login tries PLAIN,
    // then LOGIN), her right one once, carol's SCRAM twice; swaks's LOGIN was answered by the
    // credential cache.
    let text =
        run(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{metrics}/metrics")]));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    for line in [
        "smtpd_auth_store_requests_total{store=\"dovecot\",outcome=\"ok\"} 2",
        "smtpd_auth_store_requests_total{store=\"dovecot\",outcome=\"invalid\"} 3",
        "smtpd_credential_cache_hits_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    // SIGHUP reconnects the store and empties the credential cache: alice's next login (cached
    // until now) asks Dovecot again.
    srv.sighup();
    srv.wait_for_log(
        "identity store reconnected, credential cache emptied store=\"dovecot\"",
        1,
    );
    let again = python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\nprint(s.login('alice', 'wonder land')[0])\n"
    ));
    assert_eq!(again, "235\n");
    let text =
        run(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{metrics}/metrics")]));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let line = "smtpd_auth_store_requests_total{store=\"dovecot\",outcome=\"ok\"} 3";
    assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    let log = srv.log();
    for secret in ["wonder land", "pencil", "crayon"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    drop(srv);
    drop(dovecot);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smtpd_answers_454_while_dovecot_is_down_or_hangs_and_logs_in_once_it_is_back() {
    setup();
    let dir = temp_dir("dovecot-down");
    let passwd = format!("alice:{}\n", doveadm_hash("BLF-CRYPT", "wonder land"));
    let mut dovecot = Dovecot::start(&dir, &passwd, "plain login scram-sha-256");
    let port = free_port();
    // No cache: every login asks Dovecot. Two seconds for each of its answers.
    let config = smtpd_config(
        port,
        &dovecot.tcp(),
        &dir.join("Maildir"),
        "auth_timeout_secs = 2\nmechanisms = [\"PLAIN\", \"LOGIN\"]",
        "cache = false",
    );
    let _srv = Smtpd::start(&dir, &config, port);
    let login = || -> (String, Duration) {
        let started = Instant::now();
        let out = python(&format!(
            r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)
s.ehlo()
try:
    print(s.login('alice', 'wonder land')[0])
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
"#
        ));
        (out, started.elapsed())
    };
    assert_eq!(login().0, "235\n");
    // Dovecot offers SCRAM-SHA-256, smtpd does not: it is not relayed.
    let out = python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\ns.ehlo()\n\
         print(*s.docmd('AUTH', 'SCRAM-SHA-256 biwsbj11c2VyLHI9YWJj'))\n"
    ));
    assert_eq!(out, "504 b'5.5.4 Unrecognized authentication type'\n");
    dovecot.daemon.stop();
    let (out, took) = login();
    assert_eq!(out, "454 4.7.0 Temporary authentication failure\n");
    assert!(took < Duration::from_secs(5), "{took:?}");
    dovecot.daemon.resume_service();
    assert_eq!(login().0, "235\n");
    dovecot.daemon.freeze();
    let (out, took) = login();
    assert_eq!(out, "454 4.7.0 Temporary authentication failure\n");
    assert!(
        took >= Duration::from_secs(2),
        "{took:?}: answered before the timeout"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    dovecot.daemon.thaw();
    assert_eq!(login().0, "235\n");
    drop(dovecot);
    let _ = std::fs::remove_dir_all(&dir);
}
