//! [`Observer`]: what a server reports for metrics, as plain calls at the moments that count
//! (no runtime, no clock of its own: durations come from the machine's `now`). Every method
//! has an empty default; an implementation keeps atomics and renders them (smtpd renders
//! Prometheus text).

use std::time::Duration;

/// The `tracing` target of the one log line written per counted AUTH failure, the line
/// fail2ban reads (`docs/deploy/fail2ban/`). Its form is stable: level `WARN`, message
/// `AUTH failed`, then the fields `remote_ip` (the client's address), `user` (the name tried,
/// empty when none), `mechanism` and `status` ([`smtp_auth::AuthStatus::as_str`]), in this
/// order, with the same names in JSON. Successes, temporary failures and locks are not
/// written to it.
pub const AUTH_FAILURE_TARGET: &str = "smtp_server::auth_failure";

/// Why a connection was refused before its session began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// `max_connections` were open.
    MaxConnections,
    /// `max_connections_per_ip` were open from the address.
    PerAddress,
}

/// How an AUTH attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthOutcome {
    /// Authenticated (235).
    Ok,
    /// The credential was refused (535), or the exchange was malformed.
    Invalid,
    /// The check could not be made (454): a provider outage or timeout.
    TempFail,
    /// The client cancelled (`*`), or went away during the exchange.
    Cancelled,
    /// Refused unchecked: the address or the user is past its failure limit (421, 454).
    Locked,
}

impl AuthOutcome {
    /// The label: `ok`, `invalid`, `tempfail`, `cancelled`, `locked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::TempFail => "tempfail",
            Self::Cancelled => "cancelled",
            Self::Locked => "locked",
        }
    }
}

/// Receives the server's events for metrics. Calls are made on the session's task (or the
/// accept loop): keep them cheap (atomics, a short lock).
pub trait Observer: Send + Sync + 'static {
    /// A connection's session began (after the PROXY header and the per-address check).
    fn connection_opened(&self) {}

    /// A session ended.
    fn connection_closed(&self) {}

    /// A connection was refused before its session began.
    fn connection_refused(&self, reason: Refusal) {
        let _ = reason;
    }

    /// A TLS handshake (STARTTLS or implicit) finished, or failed.
    fn tls_handshake(&self, ok: bool) {
        let _ = ok;
    }

    /// An AUTH attempt ended, after `elapsed` (from the AUTH command to the reply).
    fn auth(&self, mechanism: &str, outcome: AuthOutcome, elapsed: Duration) {
        let _ = (mechanism, outcome, elapsed);
    }

    /// A message got its final reply: `class` 2 (accepted), 4 or 5 (refused), with its size
    /// in octets as received. An LMTP message reports once, accepted when any recipient was.
    fn message(&self, class: u8, octets: u64) {
        let _ = (class, octets);
    }
}
