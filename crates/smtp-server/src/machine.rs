//! The SMTP session as a state machine with no runtime, no clock and no I/O (sans-IO, like
//! `smtp_auth::AuthExchange`, quinn-proto or rustls' unbuffered API).
//!
//! A [`Machine`] owns every protocol rule of one connection: command sequencing, limits, the
//! per-connection AUTH failure count and delay, BDAT reassembly and its size limit, LMTP's one
//! reply per recipient, pipelining flush points, timeouts and the framing mode. Its driver only
//! moves bytes and time in and acts on what [`Machine::next`] asks for:
//!
//! - [`Machine::enqueue_input`] (or [`Machine::input_buffer`] for reading in place) feeds what
//!   the client sent, [`Machine::input_closed`] says it hung up;
//! - [`Machine::now`] passes the time in (the machine never reads a clock);
//! - [`Machine::next`] returns an [`Event`]: bytes to send, a [`Call`] to a hook whose answer
//!   goes back through a typed method ([`Machine::answer`], [`Machine::answer_data`],
//!   [`Machine::answer_verify`], ...), a piece of message body to store, a deadline to wait
//!   for (reading or not), or the end of the session.
//!
//! Answering in the wrong state is an error ([`WrongState`]), never a panic. The tokio server
//! in this crate is one driver; `examples/blocking.rs` is another (std::net, one thread per
//! connection).
//!
//! ```
//! use std::time::Instant;
//! use smtp_server::ServerConfig;
//! use smtp_server::machine::{Call, Event, Machine};
//!
//! let now = Instant::now();
//! let mut m = Machine::new(ServerConfig::default().into(), "127.0.0.1:50000".parse().unwrap(),
//!     "127.0.0.1:25".parse().unwrap(), now);
//! assert!(matches!(m.next(), Event::Call(Call::Connect)));
//! m.answer(None).unwrap(); // the connect hook accepts
//! match m.next() {
//!     Event::Send => assert_eq!(m.output(), b"220 localhost ESMTP ready\r\n"),
//!     other => panic!("{other:?}"),
//! }
//! m.sent();
//! assert!(matches!(m.next(), Event::Wait { read: true, .. }));
//! m.enqueue_input(b"QUIT\r\n");
//! assert!(matches!(m.next(), Event::Call(Call::Quit)));
//! m.answer(None).unwrap();
//! assert!(matches!(m.next(), Event::Send));
//! assert_eq!(m.output(), b"221 2.0.0 Bye\r\n");
//! m.sent();
//! assert!(matches!(m.next(), Event::Close));
//! // A late answer is an error, not a panic.
//! assert!(m.answer(None).is_err());
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smtp_auth::{
    AuthDecision, AuthExchange, AuthRequest, AuthResult, AuthStatus, LookupRequest, LookupResult,
    SessionInfo, Step, smtp as auth_smtp,
};
use smtp_proto::codec::{DEFAULT_MAX_SASL_LINE, Frame, Mode, SmtpCodec};
use smtp_proto::{
    Command, DataDecoder, ForwardPath, Host, InitialResponse, MailParameters, Mechanism,
    RcptParameters, Reply, ReversePath,
};

use crate::auth::AuthLimiter;
use crate::body::Body;
use crate::config::ServerConfig;
use crate::observe::AuthOutcome;
use crate::protocol;
use crate::replies;
use crate::session::{Envelope, Session, TlsInfo};

/// The read buffer an idle connection starts with and shrinks back to: one command line fits
/// twice; DATA and BDAT grow it while they need it.
const IDLE_READ_BUFFER: usize = 1024;
/// The read buffer a message body is read with (given back after it).
const BODY_READ_BUFFER: usize = 16 * 1024;
/// A buffer larger than this is given back once it is empty.
const SHRINK_ABOVE: usize = 4 * 1024;
/// The reply buffer a connection starts with (and returns to after a large reply).
const OUTPUT_BUFFER: usize = 512;
/// Replies are sent once this many octets wait, even inside a pipelined batch.
const SEND_ABOVE: usize = 16 * 1024;
/// Commands logged by verb only after an AUTH command (LOGIN sends two credential lines).
const QUIET_AFTER_AUTH: u8 = 3;
/// Input kept while a hook runs (a driver that watches for a hang-up reads at most this far
/// ahead; see [`Machine::input_room`]).
const MAX_READ_AHEAD: usize = 64 * 1024;

/// What the driver must do next.
#[derive(Debug)]
pub enum Event {
    /// Write [`Machine::output`] to the client and say so with [`Machine::sent`] (until then
    /// the machine asks again). The buffer is reused: replies cost no allocation.
    Send,
    /// Call a hook and give its answer with the method the [`Call`] names.
    Call(Call),
    /// A message body begins (DATA's 354, or the first BDAT chunk): prepare its storage.
    MessageStart,
    /// The next octets of the message body (dot-unstuffed): store them. If that fails, say so
    /// with [`Machine::storage_failed`]; the message is then refused at its end.
    MessageChunk(Bytes),
    /// The transaction whose body was being stored is over without a message: drop what was
    /// stored.
    MessageDiscard,
    /// Nothing to do until input arrives (`read`) or `deadline` passes: then pass the time
    /// with [`Machine::now`] (and the input with [`Machine::enqueue_input`]).
    Wait {
        /// When to call [`Machine::now`] and [`Machine::next`] at the latest.
        deadline: Instant,
        /// Whether to read meanwhile (false: a delay, such as after a failed AUTH).
        read: bool,
    },
    /// An answer to the last [`Call`] is due first (see [`Machine::deadline`]).
    Pending,
    /// An answer to a `handle_auth` hook's challenge (see [`Machine::auth_challenge`]).
    AuthResponse(auth_smtp::Response),
    /// The session is over: close the connection (everything to send was sent).
    Close,
}

/// A hook to call, and the answer method it takes.
#[derive(Debug)]
pub enum Call {
    /// A client connected (before the greeting): [`Machine::answer`]; a non-2xx reply refuses
    /// the connection.
    Connect,
    /// HELO, EHLO or LHLO with the name [`Machine::hello_name`] returns: [`Machine::answer`];
    /// a non-2xx reply refuses the greeting.
    Hello {
        /// EHLO or LHLO.
        extended: bool,
    },
    /// MAIL FROM ([`Machine::mail_request`]), already valid for the session:
    /// [`Machine::answer`].
    Mail,
    /// RCPT TO ([`Machine::rcpt_request`]), already valid for the transaction:
    /// [`Machine::answer`].
    Rcpt,
    /// RSET (the transaction is already reset): [`Machine::answer`].
    Rset,
    /// NOOP: [`Machine::answer`].
    Noop,
    /// VRFY with its argument: [`Machine::answer`] (`None`: 252).
    Vrfy(String),
    /// QUIT: [`Machine::answer`] (`None`: 221); the session ends after the reply.
    Quit,
    /// The whole message arrived: finish its storage and hand it over with
    /// [`Machine::answer_stored`] (`None` when it could not be stored).
    StoreMessage,
    /// The envelope is complete ([`Machine::envelope`]): deliver it and answer with
    /// [`Machine::answer_data`].
    Data,
    /// LMTP: deliver and answer with one reply per recipient ([`Machine::answer_lmtp`]).
    DataLmtp,
    /// AUTH: the `handle_auth` hook may run the exchange itself (with
    /// [`Machine::auth_push`] and [`Machine::auth_challenge`]); answer with
    /// [`Machine::answer_auth`] (`None`: the built-in mechanisms run).
    Auth {
        /// The mechanism, upper-case.
        mechanism: String,
        /// The initial response as sent (base64, or `=`).
        initial_response: Option<InitialResponse>,
    },
    /// Check a credential (the authenticator): [`Machine::answer_verify`] before
    /// [`Machine::deadline`].
    Verify(AuthRequest),
    /// Look up a stored secret (CRAM-MD5, SCRAM): [`Machine::answer_lookup`] before
    /// [`Machine::deadline`].
    Lookup(LookupRequest),
    /// STARTTLS: the 220 was sent and anything pipelined behind the command dropped; run the
    /// TLS handshake on the connection, then [`Machine::tls_started`] or
    /// [`Machine::tls_failed`].
    StartTls,
}

/// An answer given in a state that does not take it (a late answer, a second one, or one for
/// another call). The machine is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongState {
    /// What was given.
    pub given: &'static str,
}

impl std::fmt::Display for WrongState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} given, but the session does not await it", self.given)
    }
}

impl std::error::Error for WrongState {}

/// Which answer the machine awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Connect,
    Hello { extended: bool },
    Mail,
    Rcpt,
    Rset,
    Noop,
    Vrfy,
    Quit,
    Stored,
    Data,
    Lmtp,
    HandleAuth,
    Verify,
    Lookup,
    Tls,
}

impl Awaiting {
    fn reply_hook(self) -> bool {
        matches!(
            self,
            Self::Connect
                | Self::Hello { .. }
                | Self::Mail
                | Self::Rcpt
                | Self::Rset
                | Self::Noop
                | Self::Vrfy
                | Self::Quit
        )
    }
}

/// What the machine is doing.
#[derive(Debug)]
enum State {
    /// Before the connect hook.
    Start,
    /// A hook runs.
    Awaiting(Awaiting),
    /// Reading commands.
    Commands,
    /// Reading a DATA body.
    Data { early: bool },
    /// Reading a BDAT chunk.
    Bdat {
        size: u64,
        last: bool,
        refused: Option<Reply>,
    },
    /// Waiting for a SASL response line of the built-in exchange.
    AuthResponse,
    /// The `handle_auth` hook waits for a response line.
    HookResponse,
    /// The delay after a failed AUTH, then the 421 if `close`.
    AuthDelay { until: Instant, close: bool },
    /// Sending what is left, then closing.
    Closing,
    /// Over.
    Closed,
}

/// The command a hook decides on.
#[derive(Debug, Default)]
enum Pending {
    #[default]
    None,
    Hello(String),
    Mail(ReversePath, MailParameters),
    Rcpt(ForwardPath, RcptParameters),
}

/// An AUTH exchange in progress.
struct AuthRun {
    mechanism: String,
    /// When the AUTH command was read (for the observer's latency).
    started: Instant,
    exchange: Option<AuthExchange>,
    initial_response: Option<InitialResponse>,
    /// The user named so far, for the log line of the outcome.
    user: Option<String>,
    /// A credential was refused (counted even if the client then hangs up).
    refused: bool,
}

/// One SMTP session, sans-IO. See the [module documentation](self).
pub struct Machine {
    cfg: Arc<ServerConfig>,
    /// The AUTH failure limiter (the session's own, made at its first AUTH, unless shared).
    limiter: Option<Arc<AuthLimiter>>,
    session: Session,
    envelope: Envelope,
    codec: SmtpCodec,
    input: BytesMut,
    input_closed: bool,
    output: BytesMut,
    events: VecDeque<Event>,
    state: State,
    now: Instant,
    /// Since when the machine waits for the frame it needs (a read timeout runs from here).
    waiting_since: Option<Instant>,
    /// When the current call must be answered (AUTH verification and lookups).
    call_deadline: Option<Instant>,
    /// The command a hook is asked about (HELO, MAIL, RCPT), applied if it accepts.
    pending: Pending,
    auth: Option<AuthRun>,
    channel_binding: Option<Vec<u8>>,
    /// Commands still to be logged by verb only.
    quiet: u8,
    errors: u32,
    junk: u32,
    messages: u32,
    session_deadline: Instant,
    body_deadline: Option<Instant>,
    /// The grace deadline once a shutdown began.
    shutdown: Option<Instant>,
    /// A message body is being stored (a `MessageStart` was emitted).
    body_started: bool,
    body_len: u64,
    storage_failed: bool,
    /// BDAT: the error that refuses the message at LAST.
    bdat_error: Option<Reply>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("state", &self.state)
            .field("peer", &self.session.peer_addr)
            .field("input", &self.input.len())
            .field("output", &self.output.len())
            .finish_non_exhaustive()
    }
}

/// One reply line as sent: CR and LF inside it removed, CRLF appended.
fn push_line(out: &mut BytesMut, line: &str) {
    for part in line.split(['\r', '\n']) {
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The reply for an AUTH outcome: none when a `handle_auth` hook already replied; its own
/// `message` when that is one well-formed reply line of the outcome's kind (2xx for a success,
/// 4xx or 5xx for a failure); else, with a warning, the standard reply for its status, so the
/// client never reads a success the session does not have, or the reverse.
fn auth_reply(result: &AuthResult) -> Option<Reply> {
    if result.handled && !result.is_success() {
        return None;
    }
    let (code, enhanced, text) = auth_smtp::status_reply(result.status);
    let standard = Reply::simple(code, Some(enhanced), text);
    let Some(message) = &result.message else {
        return Some(standard);
    };
    let mut line = message.replace(['\r', '\n'], "");
    line.push_str("\r\n");
    match Reply::parse(line.as_bytes()) {
        Ok(r) if (r.code().class() == 2) == result.is_success() && r.code().class() != 3 => Some(r),
        _ => {
            tracing::warn!(
                status = ?result.status,
                "an AUTH message that is not a reply of its outcome's kind: the standard reply is sent"
            );
            Some(standard)
        }
    }
}

impl Machine {
    /// A session for a client at `peer` connected to `local`, starting at `now`, with its own
    /// AUTH failure limiter (see [`Machine::set_limiter`] to share one).
    pub fn new(
        config: Arc<ServerConfig>,
        peer: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> Self {
        let mut codec = SmtpCodec::new(config.max_line_length, DEFAULT_MAX_SASL_LINE);
        codec.set_parse_options(smtp_proto::ParseOptions {
            lenient_helo: config.lenient_helo,
            lenient_paths: config.lenient_paths,
            forbid_bare_newline: config.forbid_bare_newline,
            ..Default::default()
        });
        Self {
            session_deadline: now + config.max_session_duration,
            cfg: config,
            limiter: None,
            session: Session::new(peer, local),
            envelope: Envelope::default(),
            codec,
            input: BytesMut::with_capacity(IDLE_READ_BUFFER),
            input_closed: false,
            output: BytesMut::with_capacity(OUTPUT_BUFFER),
            events: VecDeque::new(),
            state: State::Start,
            now,
            waiting_since: None,
            call_deadline: None,
            pending: Pending::None,
            auth: None,
            channel_binding: None,
            quiet: 0,
            errors: 0,
            junk: 0,
            messages: 0,
            body_deadline: None,
            shutdown: None,
            body_started: false,
            body_len: 0,
            storage_failed: false,
            bdat_error: None,
        }
    }

    /// Counts AUTH failures in `limiter`, shared with other sessions (and servers); without
    /// it the session counts its own from the configuration's limits.
    pub fn set_limiter(&mut self, limiter: Arc<AuthLimiter>) {
        self.limiter = Some(limiter);
    }

    /// The session begins inside TLS (implicit TLS, RFC 8314): its facts and its
    /// `tls-exporter` channel binding. Call it before the first [`Machine::next`].
    pub fn set_tls(&mut self, info: TlsInfo, channel_binding: Option<Vec<u8>>) {
        self.session.tls = Some(info);
        self.channel_binding = channel_binding;
    }

    fn limiter(&mut self) -> &AuthLimiter {
        let cfg = &self.cfg;
        self.limiter.get_or_insert_with(|| {
            Arc::new(AuthLimiter::new(
                cfg.max_auth_failures_per_ip,
                cfg.max_auth_failures_per_user,
                cfg.auth_failure_window,
            ))
        })
    }

    /// The session as the hooks see it.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The mail transaction as the hooks see it.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The name of the HELO/EHLO/LHLO a [`Call::Hello`] asks about.
    pub fn hello_name(&self) -> Option<&str> {
        match &self.pending {
            Pending::Hello(n) => Some(n),
            _ => None,
        }
    }

    /// The reverse-path and parameters a [`Call::Mail`] asks about.
    pub fn mail_request(&self) -> Option<(&ReversePath, &MailParameters)> {
        match &self.pending {
            Pending::Mail(from, params) => Some((from, params)),
            _ => None,
        }
    }

    /// The forward-path and parameters a [`Call::Rcpt`] asks about.
    pub fn rcpt_request(&self) -> Option<(&ForwardPath, &RcptParameters)> {
        match &self.pending {
            Pending::Rcpt(to, params) => Some((to, params)),
            _ => None,
        }
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// True once the session is over ([`Event::Close`] was or will be returned).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Closing)
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Appends octets the client sent.
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The input buffer, for reading into it in place (append only), sized for what the
    /// session reads now: small between commands, larger inside a message body.
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        let want = if matches!(self.state, State::Data { .. } | State::Bdat { .. }) {
            BODY_READ_BUFFER
        } else {
            IDLE_READ_BUFFER
        };
        if self.input.capacity() - self.input.len() < want / 2 {
            self.input.reserve(want);
        }
        &mut self.input
    }

    /// How many more octets the driver may read ahead while a hook runs (to notice a client
    /// that hangs up during a credential check).
    pub fn input_room(&self) -> usize {
        MAX_READ_AHEAD.saturating_sub(self.input.len())
    }

    /// The client closed its side: the session ends once what it sent is handled.
    pub fn input_closed(&mut self) {
        self.input_closed = true;
    }

    /// Passes the time in: deadlines are checked against it at the next [`Machine::next`].
    pub fn now(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Begins a graceful shutdown: an idle session gets 421 4.3.2 at once; a message or an
    /// exchange in progress has `shutdown_grace` to finish.
    pub fn shutdown(&mut self) {
        if self.shutdown.is_none() {
            self.shutdown = Some(self.now + self.cfg.shutdown_grace);
        }
    }

    /// When the current call must be answered; past it the machine answers for the hook
    /// (a timed-out credential check is a temporary failure).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Awaiting(_) => self.call_deadline,
            _ => None,
        }
    }

    /// The octets to send (after [`Event::Send`], or a `handle_auth` hook's pushed lines).
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// The octets of [`Machine::output`] were sent.
    pub fn sent(&mut self) {
        self.output.clear();
        if self.output.capacity() > SHRINK_ABOVE {
            self.output = BytesMut::with_capacity(OUTPUT_BUFFER);
        }
    }

    fn send(&mut self, reply: &Reply) {
        reply.encode(&mut self.output);
    }

    fn close_after(&mut self, reply: Option<&Reply>) {
        if let Some(r) = reply {
            self.send(r);
        }
        self.state = State::Closing;
    }

    /// What the driver must do next.
    // Not an Iterator: it never runs out (a closed session keeps answering `Close`), and the
    // driver must act on each event before asking again.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Event {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            if self.output.len() > SEND_ABOVE {
                return Event::Send;
            }
            match self.state {
                State::Start => {
                    self.state = State::Awaiting(Awaiting::Connect);
                    return Event::Call(Call::Connect);
                }
                State::Awaiting(a) => {
                    if let Some(d) = self.call_deadline
                        && self.now >= d
                    {
                        self.call_timed_out(a);
                        continue;
                    }
                    if self.input_closed && a == Awaiting::Verify {
                        // The client hung up while its credential was checked: the check is
                        // abandoned (a late answer is refused).
                        tracing::info!("client disconnected while its credential was checked");
                        self.abandon_auth();
                        continue;
                    }
                    return Event::Pending;
                }
                State::Closing => {
                    if !self.output.is_empty() {
                        return Event::Send;
                    }
                    self.state = State::Closed;
                    self.discard_body();
                    if let Some(e) = self.events.pop_front() {
                        return e;
                    }
                    return Event::Close;
                }
                State::Closed => return Event::Close,
                State::AuthDelay { until, close } => {
                    if !self.output.is_empty() {
                        return Event::Send;
                    }
                    if self.now < until {
                        return Event::Wait {
                            deadline: until,
                            read: false,
                        };
                    }
                    if close {
                        self.close_after(Some(&replies::too_many_auth_failures()));
                    } else {
                        self.state = State::Commands;
                    }
                }
                State::Commands => {
                    if let Some(r) = self.idle_end() {
                        self.close_after(Some(&r));
                        continue;
                    }
                    match self.codec.decode_frame(&mut self.input) {
                        Some(Frame::Command(c)) => {
                            self.waiting_since = None;
                            self.command_frame(c);
                        }
                        Some(_) => {}
                        None => {
                            if let Some(e) = self.wait(true) {
                                return e;
                            }
                        }
                    }
                }
                State::Data { early } => match self.codec.decode_frame(&mut self.input) {
                    Some(Frame::DataChunk(c)) => {
                        self.waiting_since = None;
                        if !self.storage_failed {
                            self.body_len += c.len() as u64;
                            return Event::MessageChunk(c);
                        }
                    }
                    Some(Frame::DataEnd(end)) => {
                        self.waiting_since = None;
                        self.data_end(end, early);
                    }
                    Some(_) => {}
                    None => {
                        if let Some(e) = self.wait(false) {
                            return e;
                        }
                    }
                },
                State::Bdat { .. } => match self.codec.decode_frame(&mut self.input) {
                    Some(Frame::BdatChunk(c)) => {
                        self.waiting_since = None;
                        if let Some(e) = self.bdat_chunk(c) {
                            return e;
                        }
                    }
                    Some(Frame::BdatEnd) => {
                        self.waiting_since = None;
                        self.bdat_end();
                    }
                    Some(_) => {}
                    None => {
                        if let Some(e) = self.wait(false) {
                            return e;
                        }
                    }
                },
                State::AuthResponse | State::HookResponse => {
                    match self.codec.decode_frame(&mut self.input) {
                        Some(Frame::SaslResponse(line)) => {
                            self.waiting_since = None;
                            self.codec.set_mode(Mode::Command);
                            if matches!(self.state, State::HookResponse) {
                                self.state = State::Awaiting(Awaiting::HandleAuth);
                                return Event::AuthResponse(match line {
                                    Ok(l) => auth_smtp::decode_response(&l, DEFAULT_MAX_SASL_LINE),
                                    Err(_) => auth_smtp::Response::TooLong,
                                });
                            }
                            self.auth_response(line);
                        }
                        Some(_) => {}
                        None => {
                            if let Some(e) = self.wait(false) {
                                return e;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The end of an idle session before its next command: shutdown or its time is up.
    fn idle_end(&mut self) -> Option<Reply> {
        if self.shutdown.is_some() {
            return Some(replies::shutting_down());
        }
        if self.now >= self.session_deadline {
            return Some(replies::session_too_long());
        }
        None
    }

    /// Needs input: flush, then wait (or end on EOF or a passed deadline). `None` when the
    /// session moved on (to closing).
    fn wait(&mut self, idle: bool) -> Option<Event> {
        if !self.output.is_empty() {
            return Some(Event::Send);
        }
        if self.input_closed {
            self.after_hangup();
            return None;
        }
        if idle && self.input.is_empty() && self.input.capacity() > SHRINK_ABOVE {
            self.input = BytesMut::with_capacity(IDLE_READ_BUFFER);
        }
        let since = *self.waiting_since.get_or_insert(self.now);
        let mut deadline = since + self.cfg.read_timeout;
        if idle {
            deadline = deadline.min(self.session_deadline);
        } else {
            if let Some(grace) = self.shutdown {
                deadline = deadline.min(grace);
            }
            if let Some(b) = self.body_deadline {
                // The whole body, not just each read, has a deadline: a client trickling one
                // byte per read timeout cannot hold the session for ever.
                deadline = deadline.min(b);
            }
        }
        if self.now >= deadline {
            if idle && self.now >= self.session_deadline {
                self.close_after(Some(&replies::session_too_long()));
            } else {
                self.timed_out();
            }
            return None;
        }
        Some(Event::Wait {
            deadline,
            read: true,
        })
    }

    /// A read timed out.
    fn timed_out(&mut self) {
        if matches!(self.state, State::AuthResponse) {
            self.auth_gone();
        }
        self.close_after(Some(&replies::timeout()));
    }

    /// The client hung up.
    fn after_hangup(&mut self) {
        if matches!(self.state, State::AuthResponse) {
            self.auth_gone();
        }
        self.close_after(None);
    }

    /// An exchange ended because the client went away: a refused credential still counts
    /// (curl hangs up at the XOAUTH2 error challenge).
    fn auth_gone(&mut self) {
        if let Some(run) = self.auth.take() {
            self.observe_auth(&run.mechanism, AuthOutcome::Cancelled, run.started);
            if run.refused {
                self.record_failure(&run.mechanism, run.user.as_deref(), AuthStatus::Invalid);
            }
        }
        self.session.auth_progress = smtp_auth::AuthProgress::None;
    }

    fn abandon_auth(&mut self) {
        self.call_deadline = None;
        self.auth_gone();
        self.close_after(None);
    }

    fn call_timed_out(&mut self, a: Awaiting) {
        self.call_deadline = None;
        match a {
            Awaiting::Verify => {
                tracing::warn!("authenticator timed out");
                self.verify_result(AuthResult::failure(AuthStatus::TempFail));
            }
            Awaiting::Lookup => self.lookup_result(LookupResult::Failure),
            _ => {}
        }
    }

    // ---- commands ----

    fn command_frame(&mut self, frame: Result<Command, smtp_proto::ProtoError>) {
        match frame {
            Ok(cmd) => self.command(cmd),
            Err(e) => {
                // Sequencing before syntax (protocol::sequencing): a malformed AUTH after a
                // successful one is 503, not 501.
                let refused = self.codec.error_verb().and_then(|v| {
                    protocol::sequencing(&self.cfg, &self.session, &self.envelope, v)
                });
                match refused {
                    Some(r) => self.send(&r),
                    None => {
                        self.send(&e.reply());
                        self.protocol_error();
                    }
                }
            }
        }
    }

    /// Counts a syntax error or unknown command; past the limit the client is dropped (a
    /// client that only sends garbage is not a mail client).
    fn protocol_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.close_after(Some(&replies::too_many_errors()));
        }
    }

    fn command(&mut self, cmd: Command) {
        if self.quiet > 0 {
            // Right after AUTH: a line may be a pipelined credential; log the verb only.
            self.quiet -= 1;
            tracing::debug!(command = cmd.verb(), "command");
        } else {
            tracing::debug!(command = %cmd.public_line(), "command");
        }
        if matches!(
            cmd,
            Command::Noop(_) | Command::Rset | Command::Vrfy(_) | Command::Help(_)
        ) {
            self.junk += 1;
        }
        let lmtp = self.cfg.lmtp;
        match cmd {
            Command::Ehlo(_) | Command::Helo(_) if lmtp => self.send(&replies::lmtp_ehlo()),
            Command::Lhlo(_) if !lmtp => self.send(&replies::not_lmtp()),
            Command::Ehlo(h) | Command::Lhlo(h) => self.hello(h, true),
            Command::Helo(h) => self.hello(h, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset_transaction();
                self.call(Awaiting::Rset, Call::Rset);
            }
            Command::Noop(_) => self.call(Awaiting::Noop, Call::Noop),
            Command::Vrfy(arg) => self.call(Awaiting::Vrfy, Call::Vrfy(arg)),
            Command::Expn(_) => self.send(&replies::expn()),
            Command::Help(_) => {
                self.send(&replies::help());
                self.after_junk();
            }
            Command::Quit => self.call(Awaiting::Quit, Call::Quit),
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            _ => {
                self.send(&replies::unknown_command());
                self.protocol_error();
            }
        }
    }

    /// A command that did no work, past `max_junk_commands`: answered as usual but counted
    /// toward `max_errors` (Postfix's smtpd_junk_command_limit).
    fn after_junk(&mut self) {
        if self.junk > self.cfg.max_junk_commands && !matches!(self.state, State::Closing) {
            self.protocol_error();
        }
    }

    fn call(&mut self, awaiting: Awaiting, call: Call) {
        self.state = State::Awaiting(awaiting);
        self.events.push_back(Event::Call(call));
    }

    fn hello(&mut self, host: Host, extended: bool) {
        // RFC 5321 §4.1.4: a greeting resets the transaction like RSET.
        self.reset_transaction();
        self.pending = Pending::Hello(host.to_string());
        self.call(Awaiting::Hello { extended }, Call::Hello { extended });
    }

    fn mail(&mut self, from: ReversePath, params: MailParameters) {
        if let Err(r) =
            protocol::check_mail(&self.cfg, &self.session, &self.envelope, &from, &params)
        {
            self.send(&r);
            return;
        }
        self.pending = Pending::Mail(from, params);
        self.call(Awaiting::Mail, Call::Mail);
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParameters) {
        if let Err(r) = protocol::check_rcpt(&self.cfg, &self.envelope, &to, &params) {
            self.send(&r);
            return;
        }
        self.pending = Pending::Rcpt(to, params);
        self.call(Awaiting::Rcpt, Call::Rcpt);
    }

    fn start_body(&mut self) {
        if self.body_deadline.is_none() {
            self.body_deadline = Some(self.now + self.cfg.max_data_duration);
        }
    }

    fn begin_message(&mut self) {
        self.discard_body();
        self.body_started = true;
        self.body_len = 0;
        self.storage_failed = false;
        self.events.push_back(Event::MessageStart);
    }

    fn discard_body(&mut self) {
        if self.body_started {
            self.body_started = false;
            self.events.push_back(Event::MessageDiscard);
        }
    }

    fn reset_transaction(&mut self) {
        self.body_deadline = None;
        self.body_len = 0;
        self.storage_failed = false;
        self.envelope = Envelope::default();
        self.bdat_error = None;
        self.discard_body();
    }

    fn data(&mut self) {
        if let Err(r) = protocol::check_data(&self.envelope) {
            self.send(&r);
            return;
        }
        // RFC 2920 §3.1: the client must wait for the 354. Octets already waiting behind the
        // DATA line were sent without it (Postfix: "improper command pipelining after DATA").
        let early = !self.input.is_empty();
        self.send(&replies::start_data());
        self.start_body();
        self.codec.set_mode(Mode::Data(DataDecoder::new(
            self.cfg.max_message_size,
            self.cfg.bare_policy,
        )));
        self.state = State::Data { early };
        self.begin_message();
    }

    fn data_end(&mut self, end: smtp_proto::DataEnd, early: bool) {
        self.state = State::Commands;
        if let Some(e) = end.error() {
            tracing::info!(size = end.size, reason = %e, "message refused");
            self.reset_transaction();
            let reply = e.reply();
            self.observe_message(&reply, end.size);
            self.send(&reply);
            return;
        }
        if early && !self.cfg.allow_pipelined_body {
            tracing::info!(
                peer = %self.session.peer_addr,
                size = end.size,
                "improper command pipelining after DATA: message refused"
            );
            self.reset_transaction();
            let reply = replies::pipelined_body();
            self.observe_message(&reply, end.size);
            self.send(&reply);
            return;
        }
        self.store_message();
    }

    fn store_message(&mut self) {
        if self.storage_failed {
            tracing::error!("cannot spool the message: refused");
            let octets = self.body_len;
            self.reset_transaction();
            let reply = replies::local_error();
            self.observe_message(&reply, octets);
            self.send(&reply);
            return;
        }
        if !self.body_started {
            // BDAT 0 LAST: an empty message.
            self.begin_message();
        }
        self.call(Awaiting::Stored, Call::StoreMessage);
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let refused = protocol::check_bdat(&self.envelope).err();
        if refused.is_none() {
            self.envelope.chunked = true;
        }
        // The chunk's octets are read in every case, so the stream stays in sync.
        self.start_body();
        self.codec.set_mode(Mode::bdat(size));
        self.state = State::Bdat {
            size,
            last,
            refused,
        };
    }

    fn bdat_chunk(&mut self, c: Bytes) -> Option<Event> {
        let State::Bdat { refused, .. } = &self.state else {
            return None;
        };
        if refused.is_some() || self.bdat_error.is_some() {
            return None;
        }
        if self.body_len + c.len() as u64 > self.cfg.max_message_size {
            self.bdat_error = Some(replies::size_exceeded());
            return None;
        }
        if !self.body_started {
            self.begin_message();
        }
        if self.storage_failed {
            return None;
        }
        self.body_len += c.len() as u64;
        self.events.push_back(Event::MessageChunk(c));
        self.events.pop_front()
    }

    fn bdat_end(&mut self) {
        let State::Bdat {
            size,
            last,
            refused,
        } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return;
        };
        if let Some(r) = refused {
            self.body_deadline = None;
            self.send(&r);
            return;
        }
        if self.storage_failed && self.bdat_error.is_none() {
            tracing::error!("cannot spool the message");
            self.bdat_error = Some(replies::local_error());
        }
        if !last {
            match self.bdat_error.clone() {
                Some(r) => self.send(&r),
                None => self.send(&replies::bdat_chunk(size)),
            }
            return;
        }
        if let Some(r) = self.bdat_error.take() {
            let octets = self.body_len;
            self.reset_transaction();
            self.observe_message(&r, octets);
            self.send(&r);
            return;
        }
        self.store_message();
    }

    fn starttls(&mut self) {
        if self.cfg.tls.is_none() {
            self.send(&replies::tls_unavailable());
            return;
        }
        if self.session.tls.is_some() {
            self.send(&replies::tls_active());
            return;
        }
        self.send(&replies::ready_tls());
        if !self.input.is_empty() {
            // CVE-2011-0411: anything pipelined after STARTTLS was sent in the clear and must
            // not be executed inside the TLS session.
            tracing::warn!(
                octets = self.input.len(),
                "discarded data pipelined after STARTTLS"
            );
            self.input.clear();
        }
        self.state = State::Awaiting(Awaiting::Tls);
        // The 220 goes out before the handshake.
        self.events.push_back(Event::Send);
        self.events.push_back(Event::Call(Call::StartTls));
    }

    // ---- AUTH ----

    fn session_info(&self) -> SessionInfo {
        SessionInfo {
            remote_ip: Some(self.session.peer_addr.ip()),
            helo_name: self.session.helo_name.clone(),
            server_name: self.cfg.hostname.clone(),
            external_identity: match (&self.cfg.external_identity, &self.session.tls) {
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

    fn auth(&mut self, mechanism: Mechanism, initial_response: Option<InitialResponse>) {
        if let Err(r) = protocol::check_auth(&self.cfg, &self.session, &self.envelope) {
            self.send(&r);
            return;
        }
        // Whatever happens next, the lines that follow may be credentials.
        self.quiet = QUIET_AFTER_AUTH;
        let ip = self.session.peer_addr.ip();
        if self.limiter().ip_blocked(ip) {
            tracing::warn!(remote_ip = %ip, "AUTH refused: too many failures from this address");
            self.observe_auth(mechanism.as_str(), AuthOutcome::Locked, self.now);
            self.close_after(Some(&replies::too_many_auth_failures()));
            return;
        }
        let name = mechanism.as_str().to_owned();
        self.auth = Some(AuthRun {
            mechanism: name.clone(),
            started: self.now,
            exchange: None,
            initial_response: initial_response.clone(),
            user: None,
            refused: false,
        });
        // The replies so far go out before a hook may talk to the client itself.
        if !self.output.is_empty() {
            self.events.push_back(Event::Send);
        }
        self.call(
            Awaiting::HandleAuth,
            Call::Auth {
                mechanism: name,
                initial_response,
            },
        );
    }

    /// Queues a reply line from a `handle_auth` hook (without CRLF; CR and LF are removed);
    /// send it with [`Machine::output`] and [`Machine::sent`].
    pub fn auth_push(&mut self, line: &str) -> Result<(), WrongState> {
        if !matches!(self.state, State::Awaiting(Awaiting::HandleAuth)) {
            return Err(WrongState { given: "auth_push" });
        }
        push_line(&mut self.output, line);
        Ok(())
    }

    /// Sends `334 <base64(challenge)>` for a `handle_auth` hook: [`Machine::next`] then reads
    /// the client's response line and returns it as [`Event::AuthResponse`] (with the read
    /// timeout and shutdown applied as anywhere else).
    pub fn auth_challenge(&mut self, challenge: &[u8]) -> Result<(), WrongState> {
        if !matches!(self.state, State::Awaiting(Awaiting::HandleAuth)) {
            return Err(WrongState {
                given: "auth_challenge",
            });
        }
        push_line(&mut self.output, &auth_smtp::challenge_line(challenge));
        self.codec.set_mode(Mode::SaslResponse);
        self.state = State::HookResponse;
        Ok(())
    }

    fn expect(&self, awaiting: Awaiting, given: &'static str) -> Result<(), WrongState> {
        match self.state {
            State::Awaiting(a) if a == awaiting => Ok(()),
            _ => Err(WrongState { given }),
        }
    }

    /// Answers a `handle_auth` hook ([`Call::Auth`]): `None` runs the built-in mechanism;
    /// `Some(result)` is the outcome of the hook's own exchange.
    pub fn answer_auth(&mut self, result: Option<AuthResult>) -> Result<(), WrongState> {
        self.expect(Awaiting::HandleAuth, "answer_auth")?;
        self.state = State::Commands;
        match result {
            Some(r) => self.auth_done(r, false),
            None => {
                let info = self.session_info();
                let Some(run) = self.auth.as_mut() else {
                    return Ok(());
                };
                let mut ex = AuthExchange::new(self.cfg.registry.clone(), info)
                    .with_proxy_authorization(self.cfg.proxy_authorization);
                let ir = run.initial_response.take();
                let step = ex.start(&run.mechanism, ir.as_ref().map(|r| r.expose_secret()));
                run.exchange = Some(ex);
                match step {
                    Ok(step) => self.auth_step(step),
                    Err(_) => {
                        self.auth_done(AuthResult::failure(AuthStatus::UnknownMechanism), true)
                    }
                }
            }
        }
        Ok(())
    }

    fn auth_step(&mut self, step: Step) {
        let Some(run) = self.auth.as_mut() else {
            return;
        };
        if let Some(ex) = &run.exchange {
            self.session.auth_progress = ex.progress();
        }
        match step {
            Step::Challenge(c) => {
                push_line(&mut self.output, &auth_smtp::challenge_line(&c));
                self.codec.set_mode(Mode::SaslResponse);
                self.state = State::AuthResponse;
            }
            Step::Verify(req) => {
                run.user = Some(req.username.clone());
                if self.locked_out(&req.username) {
                    self.verify_result(AuthResult::failure(AuthStatus::Locked));
                } else {
                    self.call_deadline = Some(self.now + self.cfg.auth_timeout);
                    self.call(Awaiting::Verify, Call::Verify(req));
                }
            }
            Step::Lookup(req) => {
                run.user = Some(req.username.clone());
                if self.locked_out(&req.username) {
                    // 454 like a failed lookup, the secret unread.
                    self.lookup_result(LookupResult::Locked);
                } else {
                    self.call_deadline = Some(self.now + self.cfg.auth_timeout);
                    self.call(Awaiting::Lookup, Call::Lookup(req));
                }
            }
            Step::Done(r) => self.auth_done(r, true),
        }
    }

    fn auth_response(&mut self, line: Result<Bytes, smtp_proto::ProtoError>) {
        self.state = State::Commands;
        let Some(ex) = self.auth.as_mut().and_then(|r| r.exchange.as_mut()) else {
            return;
        };
        let step = match line {
            Ok(l) => ex.respond(&l),
            Err(_) => Ok(Step::Done(AuthResult::failure(AuthStatus::TooLong))),
        };
        match step {
            Ok(s) => self.auth_step(s),
            Err(_) => self.auth_done(AuthResult::failure(AuthStatus::Malformed), true),
        }
    }

    /// Answers [`Call::Verify`] with the authenticator's result.
    pub fn answer_verify(&mut self, result: AuthResult) -> Result<(), WrongState> {
        self.expect(Awaiting::Verify, "answer_verify")?;
        self.call_deadline = None;
        self.verify_result(result);
        Ok(())
    }

    fn verify_result(&mut self, r: AuthResult) {
        self.state = State::Commands;
        let Some(run) = self.auth.as_mut() else {
            return;
        };
        if r.decision() == AuthDecision::Invalid {
            run.refused = true;
        }
        if r.handled {
            tracing::warn!(
                "an authenticator returned handled=true, but it cannot reply itself: \
                 the server sends the reply"
            );
        }
        // One outcome: the exchange takes the authenticator's answer whole (its status as the
        // decision, its message and data as overrides).
        let step = run.exchange.as_mut().map(|ex| ex.conclude(r));
        match step {
            Some(Ok(s)) => self.auth_step(s),
            _ => self.auth_done(AuthResult::failure(AuthStatus::Malformed), true),
        }
    }

    /// Answers [`Call::Lookup`] with the stored secret (or why there is none).
    pub fn answer_lookup(&mut self, found: LookupResult) -> Result<(), WrongState> {
        self.expect(Awaiting::Lookup, "answer_lookup")?;
        self.call_deadline = None;
        self.lookup_result(found);
        Ok(())
    }

    fn lookup_result(&mut self, found: LookupResult) {
        self.state = State::Commands;
        let step = self
            .auth
            .as_mut()
            .and_then(|r| r.exchange.as_mut())
            .map(|ex| ex.supply(found));
        match step {
            Some(Ok(s)) => self.auth_step(s),
            _ => self.auth_done(AuthResult::failure(AuthStatus::Malformed), true),
        }
    }

    /// True (and logged) when `user` is past `max_auth_failures_per_user`: the answer is then
    /// 454 with the credential unchecked.
    fn locked_out(&mut self, user: &str) -> bool {
        if !self.limiter().user_locked(user) {
            return false;
        }
        tracing::warn!(
            remote_ip = %self.session.peer_addr.ip(),
            user,
            "AUTH refused: too many failures for this user"
        );
        true
    }

    fn observe_auth(&self, mechanism: &str, outcome: AuthOutcome, started: Instant) {
        if let Some(o) = &self.cfg.observer {
            o.auth(
                mechanism,
                outcome,
                self.now.saturating_duration_since(started),
            );
        }
    }

    /// A message's final reply, for the observer.
    fn observe_message(&self, reply: &Reply, octets: u64) {
        if let Some(o) = &self.cfg.observer {
            o.message(reply.code().class(), octets);
        }
    }

    /// An exchange is over (`builtin`: the server's mechanisms ran it): reply, apply.
    fn auth_done(&mut self, mut result: AuthResult, builtin: bool) {
        self.state = State::Commands;
        self.session.auth_progress = smtp_auth::AuthProgress::None;
        let Some(run) = self.auth.take() else {
            return;
        };
        if builtin && result.handled {
            // Only a handle_auth hook holds the connection and can have replied. A mechanism
            // or authenticator that claims it did would leave the client without an answer.
            tracing::warn!("a mechanism returned handled=true: the server sends the reply");
            result.handled = false;
        }
        if let Some(reply) = auth_reply(&result) {
            self.send(&reply);
        }
        let outcome = match result.status {
            AuthStatus::Success => AuthOutcome::Ok,
            AuthStatus::Locked => AuthOutcome::Locked,
            AuthStatus::TempFail => AuthOutcome::TempFail,
            AuthStatus::Cancelled => AuthOutcome::Cancelled,
            _ => AuthOutcome::Invalid,
        };
        self.observe_auth(&run.mechanism, outcome, run.started);
        let login = result
            .auth_data
            .as_ref()
            .and_then(|d| d.login())
            .map(str::to_owned);
        if result.is_success() {
            tracing::info!(
                remote_ip = %self.session.peer_addr.ip(),
                mechanism = run.mechanism,
                user = login.as_deref().unwrap_or(""),
                success = true,
                "AUTH"
            );
            self.session.authenticated = true;
            self.session.login_data = login;
            self.session.auth_data = result.auth_data;
            self.session.auth_mechanism = Some(run.mechanism);
            return;
        }
        let counted = self.record_failure(&run.mechanism, run.user.as_deref(), result.status);
        if !counted {
            return;
        }
        let close = self.session.auth_failures >= self.cfg.max_auth_failures;
        let delay = self.cfg.auth_failure_delay;
        if delay.is_zero() {
            if close {
                self.close_after(Some(&replies::too_many_auth_failures()));
            }
        } else {
            self.state = State::AuthDelay {
                until: self.now + delay,
                close,
            };
        }
    }

    /// Logs a failed AUTH and counts it: per connection, per address and, for a refused
    /// credential, per user. False when it does not count (a temporary failure, a lock, an
    /// unknown mechanism).
    fn record_failure(&mut self, mechanism: &str, user: Option<&str>, status: AuthStatus) -> bool {
        let ip = self.session.peer_addr.ip();
        tracing::info!(
            remote_ip = %ip,
            mechanism,
            user = user.unwrap_or(""),
            success = false,
            status = ?status,
            "AUTH"
        );
        if matches!(
            status,
            AuthStatus::TempFail | AuthStatus::Locked | AuthStatus::UnknownMechanism
        ) {
            return false;
        }
        self.session.auth_failures += 1;
        let user = user.filter(|_| status == AuthStatus::Invalid);
        self.limiter().record_failure(ip, user);
        true
    }

    // ---- answers ----

    /// Answers a hook that returns an optional reply ([`Call::Connect`], [`Call::Hello`],
    /// [`Call::Mail`], [`Call::Rcpt`], [`Call::Rset`], [`Call::Noop`], [`Call::Vrfy`],
    /// [`Call::Quit`]): `None` for the default, a 2xx reply to accept with its text, any other
    /// reply to refuse.
    pub fn answer(&mut self, reply: Option<Reply>) -> Result<(), WrongState> {
        let State::Awaiting(a) = self.state else {
            return Err(WrongState { given: "answer" });
        };
        if !a.reply_hook() {
            return Err(WrongState { given: "answer" });
        }
        self.state = State::Commands;
        let refused = reply.as_ref().filter(|r| !r.code().is_positive()).cloned();
        match a {
            Awaiting::Connect => match refused {
                Some(r) => self.close_after(Some(&r)),
                None => {
                    let greeting = format!("{} {}", self.cfg.hostname, self.cfg.greeting);
                    self.send(&Reply::simple(220, None, &greeting));
                }
            },
            Awaiting::Hello { extended } => match refused {
                Some(r) => {
                    self.pending = Pending::None;
                    self.send(&r);
                }
                None => self.greeted(extended),
            },
            Awaiting::Mail => {
                let pending = std::mem::take(&mut self.pending);
                match (refused, pending) {
                    (Some(r), _) => self.send(&r),
                    (None, Pending::Mail(from, params)) => {
                        self.envelope.auth = params.auth.clone();
                        self.envelope.mail_from = Some(from);
                        self.envelope.mail_params = params;
                        self.send(&reply.unwrap_or_else(replies::sender_ok));
                    }
                    (None, _) => {}
                }
            }
            Awaiting::Rcpt => {
                let pending = std::mem::take(&mut self.pending);
                match (refused, pending) {
                    (Some(r), _) => self.send(&r),
                    (None, Pending::Rcpt(to, params)) => {
                        self.envelope.rcpt_to.push(to);
                        self.envelope.rcpt_params.push(params);
                        self.send(&reply.unwrap_or_else(replies::recipient_ok));
                    }
                    (None, _) => {}
                }
            }
            Awaiting::Rset | Awaiting::Noop => {
                self.send(&reply.unwrap_or_else(replies::ok));
                self.after_junk();
            }
            Awaiting::Vrfy => {
                self.send(&reply.unwrap_or_else(replies::vrfy));
                self.after_junk();
            }
            Awaiting::Quit => {
                let r = reply.unwrap_or_else(replies::bye);
                self.close_after(Some(&r));
            }
            _ => {}
        }
        Ok(())
    }

    fn greeted(&mut self, extended: bool) {
        let Pending::Hello(name) = std::mem::take(&mut self.pending) else {
            return;
        };
        self.session.helo_name = Some(name);
        self.session.extended = extended;
        let reply = if extended {
            protocol::ehlo_response(&self.cfg, &self.session).to_reply()
        } else {
            Reply::simple(250, None, &self.cfg.hostname)
        };
        self.send(&reply);
    }

    /// Answers [`Call::StoreMessage`]: the stored body, or `None` when it could not be stored
    /// (the message is refused with 451).
    pub fn answer_stored(&mut self, body: Option<Body>) -> Result<(), WrongState> {
        self.expect(Awaiting::Stored, "answer_stored")?;
        self.body_started = false;
        let Some(body) = body else {
            self.state = State::Commands;
            tracing::error!("cannot spool the message: refused");
            let octets = self.body_len;
            self.reset_transaction();
            let reply = replies::local_error();
            self.observe_message(&reply, octets);
            self.send(&reply);
            return Ok(());
        };
        self.envelope.body = body;
        if self.cfg.lmtp {
            self.state = State::Awaiting(Awaiting::Lmtp);
            self.events.push_back(Event::Call(Call::DataLmtp));
        } else {
            self.state = State::Awaiting(Awaiting::Data);
            self.events.push_back(Event::Call(Call::Data));
        }
        Ok(())
    }

    /// Answers [`Call::Data`] with the message's reply (a 2xx only once it is safe).
    pub fn answer_data(&mut self, reply: Reply) -> Result<(), WrongState> {
        self.expect(Awaiting::Data, "answer_data")?;
        self.state = State::Commands;
        tracing::debug!(
            size = self.envelope.body.len(),
            recipients = self.envelope.rcpt_to.len(),
            code = reply.code().get(),
            "message"
        );
        if reply.code().class() == 2 {
            self.messages += 1;
        }
        self.observe_message(&reply, self.envelope.body.len());
        self.send(&reply);
        self.reset_transaction();
        Ok(())
    }

    /// Answers [`Call::DataLmtp`]: one reply per accepted recipient, in order (RFC 2033 §4.2;
    /// missing ones become 451, extra ones are dropped).
    pub fn answer_lmtp(&mut self, mut replies: Vec<Reply>) -> Result<(), WrongState> {
        self.expect(Awaiting::Lmtp, "answer_lmtp")?;
        self.state = State::Commands;
        replies.resize(self.envelope.rcpt_to.len(), replies::local_error());
        if replies.iter().any(|r| r.code().class() == 2) {
            self.messages += 1;
        }
        let summary = replies
            .iter()
            .find(|r| r.code().class() == 2)
            .or(replies.first());
        if let Some(r) = summary {
            self.observe_message(r, self.envelope.body.len());
        }
        for r in &replies {
            self.send(r);
        }
        self.reset_transaction();
        Ok(())
    }

    /// Storing the message body failed (a full disk): the message is refused at its end and
    /// the rest of it is read and dropped, so the stream stays in sync.
    pub fn storage_failed(&mut self) {
        self.storage_failed = true;
    }

    /// Answers [`Call::StartTls`]: the handshake succeeded. The session starts over (RFC 3207
    /// §4.2) inside TLS.
    pub fn tls_started(
        &mut self,
        info: TlsInfo,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<(), WrongState> {
        self.expect(Awaiting::Tls, "tls_started")?;
        self.state = State::Commands;
        self.codec.set_mode(Mode::Command);
        self.channel_binding = channel_binding;
        self.session.reset_after_tls();
        self.session.tls = Some(info);
        self.reset_transaction();
        self.waiting_since = None;
        Ok(())
    }

    /// Answers [`Call::StartTls`]: the handshake failed; the session ends.
    pub fn tls_failed(&mut self) -> Result<(), WrongState> {
        self.expect(Awaiting::Tls, "tls_failed")?;
        self.state = State::Closed;
        Ok(())
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
