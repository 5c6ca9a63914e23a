//! The `smtpd` binary, spawned on a free loopback port with a temporary configuration, driven by
//! Python's smtplib and curl.

use std::path::Path;
use std::process::Command;

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

use e2e::{
    Smtpd, curl_send, file_config, free_port, http_auth_service, maildir_messages, python, run,
    temp_dir, users_file,
};

#[test]
fn smtplib_plain_login_and_starttls_deliver_to_maildir() {
    setup();
    let dir = temp_dir("smtplib");
    let port = free_port();
    let _srv = Smtpd::start(&dir, &file_config(&dir, port, "", true), port);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.check_hostname = False
def send(mech, tls):
    s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
    if tls:
        s.starttls(context=ctx)
    s.ehlo()
    s.user, s.password = 'alice', 'wonder land'
    code, _ = s.auth(mech, getattr(s, 'auth_' + mech.lower()))
    body = 'Subject: via ' + mech + (' tls' if tls else '') + '\r\n\r\nHello\r\n.leading dot\r\n'
    s.sendmail('alice@mx.test', ['carol@example.org'], body)
    s.quit()
    print(mech, tls, code)
send('PLAIN', False)
send('LOGIN', False)
send('PLAIN', True)
"#,
        ca = dir.join("cert.pem")
    );
    assert_eq!(
        python(&script),
        "PLAIN False 235\nLOGIN False 235\nPLAIN True 235\n"
    );
    let msgs = maildir_messages(&dir.join("Maildir"));
    assert_eq!(msgs.len(), 3);
    let mut seen = Vec::new();
    for m in &msgs {
        let (headers, body) = m.split_once("\r\n\r\n").expect("header/body split");
        assert_eq!(body, "Hello\r\n.leading dot\r\n", "exact body");
        assert!(
            headers
                .starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.test with ESMTP"),
            "{headers}"
        );
        assert!(
            headers.contains("\r\n\t(authenticated user alice)\r\n"),
            "{headers}"
        );
        assert!(
            headers.contains("\r\n\tfor <carol@example.org>;"),
            "{headers}"
        );
        let with = if headers.contains("with ESMTPSA") {
            "ESMTPSA"
        } else if headers.contains("with ESMTPA") {
            "ESMTPA"
        } else {
            "?"
        };
        let subject = headers
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .unwrap_or("")
            .to_owned();
        seen.push((subject, with));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("Subject: via LOGIN".to_owned(), "ESMTPA"),
            ("Subject: via PLAIN".to_owned(), "ESMTPA"),
            ("Subject: via PLAIN tls".to_owned(), "ESMTPSA"),
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn curl_with_user_delivers() {
    setup();
    let dir = temp_dir("curl");
    let port = free_port();
    let srv = Smtpd::start(&dir, &file_config(&dir, port, "", false), port);
    let msg = dir.join("msg.txt");
    std::fs::write(&msg, "Subject: curl\n\nHello from curl\n").unwrap();
    let out = curl_send(port, "bob:builder", "bob@mx.test", "dave@example.org", &msg);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = maildir_messages(&dir.join("Maildir"));
    assert_eq!(msgs.len(), 1, "{}", srv.log());
    assert!(msgs[0].contains("(authenticated user bob)"));
    assert!(
        msgs[0].ends_with("Subject: curl\r\n\r\nHello from curl\r\n"),
        "{}",
        msgs[0]
    );
    // A wrong password: curl fails with 67 (login denied) and nothing is delivered.
    let out = curl_send(port, "bob:nope", "bob@mx.test", "dave@example.org", &msg);
    assert_eq!(out.status.code(), Some(67));
    assert_eq!(maildir_messages(&dir.join("Maildir")).len(), 1);
    srv.wait_for_log(
        "AUTH failed remote_ip=127.0.0.1 user=\"bob\" mechanism=\"PLAIN\" status=\"invalid\"",
        1,
    );
    let log = srv.log();
    assert!(
        log.contains(
            "AUTH failed remote_ip=127.0.0.1 user=\"bob\" mechanism=\"PLAIN\" status=\"invalid\""
        ),
        "{log}"
    );
    assert!(
        !log.contains("nope") && !log.contains("builder"),
        "no password in the log: {log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn refusals_wrong_password_unknown_user_and_auth_required() {
    setup();
    let dir = temp_dir("refusals");
    let port = free_port();
    let _srv = Smtpd::start(&dir, &file_config(&dir, port, "", false), port);
    let script = format!(
        r#"
import smtplib
def attempt(user, pw):
    s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
    try:
        s.login(user, pw)
        print('ok')
    except smtplib.SMTPAuthenticationError as e:
        print(e.smtp_code, e.smtp_error.decode())
    s.quit()
attempt('alice', 'wrong')
attempt('mallory', 'wonder land')
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
print(*s.mail('alice@mx.test'))
s.quit()
"#
    );
    assert_eq!(
        python(&script),
        "535 5.7.8 Authentication credentials invalid\n535 5.7.8 Authentication credentials invalid\n530 b'5.7.0 Authentication required'\n"
    );
    assert!(maildir_messages(&dir.join("Maildir")).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_backend_accepts_rejects_and_reports_outage() {
    setup();
    let url = http_auth_service();
    let dead = {
        let port = free_port();
        format!("http://127.0.0.1:{port}/check")
    };
    for (url, expect) in [
        (
            url.as_str(),
            "235\n535 5.7.8 Authentication credentials invalid\n",
        ),
        (
            dead.as_str(),
            "454 4.7.0 Temporary authentication failure\n454 4.7.0 Temporary authentication failure\n",
        ),
    ] {
        let dir = temp_dir("http");
        let port = free_port();
        let config = format!(
            r#"
[server]
auth_require_tls = false
auth_failure_delay_ms = 0
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "http"
url = "{url}"
bearer_token = "svc"
timeout_ms = 1200
[delivery]
kind = "maildir"
path = {maildir:?}
"#,
            maildir = dir.join("Maildir")
        );
        let _srv = Smtpd::start(&dir, &config, port);
        let script = format!(
            r#"
import smtplib
for pw in ['right', 'wrong']:
    s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
    try:
        print(s.login('alice', pw)[0])
    except (smtplib.SMTPAuthenticationError, smtplib.SMTPResponseException) as e:
        print(e.smtp_code, e.smtp_error.decode())
    s.quit()
"#
        );
        assert_eq!(python(&script), expect, "{url}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The configuration of an edge smtpd (user alice) relaying to `host:up_port` as bob;
/// `extra` adds keys to `[delivery]`.
fn edge_config(dir: &Path, port: u16, host: &str, up_port: u16, extra: &str) -> String {
    e2e::relay_config(
        dir,
        port,
        host,
        up_port,
        "",
        &format!("username = \"bob\"\npassword = \"builder\"\ntimeout_secs = 20\n{extra}"),
    )
}

#[test]
fn relay_to_a_second_smtpd_with_auth() {
    setup();
    let upstream_dir = temp_dir("upstream");
    let up_port = free_port();
    // The edge logs in as bob, the relay account that owns the edge's domain upstream.
    let map = upstream_dir.join("senders");
    std::fs::write(&map, "# relay accounts\n@edge.test: bob\n").unwrap();
    let _up = Smtpd::start(
        &upstream_dir,
        &file_config(
            &upstream_dir,
            up_port,
            &format!(
                "hostname = \"upstream.test\"\nsender_login = \"map\"\nsender_login_map = {map:?}"
            ),
            false,
        )
        .replace("hostname = \"mx.test\"\n", ""),
        up_port,
    );
    let dir = temp_dir("relay");
    let port = free_port();
    let config = edge_config(&dir, port, "127.0.0.1", up_port, "");
    let _edge = Smtpd::start(&dir, &config, port);
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=30)
s.login('alice', 'wonder land')
print(s.sendmail('alice@edge.test', ['erin@example.org'], 'Subject: relayed\r\n\r\nThrough two servers\r\n'))
s.quit()
"#
    );
    assert_eq!(python(&script), "{}\n");
    let msgs = maildir_messages(&upstream_dir.join("Maildir"));
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(
        m.starts_with("Received: from edge.test ([127.0.0.1])\r\n\tby upstream.test with ESMTPA"),
        "{m}"
    );
    assert!(m.contains("(authenticated user bob)"), "{m}");
    assert!(
        m.contains("Received: from client.test ([127.0.0.1])\r\n\tby edge.test with ESMTPA"),
        "{m}"
    );
    assert!(m.contains("(authenticated user alice)"), "{m}");
    assert!(
        m.ends_with("Subject: relayed\r\n\r\nThrough two servers\r\n"),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(upstream_dir);
}

#[test]
fn check_config_names_the_wrong_key() {
    setup();
    let dir = temp_dir("check");
    let users = users_file(&dir, &[("a", "b")]);
    let map_case = format!(
        "[server]\nsender_login = \"map\"\nsender_login_map = \"missing.map\"\n[auth]\nbackend = \"file\"\nusers_file = {users:?}\n"
    );
    let cases = [
        (
            "[server]\nhostname = \"a.b\"\nmax_mesage_size = 5\n",
            "max_mesage_size",
            "line 3",
        ),
        (
            "[server]\nmax_recipients = \"lots\"\n",
            "max_recipients",
            "line 2",
        ),
        (
            "[server]\nmax_message_size = 0\n",
            "server.max_message_size",
            "line 2",
        ),
        ("[[listener]]\naddress = \"nowhere\"\n", "address", "line 2"),
        (
            "[auth]\nbackend = \"http\"\nurl = \"ftp://x\"\n",
            "auth.url",
            "line 3",
        ),
        // The file backend would check an OAuth token as a password.
        (
            "[server]\nmechanisms = [\"PLAIN\", \"XOAUTH2\"]\n",
            "server.mechanisms",
            "XOAUTH2 needs [auth.oauth] (or the http or dovecot backend)",
        ),
        (map_case.as_str(), "server.sender_login_map", "missing.map"),
    ];
    for (i, (text, key, line)) in cases.iter().enumerate() {
        let f = dir.join(format!("bad{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = run(Command::new(e2e::smtpd_bin()).arg("check-config").arg(&f));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(err.contains(key) && err.contains(line), "{text} → {err}");
    }
    let ok = dir.join("ok.toml");
    std::fs::write(
        &ok,
        format!("[auth]\nbackend = \"file\"\nusers_file = {users:?}\n"),
    )
    .unwrap();
    let out = run(Command::new(e2e::smtpd_bin()).arg("check-config").arg(&ok));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_shuts_down_gracefully() {
    setup();
    let dir = temp_dir("sigterm");
    let port = free_port();
    let srv = Smtpd::start(&dir, &file_config(&dir, port, "", false), port);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 64];
    let n = std::io::Read::read(&mut idle, &mut greeting).unwrap();
    assert!(greeting[..n].starts_with(b"220 mx.test"));
    let status = srv.terminate().expect("exits within 15 s");
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut idle, &mut rest);
    assert_eq!(
        rest,
        "421 4.3.2 Service shutting down, closing connection\r\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hash_password_reads_stdin() {
    setup();
    use std::io::Write;
    let mut child = Command::new(e2e::smtpd_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pa ss\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    let users = smtpd::users::FileUsers::parse(&format!("u:{}", hash.trim())).unwrap();
    assert!(users.verify("u", "pa ss"));
}

#[test]
fn relay_over_starttls_with_auth() {
    setup();
    // The upstream offers STARTTLS with a certificate for "localhost" and requires TLS for AUTH.
    let upstream_dir = temp_dir("upstream-tls");
    let up_port = free_port();
    // A relay account that may send as anyone.
    let up_config = file_config(&upstream_dir, up_port, "sender_login = \"any\"", true)
        .replace("auth_require_tls = false", "auth_require_tls = true");
    let _up = Smtpd::start(&upstream_dir, &up_config, up_port);
    let dir = temp_dir("relay-tls");
    let port = free_port();
    let config = edge_config(
        &dir,
        port,
        "localhost",
        up_port,
        &format!(
            "starttls = true\nca_file = {:?}\n",
            upstream_dir.join("cert.pem")
        ),
    );
    let edge = Smtpd::start(&dir, &config, port);
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=30)
s.login('alice', 'wonder land')
print(s.sendmail('alice@edge.test', ['erin@example.org'], 'Subject: over tls\r\n\r\nEncrypted hop\r\n'))
s.quit()
"#
    );
    assert_eq!(python(&script), "{}\n", "{}", edge.log());
    let msgs = maildir_messages(&upstream_dir.join("Maildir"));
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with("Received: from edge.test ([127.0.0.1])\r\n\tby mx.test with ESMTPSA"),
        "{}",
        msgs[0]
    );
    assert!(msgs[0].ends_with("Subject: over tls\r\n\r\nEncrypted hop\r\n"));
    // Without trusting the upstream's certificate the relay refuses to send: 451, nothing lands.
    drop(edge);
    let port2 = free_port();
    let untrusting = config
        .replace(
            &format!("address = \"127.0.0.1:{port}\""),
            &format!("address = \"127.0.0.1:{port2}\""),
        )
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .collect::<Vec<_>>()
        .join("\n");
    let _edge2 = Smtpd::start(&dir, &untrusting, port2);
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port2}, timeout=30)
s.login('alice', 'wonder land')
try:
    s.sendmail('alice@edge.test', ['erin@example.org'], 'Subject: x\r\n\r\ny\r\n')
except smtplib.SMTPDataError as e:
    # A TLS failure waits for the message (it may say `TLS-Required: No`, RFC 8689 §5): this
    # one does not, so it is refused at the end of DATA.
    print(e.smtp_code, e.smtp_error.decode().startswith('4.4.0 Upstream failure: TLS'))
"#
    );
    assert_eq!(python(&script), "451 True\n");
    assert_eq!(maildir_messages(&upstream_dir.join("Maildir")).len(), 1);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(upstream_dir);
}

#[test]
fn scram_sha_256_with_stored_keys() {
    use base64::Engine as _;
    use smtp_auth::ClientMechanism;
    use std::io::{BufRead, BufReader, Write};
    setup();
    let dir = temp_dir("scram");
    let port = free_port();
    // A users file whose line carries SCRAM keys, as `smtpd hash-password --scram` prints.
    let mut child = Command::new(e2e::smtpd_bin())
        .args(["hash-password", "--scram"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pencil\n").unwrap();
    let line = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(line.contains(":$scram-sha-256$4096$"), "{line}");
    let users = dir.join("users");
    std::fs::write(&users, format!("user:{line}")).unwrap();
    let config = format!(
        r#"
[server]
auth_require_tls = false
auth_failure_delay_ms = 0
mechanisms = ["SCRAM-SHA-256", "PLAIN"]
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[delivery]
kind = "discard"
"#
    );
    let _srv = Smtpd::start(&dir, &config, port);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let unb64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    let attempt = |password: &str| -> Vec<String> {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut replies = Vec::new();
        let read_reply = |r: &mut BufReader<std::net::TcpStream>| {
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                let last = l.trim_end().to_owned();
                if last.as_bytes().get(3) != Some(&b'-') {
                    return last;
                }
            }
        };
        read_reply(&mut r);
        w.write_all(b"EHLO client.test\r\n").unwrap();
        replies.push(read_reply(&mut r));
        let mut client = smtp_auth::mechanism::ScramSha256Client::new("user", password, None);
        let first = client.initial_response().unwrap();
        w.write_all(format!("AUTH SCRAM-SHA-256 {}\r\n", b64(first.expose_secret())).as_bytes())
            .unwrap();
        let server_first = read_reply(&mut r);
        let fin = client
            .respond(&unb64(server_first.strip_prefix("334 ").unwrap()))
            .unwrap();
        w.write_all(format!("{}\r\n", b64(fin.expose_secret())).as_bytes())
            .unwrap();
        let reply = read_reply(&mut r);
        if let Some(v) = reply.strip_prefix("334 ") {
            let ack = client.respond(&unb64(v)).unwrap();
            w.write_all(format!("{}\r\n", b64(ack.expose_secret())).as_bytes())
                .unwrap();
            replies.push(read_reply(&mut r));
        } else {
            replies.push(reply);
        }
        replies
    };
    assert_eq!(
        attempt("pencil"),
        vec![
            "250 AUTH SCRAM-SHA-256 PLAIN".to_string(),
            "235 2.7.0 Authentication successful".into()
        ]
    );
    assert_eq!(
        attempt("crayon")[1],
        "535 5.7.8 Authentication credentials invalid"
    );
    // The same line still serves PLAIN with the argon2 hash.
    let out = python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\nprint(s.login('user', 'pencil')[0])\n"
    ));
    assert_eq!(out, "235\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn submission_gets_date_and_message_id_only_when_missing() {
    setup();
    let dir = temp_dir("submission");
    let port = free_port();
    let _srv = Smtpd::start(&dir, &file_config(&dir, port, "", false), port);
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.login('alice', 'wonder land')
s.sendmail('alice@mx.test', ['carol@example.org'], 'Subject: bare\r\n\r\nbody\r\n')
s.sendmail('alice@mx.test', ['carol@example.org'],
    'Date: Tue, 1 Jan 2030 00:00:00 +0000\r\nmessage-id: <keep@example.org>\r\nSubject: full\r\n\r\nDate: in the body\r\n')
s.quit()
print('sent')
"#
    );
    assert_eq!(python(&script), "sent\n");
    let new = dir.join("Maildir/new");
    let mut files: Vec<_> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    // Told apart by content: file names do not sort in sending order (the microseconds in a
    // Maildir name are not zero-padded; this failed once in CI).
    files.sort_by_key(|f| {
        !std::fs::read_to_string(f)
            .unwrap()
            .contains("Subject: bare")
    });
    let bare = std::fs::read_to_string(&files[0]).unwrap();
    let full = std::fs::read_to_string(&files[1]).unwrap();
    // The bare message: Date and Message-ID right after the Received header, then the
    // message exactly as sent. The Message-ID carries the queue id the file is named after.
    let (_, added) = bare
        .split_once("\r\nDate: ")
        .unwrap_or_else(|| panic!("{bare}"));
    let (date, rest) = added.split_once("\r\n").unwrap();
    assert!(
        date.len() >= 29 && date.ends_with(" +0000") && date.contains(", "),
        "{date}"
    );
    let (id, rest) = rest
        .strip_prefix("Message-ID: <")
        .and_then(|r| r.split_once("@mx.test>\r\n"))
        .unwrap_or_else(|| panic!("{rest}"));
    assert_eq!(rest, "Subject: bare\r\n\r\nbody\r\n");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(id), "{name} {id}");
    // Rewritten or renamed, nothing is left behind in tmp/.
    assert_eq!(
        std::fs::read_dir(dir.join("Maildir/tmp")).unwrap().count(),
        0
    );
    // The full message keeps its own fields, once each; a Date: in the body is not a field.
    assert_eq!(full.matches("Date: ").count(), 2, "{full}");
    assert!(!full.contains("Message-ID: <"), "{full}");
    assert!(full.ends_with(
        "\r\nDate: Tue, 1 Jan 2030 00:00:00 +0000\r\nmessage-id: <keep@example.org>\r\nSubject: full\r\n\r\nDate: in the body\r\n"
    ), "{full}");
}

#[test]
fn unauthenticated_mail_is_not_rewritten() {
    setup();
    let dir = temp_dir("submission-anon");
    let port = free_port();
    let config =
        file_config(&dir, port, "", false).replace("auth_required = true", "auth_required = false");
    assert!(config.contains("auth_required = false"));
    let _srv = Smtpd::start(&dir, &config, port);
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.sendmail('someone@example.org', ['alice@mx.test'], 'Subject: relayed in\r\n\r\nbody\r\n')
s.quit()
print('sent')
"#
    );
    assert_eq!(python(&script), "sent\n");
    let msgs = maildir_messages(&dir.join("Maildir"));
    assert_eq!(msgs.len(), 1);
    assert!(!msgs[0].contains("Message-ID:") && !msgs[0].contains("\r\nDate: "));
    let (received, rest) = msgs[0].split_once("\r\nSubject: ").unwrap();
    assert!(
        received.starts_with("Received: from client.test"),
        "{received}"
    );
    assert_eq!(rest, "relayed in\r\n\r\nbody\r\n");
}

#[test]
fn sender_login_map_refuses_every_address_the_login_does_not_own() {
    setup();
    let dir = temp_dir("sender-map");
    let port = free_port();
    let map = dir.join("senders");
    std::fs::write(
        &map,
        "alice@mx.test: alice\n@shared.test: alice, bob\nsales@mx.test: bob\n",
    )
    .unwrap();
    let extra = format!("sender_login = \"map\"\nsender_login_map = {map:?}");
    let _srv = Smtpd::start(&dir, &file_config(&dir, port, &extra, false), port);
    let out = python(&format!(
        r#"
import smtplib
def attempt(user, password, sender):
    s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
    s.login(user, password)
    code, text = s.mail(sender)
    if code == 250:
        s.rcpt('erin@example.org')
        s.data('Subject: from ' + (sender or 'null') + '\r\n\r\nhi\r\n')
    s.quit()
    print(user, sender or '<>', code, text.decode())
attempt('alice', 'wonder land', 'alice@mx.test')
attempt('alice', 'wonder land', 'carol@mx.test')
attempt('alice', 'wonder land', 'sales@mx.test')
attempt('alice', 'wonder land', 'anyone@shared.test')
attempt('bob', 'builder', 'alice@mx.test')
attempt('bob', 'builder', 'sales@mx.test')
attempt('bob', 'builder', '')
"#
    ));
    assert_eq!(
        out,
        "alice alice@mx.test 250 2.1.0 Sender OK\n\
         alice carol@mx.test 553 5.7.1 <carol@mx.test>: Sender address rejected: not owned by user alice\n\
         alice sales@mx.test 553 5.7.1 <sales@mx.test>: Sender address rejected: not owned by user alice\n\
         alice anyone@shared.test 250 2.1.0 Sender OK\n\
         bob alice@mx.test 553 5.7.1 <alice@mx.test>: Sender address rejected: not owned by user bob\n\
         bob sales@mx.test 250 2.1.0 Sender OK\n\
         bob <> 250 2.1.0 Sender OK\n"
    );
    // Only the four accepted senders' messages were delivered.
    let mut subjects: Vec<String> = maildir_messages(&dir.join("Maildir"))
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject: "))
                .map(str::to_owned)
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Subject: from alice@mx.test",
            "Subject: from anyone@shared.test",
            "Subject: from null",
            "Subject: from sales@mx.test"
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// One user per password scheme a users file may hold, each hash written by another
/// implementation (libxcrypt through Python's `crypt`, Python's `hashlib`) except argon2
/// (ours): every one logs in with its password through smtplib and curl, and not with another's.
#[test]
fn a_users_file_with_every_scheme_logs_each_user_in() {
    setup();
    let dir = temp_dir("schemes");
    let port = free_port();
    let lines = python(
        r#"
import base64, crypt, hashlib, warnings
warnings.simplefilter('ignore')
b64 = lambda b: base64.b64encode(b).decode()
phc = lambda b: b64(b).rstrip('=')
salt = b'0123456789abcdef'
out = []
def user(name, stored): out.append('%s:%s' % (name, stored))
user('sha512', crypt.crypt('pw-sha512', crypt.mksalt(crypt.METHOD_SHA512)))
user('sha256', '{SHA256-CRYPT}' + crypt.crypt('pw-sha256', crypt.mksalt(crypt.METHOD_SHA256)))
user('bcrypt', crypt.crypt('pw-bcrypt', '$2b$05$' + 'abcdefghijklmnopqrstuv'))
user('blf', '{BLF-CRYPT}' + crypt.crypt('pw-blf', '$2y$05$' + 'vutsrqponmlkjihgfedcba'))
user('crypt', '{CRYPT}' + crypt.crypt('pw-crypt', crypt.mksalt(crypt.METHOD_SHA512)))
h = hashlib.pbkdf2_hmac('sha256', b'pw-pbkdf2', salt, 1000, 32)
user('pbkdf2', '$pbkdf2-sha256$i=1000,l=32$%s$%s' % (phc(salt), phc(h)))
h = hashlib.pbkdf2_hmac('sha512', b'pw-pbkdf2-512', salt, 1000, 64)
user('pbkdf2x', '$pbkdf2-sha512$i=1000,l=64$%s$%s' % (phc(salt), phc(h)))
h = hashlib.scrypt(b'pw-scrypt', salt=salt, n=16, r=8, p=1, dklen=32)
user('scrypt', '$scrypt$ln=4,r=8,p=1$%s$%s' % (phc(salt), phc(h)))
user('ssha512', '{SSHA512}' + b64(hashlib.sha512(b'pw-ssha512' + b'NaCl').digest() + b'NaCl'))
user('ssha256', '{SSHA256}' + b64(hashlib.sha256(b'pw-ssha256' + b'NaCl').digest() + b'NaCl'))
h = hashlib.pbkdf2_hmac('sha1', b'pw-dovecot', b'saltsalt', 1000, 20).hex()
user('dovecot', '{PBKDF2}$1$saltsalt$1000$' + h)
print('\n'.join(out))
"#,
    );
    let argon = smtpd::users::hash_password("pw-argon2").unwrap();
    let text = format!("{lines}argon2:{argon}\nargon2x:{{ARGON2ID}}{argon}\n");
    let users = dir.join("users");
    std::fs::write(&users, &text).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 13, "{text}");
    let config = format!(
        "[server]\nhostname = \"mx.test\"\nauth_require_tls = false\nauth_failure_delay_ms = 0\n\
         max_auth_failures = 20\nmax_auth_failures_per_ip = 0\nsender_login = \"any\"\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\n\
         [auth]\nbackend = \"file\"\nusers_file = {users:?}\ncache = false\n\
         [delivery]\nkind = \"maildir\"\npath = {:?}\n",
        dir.join("Maildir")
    );
    let _srv = Smtpd::start(&dir, &config, port);
    // Each user's password, and the next user's password (wrong for it).
    let passwords: Vec<String> = names
        .iter()
        .map(|n| match n.as_str() {
            "pbkdf2x" => "pw-pbkdf2-512".to_owned(),
            "argon2x" => "pw-argon2".to_owned(),
            "blf" => "pw-blf".to_owned(),
            "crypt" => "pw-crypt".to_owned(),
            "dovecot" => "pw-dovecot".to_owned(),
            n => format!("pw-{n}"),
        })
        .collect();
    let pairs: Vec<String> = names
        .iter()
        .zip(&passwords)
        .map(|(n, p)| format!("({n:?}, {p:?})"))
        .collect();
    let out = python(&format!(
        r#"
import smtplib
pairs = [{}]
for i, (name, pw) in enumerate(pairs):
    s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)
    wrong = pairs[(i + 1) % len(pairs)][1] if i + 1 < len(pairs) and pairs[i + 1][1] != pw else 'x' + pw
    try:
        s.login(name, wrong)
        print(name, 'logged in with a wrong password')
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e
    s.quit()
    s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)
    code, _ = s.login(name, pw)
    s.sendmail(name + '@mx.test', ['erin@example.org'], 'Subject: ' + name + '\r\n\r\nhi\r\n')
    s.quit()
    print(name, code)
"#,
        pairs.join(", ")
    ));
    let want: String = names.iter().map(|n| format!("{n} 235\n")).collect();
    assert_eq!(out, want);
    assert_eq!(maildir_messages(&dir.join("Maildir")).len(), names.len());
    // curl, for the scheme Dovecot writes by default.
    let msg = dir.join("msg.txt");
    std::fs::write(&msg, "Subject: curl\n\nhi\n").unwrap();
    let out = curl_send(
        port,
        "sha512:pw-sha512",
        "sha512@mx.test",
        "erin@example.org",
        &msg,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        maildir_messages(&dir.join("Maildir")).len(),
        names.len() + 1
    );
    // check-config names the line of an unknown or weak scheme.
    for (line, why) in [
        (
            "carol:$y$j9T$abc$def",
            "line 2: carol: unknown password scheme \"y\"",
        ),
        (
            "carol:{PLAIN}secret",
            "line 2: carol: the PLAIN scheme is weak",
        ),
        (
            "carol:$1$salt$hash",
            "line 2: carol: MD5-crypt ($1$) is not supported",
        ),
    ] {
        std::fs::write(&users, format!("alice:{argon}\n{line}\n")).unwrap();
        let f = dir.join("check.toml");
        std::fs::write(
            &f,
            format!("[auth]\nbackend = \"file\"\nusers_file = {users:?}\n"),
        )
        .unwrap();
        let out = run(Command::new(e2e::smtpd_bin()).arg("check-config").arg(&f));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert!(err.contains(why), "{line} → {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// App passwords: a user with a second, labelled line logs in with either password; the AUTH
/// log line names the credential (also when the credential cache answers); removing the line
/// and sending SIGHUP revokes it while the user's password goes on working.
#[test]
fn an_app_password_logs_in_is_named_in_the_log_and_is_revoked_by_a_reload() {
    setup();
    let dir = temp_dir("app-passwords");
    let port = free_port();
    let primary = smtpd::users::hash_password("wonder land").unwrap();
    let phone = smtpd::users::hash_password("phone-pass-1").unwrap();
    let users = dir.join("users");
    std::fs::write(
        &users,
        format!("alice:{primary}\nalice:{phone}:label=phone\n"),
    )
    .unwrap();
    let config = format!(
        "[server]\nhostname = \"mx.test\"\nauth_require_tls = false\nauth_failure_delay_ms = 0\n\
         sender_login = \"any\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
         [auth]\nbackend = \"file\"\nusers_file = {users:?}\n[delivery]\nkind = \"discard\"\n"
    );
    let srv = Smtpd::start(&dir, &config, port);
    let login = |pw: &str| {
        python(&format!(
            r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)
try:
    print(s.login('alice', {pw:?})[0])
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
s.quit()
"#
        ))
    };
    // Twice: verified, then answered by the credential cache.
    assert_eq!(login("phone-pass-1"), "235\n");
    assert_eq!(login("phone-pass-1"), "235\n");
    assert_eq!(login("wonder land"), "235\n");
    srv.wait_for_log("success=true", 3);
    assert_eq!(
        srv.log().matches("credential=\"phone\"").count(),
        2,
        "{}",
        srv.log()
    );
    assert_eq!(srv.log().matches("credential=\"\"").count(), 1);
    // Revoked: the line goes, SIGHUP.
    std::fs::write(&users, format!("alice:{primary}\n")).unwrap();
    srv.sighup();
    srv.wait_for_log("users file reloaded", 1);
    assert_eq!(login("phone-pass-1"), "535\n");
    assert_eq!(login("wonder land"), "235\n");
    let _ = std::fs::remove_dir_all(dir);
}
