//! EXTERNAL (RFC 4422 Appendix A): the identity comes from the transport (a verified TLS
//! client certificate), handed in by the driver as [`SessionInfo::external_identity`]. The
//! client's message is the authorization identity (empty for "the same").

use super::{ClientError, ClientMechanism, ServerMechanism, done, utf8};
use crate::decision::AuthProgress;
use crate::exchange::Step;
use crate::request::{AuthRequest, SessionInfo};
use crate::result::AuthStatus;
use crate::secret::{Password, SecretBytes};

/// The server side of EXTERNAL. The provider receives the transport identity as `username`,
/// an empty password and the requested `authzid`, and decides whether it may log in.
#[derive(Debug, Default)]
pub struct ExternalServer {
    // Stateless today; built with `default()` so it may gain state.
    _private: (),
}

impl ExternalServer {
    fn authzid(&mut self, info: &SessionInfo, msg: &[u8]) -> Step {
        let Some(identity) = info.external_identity.clone() else {
            // No identity from the transport: nothing to authenticate.
            return done(AuthStatus::Invalid);
        };
        let Some(authzid) = utf8(msg) else {
            return done(AuthStatus::Malformed);
        };
        let authzid = Some(authzid).filter(|a| !a.is_empty());
        Step::Verify(AuthRequest::new(
            info,
            "EXTERNAL",
            identity,
            Password::default(),
            authzid,
        ))
    }
}

impl ServerMechanism for ExternalServer {
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            None => Step::Challenge(Vec::new()),
            Some(m) => self.authzid(info, m.expose_secret()),
        }
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        self.authzid(info, response.expose_secret())
    }

    fn progress(&self) -> AuthProgress {
        AuthProgress::External
    }
}

/// The client side of EXTERNAL.
#[derive(Debug, Default)]
pub struct ExternalClient {
    authzid: String,
}

impl ExternalClient {
    /// Requests `authzid` (empty: the transport identity itself).
    pub fn new(authzid: &str) -> Self {
        Self {
            authzid: authzid.to_owned(),
        }
    }
}

impl ClientMechanism for ExternalClient {
    fn name(&self) -> &str {
        "EXTERNAL"
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        Some(SecretBytes::new(self.authzid.as_bytes().to_vec()))
    }

    fn respond(&mut self, _challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        Ok(SecretBytes::new(self.authzid.as_bytes().to_vec()))
    }
}
