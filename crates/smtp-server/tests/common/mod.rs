//! Test helpers: a real server on 127.0.0.1 port 0, a raw line client, certificates made here.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use smtp_proto::Reply;
use smtp_server::{Envelope, Handler, Server, ServerConfig, Session};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod python;
pub use python::python_blocking;

/// What the recording handler saw of each delivered message.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    pub content: Vec<u8>,
    pub login: Option<String>,
    pub authenticated: bool,
    pub auth: Option<smtp_proto::AuthParam>,
    pub tls: bool,
    pub peer: SocketAddr,
}

/// Records every message.
#[derive(Clone, Default)]
pub struct Recorder {
    pub messages: Arc<Mutex<Vec<Delivered>>>,
}

impl Recorder {
    pub fn taken(&self) -> Vec<Delivered> {
        std::mem::take(&mut *self.messages.lock().unwrap())
    }
}

impl Handler for Recorder {
    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        let content = envelope.body.to_bytes().await.unwrap().to_vec();
        self.messages.lock().unwrap().push(Delivered {
            from: envelope
                .mail_from
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default(),
            to: envelope.rcpt_to.iter().map(|t| t.to_string()).collect(),
            content,
            login: session.login_data.clone(),
            authenticated: session.authenticated,
            auth: envelope.auth.clone(),
            tls: session.tls.is_some(),
            peer: session.peer_addr,
        });
        Reply::simple(250, Some((2, 0, 0)), "OK: queued")
    }
}

/// A running server; dropping `stop` (or sending on it) shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.done.await;
    }
}

pub async fn start<H: Handler>(server: Server<H>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        stop: Some(tx),
        done,
    }
}

/// A plain configuration for loopback tests: AUTH allowed without TLS, no failure delay.
pub fn plain_config() -> smtp_server::ServerConfigBuilder {
    ServerConfig::builder()
        .auth_require_tls(false)
        .auth_failure_delay(std::time::Duration::ZERO)
}

/// A line client over any stream.
pub struct Client<S> {
    pub io: BufReader<S>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            io: BufReader::new(s),
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn send(&mut self, raw: &str) {
        self.io.get_mut().write_all(raw.as_bytes()).await.unwrap();
    }

    pub async fn send_bytes(&mut self, raw: &[u8]) {
        self.io.get_mut().write_all(raw).await.unwrap();
    }

    /// One full reply, lines joined by `\n`; empty at EOF.
    pub async fn reply(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.io.read_line(&mut line),
            )
            .await
            .expect("reply within 10 s")
            .unwrap_or(0);
            if n == 0 {
                break;
            }
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let more = line.as_bytes().get(3) == Some(&b'-');
            out.push(line);
            if !more {
                break;
            }
        }
        out.join("\n")
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    pub fn into_inner(self) -> S {
        assert!(self.io.buffer().is_empty(), "unread server data");
        self.io.into_inner()
    }
}

/// A certificate for "localhost" made now, as server and client configurations, and its PEM.
pub fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client), ck.cert.pem())
}

pub async fn tls_connect<S: AsyncRead + AsyncWrite + Unpin>(
    client: Arc<rustls::ClientConfig>,
    io: S,
) -> tokio_rustls::client::TlsStream<S> {
    tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), io)
        .await
        .unwrap()
}

pub fn b64(s: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Runs a Python script; its stdout (panics with stderr when it fails).
pub async fn python(script: String) -> String {
    tokio::task::spawn_blocking(move || python_blocking(&script))
        .await
        .unwrap()
}
