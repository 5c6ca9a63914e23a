//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.

use super::{ClientError, ClientMechanism, ServerMechanism, done, utf8};
use crate::decision::AuthProgress;
use crate::exchange::Step;
use crate::request::{AuthRequest, SessionInfo};
use crate::result::AuthStatus;
use crate::secret::{Password, SecretBytes};

/// The server side of PLAIN.
#[derive(Debug, Default)]
pub struct PlainServer {
    // Stateless today; built with `default()` so it may gain state.
    _private: (),
}

impl PlainServer {
    fn credentials(&mut self, info: &SessionInfo, msg: &[u8]) -> Step {
        let mut parts = msg.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(passwd), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return done(AuthStatus::Malformed);
        };
        if authcid.is_empty() || passwd.is_empty() {
            return done(AuthStatus::Malformed);
        }
        let (Some(authzid), Some(authcid), Some(passwd)) =
            (utf8(authzid), utf8(authcid), utf8(passwd))
        else {
            return done(AuthStatus::Malformed);
        };
        // RFC 4616 §2: an empty authzid means "act as the authcid".
        let authzid = Some(authzid).filter(|a| !a.is_empty());
        Step::Verify(AuthRequest::new(
            info,
            "PLAIN",
            authcid,
            Password::new(passwd),
            authzid,
        ))
    }
}

impl ServerMechanism for PlainServer {
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            // RFC 4954 §4: no initial response → an empty challenge.
            None => Step::Challenge(Vec::new()),
            Some(msg) => self.credentials(info, msg.expose_secret()),
        }
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        self.credentials(info, response.expose_secret())
    }

    fn progress(&self) -> AuthProgress {
        AuthProgress::Plain
    }
}

/// The client side of PLAIN.
#[derive(Debug)]
pub struct PlainClient {
    message: Option<SecretBytes>,
}

impl PlainClient {
    /// Credentials for PLAIN; `authzid` empty or `None` to act as `username`.
    pub fn new(username: &str, password: &str, authzid: Option<&str>) -> Self {
        let mut m = Vec::with_capacity(username.len() + password.len() + 2);
        m.extend_from_slice(authzid.unwrap_or("").as_bytes());
        m.push(0);
        m.extend_from_slice(username.as_bytes());
        m.push(0);
        m.extend_from_slice(password.as_bytes());
        Self {
            message: Some(SecretBytes::new(m)),
        }
    }
}

impl ClientMechanism for PlainClient {
    fn name(&self) -> &str {
        "PLAIN"
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        self.message.take()
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        if !challenge.is_empty() {
            return Err(ClientError::UnexpectedChallenge);
        }
        self.message.take().ok_or(ClientError::UnexpectedChallenge)
    }
}
