//! Providers: `smtpauth`'s `AuthProvider` callback as a [`tower_service::Service`], so tower's
//! timeout, concurrency-limit, rate-limit and buffer layers compose with it; an adapter from
//! an async closure ([`provider_fn`]); and an in-memory provider for tests and examples
//! ([`MemoryProvider`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::decision::AuthDecision;
use crate::request::{AuthRequest, LookupRequest, LookupResult, StoredSecret};
use crate::secret::Password;

/// Decides credentials: any `Service<AuthRequest, Response = AuthDecision>`.
///
/// A service error counts as [`AuthDecision::Failure`] (the driver's rule).
pub trait AuthProvider: Service<AuthRequest, Response = AuthDecision> {}
impl<S> AuthProvider for S where S: Service<AuthRequest, Response = AuthDecision> {}

/// Looks stored secrets up, for CRAM-MD5 and SCRAM-SHA-256: the separate capability a
/// provider offers when it holds passwords or SCRAM keys.
pub trait SecretProvider: Service<LookupRequest, Response = LookupResult> {}
impl<S> SecretProvider for S where S: Service<LookupRequest, Response = LookupResult> {}

/// An [`AuthProvider`] made from an async closure; see [`provider_fn`].
#[derive(Clone)]
pub struct ProviderFn<F> {
    f: F,
}

impl<F> fmt::Debug for ProviderFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderFn")
    }
}

/// Adapts `async fn(AuthRequest) -> AuthDecision` into an [`AuthProvider`].
///
/// ```
/// use smtp_auth::{provider_fn, AuthDecision, AuthRequest};
/// let provider = provider_fn(|req: AuthRequest| async move {
///     if req.username == "alice" && req.password.expose_secret() == "secret" {
///         AuthDecision::Ok
///     } else {
///         AuthDecision::Invalid
///     }
/// });
/// # let _ = provider;
/// ```
pub fn provider_fn<F, Fut>(f: F) -> ProviderFn<F>
where
    F: FnMut(AuthRequest) -> Fut,
    Fut: Future<Output = AuthDecision> + Send + 'static,
{
    ProviderFn { f }
}

impl<F, Fut> Service<AuthRequest> for ProviderFn<F>
where
    F: FnMut(AuthRequest) -> Fut,
    Fut: Future<Output = AuthDecision> + Send + 'static,
{
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let fut = (self.f)(req);
        Box::pin(async move { Ok(fut.await) })
    }
}

/// Users and passwords held in memory, compared in constant time. It answers both
/// [`AuthRequest`]s (PLAIN, LOGIN, and OAuth tokens stored as passwords) and
/// [`LookupRequest`]s (CRAM-MD5, SCRAM-SHA-256). For EXTERNAL it accepts a known user whose
/// authorization identity is absent or its own.
#[derive(Clone, Default)]
pub struct MemoryProvider {
    users: Arc<HashMap<String, Password>>,
}

impl fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("MemoryProvider")
            .field("users", &names)
            .finish()
    }
}

impl MemoryProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user (builder style).
    pub fn with_user(mut self, username: &str, password: &str) -> Self {
        Arc::make_mut(&mut self.users)
            .insert(username.to_owned(), Password::new(password.to_owned()));
        self
    }

    /// The decision, synchronously.
    pub fn check(&self, req: &AuthRequest) -> AuthDecision {
        let user = self.users.get(&req.username);
        if req.authzid.as_ref().is_some_and(|z| *z != req.username) {
            // No proxy authorisation.
            return AuthDecision::Invalid;
        }
        if req.mechanism == "EXTERNAL" {
            return if user.is_some() {
                AuthDecision::Ok
            } else {
                AuthDecision::Invalid
            };
        }
        // Compare against something even for an unknown user, so timing says nothing.
        let dummy = Password::new(String::new());
        let stored = user.unwrap_or(&dummy);
        if user.is_some() && *stored == req.password {
            AuthDecision::Ok
        } else {
            AuthDecision::Invalid
        }
    }

    /// The stored secret, synchronously.
    pub fn lookup(&self, req: &LookupRequest) -> LookupResult {
        match self.users.get(&req.username) {
            Some(p) => LookupResult::Found(StoredSecret::Plain(p.clone())),
            None => LookupResult::NotFound,
        }
    }
}

impl Service<AuthRequest> for MemoryProvider {
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = Ready<Result<AuthDecision, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        ready(Ok(self.check(&req)))
    }
}

impl Service<LookupRequest> for MemoryProvider {
    type Response = LookupResult;
    type Error = Infallible;
    type Future = Ready<Result<LookupResult, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LookupRequest) -> Self::Future {
        ready(Ok(self.lookup(&req)))
    }
}
