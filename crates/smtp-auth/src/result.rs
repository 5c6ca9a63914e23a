//! [`AuthResult`] (aiosmtpd's `AuthResult`), [`AuthStatus`] and [`AuthData`], and
//! [`LoginPassword`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroize;

use crate::secret::Password;

/// Why an exchange ended, protocol-neutral. [`crate::smtp::reply`] maps it to an SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthStatus {
    /// Authenticated.
    Success,
    /// Wrong credentials or unknown user.
    Invalid,
    /// The provider could not decide; retry later.
    TempFail,
    /// The client sent `*`.
    Cancelled,
    /// A response was not valid base64.
    Undecodable,
    /// A response decoded, but does not follow the mechanism's syntax.
    Malformed,
    /// A response exceeded the length limit.
    TooLong,
    /// The mechanism is unknown or excluded.
    UnknownMechanism,
    /// The client asked for an option the mechanism does not support (e.g. SCRAM channel
    /// binding).
    Unsupported,
    /// The credential was not checked: the user or the client's address is past its failure
    /// limit. Answered like [`AuthStatus::TempFail`] (454 4.7.0), so a lock says nothing about
    /// the credential or whether the user exists; reported apart from it.
    Locked,
}

impl AuthStatus {
    /// A stable lowercase name for logs and metrics: `success`, `invalid`, `temp_fail`,
    /// `cancelled`, `undecodable`, `malformed`, `too_long`, `unknown_mechanism`,
    /// `unsupported`, `locked`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Invalid => "invalid",
            Self::TempFail => "temp_fail",
            Self::Cancelled => "cancelled",
            Self::Undecodable => "undecodable",
            Self::Malformed => "malformed",
            Self::TooLong => "too_long",
            Self::UnknownMechanism => "unknown_mechanism",
            Self::Unsupported => "unsupported",
            Self::Locked => "locked",
        }
    }
}

/// The identity a successful exchange established.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The authenticated user (authcid).
    pub login: String,
    /// The authorization identity requested, if any.
    pub authzid: Option<String>,
    /// The mechanism used.
    pub mechanism: String,
}

/// Free-form authentication data kept on the session after success (aiosmtpd's
/// `session.auth_data`). Its [`login`](AuthData::login) is the session's `login_data`.
#[derive(Clone)]
#[non_exhaustive]
pub enum AuthData {
    /// What the built-in mechanisms record: the identity, never the password.
    Identity(Identity),
    /// A login and password, for authenticators that want aiosmtpd's `LoginPassword` shape.
    LoginPassword(LoginPassword),
    /// Anything an authenticator or custom mechanism attaches, with the login it vouches for.
    Custom {
        /// The login, if the data carries one.
        login: Option<String>,
        /// The data.
        data: Arc<dyn Any + Send + Sync>,
    },
}

impl AuthData {
    /// The login this data carries (aiosmtpd: `auth_data.login`, saved into
    /// `session.login_data`).
    pub fn login(&self) -> Option<&str> {
        match self {
            Self::Identity(i) => Some(&i.login),
            Self::LoginPassword(lp) => Some(&lp.login),
            Self::Custom { login, .. } => login.as_deref(),
        }
    }

    /// The label of the stored credential the login matched, when the store keeps several
    /// per user (app passwords) and said which: [`AuthData::Custom`] data of type
    /// [`CredentialLabel`].
    pub fn credential(&self) -> Option<&str> {
        match self {
            Self::Custom { data, .. } => {
                data.downcast_ref::<CredentialLabel>().map(|c| c.0.as_str())
            }
            _ => None,
        }
    }
}

/// Which of a user's stored credentials a login matched (an app password's label), kept as
/// [`AuthData::Custom`] data so a handler can tell them apart and the server logs it. Not a
/// secret: a name the operator gave the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialLabel(pub String);

impl fmt::Debug for AuthData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(i) => f.debug_tuple("Identity").field(i).finish(),
            Self::LoginPassword(lp) => f.debug_tuple("LoginPassword").field(lp).finish(),
            Self::Custom { login, .. } => f
                .debug_struct("Custom")
                .field("login", login)
                .finish_non_exhaustive(),
        }
    }
}

/// The outcome of an exchange (aiosmtpd's `AuthResult`): a status plus optional overrides.
///
/// - `success` (aiosmtpd's attribute; here [`AuthResult::is_success`]): derived from `status`,
///   so a result cannot say "success" with a failure's status or the other way round.
/// - `handled`: the reply was already sent (by a hook); the server sends nothing more.
///   Meaningful only for a failure.
/// - `message`: a full reply line (`"535 5.7.8 No"`) sent as is; when `None` the server sends
///   the standard reply for `status`.
/// - `auth_data`: saved as the session's `auth_data` on success. On a failure from a
///   `handle_auth` hook, its login (if any) names the user the failure counts against.
///
/// The exchange builds the one result of a built-in exchange; a custom mechanism or a
/// `handle_auth` hook builds its own. An authenticator answers with a
/// [`Verdict`](crate::Verdict) instead.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthResult {
    /// Whether the reply was already sent.
    pub handled: bool,
    /// A full reply line to send as is.
    pub message: Option<String>,
    /// Data to keep on the session.
    pub auth_data: Option<AuthData>,
    /// Why the exchange ended.
    pub status: AuthStatus,
}

impl AuthResult {
    /// A success with the given data (aiosmtpd's `AuthResult(success=True, auth_data=...)`).
    pub fn success(auth_data: Option<AuthData>) -> Self {
        Self {
            handled: false,
            message: None,
            auth_data,
            status: AuthStatus::Success,
        }
    }

    /// A failure with the given status and the standard reply. `AuthStatus::Success` is not a
    /// failure's status: it is taken as `Invalid`.
    pub fn failure(status: AuthStatus) -> Self {
        let status = match status {
            AuthStatus::Success => AuthStatus::Invalid,
            s => s,
        };
        Self {
            handled: false,
            message: None,
            auth_data: None,
            status,
        }
    }

    /// Whether authentication succeeded (aiosmtpd's `success`): the status says so.
    pub fn is_success(&self) -> bool {
        self.status == AuthStatus::Success
    }

    /// A failure whose reply a hook already sent.
    pub fn handled() -> Self {
        Self {
            handled: true,
            ..Self::failure(AuthStatus::Invalid)
        }
    }

    /// Replaces the standard reply with `message` (a full reply line, sent as is).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuthResult(success={}, handled={}, status={:?}, login={:?})",
            self.is_success(),
            self.handled,
            self.status,
            self.auth_data.as_ref().and_then(AuthData::login)
        )
    }
}

/// A login and its password, aiosmtpd's `LoginPassword`: `Debug` and `Display` never show the
/// password, and both fields are wiped when it is dropped.
#[derive(Clone)]
pub struct LoginPassword {
    /// The login.
    pub login: String,
    /// The password.
    pub password: Password,
}

impl Zeroize for LoginPassword {
    /// Wipes both the login and the password (what `Drop` does).
    fn zeroize(&mut self) {
        self.login.zeroize();
        self.password.zeroize();
    }
}

impl Drop for LoginPassword {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl fmt::Debug for LoginPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginPassword")
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for LoginPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LoginPassword(login={}, password=<redacted>)",
            self.login
        )
    }
}
