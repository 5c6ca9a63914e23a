//! [`AuthDecision`] and [`AuthProgress`], the two enums of the Nim `smtpauth` module.

use std::fmt;

/// What an [`AuthProvider`](crate::AuthProvider) decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthDecision {
    /// The credentials are valid (SMTP: 235 2.7.0).
    Ok,
    /// The credentials are wrong or the user is unknown (SMTP: 535 5.7.8).
    Invalid,
    /// The provider could not decide (timeout, outage); the client should retry later
    /// (SMTP: 454 4.7.0).
    Failure,
}

impl fmt::Display for AuthDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Failure => "failure",
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
