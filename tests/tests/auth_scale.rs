//! AUTH at scale through the real `smtpd`: the credential cache with the file backend (a hit
//! is logged `cached=true`, SIGHUP invalidates a changed user exactly, a broken file keeps the
//! old users) and with the HTTP backend (two logins, one request while cached).

use e2e::{Smtpd, free_port, http_auth_service_counting, python, temp_dir, users_file};

fn setup() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
}

/// smtplib logins: one line per attempt, the reply code.
fn logins(port: u16, attempts: &[(&str, &str)]) -> String {
    let mut script = String::from("import smtplib\n");
    for (u, p) in attempts {
        script.push_str(&format!(
            r#"
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
try:
    print(s.login({u:?}, {p:?})[0])
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
s.quit()
"#
        ));
    }
    python(&script)
}

fn wait_for_log(srv: &Smtpd, needle: &str, times: usize) {
    srv.wait_for_log(needle, times);
}

#[test]
fn file_backend_cache_and_reload() {
    setup();
    let dir = temp_dir("cache-file");
    let port = free_port();
    let users = users_file(&dir, &[("alice", "old-pass"), ("bob", "builder")]);
    let config = format!(
        r#"
[server]
auth_require_tls = false
auth_failure_delay_ms = 0
auth_workers = 2
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[delivery]
kind = "discard"
[log]
level = "info"
"#
    );
    let srv = Smtpd::start(&dir, &config, port);
    wait_for_log(&srv, "workers=2 cache=true", 1);
    assert_eq!(
        logins(port, &[("alice", "old-pass"), ("alice", "old-pass")]),
        "235\n235\n"
    );
    // The second login was decided from the cache, and the log says so without the password.
    wait_for_log(&srv, "cached=true", 1);
    assert!(!srv.log().contains("old-pass"));

    // alice's password changes in the file; bob's line stays.
    let alice = smtpd::users::hash_password("new-pass").unwrap();
    let text = std::fs::read_to_string(&users).unwrap();
    let bob_line = text
        .lines()
        .find(|l| l.starts_with("bob:"))
        .unwrap()
        .to_owned();
    assert_eq!(logins(port, &[("bob", "builder")]), "235\n");
    std::fs::write(
        &users,
        format!("alice:{alice}\n{bob_line}\nnewcomer:{alice}\n"),
    )
    .unwrap();
    srv.sighup();
    wait_for_log(&srv, "users file reloaded", 1);
    assert!(srv.log().contains("users=3 changed=1"), "{}", srv.log());
    // The old password is not served from the cache any more; the new one and the new user
    // work without a restart; bob is still cached.
    assert_eq!(
        logins(
            port,
            &[
                ("alice", "old-pass"),
                ("alice", "new-pass"),
                ("newcomer", "new-pass"),
                ("bob", "builder")
            ]
        ),
        "535\n235\n235\n235\n"
    );
    wait_for_log(&srv, "cached=true", 2);

    // A broken file is refused and the old users stay.
    std::fs::write(&users, "alice:not-a-hash\n").unwrap();
    srv.sighup();
    wait_for_log(&srv, "users file reload refused", 1);
    assert_eq!(logins(port, &[("newcomer", "new-pass")]), "235\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn http_backend_is_asked_once_per_credential_while_cached() {
    setup();
    let (url, requests) = http_auth_service_counting();
    let dir = temp_dir("cache-http");
    let port = free_port();
    let config = e2e::http_config(port, &url, "", "");
    let _srv = Smtpd::start(&dir, &config, port);
    let count = || requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        logins(port, &[("alice", "right"), ("alice", "right")]),
        "235\n235\n"
    );
    assert_eq!(count(), 1, "two logins, one request");
    // A wrong password is asked (not cached by default; smtplib tries it with PLAIN, then
    // LOGIN: two requests) and drops alice's cached success, so the next login asks again.
    assert_eq!(
        logins(port, &[("alice", "wrong"), ("alice", "right")]),
        "535\n235\n"
    );
    assert_eq!(count(), 4);
    let _ = std::fs::remove_dir_all(&dir);

    // With the cache off every login is a request.
    let dir = temp_dir("cache-http-off");
    let port = free_port();
    let _srv = Smtpd::start(
        &dir,
        &e2e::http_config(port, &url, "", "cache = false"),
        port,
    );
    let before = count();
    assert_eq!(
        logins(port, &[("alice", "right"), ("alice", "right")]),
        "235\n235\n"
    );
    assert_eq!(count(), before + 2);
    let _ = std::fs::remove_dir_all(dir);
}
