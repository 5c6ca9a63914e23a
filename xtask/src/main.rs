//! `cargo xtask`: project automation with no dependencies beyond std.
//!
//! - `cargo xtask ci`: format check, clippy with warnings denied, every test.
//! - `cargo xtask conformance`: the transcript corpus and real clients (smtplib, curl, swaks
//!   when installed) against the smtpd binary, printed as a table.
//! - `cargo xtask bench [--quick]`: the criterion benchmarks, then a table of figures and ratios
//!   against the reference measured in the same run.
//! - `cargo xtask bench --peers`: the release smtpd against Postfix's smtp-sink, both loaded
//!   by smtp-source in the same run; server CPU time per message as the ratio (installs
//!   Postfix's tools with apt-get when missing and running as root).
//! - `cargo xtask bench --callgrind [--base PATH]`: the release smtpd's instructions per
//!   message under callgrind (one message per connection, many per connection), and the ratio
//!   against another smtpd binary given with `--base`: figures that do not drift with load.
//! - `cargo xtask bench --auth`: AUTH at scale against the release smtpd (sessions/s, AUTH
//!   p50/p99, server CPU per session, peak RSS at 1, 20 and 100 concurrent sessions; argon2id
//!   with and without the credential cache against a minimal-cost hash; a wrong-password
//!   flood). Also the last part of a full `cargo xtask bench`.
//! - `cargo xtask bench --dkim`: DKIM signing's cost per message (rsa-sha256, ed25519-sha256)
//!   as server CPU per authenticated submission over an unsigned server's, at 1 KiB and
//!   100 KiB, in the same run.
//! - `cargo xtask soak [--connections N] [--big]`: the release smtpd holding 10,000 idle
//!   connections, mail through them in waves, RSS per idle connection, peak and after the
//!   burst; `--big`: 100 concurrent 31 MiB messages, peak RSS.
//! - `cargo xtask fuzz [--seconds N] [--smoke]`: each fuzz target for N seconds (default 30)
//!   with the installed nightly and cargo-fuzz (installed from crates.io when missing). With
//!   `--smoke` (CI), a machine without a nightly or without crates.io skips the run with a
//!   warning instead of failing; a crash still fails.
//! - `cargo xtask semver [--baseline REV]`: the published crates' API checked with
//!   cargo-semver-checks against the newest release tag (or REV).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod authbench;
mod callgrind;
mod dkimbench;
mod semver;
mod soak;

/// Fuzz targets: (crate directory, target name, optional dictionary).
const FUZZ_TARGETS: &[(&str, &str, Option<&str>)] = &[
    ("crates/smtp-proto", "command", Some("fuzz/command.dict")),
    ("crates/smtp-proto", "data", None),
    ("crates/smtp-proto", "reply", None),
    (
        "crates/smtp-proto",
        "differential",
        Some("fuzz/command.dict"),
    ),
    ("crates/smtp-auth", "exchange", None),
    ("crates/smtp-server", "session", Some("fuzz/session.dict")),
];

/// Benchmarks: (package, bench target).
const BENCHES: &[(&str, &str)] = &[("smtp-proto", "proto"), ("smtp-auth-http", "provider")];

/// Benchmarks in crates of their own workspace (run with the main target directory, so their
/// criterion results land beside the others): (manifest, bench target).
const OUTSIDE_BENCHES: &[(&str, &str)] = &[("crates/smtp-proto/compare/Cargo.toml", "compare")];

/// Ratios printed after a bench run: (label, subject, reference), as criterion ids.
const RATIOS: &[(&str, &str, &str)] = &[
    (
        "commands vs Stalwart",
        "compare_commands/ours",
        "compare_commands/stalwart",
    ),
    (
        "commands both accept vs Stalwart",
        "compare_commands_both_accept/ours",
        "compare_commands_both_accept/stalwart",
    ),
    (
        "segmented stream vs Stalwart",
        "compare_stream/ours",
        "compare_stream/stalwart",
    ),
    (
        "segmented stream both accept vs Stalwart",
        "compare_stream_both_accept/ours",
        "compare_stream_both_accept/stalwart",
    ),
    (
        "DATA 10 MiB vs Stalwart",
        "compare_data_10MiB/ours",
        "compare_data_10MiB/stalwart",
    ),
    (
        "DATA 10 MiB copied vs Stalwart",
        "compare_data_10MiB/ours_copied",
        "compare_data_10MiB/stalwart",
    ),
    (
        "DATA decode 1 KiB",
        "data_1KiB/decode",
        "data_1KiB/memchr_scan",
    ),
    (
        "DATA decode 100 KiB",
        "data_100KiB/decode",
        "data_100KiB/memchr_scan",
    ),
    (
        "DATA decode 10 MiB",
        "data_10MiB/decode",
        "data_10MiB/memchr_scan",
    ),
    (
        "DATA decode 1 KiB vs count",
        "data_1KiB/decode",
        "data_1KiB/memchr_count",
    ),
    (
        "DATA decode 100 KiB vs count",
        "data_100KiB/decode",
        "data_100KiB/memchr_count",
    ),
    (
        "DATA decode 10 MiB vs count",
        "data_10MiB/decode",
        "data_10MiB/memchr_count",
    ),
    (
        "HTTP auth, 1 at a time",
        "http_auth_c1/provider",
        "http_auth_c1/bare_hyper",
    ),
    (
        "HTTP auth, 64 concurrent",
        "http_auth_c64/provider",
        "http_auth_c64/bare_hyper",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("conformance") => conformance(),
        Some("bench") if args.iter().any(|a| a == "--peers") => peers(),
        Some("bench") if args.iter().any(|a| a == "--callgrind") => callgrind::callgrind(&args),
        Some("bench") if args.iter().any(|a| a == "--auth") => authbench::auth(),
        Some("bench") if args.iter().any(|a| a == "--dkim") => dkimbench::dkim(),
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        Some("soak") => soak::soak(&args[1..]),
        Some("semver") => semver::semver(&args[1..]),
        Some("soak-run") => soak::soak_run(&args[1..]),
        Some("fuzz") => {
            let secs = args
                .iter()
                .position(|a| a == "--seconds")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(30u32);
            fuzz(secs, args.iter().any(|a| a == "--smoke"))
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | conformance | bench [--quick | --peers | --callgrind [--base PATH] | --auth | --dkim] | soak [--connections N] [--big] | fuzz [--seconds N] [--smoke] | semver [--baseline REV]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace), else
/// `target/` in the workspace.
fn target_dir() -> PathBuf {
    target_dir_from(std::env::var_os("CARGO_TARGET_DIR"))
}

fn target_dir_from(var: Option<std::ffi::OsString>) -> PathBuf {
    match var {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed: {status}", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    let r = root();
    run(&r, "cargo", &["fmt", "--all", "--check"])?;
    run(
        &r,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run(&r, "cargo", &["test", "--workspace"])
}

/// The transcript corpus and the real clients against the smtpd binary, as a table.
fn conformance() -> Result<(), String> {
    run(
        &root(),
        "cargo",
        &[
            "test",
            "-p",
            "e2e",
            "--test",
            "conformance",
            "--",
            "--nocapture",
        ],
    )
}

fn bench(quick: bool) -> Result<(), String> {
    let r = root();
    for (pkg, name) in BENCHES {
        let mut args = vec!["bench", "-p", pkg, "--bench", name, "--"];
        if quick {
            args.extend(["--warm-up-time", "1", "--measurement-time", "2"]);
        }
        run(&r, "cargo", &args)?;
    }
    for (manifest, name) in OUTSIDE_BENCHES {
        let manifest = r.join(manifest);
        let manifest = manifest.to_string_lossy();
        let mut args = vec!["bench", "--manifest-path", &manifest, "--bench", name, "--"];
        if quick {
            args.extend(["--warm-up-time", "1", "--measurement-time", "2"]);
        }
        let status = Command::new("cargo")
            .args(&args)
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(&r)
            .status()
            .map_err(|e| format!("cargo bench {manifest}: {e}"))?;
        if !status.success() {
            return Err(format!("cargo bench {manifest}: {status}"));
        }
    }
    let crit = target_dir().join("criterion");
    println!(
        "\n{:<40} {:>14} {:>14} {:>8}",
        "figure", "subject", "reference", "ratio"
    );
    for (label, subject, reference) in RATIOS {
        let (Some(s), Some(f)) = (mean_ns(&crit, subject), mean_ns(&crit, reference)) else {
            println!("{label:<40} (not measured)");
            continue;
        };
        // Throughput ratio: reference time over subject time.
        println!(
            "{label:<40} {:>14} {:>14} {:>7.0}%",
            fmt_ns(s),
            fmt_ns(f),
            100.0 * f / s
        );
    }
    if quick { Ok(()) } else { authbench::auth() }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The mean point estimate (ns) criterion stored for `id` (`group/function`).
fn mean_ns(crit: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(crit.join(id).join("new/estimates.json")).ok()?;
    let at = text.find("\"mean\"")?;
    let rest = &text[at..];
    let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let num: String = rest[p..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        .collect();
    num.parse().ok()
}

fn fuzz(seconds: u32, smoke: bool) -> Result<(), String> {
    let r = root();
    let ok = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&["+nightly", "--version"]) {
        if smoke {
            eprintln!("xtask fuzz: no nightly toolchain here; skipping the smoke run");
            return Ok(());
        }
        return Err("cargo fuzz needs the nightly toolchain".into());
    }
    if !ok(&["+nightly", "fuzz", "--version"])
        && let Err(e) = run(&r, "cargo", &["install", "cargo-fuzz", "--locked"])
    {
        if smoke {
            eprintln!("xtask fuzz: cannot install cargo-fuzz ({e}); skipping the smoke run");
            return Ok(());
        }
        return Err(e);
    }
    for (dir, target, dict) in FUZZ_TARGETS {
        let time = format!("-max_total_time={seconds}");
        let mut args = vec!["+nightly", "fuzz", "run", target, "--", &time];
        let dict_arg;
        if let Some(d) = dict {
            dict_arg = format!("-dict={d}");
            args.push(&dict_arg);
        }
        run(&r.join(dir), "cargo", &args)?;
    }
    Ok(())
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some(ticks / hz)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn wait_port(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(format!("nothing listens on {port}"))
}

/// Runs smtp-source against `port`; returns (wall seconds, server CPU seconds).
fn load(
    port: u16,
    server_pid: u32,
    extra: &[&str],
    sessions: u32,
    messages: u32,
) -> Result<(f64, f64), String> {
    let cpu0 = cpu_seconds(server_pid).ok_or("no /proc stat for the server")?;
    let t0 = std::time::Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "smtp-source", "-c"])
        .args(extra)
        .args([
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
            "-l",
            "1024",
        ])
        .args([
            "-f",
            "a@example.org",
            "-t",
            "b@example.org",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null());
    let status = cmd.status().map_err(|e| format!("smtp-source: {e}"))?;
    if !status.success() {
        return Err(format!("smtp-source failed: {status}"));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(server_pid).ok_or("no /proc stat for the server")?;
    Ok((wall, cpu1 - cpu0))
}

/// The smtpd configuration of the protocol benchmarks (`--peers`, `--callgrind`): no AUTH
/// (smtp-source cannot), the http backend (it needs no users file and is never asked), discard
/// delivery, warnings only.
/// Sending limits out of reach: their checks run on every MAIL and message, and a load run is
/// never refused. A `--base` binary older than `[rate_limits]` is run without this block.
pub(crate) const BENCH_RATE_LIMITS: &str = "[rate_limits]\nmessages_per_hour = 1000000000\nrecipients_per_hour = 1000000000\nip_messages_per_hour = 1000000000\n";

fn protocol_bench_config(port: u16) -> String {
    format!(
        "[server]\nauth_required = false\nmax_connections = 4096\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n[auth]\nbackend = \"http\"\nurl = \"http://127.0.0.1:9/\"\n[delivery]\nkind = \"discard\"\n{BENCH_RATE_LIMITS}[log]\nlevel = \"warn\"\n"
    )
}

fn peers() -> Result<(), String> {
    let r = root();
    let have = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("smtp-source") || !have("smtp-sink") {
        eprintln!("xtask: installing Postfix's smtp-source and smtp-sink with apt-get");
        let script = "apt-get update -qq && echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix";
        run(&r, "sh", &["-c", script])?;
    }
    run(&r, "cargo", &["build", "--release", "-p", "smtpd"])?;
    let dir = std::env::temp_dir().join(format!("xtask-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let config = protocol_bench_config(port);
    let cfg_path = dir.join("smtpd.toml");
    std::fs::write(&cfg_path, config).map_err(|e| e.to_string())?;
    let mut smtpd = Command::new(target_dir().join("release/smtpd"))
        .arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("smtpd: {e}"))?;
    let sink_port = free_port()?;
    let mut sink = Command::new("smtp-sink")
        .args([
            "-u",
            "nobody",
            "-m",
            "1024",
            &format!("127.0.0.1:{sink_port}"),
            "1024",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("smtp-sink: {e}"))?;
    // aiosmtpd, when it is installed or installable from PyPI.
    let aio_ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success())
        || Command::new("python3")
            .args(["-m", "pip", "install", "-q", "aiosmtpd==1.4.6"])
            .status()
            .is_ok_and(|s| s.success());
    let aio_port = free_port()?;
    let mut aio = if aio_ok {
        let script = format!(
            "import asyncio\nfrom aiosmtpd.controller import Controller\nclass H:\n    async def handle_DATA(self, server, session, envelope):\n        return '250 OK'\nc = Controller(H(), hostname='127.0.0.1', port={aio_port})\nc.start()\nimport time\nwhile True: time.sleep(3600)\n"
        );
        Command::new("python3")
            .args(["-c", &script])
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    } else {
        None
    };
    let result = (|| {
        wait_port(port)?;
        wait_port(sink_port)?;
        if aio.is_some() {
            wait_port(aio_port)?;
        }
        // (label, smtp-source flags, sessions, messages)
        let scenarios: [(&str, &[&str], u32, u32); 2] = [
            (
                "20 sessions, many messages per connection",
                &["-d"],
                20,
                20_000,
            ),
            ("20 sessions, one message per connection", &[], 20, 5_000),
        ];
        println!(
            "\n{:<44} {:>10} {:>12} {:>14} {:>8}",
            "scenario (1 KiB messages)", "server", "msgs/s", "CPU µs/msg", "ratio"
        );
        for (label, flags, sessions, messages) in scenarios {
            let (w_s, c_s) = load(port, smtpd.id(), flags, sessions, messages)?;
            let (w_k, c_k) = load(sink_port, sink.id(), flags, sessions, messages)?;
            let per = |c: f64| 1e6 * c / messages as f64;
            println!(
                "{label:<44} {:>10} {:>12.0} {:>14.1} {:>8}",
                "smtpd",
                messages as f64 / w_s,
                per(c_s),
                ""
            );
            println!(
                "{:<44} {:>10} {:>12.0} {:>14.1} {:>7.0}%",
                "",
                "smtp-sink",
                messages as f64 / w_k,
                per(c_k),
                100.0 * c_k / c_s.max(1e-9)
            );
            if let Some(a) = &aio {
                // aiosmtpd saturates one core: a tenth of the messages keeps the run short.
                let m = messages / 10;
                let (w_a, c_a) = load(aio_port, a.id(), flags, sessions, m)?;
                let per_a = 1e6 * c_a / m as f64;
                println!(
                    "{:<44} {:>10} {:>12.0} {:>14.1} {:>7.0}%",
                    "",
                    "aiosmtpd",
                    m as f64 / w_a,
                    per_a,
                    100.0 * per_a / per(c_s).max(1e-9)
                );
            }
        }
        println!(
            "ratio: the peer's server CPU per message over smtpd's (above 100%: smtpd is cheaper)"
        );
        Ok(())
    })();
    let _ = smtpd.kill();
    let _ = sink.kill();
    if let Some(a) = aio.as_mut() {
        let _ = a.kill();
        let _ = a.wait();
    }
    let _ = smtpd.wait();
    let _ = sink.wait();
    let _ = std::fs::remove_dir_all(dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_dir_follows_cargo_target_dir() {
        assert_eq!(target_dir_from(None), root().join("target"));
        assert_eq!(target_dir_from(Some("".into())), root().join("target"));
        assert_eq!(
            target_dir_from(Some("/tmp/elsewhere".into())),
            PathBuf::from("/tmp/elsewhere")
        );
        assert_eq!(target_dir_from(Some("tgt".into())), root().join("tgt"));
    }
}
