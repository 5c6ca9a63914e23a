//! The authenticator (aiosmtpd's `authenticator` callback) and its adapter from any
//! [`AuthProvider`](smtp_auth::AuthProvider), plus the per-IP failure limiter.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smtp_auth::{AuthDecision, AuthRequest, LookupRequest, LookupResult, Verdict};
use tower_service::Service;

use crate::session::Session;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decides credentials for the built-in mechanisms, with read-only session facts, the
/// mechanism (in `request.mechanism`) and its credentials (aiosmtpd's `authenticator`). It
/// returns a [`Verdict`]: the decision, plus a reply line of its own or `auth_data` to keep
/// on the session, which apply when the exchange ends as it decided. It never changes the
/// session itself.
pub trait Authenticator: Send + Sync + 'static {
    /// Decides a credential check.
    fn authenticate(&self, session: &Session, request: AuthRequest) -> BoxFuture<Verdict>;

    /// Looks up a stored secret for CRAM-MD5 and SCRAM-SHA-256. The default knows no one.
    fn lookup(&self, session: &Session, request: LookupRequest) -> BoxFuture<LookupResult> {
        let _ = (session, request);
        Box::pin(async { LookupResult::NotFound })
    }
}

type LookupFn = Arc<dyn Fn(LookupRequest) -> BoxFuture<LookupResult> + Send + Sync>;

/// An [`Authenticator`] from an `AuthProvider` service: `Ok` → success, `Invalid` →
/// 535 5.7.8, `Failure` or a service error → 454 4.7.0.
#[derive(Clone)]
pub struct ProviderAuthenticator<P> {
    provider: P,
    secrets: Option<LookupFn>,
}

impl<P> std::fmt::Debug for ProviderAuthenticator<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderAuthenticator")
            .field("secrets", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl<P> ProviderAuthenticator<P> {
    /// Wraps a provider.
    pub fn new(provider: P) -> Self {
        Self {
            provider,
            secrets: None,
        }
    }

    /// Adds a secret store (a `SecretProvider` service) for CRAM-MD5 and SCRAM-SHA-256.
    pub fn with_secrets<S>(mut self, secrets: S) -> Self
    where
        S: Service<LookupRequest, Response = LookupResult> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Send,
    {
        self.secrets = Some(Arc::new(move |req| {
            let mut svc = secrets.clone();
            Box::pin(async move {
                if poll_fn(|cx| svc.poll_ready(cx)).await.is_err() {
                    return LookupResult::Failure;
                }
                svc.call(req).await.unwrap_or(LookupResult::Failure)
            })
        }));
        self
    }
}

impl<P> Authenticator for ProviderAuthenticator<P>
where
    P: Service<AuthRequest, Response = AuthDecision> + Clone + Send + Sync + 'static,
    P::Future: Send,
    P::Error: Send,
{
    fn authenticate(&self, _session: &Session, request: AuthRequest) -> BoxFuture<Verdict> {
        let mut svc = self.provider.clone();
        Box::pin(async move {
            if poll_fn(|cx| svc.poll_ready(cx)).await.is_err() {
                return AuthDecision::Failure.into();
            }
            // The decision alone: the exchange records the identity it authenticated.
            svc.call(request)
                .await
                .unwrap_or(AuthDecision::Failure)
                .into()
        })
    }

    fn lookup(&self, _session: &Session, request: LookupRequest) -> BoxFuture<LookupResult> {
        match &self.secrets {
            Some(f) => f(request),
            None => Box::pin(async { LookupResult::NotFound }),
        }
    }
}

/// Failed AUTH attempts counted per remote IP and per attempted user, across connections and
/// across listeners: create one with [`AuthLimiter::new`] and hand the same `Arc` to every
/// [`Server`](crate::Server) of the process with [`Server::limiter`](crate::Server::limiter).
///
/// - An IP with `per_ip` failures within `window` gets 421 4.7.0 on its next AUTH.
/// - A user with `per_user` failures within `window`, from any address, gets 454 4.7.0 on
///   every further attempt until the window passes, without the credential being checked
///   (credential stuffing from many addresses). Unknown users are counted the same way, so a
///   lock says nothing about whether the user exists.
///
/// Both tables are bounded (`capacity` entries each, default 100,000): when one is full the
/// expired entries go first, then the oldest tenth, so a flood of addresses or names costs a
/// bounded amount of memory.
///
/// The limiter is one process's view. To share failures with other instances (a fleet behind
/// a load balancer), give it a [`FailureListener`] with [`AuthLimiter::with_listener`] that
/// publishes each failure, and check the shared counts where a wait is allowed: an
/// [`Authenticator`] answering [`AuthDecision::Locked`] (or `LookupResult::Locked`) before it
/// checks a credential. `smtpd` does this with Redis.
pub struct AuthLimiter {
    per_ip: u32,
    per_user: u32,
    window: Duration,
    ips: Mutex<Bounded<IpAddr>>,
    users: Mutex<Bounded<String>>,
    listener: Option<Arc<dyn FailureListener>>,
}

impl std::fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLimiter")
            .field("per_ip", &self.per_ip)
            .field("per_user", &self.per_user)
            .field("window", &self.window)
            .field("tracked", &self.tracked())
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

/// Told of every failure an [`AuthLimiter`] counts, with the keys it counts under: the address
/// as [`address_key`] folds it (an IPv6 /64) and the user as [`user_key`] folds it (`None` when
/// no credential for a named user was refused). Called on the session's path while it holds
/// no lock: hand the work to a task rather than block.
pub trait FailureListener: Send + Sync + 'static {
    /// One failure was counted.
    fn failure(&self, ip: IpAddr, user: Option<&str>);
}

/// Default table size of [`AuthLimiter`].
pub const DEFAULT_LIMITER_CAPACITY: usize = 100_000;

/// The longest user name kept as a key (longer names are cut; they cannot be real logins).
const MAX_USER_KEY: usize = 256;

#[derive(Debug)]
struct Bounded<K> {
    capacity: usize,
    map: HashMap<K, (u32, Instant)>,
}

impl<K: std::hash::Hash + Eq + Clone> Bounded<K> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: HashMap::new(),
        }
    }

    fn count(&self, key: &K, window: Duration, now: Instant) -> u32 {
        match self.map.get(key) {
            Some((n, since)) if now.saturating_duration_since(*since) < window => *n,
            _ => 0,
        }
    }

    fn record(&mut self, key: K, window: Duration, now: Instant) {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.map
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
            if self.map.len() >= self.capacity {
                // Still full of live entries: drop the oldest tenth.
                let mut starts: Vec<Instant> = self.map.values().map(|(_, s)| *s).collect();
                let k = (self.capacity / 10).max(1).min(starts.len() - 1);
                let (_, cut, _) = starts.select_nth_unstable(k);
                let cut = *cut;
                self.map.retain(|_, (_, since)| *since > cut);
            }
        }
        let e = self.map.entry(key).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= window {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The key of every per-address limit: an IPv4 address as is (also when it arrives
/// IPv4-mapped), an IPv6 address by its /64, since one host or customer usually holds a whole
/// /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(o))
            }
        },
    }
}

/// The key a user is counted under: the name lowercased and cut to 256 bytes (longer names
/// cannot be real logins).
pub fn user_key(user: &str) -> String {
    let mut end = user.len().min(MAX_USER_KEY);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_lowercase()
}

impl AuthLimiter {
    /// A limiter: `per_ip` failures per address and `per_user` failures per user within
    /// `window` (0 turns a limit off).
    pub fn new(per_ip: u32, per_user: u32, window: Duration) -> Self {
        Self::with_capacity(per_ip, per_user, window, DEFAULT_LIMITER_CAPACITY)
    }

    /// The same with at most `capacity` addresses and `capacity` users tracked.
    pub fn with_capacity(per_ip: u32, per_user: u32, window: Duration, capacity: usize) -> Self {
        Self {
            per_ip,
            per_user,
            window,
            ips: Mutex::new(Bounded::new(capacity)),
            users: Mutex::new(Bounded::new(capacity)),
            listener: None,
        }
    }

    /// Tells `listener` of every failure counted from now on.
    pub fn with_listener(mut self, listener: Arc<dyn FailureListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The limits: (failures per address, failures per user, window). 0 means no limit.
    pub fn limits(&self) -> (u32, u32, Duration) {
        (self.per_ip, self.per_user, self.window)
    }

    /// True when `ip` has reached its limit at `now` (the limiter reads no clock: the session
    /// machine passes its own time, so paused and simulated time apply).
    pub fn ip_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        self.per_ip > 0 && map.count(&address_key(ip), self.window, now) >= self.per_ip
    }

    /// True when `user` has reached its limit at `now`.
    pub fn user_locked(&self, user: &str, now: Instant) -> bool {
        let map = self.users.lock().unwrap_or_else(|p| p.into_inner());
        self.per_user > 0 && map.count(&user_key(user), self.window, now) >= self.per_user
    }

    /// Records one failure from `ip` at `now`, for `user` when a credential for that user was
    /// refused.
    pub fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: Instant) {
        let ip = address_key(ip);
        if self.per_ip > 0 {
            let mut map = self.ips.lock().unwrap_or_else(|p| p.into_inner());
            map.record(ip, self.window, now);
        }
        let user = user.filter(|_| self.per_user > 0).map(user_key);
        if let Some(user) = &user {
            let mut map = self.users.lock().unwrap_or_else(|p| p.into_inner());
            map.record(user.clone(), self.window, now);
        }
        if let Some(l) = &self.listener {
            l.failure(ip, user.as_deref());
        }
    }

    /// Entries held: (addresses, users). For tests and metrics.
    pub fn tracked(&self) -> (usize, usize) {
        let ips = self.ips.lock().unwrap_or_else(|p| p.into_inner()).len();
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner()).len();
        (ips, users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_per_user_limits() {
        let t = Instant::now();
        let l = AuthLimiter::new(3, 2, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        l.record_failure(a, Some("Alice"), t);
        assert!(!l.user_locked("alice", t));
        l.record_failure(b, Some("alice"), t);
        assert!(
            l.user_locked("ALICE", t),
            "counted across addresses, case-insensitively"
        );
        assert!(!l.user_locked("bob", t));
        l.record_failure(a, None, t);
        assert!(!l.ip_blocked(a, t), "2 of 3");
        l.record_failure(a, None, t);
        assert!(!l.ip_blocked(b, t));
        assert!(l.ip_blocked(a, t));
    }

    #[test]
    fn tables_stay_bounded_and_keep_recent_entries() {
        let t = Instant::now();
        let l = AuthLimiter::with_capacity(2, 2, Duration::from_secs(60), 100);
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            l.record_failure(ip, Some(&format!("user{i}")), t);
        }
        let (ips, users) = l.tracked();
        assert!(ips <= 100 && users <= 100, "{ips} {users}");
        // The newest entry survived the evictions and still counts.
        let last = IpAddr::from(999u32.to_be_bytes());
        l.record_failure(last, Some("user999"), t);
        assert!(l.ip_blocked(last, t));
        assert!(l.user_locked("user999", t));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let t = Instant::now();
        let l = AuthLimiter::new(2, 0, Duration::from_secs(60));
        l.record_failure("2001:db8:1:2::10".parse().unwrap(), None, t);
        l.record_failure("2001:db8:1:2:ffff::99".parse().unwrap(), None, t);
        assert!(
            l.ip_blocked("2001:db8:1:2::1".parse().unwrap(), t),
            "same /64"
        );
        assert!(
            !l.ip_blocked("2001:db8:1:3::1".parse().unwrap(), t),
            "another /64"
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_listener_hears_each_counted_failure_under_its_keys() {
        let t = Instant::now();
        #[derive(Default)]
        struct Heard(Mutex<Vec<(IpAddr, Option<String>)>>);
        impl FailureListener for Heard {
            fn failure(&self, ip: IpAddr, user: Option<&str>) {
                self.0.lock().unwrap().push((ip, user.map(str::to_owned)));
            }
        }
        let heard = Arc::new(Heard::default());
        let l = AuthLimiter::new(3, 2, Duration::from_secs(60)).with_listener(heard.clone());
        let v6: IpAddr = "2001:db8::1:2:3:4".parse().unwrap();
        l.record_failure(v6, Some("Alice"), t);
        l.record_failure("192.0.2.1".parse().unwrap(), None, t);
        let got = heard.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                ("2001:db8::".parse().unwrap(), Some("alice".to_owned())),
                ("192.0.2.1".parse().unwrap(), None),
            ]
        );
        assert!(!l.user_locked("ALICE", t));
        l.record_failure(v6, Some("alice"), t);
        assert!(l.user_locked("ALICE", t));
        assert!(format!("{l:?}").contains("listener: true"));
    }

    #[test]
    fn the_limiter_reads_no_clock_the_window_passes_with_the_time_given() {
        let t = Instant::now();
        let l = AuthLimiter::new(1, 1, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        l.record_failure(a, Some("ann"), t);
        assert!(l.ip_blocked(a, t) && l.user_locked("ann", t));
        let later = t + Duration::from_secs(59);
        assert!(l.ip_blocked(a, later) && l.user_locked("ann", later));
        let after = t + Duration::from_secs(60);
        assert!(!l.ip_blocked(a, after) && !l.user_locked("ann", after));
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let t = Instant::now();
        let l = AuthLimiter::new(0, 0, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            l.record_failure(a, Some("x"), t);
        }
        assert!(!l.ip_blocked(a, t) && !l.user_locked("x", t));
        assert_eq!(l.tracked(), (0, 0));
    }
}
