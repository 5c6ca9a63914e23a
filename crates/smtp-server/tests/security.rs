//! AUTH that cannot be fooled, through a real server on 127.0.0.1: exactly one reply per
//! AUTH, refused credentials counted however the exchange ends, one limiter per process with
//! a per-user limit, the authzid rule, long initial responses, improper pipelining after DATA
//! and SCRAM-SHA-256-PLUS bound to the TLS session.
#![cfg(feature = "tokio")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Client, Recorder, b64, plain_config, start, tls_configs, tls_connect};
use smtp_auth::mechanism::ScramSha256Client;
use smtp_auth::{
    AuthDecision, AuthRequest, AuthResult, ClientMechanism, MemoryProvider, Registry, SecretBytes,
    ServerMechanism, SessionInfo, Step, provider_fn,
};
use smtp_server::{AuthLimiter, ProviderAuthenticator, Server};

fn plain(authz: &str, user: &str, pw: &str) -> String {
    b64(format!("{authz}\0{user}\0{pw}").as_bytes())
}

/// Waits (bounded) until `f` holds; the server records a disconnect asynchronously.
async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached within 5 s");
}

/// A mechanism that wrongly claims it already replied (only a `handle_auth` hook holds the
/// connection and can; an authenticator's `Verdict` has no such claim at all).
struct ClaimsHandled;
impl ServerMechanism for ClaimsHandled {
    fn start(&mut self, _: &SessionInfo, _: Option<SecretBytes>) -> Step {
        Step::Done(AuthResult::handled())
    }
    fn respond(&mut self, _: &SessionInfo, _: SecretBytes) -> Step {
        Step::Done(AuthResult::handled())
    }
}

#[tokio::test]
async fn a_mechanism_cannot_suppress_the_reply() {
    let cfg = plain_config()
        .mechanism("PLAIN", || Box::new(ClaimsHandled))
        .build();
    let srv = start(Server::new(cfg, Recorder::default())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    // Without the rule the server sent nothing and this read timed out.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "pw")))
            .await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    srv.shutdown().await;
}

fn oauth_registry() -> Registry {
    let mut r = Registry::empty();
    let all = Registry::all_builtin();
    r.register("XOAUTH2", move || all.create("XOAUTH2").unwrap())
        .unwrap();
    r
}

#[tokio::test]
async fn a_refused_token_counts_when_the_client_leaves_at_the_error_challenge() {
    let limiter = Arc::new(AuthLimiter::new(1, 1, Duration::from_secs(60)));
    let cfg = plain_config().registry(oauth_registry()).build();
    let refuse = provider_fn(|_r: AuthRequest| async { AuthDecision::Invalid });
    let srv = start(
        Server::new(cfg, Recorder::default())
            .provider(refuse)
            .limiter(limiter.clone()),
    )
    .await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    let ir = b64(b"user=alice\x01auth=Bearer badtoken\x01\x01");
    let r = c.cmd(&format!("AUTH XOAUTH2 {ir}")).await;
    assert!(r.starts_with("334 "), "{r}");
    // curl's behaviour: hang up instead of answering the error challenge.
    drop(c);
    eventually(|| limiter.tracked() == (1, 1)).await;
    assert!(limiter.user_locked("alice", std::time::Instant::now()));
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {ir}")).await,
        "421 4.7.0 Too many failed authentication attempts, closing connection"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_user_is_locked_after_failures_from_many_addresses_without_checking() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let provider = provider_fn(move |r: AuthRequest| {
        c2.fetch_add(1, Ordering::SeqCst);
        let ok = r.password.expose_secret() == "wonderland";
        async move {
            if ok {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            }
        }
    });
    // Per-IP limit high: the per-user limit must stop it.
    let limiter = Arc::new(AuthLimiter::new(100, 2, Duration::from_secs(60)));
    let srv = start(
        Server::new(plain_config().build(), Recorder::default())
            .provider(provider)
            .limiter(limiter),
    )
    .await;
    for _ in 0..2 {
        let mut c = Client::connect(srv.addr).await;
        c.cmd("EHLO client.example").await;
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "guess")))
                .await,
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    // Even the right password is not checked now: temporary failure.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("", "ALICE", "wonderland")))
            .await,
        "454 4.7.0 Temporary authentication failure"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the provider was not asked"
    );
    // Other users are untouched.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("", "bob", "wonderland")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;
}

/// One AUTH PLAIN on `c` with a wrong password for `user`.
async fn fail_as(c: &mut Client<tokio::net::TcpStream>, user: &str) -> String {
    c.cmd(&format!("AUTH PLAIN {}", plain("", user, "guess")))
        .await
}

#[tokio::test]
async fn a_flood_of_failing_names_larger_than_the_table_does_not_free_a_lock() {
    let users = MemoryProvider::new().with_user("alice", "wonderland");
    // A table of 50 users; 500 distinct names fail after alice is locked.
    let limiter = Arc::new(AuthLimiter::with_capacity(
        0,
        2,
        Duration::from_secs(600),
        50,
    ));
    let cfg = plain_config().max_auth_failures(10_000).build();
    let srv = start(
        Server::new(cfg, Recorder::default())
            .provider(users)
            .limiter(limiter.clone()),
    )
    .await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    for _ in 0..2 {
        assert_eq!(
            fail_as(&mut c, "alice").await,
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    for i in 0..500 {
        assert_eq!(
            fail_as(&mut c, &format!("spray{i}")).await,
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    let (_, held) = limiter.tracked();
    assert!(held <= 50, "bounded: {held}");
    // Without the rule alice's lock was evicted with the oldest entries and her password
    // was checked again.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "wonderland")))
            .await,
        "454 4.7.0 Temporary authentication failure"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_user_locked_again_soon_after_a_lock_gets_a_longer_lock() {
    let users = MemoryProvider::new().with_user("alice", "wonderland");
    // Locks of 1 s, doubling up to 8 s.
    let limiter = Arc::new(
        AuthLimiter::new(0, 2, Duration::from_secs(1)).with_max_lock(Duration::from_secs(8)),
    );
    let cfg = plain_config().max_auth_failures(100).build();
    let srv = start(
        Server::new(cfg, Recorder::default())
            .provider(users)
            .limiter(limiter),
    )
    .await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    let good = format!("AUTH PLAIN {}", plain("", "alice", "wonderland"));
    let locked = "454 4.7.0 Temporary authentication failure";
    // First lock: 1 s.
    fail_as(&mut c, "alice").await;
    fail_as(&mut c, "alice").await;
    assert_eq!(c.cmd(&good).await, locked);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Over: the lock ended; two more failures lock her again, now for 2 s.
    fail_as(&mut c, "alice").await;
    fail_as(&mut c, "alice").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        c.cmd(&good).await,
        locked,
        "a second lock outlasts one window"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(c.cmd(&good).await, "235 2.7.0 Authentication successful");
    srv.shutdown().await;
}

#[tokio::test]
async fn one_limiter_counts_across_listeners() {
    let limiter = Arc::new(AuthLimiter::new(2, 0, Duration::from_secs(60)));
    let users = MemoryProvider::new().with_user("alice", "wonderland");
    let a = start(
        Server::new(plain_config().build(), Recorder::default())
            .provider(users.clone())
            .limiter(limiter.clone()),
    )
    .await;
    let b = start(
        Server::new(plain_config().build(), Recorder::default())
            .provider(users)
            .limiter(limiter.clone()),
    )
    .await;
    for addr in [a.addr, b.addr] {
        let mut c = Client::connect(addr).await;
        c.cmd("EHLO client.example").await;
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "x")))
                .await,
            "535 5.7.8 Authentication credentials invalid"
        );
    }
    let mut c = Client::connect(a.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("", "alice", "wonderland")))
            .await,
        "421 4.7.0 Too many failed authentication attempts, closing connection"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_foreign_authzid_is_refused_unless_the_provider_decides() {
    // A provider that says Ok to alice's password, whatever the authzid.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let provider = provider_fn(move |r: AuthRequest| {
        s2.lock().unwrap().push(r.authzid.clone());
        async move { AuthDecision::Ok }
    });
    let srv =
        start(Server::new(plain_config().build(), Recorder::default()).provider(provider.clone()))
            .await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", "alice", "pw")))
            .await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "refused before the provider"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", "alice", "pw")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    srv.shutdown().await;

    let cfg = plain_config().proxy_authorization(true).build();
    let rec = Recorder::default();
    let srv = start(Server::new(cfg, rec.clone()).provider(provider)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", "alice", "pw")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(Some("bob".to_owned()))
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_4kb_token_fits_on_the_auth_line() {
    let token = format!("eyJ{}", "x".repeat(4093));
    let t2 = token.clone();
    let provider = provider_fn(move |r: AuthRequest| {
        let ok = r.username == "alice" && *r.password.expose_secret() == t2;
        async move {
            if ok {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            }
        }
    });
    let cfg = plain_config().registry(oauth_registry()).build();
    let srv = start(Server::new(cfg, Recorder::default()).provider(provider)).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    let ir = b64(format!("user=alice\x01auth=Bearer {token}\x01\x01").as_bytes());
    assert!(ir.len() > 4096);
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {ir}")).await,
        "235 2.7.0 Authentication successful"
    );
    // Other commands keep the 512-octet limit.
    assert_eq!(
        c.cmd(&format!("NOOP {}", "x".repeat(600))).await,
        "500 5.5.6 Line too long"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_body_sent_before_354_is_refused() {
    let rec = Recorder::default();
    let srv = start(Server::new(plain_config().build(), rec.clone())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: early\r\n\r\nbody\r\n.\r\nNOOP\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.1.0 Sender OK");
    assert_eq!(c.reply().await, "250 2.1.5 Recipient OK");
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>");
    assert_eq!(
        c.reply().await,
        "554 5.5.0 Improper pipelining: message sent before the 354 reply, refused"
    );
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    assert!(rec.taken().is_empty());
    // A client that waits for the 354 delivers.
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        .await;
    c.reply().await;
    c.reply().await;
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>");
    assert_eq!(
        c.cmd("Subject: ok\r\n\r\nbody\r\n.").await,
        "250 2.0.0 OK: queued"
    );
    assert_eq!(rec.taken().len(), 1);
    srv.shutdown().await;

    // The documented tolerance.
    let rec = Recorder::default();
    let cfg = plain_config().allow_pipelined_body(true).build();
    let srv = start(Server::new(cfg, rec.clone())).await;
    let mut c = Client::connect(srv.addr).await;
    c.cmd("EHLO client.example").await;
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n")
        .await;
    c.reply().await;
    c.reply().await;
    c.reply().await;
    assert_eq!(c.reply().await, "250 2.0.0 OK: queued");
    assert_eq!(rec.taken().len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn scram_plus_is_bound_to_the_tls_session() {
    let (server_tls, client_tls, _) = tls_configs();
    let users = MemoryProvider::new().with_user("alice", "wonderland");
    let cfg = plain_config()
        .registry(Registry::all_builtin())
        .tls(server_tls)
        .build();
    let auth = ProviderAuthenticator::new(users.clone()).with_secrets(users);
    let srv = start(Server::new(cfg, Recorder::default()).authenticator(auth)).await;

    // In the clear, -PLUS is not offered and not accepted.
    let mut c = Client::connect(srv.addr).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        ehlo.contains("SCRAM-SHA-256 ") && !ehlo.contains("-PLUS"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("AUTH SCRAM-SHA-256-PLUS").await,
        "504 5.5.4 Unrecognized authentication type"
    );

    for (binding_ok, expected) in [
        (true, "235 2.7.0 Authentication successful"),
        (false, "535 5.7.8 Authentication credentials invalid"),
    ] {
        let mut c = Client::connect(srv.addr).await;
        c.cmd("EHLO client.example").await;
        assert!(c.cmd("STARTTLS").await.starts_with("220"));
        let tls = tls_connect(client_tls.clone(), c.into_inner()).await;
        let exporter = tls
            .get_ref()
            .1
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap();
        let mut c = Client {
            io: tokio::io::BufReader::new(tls),
        };
        let ehlo = c.cmd("EHLO client.example").await;
        assert!(ehlo.contains("SCRAM-SHA-256-PLUS"), "{ehlo}");
        // A man in the middle would have a different TLS session, hence a different binding.
        let cb = if binding_ok { exporter } else { vec![0u8; 32] };
        let mut scram =
            ScramSha256Client::new("alice", "wonderland", None).with_channel_binding(cb);
        let first = scram.initial_response().unwrap();
        let r = c
            .cmd(&format!(
                "AUTH SCRAM-SHA-256-PLUS {}",
                b64(first.expose_secret())
            ))
            .await;
        let dec = |r: &str| STANDARD.decode(r.strip_prefix("334 ").unwrap()).unwrap();
        let fin = scram.respond(&dec(&r)).unwrap();
        let r = c.cmd(&b64(fin.expose_secret())).await;
        if binding_ok {
            let ack = scram.respond(&dec(&r)).unwrap();
            assert_eq!(c.cmd(&b64(ack.expose_secret())).await, expected);
        } else {
            assert_eq!(r, expected);
        }
    }
    srv.shutdown().await;
}
