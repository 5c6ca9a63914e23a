//! For each mechanism, our client against our server authenticates exactly when the password
//! (or token) matches, for arbitrary Unicode credentials; a name SASLprep's rules refuse is
//! refused as malformed for every mechanism.

mod common;

use proptest::prelude::*;
use smtp_auth::mechanism::{
    CramMd5Client, LoginClient, OAuthBearerClient, PlainClient, ScramSha256Client, XOAuth2Client,
};
use smtp_auth::{
    AuthExchange, AuthStatus, ClientMechanism, MemoryProvider, Registry, SessionInfo, Step,
};

/// Names without NUL (PLAIN's separator), `\x01` (OAuth's) or spaces (CRAM's).
fn name() -> impl Strategy<Value = String> {
    "[^\\x00\\x01 ]{1,24}"
}

fn password() -> impl Strategy<Value = String> {
    "[^\\x00\\x01]{1,32}"
}

fn check(
    client: &mut dyn ClientMechanism,
    stored: &str,
    given: &str,
    user: &str,
    initial: bool,
) -> Result<(), TestCaseError> {
    let provider = MemoryProvider::new().with_user(user, stored);
    let r = common::drive(
        Registry::all_builtin(),
        SessionInfo::default(),
        client,
        &provider,
        initial,
    );
    if smtp_auth::sasl::check_name(user).is_err() {
        // Control characters and SASLprep's prohibited output never reach the provider.
        prop_assert_eq!(r.status, AuthStatus::Malformed);
        return Ok(());
    }
    prop_assert_eq!(r.is_success(), stored == given, "status {:?}", r.status);
    if r.is_success() {
        let data = r.auth_data.unwrap();
        prop_assert_eq!(data.login(), Some(user));
    } else {
        prop_assert_eq!(r.status, AuthStatus::Invalid);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plain(user in name(), stored in password(), given in password(), initial in any::<bool>(), same in any::<bool>()) {
        let given = if same { stored.clone() } else { given };
        check(&mut PlainClient::new(&user, &given, None), &stored, &given, &user, initial)?;
    }

    #[test]
    fn login(user in name(), stored in password(), given in password(), initial in any::<bool>(), same in any::<bool>()) {
        let given = if same { stored.clone() } else { given };
        let mut c = LoginClient::new(&user, &given);
        if initial { c = c.with_initial_response(); }
        check(&mut c, &stored, &given, &user, initial)?;
    }

    #[test]
    fn cram_md5(user in name(), stored in password(), given in password(), same in any::<bool>()) {
        let given = if same { stored.clone() } else { given };
        check(&mut CramMd5Client::new(&user, &given), &stored, &given, &user, false)?;
    }

    #[test]
    fn xoauth2(user in name(), stored in "[!-~]{1,40}", given in "[!-~]{1,40}", initial in any::<bool>(), same in any::<bool>()) {
        let given = if same { stored.clone() } else { given };
        check(&mut XOAuth2Client::new(&user, &given), &stored, &given, &user, initial)?;
    }

    #[test]
    fn oauthbearer(user in "[^\\x00\\x01,]{1,24}", stored in "[!-~]{1,40}", given in "[!-~]{1,40}", same in any::<bool>()) {
        let given = if same { stored.clone() } else { given };
        check(&mut OAuthBearerClient::new(&user, "mx.example", 587, &given), &stored, &given, &user, true)?;
    }

    #[test]
    fn arbitrary_lines_never_panic(
        mech in prop_oneof![Just("PLAIN"), Just("LOGIN"), Just("CRAM-MD5"), Just("SCRAM-SHA-256"), Just("XOAUTH2"), Just("OAUTHBEARER"), Just("EXTERNAL")],
        lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..6),
        b64_lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..6),
    ) {
        let provider = MemoryProvider::new().with_user("user", "pencil");
        let mut e = AuthExchange::new(Registry::all_builtin(), SessionInfo::default());
        let mut step = e.start(mech, None).unwrap();
        let inputs = lines.into_iter().chain(b64_lines.iter().map(|l| common::b64(l)));
        for line in inputs {
            step = match step {
                Step::Challenge(_) => e.respond(&line).unwrap(),
                Step::Verify(r) => e.decide(provider.check(&r)).unwrap(),
                Step::Lookup(r) => e.supply(provider.lookup(&r)).unwrap(),
                Step::Done(_) => break,
            };
        }
    }
}

// SCRAM derives 4096 PBKDF2 rounds per attempt: fewer cases keep the debug build quick.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn scram_sha_256(user in name(), stored in password(), given in password(), initial in any::<bool>(), same in any::<bool>()) {
        // RFC 5802 §5.1: the client sends the user name SASLprep'd, and the store holds it
        // prepared: a name SASLprep changes ("豈", U+F900, becomes U+8C48) is another name.
        prop_assume!(smtp_auth::mechanism::saslprep(&user) == user);
        let given = if same { stored.clone() } else { given };
        check(&mut ScramSha256Client::new(&user, &given, None), &stored, &given, &user, initial)?;
    }
}
