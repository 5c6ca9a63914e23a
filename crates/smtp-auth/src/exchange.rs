//! [`AuthExchange`]: the driver-facing state machine that wraps one mechanism.
//!
//! It owns, once for every mechanism: base64 decoding of responses (undecodable →
//! [`AuthStatus::Undecodable`]), the `*` cancel ([`AuthStatus::Cancelled`]), `=` as an empty
//! initial response, the response length limit ([`AuthStatus::TooLong`]) and
//! [`AuthProgress`] bookkeeping, and the one authorization-identity rule of every mechanism:
//! an authzid that is empty or equal to the user is fine; any other is refused
//! ([`AuthStatus::Invalid`]) unless the driver declared that its provider decides proxy
//! authorization ([`AuthExchange::with_proxy_authorization`]). A user name or authzid holding
//! CR, LF, NUL or SASLprep's prohibited output ([`sasl::check_name`]) ends the exchange with
//! [`AuthStatus::Malformed`] before any provider or store is asked. A call in the wrong state
//! returns [`ExchangeError`], never panics.

use std::fmt;

use crate::decision::{AuthDecision, AuthProgress, Verdict};
use crate::mechanism::ServerMechanism;
use crate::registry::Registry;
use crate::request::{AuthRequest, LookupRequest, LookupResult, SessionInfo};
use crate::result::{AuthData, AuthResult, AuthStatus, Identity};
use crate::sasl::{self, Response};

/// RFC 4954 §4: servers accept responses of at least 12288 octets.
pub const DEFAULT_MAX_RESPONSE: usize = 12288;

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (raw bytes; SMTP sends `334 ` + base64) and then call
    /// [`AuthExchange::respond`] with the client's line.
    Challenge(Vec<u8>),
    /// Ask the provider (or authenticator), then call [`AuthExchange::decide`] with its
    /// decision or [`Verdict`].
    Verify(AuthRequest),
    /// Look the user's secret up, then call [`AuthExchange::supply`] (CRAM-MD5, SCRAM).
    Lookup(LookupRequest),
    /// The exchange is over: send the reply for this result and record it.
    Done(AuthResult),
}

/// A call that does not fit the exchange's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeError {
    /// `start` on an exchange that already started.
    AlreadyStarted,
    /// `respond` while no challenge is outstanding.
    NotAwaitingResponse,
    /// `decide` while no `Verify` is outstanding.
    NotAwaitingDecision,
    /// `supply` while no `Lookup` is outstanding.
    NotAwaitingLookup,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyStarted => "the exchange has already started",
            Self::NotAwaitingResponse => "no challenge is outstanding",
            Self::NotAwaitingDecision => "no verification is outstanding",
            Self::NotAwaitingLookup => "no lookup is outstanding",
        })
    }
}

impl std::error::Error for ExchangeError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    AwaitingResponse,
    AwaitingDecision,
    AwaitingLookup,
    Done,
}

/// One AUTH exchange, from `start` to `Done`.
pub struct AuthExchange {
    registry: Registry,
    info: SessionInfo,
    mechanism: Option<Box<dyn ServerMechanism>>,
    name: String,
    state: State,
    max_response: usize,
    proxy_authorization: bool,
    /// The identity a `Verify` asked about: what a success of the provider's decision
    /// authenticates.
    verifying: Option<Identity>,
    /// A provider's `Ok` decided this exchange (so its authzid was the provider's to judge).
    decided_ok: bool,
    /// The verdict given, until the exchange ends: its message and data go into the result
    /// when the exchange ends as it decided.
    verdict: Option<Verdict>,
}

impl fmt::Debug for AuthExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthExchange")
            .field("mechanism", &self.name)
            .field("state", &self.state)
            .field("progress", &self.progress())
            .finish()
    }
}

impl AuthExchange {
    /// A new exchange choosing its mechanism from `registry`.
    pub fn new(registry: Registry, mut info: SessionInfo) -> Self {
        if !registry.contains("SCRAM-SHA-256-PLUS") {
            // Channel binding was not offered: a SCRAM `y` flag is then no downgrade.
            info.channel_binding = None;
        }
        Self {
            registry,
            info,
            mechanism: None,
            name: String::new(),
            state: State::New,
            max_response: DEFAULT_MAX_RESPONSE,
            proxy_authorization: false,
            verifying: None,
            decided_ok: false,
            verdict: None,
        }
    }

    /// Declares that the provider answering [`Step::Verify`] decides authorization identities
    /// itself (it reads [`AuthRequest::authzid`] and answers `Ok` only for a user allowed to
    /// act as it). Off by default: a request whose authzid is neither empty nor the user is
    /// refused before the provider is asked. Mechanisms that verify without a provider
    /// decision (SCRAM, CRAM-MD5) never allow proxying.
    pub fn with_proxy_authorization(mut self, on: bool) -> Self {
        self.proxy_authorization = on;
        self
    }

    /// Sets the response length limit in octets of base64 text (at least 12288 is kept).
    pub fn with_max_response(mut self, max: usize) -> Self {
        self.max_response = max.max(DEFAULT_MAX_RESPONSE);
        self
    }

    /// The mechanism name once started.
    pub fn mechanism(&self) -> &str {
        &self.name
    }

    /// Where the exchange is.
    pub fn progress(&self) -> AuthProgress {
        match (self.state, &self.mechanism) {
            (State::AwaitingResponse, Some(m)) => m.progress(),
            (State::AwaitingDecision | State::AwaitingLookup, _) => AuthProgress::Verifying,
            _ => AuthProgress::None,
        }
    }

    /// True once `Done` was returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Starts the exchange: `mechanism` as the client named it, `initial_response` as sent
    /// (base64 text, or `=` for an empty response).
    pub fn start(
        &mut self,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> Result<Step, ExchangeError> {
        if self.state != State::New {
            return Err(ExchangeError::AlreadyStarted);
        }
        let name = mechanism.to_ascii_uppercase();
        // Channel-binding mechanisms exist only where there is a channel to bind to.
        let unbound = name.ends_with("-PLUS") && self.info.channel_binding.is_none();
        let Some(mut mech) = self.registry.create(&name).filter(|_| !unbound) else {
            return Ok(self.finish(AuthResult::failure(AuthStatus::UnknownMechanism)));
        };
        self.name = name;
        let initial = match initial_response {
            None => None,
            Some(text) => match sasl::decode_initial_response(text, self.max_response) {
                Response::Data(bytes) => Some(bytes),
                other => {
                    let status = other.failure().unwrap_or(AuthStatus::Malformed);
                    return Ok(self.finish(AuthResult::failure(status)));
                }
            },
        };
        let step = mech.start(&self.info, initial);
        self.mechanism = Some(mech);
        Ok(self.track(step))
    }

    /// Feeds the client's response line (without CRLF) to an outstanding challenge.
    pub fn respond(&mut self, line: &[u8]) -> Result<Step, ExchangeError> {
        if self.state != State::AwaitingResponse {
            return Err(ExchangeError::NotAwaitingResponse);
        }
        // RFC 4954 §4: "*" cancels the exchange.
        let bytes = match sasl::decode_response(line, self.max_response) {
            Response::Data(b) => b,
            other => {
                let status = other.failure().unwrap_or(AuthStatus::Malformed);
                return Ok(self.finish(AuthResult::failure(status)));
            }
        };
        let step = match self.mechanism.as_mut() {
            Some(m) => m.respond(&self.info, bytes),
            None => return Err(ExchangeError::NotAwaitingResponse),
        };
        Ok(self.track(step))
    }

    /// Resumes after [`Step::Verify`] with the provider's decision, or an authenticator's
    /// whole [`Verdict`] (aiosmtpd's authenticator callback). When the decision stands (the
    /// mechanism has nothing to add, as for PLAIN, LOGIN and EXTERNAL), the exchange ends with
    /// the one result it builds: success with the identity the `Verify` asked about (or the
    /// verdict's `auth_data`), or the decision's failure status. The verdict's `message`
    /// answers only an exchange that ends as it decided.
    pub fn decide(&mut self, verdict: impl Into<Verdict>) -> Result<Step, ExchangeError> {
        if self.state != State::AwaitingDecision {
            return Err(ExchangeError::NotAwaitingDecision);
        }
        let verdict = verdict.into();
        self.decided_ok = verdict.decision == AuthDecision::Ok;
        let step = match self.mechanism.as_mut() {
            Some(m) => m.decide(&self.info, verdict.decision),
            None => return Err(ExchangeError::NotAwaitingDecision),
        };
        let decision = verdict.decision;
        self.verdict = Some(verdict);
        Ok(match step {
            Some(step) => self.track(step),
            None => {
                let result = match (decision, self.verifying.take()) {
                    (AuthDecision::Ok, Some(id)) => {
                        AuthResult::success(Some(AuthData::Identity(id)))
                    }
                    (AuthDecision::Ok, None) => AuthResult::failure(AuthStatus::TempFail),
                    (d, _) => AuthResult::failure(d.status()),
                };
                self.track(Step::Done(result))
            }
        })
    }

    /// Resumes after [`Step::Lookup`] with the stored secret.
    pub fn supply(&mut self, found: LookupResult) -> Result<Step, ExchangeError> {
        if self.state != State::AwaitingLookup {
            return Err(ExchangeError::NotAwaitingLookup);
        }
        let step = match self.mechanism.as_mut() {
            Some(m) => m.supply(&self.info, found),
            None => return Err(ExchangeError::NotAwaitingLookup),
        };
        Ok(self.track(step))
    }

    fn finish(&mut self, result: AuthResult) -> Step {
        self.state = State::Done;
        Step::Done(result)
    }

    fn track(&mut self, step: Step) -> Step {
        let step = match step {
            // A name with a line break, a NUL or SASLprep's prohibited output reaches no
            // provider or store, whichever mechanism carried it.
            Step::Verify(req)
                if sasl::check_name(&req.username).is_err()
                    || req
                        .authzid
                        .as_deref()
                        .is_some_and(|z| sasl::check_name(z).is_err()) =>
            {
                Step::Done(AuthResult::failure(AuthStatus::Malformed))
            }
            Step::Lookup(req) if sasl::check_name(&req.username).is_err() => {
                Step::Done(AuthResult::failure(AuthStatus::Malformed))
            }
            Step::Verify(req)
                if foreign_authzid(req.authzid.as_deref(), &req.username)
                    && !self.proxy_authorization =>
            {
                Step::Done(AuthResult::failure(AuthStatus::Invalid))
            }
            Step::Verify(req) => {
                self.verifying = Some(Identity {
                    login: req.username.clone(),
                    authzid: req.authzid.clone(),
                    mechanism: req.mechanism.clone(),
                });
                Step::Verify(req)
            }
            Step::Done(result)
                if result.is_success()
                    && !(self.proxy_authorization && self.decided_ok)
                    && result.auth_data.as_ref().is_some_and(|d| match d {
                        AuthData::Identity(i) => foreign_authzid(i.authzid.as_deref(), &i.login),
                        _ => false,
                    }) =>
            {
                Step::Done(AuthResult::failure(AuthStatus::Invalid))
            }
            Step::Done(mut result) => {
                // Only where the exchange ended as the verdict decided: an authenticator's
                // "235 Welcome" must not answer an exchange refused afterwards.
                if let Some(v) = self.verdict.take()
                    && (v.decision == AuthDecision::Ok) == result.is_success()
                {
                    if v.message.is_some() {
                        result.message = v.message;
                    }
                    if result.is_success() && v.auth_data.is_some() {
                        result.auth_data = v.auth_data;
                    }
                }
                Step::Done(result)
            }
            other => other,
        };
        self.state = match &step {
            Step::Challenge(_) => State::AwaitingResponse,
            Step::Verify(_) => State::AwaitingDecision,
            Step::Lookup(_) => State::AwaitingLookup,
            Step::Done(_) => State::Done,
        };
        step
    }
}

/// True when `authzid` names someone other than `user` (an empty one means the user itself,
/// RFC 4616 §2).
fn foreign_authzid(authzid: Option<&str>, user: &str) -> bool {
    authzid.is_some_and(|z| !z.is_empty() && z != user)
}
