//! The exchange's own rules (cancel, `=`, base64, limits, wrong-state calls), the registry,
//! and custom mechanisms.

mod common;

use common::b64;
use smtp_auth::{
    AuthDecision, AuthExchange, AuthProgress, AuthResult, AuthStatus, DEFAULT_MAX_RESPONSE,
    ExchangeError, LookupResult, Registry, ServerMechanism, SessionInfo, Step, Verdict, smtp,
};

fn ex(reg: Registry) -> AuthExchange {
    AuthExchange::new(reg, SessionInfo::default())
}

fn done(step: Step) -> AuthResult {
    match step {
        Step::Done(r) => r,
        other => panic!("expected Done, got {other:?}"),
    }
}

#[test]
fn star_cancels_with_501_5_7_0() {
    let mut e = ex(Registry::default());
    e.start("LOGIN", None).unwrap();
    let r = done(e.respond(b"*").unwrap());
    assert_eq!(r.status, AuthStatus::Cancelled);
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "501 5.7.0 Authentication cancelled"
    );
    assert!(e.is_done());
    assert_eq!(e.progress(), AuthProgress::None);
}

#[test]
fn undecodable_is_501_5_5_2() {
    let mut e = ex(Registry::default());
    let r = done(e.start("PLAIN", Some(b"not base64!")).unwrap());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "501 5.5.2 Cannot decode response"
    );
    let mut e = ex(Registry::default());
    e.start("LOGIN", None).unwrap();
    let r = done(e.respond(b"@@@").unwrap());
    assert_eq!(r.status, AuthStatus::Undecodable);
}

#[test]
fn response_length_limit() {
    // 12288 octets are accepted (RFC 4954 §4) ...
    let user = "u".repeat(9000);
    let line = b64(user.as_bytes());
    assert!(line.len() <= DEFAULT_MAX_RESPONSE);
    let mut e = ex(Registry::default());
    e.start("LOGIN", None).unwrap();
    assert!(matches!(e.respond(&line).unwrap(), Step::Challenge(_)));
    let exactly = vec![b'A'; DEFAULT_MAX_RESPONSE];
    let mut e = ex(Registry::default());
    e.start("LOGIN", None).unwrap();
    assert!(matches!(e.respond(&exactly).unwrap(), Step::Challenge(_)));
    // ... one more is 500 5.5.6.
    let mut e = ex(Registry::default());
    e.start("LOGIN", None).unwrap();
    let r = done(e.respond(&vec![b'A'; DEFAULT_MAX_RESPONSE + 4]).unwrap());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "500 5.5.6 Authentication line too long"
    );
}

#[test]
fn unknown_and_excluded_mechanisms_are_504() {
    let r = done(ex(Registry::default()).start("NTLM", None).unwrap());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "504 5.5.4 Unrecognized authentication type"
    );
    let mut reg = Registry::all_builtin();
    reg.exclude("login");
    assert!(!reg.names().contains(&"LOGIN"));
    assert!(!reg.contains("LOGIN"));
    let r = done(ex(reg).start("LOGIN", None).unwrap());
    assert_eq!(r.status, AuthStatus::UnknownMechanism);
}

#[test]
fn wrong_state_calls_are_errors_not_panics() {
    let mut e = ex(Registry::default());
    assert_eq!(
        e.respond(b"").unwrap_err(),
        ExchangeError::NotAwaitingResponse
    );
    assert_eq!(
        e.decide(AuthDecision::Ok).unwrap_err(),
        ExchangeError::NotAwaitingDecision
    );
    assert_eq!(
        e.supply(LookupResult::NotFound).unwrap_err(),
        ExchangeError::NotAwaitingLookup
    );
    e.start("PLAIN", None).unwrap();
    assert_eq!(
        e.start("PLAIN", None).unwrap_err(),
        ExchangeError::AlreadyStarted
    );
    assert_eq!(
        e.decide(AuthDecision::Ok).unwrap_err(),
        ExchangeError::NotAwaitingDecision
    );
    let Step::Verify(_) = e.respond(&b64(b"\0a\0b")).unwrap() else {
        panic!()
    };
    assert_eq!(e.progress(), AuthProgress::Verifying);
    assert_eq!(
        e.respond(b"").unwrap_err(),
        ExchangeError::NotAwaitingResponse
    );
    let r = done(e.decide(AuthDecision::Failure).unwrap());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "454 4.7.0 Temporary authentication failure"
    );
    assert_eq!(
        e.decide(AuthDecision::Ok).unwrap_err(),
        ExchangeError::NotAwaitingDecision
    );
}

#[test]
fn decisions_map_to_replies() {
    for (d, line) in [
        (AuthDecision::Ok, "235 2.7.0 Authentication successful"),
        (
            AuthDecision::Invalid,
            "535 5.7.8 Authentication credentials invalid",
        ),
        (
            AuthDecision::Failure,
            "454 4.7.0 Temporary authentication failure",
        ),
    ] {
        let mut e = ex(Registry::default());
        e.start("PLAIN", Some(&b64(b"\0alice\0pw"))).unwrap();
        let r = done(e.decide(d).unwrap());
        assert_eq!(r.is_success(), d == AuthDecision::Ok);
        assert_eq!(smtp::reply(&r).unwrap().to_string(), line);
    }
}

/// A custom mechanism: the client sends "letmein" and is done, or anything else and fails
/// with its own message. Its name has a dash and an underscore, and needs no mangling.
struct Knock;

impl ServerMechanism for Knock {
    fn start(&mut self, _info: &SessionInfo, initial: Option<smtp_auth::SecretBytes>) -> Step {
        match initial {
            None => Step::Challenge(b"knock knock".to_vec()),
            Some(m) => self.respond(_info, m),
        }
    }

    fn respond(&mut self, _info: &SessionInfo, response: smtp_auth::SecretBytes) -> Step {
        if response.expose_secret() == b"letmein" {
            Step::Done(AuthResult::success(Some(smtp_auth::AuthData::Custom {
                login: Some("knocker".into()),
                data: std::sync::Arc::new(42u32),
            })))
        } else {
            Step::Done(
                AuthResult::failure(AuthStatus::Invalid).with_message("535 5.7.8 Wrong knock"),
            )
        }
    }
}

#[test]
fn custom_mechanism_by_exact_name() {
    let mut reg = Registry::default();
    reg.register("X-KNOCK_KNOCK", || Box::new(Knock)).unwrap();
    assert_eq!(reg.names(), vec!["PLAIN", "LOGIN", "X-KNOCK_KNOCK"]);
    let mut e = ex(reg.clone());
    let Step::Challenge(c) = e.start("X-KNOCK_KNOCK", None).unwrap() else {
        panic!()
    };
    assert_eq!(c, b"knock knock");
    assert_eq!(e.progress(), AuthProgress::Custom);
    let r = done(e.respond(&b64(b"letmein")).unwrap());
    assert!(r.is_success());
    let data = r.auth_data.unwrap();
    assert_eq!(data.login(), Some("knocker"));
    let smtp_auth::AuthData::Custom { data, .. } = data else {
        panic!()
    };
    assert_eq!(data.downcast_ref::<u32>(), Some(&42));

    let r = done(ex(reg).start("X-KNOCK_KNOCK", Some(&b64(b"hi"))).unwrap());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "535 5.7.8 Wrong knock"
    );

    assert!(
        Registry::default()
            .register("lower", || Box::new(Knock))
            .is_err()
    );
    assert!(
        Registry::default()
            .register("TWENTY-ONE-CHARS-XXXX", || Box::new(Knock))
            .is_err()
    );
}

#[test]
fn a_handler_mechanism_replaces_the_builtin_of_the_same_name() {
    let mut reg = Registry::default();
    reg.register("PLAIN", || Box::new(Knock)).unwrap();
    assert_eq!(reg.names(), vec!["PLAIN", "LOGIN"]);
    let r = done(ex(reg).start("PLAIN", Some(&b64(b"letmein"))).unwrap());
    assert!(r.is_success());
}

/// Asks for a verification, then refuses whatever the provider said (a mechanism with a
/// check of its own after the provider's).
struct SecondCheck;

impl ServerMechanism for SecondCheck {
    fn start(&mut self, info: &SessionInfo, _: Option<smtp_auth::SecretBytes>) -> Step {
        Step::Verify(smtp_auth::AuthRequest::new(
            info,
            "X-SECOND",
            "ann".into(),
            smtp_auth::Secret::new("pw".into()),
            None,
        ))
    }
    fn respond(&mut self, _: &SessionInfo, _: smtp_auth::SecretBytes) -> Step {
        Step::Done(AuthResult::failure(AuthStatus::Malformed))
    }
    fn decide(&mut self, _: &SessionInfo, _: AuthDecision) -> Option<Step> {
        Some(Step::Done(AuthResult::failure(AuthStatus::Invalid)))
    }
}

#[test]
fn an_authenticators_answer_is_the_decision_and_its_overrides_follow_the_outcome() {
    use smtp_auth::{AuthData, Identity};
    // PLAIN: the authenticator's message and data replace the mechanism's on success.
    let mut e = ex(Registry::default());
    let step = e.start("PLAIN", Some(&b64(b"\0ann\0pw"))).unwrap();
    assert!(matches!(step, Step::Verify(_)));
    let data = AuthData::Identity(Identity {
        login: "ann@example.org".into(),
        authzid: None,
        mechanism: "PLAIN".into(),
    });
    let r = done(
        e.decide(Verdict::ok(Some(data)).with_message("235 2.7.0 Welcome, Ann"))
            .unwrap(),
    );
    assert!(r.is_success());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "235 2.7.0 Welcome, Ann"
    );
    assert_eq!(r.auth_data.unwrap().login(), Some("ann@example.org"));
    // A temporary failure is a Failure decision: 454.
    let mut e = ex(Registry::default());
    e.start("PLAIN", Some(&b64(b"\0ann\0pw"))).unwrap();
    let r = done(e.decide(AuthDecision::Failure).unwrap());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "454 4.7.0 Temporary authentication failure"
    );
    // A lock (a shared limiter's answer) ends as a lock, answered like a temporary failure.
    let mut e = ex(Registry::default());
    e.start("PLAIN", Some(&b64(b"\0ann\0pw"))).unwrap();
    let r = done(e.decide(AuthDecision::Locked).unwrap());
    assert_eq!(r.status, AuthStatus::Locked);
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "454 4.7.0 Temporary authentication failure"
    );
    // The authenticator said yes with a 235 of its own, but the mechanism refused afterwards:
    // the client must get the refusal, not the authenticator's 235.
    let mut reg = Registry::empty();
    reg.register("X-SECOND", || Box::new(SecondCheck)).unwrap();
    let mut e = ex(reg);
    e.start("X-SECOND", None).unwrap();
    let r = done(
        e.decide(Verdict::ok(None).with_message("235 2.7.0 Welcome"))
            .unwrap(),
    );
    assert!(!r.is_success());
    assert_eq!(
        smtp::reply(&r).unwrap().to_string(),
        "535 5.7.8 Authentication credentials invalid"
    );
    // A second answer is a wrong-state error.
    assert!(e.decide(Verdict::ok(None)).is_err());
}

#[test]
fn success_is_derived_from_the_status() {
    assert!(AuthResult::success(None).is_success());
    // failure() cannot build a success.
    let r = AuthResult::failure(AuthStatus::Success);
    assert!(!r.is_success());
    assert_eq!(r.status, AuthStatus::Invalid);
    assert!(!AuthResult::handled().is_success());
}
