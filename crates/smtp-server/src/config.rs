//! Server options, with safe defaults (aiosmtpd's where it has one).

use std::sync::Arc;
use std::time::Duration;

use smtp_auth::{Registry, ServerMechanism};
use smtp_proto::BarePolicy;

/// Maps a client certificate to an EXTERNAL identity.
pub type ExternalIdentity =
    Arc<dyn Fn(&rustls::pki_types::CertificateDer<'_>) -> Option<String> + Send + Sync>;

/// Every option of the server. Build it with [`ServerConfig::builder`]; the defaults are:
///
/// | option | default |
/// | --- | --- |
/// | `hostname` | `localhost` |
/// | `greeting` | `ESMTP ready` |
/// | `max_message_size` | 32 MiB |
/// | `max_recipients` | 100 |
/// | `max_line_length` | 512 octets (RFC 5321 §4.5.3.1.4) |
/// | `read_timeout` | 300 s (RFC 5321 §4.5.3.2.7) |
/// | `spool_threshold` | 1 MiB: larger message bodies go to a spool file as they arrive |
/// | `spool_dir` | the system's temporary directory |
/// | `memory_budget` | 16 MiB for all message bodies in memory; beyond it bodies are spooled |
/// | `max_connections` | 1024 |
/// | `max_connections_per_ip` | 50 per address (IPv6: per /64), then 421 4.7.0 |
/// | `max_junk_commands` | 100 NOOP/RSET/VRFY/HELP, then each counts as an error |
/// | `max_session_duration` | 1 hour, then 421 4.4.2 at the next command |
/// | `auth_required` | false |
/// | `auth_require_tls` | true |
/// | `max_auth_failures` | 3 per connection, then 421 4.7.0 |
/// | `auth_failure_delay` | 1 s after each failure |
/// | `max_auth_failures_per_ip` | 30 per 10 minutes across connections |
/// | `max_auth_failures_per_user` | 10 per 10 minutes for one user from any address, then 454 4.7.0 |
/// | `proxy_authorization` | false: an authzid other than the user is refused (535 5.7.8) |
/// | `allow_pipelined_body` | false: a body sent before the 354 reply is refused (554 5.5.0) |
/// | mechanisms | PLAIN and LOGIN ([`Registry::default`]) |
/// | `tls` | none (STARTTLS answers 454 4.7.0) |
/// | `smtputf8` | true |
/// | `lmtp` | false |
/// | `proxy_protocol` | false |
/// | `bare_line_endings` | refused (550 5.6.0) |
/// | `shutdown_grace` | 30 s for DATA in flight |
/// | `auth_timeout` | 30 s per authenticator call, then 454 4.7.0 |
/// | `max_errors` | 20 syntax errors or unknown commands, then 421 4.7.0 and close |
/// | `external_identity` | none: EXTERNAL has no identity to offer |
/// | `max_data_duration` | 30 min for a whole message body, then 421 4.4.2 |
/// | `lenient_helo` | true: any one-word HELO/EHLO argument is accepted (RFC 5321 §4.1.4) |
/// | `lenient_paths` | true: `MAIL FROM: a@b` without angle brackets, extra spaces after the colon |
/// | `forbid_bare_newline` | false: a command line ending in a bare LF is read as if it ended in CRLF |
#[derive(Clone)]
pub struct ServerConfig {
    pub(crate) hostname: String,
    pub(crate) greeting: String,
    pub(crate) max_message_size: u64,
    pub(crate) max_recipients: usize,
    pub(crate) max_line_length: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) spool_threshold: usize,
    pub(crate) spool_dir: Arc<std::path::Path>,
    pub(crate) memory_budget: u64,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_junk_commands: u32,
    pub(crate) max_session_duration: Duration,
    pub(crate) auth_required: bool,
    pub(crate) auth_require_tls: bool,
    pub(crate) max_auth_failures: u32,
    pub(crate) auth_failure_delay: Duration,
    pub(crate) max_auth_failures_per_ip: u32,
    pub(crate) max_auth_failures_per_user: u32,
    pub(crate) proxy_authorization: bool,
    pub(crate) allow_pipelined_body: bool,
    pub(crate) auth_failure_window: Duration,
    pub(crate) registry: Registry,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) implicit_tls: bool,
    pub(crate) smtputf8: bool,
    pub(crate) lmtp: bool,
    pub(crate) proxy_protocol: bool,
    pub(crate) bare_policy: BarePolicy,
    pub(crate) shutdown_grace: Duration,
    pub(crate) auth_timeout: Duration,
    pub(crate) max_errors: u32,
    pub(crate) external_identity: Option<ExternalIdentity>,
    pub(crate) observer: Option<Arc<dyn crate::Observer>>,
    pub(crate) lenient_helo: bool,
    pub(crate) lenient_paths: bool,
    pub(crate) forbid_bare_newline: bool,
    pub(crate) max_data_duration: Duration,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("hostname", &self.hostname)
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("read_timeout", &self.read_timeout)
            .field("auth_required", &self.auth_required)
            .field("auth_require_tls", &self.auth_require_tls)
            .field("mechanisms", &self.registry.names())
            .field("tls", &self.tls.is_some())
            .field("implicit_tls", &self.implicit_tls)
            .field("lmtp", &self.lmtp)
            .field("proxy_protocol", &self.proxy_protocol)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            greeting: "ESMTP ready".into(),
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: smtp_proto::DEFAULT_MAX_LINE,
            read_timeout: Duration::from_secs(300),
            max_connections: 1024,
            spool_threshold: 1024 * 1024,
            spool_dir: Arc::from(std::env::temp_dir()),
            memory_budget: 16 * 1024 * 1024,
            max_connections_per_ip: 50,
            max_junk_commands: 100,
            max_session_duration: Duration::from_secs(3600),
            auth_required: false,
            auth_require_tls: true,
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            max_auth_failures_per_ip: 30,
            max_auth_failures_per_user: 10,
            proxy_authorization: false,
            allow_pipelined_body: false,
            auth_failure_window: Duration::from_secs(600),
            registry: Registry::default(),
            tls: None,
            implicit_tls: false,
            smtputf8: true,
            lmtp: false,
            proxy_protocol: false,
            bare_policy: BarePolicy::Reject,
            shutdown_grace: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            max_errors: 20,
            external_identity: None,
            observer: None,
            lenient_helo: true,
            lenient_paths: true,
            forbid_bare_newline: false,
            max_data_duration: Duration::from_secs(30 * 60),
        }
    }
}

impl ServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder(Self::default())
    }

    /// The mechanisms usable right now: none when TLS is required for AUTH and absent.
    pub(crate) fn auth_allowed(&self, tls: bool) -> bool {
        tls || !self.auth_require_tls
    }
}

/// Builds a [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder(ServerConfig);

impl ServerConfigBuilder {
    /// The name in the greeting and the EHLO reply.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.0.hostname = name.into();
        self
    }
    /// Text after the hostname in the 220 greeting.
    pub fn greeting(mut self, text: impl Into<String>) -> Self {
        self.0.greeting = text.into();
        self
    }
    /// Largest message in octets (advertised with SIZE).
    pub fn max_message_size(mut self, n: u64) -> Self {
        self.0.max_message_size = n;
        self
    }
    /// Most recipients per transaction.
    pub fn max_recipients(mut self, n: usize) -> Self {
        self.0.max_recipients = n.max(1);
        self
    }
    /// Longest command line in octets, CRLF included (at least 512).
    pub fn max_line_length(mut self, n: usize) -> Self {
        self.0.max_line_length = n.max(smtp_proto::DEFAULT_MAX_LINE);
        self
    }
    /// How long any read may wait (a client that is slower gets 421 4.4.2), and how long any
    /// write may stay blocked (a client that stops reading is disconnected).
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.0.read_timeout = d;
        self
    }
    /// Most simultaneous connections; more are answered 421 4.3.2.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.0.max_connections = n.max(1);
        self
    }
    /// Most simultaneous connections from one address (IPv6: one /64), counted after the
    /// PROXY header when PROXY protocol is on; more get 421 4.7.0 (Postfix's
    /// `smtpd_client_connection_count_limit`). 0 turns the limit off.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.0.max_connections_per_ip = n;
        self
    }
    /// Commands that do no work (NOOP, RSET, VRFY, HELP) a session may send before each
    /// further one counts as an error toward `max_errors` (Postfix's
    /// `smtpd_junk_command_limit`), so a client that only keeps its slot busy is dropped.
    pub fn max_junk_commands(mut self, n: u32) -> Self {
        self.0.max_junk_commands = n;
        self
    }
    /// The longest a session may last; past it the next command gets 421 4.4.2 and the
    /// connection closes (a message in progress is finished first).
    pub fn max_session_duration(mut self, d: Duration) -> Self {
        self.0.max_session_duration = d;
        self
    }
    /// Message bodies larger than this many octets are written to a spool file while they
    /// arrive instead of being held in memory.
    pub fn spool_threshold(mut self, n: usize) -> Self {
        self.0.spool_threshold = n;
        self
    }
    /// Where spool files are written (removed once the message is handled).
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.0.spool_dir = Arc::from(dir.into());
        self
    }
    /// The most octets of message bodies held in memory by the whole server; a body that
    /// would go past it is spooled, whatever its size.
    pub fn memory_budget(mut self, n: u64) -> Self {
        self.0.memory_budget = n;
        self
    }
    /// Require AUTH before MAIL (530 5.7.0 otherwise).
    pub fn auth_required(mut self, on: bool) -> Self {
        self.0.auth_required = on;
        self
    }
    /// Allow AUTH only over TLS (538 5.7.11 otherwise, and AUTH not advertised).
    pub fn auth_require_tls(mut self, on: bool) -> Self {
        self.0.auth_require_tls = on;
        self
    }
    /// Failed AUTH attempts per connection before 421 4.7.0 and close.
    pub fn max_auth_failures(mut self, n: u32) -> Self {
        self.0.max_auth_failures = n.max(1);
        self
    }
    /// Pause after each failed AUTH.
    pub fn auth_failure_delay(mut self, d: Duration) -> Self {
        self.0.auth_failure_delay = d;
        self
    }
    /// Failed AUTH attempts per remote IP within `window`, across connections; beyond it the
    /// IP's AUTH commands get 421 4.7.0.
    pub fn max_auth_failures_per_ip(mut self, n: u32, window: Duration) -> Self {
        self.0.max_auth_failures_per_ip = n.max(1);
        self.0.auth_failure_window = window;
        self
    }
    /// Failed AUTH attempts for one user within the per-IP `window`, from any address; beyond
    /// it every attempt for that user gets 454 4.7.0 without its credential being checked.
    /// 0 turns the limit off.
    pub fn max_auth_failures_per_user(mut self, n: u32) -> Self {
        self.0.max_auth_failures_per_user = n;
        self
    }
    /// Let the authenticator decide authorization identities (RFC 4616 §2 authzid, proxy
    /// login). Off by default: an authzid that is neither empty nor the authenticated user is
    /// refused with 535 5.7.8 before the authenticator is asked. Turn it on only when the
    /// authenticator checks `AuthRequest::authzid` itself (the HTTP provider's `authzid` field).
    /// SCRAM never allows proxying: no provider decision covers it.
    pub fn proxy_authorization(mut self, on: bool) -> Self {
        self.0.proxy_authorization = on;
        self
    }
    /// Accept a DATA body that the client sent before the 354 reply (RFC 2920 §3.1 forbids
    /// it; Postfix calls it "improper command pipelining after DATA"). Off by default: such a
    /// message is read to its end and refused with 554 5.5.0, so a smuggling or spam client
    /// that does not wait for the server gets nothing delivered.
    pub fn allow_pipelined_body(mut self, on: bool) -> Self {
        self.0.allow_pipelined_body = on;
        self
    }
    /// The mechanism registry (replaces the default PLAIN + LOGIN).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.0.registry = registry;
        self
    }
    /// Adds a mechanism, or replaces the one of the same name (aiosmtpd's `auth_MECHANISM`).
    /// Panics on a name that is not a valid SASL name, a programming error.
    pub fn mechanism(
        mut self,
        name: &str,
        factory: impl Fn() -> Box<dyn ServerMechanism> + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.0.registry.register(name, factory) {
            panic!("{e}");
        }
        self
    }
    /// Excludes a mechanism: neither advertised nor accepted (`auth_exclude_mechanism`).
    pub fn exclude_mechanism(mut self, name: &str) -> Self {
        self.0.registry.exclude(name);
        self
    }
    /// Enables STARTTLS (and implicit TLS listeners) with this rustls configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.0.tls = Some(config);
        self
    }
    /// Start every connection with a TLS handshake (RFC 8314 implicit TLS, port 465).
    pub fn implicit_tls(mut self, on: bool) -> Self {
        self.0.implicit_tls = on;
        self
    }
    /// Advertise and accept SMTPUTF8 (RFC 6531).
    pub fn smtputf8(mut self, on: bool) -> Self {
        self.0.smtputf8 = on;
        self
    }
    /// Speak LMTP (RFC 2033): LHLO, and one DATA reply per recipient.
    pub fn lmtp(mut self, on: bool) -> Self {
        self.0.lmtp = on;
        self
    }
    /// Expect a PROXY protocol v1 or v2 header first on every connection.
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.0.proxy_protocol = on;
        self
    }
    /// What to do with bare CR or LF in DATA.
    pub fn bare_line_endings(mut self, policy: BarePolicy) -> Self {
        self.0.bare_policy = policy;
        self
    }
    /// How long a DATA in flight may continue after shutdown begins.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.0.shutdown_grace = d;
        self
    }
    /// The longest an authenticator call may take; past it the attempt is a temporary failure
    /// (454 4.7.0). Providers with their own deadline (the HTTP provider's 1200 ms) answer first.
    pub fn auth_timeout(mut self, d: Duration) -> Self {
        self.0.auth_timeout = d;
        self
    }
    /// Syntax errors and unknown commands per connection before 421 4.7.0 and close.
    pub fn max_errors(mut self, n: u32) -> Self {
        self.0.max_errors = n.max(1);
        self
    }
    /// Maps a verified TLS client certificate to the identity SASL EXTERNAL authenticates
    /// (RFC 4422 Appendix A). The TLS configuration must request client certificates (for
    /// example rustls' `WebPkiClientVerifier` with `allow_unauthenticated()`); the function
    /// picks the identity (a subject name, a fingerprint lookup, ...), so this crate needs no
    /// X.509 parser.
    pub fn external_identity(
        mut self,
        map: impl Fn(&rustls::pki_types::CertificateDer<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.0.external_identity = Some(Arc::new(map));
        self
    }
    /// Reports connections, TLS handshakes, AUTH outcomes and messages to `observer` (for
    /// metrics). None by default.
    pub fn observer(mut self, observer: Arc<dyn crate::Observer>) -> Self {
        self.0.observer = Some(observer);
        self
    }

    /// Accept a HELO/EHLO argument that is not a valid domain (`EHLO DESKTOP_42`, common from
    /// desktop clients) instead of answering 501. On by default: RFC 5321 §4.1.4 lets a server
    /// check the name but not refuse mail over it, and a bad name proves nothing about a
    /// client that authenticates.
    pub fn lenient_helo(mut self, on: bool) -> Self {
        self.0.lenient_helo = on;
        self
    }
    /// Accept MAIL/RCPT paths without angle brackets (`MAIL FROM: alice@example.org`) and
    /// extra spaces after the colon, as Postfix (`strict_rfc821_envelopes = no`, its default),
    /// go-smtp and aiosmtpd do. On by default: the address is still checked, and refusing
    /// these clients protects nothing. The parser itself stays strict unless asked.
    pub fn lenient_paths(mut self, on: bool) -> Self {
        self.0.lenient_paths = on;
        self
    }
    /// Refuse command lines that end with a bare LF (500 5.5.2), Postfix's
    /// `smtpd_forbid_bare_newline = reject`. Off by default (Postfix 3.9's `normalize`): the
    /// line is read as if it ended with CRLF. DATA refuses bare line endings either way
    /// (`bare_line_endings`), which is what SMTP smuggling needs.
    pub fn forbid_bare_newline(mut self, on: bool) -> Self {
        self.0.forbid_bare_newline = on;
        self
    }
    /// The longest a whole message body (DATA, or BDAT chunks up to LAST) may take to arrive;
    /// past it the client gets 421 4.4.2. Each read is also bounded by `read_timeout`.
    pub fn max_data_duration(mut self, d: Duration) -> Self {
        self.0.max_data_duration = d;
        self
    }
    /// The configuration.
    pub fn build(self) -> ServerConfig {
        self.0
    }
}
