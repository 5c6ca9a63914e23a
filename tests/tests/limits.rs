//! Resource limits of the `smtpd` binary: a burst of connects is greeted or refused, never left
//! hanging (listen backlog, connection limits); stale files in the Maildir's `tmp/` are removed
//! at start.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use e2e::{Smtpd, file_config, free_port, temp_dir};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

#[test]
fn a_burst_of_connects_is_greeted_or_refused() {
    setup();
    let dir = temp_dir("burst");
    let port = free_port();
    let config = file_config(
        &dir,
        port,
        "max_connections = 20\nmax_connections_per_ip = 0\nlisten_backlog = 1024",
        false,
    );
    let _srv = Smtpd::start(&dir, &config, port);
    // 300 clients at once; those within the limit hold their connection open.
    let replies: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..300)
            .map(|_| {
                s.spawn(move || {
                    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut line = String::new();
                    let _ = BufReader::new(&c).read_line(&mut line);
                    std::thread::sleep(Duration::from_secs(2));
                    line.trim_end().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let greeted = replies.iter().filter(|r| r.starts_with("220 ")).count();
    let refused = replies
        .iter()
        .filter(|r| *r == "421 4.3.2 Too many connections, try again later")
        .count();
    assert_eq!(greeted + refused, 300, "none left hanging: {replies:?}");
    assert!(
        greeted >= 20 && refused > 0,
        "{greeted} greeted, {refused} refused"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stale_tmp_files_are_removed_at_start() {
    setup();
    let dir = temp_dir("stale-tmp");
    let port = free_port();
    let tmp = dir.join("Maildir").join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // A write cut short by kill -9 (its process is gone), and a 3-day-old file.
    std::fs::write(tmp.join("1790000000.M1P4999999Q0.mx.test"), "Subject: half").unwrap();
    let old = tmp.join("1234.other-program");
    std::fs::write(&old, "x").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 86400))
        .unwrap();
    std::fs::write(tmp.join("fresh.other-program"), "x").unwrap();
    let srv = Smtpd::start(&dir, &file_config(&dir, port, "", false), port);
    srv.wait_for_log("removed stale files", 1);
    assert!(srv.log().contains("removed=2"), "{}", srv.log());
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["fresh.other-program".to_string()]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_large_message_is_spooled_and_lands_whole_in_the_maildir() {
    setup();
    let dir = temp_dir("spool-e2e");
    let port = free_port();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let config = file_config(
        &dir,
        port,
        &format!("spool_threshold = 65536\nspool_dir = {spool:?}"),
        false,
    );
    let _srv = Smtpd::start(&dir, &config, port);
    // About 3 MiB with dot-leading lines, through Python's smtplib.
    let out = e2e::python(&format!(
        r#"
import smtplib
lines = []
for i in range(60000):
    lines.append(('.' if i % 50 == 0 else '') + 'line %06d of a large message, filled up with text' % i)
body = 'Subject: large\r\n\r\n' + '\r\n'.join(lines) + '\r\n'
open({body_path:?}, 'w', newline='').write(body)
s = smtplib.SMTP('127.0.0.1', {port}, timeout=60)
s.login('alice', 'wonder land')
print(s.sendmail('alice@mx.test', ['bob@example.org'], body))
s.quit()
"#,
        body_path = dir.join("sent.txt")
    ));
    assert_eq!(out, "{}\n");
    let sent = std::fs::read_to_string(dir.join("sent.txt")).unwrap();
    let got = e2e::maildir_messages(&dir.join("Maildir"));
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(&sent), "the body arrived whole and exact");
    assert!(got[0].starts_with("Received: "));
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "no spool file left"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_large_spooled_message_is_relayed_streamed_and_exact() {
    setup();
    let up_dir = temp_dir("relay-big-up");
    let up_port = free_port();
    let _up = Smtpd::start(
        &up_dir,
        &file_config(&up_dir, up_port, "sender_login = \"any\"", false),
        up_port,
    );
    let dir = temp_dir("relay-big-edge");
    let port = free_port();
    let edge = e2e::relay_config(
        &dir,
        port,
        "127.0.0.1",
        up_port,
        &format!("spool_threshold = 65536\nspool_dir = {:?}", dir),
        "username = \"bob\"\npassword = \"builder\"\ntimeout_secs = 30",
    );
    let _edge = Smtpd::start(&dir, &edge, port);
    let out = e2e::python(&format!(
        r#"
import smtplib
lines = [('.' if i % 40 == 0 else '') + 'relayed line %06d with some text in it' % i for i in range(50000)]
body = 'Subject: big relay\r\n\r\n' + '\r\n'.join(lines) + '\r\n'
open({sent:?}, 'w', newline='').write(body)
s = smtplib.SMTP('127.0.0.1', {port}, timeout=60)
s.login('alice', 'wonder land')
print(s.sendmail('alice@edge.test', ['erin@example.org'], body))
s.quit()
"#,
        sent = dir.join("sent.txt")
    ));
    assert_eq!(out, "{}\n");
    let sent = std::fs::read_to_string(dir.join("sent.txt")).unwrap();
    let got = e2e::maildir_messages(&up_dir.join("Maildir"));
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(&sent), "exact after the relay");
    assert_eq!(got[0].matches("Received: ").count(), 2);
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().starts_with("smtp-spool-"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(leftovers, 0, "the spool file went after the relay");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(up_dir);
}
