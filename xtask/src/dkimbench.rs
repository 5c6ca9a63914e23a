//! `cargo xtask bench --dkim`: what DKIM signing costs per message. Three release smtpd
//! servers in the same run, the same in all but `[[dkim]]`: unsigned, rsa-sha256 (2048 bits)
//! and ed25519-sha256. Each takes authenticated submissions (AUTH PLAIN against a minimal-cost
//! hash with the credential cache, so AUTH is not what is measured) into a Maildir on tmpfs
//! when there is one, at 1 KiB and 100 KiB. The figure is the server's CPU time per message;
//! the ratio is signed over unsigned. The runs alternate (unsigned, rsa, ed25519, then the
//! other way round) so that drift in the machine's load falls on all three alike.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::authbench::{PASSWORD, Server, drive_sessions, hash, session_with, start_configured};
use crate::{root, run};

/// A server with Maildir delivery into `dir/<name>/Maildir` and the `[[dkim]]` keys `dkim`.
fn start(smtpd: &Path, dir: &Path, name: &str, users: &Path, dkim: &str) -> Result<Server, String> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    start_configured(
        smtpd,
        &home,
        "hostname = \"bench.test\"",
        &format!("backend = \"file\"\nusers_file = {users:?}"),
        &format!("kind = \"maildir\"\npath = {:?}", home.join("Maildir")),
        dkim,
    )
}

/// `smtpd dkim-keygen` into `dir`: the `[[dkim]]` section for the key.
fn keygen(smtpd: &Path, dir: &Path, algorithm: &str) -> Result<String, String> {
    let key = dir.join(format!("{algorithm}.pem"));
    let out = Command::new(smtpd)
        .args([
            "dkim-keygen",
            "--domain",
            "example.org",
            "--selector",
            algorithm,
        ])
        .args(["--algorithm", algorithm, "--out"])
        .arg(&key)
        .output()
        .map_err(|e| format!("smtpd dkim-keygen: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(format!(
        "[[dkim]]\ndomain = \"example.org\"\nselector = \"{algorithm}\"\nkey = {key:?}\n"
    ))
}

/// A message of about `size` octets from example.org.
fn message(size: usize) -> String {
    let mut m = String::from(
        "From: Bench <bench@example.org>\r\nTo: sink@example.org\r\nSubject: dkim bench\r\n\
         Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n\r\n",
    );
    while m.len() < size {
        m.push_str("The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n");
    }
    m
}

/// `total` sessions over `concurrency` threads against `server`: the server's CPU seconds.
fn drive(server: &Server, concurrency: usize, total: usize, msg: &str) -> Result<f64, String> {
    let row = drive_sessions(server.child.id(), concurrency, total, &|i| {
        session_with(server.port, &format!("user{}", i % 10), PASSWORD, msg)
    })?;
    match row.failed {
        0 => Ok(row.cpu),
        n => Err(format!("{n} session(s) failed")),
    }
}

/// The DKIM benchmark.
pub(crate) fn dkim() -> Result<(), String> {
    let r = root();
    run(&r, "cargo", &["build", "--release", "-p", "smtpd"])?;
    let smtpd = crate::target_dir().join("release/smtpd");
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("xtask-dkim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = dkim_in(&smtpd, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn dkim_in(smtpd: &Path, dir: &Path) -> Result<(), String> {
    let h = hash(smtpd, Some("m=8,t=1,p=1"))?;
    let users: String = (0..10).map(|i| format!("user{i}:{h}\n")).collect();
    let users_file = dir.join("users");
    std::fs::write(&users_file, users).map_err(|e| e.to_string())?;
    let rsa = keygen(smtpd, dir, "rsa")?;
    let ed = keygen(smtpd, dir, "ed25519")?;
    let servers = [
        ("unsigned", start(smtpd, dir, "unsigned", &users_file, "")?),
        ("rsa-sha256", start(smtpd, dir, "rsa", &users_file, &rsa)?),
        (
            "ed25519-sha256",
            start(smtpd, dir, "ed25519", &users_file, &ed)?,
        ),
    ];
    println!(
        "\n{:<12} {:<16} {:>10} {:>14} {:>8}",
        "message", "signing", "messages", "CPU µs/msg", "ratio"
    );
    // (label, size, sessions per run): each server gets two runs of `sessions`.
    for (label, size, sessions) in [("1 KiB", 1024, 1500), ("100 KiB", 100 * 1024, 400)] {
        let msg = message(size);
        let mut cpu = [0.0f64; 3];
        for round in 0..2 {
            let order: [usize; 3] = if round == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for i in order {
                cpu[i] += drive(&servers[i].1, 10, sessions, &msg)?;
            }
        }
        let n = 2 * sessions;
        let per = |c: f64| 1e6 * c / n as f64;
        for (i, (name, _)) in servers.iter().enumerate() {
            let ratio = if i == 0 {
                "1.00×".to_owned()
            } else {
                format!("{:.2}×", cpu[i] / cpu[0].max(1e-9))
            };
            println!(
                "{label:<12} {name:<16} {n:>10} {:>14.1} {ratio:>8}",
                per(cpu[i])
            );
        }
    }
    // Each signing server signed what it took: a message of its Maildir carries a signature.
    for (name, dirname) in [("rsa-sha256", "rsa"), ("ed25519-sha256", "ed25519")] {
        let new = dir.join(dirname).join("Maildir/new");
        let first = std::fs::read_dir(&new)
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no message delivered")?
            .map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(first.path()).map_err(|e| e.to_string())?;
        if !text.contains(&format!("a={name};")) {
            return Err(format!("the {name} server delivered an unsigned message"));
        }
    }
    println!(
        "ratio: server CPU per authenticated submission over the unsigned server's (AUTH, Maildir on tmpfs, same run)"
    );
    Ok(())
}
