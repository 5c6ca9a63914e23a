//! Python for the tests, with no runtime (the blocking example's test uses it too).

/// Runs a Python script to its end; panics with its stderr if it fails.
pub fn python_blocking(script: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
