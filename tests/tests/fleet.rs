//! A fleet: `smtpd` instances sharing their AUTH failure counts through a real `redis-server`
//! (`[limiter]`), behind a real HAProxy speaking PROXY protocol v2. Redis and HAProxy run as
//! children on loopback ports; `scripts/install-test-tools.sh` installs them when missing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Smtpd, ensure_tool, file_config, free_port, python, run, temp_dir};

/// A child process killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` on `port`, nothing saved; `extra` adds options.
fn redis(port: u16, extra: &[&str]) -> Peer {
    ensure_tool("redis-server");
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    e2e::wait_for_port(port, &mut child, "redis-server");
    Peer(child)
}

/// One Redis command over RESP; the reply's first line and, for a bulk string, its value.
fn redis_cmd(port: u16, args: &[&str]) -> String {
    redis_cmd_as(port, None, args)
}

/// The same after `AUTH password` when `password` is given.
fn redis_cmd_as(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let mut out = String::new();
    let mut push = |args: &[&str]| {
        out.push_str(&format!("*{}\r\n", args.len()));
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    };
    if let Some(p) = password {
        push(&["AUTH", p]);
    }
    push(args);
    s.write_all(out.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if password.is_some() {
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n");
        line.clear();
    }
    r.read_line(&mut line).unwrap();
    if line.starts_with('$') && !line.starts_with("$-1") {
        let mut value = String::new();
        r.read_line(&mut value).unwrap();
        return value.trim_end().to_owned();
    }
    line.trim_end().to_owned()
}

/// Waits (at most 5 s) until Redis holds `value` at `key`: a failure reaches Redis a moment
/// after its reply.
fn wait_for_count(port: u16, password: Option<&str>, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_cmd_as(port, password, &["GET", key]) != value {
        assert!(
            Instant::now() < deadline,
            "{key} never became {value} in Redis"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A configuration with the shared limiter at `redis_port`: 3 failures per user, 100 per
/// address, [metrics] on `metrics_port`; `server` adds `[server]` keys, `limiter` `[limiter]`
/// keys.
fn fleet_config(
    dir: &Path,
    port: u16,
    redis_port: u16,
    metrics_port: u16,
    server: &str,
    limiter: &str,
) -> String {
    let base = file_config(
        dir,
        port,
        &format!(
            "max_auth_failures_per_user = 3\nmax_auth_failures_per_ip = 100\nmax_auth_failures = 100\n{server}"
        ),
        false,
    );
    format!(
        "{base}\n[limiter]\nredis = \"127.0.0.1:{redis_port}\"\ntimeout_ms = 500\n{limiter}\n[metrics]\naddress = \"127.0.0.1:{metrics_port}\"\n"
    )
}

/// AUTH PLAIN as `user` against `port` (from `source`): the reply's code and text.
fn login(port: u16, source: &str, user: &str, password: &str) -> String {
    python(&format!(
        r#"
import smtplib, base64
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20, source_address=({source:?}, 0))
s.ehlo()
code, text = s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'\0' + {user:?}.encode() + b'\0' + {password:?}.encode()).decode())
print(code, text.decode())
s.quit()
"#
    ))
    .trim_end()
    .to_owned()
}

fn scrape(port: u16) -> String {
    let out = run(Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/metrics")]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const INVALID: &str = "535 5.7.8 Authentication credentials invalid";
const LOCKED: &str = "454 4.7.0 Temporary authentication failure";
const OK: &str = "235 2.7.0 Authentication successful";

#[test]
fn failures_on_one_instance_lock_the_user_on_every_instance() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let rport = free_port();
    let _redis = redis(rport, &[]);
    let (da, db) = (temp_dir("fleet-a"), temp_dir("fleet-b"));
    let (pa, pb, ma, mb) = (free_port(), free_port(), free_port(), free_port());
    let a = Smtpd::start(&da, &fleet_config(&da, pa, rport, ma, "", ""), pa);
    let b = Smtpd::start(&db, &fleet_config(&db, pb, rport, mb, "", ""), pb);

    assert_eq!(login(pa, "127.0.0.1", "alice", "wrong 1"), INVALID);
    assert_eq!(login(pb, "127.0.0.1", "Alice", "wrong 2"), INVALID);
    // Each instance has seen fewer than 3: the third failure still gets its credential checked.
    assert_eq!(login(pa, "127.0.0.1", "alice", "wrong 3"), INVALID);
    // Redis holds the fleet's count under the local limiter's keys (names lowercased).
    assert_eq!(redis_cmd(rport, &["GET", "smtpd:authfail:user:alice"]), "3");
    assert_eq!(
        redis_cmd(rport, &["GET", "smtpd:authfail:ip:127.0.0.1"]),
        "3"
    );
    let ttl: u64 = redis_cmd(rport, &["TTL", "smtpd:authfail:user:alice"])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((590..=600).contains(&ttl), "the window is 600 s: {ttl}");
    // B saw one failure for alice, A two: neither alone is at 3, the fleet is.
    assert_eq!(login(pb, "127.0.0.1", "alice", "wonder land"), LOCKED);
    assert_eq!(login(pa, "127.0.0.1", "alice", "wonder land"), LOCKED);
    // The lock is alice's: bob still gets in on both.
    assert_eq!(login(pb, "127.0.0.1", "bob", "builder"), OK);
    assert_eq!(login(pa, "127.0.0.1", "bob", "builder"), OK);
    b.wait_for_log(
        "AUTH refused: too many failures for this user across the fleet",
        1,
    );
    a.wait_for_log(
        "AUTH refused: too many failures for this user across the fleet",
        1,
    );
    let text = scrape(mb);
    for line in [
        "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"invalid\"} 1",
        "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"locked\"} 1",
        "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"ok\"} 1",
        "smtpd_auth_limiter_shared_up 1",
        "smtpd_auth_limiter_fallbacks_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // A lock holds the credential unchecked: no locked attempt counted as a new failure.
    assert_eq!(redis_cmd(rport, &["GET", "smtpd:authfail:user:alice"]), "3");
    assert!(!a.log().contains("wonder land") && !b.log().contains("wonder land"));
}

/// SCRAM-SHA-256 with gsasl (no TLS: the fleet configuration allows AUTH in the clear).
fn gsasl_scram(port: u16, user: &str, password: &str) -> String {
    ensure_tool("gsasl");
    let out = run(Command::new("gsasl")
        .args([
            "--smtp",
            &format!("--connect=127.0.0.1:{port}"),
            "--no-starttls",
        ])
        .args(["-m", "SCRAM-SHA-256", "-a", user, "-p", password])
        .stdin(Stdio::null()));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn scram_logins_are_checked_and_counted_by_the_fleet_too() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let rport = free_port();
    let _redis = redis(rport, &[]);
    let (da, db) = (temp_dir("fleet-scram-a"), temp_dir("fleet-scram-b"));
    let (pa, pb, ma, mb) = (free_port(), free_port(), free_port(), free_port());
    let mechanisms = "mechanisms = [\"SCRAM-SHA-256\", \"PLAIN\"]";
    // Users with SCRAM keys as well as their argon2 hash (`hash-password --scram`).
    let users = |dir: &Path| {
        let mut text = String::new();
        for (u, p) in [("alice", "wonder land"), ("bob", "builder")] {
            text.push_str(&format!(
                "{u}:{}:{}\n",
                smtpd::users::hash_password(p).unwrap(),
                smtpd::users::scram_keys(p).unwrap()
            ));
        }
        std::fs::write(dir.join("users"), text).unwrap();
    };
    // fleet_config writes the plain users file; ours replaces it before the start.
    let config_a = fleet_config(&da, pa, rport, ma, mechanisms, "");
    let config_b = fleet_config(&db, pb, rport, mb, mechanisms, "");
    users(&da);
    users(&db);
    let _a = Smtpd::start(&da, &config_a, pa);
    let b = Smtpd::start(&db, &config_b, pb);
    // A wrong SCRAM proof on B is counted for the fleet (the machine's count reaches Redis).
    let out = gsasl_scram(pb, "bob", "wrong");
    assert!(out.contains("535 5.7.8"), "{out}");
    wait_for_count(rport, None, "smtpd:authfail:user:bob", "1");
    // The right password works over SCRAM before the lock...
    let out = gsasl_scram(pb, "alice", "wonder land");
    assert!(out.contains("235 2.7.0"), "{out}");
    // ...and three PLAIN failures on A lock alice's SCRAM logins on B: the stored keys are
    // not even read (LookupResult::Locked).
    for n in 1..=3 {
        assert_eq!(
            login(pa, "127.0.0.1", "alice", &format!("wrong {n}")),
            INVALID
        );
    }
    let out = gsasl_scram(pb, "alice", "wonder land");
    assert!(out.contains("454 4.7.0"), "{out}");
    b.wait_for_log(
        "mechanism=\"SCRAM-SHA-256\" user=\"alice\" success=false status=\"locked\"",
        1,
    );
}

#[test]
fn without_redis_an_instance_counts_alone_and_says_so() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let rport = free_port();
    let dir = temp_dir("fleet-down");
    let (port, mport) = (free_port(), free_port());
    let srv = Smtpd::start(&dir, &fleet_config(&dir, port, rport, mport, "", ""), port);
    // Nothing listens on the Redis port: logins work as before.
    assert_eq!(login(port, "127.0.0.1", "alice", "wonder land"), OK);
    srv.wait_for_log(
        "shared limiter: Redis unreachable; this instance counts AUTH failures and sending alone until it is back",
        1,
    );
    // The local limiter still locks after 3 failures.
    for n in 1..=3 {
        assert_eq!(
            login(port, "127.0.0.1", "bob", &format!("wrong {n}")),
            INVALID
        );
    }
    assert_eq!(login(port, "127.0.0.1", "bob", "builder"), LOCKED);
    let text = scrape(mport);
    assert!(
        text.lines().any(|l| l == "smtpd_auth_limiter_shared_up 0"),
        "{text}"
    );
    let fallbacks: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("smtpd_auth_limiter_fallbacks_total "))
        .and_then(|v| v.parse().ok())
        .expect("the fallback counter");
    assert!(
        fallbacks >= 5,
        "5 checks and 3 failures went without Redis: {text}"
    );
    // The outage is logged once, not once per login.
    assert_eq!(
        srv.log().matches("Redis unreachable").count(),
        1,
        "{}",
        srv.log()
    );

    // Redis comes up: within a second the instance shares again.
    let _redis = redis(rport, &[]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(login(port, "127.0.0.1", "alice", "wrong"), INVALID);
    srv.wait_for_log("shared limiter: Redis is reachable again", 1);
    wait_for_count(rport, None, "smtpd:authfail:user:alice", "1");
    assert!(
        scrape(mport)
            .lines()
            .any(|l| l == "smtpd_auth_limiter_shared_up 1")
    );
}

#[test]
fn a_password_protected_redis_is_used_with_its_password_and_never_logs_it() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let rport = free_port();
    let _redis = redis(rport, &["--requirepass", "redis-s3cret"]);
    let (da, db) = (temp_dir("fleet-pw-a"), temp_dir("fleet-pw-b"));
    let (pa, pb, ma, mb) = (free_port(), free_port(), free_port(), free_port());
    let config_a = fleet_config(&da, pa, rport, ma, "", "password = \"redis-s3cret\"");
    let config_b = fleet_config(&db, pb, rport, mb, "", "password = \"wrong-s3cret\"");
    let a = Smtpd::start(&da, &config_a, pa);
    let b = Smtpd::start(&db, &config_b, pb);
    assert_eq!(login(pa, "127.0.0.1", "alice", "wrong"), INVALID);
    wait_for_count(
        rport,
        Some("redis-s3cret"),
        "smtpd:authfail:user:alice",
        "1",
    );
    // B's password is refused: it counts alone, says why, logs in users, shows no password.
    assert_eq!(login(pb, "127.0.0.1", "bob", "builder"), OK);
    b.wait_for_log("Redis unreachable", 1);
    assert!(b.log().contains("WRONGPASS"), "{}", b.log());
    for srv in [&a, &b] {
        let log = srv.log();
        assert!(!log.contains("s3cret"), "{log}");
    }
}

/// HAProxy on a free port, spreading connections round robin over `pa` and `pb` with PROXY
/// protocol v2: the process and its port.
fn haproxy(dir: &Path, pa: u16, pb: u16) -> (Peer, u16) {
    ensure_tool("haproxy");
    let front = free_port();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend smtp\n  bind 127.0.0.1:{front}\n  default_backend smtpd\n\
             backend smtpd\n  balance roundrobin\n  server a 127.0.0.1:{pa} send-proxy-v2\n  server b 127.0.0.1:{pb} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let mut child = Command::new("haproxy")
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy starts");
    e2e::wait_for_port(front, &mut child, "haproxy");
    (Peer(child), front)
}

/// Sends one message as alice through `port` from 127.0.0.2 to `rcpts`: the MAIL reply, each
/// RCPT reply and the end-of-DATA reply (when a recipient was accepted), one per line.
fn send_as_alice(port: u16, rcpts: &[&str]) -> Vec<String> {
    let rcpts: Vec<String> = rcpts.iter().map(|r| format!("{r:?}")).collect();
    python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20, source_address=('127.0.0.2', 0))
s.login('alice', 'wonder land')
r = lambda t: '%d %s' % (t[0], t[1].decode())
out = [r(s.mail('alice@mx.test'))]
ok = 0
if out[0].startswith('250'):
    for to in [{rcpts}]:
        reply = s.rcpt(to)
        out.append(r(reply))
        ok += reply[0] == 250
    if ok:
        out.append(r(s.data(b'Subject: t\r\n\r\nbody\r\n')))
print('\n'.join(out))
s.quit()
"#,
        rcpts = rcpts.join(", ")
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn the_limiter_reaches_redis_over_tls_with_a_password_from_a_file() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let dir = temp_dir("fleet-tls");
    let (cert, key) = e2e::cert_files(&dir);
    let rport = free_port();
    // Redis listens with TLS only (no plain port) and wants a password.
    let _redis = {
        ensure_tool("redis-server");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &rport.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .args(["--tls-auth-clients", "no", "--requirepass", "TLS-s3cret"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        e2e::wait_for_port(rport, &mut child, "redis-server");
        Peer(child)
    };
    std::fs::write(dir.join("redis-password"), "TLS-s3cret\n").unwrap();
    let (port, mport) = (free_port(), free_port());
    let limiter = format!(
        "ca_file = {cert:?}\npassword_file = {:?}\n",
        dir.join("redis-password")
    );
    let config = fleet_config(&dir, port, rport, mport, "", &limiter).replace(
        &format!("redis = \"127.0.0.1:{rport}\""),
        &format!("redis = \"rediss://localhost:{rport}\""),
    );
    assert!(config.contains("rediss://localhost:"), "{config}");
    let srv = Smtpd::start(&dir, &config, port);
    for n in 1..=2 {
        assert_eq!(
            login(port, "127.0.0.1", "alice", &format!("guess {n}")),
            INVALID
        );
    }
    // The count is in Redis, read back over TLS with redis-cli.
    let get = || {
        let out = run(Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&cert)
            .args([
                "-h",
                "localhost",
                "-p",
                &rport.to_string(),
                "--no-auth-warning",
            ])
            .args(["-a", "TLS-s3cret", "GET", "smtpd:authfail:user:alice"]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while get() != "2" {
        assert!(
            Instant::now() < deadline,
            "the count never reached Redis: {}",
            get()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        scrape(mport).contains("smtpd_auth_limiter_shared_up 1"),
        "{}",
        scrape(mport)
    );
    assert!(!srv.log().contains("Redis unreachable"), "{}", srv.log());
    assert!(!srv.log().contains("TLS-s3cret"));
    drop(srv);
}

#[test]
fn two_instances_behind_haproxy_spend_one_sending_budget_through_redis() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    let rport = free_port();
    let _redis = redis(rport, &[]);
    let (da, db) = (temp_dir("fleet-send-a"), temp_dir("fleet-send-b"));
    let (pa, pb, ma, mb) = (free_port(), free_port(), free_port(), free_port());
    let server = "proxy_protocol = true";
    let limits = "[rate_limits]\nmessages_per_hour = 3\nrecipients_per_hour = 5\n";
    let config = |d: &Path, p: u16, m: u16| {
        format!("{}\n{limits}", fleet_config(d, p, rport, m, server, ""))
    };
    let a = Smtpd::start(&da, &config(&da, pa, ma), pa);
    let b = Smtpd::start(&db, &config(&db, pb, mb), pb);
    let (_haproxy, front) = haproxy(&da, pa, pb);
    let queued = |lines: &[String]| {
        lines
            .last()
            .is_some_and(|l| l.starts_with("250 2.0.0 OK: queued as"))
    };
    // Three messages, round robin over both instances: one budget of 3.
    for n in 0..3 {
        let got = send_as_alice(front, &["carol@example.org"]);
        assert!(queued(&got), "message {n}: {got:?}");
        wait_for_count(
            rport,
            None,
            "smtpd:authfail:send:msg:alice",
            &(n + 1).to_string(),
        );
    }
    // The fourth is refused at MAIL by whichever instance it reaches (each has accepted at
    // most two itself).
    for _ in 0..2 {
        let got = send_as_alice(front, &["carol@example.org"]);
        assert_eq!(
            got[0],
            "450 4.7.1 Sending limit reached: 3 messages per hour for user alice, try again later",
            "{got:?}"
        );
    }
    assert_eq!(
        redis_cmd(rport, &["GET", "smtpd:authfail:send:rcpt:alice"]),
        "3"
    );
    let ttl: u64 = redis_cmd(rport, &["TTL", "smtpd:authfail:send:msg:alice"])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&ttl), "an hour: {ttl}");
    // Both instances refused once, counted and logged it.
    for (srv, m) in [(&a, ma), (&b, mb)] {
        srv.wait_for_log("message refused: sending limit reached", 1);
        assert!(
            scrape(m).contains("smtpd_policy_refusals_total{reason=\"messages_per_hour\"} 1"),
            "{}",
            scrape(m)
        );
    }
}

#[test]
fn haproxy_spreads_a_guesser_over_two_instances_and_both_lock_the_user() {
    e2e::use_bin(env!("CARGO_BIN_EXE_smtpd-e2e"));
    ensure_tool("haproxy");
    let rport = free_port();
    let _redis = redis(rport, &[]);
    let (da, db) = (temp_dir("fleet-ha-a"), temp_dir("fleet-ha-b"));
    let (pa, pb, ma, mb) = (free_port(), free_port(), free_port(), free_port());
    let proxy = "proxy_protocol = true";
    let a = Smtpd::start(&da, &fleet_config(&da, pa, rport, ma, proxy, ""), pa);
    let b = Smtpd::start(&db, &fleet_config(&db, pb, rport, mb, proxy, ""), pb);
    let (_haproxy, front) = haproxy(&da, pa, pb);

    // The guesser connects from 127.0.0.2; HAProxy connects to the instances from 127.0.0.1.
    for n in 1..=3 {
        assert_eq!(
            login(front, "127.0.0.2", "alice", &format!("guess {n}")),
            INVALID
        );
    }
    // Round robin: the next attempts reach both instances, and each refuses unchecked.
    for _ in 0..4 {
        assert_eq!(login(front, "127.0.0.2", "alice", "wonder land"), LOCKED);
    }
    for srv in [&a, &b] {
        srv.wait_for_log("success=false status=\"locked\"", 2);
        let log = srv.log();
        // The real client address reached each instance's auth log through PROXY v2.
        assert!(
            log.contains("AUTH failed remote_ip=127.0.0.2 user=\"alice\" mechanism=\"PLAIN\" status=\"invalid\""),
            "{log}"
        );
        assert!(
            log.contains("AUTH refused: too many failures for this user across the fleet remote_ip=127.0.0.2 user=\"alice\""),
            "{log}"
        );
        assert!(
            log.contains(
                "remote_ip=127.0.0.2 mechanism=\"PLAIN\" user=\"alice\" success=false status=\"locked\""
            ),
            "{log}"
        );
        assert!(
            !log.contains("remote_ip=127.0.0.1 mechanism")
                && !log.contains("remote_ip=127.0.0.1 user"),
            "{log}"
        );
    }
    let locked: u64 = [ma, mb]
        .iter()
        .map(|m| {
            scrape(*m)
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"locked\"} ",
                    )
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(locked, 4);
    assert_eq!(
        redis_cmd(rport, &["GET", "smtpd:authfail:ip:127.0.0.2"]),
        "3"
    );
}
