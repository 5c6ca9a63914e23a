//! The TOML configuration: every server option of `smtp-server`, listeners, TLS, the auth
//! backend, delivery and logging. Unknown keys and bad values are errors that name the key and
//! the line. Relative paths are relative to the working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    #[serde(default)]
    pub server: ServerSection,
    /// `[[listener]]`, at least one.
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<Listener>,
    /// `[tls]`, needed by `starttls` and `implicit` listeners.
    pub tls: Option<TlsSection>,
    /// `[auth]`
    #[serde(default)]
    pub auth: AuthSection,
    /// `[delivery]`
    #[serde(default)]
    pub delivery: Delivery,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[metrics]`: a Prometheus endpoint, off when absent.
    pub metrics: Option<MetricsSection>,
    /// `[limiter]`: the AUTH failure limiter (and the sending counts) shared through Redis,
    /// off (per instance) when absent.
    pub limiter: Option<LimiterSection>,
    /// `[rate_limits]`: sending limits per login and per address, on by default.
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    /// `[[dkim]]`: signing keys per sender domain; authenticated submissions from those
    /// domains are signed (see [`crate::dkim`]).
    #[serde(default)]
    pub dkim: Vec<crate::dkim::DkimSection>,
}

/// `[rate_limits]`: how much an authenticated login, or an address that did not log in, may
/// send per hour (see `smtpd::sending`). `0` turns a limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsSection {
    /// Messages accepted per login per hour.
    pub messages_per_hour: u32,
    /// Recipients accepted per login per hour.
    pub recipients_per_hour: u32,
    /// Messages accepted per client address (IPv6: /64) per hour, for sessions that did not
    /// log in.
    pub ip_messages_per_hour: u32,
    /// A file of `login: messages, recipients` lines, a login's own budget (reloaded on
    /// SIGHUP).
    pub overrides: Option<PathBuf>,
}

impl Default for RateLimitsSection {
    fn default() -> Self {
        Self {
            messages_per_hour: 500,
            recipients_per_hour: 2000,
            ip_messages_per_hour: 2000,
            overrides: None,
        }
    }
}

/// `[limiter]`: share the AUTH failure counts (`[server] max_auth_failures_per_ip`,
/// `max_auth_failures_per_user`, `auth_failure_window_secs`) with every instance that uses the
/// same Redis and `key_prefix`. `Debug` never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterSection {
    /// Redis's `host:port`, e.g. `127.0.0.1:6379`; `rediss://host:port` for TLS.
    pub redis: String,
    /// Connect with TLS (as `rediss://` does): the password crosses the network encrypted and
    /// the server's certificate is verified for `host`.
    #[serde(default)]
    pub tls: bool,
    /// PEM CA certificates Redis's certificate must chain to (default: Mozilla's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Prepended to every key (`{prefix}:ip:{address}`, `{prefix}:user:{name}`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Bound on connecting to Redis and on each check, in milliseconds: past it the instance
    /// decides alone.
    #[serde(default = "default_limiter_timeout")]
    pub timeout_ms: u64,
    /// Redis ACL user (with `password`); without it `password` is for Redis's `default` user.
    pub username: Option<String>,
    /// Redis password (`requirepass` or the ACL user's).
    pub password: Option<String>,
    /// A file holding the password instead (one line), kept out of the TOML.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_key_prefix() -> String {
    "smtpd:authfail".into()
}

fn default_limiter_timeout() -> u64 {
    200
}

impl std::fmt::Debug for LimiterSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterSection")
            .field("redis", &self.redis)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[metrics]`: where the Prometheus text endpoint listens (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// The listening address, e.g. `127.0.0.1:9125` (keep it off the public interface).
    pub address: std::net::SocketAddr,
}

/// `[server]`: the options of `smtp_server::ServerConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Name in the greeting, EHLO and Received headers.
    pub hostname: String,
    /// Greeting text after the hostname.
    pub greeting: String,
    /// Largest message in octets.
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest command line (at least 512).
    pub max_line_length: usize,
    /// Read timeout in seconds.
    pub read_timeout_secs: u64,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Require AUTH before MAIL.
    pub auth_required: bool,
    /// Allow AUTH only over TLS.
    pub auth_require_tls: bool,
    /// Failed AUTH attempts per connection before 421.
    pub max_auth_failures: u32,
    /// Pause after a failed AUTH, in milliseconds.
    pub auth_failure_delay_ms: u64,
    /// Failed AUTH attempts per IP within the window.
    pub max_auth_failures_per_ip: u32,
    /// The per-IP window in seconds.
    pub auth_failure_window_secs: u64,
    /// The ceiling of an escalated lock in seconds (a lock that comes back soon doubles).
    pub max_auth_lock_secs: u64,
    /// Mechanisms offered, in order (PLAIN, LOGIN; the http backend may add XOAUTH2,
    /// OAUTHBEARER).
    pub mechanisms: Vec<String>,
    /// Mechanisms neither advertised nor accepted.
    pub exclude_mechanisms: Vec<String>,
    /// Advertise SMTPUTF8.
    pub smtputf8: bool,
    /// Advertise REQUIRETLS (RFC 8689) over TLS: such a message is delivered to the Maildir,
    /// or relayed only over verified TLS to an upstream that offers REQUIRETLS.
    pub requiretls: bool,
    /// Speak LMTP.
    pub lmtp: bool,
    /// Expect PROXY protocol headers.
    pub proxy_protocol: bool,
    /// `reject` or `normalize` bare CR/LF in DATA.
    pub bare_line_endings: BareLineEndings,
    /// Seconds a DATA in flight may take after shutdown starts.
    pub shutdown_grace_secs: u64,
    /// Seconds an authentication backend may take before 454 4.7.0.
    pub auth_timeout_secs: u64,
    /// Syntax errors and unknown commands per connection before 421 and close.
    pub max_errors: u32,
    /// Accept HELO/EHLO arguments that are not domains.
    pub lenient_helo: bool,
    /// Seconds a whole message body may take to arrive.
    pub max_data_duration_secs: u64,
    /// Failed AUTH attempts for one user (from any address) within the window before every
    /// attempt for that user gets 454 4.7.0; 0 turns it off.
    pub max_auth_failures_per_user: u32,
    /// Accept a DATA body sent before the 354 reply (RFC 2920 §3.1 forbids it).
    pub allow_pipelined_body: bool,
    /// Which MAIL FROM addresses an authenticated user may use: `any`, `exact`, `domain` or
    /// `map`.
    pub sender_login: SenderLogin,
    /// The `address-or-@domain: user1, user2` file of `sender_login = "map"`.
    pub sender_login_map: Option<PathBuf>,
    /// Add `Date:` and `Message-ID:` to a message an authenticated user submits without them
    /// (RFC 6409 §8.2, §8.3).
    pub add_missing_headers: bool,
    /// Bind the `From:` and `Sender:` header fields of an authenticated submission to the
    /// login under `sender_login` (a mismatch: 550 5.7.1 at the end of DATA); no effect with
    /// `sender_login = "any"`.
    pub bind_header_from: bool,
    /// Threads that verify passwords (argon2) for the file backend; 0: one per core.
    pub auth_workers: usize,
    /// Accept MAIL/RCPT paths without angle brackets and extra spaces after the colon.
    pub lenient_paths: bool,
    /// Refuse command lines that end with a bare LF.
    pub forbid_bare_newline: bool,
    /// Simultaneous connections from one address (IPv6: per /64); 0: no limit.
    pub max_connections_per_ip: usize,
    /// NOOP/RSET/VRFY/HELP per session before each further one counts as an error.
    pub max_junk_commands: u32,
    /// Seconds a session may last.
    pub max_session_duration_secs: u64,
    /// The listen backlog of every listener (the kernel caps it at net.core.somaxconn).
    pub listen_backlog: u32,
    /// Message bodies larger than this many octets are spooled to disk as they arrive.
    pub spool_threshold: usize,
    /// Where spool files go (default: the system's temporary directory).
    pub spool_dir: Option<PathBuf>,
    /// The most octets of message bodies held in memory by the whole server.
    pub memory_budget: u64,
}

/// Which MAIL FROM addresses an authenticated user may use (Postfix's
/// `reject_sender_login_mismatch`). A mismatch gets 553 5.7.1. The null sender `<>` is always
/// allowed (bounces impersonate no one), and unauthenticated sessions are not checked (they
/// only exist with `auth_required = false`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SenderLogin {
    /// No check: any authenticated user may send as anyone.
    Any,
    /// The address is the login itself (logins that are addresses), or `login@hostname` for
    /// a login without `@`. The default.
    #[default]
    Exact,
    /// The address is in the login's domain (the part after `@`, or `hostname` for a login
    /// without `@`).
    Domain,
    /// The address (or its `@domain`) is listed in `sender_login_map` with the login among its
    /// owners; an unlisted address is refused.
    Map,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            greeting: "ESMTP smtpd".into(),
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 512,
            read_timeout_secs: 300,
            max_connections: 1024,
            auth_required: true,
            auth_require_tls: true,
            max_auth_failures: 3,
            auth_failure_delay_ms: 1000,
            max_auth_failures_per_ip: 30,
            auth_failure_window_secs: 600,
            max_auth_lock_secs: 24 * 3600,
            mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            exclude_mechanisms: Vec::new(),
            smtputf8: true,
            requiretls: true,
            lmtp: false,
            proxy_protocol: false,
            bare_line_endings: BareLineEndings::Reject,
            shutdown_grace_secs: 30,
            auth_timeout_secs: 30,
            max_errors: 20,
            lenient_helo: true,
            max_data_duration_secs: 1800,
            max_auth_failures_per_user: 10,
            allow_pipelined_body: false,
            sender_login: SenderLogin::Exact,
            sender_login_map: None,
            add_missing_headers: true,
            bind_header_from: true,
            auth_workers: 0,
            lenient_paths: true,
            forbid_bare_newline: false,
            max_connections_per_ip: 50,
            max_junk_commands: 100,
            max_session_duration_secs: 3600,
            listen_backlog: 1024,
            spool_threshold: 1024 * 1024,
            spool_dir: None,
            memory_budget: 16 * 1024 * 1024,
        }
    }
}

impl ServerSection {
    /// The server options these keys set: the one conversion from `[server]` to
    /// `smtp-server`'s [`ServerOptions`](smtp_server::ServerOptions), whose one validation
    /// [`Config::parse`] applies (naming the key and its line).
    pub fn options(&self) -> smtp_server::ServerOptions {
        use std::time::Duration;
        let mut o = smtp_server::ServerOptions::default();
        o.hostname = self.hostname.clone();
        o.greeting = self.greeting.clone();
        o.max_message_size = self.max_message_size;
        o.max_recipients = self.max_recipients;
        o.max_line_length = self.max_line_length;
        o.read_timeout = Duration::from_secs(self.read_timeout_secs);
        o.spool_threshold = self.spool_threshold;
        o.spool_dir = self.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        o.memory_budget = self.memory_budget;
        o.max_connections = self.max_connections;
        o.max_connections_per_ip = self.max_connections_per_ip;
        o.max_junk_commands = self.max_junk_commands;
        o.max_session_duration = Duration::from_secs(self.max_session_duration_secs);
        o.auth_required = self.auth_required;
        o.auth_require_tls = self.auth_require_tls;
        o.max_auth_failures = self.max_auth_failures;
        o.auth_failure_delay = Duration::from_millis(self.auth_failure_delay_ms);
        o.max_auth_failures_per_ip = self.max_auth_failures_per_ip;
        o.max_auth_failures_per_user = self.max_auth_failures_per_user;
        o.auth_failure_window = Duration::from_secs(self.auth_failure_window_secs);
        o.max_auth_lock = Duration::from_secs(self.max_auth_lock_secs);
        // Set by `[auth]` (the http backend's send_authzid).
        o.proxy_authorization = false;
        o.allow_pipelined_body = self.allow_pipelined_body;
        // Set per listener.
        o.implicit_tls = false;
        o.smtputf8 = self.smtputf8;
        o.requiretls = self.requiretls;
        o.lmtp = self.lmtp;
        o.proxy_protocol = self.proxy_protocol;
        o.bare_line_endings = match self.bare_line_endings {
            BareLineEndings::Reject => smtp_proto::BarePolicy::Reject,
            BareLineEndings::Normalize => smtp_proto::BarePolicy::Normalize,
        };
        o.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        o.auth_timeout = Duration::from_secs(self.auth_timeout_secs);
        o.max_errors = self.max_errors;
        o.max_data_duration = Duration::from_secs(self.max_data_duration_secs);
        o.lenient_helo = self.lenient_helo;
        o.lenient_paths = self.lenient_paths;
        o.forbid_bare_newline = self.forbid_bare_newline;
        o
    }
}

/// What to do with bare CR/LF in DATA.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BareLineEndings {
    /// Refuse the message (550 5.6.0).
    Reject,
    /// Replace them with CRLF.
    Normalize,
}

/// `[[listener]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `address = "127.0.0.1:2525"`
    pub address: SocketAddr,
    /// `none`, `starttls` or `implicit`.
    #[serde(default)]
    pub tls: ListenerTls,
}

/// TLS on a listener.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ListenerTls {
    /// Plain SMTP, no STARTTLS.
    #[default]
    None,
    /// STARTTLS offered.
    Starttls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        address: "127.0.0.1:2525".parse().expect("a valid address"),
        tls: ListenerTls::None,
    }]
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates whose client certificates are requested and verified (for
    /// EXTERNAL). Clients without a certificate can still connect.
    pub client_ca: Option<PathBuf>,
}

/// `[auth]`. `Debug` never shows the bearer token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuthSection {
    /// `backend = "file"`: a users file of `name:argon2-PHC-string` lines.
    File {
        /// The users file.
        users_file: PathBuf,
        /// For EXTERNAL: a file of `<sha256 fingerprint> <user>` lines mapping verified client
        /// certificates to users.
        #[serde(default)]
        external_map: Option<PathBuf>,
        /// Accept weak password schemes (`{PLAIN}`, `{PLAIN-MD5}`, unsalted `{SHA}`,
        /// `{SHA256}`, `{SHA512}`) in the users file; off: such a line is refused, naming it.
        #[serde(default)]
        allow_weak_schemes: bool,
        /// The credential cache (on by default; a reload invalidates it exactly).
        #[serde(default = "yes")]
        cache: bool,
        /// Seconds a verified credential is remembered (default 3600).
        #[serde(default)]
        cache_ttl_secs: Option<u64>,
        /// Most cached credentials (default 100,000, least recently used evicted).
        #[serde(default = "default_cache_entries")]
        cache_max_entries: usize,
        /// Seconds a refused credential is remembered (default 0: not at all).
        #[serde(default)]
        cache_negative_ttl_secs: u64,
        /// `[auth.oauth]`: XOAUTH2 and OAUTHBEARER tokens checked in the server.
        #[serde(default)]
        oauth: Option<OAuthSection>,
    },
    /// `backend = "http"`: the HTTP provider.
    Http {
        /// The URL to POST to.
        url: String,
        /// Sent as `Authorization: Bearer`.
        #[serde(default)]
        bearer_token: String,
        /// A file holding the bearer token instead (one line), kept out of the TOML.
        #[serde(default)]
        bearer_token_file: Option<PathBuf>,
        /// Milliseconds for the whole request (default 1200).
        #[serde(default = "default_http_timeout")]
        timeout_ms: u64,
        /// Send the authorization identity as an extra `authzid` JSON field and let the
        /// service decide proxy logins (off: `smtpauth`'s exact JSON, foreign authzids refused).
        #[serde(default)]
        send_authzid: bool,
        /// The credential cache (on by default: the service is asked once per TTL per
        /// credential, not once per message).
        #[serde(default = "yes")]
        cache: bool,
        /// Seconds a verified credential is remembered (default 300: the service's own
        /// changes, a disabled account, take effect within it).
        #[serde(default)]
        cache_ttl_secs: Option<u64>,
        /// Most cached credentials (default 100,000).
        #[serde(default = "default_cache_entries")]
        cache_max_entries: usize,
        /// Seconds a refused credential is remembered (default 0: not at all).
        #[serde(default)]
        cache_negative_ttl_secs: u64,
        /// `[auth.oauth]`: XOAUTH2 and OAUTHBEARER tokens checked in the server.
        #[serde(default)]
        oauth: Option<OAuthSection>,
    },
    /// `backend = "ldap"`: bind to an LDAP directory as the user (PLAIN and LOGIN).
    Ldap(Box<LdapSection>),
    /// `backend = "sql"`: a query returning the stored hash (PLAIN, LOGIN; SCRAM-SHA-256 with
    /// a `scram` column).
    Sql(Box<SqlSection>),
    /// `backend = "dovecot"`: Dovecot's authentication service, as Postfix's
    /// `smtpd_sasl_type = dovecot` uses it. PLAIN and LOGIN are checked there through the
    /// credential cache; every other offered mechanism (SCRAM-SHA-256, XOAUTH2, OAUTHBEARER)
    /// runs inside Dovecot.
    Dovecot {
        /// Dovecot's `auth-client` listener: a Unix socket path or `host:port`.
        socket: String,
        /// Connections kept open to it (each carries many logins at once; default 4).
        #[serde(default = "default_dovecot_connections")]
        connections: usize,
        /// Dovecot's own per-address penalty (a growing delay, up to 15 s, after failures
        /// from an address; on by default, as under Postfix). `false` asks Dovecot to skip it
        /// (`no-penalty`): `smtpd`'s failure limiter still applies.
        #[serde(default = "yes")]
        penalty: bool,
        /// The credential cache for PLAIN and LOGIN (on by default).
        #[serde(default = "yes")]
        cache: bool,
        /// Seconds a verified credential is remembered (default 300: a password changed or
        /// an account disabled in Dovecot's store takes effect within it).
        #[serde(default)]
        cache_ttl_secs: Option<u64>,
        /// Most cached credentials (default 100,000).
        #[serde(default = "default_cache_entries")]
        cache_max_entries: usize,
        /// Seconds a refused credential is remembered (default 0: not at all).
        #[serde(default)]
        cache_negative_ttl_secs: u64,
        /// `[auth.oauth]`: XOAUTH2 and OAUTHBEARER tokens checked in the server instead of
        /// in Dovecot.
        #[serde(default)]
        oauth: Option<OAuthSection>,
    },
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File {
                users_file,
                external_map,
                ..
            } => f
                .debug_struct("File")
                .field("users_file", users_file)
                .field("external_map", external_map)
                .field("cache", &self.cache())
                .finish(),
            Self::Http {
                url,
                bearer_token,
                timeout_ms,
                send_authzid,
                ..
            } => f
                .debug_struct("Http")
                .field("url", url)
                .field(
                    "bearer_token",
                    &(!bearer_token.is_empty()).then_some("<redacted>"),
                )
                .field("timeout_ms", timeout_ms)
                .field("send_authzid", send_authzid)
                .field("cache", &self.cache())
                .finish(),
            Self::Ldap(l) => l.fmt(f),
            Self::Sql(q) => q.fmt(f),
            Self::Dovecot {
                socket,
                connections,
                penalty,
                ..
            } => f
                .debug_struct("Dovecot")
                .field("socket", socket)
                .field("connections", connections)
                .field("penalty", penalty)
                .field("cache", &self.cache())
                .finish(),
        }
    }
}

/// `[auth.oauth]`: bearer tokens (XOAUTH2, OAUTHBEARER) checked by the server itself against
/// the identity provider's keys, beside the password store `[auth]` names (see
/// `smtp_auth_oauth`). The mechanism picks the store.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSection {
    /// The identity provider's JWKS (`https://`, `http://` for loopback only), for JWTs.
    #[serde(default)]
    pub jwks_url: String,
    /// The token introspection endpoint (RFC 7662), for opaque tokens.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// This server's client id at the introspection endpoint.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file whose first line is the secret, instead of `client_secret`.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The `iss` every token must carry.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` values accepted (one must match); empty: not checked.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Scopes every token must grant.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The claim that names the user: `email` (default), `preferred_username`, `sub` or `upn`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The OpenID configuration URL told to a client whose token is refused (RFC 7628).
    #[serde(default)]
    pub openid_configuration: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 60).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// PEM CA certificates the JWKS server's certificate must chain to (default: Mozilla's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The least seconds between two JWKS fetches caused by an unknown key id (default 60).
    #[serde(default = "default_leeway")]
    pub jwks_refetch_secs: u64,
    /// Seconds a token verified for a user is taken again without a check, never past its
    /// `exp` (default 300); 0: every login checks its token.
    #[serde(default = "default_remember_secs")]
    pub remember_secs: u64,
}

impl std::fmt::Debug for OAuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSection")
            .field("jwks_url", &self.jwks_url)
            .field("introspection_url", &self.introspection_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .field("username_claim", &self.username_claim)
            .finish_non_exhaustive()
    }
}

fn default_username_claim() -> String {
    "email".into()
}

fn default_leeway() -> u64 {
    60
}

fn default_remember_secs() -> u64 {
    300
}

impl OAuthSection {
    /// The provider's configuration (TLS roots not loaded); `timeout` bounds a JWKS fetch.
    pub fn provider_config(
        &self,
        timeout: std::time::Duration,
    ) -> Result<smtp_auth_oauth::OAuthConfig, (&'static str, String)> {
        if !self.jwks_url.is_empty() {
            smtp_auth_oauth::check_url(&self.jwks_url).map_err(|e| ("jwks_url", e.to_string()))?;
        }
        if !["email", "preferred_username", "sub", "upn"].contains(&self.username_claim.as_str()) {
            return Err((
                "username_claim",
                "must be email, preferred_username, sub or upn".into(),
            ));
        }
        let mut c = smtp_auth_oauth::OAuthConfig::new(self.jwks_url.clone());
        c.issuer = self.issuer.clone();
        c.audience = self.audience.clone();
        c.scopes = self.scopes.clone();
        c.username_claim = self.username_claim.clone();
        c.leeway = std::time::Duration::from_secs(self.leeway_secs);
        c.refetch_interval = std::time::Duration::from_secs(self.jwks_refetch_secs);
        c.remember_for = std::time::Duration::from_secs(self.remember_secs);
        c.timeout = timeout;
        match (
            &self.introspection_url,
            &self.client_id,
            &self.client_secret,
        ) {
            (Some(url), Some(id), Some(secret)) => {
                smtp_auth_oauth::check_url(url)
                    .map_err(|e| ("introspection_url", e.to_string()))?;
                c.introspection = Some(smtp_auth_oauth::Introspection::new(url, id, secret));
            }
            (Some(_), _, _) => {
                return Err((
                    "introspection_url",
                    "needs client_id and client_secret (or client_secret_file)".into(),
                ));
            }
            (None, _, _) if self.jwks_url.is_empty() => {
                return Err((
                    "jwks_url",
                    "give jwks_url, introspection_url or both".into(),
                ));
            }
            (None, _, _) => {}
        }
        Ok(c)
    }
}

/// The `[auth]` keys of the ldap backend (boxed in [`AuthSection::Ldap`]). `Debug` never shows
/// `bind_password`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade `ldap://` with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA certificates the server's certificate must chain to (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Direct bind: the user's DN, `%u` the user name.
    #[serde(default)]
    pub user_dn: Option<String>,
    /// Search-then-bind: the service account's DN.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Its password.
    #[serde(default)]
    pub bind_password: Option<String>,
    /// A file holding that password instead (one line), kept out of the TOML.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where to search.
    #[serde(default)]
    pub base: Option<String>,
    /// The search filter, `%u` the user name.
    #[serde(default)]
    pub filter: Option<String>,
    /// Connections at most (default 4).
    #[serde(default = "default_dovecot_connections")]
    pub connections: usize,
    /// The credential cache (on by default).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Seconds a verified credential is remembered (default 300).
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// Most cached credentials (default 100,000).
    #[serde(default = "default_cache_entries")]
    pub cache_max_entries: usize,
    /// Seconds a refused credential is remembered (default 0: not at all).
    #[serde(default)]
    pub cache_negative_ttl_secs: u64,
    /// `[auth.oauth]`: XOAUTH2 and OAUTHBEARER tokens checked in the server.
    #[serde(default)]
    pub oauth: Option<OAuthSection>,
}

impl std::fmt::Debug for LdapSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .field("user_dn", &self.user_dn)
            .field("bind_dn", &self.bind_dn)
            .field(
                "bind_password",
                &self.bind_password.as_ref().map(|_| "<redacted>"),
            )
            .field("base", &self.base)
            .field("filter", &self.filter)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl LdapSection {
    /// The provider's configuration (TLS roots not loaded: `tls` is `None`), or the key that
    /// is wrong and why. The one validation: the provider's own, each error named by its key.
    pub fn provider_config(
        &self,
        timeout: std::time::Duration,
    ) -> Result<smtp_auth_ldap::LdapConfig, (&'static str, String)> {
        use smtp_auth_ldap::{ConfigError, LdapConfig, LdapProvider, Lookup};
        let search = (&self.bind_dn, &self.base, &self.filter);
        let lookup = match (&self.user_dn, search) {
            (Some(t), (None, None, None)) if self.bind_password.is_none() => {
                Lookup::Template(t.clone())
            }
            (None, (Some(bind_dn), Some(base), Some(filter))) => Lookup::Search {
                bind_dn: bind_dn.clone(),
                bind_password: smtp_auth::Password::new(
                    self.bind_password.clone().unwrap_or_default(),
                ),
                base: base.clone(),
                filter: filter.clone(),
            },
            _ => {
                return Err((
                    "user_dn",
                    "give user_dn (direct bind) or bind_dn, bind_password, base and filter (search, then bind), not both".into(),
                ));
            }
        };
        if !(1..=64).contains(&self.connections) {
            return Err(("connections", "must be between 1 and 64".into()));
        }
        let mut config = LdapConfig::new(self.url.clone(), lookup);
        config.starttls = self.starttls;
        config.timeout = timeout;
        config.connections = self.connections;
        match LdapProvider::new(config.clone()) {
            Ok(_) => Ok(config),
            Err(e) => Err((
                match e {
                    ConfigError::StartTlsOnLdaps => "starttls",
                    ConfigError::NoPlaceholder("filter") => "filter",
                    ConfigError::NoPlaceholder(_) => "user_dn",
                    _ => "url",
                },
                e.to_string(),
            )),
        }
    }
}

/// The `[auth]` keys of the sql backend (boxed in [`AuthSection::Sql`]). `Debug` shows the
/// URL's scheme only (a PostgreSQL URL may hold a password).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// `postgres://user:password@host:port/db` or `sqlite:///path/users.db`.
    #[serde(default)]
    pub url: String,
    /// A file holding the URL instead (one line; a PostgreSQL URL carries its password).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The query, the user name as `$1`: first column the stored hash, optional columns
    /// `enabled` and `scram`.
    pub query: String,
    /// Connections at most (default 4).
    #[serde(default = "default_dovecot_connections")]
    pub connections: usize,
    /// Accept weak schemes (clear, unsalted) in the table.
    #[serde(default)]
    pub allow_weak_schemes: bool,
    /// The credential cache (on by default).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Seconds a verified credential is remembered (default 300).
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
    /// Most cached credentials (default 100,000).
    #[serde(default = "default_cache_entries")]
    pub cache_max_entries: usize,
    /// Seconds a refused credential is remembered (default 0: not at all).
    #[serde(default)]
    pub cache_negative_ttl_secs: u64,
    /// `[auth.oauth]`: XOAUTH2 and OAUTHBEARER tokens checked in the server.
    #[serde(default)]
    pub oauth: Option<OAuthSection>,
}

impl std::fmt::Debug for SqlSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql")
            .field("url", &self.url.split_once("://").map_or("", |(s, _)| s))
            .field("query", &self.query)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl SqlSection {
    /// The provider's configuration, or the key that is wrong and why: the provider's own
    /// checks, each error named by its key.
    pub fn provider_config(
        &self,
        timeout: std::time::Duration,
    ) -> Result<smtp_auth_sql::SqlConfig, (&'static str, String)> {
        use smtp_auth_sql::{ConfigError, SqlConfig, SqlProvider};
        if !(1..=64).contains(&self.connections) {
            return Err(("connections", "must be between 1 and 64".into()));
        }
        let mut config = SqlConfig::new(self.url.clone(), self.query.clone());
        config.timeout = timeout;
        config.connections = self.connections;
        config.allow_weak_schemes = self.allow_weak_schemes;
        let never: smtp_auth_sql::Verifier = std::sync::Arc::new(|_| Box::pin(async { None }));
        match SqlProvider::with_verifier(config.clone(), never) {
            Ok(_) => Ok(config),
            Err(e) => Err((
                match e {
                    ConfigError::Query => "query",
                    _ => "url",
                },
                e.to_string(),
            )),
        }
    }
}

fn default_dovecot_connections() -> usize {
    4
}

fn default_http_timeout() -> u64 {
    1200
}

fn yes() -> bool {
    true
}

fn default_cache_entries() -> usize {
    100_000
}

/// The credential cache settings of `[auth]`, whichever the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKeys {
    /// On or off.
    pub enabled: bool,
    /// Time to live of a success.
    pub ttl_secs: u64,
    /// Most entries.
    pub max_entries: usize,
    /// Time to live of a refusal (0: none).
    pub negative_ttl_secs: u64,
}

impl AuthSection {
    /// The backend's name, as `backend =` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Http { .. } => "http",
            Self::Dovecot { .. } => "dovecot",
            Self::Ldap(_) => "ldap",
            Self::Sql(_) => "sql",
        }
    }

    /// `[auth.oauth]`, when tokens are checked in the server.
    pub fn oauth(&self) -> Option<&OAuthSection> {
        match self {
            Self::File { oauth, .. } | Self::Http { oauth, .. } | Self::Dovecot { oauth, .. } => {
                oauth.as_ref()
            }
            Self::Ldap(l) => l.oauth.as_ref(),
            Self::Sql(q) => q.oauth.as_ref(),
        }
    }

    /// The cache settings with the backend's defaults (file: 1 hour, http: 5 minutes).
    pub fn cache(&self) -> CacheKeys {
        let (enabled, ttl, max_entries, negative, default_ttl) = match self {
            Self::File {
                cache,
                cache_ttl_secs,
                cache_max_entries,
                cache_negative_ttl_secs,
                ..
            } => (
                cache,
                cache_ttl_secs,
                cache_max_entries,
                cache_negative_ttl_secs,
                3600,
            ),
            Self::Http {
                cache,
                cache_ttl_secs,
                cache_max_entries,
                cache_negative_ttl_secs,
                ..
            } => (
                cache,
                cache_ttl_secs,
                cache_max_entries,
                cache_negative_ttl_secs,
                300,
            ),
            Self::Sql(q) => (
                &q.cache,
                &q.cache_ttl_secs,
                &q.cache_max_entries,
                &q.cache_negative_ttl_secs,
                300,
            ),
            Self::Ldap(l) => (
                &l.cache,
                &l.cache_ttl_secs,
                &l.cache_max_entries,
                &l.cache_negative_ttl_secs,
                300,
            ),
            Self::Dovecot {
                cache,
                cache_ttl_secs,
                cache_max_entries,
                cache_negative_ttl_secs,
                ..
            } => (
                cache,
                cache_ttl_secs,
                cache_max_entries,
                cache_negative_ttl_secs,
                300,
            ),
        };
        CacheKeys {
            enabled: *enabled,
            ttl_secs: ttl.unwrap_or(default_ttl),
            max_entries: *max_entries,
            negative_ttl_secs: *negative,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self::File {
            users_file: PathBuf::from("examples/users"),
            external_map: None,
            allow_weak_schemes: false,
            cache: true,
            cache_ttl_secs: None,
            cache_max_entries: default_cache_entries(),
            cache_negative_ttl_secs: 0,
            oauth: None,
        }
    }
}

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Delivery {
    /// `kind = "maildir"`: write each message into a Maildir.
    Maildir {
        /// The Maildir (created with tmp/, new/, cur/ if missing).
        path: PathBuf,
    },
    /// `kind = "relay"`: pass each message to an upstream SMTP server.
    Relay(RelaySection),
    /// `kind = "discard"`: accept and drop (benchmarks).
    Discard,
}

impl Default for Delivery {
    fn default() -> Self {
        Self::Maildir {
            path: PathBuf::from("var/Maildir"),
        }
    }
}

/// The upstream of `kind = "relay"`. `Debug` never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Upstream host.
    pub host: String,
    /// Upstream port.
    #[serde(default = "default_relay_port")]
    pub port: u16,
    /// Use STARTTLS (required when set).
    #[serde(default)]
    pub starttls: bool,
    /// A PEM CA file to trust instead of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// AUTH user (AUTH PLAIN when set).
    pub username: Option<String>,
    /// AUTH password (PLAIN, or LOGIN when the upstream offers no PLAIN).
    pub password: Option<String>,
    /// A file holding the password instead (one line), kept out of the TOML.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An OAuth 2 access token: AUTH XOAUTH2 as `username` (Office 365, Gmail).
    pub oauth_token: Option<String>,
    /// A file holding the token instead (one line).
    #[serde(default)]
    pub oauth_token_file: Option<PathBuf>,
    /// Seconds an upstream connection is kept open after a message for the next one (RSET,
    /// then the next transaction); 0 closes it after each message.
    #[serde(default = "default_reuse_idle")]
    pub reuse_idle_secs: u64,
    /// Seconds per upstream read.
    #[serde(default = "default_relay_timeout")]
    pub timeout_secs: u64,
}

impl std::fmt::Debug for RelaySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "oauth_token",
                &self.oauth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_secs", &self.timeout_secs)
            .field("reuse_idle_secs", &self.reuse_idle_secs)
            .finish()
    }
}

fn default_relay_port() -> u16 {
    25
}

fn default_reuse_idle() -> u64 {
    30
}

fn default_relay_timeout() -> u64 {
    60
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `smtpd=debug,info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration error, naming the key and the line where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The line (1-based) where `key = ` first appears.
/// The line of `key = …` inside `[section]` (or `[[section]]`, or a dotted `[section.sub]`
/// table below it), else of the section's header: the key is looked for in its own section, so
/// a key spelled the same in two sections (`timeout_ms`, `password`) names the right line.
fn line_of(source: &str, section: &str, key: &str) -> Option<usize> {
    let mut in_section = false;
    let mut header = None;
    for (i, l) in source.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            let name = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            in_section = name == section || name.starts_with(&format!("{section}."));
            if in_section && header.is_none() {
                header = Some(i + 1);
            }
            continue;
        }
        if in_section
            && t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    header
}

/// Keys whose values are secrets: never quoted in an error.
const SECRET_KEYS: &[&str] = &["password", "bearer_token"];

/// `origin: line N: key `k`: message`, without the source excerpt toml adds (it could show a
/// secret), and with the values of secret keys blanked wherever the message quotes them.
fn parse_error(source: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| source[..s.start.min(source.len())].matches('\n').count() + 1);
    let key = line
        .and_then(|l| source.lines().nth(l - 1))
        .and_then(|text| text.split_once('='))
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let mut message = e.message().trim_end().to_owned();
    for text in source.lines() {
        if let Some((k, v)) = text.split_once('=')
            && SECRET_KEYS.contains(&k.trim())
        {
            let v = v.trim().trim_matches('"');
            if !v.is_empty() {
                message = message.replace(v, "<redacted>");
            }
        }
    }
    let key = key.map(|k| format!("key `{k}`: ")).unwrap_or_default();
    match line {
        Some(l) => ConfigError(format!("{origin}: line {l}: {key}{message}")),
        None => ConfigError(format!("{origin}: {key}{message}")),
    }
}

/// Checks a log filter as `[log] level` or `RUST_LOG` gives it: comma-separated directives,
/// each a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or `target=level` (or a
/// span filter in brackets). A bare word that is no level (`infoo`) would be read as a target
/// name and silence everything else: it is refused.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.rsplit_once('=') {
            Some((_, level)) if !is_level(level) => {
                return Err(format!(
                    "`{d}`: `{level}` is not a level (trace, debug, info, warn, error, off)"
                ));
            }
            Some(_) => {}
            None if d.contains('[') || is_level(d) => {}
            None => {
                return Err(format!(
                    "`{d}` is not a level (trace, debug, info, warn, error, off) nor target=level"
                ));
            }
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads a secret from the file a `*_file` key names: its first line, without the line break.
/// Errors name the file, never its contents.
fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").to_owned();
    if secret.is_empty() {
        return Err(format!("{}: the first line is empty", path.display()));
    }
    Ok(secret)
}

impl Config {
    /// Parses and validates a configuration. `origin` names the file in messages. Secrets
    /// named by `*_file` keys are read here.
    pub fn parse(source: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(source).map_err(|e| parse_error(source, origin, &e))?;
        config.read_secret_files(source, origin)?;
        config.validate(source, origin)?;
        Ok(config)
    }

    /// Fills each secret from its `*_file` key (`password_file`, `bearer_token_file`,
    /// `bind_password_file`, `url_file`, `oauth_token_file`); giving both the key and its
    /// file is an error.
    fn read_secret_files(&mut self, source: &str, origin: &str) -> Result<(), ConfigError> {
        fn fill(
            secret: &mut Option<String>,
            file: &Option<PathBuf>,
            section: &str,
            key: &str,
            source: &str,
            origin: &str,
        ) -> Result<(), ConfigError> {
            let Some(path) = file else {
                return Ok(());
            };
            let file_key = format!("{key}_file");
            let at = line_of(source, section, &file_key)
                .map(|l| format!(" at line {l}"))
                .unwrap_or_default();
            if secret.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(ConfigError(format!(
                    "{origin}: key `{section}.{file_key}`{at}: give {key} or {file_key}, not both"
                )));
            }
            *secret = Some(read_secret(path).map_err(|e| {
                ConfigError(format!("{origin}: key `{section}.{file_key}`{at}: {e}"))
            })?);
            Ok(())
        }
        if let Some(l) = &mut self.limiter {
            fill(
                &mut l.password,
                &l.password_file,
                "limiter",
                "password",
                source,
                origin,
            )?;
        }
        match &mut self.auth {
            AuthSection::Http {
                bearer_token,
                bearer_token_file,
                ..
            } => {
                let mut t = Some(std::mem::take(bearer_token));
                fill(
                    &mut t,
                    bearer_token_file,
                    "auth",
                    "bearer_token",
                    source,
                    origin,
                )?;
                *bearer_token = t.unwrap_or_default();
            }
            AuthSection::Ldap(l) => {
                let l = &mut **l;
                fill(
                    &mut l.bind_password,
                    &l.bind_password_file,
                    "auth",
                    "bind_password",
                    source,
                    origin,
                )?;
            }
            AuthSection::Sql(q) => {
                let q = &mut **q;
                let mut url = Some(std::mem::take(&mut q.url));
                fill(&mut url, &q.url_file, "auth", "url", source, origin)?;
                q.url = url.unwrap_or_default();
                if q.url.is_empty() {
                    return Err(ConfigError(format!(
                        "{origin}: key `auth.url`: the sql backend needs url or url_file"
                    )));
                }
            }
            _ => {}
        }
        let oauth = match &mut self.auth {
            AuthSection::File { oauth, .. }
            | AuthSection::Http { oauth, .. }
            | AuthSection::Dovecot { oauth, .. } => oauth.as_mut(),
            AuthSection::Ldap(l) => l.oauth.as_mut(),
            AuthSection::Sql(q) => q.oauth.as_mut(),
        };
        if let Some(o) = oauth {
            fill(
                &mut o.client_secret,
                &o.client_secret_file,
                "auth.oauth",
                "client_secret",
                source,
                origin,
            )?;
        }
        if let Delivery::Relay(r) = &mut self.delivery {
            fill(
                &mut r.password,
                &r.password_file,
                "delivery",
                "password",
                source,
                origin,
            )?;
            fill(
                &mut r.oauth_token,
                &r.oauth_token_file,
                "delivery",
                "oauth_token",
                source,
                origin,
            )?;
        }
        Ok(())
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn validate(&self, source: &str, origin: &str) -> Result<(), ConfigError> {
        let bad = |section: &str, key: &str, why: &str| {
            let at = line_of(source, section, key)
                .map(|l| format!(" at line {l}"))
                .unwrap_or_default();
            Err(ConfigError(format!(
                "{origin}: key `{section}.{key}`{at}: {why}"
            )))
        };
        let s = &self.server;
        // The server's own options: the one validation of `smtp-server`.
        if let Err(e) = s.options().validate() {
            return bad("server", e.key, e.reason);
        }
        if let Err(e) = check_log_filter(&self.log.level) {
            return bad("log", "level", &e);
        }
        if s.listen_backlog == 0 {
            return bad("server", "listen_backlog", "must be greater than 0");
        }
        if let Some(l) = &self.limiter {
            let address = l.redis.strip_prefix("rediss://").unwrap_or(&l.redis);
            let port = address.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) {
                return bad(
                    "limiter",
                    "redis",
                    "must be host:port or rediss://host:port, e.g. 127.0.0.1:6379",
                );
            }
            if l.key_prefix.is_empty() {
                return bad("limiter", "key_prefix", "must not be empty");
            }
            if !(1..=10_000).contains(&l.timeout_ms) {
                return bad("limiter", "timeout_ms", "must be between 1 and 10000");
            }
            if l.username.is_some() && l.password.is_none() {
                return bad("limiter", "username", "goes with password");
            }
        }
        let file = matches!(self.auth, AuthSection::File { .. });
        let dovecot = matches!(self.auth, AuthSection::Dovecot { .. });
        for m in &s.mechanisms {
            let m = m.to_ascii_uppercase();
            if m == "CRAM-MD5" {
                return bad(
                    "server",
                    "mechanisms",
                    "CRAM-MD5 is not offered: it needs every password stored in clear (use SCRAM-SHA-256)",
                );
            }
            if let Err(e) = offerable().only(&[&m]) {
                return bad("server", "mechanisms", &e.to_string());
            }
            if m == "SCRAM-SHA-256-PLUS" && dovecot {
                return bad(
                    "server",
                    "mechanisms",
                    "SCRAM-SHA-256-PLUS is not offered with the dovecot backend: Dovecot 2.3's auth protocol carries no channel binding (offer SCRAM-SHA-256)",
                );
            }
            let sql = matches!(self.auth, AuthSection::Sql(_));
            if m.starts_with("SCRAM-SHA-256") && !(file || dovecot || sql) {
                return bad(
                    "server",
                    "mechanisms",
                    &format!(
                        "{m} needs the file backend (stored SCRAM keys), the sql backend (a scram column) or the dovecot backend"
                    ),
                );
            }
            if (m == "XOAUTH2" || m == "OAUTHBEARER")
                && self.auth.oauth().is_none()
                && !matches!(
                    self.auth,
                    AuthSection::Http { .. } | AuthSection::Dovecot { .. }
                )
            {
                return bad(
                    "server",
                    "mechanisms",
                    &format!(
                        "{m} needs [auth.oauth] (or the http or dovecot backend): the {} backend would check the bearer token as a password",
                        self.auth.name()
                    ),
                );
            }
            if m == "EXTERNAL" {
                let mapped = matches!(
                    &self.auth,
                    AuthSection::File {
                        external_map: Some(_),
                        ..
                    }
                );
                let ca = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
                if !(mapped && ca) {
                    return bad(
                        "server",
                        "mechanisms",
                        "EXTERNAL needs tls.client_ca and the file backend's auth.external_map",
                    );
                }
            }
        }
        if let Some(o) = self.auth.oauth()
            && let Err((key, why)) = o.provider_config(std::time::Duration::from_secs(1))
        {
            return bad("auth.oauth", key, &why);
        }
        if self.auth.cache().enabled && self.auth.cache().max_entries == 0 {
            return bad("auth", "cache_max_entries", "must be greater than 0");
        }
        if s.sender_login == SenderLogin::Map && s.sender_login_map.is_none() {
            return bad(
                "server",
                "sender_login",
                "\"map\" needs server.sender_login_map",
            );
        }
        if let AuthSection::Http {
            send_authzid: true, ..
        } = &self.auth
            && s.mechanisms
                .iter()
                .any(|m| m.eq_ignore_ascii_case("EXTERNAL"))
        {
            return bad("auth", "send_authzid", "not with EXTERNAL");
        }
        if self.listeners.is_empty() {
            return Err(ConfigError(format!(
                "{origin}: at least one [[listener]] is needed"
            )));
        }
        if self.listeners.iter().any(|l| l.tls != ListenerTls::None) && self.tls.is_none() {
            return bad(
                "listener",
                "tls",
                "starttls and implicit listeners need a [tls] section",
            );
        }
        if let AuthSection::Http { url, .. } = &self.auth
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("auth", "url", "must be an http:// or https:// URL");
        }
        if let AuthSection::Dovecot {
            socket,
            connections,
            ..
        } = &self.auth
        {
            if let Err(e) = smtp_auth_dovecot::Endpoint::parse(socket) {
                return bad("auth", "socket", &e);
            }
            if !(1..=64).contains(connections) {
                return bad("auth", "connections", "must be between 1 and 64");
            }
        }
        if let AuthSection::Ldap(l) = &self.auth
            && let Err((key, why)) =
                l.provider_config(std::time::Duration::from_secs(s.auth_timeout_secs))
        {
            return bad("auth", key, &why);
        }
        if let AuthSection::Sql(q) = &self.auth
            && let Err((key, why)) =
                q.provider_config(std::time::Duration::from_secs(s.auth_timeout_secs))
        {
            return bad("auth", key, &why);
        }
        if let AuthSection::File { users_file, .. } = &self.auth
            && users_file.as_os_str().is_empty()
        {
            return bad("auth", "users_file", "must name a file");
        }
        if let Delivery::Relay(r) = &self.delivery {
            let secret = r.password.is_some() || r.oauth_token.is_some();
            if r.username.is_some() != secret {
                return bad(
                    "delivery",
                    "username",
                    "username goes with password or oauth_token",
                );
            }
            if r.password.is_some() && r.oauth_token.is_some() {
                return bad(
                    "delivery",
                    "oauth_token",
                    "password or oauth_token, not both",
                );
            }
        }
        Ok(())
    }
}

/// The mechanisms `[server] mechanisms` may name: every built-in one but CRAM-MD5 (it needs
/// passwords stored in clear). The one list, shared by the check and the server.
pub fn offerable() -> smtp_auth::Registry {
    let mut all = smtp_auth::Registry::all_builtin();
    all.exclude("CRAM-MD5");
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_example() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
        assert!(c.server.auth_required);
        let example = include_str!("../smtpd.example.toml");
        let c = Config::parse(example, "examples/smtpd.toml").unwrap();
        assert!(matches!(c.delivery, Delivery::Maildir { .. }));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = Config::parse(
            "[auth]\nbackend = \"http\"\nurl = \"http://a/\"\nbearer_token = \"TOKEN-xyz\"\n[delivery]\nkind = \"relay\"\nhost = \"up\"\nusername = \"u\"\npassword = \"PASS-xyz\"\n",
            "t",
        )
        .unwrap();
        let d = format!("{c:?} {c:#?}");
        assert!(!d.contains("TOKEN-xyz") && !d.contains("PASS-xyz"), "{d}");
        assert!(d.contains("<redacted>"));
        let c = Config::parse(
            "[limiter]\nredis = \"127.0.0.1:6379\"\nusername = \"smtpd\"\npassword = \"REDIS-xyz\"\n",
            "t",
        )
        .unwrap();
        let d = format!("{c:?} {c:#?}");
        assert!(!d.contains("REDIS-xyz") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn the_limiter_section_is_checked() {
        let c = Config::parse("[limiter]\nredis = \"redis.internal:6379\"\n", "t").unwrap();
        let l = c.limiter.unwrap();
        assert_eq!(
            (l.key_prefix.as_str(), l.timeout_ms),
            ("smtpd:authfail", 200)
        );
        for (text, want) in [
            (
                "[limiter]\nredis = \"127.0.0.1\"\n",
                "f.toml: key `limiter.redis` at line 2: must be host:port or rediss://host:port, e.g. 127.0.0.1:6379",
            ),
            (
                "[limiter]\nredis = \"h:1\"\ntimeout_ms = 0\n",
                "f.toml: key `limiter.timeout_ms` at line 3: must be between 1 and 10000",
            ),
            (
                "[limiter]\nredis = \"h:1\"\nkey_prefix = \"\"\n",
                "f.toml: key `limiter.key_prefix` at line 3: must not be empty",
            ),
            (
                "[limiter]\nredis = \"h:1\"\nusername = \"u\"\n",
                "f.toml: key `limiter.username` at line 3: goes with password",
            ),
        ] {
            assert_eq!(Config::parse(text, "f.toml").unwrap_err().0, want);
        }
    }

    #[test]
    fn an_error_names_the_line_of_the_key_in_its_own_section() {
        // `timeout_ms` is a key of [auth] (http) and of [limiter]; `max_errors` is only in
        // [server], below a comment that spells it.
        let text = "[auth]\nbackend = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntimeout_ms = 500\n\
                    [limiter]\nredis = \"h:1\"\ntimeout_ms = 0\n";
        assert_eq!(
            Config::parse(text, "f.toml").unwrap_err().0,
            "f.toml: key `limiter.timeout_ms` at line 7: must be between 1 and 10000"
        );
        let text = "[metrics]\naddress = \"127.0.0.1:9125\"\n[server]\nhostname = \"a.b\"\nmax_errors = 0\n";
        assert_eq!(
            Config::parse(text, "f.toml").unwrap_err().0,
            "f.toml: key `server.max_errors` at line 5: must be greater than 0"
        );
        // A key left at its default has no line of its own: its section's header is named.
        let text =
            "[log]\nlevel = \"info\"\n[server]\nhostname = \"a.b\"\nsender_login = \"map\"\n";
        assert_eq!(
            Config::parse(text, "f.toml").unwrap_err().0,
            "f.toml: key `server.sender_login` at line 5: \"map\" needs server.sender_login_map"
        );
        assert_eq!(line_of("[server]\nx = 1\n", "limiter", "x"), None);
        assert_eq!(
            line_of("[[listener]]\naddress = 1\n", "listener", "address"),
            Some(2)
        );
    }

    #[test]
    fn every_secret_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("smtpd-secret-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let redis = file("redis", "REDIS-s3cret\n");
        let token = file("token", "TOKEN-s3cret\n");
        let relay = file("relay", "RELAY-s3cret\r\n");
        let oauth = file("oauth", "OAUTH-s3cret");
        let c = Config::parse(
            &format!(
                "[limiter]\nredis = \"h:1\"\npassword_file = {redis:?}\n\
                 [auth]\nbackend = \"http\"\nurl = \"http://a/\"\nbearer_token_file = {token:?}\n\
                 [delivery]\nkind = \"relay\"\nhost = \"up\"\nusername = \"u\"\npassword_file = {relay:?}\n"
            ),
            "f.toml",
        )
        .unwrap();
        assert_eq!(
            c.limiter.as_ref().unwrap().password.as_deref(),
            Some("REDIS-s3cret")
        );
        let AuthSection::Http { bearer_token, .. } = &c.auth else {
            panic!()
        };
        assert_eq!(bearer_token, "TOKEN-s3cret");
        let Delivery::Relay(r) = &c.delivery else {
            panic!()
        };
        assert_eq!(r.password.as_deref(), Some("RELAY-s3cret"));
        let c = Config::parse(
            &format!("[delivery]\nkind = \"relay\"\nhost = \"up\"\nusername = \"u\"\noauth_token_file = {oauth:?}\n"),
            "f.toml",
        )
        .unwrap();
        let Delivery::Relay(r) = &c.delivery else {
            panic!()
        };
        assert_eq!(r.oauth_token.as_deref(), Some("OAUTH-s3cret"));
        let ldap_pw = file("ldap", "LDAP-s3cret\n");
        let c = Config::parse(
            &format!(
                "[auth]\nbackend = \"ldap\"\nurl = \"ldap://127.0.0.1:389\"\nbind_dn = \"cn=s\"\nbind_password_file = {ldap_pw:?}\nbase = \"dc=x\"\nfilter = \"(uid=%u)\"\n"
            ),
            "f.toml",
        )
        .unwrap();
        let AuthSection::Ldap(l) = &c.auth else {
            panic!()
        };
        assert_eq!(l.bind_password.as_deref(), Some("LDAP-s3cret"));
        let url = file("url", "postgres://smtpd:PG-s3cret@127.0.0.1/mail\n");
        let c = Config::parse(
            &format!("[auth]\nbackend = \"sql\"\nurl_file = {url:?}\nquery = \"SELECT hash FROM u WHERE name = $1\"\n"),
            "f.toml",
        )
        .unwrap();
        let AuthSection::Sql(q) = &c.auth else {
            panic!()
        };
        assert_eq!(q.url, "postgres://smtpd:PG-s3cret@127.0.0.1/mail");
        // Both, an empty file, a missing file: errors naming the key and its line, never the
        // secret.
        let empty = file("empty", "\n");
        for (text, want) in [
            (
                format!("[limiter]\nredis = \"h:1\"\npassword = \"INLINE-s3cret\"\npassword_file = {redis:?}\n"),
                "f.toml: key `limiter.password_file` at line 4: give password or password_file, not both".to_owned(),
            ),
            (
                format!("[limiter]\nredis = \"h:1\"\npassword_file = {empty:?}\n"),
                format!("f.toml: key `limiter.password_file` at line 3: {}: the first line is empty", empty.display()),
            ),
        ] {
            let e = Config::parse(&text, "f.toml").unwrap_err().0;
            assert_eq!(e, want);
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = Config::parse(
            "[limiter]\nredis = \"h:1\"\npassword_file = \"/nonexistent/pw\"\n",
            "f.toml",
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("f.toml: key `limiter.password_file` at line 3: /nonexistent/pw: "),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_oauth_section_is_checked() {
        let base = "[auth]\nbackend = \"file\"\nusers_file = \"u\"\n[auth.oauth]\n";
        let ok = Config::parse(
            &format!("{base}introspection_url = \"http://127.0.0.1:9/i\"\nclient_id = \"smtpd\"\nclient_secret = \"CS-s3cret\"\n"),
            "f.toml",
        )
        .unwrap();
        let o = ok.auth.oauth().unwrap();
        assert_eq!(o.client_secret.as_deref(), Some("CS-s3cret"));
        assert!(!format!("{o:?} {:?}", ok.auth).contains("CS-s3cret"));
        let timeout = std::time::Duration::from_secs(2);
        let remember = |o: &OAuthSection| o.provider_config(timeout).unwrap().remember_for;
        assert_eq!(remember(o), std::time::Duration::from_secs(300));
        let every_time = Config::parse(
            &format!("{base}jwks_url = \"http://127.0.0.1:9/certs\"\nremember_secs = 0\n"),
            "f.toml",
        )
        .unwrap();
        assert_eq!(
            remember(every_time.auth.oauth().unwrap()),
            std::time::Duration::ZERO
        );
        for (text, want) in [
            (
                "",
                "f.toml: key `auth.oauth.jwks_url` at line 4: give jwks_url, introspection_url or both",
            ),
            (
                "jwks_url = \"http://idp.example.org/certs\"\n",
                "f.toml: key `auth.oauth.jwks_url` at line 5: jwks_url: http:// is allowed for loopback addresses only: use https://",
            ),
            (
                "introspection_url = \"https://idp.example.org/i\"\n",
                "f.toml: key `auth.oauth.introspection_url` at line 5: needs client_id and client_secret (or client_secret_file)",
            ),
            (
                "jwks_url = \"https://idp.example.org/certs\"\nusername_claim = \"name\"\n",
                "f.toml: key `auth.oauth.username_claim` at line 6: must be email, preferred_username, sub or upn",
            ),
        ] {
            assert_eq!(
                Config::parse(&format!("{base}{text}"), "f.toml")
                    .unwrap_err()
                    .0,
                want
            );
        }
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse(
            "[server]\nhostname = \"a.b\"\nmax_mesage_size = 5\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(
            e.0.contains("max_mesage_size") && e.0.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_secret_value_is_not_quoted() {
        let e = Config::parse(
            "[delivery]\nkind = \"relay\"\nhost = \"h\"\npassword = 982451653\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(!e.0.contains("982451653"), "{e}");
        assert!(e.0.contains("<redacted>"), "{e}");
    }

    #[test]
    fn bad_value_type_names_line() {
        let e = Config::parse("[server]\nmax_recipients = \"many\"\n", "f.toml").unwrap_err();
        assert!(
            e.0.contains("line 2") && e.0.contains("max_recipients"),
            "{e}"
        );
    }

    #[test]
    fn the_dovecot_backend_section() {
        let c = Config::parse(
            "[server]\nmechanisms = [\"PLAIN\", \"SCRAM-SHA-256\", \"XOAUTH2\"]\n\
             [auth]\nbackend = \"dovecot\"\nsocket = \"/run/dovecot/auth-client\"\n",
            "f",
        )
        .unwrap();
        let AuthSection::Dovecot {
            socket,
            connections,
            penalty,
            ..
        } = &c.auth
        else {
            panic!("{:?}", c.auth)
        };
        assert_eq!(
            (socket.as_str(), *connections, *penalty),
            ("/run/dovecot/auth-client", 4, true)
        );
        assert_eq!(c.auth.cache().ttl_secs, 300);
        assert!(format!("{:?}", c.auth).contains("/run/dovecot/auth-client"));
        for (text, key, why) in [
            (
                "socket = \"dovecot\"",
                "auth.socket",
                "neither an absolute socket path nor host:port",
            ),
            (
                "socket = \"127.0.0.1:12345\"\nconnections = 0",
                "auth.connections",
                "between 1 and 64",
            ),
            (
                "socket = \"h:1\"\nusers_file = \"u\"",
                "users_file",
                "unknown field",
            ),
        ] {
            let e = Config::parse(&format!("[auth]\nbackend = \"dovecot\"\n{text}\n"), "f")
                .unwrap_err();
            assert!(e.0.contains(key) && e.0.contains(why), "{e}");
        }
        let e = Config::parse(
            "[server]\nmechanisms = [\"SCRAM-SHA-256-PLUS\"]\n\
             [auth]\nbackend = \"dovecot\"\nsocket = \"h:1\"\n",
            "f",
        )
        .unwrap_err();
        assert!(e.0.contains("carries no channel binding"), "{e}");
    }

    #[test]
    fn the_sql_backend_section() {
        let pg = "[auth]\nbackend = \"sql\"\nurl = \"postgres://mail:db-secret@127.0.0.1/mail\"\n\
                  query = \"SELECT hash FROM users WHERE name = $1\"\n";
        let c = Config::parse(pg, "f").unwrap();
        assert_eq!(c.auth.name(), "sql");
        assert_eq!(c.auth.cache().ttl_secs, 300);
        let shown = format!("{:?}", c.auth);
        assert!(
            !shown.contains("db-secret") && shown.contains("\"postgres\""),
            "{shown}"
        );
        let scram = format!("[server]\nmechanisms = [\"PLAIN\", \"SCRAM-SHA-256\"]\n{pg}");
        assert!(Config::parse(&scram, "f").is_ok());
        for (text, key, why) in [
            (
                pg.replace("postgres://", "mysql://"),
                "auth.url",
                "not a supported database URL",
            ),
            (
                pg.replace("name = $1", "name = 'alice'"),
                "auth.query",
                "must take the user name as $1",
            ),
            (
                format!("{pg}connections = 100\n"),
                "auth.connections",
                "between 1 and 64",
            ),
        ] {
            let e = Config::parse(&text, "f").unwrap_err();
            assert!(e.0.contains(key) && e.0.contains(why), "{e}");
            assert!(!e.0.contains("db-secret"), "{e}");
        }
    }

    #[test]
    fn the_ldap_backend_section() {
        let search = "[auth]\nbackend = \"ldap\"\nurl = \"ldap://127.0.0.1:389\"\n\
                      bind_dn = \"cn=smtpd,dc=x\"\nbind_password = \"pw-of-the-service\"\n\
                      base = \"dc=x\"\nfilter = \"(uid=%u)\"\n";
        let c = Config::parse(search, "f").unwrap();
        let AuthSection::Ldap(l) = &c.auth else {
            panic!("{:?}", c.auth)
        };
        assert_eq!((l.connections, c.auth.cache().ttl_secs), (4, 300));
        let shown = format!("{:?}", c.auth);
        assert!(!shown.contains("pw-of-the-service") && shown.contains("<redacted>"));
        let direct = "[auth]\nbackend = \"ldap\"\nurl = \"ldaps://ldap.example:636\"\n\
                      user_dn = \"uid=%u,dc=x\"\n";
        assert!(Config::parse(direct, "f").is_ok());
        for (text, key, why) in [
            (
                format!("{direct}bind_dn = \"cn=a\"\n"),
                "auth.user_dn",
                "not both",
            ),
            (
                direct.replace("uid=%u,dc=x", "uid=alice,dc=x"),
                "auth.user_dn",
                "must contain %u",
            ),
            (
                search.replace("(uid=%u)", "(uid=alice)"),
                "auth.filter",
                "must contain %u",
            ),
            (
                format!("{direct}starttls = true\n"),
                "auth.starttls",
                "not ldaps://",
            ),
            (
                direct.replace("ldaps://ldap.example:636", "ldap.example"),
                "auth.url",
                "not an ldap:// or ldaps:// URL",
            ),
            (
                format!("[server]\nmechanisms = [\"XOAUTH2\"]\n{direct}"),
                "server.mechanisms",
                "the ldap backend would check the bearer token",
            ),
        ] {
            let e = Config::parse(&text, "f").unwrap_err();
            assert!(e.0.contains(key) && e.0.contains(why), "{e}");
        }
    }

    #[test]
    fn mechanisms_must_match_the_backend() {
        let e = Config::parse(
            "[server]\nmechanisms = [\"PLAIN\", \"XOAUTH2\"]\n",
            "f.toml",
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "f.toml: key `server.mechanisms` at line 2: XOAUTH2 needs [auth.oauth] (or the http or dovecot backend): the file backend would check the bearer token as a password"
        );
        let e = Config::parse("[server]\nmechanisms = [\"OAUTHBEARER\"]\n", "f.toml").unwrap_err();
        assert!(
            e.0.contains("OAUTHBEARER needs [auth.oauth] (or the http or dovecot backend)"),
            "{e}"
        );
        let http = "[auth]\nbackend = \"http\"\nurl = \"http://127.0.0.1:1/\"\n";
        assert!(
            Config::parse(
                &format!("[server]\nmechanisms = [\"XOAUTH2\"]\n{http}"),
                "f"
            )
            .is_ok()
        );
        let e = Config::parse(
            &format!("[server]\nmechanisms = [\"SCRAM-SHA-256-PLUS\"]\n{http}"),
            "f",
        )
        .unwrap_err();
        assert!(
            e.0.contains("SCRAM-SHA-256-PLUS needs the file backend"),
            "{e}"
        );
        let e = Config::parse("[server]\nmechanisms = [\"CRAM-MD5\"]\n", "f").unwrap_err();
        assert!(e.0.contains("needs every password stored in clear"), "{e}");
        let e = Config::parse("[server]\nmechanisms = [\"EXTERNAL\"]\n", "f").unwrap_err();
        assert!(
            e.0.contains("EXTERNAL needs tls.client_ca and the file backend's auth.external_map"),
            "{e}"
        );
        let ok = "[server]\nmechanisms = [\"EXTERNAL\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n[auth]\nbackend = \"file\"\nusers_file = \"u\"\nexternal_map = \"m\"\n";
        assert!(Config::parse(ok, "f").is_ok());
    }

    #[test]
    fn cache_defaults_per_backend() {
        let c = Config::parse("", "f").unwrap();
        assert_eq!(
            c.auth.cache(),
            CacheKeys {
                enabled: true,
                ttl_secs: 3600,
                max_entries: 100_000,
                negative_ttl_secs: 0
            }
        );
        let http = "[auth]\nbackend = \"http\"\nurl = \"http://127.0.0.1:1/\"\n";
        assert_eq!(Config::parse(http, "f").unwrap().auth.cache().ttl_secs, 300);
        let off =
            Config::parse(&format!("{http}cache = false\ncache_ttl_secs = 9\n"), "f").unwrap();
        assert!(!off.auth.cache().enabled);
        assert_eq!(off.auth.cache().ttl_secs, 9);
        let e = Config::parse(
            "[auth]\nbackend = \"file\"\nusers_file = \"u\"\ncache_max_entries = 0\n",
            "f",
        )
        .unwrap_err();
        assert!(e.0.contains("auth.cache_max_entries"), "{e}");
    }

    #[test]
    fn sender_login_default_and_map() {
        assert_eq!(
            Config::parse("", "f").unwrap().server.sender_login,
            SenderLogin::Exact
        );
        let e = Config::parse("[server]\nsender_login = \"map\"\n", "f").unwrap_err();
        assert!(
            e.0.contains("server.sender_login") && e.0.contains("sender_login_map"),
            "{e}"
        );
        let e = Config::parse("[server]\nsender_login = \"whatever\"\n", "f").unwrap_err();
        assert!(e.0.contains("line 2"), "{e}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let e = Config::parse("[server]\n\nmax_message_size = 0\n", "f.toml").unwrap_err();
        assert_eq!(
            e.0,
            "f.toml: key `server.max_message_size` at line 3: must be greater than 0"
        );
        let e = Config::parse(
            "[[listener]]\naddress = \"127.0.0.1:1\"\ntls = \"starttls\"\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(
            e.0.contains("listener.tls") && e.0.contains("line 3"),
            "{e}"
        );
        let e = Config::parse("[server]\nmechanisms = [\"CRAM-MD5\"]\n", "f.toml").unwrap_err();
        assert!(e.0.contains("server.mechanisms"), "{e}");
        // An unknown backend is named (ldap was one until it was built).
        let e = Config::parse("[auth]\nbackend = \"pam\"\n", "f.toml").unwrap_err();
        assert!(e.0.contains("pam"), "{e}");
        let e = Config::parse("[auth]\nbackend = \"ldap\"\n", "f.toml").unwrap_err();
        assert!(e.0.contains("missing field `url`"), "{e}");
    }
}
