//! The identity stores `[auth] backend` chooses, seen alike by the server: every one is an
//! `AuthProvider` behind the credential cache and a [`Measured`] wrapper (requests and latency
//! per store and outcome), built by `store_authenticator` and composed with `[auth.oauth]`'s
//! token store by `compose`; a remote one ([`Remote`]: Dovecot,
//! LDAP) also reconnects on SIGHUP, and Dovecot runs whole SASL exchanges itself (SCRAM-SHA-256,
//! XOAUTH2, OAUTHBEARER).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smtp_auth::CredentialCache;
use smtp_auth::sasl::{self, Response};
use smtp_auth::{AuthDecision, AuthRequest, AuthResult, AuthStatus, DEFAULT_MAX_RESPONSE};
use smtp_auth_dovecot::{DovecotClient, DovecotConfig, Endpoint, Proxy, ProxyStep, RequestInfo};
use smtp_server::{AuthChannel, Authenticator, ProviderAuthenticator, Session};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::config::AuthSection;
use crate::metrics::Metrics;

/// A store that lives in another process.
#[derive(Debug, Clone)]
pub enum Remote {
    /// Dovecot's authentication service, and the offered mechanisms relayed into it.
    Dovecot(DovecotClient, Arc<[String]>),
    /// An LDAP directory, bound to as the user.
    Ldap(smtp_auth_ldap::LdapProvider),
    /// An SQL table, its hashes verified on the bounded verify pool.
    Sql(smtp_auth_sql::SqlProvider),
}

impl Remote {
    /// The remote store `[auth]` configures, if any; `timeout` bounds each step of a request
    /// (`server.auth_timeout_secs`); `offered` are the mechanisms the server offers (only
    /// those are relayed: a mechanism the store knows but the server does not offer gets 504).
    pub fn from_config(
        auth: &AuthSection,
        server: &crate::config::ServerSection,
        offered: &[String],
    ) -> Result<Option<Self>, String> {
        let timeout = Duration::from_secs(server.auth_timeout_secs);
        match auth {
            AuthSection::Dovecot {
                socket,
                connections,
                penalty,
                ..
            } => {
                let endpoint = Endpoint::parse(socket).map_err(|e| format!("auth.socket: {e}"))?;
                let mut config = DovecotConfig::new(endpoint);
                config.timeout = timeout;
                config.connections = *connections;
                config.penalty = *penalty;
                // With [auth.oauth] the token mechanisms are checked here, not in Dovecot.
                let tokens_here = auth.oauth().is_some();
                let relayed = offered
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .filter(|m| !matches!(m.as_str(), "PLAIN" | "LOGIN"))
                    .filter(|m| !(tokens_here && is_token_mechanism(m)))
                    .collect();
                Ok(Some(Self::Dovecot(DovecotClient::new(config), relayed)))
            }
            AuthSection::Ldap(l) => {
                let mut config = l
                    .provider_config(timeout)
                    .map_err(|(key, why)| format!("auth.{key}: {why}"))?;
                if config.url.starts_with("ldaps://") || config.starttls {
                    config.tls = Some(
                        crate::tls::client_config(l.ca_file.as_deref())
                            .map_err(|e| format!("auth.ca_file: {e}"))?,
                    );
                }
                let provider = smtp_auth_ldap::LdapProvider::new(config)
                    .map_err(|e| format!("auth.url: {e}"))?;
                Ok(Some(Self::Ldap(provider)))
            }
            AuthSection::Sql(q) => {
                let config = q
                    .provider_config(timeout)
                    .map_err(|(key, why)| format!("auth.{key}: {why}"))?;
                // Hashes are verified on a bounded pool, as the users file's are.
                let pool = smtp_server::VerifyPool::new(match server.auth_workers {
                    0 => smtp_server::default_workers(),
                    n => n,
                });
                let verifier: smtp_auth_sql::Verifier = Arc::new(move |job| {
                    let pool = pool.clone();
                    Box::pin(async move { pool.run(job).await })
                });
                let provider = smtp_auth_sql::SqlProvider::with_verifier(config, verifier)
                    .map_err(|e| format!("auth.url: {e}"))?;
                Ok(Some(Self::Sql(provider)))
            }
            _ => Ok(None),
        }
    }

    /// The store's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dovecot(..) => "dovecot",
            Self::Ldap(_) => "ldap",
            Self::Sql(_) => "sql",
        }
    }

    /// Whether the store answers now (readiness): Dovecot's handshake, an LDAP "Who am I?",
    /// the SQL query for an empty name.
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Self::Dovecot(c, _) => c.mechanisms().await.map(|_| ()).map_err(|e| e.to_string()),
            Self::Ldap(p) => p.ping().await,
            Self::Sql(p) => p.ping().await,
        }
    }

    /// Closes the store's connections; the next login connects afresh.
    pub async fn reconnect(&self) {
        match self {
            Self::Dovecot(c, _) => c.reconnect().await,
            Self::Ldap(p) => p.reconnect(),
            Self::Sql(p) => p.reconnect(),
        }
    }

    /// Logs what the store offers against what the server offers, once it answers (a store
    /// still starting is not an error: logins get 454 until it is up).
    pub async fn report(&self, offered: Vec<String>) {
        match self {
            Self::Dovecot(c, _) => match c.mechanisms().await {
                Ok(m) => {
                    let theirs: Vec<String> = m.into_iter().map(|m| m.name).collect();
                    let missing: Vec<&String> =
                        offered.iter().filter(|o| !theirs.contains(o)).collect();
                    if missing.is_empty() {
                        tracing::info!(target: "smtpd::app", mechanisms = ?theirs, "Dovecot answers");
                    } else {
                        tracing::warn!(target: "smtpd::app", mechanisms = ?theirs, not_offered = ?missing, "Dovecot does not offer every configured mechanism: those logins will fail");
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "smtpd::app", error = %e, "Dovecot not reachable yet: logins get 454 until it is")
                }
            },
            Self::Ldap(_) | Self::Sql(_) => {}
        }
    }

    /// The authenticator over this store's password provider (PLAIN, LOGIN), as every
    /// store gets it (`store_authenticator`).
    pub fn authenticator(
        &self,
        cache: Option<&CredentialCache>,
        metrics: Option<&Arc<Metrics>>,
    ) -> Arc<dyn Authenticator> {
        match self {
            Self::Dovecot(c, _) => store_authenticator(
                smtp_auth_dovecot::DovecotProvider::new(c.clone()),
                self.name(),
                cache,
                metrics,
                None::<NoSecrets>,
            ),
            Self::Ldap(p) => {
                store_authenticator(p.clone(), self.name(), cache, metrics, None::<NoSecrets>)
            }
            // A `scram` column serves SCRAM-SHA-256 through the lookup.
            Self::Sql(p) => {
                store_authenticator(p.clone(), self.name(), cache, metrics, Some(p.clone()))
            }
        }
    }

    /// Whether the store runs `mechanism` itself (the server relays the exchange): every
    /// offered mechanism but PLAIN and LOGIN, whose passwords the server checks through the
    /// provider and the credential cache.
    pub fn runs(&self, mechanism: &str) -> bool {
        match self {
            Self::Dovecot(_, relayed) => relayed.iter().any(|m| m == mechanism),
            Self::Ldap(_) | Self::Sql(_) => false,
        }
    }

    /// Relays a whole exchange to the store (`handle_auth`): challenges go to the client
    /// through `channel`, its responses back to the store.
    pub async fn relay(
        &self,
        channel: &mut AuthChannel<'_>,
        session: &Session,
        mechanism: &str,
        initial_response: Option<&[u8]>,
        metrics: Option<&Metrics>,
    ) -> AuthResult {
        let Self::Dovecot(client, _) = self else {
            // Only a store that runs mechanisms is asked to (`runs`).
            return AuthResult::failure(AuthStatus::UnknownMechanism);
        };
        let started = Instant::now();
        let initial = match initial_response {
            None => None,
            Some(text) => match sasl::decode_initial_response(text, DEFAULT_MAX_RESPONSE) {
                Response::Data(d) => Some(d),
                other => {
                    return AuthResult::failure(other.failure().unwrap_or(AuthStatus::Malformed));
                }
            },
        };
        let mut info = RequestInfo::default();
        info.remote_ip = Some(session.peer_addr.ip());
        info.local_ip = Some(session.local_addr.ip());
        info.secured = session.tls.is_some();
        let initial = initial.as_ref().map(|d| d.expose_secret().as_slice());
        let (mut proxy, mut step) = Proxy::start(client, mechanism, &info, initial).await;
        let result = loop {
            match step {
                ProxyStep::Done(r) => break r,
                ProxyStep::Challenge(c) => match channel.challenge(&c).await {
                    Ok(response) => step = proxy.respond(response).await,
                    // The session ended meanwhile: nobody waits for a reply.
                    Err(_) => break AuthResult::failure(AuthStatus::Cancelled),
                },
            }
        };
        if let Some(m) = metrics {
            let outcome = match result.status {
                AuthStatus::Success => Some("ok"),
                AuthStatus::Invalid => Some("invalid"),
                AuthStatus::TempFail => Some("failure"),
                _ => None,
            };
            if let Some(o) = outcome {
                m.store(self.name(), o, started.elapsed());
            }
        }
        result
    }
}

/// XOAUTH2 and OAUTHBEARER: the mechanisms whose credential is a bearer token.
pub fn is_token_mechanism(mechanism: &str) -> bool {
    mechanism.eq_ignore_ascii_case("XOAUTH2") || mechanism.eq_ignore_ascii_case("OAUTHBEARER")
}

/// Two stores side by side (`[auth.oauth]` beside the password store): the request's
/// mechanism picks one. Secret lookups (SCRAM) always go to the password store.
pub struct ByMechanism {
    /// Checks bearer tokens (XOAUTH2, OAUTHBEARER).
    pub tokens: Arc<dyn smtp_server::Authenticator>,
    /// Checks everything else.
    pub passwords: Arc<dyn smtp_server::Authenticator>,
}

impl smtp_server::Authenticator for ByMechanism {
    fn authenticate(
        &self,
        session: &smtp_server::Session,
        request: smtp_auth::AuthRequest,
    ) -> smtp_server::BoxFuture<smtp_auth::Verdict> {
        if is_token_mechanism(&request.mechanism) {
            self.tokens.authenticate(session, request)
        } else {
            self.passwords.authenticate(session, request)
        }
    }

    fn lookup(
        &self,
        session: &smtp_server::Session,
        request: smtp_auth::LookupRequest,
    ) -> smtp_server::BoxFuture<smtp_auth::LookupResult> {
        self.passwords.lookup(session, request)
    }
}

/// A provider measured: each request it answers counts in
/// `smtpd_auth_store_requests_total{store,outcome}` and its latency histogram. It sits under
/// the credential cache, so only the requests that reach the store count.
#[derive(Clone)]
pub struct Measured<P> {
    inner: P,
    store: &'static str,
    metrics: Arc<Metrics>,
}

impl<P> std::fmt::Debug for Measured<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Measured")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<P> Measured<P> {
    /// Measures `inner` as `store`.
    pub fn new(inner: P, store: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            store,
            metrics,
        }
    }
}

impl<P> Service<AuthRequest> for Measured<P>
where
    P: Service<AuthRequest, Response = AuthDecision> + Clone + Send + 'static,
    P::Future: Send,
    P::Error: Send,
{
    type Response = AuthDecision;
    type Error = P::Error;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, P::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), P::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        // The clone that was made ready answers; a fresh clone takes its place.
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let (store, metrics) = (self.store, self.metrics.clone());
        Box::pin(async move {
            let started = Instant::now();
            let answer = inner.call(req).await;
            let outcome = match &answer {
                Ok(AuthDecision::Ok) => "ok",
                Ok(AuthDecision::Invalid) => "invalid",
                Ok(AuthDecision::Locked) => "locked",
                _ => "failure",
            };
            metrics.store(store, outcome, started.elapsed());
            answer
        })
    }
}

/// A store's provider as [`store_authenticator`] takes it (and what its wrappers stay).
pub(crate) trait StoreProvider:
    tower_service::Service<
        smtp_auth::AuthRequest,
        Response = smtp_auth::AuthDecision,
        Future: Send,
        Error: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> StoreProvider for T where
    T: tower_service::Service<
            smtp_auth::AuthRequest,
            Response = smtp_auth::AuthDecision,
            Future: Send,
            Error: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The authenticator over a store's provider, as every store gets it: measured when
/// `[metrics]` is on (only the requests that reach the store count), behind the credential
/// cache when it is on, with the users file's stored secrets for SCRAM when given.
pub(crate) fn store_authenticator<S: SecretStore>(
    provider: impl StoreProvider,
    store: &'static str,
    cache: Option<&CredentialCache>,
    metrics: Option<&Arc<Metrics>>,
    secrets: Option<S>,
) -> Arc<dyn Authenticator> {
    fn finish<S: SecretStore>(q: impl StoreProvider, secrets: Option<S>) -> Arc<dyn Authenticator> {
        match secrets {
            Some(s) => Arc::new(ProviderAuthenticator::new(q).with_secrets(s)),
            None => Arc::new(ProviderAuthenticator::new(q)),
        }
    }
    fn cached<S: SecretStore>(
        q: impl StoreProvider,
        cache: Option<&CredentialCache>,
        secrets: Option<S>,
    ) -> Arc<dyn Authenticator> {
        match cache {
            Some(c) => finish(c.layer().layer(q), secrets),
            None => finish(q, secrets),
        }
    }
    match metrics {
        Some(m) => cached(Measured::new(provider, store, m.clone()), cache, secrets),
        None => cached(provider, cache, secrets),
    }
}

/// What `[auth]` and `[auth.oauth]` compose into: the one authenticator every listener asks,
/// and the parts SIGHUP reloads.
pub(crate) struct Composed {
    /// The password store behind the credential cache and a [`Measured`] wrapper; with
    /// `[auth.oauth]`, the token store beside it ([`ByMechanism`]: the mechanism picks).
    pub authenticator: Arc<dyn Authenticator>,
    /// The credential cache, when `[auth] cache` is on.
    pub cache: Option<CredentialCache>,
    /// The token store, when `[auth.oauth]` is present.
    pub tokens: Option<smtp_auth_oauth::OAuthProvider>,
    /// The password store readiness checks ask, when it is not the users file.
    pub probe: Option<Probe>,
}

/// A password store `/readyz` asks: one in another process, or the HTTP service. (The users
/// file is read at start and on SIGHUP; `[auth.oauth]`'s identity provider is not asked: password
/// logins go on without it, and tokens signed with cached keys too.)
#[derive(Debug, Clone)]
pub enum Probe {
    /// Dovecot, LDAP or SQL.
    Remote(Remote),
    /// The HTTP authentication service.
    Http(smtp_auth_http::HttpAuthProvider),
}

impl Probe {
    /// The store's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Remote(r) => r.name(),
            Self::Http(_) => "http",
        }
    }

    /// Whether the store answers now.
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Self::Remote(r) => r.ping().await,
            Self::Http(h) => h.ping().await,
        }
    }
}

/// Builds the password store `[auth] backend` names (the users file given loaded, or the
/// HTTP service, or `remote`) and the token store of `[auth.oauth]`, as one authenticator.
pub(crate) fn compose(
    config: &crate::config::Config,
    users: Option<&crate::users::FileUsers>,
    remote: Option<&Remote>,
    offered: &[String],
    metrics: Option<&Arc<Metrics>>,
) -> Result<Composed, String> {
    let keys = config.auth.cache();
    let cache = keys.enabled.then(|| {
        let mut config = smtp_auth::CacheConfig::default();
        config.ttl = Duration::from_secs(keys.ttl_secs);
        config.negative_ttl = Duration::from_secs(keys.negative_ttl_secs);
        config.max_entries = keys.max_entries;
        CredentialCache::new(config)
    });
    if let (Some(m), Some(c)) = (metrics, &cache) {
        m.watch_cache(c.clone());
    }
    let mut probe = remote.cloned().map(Probe::Remote);
    let authenticator: Arc<dyn Authenticator> = match (&config.auth, users) {
        (AuthSection::File { users_file, .. }, Some(users)) => {
            tracing::info!(
                users = users.len(),
                file = %users_file.display(),
                workers = users.pool().workers(),
                cache = keys.enabled,
                "users loaded"
            );
            let decides = store_authenticator(
                users.clone(),
                "file",
                cache.as_ref(),
                metrics,
                Some(users.clone()),
            );
            // App passwords: the label of the credential a login matched.
            Arc::new(crate::users::Labelled {
                inner: decides,
                users: users.clone(),
            })
        }
        (
            AuthSection::Http {
                url,
                bearer_token,
                timeout_ms,
                send_authzid,
                ..
            },
            _,
        ) => {
            let p = smtp_auth_http::HttpAuthProvider::builder(url.clone())
                .bearer_token(bearer_token.clone())
                .timeout(Duration::from_millis(*timeout_ms))
                .send_authzid(*send_authzid)
                .build()
                .map_err(|e| format!("auth.url: {e}"))?;
            probe = Some(Probe::Http(p.clone()));
            store_authenticator(p, "http", cache.as_ref(), metrics, None::<NoSecrets>)
        }
        (AuthSection::Dovecot { .. } | AuthSection::Ldap(_) | AuthSection::Sql(_), _) => {
            match remote {
                Some(r) => {
                    tokio::spawn({
                        let (r, offered) = (r.clone(), offered.to_vec());
                        async move { r.report(offered).await }
                    });
                    r.authenticator(cache.as_ref(), metrics)
                }
                None => return Err("auth: the store is not configured".into()),
            }
        }
        (AuthSection::File { .. }, None) => return Err("auth.users_file: not loaded".into()),
    };
    // `[auth.oauth]`: XOAUTH2 and OAUTHBEARER go to the token store, the rest to the password
    // store; the limiter, metrics and sender binding wrap both alike.
    let mut tokens_kept = None;
    let authenticator = match config.auth.oauth() {
        Some(o) => {
            let mut c = o
                .provider_config(Duration::from_secs(config.server.auth_timeout_secs))
                .map_err(|(key, why)| format!("auth.oauth.{key}: {why}"))?;
            let https = o.jwks_url.starts_with("https://")
                || o.introspection_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://"));
            if o.ca_file.is_some() || https {
                let tls = crate::tls::client_config(o.ca_file.as_deref())
                    .map_err(|e| format!("auth.oauth.ca_file: {e}"))?;
                c.tls = Some((*tls).clone());
            }
            let tokens =
                smtp_auth_oauth::OAuthProvider::new(c).map_err(|e| format!("auth.oauth: {e}"))?;
            tracing::info!(jwks = %o.jwks_url, introspection = ?o.introspection_url, issuer = ?o.issuer, "OAuth tokens checked in the server");
            tokens_kept = Some(tokens.clone());
            // No credential cache: the store remembers a verified token until its own `exp`,
            // which the cache's TTL would not honour.
            let tokens = store_authenticator(tokens, "oauth", None, metrics, None::<NoSecrets>);
            Arc::new(ByMechanism {
                tokens,
                passwords: authenticator,
            }) as Arc<dyn Authenticator>
        }
        None => authenticator,
    };
    Ok(Composed {
        authenticator,
        cache,
        tokens: tokens_kept,
        probe,
    })
}

/// The offered mechanisms as the stores need them: SCRAM with the users file's secret (so an
/// unknown user's fake salt stays the same across restarts), XOAUTH2 and OAUTHBEARER with
/// `[auth.oauth]`'s scope and discovery URL in their error challenge (RFC 7628 §3.2.2).
pub(crate) fn tailor_mechanisms(
    registry: &mut smtp_auth::Registry,
    config: &crate::config::Config,
    users: Option<&crate::users::FileUsers>,
) {
    if let Some(k) = users.map(crate::users::FileUsers::scram_secret) {
        // Unknown users' fake salts stay the same across restarts.
        for (name, plus) in [("SCRAM-SHA-256", false), ("SCRAM-SHA-256-PLUS", true)] {
            if registry.contains(name) {
                let k = k.clone();
                let _ = registry.register(name, move || {
                    let m = if plus {
                        smtp_auth::mechanism::ScramSha256Server::plus()
                    } else {
                        smtp_auth::mechanism::ScramSha256Server::default()
                    };
                    Box::new(m.with_secret(k.clone()))
                });
            }
        }
    }
    if let Some(o) = config.auth.oauth() {
        // A refused token's error challenge tells the client the scope and where its
        // identity provider is (RFC 7628 §3.2.2).
        let scope = (!o.scopes.is_empty()).then(|| o.scopes.join(" "));
        for (name, kind) in [
            ("XOAUTH2", smtp_auth::mechanism::OAuthKind::XOAuth2),
            ("OAUTHBEARER", smtp_auth::mechanism::OAuthKind::OAuthBearer),
        ] {
            if registry.contains(name) {
                let (scope, openid) = (scope.clone(), o.openid_configuration.clone());
                let _ = registry.register(name, move || {
                    Box::new(
                        smtp_auth::mechanism::OAuthServer::new(kind)
                            .with_error_details(scope.as_deref(), openid.as_deref()),
                    )
                });
            }
        }
    }
}

/// A store's secret lookup (SCRAM keys) as [`store_authenticator`] takes it.
pub(crate) trait SecretStore:
    tower_service::Service<
        smtp_auth::LookupRequest,
        Response = smtp_auth::LookupResult,
        Future: Send,
        Error: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> SecretStore for T where
    T: tower_service::Service<
            smtp_auth::LookupRequest,
            Response = smtp_auth::LookupResult,
            Future: Send,
            Error: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The secrets of a store without any (its `None`'s type).
pub(crate) type NoSecrets = smtp_auth::MemoryProvider;
