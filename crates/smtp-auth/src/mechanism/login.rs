//! LOGIN (draft-murchison-sasl-login): `334 VXNlcm5hbWU6` then `334 UGFzc3dvcmQ6`.
//!
//! The prompts are exactly "Username:" and "Password:" (Outlook and lettre depend on them), and
//! `AUTH LOGIN <base64 user>` skips the first prompt (Python's smtplib sends it).

use super::{ClientError, ClientMechanism, ServerMechanism, done, utf8};
use crate::decision::AuthProgress;
use crate::exchange::Step;
use crate::request::{AuthRequest, SessionInfo};
use crate::result::AuthStatus;
use crate::secret::{Password, SecretBytes};

/// The first LOGIN challenge.
pub const LOGIN_USERNAME_PROMPT: &[u8] = b"Username:";
/// The second LOGIN challenge.
pub const LOGIN_PASSWORD_PROMPT: &[u8] = b"Password:";

#[derive(Debug, Default)]
enum State {
    #[default]
    User,
    Pass(String),
    Verifying,
}

/// The server side of LOGIN.
#[derive(Debug, Default)]
pub struct LoginServer {
    state: State,
}

impl LoginServer {
    fn username(&mut self, user: &[u8]) -> Step {
        match utf8(user) {
            Some(u) if !u.is_empty() => {
                self.state = State::Pass(u);
                Step::Challenge(LOGIN_PASSWORD_PROMPT.to_vec())
            }
            _ => done(AuthStatus::Malformed),
        }
    }
}

impl ServerMechanism for LoginServer {
    fn start(&mut self, _info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            None => Step::Challenge(LOGIN_USERNAME_PROMPT.to_vec()),
            Some(user) => self.username(user.expose_secret()),
        }
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        match std::mem::take(&mut self.state) {
            State::User => self.username(response.expose_secret()),
            State::Pass(user) => match utf8(response.expose_secret()) {
                Some(p) if !p.is_empty() => {
                    self.state = State::Verifying;
                    Step::Verify(AuthRequest::new(
                        info,
                        "LOGIN",
                        user,
                        Password::new(p),
                        None,
                    ))
                }
                _ => done(AuthStatus::Malformed),
            },
            State::Verifying => done(AuthStatus::TempFail),
        }
    }

    fn progress(&self) -> AuthProgress {
        match self.state {
            State::User => AuthProgress::LoginUser,
            State::Pass(_) => AuthProgress::LoginPass,
            State::Verifying => AuthProgress::Verifying,
        }
    }
}

/// The client side of LOGIN.
#[derive(Debug)]
pub struct LoginClient {
    username: SecretBytes,
    password: SecretBytes,
    send_initial: bool,
}

impl LoginClient {
    /// Credentials for LOGIN; the username is sent after the first prompt.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: SecretBytes::new(username.as_bytes().to_vec()),
            password: SecretBytes::new(password.as_bytes().to_vec()),
            send_initial: false,
        }
    }

    /// Sends the username as the initial response, the way Python's smtplib does.
    pub fn with_initial_response(mut self) -> Self {
        self.send_initial = true;
        self
    }
}

impl ClientMechanism for LoginClient {
    fn name(&self) -> &str {
        "LOGIN"
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        self.send_initial.then(|| self.username.clone())
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        // Answer by the prompt's meaning, as common clients do.
        if challenge.eq_ignore_ascii_case(LOGIN_USERNAME_PROMPT) {
            Ok(self.username.clone())
        } else if challenge.eq_ignore_ascii_case(LOGIN_PASSWORD_PROMPT) {
            Ok(self.password.clone())
        } else {
            Err(ClientError::UnexpectedChallenge)
        }
    }
}
