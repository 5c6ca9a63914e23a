//! `cargo xtask semver [--baseline REV]`: the public API of every published crate checked
//! against a baseline with `cargo-semver-checks` (installed from crates.io with `cargo install
//! --locked` when missing): a change that breaks users without the version bump that says so
//! fails. The baseline is `REV`, else the newest release tag (`v*`); with no release yet there
//! is nothing to break and the command says so.

use std::process::Command;

/// The crates users depend on (the test and xtask crates are not published).
const PUBLISHED: [&str; 10] = [
    "smtp-proto",
    "smtp-auth",
    "smtp-auth-hash",
    "smtp-server",
    "smtp-auth-http",
    "smtp-auth-dovecot",
    "smtp-auth-ldap",
    "smtp-auth-sql",
    "smtp-auth-oauth",
    "smtpd",
];

fn have_tool() -> bool {
    Command::new("cargo")
        .args(["semver-checks", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The newest `v*` tag, if any.
fn last_release(root: &std::path::Path) -> Option<String> {
    let out = Command::new("git")
        .args(["tag", "--list", "v*", "--sort=-v:refname"])
        .current_dir(root)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

pub(crate) fn semver(args: &[String]) -> Result<(), String> {
    let root = crate::root();
    let baseline = args
        .iter()
        .position(|a| a == "--baseline")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| last_release(&root));
    let Some(baseline) = baseline else {
        println!(
            "semver: no release tag (v*) yet, so no published API to keep: nothing to check (pass --baseline REV to compare with a revision)"
        );
        return Ok(());
    };
    if !have_tool() {
        crate::run(
            &root,
            "cargo",
            &["install", "--locked", "cargo-semver-checks"],
        )?;
    }
    let mut cmd: Vec<&str> = vec![
        "semver-checks",
        "check-release",
        "--baseline-rev",
        &baseline,
    ];
    for p in PUBLISHED {
        cmd.extend(["--package", p]);
    }
    cmd.push("--all-features");
    crate::run(&root, "cargo", &cmd)
}
