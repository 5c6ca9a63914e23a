//! Helpers for the end-to-end tests: spawn the built `smtpd` binary on a free loopback port with
//! a temporary configuration, run Python's smtplib and curl against it, make certificates.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Names the binary under test. Integration tests call it with
/// `env!("CARGO_BIN_EXE_smtpd-e2e")`: `smtpd::cli::main` built as this package's `smtpd-e2e`,
/// so a test never runs a stale build.
pub fn use_bin(path: &str) {
    let _ = BIN.set(PathBuf::from(path));
}

/// The binary under test (see [`use_bin`]).
pub fn smtpd_bin() -> PathBuf {
    BIN.get().cloned().expect("call e2e::use_bin first")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "smtpd-e2e-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A port that is free now, for a server the test starts next.
///
/// Not one the kernel hands out: a port from `bind(0)` lies in the ephemeral range, where every
/// outgoing connection of every test running alongside takes its local port, so one of them
/// could take it before the server binds it (a CI run failed so: `Address already in use`).
/// Ports are taken below that range instead, in turn from a start that differs per process,
/// and never twice in one process; each is checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static EPHEMERAL: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let ephemeral = *EPHEMERAL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768)
    });
    if ephemeral < LOW + 1_000 {
        // No room below the ephemeral range on this machine: the kernel's choice it is.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
    }
    let span = ephemeral - LOW;
    let seed = std::process::id().wrapping_mul(7_919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let _ = NEXT.compare_exchange(0, seed % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + n % span).expect("below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {ephemeral}");
}

/// Waits (up to 10 s) until a peer the test started (`what`, for the messages) accepts
/// connections on `port`; panics if it exits first or never listens.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{what} exited early: {s}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A users file with `(name, password)` pairs, hashed with argon2id.
pub fn users_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("# test users\n");
    for (u, p) in users {
        text.push_str(&format!(
            "{u}:{}\n",
            smtpd::users::hash_password(p).expect("hash")
        ));
    }
    let path = dir.join("users");
    std::fs::write(&path, text).expect("write users");
    path
}

/// A self-signed certificate for "localhost": (cert path, key path).
pub fn cert_files(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    (cert, key)
}

/// A running `smtpd serve`; killed when dropped.
pub struct Smtpd {
    /// The process.
    pub child: Child,
    /// Its first listener.
    pub addr: SocketAddr,
    /// Its log (stderr), collected by a thread.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Smtpd {
    /// Writes `config` to `dir/smtpd.toml` and starts the server; waits until `port` accepts.
    pub fn start(dir: &Path, config: &str, port: u16) -> Self {
        Self::start_with_env(dir, config, port, &[])
    }

    /// [`Smtpd::start`] with environment variables set for the server (`RUST_LOG` is removed
    /// unless given here, so the configuration's `[log] level` decides).
    pub fn start_with_env(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Self {
        let path = dir.join("smtpd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(smtpd_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("smtpd starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = l2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "smtpd exited early ({status}): {}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "smtpd did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr, log }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (at most 10 s) until the log holds `needle` `times` times: the log reaches us
    /// through a pipe read by another thread.
    pub fn wait_for_log(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?} {times} times:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Smtpd {
    /// Sends SIGHUP (a reload).
    pub fn sighup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP");
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script; panics with its stderr if it fails.
pub fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command with a 30 s bound.
pub fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.wait_with_output().expect("output")
}

/// The files in `maildir/new`, read, in name order.
pub fn maildir_messages(maildir: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    // Delivery order: smtpd names a message `SECS.MMICROSPPIDQN.host`, whose microseconds are
    // not zero-padded (`M99999` sorts after `M102159` as text), so sort by the numbers.
    let order = |p: &PathBuf| -> (u64, u64, u64, u64) {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let mut parts = name.splitn(3, '.');
        let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let unique = parts.next().unwrap_or("");
        let field = |tag: char, end: char| -> u64 {
            unique
                .split_once(tag)
                .map(|(_, rest)| rest.split(end).next().unwrap_or(""))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (secs, field('M', 'P'), field('P', 'Q'), field('Q', '.'))
    };
    names.sort_by_key(|p| (order(p), p.clone()));
    names
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).expect("read message")).into_owned())
        .collect()
}

/// A tiny HTTP auth service on 127.0.0.1 (one thread, keep-alive): `{"ok":true}` when the JSON
/// body's password is `right`. Returns its URL.
pub fn http_auth_service() -> String {
    http_auth_service_counting().0
}

/// [`http_auth_service`] with a count of the requests it answered.
pub fn http_auth_service_counting() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let c = c2.clone();
            std::thread::spawn(move || serve_http(stream, &c));
        }
    });
    (format!("http://{addr}/check"), count)
}

fn serve_http(stream: TcpStream, count: &std::sync::atomic::AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if first {
                first = false;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len.min(1 << 20)];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // "right", or a token that starts with "right-" (long OAuth tokens in the tests).
        let body = String::from_utf8_lossy(&body);
        let ok = body.contains(r#""password":"right""#) || body.contains(r#""password":"right-"#);
        let answer = format!("{{\"ok\":{ok}}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// One step of a transcript: octets the client sends, or a reply line it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptStep {
    /// Client lines sent in one write, as a pipelining client sends them.
    Send(Vec<u8>),
    /// The next reply line: exactly `want`, or (`exact` false) starting with it.
    Expect {
        /// The transcript's line number, for the error.
        line: usize,
        /// Whole line or prefix.
        exact: bool,
        /// The text.
        want: String,
    },
}

/// Parses a transcript. Lines: `C: text` (sent with CRLF; consecutive client lines go out in
/// one write), `R: text` (sent raw, with `\r` and `\n` escapes), `S: text` (the next reply
/// line, exactly), `S~ text` (the next reply line starts with text), `#` comments.
pub fn transcript_steps(text: &str) -> Result<Vec<TranscriptStep>, String> {
    let mut steps = Vec::new();
    let mut pending = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("C:") {
            pending.extend_from_slice(c.strip_prefix(' ').unwrap_or(c).as_bytes());
            pending.extend_from_slice(b"\r\n");
            continue;
        }
        if let Some(r) = line.strip_prefix("R: ") {
            pending.extend_from_slice(r.replace("\\r", "\r").replace("\\n", "\n").as_bytes());
            continue;
        }
        if !pending.is_empty() {
            steps.push(TranscriptStep::Send(std::mem::take(&mut pending)));
        }
        let (exact, want) = if let Some(w) = line.strip_prefix("S: ") {
            (true, w)
        } else if let Some(w) = line.strip_prefix("S~ ") {
            (false, w)
        } else {
            return Err(format!("line {n}: unknown line kind: {line}"));
        };
        steps.push(TranscriptStep::Expect {
            line: n,
            exact,
            want: want.to_owned(),
        });
    }
    if !pending.is_empty() {
        steps.push(TranscriptStep::Send(pending));
    }
    Ok(steps)
}

/// Checks one reply line read for an [`TranscriptStep::Expect`].
pub fn transcript_check(line: usize, exact: bool, want: &str, got: &str) -> Result<(), String> {
    let got = got.trim_end_matches(['\r', '\n']);
    let ok = if exact {
        got == want
    } else {
        got.starts_with(want)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("line {line}: expected {want:?}, got {got:?}"))
    }
}

/// Replays a transcript ([`transcript_steps`]) against a server.
pub fn run_transcript(addr: SocketAddr, text: &str) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    for step in transcript_steps(text)? {
        match step {
            TranscriptStep::Send(bytes) => writer
                .write_all(&bytes)
                .map_err(|e| format!("write: {e}"))?,
            TranscriptStep::Expect { line, exact, want } => {
                let mut got = String::new();
                reader
                    .read_line(&mut got)
                    .map_err(|e| format!("line {line}: expected {want:?}, read failed: {e}"))?;
                transcript_check(line, exact, &want, &got)?;
            }
        }
    }
    Ok(())
}

/// A configuration with the file backend (users alice / "wonder land" and bob / "builder"),
/// AUTH required but allowed without TLS, Maildir delivery into `dir/Maildir`; `extra_server`
/// adds `[server]` keys; `tls` makes the listener offer STARTTLS with a fresh certificate.
pub fn file_config(dir: &Path, port: u16, extra_server: &str, tls: bool) -> String {
    let users = users_file(dir, &[("alice", "wonder land"), ("bob", "builder")]);
    let tls_section = if tls {
        let (cert, key) = cert_files(dir);
        format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key)
    } else {
        String::new()
    };
    format!(
        r#"
[server]
hostname = "mx.test"
auth_required = true
auth_require_tls = false
auth_failure_delay_ms = 0
{extra_server}

[[listener]]
address = "127.0.0.1:{port}"
tls = "{listener_tls}"

{tls_section}
[auth]
backend = "file"
users_file = {users:?}

[delivery]
kind = "maildir"
path = {maildir:?}
"#,
        listener_tls = if tls { "starttls" } else { "none" },
        maildir = dir.join("Maildir"),
    )
}

/// The configuration of an edge smtpd (user alice, AUTH in the clear) relaying to
/// `host:up_port`: `server` adds `[server]` keys, `delivery` adds `[delivery]` keys (the
/// upstream credentials, `timeout_secs`, ...).
pub fn relay_config(
    dir: &Path,
    port: u16,
    host: &str,
    up_port: u16,
    server: &str,
    delivery: &str,
) -> String {
    let users = users_file(dir, &[("alice", "wonder land")]);
    format!(
        r#"
[server]
hostname = "edge.test"
auth_require_tls = false
{server}
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "file"
users_file = {users:?}
[delivery]
kind = "relay"
host = "{host}"
port = {up_port}
{delivery}
"#
    )
}

/// A configuration with the http backend at `url`, AUTH allowed in the clear, no failure
/// delay, `discard` delivery; `extra_server` and `extra_auth` lines go into `[server]` and
/// `[auth]`.
pub fn http_config(port: u16, url: &str, extra_server: &str, extra_auth: &str) -> String {
    format!(
        r#"
[server]
auth_require_tls = false
auth_failure_delay_ms = 0
{extra_server}
[[listener]]
address = "127.0.0.1:{port}"
[auth]
backend = "http"
url = "{url}"
{extra_auth}
[delivery]
kind = "discard"
"#
    )
}

/// Sends `msg` with curl over SMTP to `port` as `user:password` (`--crlf`, like the README).
pub fn curl_send(port: u16, user: &str, from: &str, to: &str, msg: &Path) -> Output {
    run(Command::new("curl")
        .arg("-sS")
        .arg(format!("smtp://127.0.0.1:{port}"))
        .args([
            "--user",
            user,
            "--mail-from",
            from,
            "--mail-rcpt",
            to,
            "--crlf",
            "--upload-file",
        ])
        .arg(msg))
}

/// Makes sure a client program is installed: runs `scripts/install-test-tools.sh` (apt-get)
/// when `program` is missing, and fails the test with a clear message if it still is.
pub fn ensure_tool(program: &str) {
    let present = |p: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {p}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if present(program) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-test-tools.sh");
    let out = Command::new("bash").arg(&script).output();
    assert!(
        present(program),
        "{program} is needed by this test and could not be installed by {}: {:?}",
        script.display(),
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
}

/// A child process killed (and reaped) when dropped, however the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's `http.server` serving the files of `dir` on a free loopback port: the process
/// (killed when dropped) and its port, listening. Any path it lacks gets a 404, which is still
/// an HTTP answer.
pub fn python_http_server(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    wait_for_port(port, &mut child, "python3 -m http.server");
    (KillOnDrop(child), port)
}

/// Postfix's `smtp-sink` on a free loopback port, writing each message it takes into `dumps`
/// (created) as `msg.*` files: the process (killed when dropped) and its port, listening.
pub fn smtp_sink(dumps: &Path) -> (KillOnDrop, u16) {
    ensure_tool("smtp-sink");
    std::fs::create_dir_all(dumps).expect("dumps dir");
    let up = free_port();
    let mut sink = Command::new("smtp-sink");
    // As root it must drop to an unprivileged user, who then writes the dumps.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dumps, std::fs::Permissions::from_mode(0o777))
            .expect("dumps dir mode");
        sink.args(["-u", "nobody"]);
    }
    let mut sink = KillOnDrop(
        sink.arg("-d")
            .arg(format!("{}/msg.", dumps.display()))
            .arg(format!("127.0.0.1:{up}"))
            .arg("10")
            .spawn()
            .expect("smtp-sink runs"),
    );
    // Relaying before it listens would be refused (seen once in CI on a loaded machine).
    wait_for_port(up, &mut sink.0, "smtp-sink");
    (sink, up)
}

/// Makes sure Python can import `modules` (installing them with the project's script when
/// not), or fails the test naming them.
pub fn ensure_python_modules(modules: &str) {
    let present = || {
        Command::new("python3")
            .arg("-c")
            .arg(format!("import {modules}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if present() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-test-tools.sh");
    let out = Command::new("bash").arg(&script).output();
    assert!(
        present(),
        "python3 modules {modules} are needed by this test and could not be installed by {}: {:?}",
        script.display(),
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
}

/// A peer daemon a test runs in the foreground from its own configuration (never the system
/// service), in a process group of its own so that stopping or freezing it reaches every
/// process it forks. Its output goes to a log file next to its configuration. Stopped when
/// dropped.
pub struct Daemon {
    program: PathBuf,
    /// The user and group it runs as, when not the test's own.
    pub user: Option<(u32, u32)>,
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
    /// The TCP port it listens on.
    pub port: u16,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `program args`, logging to `log`, and waits until `port` accepts.
    pub fn start(
        program: impl Into<PathBuf>,
        args: Vec<std::ffi::OsString>,
        log: PathBuf,
        port: u16,
    ) -> Self {
        Self::start_as(program, args, log, port, None)
    }

    /// Starts `program args` as `user` (uid, gid), logging to `log`, and waits until `port`
    /// accepts. The test process is its parent and reaps it.
    pub fn start_as(
        program: impl Into<PathBuf>,
        args: Vec<std::ffi::OsString>,
        log: PathBuf,
        port: u16,
        user: Option<(u32, u32)>,
    ) -> Self {
        let mut d = Self {
            program: program.into(),
            user,
            args,
            log,
            port,
            child: None,
        };
        d.resume_service();
        d
    }

    /// Starts it again after [`Daemon::stop`], with the same command.
    pub fn resume_service(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let mut cmd = Command::new(&self.program);
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program.display()));
        wait_for_port(self.port, &mut child, &self.program.display().to_string());
        self.child = Some(child);
    }

    /// Signals its process group and every descendant (PostgreSQL's backends leave the group:
    /// each starts a session of its own).
    fn signal_group(&self, signal: &str) {
        if let Some(c) = &self.child {
            let mut targets = vec![format!("-{}", c.id())];
            targets.extend(descendants(c.id()).iter().map(u32::to_string));
            let _ = Command::new("kill")
                .arg(signal)
                .arg("--")
                .args(&targets)
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Stops every process of it (a peer that is down); waits until its port is free.
    pub fn stop(&mut self) {
        self.signal_group("-KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{} did not stop",
                self.program.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Freezes every process of it (a peer that accepts nothing and answers nothing: a hang);
    /// returns once the kernel reports each of them stopped.
    pub fn freeze(&self) {
        self.signal_group("-STOP");
        self.wait_state(true);
    }

    /// Undoes [`Daemon::freeze`]; returns once none of them is stopped.
    pub fn thaw(&self) {
        self.signal_group("-CONT");
        self.wait_state(false);
    }

    /// Waits (at most 10 s) until its processes are all stopped (`T` in `/proc/PID/stat`), or
    /// none is.
    fn wait_state(&self, stopped: bool) {
        let Some(c) = &self.child else { return };
        let state = |pid: u32| -> Option<char> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat.rsplit_once(')')?.1.trim_start().chars().next()
        };
        let mut pids = vec![c.id()];
        pids.extend(descendants(c.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids
            .iter()
            .all(|p| state(*p).is_none_or(|s| (s == 'T') == stopped))
        {
            assert!(
                Instant::now() < deadline,
                "{} did not {}",
                self.program.display(),
                if stopped { "stop" } else { "continue" }
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every process below `pid`, from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| {
                let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                // pid (comm) state ppid …: comm may hold spaces, so read after its ')'.
                let ppid = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((p, ppid))
            })
            .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal_group("-CONT");
        self.stop();
    }
}

/// A Dovecot authentication service started by a test from its own configuration in a
/// temporary folder: a passwd-file passdb, an `auth-client` Unix socket and a loopback TCP
/// listener; its log is `dovecot.log` in the folder.
pub struct Dovecot {
    /// The running service.
    pub daemon: Daemon,
    /// The `auth-client` Unix socket.
    pub socket: PathBuf,
}

impl Dovecot {
    /// Writes `passwd` (passwd-file lines, `user:{SCHEME}hash`) and a configuration offering
    /// `mechanisms` (Dovecot's names, space-separated) into `dir`, and starts Dovecot.
    pub fn start(dir: &Path, passwd: &str, mechanisms: &str) -> Self {
        ensure_tool("dovecot");
        let passwd_path = dir.join("passwd");
        std::fs::write(&passwd_path, passwd).expect("write passwd");
        let (run, state) = (dir.join("run"), dir.join("state"));
        std::fs::create_dir_all(&run).expect("base_dir");
        std::fs::create_dir_all(&state).expect("state_dir");
        let socket = dir.join("auth-client");
        let port = free_port();
        let config = dir.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "protocols =\nbase_dir = {run}\nstate_dir = {state}\nlog_path = /dev/stderr\n\
                 ssl = no\ndefault_internal_user = dovecot\ndefault_login_user = dovenull\n\
                 auth_mechanisms = {mechanisms}\nauth_failure_delay = 0\nauth_verbose = yes\n\
                 passdb {{\n  driver = passwd-file\n  args = {passwd}\n}}\n\
                 service auth {{\n  unix_listener auth-client {{\n    path = {socket}\n    mode = 0666\n  }}\n\
                 \x20 inet_listener {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n",
                run = run.display(),
                state = state.display(),
                passwd = passwd_path.display(),
                socket = socket.display(),
            ),
        )
        .expect("write dovecot.conf");
        let daemon = Daemon::start(
            "dovecot",
            vec!["-F".into(), "-c".into(), config.into()],
            dir.join("dovecot.log"),
            port,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no auth-client socket");
            std::thread::sleep(Duration::from_millis(25));
        }
        Self { daemon, socket }
    }

    /// `host:port` of the TCP listener.
    pub fn tcp(&self) -> String {
        format!("127.0.0.1:{}", self.daemon.port)
    }
}

/// An OpenLDAP `slapd` started by a test on a temporary `mdb` database under `dc=example,dc=org`
/// (people under `ou=people`, a service account `cn=smtpd,dc=example,dc=org` with the password
/// `service-pw` that may search), listening on a loopback port, offering StartTLS with a
/// certificate for `localhost` made by the test (`cert.pem` in the folder, its own CA); its log
/// is `slapd.log`.
pub struct Slapd {
    /// The running server.
    pub daemon: Daemon,
}

impl Slapd {
    /// Seeds the database with `people` (`uid`, `userPassword` as slappasswd writes it, `mail`)
    /// and starts slapd.
    pub fn start(dir: &Path, people: &[(&str, &str, &str)]) -> Self {
        ensure_tool("slapd");
        let db = dir.join("ldap-db");
        std::fs::create_dir_all(&db).expect("ldap db dir");
        let conf = dir.join("slapd.conf");
        let (cert, key) = cert_files(dir);
        std::fs::write(
            &conf,
            format!(
                "TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n\
                 include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\n\
                 moduleload back_mdb\npidfile {pid}\n\
                 access to attrs=userPassword by anonymous auth by * none\n\
                 access to * by dn.exact=\"cn=smtpd,dc=example,dc=org\" read by anonymous auth by * none\n\
                 database mdb\nsuffix \"dc=example,dc=org\"\nrootdn \"cn=admin,dc=example,dc=org\"\n\
                 directory {db}\nmaxsize 10485760\n",
                pid = dir.join("slapd.pid").display(),
                db = db.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("write slapd.conf");
        let mut ldif = format!(
            "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: cn=smtpd,dc=example,dc=org\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: smtpd\nuserPassword: {}\n\n",
            slappasswd("{SSHA}", "service-pw")
        );
        for (uid, hash, mail) in people {
            ldif.push_str(&format!(
                "dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
                 uid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {mail}\nuserPassword: {hash}\n\n"
            ));
        }
        let seed = dir.join("seed.ldif");
        std::fs::write(&seed, ldif).expect("write seed.ldif");
        let out = run(Command::new("slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&seed));
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let daemon = Daemon::start(
            "slapd",
            vec![
                "-d".into(),
                "0".into(),
                "-h".into(),
                format!("ldap://127.0.0.1:{port}/").into(),
                "-f".into(),
                conf.into(),
            ],
            dir.join("slapd.log"),
            port,
        );
        Self { daemon }
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.daemon.port)
    }
}

/// A password hashed by OpenLDAP's `slappasswd` in `scheme` (`{SSHA}`, or `{CRYPT}` with a
/// SHA-512-crypt salt).
pub fn slappasswd(scheme: &str, password: &str) -> String {
    ensure_tool("slappasswd");
    let mut cmd = Command::new("slappasswd");
    cmd.args(["-h", scheme, "-s", password]);
    if scheme == "{CRYPT}" {
        cmd.args(["-c", "$6$%.16s"]);
    }
    let out = run(&mut cmd);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A password hashed by Dovecot's own `doveadm pw` in `scheme`, with its `{SCHEME}` prefix.
pub fn doveadm_hash(scheme: &str, password: &str) -> String {
    ensure_tool("doveadm");
    let out = run(Command::new("doveadm").args(["pw", "-s", scheme, "-p", password]));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A PostgreSQL server started by a test (never the system service): `initdb` into a folder
/// of the temporary folder owned by the `postgres` user (PostgreSQL refuses to run as root),
/// trust authentication on loopback, listening on a free port; its log is `postgres.log`.
pub struct Postgres {
    /// The running server.
    pub daemon: Daemon,
}

impl Postgres {
    /// The newest installed server's programs.
    fn bin(program: &str) -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        versions.sort();
        versions
            .last()
            .map(|v| v.join("bin").join(program))
            .unwrap_or_else(|| PathBuf::from(program))
    }

    /// Creates the cluster in `dir/pg`, starts it, and runs `sql` (psql) in database
    /// `postgres`.
    pub fn start(dir: &Path, sql: &str) -> Self {
        ensure_tool("psql");
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).expect("pg dir");
        let owned = run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data));
        assert!(owned.status.success(), "chown postgres");
        let init = run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Self::bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").args([flag, "postgres"]));
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("postgres's id")
        };
        // Run as postgres directly (not under runuser), so the test reaps it when it stops.
        let daemon = Daemon::start_as(
            Self::bin("postgres"),
            vec![
                "-D".into(),
                data.clone().into(),
                "-k".into(),
                data.into(),
                "-p".into(),
                port.to_string().into(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
            ],
            dir.join("postgres.log"),
            port,
            Some((id("-u"), id("-g"))),
        );
        let mut pg = Self { daemon };
        pg.wait_ready();
        pg.psql(sql);
        pg
    }

    /// Starts it again after `daemon.stop()`, and waits until it accepts queries (after a
    /// kill it first recovers, refusing connections meanwhile).
    pub fn resume(&mut self) {
        self.daemon.resume_service();
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run(Command::new("psql")
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &self.daemon.port.to_string(), "-c", "SELECT 1"]));
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres never accepted queries: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` with psql as `postgres`; panics with its error when it fails.
    pub fn psql(&self, sql: &str) {
        let out = run(Command::new("psql")
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args([
                "-p",
                &self.daemon.port.to_string(),
                "-d",
                "postgres",
                "-c",
                sql,
            ]));
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.daemon.port
        )
    }
}

/// Sends a message with swaks over SMTP to `port` after `AUTH LOGIN` as `user`; panics with
/// swaks's transcript when it fails.
pub fn swaks_send(port: u16, user: &str, password: &str, from: &str, to: &str, body: &str) {
    ensure_tool("swaks");
    let out = run(Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--auth", "LOGIN", "--auth-user", user])
        .args(["--auth-password", password])
        .args(["--from", from, "--to", to])
        .args(["--body", body]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// gsasl's SCRAM-SHA-256 (no channel binding) against `port` as `user`, in the clear: its
/// transcript (stdout and stderr).
pub fn gsasl_scram(port: u16, user: &str, password: &str) -> String {
    ensure_tool("gsasl");
    let out = run(Command::new("gsasl")
        .args(["--smtp", &format!("--connect=127.0.0.1:{port}")])
        .args(["-m", "SCRAM-SHA-256", "-a", user, "-p", password])
        .args(["--no-cb", "--verbose"])
        .stdin(Stdio::null()));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
