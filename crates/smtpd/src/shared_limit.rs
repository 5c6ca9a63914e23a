//! `[limiter]`: the AUTH failure limiter shared by a fleet through Redis.
//!
//! Each instance keeps its own [`AuthLimiter`] (the machine consults it synchronously, and it
//! alone answers when Redis is away). With `[limiter] redis = "host:port"` the instance also
//! publishes every failure that limiter counts (a [`FailureListener`]) and, before a credential
//! is checked, reads the fleet's counts for the client's address and the named user (an
//! [`Authenticator`] layer): past `max_auth_failures_per_ip` or `max_auth_failures_per_user`
//! the attempt is decided [`AuthDecision::Locked`] (454 4.7.0, the credential unchecked), whichever
//! instance the client reached.
//!
//! Counts are Redis strings `{prefix}:ip:{address}` and `{prefix}:user:{name}` (the keys the
//! local limiter uses: an IPv6 /64, the name lowercased), made with `SET key 0 EX window NX`
//! and raised with `INCRBY`: a fixed window from the first failure. The sending limits
//! (`smtpd::sending`) keep their counts here too, under `{prefix}:send:…`.
//!
//! Redis unreachable, slow (past `timeout_ms`) or answering nonsense never fails a login: the
//! check answers "not locked", the local limiter still counts, a log line says the instance
//! counts alone (once per outage, and once when Redis is back) and
//! `smtpd_auth_limiter_fallbacks_total` counts each operation done without Redis.
//!
//! The client is a few RESP commands written by hand (`SET`, `INCRBY`, `MGET`, `AUTH`) on one
//! connection owned by one task, with bounded replies: the `redis` crate would bring a URL
//! parser and a connection manager for three commands.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use smtp_auth::{AuthDecision, AuthRequest, LookupRequest, LookupResult, Verdict};
use smtp_server::{
    AuthLimiter, Authenticator, BoxFuture, FailureListener, Session, address_key, user_key,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use zeroize::Zeroizing;

/// Operations waiting for the Redis task: more are answered locally.
const QUEUE: usize = 1024;
/// The longest reply line (status, error, integer, length) read from Redis.
const MAX_LINE: usize = 1024;
/// The longest bulk string read (counts are a few digits).
const MAX_BULK: usize = 4096;
/// The most elements in an array reply (MGET of two keys).
const MAX_ARRAY: usize = 16;
/// How long to wait after a failed connection before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Where and how to reach Redis.
#[derive(Clone)]
pub struct RedisTarget {
    /// `host:port`.
    pub address: String,
    /// TLS to Redis (`rediss://`), verifying its certificate for the host of `address`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Prepended to every key.
    pub prefix: String,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
    /// `AUTH` sent after connecting: (username, password); no username is Redis's `default`.
    pub auth: Option<(Option<String>, Zeroizing<String>)>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The fleet's view of AUTH failures (see the [module documentation](self)).
#[derive(Debug)]
pub struct SharedLimiter {
    ops: mpsc::Sender<Op>,
    per_ip: u32,
    per_user: u32,
    window: Duration,
    prefix: String,
    timeout: Duration,
    state: Arc<State>,
}

/// What the metrics endpoint reports.
#[derive(Debug, Default)]
struct State {
    /// Redis answered the last operation.
    up: AtomicBool,
    /// Operations done without Redis.
    fallbacks: AtomicU64,
}

enum Op {
    /// Add `by` to each key, made to expire `window` seconds after it is first made.
    Add {
        keys: Vec<Vec<u8>>,
        by: u64,
        window: u64,
    },
    /// Read each key's count (0 when absent).
    Get {
        keys: Vec<Vec<u8>>,
        reply: oneshot::Sender<Option<Vec<u64>>>,
    },
}

impl SharedLimiter {
    /// Starts the Redis task (on the current tokio runtime) with the limits of `local`, the
    /// process's own limiter: the fleet's counts are held to the same numbers and window.
    pub fn start(target: RedisTarget, local: &AuthLimiter) -> Arc<Self> {
        let (per_ip, per_user, window) = local.limits();
        let (tx, rx) = mpsc::channel(QUEUE);
        let state = Arc::new(State::default());
        let timeout = target.timeout;
        let prefix = target.prefix.clone();
        tokio::spawn(run(target, rx, state.clone()));
        Arc::new(Self {
            ops: tx,
            per_ip,
            per_user,
            window,
            prefix,
            timeout,
            state,
        })
    }

    /// Whether the last operation reached Redis.
    pub fn up(&self) -> bool {
        self.state.up.load(Relaxed)
    }

    /// Operations done without Redis (unreachable, slow, queue full).
    pub fn fallbacks(&self) -> u64 {
        self.state.fallbacks.load(Relaxed)
    }

    /// The fleet's counts under `names` (each prefixed here), 0 for an absent one; `None`
    /// when Redis cannot say within the timeout (counted as a fallback: the caller decides on
    /// its own counts).
    pub async fn counts(&self, names: &[String]) -> Option<Vec<u64>> {
        let keys = names
            .iter()
            .map(|n| format!("{}:{n}", self.prefix).into_bytes())
            .collect();
        let (reply, rx) = oneshot::channel();
        if self.ops.try_send(Op::Get { keys, reply }).is_err() {
            self.state.fallbacks.fetch_add(1, Relaxed);
            return None;
        }
        match timeout(self.timeout, rx).await {
            Ok(Ok(Some(v))) => Some(v),
            _ => {
                self.state.fallbacks.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Adds `by` to the fleet's count under `name` (prefixed here), a count that expires
    /// `window` after it was first made. Queued: never waits for Redis.
    pub fn add(&self, name: &str, by: u64, window: Duration) {
        let op = Op::Add {
            keys: vec![format!("{}:{name}", self.prefix).into_bytes()],
            by,
            window: window.as_secs().max(1),
        };
        if self.ops.try_send(op).is_err() {
            self.state.fallbacks.fetch_add(1, Relaxed);
        }
    }

    /// Whether the fleet has seen too many failures from `ip` or for `user`; `false` when Redis
    /// cannot say (the local limiter then decides alone).
    pub async fn locked(&self, ip: IpAddr, user: &str) -> bool {
        if self.per_ip == 0 && self.per_user == 0 {
            return false;
        }
        let names = [
            format!("ip:{}", address_key(ip)),
            format!("user:{}", user_key(user)),
        ];
        // Redis could not say in time: the local limiter decides alone.
        let Some(counts) = self.counts(&names).await else {
            return false;
        };
        let (ip_count, user_count) = (counts[0], counts[1]);
        let ip_over = self.per_ip > 0 && ip_count >= u64::from(self.per_ip);
        let user_over = self.per_user > 0 && user_count >= u64::from(self.per_user);
        if ip_over {
            tracing::warn!(remote_ip = %ip, "AUTH refused: too many failures from this address across the fleet");
        } else if user_over {
            tracing::warn!(remote_ip = %ip, user, "AUTH refused: too many failures for this user across the fleet");
        }
        ip_over || user_over
    }
}

impl FailureListener for SharedLimiter {
    fn failure(&self, ip: IpAddr, user: Option<&str>) {
        let mut keys = vec![format!("{}:ip:{ip}", self.prefix).into_bytes()];
        if let Some(u) = user.filter(|_| self.per_user > 0) {
            keys.push(format!("{}:user:{u}", self.prefix).into_bytes());
        }
        let op = Op::Add {
            keys,
            by: 1,
            window: self.window.as_secs().max(1),
        };
        if self.ops.try_send(op).is_err() {
            self.state.fallbacks.fetch_add(1, Relaxed);
        }
    }
}

/// The Redis task: one connection, operations in order, reconnecting at most once per
/// [`RETRY`].
async fn run(target: RedisTarget, mut rx: mpsc::Receiver<Op>, state: Arc<State>) {
    let mut conn: Option<Resp> = None;
    let mut retry_at: Option<Instant> = None;
    // Whether an outage has been logged (the first failure is logged even at start).
    let mut logged_down = false;
    while let Some(op) = rx.recv().await {
        if conn.is_none() && retry_at.is_none_or(|t| Instant::now() >= t) {
            match timeout(target.timeout, Resp::connect(&target)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(e)) => retry_at = Some(down(&target, &state, &mut logged_down, &e)),
                Err(_) => {
                    retry_at = Some(down(
                        &target,
                        &state,
                        &mut logged_down,
                        &"connect timed out",
                    ))
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            match op {
                Op::Get { reply, .. } => drop(reply.send(None)),
                Op::Add { .. } => drop(state.fallbacks.fetch_add(1, Relaxed)),
            }
            continue;
        };
        let result = match &op {
            Op::Add { keys, by, window } => timeout(target.timeout, c.add(keys, *by, *window))
                .await
                .map(|r| r.map(|()| None)),
            Op::Get { keys, .. } => timeout(target.timeout, c.counts(keys))
                .await
                .map(|r| r.map(Some)),
        };
        let answer = match result {
            Ok(Ok(a)) => {
                if !state.up.swap(true, Relaxed) && logged_down {
                    tracing::info!(redis = %target.address, "shared limiter: Redis is reachable again; AUTH failures and sending are shared");
                }
                logged_down = false;
                retry_at = None;
                Ok(a)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("command timed out".to_owned()),
        };
        if let Err(e) = &answer {
            conn = None;
            retry_at = Some(down(&target, &state, &mut logged_down, e));
        }
        match op {
            // The caller counts a read answered without Redis.
            Op::Get { reply, .. } => drop(reply.send(answer.ok().flatten())),
            Op::Add { .. } if answer.is_err() => drop(state.fallbacks.fetch_add(1, Relaxed)),
            Op::Add { .. } => {}
        }
    }
}

/// Marks Redis down (logging the first time of an outage); returns when to try again.
fn down(
    target: &RedisTarget,
    state: &State,
    logged: &mut bool,
    why: &dyn std::fmt::Display,
) -> Instant {
    state.up.store(false, Relaxed);
    if !*logged {
        *logged = true;
        tracing::warn!(
            redis = %target.address,
            error = %why,
            "shared limiter: Redis unreachable; this instance counts AUTH failures and sending alone until it is back"
        );
    }
    Instant::now() + RETRY
}

/// A reply from Redis, as far as these commands need.
#[derive(Debug, PartialEq)]
enum Value {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Array(Vec<Value>),
}

/// A byte stream to Redis: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One RESP connection.
struct Resp {
    io: BufReader<Box<dyn Io>>,
    out: Vec<u8>,
}

impl Resp {
    async fn connect(target: &RedisTarget) -> std::io::Result<Self> {
        let stream = TcpStream::connect(&target.address).await?;
        stream.set_nodelay(true)?;
        let stream: Box<dyn Io> = match &target.tls {
            None => Box::new(stream),
            Some(config) => {
                let host = target
                    .address
                    .rsplit_once(':')
                    .map_or(target.address.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| invalid(&format!("Redis host name: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await?;
                Box::new(tls)
            }
        };
        let mut c = Self {
            io: BufReader::new(stream),
            out: Vec::new(),
        };
        if let Some((user, password)) = &target.auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = user {
                args.push(u.as_bytes());
            }
            args.push(password.as_bytes());
            c.push(&args);
            let sent = c.flush().await;
            // The password is wiped from the buffer whatever happened.
            zeroize::Zeroize::zeroize(&mut c.out);
            sent?;
            c.read().await?;
        }
        Ok(c)
    }

    /// Adds one command to the output buffer.
    fn push(&mut self, args: &[&[u8]]) {
        use std::io::Write as _;
        let _ = write!(self.out, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(self.out, "${}\r\n", a.len());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let r = self.io.get_mut().write_all(&self.out).await;
        self.out.clear();
        r
    }

    /// `SET key 0 EX window NX` then `INCRBY key by` for each key, pipelined.
    async fn add(&mut self, keys: &[Vec<u8>], by: u64, window: u64) -> std::io::Result<()> {
        let (window, by) = (window.to_string(), by.to_string());
        for k in keys {
            self.push(&[b"SET", k, b"0", b"EX", window.as_bytes(), b"NX"]);
            self.push(&[b"INCRBY", k, by.as_bytes()]);
        }
        self.flush().await?;
        for _ in keys {
            self.read().await?;
            match self.read().await? {
                Value::Int(_) => {}
                v => return Err(invalid(&format!("INCRBY answered {v:?}"))),
            }
        }
        Ok(())
    }

    /// `MGET keys`: each count, 0 when absent.
    async fn counts(&mut self, keys: &[Vec<u8>]) -> std::io::Result<Vec<u64>> {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(Vec::as_slice));
        self.push(&args);
        self.flush().await?;
        let Value::Array(values) = self.read().await? else {
            return Err(invalid("MGET did not answer an array"));
        };
        if values.len() != keys.len() {
            return Err(invalid("MGET answered the wrong number of values"));
        }
        values
            .into_iter()
            .map(|v| match v {
                Value::Nil => Ok(0),
                Value::Bulk(b) => std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| invalid("a count is not a number")),
                _ => Err(invalid("MGET answered a value of the wrong type")),
            })
            .collect()
    }

    /// Reads one reply (an error reply is an `Err`); arrays hold no arrays (none is asked for).
    async fn read(&mut self) -> std::io::Result<Value> {
        let line = self.line().await?;
        let Some(rest) = line.strip_prefix('*') else {
            return self.scalar(&line).await;
        };
        let Some(n) = length(rest, MAX_ARRAY, "array too long")? else {
            return Ok(Value::Nil);
        };
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let line = self.line().await?;
            items.push(self.scalar(&line).await?);
        }
        Ok(Value::Array(items))
    }

    /// The reply that `line` begins (not an array).
    async fn scalar(&mut self, line: &str) -> std::io::Result<Value> {
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Value::Status(rest.to_owned())),
            "-" => Err(invalid(&format!("Redis error: {rest}"))),
            ":" => rest
                .parse()
                .map(Value::Int)
                .map_err(|_| invalid("bad integer")),
            "$" => {
                let Some(n) = length(rest, MAX_BULK, "bulk string too long")? else {
                    return Ok(Value::Nil);
                };
                let mut b = vec![0; n + 2];
                self.io.read_exact(&mut b).await?;
                if !b.ends_with(b"\r\n") {
                    return Err(invalid("bulk string without CRLF"));
                }
                b.truncate(n);
                Ok(Value::Bulk(b))
            }
            _ => Err(invalid("unexpected reply type")),
        }
    }

    /// One line without its CRLF, at most [`MAX_LINE`] octets.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if !line.ends_with(b"\r\n") || line.len() < 3 {
            return Err(invalid("reply line too long or without CRLF"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| invalid("reply line not UTF-8"))
    }
}

/// The length of an array or bulk string (`rest` after its `*` or `$`): `None` for a null
/// (a negative length), an error past `max` (`too_long` says which).
fn length(rest: &str, max: usize, too_long: &str) -> std::io::Result<Option<usize>> {
    let n: i64 = rest.parse().map_err(|_| invalid("bad length"))?;
    if n < 0 {
        return Ok(None);
    }
    match usize::try_from(n) {
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(invalid(too_long)),
    }
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

/// The process's one AUTH failure limiter, from `[server]`'s limits. With `[limiter]` it also
/// tells Redis every failure, the sending limits keep their counts there, and the returned
/// authenticator asks Redis before `authenticator` checks a credential ([`SharedCheck`]).
pub(crate) fn from_config(
    config: &crate::config::Config,
    sending: &crate::sending::SendingLimits,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
    mut authenticator: Arc<dyn Authenticator>,
) -> Result<(Arc<AuthLimiter>, Arc<dyn Authenticator>), String> {
    let mut limiter = AuthLimiter::from_options(&config.server.options());
    if let Some(l) = &config.limiter {
        let shared = SharedLimiter::start(
            RedisTarget {
                address: l
                    .redis
                    .strip_prefix("rediss://")
                    .unwrap_or(&l.redis)
                    .to_owned(),
                tls: if l.tls || l.redis.starts_with("rediss://") {
                    Some(
                        crate::tls::client_config(l.ca_file.as_deref())
                            .map_err(|e| format!("limiter.ca_file: {e}"))?,
                    )
                } else {
                    None
                },
                prefix: l.key_prefix.clone(),
                timeout: Duration::from_millis(l.timeout_ms),
                auth: l
                    .password
                    .as_ref()
                    .map(|p| (l.username.clone(), zeroize::Zeroizing::new(p.clone()))),
            },
            &limiter,
        );
        tracing::info!(redis = %l.redis, prefix = %l.key_prefix, "AUTH failures shared through Redis");
        limiter = limiter.with_listener(shared.clone());
        sending.share(shared.clone());
        if let Some(m) = &metrics {
            m.watch_limiter(shared.clone());
        }
        authenticator = Arc::new(SharedCheck {
            inner: authenticator,
            shared,
        });
    }
    Ok((Arc::new(limiter), authenticator))
}

/// The [`Authenticator`] layer: asks the fleet before the credential is checked.
pub struct SharedCheck {
    /// The authenticator that checks credentials.
    pub inner: Arc<dyn Authenticator>,
    /// The fleet's counts.
    pub shared: Arc<SharedLimiter>,
}

impl Authenticator for SharedCheck {
    fn authenticate(&self, session: &Session, request: AuthRequest) -> BoxFuture<Verdict> {
        let (inner, shared, session) = (self.inner.clone(), self.shared.clone(), session.clone());
        Box::pin(async move {
            if shared
                .locked(session.peer_addr.ip(), &request.username)
                .await
            {
                return AuthDecision::Locked.into();
            }
            inner.authenticate(&session, request).await
        })
    }

    fn lookup(&self, session: &Session, request: LookupRequest) -> BoxFuture<LookupResult> {
        let (inner, shared, session) = (self.inner.clone(), self.shared.clone(), session.clone());
        Box::pin(async move {
            if shared
                .locked(session.peer_addr.ip(), &request.username)
                .await
            {
                return LookupResult::Locked;
            }
            inner.lookup(&session, request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_password_stays_out_of_debug() {
        let t = RedisTarget {
            address: "127.0.0.1:6379".into(),
            tls: None,
            prefix: "p".into(),
            timeout: Duration::from_millis(200),
            auth: Some((Some("smtpd".into()), Zeroizing::new("REDIS-xyz".into()))),
        };
        let d = format!("{t:?} {t:#?}");
        assert!(!d.contains("REDIS-xyz") && d.contains("<redacted>"), "{d}");
    }

    /// A scripted Redis: answers each command with the next canned reply.
    async fn scripted(
        replies: &'static [&'static [u8]],
    ) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            for r in replies {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                s.write_all(r).await.unwrap();
            }
            seen
        });
        (addr, h)
    }

    fn target(address: String) -> RedisTarget {
        RedisTarget {
            address,
            tls: None,
            prefix: "p".into(),
            timeout: Duration::from_millis(500),
            auth: None,
        }
    }

    #[tokio::test]
    async fn replies_are_parsed_and_bounded() {
        // MGET: a count and a missing key.
        let (addr, h) = scripted(&[b"*2\r\n$1\r\n7\r\n$-1\r\n"]).await;
        let mut c = Resp::connect(&target(addr)).await.unwrap();
        let keys = [b"p:ip:a".to_vec(), b"p:user:b".to_vec()];
        assert_eq!(c.counts(&keys).await.unwrap(), vec![7, 0]);
        assert_eq!(
            h.await.unwrap(),
            b"*3\r\n$4\r\nMGET\r\n$6\r\np:ip:a\r\n$8\r\np:user:b\r\n"
        );
        // An error reply, a count that is no number, an array past the bound, a bulk string
        // past the bound, a line past the bound: errors, never a panic or a wait.
        let long = [b"+".as_slice(), &[b'x'; 2000], b"\r\n"].concat();
        for reply in [
            b"-WRONGTYPE no\r\n".to_vec(),
            b"*2\r\n$2\r\nxy\r\n$-1\r\n".to_vec(),
            b"*17\r\n".to_vec(),
            b"$99999\r\n".to_vec(),
            long,
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&reply).await;
                // Held open: an error must come from the data, not from a hang-up.
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
            let mut c = Resp::connect(&target(addr)).await.unwrap();
            let e = timeout(Duration::from_secs(2), c.counts(&keys))
                .await
                .expect("an answer, not a wait")
                .unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        }
    }
}
