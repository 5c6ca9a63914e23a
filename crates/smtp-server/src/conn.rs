//! The tokio driver of one connection: it reads into the sans-IO [`Machine`], writes what it
//! says to send, sleeps until its deadlines, and calls the [`Handler`], the authenticator and
//! the TLS acceptor when it asks. Every protocol rule lives in [`crate::machine`]; what lives
//! here is I/O: the PROXY header, the per-address connection limit, TLS, shutdown, message
//! storage and the hooks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::SinkExt;
use smtp_auth::sasl::Response;
use smtp_auth::{AuthDecision, LookupResult};
use smtp_proto::codec::SmtpCodec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::Handler;
use crate::body::{BodySink, BudgetHold};
use crate::channel::{AuthChannel, ChannelDriver, ChannelFuture};
use crate::machine::{
    Call, Event, IDLE_READ_BUFFER, MAX_READ_AHEAD, Machine, SHRINK_ABOVE, WrongState,
};
use crate::replies;
use crate::server::Shared;
use crate::session::TlsInfo;

/// Any byte stream the server can speak over (TCP, TLS over TCP, a test duplex).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub(crate) type BoxIo = Box<dyn Io>;

/// The driver's clock, as the machine takes it (tokio's, so paused test time applies).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: std::time::Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
}

/// Writes and flushes (a TLS stream holds writes until flushed).
async fn write(io: &mut BoxIo, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// The connection as the driver reads and writes it: the stream framed by the SMTP codec,
/// whose mode follows the machine's.
pub(crate) type Conn = Framed<BoxIo, SmtpCodec>;

/// Frames `io` with a codec configured as the machine's, and the small buffers of an idle
/// connection: the read buffer of one command line (it grows inside a message body and is
/// given back after it), and a write buffer for the greeting and an EHLO reply (it grows for
/// a larger batch of replies; the machine's own output buffer holds them first).
fn framed(io: BoxIo, machine: &Machine) -> Conn {
    let mut conn = Framed::with_capacity(io, machine.new_codec(), IDLE_READ_BUFFER);
    // 2 KiB less per idle connection than the read buffer's size (`cargo xtask soak`).
    *conn.write_buffer_mut() = BytesMut::with_capacity(WRITE_BUFFER);
    conn
}

/// The framing's write buffer at the start: the greeting and an EHLO reply fit.
const WRITE_BUFFER: usize = 256;

/// Takes the connection out of `slot`, leaving a placeholder that is never read.
fn take_conn(slot: &mut Conn) -> Conn {
    let placeholder: BoxIo = Box::new(tokio::io::duplex(1).0);
    std::mem::replace(
        slot,
        Framed::with_capacity(placeholder, SmtpCodec::default(), 0),
    )
}

/// Sends the machine's output through the framing's write buffer and flushes it. The replies
/// are already encoded by the machine (`Reply::encode`, what the codec's encoders do), so
/// they are appended as the codec's `Encoder<Bytes>` would, without an owned copy.
async fn send(conn: &mut Conn, machine: &mut Machine) -> std::io::Result<()> {
    conn.write_buffer_mut().extend_from_slice(machine.output());
    machine.sent();
    SinkExt::<bytes::Bytes>::flush(conn).await
}

/// The framing's read buffer, lent out for a read and put back when dropped (also when a
/// read is cancelled by a timeout or a shutdown: no octet is lost).
struct Lent<'a> {
    conn: &'a mut Conn,
    buf: BytesMut,
}

impl<'a> Lent<'a> {
    fn new(conn: &'a mut Conn) -> Self {
        let buf = std::mem::take(conn.read_buffer_mut());
        Self { conn, buf }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        *self.conn.read_buffer_mut() = std::mem::take(&mut self.buf);
    }
}

/// Reads what the client sent into the framing's read buffer, sized `want` for what the
/// machine reads now ([`Machine::read_capacity`]): false when the client is gone. The machine decodes it with the framing's codec
/// at its next step ([`next_event`]): each frame's mode depends on the frame before it, so
/// frames are decoded one by one as the machine takes them, in place. Cancel-safe.
async fn read(conn: &mut Conn, want: usize) -> bool {
    let mut lent = Lent::new(conn);
    let buf = &mut lent.buf;
    if want == IDLE_READ_BUFFER && buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        // A message body is over: its buffer goes back.
        *buf = BytesMut::with_capacity(IDLE_READ_BUFFER);
    } else if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
    matches!(lent.conn.get_mut().read_buf(&mut lent.buf).await, Ok(n) if n > 0)
}

/// The machine's next event, with the framing's codec and read buffer lent to it, so it
/// decodes every frame already buffered (the buffer is swapped out and back: no copy, no
/// allocation).
fn next_event(conn: &mut Conn, machine: &mut Machine) -> Event {
    let mut buf = std::mem::take(conn.read_buffer_mut());
    let event = machine.next_framed(conn.codec_mut(), &mut buf);
    *conn.read_buffer_mut() = buf;
    event
}

/// Reads octets ahead while a hook runs (to notice a client that hangs up): false when the
/// client is gone.
async fn read_ahead(conn: &mut Conn) -> bool {
    let mut lent = Lent::new(conn);
    matches!(lent.conn.get_mut().read_buf(&mut lent.buf).await, Ok(n) if n > 0)
}

/// Reads until input arrives, the deadline passes or the server shuts down (passed on to the
/// machine once).
async fn wait_input(
    conn: &mut Conn,
    machine: &mut Machine,
    shutdown: &mut Option<watch::Receiver<bool>>,
    deadline: std::time::Instant,
) {
    let signal = async {
        match shutdown.as_mut() {
            Some(rx) => {
                if rx.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    let want = machine.read_capacity();
    let stop = tokio::select! {
        ok = read(conn, want) => {
            if !ok {
                machine.input_closed();
            }
            false
        }
        _ = sleep_until(deadline) => false,
        _ = signal => true,
    };
    if stop {
        *shutdown = None;
        machine.shutdown();
    }
}

/// The driver's side of a `handle_auth` hook's [`AuthChannel`]: the connection and its
/// machine, borrowed for the hook.
struct HookIo<'a> {
    conn: &'a mut Conn,
    machine: &'a mut Machine,
    shutdown: &'a mut Option<watch::Receiver<bool>>,
}

fn wrong_state(e: WrongState) -> std::io::Error {
    std::io::Error::other(e)
}

impl ChannelDriver for HookIo<'_> {
    fn push<'a>(&'a mut self, line: &'a str) -> ChannelFuture<'a, ()> {
        Box::pin(async move {
            self.machine.auth_push(line).map_err(wrong_state)?;
            send(self.conn, self.machine).await
        })
    }

    fn challenge<'a>(&'a mut self, challenge: &'a [u8]) -> ChannelFuture<'a, Response> {
        Box::pin(async move {
            self.machine
                .auth_challenge(challenge)
                .map_err(wrong_state)?;
            loop {
                self.machine.now(now());
                match next_event(self.conn, self.machine) {
                    Event::Send => send(self.conn, self.machine).await?,
                    Event::Wait { deadline, read: r } => {
                        if r {
                            wait_input(self.conn, self.machine, self.shutdown, deadline).await;
                        } else {
                            sleep_until(deadline).await;
                        }
                    }
                    Event::AuthResponse(r) => return Ok(r),
                    // Timed out or gone: the machine already sent what it had to (a 421 on a
                    // timeout) and the session is over.
                    _ => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                }
            }
        })
    }
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
    observer: Option<&dyn crate::Observer>,
) -> Option<Accepted> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let done = timeout(read_timeout, acceptor.accept(io)).await;
    if let Some(o) = observer {
        o.tls_handshake(matches!(done, Ok(Ok(_))));
    }
    match done {
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

/// Serves one connection to its end: PROXY header, per-address limit, implicit TLS, then the
/// session, the disconnect hook and the one log line per connection.
pub(crate) async fn run<H: Handler>(
    shared: &Shared<H>,
    io: BoxIo,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: Option<watch::Receiver<bool>>,
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
        if let Some(o) = &cfg.observer {
            o.connection_refused(crate::Refusal::PerAddress);
        }
        if !cfg.implicit_tls {
            let _ = write(&mut io, &replies::too_many_from_address().to_bytes()).await;
            let _ = io.shutdown().await;
        }
        return;
    };
    let started = tokio::time::Instant::now();
    // Boxed: the session's state stays put while the task's future moves and waits.
    let mut machine = Box::new(Machine::new(cfg.clone(), peer, local, now()).with_frames());
    if cfg.implicit_tls {
        let Some(tls) = cfg.tls.clone() else {
            tracing::error!("implicit TLS configured without a TLS configuration");
            return;
        };
        match Box::pin(accept_tls(
            tls,
            io,
            cfg.read_timeout,
            true,
            cfg.observer.as_deref(),
        ))
        .await
        {
            Some((tls_io, info, binding)) => {
                io = tls_io;
                machine.set_tls(info, binding);
            }
            None => return,
        }
    }
    tracing::debug!(peer = %peer, "connected");
    if let Some(o) = &cfg.observer {
        o.connection_opened();
    }
    let mut driver = Driver {
        shared,
        conn: Box::new(framed(io, &machine)),
        machine,
        shutdown,
        sink: None,
        observer: None,
        hold: None,
    };
    driver.serve().await;
    let _ = driver.conn.get_mut().shutdown().await;
    if let Some(o) = &cfg.observer {
        o.connection_closed();
    }
    let session = driver.machine.session();
    Box::pin(shared.handler.disconnect(session)).await;
    // The one line per connection.
    tracing::info!(
        peer = %session.peer_addr,
        helo = session.helo_name.as_deref().unwrap_or(""),
        tls = session.tls.is_some(),
        user = session.login_data.as_deref().unwrap_or(""),
        messages = driver.machine.messages(),
        auth_failures = session.auth_failures,
        duration_ms = started.elapsed().as_millis() as u64,
        "connection"
    );
}

struct Driver<'s, H: Handler> {
    shared: &'s Shared<H>,
    /// Boxed like the machine: the task's future stays small (it is moved when spawned).
    conn: Box<Conn>,
    machine: Box<Machine>,
    /// The server's shutdown signal (until it fired and was passed on).
    shutdown: Option<watch::Receiver<bool>>,
    /// Where the message being received is stored.
    sink: Option<BodySink>,
    /// The handler's observer of the message being received.
    observer: Option<Box<dyn crate::BodyObserver>>,
    /// The memory budget a delivered message holds until the DATA hook is done with it.
    hold: Option<BudgetHold>,
}

impl<H: Handler> Driver<'_, H> {
    async fn serve(&mut self) {
        loop {
            self.machine.now(now());
            match next_event(&mut self.conn, &mut self.machine) {
                Event::Send => {
                    if send(&mut self.conn, &mut self.machine).await.is_err() {
                        // The client is not reading its replies.
                        return;
                    }
                }
                Event::Wait { deadline, read: r } => {
                    if r {
                        wait_input(
                            &mut self.conn,
                            &mut self.machine,
                            &mut self.shutdown,
                            deadline,
                        )
                        .await;
                    } else {
                        sleep_until(deadline).await;
                    }
                }
                Event::Call(call) => {
                    if let Err(e) = Box::pin(self.call(call)).await {
                        tracing::error!(error = %e, "session state");
                    }
                }
                Event::MessageStart => {
                    let m = &self.machine;
                    self.observer = self.shared.handler.body_observer(m.session(), m.envelope());
                    let target =
                        Box::pin(self.shared.handler.body_target(m.session(), m.envelope())).await;
                    self.sink = Some(self.body_sink().with_target(target));
                }
                Event::MessageChunk(c) => {
                    if let Some(o) = self.observer.as_mut() {
                        o.update(&c);
                    }
                    if let Some(sink) = self.sink.as_mut()
                        && let Err(e) = sink.push(&c).await
                    {
                        tracing::error!(error = %e, "cannot spool the message");
                        self.sink = None;
                        self.machine.storage_failed();
                    }
                }
                Event::MessageDiscard => {
                    self.sink = None;
                    self.observer = None;
                }
                // A call left unanswered because its deadline passed (the watch gave up):
                // the machine answers for it once the clock is there.
                Event::Pending => match self.machine.deadline() {
                    Some(d) => sleep_until(d).await,
                    None => return,
                },
                // Only inside a handle_auth hook (AuthChannel).
                Event::AuthResponse(_) | Event::Close => return,
            }
        }
    }

    fn body_sink(&self) -> BodySink {
        let cfg = &self.shared.config;
        BodySink::new(
            cfg.spool_threshold,
            cfg.spool.clone(),
            self.shared.budget.clone(),
        )
    }

    async fn call(&mut self, call: Call) -> Result<(), WrongState> {
        let shared = self.shared;
        let h = &shared.handler;
        let m = &mut self.machine;
        match call {
            Call::Connect => {
                let r = h.connect(m.session()).await;
                m.answer(r)
            }
            Call::Hello { .. } => {
                let r = h
                    .ehlo(m.session(), m.hello_name().unwrap_or_default())
                    .await;
                m.answer(r)
            }
            Call::Mail => {
                let r = match m.mail_request() {
                    Some((from, params)) => h.mail(m.session(), m.envelope(), from, params).await,
                    None => None,
                };
                m.answer(r)
            }
            Call::Rcpt => {
                let r = match m.rcpt_request() {
                    Some((to, params)) => h.rcpt(m.session(), m.envelope(), to, params).await,
                    None => None,
                };
                m.answer(r)
            }
            Call::Rset => {
                let r = h.rset(m.session()).await;
                m.answer(r)
            }
            Call::Noop => {
                let r = h.noop(m.session()).await;
                m.answer(r)
            }
            Call::Vrfy(arg) => {
                let r = h.vrfy(m.session(), &arg).await;
                m.answer(r)
            }
            Call::Quit => {
                let r = h.quit(m.session()).await;
                m.answer(r)
            }
            Call::StoreMessage => {
                let stored = match self.sink.take() {
                    Some(sink) => match sink.finish().await {
                        Ok((body, hold)) => {
                            self.hold = hold;
                            Some(body)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot spool the message");
                            None
                        }
                    },
                    None => None,
                };
                let observed = self.observer.take().map(|mut o| {
                    o.finish();
                    std::sync::Arc::from(o)
                });
                self.machine.answer_stored_observed(stored, observed)
            }
            Call::Data => {
                let r = h.data(m.session(), m.envelope()).await;
                self.hold = None;
                self.machine.answer_data(r)
            }
            Call::DataLmtp => {
                let r = h.data_lmtp(m.session(), m.envelope()).await;
                self.hold = None;
                self.machine.answer_lmtp(r)
            }
            Call::Auth {
                mechanism,
                initial_response,
            } => {
                // The hook holds the connection; it sees the session as it was at AUTH.
                let session = m.session().clone();
                let ir = initial_response.as_ref().map(|r| r.expose_secret());
                let mut hook_io = HookIo {
                    conn: &mut self.conn,
                    machine: &mut self.machine,
                    shutdown: &mut self.shutdown,
                };
                let mut channel = AuthChannel::new(&mut hook_io);
                let r = h.handle_auth(&mut channel, &session, &mechanism, ir).await;
                match self.machine.answer_auth(r) {
                    // The session ended inside the hook (timeout, hang-up).
                    Err(_) if self.machine.is_closed() => Ok(()),
                    other => other,
                }
            }
            Call::Verify(request) => {
                let Some(a) = shared.authenticator.clone() else {
                    // No authenticator: every attempt is refused (aiosmtpd's rule).
                    return m.answer_verify(AuthDecision::Invalid.into());
                };
                let call = a.authenticate(m.session(), request);
                match self.watch(call).await {
                    Some(r) => self.machine.answer_verify(r),
                    None => Ok(()),
                }
            }
            Call::Lookup(request) => {
                let Some(a) = shared.authenticator.clone() else {
                    return m.answer_lookup(LookupResult::NotFound);
                };
                let call = a.lookup(m.session(), request);
                match self.watch(call).await {
                    Some(r) => self.machine.answer_lookup(r),
                    None => Ok(()),
                }
            }
            Call::StartTls => {
                let Some(tls) = shared.config.tls.clone() else {
                    return m.tls_failed();
                };
                // The framing is taken apart: the stream goes into TLS, and the octets it still
                // holds were sent in the clear behind STARTTLS (CVE-2011-0411): dropped.
                let parts = take_conn(&mut self.conn).into_parts();
                if !parts.read_buf.is_empty() {
                    tracing::warn!(
                        target: "smtp_server::machine",
                        octets = parts.read_buf.len(),
                        "discarded data pipelined after STARTTLS"
                    );
                }
                let io = parts.io;
                let read_timeout = shared.config.read_timeout;
                match accept_tls(
                    tls,
                    io,
                    read_timeout,
                    false,
                    shared.config.observer.as_deref(),
                )
                .await
                {
                    Some((io, info, binding)) => {
                        *self.conn = framed(io, &self.machine);
                        self.machine.tls_started(info, binding)
                    }
                    None => self.machine.tls_failed(),
                }
            }
        }
    }

    /// Awaits an AUTH call until the machine's deadline while watching the connection: `None`
    /// when the deadline passed or the client hung up first (the call is dropped, so a queued
    /// check never runs; the machine decides what that means at its next step).
    async fn watch<T>(&mut self, call: crate::auth::BoxFuture<T>) -> Option<T> {
        let deadline = self.machine.deadline();
        let expiry = async {
            match deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(call);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                r = &mut call => return Some(r),
                _ = &mut expiry => return None,
                ok = read_ahead(&mut self.conn), if self.conn.read_buffer().len() < MAX_READ_AHEAD => {
                    if !ok {
                        self.machine.input_closed();
                        return None;
                    }
                }
            }
        }
    }
}
