//! The security rules of the exchange: one authorization-identity rule for every mechanism,
//! SCRAM that does not reveal which users exist, SASLprep, and SCRAM-SHA-256-PLUS channel
//! binding.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{b64, drive};
use smtp_auth::mechanism::{
    ExternalClient, PlainClient, ScramSha256Client, ScramSha256Server, saslprep,
};
use smtp_auth::{
    AuthData, AuthDecision, AuthExchange, AuthResult, AuthStatus, ClientMechanism, Identity,
    LookupResult, MemoryProvider, Registry, ScramKeys, Secret, SecretBytes, ServerMechanism,
    SessionInfo, Step, StoredSecret,
};

fn users() -> MemoryProvider {
    MemoryProvider::new()
        .with_user("alice", "wonderland")
        .with_user("bob", "builder")
}

/// A provider that says Ok to everything, as a careless one would.
fn yes(ex: &mut AuthExchange, mut step: Step) -> AuthResult {
    for _ in 0..10 {
        step = match step {
            Step::Verify(_) => ex.decide(AuthDecision::Ok).unwrap(),
            Step::Done(r) => return r,
            other => panic!("{other:?}"),
        };
    }
    panic!("no end")
}

#[test]
fn plain_with_a_foreign_authzid_is_refused_before_the_provider() {
    // bob\0alice\0wonderland: alice's password, asking to act as bob.
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
    let step = ex
        .start("PLAIN", Some(&b64(b"bob\0alice\0wonderland")))
        .unwrap();
    // Even a provider that would say Ok never gets asked.
    let r = yes(&mut ex, step);
    assert!(!r.is_success());
    assert_eq!(r.status, AuthStatus::Invalid);

    // Empty, or the user itself, is fine.
    for msg in [&b"\0alice\0wonderland"[..], b"alice\0alice\0wonderland"] {
        let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
        let step = ex.start("PLAIN", Some(&b64(msg))).unwrap();
        assert!(yes(&mut ex, step).is_success());
    }

    // With proxy authorization the provider decides, and sees the authzid.
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default())
        .with_proxy_authorization(true);
    let Step::Verify(req) = ex
        .start("PLAIN", Some(&b64(b"bob\0alice\0wonderland")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(req.authzid.as_deref(), Some("bob"));
    let Step::Done(r) = ex.decide(AuthDecision::Ok).unwrap() else {
        panic!()
    };
    assert!(r.is_success());
    assert_eq!(r.auth_data.unwrap().login(), Some("alice"));
}

#[test]
fn external_with_a_foreign_authzid_is_refused() {
    let mut info = SessionInfo::default();
    info.external_identity = Some("alice".into());
    let mut client = ExternalClient::new("bob");
    let r = drive(
        Registry::all_builtin(),
        info.clone(),
        &mut client,
        &users(),
        true,
    );
    assert_eq!(r.status, AuthStatus::Invalid);
    let mut client = ExternalClient::new("");
    let r = drive(Registry::all_builtin(), info, &mut client, &users(), true);
    assert!(r.is_success());
}

#[test]
fn scram_with_a_foreign_authzid_is_refused_even_with_proxy_authorization() {
    for proxy in [false, true] {
        let mut client = ScramSha256Client::new("alice", "wonderland", Some("bob"));
        let mut ex = AuthExchange::new(Registry::all_builtin(), SessionInfo::default())
            .with_proxy_authorization(proxy);
        let ir = b64(client.initial_response().unwrap().expose_secret());
        let mut step = ex.start("SCRAM-SHA-256", Some(&ir)).unwrap();
        let result = loop {
            step = match step {
                Step::Challenge(c) => {
                    // The server must not prove itself (v=) for a login it refuses.
                    assert!(!c.starts_with(b"v="), "server-final sent");
                    let r = client.respond(&c).unwrap();
                    ex.respond(&b64(r.expose_secret())).unwrap()
                }
                Step::Lookup(req) => ex.supply(users().lookup(&req)).unwrap(),
                Step::Done(r) => break r,
                Step::Verify(_) => panic!("SCRAM has no provider decision"),
            }
        };
        assert_eq!(result.status, AuthStatus::Invalid, "proxy={proxy}");
    }
    // a=alice as alice is fine.
    let mut client = ScramSha256Client::new("alice", "wonderland", Some("alice"));
    let r = drive(
        Registry::all_builtin(),
        SessionInfo::default(),
        &mut client,
        &users(),
        true,
    );
    assert!(r.is_success());
}

/// A custom mechanism that "succeeds" for alice acting as bob.
struct Sloppy;
impl ServerMechanism for Sloppy {
    fn start(&mut self, _info: &SessionInfo, _initial: Option<SecretBytes>) -> Step {
        Step::Done(AuthResult::success(Some(AuthData::Identity(Identity {
            login: "alice".into(),
            authzid: Some("bob".into()),
            mechanism: "X-SLOPPY".into(),
        }))))
    }
    fn respond(&mut self, _info: &SessionInfo, _r: SecretBytes) -> Step {
        unreachable!()
    }
}

#[test]
fn a_custom_mechanism_cannot_grant_a_foreign_authzid() {
    let mut reg = Registry::default();
    reg.register("X-SLOPPY", || Box::new(Sloppy)).unwrap();
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    let Step::Done(r) = ex.start("X-SLOPPY", None).unwrap() else {
        panic!()
    };
    assert!(!r.is_success());
    assert_eq!(r.status, AuthStatus::Invalid);
}

/// The server-first message of a SCRAM exchange for `user`.
fn server_first(server: ScramSha256Server, user: &str, found: LookupResult) -> String {
    let mut reg = Registry::empty();
    let server = std::sync::Mutex::new(Some(server));
    reg.register("SCRAM-SHA-256", move || {
        Box::new(server.lock().unwrap().take().unwrap_or_default())
    })
    .unwrap();
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    let first = format!("n,,n={user},r=clientnonce");
    let Step::Lookup(_) = ex
        .start("SCRAM-SHA-256", Some(&b64(first.as_bytes())))
        .unwrap()
    else {
        panic!()
    };
    let Step::Challenge(c) = ex.supply(found).unwrap() else {
        panic!()
    };
    String::from_utf8(c).unwrap()
}

/// `s=...,i=...` of a server-first message.
fn salt_and_iterations(server_first: &str) -> String {
    server_first.split_once(",s=").unwrap().1.to_owned()
}

#[test]
fn scram_unknown_users_get_stable_salts_that_look_real() {
    let secret = Arc::new(Secret::new(b"server secret".to_vec()));
    let srv = || ScramSha256Server::default().with_secret(secret.clone());
    let a1 = salt_and_iterations(&server_first(srv(), "nobody", LookupResult::NotFound));
    let a2 = salt_and_iterations(&server_first(srv(), "nobody", LookupResult::NotFound));
    let b = salt_and_iterations(&server_first(srv(), "someone", LookupResult::NotFound));
    assert_eq!(a1, a2, "the same unknown user gets the same salt");
    assert_ne!(a1, b, "different names get different salts");
    // Same form as a real user's stored keys (16-octet salt, 4096 iterations).
    let real = ScramKeys::derive_sha256("pw", &[7u8; 16], 4096);
    let known = salt_and_iterations(&server_first(
        srv(),
        "alice",
        LookupResult::Found(StoredSecret::ScramSha256(real)),
    ));
    let (ks, ki) = known.split_once(",i=").unwrap();
    let (us, ui) = a1.split_once(",i=").unwrap();
    assert_eq!(ki, ui);
    assert_eq!(
        STANDARD.decode(ks).unwrap().len(),
        STANDARD.decode(us).unwrap().len()
    );
    // A user known by a clear password also keeps one salt (a fresh one each time would
    // itself tell that the user exists).
    let plain = || LookupResult::Found(StoredSecret::Plain("pw".to_owned().into()));
    assert_eq!(
        salt_and_iterations(&server_first(srv(), "carol", plain())),
        salt_and_iterations(&server_first(srv(), "carol", plain()))
    );
    // Without a configured secret the process's own is used: still stable.
    let d1 = salt_and_iterations(&server_first(
        ScramSha256Server::default(),
        "nobody",
        LookupResult::NotFound,
    ));
    let d2 = salt_and_iterations(&server_first(
        ScramSha256Server::default(),
        "nobody",
        LookupResult::NotFound,
    ));
    assert_eq!(d1, d2);
}

#[test]
fn saslprep_normalises_scram_passwords_and_names() {
    // "ä" decomposed (a + U+0308) and a no-break space: SASLprep maps both.
    assert_eq!(saslprep("pa\u{308}ss\u{a0}word"), "päss word");
    let stored = ScramKeys::derive_sha256("päss word", &[1u8; 16], 4096);
    let users = MemoryProvider::new();
    // The server holds keys made from the composed form; the client types the other one.
    let mut reg = Registry::empty();
    reg.register("SCRAM-SHA-256", || Box::new(ScramSha256Server::default()))
        .unwrap();
    let mut client = ScramSha256Client::new("ana", "pa\u{308}ss\u{a0}word", None);
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    let ir = b64(client.initial_response().unwrap().expose_secret());
    let mut step = ex.start("SCRAM-SHA-256", Some(&ir)).unwrap();
    let r = loop {
        step = match step {
            Step::Challenge(c) => {
                let r = client.respond(&c).unwrap();
                ex.respond(&b64(r.expose_secret())).unwrap()
            }
            Step::Lookup(req) => {
                assert_eq!(req.username, "ana");
                ex.supply(LookupResult::Found(StoredSecret::ScramSha256(
                    stored.clone(),
                )))
                .unwrap()
            }
            Step::Done(r) => break r,
            Step::Verify(_) => panic!(),
        }
    };
    assert!(r.is_success(), "{r}");
    let _ = users;
}

fn plus_info(cb: &[u8]) -> SessionInfo {
    let mut info = SessionInfo::default();
    info.tls = true;
    info.channel_binding = Some(Secret::new(cb.to_vec()));
    info
}

#[test]
fn scram_plus_binds_to_the_tls_channel() {
    let cb = [42u8; 32];
    // The right binding: success, identity says -PLUS.
    let mut client =
        ScramSha256Client::new("alice", "wonderland", None).with_channel_binding(cb.to_vec());
    assert_eq!(client.name(), "SCRAM-SHA-256-PLUS");
    let r = drive(
        Registry::all_builtin(),
        plus_info(&cb),
        &mut client,
        &users(),
        true,
    );
    assert!(r.is_success(), "{r}");
    let Some(AuthData::Identity(id)) = r.auth_data else {
        panic!()
    };
    assert_eq!(id.mechanism, "SCRAM-SHA-256-PLUS");

    // A man in the middle: the client's TLS session (to the attacker) differs from ours.
    let mut client = ScramSha256Client::new("alice", "wonderland", None)
        .with_channel_binding([7u8; 32].to_vec());
    let r = drive(
        Registry::all_builtin(),
        plus_info(&cb),
        &mut client,
        &users(),
        true,
    );
    assert_eq!(r.status, AuthStatus::Invalid);

    // No TLS channel binding on the session: -PLUS is not available at all.
    let mut client =
        ScramSha256Client::new("alice", "wonderland", None).with_channel_binding(cb.to_vec());
    let r = drive(
        Registry::all_builtin(),
        SessionInfo::default(),
        &mut client,
        &users(),
        true,
    );
    assert_eq!(r.status, AuthStatus::UnknownMechanism);
    assert_eq!(
        Registry::all_builtin()
            .offered(false)
            .iter()
            .filter(|m| m.ends_with("-PLUS"))
            .count(),
        0
    );
    assert!(
        Registry::all_builtin()
            .offered(true)
            .contains(&"SCRAM-SHA-256-PLUS")
    );
}

#[test]
fn scram_y_flag_is_a_downgrade_only_where_plus_was_offered() {
    let first = b64(b"y,,n=alice,r=abcdef");
    // -PLUS offered on this TLS session: "y" means someone stripped it.
    let mut ex = AuthExchange::new(Registry::all_builtin(), plus_info(&[1; 32]));
    let Step::Done(r) = ex.start("SCRAM-SHA-256", Some(&first)).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Invalid);
    // Not offered (no -PLUS in the registry): "y" is fine.
    let mut reg = Registry::empty();
    reg.register("SCRAM-SHA-256", || Box::new(ScramSha256Server::default()))
        .unwrap();
    let mut ex = AuthExchange::new(reg, plus_info(&[1; 32]));
    assert!(matches!(
        ex.start("SCRAM-SHA-256", Some(&first)).unwrap(),
        Step::Lookup(_)
    ));
    // -PLUS without "p=": malformed.
    let mut ex = AuthExchange::new(Registry::all_builtin(), plus_info(&[1; 32]));
    let Step::Done(r) = ex
        .start("SCRAM-SHA-256-PLUS", Some(&b64(b"n,,n=alice,r=abcdef")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Malformed);
}

#[test]
fn plain_client_sends_authzid() {
    // The client side keeps the authzid (used by the server tests).
    let mut c = PlainClient::new("alice", "wonderland", Some("bob"));
    assert_eq!(
        c.initial_response().unwrap().expose_secret(),
        b"bob\0alice\0wonderland"
    );
}

/// Plays `messages` (raw, base64'd here) against a fresh exchange of `mechanism`: the first
/// as the initial response, the rest as answers to challenges. Panics if a provider or a
/// store would be asked.
fn refused_before_any_store(mechanism: &str, info: SessionInfo, messages: &[&[u8]]) -> AuthResult {
    let mut ex = AuthExchange::new(Registry::all_builtin(), info);
    let mut rest = messages.iter();
    let mut step = ex
        .start(mechanism, rest.next().map(|m| b64(m)).as_deref())
        .unwrap();
    loop {
        step = match step {
            Step::Challenge(_) => ex.respond(&b64(rest.next().expect("a message"))).unwrap(),
            Step::Done(r) => return r,
            other => panic!("{mechanism}: a store was asked: {other:?}"),
        };
    }
}

#[test]
fn names_with_line_breaks_nul_or_prohibited_output_reach_no_store_for_any_mechanism() {
    let mut external = SessionInfo::default();
    external.external_identity = Some("client.example".into());
    let bad = [
        "al\rice",
        "ali\nce",
        "alice\r\n",
        "al\tice",
        "a\u{200e}lice",
    ];
    for name in bad {
        let n = name.as_bytes();
        let cases: Vec<(&str, SessionInfo, Vec<Vec<u8>>)> = vec![
            (
                "PLAIN",
                SessionInfo::default(),
                vec![[b"\0", n, b"\0pw"].concat()],
            ),
            (
                "PLAIN",
                SessionInfo::default(),
                vec![[n, b"\0alice\0pw"].concat()],
            ),
            (
                "LOGIN",
                SessionInfo::default(),
                vec![n.to_vec(), b"pw".to_vec()],
            ),
            (
                "CRAM-MD5",
                SessionInfo::default(),
                vec![[n, b" 0123456789abcdef0123456789abcdef"].concat()],
            ),
            (
                "SCRAM-SHA-256",
                SessionInfo::default(),
                vec![[b"n,,n=", n, b",r=abcdefghijklmnop"].concat()],
            ),
            (
                "XOAUTH2",
                SessionInfo::default(),
                vec![[b"user=", n, b"\x01auth=Bearer t0k\x01\x01"].concat()],
            ),
            (
                "OAUTHBEARER",
                SessionInfo::default(),
                vec![[b"n,a=", n, b",\x01auth=Bearer t0k\x01\x01"].concat()],
            ),
            ("EXTERNAL", external.clone(), vec![n.to_vec()]),
        ];
        for (mech, info, msgs) in cases {
            let msgs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let r = refused_before_any_store(mech, info, &msgs);
            assert_eq!(r.status, AuthStatus::Malformed, "{mech} {name:?}");
            assert_eq!(
                smtp_auth::smtp::reply(&r).map(|r| r.to_string()).as_deref(),
                Some("501 5.5.2 Malformed authentication data"),
                "{mech} {name:?}"
            );
        }
    }
    // A NUL inside a LOGIN name (PLAIN's separator cannot be in its fields).
    let r = refused_before_any_store("LOGIN", SessionInfo::default(), &[b"al\0ice", b"pw"]);
    assert_eq!(r.status, AuthStatus::Malformed);
    // The same mechanisms with clean names do ask their store.
    let mut ex = AuthExchange::new(Registry::all_builtin(), SessionInfo::default());
    let step = ex
        .start("LOGIN", Some(&b64("j\u{f6}rg".as_bytes())))
        .unwrap();
    assert!(matches!(step, Step::Challenge(_)));
    assert!(
        matches!(ex.respond(&b64(b"pw")).unwrap(), Step::Verify(r) if r.username == "j\u{f6}rg")
    );
}
