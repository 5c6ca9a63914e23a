//! The `From:` header bound to the login, through the real `smtpd` with Maildir delivery and
//! Python's smtplib: for each `sender_login` mode, a `From:` (and `Sender:`) the login owns is
//! delivered and one it does not own gets `550 5.7.1` at the end of DATA, with nothing in
//! `new/` and nothing left in `tmp/`; `bind_header_from = false` turns the check off.

use std::path::Path;

use e2e::{Smtpd, free_port, maildir_messages, python, temp_dir, users_file};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

fn start(dir: &Path, mode: &str, extra: &str) -> (Smtpd, u16) {
    let port = free_port();
    let users = users_file(dir, &[("alice", "pw-a"), ("dave@corp.test", "pw-d")]);
    let map = dir.join("senders");
    std::fs::write(&map, "sales@corp.test: alice\n").unwrap();
    let config = format!(
        r#"
[server]
hostname = "mx.test"
auth_required = true
auth_require_tls = false
auth_failure_delay_ms = 0
sender_login = "{mode}"
sender_login_map = {map:?}
{extra}
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[delivery]
kind = "maildir"
path = {maildir:?}
"#,
        maildir = dir.join("Maildir"),
    );
    (Smtpd::start(dir, &config, port), port)
}

/// Sends one message per case as `login`, with `MAIL FROM` `envelope`: each line printed is
/// the end-of-DATA reply.
fn send(port: u16, login: &str, password: &str, envelope: &str, heads: &[&str]) -> Vec<String> {
    let heads: Vec<String> = heads.iter().map(|h| format!("{h:?}")).collect();
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=10)
s.login({login:?}, {password:?})
for head in [{heads}]:
    s.mail({envelope:?})
    s.rcpt("rcpt@example.org")
    code, text = s.data((head + "\r\nSubject: t\r\n\r\nbody\r\n").encode())
    print(code, text.decode())
s.quit()
"#,
        heads = heads.join(", ")
    ));
    out.lines().map(str::to_owned).collect()
}

fn tmp_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("Maildir/tmp"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn the_from_header_is_bound_to_the_login_in_each_sender_login_mode() {
    setup();
    struct Case {
        mode: &'static str,
        login: &'static str,
        password: &'static str,
        envelope: &'static str,
        owned: &'static [&'static str],
        refused: &'static [(&'static str, &'static str)],
    }
    let cases = [
        Case {
            mode: "exact",
            login: "alice",
            password: "pw-a",
            envelope: "alice@mx.test",
            owned: &[
                "From: Alice Liddell <alice@mx.test>",
                "From: alice@mx.test\r\nSender: Alice <alice@mx.test>",
                "From: alice@mx.test, carol@elsewhere.test\r\nSender: alice@mx.test",
            ],
            refused: &[
                (
                    "From: \"alice@mx.test\" <bob@mx.test>",
                    "550 5.7.1 From: header address <bob@mx.test> not owned by user alice",
                ),
                (
                    "From: alice@mx.test\r\nSender: bob@mx.test",
                    "550 5.7.1 Sender: header address <bob@mx.test> not owned by user alice",
                ),
                (
                    "From: alice@mx.test, carol@elsewhere.test",
                    "550 5.7.1 Several From: addresses need a Sender: header field (RFC 5322 §3.6.2)",
                ),
            ],
        },
        Case {
            mode: "domain",
            login: "dave@corp.test",
            password: "pw-d",
            envelope: "dave@corp.test",
            owned: &[
                "From: Erin <erin@corp.test>",
                "From: x@corp.test\r\nSender: dave@corp.test",
            ],
            refused: &[
                (
                    "From: Dave <dave@other.test>",
                    "550 5.7.1 From: header address <dave@other.test> not owned by user dave@corp.test",
                ),
                (
                    "From: dave@corp.test\r\nSender: dave@other.test",
                    "550 5.7.1 Sender: header address <dave@other.test> not owned by user dave@corp.test",
                ),
            ],
        },
        Case {
            mode: "map",
            login: "alice",
            password: "pw-a",
            envelope: "sales@corp.test",
            owned: &[
                "From: Sales <sales@corp.test>",
                "From: sales@corp.test\r\nSender: sales@corp.test",
            ],
            refused: &[
                (
                    "From: ceo@corp.test",
                    "550 5.7.1 From: header address <ceo@corp.test> not owned by user alice",
                ),
                (
                    "From: sales@corp.test\r\nSender: ceo@corp.test",
                    "550 5.7.1 Sender: header address <ceo@corp.test> not owned by user alice",
                ),
            ],
        },
    ];
    for case in cases {
        let dir = temp_dir(&format!("header-from-{}", case.mode));
        let (srv, port) = start(&dir, case.mode, "");
        let heads: Vec<&str> = case
            .owned
            .iter()
            .copied()
            .chain(case.refused.iter().map(|(h, _)| *h))
            .collect();
        let got = send(port, case.login, case.password, case.envelope, &heads);
        let (ok, refused) = got.split_at(case.owned.len());
        for line in ok {
            assert!(
                line.starts_with("250 2.0.0 OK: queued as"),
                "{}: {got:?}",
                case.mode
            );
        }
        let want: Vec<&str> = case.refused.iter().map(|(_, r)| *r).collect();
        assert_eq!(refused, want, "{}", case.mode);
        let delivered = maildir_messages(&dir.join("Maildir"));
        assert_eq!(delivered.len(), case.owned.len(), "{}", case.mode);
        for (m, head) in delivered.iter().zip(case.owned) {
            assert!(m.contains(head), "{}: {m}", case.mode);
        }
        assert!(
            tmp_is_empty(&dir),
            "{}: a refused body left in tmp/",
            case.mode
        );
        srv.wait_for_log(
            "message refused: header sender not owned by user",
            case.refused.len(),
        );
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn any_or_bind_header_from_false_leave_the_header_alone() {
    setup();
    for (mode, extra) in [("any", ""), ("exact", "bind_header_from = false")] {
        let dir = temp_dir(&format!("header-from-off-{mode}"));
        let (srv, port) = start(&dir, mode, extra);
        let got = send(
            port,
            "alice",
            "pw-a",
            "alice@mx.test",
            &["From: president@example.gov"],
        );
        assert!(got[0].starts_with("250 2.0.0 OK"), "{mode}: {got:?}");
        assert_eq!(maildir_messages(&dir.join("Maildir")).len(), 1);
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_spooled_body_written_into_tmp_is_removed_when_its_from_is_refused() {
    setup();
    let dir = temp_dir("header-from-spooled");
    let (srv, port) = start(&dir, "exact", "spool_threshold = 65536");
    let out = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.login("alice", "pw-a")
body = ("x" * 998 + "\r\n") * 2048
for frm in ["bob@mx.test", "alice@mx.test"]:
    s.mail("alice@mx.test")
    s.rcpt("rcpt@example.org")
    code, text = s.data(("From: " + frm + "\r\nSubject: big\r\n\r\n" + body).encode())
    print(code, text.decode())
s.quit()
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "550 5.7.1 From: header address <bob@mx.test> not owned by user alice",
        "{out}"
    );
    assert!(lines[1].starts_with("250 2.0.0 OK: queued as"), "{out}");
    let delivered = maildir_messages(&dir.join("Maildir"));
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].contains("From: alice@mx.test") && delivered[0].len() > 2_000_000);
    assert!(
        tmp_is_empty(&dir),
        "the refused 2 MiB body left a file in tmp/"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
