//! `[metrics]`: the Prometheus endpoint scraped with curl after real sessions (smtplib over
//! STARTTLS and in the clear), with exact values.

use e2e::{Smtpd, file_config, free_port, python, run, temp_dir};

fn scrape(port: u16, path: &str) -> (String, String) {
    let out = run(std::process::Command::new("curl").args([
        "-s",
        "-w",
        "\n%{http_code}",
        &format!("http://127.0.0.1:{port}{path}"),
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (body.to_owned(), code.to_owned())
}

#[test]
fn the_endpoint_counts_real_sessions_exactly() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("metrics");
    let port = free_port();
    let mport = free_port();
    let config = format!(
        "{}\n[metrics]\naddress = \"127.0.0.1:{mport}\"\n",
        file_config(&dir, port, "", true)
    );
    let srv = Smtpd::start(&dir, &config, port);
    let out = python(&format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.starttls(context=ctx)
try:
    s.login('alice', 'wrong')
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
print(s.login('alice', 'wonder land')[0])
print(s.sendmail('alice@mx.test', ['carol@example.org'], 'Subject: m\r\n\r\nbody\r\n'))
s.quit()
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo()
print(s.docmd('AUTH', 'LOGIN')[0], s.docmd('*')[0])
print(s.login('alice', 'wonder land')[0])
s.quit()
"#
    ));
    assert_eq!(out, "535\n235\n{}\n334 501\n235\n");
    srv.wait_for_log("messages=", 3);
    let (text, code) = scrape(mport, "/metrics");
    assert_eq!(code, "200");
    for line in [
        // The two sessions, and the harness's probe that the port is open.
        "smtpd_connections_total 3",
        "smtpd_connections_current 0",
        "smtpd_connections_refused_total{limit=\"max_connections_per_ip\"} 0",
        "smtpd_tls_handshakes_total{result=\"ok\"} 1",
        "smtpd_tls_handshakes_total{result=\"failed\"} 0",
        // smtplib's login() tries PLAIN, then LOGIN, before it gives up on a wrong password.
        "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"invalid\"} 1",
        "smtpd_auth_attempts_total{mechanism=\"LOGIN\",outcome=\"invalid\"} 1",
        "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"ok\"} 2",
        "smtpd_auth_attempts_total{mechanism=\"LOGIN\",outcome=\"cancelled\"} 1",
        "smtpd_auth_duration_seconds_count 5",
        // The wrong password (twice) and the first right one are checked; the second right
        // one is answered by the credential cache.
        "smtpd_credential_cache_hits_total 1",
        "smtpd_credential_cache_misses_total 3",
        "smtpd_messages_total{class=\"2xx\"} 1",
        "smtpd_message_bytes_total{class=\"2xx\"} 20",
        "smtpd_messages_total{class=\"5xx\"} 0",
        "smtpd_delivery_duration_seconds_count 1",
        "smtpd_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    assert!(
        !text.contains("smtpd_delivery_failures_total{"),
        "no delivery failed:\n{text}"
    );
    // The process metrics, with values that fit this process.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    let rss = value("process_resident_memory_bytes");
    assert!((1e6..1e9).contains(&rss), "{rss}");
    let fds = value("process_open_fds");
    assert!((3.0..1000.0).contains(&fds), "{fds}");
    assert!(value("process_max_fds") >= fds);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        now - start < 600.0 && start <= now + 1.0,
        "{start} vs {now}"
    );
    assert!(
        !text.contains("octets"),
        "Prometheus naming: bytes, not octets:\n{text}"
    );
    // Alive, and ready: the listeners are bound and the users file needs no answer.
    assert_eq!(
        scrape(mport, "/healthz"),
        ("ok\n".to_owned(), "200".to_owned())
    );
    assert_eq!(
        scrape(mport, "/readyz"),
        ("ready\n".to_owned(), "200".to_owned())
    );
    let (_, code) = scrape(mport, "/other");
    assert_eq!(code, "404");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn readyz_says_503_while_the_identity_store_does_not_answer() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("metrics-readyz");
    let (port, mport, dovecot) = (free_port(), free_port(), free_port());
    // Dovecot's auth-client address, where nothing listens.
    let config = format!(
        r#"
[server]
auth_require_tls = false
mechanisms = ["PLAIN"]
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "dovecot"
socket = "127.0.0.1:{dovecot}"
[delivery]
kind = "discard"
[metrics]
address = "127.0.0.1:{mport}"
"#
    );
    let srv = Smtpd::start(&dir, &config, port);
    assert_eq!(
        scrape(mport, "/healthz"),
        ("ok\n".to_owned(), "200".to_owned())
    );
    let (body, code) = scrape(mport, "/readyz");
    assert_eq!(code, "503", "{body}");
    assert!(
        body.starts_with("identity store dovecot unreachable:"),
        "{body}"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn readyz_follows_the_http_auth_service() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("metrics-readyz-http");
    let (port, mport) = (free_port(), free_port());
    // Any HTTP answer counts: Python's file server answers HEAD /auth with 404.
    let (up, service) = e2e::python_http_server(&dir);
    let config = format!(
        "{}\n[metrics]\naddress = \"127.0.0.1:{mport}\"\n",
        e2e::http_config(
            port,
            &format!("http://127.0.0.1:{service}/auth"),
            "",
            "bearer_token = \"tok-s3cret\"\ntimeout_ms = 500"
        )
    );
    let srv = Smtpd::start(&dir, &config, port);
    assert_eq!(
        scrape(mport, "/readyz"),
        ("ready\n".to_owned(), "200".to_owned())
    );
    // The service gone: not ready, saying which store and why, never the token.
    drop(up);
    let (body, code) = scrape(mport, "/readyz");
    assert_eq!(code, "503", "{body}");
    assert!(
        body.starts_with("identity store http unreachable: request failed: "),
        "{body}"
    );
    assert!(!body.contains("tok-s3cret"), "{body}");
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);
}
