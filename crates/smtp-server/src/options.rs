//! [`ServerOptions`]: every plain option of the server (numbers, durations, switches), in one
//! struct with one validation. The builder ([`crate::ServerConfigBuilder`]) and an
//! application's own configuration file (serde, behind the `serde` feature, with the keys
//! `smtpd`'s `[server]` uses) fill the same struct, and [`ServerOptions::validate`] refuses a
//! bad value with the key it came from instead of clamping it.

use std::path::PathBuf;
use std::time::Duration;

use smtp_proto::BarePolicy;

/// Every plain option of the server, with safe defaults (aiosmtpd's where it has one).
///
/// | option (serde key) | default |
/// | --- | --- |
/// | `hostname` | `localhost` |
/// | `greeting` | `ESMTP ready` |
/// | `max_message_size` | 32 MiB |
/// | `max_recipients` | 100 |
/// | `max_line_length` | 512 octets (RFC 5321 §4.5.3.1.4), at least 512 |
/// | `read_timeout` (`read_timeout_secs`) | 300 s (RFC 5321 §4.5.3.2.7) |
/// | `spool_threshold` | 1 MiB: larger message bodies go to a spool file as they arrive |
/// | `spool_dir` | the system's temporary directory |
/// | `memory_budget` | 16 MiB for all message bodies in memory; beyond it bodies are spooled |
/// | `max_connections` | 1024 |
/// | `max_connections_per_ip` | 50 per address (IPv6: per /64), then 421 4.7.0; 0: no limit |
/// | `max_junk_commands` | 100 NOOP/RSET/VRFY/HELP, then each counts as an error |
/// | `max_session_duration` (`max_session_duration_secs`) | 1 hour, then 421 4.4.2 at the next command |
/// | `auth_required` | false |
/// | `auth_require_tls` | true |
/// | `max_auth_failures` | 3 per connection, then 421 4.7.0 |
/// | `auth_failure_delay` (`auth_failure_delay_ms`) | 1 s after each failure |
/// | `max_auth_failures_per_ip` | 30 per window across connections, then 421 4.7.0; 0: off |
/// | `max_auth_failures_per_user` | 10 per window for one user from any address, then 454 4.7.0; 0: off |
/// | `auth_failure_window` (`auth_failure_window_secs`) | 10 minutes |
/// | `max_auth_lock` (`max_auth_lock_secs`) | 24 hours: the ceiling of a lock that doubles each time it comes back soon |
/// | `proxy_authorization` | false: an authzid other than the user is refused (535 5.7.8) |
/// | `allow_pipelined_body` | false: a body sent before the 354 reply is refused (554 5.5.0) |
/// | `implicit_tls` | false |
/// | `smtputf8` | true |
/// | `requiretls` | false: REQUIRETLS (RFC 8689) is offered over TLS only, and only when the handler honours it on every onward hop |
/// | `lmtp` | false |
/// | `proxy_protocol` | false |
/// | `bare_line_endings` | `reject` (550 5.6.0); `normalize` |
/// | `shutdown_grace` (`shutdown_grace_secs`) | 30 s for DATA in flight |
/// | `auth_timeout` (`auth_timeout_secs`) | 30 s per authenticator call, then 454 4.7.0 |
/// | `max_errors` | 20 syntax errors or unknown commands, then 421 4.7.0 and close |
/// | `max_data_duration` (`max_data_duration_secs`) | 30 min for a whole message body, then 421 4.4.2 |
/// | `lenient_helo` | true: any one-word HELO/EHLO argument is accepted (RFC 5321 §4.1.4) |
/// | `lenient_paths` | true: `MAIL FROM: a@b` without angle brackets, extra spaces after the colon |
/// | `forbid_bare_newline` | false: a command line ending in a bare LF is read as if it ended in CRLF |
///
/// The builder's methods of the same names document each option.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The name in the greeting and the EHLO reply (a domain name).
    pub hostname: String,
    /// Text after the hostname in the 220 greeting.
    pub greeting: String,
    /// Largest message in octets (advertised with SIZE); at least 1.
    pub max_message_size: u64,
    /// Most recipients per transaction; at least 1.
    pub max_recipients: usize,
    /// Longest command line in octets, CRLF included; at least 512.
    pub max_line_length: usize,
    /// How long any read may wait, and any write stay blocked; more than 0.
    #[cfg_attr(feature = "serde", serde(rename = "read_timeout_secs", with = "secs"))]
    pub read_timeout: Duration,
    /// Message bodies larger than this are spooled to a file while they arrive.
    pub spool_threshold: usize,
    /// Where spool files go.
    pub spool_dir: PathBuf,
    /// The most octets of message bodies held in memory by the whole server.
    pub memory_budget: u64,
    /// Most simultaneous connections; at least 1.
    pub max_connections: usize,
    /// Most simultaneous connections from one address (IPv6: one /64); 0: no limit.
    pub max_connections_per_ip: usize,
    /// NOOP/RSET/VRFY/HELP per session before each further one counts as an error.
    pub max_junk_commands: u32,
    /// The longest a session may last; more than 0.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "max_session_duration_secs", with = "secs")
    )]
    pub max_session_duration: Duration,
    /// Require AUTH before MAIL.
    pub auth_required: bool,
    /// Allow AUTH only over TLS.
    pub auth_require_tls: bool,
    /// Failed AUTH attempts per connection before 421 4.7.0 and close; at least 1.
    pub max_auth_failures: u32,
    /// Pause after each failed AUTH.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "auth_failure_delay_ms", with = "millis")
    )]
    pub auth_failure_delay: Duration,
    /// Failed AUTH attempts per address within the window; 0: off.
    pub max_auth_failures_per_ip: u32,
    /// Failed AUTH attempts for one user within the window, from any address; 0: off.
    pub max_auth_failures_per_user: u32,
    /// The window of both failure limits; more than 0 while either is on.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "auth_failure_window_secs", with = "secs")
    )]
    pub auth_failure_window: Duration,
    /// The longest lock: a lock that follows the last one within this time lasts twice as
    /// long, up to it; at least the window (equal to it: no escalation).
    #[cfg_attr(feature = "serde", serde(rename = "max_auth_lock_secs", with = "secs"))]
    pub max_auth_lock: Duration,
    /// Let the authenticator decide authorization identities.
    pub proxy_authorization: bool,
    /// Accept a DATA body sent before the 354 reply.
    pub allow_pipelined_body: bool,
    /// Start every connection with a TLS handshake (RFC 8314).
    pub implicit_tls: bool,
    /// Advertise and accept SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// Advertise REQUIRETLS (RFC 8689) over TLS and accept `MAIL … REQUIRETLS` there: turn it
    /// on only when the handler relays such a message over verified TLS alone (or delivers
    /// it locally). The parameter is recorded in the envelope's `mail_params.requiretls`.
    pub requiretls: bool,
    /// Speak LMTP (RFC 2033).
    pub lmtp: bool,
    /// Expect a PROXY protocol header first on every connection.
    pub proxy_protocol: bool,
    /// What to do with bare CR or LF in DATA.
    #[cfg_attr(feature = "serde", serde(with = "bare"))]
    pub bare_line_endings: BarePolicy,
    /// How long a DATA in flight may continue after shutdown begins.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "shutdown_grace_secs", with = "secs")
    )]
    pub shutdown_grace: Duration,
    /// The longest an authenticator call may take; more than 0.
    #[cfg_attr(feature = "serde", serde(rename = "auth_timeout_secs", with = "secs"))]
    pub auth_timeout: Duration,
    /// Syntax errors and unknown commands per connection before 421 and close; at least 1.
    pub max_errors: u32,
    /// The longest a whole message body may take to arrive; more than 0.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "max_data_duration_secs", with = "secs")
    )]
    pub max_data_duration: Duration,
    /// Accept HELO/EHLO arguments that are not domains.
    pub lenient_helo: bool,
    /// Accept MAIL/RCPT paths without angle brackets and extra spaces after the colon.
    pub lenient_paths: bool,
    /// Refuse command lines that end with a bare LF.
    pub forbid_bare_newline: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            greeting: "ESMTP ready".into(),
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: smtp_proto::DEFAULT_MAX_LINE,
            read_timeout: Duration::from_secs(300),
            spool_threshold: 1024 * 1024,
            spool_dir: std::env::temp_dir(),
            memory_budget: 16 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 50,
            max_junk_commands: 100,
            max_session_duration: Duration::from_secs(3600),
            auth_required: false,
            auth_require_tls: true,
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            max_auth_failures_per_ip: 30,
            max_auth_failures_per_user: 10,
            auth_failure_window: Duration::from_secs(600),
            max_auth_lock: crate::auth::DEFAULT_MAX_LOCK,
            proxy_authorization: false,
            allow_pipelined_body: false,
            implicit_tls: false,
            smtputf8: true,
            requiretls: false,
            lmtp: false,
            proxy_protocol: false,
            bare_line_endings: BarePolicy::Reject,
            shutdown_grace: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            max_errors: 20,
            max_data_duration: Duration::from_secs(30 * 60),
            lenient_helo: true,
            lenient_paths: true,
            forbid_bare_newline: false,
        }
    }
}

/// A value [`ServerOptions::validate`] refuses: the option's key (as serde and `smtpd`'s
/// `[server]` spell it) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidOption {
    /// The key, e.g. `max_recipients` or `read_timeout_secs`.
    pub key: &'static str,
    /// Why, e.g. `must be greater than 0`.
    pub reason: &'static str,
}

impl std::fmt::Display for InvalidOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for InvalidOption {}

const POSITIVE: &str = "must be greater than 0";

impl ServerOptions {
    /// The one validation: the first value that cannot work, named by its key. Nothing is
    /// clamped; a value that is valid is used as given.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let bad = |key, reason| Err(InvalidOption { key, reason });
        if smtp_proto::Domain::try_from(self.hostname.as_str()).is_err() {
            return bad("hostname", "must be a domain name");
        }
        let zero = [
            ("max_message_size", self.max_message_size == 0),
            ("max_recipients", self.max_recipients == 0),
            ("read_timeout_secs", self.read_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
            (
                "max_session_duration_secs",
                self.max_session_duration.is_zero(),
            ),
            ("max_data_duration_secs", self.max_data_duration.is_zero()),
            ("auth_timeout_secs", self.auth_timeout.is_zero()),
            ("max_auth_failures", self.max_auth_failures == 0),
            ("max_errors", self.max_errors == 0),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, z)| *z) {
            return bad(key, POSITIVE);
        }
        if self.max_line_length < smtp_proto::DEFAULT_MAX_LINE {
            return bad(
                "max_line_length",
                "must be at least 512 (RFC 5321 §4.5.3.1.4)",
            );
        }
        let limited = self.max_auth_failures_per_ip > 0 || self.max_auth_failures_per_user > 0;
        if limited && self.auth_failure_window.is_zero() {
            return bad(
                "auth_failure_window_secs",
                "must be greater than 0 while a failure limit is on",
            );
        }
        if limited && self.max_auth_lock < self.auth_failure_window {
            return bad(
                "max_auth_lock_secs",
                "must be at least auth_failure_window_secs",
            );
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
mod secs {
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(feature = "serde")]
mod millis {
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(feature = "serde")]
mod bare {
    use smtp_proto::BarePolicy;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BarePolicy, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        match s.as_str() {
            "reject" => Ok(BarePolicy::Reject),
            "normalize" => Ok(BarePolicy::Normalize),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["reject", "normalize"],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_bad_value_is_named() {
        assert_eq!(ServerOptions::default().validate(), Ok(()));
        let check = |f: fn(&mut ServerOptions), key: &str| {
            let mut o = ServerOptions::default();
            f(&mut o);
            assert_eq!(o.validate().unwrap_err().key, key);
        };
        check(|o| o.hostname = "not a domain".into(), "hostname");
        check(|o| o.max_message_size = 0, "max_message_size");
        check(|o| o.max_recipients = 0, "max_recipients");
        check(|o| o.max_line_length = 511, "max_line_length");
        check(|o| o.read_timeout = Duration::ZERO, "read_timeout_secs");
        check(|o| o.max_connections = 0, "max_connections");
        check(|o| o.max_errors = 0, "max_errors");
        check(|o| o.max_auth_failures = 0, "max_auth_failures");
        check(|o| o.auth_timeout = Duration::ZERO, "auth_timeout_secs");
        check(
            |o| o.auth_failure_window = Duration::ZERO,
            "auth_failure_window_secs",
        );
        check(
            |o| o.max_auth_lock = Duration::from_secs(599),
            "max_auth_lock_secs",
        );
        // 0 turns a failure limit off; with both off the window does not matter.
        let mut o = ServerOptions {
            max_auth_failures_per_ip: 0,
            max_auth_failures_per_user: 0,
            auth_failure_window: Duration::ZERO,
            ..ServerOptions::default()
        };
        assert_eq!(o.validate(), Ok(()));
        o.max_line_length = 4096;
        assert_eq!(o.validate(), Ok(()), "valid values are used as given");
        assert_eq!(
            InvalidOption {
                key: "max_errors",
                reason: POSITIVE
            }
            .to_string(),
            "max_errors: must be greater than 0"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn read_with_the_keys_of_smtpd_server_section() {
        let o: ServerOptions = toml::from_str(
            "hostname = \"mx.example.org\"\nread_timeout_secs = 60\nauth_failure_delay_ms = 250\n\
             bare_line_endings = \"normalize\"\nmax_auth_failures_per_ip = 0\n",
        )
        .unwrap();
        assert_eq!(o.hostname, "mx.example.org");
        assert_eq!(o.read_timeout, Duration::from_secs(60));
        assert_eq!(o.auth_failure_delay, Duration::from_millis(250));
        assert_eq!(o.bare_line_endings, BarePolicy::Normalize);
        assert_eq!(o.max_auth_failures_per_ip, 0);
        assert_eq!(o.max_recipients, 100, "unnamed keys keep their defaults");
        let e = toml::from_str::<ServerOptions>("max_recipents = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `max_recipents`"),
            "{e}"
        );
    }
}
