//! Relay delivery: aiosmtpd's "authenticated relayer". An SMTP client built from our own
//! crates: `smtp-proto` commands (`Command::encode`), replies and DATA encoding, `smtp-auth`'s
//! PLAIN client, rustls for STARTTLS. The AUTH line is built in a buffer that is wiped once
//! sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use smtp_auth::ClientMechanism;
use smtp_auth::mechanism::PlainClient;
use smtp_proto::{
    Command, DataEncoder, EhloResponse, ForwardPath, Host, InitialResponse, MailParameters,
    Mechanism, RcptParameters, Reply, ReplyParser, ReversePath,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroize;

use crate::config::RelaySection;

/// Why relaying failed: the reply to give our client.
#[derive(Debug)]
pub struct RelayError {
    /// True when the upstream refused permanently (5xx).
    pub permanent: bool,
    /// What happened, for the reply text and the log (never a password).
    pub detail: String,
}

impl RelayError {
    fn temp(detail: impl Into<String>) -> Self {
        Self {
            permanent: false,
            detail: detail.into(),
        }
    }

    /// The reply for our client.
    pub fn reply(&self) -> Reply {
        if self.permanent {
            Reply::simple(
                554,
                Some((5, 0, 0)),
                &format!("Upstream refused: {}", self.detail),
            )
        } else {
            Reply::simple(
                451,
                Some((4, 4, 0)),
                &format!("Upstream failure: {}", self.detail),
            )
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

struct Upstream {
    io: Box<dyn Stream>,
    buf: BytesMut,
    parser: ReplyParser,
    timeout: Duration,
}

impl Upstream {
    async fn reply(&mut self) -> Result<Reply, RelayError> {
        loop {
            if let Some(r) = self
                .parser
                .decode(&mut self.buf)
                .map_err(|e| RelayError::temp(format!("bad reply: {e}")))?
            {
                return Ok(r);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.io.read(&mut chunk))
                .await
                .map_err(|_| RelayError::temp("timeout"))?
                .map_err(|e| RelayError::temp(e.to_string()))?;
            if n == 0 {
                return Err(RelayError::temp("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        tokio::time::timeout(self.timeout, self.io.write_all(bytes))
            .await
            .map_err(|_| RelayError::temp("timeout"))?
            .map_err(|e| RelayError::temp(e.to_string()))
    }

    /// Sends a command and expects a reply of class `want` (2 or 3); errors show the verb
    /// only. The encoded line is wiped after sending (an AUTH line carries the password).
    async fn cmd(&mut self, command: &Command, want: u8) -> Result<Reply, RelayError> {
        let mut line = BytesMut::new();
        command.encode(&mut line);
        let sent = self.send(&line).await;
        line[..].zeroize();
        sent?;
        let shown = command.verb();
        let r = self.reply().await?;
        if r.code().class() != want {
            return Err(RelayError {
                permanent: r.code().class() == 5,
                detail: format!("{shown}: {}", r.to_string().replace("\r\n", " ")),
            });
        }
        Ok(r)
    }
}

fn tls_config(cfg: &RelaySection) -> Result<Arc<rustls::ClientConfig>, RelayError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| RelayError::temp(format!("CA file: {e}")))?
            {
                let cert = cert.map_err(|e| RelayError::temp(format!("CA file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| RelayError::temp(format!("CA file: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RelayError::temp(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Relays one message (`header` then `body`, streamed from memory or its spool file in 64 KiB
/// pieces): EHLO, STARTTLS (when configured), AUTH PLAIN (when configured), MAIL, RCPT for each
/// recipient, DATA, QUIT.
pub async fn relay(
    cfg: &RelaySection,
    helo: &str,
    from: &ReversePath,
    to: &[ForwardPath],
    header: &[u8],
    body: &smtp_server::Body,
) -> Result<(), RelayError> {
    let helo = Host::try_from(helo).map_err(|e| RelayError::temp(format!("hostname: {e}")))?;
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port)))
        .await
        .map_err(|_| RelayError::temp("connect timeout"))?
        .map_err(|e| RelayError::temp(format!("connect: {e}")))?;
    let mut up = Upstream {
        io: Box::new(tcp),
        buf: BytesMut::new(),
        parser: ReplyParser::default(),
        timeout,
    };
    let greeting = up.reply().await?;
    if greeting.code().get() != 220 {
        return Err(RelayError::temp(format!("greeting {}", greeting.code())));
    }
    let ehlo_cmd = Command::Ehlo(helo);
    let mut ehlo = EhloResponse::from_reply(&up.cmd(&ehlo_cmd, 2).await?)
        .ok_or_else(|| RelayError::temp("EHLO"))?;
    if cfg.starttls {
        if !ehlo.has("STARTTLS") {
            return Err(RelayError::temp("upstream offers no STARTTLS"));
        }
        up.cmd(&Command::StartTls, 2).await?;
        if !up.buf.is_empty() {
            return Err(RelayError::temp("data after STARTTLS reply"));
        }
        let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
            .map_err(|e| RelayError::temp(format!("server name: {e}")))?;
        let plain = std::mem::replace(&mut up.io, Box::new(tokio::io::duplex(1).0));
        let tls = tokio::time::timeout(
            timeout,
            tokio_rustls::TlsConnector::from(tls_config(cfg)?).connect(name, plain),
        )
        .await
        .map_err(|_| RelayError::temp("TLS timeout"))?
        .map_err(|e| RelayError::temp(format!("TLS: {e}")))?;
        up.io = Box::new(tls);
        ehlo = EhloResponse::from_reply(&up.cmd(&ehlo_cmd, 2).await?)
            .ok_or_else(|| RelayError::temp("EHLO"))?;
    }
    if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
        if !ehlo.auth_mechanisms().iter().any(|m| m == "PLAIN") {
            return Err(RelayError::temp("upstream offers no AUTH PLAIN"));
        }
        let mut client = PlainClient::new(user, pass, None);
        let mut ir = client
            .initial_response()
            .map(|s| smtp_auth::encode_challenge(s.expose_secret()))
            .unwrap_or_default();
        // InitialResponse wipes itself when dropped; the String it came from is wiped here.
        let auth = Command::Auth {
            mechanism: Mechanism::new("PLAIN").map_err(|e| RelayError::temp(e.to_string()))?,
            initial_response: Some(InitialResponse::new(ir.as_bytes())),
        };
        ir.zeroize();
        up.cmd(&auth, 2).await?;
    }
    let mail = Command::Mail {
        from: from.clone(),
        params: MailParameters::default(),
    };
    up.cmd(&mail, 2).await?;
    for rcpt in to {
        let rcpt = Command::Rcpt {
            to: rcpt.clone(),
            params: RcptParameters::default(),
        };
        up.cmd(&rcpt, 2).await?;
    }
    up.cmd(&Command::Data, 3).await?;
    let mut encoder = DataEncoder::new();
    let mut wire = BytesMut::new();
    encoder.encode(header, &mut wire);
    let mut reader = body
        .reader()
        .await
        .map_err(|e| RelayError::temp(format!("reading the message: {e}")))?;
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut reader, &mut piece)
            .await
            .map_err(|e| RelayError::temp(format!("reading the message: {e}")))?;
        if n == 0 {
            break;
        }
        encoder.encode(&piece[..n], &mut wire);
        up.send(&wire).await?;
        wire.clear();
    }
    encoder.finish(&mut wire);
    up.send(&wire).await?;
    let r = up.reply().await?;
    if r.code().class() != 2 {
        return Err(RelayError {
            permanent: r.code().class() == 5,
            detail: format!("DATA: {}", r.to_string().replace("\r\n", " ")),
        });
    }
    let _ = up.send(b"QUIT\r\n").await;
    Ok(())
}
