//! `cargo xtask bench --callgrind [--base PATH]`: the release smtpd's instructions per message
//! under valgrind's callgrind, loaded by Postfix's smtp-source: a count that does not drift with
//! the machine's load, so a change of a few percent on the hot path can be told apart. With
//! `--base`, a second smtpd binary (an older build) is measured the same way and the ratio
//! printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (label, smtp-source flags, messages): `-d` keeps one connection for all messages.
const SCENARIOS: [(&str, &[&str], u32); 2] = [
    ("one message per connection", &[], 2000),
    ("many messages per connection", &["-d"], 500),
];

/// Total instructions of one smtpd run loaded with `flags` and `messages` messages.
fn instructions(
    bin: &Path,
    dir: &Path,
    name: &str,
    flags: &[&str],
    messages: u32,
    base: bool,
) -> Result<u64, String> {
    let port = crate::free_port()?;
    let cfg = dir.join(format!("{name}.toml"));
    let text = crate::protocol_bench_config(port);
    std::fs::write(&cfg, &text).map_err(|e| e.to_string())?;
    // A base binary older than `[rate_limits]` refuses the section: it runs without it (a
    // newer one keeps it, or its default limits would refuse the load).
    let knows_limits = || {
        Command::new(bin)
            .arg("check-config")
            .arg(&cfg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if base && !knows_limits() {
        std::fs::write(&cfg, text.replace(crate::BENCH_RATE_LIMITS, ""))
            .map_err(|e| e.to_string())?;
    }
    let out = dir.join(format!("{name}.callgrind"));
    let mut smtpd = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("valgrind: {e}"))?;
    let loaded = crate::wait_port(port).and_then(|()| {
        let status = Command::new("timeout")
            .args(["300", "smtp-source", "-c"])
            .args(flags)
            .args(["-s", "1", "-m", &messages.to_string(), "-l", "1024"])
            .args(["-f", "a@example.org", "-t", "b@example.org"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("smtp-source: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("smtp-source: {status}"))
        }
    });
    // SIGTERM: smtpd shuts down gracefully and callgrind writes its counts.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(smtpd.id().to_string())
        .status();
    let _ = smtpd.wait();
    loaded?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no totals in {}", out.display()))
}

/// Instructions per message for each scenario (the idle cost of start and stop subtracted).
fn per_message(bin: &Path, dir: &Path, tag: &str, base: bool) -> Result<Vec<f64>, String> {
    let idle = instructions(bin, dir, &format!("{tag}-idle"), &[], 1, base)?;
    SCENARIOS
        .iter()
        .enumerate()
        .map(|(i, (_, flags, n))| {
            let total = instructions(bin, dir, &format!("{tag}-{i}"), flags, n + 1, base)?;
            Ok(total.saturating_sub(idle) as f64 / f64::from(*n))
        })
        .collect()
}

pub(crate) fn callgrind(args: &[String]) -> Result<(), String> {
    let r = crate::root();
    for tool in ["valgrind", "smtp-source"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "{tool} is missing (apt-get install valgrind postfix; or run `cargo xtask bench --peers` once)"
            ));
        }
    }
    crate::run(&r, "cargo", &["build", "--release", "-p", "smtpd"])?;
    let bin = crate::target_dir().join("release/smtpd");
    let base = args
        .iter()
        .position(|a| a == "--base")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let dir = std::env::temp_dir().join(format!("xtask-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let now = per_message(&bin, &dir, "smtpd", false)?;
    let then = match &base {
        Some(b) => Some(per_message(b, &dir, "base", true)?),
        None => None,
    };
    println!(
        "\n{:<32} {:>18} {:>18} {:>8}",
        "scenario (1 KiB messages)", "instructions/msg", "base", "ratio"
    );
    for (i, (label, _, _)) in SCENARIOS.iter().enumerate() {
        match &then {
            Some(t) => println!(
                "{label:<32} {:>18.0} {:>18.0} {:>7.1}%",
                now[i],
                t[i],
                100.0 * now[i] / t[i]
            ),
            None => println!("{label:<32} {:>18.0}", now[i]),
        }
    }
    println!("ratio: this build's instructions per message over the base's (below 100%: cheaper)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
