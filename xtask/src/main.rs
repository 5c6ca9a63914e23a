//! `cargo xtask`: project automation with no dependencies beyond std.
//!
//! - `cargo xtask ci`: format check, clippy with warnings denied, every test.
//! - `cargo xtask conformance`: the transcript corpus and real clients (smtplib, curl, swaks
//!   when installed) against the smtpd binary, printed as a table.
//! - `cargo xtask bench [--quick]`: the criterion benchmarks, then a table of figures and ratios
//!   against the reference measured in the same run.
//! - `cargo xtask fuzz [--seconds N] [--smoke]`: each fuzz target for N seconds (default 30)
//!   with the installed nightly and cargo-fuzz (installed from crates.io when missing). With
//!   `--smoke` (CI), a machine without a nightly or without crates.io skips the run with a
//!   warning instead of failing; a crash still fails.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Fuzz targets: (crate directory, target name, optional dictionary).
const FUZZ_TARGETS: &[(&str, &str, Option<&str>)] = &[
    ("crates/smtp-proto", "command", Some("fuzz/command.dict")),
    ("crates/smtp-proto", "data", None),
    ("crates/smtp-auth", "exchange", None),
];

/// Benchmarks: (package, bench target).
const BENCHES: &[(&str, &str)] = &[("smtp-proto", "proto"), ("smtp-auth-http", "provider")];

/// Ratios printed after a bench run: (label, subject, reference), as criterion ids.
const RATIOS: &[(&str, &str, &str)] = &[
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
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
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
                "usage: cargo xtask <ci | conformance | bench [--quick] | fuzz [--seconds N] [--smoke]>"
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
    let crit = r.join("target/criterion");
    println!(
        "\n{:<32} {:>14} {:>14} {:>8}",
        "figure", "subject", "reference", "ratio"
    );
    for (label, subject, reference) in RATIOS {
        let (Some(s), Some(f)) = (mean_ns(&crit, subject), mean_ns(&crit, reference)) else {
            println!("{label:<32} (not measured)");
            continue;
        };
        // Throughput ratio: reference time over subject time.
        println!(
            "{label:<32} {:>14} {:>14} {:>7.0}%",
            fmt_ns(s),
            fmt_ns(f),
            100.0 * f / s
        );
    }
    Ok(())
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
