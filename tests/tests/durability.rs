//! Durability of the streaming Maildir path: bodies are written straight into `tmp/` while they
//! arrive and renamed into `new/` (fsync'd) before the 250. `kill -9` in the middle of a load:
//! every message acknowledged is in `new/` whole, nothing partial ever reaches `new/`, and the
//! next start removes what the killed process left in `tmp/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Smtpd, file_config, free_port, temp_dir};

/// Lines per message: about 256 KiB, so each body takes many writes into `tmp/`.
const LINES: usize = 4000;

#[test]
fn kill_9_loses_no_acknowledged_message_and_leaves_nothing_partial() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("kill9");
    let port = free_port();
    let config = file_config(&dir, port, "sender_login = \"any\"", false);
    let mut srv = Smtpd::start(&dir, &config, port);
    // Three connections sending until the server is gone (bounded: 100 messages or 60 s
    // each); each acknowledged message is printed at once.
    let mut client = Command::new("python3")
        .arg("-c")
        .arg(format!(
            r#"
import smtplib, sys, threading, time
lock = threading.Lock()
def say(text):
    with lock:
        sys.stdout.write(text + '\n')
        sys.stdout.flush()
def body(tag):
    lines = ['Subject: %s' % tag, '']
    lines += ['%s line %05d %s' % (tag, i, 'x' * 48) for i in range({LINES})]
    lines.append('%s end' % tag)
    return '\r\n'.join(lines) + '\r\n'
def worker(t):
    end = time.time() + 60
    try:
        s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
        s.login('alice', 'wonder land')
        for n in range(100):
            if time.time() > end:
                break
            tag = 'm%d-%03d' % (t, n)
            s.sendmail('alice@mx.test', ['bob@example.org'], body(tag))
            say('ACK ' + tag)
    except Exception as e:
        say('GONE %d %s' % (t, type(e).__name__))
threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
for th in threads: th.start()
for th in threads: th.join()
"#
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Let some messages through, then kill the server in the middle of the others.
    while acked.len() < 12 && Instant::now() < deadline {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(tag) = line.trim().strip_prefix("ACK ") {
            acked.push(tag.to_owned());
        }
    }
    assert!(acked.len() >= 12, "only {} acknowledged", acked.len());
    // One more message, half sent and held, so the kill surely finds a body in tmp/.
    let held = half_sent(port);
    let tmp = dir.join("Maildir").join("tmp");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).unwrap().count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the held body never reached tmp/"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.child.kill().unwrap(); // SIGKILL
    drop(held);
    srv.child.wait().unwrap();
    // What the client still read as acknowledged before the connections broke.
    for l in out.lines().map_while(Result::ok) {
        if let Some(tag) = l.trim().strip_prefix("ACK ") {
            acked.push(tag.to_owned());
        }
    }
    let status = client.wait().unwrap();
    assert!(status.success(), "the client ended by itself");

    let maildir = dir.join("Maildir");
    let delivered = e2e::maildir_messages(&maildir);
    // Nothing partial in new/: every file is one whole message.
    let mut tags = Vec::new();
    for m in &delivered {
        let tag = m
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("a Subject")
            .to_owned();
        let lines = m
            .lines()
            .filter(|l| l.starts_with(&format!("{tag} line ")))
            .count();
        assert_eq!(lines, LINES, "{tag}: a partial message in new/");
        assert!(m.ends_with(&format!("{tag} end\r\n")), "{tag}: cut short");
        tags.push(tag);
    }
    // Every acknowledged message is there (a message may be in new/ whose 250 the kill cut
    // off; never the other way round).
    for a in &acked {
        assert!(tags.contains(a), "{a} was acknowledged but is not in new/");
    }
    // The killed process's partial writes are removed at the next start; new/ is untouched.
    let tmp_before = std::fs::read_dir(maildir.join("tmp")).unwrap().count();
    assert!(tmp_before >= 1, "the held message's partial body");
    assert!(
        !tags.iter().any(|t| t == "held"),
        "a partial message reached new/"
    );
    let port2 = free_port();
    let srv2 = Smtpd::start(&dir, &file_config(&dir, port2, "", false), port2);
    srv2.wait_for_log("removed stale files", 1);
    assert_eq!(std::fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
    assert_eq!(e2e::maildir_messages(&maildir).len(), delivered.len());
    eprintln!(
        "acknowledged {}, in new/ {}, partial in tmp/ at the kill {tmp_before}",
        acked.len(),
        delivered.len()
    );
    drop(srv2);
    let _ = std::fs::remove_dir_all(dir);
}

/// A session that logs in, starts a message (Subject `held`) and sends half its body, then
/// holds the connection open.
fn half_sent(port: u16) -> std::net::TcpStream {
    use base64::Engine as _;
    use std::io::Write;
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut reply = || loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.as_bytes().get(3) != Some(&b'-') {
            return l;
        }
    };
    reply();
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0wonder land");
    for (cmd, code) in [
        ("EHLO held.test".to_owned(), "250"),
        (format!("AUTH PLAIN {plain}"), "235"),
        ("MAIL FROM:<alice@mx.test>".to_owned(), "250"),
        ("RCPT TO:<bob@example.org>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(code), "{cmd}: {got}");
    }
    let mut body = String::from("Subject: held\r\n\r\n");
    for i in 0..LINES / 2 {
        body.push_str(&format!("held line {i:05} {}\r\n", "x".repeat(48)));
    }
    w.write_all(body.as_bytes()).unwrap();
    w.flush().unwrap();
    s
}
