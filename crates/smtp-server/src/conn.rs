//! One connection: a `Framed<stream, SmtpCodec>` loop that reads, asks [`crate::protocol`] what
//! is allowed, awaits hooks and the authenticator, writes and sleeps. No protocol rule lives
//! here that the protocol module could decide.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use smtp_auth::{
    AuthExchange, AuthResult, AuthStatus, SecretBytes, SessionInfo, Step, smtp as auth_smtp,
};
use smtp_proto::codec::{DEFAULT_MAX_SASL_LINE, Frame, Mode, SmtpCodec};
use smtp_proto::{Command, DataDecoder, Host, InitialResponse, Mechanism, Reply};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::Handler;
use crate::body::{Body, BodySink};
use crate::protocol;
use crate::replies;
use crate::server::Shared;
use crate::session::{Envelope, Session, TlsInfo};

/// Any byte stream the server can speak over (TCP, TLS over TCP, a test duplex).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub(crate) type BoxIo = Box<dyn Io>;
type Transport = Framed<BoxIo, SmtpCodec>;

/// The read buffer an idle connection starts with and shrinks back to: one command line fits
/// twice; DATA and BDAT grow it while they need it.
const IDLE_READ_BUFFER: usize = 1024;
/// The read buffer a message body is read with (given back after it).
const BODY_READ_BUFFER: usize = 16 * 1024;
/// A buffer larger than this is given back once it is empty.
const SHRINK_ABOVE: usize = 4 * 1024;

/// A transport with a small read buffer (tokio-util's default is 8 KiB).
fn framed(io: BoxIo, codec: SmtpCodec) -> Transport {
    Framed::with_capacity(io, codec, IDLE_READ_BUFFER)
}

/// Gives back buffers that grew for a large reply or message, once they are empty, so an idle
/// connection costs little whatever it did before.
fn shrink(t: &mut Transport) {
    if t.read_buffer().is_empty() && t.read_buffer().capacity() > SHRINK_ABOVE {
        *t.read_buffer_mut() = BytesMut::with_capacity(IDLE_READ_BUFFER);
    }
    if t.write_buffer().is_empty() && t.write_buffer().capacity() > SHRINK_ABOVE {
        *t.write_buffer_mut() = BytesMut::new();
    }
}

/// Flushes what was fed (the item type only picks the `Sink` impl).
async fn flush(t: &mut Transport) -> std::io::Result<()> {
    SinkExt::<Bytes>::flush(t).await
}

/// One reply line as sent: CR and LF inside it removed, CRLF appended.
fn line_bytes(line: &str) -> Bytes {
    let mut clean: String = line.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    clean.push_str("\r\n");
    Bytes::from(clean)
}

/// Why reading stopped.
#[derive(Debug)]
enum End {
    Timeout,
    SessionTooLong,
    Shutdown,
    Closed,
}

/// Whether the session goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// A client's answer to a challenge sent by a `handle_auth` hook.
#[derive(Debug)]
pub enum ChallengeResponse {
    /// The decoded response.
    Response(SecretBytes),
    /// The client sent `*`.
    Cancelled,
    /// The response was not base64.
    Undecodable,
    /// The response line was too long.
    TooLong,
}

/// The connection as a `handle_auth` hook sees it: it can push reply lines and send
/// challenges (aiosmtpd's `push()` and `challenge_auth()`).
pub struct AuthChannel<'a> {
    transport: &'a mut Transport,
    read_timeout: Duration,
}

impl std::fmt::Debug for AuthChannel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthChannel")
    }
}

impl AuthChannel<'_> {
    /// Sends one reply line (without CRLF; CR and LF are removed) and flushes it.
    pub async fn push(&mut self, line: &str) -> std::io::Result<()> {
        self.transport.send(line_bytes(line)).await
    }

    /// Sends `334 <base64(challenge)>` and reads the client's response line.
    pub async fn challenge(&mut self, challenge: &[u8]) -> std::io::Result<ChallengeResponse> {
        use base64::Engine as _;
        self.push(&auth_smtp::challenge_line(challenge)).await?;
        self.transport.codec_mut().set_mode(Mode::SaslResponse);
        let frame = timeout(self.read_timeout, self.transport.next()).await;
        self.transport.codec_mut().set_mode(Mode::Command);
        let line = match frame {
            Ok(Some(Ok(Frame::SaslResponse(Ok(l))))) => l,
            Ok(Some(Ok(Frame::SaslResponse(Err(_))))) => return Ok(ChallengeResponse::TooLong),
            Ok(Some(Err(e))) => return Err(e),
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            _ => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        };
        if &line[..] == b"*" {
            return Ok(ChallengeResponse::Cancelled);
        }
        Ok(
            match base64::engine::general_purpose::STANDARD.decode(&line) {
                Ok(b) => ChallengeResponse::Response(SecretBytes::new(b)),
                Err(_) => ChallengeResponse::Undecodable,
            },
        )
    }
}

pub(crate) struct Conn<H: Handler> {
    shared: Arc<Shared<H>>,
    transport: Transport,
    session: Session,
    envelope: Envelope,
    shutdown: watch::Receiver<bool>,
    /// A BDAT transaction's content so far, and the error that refuses it.
    bdat_body: Option<BodySink>,
    bdat_error: Option<Reply>,
    /// The user named in the AUTH exchange in progress, for the log line of its outcome.
    auth_user: Option<String>,
    /// A credential of the AUTH exchange in progress was refused (counted even if the client
    /// then disconnects).
    auth_refused: bool,
    /// Commands still to be logged by verb only: lines right after an AUTH exchange may be
    /// a client's pipelined credentials.
    quiet: u8,
    /// The TLS session's `tls-exporter` channel binding.
    channel_binding: Option<Vec<u8>>,
    /// A frame read while waiting for the authenticator (to notice a client that hangs up),
    /// handed out by the next read.
    pending: Option<Frame>,
    /// Syntax errors and unknown commands so far.
    errors: u32,
    /// A write failed or timed out; the session ends at the next read.
    dead: bool,
    /// When the message body being received (DATA, or BDAT up to LAST) must be complete.
    body_deadline: Option<tokio::time::Instant>,
    /// Messages accepted on this connection.
    messages: u32,
    /// Commands that did no work so far (NOOP, RSET, VRFY, HELP).
    junk: u32,
    /// When the session must end (checked between commands).
    session_deadline: tokio::time::Instant,
}

/// TLS facts of a finished handshake.
fn tls_info(conn: &rustls::ServerConnection, implicit: bool) -> TlsInfo {
    TlsInfo {
        protocol: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        sni: conn.server_name().map(str::to_owned),
        implicit,
        peer_certificate: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
    }
}

/// The `tls-exporter` channel binding (RFC 9266), defined here for TLS 1.3 only.
fn channel_binding(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(
        vec![0u8; 32],
        smtp_auth::mechanism::TLS_EXPORTER_LABEL,
        None,
    )
    .ok()
}

/// A finished handshake: the stream, its facts and its channel binding.
type Accepted = (BoxIo, TlsInfo, Option<Vec<u8>>);

async fn accept_tls(
    config: Arc<rustls::ServerConfig>,
    io: BoxIo,
    read_timeout: Duration,
    implicit: bool,
) -> Option<Accepted> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match timeout(read_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => {
            let info = tls_info(tls.get_ref().1, implicit);
            let cb = channel_binding(tls.get_ref().1);
            Some((Box::new(tls), info, cb))
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            None
        }
    }
}

pub(crate) async fn run<H: Handler>(
    shared: Arc<Shared<H>>,
    io: BoxIo,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = &shared.config;
    let mut io = io;
    let mut peer = peer;
    if cfg.proxy_protocol {
        match timeout(
            cfg.read_timeout,
            Box::pin(crate::proxy::read_header(&mut io)),
        )
        .await
        {
            Ok(Ok(Some(src))) => peer = src,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::info!(error = %e, "refused connection");
                return;
            }
            Err(_) => return,
        }
    }
    // Per-address connection limit, on the real client address (after PROXY).
    let Some(_slot) = shared.per_ip.acquire(peer.ip(), cfg.max_connections_per_ip) else {
        tracing::warn!(peer = %peer, "refused: too many connections from this address");
        if !cfg.implicit_tls {
            use tokio::io::AsyncWriteExt;
            let _ = io
                .write_all(&replies::too_many_from_address().to_bytes())
                .await;
            let _ = io.shutdown().await;
        }
        return;
    };
    let mut session = Session::new(peer, local);
    let mut cb = None;
    if cfg.implicit_tls {
        let Some(tls) = cfg.tls.clone() else {
            tracing::error!("implicit TLS configured without a TLS configuration");
            return;
        };
        match Box::pin(accept_tls(tls, io, cfg.read_timeout, true)).await {
            Some((tls_io, info, binding)) => {
                io = tls_io;
                session.tls = Some(info);
                cb = binding;
            }
            None => return,
        }
    }
    let mut codec = SmtpCodec::new(cfg.max_line_length, DEFAULT_MAX_SASL_LINE);
    codec.set_parse_options(smtp_proto::ParseOptions {
        lenient_helo: cfg.lenient_helo,
        lenient_paths: cfg.lenient_paths,
        forbid_bare_newline: cfg.forbid_bare_newline,
        ..Default::default()
    });
    let transport = framed(io, codec);
    let mut conn = Conn {
        shared: shared.clone(),
        transport,
        session,
        envelope: Envelope::default(),
        shutdown,
        bdat_body: None,
        bdat_error: None,
        auth_user: None,
        auth_refused: false,
        quiet: 0,
        channel_binding: cb,
        pending: None,
        errors: 0,
        dead: false,
        body_deadline: None,
        messages: 0,
        junk: 0,
        session_deadline: tokio::time::Instant::now() + cfg.max_session_duration,
    };
    tracing::debug!(peer = %conn.session.peer_addr, "connected");
    let started = tokio::time::Instant::now();
    conn.serve().await;
    let _ = flush(&mut conn.transport).await;
    Box::pin(shared.handler.disconnect(&conn.session)).await;
    // The one line per connection.
    tracing::info!(
        peer = %conn.session.peer_addr,
        helo = conn.session.helo_name.as_deref().unwrap_or(""),
        tls = conn.session.tls.is_some(),
        user = conn.session.login_data.as_deref().unwrap_or(""),
        messages = conn.messages,
        auth_failures = conn.session.auth_failures,
        duration_ms = started.elapsed().as_millis() as u64,
        "connection"
    );
}

impl<H: Handler> Conn<H> {
    fn cfg(&self) -> &crate::ServerConfig {
        &self.shared.config
    }

    async fn send(&mut self, reply: Reply) {
        if self.transport.feed(reply).await.is_err() {
            self.dead = true;
        }
    }

    async fn send_line(&mut self, line: &str) {
        if self.transport.feed(line_bytes(line)).await.is_err() {
            self.dead = true;
        }
    }

    /// Flushes unless a complete pipelined command is already waiting (RFC 2920: replies to a
    /// batch go out together).
    async fn flush_if_idle(&mut self) -> std::io::Result<()> {
        let pending_line = matches!(self.transport.codec().mode(), Mode::Command)
            && self.transport.read_buffer().contains(&b'\n');
        if !pending_line {
            flush(&mut self.transport).await?;
        }
        Ok(())
    }

    /// The next frame. `idle` reads (between commands) end on shutdown.
    async fn next_frame(&mut self, idle: bool) -> Result<Frame, End> {
        if let Some(f) = self.pending.take() {
            return Ok(f);
        }
        if self.dead {
            // A write failed or timed out: the client is not reading its replies.
            return Err(End::Closed);
        }
        self.flush_if_idle().await.map_err(|_| End::Closed)?;
        if idle {
            shrink(&mut self.transport);
        }
        let shutting_down = *self.shutdown.borrow();
        if idle && shutting_down {
            return Err(End::Shutdown);
        }
        let mut limit = if shutting_down {
            self.cfg().shutdown_grace.min(self.cfg().read_timeout)
        } else {
            self.cfg().read_timeout
        };
        let now = tokio::time::Instant::now();
        if idle {
            if now >= self.session_deadline {
                return Err(End::SessionTooLong);
            }
            limit = limit.min(self.session_deadline - now);
        }
        if !idle && let Some(deadline) = self.body_deadline {
            // The whole body, not just each read, has a deadline: a client trickling one
            // byte per read timeout cannot hold the session for ever.
            limit = limit.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        }
        let read = timeout(limit, self.transport.next());
        let result = if idle {
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                r = read => r,
                _ = shutdown.wait_for(|s| *s) => return Err(End::Shutdown),
            }
        } else {
            read.await
        };
        match result {
            Err(_) if idle && tokio::time::Instant::now() >= self.session_deadline => {
                Err(End::SessionTooLong)
            }
            Err(_) => Err(End::Timeout),
            Ok(Some(Ok(f))) => Ok(f),
            Ok(_) => Err(End::Closed),
        }
    }

    async fn end(&mut self, end: End) {
        match end {
            End::Timeout => self.send(replies::timeout()).await,
            End::SessionTooLong => self.send(replies::session_too_long()).await,
            End::Shutdown => self.send(replies::shutting_down()).await,
            End::Closed => {}
        }
    }

    async fn serve(&mut self) {
        match Box::pin(self.shared.handler.connect(&self.session)).await {
            Some(r) if !r.code().is_positive() => {
                self.send(r).await;
                return;
            }
            _ => {}
        }
        let greeting = format!("{} {}", self.cfg().hostname, self.cfg().greeting);
        self.send(Reply::simple(220, None, &greeting)).await;
        loop {
            let frame = match self.next_frame(true).await {
                Ok(f) => f,
                Err(e) => return self.end(e).await,
            };
            let flow = match frame {
                Frame::Command(Ok(cmd)) => self.command(cmd).await,
                Frame::Command(Err(e)) => {
                    // Sequencing before syntax (protocol::sequencing): a malformed AUTH after
                    // a successful one is 503, not 501.
                    let verb = self.transport.codec().error_verb();
                    let refused = verb.and_then(|v| {
                        protocol::sequencing(self.cfg(), &self.session, &self.envelope, v)
                    });
                    match refused {
                        Some(r) => {
                            self.send(r).await;
                            Flow::Continue
                        }
                        None => {
                            self.send(e.reply()).await;
                            self.protocol_error().await
                        }
                    }
                }
                // Other frames cannot occur in command mode.
                _ => Flow::Continue,
            };
            if flow == Flow::Close {
                return;
            }
        }
    }

    async fn command(&mut self, cmd: Command) -> Flow {
        if matches!(
            cmd,
            Command::Noop(_) | Command::Rset | Command::Vrfy(_) | Command::Help(_)
        ) {
            self.junk += 1;
            if self.junk > self.cfg().max_junk_commands {
                // Answered as usual, but counted toward max_errors (Postfix's
                // smtpd_junk_command_limit): a client that only keeps its slot busy goes.
                let flow = self.dispatch(cmd).await;
                if flow == Flow::Close {
                    return flow;
                }
                return self.protocol_error().await;
            }
        }
        self.dispatch(cmd).await
    }

    async fn dispatch(&mut self, cmd: Command) -> Flow {
        if self.quiet > 0 {
            // Right after AUTH: a line may be a pipelined credential; log the verb only.
            self.quiet -= 1;
            tracing::debug!(command = cmd.verb(), "command");
        } else {
            tracing::debug!(command = %cmd.public_line(), "command");
        }
        let lmtp = self.cfg().lmtp;
        match cmd {
            Command::Ehlo(h) | Command::Helo(h) if lmtp => {
                let _ = h;
                self.send(replies::lmtp_ehlo()).await;
            }
            Command::Lhlo(_) if !lmtp => self.send(replies::not_lmtp()).await,
            // The larger steps are boxed: an idle connection's task then holds only the
            // small state of waiting for a command, not the largest step's.
            Command::Ehlo(h) | Command::Lhlo(h) => Box::pin(self.greet(h, true)).await,
            Command::Helo(h) => Box::pin(self.greet(h, false)).await,
            Command::Mail { from, params } => Box::pin(self.mail(from, params)).await,
            Command::Rcpt { to, params } => Box::pin(self.rcpt(to, params)).await,
            Command::Data => return Box::pin(self.data()).await,
            Command::Bdat { size, last } => return Box::pin(self.bdat(size, last)).await,
            Command::Rset => {
                self.reset_transaction();
                let r = Box::pin(self.shared.handler.rset(&self.session)).await;
                self.send(r.unwrap_or_else(replies::ok)).await;
            }
            Command::Noop(_) => {
                let r = Box::pin(self.shared.handler.noop(&self.session)).await;
                self.send(r.unwrap_or_else(replies::ok)).await;
            }
            Command::Vrfy(arg) => {
                let r = Box::pin(self.shared.handler.vrfy(&self.session, &arg)).await;
                self.send(r.unwrap_or_else(replies::vrfy)).await;
            }
            Command::Expn(_) => self.send(replies::expn()).await,
            Command::Help(_) => self.send(replies::help()).await,
            Command::Quit => {
                let r = Box::pin(self.shared.handler.quit(&self.session)).await;
                self.send(r.unwrap_or_else(replies::bye)).await;
                return Flow::Close;
            }
            Command::StartTls => return Box::pin(self.starttls()).await,
            Command::Auth {
                mechanism,
                initial_response,
            } => return Box::pin(self.auth(mechanism, initial_response)).await,
            _ => {
                self.send(replies::unknown_command()).await;
                return self.protocol_error().await;
            }
        }
        Flow::Continue
    }

    /// Counts a syntax error or unknown command; past the limit the client is dropped
    /// (a client that only sends garbage is not a mail client).
    async fn protocol_error(&mut self) -> Flow {
        self.errors += 1;
        if self.errors >= self.cfg().max_errors {
            self.send(replies::too_many_errors()).await;
            return Flow::Close;
        }
        Flow::Continue
    }

    fn start_body(&mut self) {
        if self.body_deadline.is_none() {
            self.body_deadline = Some(tokio::time::Instant::now() + self.cfg().max_data_duration);
        }
    }

    fn reset_transaction(&mut self) {
        self.body_deadline = None;
        self.envelope = Envelope::default();
        self.bdat_body = None;
        self.bdat_error = None;
    }

    async fn greet(&mut self, host: Host, extended: bool) {
        let name = host.to_string();
        // RFC 5321 §4.1.4: a greeting resets the transaction like RSET.
        self.reset_transaction();
        if let Some(r) = self.shared.handler.ehlo(&self.session, &name).await
            && !r.code().is_positive()
        {
            self.send(r).await;
            return;
        }
        self.session.helo_name = Some(name);
        self.session.extended = extended;
        let reply = if extended {
            protocol::ehlo_response(self.cfg(), &self.session).to_reply()
        } else {
            Reply::simple(250, None, &self.cfg().hostname.clone())
        };
        self.send(reply).await;
    }

    async fn mail(&mut self, from: smtp_proto::ReversePath, params: smtp_proto::MailParameters) {
        if let Err(r) =
            protocol::check_mail(self.cfg(), &self.session, &self.envelope, &from, &params)
        {
            self.send(r).await;
            return;
        }
        let hook = self
            .shared
            .handler
            .mail(&self.session, &self.envelope, &from, &params)
            .await;
        match hook {
            Some(r) if !r.code().is_positive() => self.send(r).await,
            r => {
                self.envelope.auth = params.auth.clone();
                self.envelope.mail_from = Some(from);
                self.envelope.mail_params = params;
                self.send(r.unwrap_or_else(replies::sender_ok)).await;
            }
        }
    }

    async fn rcpt(&mut self, to: smtp_proto::ForwardPath, params: smtp_proto::RcptParameters) {
        if let Err(r) = protocol::check_rcpt(self.cfg(), &self.envelope, &to, &params) {
            self.send(r).await;
            return;
        }
        let hook = self
            .shared
            .handler
            .rcpt(&self.session, &self.envelope, &to, &params)
            .await;
        match hook {
            Some(r) if !r.code().is_positive() => self.send(r).await,
            r => {
                self.envelope.rcpt_to.push(to);
                self.envelope.rcpt_params.push(params);
                self.send(r.unwrap_or_else(replies::recipient_ok)).await;
            }
        }
    }

    async fn data(&mut self) -> Flow {
        if let Err(r) = protocol::check_data(&self.envelope) {
            self.send(r).await;
            return Flow::Continue;
        }
        // RFC 2920 §3.1: the client must wait for the 354. Bytes already waiting behind the
        // DATA line were sent without it (Postfix: "improper command pipelining after DATA").
        let early = !self.transport.read_buffer().is_empty();
        self.send(replies::start_data()).await;
        self.start_body();
        self.transport.read_buffer_mut().reserve(BODY_READ_BUFFER);
        let decoder = DataDecoder::new(self.cfg().max_message_size, self.cfg().bare_policy);
        self.transport.codec_mut().set_mode(Mode::Data(decoder));
        let target = Box::pin(
            self.shared
                .handler
                .body_target(&self.session, &self.envelope),
        )
        .await;
        let mut body = self.body_sink().with_target(target);
        let mut spool_error = None;
        let end = loop {
            match self.next_frame(false).await {
                Ok(Frame::DataChunk(c)) => {
                    // After a spool error the rest is read and dropped, so the stream stays
                    // in sync, and the message is refused at its end.
                    if spool_error.is_none()
                        && let Err(e) = body.push(&c).await
                    {
                        spool_error = Some(e);
                    }
                }
                Ok(Frame::DataEnd(end)) => break end,
                Ok(_) => {}
                Err(e) => {
                    self.end(e).await;
                    return Flow::Close;
                }
            }
        };
        if let Some(e) = end.error() {
            tracing::info!(size = end.size, reason = %e, "message refused");
            self.reset_transaction();
            self.send(e.reply()).await;
            return Flow::Continue;
        }
        if early && !self.cfg().allow_pipelined_body {
            tracing::info!(
                peer = %self.session.peer_addr,
                size = end.size,
                "improper command pipelining after DATA: message refused"
            );
            self.reset_transaction();
            self.send(replies::pipelined_body()).await;
            return Flow::Continue;
        }
        self.finish_body(body, spool_error).await;
        Flow::Continue
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let refused = protocol::check_bdat(&self.envelope).err();
        if refused.is_none() {
            self.envelope.chunked = true;
        }
        // The chunk's octets are read in every case, so the stream stays in sync.
        self.start_body();
        self.transport.read_buffer_mut().reserve(BODY_READ_BUFFER);
        self.transport.codec_mut().set_mode(Mode::bdat(size));
        let max = self.cfg().max_message_size;
        loop {
            match self.next_frame(false).await {
                Ok(Frame::BdatChunk(c)) => {
                    if refused.is_some() || self.bdat_error.is_some() {
                        continue;
                    }
                    let sink = match self.bdat_body.take() {
                        Some(s) => s,
                        None => {
                            let target = Box::pin(
                                self.shared
                                    .handler
                                    .body_target(&self.session, &self.envelope),
                            )
                            .await;
                            self.body_sink().with_target(target)
                        }
                    };
                    if sink.len() + c.len() as u64 > max {
                        self.bdat_error = Some(replies::size_exceeded());
                    } else {
                        let mut sink = sink;
                        match sink.push(&c).await {
                            Ok(()) => self.bdat_body = Some(sink),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot spool the message");
                                self.bdat_error = Some(replies::local_error());
                            }
                        }
                    }
                }
                Ok(Frame::BdatEnd) => break,
                Ok(_) => {}
                Err(e) => {
                    self.end(e).await;
                    return Flow::Close;
                }
            }
        }
        if let Some(r) = refused {
            self.body_deadline = None;
            self.send(r).await;
            return Flow::Continue;
        }
        if !last {
            match self.bdat_error.clone() {
                Some(r) => self.send(r).await,
                None => self.send(replies::bdat_chunk(size)).await,
            }
            return Flow::Continue;
        }
        if let Some(r) = self.bdat_error.take() {
            self.reset_transaction();
            self.send(r).await;
            return Flow::Continue;
        }
        let body = match self.bdat_body.take() {
            Some(b) => b,
            None => self.body_sink(), // BDAT 0 LAST: an empty message
        };
        self.finish_body(body, None).await;
        Flow::Continue
    }

    fn body_sink(&self) -> BodySink {
        BodySink::new(
            self.cfg().spool_threshold,
            self.cfg().spool_dir.clone(),
            self.shared.budget.clone(),
        )
    }

    /// Hands a received body to the handler, or refuses the message (451) when it could not
    /// be stored.
    async fn finish_body(&mut self, sink: BodySink, error: Option<std::io::Error>) {
        let stored = match error {
            Some(e) => Err(e),
            None => sink.finish().await,
        };
        match stored {
            Ok((body, hold)) => {
                self.deliver(body).await;
                drop(hold);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot spool the message: refused");
                self.reset_transaction();
                self.send(replies::local_error()).await;
            }
        }
    }

    async fn deliver(&mut self, body: Body) {
        self.envelope.body = body;
        let size = self.envelope.body.len();
        if self.cfg().lmtp {
            let n = self.envelope.rcpt_to.len();
            let mut replies = self
                .shared
                .handler
                .data_lmtp(&self.session, &self.envelope)
                .await;
            // RFC 2033 §4.2: exactly one reply per accepted recipient.
            replies.resize(n, replies::local_error());
            if replies.iter().any(|r| r.code().class() == 2) {
                self.messages += 1;
            }
            for r in replies {
                self.send(r).await;
            }
        } else {
            let r = self
                .shared
                .handler
                .data(&self.session, &self.envelope)
                .await;
            tracing::debug!(
                size,
                recipients = self.envelope.rcpt_to.len(),
                code = r.code().get(),
                "message"
            );
            if r.code().class() == 2 {
                self.messages += 1;
            }
            self.send(r).await;
        }
        self.reset_transaction();
    }

    async fn starttls(&mut self) -> Flow {
        let Some(tls) = self.cfg().tls.clone() else {
            self.send(replies::tls_unavailable()).await;
            return Flow::Continue;
        };
        if self.session.tls.is_some() {
            self.send(replies::tls_active()).await;
            return Flow::Continue;
        }
        self.send(replies::ready_tls()).await;
        if flush(&mut self.transport).await.is_err() {
            return Flow::Close;
        }
        let placeholder: BoxIo = Box::new(tokio::io::duplex(1).0);
        let old = std::mem::replace(
            &mut self.transport,
            Framed::new(placeholder, SmtpCodec::default()),
        );
        let parts = old.into_parts();
        if !parts.read_buf.is_empty() {
            // CVE-2011-0411: anything pipelined after STARTTLS was sent in the clear and must
            // not be executed inside the TLS session.
            tracing::warn!(
                octets = parts.read_buf.len(),
                "discarded data pipelined after STARTTLS"
            );
        }
        let read_timeout = self.cfg().read_timeout;
        let Some((io, info, binding)) = accept_tls(tls, parts.io, read_timeout, false).await else {
            return Flow::Close;
        };
        self.channel_binding = binding;
        let mut codec = parts.codec;
        codec.set_mode(Mode::Command);
        self.transport = framed(io, codec);
        self.session.reset_after_tls();
        self.session.tls = Some(info);
        self.reset_transaction();
        Flow::Continue
    }

    fn session_info(&self) -> SessionInfo {
        SessionInfo {
            remote_ip: Some(self.session.peer_addr.ip()),
            helo_name: self.session.helo_name.clone(),
            server_name: self.cfg().hostname.clone(),
            external_identity: match (&self.cfg().external_identity, &self.session.tls) {
                (
                    Some(map),
                    Some(TlsInfo {
                        peer_certificate: Some(cert),
                        ..
                    }),
                ) => map(cert),
                _ => None,
            },
            tls: self.session.tls.is_some(),
            channel_binding: self.channel_binding.clone().map(smtp_auth::Secret::new),
        }
    }

    async fn auth(&mut self, mechanism: Mechanism, initial: Option<InitialResponse>) -> Flow {
        if let Err(r) = protocol::check_auth(self.cfg(), &self.session, &self.envelope) {
            self.send(r).await;
            return Flow::Continue;
        }
        let ip = self.session.peer_addr.ip();
        // Whatever happens next, the lines that follow may be credentials.
        self.quiet = QUIET_AFTER_AUTH;
        if self.shared.limiter.ip_blocked(ip) {
            tracing::warn!(remote_ip = %ip, "AUTH refused: too many failures from this address");
            self.send(replies::too_many_auth_failures()).await;
            return Flow::Close;
        }
        let ir = initial.as_ref().map(|r| r.expose_secret());
        let _ = flush(&mut self.transport).await;
        let read_timeout = self.cfg().read_timeout;
        let hooked = {
            let mut channel = AuthChannel {
                transport: &mut self.transport,
                read_timeout,
            };
            self.shared
                .handler
                .handle_auth(&mut channel, &self.session, mechanism.as_str(), ir)
                .await
        };
        let result = match hooked {
            Some(r) => r,
            None => match self.run_exchange(mechanism.as_str(), ir).await {
                Some(r) => r,
                None => return Flow::Close,
            },
        };
        self.session.auth_progress = smtp_auth::AuthProgress::None;
        self.apply_auth(mechanism.as_str(), result).await
    }

    /// Runs the registry's mechanism; `None` when the connection ended (a refused credential
    /// is then still counted).
    async fn run_exchange(&mut self, mechanism: &str, ir: Option<&[u8]>) -> Option<AuthResult> {
        self.auth_refused = false;
        let result = self.drive_exchange(mechanism, ir).await;
        if result.is_none() && self.auth_refused {
            // The client went away after its credential was refused (curl does, at the
            // XOAUTH2 error challenge): count it as the failure it was.
            self.count_failure(mechanism, AuthStatus::Invalid).await;
        }
        result
    }

    async fn drive_exchange(&mut self, mechanism: &str, ir: Option<&[u8]>) -> Option<AuthResult> {
        let mut ex = AuthExchange::new(self.cfg().registry.clone(), self.session_info())
            .with_proxy_authorization(self.cfg().proxy_authorization);
        let mut authenticator_result: Option<AuthResult> = None;
        let mut step = ex.start(mechanism, ir).ok()?;
        let mut result = loop {
            self.session.auth_progress = ex.progress();
            let next = match step {
                Step::Challenge(c) => {
                    self.send_line(&auth_smtp::challenge_line(&c)).await;
                    self.transport.codec_mut().set_mode(Mode::SaslResponse);
                    let frame = self.next_frame(false).await;
                    self.transport.codec_mut().set_mode(Mode::Command);
                    match frame {
                        Ok(Frame::SaslResponse(Ok(line))) => ex.respond(&line),
                        Ok(Frame::SaslResponse(Err(_))) => {
                            break AuthResult::failure(AuthStatus::TooLong);
                        }
                        Ok(_) => break AuthResult::failure(AuthStatus::Malformed),
                        Err(e) => {
                            self.end(e).await;
                            return None;
                        }
                    }
                }
                Step::Verify(req) => {
                    self.auth_user = Some(req.username.clone());
                    let r = if self.shared.limiter.user_locked(&req.username) {
                        self.locked_out(&req.username)
                    } else {
                        match self.shared.authenticator.clone() {
                            Some(a) => {
                                let call = a.authenticate(&self.session, req);
                                match self.await_unless_gone(call).await {
                                    Some(Ok(r)) => r,
                                    Some(Err(_)) => {
                                        tracing::warn!("authenticator timed out");
                                        AuthResult::failure(AuthStatus::TempFail)
                                    }
                                    // The client hung up while its credential was being
                                    // checked: the check is abandoned (a queued one never
                                    // runs).
                                    None => return None,
                                }
                            }
                            // No authenticator: every attempt is refused (aiosmtpd's rule).
                            None => AuthResult::failure(AuthStatus::Invalid),
                        }
                    };
                    let decision = if r.success {
                        smtp_auth::AuthDecision::Ok
                    } else if r.status == AuthStatus::TempFail {
                        smtp_auth::AuthDecision::Failure
                    } else {
                        self.auth_refused = true;
                        smtp_auth::AuthDecision::Invalid
                    };
                    authenticator_result = Some(r);
                    ex.decide(decision)
                }
                Step::Lookup(req) => {
                    self.auth_user = Some(req.username.clone());
                    let found = if self.shared.limiter.user_locked(&req.username) {
                        let r = self.locked_out(&req.username);
                        authenticator_result = Some(r);
                        smtp_auth::LookupResult::Failure
                    } else {
                        match &self.shared.authenticator {
                            Some(a) => {
                                let call = a.lookup(&self.session, req);
                                timeout(self.cfg().auth_timeout, call)
                                    .await
                                    .unwrap_or(smtp_auth::LookupResult::Failure)
                            }
                            None => smtp_auth::LookupResult::NotFound,
                        }
                    };
                    ex.supply(found)
                }
                Step::Done(r) => break r,
            };
            step = next.ok()?;
        };
        // The authenticator's own message and data take precedence.
        if let Some(a) = authenticator_result {
            if a.message.is_some() {
                result.message = a.message;
            }
            if result.success && a.auth_data.is_some() {
                result.auth_data = a.auth_data;
            }
            if a.handled {
                tracing::warn!(
                    "an authenticator returned handled=true, but it cannot reply itself: \
                     the server sends the reply"
                );
            }
        }
        if result.handled {
            // Only a handle_auth hook holds the connection and can have replied. A mechanism
            // or authenticator that claims it did would leave the client without an answer.
            tracing::warn!("a mechanism returned handled=true: the server sends the reply");
            result.handled = false;
        }
        Some(result)
    }

    /// Awaits `call` within `auth_timeout` while watching the connection: `None` when the
    /// client hangs up first (the call is dropped). A line the client sends meanwhile is kept
    /// for the next read.
    async fn await_unless_gone<T>(
        &mut self,
        call: crate::auth::BoxFuture<T>,
    ) -> Option<Result<T, tokio::time::error::Elapsed>> {
        let call = timeout(self.cfg().auth_timeout, call);
        tokio::pin!(call);
        loop {
            tokio::select! {
                r = &mut call => return Some(r),
                f = self.transport.next(), if self.pending.is_none() && !self.dead => match f {
                    Some(Ok(frame)) => self.pending = Some(frame),
                    _ => {
                        tracing::info!("client disconnected while its credential was checked");
                        return None;
                    }
                },
            }
        }
    }

    /// The answer for a user past `max_auth_failures_per_user`: 454, credential unchecked.
    fn locked_out(&self, user: &str) -> AuthResult {
        tracing::warn!(
            remote_ip = %self.session.peer_addr.ip(),
            user,
            "AUTH refused: too many failures for this user"
        );
        AuthResult::failure(AuthStatus::TempFail)
    }

    async fn apply_auth(&mut self, mechanism: &str, result: AuthResult) -> Flow {
        let login = result
            .auth_data
            .as_ref()
            .and_then(|d| d.login())
            .map(str::to_owned);
        if let Some(line) = auth_smtp::reply_line(&result) {
            self.send_line(&line).await;
        }
        if result.success {
            tracing::info!(
                remote_ip = %self.session.peer_addr.ip(),
                mechanism,
                user = login.as_deref().unwrap_or(""),
                success = true,
                "AUTH"
            );
            self.auth_user = None;
            self.session.authenticated = true;
            self.session.login_data = login;
            self.session.auth_data = result.auth_data;
            self.session.auth_mechanism = Some(mechanism.to_owned());
            return Flow::Continue;
        }
        self.count_failure(mechanism, result.status).await
    }

    /// Logs a failed AUTH and counts it: per connection, per address and, for a refused
    /// credential, per user; then the delay, and the 421 past the per-connection limit.
    async fn count_failure(&mut self, mechanism: &str, status: AuthStatus) -> Flow {
        let ip = self.session.peer_addr.ip();
        let attempted = self.auth_user.take();
        tracing::info!(
            remote_ip = %ip,
            mechanism,
            user = attempted.as_deref().unwrap_or(""),
            success = false,
            status = ?status,
            "AUTH"
        );
        if matches!(status, AuthStatus::TempFail | AuthStatus::UnknownMechanism) {
            return Flow::Continue;
        }
        self.session.auth_failures += 1;
        let user = attempted
            .as_deref()
            .filter(|_| status == AuthStatus::Invalid);
        self.shared.limiter.record_failure(ip, user);
        let _ = flush(&mut self.transport).await;
        let delay = self.cfg().auth_failure_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.session.auth_failures >= self.cfg().max_auth_failures {
            self.send(replies::too_many_auth_failures()).await;
            return Flow::Close;
        }
        Flow::Continue
    }
}

/// Commands logged by verb only after an AUTH command (LOGIN sends two credential lines).
const QUIET_AFTER_AUTH: u8 = 3;
