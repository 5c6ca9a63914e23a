//! The authenticator (aiosmtpd's `authenticator` callback) and its adapter from any
//! [`AuthProvider`](smtp_auth::AuthProvider), plus the per-IP failure limiter.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smtp_auth::{
    AuthDecision, AuthRequest, AuthResult, AuthStatus, Identity, LookupRequest, LookupResult,
};
use tower_service::Service;

use crate::session::Session;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decides credentials for the built-in mechanisms, with read-only session facts, the
/// mechanism (in `request.mechanism`) and its credentials. It returns an [`AuthResult`], so it
/// can send its own `message` or attach `auth_data`; it never changes the session itself.
pub trait Authenticator: Send + Sync + 'static {
    /// Decides a credential check.
    fn authenticate(&self, session: &Session, request: AuthRequest) -> BoxFuture<AuthResult>;

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
    fn authenticate(&self, _session: &Session, request: AuthRequest) -> BoxFuture<AuthResult> {
        let mut svc = self.provider.clone();
        Box::pin(async move {
            let identity = Identity {
                login: request.username.clone(),
                authzid: request.authzid.clone(),
                mechanism: request.mechanism.clone(),
            };
            if poll_fn(|cx| svc.poll_ready(cx)).await.is_err() {
                return AuthResult::failure(AuthStatus::TempFail);
            }
            match svc.call(request).await {
                Ok(decision) => AuthResult::from_decision(decision, identity),
                Err(_) => AuthResult::failure(AuthStatus::TempFail),
            }
        })
    }

    fn lookup(&self, _session: &Session, request: LookupRequest) -> BoxFuture<LookupResult> {
        match &self.secrets {
            Some(f) => f(request),
            None => Box::pin(async { LookupResult::NotFound }),
        }
    }
}

/// Counts failed AUTH attempts per remote IP across connections.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    max: u32,
    window: Duration,
    map: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Entries kept at most; expired ones are purged when the map is full.
const MAX_TRACKED_IPS: usize = 100_000;

impl FailureLimiter {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn blocked(&self, ip: IpAddr) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip)
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    pub(crate) fn record(&self, ip: IpAddr) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_IPS {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
            if map.len() >= MAX_TRACKED_IPS {
                return;
            }
        }
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}
