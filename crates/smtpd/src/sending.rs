//! `[rate_limits]`: sending limits that contain a stolen account. Per authenticated login,
//! `messages_per_hour` and `recipients_per_hour`; per client address (an IPv6 /64) for
//! sessions that did not log in, `ip_messages_per_hour`. Each `0` turns it off; an `overrides`
//! file (`login: messages, recipients` lines, reloaded on SIGHUP) sets a login's own budget.
//!
//! What counts is what was accepted: a message and its recipients count when its end of
//! DATA was answered 250. A MAIL past the message budget gets `450 4.7.1` and a RCPT past the
//! recipient budget `452 4.5.3`, each naming the limit; each refusal is logged (target
//! `smtpd::rate_limit`) and counted in `smtpd_policy_refusals_total{reason}`.
//!
//! Counts are fixed windows of an hour from the first accepted message. Each instance keeps
//! its own (bounded tables: [`MAX_KEYS`] per kind, the oldest window dropped first when
//! full). With `[limiter]` they are also kept in Redis (`{prefix}:send:msg:{login}`,
//! `{prefix}:send:rcpt:{login}`, `{prefix}:send:ip:{address}`), so a fleet spends one budget:
//! the larger of the fleet's and the instance's count decides. Redis gone: each instance
//! counts alone, as the AUTH limiter does ([`SharedLimiter`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use smtp_proto::Reply;
use smtp_server::{Session, address_key, user_key};

use crate::config::RateLimitsSection;
use crate::shared_limit::SharedLimiter;

/// The window of every sending limit.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Entries each local table holds at most.
pub const MAX_KEYS: usize = 100_000;

/// A login's budget: (messages, recipients) per hour; 0 is no limit.
type Budget = (u32, u32);

/// Reads and parses an overrides file; errors name the file and the line.
fn read_overrides(p: &Path) -> Result<HashMap<String, Budget>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    parse_overrides(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Parses an overrides file: `login: messages, recipients` per line (`0`: no limit), `#`
/// comments and blank lines allowed.
pub fn parse_overrides(text: &str) -> Result<HashMap<String, Budget>, String> {
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: expected `login: messages, recipients`", i + 1);
        let (login, budget) = line.split_once(':').ok_or_else(bad)?;
        let (m, r) = budget.split_once(',').ok_or_else(bad)?;
        let (Ok(m), Ok(r)) = (m.trim().parse(), r.trim().parse()) else {
            return Err(bad());
        };
        let login = login.trim();
        if login.is_empty() {
            return Err(bad());
        }
        map.insert(user_key(login), (m, r));
    }
    Ok(map)
}

/// What a count is kept under. Typed, so the hot path formats nothing: names are written only
/// for Redis and for refusals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Messages of a login (as [`user_key`] folds it).
    Messages(String),
    /// Recipients of a login.
    Recipients(String),
    /// Messages from an address that did not log in (as [`address_key`] folds it).
    Ip(IpAddr),
}

impl Key {
    /// The key's name in Redis, after `{prefix}:`.
    fn redis_name(&self) -> String {
        match self {
            Self::Messages(l) => format!("send:msg:{l}"),
            Self::Recipients(l) => format!("send:rcpt:{l}"),
            Self::Ip(ip) => format!("send:ip:{ip}"),
        }
    }
}

/// Counts in fixed windows, at most [`MAX_KEYS`] keys. Looked up twice per message, so hashed
/// with foldhash's quality hasher (seeded per process) rather than SipHash.
#[derive(Debug, Default)]
struct Counts {
    map: HashMap<Key, (u64, Instant), foldhash::quality::RandomState>,
}

impl Counts {
    fn get(&self, key: &Key, now: Instant) -> u64 {
        match self.map.get(key) {
            Some((n, since)) if now.saturating_duration_since(*since) < WINDOW => *n,
            _ => 0,
        }
    }

    fn add(&mut self, key: Key, by: u64, now: Instant) {
        if self.map.len() >= MAX_KEYS && !self.map.contains_key(&key) {
            self.map
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < WINDOW);
            if self.map.len() >= MAX_KEYS {
                // Still full: the oldest window goes.
                if let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(k, _)| k.clone())
                {
                    self.map.remove(&oldest);
                }
            }
        }
        let e = self.map.entry(key).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(by);
    }
}

/// The sending limits of one process, shared by every listener.
#[derive(Debug)]
pub struct SendingLimits {
    messages: u32,
    recipients: u32,
    ip_messages: u32,
    overrides: RwLock<Arc<HashMap<String, Budget>>>,
    file: Option<PathBuf>,
    local: Mutex<Counts>,
    shared: OnceLock<Arc<SharedLimiter>>,
}

/// Which limit a refusal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Messages,
    Recipients,
    IpMessages,
}

impl Limit {
    fn reason(self) -> &'static str {
        match self {
            Self::Messages => "messages_per_hour",
            Self::Recipients => "recipients_per_hour",
            Self::IpMessages => "ip_messages_per_hour",
        }
    }
}

impl SendingLimits {
    /// The limits of `[rate_limits]`, its overrides file read. An LMTP server (`lmtp`) is
    /// handed mail by the local MTA from one address: the per-address limit does not apply.
    pub fn load(section: &RateLimitsSection, lmtp: bool) -> Result<Self, String> {
        let overrides = match &section.overrides {
            Some(p) => read_overrides(p)?,
            None => HashMap::new(),
        };
        Ok(Self {
            messages: section.messages_per_hour,
            recipients: section.recipients_per_hour,
            ip_messages: if lmtp {
                0
            } else {
                section.ip_messages_per_hour
            },
            overrides: RwLock::new(Arc::new(overrides)),
            file: section.overrides.clone(),
            local: Mutex::new(Counts::default()),
            shared: OnceLock::new(),
        })
    }

    /// Counts in Redis too, through the fleet's shared limiter.
    pub fn share(&self, shared: Arc<SharedLimiter>) {
        let _ = self.shared.set(shared);
    }

    /// Re-reads the overrides file; a broken file is refused with the reason and the old
    /// overrides stay. `Ok(None)` when there is no file, else the logins it lists.
    pub fn reload(&self) -> Result<Option<usize>, String> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let map = read_overrides(path)?;
        let n = map.len();
        if let Ok(mut o) = self.overrides.write() {
            *o = Arc::new(map);
        }
        Ok(Some(n))
    }

    /// The budget of `login` (its key as [`user_key`] folds it).
    fn budget(&self, login: &str) -> Budget {
        let o = match self.overrides.read() {
            Ok(o) => o.clone(),
            Err(p) => p.into_inner().clone(),
        };
        o.get(login)
            .copied()
            .unwrap_or((self.messages, self.recipients))
    }

    /// The count under `key`: this instance's, or the fleet's when Redis answers and holds
    /// more.
    async fn count(&self, key: &Key) -> u64 {
        let now = Instant::now();
        let local = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key, now);
        match self.shared.get() {
            Some(s) => match s.counts(&[key.redis_name()]).await {
                Some(v) => v[0].max(local),
                None => local,
            },
            None => local,
        }
    }

    fn add(&self, key: Key, by: u64) {
        if let Some(s) = self.shared.get() {
            s.add(&key.redis_name(), by, WINDOW);
        }
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(key, by, Instant::now());
    }

    /// At MAIL: `Err(450 4.7.1)` when the session's login, or its address when it did not log
    /// in, has no message left this hour.
    pub async fn check_mail(&self, session: &Session) -> Result<(), (Reply, &'static str)> {
        let (limit, key) = match &session.login_data {
            Some(login) => {
                let key = user_key(login);
                (self.budget(&key).0, Key::Messages(key))
            }
            None => (
                self.ip_messages,
                Key::Ip(address_key(session.peer_addr.ip())),
            ),
        };
        if limit == 0 || self.count(&key).await < u64::from(limit) {
            return Ok(());
        }
        let (who, kind) = match (&key, &session.login_data) {
            (Key::Ip(ip), _) => (shown(*ip), Limit::IpMessages),
            (_, login) => (
                format!("user {}", login.as_deref().unwrap_or("")),
                Limit::Messages,
            ),
        };
        tracing::warn!(target: "smtpd::rate_limit", remote_ip = %session.peer_addr.ip(), user = session.login_data.as_deref().unwrap_or(""), limit = kind.reason(), value = limit, "message refused: sending limit reached");
        Err((
            Reply::simple(
                450,
                Some((4, 7, 1)),
                &format!(
                    "Sending limit reached: {limit} messages per hour for {who}, try again later"
                ),
            ),
            kind.reason(),
        ))
    }

    /// At RCPT: `Err(452 4.5.3)` when the session's login has no recipient left this hour,
    /// counting the `in_transaction` recipients already accepted for this message.
    pub async fn check_rcpt(
        &self,
        session: &Session,
        in_transaction: usize,
    ) -> Result<(), (Reply, &'static str)> {
        let Some(login) = &session.login_data else {
            return Ok(());
        };
        let key = user_key(login);
        let (_, limit) = self.budget(&key);
        if limit == 0 {
            return Ok(());
        }
        let used = self.count(&Key::Recipients(key)).await + in_transaction as u64;
        if used < u64::from(limit) {
            return Ok(());
        }
        tracing::warn!(target: "smtpd::rate_limit", remote_ip = %session.peer_addr.ip(), user = %login, limit = Limit::Recipients.reason(), value = limit, "recipient refused: sending limit reached");
        Err((
            Reply::simple(
                452,
                Some((4, 5, 3)),
                &format!(
                    "Sending limit reached: {limit} recipients per hour for user {login}, try again later"
                ),
            ),
            Limit::Recipients.reason(),
        ))
    }

    /// A message with `recipients` recipients was accepted (250 at the end of DATA).
    pub fn accepted(&self, session: &Session, recipients: usize) {
        match &session.login_data {
            Some(login) => {
                let key = user_key(login);
                self.add(Key::Messages(key.clone()), 1);
                self.add(Key::Recipients(key), recipients as u64);
            }
            None if self.ip_messages > 0 => {
                self.add(Key::Ip(address_key(session.peer_addr.ip())), 1);
            }
            None => {}
        }
    }
}

/// An address key as a reply names it: an IPv6 /64 with its prefix length.
fn shown(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_bad_lines_are_named() {
        let m = parse_overrides("# budgets\nAlice: 5, 50\nbulk@corp.test: 0, 0\n\n").unwrap();
        assert_eq!(m.get("alice"), Some(&(5, 50)));
        assert_eq!(m.get("bulk@corp.test"), Some(&(0, 0)));
        for bad in [
            "alice 5, 50",
            "alice: 5",
            "alice: five, 50",
            ": 1, 2",
            "a: -1, 2",
        ] {
            let e = parse_overrides(&format!("ok: 1, 2\n{bad}\n")).unwrap_err();
            assert!(e.contains("line 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_lmtp_server_does_not_limit_per_address() {
        let section = RateLimitsSection {
            ip_messages_per_hour: 5,
            ..RateLimitsSection::default()
        };
        assert_eq!(SendingLimits::load(&section, false).unwrap().ip_messages, 5);
        let lmtp = SendingLimits::load(&section, true).unwrap();
        assert_eq!(
            (lmtp.ip_messages, lmtp.messages, lmtp.recipients),
            (0, 500, 2000)
        );
    }

    #[test]
    fn counts_are_windows_of_an_hour_and_the_table_is_bounded() {
        let t = Instant::now();
        let mut c = Counts::default();
        let alice = Key::Messages("alice".into());
        c.add(alice.clone(), 1, t);
        c.add(alice.clone(), 2, t + Duration::from_secs(10));
        assert_eq!(c.get(&alice, t + Duration::from_secs(3599)), 3);
        assert_eq!(c.get(&alice, t + WINDOW), 0);
        c.add(alice.clone(), 1, t + WINDOW);
        assert_eq!(c.get(&alice, t + WINDOW), 1, "a new window");
        let ip = |i: usize| Key::Ip(IpAddr::from((i as u32).to_be_bytes()));
        for i in 0..MAX_KEYS + 10 {
            c.add(ip(i), 1, t + WINDOW + Duration::from_millis(i as u64));
        }
        assert!(c.map.len() <= MAX_KEYS);
        assert_eq!(
            c.get(&ip(MAX_KEYS + 9), t + WINDOW + Duration::from_secs(200)),
            1
        );
        assert_eq!(Key::Recipients("bob".into()).redis_name(), "send:rcpt:bob");
        assert_eq!(
            Key::Ip("2001:db8::".parse().unwrap()).redis_name(),
            "send:ip:2001:db8::"
        );
    }
}
