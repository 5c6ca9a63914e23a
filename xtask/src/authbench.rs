//! `cargo xtask bench --auth`: AUTH at scale against the release `smtpd`.
//!
//! A load generator on std threads (one per concurrent session, bounded in count and time)
//! runs whole sessions — new connection, EHLO, AUTH PLAIN, MAIL, RCPT, DATA of 200 octets,
//! QUIT — and reports sessions/s, AUTH latency p50/p99, the server's CPU per session (from
//! `/proc/<pid>/stat`) and its peak RSS (`VmHWM`), at 1, 20 and 100 concurrent sessions, for:
//!
//! - a minimal-cost argon2id hash (m=8,t=1,p=1), cache off: the reference row;
//! - the default argon2id (m=19456,t=2,p=1), cache off: every login hashes;
//! - the default hash, cache on, the same user logging in again and again (one login warms
//!   the cache before the clock starts);
//! - the default hash, cache on, 1,000 distinct users each logging in twice;
//!
//! then each identity store at 100 concurrent (Dovecot, LDAP: cached and uncached, as ratios to
//! the reference row), then 1,000 concurrent connections sending wrong passwords for unknown users while one
//! client logs in correctly: the server's peak RSS and that login's latency.
//!
//! Every scenario gets a fresh server, so each peak RSS is its own.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{cpu_seconds, free_port, root, run, wait_port};

pub(crate) const PASSWORD: &str = "bench-password";
const USERS: usize = 1000;

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One whole session; the AUTH latency, or why it failed.
fn session(port: u16, user: &str, password: &str) -> Result<Duration, String> {
    let mut body = String::from("Subject: bench\r\n\r\n");
    while body.len() < 195 {
        body.push_str("0123456789abcdef\r\n");
    }
    session_with(port, user, password, &body)
}

/// [`session`] sending `message` (CRLF lines, no line starting with a dot, without the final
/// `.` line) as `<user>@localhost`.
pub(crate) fn session_with(
    port: u16,
    user: &str,
    password: &str,
    message: &str,
) -> Result<Duration, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut reply = || -> Result<String, String> {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok(l.trim_end().to_owned());
            }
        }
    };
    let expect = |got: String, code: &str| {
        if got.starts_with(code) {
            Ok(())
        } else {
            Err(format!("expected {code}, got {got:?}"))
        }
    };
    expect(reply()?, "220")?;
    w.write_all(b"EHLO bench.test\r\n")
        .map_err(|e| e.to_string())?;
    expect(reply()?, "250")?;
    // `bearer:TOKEN` logs in with XOAUTH2, anything else is a PLAIN password.
    let line = match password.strip_prefix("bearer:") {
        Some(token) => format!(
            "AUTH XOAUTH2 {}\r\n",
            b64(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
        ),
        None => format!(
            "AUTH PLAIN {}\r\n",
            b64(format!("\0{user}\0{password}").as_bytes())
        ),
    };
    let t0 = Instant::now();
    w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let auth = reply()?;
    let latency = t0.elapsed();
    if !auth.starts_with("235") {
        let _ = w.write_all(b"QUIT\r\n");
        return Err(auth);
    }
    w.write_all(format!("MAIL FROM:<{user}@localhost>\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    expect(reply()?, "250")?;
    w.write_all(b"RCPT TO:<sink@example.org>\r\n")
        .map_err(|e| e.to_string())?;
    expect(reply()?, "250")?;
    w.write_all(b"DATA\r\n").map_err(|e| e.to_string())?;
    expect(reply()?, "354")?;
    w.write_all(message.as_bytes()).map_err(|e| e.to_string())?;
    w.write_all(b".\r\n").map_err(|e| e.to_string())?;
    expect(reply()?, "250")?;
    w.write_all(b"QUIT\r\n").map_err(|e| e.to_string())?;
    expect(reply()?, "221")?;
    Ok(latency)
}

pub(crate) struct Row {
    sessions: usize,
    wall: f64,
    pub(crate) cpu: f64,
    p50: Duration,
    p99: Duration,
    rss_kib: u64,
    pub(crate) failed: usize,
}

/// `total` sessions over `concurrency` threads; `user` picks session i's login.
fn drive(
    port: u16,
    pid: u32,
    concurrency: usize,
    total: usize,
    user: &(dyn Fn(usize) -> String + Sync),
) -> Result<Row, String> {
    drive_with(port, pid, concurrency, total, user, PASSWORD)
}

/// [`drive`] with another credential (`bearer:TOKEN` for XOAUTH2).
fn drive_with(
    port: u16,
    pid: u32,
    concurrency: usize,
    total: usize,
    user: &(dyn Fn(usize) -> String + Sync),
    password: &str,
) -> Result<Row, String> {
    drive_sessions(pid, concurrency, total, &|i| {
        session(port, &user(i), password)
    })
}

/// `total` runs of `one` (session i: its AUTH latency) over `concurrency` threads against the
/// server `pid`: latencies, the server's CPU time, its peak RSS.
pub(crate) fn drive_sessions(
    pid: u32,
    concurrency: usize,
    total: usize,
    one: &(dyn Fn(usize) -> Result<Duration, String> + Sync),
) -> Result<Row, String> {
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(total));
    let failed = AtomicUsize::new(0);
    let first_error = Mutex::new(None::<String>);
    let cpu0 = cpu_seconds(pid).ok_or("no /proc stat for the server")?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        return;
                    }
                    match one(i) {
                        Ok(l) => latencies.lock().unwrap().push(l),
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid).ok_or("no /proc stat for the server")? - cpu0;
    let mut l = latencies.into_inner().unwrap();
    if let Some(e) = first_error.into_inner().unwrap() {
        eprintln!(
            "xtask: {} session(s) failed, first: {e}",
            failed.load(Ordering::Relaxed)
        );
    }
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Ok(Row {
        sessions: l.len(),
        wall,
        cpu,
        p50: pct(0.50),
        p99: pct(0.99),
        rss_kib: peak_rss_kib(pid).unwrap_or(0),
        failed: failed.into_inner(),
    })
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    Some(crate::soak::rss_kib(pid, "VmHWM:")).filter(|k| *k > 0)
}

pub(crate) fn hash(smtpd: &Path, params: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(smtpd);
    cmd.arg("hash-password");
    if let Some(p) = params {
        cmd.args(["--params", p]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("smtpd hash-password: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let h = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if h.starts_with("$argon2id$") {
        Ok(h)
    } else {
        Err(format!("hash-password printed {h:?}"))
    }
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(smtpd: &Path, dir: &Path, users: &Path, cache: bool) -> Result<Server, String> {
    start_with(
        smtpd,
        dir,
        &format!("backend = \"file\"\nusers_file = {users:?}\ncache = {cache}"),
    )
}

/// A server whose `[auth]` section is `auth`.
fn start_with(smtpd: &Path, dir: &Path, auth: &str) -> Result<Server, String> {
    start_with_server(smtpd, dir, "", auth)
}

/// [`start_with`] with more `[server]` keys.
fn start_with_server(smtpd: &Path, dir: &Path, server: &str, auth: &str) -> Result<Server, String> {
    start_configured(smtpd, dir, server, auth, "kind = \"discard\"", "")
}

/// A bench server: `server` adds `[server]` keys, `auth` is the `[auth]` section, `delivery`
/// the `[delivery]` section and `tail` more sections; its configuration is written into `dir`.
pub(crate) fn start_configured(
    smtpd: &Path,
    dir: &Path,
    server: &str,
    auth: &str,
    delivery: &str,
    tail: &str,
) -> Result<Server, String> {
    let port = free_port()?;
    let config = format!(
        r#"[server]
auth_require_tls = false
auth_failure_delay_ms = 0
max_connections = 4096
max_connections_per_ip = 0
max_auth_failures_per_ip = 1000000
max_auth_failures_per_user = 0
sender_login = "any"
{server}
[[listener]]
address = "127.0.0.1:{port}"
[auth]
{auth}
[delivery]
{delivery}
# Limits out of reach: their checks run, and a load run is never refused.
[rate_limits]
messages_per_hour = 1000000000
recipients_per_hour = 1000000000
ip_messages_per_hour = 1000000000
[log]
level = "error"
{tail}"#
    );
    let path = dir.join(format!("smtpd-{port}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let child = Command::new(smtpd)
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("smtpd: {e}"))?;
    let server = Server { child, port };
    wait_port(port)?;
    Ok(server)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// The AUTH benchmark.
pub(crate) fn auth() -> Result<(), String> {
    let r = root();
    run(&r, "cargo", &["build", "--release", "-p", "smtpd"])?;
    let smtpd = crate::target_dir().join("release/smtpd");
    let dir = std::env::temp_dir().join(format!("xtask-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = auth_in(&smtpd, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn auth_in(smtpd: &Path, dir: &Path) -> Result<(), String> {
    let default_hash = hash(smtpd, None)?;
    let min_hash = hash(smtpd, Some("m=8,t=1,p=1"))?;
    let users_with = |name: &str, h: &str| -> Result<std::path::PathBuf, String> {
        let mut text = String::new();
        for i in 0..USERS {
            text.push_str(&format!("user{i}:{h}\n"));
        }
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let min_users = users_with("users-min", &min_hash)?;
    let default_users = users_with("users-default", &default_hash)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

    type Pick = Box<dyn Fn(usize) -> String + Sync>;
    let same: fn() -> Pick = || Box::new(|_| "user0".to_owned());
    let distinct_twice: fn() -> Pick = || Box::new(|i| format!("user{}", i % USERS));
    // (label, users file, cache, who logs in, sessions at concurrency 1, at 20 and 100)
    type Scenario<'a> = (&'a str, &'a Path, bool, fn() -> Pick, usize, usize);
    let scenarios: Vec<Scenario> = vec![
        (
            "minimal hash (reference), cache off",
            &min_users,
            false,
            same,
            1000,
            3000,
        ),
        (
            "argon2id default, cache off",
            &default_users,
            false,
            same,
            100,
            400,
        ),
        (
            "argon2id default, cache on, same user",
            &default_users,
            true,
            same,
            1000,
            3000,
        ),
        (
            "argon2id default, cache on, 1,000 users × 2",
            &default_users,
            true,
            distinct_twice,
            2 * USERS,
            2 * USERS,
        ),
    ];
    println!(
        "\n{:<46} {:>4} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "scenario (AUTH PLAIN + 200 B message)",
        "conc",
        "sessions/s",
        "AUTH p50",
        "AUTH p99",
        "CPU/session",
        "peak RSS"
    );
    let mut reference_sps_100 = 0.0;
    let mut cpu_c1: Vec<f64> = Vec::new();
    let mut uncached: Vec<(usize, f64)> = Vec::new();
    for (label, users, cache, pick, n1, n) in &scenarios {
        for conc in [1usize, 20, 100] {
            let server = start(smtpd, dir, users, *cache)?;
            let pid = server.child.id();
            let total = if conc == 1 { *n1 } else { *n };
            let p = pick();
            if label.contains("same user") {
                // Repeated logins: the cache is warm before the clock starts.
                session(server.port, "user0", PASSWORD)?;
            }
            let row = drive(server.port, pid, conc, total, &*p)?;
            let sps = row.sessions as f64 / row.wall;
            let cpu_per = row.cpu / row.sessions.max(1) as f64;
            println!(
                "{label:<46} {conc:>4} {sps:>10.0} {:>10} {:>10} {:>9.2} ms {:>6} MiB{}",
                ms(row.p50),
                ms(row.p99),
                cpu_per * 1e3,
                row.rss_kib / 1024,
                if row.failed > 0 {
                    format!("  ({} failed)", row.failed)
                } else {
                    String::new()
                }
            );
            if label.starts_with("minimal") && conc == 100 {
                reference_sps_100 = sps;
            }
            if conc == 1 && !cache {
                cpu_c1.push(cpu_per);
            }
            if label.starts_with("argon2id default, cache off") {
                uncached.push((conc, sps));
            }
            if label.contains("same user") && conc == 100 && reference_sps_100 > 0.0 {
                println!(
                    "{:<46} cache on, same user at 100: {:.0}% of the reference row's sessions/s (goal ≥ 80%), AUTH p99 {} (goal ≤ 20 ms)",
                    "",
                    100.0 * sps / reference_sps_100,
                    ms(row.p99)
                );
            }
            drop(server);
        }
    }
    if let [reference, hashed] = cpu_c1[..] {
        let hash_cpu = hashed - reference;
        let capacity = cores as f64 / hash_cpu;
        println!(
            "\nhashing capacity: {cores} cores ÷ {:.1} ms per argon2id verification = {capacity:.0} logins/s",
            hash_cpu * 1e3
        );
        for (conc, sps) in &uncached {
            println!(
                "  cache off at {conc:>3} concurrent: {sps:.0} sessions/s = {:.0}% of capacity (goal ≥ 90% at 20 and 100)",
                100.0 * sps / capacity
            );
        }
    }
    stores(smtpd, dir, reference_sps_100, &min_hash)?;
    oauth(smtpd, dir, reference_sps_100, &min_users)?;
    flood(smtpd, dir, &default_users, cores)
}

/// A store's server for the store rows, started from a configuration in the task's folder
/// (never the system service) in a process group of its own; killed with it when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn installed(programs: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("for p in {programs}; do command -v $p || exit 1; done"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn spawn_peer(program: &str, args: &[&std::ffi::OsStr]) -> Result<Peer, String> {
    spawn_peer_as(program, args, None)
}

/// As [`spawn_peer`], as `user` (uid, gid) when given.
fn spawn_peer_as(
    program: &str,
    args: &[&std::ffi::OsStr],
    user: Option<(u32, u32)>,
) -> Result<Peer, String> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(Peer)
        .map_err(|e| format!("{program}: {e}"))
}

fn wait_for(what: &str, ready: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

fn hash_with(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Dovecot with a passwd-file of the 1,000 users in its default scheme (SHA512-CRYPT); the
/// `[auth]` lines that reach it.
fn dovecot(dir: &Path) -> Result<(Peer, String), String> {
    let hash = hash_with("doveadm", &["pw", "-s", "SHA512-CRYPT", "-p", PASSWORD])?;
    let d = dir.join("dovecot");
    for sub in ["run", "state"] {
        std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
    }
    let passwd: String = (0..USERS).map(|i| format!("user{i}:{hash}\n")).collect();
    std::fs::write(d.join("passwd"), passwd).map_err(|e| e.to_string())?;
    let socket = d.join("auth-client");
    let conf = d.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "protocols =\nbase_dir = {run}\nstate_dir = {state}\nlog_path = /dev/null\nssl = no\n\
             default_internal_user = dovecot\ndefault_login_user = dovenull\n\
             auth_mechanisms = plain login\n\
             passdb {{\n  driver = passwd-file\n  args = {passwd}\n}}\n\
             service auth {{\n  unix_listener auth-client {{\n    path = {socket}\n    mode = 0666\n  }}\n}}\n",
            run = d.join("run").display(),
            state = d.join("state").display(),
            passwd = d.join("passwd").display(),
            socket = socket.display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let peer = spawn_peer("dovecot", &["-F".as_ref(), "-c".as_ref(), conf.as_os_str()])?;
    wait_for("dovecot", || socket.exists())?;
    Ok((
        peer,
        format!(
            "backend = \"dovecot\"\nsocket = {:?}",
            socket.display().to_string()
        ),
    ))
}

/// slapd with the 1,000 users under `ou=people`, each `{SSHA}` (slappasswd's default); the
/// `[auth]` lines that bind to it directly.
fn slapd(dir: &Path) -> Result<(Peer, String), String> {
    let hash = hash_with("slappasswd", &["-h", "{SSHA}", "-s", PASSWORD])?;
    let d = dir.join("ldap");
    std::fs::create_dir_all(d.join("db")).map_err(|e| e.to_string())?;
    let conf = d.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\n\
             moduleload back_mdb\npidfile {pid}\naccess to * by anonymous auth by * none\n\
             database mdb\nsuffix \"dc=example,dc=org\"\ndirectory {db}\nmaxsize 104857600\n",
            pid = d.join("slapd.pid").display(),
            db = d.join("db").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut ldif = String::from(
        "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: x\ndc: example\n\n\
         dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n",
    );
    for i in 0..USERS {
        ldif.push_str(&format!(
            "dn: uid=user{i},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
             uid: user{i}\ncn: user{i}\nsn: user{i}\nuserPassword: {hash}\n\n"
        ));
    }
    let seed = d.join("seed.ldif");
    std::fs::write(&seed, ldif).map_err(|e| e.to_string())?;
    let added = Command::new("slapadd")
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(&seed)
        .output()
        .map_err(|e| format!("slapadd: {e}"))?;
    if !added.status.success() {
        return Err(format!(
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        ));
    }
    let port = free_port()?;
    let url = format!("ldap://127.0.0.1:{port}/");
    let peer = spawn_peer(
        "slapd",
        &[
            "-d".as_ref(),
            "0".as_ref(),
            "-h".as_ref(),
            url.as_ref(),
            "-f".as_ref(),
            conf.as_os_str(),
        ],
    )?;
    wait_port(port)?;
    Ok((
        peer,
        format!(
            "backend = \"ldap\"\nurl = \"ldap://127.0.0.1:{port}\"\nuser_dn = \"uid=%u,ou=people,dc=example,dc=org\""
        ),
    ))
}

/// PostgreSQL (`initdb` as the postgres user in the task's folder, trust on loopback) with a
/// table of the 1,000 users, each with `hash`; the `[auth]` lines that query it.
fn postgres(dir: &Path, hash: &str) -> Result<(Peer, String), String> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .max()
        .ok_or("no PostgreSQL under /usr/lib/postgresql")?;
    let data = dir.join("pg");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let id = |flag: &str| -> Result<u32, String> {
        hash_with("id", &[flag, "postgres"])?
            .parse()
            .map_err(|_| "no postgres user".to_string())
    };
    let user = (id("-u")?, id("-g")?);
    let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    if !ok(Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&data))
        || !ok(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data))
    {
        return Err("initdb failed".into());
    }
    let port = free_port()?.to_string();
    let peer = spawn_peer_as(
        &bin.join("postgres").to_string_lossy(),
        &[
            "-D".as_ref(),
            data.as_os_str(),
            "-k".as_ref(),
            data.as_os_str(),
            "-p".as_ref(),
            port.as_ref(),
            "-c".as_ref(),
            "listen_addresses=127.0.0.1".as_ref(),
        ],
        Some(user),
    )?;
    let psql = |sql: &str| {
        ok(Command::new("psql")
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-p",
                &port,
            ])
            .args(["-c", sql]))
    };
    wait_for("postgres", || psql("SELECT 1"))?;
    let created = psql(&format!(
        "CREATE TABLE users (name text PRIMARY KEY, hash text NOT NULL);         INSERT INTO users SELECT 'user' || g, '{hash}' FROM generate_series(0, {}) g;",
        USERS - 1
    ));
    if !created {
        return Err("could not create the users table".into());
    }
    Ok((
        peer,
        format!(
            "backend = \"sql\"\nurl = \"postgres://postgres@127.0.0.1:{port}/postgres\"\n\
             query = \"SELECT hash FROM users WHERE name = $1\""
        ),
    ))
}

/// An SQLite file with the same table (written with Python's sqlite3); no server.
fn sqlite(dir: &Path, hash: &str) -> Result<(Option<Peer>, String), String> {
    let path = dir.join("users.db");
    let script = format!(
        "import sqlite3\nc = sqlite3.connect({path:?})\n\
         c.execute('CREATE TABLE users (name text PRIMARY KEY, hash text NOT NULL)')\n\
         c.executemany('INSERT INTO users VALUES (?, ?)', [('user%d' % i, {hash:?}) for i in range({USERS})])\n\
         c.commit()\n"
    );
    let done = Command::new("python3")
        .args(["-c", &script])
        .output()
        .is_ok_and(|o| o.status.success());
    if !done {
        return Err("could not write the SQLite file".into());
    }
    Ok((
        None,
        format!(
            "backend = \"sql\"\nurl = \"sqlite://{}\"\nquery = \"SELECT hash FROM users WHERE name = $1\"",
            path.display()
        ),
    ))
}

/// The identity stores at 100 concurrent logins, cached (the same user again and again, the
/// cache warm) and uncached (1,000 users), as ratios to the reference row's sessions/s. A store
/// whose server is not installed here is reported as skipped.
fn stores(smtpd: &Path, dir: &Path, reference_sps_100: f64, min_hash: &str) -> Result<(), String> {
    println!();
    // Each store's server (none for SQLite), started only when its programs are here.
    type Start<'a> = Box<dyn Fn() -> Result<(Option<Peer>, String), String> + 'a>;
    let all: Vec<(&str, &str, &str, Start)> = vec![
        (
            "dovecot (SHA512-CRYPT)",
            "dovecot doveadm",
            "dovecot-core",
            Box::new(|| dovecot(dir).map(|(p, a)| (Some(p), a))),
        ),
        (
            "ldap (bind, {SSHA})",
            "slapd slapadd slappasswd",
            "slapd",
            Box::new(|| slapd(dir).map(|(p, a)| (Some(p), a))),
        ),
        (
            "sql postgres (minimal argon2id)",
            "psql runuser",
            "postgresql",
            Box::new(|| postgres(dir, min_hash).map(|(p, a)| (Some(p), a))),
        ),
        (
            "sql sqlite (minimal argon2id)",
            "python3",
            "python3",
            Box::new(|| sqlite(dir, min_hash)),
        ),
    ];
    for (name, programs, package, start) in all {
        if !installed(programs) {
            println!(
                "store {name}: skipped ({package} is not installed; scripts/install-test-tools.sh installs it)"
            );
            continue;
        }
        let (_peer, auth) = start()?;
        let same: &(dyn Fn(usize) -> String + Sync) = &|_| "user0".to_owned();
        let distinct: &(dyn Fn(usize) -> String + Sync) = &|i| format!("user{}", i % USERS);
        for (rows, cache, pick, total) in [
            ("cache on, same user", true, same, 3000),
            ("cache off, 1,000 users", false, distinct, 1000),
        ] {
            let server = start_with(smtpd, dir, &format!("{auth}\ncache = {cache}"))?;
            if cache {
                session(server.port, "user0", PASSWORD)?;
            }
            let row = drive(server.port, server.child.id(), 100, total, pick)?;
            print_against(
                &format!("store {name}, {rows}"),
                &row,
                reference_sps_100,
                "",
            );
        }
    }
    Ok(())
}

/// URL-safe base64 without padding (JWTs).
fn b64url(input: &[u8]) -> String {
    b64(input)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// Token logins: 100 concurrent XOAUTH2 sessions with an RS256 JWT checked by `[auth.oauth]`
/// against a JWKS that Python's http.server publishes (fetched once, then cached), as a ratio
/// to the reference row. The key and the token are made with the openssl command line.
fn oauth(smtpd: &Path, dir: &Path, reference_sps_100: f64, users: &Path) -> Result<(), String> {
    if !installed("openssl python3") {
        println!("oauth: skipped (openssl and python3 are needed)");
        return Ok(());
    }
    let key = dir.join("jwt-key.pem");
    let ok = |c: &mut Command| -> Result<std::process::Output, String> {
        let out = c.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key))?;
    let modulus = ok(Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key))?;
    let hex = String::from_utf8_lossy(&modulus.stdout);
    let hex = hex.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    let idp = dir.join("idp");
    std::fs::create_dir_all(&idp).map_err(|e| e.to_string())?;
    std::fs::write(
        idp.join("jwks.json"),
        format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"bench","alg":"RS256","n":"{}","e":"AQAB"}}]}}"#,
            b64url(&n)
        ),
    )
    .map_err(|e| e.to_string())?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let signing_input = format!(
        "{}.{}",
        b64url(br#"{"alg":"RS256","kid":"bench","typ":"JWT"}"#),
        b64url(
            format!(
                r#"{{"iss":"https://idp.bench","aud":"smtp","sub":"user0","scope":"smtp.send","exp":{exp}}}"#
            )
            .as_bytes()
        )
    );
    let input = dir.join("jwt-input");
    std::fs::write(&input, &signing_input).map_err(|e| e.to_string())?;
    let signature = ok(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg(&input))?;
    let token = format!("{signing_input}.{}", b64url(&signature.stdout));
    let port = free_port()?;
    let _idp = spawn_peer(
        "python3",
        &[
            "-m".as_ref(),
            "http.server".as_ref(),
            port.to_string().as_ref(),
            "--bind".as_ref(),
            "127.0.0.1".as_ref(),
            "--directory".as_ref(),
            idp.as_os_str(),
        ],
    )?;
    wait_port(port)?;
    let bearer = format!("bearer:{token}");
    // Remembered: a verified token is taken again for its user until its exp (the default);
    // `remember_secs = 0`: every session checks the RS256 signature and the claims.
    for (label, remember) in [
        ("oauth RS256 JWT, JWKS cached, token remembered", ""),
        (
            "oauth RS256 JWT, JWKS cached, every login checks",
            "\nremember_secs = 0",
        ),
    ] {
        let server = start_with_server(
            smtpd,
            dir,
            "mechanisms = [\"PLAIN\", \"XOAUTH2\"]",
            &format!(
                "backend = \"file\"\nusers_file = {users:?}\n[auth.oauth]\njwks_url = \"http://127.0.0.1:{port}/jwks.json\"\nissuer = \"https://idp.bench\"\naudience = [\"smtp\"]\nscopes = [\"smtp.send\"]\nusername_claim = \"sub\"{remember}"
            ),
        )?;
        // The first login fetches the JWKS; the clock starts with it cached.
        session(server.port, "user0", &bearer)?;
        let same: &(dyn Fn(usize) -> String + Sync) = &|_| "user0".to_owned();
        let row = drive_with(server.port, server.child.id(), 100, 3000, same, &bearer)?;
        print_against(label, &row, reference_sps_100, " (goal ≥ 0.8x)");
    }
    Ok(())
}

/// One row at 100 concurrent sessions with its sessions/s as a ratio to the reference row's.
fn print_against(label: &str, row: &Row, reference_sps_100: f64, goal: &str) {
    let sps = row.sessions as f64 / row.wall;
    println!(
        "{label:<46} {:>4} {sps:>10.0} {:>10} {:>10} {:>9.2} ms {:>6} MiB  = {:.2}x the reference{goal}{}",
        100,
        ms(row.p50),
        ms(row.p99),
        row.cpu / row.sessions.max(1) as f64 * 1e3,
        row.rss_kib / 1024,
        sps / reference_sps_100.max(f64::MIN_POSITIVE),
        if row.failed > 0 {
            format!("  ({} failed)", row.failed)
        } else {
            String::new()
        }
    );
}

/// 1,000 connections with wrong passwords for unknown users, and one correct login.
fn flood(smtpd: &Path, dir: &Path, users: &Path, cores: usize) -> Result<(), String> {
    let server = start(smtpd, dir, users, true)?;
    let (port, pid) = (server.port, server.child.id());
    let refused = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let good = std::thread::scope(|s| {
        for i in 0..1000 {
            let refused = refused.clone();
            let _ = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(s, move || {
                    if let Err(e) = session(port, &format!("nobody{i}"), "wrong")
                        && e.starts_with("535")
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
        }
        // The honest client arrives while the flood is queued.
        std::thread::sleep(Duration::from_millis(200));
        let r = session(port, "user1", PASSWORD);
        (r, t0.elapsed())
    });
    let wall = t0.elapsed();
    let rss = peak_rss_kib(pid).unwrap_or(0) / 1024;
    let bound = 64 + cores as u64 * 19;
    println!(
        "\n1,000 connections with wrong passwords for unknown users: {} refused with 535 in {:.1} s; peak RSS {rss} MiB (bound 64 MiB + {cores} workers × 19 MiB = {bound} MiB)",
        refused.load(Ordering::Relaxed),
        wall.as_secs_f64(),
    );
    match good.0 {
        Ok(latency) => println!(
            "a correct login during the flood: 235 after {} (auth_timeout 30 s)",
            ms(latency)
        ),
        Err(e) => println!("a correct login during the flood FAILED: {e}"),
    }
    drop(server);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(
            super::b64(b"\0alice\0wonderland"),
            "AGFsaWNlAHdvbmRlcmxhbmQ="
        );
        assert_eq!(super::b64(b"ab"), "YWI=");
        assert_eq!(super::b64(b"abc"), "YWJj");
    }
}
