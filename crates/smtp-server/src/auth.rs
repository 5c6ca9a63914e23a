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
/// - An IP with `per_ip` failures within `window` is locked: it gets 421 4.7.0 on its next
///   AUTH.
/// - A user with `per_user` failures within `window`, from any address, is locked: it gets
///   454 4.7.0 on every further attempt, without the credential being checked (credential
///   stuffing from many addresses). Unknown users are counted the same way, so a lock says
///   nothing about whether the user exists.
///
/// A lock lasts `window` from the failure that reached the limit. Locks escalate: an address or
/// user locked again within `max_lock` of its last lock's end gets twice the previous lock
/// (`window`, 2×, 4×, …), never more than `max_lock` (default 24 hours,
/// [`AuthLimiter::with_max_lock`]; set it to `window` to turn escalation off). A key that stays
/// unlocked for `max_lock` after its last lock is forgotten.
///
/// Both tables are bounded (`capacity` entries each, default 100,000). When one is full, the
/// entries that are over go first, then the oldest tenth of the unlocked ones (those with no
/// failure in the window before those still counting). An active lock is never dropped to make
/// room: when only locks remain, a key the table does not hold is refused as if locked until
/// the earliest lock ends ([`AuthLimiter::saturated`]), rather than forgetting a lock and
/// handing that account more guesses.
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
    max_lock: Duration,
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
            .field("max_lock", &self.max_lock)
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

/// Default ceiling of an escalated lock ([`AuthLimiter::with_max_lock`]): 24 hours.
pub const DEFAULT_MAX_LOCK: Duration = Duration::from_secs(24 * 3600);

/// The longest user name kept as a key (longer names are cut; they cannot be real logins).
const MAX_USER_KEY: usize = 256;

/// What the limiter remembers of one address or user.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures counted since `since`.
    count: u32,
    /// The first failure of the current window.
    since: Instant,
    /// The end of the latest lock (past or still running).
    lock_end: Option<Instant>,
    /// Locks in a row, each begun within `max_lock` of the previous one's end.
    strikes: u32,
}

/// The limits one table applies.
#[derive(Debug, Clone, Copy)]
struct Rules {
    limit: u32,
    window: Duration,
    max_lock: Duration,
}

impl Rules {
    /// How long the lock after `strikes` earlier ones lasts: `window` doubled per strike, at
    /// most `max_lock` (and never less than `window`).
    fn lock_for(&self, strikes: u32) -> Duration {
        let doubled = self
            .window
            .checked_mul(1u32.checked_shl(strikes.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX);
        doubled.min(self.max_lock).max(self.window)
    }
}

impl Entry {
    fn locked(&self, now: Instant) -> bool {
        self.lock_end.is_some_and(|end| now < end)
    }

    /// Nothing left to remember: no lock running, no failure in the window, and the last
    /// lock's end longer ago than `max_lock`.
    fn over(&self, rules: &Rules, now: Instant) -> bool {
        !self.locked(now)
            && now.saturating_duration_since(self.since) >= rules.window
            && self
                .lock_end
                .is_none_or(|end| now.saturating_duration_since(end) >= rules.max_lock)
    }
}

#[derive(Debug)]
struct Bounded<K> {
    capacity: usize,
    map: HashMap<K, Entry>,
    /// While the table holds nothing but running locks: the end of the earliest one. Until
    /// then a key the table does not hold is refused.
    saturated_until: Option<Instant>,
}

impl<K: std::hash::Hash + Eq + Clone> Bounded<K> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: HashMap::new(),
            saturated_until: None,
        }
    }

    fn saturated(&self, now: Instant) -> bool {
        self.saturated_until.is_some_and(|until| now < until)
    }

    fn locked(&self, key: &K, now: Instant) -> bool {
        match self.map.get(key) {
            Some(e) => e.locked(now),
            None => self.saturated(now),
        }
    }

    /// Counts one failure for `key`; true when it locked the key (or the key could not be
    /// counted because the table is full of locks).
    fn record(&mut self, key: K, rules: &Rules, now: Instant) -> bool {
        if !self.map.contains_key(&key)
            && self.map.len() >= self.capacity
            && !self.make_room(rules, now)
        {
            return true;
        }
        let e = self.map.entry(key).or_insert(Entry {
            count: 0,
            since: now,
            lock_end: None,
            strikes: 0,
        });
        if e.locked(now) {
            // Failures while locked (a lock read from another instance) add nothing.
            return false;
        }
        if now.saturating_duration_since(e.since) >= rules.window {
            e.count = 0;
            e.since = now;
        }
        e.count = e.count.saturating_add(1);
        if e.count < rules.limit {
            return false;
        }
        // The limit is reached: a lock, longer when the last one ended not long ago.
        let recent = e
            .lock_end
            .is_some_and(|end| now.saturating_duration_since(end) < rules.max_lock);
        let strikes = if recent { e.strikes } else { 0 };
        e.lock_end = Some(now + rules.lock_for(strikes));
        e.strikes = strikes.saturating_add(1);
        e.count = 0;
        e.since = now;
        true
    }

    /// Frees at least one entry without dropping a running lock; false (and the table marked
    /// saturated) when every entry is one.
    fn make_room(&mut self, rules: &Rules, now: Instant) -> bool {
        if self.saturated(now) {
            return false;
        }
        self.map.retain(|_, e| !e.over(rules, now));
        if self.map.len() < self.capacity {
            self.saturated_until = None;
            return true;
        }
        // Still full: drop the oldest tenth of the unlocked entries, those with no failure
        // in the window (kept only to escalate a later lock) first.
        let mut unlocked: Vec<(bool, Instant, K)> = self
            .map
            .iter()
            .filter(|(_, e)| !e.locked(now))
            .map(|(k, e)| {
                let counting = now.saturating_duration_since(e.since) < rules.window;
                (counting, e.since, k.clone())
            })
            .collect();
        if unlocked.is_empty() {
            let earliest = self.map.values().filter_map(|e| e.lock_end).min();
            self.saturated_until = earliest;
            return false;
        }
        let k = (self.capacity / 10).clamp(1, unlocked.len());
        if k < unlocked.len() {
            unlocked.select_nth_unstable_by(k, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        }
        for (_, _, key) in unlocked.drain(..k) {
            self.map.remove(&key);
        }
        self.saturated_until = None;
        true
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
            max_lock: DEFAULT_MAX_LOCK.max(window),
            ips: Mutex::new(Bounded::new(capacity)),
            users: Mutex::new(Bounded::new(capacity)),
            listener: None,
        }
    }

    /// The limiter `options` describe (`max_auth_failures_per_ip`, `max_auth_failures_per_user`,
    /// `auth_failure_window`, `max_auth_lock`): what a configuration builds when it is given
    /// none, and what an application that shares one limiter among its servers builds once.
    pub fn from_options(options: &crate::ServerOptions) -> Self {
        Self::new(
            options.max_auth_failures_per_ip,
            options.max_auth_failures_per_user,
            options.auth_failure_window,
        )
        .with_max_lock(options.max_auth_lock)
    }

    /// Sets the ceiling of escalated locks (at least `window`; `window` itself turns
    /// escalation off).
    pub fn with_max_lock(mut self, max_lock: Duration) -> Self {
        self.max_lock = max_lock.max(self.window);
        self
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

    /// The ceiling of an escalated lock.
    pub fn max_lock(&self) -> Duration {
        self.max_lock
    }

    fn rules(&self, limit: u32) -> Rules {
        Rules {
            limit,
            window: self.window,
            max_lock: self.max_lock,
        }
    }

    /// True when `ip` is locked at `now` (the limiter reads no clock: the session machine
    /// passes its own time, so paused and simulated time apply).
    pub fn ip_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_ip == 0 {
            return false;
        }
        let map = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        map.locked(&address_key(ip), now)
    }

    /// True when `user` is locked at `now`.
    pub fn user_locked(&self, user: &str, now: Instant) -> bool {
        if self.per_user == 0 {
            return false;
        }
        let map = self.users.lock().unwrap_or_else(|p| p.into_inner());
        map.locked(&user_key(user), now)
    }

    /// Records one failure from `ip` at `now`, for `user` when a credential for that user was
    /// refused.
    pub fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: Instant) {
        let ip = address_key(ip);
        if self.per_ip > 0 {
            let mut map = self.ips.lock().unwrap_or_else(|p| p.into_inner());
            let was = map.saturated(now);
            map.record(ip, &self.rules(self.per_ip), now);
            if !was && map.saturated(now) {
                tracing::warn!(target: "smtp_server::limiter", entries = map.len(), "AUTH limiter: the address table holds only locks; addresses it does not hold are refused until a lock ends");
            }
        }
        let user = user.filter(|_| self.per_user > 0).map(user_key);
        if let Some(user) = &user {
            let mut map = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let was = map.saturated(now);
            map.record(user.clone(), &self.rules(self.per_user), now);
            if !was && map.saturated(now) {
                tracing::warn!(target: "smtp_server::limiter", entries = map.len(), "AUTH limiter: the user table holds only locks; users it does not hold are refused until a lock ends");
            }
        }
        if let Some(l) = &self.listener {
            l.failure(ip, user.as_deref());
        }
    }

    /// Whether the (address, user) table holds only running locks at `now`, so that keys it
    /// does not hold are refused.
    pub fn saturated(&self, now: Instant) -> (bool, bool) {
        let ips = self
            .ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturated(now);
        let users = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturated(now);
        (ips, users)
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
    fn a_lock_soon_after_the_last_one_lasts_twice_as_long_up_to_the_ceiling() {
        let t = Instant::now();
        let w = Duration::from_secs(60);
        let l = AuthLimiter::new(2, 2, w).with_max_lock(Duration::from_secs(300));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let fail = |at: Instant| l.record_failure(a, Some("ann"), at);
        let locked = |at: Instant| (l.ip_blocked(a, at), l.user_locked("ann", at));
        // First lock: one window from the failure that reached the limit.
        fail(t);
        fail(t + Duration::from_secs(10));
        assert_eq!(locked(t + Duration::from_secs(69)), (true, true));
        assert_eq!(locked(t + Duration::from_secs(70)), (false, false));
        // Locked again soon after: 120 s.
        let second = t + Duration::from_secs(80);
        fail(second);
        fail(second);
        assert_eq!(locked(second + Duration::from_secs(119)), (true, true));
        assert_eq!(locked(second + Duration::from_secs(120)), (false, false));
        // And again: 240 s, then the ceiling of 300 s.
        let third = second + Duration::from_secs(121);
        fail(third);
        fail(third);
        assert_eq!(locked(third + Duration::from_secs(239)), (true, true));
        assert_eq!(locked(third + Duration::from_secs(240)), (false, false));
        let fourth = third + Duration::from_secs(241);
        fail(fourth);
        fail(fourth);
        assert_eq!(locked(fourth + Duration::from_secs(299)), (true, true));
        assert_eq!(locked(fourth + Duration::from_secs(300)), (false, false));
        // Quiet for longer than the ceiling after a lock: forgotten, one window again.
        let much_later = fourth + Duration::from_secs(300 + 301);
        fail(much_later);
        fail(much_later);
        assert_eq!(locked(much_later + Duration::from_secs(59)), (true, true));
        assert_eq!(locked(much_later + Duration::from_secs(60)), (false, false));
        // The ceiling never shortens a lock below the window; window = ceiling turns
        // escalation off.
        let flat = AuthLimiter::new(1, 0, w).with_max_lock(Duration::from_secs(1));
        assert_eq!(flat.max_lock(), w);
        flat.record_failure(a, None, t);
        flat.record_failure(a, None, t + w);
        assert!(flat.ip_blocked(a, t + w + Duration::from_secs(59)));
        assert!(!flat.ip_blocked(a, t + w + w));
    }

    #[test]
    fn more_failing_names_than_the_table_holds_never_free_a_lock() {
        let t = Instant::now();
        let l = AuthLimiter::with_capacity(0, 3, Duration::from_secs(600), 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            l.record_failure(a, Some("victim"), t);
        }
        assert!(l.user_locked("victim", t));
        // Ten times as many distinct failing names as the table holds.
        for i in 0..1000u32 {
            l.record_failure(a, Some(&format!("spray{i}")), t + Duration::from_secs(1));
        }
        let (_, users) = l.tracked();
        assert!(users <= 100, "{users}");
        assert!(
            l.user_locked("victim", t + Duration::from_secs(2)),
            "the lock outlived the flood"
        );
        assert_eq!(l.saturated(t + Duration::from_secs(2)), (false, false));
    }

    #[test]
    fn a_table_of_locks_only_refuses_new_keys_until_a_lock_ends() {
        let t = Instant::now();
        let w = Duration::from_secs(60);
        let l = AuthLimiter::with_capacity(1, 1, w, 10);
        for i in 0..10u32 {
            let ip = IpAddr::from((0xc000_0200 + i).to_be_bytes());
            l.record_failure(
                ip,
                Some(&format!("user{i}")),
                t + Duration::from_secs(u64::from(i)),
            );
        }
        let fresh: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(
            !l.ip_blocked(fresh, t + Duration::from_secs(10)),
            "not full yet"
        );
        // The eleventh cannot be held without forgetting a lock: it is refused instead.
        l.record_failure(fresh, Some("newcomer"), t + Duration::from_secs(10));
        assert_eq!(l.tracked(), (10, 10));
        assert_eq!(l.saturated(t + Duration::from_secs(10)), (true, true));
        assert!(l.ip_blocked(fresh, t + Duration::from_secs(10)));
        assert!(l.user_locked("someone-else", t + Duration::from_secs(10)));
        for i in 0..10u32 {
            let ip = IpAddr::from((0xc000_0200 + i).to_be_bytes());
            assert!(l.ip_blocked(ip, t + Duration::from_secs(10)));
            assert!(l.user_locked(&format!("user{i}"), t + Duration::from_secs(10)));
        }
        // The earliest lock ends at 60 s: from then on a newcomer is counted again.
        let later = t + Duration::from_secs(60);
        assert_eq!(l.saturated(later), (false, false));
        assert!(!l.user_locked("someone-else", later));
        l.record_failure(fresh, Some("newcomer"), later);
        assert!(l.user_locked("newcomer", later), "counted: limit 1");
        assert!(l.user_locked("user9", later), "the later locks still hold");
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
