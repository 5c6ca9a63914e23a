//! A credential cache for any [`AuthProvider`](crate::AuthProvider), as a tower
//! [`Layer`](tower_layer::Layer): Cyrus `saslauthd -c` and Dovecot's `auth_cache_*` for
//! this crate.
//!
//! A successful verification of (mechanism family, username, authzid, password) is remembered
//! as a keyed hash (HMAC-SHA-256 under a random per-process key held in a zeroizing
//! [`Secret`]), never the password itself; a later login with the same credentials is decided
//! from memory in microseconds instead of running the provider again (an argon2 hash, an HTTP
//! request).
//!
//! - Time to live: [`CacheConfig::ttl`] (default 1 hour).
//! - At most [`CacheConfig::max_entries`] entries (default 100,000); when full, expired entries
//!   go first, then the least recently used tenth.
//! - `Invalid` decisions are cached only with a [`CacheConfig::negative_ttl`] (default 0: off;
//!   a negative cache saves work on repeated wrong passwords but delays a password that was
//!   just set). `Failure` is never cached: a backend outage must not stick.
//! - A failed login for a user drops that user's cached successes;
//!   [`CredentialCache::invalidate_user`] and [`CredentialCache::clear`] are for reloads.
//! - Mechanism families: PLAIN and LOGIN share one (a password), XOAUTH2 and OAUTHBEARER
//!   another (a bearer token). EXTERNAL carries no credential and is never cached. SCRAM and
//!   CRAM-MD5 never reach a provider (they look up stored keys, which is already cheap), so the
//!   cache does not apply to them.
//! - Concurrent misses for the same credentials are coalesced: one request goes to the
//!   provider and the others wait for its decision (a phone that opens ten connections at
//!   once costs one hash, not ten).
//! - A hit is logged (`tracing`, field `cached = true`) with the user and mechanism, never the
//!   password.
//!
//! The clock is `std::time::Instant::now` unless [`CacheConfig::clock`] gives another (tests
//! use tokio's paused time).
//!
//! ```
//! use smtp_auth::{AuthDecision, CacheConfig, CredentialCache, MemoryProvider};
//! use tower_layer::Layer;
//!
//! let cache = CredentialCache::new(CacheConfig::default());
//! let provider = cache.layer().layer(MemoryProvider::new().with_user("alice", "wonderland"));
//! # let _ = provider;
//! assert_eq!(cache.len(), 0);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tower_service::Service;

use crate::decision::AuthDecision;
use crate::request::AuthRequest;
use crate::secret::Secret;

/// The cache's options.
#[derive(Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// How long a success is remembered (default 1 hour).
    pub ttl: Duration,
    /// How long an `Invalid` is remembered (default 0: not at all).
    pub negative_ttl: Duration,
    /// The most entries kept (default 100,000).
    pub max_entries: usize,
    /// The clock (default `Instant::now`).
    pub clock: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::ZERO,
            max_entries: 100_000,
            clock: Arc::new(Instant::now),
        }
    }
}

type Key = [u8; 32];

struct Entry {
    ok: bool,
    expires: Instant,
    user: Key,
    last_used: u64,
}

/// A provider call in progress that identical requests wait for.
#[derive(Default)]
struct Flight {
    /// `Some(Some(decision))` once decided, `Some(None)` when the call failed or was dropped
    /// (the waiters then ask the provider themselves).
    state: Mutex<(Option<Option<AuthDecision>>, Vec<std::task::Waker>)>,
}

impl Flight {
    fn finish(&self, result: Option<AuthDecision>) {
        let wakers = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0 = Some(result);
            std::mem::take(&mut st.1)
        };
        for w in wakers {
            w.wake();
        }
    }

    async fn wait(&self) -> Option<AuthDecision> {
        std::future::poll_fn(|cx| {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match st.0 {
                Some(r) => Poll::Ready(r),
                None => {
                    if !st.1.iter().any(|w| w.will_wake(cx.waker())) {
                        st.1.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// Ends a flight when the leader's call ends, however it ends (a dropped future included).
struct Lead {
    cache: CredentialCache,
    key: Key,
    flight: Arc<Flight>,
    result: Option<AuthDecision>,
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.cache.table().inflight.remove(&self.key);
        self.flight.finish(self.result);
    }
}

struct Table {
    inflight: HashMap<Key, Arc<Flight>>,
    entries: HashMap<Key, Entry>,
    by_user: HashMap<Key, Vec<Key>>,
    tick: u64,
    hits: u64,
    misses: u64,
}

struct Inner {
    config: CacheConfig,
    key: Secret<[u8; 32]>,
    table: Mutex<Table>,
}

/// The cache itself: a cheap handle (clones share the entries) for the layer, invalidation and
/// figures. `Debug` shows only counts.
#[derive(Clone)]
pub struct CredentialCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hits, misses) = self.stats();
        f.debug_struct("CredentialCache")
            .field("entries", &self.len())
            .field("hits", &hits)
            .field("misses", &misses)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// What a request is keyed under, `None` when it must not be cached.
fn family(mechanism: &str) -> Option<&'static [u8]> {
    match mechanism {
        "PLAIN" | "LOGIN" => Some(b"password"),
        "XOAUTH2" | "OAUTHBEARER" => Some(b"token"),
        "EXTERNAL" => None,
        _ => Some(b"other"),
    }
}

impl CredentialCache {
    /// An empty cache with a fresh random key.
    pub fn new(config: CacheConfig) -> Self {
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            // Without randomness the keyed hashes are still one-way; they are only less
            // unpredictable. Never fails on the platforms we build for.
            key = *b"smtp-auth credential cache key!!";
        }
        Self {
            inner: Arc::new(Inner {
                config,
                key: Secret::new(key),
                table: Mutex::new(Table {
                    inflight: HashMap::new(),
                    entries: HashMap::new(),
                    by_user: HashMap::new(),
                    tick: 0,
                    hits: 0,
                    misses: 0,
                }),
            }),
        }
    }

    /// The tower layer that puts this cache in front of a provider.
    pub fn layer(&self) -> CredentialCacheLayer {
        CredentialCacheLayer {
            cache: self.clone(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Key {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.inner.key.expose_secret())
            .expect("any key length");
        for p in parts {
            // Length-prefixed, so no two different tuples hash alike.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    fn user_key(&self, user: &str) -> Key {
        self.mac(&[b"user", user.as_bytes()])
    }

    fn request_key(&self, req: &AuthRequest) -> Option<Key> {
        let fam = family(&req.mechanism)?;
        Some(self.mac(&[
            b"cred",
            fam,
            req.username.as_bytes(),
            req.authzid.as_deref().unwrap_or("").as_bytes(),
            req.password.expose_secret().as_bytes(),
        ]))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Instant {
        (self.inner.config.clock)()
    }

    /// The cached decision for `key`, if any and still fresh.
    fn get(&self, key: &Key) -> Option<AuthDecision> {
        let now = self.now();
        let mut t = self.table();
        t.tick += 1;
        let tick = t.tick;
        let fresh = match t.entries.get_mut(key) {
            Some(e) if e.expires > now => {
                e.last_used = tick;
                Some(if e.ok {
                    AuthDecision::Ok
                } else {
                    AuthDecision::Invalid
                })
            }
            Some(_) => {
                remove(&mut t, key);
                None
            }
            None => None,
        };
        if fresh.is_some() {
            t.hits += 1;
        } else {
            t.misses += 1;
        }
        fresh
    }

    fn insert(&self, key: Key, user: Key, ok: bool, ttl: Duration) {
        let now = self.now();
        let max = self.inner.config.max_entries.max(1);
        let mut t = self.table();
        if !t.entries.contains_key(&key) && t.entries.len() >= max {
            let expired: Vec<Key> = t
                .entries
                .iter()
                .filter(|(_, e)| e.expires <= now)
                .map(|(k, _)| *k)
                .collect();
            for k in expired {
                remove(&mut t, &k);
            }
            if t.entries.len() >= max {
                // Still full: the least recently used tenth goes.
                let mut ticks: Vec<u64> = t.entries.values().map(|e| e.last_used).collect();
                let n = (max / 10).max(1).min(ticks.len() - 1);
                let (_, cut, _) = ticks.select_nth_unstable(n);
                let cut = *cut;
                let old: Vec<Key> = t
                    .entries
                    .iter()
                    .filter(|(_, e)| e.last_used <= cut)
                    .map(|(k, _)| *k)
                    .collect();
                for k in old {
                    remove(&mut t, &k);
                }
            }
        }
        t.tick += 1;
        let last_used = t.tick;
        if t.entries
            .insert(
                key,
                Entry {
                    ok,
                    expires: now + ttl,
                    user,
                    last_used,
                },
            )
            .is_none()
        {
            t.by_user.entry(user).or_default().push(key);
        }
    }

    /// Drops every entry of `user` (its password changed, its line was removed).
    pub fn invalidate_user(&self, user: &str) {
        let user = self.user_key(user);
        let mut t = self.table();
        if let Some(keys) = t.by_user.remove(&user) {
            for k in keys {
                t.entries.remove(&k);
            }
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut t = self.table();
        t.entries.clear();
        t.by_user.clear();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table().entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        let t = self.table();
        (t.hits, t.misses)
    }
}

fn remove(t: &mut Table, key: &Key) {
    if let Some(e) = t.entries.remove(key)
        && let Some(keys) = t.by_user.get_mut(&e.user)
    {
        keys.retain(|k| k != key);
        if keys.is_empty() {
            t.by_user.remove(&e.user);
        }
    }
}

/// The layer: wraps a provider in a [`Cached`] service.
#[derive(Clone, Debug)]
pub struct CredentialCacheLayer {
    cache: CredentialCache,
}

impl<S> tower_layer::Layer<S> for CredentialCacheLayer {
    type Service = Cached<S>;

    fn layer(&self, inner: S) -> Cached<S> {
        Cached {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// A provider behind the credential cache.
#[derive(Clone, Debug)]
pub struct Cached<S> {
    inner: S,
    cache: CredentialCache,
}

impl<S> Cached<S> {
    /// The cache (for invalidation and figures).
    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }
}

impl<S> Service<AuthRequest> for Cached<S>
where
    S: Service<AuthRequest, Response = AuthDecision> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = AuthDecision;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Readiness of the inner service is awaited only on a miss, inside the call, so a hit
        // never waits behind the provider's queue.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let cache = self.cache.clone();
        let key = cache.request_key(&req);
        if let Some(k) = &key
            && let Some(decision) = cache.get(k)
        {
            log_hit(&req, decision);
            return Box::pin(async move { Ok(decision) });
        }
        // A miss: join an identical call in progress, or lead one. The guard exists from here
        // on, so a leader dropped even before its first poll releases its waiters.
        let mut lead = None;
        let follow: Option<Arc<Flight>> = match key {
            Some(k) => {
                let mut t = cache.table();
                match t.inflight.get(&k) {
                    Some(f) => Some(f.clone()),
                    None => {
                        let f = Arc::new(Flight::default());
                        t.inflight.insert(k, f.clone());
                        lead = Some(Lead {
                            cache: cache.clone(),
                            key: k,
                            flight: f,
                            result: None,
                        });
                        None
                    }
                }
            }
            None => None,
        };
        let mut inner = self.inner.clone();
        Box::pin(async move {
            // A follower whose leader failed or went away asks the provider directly.
            if let Some(f) = follow
                && let Some(decision) = f.wait().await
            {
                log_hit(&req, decision);
                return Ok(decision);
            }
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let user = req.username.clone();
            let decision = inner.call(req).await?;
            let config = &cache.inner.config;
            match (decision, key) {
                (AuthDecision::Ok, Some(k)) => {
                    let u = cache.user_key(&user);
                    cache.insert(k, u, true, config.ttl);
                }
                (AuthDecision::Invalid, k) => {
                    // A failed login drops the user's cached successes (its password may
                    // have changed elsewhere; an attacker may be guessing).
                    cache.invalidate_user(&user);
                    if let Some(k) = k
                        && !config.negative_ttl.is_zero()
                    {
                        let u = cache.user_key(&user);
                        cache.insert(k, u, false, config.negative_ttl);
                    }
                }
                // Failure (an outage) is never cached.
                _ => {}
            }
            if let Some(mut lead) = lead {
                // Waiters asked the same thing at the same moment: they get this answer.
                lead.result = Some(decision);
            }
            Ok(decision)
        })
    }
}

fn log_hit(req: &AuthRequest, decision: AuthDecision) {
    tracing::info!(
        user = %req.username,
        mechanism = %req.mechanism,
        decision = %decision,
        cached = true,
        "credential decided from the cache"
    );
}
