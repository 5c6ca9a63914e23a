//! [`ServerConfig`] and its builder: the [`ServerOptions`], the limiter built once from them,
//! and the parts that are not plain data.

use std::sync::Arc;
use std::time::Duration;

use smtp_auth::{Registry, ServerMechanism};
use smtp_proto::BarePolicy;

use crate::auth::AuthLimiter;
use crate::options::{InvalidOption, ServerOptions};

/// Maps a client certificate to an EXTERNAL identity.
pub type ExternalIdentity =
    Arc<dyn Fn(&rustls::pki_types::CertificateDer<'_>) -> Option<String> + Send + Sync>;

/// The server's configuration: its [`ServerOptions`] (which it reads as, through `Deref`), the
/// AUTH failure limiter built once from them (or shared, [`ServerConfigBuilder::limiter`]), and
/// what is not plain data: the mechanism registry, TLS, the EXTERNAL identity map and the
/// observer. Build it with [`ServerConfig::builder`]; the defaults are [`ServerOptions`]'s,
/// with PLAIN and LOGIN ([`Registry::default`]), no TLS (STARTTLS answers 454 4.7.0), no
/// EXTERNAL identity and no observer.
#[derive(Clone)]
pub struct ServerConfig {
    pub(crate) options: ServerOptions,
    /// `options.spool_dir`, shared by every message's spool file.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) spool: Arc<std::path::Path>,
    pub(crate) limiter: Arc<AuthLimiter>,
    pub(crate) registry: Registry,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) external_identity: Option<ExternalIdentity>,
    pub(crate) observer: Option<Arc<dyn crate::Observer>>,
}

impl std::ops::Deref for ServerConfig {
    type Target = ServerOptions;

    fn deref(&self) -> &ServerOptions {
        &self.options
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        f.debug_struct("ServerConfig")
            .field("hostname", &o.hostname)
            .field("max_message_size", &o.max_message_size)
            .field("max_recipients", &o.max_recipients)
            .field("read_timeout", &o.read_timeout)
            .field("auth_required", &o.auth_required)
            .field("auth_require_tls", &o.auth_require_tls)
            .field("mechanisms", &self.registry.names())
            .field("tls", &self.tls.is_some())
            .field("implicit_tls", &o.implicit_tls)
            .field("lmtp", &o.lmtp)
            .field("proxy_protocol", &o.proxy_protocol)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl ServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder {
            options: ServerOptions::default(),
            limiter: None,
            registry: Registry::default(),
            tls: None,
            external_identity: None,
            observer: None,
        }
    }

    /// The plain options.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The AUTH failure limiter every session of this configuration counts into.
    pub fn limiter(&self) -> &Arc<AuthLimiter> {
        &self.limiter
    }

    /// The mechanisms usable right now: none when TLS is required for AUTH and absent.
    pub(crate) fn auth_allowed(&self, tls: bool) -> bool {
        tls || !self.options.auth_require_tls
    }
}

/// Builds a [`ServerConfig`]: each method sets one option (no value is clamped), and
/// [`build`](Self::build) validates them all at once ([`ServerOptions::validate`]).
#[derive(Clone)]
pub struct ServerConfigBuilder {
    options: ServerOptions,
    limiter: Option<Arc<AuthLimiter>>,
    registry: Registry,
    tls: Option<Arc<rustls::ServerConfig>>,
    external_identity: Option<ExternalIdentity>,
    observer: Option<Arc<dyn crate::Observer>>,
}

impl std::fmt::Debug for ServerConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfigBuilder")
            .field("options", &self.options)
            .field("mechanisms", &self.registry.names())
            .field("limiter", &self.limiter.is_some())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerConfigBuilder {
    /// The name in the greeting and the EHLO reply.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.options.hostname = name.into();
        self
    }
    /// Text after the hostname in the 220 greeting.
    pub fn greeting(mut self, text: impl Into<String>) -> Self {
        self.options.greeting = text.into();
        self
    }
    /// Largest message in octets (advertised with SIZE).
    pub fn max_message_size(mut self, n: u64) -> Self {
        self.options.max_message_size = n;
        self
    }
    /// Most recipients per transaction.
    pub fn max_recipients(mut self, n: usize) -> Self {
        self.options.max_recipients = n;
        self
    }
    /// Longest command line in octets, CRLF included (at least 512).
    pub fn max_line_length(mut self, n: usize) -> Self {
        self.options.max_line_length = n;
        self
    }
    /// How long any read may wait (a client that is slower gets 421 4.4.2), and how long any
    /// write may stay blocked (a client that stops reading is disconnected).
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.options.read_timeout = d;
        self
    }
    /// Most simultaneous connections; more are answered 421 4.3.2.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.options.max_connections = n;
        self
    }
    /// Most simultaneous connections from one address (IPv6: one /64), counted after the
    /// PROXY header when PROXY protocol is on; more get 421 4.7.0 (Postfix's
    /// `smtpd_client_connection_count_limit`). 0 turns the limit off.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.options.max_connections_per_ip = n;
        self
    }
    /// Commands that do no work (NOOP, RSET, VRFY, HELP) a session may send before each
    /// further one counts as an error toward `max_errors` (Postfix's
    /// `smtpd_junk_command_limit`), so a client that only keeps its slot busy is dropped.
    pub fn max_junk_commands(mut self, n: u32) -> Self {
        self.options.max_junk_commands = n;
        self
    }
    /// The longest a session may last; past it the next command gets 421 4.4.2 and the
    /// connection closes (a message in progress is finished first).
    pub fn max_session_duration(mut self, d: Duration) -> Self {
        self.options.max_session_duration = d;
        self
    }
    /// Message bodies larger than this many octets are written to a spool file while they
    /// arrive instead of being held in memory.
    pub fn spool_threshold(mut self, n: usize) -> Self {
        self.options.spool_threshold = n;
        self
    }
    /// Where spool files are written (removed once the message is handled).
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.options.spool_dir = dir.into();
        self
    }
    /// The most octets of message bodies held in memory by the whole server; a body that
    /// would go past it is spooled, whatever its size.
    pub fn memory_budget(mut self, n: u64) -> Self {
        self.options.memory_budget = n;
        self
    }
    /// Require AUTH before MAIL (530 5.7.0 otherwise).
    pub fn auth_required(mut self, on: bool) -> Self {
        self.options.auth_required = on;
        self
    }
    /// Allow AUTH only over TLS (538 5.7.11 otherwise, and AUTH not advertised).
    pub fn auth_require_tls(mut self, on: bool) -> Self {
        self.options.auth_require_tls = on;
        self
    }
    /// Failed AUTH attempts per connection before 421 4.7.0 and close.
    pub fn max_auth_failures(mut self, n: u32) -> Self {
        self.options.max_auth_failures = n;
        self
    }
    /// Pause after each failed AUTH.
    pub fn auth_failure_delay(mut self, d: Duration) -> Self {
        self.options.auth_failure_delay = d;
        self
    }
    /// Failed AUTH attempts per remote IP within `window`, across connections; beyond it the
    /// IP's AUTH commands get 421 4.7.0.
    pub fn max_auth_failures_per_ip(mut self, n: u32, window: Duration) -> Self {
        self.options.max_auth_failures_per_ip = n;
        self.options.auth_failure_window = window;
        self
    }
    /// The ceiling of escalated locks: a lock that comes back within it after the last one
    /// ended lasts twice as long, up to `max` (default 24 hours; the window turns escalation
    /// off).
    pub fn max_auth_lock(mut self, max: Duration) -> Self {
        self.options.max_auth_lock = max;
        self
    }
    /// Failed AUTH attempts for one user within the per-IP `window`, from any address; beyond
    /// it every attempt for that user gets 454 4.7.0 without its credential being checked.
    /// 0 turns the limit off.
    pub fn max_auth_failures_per_user(mut self, n: u32) -> Self {
        self.options.max_auth_failures_per_user = n;
        self
    }
    /// Let the authenticator decide authorization identities (RFC 4616 §2 authzid, proxy
    /// login). Off by default: an authzid that is neither empty nor the authenticated user is
    /// refused with 535 5.7.8 before the authenticator is asked. Turn it on only when the
    /// authenticator checks `AuthRequest::authzid` itself (the HTTP provider's `authzid` field).
    /// SCRAM never allows proxying: no provider decision covers it.
    pub fn proxy_authorization(mut self, on: bool) -> Self {
        self.options.proxy_authorization = on;
        self
    }
    /// Accept a DATA body that the client sent before the 354 reply (RFC 2920 §3.1 forbids
    /// it; Postfix calls it "improper command pipelining after DATA"). Off by default: such a
    /// message is read to its end and refused with 554 5.5.0, so a smuggling or spam client
    /// that does not wait for the server gets nothing delivered.
    pub fn allow_pipelined_body(mut self, on: bool) -> Self {
        self.options.allow_pipelined_body = on;
        self
    }
    /// The mechanism registry (replaces the default PLAIN + LOGIN).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }
    /// Adds a mechanism, or replaces the one of the same name (aiosmtpd's `auth_MECHANISM`).
    /// Panics on a name that is not a valid SASL name, a programming error.
    pub fn mechanism(
        mut self,
        name: &str,
        factory: impl Fn() -> Box<dyn ServerMechanism> + Send + Sync + 'static,
    ) -> Self {
        if let Err(e) = self.registry.register(name, factory) {
            panic!("{e}");
        }
        self
    }
    /// Excludes a mechanism: neither advertised nor accepted (`auth_exclude_mechanism`).
    pub fn exclude_mechanism(mut self, name: &str) -> Self {
        self.registry.exclude(name);
        self
    }
    /// Enables STARTTLS (and implicit TLS listeners) with this rustls configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }
    /// Start every connection with a TLS handshake (RFC 8314 implicit TLS, port 465).
    pub fn implicit_tls(mut self, on: bool) -> Self {
        self.options.implicit_tls = on;
        self
    }
    /// Advertise and accept SMTPUTF8 (RFC 6531).
    pub fn smtputf8(mut self, on: bool) -> Self {
        self.options.smtputf8 = on;
        self
    }
    /// Advertise REQUIRETLS (RFC 8689) over TLS and accept `MAIL … REQUIRETLS` there (see
    /// [`ServerOptions::requiretls`](crate::ServerOptions::requiretls)).
    pub fn requiretls(mut self, on: bool) -> Self {
        self.options.requiretls = on;
        self
    }
    /// Speak LMTP (RFC 2033): LHLO, and one DATA reply per recipient.
    pub fn lmtp(mut self, on: bool) -> Self {
        self.options.lmtp = on;
        self
    }
    /// Expect a PROXY protocol v1 or v2 header first on every connection.
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.options.proxy_protocol = on;
        self
    }
    /// What to do with bare CR or LF in DATA.
    pub fn bare_line_endings(mut self, policy: BarePolicy) -> Self {
        self.options.bare_line_endings = policy;
        self
    }
    /// How long a DATA in flight may continue after shutdown begins.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.options.shutdown_grace = d;
        self
    }
    /// The longest an authenticator call may take; past it the attempt is a temporary failure
    /// (454 4.7.0). Providers with their own deadline (the HTTP provider's 1200 ms) answer first.
    pub fn auth_timeout(mut self, d: Duration) -> Self {
        self.options.auth_timeout = d;
        self
    }
    /// Syntax errors and unknown commands per connection before 421 4.7.0 and close.
    pub fn max_errors(mut self, n: u32) -> Self {
        self.options.max_errors = n;
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
        self.external_identity = Some(Arc::new(map));
        self
    }
    /// Reports connections, TLS handshakes, AUTH outcomes and messages to `observer` (for
    /// metrics). None by default.
    pub fn observer(mut self, observer: Arc<dyn crate::Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Accept a HELO/EHLO argument that is not a valid domain (`EHLO DESKTOP_42`, common from
    /// desktop clients) instead of answering 501. On by default: RFC 5321 §4.1.4 lets a server
    /// check the name but not refuse mail over it, and a bad name proves nothing about a
    /// client that authenticates.
    pub fn lenient_helo(mut self, on: bool) -> Self {
        self.options.lenient_helo = on;
        self
    }
    /// Accept MAIL/RCPT paths without angle brackets (`MAIL FROM: alice@example.org`) and
    /// extra spaces after the colon, as Postfix (`strict_rfc821_envelopes = no`, its default),
    /// go-smtp and aiosmtpd do. On by default: the address is still checked, and refusing
    /// these clients protects nothing. The parser itself stays strict unless asked.
    pub fn lenient_paths(mut self, on: bool) -> Self {
        self.options.lenient_paths = on;
        self
    }
    /// Refuse command lines that end with a bare LF (500 5.5.2), Postfix's
    /// `smtpd_forbid_bare_newline = reject`. Off by default (Postfix 3.9's `normalize`): the
    /// line is read as if it ended with CRLF. DATA refuses bare line endings either way
    /// (`bare_line_endings`), which is what SMTP smuggling needs.
    pub fn forbid_bare_newline(mut self, on: bool) -> Self {
        self.options.forbid_bare_newline = on;
        self
    }
    /// The longest a whole message body (DATA, or BDAT chunks up to LAST) may take to arrive;
    /// past it the client gets 421 4.4.2. Each read is also bounded by `read_timeout`.
    pub fn max_data_duration(mut self, d: Duration) -> Self {
        self.options.max_data_duration = d;
        self
    }
    /// Sets every plain option at once (an application's own configuration file, read with
    /// the `serde` feature).
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }
    /// Counts AUTH failures in `limiter`, shared with other servers of the process (one per
    /// listener), so failures count once across all of them. Its own limits apply; without it
    /// the configuration builds one from `max_auth_failures_per_ip`,
    /// `max_auth_failures_per_user` and the window.
    pub fn limiter(mut self, limiter: Arc<AuthLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }
    /// The configuration, or the first option that cannot work (named by its key).
    pub fn try_build(self) -> Result<ServerConfig, InvalidOption> {
        self.options.validate()?;
        let o = &self.options;
        let limiter = self
            .limiter
            .unwrap_or_else(|| Arc::new(AuthLimiter::from_options(o)));
        Ok(ServerConfig {
            spool: Arc::from(o.spool_dir.as_path()),
            limiter,
            options: self.options,
            registry: self.registry,
            tls: self.tls,
            external_identity: self.external_identity,
            observer: self.observer,
        })
    }
    /// The configuration. Panics on an option that cannot work (a programming error, like an
    /// invalid mechanism name); use [`try_build`](Self::try_build) for values read at run time.
    pub fn build(self) -> ServerConfig {
        match self.try_build() {
            Ok(c) => c,
            Err(e) => panic!("invalid server option {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_refuses_instead_of_clamping() {
        let e = ServerConfig::builder()
            .max_recipients(0)
            .try_build()
            .unwrap_err();
        assert_eq!(e.key, "max_recipients");
        let e = ServerConfig::builder()
            .max_line_length(100)
            .try_build()
            .unwrap_err();
        assert_eq!(e.key, "max_line_length");
        // A valid value is taken as given.
        let c = ServerConfig::builder().max_line_length(4096).build();
        assert_eq!(c.max_line_length, 4096);
        assert_eq!(c.options().max_line_length, 4096);
    }

    #[test]
    fn one_limiter_from_the_options_or_the_one_given() {
        let c = ServerConfig::builder()
            .max_auth_failures_per_ip(7, Duration::from_secs(60))
            .max_auth_failures_per_user(3)
            .build();
        assert_eq!(c.limiter().limits(), (7, 3, Duration::from_secs(60)));
        let shared = Arc::new(AuthLimiter::new(1, 2, Duration::from_secs(5)));
        let a = ServerConfig::builder().limiter(shared.clone()).build();
        let b = ServerConfig::builder().limiter(shared.clone()).build();
        assert!(Arc::ptr_eq(a.limiter(), &shared) && Arc::ptr_eq(b.limiter(), &shared));
        // Clones of a configuration count into the same limiter.
        assert!(Arc::ptr_eq(c.clone().limiter(), c.limiter()));
    }

    #[test]
    #[should_panic(expected = "invalid server option max_errors: must be greater than 0")]
    fn build_panics_on_an_option_that_cannot_work() {
        let _ = ServerConfig::builder().max_errors(0).build();
    }
}
