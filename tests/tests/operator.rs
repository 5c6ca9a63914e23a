//! The operator's conventions, through the real `smtpd` binary: the default configuration
//! path (and a plain refusal without one), `RUST_LOG` over `[log] level`, a mistyped level as a
//! configuration error naming its line, and rustls's own log records in the server's log.

use std::process::Command;

use e2e::{Smtpd, cert_files, file_config, free_port, python, run, smtpd_bin, temp_dir};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

#[test]
fn serve_without_a_configuration_says_so_instead_of_running_the_demo() {
    setup();
    assert!(
        !std::path::Path::new(smtpd::cli::DEFAULT_CONFIG_PATH).exists(),
        "this test needs a machine without {}",
        smtpd::cli::DEFAULT_CONFIG_PATH
    );
    let dir = temp_dir("no-config");
    let out = run(Command::new(smtpd_bin())
        .arg("serve")
        .env_remove("RUST_LOG")
        .current_dir(&dir));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "smtpd: no configuration: /etc/smtpd/smtpd.toml does not exist and no --config was given (the demo on 127.0.0.1:2525: smtpd serve --config examples/smtpd.toml)\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_mistyped_log_level_is_a_configuration_error_naming_its_line() {
    setup();
    let dir = temp_dir("log-level");
    let port = free_port();
    let config = format!(
        "{}\n[log]\nformat = \"text\"\nlevel = \"infoo\"\n",
        file_config(&dir, port, "", false)
    );
    let path = dir.join("smtpd.toml");
    std::fs::write(&path, &config).unwrap();
    let line = config.lines().position(|l| l.starts_with("level")).unwrap() + 1;
    for args in [vec!["check-config"], vec!["serve", "--config"]] {
        let out = run(Command::new(smtpd_bin())
            .args(&args)
            .arg(&path)
            .env_remove("RUST_LOG"));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "{}: key `log.level` at line {line}: `infoo` is not a level (trace, debug, info, warn, error, off) nor target=level\n",
                path.display()
            ),
            "{args:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rust_log_overrides_the_configured_level_and_a_bad_one_is_refused() {
    setup();
    let dir = temp_dir("rust-log");
    let port = free_port();
    let config = format!(
        "{}\n[log]\nlevel = \"error\"\n",
        file_config(&dir, port, "", false)
    );
    // [log] level = "error" alone: no connection line.
    let srv = Smtpd::start(&dir, &config, port);
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=10)\ns.ehlo('c.test')\ns.quit()\n"
    ));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!srv.log().contains("connection peer="), "{}", srv.log());
    drop(srv);
    // RUST_LOG says info for smtp_server: the connection lines come back.
    let srv = Smtpd::start_with_env(
        &dir,
        &config,
        port,
        &[("RUST_LOG", "smtp_server=info,error")],
    );
    python(&format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=10)\ns.ehlo('c.test')\ns.quit()\n"
    ));
    srv.wait_for_log("connection peer=", 1);
    drop(srv);
    // A RUST_LOG that is no filter stops the start, naming RUST_LOG.
    let out = run(Command::new(smtpd_bin())
        .args(["serve", "--config"])
        .arg(dir.join("smtpd.toml"))
        .env("RUST_LOG", "verbose"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "smtpd: RUST_LOG: `verbose` is not a level (trace, debug, info, warn, error, off) nor target=level\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rustls_log_records_reach_the_servers_log() {
    setup();
    let dir = temp_dir("rustls-log");
    let port = free_port();
    let _ = cert_files(&dir);
    let config = file_config(&dir, port, "", true);
    let srv = Smtpd::start_with_env(&dir, &config, port, &[("RUST_LOG", "rustls=debug,info")]);
    python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=10)
s.starttls(context=ctx)
s.ehlo('c.test')
s.quit()
"#
    ));
    // rustls logs through the `log` crate; the bridge hands its records to tracing.
    srv.wait_for_log(" rustls::", 1);
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}
