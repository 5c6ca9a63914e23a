//! `[metrics]`: a Prometheus text endpoint (`GET /metrics`, hyper) with connections, TLS
//! handshakes, AUTH attempts by mechanism and outcome with a latency histogram, the credential
//! cache's hits and misses, messages and octets by reply class, and delivery latency and
//! failures by kind. Counters are atomics (the AUTH table a short lock: AUTH costs a password
//! hash anyway); they are read only when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtp_auth::CredentialCache;

use crate::shared_limit::SharedLimiter;
use smtp_server::{AuthOutcome, Observer, Refusal};

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: per-bucket counts (not cumulative until rendered), sum and count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every counter of the process; an [`Observer`] for each listener's server.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_current: AtomicI64,
    connections_total: AtomicU64,
    refused_max: AtomicU64,
    refused_per_address: AtomicU64,
    tls_ok: AtomicU64,
    tls_failed: AtomicU64,
    auth: Mutex<BTreeMap<(String, &'static str), u64>>,
    auth_latency: Histogram,
    /// Messages and octets by reply class (index 0: 2xx, 1: 4xx, 2: 5xx).
    messages: [AtomicU64; 3],
    octets: [AtomicU64; 3],
    delivery_latency: Histogram,
    delivery_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Messages and recipients refused by a sending policy, by reason.
    policy_refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Authenticated submissions by DKIM outcome.
    dkim: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests to the identity store by store and outcome, and their latency.
    store: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    store_latency: Histogram,
    cache: Mutex<Option<CredentialCache>>,
    limiter: Mutex<Option<Arc<SharedLimiter>>>,
}

/// The samples of a table of counts by one label's value.
fn by_label(table: &Mutex<BTreeMap<&'static str, u64>>, label: &str) -> Vec<(String, u64)> {
    match table.lock() {
        Ok(t) => t
            .iter()
            .map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), *v))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn class_index(class: u8) -> Option<usize> {
    match class {
        2 => Some(0),
        4 => Some(1),
        5 => Some(2),
        _ => None,
    }
}

impl Metrics {
    /// Reports the credential cache's hits and misses too.
    pub fn watch_cache(&self, cache: CredentialCache) {
        if let Ok(mut c) = self.cache.lock() {
            *c = Some(cache);
        }
    }

    /// Reports the shared limiter's state (`[limiter]`) too.
    pub fn watch_limiter(&self, limiter: Arc<SharedLimiter>) {
        if let Ok(mut l) = self.limiter.lock() {
            *l = Some(limiter);
        }
    }

    /// A delivery (`kind`: `maildir`, `relay`, `discard`) took `elapsed`; `ok` false counts a
    /// failure of that kind.
    pub fn delivery(&self, kind: &'static str, elapsed: Duration, ok: bool) {
        self.delivery_latency.observe(elapsed);
        if !ok && let Ok(mut f) = self.delivery_failures.lock() {
            *f.entry(kind).or_default() += 1;
        }
    }

    /// A message or recipient an authenticated or local sending policy refused: `reason` is
    /// one of a fixed set (`header_sender`, `messages_per_hour`, `recipients_per_hour`,
    /// `ip_messages_per_hour`), so no client can add a series.
    pub fn policy_refusal(&self, reason: &'static str) {
        if let Ok(mut t) = self.policy_refusals.lock() {
            *t.entry(reason).or_default() += 1;
        }
    }

    /// An authenticated submission's DKIM outcome: `signed`, or why not (`no_key`,
    /// `header_too_long`, `failed`): a fixed set.
    pub fn dkim(&self, result: &'static str) {
        if let Ok(mut t) = self.dkim.lock() {
            *t.entry(result).or_default() += 1;
        }
    }

    /// A message whose `From:`/`Sender:` the login does not own was refused.
    pub fn refused_header_sender(&self) {
        self.policy_refusal("header_sender");
    }

    /// A request to the identity store `store` (`file`, `http`, `dovecot`) answered `outcome`
    /// (`ok`, `invalid`, `failure`, `locked`) after `elapsed`: checks the credential cache
    /// answered are not requests.
    pub fn store(&self, store: &'static str, outcome: &'static str, elapsed: Duration) {
        self.store_latency.observe(elapsed);
        if let Ok(mut t) = self.store.lock() {
            *t.entry((store, outcome)).or_default() += 1;
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP smtpd_build_info The running build: its version.\n# TYPE smtpd_build_info gauge\nsmtpd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        process::render(&mut out);
        let mut counter = |name: &str, help: &str, kind: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let current = self.connections_current.load(Relaxed).max(0) as u64;
        counter(
            "smtpd_connections_current",
            "Open SMTP sessions.",
            "gauge",
            &[(String::new(), current)],
        );
        counter(
            "smtpd_connections_total",
            "SMTP sessions begun.",
            "counter",
            &[(String::new(), self.connections_total.load(Relaxed))],
        );
        counter(
            "smtpd_connections_refused_total",
            "Connections refused before their session, by limit.",
            "counter",
            &[
                (
                    "{limit=\"max_connections\"}".into(),
                    self.refused_max.load(Relaxed),
                ),
                (
                    "{limit=\"max_connections_per_ip\"}".into(),
                    self.refused_per_address.load(Relaxed),
                ),
            ],
        );
        counter(
            "smtpd_tls_handshakes_total",
            "TLS handshakes (STARTTLS and implicit), by result.",
            "counter",
            &[
                ("{result=\"ok\"}".into(), self.tls_ok.load(Relaxed)),
                ("{result=\"failed\"}".into(), self.tls_failed.load(Relaxed)),
            ],
        );
        let auth: Vec<(String, u64)> = match self.auth.lock() {
            Ok(t) => t
                .iter()
                .map(|((m, o), v)| (format!("{{mechanism=\"{m}\",outcome=\"{o}\"}}"), *v))
                .collect(),
            Err(_) => Vec::new(),
        };
        counter(
            "smtpd_auth_attempts_total",
            "AUTH attempts by mechanism and outcome (ok, invalid, tempfail, cancelled, locked).",
            "counter",
            &auth,
        );
        let store: Vec<(String, u64)> = match self.store.lock() {
            Ok(t) => t
                .iter()
                .map(|((s, o), v)| (format!("{{store=\"{s}\",outcome=\"{o}\"}}"), *v))
                .collect(),
            Err(_) => Vec::new(),
        };
        counter(
            "smtpd_auth_store_requests_total",
            "Requests to the identity store by store (file, http, dovecot) and outcome (ok, invalid, failure, locked).",
            "counter",
            &store,
        );
        let (hits, misses) = match self.cache.lock() {
            Ok(c) => c.as_ref().map(CredentialCache::stats).unwrap_or_default(),
            Err(_) => (0, 0),
        };
        counter(
            "smtpd_credential_cache_hits_total",
            "Credential checks answered by the cache.",
            "counter",
            &[(String::new(), hits)],
        );
        counter(
            "smtpd_credential_cache_misses_total",
            "Credential checks the cache passed on.",
            "counter",
            &[(String::new(), misses)],
        );
        let shared = self.limiter.lock().ok().and_then(|l| l.clone());
        if let Some(l) = shared {
            counter(
                "smtpd_auth_limiter_shared_up",
                "1 when the last operation of the shared AUTH limiter reached Redis.",
                "gauge",
                &[(String::new(), u64::from(l.up()))],
            );
            counter(
                "smtpd_auth_limiter_fallbacks_total",
                "Shared AUTH limiter operations done without Redis (this instance decided alone).",
                "counter",
                &[(String::new(), l.fallbacks())],
            );
        }
        let classes = ["2xx", "4xx", "5xx"];
        let by_class = |v: &[AtomicU64; 3]| -> Vec<(String, u64)> {
            classes
                .iter()
                .zip(v)
                .map(|(c, n)| (format!("{{class=\"{c}\"}}"), n.load(Relaxed)))
                .collect()
        };
        counter(
            "smtpd_messages_total",
            "Messages by the class of their final reply (2xx accepted, 4xx and 5xx refused).",
            "counter",
            &by_class(&self.messages),
        );
        counter(
            "smtpd_message_bytes_total",
            "Octets of those messages, as received.",
            "counter",
            &by_class(&self.octets),
        );
        let failures = by_label(&self.delivery_failures, "kind");
        counter(
            "smtpd_delivery_failures_total",
            "Deliveries that failed, by kind (maildir, relay).",
            "counter",
            &failures,
        );
        let refusals = by_label(&self.policy_refusals, "reason");
        counter(
            "smtpd_policy_refusals_total",
            "Messages and recipients refused by a sending policy, by reason (header_sender, messages_per_hour, recipients_per_hour, ip_messages_per_hour).",
            "counter",
            &refusals,
        );
        counter(
            "smtpd_dkim_total",
            "Authenticated submissions by DKIM outcome (signed, no_key, header_too_long, failed).",
            "counter",
            &by_label(&self.dkim, "result"),
        );
        self.auth_latency.render(
            &mut out,
            "smtpd_auth_duration_seconds",
            "From the AUTH command to its reply.",
        );
        self.store_latency.render(
            &mut out,
            "smtpd_auth_store_duration_seconds",
            "A request to the identity store, from asking to its answer.",
        );
        self.delivery_latency.render(
            &mut out,
            "smtpd_delivery_duration_seconds",
            "Delivering an accepted message (Maildir write, relay).",
        );
        out
    }
}

impl Observer for Metrics {
    fn connection_opened(&self) {
        self.connections_current.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }

    fn connection_closed(&self) {
        self.connections_current.fetch_sub(1, Relaxed);
    }

    fn connection_refused(&self, reason: Refusal) {
        match reason {
            Refusal::MaxConnections => &self.refused_max,
            Refusal::PerAddress => &self.refused_per_address,
            // A reason newer than this exposition has no series of its own yet.
            _ => return,
        }
        .fetch_add(1, Relaxed);
    }

    fn tls_handshake(&self, ok: bool) {
        if ok { &self.tls_ok } else { &self.tls_failed }.fetch_add(1, Relaxed);
    }

    fn auth(&self, mechanism: &str, outcome: AuthOutcome, elapsed: Duration) {
        self.auth_latency.observe(elapsed);
        if let Ok(mut t) = self.auth.lock() {
            // Mechanism names are the registry's: any name the server does not offer arrives
            // as "unknown" (smtp_server::machine::UNKNOWN_MECHANISM), so the table is bounded
            // by the registry. The cut is a second guard for another observer's caller.
            let m: String = mechanism.chars().take(20).collect();
            *t.entry((m, outcome.as_str())).or_default() += 1;
        }
    }

    fn message(&self, class: u8, octets: u64) {
        if let Some(i) = class_index(class) {
            self.messages[i].fetch_add(1, Relaxed);
            self.octets[i].fetch_add(octets, Relaxed);
        }
    }
}

/// What `/readyz` reports: ready once every listener is bound and the password store (when it
/// is not the users file: Dovecot, LDAP, SQL, the HTTP service) answers.
#[derive(Debug)]
pub struct Health {
    bound: std::sync::atomic::AtomicBool,
    store: Option<crate::stores::Probe>,
    timeout: Duration,
}

impl Health {
    /// Not ready until [`Health::listening`]; `store` is asked at each check, bounded by
    /// `timeout`.
    pub fn new(store: Option<crate::stores::Probe>, timeout: Duration) -> Self {
        Self {
            bound: std::sync::atomic::AtomicBool::new(false),
            store,
            timeout,
        }
    }

    /// Every listener is bound.
    pub fn listening(&self) {
        self.bound.store(true, Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub async fn ready(&self) -> Result<(), String> {
        if !self.bound.load(Relaxed) {
            return Err("listeners not bound yet".into());
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        match tokio::time::timeout(self.timeout, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("identity store {} unreachable: {e}", store.name())),
            Err(_) => Err(format!(
                "identity store {} did not answer in time",
                store.name()
            )),
        }
    }
}

/// Process metrics from `/proc/self` (Linux; nothing elsewhere), under the names every
/// Prometheus client library uses.
mod process {
    use std::fmt::Write as _;

    /// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on Linux's ABIs).
    const TICKS: f64 = 100.0;

    pub(super) fn render(out: &mut String) {
        let mut gauge = |name: &str, help: &str, kind: &str, v: Option<f64>| {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map(|k| k * 1024.0)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            kib("VmRSS:"),
        );
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            kib("VmSize:"),
        );
        let fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        gauge("process_open_fds", "Open file descriptors.", "gauge", fds);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))?
                    .split_whitespace()
                    .nth(3)?
                    .parse::<f64>()
                    .ok()
            });
        gauge(
            "process_max_fds",
            "The most file descriptors the process may open.",
            "gauge",
            max_fds,
        );
        // Fields after the command name (which may hold spaces), from field 3 on.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu = field(14).zip(field(15)).map(|(u, s)| (u + s) / TICKS);
        gauge(
            "process_cpu_seconds_total",
            "User and system CPU time spent in seconds.",
            "counter",
            cpu,
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))?
                .trim()
                .parse::<f64>()
                .ok()
        });
        let start = field(22).zip(boot).map(|(t, b)| b + t / TICKS);
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            "gauge",
            start,
        );
    }
}

/// Serves `GET /metrics`, `/healthz` (200 while the process serves HTTP at all) and `/readyz`
/// (200 once ready, else 503 with the reason, see [`Health`]) on `listener` until the task is
/// dropped; any other path is 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    health: std::sync::Arc<Health>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (metrics, health) = (metrics.clone(), health.clone());
                async move {
                    let text = |status: StatusCode, body: String| {
                        Response::builder()
                            .status(status)
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from(body)))
                    };
                    match req.uri().path() {
                        "/metrics" => Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(metrics.render()))),
                        "/healthz" => text(StatusCode::OK, "ok\n".into()),
                        "/readyz" => match health.ready().await {
                            Ok(()) => text(StatusCode::OK, "ready\n".into()),
                            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                        },
                        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
                    }
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            // A scrape is small; a client that holds the connection goes after 30 s.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_with_exact_values() {
        let m = Metrics::default();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_refused(Refusal::PerAddress);
        m.tls_handshake(true);
        m.auth("PLAIN", AuthOutcome::Invalid, Duration::from_millis(3));
        m.auth("PLAIN", AuthOutcome::Ok, Duration::from_millis(30));
        m.message(2, 100);
        m.message(5, 7);
        m.delivery("maildir", Duration::from_millis(2), true);
        m.delivery("relay", Duration::from_millis(200), false);
        m.store("dovecot", "ok", Duration::from_millis(4));
        m.store("dovecot", "failure", Duration::from_millis(900));
        let text = m.render();
        for line in [
            "smtpd_connections_current 1",
            "smtpd_connections_total 2",
            "smtpd_connections_refused_total{limit=\"max_connections_per_ip\"} 1",
            "smtpd_tls_handshakes_total{result=\"ok\"} 1",
            "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"invalid\"} 1",
            "smtpd_auth_attempts_total{mechanism=\"PLAIN\",outcome=\"ok\"} 1",
            "smtpd_messages_total{class=\"2xx\"} 1",
            "smtpd_message_bytes_total{class=\"2xx\"} 100",
            "smtpd_messages_total{class=\"5xx\"} 1",
            "smtpd_delivery_failures_total{kind=\"relay\"} 1",
            "smtpd_auth_duration_seconds_bucket{le=\"0.005\"} 1",
            "smtpd_auth_duration_seconds_bucket{le=\"0.05\"} 2",
            "smtpd_auth_duration_seconds_count 2",
            "smtpd_auth_duration_seconds_sum 0.033",
            "smtpd_delivery_duration_seconds_bucket{le=\"0.25\"} 2",
            "smtpd_auth_store_requests_total{store=\"dovecot\",outcome=\"ok\"} 1",
            "smtpd_auth_store_requests_total{store=\"dovecot\",outcome=\"failure\"} 1",
            "smtpd_auth_store_duration_seconds_bucket{le=\"0.005\"} 1",
            "smtpd_auth_store_duration_seconds_bucket{le=\"1\"} 2",
            "smtpd_auth_store_duration_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }
}
