//! The AUTH-failure log line fail2ban reads, through the real `smtpd` and the real
//! `fail2ban-regex` with the filter shipped in `docs/deploy/fail2ban/`: in the text and the
//! JSON log formats it finds every address that failed and nothing else (not the address
//! that logged in, not one that only hit a temporary failure, not an address written into a
//! user name).

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{Smtpd, ensure_tool, free_port, python, run, temp_dir, users_file};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

fn filter() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy/fail2ban/filter.d/smtpd.conf")
}

/// Logs in from several loopback addresses: 127.0.0.2 and 127.0.0.3 fail (127.0.0.3 with a
/// user name that names another address), 127.0.0.4 logs in, 127.0.0.5 fails with a
/// malformed exchange.
fn clients(port: u16) {
    python(&format!(
        r#"
import smtplib, base64
def session(src, cmds):
    s = smtplib.SMTP("127.0.0.1", {port}, timeout=10, source_address=(src, 0))
    s.ehlo("client.test")
    out = [s.docmd("AUTH", c)[0] for c in cmds]
    s.quit()
    return out
b = lambda t: base64.b64encode(t.encode()).decode()
assert session("127.0.0.2", ["PLAIN " + b("\0alice\0wrong"), "PLAIN " + b("\0nobody\0x")]) == [535, 535]
assert session("127.0.0.3", ["PLAIN " + b('\0x remote_ip=10.9.9.9 "\0wrong')]) == [535]
assert session("127.0.0.4", ["PLAIN " + b("\0alice\0wonder land")]) == [235]
assert session("127.0.0.5", ["PLAIN " + b("no-nul-at-all")]) == [501]
"#
    ));
}

/// The addresses `fail2ban-regex` finds in `log`, one per matched line, sorted.
fn found(dir: &Path, log: &str) -> Vec<String> {
    let file = dir.join("smtpd.log");
    std::fs::write(&file, log).unwrap();
    let out = run(Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(&file)
        .arg(filter()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    ips.sort();
    ips
}

fn config(dir: &Path, port: u16, format: &str) -> String {
    let users = users_file(dir, &[("alice", "wonder land")]);
    format!(
        r#"
[server]
hostname = "mx.test"
auth_require_tls = false
auth_failure_delay_ms = 0
max_auth_failures_per_ip = 0
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[delivery]
kind = "discard"
[log]
format = "{format}"
level = "info"
"#
    )
}

#[test]
fn fail2ban_regex_finds_every_failing_address_and_nothing_else() {
    setup();
    ensure_tool("fail2ban-regex");
    for format in ["text", "json"] {
        let dir = temp_dir(&format!("fail2ban-{format}"));
        let port = free_port();
        let srv = Smtpd::start(&dir, &config(&dir, port, format), port);
        clients(port);
        srv.wait_for_log("AUTH failed", 4);
        let log = srv.log();
        // The address that logged in is in the log (its success line), but not found.
        assert!(log.contains("127.0.0.4"), "{log}");
        assert_eq!(
            found(&dir, &log),
            ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.5"],
            "{format} log:\n{log}"
        );
        // The fields are named the same in both formats.
        let line = log
            .lines()
            .find(|l| l.contains("AUTH failed") && l.contains("127.0.0.3"))
            .unwrap();
        for field in ["remote_ip", "user", "mechanism", "status"] {
            assert!(line.contains(field), "{format}: {line}");
        }
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
