//! For each type that holds a secret: `{:?}` and `{}` never show it.

mod common;

use smtp_auth::mechanism::{
    CramMd5Client, LoginClient, OAuthBearerClient, PlainClient, ScramSha256Client,
    ScramSha256Server, XOAuth2Client,
};
use smtp_auth::{
    AuthData, AuthExchange, AuthRequest, AuthResult, LoginPassword, LookupResult, MemoryProvider,
    Password, Registry, ScramKeys, Secret, SessionInfo, Step, StoredSecret,
};

const PW: &str = "hunter2-SECRET";

fn assert_hidden(text: &str) {
    assert!(!text.contains(PW), "secret leaked: {text}");
    assert!(
        !text.contains("aHVudGVyMi1TRUNSRVQ"),
        "base64 secret leaked: {text}"
    );
}

#[test]
fn secret_and_password() {
    let s: Password = Secret::new(PW.to_owned());
    assert_eq!(format!("{s:?}"), "<redacted>");
    assert_eq!(s.expose_secret(), PW);
}

#[test]
fn auth_request() {
    let req = AuthRequest::new(
        &SessionInfo::default(),
        "PLAIN",
        "alice".into(),
        Password::new(PW.into()),
        None,
    );
    assert_hidden(&format!("{req:?}"));
    assert_hidden(&format!("{req:#?}"));
    assert_hidden(&format!("{req}"));
    assert!(format!("{req:?}").contains("alice"));
}

#[test]
fn login_password() {
    let lp = LoginPassword {
        login: "alice".into(),
        password: Password::new(PW.into()),
    };
    assert_hidden(&format!("{lp:?}"));
    assert_hidden(&format!("{lp}"));
    assert_eq!(
        format!("{lp}"),
        "LoginPassword(login=alice, password=<redacted>)"
    );
    let r = AuthResult::success(Some(AuthData::LoginPassword(lp)));
    assert_hidden(&format!("{r:?}"));
    assert_hidden(&format!("{r}"));
}

#[test]
fn stored_secrets_and_keys() {
    let keys = ScramKeys::derive_sha256(PW, b"salt", 4096);
    let dbg = format!("{keys:?}");
    assert_hidden(&dbg);
    assert!(!dbg.contains(&format!("{:?}", keys.stored_key.expose_secret())));
    let s = StoredSecret::Plain(Password::new(PW.into()));
    assert_hidden(&format!("{s:?}"));
    assert_hidden(&format!("{:?}", LookupResult::Found(s)));
    let p = MemoryProvider::new().with_user("alice", PW);
    assert_hidden(&format!("{p:?}"));
}

#[test]
fn client_mechanisms() {
    assert_hidden(&format!("{:?}", PlainClient::new("alice", PW, None)));
    assert_hidden(&format!("{:?}", LoginClient::new("alice", PW)));
    assert_hidden(&format!("{:?}", CramMd5Client::new("alice", PW)));
    assert_hidden(&format!("{:?}", ScramSha256Client::new("alice", PW, None)));
    assert_hidden(&format!("{:?}", XOAuth2Client::new("alice", PW)));
    assert_hidden(&format!(
        "{:?}",
        OAuthBearerClient::new("alice", "h", 25, PW)
    ));
}

#[test]
fn exchanges_and_steps_in_flight() {
    let line = common::b64(format!("\0alice\0{PW}").as_bytes());
    let mut e = AuthExchange::new(Registry::default(), SessionInfo::default());
    let step = e.start("PLAIN", Some(&line)).unwrap();
    assert_hidden(&format!("{step:?}"));
    assert_hidden(&format!("{e:?}"));
    let Step::Verify(req) = step else { panic!() };
    assert_eq!(req.password.expose_secret(), PW);
    let s = ScramSha256Server::default();
    assert_hidden(&format!("{s:?}"));
}

/// A value that records being wiped: the probe that shows `Secret` calls `zeroize` on drop.
#[derive(Clone, Default)]
struct Probe(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl zeroize::Zeroize for Probe {
    fn zeroize(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn secrets_are_wiped_on_drop() {
    use zeroize::Zeroize;
    let probe = Probe::default();
    let wiped = || probe.0.load(std::sync::atomic::Ordering::SeqCst);
    let s = Secret::new(probe.clone());
    let copy = s.clone();
    assert_eq!(wiped(), 0);
    drop(s);
    assert_eq!(wiped(), 1, "dropping a Secret wipes its value");
    drop(copy);
    assert_eq!(wiped(), 2, "and every clone wipes its own");

    // LoginPassword: its Zeroize (which its Drop calls) wipes the login and the password.
    let mut lp = LoginPassword {
        login: "alice".into(),
        password: Password::new(PW.to_owned()),
    };
    lp.zeroize();
    assert!(lp.login.is_empty());
    assert!(lp.password.expose_secret().is_empty());
}
