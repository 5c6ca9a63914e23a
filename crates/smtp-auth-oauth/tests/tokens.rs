//! Tokens checked against a JWKS served by a real hyper server on 127.0.0.1, with keys made in
//! the test (ES256 and EdDSA with rcgen, RS256 with the openssl command line): a good token for
//! each algorithm, then a wrong audience, a wrong issuer, an expired token, a missing scope,
//! bob's token as alice, a rotated key, an unknown `kid` flood and the identity provider down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use smtp_auth::{AuthDecision, AuthRequest, Password, SessionInfo};
use smtp_auth_oauth::{OAuthConfig, OAuthProvider};

/// A signing key and its public JWK.
struct Key {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn es256(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    Key {
        alg: Algorithm::ES256,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..])}),
    }
}

fn eddsa(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Key {
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": B64.encode(pair.public_key_raw())}),
    }
}

/// A 2048-bit RSA key from `openssl`: PKCS#1 DER to sign, the modulus for the JWK.
fn rs256(kid: &str) -> Key {
    let dir = std::env::temp_dir().join(format!("oauth-rsa-{}-{kid}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("key.pem");
    let der = dir.join("key.der");
    let ok = |c: &mut std::process::Command| assert!(c.status().unwrap().success());
    ok(std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .stderr(std::process::Stdio::null()));
    ok(std::process::Command::new("openssl")
        .args(["rsa", "-traditional", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .stderr(std::process::Stdio::null()));
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.trim().strip_prefix("Modulus=").unwrap();
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let key = Key {
        alg: Algorithm::RS256,
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_der(&std::fs::read(&der).unwrap()),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": B64.encode(&n), "e": "AQAB"}),
    };
    let _ = std::fs::remove_dir_all(dir);
    key
}

/// The identity provider: serves `jwks` (replaceable) at any path, counting requests.
struct Idp {
    url: String,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

async fn idp(keys: &[&Key]) -> Idp {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let jwks = Arc::new(Mutex::new(
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    let (j, h) = (jwks.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (j, h) = (j.clone(), h.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = j.lock().unwrap().to_string();
                    async move {
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("cache-control", "public, max-age=3600")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Idp { url, jwks, hits }
}

const ISSUER: &str = "https://idp.example.org/realms/mail";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `email` signed with `key`; `change` edits the claims first.
fn token(key: &Key, email: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": "smtp", "email": email, "sub": "1234",
        "scope": "openid email smtp.send", "iat": now(), "exp": now() + 300,
    });
    change(&mut claims);
    // ring checks the signatures in this process (before the first `encode` settles it).
    assert!(smtp_auth_oauth::ring_checks_signatures());
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn provider(url: &str) -> OAuthProvider {
    let mut c = OAuthConfig::new(url);
    c.issuer = Some(ISSUER.into());
    c.audience = vec!["smtp".into()];
    c.scopes = vec!["smtp.send".into()];
    c.leeway = Duration::from_secs(5);
    c.timeout = Duration::from_millis(500);
    OAuthProvider::new(c).unwrap()
}

async fn login(p: &OAuthProvider, user: &str, token: &str) -> AuthDecision {
    let req = AuthRequest::new(
        &SessionInfo::default(),
        "OAUTHBEARER",
        user.into(),
        Password::new(token.into()),
        None,
    );
    p.check(&req).await
}

#[tokio::test]
async fn every_check_of_the_issue_holds() {
    let (es, ed, rs) = (es256("es-1"), eddsa("ed-1"), rs256("rs-1"));
    let idp = idp(&[&es, &ed, &rs]).await;
    let p = provider(&idp.url);
    // A good token logs in, for each algorithm; the domain is compared case-insensitively.
    for key in [&es, &ed, &rs] {
        let t = token(key, "alice@example.org", |_| {});
        assert_eq!(
            login(&p, "alice@example.org", &t).await,
            AuthDecision::Ok,
            "{:?}",
            key.alg
        );
        assert_eq!(login(&p, "alice@EXAMPLE.org", &t).await, AuthDecision::Ok);
    }
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1, "the JWKS is cached");
    let refused = [
        (
            "a wrong audience",
            token(&es, "alice@example.org", |c| c["aud"] = json!("webmail")),
        ),
        (
            "a wrong issuer",
            token(&es, "alice@example.org", |c| {
                c["iss"] = json!("https://evil.example/")
            }),
        ),
        (
            "an expired token",
            token(&es, "alice@example.org", |c| c["exp"] = json!(now() - 60)),
        ),
        (
            "a token not valid yet",
            token(&es, "alice@example.org", |c| c["nbf"] = json!(now() + 120)),
        ),
        (
            "a missing scope",
            token(&es, "alice@example.org", |c| {
                c["scope"] = json!("openid email")
            }),
        ),
        (
            "bob's token as alice",
            token(&es, "bob@example.org", |_| {}),
        ),
        (
            "no user claim",
            token(&es, "alice@example.org", |c| {
                c.as_object_mut().unwrap().remove("email");
            }),
        ),
        ("not a JWT", "opaque-token-abc".to_owned()),
    ];
    for (what, t) in &refused {
        assert_eq!(
            login(&p, "alice@example.org", t).await,
            AuthDecision::Invalid,
            "{what}"
        );
    }
    // A forged signature: ed-1's kid, signed by another key.
    let forger = eddsa("ed-1");
    let t = token(&forger, "alice@example.org", |_| {});
    assert_eq!(
        login(&p, "alice@example.org", &t).await,
        AuthDecision::Invalid
    );
    // An HMAC token (alg confusion with a public key as the secret) is refused outright.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("es-1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &json!({"email": "alice@example.org", "exp": now() + 60}),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    assert_eq!(
        login(&p, "alice@example.org", &hs).await,
        AuthDecision::Invalid
    );
    // The scope may come as an `scp` list (Azure AD) instead.
    let t = token(&rs, "alice@example.org", |c| {
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["smtp.send"]);
    });
    assert_eq!(login(&p, "alice@example.org", &t).await, AuthDecision::Ok);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_and_unknown_kids_do_not_flood_the_idp() {
    let old = es256("2026-11");
    let idp = idp(&[&old]).await;
    let mut c = OAuthConfig::new(&idp.url);
    c.refetch_interval = Duration::from_millis(300);
    let p = OAuthProvider::new(c).unwrap();
    assert_eq!(
        login(
            &p,
            "alice@example.org",
            &token(&old, "alice@example.org", |_| {})
        )
        .await,
        AuthDecision::Ok
    );
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
    // Made-up kids right after a fetch: refused without asking the identity provider.
    let stranger = es256("made-up");
    for _ in 0..20 {
        assert_eq!(
            login(
                &p,
                "alice@example.org",
                &token(&stranger, "alice@example.org", |_| {})
            )
            .await,
            AuthDecision::Invalid
        );
    }
    assert_eq!(
        idp.hits.load(Ordering::SeqCst),
        1,
        "no fetch per unknown kid"
    );
    // The identity provider rotates: a new kid appears; after the refetch interval it is fetched.
    let new = eddsa("2026-12");
    *idp.jwks.lock().unwrap() = json!({"keys": [old.jwk.clone(), new.jwk.clone()]});
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        login(
            &p,
            "alice@example.org",
            &token(&new, "alice@example.org", |_| {})
        )
        .await,
        AuthDecision::Ok
    );
    assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_idp_down_is_a_temporary_failure_and_cached_keys_still_serve() {
    // Nothing listens: a temporary failure (454), not a refusal.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/certs", closed.local_addr().unwrap());
    drop(closed);
    let p = provider(&url);
    let es = es256("k");
    assert_eq!(
        login(
            &p,
            "alice@example.org",
            &token(&es, "alice@example.org", |_| {})
        )
        .await,
        AuthDecision::Failure
    );
    // And the token never reaches a Debug output.
    let t = token(&es, "alice@example.org", |_| {});
    let req = AuthRequest::new(
        &SessionInfo::default(),
        "XOAUTH2",
        "alice@example.org".into(),
        Password::new(t.clone()),
        None,
    );
    assert!(!format!("{req:?} {p:?}").contains(&t[..20]));
}

/// An RFC 7662 endpoint: answers per token from `answers` when the request carries the right
/// client credentials (else 401), counting requests.
async fn introspection(answers: Vec<(&'static str, Value)>) -> (String, Arc<AtomicUsize>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    let answers = Arc::new(answers);
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (answers, h) = (answers.clone(), h.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (answers, h) = (answers.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let expected = format!(
                                "Basic {}",
                                base64::engine::general_purpose::STANDARD
                                    .encode("smtpd:client-s3cret")
                            );
                            let authorized = req
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                            let form = req.into_body().collect().await.unwrap().to_bytes();
                            let form = String::from_utf8_lossy(&form).into_owned();
                            let body = if !authorized {
                                return hyper::Response::builder()
                                    .status(401)
                                    .body(Full::new(Bytes::from_static(b"{}")));
                            } else {
                                answers
                                    .iter()
                                    .find(|(t, _)| form.starts_with(&format!("token={t}&")))
                                    .map_or(json!({"active": false}), |(_, a)| a.clone())
                            };
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body.to_string())))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn opaque_tokens_are_introspected_checked_and_cached() {
    let live = |user: &str, aud: &str| {
        json!({"active": true, "iss": ISSUER, "aud": [aud], "username": user,
            "scope": "smtp.send", "exp": now() + 120})
    };
    let (url, hits) = introspection(vec![
        ("opaque-alice", live("alice@example.org", "smtp")),
        ("opaque-bob", live("bob@example.org", "smtp")),
        ("opaque-web", live("alice@example.org", "webmail")),
        ("opaque-old", json!({"active": false})),
    ])
    .await;
    let mut c = OAuthConfig::new("");
    c.issuer = Some(ISSUER.into());
    c.audience = vec!["smtp".into()];
    c.scopes = vec!["smtp.send".into()];
    c.introspection = Some(smtp_auth_oauth::Introspection::new(
        &url,
        "smtpd",
        "client-s3cret",
    ));
    let p = OAuthProvider::new(c.clone()).unwrap();
    assert!(!format!("{p:?}").contains("client-s3cret"));
    assert_eq!(
        login(&p, "alice@example.org", "opaque-alice").await,
        AuthDecision::Ok
    );
    // Cached until exp (capped): the second login asks no one.
    assert_eq!(
        login(&p, "alice@example.org", "opaque-alice").await,
        AuthDecision::Ok
    );
    assert_eq!((hits.load(Ordering::SeqCst), p.introspections()), (1, 1));
    // remember_for zero: every login asks again (a revoked token is refused at once).
    let mut every_time = c.clone();
    every_time.remember_for = Duration::ZERO;
    let fresh = OAuthProvider::new(every_time).unwrap();
    for _ in 0..2 {
        assert_eq!(
            login(&fresh, "alice@example.org", "opaque-alice").await,
            AuthDecision::Ok
        );
    }
    assert_eq!(
        (hits.load(Ordering::SeqCst), fresh.introspections()),
        (3, 2)
    );
    for (what, token) in [
        ("bob's token as alice", "opaque-bob"),
        ("a wrong audience", "opaque-web"),
        ("an inactive token", "opaque-old"),
        ("an unknown token", "never-issued"),
    ] {
        assert_eq!(
            login(&p, "alice@example.org", token).await,
            AuthDecision::Invalid,
            "{what}"
        );
    }
    // Wrong client credentials: the endpoint says 401, a temporary failure (a configuration to
    // fix), not a refusal of the user.
    let mut wrong = c.clone();
    wrong.introspection = Some(smtp_auth_oauth::Introspection::new(&url, "smtpd", "wrong"));
    let p = OAuthProvider::new(wrong).unwrap();
    assert_eq!(
        login(&p, "alice@example.org", "opaque-alice").await,
        AuthDecision::Failure
    );
    // The endpoint down: a temporary failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut down = c.clone();
    down.introspection = Some(smtp_auth_oauth::Introspection::new(
        format!("http://{}/introspect", closed.local_addr().unwrap()),
        "smtpd",
        "client-s3cret",
    ));
    drop(closed);
    let p = OAuthProvider::new(down).unwrap();
    assert_eq!(
        login(&p, "alice@example.org", "opaque-alice").await,
        AuthDecision::Failure
    );
}

#[tokio::test]
async fn a_verified_token_is_remembered_until_its_exp_and_not_a_second_longer() {
    let es = es256("k1");
    let idp = idp(&[&es]).await;
    let mut c = OAuthConfig::new(&idp.url);
    c.leeway = Duration::ZERO;
    let p = OAuthProvider::new(c).unwrap();
    let t = token(&es, "alice@example.org", |c| c["exp"] = json!(now() + 2));
    assert_eq!(login(&p, "alice@example.org", &t).await, AuthDecision::Ok);
    // Remembered for alice only: as bob it is checked, and refused.
    assert_eq!(
        login(&p, "bob@example.org", &t).await,
        AuthDecision::Invalid
    );
    assert_eq!(login(&p, "alice@example.org", &t).await, AuthDecision::Ok);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        login(&p, "alice@example.org", &t).await,
        AuthDecision::Invalid,
        "expired: the remembered verdict ended with the token"
    );
}
