//! Sending limits (`[rate_limits]`) through the real `smtpd` and Python's smtplib: each limit
//! crossed (messages and recipients per login, messages per address without a login), what
//! counts is what was accepted, a per-login override reloaded on SIGHUP, the refusal's log
//! line and metric, and Redis gone: the instance counts alone. The fleet sharing one budget
//! through Redis behind HAProxy is in `fleet.rs`.

use std::path::Path;
use std::process::Command;

use e2e::{Smtpd, free_port, python, run, temp_dir, users_file};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

fn config(dir: &Path, port: u16, metrics: u16, server: &str, extra: &str) -> String {
    let users = users_file(dir, &[("alice", "pw-a"), ("bob", "pw-b")]);
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
backend = "file"
users_file = {users:?}
[delivery]
kind = "maildir"
path = {maildir:?}
[metrics]
address = "127.0.0.1:{metrics}"
{extra}
"#,
        maildir = dir.join("Maildir"),
    )
}

/// Runs `script` (smtplib session lines using `s`, `r` formats a reply) on a connection to
/// `port`, logged in as `login` unless it is empty; prints what the script prints.
fn session(port: u16, login: &str, script: &str) -> Vec<String> {
    let auth = if login.is_empty() {
        String::new()
    } else {
        format!("s.login({login:?}, 'pw-' + {login:?}[0])")
    };
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo('client.test')
{auth}
r = lambda t: print('%d %s' % (t[0], t[1].decode()))
{script}
s.quit()
"#
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

fn scrape(port: u16) -> String {
    let out = run(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/metrics")]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const QUEUED: &str = "250 2.0.0 OK: queued as";

/// Three messages from `sender` (as `login` unless empty), each sent only if its MAIL is
/// accepted: asserts the first two were queued and returns the third MAIL's reply.
fn three_messages(port: u16, login: &str, sender: &str) -> String {
    let out = session(
        port,
        login,
        &format!(
            r#"
for i in range(3):
    code = s.mail({sender:?})
    r(code)
    if code[0] == 250:
        s.rcpt('postmaster@mx.test'); r(s.data(b'Subject: x\r\n\r\nx\r\n'))
"#
        ),
    );
    assert_eq!(
        out.iter().filter(|l| l.starts_with(QUEUED)).count(),
        2,
        "{out:?}"
    );
    out.last().cloned().unwrap_or_default()
}

#[test]
fn each_login_is_held_to_its_messages_and_recipients_per_hour() {
    setup();
    let dir = temp_dir("send-login");
    let (port, mport) = (free_port(), free_port());
    let overrides = dir.join("overrides");
    std::fs::write(&overrides, "# bob sends more\nbob: 10, 10\n").unwrap();
    let limits = format!(
        "[rate_limits]\nmessages_per_hour = 3\nrecipients_per_hour = 4\noverrides = {overrides:?}\n"
    );
    let srv = Smtpd::start(&dir, &config(&dir, port, mport, "", &limits), port);
    let out = session(
        port,
        "alice",
        r#"
# A transaction that ends in RSET counts nothing; nor does a message refused at DATA.
r(s.mail('alice@mx.test')); r(s.rcpt('a@example.org')); r(s.rcpt('b@example.org')); s.rset()
r(s.mail('alice@mx.test')); r(s.rcpt('a@example.org'))
r(s.data(b'From: mallory@mx.test\r\nSubject: t\r\n\r\nx\r\n'))
# Two recipients, accepted: 1 message, 2 recipients spent.
r(s.mail('alice@mx.test')); r(s.rcpt('a@example.org')); r(s.rcpt('b@example.org'))
r(s.data(b'Subject: 1\r\n\r\nx\r\n'))
# Two more recipients fit; the third does not (4 per hour).
r(s.mail('alice@mx.test')); r(s.rcpt('c@example.org')); r(s.rcpt('d@example.org')); r(s.rcpt('e@example.org'))
r(s.data(b'Subject: 2\r\n\r\nx\r\n'))
# No recipient left: a third message gets its MAIL but no RCPT.
r(s.mail('alice@mx.test')); r(s.rcpt('f@example.org')); s.rset()
"#,
    );
    let want_prefix = [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "550 5.7.1 From: header address <mallory@mx.test> not owned by user alice",
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
    ];
    assert_eq!(&out[..9], want_prefix, "{out:?}");
    assert!(out[9].starts_with(QUEUED), "{out:?}");
    assert_eq!(
        &out[10..14],
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.1.5 Recipient OK",
            "452 4.5.3 Sending limit reached: 4 recipients per hour for user alice, try again later",
        ],
        "{out:?}"
    );
    assert!(out[14].starts_with(QUEUED), "{out:?}");
    assert_eq!(
        &out[15..],
        [
            "250 2.1.0 Sender OK",
            "452 4.5.3 Sending limit reached: 4 recipients per hour for user alice, try again later",
        ]
    );
    // bob's override lifts his budget over the defaults: four messages go.
    let bob = session(
        port,
        "bob",
        r#"
for i in range(4):
    r(s.mail('bob@mx.test')); r(s.rcpt('a@example.org')); r(s.data(b'Subject: b\r\n\r\nx\r\n'))
"#,
    );
    assert_eq!(
        bob.iter().filter(|l| l.starts_with(QUEUED)).count(),
        4,
        "{bob:?}"
    );
    // alice: 2 messages spent of 3; one more, then the fourth MAIL is refused.
    std::fs::write(&overrides, "bob: 10, 10\nalice: 3, 100\n").unwrap();
    srv.sighup();
    srv.wait_for_log("sending limit overrides reloaded", 1);
    let out = session(
        port,
        "alice",
        r#"
r(s.mail('alice@mx.test')); r(s.rcpt('a@example.org')); r(s.data(b'Subject: 3\r\n\r\nx\r\n'))
r(s.mail('alice@mx.test'))
"#,
    );
    assert!(out[2].starts_with(QUEUED), "{out:?}");
    assert_eq!(
        out[3],
        "450 4.7.1 Sending limit reached: 3 messages per hour for user alice, try again later"
    );
    // A broken overrides file is refused and the old one stays in force.
    std::fs::write(&overrides, "alice 1 1\n").unwrap();
    srv.sighup();
    srv.wait_for_log("sending limit overrides reload refused", 1);
    let out = session(port, "bob", "r(s.mail('bob@mx.test'))");
    assert_eq!(out, ["250 2.1.0 Sender OK"]);
    // Each refusal: a log line and a metric, by limit.
    let log = srv.log();
    assert!(
        log.contains("recipient refused: sending limit reached remote_ip=127.0.0.1 user=alice limit=\"recipients_per_hour\" value=4"),
        "{log}"
    );
    assert!(
        log.contains("message refused: sending limit reached remote_ip=127.0.0.1 user=\"alice\" limit=\"messages_per_hour\" value=3"),
        "{log}"
    );
    let m = scrape(mport);
    assert!(
        m.contains("smtpd_policy_refusals_total{reason=\"recipients_per_hour\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("smtpd_policy_refusals_total{reason=\"messages_per_hour\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("smtpd_policy_refusals_total{reason=\"header_sender\"} 1"),
        "{m}"
    );
    drop(srv);
}

#[test]
fn an_address_that_did_not_log_in_is_held_to_its_messages_per_hour() {
    setup();
    let dir = temp_dir("send-ip");
    let (port, mport) = (free_port(), free_port());
    let limits = "[rate_limits]\nip_messages_per_hour = 2\nmessages_per_hour = 0\n";
    let srv = Smtpd::start(
        &dir,
        &config(&dir, port, mport, "auth_required = false", limits),
        port,
    );
    assert_eq!(
        three_messages(port, "", "sender@example.org"),
        "450 4.7.1 Sending limit reached: 2 messages per hour for 127.0.0.1, try again later"
    );
    // A login is counted per login instead (messages_per_hour = 0: no limit).
    let out = session(
        port,
        "alice",
        "r(s.mail('alice@mx.test')); s.rcpt('a@example.org'); r(s.data(b'Subject: x\\r\\n\\r\\nx\\r\\n'))",
    );
    assert!(out[1].starts_with(QUEUED), "{out:?}");
    assert!(
        scrape(mport).contains("smtpd_policy_refusals_total{reason=\"ip_messages_per_hour\"} 1")
    );
    drop(srv);
}

#[test]
fn with_redis_gone_the_instance_counts_alone() {
    setup();
    let dir = temp_dir("send-noredis");
    let (port, mport, dead) = (free_port(), free_port(), free_port());
    let extra = format!(
        "[rate_limits]\nmessages_per_hour = 2\n[limiter]\nredis = \"127.0.0.1:{dead}\"\ntimeout_ms = 200\n"
    );
    let srv = Smtpd::start(&dir, &config(&dir, port, mport, "", &extra), port);
    assert_eq!(
        three_messages(port, "alice", "alice@mx.test"),
        "450 4.7.1 Sending limit reached: 2 messages per hour for user alice, try again later"
    );
    srv.wait_for_log("shared limiter: Redis unreachable", 1);
    assert_eq!(
        srv.log()
            .matches("shared limiter: Redis unreachable")
            .count(),
        1
    );
    let m = scrape(mport);
    let fallbacks: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("smtpd_auth_limiter_fallbacks_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(fallbacks >= 3, "{m}");
    drop(srv);
}
