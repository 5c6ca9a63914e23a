//! Relay delivery: aiosmtpd's "authenticated relayer". An SMTP client built from our own
//! crates: `smtp-proto` commands (`Command::encode`), replies and DATA encoding, `smtp-auth`'s
//! PLAIN client, rustls for STARTTLS. The AUTH line is built in a buffer that is wiped once
//! sent.
//!
//! [`Relay`] is the [`Delivery`]: each session's transaction is opened upstream at MAIL and
//! fed at each RCPT, so every command gets the upstream's own answer; DATA finishes it (or, when
//! the upstream connection broke after MAIL, relays the whole transaction again). Upstream
//! connections are kept for the next message ([`RelayPool`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use smtp_auth::ClientMechanism;
use smtp_auth::mechanism::{LoginClient, PlainClient, XOAuth2Client};
use smtp_proto::{
    BodyType, Command, DataEncoder, EhloResponse, ForwardPath, Host, InitialResponse,
    MailParameters, Mechanism, RcptParameters, Reply, ReplyParser, ReversePath,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroize;

use smtp_server::Session;

use super::{Answer, Delivery, DeliveryError, DeliveryFuture, MailCommand, Message, RcptCommand};
use crate::config::RelaySection;

/// The relay as a [`Delivery`]: the upstream, its connections kept between messages, and the
/// name it greets the upstream with.
#[derive(Debug)]
pub struct Relay {
    cfg: RelaySection,
    pool: Arc<RelayPool>,
    hostname: String,
    /// Sessions whose MAIL was taken without an upstream transaction because TLS failed:
    /// the message may say `TLS-Required: No` (RFC 8689 §5), which only DATA shows.
    deferred: std::sync::Mutex<std::collections::HashSet<SessionKey>>,
}

impl Relay {
    /// A relay to `cfg`'s upstream, greeting it as `hostname`.
    pub fn new(cfg: RelaySection, hostname: &str) -> Self {
        let pool = Arc::new(RelayPool::new(Duration::from_secs(cfg.reuse_idle_secs)));
        Self {
            cfg,
            pool,
            hostname: hostname.to_owned(),
            deferred: std::sync::Mutex::default(),
        }
    }

    /// Marks (`on`) or clears a session as deferred.
    fn set_deferred(&self, key: SessionKey, on: bool) {
        if let Ok(mut d) = self.deferred.lock() {
            if on {
                d.insert(key);
            } else {
                d.remove(&key);
            }
        }
    }

    fn is_deferred(&self, key: SessionKey) -> bool {
        self.deferred.lock().is_ok_and(|d| d.contains(&key))
    }
}

/// Whether a message says `TLS-Required: No` (RFC 8689 §5) in its header section.
async fn tls_optional(body: &smtp_server::Body) -> bool {
    crate::submission::head(body)
        .await
        .is_some_and(|(head, whole)| crate::submission::tls_required_no(&head, whole))
}

/// The key of a session's upstream transaction: its connection's two addresses.
fn session_key(session: &Session) -> SessionKey {
    (session.peer_addr, session.local_addr)
}

impl Delivery for Relay {
    fn kind(&self) -> &'static str {
        "relay"
    }

    fn begin<'a>(&'a self, session: &'a Session, mail: MailCommand<'a>) -> Answer<'a> {
        Box::pin(async move {
            // SIZE upstream: the client's declaration plus room for our header.
            let size = mail.params.size.map(|s| s + HEADER_ALLOWANCE);
            let key = session_key(session);
            match self
                .mail(key, mail.from, mail.params, size, Transport::AsConfigured)
                .await
            {
                Ok(()) => Ok(()),
                // TLS failed: the message may say `TLS-Required: No`; it is relayed whole at
                // the end of DATA, or refused then.
                Err(e) if e.tls && !mail.params.requiretls => {
                    tracing::warn!(target: "smtpd::app", error = %e.detail, "relay: TLS to the upstream failed; the transaction waits for the message (TLS-Required: No)");
                    self.set_deferred(key, true);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(target: "smtpd::app", error = %e.detail, "relay: MAIL not taken upstream");
                    Err(e.command_reply())
                }
            }
        })
    }

    fn recipient<'a>(&'a self, session: &'a Session, rcpt: RcptCommand<'a>) -> Answer<'a> {
        Box::pin(async move {
            if self.is_deferred(session_key(session)) {
                // Checked upstream when the message is relayed whole.
                return Ok(());
            }
            self.rcpt(session_key(session), rcpt.to, rcpt.params)
                .await
                .map_err(|e| {
                    tracing::info!(target: "smtpd::app", recipient = %rcpt.to, error = %e.detail, "relay: recipient refused upstream");
                    e.command_reply()
                })
        })
    }

    fn deliver<'a>(&'a self, m: Message<'a>) -> DeliveryFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let key = session_key(m.session);
            let header = m.header.as_bytes();
            // Streamed from memory or the spool file, never loaded whole: on the transaction
            // opened at MAIL, or a whole new one when there is none.
            let sent = match self.finish(key, header, &m.envelope.body).await {
                Some(r) => r,
                None => {
                    self.set_deferred(key, false);
                    self.whole(key, m.envelope, header).await
                }
            };
            sent.map_err(|e| {
                tracing::warn!(target: "smtpd::app", queue_id = %m.id, error = %e.detail, "relay failed");
                DeliveryError::Refused(e.reply())
            })
        })
    }

    fn abandon<'a>(&'a self, session: &'a Session) -> DeliveryFuture<'a, ()> {
        Box::pin(self.rset(session_key(session)))
    }
}

/// The upstream mechanism: XOAUTH2 with the token when one is configured and offered, else
/// PLAIN, else LOGIN, among what the upstream offers (Office 365 submission offers
/// `AUTH LOGIN XOAUTH2` and no PLAIN). `None` when no credentials are configured.
fn choose_mechanism(
    cfg: &RelaySection,
    offered: &[String],
) -> Result<Option<Box<dyn ClientMechanism>>, RelayError> {
    let Some(user) = &cfg.username else {
        return Ok(None);
    };
    let has = |m: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(m));
    if let Some(token) = &cfg.oauth_token {
        if has("XOAUTH2") {
            return Ok(Some(Box::new(XOAuth2Client::new(user, token))));
        }
        return Err(RelayError::temp(
            "upstream offers no AUTH XOAUTH2 for the token",
        ));
    }
    let Some(pass) = &cfg.password else {
        return Err(RelayError::temp(
            "relay username without password or oauth_token",
        ));
    };
    if has("PLAIN") {
        return Ok(Some(Box::new(PlainClient::new(user, pass, None))));
    }
    if has("LOGIN") {
        return Ok(Some(Box::new(LoginClient::new(user, pass))));
    }
    Err(RelayError::temp(format!(
        "upstream offers no AUTH PLAIN, LOGIN or XOAUTH2 (offers: {})",
        if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(" ")
        }
    )))
}

/// Runs one SASL exchange with the upstream: the AUTH line (with the initial response when
/// the mechanism has one), then a base64 response to each `334` challenge, until `235`. Every
/// line that carries a credential is wiped after sending; errors show the mechanism only.
async fn authenticate(
    up: &mut Upstream,
    mut client: Box<dyn ClientMechanism>,
) -> Result<(), RelayError> {
    use base64::Engine as _;
    let name = client.name().to_owned();
    let mut ir = client
        .initial_response()
        .map(|s| smtp_auth::encode_challenge(s.expose_secret()));
    let auth = Command::Auth {
        mechanism: Mechanism::new(&name).map_err(|e| RelayError::temp(e.to_string()))?,
        // An empty initial response is sent as "=" (RFC 4954 §4).
        initial_response: ir
            .as_deref()
            .map(|r| InitialResponse::new(if r.is_empty() { "=" } else { r }.as_bytes())),
    };
    if let Some(r) = ir.as_mut() {
        r.zeroize();
    }
    let mut line = BytesMut::new();
    auth.encode(&mut line);
    drop(auth);
    for _ in 0..8 {
        let sent = up.send(&line).await;
        line[..].zeroize();
        sent?;
        let r = up.reply().await?;
        match r.code().get() {
            // 235 per RFC 4954; any 2xx is taken as success (Postfix's smtp-sink says 250).
            200..=299 => return Ok(()),
            334 => {
                let text = r.lines().first().map(String::as_str).unwrap_or_default();
                let challenge = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| RelayError::temp(format!("AUTH {name}: bad challenge")))?;
                let answer = client
                    .respond(&challenge)
                    .map_err(|_| RelayError::temp(format!("AUTH {name}: unexpected challenge")))?;
                let mut b64 = smtp_auth::encode_challenge(answer.expose_secret());
                line = BytesMut::from(b64.as_bytes());
                line.extend_from_slice(b"\r\n");
                b64.zeroize();
            }
            _ => {
                return Err(RelayError {
                    permanent: r.code().class() == 5,
                    detail: format!("AUTH {name}: {}", r.to_string().replace("\r\n", " ")),
                    upstream: None,
                    tls: false,
                });
            }
        }
    }
    Err(RelayError::temp(format!(
        "AUTH {name}: too many challenges"
    )))
}

/// The MAIL parameters for the upstream: what it supports of the message's (SIZE, BODY,
/// SMTPUTF8, DSN's RET and ENVID); a message that needs an extension the upstream lacks
/// (SMTPUTF8, 8BITMIME, BINARYMIME over DATA) is refused with the reason.
fn mail_params(
    ehlo: &EhloResponse,
    params: &MailParameters,
    size: Option<u64>,
    tls: bool,
) -> Result<MailParameters, RelayError> {
    if params.requiretls {
        if !tls {
            return Err(RelayError::requiretls("the upstream connection is not TLS"));
        }
        if !ehlo.has("REQUIRETLS") {
            return Err(RelayError::requiretls(
                "the upstream does not offer REQUIRETLS",
            ));
        }
    }
    let refuse = |detail: &str| RelayError {
        permanent: true,
        detail: detail.to_owned(),
        upstream: None,
        tls: false,
    };
    let mut out = MailParameters::default();
    if ehlo.has("SIZE") {
        out.size = size;
    }
    match params.body {
        Some(BodyType::BinaryMime) => {
            return Err(refuse(
                "BODY=BINARYMIME cannot be relayed (this relay sends with DATA)",
            ));
        }
        Some(BodyType::EightBitMime) if !ehlo.has("8BITMIME") => {
            return Err(refuse(
                "the upstream does not accept 8-bit MIME (no 8BITMIME)",
            ));
        }
        Some(b) if ehlo.has("8BITMIME") => out.body = Some(b),
        _ => {}
    }
    if params.smtputf8 {
        if !ehlo.has("SMTPUTF8") {
            return Err(refuse(
                "the upstream does not accept UTF-8 addresses (no SMTPUTF8)",
            ));
        }
        out.smtputf8 = true;
    }
    if ehlo.has("DSN") {
        out.ret = params.ret;
        out.envid = params.envid.clone();
    }
    out.requiretls = params.requiretls;
    Ok(out)
}

/// The RCPT parameters for the upstream: DSN's NOTIFY and ORCPT when it has DSN.
fn rcpt_param(ehlo: &EhloResponse, p: &RcptParameters) -> RcptParameters {
    let dsn = ehlo.has("DSN");
    let mut upstream = RcptParameters::default();
    if dsn {
        upstream.notify = p.notify;
        upstream.orcpt = p.orcpt.clone();
    }
    upstream
}

/// Why relaying failed: the reply to give our client.
#[derive(Debug)]
pub struct RelayError {
    /// True when the upstream refused permanently (5xx).
    pub permanent: bool,
    /// What happened, for the reply text and the log (never a password).
    pub detail: String,
    /// The upstream's own reply to a MAIL or RCPT it refused, handed to our client as is.
    pub upstream: Option<Reply>,
    /// The failure was TLS's: no STARTTLS offered, or the handshake or the certificate
    /// failed (a message with `TLS-Required: No` may go without it, RFC 8689 §5).
    pub tls: bool,
}

impl RelayError {
    /// A TLS failure (see [`RelayError::tls`]).
    fn tls(detail: impl Into<String>) -> Self {
        Self {
            tls: true,
            ..Self::temp(detail)
        }
    }

    /// RFC 8689 §4.2.1: a REQUIRETLS message that cannot go over verified TLS to an upstream
    /// that offers REQUIRETLS is refused, `550 5.7.30`.
    fn requiretls(detail: &str) -> Self {
        Self {
            permanent: true,
            detail: format!("REQUIRETLS: {detail}"),
            upstream: Some(Reply::simple(
                550,
                Some((5, 7, 30)),
                &format!("REQUIRETLS support required: {detail}"),
            )),
            tls: false,
        }
    }

    fn temp(detail: impl Into<String>) -> Self {
        Self {
            permanent: false,
            detail: detail.into(),
            upstream: None,
            tls: false,
        }
    }

    /// The reply for our client to a MAIL or RCPT: the upstream's own when it refused.
    pub fn command_reply(&self) -> Reply {
        self.upstream.clone().unwrap_or_else(|| self.reply())
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
    /// STARTTLS was negotiated (with a verified certificate).
    tls: bool,
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
                upstream: (matches!(shown, "MAIL" | "RCPT") && r.code().class() >= 4)
                    .then(|| r.clone()),
                tls: false,
            });
        }
        Ok(r)
    }
}

fn tls_config(cfg: &RelaySection) -> Result<Arc<rustls::ClientConfig>, RelayError> {
    crate::tls::client_config(cfg.ca_file.as_deref()).map_err(RelayError::temp)
}

/// Upstream connections kept open between messages (connection reuse), each for at most
/// `idle` after its last message: a background timer closes it (QUIT) when it has not been
/// taken again by then. At most `MAX_IDLE` are kept.
#[derive(Debug)]
pub struct RelayPool {
    idle: Duration,
    conns: std::sync::Mutex<Vec<Idle>>,
    /// Sessions' transactions in progress upstream.
    open: std::sync::Mutex<std::collections::HashMap<SessionKey, Open>>,
}

const MAX_IDLE: usize = 4;

struct Idle {
    up: Upstream,
    ehlo: EhloResponse,
    since: std::time::Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("since", &self.since).finish()
    }
}

impl RelayPool {
    /// A pool keeping connections `idle` long; zero keeps none (QUIT after each message).
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            conns: std::sync::Mutex::new(Vec::new()),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A connection idle for less than the limit, if any (the newest; over TLS when `tls`).
    fn take(&self, tls: bool) -> Option<Idle> {
        let mut conns = self.conns.lock().ok()?;
        conns.retain(|c| c.since.elapsed() < self.idle);
        let at = conns.iter().rposition(|c| c.up.tls || !tls)?;
        Some(conns.remove(at))
    }

    /// Keeps `up` for the next message, and arranges its close after the idle limit.
    fn put(self: &Arc<Self>, up: Upstream, ehlo: EhloResponse) {
        if self.idle.is_zero() {
            tokio::spawn(quit(up));
            return;
        }
        let since = std::time::Instant::now();
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        if conns.len() >= MAX_IDLE {
            let oldest = conns.remove(0);
            tokio::spawn(quit(oldest.up));
        }
        conns.push(Idle { up, ehlo, since });
        drop(conns);
        let pool = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pool.idle).await;
            let expired: Vec<Idle> = match pool.conns.lock() {
                Ok(mut c) => {
                    let (old, keep): (Vec<Idle>, Vec<Idle>) =
                        c.drain(..).partition(|i| i.since.elapsed() >= pool.idle);
                    *c = keep;
                    old
                }
                Err(_) => Vec::new(),
            };
            for i in expired {
                quit(i.up).await;
            }
        });
    }
}

/// Ends an upstream session politely (best effort, bounded by the upstream timeout).
async fn quit(mut up: Upstream) {
    let _ = up.send(b"QUIT\r\n").await;
    let _ = up.reply().await;
}

/// How a message's upstream connection is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// As `starttls` says.
    AsConfigured,
    /// STARTTLS whatever `starttls` says (a REQUIRETLS message).
    Tls,
    /// Without STARTTLS: a `TLS-Required: No` message after TLS failed (RFC 8689 §5).
    Plain,
}

/// A new upstream session: greeting, EHLO, STARTTLS and EHLO again when `transport` asks for
/// it, AUTH.
async fn connect(
    cfg: &RelaySection,
    helo: &str,
    transport: Transport,
) -> Result<(Upstream, EhloResponse), RelayError> {
    let helo = Host::try_from(helo).map_err(|e| RelayError::temp(format!("hostname: {e}")))?;
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port)))
        .await
        .map_err(|_| RelayError::temp("connect timeout"))?
        .map_err(|e| RelayError::temp(format!("connect: {e}")))?;
    let mut up = Upstream {
        io: Box::new(tcp),
        tls: false,
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
    let starttls = match transport {
        Transport::AsConfigured => cfg.starttls,
        Transport::Tls => true,
        Transport::Plain => false,
    };
    if starttls {
        if !ehlo.has("STARTTLS") {
            return Err(RelayError::tls("upstream offers no STARTTLS"));
        }
        up.cmd(&Command::StartTls, 2)
            .await
            .map_err(|e| RelayError::tls(e.detail))?;
        if !up.buf.is_empty() {
            return Err(RelayError::tls("data after STARTTLS reply"));
        }
        let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
            .map_err(|e| RelayError::temp(format!("server name: {e}")))?;
        let plain = std::mem::replace(&mut up.io, Box::new(tokio::io::duplex(1).0));
        let tls = tokio::time::timeout(
            timeout,
            tokio_rustls::TlsConnector::from(tls_config(cfg)?).connect(name, plain),
        )
        .await
        .map_err(|_| RelayError::tls("TLS timeout"))?
        .map_err(|e| RelayError::tls(format!("TLS: {e}")))?;
        up.io = Box::new(tls);
        up.tls = true;
        ehlo = EhloResponse::from_reply(&up.cmd(&ehlo_cmd, 2).await?)
            .ok_or_else(|| RelayError::temp("EHLO"))?;
    }
    if let Some(client) = choose_mechanism(cfg, ehlo.auth_mechanisms())? {
        authenticate(&mut up, client).await?;
    }
    Ok((up, ehlo))
}

/// DATA, the message (`header` then `body`, dot-stuffed, streamed in 64 KiB pieces), and the
/// upstream's reply to it.
async fn send_message(
    up: &mut Upstream,
    header: &[u8],
    body: &smtp_server::Body,
) -> Result<(), RelayError> {
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
            upstream: None,
            tls: false,
        });
    }
    Ok(())
}

/// The connection a session's transaction runs on: its two addresses.
pub type SessionKey = (std::net::SocketAddr, std::net::SocketAddr);

/// A transaction opened upstream at MAIL, fed at each RCPT, finished at DATA: so each
/// recipient gets the upstream's own answer, and one refused recipient does not fail the
/// others.
struct Open {
    up: Upstream,
    ehlo: EhloResponse,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Open")
    }
}

/// Room for our `Received:` header (and added fields) on top of a client's declared SIZE.
const HEADER_ALLOWANCE: u64 = 8 * 1024;

impl RelayPool {
    fn take_open(&self, key: SessionKey) -> Option<Open> {
        self.open.lock().ok()?.remove(&key)
    }

    fn put_open(&self, key: SessionKey, open: Open) {
        if let Ok(mut m) = self.open.lock() {
            m.insert(key, open);
        }
    }
}

impl Relay {
    /// A kept connection (checked with RSET; over TLS when `transport` needs it) or a new
    /// session.
    async fn take_or_connect(
        &self,
        transport: Transport,
    ) -> Result<(Upstream, EhloResponse), RelayError> {
        if transport != Transport::Plain {
            let tls = transport == Transport::Tls || self.cfg.starttls;
            while let Some(mut idle) = self.pool.take(tls) {
                if idle.up.cmd(&Command::Rset, 2).await.is_ok() {
                    return Ok((idle.up, idle.ehlo));
                }
            }
        }
        connect(&self.cfg, &self.hostname, transport).await
    }

    /// MAIL on a kept or new connection, declaring `size`; the transaction is kept under
    /// `key` (one the session left behind, after a reset no hook sees, is given up first):
    /// `Err` carries the upstream's refusal.
    async fn mail(
        &self,
        key: SessionKey,
        from: &ReversePath,
        params: &MailParameters,
        size: Option<u64>,
        transport: Transport,
    ) -> Result<(), RelayError> {
        self.rset(key).await;
        // REQUIRETLS: STARTTLS whatever the configuration says, and never without it.
        let transport = if params.requiretls {
            Transport::Tls
        } else {
            transport
        };
        let (mut up, ehlo) = match self.take_or_connect(transport).await {
            Err(e) if e.tls && params.requiretls => {
                return Err(RelayError::requiretls(&e.detail));
            }
            other => other?,
        };
        let params = match mail_params(&ehlo, params, size, up.tls) {
            Ok(p) => p,
            Err(e) => {
                self.pool.put(up, ehlo);
                return Err(e);
            }
        };
        let mail = Command::Mail {
            from: from.clone(),
            params,
        };
        match up.cmd(&mail, 2).await {
            Ok(_) => {
                self.pool.put_open(key, Open { up, ehlo });
                Ok(())
            }
            Err(e) => {
                if e.upstream.is_some() {
                    // A refusal: the connection itself is fine.
                    self.pool.put(up, ehlo);
                }
                Err(e)
            }
        }
    }

    /// One RCPT of the session's open transaction: `Err` carries the upstream's refusal of
    /// this recipient (the transaction goes on for the others).
    async fn rcpt(
        &self,
        key: SessionKey,
        to: &ForwardPath,
        params: &RcptParameters,
    ) -> Result<(), RelayError> {
        let Some(mut open) = self.pool.take_open(key) else {
            return Err(RelayError::temp("no upstream transaction"));
        };
        let rcpt = Command::Rcpt {
            to: to.clone(),
            params: rcpt_param(&open.ehlo, params),
        };
        let r = open.up.cmd(&rcpt, 2).await;
        match &r {
            Ok(_) => self.pool.put_open(key, open),
            Err(e) if e.upstream.is_some() => self.pool.put_open(key, open),
            Err(_) => {} // the connection is gone
        }
        r.map(|_| ())
    }

    /// Sends the message on the session's open transaction: `None` when there is none (then
    /// the caller relays the whole transaction itself).
    async fn finish(
        &self,
        key: SessionKey,
        header: &[u8],
        body: &smtp_server::Body,
    ) -> Option<Result<(), RelayError>> {
        let mut open = self.pool.take_open(key)?;
        let r = send_message(&mut open.up, header, body).await;
        if r.is_ok() {
            self.pool.put(open.up, open.ehlo);
        }
        Some(r)
    }

    /// Relays the envelope's whole transaction for a session that has none open upstream (its
    /// connection broke after MAIL): MAIL with the message's exact size, each RCPT (any
    /// refusal fails the message), then the message with `header` before the body.
    async fn whole(
        &self,
        key: SessionKey,
        envelope: &smtp_server::Envelope,
        header: &[u8],
    ) -> Result<(), RelayError> {
        let body = &envelope.body;
        let from = envelope.mail_from.clone().unwrap_or(ReversePath::Null);
        let size = header.len() as u64 + body.len();
        let params = &envelope.mail_params;
        match self
            .mail(key, &from, params, Some(size), Transport::AsConfigured)
            .await
        {
            // RFC 8689 §5: `TLS-Required: No` lets the message go when TLS fails (not
            // with REQUIRETLS, which the header field cannot lift).
            Err(e) if e.tls && !params.requiretls && tls_optional(body).await => {
                tracing::info!(target: "smtpd::app", error = %e.detail, "relay: TLS failed, the message says TLS-Required: No: sent without TLS");
                self.mail(key, &from, params, Some(size), Transport::Plain)
                    .await?;
            }
            other => other?,
        }
        for (rcpt, p) in envelope.rcpt_to.iter().zip(&envelope.rcpt_params) {
            if let Err(e) = self.rcpt(key, rcpt, p).await {
                self.rset(key).await;
                return Err(e);
            }
        }
        self.finish(key, header, body)
            .await
            .unwrap_or_else(|| Err(RelayError::temp("no upstream transaction")))
    }

    /// Gives up the session's open transaction, if any (RSET, and the connection is kept).
    async fn rset(&self, key: SessionKey) {
        self.set_deferred(key, false);
        if let Some(mut open) = self.pool.take_open(key)
            && open.up.cmd(&Command::Rset, 2).await.is_ok()
        {
            self.pool.put(open.up, open.ehlo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(extensions: &[&str]) -> EhloResponse {
        let mut e = EhloResponse::new("up.test");
        for x in extensions {
            e = e.with(smtp_proto::Extension::parse(x));
        }
        e
    }

    fn refusal(r: Result<MailParameters, RelayError>) -> String {
        match r {
            Ok(p) => format!("ok{p}"),
            Err(e) => e.command_reply().to_string(),
        }
    }

    #[test]
    fn requiretls_is_forwarded_only_over_tls_to_an_upstream_that_offers_it() {
        let p = MailParameters::parse("REQUIRETLS").unwrap();
        let both = ehlo(&["STARTTLS", "REQUIRETLS"]);
        assert_eq!(refusal(mail_params(&both, &p, None, true)), "ok REQUIRETLS");
        assert_eq!(
            refusal(mail_params(&both, &p, None, false)),
            "550 5.7.30 REQUIRETLS support required: the upstream connection is not TLS"
        );
        assert_eq!(
            refusal(mail_params(&ehlo(&["STARTTLS"]), &p, None, true)),
            "550 5.7.30 REQUIRETLS support required: the upstream does not offer REQUIRETLS"
        );
        // A message without it is not held to it, and does not pass it on.
        let plain = MailParameters::default();
        assert_eq!(refusal(mail_params(&ehlo(&[]), &plain, None, false)), "ok");
        // The command on the wire.
        let mail = Command::Mail {
            from: ReversePath::Mailbox("a@b.test".parse().unwrap()),
            params: mail_params(&both, &p, None, true).unwrap(),
        };
        let mut line = BytesMut::new();
        mail.encode(&mut line);
        assert_eq!(&line[..], b"MAIL FROM:<a@b.test> REQUIRETLS\r\n");
    }
}
