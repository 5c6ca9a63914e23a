//! Mechanisms: the server side of each as a [`ServerMechanism`] state machine, and the client
//! side as a [`ClientMechanism`] (for tests, load generators and relays).
//!
//! A server mechanism sees decoded bytes and returns a [`Step`]; base64, `*` and length limits
//! are handled once by [`AuthExchange`](crate::AuthExchange).

use std::fmt;

use crate::decision::{AuthDecision, AuthProgress};
use crate::exchange::Step;
use crate::request::{LookupResult, SessionInfo};
use crate::result::{AuthResult, AuthStatus};
use crate::secret::SecretBytes;

mod cram;
mod external;
mod login;
mod oauth;
mod plain;
mod scram;

pub use cram::{CramMd5Client, CramMd5Server};
pub use external::{ExternalClient, ExternalServer};
pub use login::{LOGIN_PASSWORD_PROMPT, LOGIN_USERNAME_PROMPT, LoginClient, LoginServer};
pub use oauth::{OAuthBearerClient, OAuthKind, OAuthServer, XOAuth2Client};
pub use plain::{PlainClient, PlainServer};
pub use scram::{
    SCRAM_DEFAULT_ITERATIONS, ScramSha256Client, ScramSha256Server, TLS_EXPORTER,
    TLS_EXPORTER_LABEL, saslprep,
};

/// The server side of a SASL mechanism: a state machine fed decoded client data.
///
/// Implement it to add a mechanism (aiosmtpd's `auth_MECHANISM` hooks) and register it in a
/// [`Registry`](crate::Registry) under its SASL name.
pub trait ServerMechanism: Send {
    /// The client chose this mechanism; `initial` is the decoded initial response, if one was
    /// sent (`Some(empty)` for `=`).
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step;

    /// The decoded response to the last challenge.
    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step;

    /// The provider's decision after [`Step::Verify`]. `None` (the default): the decision
    /// stands, and the exchange ends with the result it builds from it (success with the
    /// identity the `Verify` asked about, or the decision's failure). A mechanism with more
    /// to say returns its next step (OAuth's error challenge, RFC 7628 §3.2.2).
    fn decide(&mut self, info: &SessionInfo, decision: AuthDecision) -> Option<Step> {
        let _ = (info, decision);
        None
    }

    /// The stored secret after [`Step::Lookup`].
    fn supply(&mut self, info: &SessionInfo, found: LookupResult) -> Step {
        let _ = (info, found);
        Step::Done(AuthResult::failure(AuthStatus::TempFail))
    }

    /// What the mechanism is waiting for while a challenge is outstanding.
    fn progress(&self) -> AuthProgress {
        AuthProgress::Custom
    }
}

/// Why a client mechanism could not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The server sent a challenge the mechanism does not expect here.
    UnexpectedChallenge,
    /// The server's challenge is malformed.
    MalformedChallenge,
    /// The server failed to prove it knows the credentials (SCRAM server signature).
    ServerNotAuthenticated,
    /// The server reported an error (SCRAM `e=`, OAuth error JSON).
    ServerError(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedChallenge => f.write_str("unexpected challenge"),
            Self::MalformedChallenge => f.write_str("malformed challenge"),
            Self::ServerNotAuthenticated => f.write_str("server signature mismatch"),
            Self::ServerError(e) => write!(f, "server error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The client side of a SASL mechanism.
pub trait ClientMechanism: Send {
    /// The SASL name.
    fn name(&self) -> &str;

    /// The initial response to send with AUTH, if the mechanism has one.
    fn initial_response(&mut self) -> Option<SecretBytes>;

    /// The response to a (decoded) challenge.
    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError>;
}

pub(crate) fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

pub(crate) fn done(status: AuthStatus) -> Step {
    Step::Done(AuthResult::failure(status))
}

/// `n` random bytes, or `None` if the system RNG fails.
pub(crate) fn random_bytes(n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).ok()?;
    Some(b)
}

/// A random printable nonce without `,` (base64 of 18 random bytes).
pub(crate) fn random_nonce() -> Option<String> {
    use base64::Engine as _;
    random_bytes(18).map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}
