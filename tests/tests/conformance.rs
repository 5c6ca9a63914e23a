//! The conformance run (`cargo xtask conformance`): the smtpd binary driven by the transcript
//! corpus in `tests/transcripts/` and by real clients (Python's smtplib, curl, and swaks when
//! installed). Prints a table; fails if any row fails.

use std::path::Path;
use std::process::Command;

use e2e::{
    Smtpd, curl_send, file_config, free_port, maildir_messages, python, run, run_transcript,
    temp_dir,
};

#[test]
fn conformance() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("conformance");
    let port = free_port();
    let config = file_config(&dir, port, "max_auth_failures = 10", false);
    let srv = Smtpd::start(&dir, &config, port);
    let mut rows: Vec<(String, Result<(), String>)> = Vec::new();

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("transcripts directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the corpus is there");
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read transcript");
        let title = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .to_owned();
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        rows.push((
            format!("transcript {name}: {title}"),
            run_transcript(srv.addr, &text),
        ));
    }

    for mech in ["PLAIN", "LOGIN"] {
        let script = format!(
            r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
s.user, s.password = 'alice', 'wonder land'
print(s.auth('{mech}', s.auth_{lower})[0])
print(s.sendmail('alice@mx.test', ['bob@example.org'], 'Subject: smtplib {mech}\r\n\r\nbody\r\n'))
s.quit()
"#,
            lower = mech.to_lowercase()
        );
        let out = std::panic::catch_unwind(|| python(&script));
        rows.push((
            format!("python smtplib login() with {mech}, sendmail()"),
            match out {
                Ok(o) if o == "235\n{}\n" => Ok(()),
                Ok(o) => Err(format!("output {o:?}")),
                Err(_) => Err("python failed".into()),
            },
        ));
    }

    let msg = dir.join("msg.txt");
    std::fs::write(&msg, "Subject: curl\n\nbody\n").expect("write");
    let out = curl_send(
        port,
        "alice:wonder land",
        "alice@mx.test",
        "bob@example.org",
        &msg,
    );
    rows.push((
        "curl --user (AUTH PLAIN), --upload-file".into(),
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        },
    ));

    let swaks = Command::new("swaks")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if swaks {
        let out = run(Command::new("swaks")
            .args([
                "--server",
                &format!("127.0.0.1:{port}"),
                "--auth",
                "LOGIN",
                "--auth-user",
                "alice",
                "--auth-password",
                "wonder land",
            ])
            .args([
                "--from",
                "alice@mx.test",
                "--to",
                "bob@example.org",
                "--body",
                "swaks body",
            ]));
        rows.push((
            "swaks --auth LOGIN".into(),
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_owned())
            },
        ));
    }

    let delivered = maildir_messages(&dir.join("Maildir")).len();
    let expected = 2 + 2 + 1 + usize::from(swaks);
    rows.push((
        format!("Maildir holds every accepted message ({expected})"),
        if delivered == expected {
            Ok(())
        } else {
            Err(format!("{delivered} files"))
        },
    ));

    println!("\n{:<100} result", "conformance check");
    for (name, r) in &rows {
        match r {
            Ok(()) => println!("{name:<100} pass"),
            Err(e) => println!("{name:<100} FAIL: {e}"),
        }
    }
    if !swaks {
        println!("{:<100} skipped (swaks not installed)", "swaks");
    }
    let failed: Vec<_> = rows.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failing: {failed:?}\n{}",
        failed.len(),
        srv.log()
    );
    let _ = std::fs::remove_dir_all(dir);
}
