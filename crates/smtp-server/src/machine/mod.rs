//! The SMTP session as a state machine with no runtime, no clock and no I/O (sans-IO, like
//! `smtp_auth::AuthExchange`, quinn-proto or rustls' unbuffered API).
//!
//! A [`Machine`] owns every protocol rule of one connection: command sequencing, limits, the
//! per-connection AUTH failure count and delay, BDAT reassembly and its size limit, LMTP's one
//! reply per recipient, pipelining flush points, timeouts and the framing mode. Its driver only
//! moves bytes and time in and acts on what [`Machine::next`] asks for:
//!
//! - [`Machine::enqueue_input`] (or [`Machine::input_buffer`] for reading in place) feeds what
//!   the client sent, [`Machine::input_closed`] says it hung up; a driver with a codec of its
//!   own (tokio-util's `Framed`, as the tokio server runs) uses [`Machine::with_frames`] and
//!   [`Machine::next_framed`] instead, lending its codec and read buffer at each step;
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
use smtp_auth::{AuthRequest, LookupRequest};
use smtp_proto::codec::{DEFAULT_MAX_SASL_LINE, Frame, Mode, SmtpCodec};
use smtp_proto::{
    Command, ForwardPath, Host, InitialResponse, MailParameters, RcptParameters, Reply, ReversePath,
};

use crate::config::ServerConfig;
use crate::protocol;
use crate::replies;
use crate::session::{Envelope, Session, TlsInfo};

mod auth;
mod body;

pub use auth::UNKNOWN_MECHANISM;

use auth::AuthRun;
use body::Transaction;

/// The read buffer an idle connection starts with and shrinks back to: one command line fits
/// twice; DATA and BDAT grow it while they need it.
pub const IDLE_READ_BUFFER: usize = 1024;
/// The read buffer a message body is read with (given back after it).
const BODY_READ_BUFFER: usize = 16 * 1024;
/// A buffer larger than this is given back once it is empty.
pub const SHRINK_ABOVE: usize = 4 * 1024;
/// The reply buffer a connection starts with (and returns to after a large reply).
const OUTPUT_BUFFER: usize = 512;
/// Replies are sent once this many octets wait, even inside a pipelined batch.
const SEND_ABOVE: usize = 16 * 1024;
/// Commands logged by verb only after an AUTH command (LOGIN sends two credential lines).
const QUIET_AFTER_AUTH: u8 = 3;
/// Input kept while a hook runs (a driver that watches for a hang-up reads at most this far
/// ahead; see [`Machine::input_room`]).
pub const MAX_READ_AHEAD: usize = 64 * 1024;

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
    AuthResponse(smtp_auth::sasl::Response),
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
    /// STARTTLS: the 220 was sent and anything pipelined behind the command dropped (a driver
    /// that decodes frames itself must drop its own buffered octets now); run the TLS
    /// handshake on the connection, then [`Machine::tls_started`] or [`Machine::tls_failed`].
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

/// A `Framed` driver's codec and read buffer, lent for one [`Machine::next_framed`].
type Lent<'a> = Option<(&'a mut SmtpCodec, &'a mut BytesMut)>;

/// What the machine would otherwise read off its own codec and input buffer, kept from the
/// last frame a `Framed` driver's lent codec decoded.
#[derive(Debug, Default)]
struct FrameInput {
    /// The verb behind a `Frame::Command(Err(_))` (the codec's `error_verb`).
    error_verb: Option<&'static str>,
    /// Octets were buffered behind the frame (a client that did not wait for a reply).
    more: bool,
}

/// One SMTP session, sans-IO. See the [module documentation](self).
pub struct Machine {
    cfg: Arc<ServerConfig>,
    session: Session,
    /// The mail transaction: the envelope and its body's state.
    tx: Transaction,
    codec: SmtpCodec,
    /// Frames come from the driver's codec (a `Framed` driver), not from `input`.
    frames: Option<FrameInput>,
    /// The codec's mode changed since a lent codec last followed it.
    mode_changed: bool,
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
    /// The grace deadline once a shutdown began.
    shutdown: Option<Instant>,
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

impl Machine {
    /// A session for a client at `peer` connected to `local`, starting at `now`, with its own
    /// AUTH failure limiter: the configuration's ([`ServerConfig::limiter`]).
    pub fn new(
        config: Arc<ServerConfig>,
        peer: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) -> Self {
        let mut codec = SmtpCodec::new(config.max_line_length, DEFAULT_MAX_SASL_LINE);
        let mut options = smtp_proto::ParseOptions::default();
        options.lenient_helo = config.lenient_helo;
        options.lenient_paths = config.lenient_paths;
        options.forbid_bare_newline = config.forbid_bare_newline;
        codec.set_parse_options(options);
        Self {
            session_deadline: now + config.max_session_duration,
            cfg: config,
            session: Session::new(peer, local),
            tx: Transaction::default(),
            codec,
            frames: None,
            mode_changed: false,
            // Allocated at the first read (a `Framed` driver never reads into it).
            input: BytesMut::new(),
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
            shutdown: None,
        }
    }

    /// The session begins inside TLS (implicit TLS, RFC 8314): its facts and its
    /// `tls-exporter` channel binding. Call it before the first [`Machine::next`].
    pub fn set_tls(&mut self, info: TlsInfo, channel_binding: Option<Vec<u8>>) {
        self.session.tls = Some(info);
        self.channel_binding = channel_binding;
    }

    /// The session as the hooks see it.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The mail transaction as the hooks see it.
    pub fn envelope(&self) -> &Envelope {
        &self.tx.envelope
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

    /// Takes frames from the driver's own codec and read buffer, lent at each step
    /// ([`Machine::next_framed`]): a `tokio_util::codec::Framed` driver, whose codec
    /// ([`Machine::new_codec`]) the machine switches to the mode it reads in. The tokio server
    /// runs this way; the bytes API ([`Machine::enqueue_input`], [`Machine::next`]) serves
    /// drivers without a codec of their own.
    pub fn with_frames(mut self) -> Self {
        self.frames = Some(FrameInput::default());
        self
    }

    /// A codec configured as this machine's (line limits, parse options, mode), for a driver
    /// that decodes frames itself.
    pub fn new_codec(&self) -> SmtpCodec {
        self.codec.clone()
    }

    /// How much a driver should be able to read at once now: little between commands, more
    /// inside a message body.
    pub fn read_capacity(&self) -> usize {
        if matches!(self.state, State::Data { .. } | State::Bdat { .. }) {
            BODY_READ_BUFFER
        } else {
            IDLE_READ_BUFFER
        }
    }

    /// The next frame: decoded by the driver's lent codec from its lent buffer, or (without
    /// frames) from the input buffer.
    fn pull_frame(&mut self, lent: &mut Lent<'_>) -> Option<Frame> {
        let Some(input) = self.frames.as_mut() else {
            return self.codec.decode_frame(&mut self.input);
        };
        let (codec, buf) = lent.as_mut()?;
        if self.mode_changed {
            codec.set_mode(self.codec.mode().clone());
            self.mode_changed = false;
        }
        // Returned as decoded (not unwrapped and wrapped again: a frame is 168 octets).
        let frame = codec.decode_frame(buf);
        if let Some(f) = &frame {
            input.error_verb = codec.error_verb();
            input.more = !buf.is_empty();
            if matches!(f, Frame::DataEnd(_) | Frame::BdatEnd) {
                // The lent codec went back to commands by itself; ours follows.
                self.codec.set_mode(Mode::Command);
            }
        }
        frame
    }

    /// Octets wait behind the frame being handled (the client did not wait for a reply).
    fn input_pending(&self) -> bool {
        match &self.frames {
            Some(f) => f.more,
            None => !self.input.is_empty(),
        }
    }

    /// The verb behind the last `Frame::Command(Err(_))`.
    fn error_verb(&self) -> Option<&'static str> {
        match &self.frames {
            Some(f) => f.error_verb,
            None => self.codec.error_verb(),
        }
    }

    /// Switches what the codec reads next (a lent codec follows at the next decode).
    fn set_mode(&mut self, mode: Mode) {
        self.codec.set_mode(mode);
        self.mode_changed = true;
    }

    /// Appends octets the client sent.
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The input buffer, for reading into it in place (append only), sized for what the
    /// session reads now: small between commands, larger inside a message body.
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        let want = self.read_capacity();
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
        self.step(None)
    }

    /// [`Machine::next`] for a `Framed` driver (after [`Machine::with_frames`]): the frames
    /// buffered in the driver's read buffer are decoded by its codec, lent for this call, so a
    /// pipelined batch or a message body is handled in one call, not one frame per read.
    pub fn next_framed(&mut self, codec: &mut SmtpCodec, buffer: &mut BytesMut) -> Event {
        self.step(Some((codec, buffer)))
    }

    fn step(&mut self, mut lent: Lent<'_>) -> Event {
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
                State::Commands
                | State::Data { .. }
                | State::Bdat { .. }
                | State::AuthResponse
                | State::HookResponse => {
                    let idle = matches!(self.state, State::Commands);
                    if idle && let Some(r) = self.idle_end() {
                        self.close_after(Some(&r));
                        continue;
                    }
                    match self.pull_frame(&mut lent) {
                        Some(frame) => {
                            self.waiting_since = None;
                            if let Some(e) = self.frame(frame) {
                                return e;
                            }
                        }
                        None => {
                            if let Some(e) = self.wait(idle) {
                                return e;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One frame, read in the state whose codec mode produced it (the mode always follows the
    /// state): each kind goes to its room.
    fn frame(&mut self, frame: Frame) -> Option<Event> {
        match frame {
            Frame::Command(c) => self.command_frame(c),
            Frame::DataChunk(c) => return self.data_chunk(c),
            Frame::DataEnd(end) => self.data_end(end),
            Frame::BdatChunk(c) => return self.bdat_chunk(c),
            Frame::BdatEnd => self.bdat_end(),
            Frame::SaslResponse(line) => return self.sasl_response(line),
        }
        None
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
            if let Some(b) = self.tx.body_deadline {
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

    // ---- commands ----

    fn command_frame(&mut self, frame: Result<Command, smtp_proto::ProtoError>) {
        match frame {
            Ok(cmd) => self.command(cmd),
            Err(e) => {
                // Sequencing before syntax (protocol::sequencing): a malformed AUTH after a
                // successful one is 503, not 501.
                let refused = self.error_verb().and_then(|v| {
                    protocol::sequencing(&self.cfg, &self.session, &self.tx.envelope, v)
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
            protocol::check_mail(&self.cfg, &self.session, &self.tx.envelope, &from, &params)
        {
            self.send(&r);
            return;
        }
        self.pending = Pending::Mail(from, params);
        self.call(Awaiting::Mail, Call::Mail);
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParameters) {
        if let Err(r) = protocol::check_rcpt(&self.cfg, &self.tx.envelope, &to, &params) {
            self.send(&r);
            return;
        }
        self.pending = Pending::Rcpt(to, params);
        self.call(Awaiting::Rcpt, Call::Rcpt);
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
        // CVE-2011-0411: anything pipelined after STARTTLS was sent in the clear and must not
        // be executed inside the TLS session. A `Framed` driver drops its own read buffer at
        // the handshake (`Framed::into_parts`, see `Call::StartTls`).
        if !self.input.is_empty() {
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

    fn expect(&self, awaiting: Awaiting, given: &'static str) -> Result<(), WrongState> {
        match self.state {
            State::Awaiting(a) if a == awaiting => Ok(()),
            _ => Err(WrongState { given }),
        }
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
                        self.tx.envelope.auth = params.auth.clone();
                        self.tx.envelope.mail_from = Some(from);
                        self.tx.envelope.mail_params = params;
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
                        self.tx.envelope.rcpt_to.push(to);
                        self.tx.envelope.rcpt_params.push(params);
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

    /// Answers [`Call::StartTls`]: the handshake succeeded. The session starts over (RFC 3207
    /// §4.2) inside TLS.
    pub fn tls_started(
        &mut self,
        info: TlsInfo,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<(), WrongState> {
        self.expect(Awaiting::Tls, "tls_started")?;
        self.state = State::Commands;
        self.set_mode(Mode::Command);
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
mod tests;
