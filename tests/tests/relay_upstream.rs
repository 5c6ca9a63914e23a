//! The relay against a scripted upstream on 127.0.0.1 that records every line it reads: the
//! AUTH mechanism chosen from what the upstream offers (LOGIN when there is no PLAIN, XOAUTH2
//! with a token), the MAIL and RCPT parameters it supports forwarded, and a message that needs
//! an extension the upstream lacks refused with the reason.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use e2e::{Smtpd, free_port, python, temp_dir};

/// An upstream offering `extensions` (EHLO lines after the name); returns its port and the
/// lines it read. It serves connections until the test ends.
fn upstream(extensions: &'static [&'static str]) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let _ = w.write_all(b"220 up.test ESMTP\r\n");
            let mut login_step = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_owned();
                log.lock().unwrap().push(l.clone());
                let reply: String = if l.starts_with("EHLO") {
                    let mut s = String::from("250-up.test\r\n");
                    for (i, e) in extensions.iter().enumerate() {
                        let sep = if i + 1 == extensions.len() { ' ' } else { '-' };
                        s.push_str(&format!("250{sep}{e}\r\n"));
                    }
                    s
                } else if l == "AUTH LOGIN" {
                    login_step = 1;
                    "334 VXNlcm5hbWU6\r\n".into()
                } else if login_step == 1 {
                    login_step = 2;
                    "334 UGFzc3dvcmQ6\r\n".into()
                } else if login_step == 2 {
                    login_step = 0;
                    "235 2.7.0 ok\r\n".into()
                } else if l.starts_with("AUTH XOAUTH2 ") || l.starts_with("AUTH PLAIN ") {
                    "235 2.7.0 ok\r\n".into()
                } else if l == "DATA" {
                    let _ = w.write_all(b"354 go\r\n");
                    let mut body = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        body.push_str(&line);
                    }
                    log.lock().unwrap().push(format!("<{} octets>", body.len()));
                    "250 2.0.0 queued\r\n".into()
                } else if l.starts_with("RCPT TO:<nobody@") {
                    "550 5.1.1 <nobody@example.org>: Recipient address rejected: no such user\r\n"
                        .into()
                } else if l == "QUIT" {
                    let _ = w.write_all(b"221 bye\r\n");
                    break;
                } else {
                    "250 2.0.0 ok\r\n".into()
                };
                let _ = w.write_all(reply.as_bytes());
            }
        }
    });
    (port, seen)
}

fn edge(dir: &std::path::Path, port: u16, up: u16, auth: &str) -> String {
    e2e::relay_config(
        dir,
        port,
        "127.0.0.1",
        up,
        "sender_login = \"any\"",
        &format!("timeout_secs = 20\n{auth}"),
    )
}

/// An edge smtpd relaying to a scripted upstream offering `extensions`, with `auth` as its
/// upstream credentials: the server, the lines the upstream read and the edge's port.
fn edge_server(
    name: &str,
    extensions: &'static [&'static str],
    auth: &str,
) -> (Smtpd, Arc<Mutex<Vec<String>>>, u16) {
    let (up, seen) = upstream(extensions);
    let dir = temp_dir(name);
    let port = free_port();
    let srv = Smtpd::start(&dir, &edge(&dir, port, up, auth), port);
    (srv, seen, port)
}

fn send(port: u16, mail_options: &str, rcpt_options: &str) -> String {
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.login('alice', 'wonder land')
try:
    print(s.sendmail('alice@edge.test', ['carol@example.org'], 'Subject: up\r\n\r\nbody\r\n',
                     mail_options={mail_options}, rcpt_options={rcpt_options}))
except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
    print(e.smtp_code, e.smtp_error.decode())
s.quit()
"#
    ))
}

#[test]
fn login_when_no_plain_and_the_parameters_the_upstream_supports() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let (_srv, seen, port) = edge_server(
        "relay-login",
        &["AUTH LOGIN XOAUTH2", "SIZE 1000000", "8BITMIME", "DSN"],
        "username = \"bob\"\npassword = \"builder\"",
    );
    let out = send(
        port,
        "['BODY=8BITMIME', 'RET=HDRS', 'ENVID=QQ314159']",
        "['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;carol@example.org']",
    );
    assert_eq!(out, "{}\n");
    let lines = seen.lock().unwrap().clone();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(lines[0], "EHLO edge.test");
    assert_eq!(&lines[1..4], &["AUTH LOGIN", &b64("bob"), &b64("builder")]);
    // The transaction opens upstream at MAIL: SIZE is the client's declaration (smtplib
    // declares the 21 octets it sends) plus room for our Received header.
    let mail = &lines[4];
    assert_eq!(
        mail,
        &format!(
            "MAIL FROM:<alice@edge.test> SIZE={} BODY=8BITMIME RET=HDRS ENVID=QQ314159",
            21 + 8192
        )
    );
    assert_eq!(
        lines[5],
        "RCPT TO:<carol@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol@example.org"
    );
    assert_eq!(lines[6], "DATA");
    // What arrives: our Received header, then the 21 octets.
    let octets: usize = lines[7]
        .trim_matches(|c| c == '<' || c == '>')
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(octets > 21 + 100 && octets < 21 + 1000, "{}", lines[7]);
    // The connection stays open for the next message (reuse_idle_secs, 30 by default).
    assert_eq!(lines.len(), 8, "{lines:?}");
}

#[test]
fn a_kept_connection_serves_the_next_message_and_closes_after_its_idle_time() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let (_srv, seen, port) = edge_server(
        "relay-reuse",
        &["AUTH PLAIN LOGIN", "8BITMIME"],
        "username = \"bob\"\npassword = \"builder\"\nreuse_idle_secs = 1",
    );
    assert_eq!(send(port, "[]", "[]"), "{}\n");
    assert_eq!(send(port, "[]", "[]"), "{}\n");
    let lines = seen.lock().unwrap().clone();
    let verbs: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.starts_with('<') {
                "<message>"
            } else {
                l.split([' ', ':']).next().unwrap_or("")
            }
        })
        .collect();
    // One session upstream: the second message after RSET, no second EHLO or AUTH.
    assert_eq!(
        verbs,
        [
            "EHLO",
            "AUTH",
            "MAIL",
            "RCPT",
            "DATA",
            "<message>",
            "RSET",
            "MAIL",
            "RCPT",
            "DATA",
            "<message>"
        ],
        "{lines:?}"
    );
    // Idle for its limit: closed with QUIT; the next message opens a new session.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.lock().unwrap().iter().any(|l| l == "QUIT") {
        assert!(
            std::time::Instant::now() < deadline,
            "no QUIT after the idle time"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(send(port, "[]", "[]"), "{}\n");
    let lines = seen.lock().unwrap().clone();
    let quit = lines.iter().position(|l| l == "QUIT").unwrap();
    assert_eq!(lines[quit + 1], "EHLO edge.test", "{lines:?}");
}

#[test]
fn xoauth2_with_a_token_and_refusals_for_missing_extensions() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    // No 8BITMIME, no DSN, no SIZE: DSN parameters are dropped, 8-bit MIME is refused.
    let (_srv, seen, port) = edge_server(
        "relay-xoauth2",
        &["AUTH LOGIN XOAUTH2"],
        "username = \"bob@up.test\"\noauth_token = \"ya29.TOKEN\"",
    );
    assert_eq!(send(port, "['RET=FULL']", "['NOTIFY=NEVER']"), "{}\n");
    let lines = seen.lock().unwrap().clone();
    let ir = base64::engine::general_purpose::STANDARD
        .encode("user=bob@up.test\x01auth=Bearer ya29.TOKEN\x01\x01");
    assert_eq!(lines[1], format!("AUTH XOAUTH2 {ir}"));
    assert_eq!(lines[2], "MAIL FROM:<alice@edge.test>");
    assert_eq!(lines[3], "RCPT TO:<carol@example.org>");
    // A message that needs 8BITMIME is refused at MAIL with the reason, and nothing is sent
    // upstream for it.
    let before = seen.lock().unwrap().len();
    assert_eq!(
        send(port, "['BODY=8BITMIME']", "[]"),
        "554 5.0.0 Upstream refused: the upstream does not accept 8-bit MIME (no 8BITMIME)\n"
    );
    let after = seen.lock().unwrap().clone();
    assert!(
        !after[before..].iter().any(|l| l.starts_with("MAIL")),
        "{after:?}"
    );
}

/// Postfix's `smtp-sink` (installed by `scripts/install-test-tools.sh` when missing) as the
/// upstream, dumping each transaction to a file: the parameters it supports arrive, a message
/// that needs SMTPUTF8 (which it lacks) is refused with the reason.
#[test]
fn relay_into_postfix_smtp_sink() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("relay-sink");
    let dumps = dir.join("dumps");
    let (_sink, up) = e2e::smtp_sink(&dumps);
    let port = free_port();
    let _srv = Smtpd::start(
        &dir,
        &edge(&dir, port, up, "username = \"bob\"\npassword = \"builder\""),
        port,
    );
    let out = send(port, "['BODY=8BITMIME', 'RET=HDRS']", "['NOTIFY=SUCCESS']");
    let refused = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.login('alice', 'wonder land')
try:
    s.sendmail('用户@edge.test', ['carol@example.org'], 'Subject: utf8\r\n\r\nbody\r\n',
               mail_options=['SMTPUTF8'])
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code, e.smtp_error.decode())
s.quit()
"#
    ));
    assert_eq!(out, "{}\n");
    assert_eq!(
        refused,
        "554 5.0.0 Upstream refused: the upstream does not accept UTF-8 addresses (no SMTPUTF8)\n"
    );
    let files: Vec<_> = std::fs::read_dir(&dumps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let dump = std::fs::read_to_string(&files[0]).unwrap();
    // smtp-sink offers 8BITMIME and DSN, not SIZE.
    assert!(
        dump.contains("\nX-Mail-Args: <alice@edge.test> BODY=8BITMIME RET=HDRS\n"),
        "{dump}"
    );
    assert!(
        dump.contains("\nX-Rcpt-Args: <carol@example.org> NOTIFY=SUCCESS\n"),
        "{dump}"
    );
    assert!(dump.contains("\n\tby edge.test with ESMTPA"), "{dump}");
    assert!(
        dump.ends_with("Subject: up\n\nbody\n\n") || dump.ends_with("Subject: up\n\nbody\n"),
        "{dump}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn one_refused_recipient_does_not_fail_the_others() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let (_srv, seen, port) = edge_server(
        "relay-rcpt",
        &["AUTH PLAIN LOGIN", "8BITMIME"],
        "username = \"bob\"\npassword = \"builder\"",
    );
    // smtplib's sendmail returns the refused recipients with the upstream's own reply.
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, local_hostname='client.test', timeout=20)
s.login('alice', 'wonder land')
print(s.sendmail('alice@edge.test', ['carol@example.org', 'nobody@example.org', 'dave@example.org'],
                 'Subject: some\r\n\r\nbody\r\n'))
s.quit()
"#
    ));
    assert_eq!(
        out,
        "{'nobody@example.org': (550, b'5.1.1 <nobody@example.org>: Recipient address rejected: no such user')}\n"
    );
    let lines = seen.lock().unwrap().clone();
    let rcpts: Vec<&String> = lines.iter().filter(|l| l.starts_with("RCPT")).collect();
    assert_eq!(
        rcpts,
        [
            "RCPT TO:<carol@example.org>",
            "RCPT TO:<nobody@example.org>",
            "RCPT TO:<dave@example.org>"
        ]
    );
    // The message went once, to the two the upstream took.
    assert_eq!(lines.iter().filter(|l| *l == "DATA").count(), 1);
}
