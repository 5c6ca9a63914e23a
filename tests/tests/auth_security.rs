//! AUTH that cannot be fooled, through the real `smtpd` binary and real clients: GNU SASL's
//! `gsasl` for SCRAM-SHA-256-PLUS with `tls-exporter` channel binding and SASLprep, Python's
//! ssl + smtplib for EXTERNAL with a client certificate, curl for a refused XOAUTH2 token, and a
//! TRACE log that never shows a password.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use e2e::{Smtpd, cert_files, ensure_tool, free_port, http_auth_service, python, run, temp_dir};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn wait_for_log(srv: &Smtpd, needle: &str) {
    srv.wait_for_log(needle, 1);
}

/// The password as a user types it on a keyboard that sends decomposed characters: "ä" as
/// `a` + U+0308 and a no-break space. SASLprep turns it into "päss word".
const DECOMPOSED: &str = "pa\u{308}ss\u{a0}word";

fn gsasl(port: u16, ca: &Path, mechanism: &str, password: &str, extra: &[&str]) -> String {
    let out = run(Command::new("gsasl")
        // The certificate names localhost; gsasl checks the name it connected to.
        .args([
            "--smtp",
            &format!("--connect=localhost:{port}"),
            "--starttls",
        ])
        .arg(format!("--x509-ca-file={}", ca.display()))
        .args(["-m", mechanism, "-a", "ana", "-p", password, "--verbose"])
        .args(extra)
        .stdin(std::process::Stdio::null()));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn gsasl_scram_plus_with_channel_binding_and_saslprep() {
    setup();
    ensure_tool("gsasl");
    let dir = temp_dir("gsasl");
    let port = free_port();
    let (cert, key) = cert_files(&dir);
    // The users file holds keys made from the *composed* spelling, as `hash-password --scram`
    // writes them after SASLprep.
    let line = format!(
        "ana:{}:{}\n",
        smtpd::users::hash_password("päss word").unwrap(),
        smtpd::users::scram_keys("päss word").unwrap()
    );
    std::fs::write(dir.join("users"), line).unwrap();
    let config = format!(
        r#"
[server]
hostname = "mx.test"
auth_failure_delay_ms = 0
# AUTH in the clear too, so the enumeration check below can read server-first messages.
auth_require_tls = false
max_auth_failures_per_user = 0
mechanisms = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]
[[listener]]
address = "127.0.0.1:{port}"
tls = "starttls"
[tls]
cert = {cert:?}
key = {key:?}
[auth]
backend = "file"
users_file = "users"
[delivery]
kind = "discard"
"#
    );
    let srv = Smtpd::start(&dir, &config, port);

    // Channel binding with the TLS session's exporter, password typed decomposed.
    let out = gsasl(port, &cert, "SCRAM-SHA-256-PLUS", DECOMPOSED, &[]);
    assert!(
        out.contains("250 AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN"),
        "{out}"
    );
    assert!(
        out.contains("\n235 2.7.0 Authentication successful"),
        "{out}"
    );
    assert!(
        out.contains("server trusted"),
        "gsasl checked our server signature: {out}"
    );
    wait_for_log(
        &srv,
        "mechanism=\"SCRAM-SHA-256-PLUS\" user=\"ana\" success=true",
    );

    // A wrong password over the same binding.
    let out = gsasl(port, &cert, "SCRAM-SHA-256-PLUS", "päss w0rd", &[]);
    assert!(
        out.contains("535 5.7.8 Authentication credentials invalid"),
        "{out}"
    );

    // Plain SCRAM without channel binding still works ("n" flag)...
    let out = gsasl(port, &cert, "SCRAM-SHA-256", DECOMPOSED, &["--no-cb"]);
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
    // ...but a client that can bind and was made to pick SCRAM-SHA-256 although -PLUS was
    // offered ("y" flag) is refused: a downgrade (RFC 5802 §6).
    let out = gsasl(port, &cert, "SCRAM-SHA-256", DECOMPOSED, &[]);
    assert!(!out.contains("235 "), "{out}");
    // ana's right password, asking to act as bob (a=bob): refused, the session is no one's.
    let out = gsasl(
        port,
        &cert,
        "SCRAM-SHA-256-PLUS",
        DECOMPOSED,
        &["-z", "bob"],
    );
    assert!(
        out.contains("535 5.7.8 Authentication credentials invalid"),
        "{out}"
    );
    // a=ana as ana is fine.
    let out = gsasl(
        port,
        &cert,
        "SCRAM-SHA-256-PLUS",
        DECOMPOSED,
        &["-z", "ana"],
    );
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");

    // Enumeration: the salt and iteration count an unknown user gets are the same on every
    // attempt and look like a real user's.
    let salt_of = |user: &str| {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut last = || loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l.as_bytes().get(3) != Some(&b'-') {
                return l.trim_end().to_owned();
            }
        };
        last();
        w.write_all(b"EHLO client.test\r\n").unwrap();
        last();
        let first = b64(format!("n,,n={user},r=fixednonce").as_bytes());
        w.write_all(format!("AUTH SCRAM-SHA-256 {first}\r\n").as_bytes())
            .unwrap();
        let reply = last();
        let text = base64::engine::general_purpose::STANDARD
            .decode(
                reply
                    .strip_prefix("334 ")
                    .unwrap_or_else(|| panic!("{reply}")),
            )
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        text.split_once(",s=").unwrap().1.to_owned()
    };
    let a = salt_of("nobody");
    assert_eq!(a, salt_of("nobody"), "stable for one unknown name");
    assert_ne!(a, salt_of("somebody"));
    let known = salt_of("ana");
    assert_eq!(known, salt_of("ana"));
    let shape = |s: &str| {
        let (salt, iterations) = s.split_once(",i=").unwrap();
        (
            base64::engine::general_purpose::STANDARD
                .decode(salt)
                .unwrap()
                .len(),
            iterations.to_owned(),
        )
    };
    assert_eq!(shape(&a), shape(&known), "{a} vs {known}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A CA, a client certificate it signed, and the client certificate's DER.
fn client_pki(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<u8>,
) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Test client CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "alice");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("client-ca.pem"),
        dir.join("client.pem"),
        dir.join("client-key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path, cert.der().to_vec())
}

#[test]
fn external_with_a_client_certificate_through_python_ssl() {
    setup();
    let dir = temp_dir("external");
    let port = free_port();
    let (cert, key) = cert_files(&dir);
    let (ca, client_cert, client_key, der) = client_pki(&dir);
    std::fs::write(
        dir.join("certs.map"),
        format!(
            "# client certificates\n{} alice\n",
            smtpd::users::ExternalMap::fingerprint(&der)
        ),
    )
    .unwrap();
    let users = e2e::users_file(&dir, &[("alice", "wonder land")]);
    let config = format!(
        r#"
[server]
hostname = "mx.test"
auth_failure_delay_ms = 0
mechanisms = ["EXTERNAL", "PLAIN"]
[[listener]]
address = "127.0.0.1:{port}"
tls = "starttls"
[tls]
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
[auth]
backend = "file"
users_file = {users:?}
external_map = "certs.map"
[delivery]
kind = "maildir"
path = "Maildir"
"#
    );
    let _srv = Smtpd::start(&dir, &config, port);
    let script = |with_cert: bool| {
        format!(
            r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={cert:?})
if {with_cert}:
    ctx.load_cert_chain({client_cert:?}, {client_key:?})
s = smtplib.SMTP('localhost', {port}, timeout=20)
s.starttls(context=ctx)
s.ehlo()
print(s.esmtp_features.get('auth'))
try:
    # Without an initial response: smtplib would send "AUTH EXTERNAL " for an empty one
    # instead of RFC 4954's "=".
    code, text = s.auth('EXTERNAL', lambda challenge=None: '', initial_response_ok=False)
    print(code)
    print(s.sendmail('alice@mx.test', ['bob@example.org'], 'Subject: cert\r\n\r\nSigned in by certificate\r\n'))
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
s.quit()
"#,
            with_cert = if with_cert { "True" } else { "False" },
        )
    };
    assert_eq!(python(&script(true)), " EXTERNAL PLAIN\n235\n{}\n");
    let delivered = e2e::maildir_messages(&dir.join("Maildir"));
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].contains("Signed in by certificate"));
    assert!(delivered[0].contains("alice"), "{}", delivered[0]);
    // No certificate: nothing to authenticate.
    assert_eq!(
        python(&script(false)),
        " EXTERNAL PLAIN\n535 5.7.8 Authentication credentials invalid\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn curl_refused_token_is_counted_and_a_4kb_token_logs_in() {
    setup();
    let url = http_auth_service();
    let dir = temp_dir("xoauth2");
    let port = free_port();
    let config = e2e::http_config(
        port,
        &url,
        "max_auth_failures_per_ip = 1\nmechanisms = [\"XOAUTH2\", \"PLAIN\"]\nsender_login = \"any\"",
        "",
    );
    let curl = |token: &str| {
        let msg = dir.join("msg.txt");
        std::fs::write(&msg, "Subject: t\r\n\r\nx\r\n").unwrap();
        run(Command::new("curl")
            .args(["-sS", &format!("smtp://127.0.0.1:{port}")])
            .args(["--user", "alice:", "--oauth2-bearer", token, "--sasl-ir"])
            .args([
                "--mail-from",
                "alice@example.org",
                "--mail-rcpt",
                "bob@example.org",
            ])
            .arg("--upload-file")
            .arg(&msg))
    };
    {
        // A real access token is 1-4 KB: it arrives on the AUTH line (curl --sasl-ir).
        let srv = Smtpd::start(&dir, &config, port);
        let token = format!("right-{}", "J".repeat(4000));
        let out = curl(&token);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for_log(&srv, "mechanism=\"XOAUTH2\" user=\"alice\" success=true");
    }
    let srv = Smtpd::start(&dir, &config, port);
    // curl hangs up at the error challenge instead of answering it.
    let out = curl("expired-token");
    assert!(!out.status.success());
    wait_for_log(
        &srv,
        "AUTH failed remote_ip=127.0.0.1 user=\"alice\" mechanism=\"XOAUTH2\" status=\"invalid\"",
    );
    // Counted: with a limit of one failure per address the next AUTH is refused.
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
print(s.docmd('AUTH', 'PLAIN ' + __import__('base64').b64encode(b'\0alice\0right').decode()))
"#
    ));
    assert_eq!(
        out,
        "(421, b'4.7.0 Too many failed authentication attempts, closing connection')\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_trace_log_never_shows_a_password() {
    setup();
    let dir = temp_dir("trace");
    let port = free_port();
    let password = "Tr0ub4dor&3-secret";
    let users = e2e::users_file(&dir, &[("alice", password)]);
    let config = format!(
        r#"
[server]
hostname = "mx.test"
auth_failure_delay_ms = 0
auth_require_tls = true
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[delivery]
kind = "discard"
[log]
level = "trace"
"#
    );
    let srv = Smtpd::start(&dir, &config, port);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    reply();
    w.write_all(b"EHLO client.test\r\n").unwrap();
    reply();
    // A client that pipelines LOGIN's answers; the AUTH is refused (no TLS), so both lines
    // are read as commands.
    let (user64, pass64) = (b64(b"alice"), b64(password.as_bytes()));
    w.write_all(format!("AUTH LOGIN\r\n{user64}\r\n{pass64}\r\n").as_bytes())
        .unwrap();
    assert!(reply().starts_with("538 5.7.11"));
    assert!(reply().starts_with("500 "));
    assert!(reply().starts_with("500 "));
    // And PLAIN with the password inside the initial response.
    let plain = b64(format!("\0alice\0{password}").as_bytes());
    w.write_all(format!("AUTH PLAIN {plain}\r\nQUIT\r\n").as_bytes())
        .unwrap();
    reply();
    assert!(reply().starts_with("221"));
    wait_for_log(&srv, "connection");
    let log = srv.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    for secret in [password, pass64.as_str(), plain.as_str()] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_backend_authzid_refused_unless_sent_to_the_service() {
    setup();
    let url = http_auth_service();
    for (send_authzid, expected) in [
        (false, "535 5.7.8 Authentication credentials invalid"),
        (true, "235 2.7.0 Authentication successful"),
    ] {
        let dir = temp_dir("authzid");
        let port = free_port();
        let config = e2e::http_config(port, &url, "", &format!("send_authzid = {send_authzid}"));
        let _srv = Smtpd::start(&dir, &config, port);
        // alice's right password, asking to act as bob (RFC 4616 §2).
        let out = python(&format!(
            r#"
import smtplib, base64
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
code, text = s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'bob\0alice\0right').decode())
print(code, text.decode())
"#
        ));
        assert_eq!(out.trim_end(), expected, "send_authzid = {send_authzid}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_trace_log_of_successful_logins_never_shows_the_password() {
    setup();
    let dir = temp_dir("trace-ok");
    let port = free_port();
    let password = "C0rrect-Horse-battery";
    let users = e2e::users_file(&dir, &[("alice", password)]);
    let config = format!(
        r#"
[server]
hostname = "mx.test"
auth_require_tls = false
sender_login = "any"
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
cache = false
[delivery]
kind = "discard"
[log]
level = "trace"
"#
    );
    let srv = Smtpd::start(&dir, &config, port);
    // LOGIN with pipelined answers, then PLAIN with an initial response, each succeeding, on
    // two connections (a session authenticates once).
    let (user64, pass64) = (b64(b"alice"), b64(password.as_bytes()));
    let plain = b64(format!("\0alice\0{password}").as_bytes());
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
print(s.docmd('AUTH', 'LOGIN {user64}'))
print(s.docmd('{pass64}'))
s.quit()
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
print(s.docmd('AUTH', 'PLAIN {plain}'))
print(s.sendmail('alice@mx.test', ['bob@example.org'], 'Subject: x\r\n\r\nhi\r\n'))
s.quit()
"#
    ));
    assert_eq!(
        out,
        "(334, b'UGFzc3dvcmQ6')\n(235, b'2.7.0 Authentication successful')\n\
         (235, b'2.7.0 Authentication successful')\n{}\n"
    );
    wait_for_log(&srv, "delivered");
    srv.wait_for_log("connection", 2);
    let log = srv.log();
    // Every line at DEBUG and below was written (the command lines among them).
    assert!(log.contains("DEBUG") && log.contains("command"), "{log}");
    assert_eq!(log.matches("success=true").count(), 2, "{log}");
    for secret in [password, pass64.as_str(), plain.as_str()] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Input nodemailer's suite got through, refused by the real server before any backend sees
/// it: user names and authzids with CR, LF, NUL or SASLprep's prohibited output (PLAIN and
/// LOGIN, as smtplib sends them), and a recipient domain with an invisible code point IDNA2008
/// disallows.
#[test]
fn names_with_control_characters_and_invisible_domains_are_refused_before_any_backend() {
    setup();
    let dir = temp_dir("bad-input");
    let port = free_port();
    let (url, asked) = e2e::http_auth_service_counting();
    // Enough failures allowed on one connection and from one address for every case.
    let limits = "hostname = \"mx.test\"\nmax_auth_failures = 20\nmax_auth_failures_per_ip = 0\nmax_errors = 50";
    let config = e2e::http_config(port, &url, limits, "");
    let srv = Smtpd::start(&dir, &config, port);
    let out = python(&format!(
        r#"
import smtplib, base64
b = lambda s: base64.b64encode(s.encode()).decode()
s = smtplib.SMTP("127.0.0.1", {port}, timeout=10)
s.ehlo("client.test")
for msg in ["\0al\rice\0right", "\0ali\nce\0right", "bo\rb\0alice\0right", "\0al\u200eice\0right", "\0a\tb\0right"]:
    print("PLAIN", s.docmd("AUTH", "PLAIN " + b(msg)))
for user in ["al\0ice", "al\rice", "alice\n"]:
    print("LOGIN", s.docmd("AUTH", "LOGIN " + b(user)), s.docmd(b("right")))
# A clean name does reach the backend (and logs in).
print("GOOD", s.docmd("AUTH", "PLAIN " + b("\0alice\0right")))
s.command_encoding = "utf-8"
print("MAIL", s.docmd("MAIL", "FROM:<alice@mx.test> SMTPUTF8"))
for to in ["test@exam\u200bple.com", "test@exam\u2060ple.com", "test@\ufeffexample.com", "test@b\u00fccher.de"]:
    print("RCPT", s.docmd("RCPT", "TO:<" + to + ">"))
s.quit()
"#
    ));
    let malformed = "(501, b'5.5.2 Malformed authentication data')";
    let lines: Vec<&str> = out.lines().collect();
    for l in &lines[..5] {
        assert_eq!(*l, format!("PLAIN {malformed}"), "{out}");
    }
    for l in &lines[5..8] {
        assert!(
            l.starts_with("LOGIN (334, b'UGFzc3dvcmQ6')") && l.ends_with(malformed),
            "{out}"
        );
    }
    assert_eq!(
        lines[8], "GOOD (235, b'2.7.0 Authentication successful')",
        "{out}"
    );
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the clean name reached the backend"
    );
    assert_eq!(lines[9], "MAIL (250, b'2.1.0 Sender OK')", "{out}");
    assert_eq!(
        &lines[10..14],
        [
            r"RCPT (553, b'5.1.3 Invalid international domain name exam\\u{200b}ple.com')",
            r"RCPT (553, b'5.1.3 Invalid international domain name exam\\u{2060}ple.com')",
            r"RCPT (553, b'5.1.3 Invalid international domain name \\u{feff}example.com')",
            "RCPT (250, b'2.1.5 Recipient OK')",
        ],
        "{out}"
    );
    drop(srv);
}
