//! XOAUTH2 (Google's format) and OAUTHBEARER (RFC 7628). The bearer token goes to the provider
//! as the request's password; a rejected token gets the error JSON challenge, and the exchange
//! fails after the client's (dummy) response.

use super::{ClientError, ClientMechanism, ServerMechanism, done, utf8};
use crate::decision::{AuthDecision, AuthProgress};
use crate::exchange::Step;
use crate::request::{AuthRequest, SessionInfo};
use crate::result::AuthStatus;
use crate::secret::{Password, SecretBytes};

/// The XOAUTH2 error challenge.
const XOAUTH2_ERROR: &[u8] = br#"{"status":"401","schemes":"bearer"}"#;
/// The OAUTHBEARER error challenge (RFC 7628 §3.2.2).
const OAUTHBEARER_ERROR: &[u8] = br#"{"status":"invalid_token","schemes":"bearer"}"#;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Waiting,
    Verifying,
    ErrorSent,
    Done,
}

/// The `auth=` value: `Bearer <token>`, scheme case-insensitive.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}

/// Shared state of both OAuth mechanisms.
#[derive(Debug, Default)]
struct OAuth {
    state: State,
}

impl OAuth {
    fn verify(
        &mut self,
        info: &SessionInfo,
        mech: &'static str,
        user: String,
        token: String,
    ) -> Step {
        self.state = State::Verifying;
        Step::Verify(AuthRequest::new(
            info,
            mech,
            user,
            Password::new(token),
            None,
        ))
    }

    /// A refused token gets the error challenge (RFC 7628 §3.2.2: the client answers it and
    /// the server then fails the exchange); any other decision stands.
    fn decide(&mut self, decision: AuthDecision, error: &[u8]) -> Option<Step> {
        if self.state != State::Verifying {
            return Some(done(AuthStatus::TempFail));
        }
        if decision == AuthDecision::Invalid {
            self.state = State::ErrorSent;
            return Some(Step::Challenge(error.to_vec()));
        }
        self.state = State::Done;
        None
    }

    fn after_error(&mut self) -> Option<Step> {
        (self.state == State::ErrorSent).then(|| {
            self.state = State::Done;
            done(AuthStatus::Invalid)
        })
    }
}

/// Which OAuth message format a server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthKind {
    /// XOAUTH2: `user=U ^A auth=Bearer T ^A ^A`.
    XOAuth2,
    /// OAUTHBEARER (RFC 7628): `gs2-header ^A host=H ^A port=P ^A auth=Bearer T ^A ^A`; the
    /// user is the gs2 header's `a=` authorization identity.
    OAuthBearer,
}

impl OAuthKind {
    fn name(self) -> &'static str {
        match self {
            Self::XOAuth2 => "XOAUTH2",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }

    fn error(self) -> &'static [u8] {
        match self {
            Self::XOAuth2 => XOAUTH2_ERROR,
            Self::OAuthBearer => OAUTHBEARER_ERROR,
        }
    }

    /// `(user, token)` from the client's message.
    fn parse(self, text: &str) -> Result<(String, String), AuthStatus> {
        match self {
            Self::XOAuth2 => parse_xoauth2(text),
            Self::OAuthBearer => parse_oauthbearer(text),
        }
    }
}

fn parse_xoauth2(text: &str) -> Result<(String, String), AuthStatus> {
    let mut user = None;
    let mut token = None;
    for field in text.split('\x01').filter(|f| !f.is_empty()) {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u.to_owned());
        } else if let Some(a) = field.strip_prefix("auth=") {
            token = bearer(a).map(str::to_owned);
        }
    }
    match (user, token) {
        (Some(u), Some(t)) if !u.is_empty() => Ok((u, t)),
        _ => Err(AuthStatus::Malformed),
    }
}

fn parse_oauthbearer(text: &str) -> Result<(String, String), AuthStatus> {
    let (gs2, rest) = text.split_once('\x01').ok_or(AuthStatus::Malformed)?;
    // gs2-header = gs2-cbind-flag "," [ "a=" saslname ] ","
    let mut parts = gs2.splitn(3, ',');
    let (Some(flag), Some(authz), Some("")) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AuthStatus::Malformed);
    };
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(AuthStatus::Unsupported),
        _ => return Err(AuthStatus::Malformed),
    }
    let user = match authz {
        "" => String::new(),
        a => a
            .strip_prefix("a=")
            .and_then(super::scram::decode_saslname)
            .ok_or(AuthStatus::Malformed)?,
    };
    let body = rest
        .strip_suffix("\x01\x01")
        .or_else(|| rest.strip_suffix('\x01'))
        .ok_or(AuthStatus::Malformed)?;
    let token = body
        .split('\x01')
        .find_map(|kv| kv.strip_prefix("auth="))
        .and_then(bearer)
        .ok_or(AuthStatus::Malformed)?;
    Ok((user, token.to_owned()))
}

/// The server side of XOAUTH2 and OAUTHBEARER: the token goes to the provider as the
/// request's password.
#[derive(Debug)]
pub struct OAuthServer {
    kind: OAuthKind,
    inner: OAuth,
    /// The error challenge with the server's details, when set.
    error: Option<Vec<u8>>,
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl OAuthServer {
    /// A server for the given format.
    pub fn new(kind: OAuthKind) -> Self {
        Self {
            kind,
            inner: OAuth::default(),
            error: None,
        }
    }

    /// Adds the details RFC 7628 §3.2.2 lets the error challenge carry: the `scope` a token
    /// needs and the `openid-configuration` URL where a client finds the identity provider.
    pub fn with_error_details(
        mut self,
        scope: Option<&str>,
        openid_configuration: Option<&str>,
    ) -> Self {
        let status = match self.kind {
            OAuthKind::XOAuth2 => "\"401\",\"schemes\":\"bearer\"",
            OAuthKind::OAuthBearer => "\"invalid_token\"",
        };
        let mut json = format!("{{\"status\":{status}");
        if let Some(s) = scope {
            json.push_str(&format!(",\"scope\":{}", json_string(s)));
        }
        if let Some(u) = openid_configuration {
            json.push_str(&format!(",\"openid-configuration\":{}", json_string(u)));
        }
        json.push('}');
        self.error = Some(json.into_bytes());
        self
    }

    /// An XOAUTH2 server.
    pub fn xoauth2() -> Self {
        Self::new(OAuthKind::XOAuth2)
    }

    /// An OAUTHBEARER server.
    pub fn oauthbearer() -> Self {
        Self::new(OAuthKind::OAuthBearer)
    }

    fn message(&mut self, info: &SessionInfo, msg: &[u8]) -> Step {
        let parsed = utf8(msg)
            .ok_or(AuthStatus::Malformed)
            .and_then(|text| self.kind.parse(&text));
        match parsed {
            Ok((user, token)) => self.inner.verify(info, self.kind.name(), user, token),
            Err(status) => done(status),
        }
    }
}

impl ServerMechanism for OAuthServer {
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            None => Step::Challenge(Vec::new()),
            Some(m) => self.message(info, m.expose_secret()),
        }
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        match self.inner.after_error() {
            Some(step) => step,
            None => self.message(info, response.expose_secret()),
        }
    }

    fn decide(&mut self, _info: &SessionInfo, decision: AuthDecision) -> Option<Step> {
        let error = self.error.as_deref().unwrap_or(self.kind.error());
        self.inner.decide(decision, error)
    }

    fn progress(&self) -> AuthProgress {
        match (self.kind, self.inner.state == State::ErrorSent) {
            (OAuthKind::XOAuth2, false) => AuthProgress::XOAuth2,
            (OAuthKind::XOAuth2, true) => AuthProgress::XOAuth2Error,
            (OAuthKind::OAuthBearer, false) => AuthProgress::OAuthBearer,
            (OAuthKind::OAuthBearer, true) => AuthProgress::OAuthBearerError,
        }
    }
}

/// The client side of XOAUTH2.
#[derive(Debug)]
pub struct XOAuth2Client {
    message: SecretBytes,
}

impl XOAuth2Client {
    /// A user and bearer token.
    pub fn new(user: &str, token: &str) -> Self {
        Self {
            message: SecretBytes::new(
                format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes(),
            ),
        }
    }
}

impl ClientMechanism for XOAuth2Client {
    fn name(&self) -> &str {
        "XOAUTH2"
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        Some(self.message.clone())
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        if challenge.is_empty() {
            return Ok(self.message.clone());
        }
        // An error challenge: answer with an empty response so the server can fail.
        Ok(SecretBytes::new(Vec::new()))
    }
}

/// The client side of OAUTHBEARER.
#[derive(Debug)]
pub struct OAuthBearerClient {
    message: SecretBytes,
}

impl OAuthBearerClient {
    /// A user (sent as the gs2 `a=` identity), the server's host and port, and a token.
    pub fn new(user: &str, host: &str, port: u16, token: &str) -> Self {
        let user = super::scram::encode_saslname(user);
        Self {
            message: SecretBytes::new(
                format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
                    .into_bytes(),
            ),
        }
    }
}

impl ClientMechanism for OAuthBearerClient {
    fn name(&self) -> &str {
        "OAUTHBEARER"
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        Some(self.message.clone())
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        if challenge.is_empty() {
            return Ok(self.message.clone());
        }
        // RFC 7628 §3.2.3: after an error challenge the client sends a single %x01.
        Ok(SecretBytes::new(vec![1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The challenge a refused token gets.
    fn refused(mut server: OAuthServer, message: &[u8]) -> Vec<u8> {
        let info = SessionInfo::default();
        let step = server.start(&info, Some(SecretBytes::new(message.to_vec())));
        assert!(matches!(step, Step::Verify(_)), "{step:?}");
        match server.decide(&info, AuthDecision::Invalid) {
            Some(Step::Challenge(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_error_challenge_carries_the_configured_scope_and_discovery_url() {
        let bearer = b"n,a=alice@example.org,\x01auth=Bearer t0k\x01\x01";
        assert_eq!(
            refused(OAuthServer::oauthbearer(), bearer),
            br#"{"status":"invalid_token","schemes":"bearer"}"#
        );
        let detailed = OAuthServer::oauthbearer().with_error_details(
            Some("openid email smtp.send"),
            Some("https://idp.example.org/.well-known/openid-configuration"),
        );
        assert_eq!(
            String::from_utf8(refused(detailed, bearer)).unwrap(),
            r#"{"status":"invalid_token","scope":"openid email smtp.send","openid-configuration":"https://idp.example.org/.well-known/openid-configuration"}"#
        );
        let x = OAuthServer::xoauth2().with_error_details(Some("a \"quoted\"\\scope"), None);
        assert_eq!(
            String::from_utf8(refused(x, b"user=alice\x01auth=Bearer t0k\x01\x01")).unwrap(),
            r#"{"status":"401","schemes":"bearer","scope":"a \"quoted\"\\scope"}"#
        );
    }
}
