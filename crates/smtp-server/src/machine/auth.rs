//! The AUTH section of the session: the `handle_auth` hook, the built-in exchange, the
//! authenticator's and the secret store's answers, the failure count, the limiter and the reply.

use std::time::Instant;

use bytes::Bytes;
use smtp_auth::{
    AuthData, AuthDecision, AuthExchange, AuthResult, AuthStatus, LookupResult, SessionInfo, Step,
    Verdict, sasl, smtp as auth_smtp,
};
use smtp_proto::codec::{DEFAULT_MAX_SASL_LINE, Mode};
use smtp_proto::{InitialResponse, Mechanism, Reply};

use super::{Awaiting, Call, Event, Machine, QUIET_AFTER_AUTH, State, WrongState, push_line};
use crate::observe::{AUTH_FAILURE_TARGET, AuthOutcome};
use crate::protocol;
use crate::replies;
use crate::session::TlsInfo;

/// An AUTH exchange in progress.
pub(super) struct AuthRun {
    mechanism: String,
    /// When the AUTH command was read (for the observer's latency).
    started: Instant,
    exchange: Option<AuthExchange>,
    initial_response: Option<InitialResponse>,
    /// The user named so far, for the log line of the outcome.
    user: Option<String>,
    /// A credential was refused (counted even if the client then hangs up).
    refused: bool,
}

/// The mechanism name an observer sees for any mechanism the server does not offer.
pub const UNKNOWN_MECHANISM: &str = "unknown";

/// The reply for an AUTH outcome, by the one function that maps an outcome to its reply:
/// none when a `handle_auth` hook already replied.
fn auth_reply(result: &AuthResult) -> Option<Reply> {
    auth_smtp::reply(result).map(|r| Reply::simple(r.code, r.enhanced, &r.text))
}

impl Machine {
    /// An exchange ended because the client went away: a refused credential still counts
    /// (curl hangs up at the XOAUTH2 error challenge).
    pub(super) fn auth_gone(&mut self) {
        if let Some(run) = self.auth.take() {
            self.observe_auth(&run.mechanism, AuthOutcome::Cancelled, run.started);
            if run.refused {
                self.record_failure(&run.mechanism, run.user.as_deref(), AuthStatus::Invalid);
            }
        }
        self.session.auth_progress = smtp_auth::AuthProgress::None;
    }

    pub(super) fn abandon_auth(&mut self) {
        self.call_deadline = None;
        self.auth_gone();
        self.close_after(None);
    }

    pub(super) fn call_timed_out(&mut self, a: Awaiting) {
        self.call_deadline = None;
        match a {
            Awaiting::Verify => {
                tracing::warn!(target: "smtp_server::machine", "authenticator timed out");
                self.verify_result(AuthDecision::Failure.into());
            }
            Awaiting::Lookup => self.lookup_result(LookupResult::Failure),
            _ => {}
        }
    }

    // ---- AUTH ----

    pub(super) fn session_info(&self) -> SessionInfo {
        let mut info = SessionInfo::default();
        info.remote_ip = Some(self.session.peer_addr.ip());
        info.local_ip = Some(self.session.local_addr.ip());
        info.helo_name = self.session.helo_name.clone();
        info.server_name = self.cfg.hostname.clone();
        info.external_identity = match (&self.cfg.external_identity, &self.session.tls) {
            (
                Some(map),
                Some(TlsInfo {
                    peer_certificate: Some(cert),
                    ..
                }),
            ) => map(cert),
            _ => None,
        };
        info.tls = self.session.tls.is_some();
        info.channel_binding = self.channel_binding.clone().map(smtp_auth::Secret::new);
        info
    }

    pub(super) fn auth(&mut self, mechanism: Mechanism, initial_response: Option<InitialResponse>) {
        if let Err(r) = protocol::check_auth(&self.cfg, &self.session, &self.tx.envelope) {
            self.send(&r);
            return;
        }
        // Whatever happens next, the lines that follow may be credentials.
        self.quiet = QUIET_AFTER_AUTH;
        let ip = self.session.peer_addr.ip();
        if self.cfg.limiter.ip_blocked(ip, self.now) {
            tracing::warn!(target: "smtp_server::machine", remote_ip = %ip, "AUTH refused: too many failures from this address");
            self.observe_auth(mechanism.as_str(), AuthOutcome::Locked, self.now);
            self.close_after(Some(&replies::too_many_auth_failures()));
            return;
        }
        let name = mechanism.as_str().to_owned();
        self.auth = Some(AuthRun {
            mechanism: name.clone(),
            started: self.now,
            exchange: None,
            initial_response: initial_response.clone(),
            user: None,
            refused: false,
        });
        // The replies so far go out before a hook may talk to the client itself.
        if !self.output.is_empty() {
            self.events.push_back(Event::Send);
        }
        self.call(
            Awaiting::HandleAuth,
            Call::Auth {
                mechanism: name,
                initial_response,
            },
        );
    }

    /// Queues a reply line from a `handle_auth` hook (without CRLF; CR and LF are removed);
    /// send it with [`Machine::output`] and [`Machine::sent`].
    pub fn auth_push(&mut self, line: &str) -> Result<(), WrongState> {
        if !matches!(self.state, State::Awaiting(Awaiting::HandleAuth)) {
            return Err(WrongState { given: "auth_push" });
        }
        push_line(&mut self.output, line);
        Ok(())
    }

    /// Sends `334 <base64(challenge)>` for a `handle_auth` hook: [`Machine::next`] then reads
    /// the client's response line and returns it as [`Event::AuthResponse`] (with the read
    /// timeout and shutdown applied as anywhere else).
    pub fn auth_challenge(&mut self, challenge: &[u8]) -> Result<(), WrongState> {
        if !matches!(self.state, State::Awaiting(Awaiting::HandleAuth)) {
            return Err(WrongState {
                given: "auth_challenge",
            });
        }
        push_line(&mut self.output, &auth_smtp::challenge_line(challenge));
        self.set_mode(Mode::SaslResponse);
        self.state = State::HookResponse;
        Ok(())
    }

    /// Answers a `handle_auth` hook ([`Call::Auth`]): `None` runs the built-in mechanism;
    /// `Some(result)` is the outcome of the hook's own exchange.
    pub fn answer_auth(&mut self, result: Option<AuthResult>) -> Result<(), WrongState> {
        self.expect(Awaiting::HandleAuth, "answer_auth")?;
        self.state = State::Commands;
        match result {
            Some(r) => self.auth_done(r, false),
            None => {
                let info = self.session_info();
                let Some(run) = self.auth.as_mut() else {
                    return Ok(());
                };
                let mut ex = AuthExchange::new(self.cfg.registry.clone(), info)
                    .with_proxy_authorization(self.cfg.proxy_authorization);
                let ir = run.initial_response.take();
                let step = ex.start(&run.mechanism, ir.as_ref().map(|r| r.expose_secret()));
                run.exchange = Some(ex);
                match step {
                    Ok(step) => self.auth_step(step),
                    Err(_) => {
                        self.auth_done(AuthResult::failure(AuthStatus::UnknownMechanism), true)
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn auth_step(&mut self, step: Step) {
        let Some(run) = self.auth.as_mut() else {
            return;
        };
        if let Some(ex) = &run.exchange {
            self.session.auth_progress = ex.progress();
        }
        match step {
            Step::Challenge(c) => {
                push_line(&mut self.output, &auth_smtp::challenge_line(&c));
                self.set_mode(Mode::SaslResponse);
                self.state = State::AuthResponse;
            }
            Step::Verify(req) => {
                run.user = Some(req.username.clone());
                if self.locked_out(&req.username) {
                    self.verify_result(AuthDecision::Locked.into());
                } else {
                    self.call_deadline = Some(self.now + self.cfg.auth_timeout);
                    self.call(Awaiting::Verify, Call::Verify(req));
                }
            }
            Step::Lookup(req) => {
                run.user = Some(req.username.clone());
                if self.locked_out(&req.username) {
                    // 454 like a failed lookup, the secret unread.
                    self.lookup_result(LookupResult::Locked);
                } else {
                    self.call_deadline = Some(self.now + self.cfg.auth_timeout);
                    self.call(Awaiting::Lookup, Call::Lookup(req));
                }
            }
            Step::Done(r) => self.auth_done(r, true),
        }
    }

    /// A SASL response line: the `handle_auth` hook's, handed back to it, or the built-in
    /// exchange's.
    pub(super) fn sasl_response(
        &mut self,
        line: Result<Bytes, smtp_proto::ProtoError>,
    ) -> Option<Event> {
        self.set_mode(Mode::Command);
        if matches!(self.state, State::HookResponse) {
            self.state = State::Awaiting(Awaiting::HandleAuth);
            return Some(Event::AuthResponse(match line {
                Ok(l) => sasl::decode_response(&l, DEFAULT_MAX_SASL_LINE),
                Err(_) => sasl::Response::TooLong,
            }));
        }
        self.auth_response(line);
        None
    }

    fn auth_response(&mut self, line: Result<Bytes, smtp_proto::ProtoError>) {
        self.state = State::Commands;
        let Some(ex) = self.auth.as_mut().and_then(|r| r.exchange.as_mut()) else {
            return;
        };
        let step = match line {
            Ok(l) => ex.respond(&l),
            Err(_) => Ok(Step::Done(AuthResult::failure(AuthStatus::TooLong))),
        };
        match step {
            Ok(s) => self.auth_step(s),
            Err(_) => self.auth_done(AuthResult::failure(AuthStatus::Malformed), true),
        }
    }

    /// Answers [`Call::Verify`] with the authenticator's verdict.
    pub fn answer_verify(&mut self, result: Verdict) -> Result<(), WrongState> {
        self.expect(Awaiting::Verify, "answer_verify")?;
        self.call_deadline = None;
        self.verify_result(result);
        Ok(())
    }

    pub(super) fn verify_result(&mut self, verdict: Verdict) {
        self.state = State::Commands;
        let Some(run) = self.auth.as_mut() else {
            return;
        };
        if verdict.decision == AuthDecision::Invalid {
            run.refused = true;
        }
        // One outcome: the exchange takes the verdict whole and builds the result.
        let step = run.exchange.as_mut().map(|ex| ex.decide(verdict));
        match step {
            Some(Ok(s)) => self.auth_step(s),
            _ => self.auth_done(AuthResult::failure(AuthStatus::Malformed), true),
        }
    }

    /// Answers [`Call::Lookup`] with the stored secret (or why there is none).
    pub fn answer_lookup(&mut self, found: LookupResult) -> Result<(), WrongState> {
        self.expect(Awaiting::Lookup, "answer_lookup")?;
        self.call_deadline = None;
        self.lookup_result(found);
        Ok(())
    }

    pub(super) fn lookup_result(&mut self, found: LookupResult) {
        self.state = State::Commands;
        let step = self
            .auth
            .as_mut()
            .and_then(|r| r.exchange.as_mut())
            .map(|ex| ex.supply(found));
        match step {
            Some(Ok(s)) => self.auth_step(s),
            _ => self.auth_done(AuthResult::failure(AuthStatus::Malformed), true),
        }
    }

    /// True (and logged) when `user` is past `max_auth_failures_per_user`: the answer is then
    /// 454 with the credential unchecked.
    pub(super) fn locked_out(&mut self, user: &str) -> bool {
        if !self.cfg.limiter.user_locked(user, self.now) {
            return false;
        }
        tracing::warn!(target: "smtp_server::machine",
            remote_ip = %self.session.peer_addr.ip(),
            user,
            "AUTH refused: too many failures for this user"
        );
        true
    }

    /// Reports an AUTH outcome to the observer. A mechanism the server does not offer (not in
    /// its registry, whatever a `handle_auth` hook did with it) is reported as
    /// [`UNKNOWN_MECHANISM`], so no client can mint a metric series per name it makes up.
    pub(super) fn observe_auth(&self, mechanism: &str, outcome: AuthOutcome, started: Instant) {
        if let Some(o) = &self.cfg.observer {
            let offered = self.cfg.registry.contains(mechanism);
            o.auth(
                if offered {
                    mechanism
                } else {
                    UNKNOWN_MECHANISM
                },
                outcome,
                self.now.saturating_duration_since(started),
            );
        }
    }

    /// An exchange is over (`builtin`: the server's mechanisms ran it): reply, apply.
    pub(super) fn auth_done(&mut self, mut result: AuthResult, builtin: bool) {
        self.state = State::Commands;
        self.session.auth_progress = smtp_auth::AuthProgress::None;
        let Some(run) = self.auth.take() else {
            return;
        };
        if builtin && result.handled {
            // Only a handle_auth hook holds the connection and can have replied. A mechanism
            // or authenticator that claims it did would leave the client without an answer.
            tracing::warn!(target: "smtp_server::machine", "a mechanism returned handled=true: the server sends the reply");
            result.handled = false;
        }
        if let Some(reply) = auth_reply(&result) {
            self.send(&reply);
        }
        let outcome = match result.status {
            AuthStatus::Success => AuthOutcome::Ok,
            AuthStatus::Locked => AuthOutcome::Locked,
            AuthStatus::TempFail => AuthOutcome::TempFail,
            AuthStatus::Cancelled => AuthOutcome::Cancelled,
            _ => AuthOutcome::Invalid,
        };
        self.observe_auth(&run.mechanism, outcome, run.started);
        let login = result
            .auth_data
            .as_ref()
            .and_then(|d| d.login())
            .map(str::to_owned);
        if result.is_success() {
            tracing::info!(target: "smtp_server::machine",
                remote_ip = %self.session.peer_addr.ip(),
                mechanism = run.mechanism,
                user = login.as_deref().unwrap_or(""),
                success = true,
                // Last: the line reads as before up to here (log filters match on it).
                credential = result
                    .auth_data
                    .as_ref()
                    .and_then(AuthData::credential)
                    .unwrap_or(""),
                "AUTH"
            );
            self.session.authenticated = true;
            self.session.login_data = login;
            self.session.auth_data = result.auth_data;
            self.session.auth_mechanism = Some(run.mechanism);
            return;
        }
        // A hook's failure may name its user in `auth_data` (the mechanism ran elsewhere, as
        // with a Dovecot proxy): the failure counts against that user too.
        let user = run.user.as_deref().or(login.as_deref());
        let counted = self.record_failure(&run.mechanism, user, result.status);
        if !counted {
            return;
        }
        let close = self.session.auth_failures >= self.cfg.max_auth_failures;
        let delay = self.cfg.auth_failure_delay;
        if delay.is_zero() {
            if close {
                self.close_after(Some(&replies::too_many_auth_failures()));
            }
        } else {
            self.state = State::AuthDelay {
                until: self.now + delay,
                close,
            };
        }
    }

    /// Logs a failed AUTH and counts it: per connection, per address and, for a refused
    /// credential, per user. False when it does not count (a temporary failure, a lock, an
    /// unknown mechanism).
    pub(super) fn record_failure(
        &mut self,
        mechanism: &str,
        user: Option<&str>,
        status: AuthStatus,
    ) -> bool {
        let ip = self.session.peer_addr.ip();
        if matches!(
            status,
            AuthStatus::TempFail | AuthStatus::Locked | AuthStatus::UnknownMechanism
        ) {
            tracing::info!(target: "smtp_server::machine",
                remote_ip = %ip,
                mechanism,
                user = user.unwrap_or(""),
                success = false,
                status = status.as_str(),
                "AUTH"
            );
            if status == AuthStatus::UnknownMechanism {
                // A name the server does not offer is a client error like an unknown
                // command: it counts toward `max_errors`, so no client loops on it forever.
                self.protocol_error();
            }
            return false;
        }
        // The one line per counted failure, for fail2ban (docs/deploy/fail2ban): its own
        // target, the address first, fixed field names in text and JSON alike.
        tracing::warn!(target: AUTH_FAILURE_TARGET,
            remote_ip = %ip,
            user = user.unwrap_or(""),
            mechanism,
            status = status.as_str(),
            "AUTH failed"
        );
        self.session.auth_failures += 1;
        let user = user.filter(|_| status == AuthStatus::Invalid);
        self.cfg.limiter.record_failure(ip, user, self.now);
        true
    }
}
