//! CRAM-MD5 (RFC 2195): the server sends `<unique@host>`, the client answers
//! `user SP hex(HMAC-MD5(password, challenge))`. The server needs the password in clear, so it
//! asks for a [`Step::Lookup`] instead of a provider decision.

use hmac::{Hmac, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;

use super::{ClientError, ClientMechanism, ServerMechanism, done, random_bytes, utf8};
use crate::decision::AuthProgress;
use crate::exchange::Step;
use crate::request::{LookupRequest, LookupResult, SessionInfo, StoredSecret};
use crate::result::{AuthData, AuthResult, AuthStatus, Identity};
use crate::secret::SecretBytes;

fn digest(key: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(challenge);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Default)]
enum State {
    #[default]
    New,
    Challenged,
    Lookup {
        username: String,
        digest: String,
    },
    Done,
}

/// The server side of CRAM-MD5.
#[derive(Debug, Default)]
pub struct CramMd5Server {
    challenge: Option<String>,
    state: State,
}

impl CramMd5Server {
    /// A server that sends `challenge` instead of a random one (test vectors).
    pub fn with_challenge(challenge: impl Into<String>) -> Self {
        Self {
            challenge: Some(challenge.into()),
            state: State::New,
        }
    }
}

impl ServerMechanism for CramMd5Server {
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        if initial.is_some() {
            // CRAM-MD5 has no initial response.
            return done(AuthStatus::Malformed);
        }
        if self.challenge.is_none() {
            let Some(r) = random_bytes(12) else {
                return done(AuthStatus::TempFail);
            };
            let (a, b) = r.split_at(6);
            let host = if info.server_name.is_empty() {
                "localhost"
            } else {
                &info.server_name
            };
            let n = |x: &[u8]| x.iter().fold(0u64, |acc, &v| acc << 8 | v as u64);
            self.challenge = Some(format!("<{}.{}@{}>", n(a), n(b), host));
        }
        self.state = State::Challenged;
        Step::Challenge(self.challenge.clone().unwrap_or_default().into_bytes())
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        if !matches!(self.state, State::Challenged) {
            return done(AuthStatus::TempFail);
        }
        let Some(text) = utf8(response.expose_secret()) else {
            return done(AuthStatus::Malformed);
        };
        let Some((username, digest)) = text.rsplit_once(' ') else {
            return done(AuthStatus::Malformed);
        };
        if username.is_empty()
            || digest.len() != 32
            || !digest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return done(AuthStatus::Malformed);
        }
        let request = LookupRequest {
            username: username.to_owned(),
            mechanism: "CRAM-MD5".into(),
            remote_ip: info.remote_ip.map(|i| i.to_string()).unwrap_or_default(),
        };
        self.state = State::Lookup {
            username: username.to_owned(),
            digest: digest.to_ascii_lowercase(),
        };
        Step::Lookup(request)
    }

    fn supply(&mut self, _info: &SessionInfo, found: LookupResult) -> Step {
        let State::Lookup {
            username,
            digest: got,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return done(AuthStatus::TempFail);
        };
        let password = match found {
            LookupResult::Found(StoredSecret::Plain(p)) => p,
            // Only a clear password can answer CRAM-MD5; an unknown user looks the same.
            LookupResult::Found(StoredSecret::ScramSha256(_)) | LookupResult::NotFound => {
                return done(AuthStatus::Invalid);
            }
            LookupResult::Failure => return done(AuthStatus::TempFail),
            LookupResult::Locked => return done(AuthStatus::Locked),
        };
        let challenge = self.challenge.clone().unwrap_or_default();
        let want = hex(&digest(
            password.expose_secret().as_bytes(),
            challenge.as_bytes(),
        ));
        if bool::from(want.as_bytes().ct_eq(got.as_bytes())) {
            Step::Done(AuthResult::success(Some(AuthData::Identity(Identity {
                login: username,
                authzid: None,
                mechanism: "CRAM-MD5".into(),
            }))))
        } else {
            done(AuthStatus::Invalid)
        }
    }

    fn progress(&self) -> AuthProgress {
        AuthProgress::CramMd5
    }
}

/// The client side of CRAM-MD5.
#[derive(Debug)]
pub struct CramMd5Client {
    username: String,
    password: SecretBytes,
}

impl CramMd5Client {
    /// Credentials for CRAM-MD5.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: SecretBytes::new(password.as_bytes().to_vec()),
        }
    }
}

impl ClientMechanism for CramMd5Client {
    fn name(&self) -> &str {
        "CRAM-MD5"
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        None
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        if challenge.is_empty() {
            return Err(ClientError::MalformedChallenge);
        }
        let d = hex(&digest(self.password.expose_secret(), challenge));
        Ok(SecretBytes::new(
            format!("{} {d}", self.username).into_bytes(),
        ))
    }
}
