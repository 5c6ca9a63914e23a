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

/// The user names and authorization identities a mechanism's first client message carries
/// (decoded; invalid UTF-8 replaced by U+FFFD, which SASLprep prohibits), for
/// [`crate::sasl::check_first_message`]. A relay that hands the whole exchange to another
/// process checks them there, since no mechanism of ours parses the message. Mechanisms whose
/// first message names nobody, or that this crate does not know, give none.
pub(crate) fn first_message_names(mechanism: &str, msg: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(msg);
    let mechanism = mechanism.to_ascii_uppercase();
    let saslname = |s: &str| scram::decode_saslname(s).unwrap_or_else(|| s.to_owned());
    match mechanism.as_str() {
        // authzid NUL authcid NUL password: the password is not a name.
        "PLAIN" => text.splitn(3, '\0').take(2).map(str::to_owned).collect(),
        "LOGIN" => vec![text.into_owned()],
        // "user SP digest"
        "CRAM-MD5" => text
            .rsplit_once(' ')
            .map(|(user, _)| vec![user.to_owned()])
            .unwrap_or_default(),
        // gs2-header (flag "," ["a=" authzid] ",") then "n=" user "," ...
        m if m.starts_with("SCRAM-") => {
            let mut parts = text.splitn(3, ',');
            let (_, authz, bare) = (parts.next(), parts.next(), parts.next());
            let authz = authz.and_then(|a| a.strip_prefix("a=")).map(saslname);
            let user = bare
                .and_then(|b| b.split(',').next())
                .and_then(|n| n.strip_prefix("n="))
                .map(saslname);
            authz.into_iter().chain(user).collect()
        }
        // "user=" name ^A "auth=Bearer " token ^A ^A
        "XOAUTH2" => text
            .split('\x01')
            .filter_map(|f| f.strip_prefix("user="))
            .map(str::to_owned)
            .collect(),
        // gs2-header ^A key=value pairs: the name is the gs2 header's authzid.
        "OAUTHBEARER" => text
            .split('\x01')
            .next()
            .and_then(|gs2| gs2.split(',').nth(1))
            .and_then(|a| a.strip_prefix("a="))
            .map(|a| vec![saslname(a)])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

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
