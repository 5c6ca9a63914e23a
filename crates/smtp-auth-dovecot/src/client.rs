//! [`DovecotClient`]: a pool of connections to Dovecot's `auth-client` listener, each carrying
//! many requests at once (the protocol numbers them), that reconnects when one breaks.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::protocol::{
    self, Answer, Handshake, HandshakeReader, MAX_LINE, MechanismInfo, RequestInfo,
};

/// Where Dovecot listens: a Unix socket path (`/run/dovecot/auth-client`) or `host:port` (an
/// `inet_listener` of `service auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address, `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Reads `"/path"` as a Unix socket and `"host:port"` as TCP.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.to_owned()))
            }
            _ => Err(format!(
                "{s:?} is neither an absolute socket path nor host:port"
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tcp(a) => f.write_str(a),
        }
    }
}

/// How a [`DovecotClient`] reaches Dovecot.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DovecotConfig {
    /// The `auth-client` listener.
    pub endpoint: Endpoint,
    /// The longest wait for each step: connecting with its handshake, and each answer. A step
    /// that takes longer is [`Error::Timeout`]. Default 5 s.
    pub timeout: Duration,
    /// Connections kept open (each carries many concurrent requests). Default 4.
    pub connections: usize,
    /// The service name sent with each request (`smtp`).
    pub service: String,
    /// Dovecot's per-address penalty applies (default): after failures from an address,
    /// Dovecot delays that address's next requests (2 s, doubling up to 15 s). Off sends
    /// `no-penalty` with every request (the server's own limiter counts failures anyway).
    pub penalty: bool,
}

impl DovecotConfig {
    /// The defaults for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: Duration::from_secs(5),
            connections: 4,
            service: "smtp".into(),
            penalty: true,
        }
    }
}

/// Why a request got no answer from Dovecot. The texts never hold credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Dovecot could not be reached, or the connection broke.
    Unavailable(String),
    /// No answer within the configured timeout.
    Timeout,
    /// Dovecot sent something this client does not understand.
    Protocol(String),
    /// Dovecot does not offer this mechanism.
    UnknownMechanism(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "Dovecot unavailable: {e}"),
            Self::Timeout => f.write_str("Dovecot did not answer in time"),
            Self::Protocol(e) => write!(f, "Dovecot protocol error: {e}"),
            Self::UnknownMechanism(m) => write!(f, "Dovecot does not offer {m}"),
        }
    }
}

impl std::error::Error for Error {}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;
type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// What a connection's reader task shares with the requests.
#[derive(Default)]
struct Shared {
    /// The requests waiting for an answer, by id.
    pending: Mutex<HashMap<u32, mpsc::Sender<Answer>>>,
    /// False once the connection broke.
    alive: AtomicBool,
}

impl Shared {
    /// The connection is gone: every request still waiting learns it (its channel closes),
    /// and the slot reconnects on its next use.
    fn close(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending.lock().expect("pending").clear();
    }
}

/// One connection: a writer for the requests and a task that routes answers by id.
struct Conn {
    writer: tokio::sync::Mutex<Writer>,
    shared: Arc<Shared>,
    handshake: Handshake,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    fn alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }
}

struct Inner {
    config: DovecotConfig,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    ids: AtomicU32,
}

/// A client of Dovecot's authentication service: start an exchange with
/// [`DovecotClient::start`] and carry it on with [`Exchange::respond`]. Cheap to clone (the
/// clones share the pool).
#[derive(Clone)]
pub struct DovecotClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for DovecotClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DovecotClient")
            .field("endpoint", &self.inner.config.endpoint)
            .field("timeout", &self.inner.config.timeout)
            .field("connections", &self.inner.config.connections)
            .finish()
    }
}

impl DovecotClient {
    /// A client; it connects on first use.
    pub fn new(config: DovecotConfig) -> Self {
        let n = config.connections.max(1);
        Self {
            inner: Arc::new(Inner {
                config,
                slots: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                ids: AtomicU32::new(1),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DovecotConfig {
        &self.inner.config
    }

    /// The mechanisms Dovecot offers (connecting if needed).
    pub async fn mechanisms(&self) -> Result<Vec<MechanismInfo>, Error> {
        Ok(self.conn().await?.handshake.mechanisms.clone())
    }

    /// Starts an exchange: `AUTH` with `mechanism`, the session facts and the client's initial
    /// response (decoded). Returns the exchange and Dovecot's first answer.
    pub async fn start(
        &self,
        mechanism: &str,
        info: &RequestInfo,
        initial: Option<&[u8]>,
    ) -> Result<(Exchange, Answer), Error> {
        let mechanism = mechanism.to_ascii_uppercase();
        if !protocol::valid_mechanism(&mechanism) {
            return Err(Error::UnknownMechanism(mechanism));
        }
        let conn = self.conn().await?;
        if !conn
            .handshake
            .mechanisms
            .iter()
            .any(|m| m.name == mechanism)
        {
            return Err(Error::UnknownMechanism(mechanism));
        }
        let id = self.next_id();
        let (tx, rx) = mpsc::channel(2);
        conn.shared.pending.lock().expect("pending").insert(id, tx);
        let mut exchange = Exchange {
            conn,
            id,
            rx,
            timeout: self.inner.config.timeout,
        };
        let config = &self.inner.config;
        let info = RequestInfo {
            no_penalty: info.no_penalty || !config.penalty,
            ..info.clone()
        };
        let line = protocol::auth_line(id, &mechanism, &config.service, &info, initial);
        let answer = exchange.send(line.as_bytes()).await?;
        Ok((exchange, answer))
    }

    /// Closes the pooled connections once their exchanges in progress end; the next request
    /// connects afresh (after Dovecot was restarted or moved, on SIGHUP).
    pub async fn reconnect(&self) {
        for slot in &self.inner.slots {
            *slot.lock().await = None;
        }
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.inner.ids.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// A live connection from the pool, connecting (or reconnecting) its slot if needed.
    async fn conn(&self) -> Result<Arc<Conn>, Error> {
        let inner = &self.inner;
        let i = inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len();
        let mut slot = inner.slots[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.alive()) {
            return Ok(c.clone());
        }
        let reconnect = slot.is_some();
        *slot = None;
        let c = tokio::time::timeout(inner.config.timeout, connect(&inner.config.endpoint))
            .await
            .map_err(|_| Error::Timeout)??;
        if reconnect {
            tracing::info!(target: "smtp_auth_dovecot", endpoint = %inner.config.endpoint, "reconnected to Dovecot");
        }
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// Opens a connection and reads the handshake.
async fn connect(endpoint: &Endpoint) -> Result<Conn, Error> {
    let unavailable = |e: std::io::Error| Error::Unavailable(format!("{endpoint}: {e}"));
    let (read, mut write): (Reader, Writer) = match endpoint {
        #[cfg(unix)]
        Endpoint::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(unavailable)?;
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
        #[cfg(not(unix))]
        Endpoint::Unix(_) => {
            return Err(Error::Unavailable("Unix sockets need a Unix system".into()));
        }
        Endpoint::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(unavailable)?;
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
    };
    write
        .write_all(protocol::client_hello(std::process::id()).as_bytes())
        .await
        .map_err(unavailable)?;
    write.flush().await.map_err(unavailable)?;
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let mut reader = HandshakeReader::default();
    let handshake = loop {
        match lines.next().await {
            Some(Ok(line)) => {
                if let Some(h) = reader.line(&line).map_err(Error::Protocol)? {
                    break h;
                }
            }
            Some(Err(e)) => return Err(Error::Protocol(e.to_string())),
            None => {
                return Err(Error::Unavailable(format!(
                    "{endpoint}: closed during the handshake"
                )));
            }
        }
    };
    tracing::debug!(target: "smtp_auth_dovecot", endpoint = %endpoint, mechanisms = handshake.mechanisms.len(), "connected to Dovecot");
    let shared = Arc::new(Shared {
        pending: Mutex::default(),
        alive: AtomicBool::new(true),
    });
    let reader = tokio::spawn(route(lines, shared.clone(), endpoint.to_string()));
    Ok(Conn {
        writer: tokio::sync::Mutex::new(write),
        shared,
        handshake,
        reader,
    })
}

/// Reads answers and hands each to its request until the connection ends; then every request
/// still waiting learns it (its channel closes).
async fn route(mut lines: FramedRead<Reader, LinesCodec>, shared: Arc<Shared>, endpoint: String) {
    let why = loop {
        match lines.next().await {
            Some(Ok(line)) => match protocol::parse_reply(&line) {
                Ok(Some(reply)) => {
                    let fin = !matches!(reply.answer, Answer::Continue(_));
                    let mut pending = shared.pending.lock().expect("pending");
                    let tx = if fin {
                        pending.remove(&reply.id)
                    } else {
                        pending.get(&reply.id).cloned()
                    };
                    drop(pending);
                    if let Some(tx) = tx {
                        let _ = tx.try_send(reply.answer);
                    }
                }
                Ok(None) => {}
                Err(e) => break e,
            },
            Some(Err(e)) => break e.to_string(),
            None => break "closed by Dovecot".to_string(),
        }
    };
    tracing::warn!(target: "smtp_auth_dovecot", endpoint = %endpoint, reason = %why, "Dovecot connection lost");
    shared.close();
}

/// One exchange in progress. Dropping it forgets the request (Dovecot ends it by its own
/// timeout).
pub struct Exchange {
    conn: Arc<Conn>,
    id: u32,
    rx: mpsc::Receiver<Answer>,
    timeout: Duration,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange").field("id", &self.id).finish()
    }
}

impl Exchange {
    /// Sends the client's response (decoded) to Dovecot's last challenge; returns its answer.
    pub async fn respond(&mut self, response: &[u8]) -> Result<Answer, Error> {
        let line = protocol::cont_line(self.id, response);
        self.send(line.as_bytes()).await
    }

    async fn send(&mut self, line: &[u8]) -> Result<Answer, Error> {
        let conn = self.conn.clone();
        let step = async {
            {
                let mut w = conn.writer.lock().await;
                let written = async {
                    w.write_all(line).await?;
                    w.flush().await
                }
                .await;
                if let Err(e) = written {
                    conn.shared.close();
                    return Err(Error::Unavailable(e.to_string()));
                }
            }
            self.rx
                .recv()
                .await
                .ok_or_else(|| Error::Unavailable("connection lost".into()))
        };
        tokio::time::timeout(self.timeout, step)
            .await
            .map_err(|_| Error::Timeout)?
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Ok(mut p) = self.conn.shared.pending.lock() {
            p.remove(&self.id);
        }
    }
}
