//! `cargo xtask soak [--connections N] [--big]`: memory under many connections, against the
//! release `smtpd`, bounded in count and time.
//!
//! 1. Holds N idle connections (default 10,000; each greeted), and reports the server's RSS
//!    per idle connection above its idle figure.
//! 2. Sends mail through 2,000 of the held connections in waves of 500 (EHLO, AUTH PLAIN,
//!    MAIL, RCPT, DATA of 1 KiB, QUIT), counting errors.
//! 3. Closes everything and reports the peak RSS and the RSS once the burst is over, against
//!    the idle figure: whether memory is returned.
//!
//! `--big` instead sends 100 concurrent 31 MiB messages and reports the peak RSS.
//!
//! The file-descriptor limit is raised for the run (`ulimit -n` in a shell that re-runs this
//! program as `soak-run`, so both the client and the server it starts inherit it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, root, run, target_dir, wait_port};

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub(crate) fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `cargo xtask soak`: builds, raises the fd limit, re-runs itself as `soak-run`.
pub(crate) fn soak(args: &[String]) -> Result<(), String> {
    let r = root();
    run(&r, "cargo", &["build", "--release", "-p", "smtpd"])?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut script = String::from(
        "ulimit -n 65536 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; echo \"soak: fd limit $(ulimit -n)\" >&2; exec \"$0\" soak-run",
    );
    for a in args {
        script.push(' ');
        script.push_str(a);
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(me)
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("soak failed: {status}"))
    }
}

fn greeting(c: &TcpStream) -> Result<String, String> {
    let mut line = String::new();
    BufReader::new(c)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line)
}

/// One message through an already greeted connection.
fn send(c: TcpStream, body: &[u8]) -> Result<(), String> {
    c.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut w = c.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(c);
    let mut expect = |code: &str| -> Result<(), String> {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
                return Err("closed".into());
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return if l.starts_with(code) {
                    Ok(())
                } else {
                    Err(format!("expected {code}, got {}", l.trim_end()))
                };
            }
        }
    };
    let mut cmd = |line: &str, code: &str| -> Result<(), String> {
        w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        expect(code)
    };
    cmd("EHLO soak.test\r\n", "250")?;
    // "\0soak\0soak-password"
    cmd("AUTH PLAIN AHNvYWsAc29hay1wYXNzd29yZA==\r\n", "235")?;
    cmd("MAIL FROM:<soak@localhost>\r\n", "250")?;
    cmd("RCPT TO:<sink@example.org>\r\n", "250")?;
    cmd("DATA\r\n", "354")?;
    // The body and its end in one write (the dot-line follows the message's own CRLF).
    let mut rest = body.to_vec();
    rest.extend_from_slice(b".\r\n");
    cmd(
        std::str::from_utf8(&rest).map_err(|e| e.to_string())?,
        "250",
    )?;
    cmd("QUIT\r\n", "221")
}

fn message(size: usize) -> Vec<u8> {
    let mut body = b"Subject: soak\r\n\r\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while body.len() + line.len() <= size {
        body.extend_from_slice(line);
    }
    body
}

/// The run itself, with the raised fd limit.
pub(crate) fn soak_run(args: &[String]) -> Result<(), String> {
    let big = args.iter().any(|a| a == "--big");
    let connections: usize = args
        .iter()
        .position(|a| a == "--connections")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let smtpd = target_dir().join("release/smtpd");
    let dir = std::env::temp_dir().join(format!("xtask-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = soak_in(&smtpd, &dir, connections, big);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn soak_in(smtpd: &Path, dir: &Path, connections: usize, big: bool) -> Result<(), String> {
    // A cheap hash: this run measures connections and messages, not argon2.
    let mut h = Command::new(smtpd)
        .args(["hash-password", "--params", "m=8,t=1,p=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    h.stdin
        .take()
        .ok_or("stdin")?
        .write_all(b"soak-password\n")
        .map_err(|e| e.to_string())?;
    let hash = String::from_utf8_lossy(&h.wait_with_output().map_err(|e| e.to_string())?.stdout)
        .trim()
        .to_owned();
    std::fs::write(dir.join("users"), format!("soak:{hash}\n")).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let config = format!(
        r#"[server]
auth_require_tls = false
auth_failure_delay_ms = 0
max_connections = {max}
max_connections_per_ip = 0
sender_login = "any"
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = "users"
[delivery]
kind = "discard"
# Limits out of reach: their checks run, and a load run is never refused.
[rate_limits]
messages_per_hour = 1000000000
recipients_per_hour = 1000000000
ip_messages_per_hour = 1000000000
[log]
level = "error"
"#,
        max = connections + 100
    );
    std::fs::write(dir.join("smtpd.toml"), config).map_err(|e| e.to_string())?;
    let mut server = Command::new(smtpd)
        .args(["serve", "--config", "smtpd.toml"])
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("smtpd: {e}"))?;
    let pid = server.id();
    let result = (|| {
        wait_port(port)?;
        std::thread::sleep(Duration::from_millis(300));
        let idle = rss_kib(pid, "VmRSS:");
        if big {
            return big_messages(port, pid, idle);
        }
        let t0 = Instant::now();
        let mut held = Vec::with_capacity(connections);
        let mut errors = 0usize;
        for _ in 0..connections {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                    match greeting(&c) {
                        Ok(g) if g.starts_with("220") => held.push(c),
                        _ => errors += 1,
                    }
                }
                Err(_) => errors += 1,
            }
            if t0.elapsed() > Duration::from_secs(120) {
                return Err("opening the connections took over 120 s".into());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let holding = rss_kib(pid, "VmRSS:");
        let per = (holding.saturating_sub(idle)) as f64 / held.len().max(1) as f64;
        println!(
            "\nidle server: {idle} KiB RSS; holding {} idle connections ({errors} failed to open): {holding} KiB, {per:.1} KiB per connection",
            held.len()
        );
        // Mail through 2,000 of them, 500 at a time.
        let body = message(1024);
        let mut sent = 0usize;
        let mut failed = 0usize;
        let mut first_error = None;
        for _ in 0..4 {
            let wave: Vec<TcpStream> = held.drain(..held.len().min(500)).collect();
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                let hs: Vec<_> = wave
                    .into_iter()
                    .map(|c| {
                        let body = &body;
                        std::thread::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn_scoped(s, move || send(c, body))
                            .expect("a thread")
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or(Err("panic".into())))
                    .collect()
            });
            for r in results {
                match r {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        println!(
            "mail in 4 waves of 500 through held connections: {sent} delivered, {failed} failed{}",
            first_error
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let peak = rss_kib(pid, "VmHWM:");
        drop(held);
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_kib(pid, "VmRSS:");
        std::thread::sleep(Duration::from_secs(13));
        let later = rss_kib(pid, "VmRSS:");
        println!(
            "peak RSS {peak} KiB; after all connections closed: {after} KiB after 2 s, {later} KiB after 15 s (idle: {idle} KiB)"
        );
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// 100 concurrent 31 MiB messages.
fn big_messages(port: u16, pid: u32, idle: u64) -> Result<(), String> {
    let body = message(31 * 1024 * 1024);
    let t0 = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..100)
            .map(|_| {
                let body = &body;
                s.spawn(move || {
                    let c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    let mut first = [0u8; 256];
                    let n = (&c).read(&mut first).map_err(|e| e.to_string())?;
                    if !first[..n].starts_with(b"220") {
                        return Err("no greeting".into());
                    }
                    send(c, body)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(Err("panic".into())))
            .collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let peak = rss_kib(pid, "VmHWM:");
    std::thread::sleep(Duration::from_secs(15));
    let after = rss_kib(pid, "VmRSS:");
    println!(
        "\n100 concurrent 31 MiB messages: {ok} delivered in {:.1} s; server peak RSS {} MiB (idle {} MiB), 15 s after: {} MiB",
        t0.elapsed().as_secs_f64(),
        peak / 1024,
        idle / 1024,
        after / 1024
    );
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        println!("first failure: {e}");
    }
    Ok(())
}
