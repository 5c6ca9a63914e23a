//! The RFCs' own example exchanges as test vectors.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::b64;
use smtp_auth::mechanism::{
    CramMd5Client, CramMd5Server, OAuthServer, PlainServer, ScramSha256Client, ScramSha256Server,
};
use smtp_auth::{
    AuthDecision, AuthExchange, AuthProgress, AuthStatus, ClientMechanism, LookupResult,
    MemoryProvider, Registry, ScramKeys, SessionInfo, Step, StoredSecret,
};

fn registry_with(
    name: &'static str,
    f: impl Fn() -> Box<dyn smtp_auth::ServerMechanism> + Send + Sync + 'static,
) -> Registry {
    let mut r = Registry::empty();
    r.register(name, f).unwrap();
    r
}

#[test]
fn rfc4616_plain_examples() {
    // RFC 4616 §4: "\0tim\0tanstaaftanstaaf" and "Kurt" acting as "Ursel".
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
    let Step::Verify(req) = ex
        .start("PLAIN", Some(&b64(b"\0tim\0tanstaaftanstaaf")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(req.username, "tim");
    assert_eq!(req.password.expose_secret(), "tanstaaftanstaaf");
    assert_eq!(req.authzid, None);
    assert_eq!(req.mechanism, "PLAIN");

    // Proxy authorization only where the provider decides it.
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default())
        .with_proxy_authorization(true);
    let Step::Verify(req) = ex
        .start("PLAIN", Some(&b64(b"Ursel\0Kurt\0xipj3plmq")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(req.username, "Kurt");
    assert_eq!(req.authzid.as_deref(), Some("Ursel"));
    let Step::Done(r) = ex.decide(AuthDecision::Ok).unwrap() else {
        panic!()
    };
    let Some(smtp_auth::AuthData::Identity(id)) = r.auth_data else {
        panic!()
    };
    assert_eq!(id.authzid.as_deref(), Some("Ursel"));
}

#[test]
fn rfc4954_plain_without_initial_response() {
    // RFC 4954 §4 example: S: 334 (empty)  C: dGVzdAB0ZXN0ADEyMzQ=
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
    let Step::Challenge(c) = ex.start("PLAIN", None).unwrap() else {
        panic!()
    };
    assert!(c.is_empty());
    assert_eq!(ex.progress(), AuthProgress::Plain);
    let Step::Verify(req) = ex.respond(b"dGVzdAB0ZXN0ADEyMzQ=").unwrap() else {
        panic!()
    };
    assert_eq!(req.username, "test");
    assert_eq!(req.password.expose_secret(), "1234");
    // authzid "test" equals the authcid here.
    assert_eq!(req.authzid.as_deref(), Some("test"));
}

#[test]
fn plain_malformed_messages() {
    for bad in [
        &b"tim\0pw"[..],
        b"\0\0pw",
        b"\0tim\0",
        b"\0tim\0pw\0",
        b"\0t\xffm\0pw",
        b"",
    ] {
        let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
        let Step::Done(r) = ex.start("PLAIN", Some(&b64(bad))).unwrap() else {
            // An empty message is sent as "=".
            assert!(bad.is_empty());
            continue;
        };
        assert_eq!(r.status, AuthStatus::Malformed, "{bad:?}");
    }
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
    let Step::Done(r) = ex.start("PLAIN", Some(b"=")).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Malformed);
}

#[test]
fn login_prompts_and_initial_response() {
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
    let Step::Challenge(c) = ex.start("login", None).unwrap() else {
        panic!()
    };
    assert_eq!(STANDARD.encode(&c), "VXNlcm5hbWU6");
    assert_eq!(ex.progress(), AuthProgress::LoginUser);
    let Step::Challenge(c) = ex.respond(&b64(b"alice")).unwrap() else {
        panic!()
    };
    assert_eq!(STANDARD.encode(&c), "UGFzc3dvcmQ6");
    assert_eq!(ex.progress(), AuthProgress::LoginPass);
    let Step::Verify(req) = ex.respond(&b64(b"pw")).unwrap() else {
        panic!()
    };
    assert_eq!(
        (req.username.as_str(), req.mechanism.as_str()),
        ("alice", "LOGIN")
    );
    assert_eq!(ex.progress(), AuthProgress::Verifying);

    // smtplib's form: AUTH LOGIN <b64 user> skips the first prompt.
    let mut ex = AuthExchange::new(Registry::default(), SessionInfo::default());
    let Step::Challenge(c) = ex.start("LOGIN", Some(&b64(b"alice"))).unwrap() else {
        panic!()
    };
    assert_eq!(c, b"Password:");
    assert_eq!(ex.progress(), AuthProgress::LoginPass);
}

#[test]
fn rfc2195_cram_md5() {
    let reg = registry_with("CRAM-MD5", || {
        Box::new(CramMd5Server::with_challenge(
            "<1896.697170952@postoffice.reston.mci.net>",
        ))
    });
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    let Step::Challenge(c) = ex.start("CRAM-MD5", None).unwrap() else {
        panic!()
    };
    assert_eq!(
        STANDARD.encode(&c),
        "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    );
    let mut client = CramMd5Client::new("tim", "tanstaaftanstaaf");
    let resp = client.respond(&c).unwrap();
    assert_eq!(
        STANDARD.encode(resp.expose_secret()),
        "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    );
    let Step::Lookup(req) = ex
        .respond(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(req.username, "tim");
    let users = MemoryProvider::new().with_user("tim", "tanstaaftanstaaf");
    let Step::Done(r) = ex.supply(users.lookup(&req)).unwrap() else {
        panic!()
    };
    assert!(r.is_success());

    // Wrong password, unknown user, store failure.
    for (found, status) in [
        (
            MemoryProvider::new().with_user("tim", "nope").lookup(&req),
            AuthStatus::Invalid,
        ),
        (LookupResult::NotFound, AuthStatus::Invalid),
        (LookupResult::Failure, AuthStatus::TempFail),
        (LookupResult::Locked, AuthStatus::Locked),
    ] {
        let reg = registry_with("CRAM-MD5", || {
            Box::new(CramMd5Server::with_challenge(
                "<1896.697170952@postoffice.reston.mci.net>",
            ))
        });
        let mut ex = AuthExchange::new(reg, SessionInfo::default());
        ex.start("CRAM-MD5", None).unwrap();
        ex.respond(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
            .unwrap();
        let Step::Done(r) = ex.supply(found).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, status);
    }
}

#[test]
fn rfc7677_scram_sha_256() {
    let reg = registry_with("SCRAM-SHA-256", || {
        Box::new(ScramSha256Server::with_nonce(
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        ))
    });
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    let mut client = ScramSha256Client::with_nonce("user", "pencil", None, "rOprNGfwEbeRWgbNEkqO");
    let first = client.initial_response().unwrap();
    assert_eq!(first.expose_secret(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let Step::Lookup(req) = ex
        .start("SCRAM-SHA-256", Some(&b64(first.expose_secret())))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(req.username, "user");
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let keys = ScramKeys::derive_sha256("pencil", &salt, 4096);
    let Step::Challenge(server_first) = ex
        .supply(LookupResult::Found(StoredSecret::ScramSha256(keys)))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        server_first,
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert_eq!(ex.progress(), AuthProgress::ScramClientFinal);
    let client_final = client.respond(&server_first).unwrap();
    assert_eq!(
        client_final.expose_secret(),
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    let Step::Challenge(server_final) = ex.respond(&b64(client_final.expose_secret())).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert_eq!(ex.progress(), AuthProgress::ScramServerFinal);
    let ack = client.respond(&server_final).unwrap();
    assert!(ack.expose_secret().is_empty());
    let Step::Done(r) = ex.respond(b"").unwrap() else {
        panic!()
    };
    assert!(r.is_success());
    assert_eq!(r.auth_data.unwrap().login(), Some("user"));
}

#[test]
fn scram_refuses_channel_binding_cleanly() {
    let mut ex = AuthExchange::new(Registry::all_builtin(), SessionInfo::default());
    let Step::Done(r) = ex
        .start("SCRAM-SHA-256", Some(&b64(b"p=tls-unique,,n=user,r=abc")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Unsupported);
    let mut ex = AuthExchange::new(Registry::all_builtin(), SessionInfo::default());
    let Step::Done(r) = ex
        .start("SCRAM-SHA-256", Some(&b64(b"n,,m=ext,n=user,r=abc")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Unsupported);
}

#[test]
fn scram_detects_a_forged_server() {
    let mut client = ScramSha256Client::with_nonce("user", "pencil", None, "rOprNGfwEbeRWgbNEkqO");
    client.initial_response();
    client
        .respond(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        .unwrap();
    assert_eq!(
        client.respond(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        Err(smtp_auth::ClientError::ServerNotAuthenticated)
    );
    // A server that does not extend the client nonce is refused too.
    let mut client = ScramSha256Client::with_nonce("user", "pencil", None, "abc");
    client.initial_response();
    assert!(client.respond(b"r=abc,s=QUJD,i=4096").is_err());
}

#[test]
fn rfc7628_oauthbearer() {
    // RFC 7628 §4.1 (SMTP flavour of the example).
    let msg = b"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
    let reg = registry_with("OAUTHBEARER", || Box::new(OAuthServer::oauthbearer()));
    let mut ex = AuthExchange::new(reg.clone(), SessionInfo::default());
    let Step::Verify(req) = ex.start("OAUTHBEARER", Some(&b64(msg))).unwrap() else {
        panic!()
    };
    assert_eq!(req.username, "user@example.com");
    assert_eq!(
        req.password.expose_secret(),
        "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    );
    assert_eq!(req.mechanism, "OAUTHBEARER");
    let Step::Done(r) = ex.decide(AuthDecision::Ok).unwrap() else {
        panic!()
    };
    assert!(r.is_success());

    // §4.3: a rejected token gets the error JSON, the client sends %x01, then failure.
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    ex.start("OAUTHBEARER", Some(&b64(msg))).unwrap();
    let Step::Challenge(err) = ex.decide(AuthDecision::Invalid).unwrap() else {
        panic!()
    };
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains(r#""status":"invalid_token""#), "{err}");
    assert_eq!(ex.progress(), AuthProgress::OAuthBearerError);
    let Step::Done(r) = ex.respond(&b64(b"\x01")).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Invalid);
}

#[test]
fn xoauth2_google_example() {
    // Google's documented XOAUTH2 initial client response.
    let ir = b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==";
    let reg = registry_with("XOAUTH2", || Box::new(OAuthServer::xoauth2()));
    let mut ex = AuthExchange::new(reg.clone(), SessionInfo::default());
    let Step::Verify(req) = ex.start("XOAUTH2", Some(ir)).unwrap() else {
        panic!()
    };
    assert_eq!(req.username, "someuser@example.com");
    assert_eq!(
        req.password.expose_secret(),
        "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    );
    let Step::Challenge(err) = ex.decide(AuthDecision::Invalid).unwrap() else {
        panic!()
    };
    assert_eq!(err, br#"{"status":"401","schemes":"bearer"}"#);
    assert_eq!(ex.progress(), AuthProgress::XOAuth2Error);
    let Step::Done(r) = ex.respond(b"").unwrap() else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Invalid);
    // A provider outage is a temporary failure, not an error challenge.
    let mut ex = AuthExchange::new(reg, SessionInfo::default());
    ex.start("XOAUTH2", Some(ir)).unwrap();
    let Step::Done(r) = ex.decide(AuthDecision::Failure).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::TempFail);
}

#[test]
fn external_uses_the_transport_identity() {
    let mut info = SessionInfo::default();
    info.external_identity = Some("client.example.org".into());
    let mut ex = AuthExchange::new(Registry::all_builtin(), info);
    let Step::Verify(req) = ex.start("EXTERNAL", Some(b"=")).unwrap() else {
        panic!()
    };
    assert_eq!(req.username, "client.example.org");
    assert_eq!(req.authzid, None);
    let users = MemoryProvider::new().with_user("client.example.org", "unused");
    let Step::Done(r) = ex.decide(users.check(&req)).unwrap() else {
        panic!()
    };
    assert!(r.is_success());

    // Without a transport identity EXTERNAL fails.
    let mut ex = AuthExchange::new(Registry::all_builtin(), SessionInfo::default());
    let Step::Challenge(c) = ex.start("EXTERNAL", None).unwrap() else {
        panic!()
    };
    assert!(c.is_empty());
    assert_eq!(ex.progress(), AuthProgress::External);
    let Step::Done(r) = ex.respond(b"").unwrap() else {
        panic!()
    };
    assert_eq!(r.status, AuthStatus::Invalid);
}

#[test]
fn plain_server_used_directly() {
    // The mechanism alone, without the exchange wrapper.
    use smtp_auth::ServerMechanism;
    let mut m = PlainServer::default();
    let info = SessionInfo::default();
    assert!(matches!(m.start(&info, None), Step::Challenge(ref c) if c.is_empty()));
}
