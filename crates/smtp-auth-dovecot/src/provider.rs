//! What a server does with a [`DovecotClient`]: check passwords ([`DovecotProvider`], an
//! `AuthProvider` for the built-in PLAIN and LOGIN, behind the credential cache like any other)
//! or run a whole SASL exchange inside Dovecot ([`Proxy`], for SCRAM and every other mechanism
//! whose proof only Dovecot can check).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use smtp_auth::sasl::Response;
use smtp_auth::{AuthData, AuthDecision, AuthRequest, AuthResult, AuthStatus, Identity};
use tower_service::Service;
use zeroize::Zeroizing;

use crate::client::{DovecotClient, Error, Exchange};
use crate::protocol::{Answer, RequestInfo};

/// An `AuthProvider` that checks a password by a PLAIN exchange with Dovecot, passing the
/// session's addresses and TLS state: `OK` → `Ok`, `FAIL` → `Invalid`, `FAIL` with `temp`,
/// Dovecot down, slow or not offering PLAIN → `Failure` (454 4.7.0).
#[derive(Debug, Clone)]
pub struct DovecotProvider {
    client: DovecotClient,
}

impl DovecotProvider {
    /// A provider asking through `client`.
    pub fn new(client: DovecotClient) -> Self {
        Self { client }
    }

    /// Decides one request.
    pub async fn check(&self, req: &AuthRequest) -> AuthDecision {
        // PLAIN's message: authzid NUL authcid NUL password, wiped when dropped.
        let mut message = Zeroizing::new(Vec::with_capacity(
            req.username.len() + req.password.expose_secret().len() + 2,
        ));
        if let Some(z) = &req.authzid {
            message.extend_from_slice(z.as_bytes());
        }
        message.push(0);
        message.extend_from_slice(req.username.as_bytes());
        message.push(0);
        message.extend_from_slice(req.password.expose_secret().as_bytes());
        let info = RequestInfo {
            remote_ip: req.remote_ip.parse().ok(),
            local_ip: req.local_ip.parse().ok(),
            secured: req.secured,
            ..RequestInfo::default()
        };
        match self.client.start("PLAIN", &info, Some(&message)).await {
            Ok((_, Answer::Ok { .. })) => AuthDecision::Ok,
            Ok((_, Answer::Fail { temp: false, .. })) => AuthDecision::Invalid,
            Ok((_, Answer::Fail { temp: true, .. })) => {
                tracing::warn!(target: "smtp_auth_dovecot", user = %req.username, "Dovecot: temporary failure");
                AuthDecision::Failure
            }
            Ok((_, Answer::Continue(_))) => {
                tracing::warn!(target: "smtp_auth_dovecot", "Dovecot asked for more after a complete PLAIN response");
                AuthDecision::Failure
            }
            Err(e) => {
                tracing::warn!(target: "smtp_auth_dovecot", error = %e, "password check failed");
                AuthDecision::Failure
            }
        }
    }
}

impl Service<AuthRequest> for DovecotProvider {
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.check(&req).await) })
    }
}

/// What a [`Proxy`] wants next.
#[derive(Debug)]
pub enum ProxyStep {
    /// Send this challenge to the client (`334 <base64>`) and hand its response to
    /// [`Proxy::respond`].
    Challenge(Vec<u8>),
    /// The exchange is over: this is its result, for the server to answer and record. A
    /// failure names its user in `auth_data` when Dovecot said who it was, so the failure
    /// limiter counts it against that user.
    Done(AuthResult),
}

/// A SASL exchange relayed between an SMTP client and Dovecot, which runs the mechanism:
/// every mechanism Dovecot offers works, SCRAM included, and Dovecot's own penalties and logs
/// see the real client's address. Runtime-neutral: the caller sends the challenges.
///
/// The names in the client's first message (its initial response, or its answer to the first
/// challenge) are checked with [`smtp_auth::sasl::check_first_message`] before Dovecot sees
/// them: one with CR, LF, NUL or SASLprep's prohibited output ends the exchange as
/// [`AuthStatus::Malformed`] (501 5.5.2), as the server's own exchange does.
#[derive(Debug)]
pub struct Proxy {
    mechanism: String,
    exchange: Option<Exchange>,
    /// The client's first message has been seen (and its names checked).
    first_seen: bool,
}

impl Proxy {
    /// Starts `mechanism` with the client's initial response (decoded).
    pub async fn start(
        client: &DovecotClient,
        mechanism: &str,
        info: &RequestInfo,
        initial: Option<&[u8]>,
    ) -> (Self, ProxyStep) {
        let mechanism = mechanism.to_ascii_uppercase();
        let mut proxy = Self {
            mechanism,
            exchange: None,
            first_seen: initial.is_some(),
        };
        if let Some(Err(why)) = initial.map(|first| proxy.check_names(first)) {
            return (proxy, why);
        }
        let started = client.start(&proxy.mechanism, info, initial).await;
        let step = match started {
            Ok((exchange, answer)) => {
                proxy.exchange = Some(exchange);
                proxy.conclude(Ok(answer))
            }
            Err(e) => proxy.conclude(Err(e)),
        };
        (proxy, step)
    }

    /// Hands the client's response to the last challenge to Dovecot.
    pub async fn respond(&mut self, response: Response) -> ProxyStep {
        let data = match response {
            Response::Data(data) => data,
            other => {
                self.exchange = None;
                let status = other.failure().unwrap_or(AuthStatus::Malformed);
                return ProxyStep::Done(AuthResult::failure(status));
            }
        };
        // Only the first message: a later one may be a password (LOGIN's second).
        let first = !std::mem::replace(&mut self.first_seen, true);
        if first && let Err(why) = self.check_names(data.expose_secret()) {
            self.exchange = None;
            return why;
        }
        let answer = match self.exchange.as_mut() {
            Some(ex) => ex.respond(data.expose_secret()).await,
            None => Err(Error::Protocol("no exchange in progress".into())),
        };
        self.conclude(answer)
    }

    /// The first message's names, checked before Dovecot sees them.
    fn check_names(&self, first: &[u8]) -> Result<(), ProxyStep> {
        smtp_auth::sasl::check_first_message(&self.mechanism, first).map_err(|why| {
            tracing::info!(target: "smtp_auth_dovecot", mechanism = %self.mechanism, %why, "name refused before Dovecot");
            ProxyStep::Done(AuthResult::failure(AuthStatus::Malformed))
        })
    }

    fn conclude(&mut self, answer: Result<Answer, Error>) -> ProxyStep {
        let named = |user: Option<String>, status| {
            let mut r = AuthResult::failure(status);
            r.auth_data = user.map(|login| self.identity(login));
            r
        };
        let step = match answer {
            Ok(Answer::Continue(c)) => return ProxyStep::Challenge(c),
            Ok(Answer::Ok { user }) => {
                ProxyStep::Done(AuthResult::success(Some(self.identity(user))))
            }
            Ok(Answer::Fail {
                user, temp: false, ..
            }) => ProxyStep::Done(named(user, AuthStatus::Invalid)),
            Ok(Answer::Fail {
                user, temp: true, ..
            }) => {
                tracing::warn!(target: "smtp_auth_dovecot", mechanism = %self.mechanism, "Dovecot: temporary failure");
                ProxyStep::Done(named(user, AuthStatus::TempFail))
            }
            Err(Error::UnknownMechanism(m)) => {
                tracing::warn!(target: "smtp_auth_dovecot", mechanism = %m, "Dovecot does not offer this mechanism");
                ProxyStep::Done(AuthResult::failure(AuthStatus::UnknownMechanism))
            }
            Err(e) => {
                tracing::warn!(target: "smtp_auth_dovecot", mechanism = %self.mechanism, error = %e, "SASL exchange failed");
                ProxyStep::Done(AuthResult::failure(AuthStatus::TempFail))
            }
        };
        self.exchange = None;
        step
    }

    fn identity(&self, login: String) -> AuthData {
        AuthData::Identity(Identity {
            login,
            authzid: None,
            mechanism: self.mechanism.clone(),
        })
    }
}
