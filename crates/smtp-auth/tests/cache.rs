//! The credential cache layer: hit, miss, TTL expiry (paused tokio time), eviction,
//! invalidation, negative caching, `Failure` never cached, nothing secret in `Debug`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use smtp_auth::{
    AuthDecision, AuthRequest, CacheConfig, CredentialCache, Password, SessionInfo, provider_fn,
};
use tower_layer::Layer;
use tower_service::Service;

fn req(mechanism: &str, user: &str, password: &str) -> AuthRequest {
    AuthRequest::new(
        &SessionInfo::default(),
        mechanism,
        user.into(),
        Password::new(password.into()),
        None,
    )
}

/// A provider that counts its calls: `right` is Ok, `down` is Failure, anything else Invalid.
fn counting() -> (
    Arc<AtomicUsize>,
    impl Service<AuthRequest, Response = AuthDecision, Error = std::convert::Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let p = provider_fn(move |r: AuthRequest| {
        c.fetch_add(1, Ordering::SeqCst);
        let d = match r.password.expose_secret().as_str() {
            "right" => AuthDecision::Ok,
            "down" => AuthDecision::Failure,
            _ => AuthDecision::Invalid,
        };
        async move { d }
    });
    (calls, p)
}

fn paused_clock(mut config: CacheConfig) -> CacheConfig {
    config.clock = Arc::new(|| tokio::time::Instant::now().into_std());
    config
}

/// The default configuration with one change (`CacheConfig` is `#[non_exhaustive]`).
fn with(change: impl FnOnce(&mut CacheConfig)) -> CacheConfig {
    let mut config = CacheConfig::default();
    change(&mut config);
    config
}

async fn ask<S>(svc: &mut S, r: AuthRequest) -> AuthDecision
where
    S: Service<AuthRequest, Response = AuthDecision>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(r).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn hit_miss_and_ttl_expiry() {
    let (calls, p) = counting();
    let cache = CredentialCache::new(paused_clock(with(|c| c.ttl = Duration::from_secs(60))));
    let mut svc = cache.layer().layer(p);
    assert_eq!(
        ask(&mut svc, req("PLAIN", "alice", "right")).await,
        AuthDecision::Ok
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // LOGIN is the same family as PLAIN: a hit.
    assert_eq!(
        ask(&mut svc, req("LOGIN", "alice", "right")).await,
        AuthDecision::Ok
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats(), (1, 1));
    // Another password, another user, another family: misses.
    ask(&mut svc, req("PLAIN", "alice", "Right")).await;
    ask(&mut svc, req("PLAIN", "bob", "right")).await;
    ask(&mut svc, req("XOAUTH2", "alice", "right")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Past the TTL the provider is asked again.
    tokio::time::advance(Duration::from_secs(59)).await;
    ask(&mut svc, req("PLAIN", "bob", "right")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    tokio::time::advance(Duration::from_secs(2)).await;
    ask(&mut svc, req("PLAIN", "bob", "right")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_failed_login_drops_the_users_cached_success() {
    let (calls, p) = counting();
    let cache = CredentialCache::new(CacheConfig::default());
    let mut svc = cache.layer().layer(p);
    ask(&mut svc, req("PLAIN", "alice", "right")).await;
    ask(&mut svc, req("PLAIN", "bob", "right")).await;
    assert_eq!(cache.len(), 2);
    assert_eq!(
        ask(&mut svc, req("PLAIN", "alice", "guess")).await,
        AuthDecision::Invalid
    );
    assert_eq!(cache.len(), 1, "alice's success is gone, bob's stays");
    ask(&mut svc, req("PLAIN", "alice", "right")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "alice verified again");
    // Reload-style invalidation.
    cache.invalidate_user("bob");
    ask(&mut svc, req("PLAIN", "bob", "right")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    cache.clear();
    assert!(cache.is_empty());
}

#[tokio::test]
async fn failure_is_never_cached_and_invalid_only_with_a_negative_ttl() {
    let (calls, p) = counting();
    let cache = CredentialCache::new(CacheConfig::default());
    let mut svc = cache.layer().layer(p.clone());
    for _ in 0..3 {
        assert_eq!(
            ask(&mut svc, req("PLAIN", "alice", "down")).await,
            AuthDecision::Failure
        );
        ask(&mut svc, req("PLAIN", "alice", "wrong")).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert!(cache.is_empty());

    let (calls, p) = counting();
    let cache = CredentialCache::new(with(|c| c.negative_ttl = Duration::from_secs(30)));
    let mut svc = cache.layer().layer(p);
    for _ in 0..3 {
        assert_eq!(
            ask(&mut svc, req("PLAIN", "alice", "wrong")).await,
            AuthDecision::Invalid
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn external_is_never_cached() {
    let (calls, p) = counting();
    let cache = CredentialCache::new(CacheConfig::default());
    let mut svc = cache.layer().layer(p);
    ask(&mut svc, req("EXTERNAL", "alice", "right")).await;
    ask(&mut svc, req("EXTERNAL", "alice", "right")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn eviction_keeps_the_table_bounded_and_recent_entries() {
    let (calls, p) = counting();
    let cache = CredentialCache::new(with(|c| c.max_entries = 50));
    let mut svc = cache.layer().layer(p);
    for i in 0..500 {
        ask(&mut svc, req("PLAIN", &format!("user{i}"), "right")).await;
        // user0 stays in use, so it is not the least recently used.
        ask(&mut svc, req("PLAIN", "user0", "right")).await;
    }
    assert!(cache.len() <= 50, "{}", cache.len());
    let before = calls.load(Ordering::SeqCst);
    ask(&mut svc, req("PLAIN", "user0", "right")).await;
    ask(&mut svc, req("PLAIN", "user499", "right")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "recent entries survived"
    );
    ask(&mut svc, req("PLAIN", "user1", "right")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 1,
        "an old one was evicted"
    );
}

#[test]
fn debug_shows_no_credentials() {
    let cache = CredentialCache::new(CacheConfig::default());
    let d = format!("{cache:?} {:?}", cache.layer());
    assert!(d.contains("entries") && !d.contains("key"), "{d}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_misses_cost_one_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let slow = provider_fn(move |r: AuthRequest| {
        c.fetch_add(1, Ordering::SeqCst);
        let ok = r.password.expose_secret() == "right";
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if ok {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            }
        }
    });
    let cache = CredentialCache::new(CacheConfig::default());
    let svc = cache.layer().layer(slow);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            ask(&mut svc, req("PLAIN", "alice", "right")).await
        }));
    }
    // Another credential is not coalesced with them.
    let mut other = svc.clone();
    let wrong = tokio::spawn(async move { ask(&mut other, req("PLAIN", "alice", "wrong")).await });
    for t in tasks {
        assert_eq!(t.await.unwrap(), AuthDecision::Ok);
    }
    assert_eq!(wrong.await.unwrap(), AuthDecision::Invalid);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A leader dropped mid-call releases its waiters, who then ask themselves.
    let mut leader = svc.clone();
    let l = tokio::spawn(async move { ask(&mut leader, req("PLAIN", "bob", "right")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut follower = svc.clone();
    let f = tokio::spawn(async move { ask(&mut follower, req("PLAIN", "bob", "right")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    l.abort();
    assert_eq!(f.await.unwrap(), AuthDecision::Ok);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "leader's call (dropped) and the follower's own"
    );
}
