//! One test per row of the mapping, against a real hyper server on 127.0.0.1; the exact JSON
//! body and headers; connection reuse; secrets kept out of Debug; https.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Answer, checks_password, fixed, serve, serve_with};
use smtp_auth::{AuthDecision, AuthRequest, Password, SessionInfo};
use smtp_auth_http::HttpAuthProvider;

fn request(password: &str) -> AuthRequest {
    let mut info = SessionInfo::default();
    info.remote_ip = Some("192.0.2.7".parse().unwrap());
    info.helo_name = Some("client.example".into());
    AuthRequest::new(
        &info,
        "PLAIN",
        "alice".into(),
        Password::new(password.into()),
        None,
    )
}

async fn decide(url: &str, answer_password: &str) -> AuthDecision {
    HttpAuthProvider::builder(url)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .decide(&request(answer_password))
        .await
}

#[tokio::test]
async fn ok_true_is_ok() {
    let s = serve(fixed(200, r#"{"ok":true}"#)).await;
    assert_eq!(decide(&s.url(), "pw").await, AuthDecision::Ok);
}

#[tokio::test]
async fn ok_false_is_invalid() {
    let s = serve(fixed(200, r#"{"ok":false}"#)).await;
    assert_eq!(decide(&s.url(), "pw").await, AuthDecision::Invalid);
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_invalid() {
    for status in [401, 403] {
        let s = serve(fixed(status, "")).await;
        assert_eq!(
            decide(&s.url(), "pw").await,
            AuthDecision::Invalid,
            "{status}"
        );
    }
}

#[tokio::test]
async fn server_errors_and_other_statuses_are_failure() {
    for status in [500, 502, 503, 404, 302, 201] {
        let s = serve(fixed(status, r#"{"ok":true}"#)).await;
        assert_eq!(
            decide(&s.url(), "pw").await,
            AuthDecision::Failure,
            "{status}"
        );
    }
}

#[tokio::test]
async fn malformed_body_is_failure() {
    for body in [
        "",
        "not json",
        r#"{"ok":"true"}"#,
        r#"{"status":"ok"}"#,
        "[true]",
    ] {
        let s = serve(fixed(200, body)).await;
        assert_eq!(
            decide(&s.url(), "pw").await,
            AuthDecision::Failure,
            "{body}"
        );
    }
}

#[tokio::test]
async fn huge_body_is_failure() {
    let huge: Answer = Arc::new(|_| {
        let mut b = br#"{"ok":true,"pad":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 1 << 20));
        b.extend_from_slice(br#""}"#);
        (200, b, Duration::ZERO)
    });
    let s = serve(huge).await;
    let provider = HttpAuthProvider::builder(s.url())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(provider.decide(&request("pw")).await, AuthDecision::Failure);
}

#[tokio::test]
async fn slower_than_the_timeout_is_failure() {
    let slow: Answer = Arc::new(|_| (200, br#"{"ok":true}"#.to_vec(), Duration::from_secs(3)));
    let s = serve(slow).await;
    let provider = HttpAuthProvider::builder(s.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let t = Instant::now();
    assert_eq!(provider.decide(&request("pw")).await, AuthDecision::Failure);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the timeout cut the wait short"
    );
}

#[tokio::test]
async fn refused_connection_is_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    assert_eq!(
        decide(&format!("http://{addr}/auth"), "pw").await,
        AuthDecision::Failure
    );
}

#[tokio::test]
async fn ping_is_any_answer_to_a_head_request_within_the_timeout() {
    // A service that only takes POST still answers: reachable.
    let s = serve(fixed(405, "")).await;
    let provider = HttpAuthProvider::new(&s.url(), "tok-123", 300).unwrap();
    assert_eq!(provider.ping().await, Ok(()));
    let seen = s.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("HEAD", "/auth")
    );
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer tok-123"));
    assert!(seen[0].body.is_empty());
    // Nobody listening: the error says why, without the token.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let down = HttpAuthProvider::new(&format!("http://{addr}/auth"), "tok-123", 300).unwrap();
    let e = down.ping().await.unwrap_err();
    assert!(e.starts_with("request failed: "), "{e}");
    assert!(!e.contains("tok-123"), "{e}");
    // Too slow: cut at the timeout.
    let slow: Answer = Arc::new(|_| (200, Vec::new(), Duration::from_secs(3)));
    let s = serve(slow).await;
    let hung = HttpAuthProvider::new(&s.url(), "", 200).unwrap();
    let t = Instant::now();
    assert_eq!(hung.ping().await, Err("no answer within 200ms".into()));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn body_and_headers_are_exactly_as_specified() {
    let s = serve(fixed(200, r#"{"ok":true}"#)).await;
    let provider = HttpAuthProvider::new(&s.url(), "tok-123", 1200).unwrap();
    provider.decide(&request("p\"w\\ü")).await;
    let seen = s.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/auth");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer tok-123"));
    assert_eq!(
        String::from_utf8(seen[0].body.clone()).unwrap(),
        r#"{"username":"alice","password":"p\"w\\ü","mechanism":"PLAIN","remoteIp":"192.0.2.7","heloName":"client.example"}"#
    );
    // No token: no Authorization header (`smtpauth`'s bearerToken = "").
    let p2 = HttpAuthProvider::new(&s.url(), "", 1200).unwrap();
    p2.decide(&request("pw")).await;
    assert_eq!(s.seen()[1].authorization, None);
}

#[tokio::test]
async fn authzid_is_sent_only_when_enabled_and_foreign_ones_are_refused_otherwise() {
    let s = serve(fixed(200, r#"{"ok":true}"#)).await;
    let as_bob = |mut r: AuthRequest| {
        r.authzid = Some("bob".into());
        r
    };
    // Off (`smtpauth`'s exact JSON): asking to act as bob is refused without a request.
    let off = HttpAuthProvider::new(&s.url(), "", 1200).unwrap();
    assert_eq!(
        off.decide(&as_bob(request("pw"))).await,
        AuthDecision::Invalid
    );
    assert!(s.seen().is_empty());
    // The user's own name as authzid is no proxying: asked, with `smtpauth`'s JSON.
    let mut own = request("pw");
    own.authzid = Some("alice".into());
    assert_eq!(off.decide(&own).await, AuthDecision::Ok);
    assert!(
        !String::from_utf8(s.seen()[0].body.clone())
            .unwrap()
            .contains("authzid")
    );
    // On: the service sees the authzid and decides.
    let on = HttpAuthProvider::builder(s.url())
        .send_authzid(true)
        .build()
        .unwrap();
    assert_eq!(on.decide(&as_bob(request("pw"))).await, AuthDecision::Ok);
    assert_eq!(
        String::from_utf8(s.seen()[1].body.clone()).unwrap(),
        r#"{"username":"alice","password":"pw","mechanism":"PLAIN","remoteIp":"192.0.2.7","heloName":"client.example","authzid":"bob"}"#
    );
    on.decide(&request("pw")).await;
    assert!(
        String::from_utf8(s.seen()[2].body.clone())
            .unwrap()
            .ends_with(r#","authzid":""}"#)
    );
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let s = serve(checks_password()).await;
    let provider = HttpAuthProvider::builder(s.url()).build().unwrap();
    for i in 0..50 {
        let want = if i % 2 == 0 {
            AuthDecision::Ok
        } else {
            AuthDecision::Invalid
        };
        let pw = if i % 2 == 0 { "right" } else { "wrong" };
        assert_eq!(provider.decide(&request(pw)).await, want);
    }
    assert_eq!(s.seen().len(), 50);
    assert_eq!(s.connections(), 1, "one kept-alive connection");
}

#[tokio::test]
async fn secrets_stay_out_of_debug() {
    let p = HttpAuthProvider::builder("https://user:urlpass@auth.example/check")
        .bearer_token("tok-SECRET")
        .build()
        .unwrap();
    let d = format!("{p:?}");
    assert!(!d.contains("tok-SECRET") && !d.contains("urlpass"), "{d}");
    let b = format!(
        "{:?}",
        HttpAuthProvider::builder("http://x/").bearer_token("tok-SECRET")
    );
    assert!(!b.contains("tok-SECRET"), "{b}");
}

#[tokio::test]
async fn https_with_a_test_certificate() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider_c = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider_c.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let s = serve_with(fixed(200, r#"{"ok":true}"#), Some(Arc::new(server))).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider_c)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("https://localhost:{}/auth", s.addr.port());
    let p = HttpAuthProvider::builder(&url)
        .tls_config(client)
        .build()
        .unwrap();
    assert_eq!(p.decide(&request("pw")).await, AuthDecision::Ok);
    // Without trusting the certificate: a TLS failure is a Failure.
    let p = HttpAuthProvider::builder(&url).build().unwrap();
    assert_eq!(p.decide(&request("pw")).await, AuthDecision::Failure);
}
