//! [`AuthDecision`] and [`AuthProgress`], the two enums of the Nim `smtpauth` module, and
//! [`Verdict`], an authenticator's whole answer.

use std::fmt;

use crate::result::{AuthData, AuthStatus};

/// What an [`AuthProvider`](crate::AuthProvider) decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthDecision {
    /// The credentials are valid (SMTP: 235 2.7.0).
    Ok,
    /// The credentials are wrong or the user is unknown (SMTP: 535 5.7.8).
    Invalid,
    /// The provider could not decide (timeout, outage); the client should retry later
    /// (SMTP: 454 4.7.0).
    Failure,
    /// The credential was not checked: the user or the client's address is past its failure
    /// limit. Answered like [`Failure`](Self::Failure) (454 4.7.0), so a lock says nothing
    /// about the credential or whether the user exists; reported apart from it.
    Locked,
}

impl AuthDecision {
    /// The status an exchange ends with when this decision stands.
    pub fn status(self) -> AuthStatus {
        match self {
            Self::Ok => AuthStatus::Success,
            Self::Invalid => AuthStatus::Invalid,
            Self::Failure => AuthStatus::TempFail,
            Self::Locked => AuthStatus::Locked,
        }
    }
}

impl fmt::Display for AuthDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Failure => "failure",
            Self::Locked => "locked",
        })
    }
}

/// Where an exchange is: the step each mechanism waits in. `smtpauth`'s `apNone`, `apPlain`,
/// `apLoginUser` and `apLoginPass` are [`None`](Self::None), [`Plain`](Self::Plain),
/// [`LoginUser`](Self::LoginUser) and [`LoginPass`](Self::LoginPass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AuthProgress {
    /// No exchange in progress.
    #[default]
    None,
    /// PLAIN: waiting for the credentials after an empty challenge.
    Plain,
    /// LOGIN: waiting for the username (after `334 VXNlcm5hbWU6`).
    LoginUser,
    /// LOGIN: waiting for the password (after `334 UGFzc3dvcmQ6`).
    LoginPass,
    /// CRAM-MD5: waiting for `username digest` after the challenge.
    CramMd5,
    /// SCRAM: waiting for the client-first message after an empty challenge.
    ScramClientFirst,
    /// SCRAM: waiting for the client-final message after server-first.
    ScramClientFinal,
    /// SCRAM: waiting for the client's empty response after server-final.
    ScramServerFinal,
    /// XOAUTH2: waiting for the client response after an empty challenge.
    XOAuth2,
    /// XOAUTH2: waiting for the client's empty response after the error challenge.
    XOAuth2Error,
    /// OAUTHBEARER: waiting for the client response after an empty challenge.
    OAuthBearer,
    /// OAUTHBEARER: waiting for the client's `%x01` after the error challenge.
    OAuthBearerError,
    /// EXTERNAL: waiting for the authorization identity after an empty challenge.
    External,
    /// A custom mechanism is waiting for a client response.
    Custom,
    /// Waiting for the provider's decision or a credential lookup.
    Verifying,
}

/// An authenticator's answer to [`Step::Verify`](crate::Step::Verify) (aiosmtpd's
/// authenticator returns an `AuthResult`; here the parts it may set are typed): the decision,
/// and what it adds to the outcome when the exchange ends as it decided.
///
/// - `message`: a full reply line (`"535 5.7.8 Account locked"`) sent instead of the standard
///   one. It is sent only when the exchange ends as decided and the line is a reply of the
///   outcome's kind ([`smtp::reply`](crate::smtp::reply)); a "235 Welcome" never answers an
///   exchange refused afterwards.
/// - `auth_data`: kept on the session on success instead of the mechanism's
///   [`Identity`](crate::Identity).
///
/// There is no `handled`: only a hook that holds the connection can reply itself.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Verdict {
    /// What was decided.
    pub decision: AuthDecision,
    /// A reply line replacing the standard one.
    pub message: Option<String>,
    /// Data to keep on the session on success.
    pub auth_data: Option<AuthData>,
}

impl Verdict {
    /// The decision alone.
    pub fn new(decision: AuthDecision) -> Self {
        Self {
            decision,
            message: None,
            auth_data: None,
        }
    }

    /// A success keeping `auth_data` on the session (`None`: the mechanism's identity).
    pub fn ok(auth_data: Option<AuthData>) -> Self {
        Self {
            auth_data,
            ..Self::new(AuthDecision::Ok)
        }
    }

    /// Replaces the standard reply with `message` (a full reply line).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

impl From<AuthDecision> for Verdict {
    fn from(decision: AuthDecision) -> Self {
        Self::new(decision)
    }
}
