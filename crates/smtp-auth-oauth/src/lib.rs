//! # smtp-auth-oauth
//!
//! OAuth 2 bearer tokens checked by the server itself, for the XOAUTH2 and OAUTHBEARER
//! mechanisms (RFC 7628): an [`AuthProvider`](smtp_auth::AuthProvider) that validates a JWT
//! access token against the identity provider's published keys (JWKS), so that nothing but a
//! token issued for this server, still valid, with the required scopes and **for the user who
//! logs in** gets through. A token for bob presented as alice is refused.
//!
//! Each check:
//! 1. reads the token's header: the algorithm must be RS256, ES256 or EdDSA (never `none` or
//!    HMAC), and its `kid` names the key;
//! 2. finds the key in the JWKS fetched from `jwks_url` (over HTTPS; `http://` only for
//!    loopback addresses), cached as long as the response's `Cache-Control: max-age` allows
//!    (5 minutes without one, at most a day), and fetched again for an unknown `kid` at most
//!    once per `refetch_interval` (a minute), so a rotated key is picked up and a flood of
//!    made-up `kid`s does not flood the identity provider;
//! 3. verifies the signature (`jsonwebtoken`, its signature checks done by `ring` with the
//!    default `ring` feature, see [`ring_checks_signatures`], else by RustCrypto: no
//!    hand-written signature code), `exp` and `nbf` with a small leeway, `iss` against
//!    `issuer` and `aud` against `audience` when configured;
//! 4. requires every scope of `scopes` in the token's `scope` (space-separated) or `scp`
//!    (a list or a string) claim;
//! 5. compares the `username_claim` (default `email`) with the SASL user name: equal, the
//!    domain of an address compared case-insensitively.
//!
//! The decision is `Ok`, `Invalid` (any check failed: the mechanism answers with the RFC 7628
//! error challenge, then 535) or `Failure` (the JWKS could not be fetched: 454, retry later).
//! The token never appears in `Debug` output or logs.
//!
//! ```no_run
//! use smtp_auth_oauth::{OAuthConfig, OAuthProvider};
//! use smtp_server::{AcceptAll, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mut config = OAuthConfig::new("https://idp.example.org/realms/mail/protocol/openid-connect/certs");
//! config.issuer = Some("https://idp.example.org/realms/mail".into());
//! config.audience = vec!["smtp".into()];
//! config.scopes = vec!["email".into()];
//! let tokens = OAuthProvider::new(config).expect("a valid configuration");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! Server::new(ServerConfig::default(), AcceptAll)
//!     .provider(tokens)
//!     .serve_with_shutdown(listener, async {})
//!     .await
//! # }
//! ```

#![forbid(unsafe_code)]

#[cfg(feature = "ring")]
mod ring_jwt;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use smtp_auth::{AuthDecision, AuthRequest};
use tower_service::Service;

/// The largest JWKS document read.
const MAX_JWKS: usize = 1024 * 1024;
/// How long a JWKS is used when its response says nothing about caching.
const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// The longest a JWKS is used without asking again, whatever the response says.
const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// The signature algorithms accepted (asymmetric only: never `none` or a shared secret).
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// What to check a token against. Built with [`OAuthConfig::new`] and its fields set.
#[derive(Clone)]
#[non_exhaustive]
pub struct OAuthConfig {
    /// Where the identity provider publishes its keys (`https://`, or `http://` to a loopback
    /// address).
    pub jwks_url: String,
    /// The `iss` every token must carry; `None`: not checked.
    pub issuer: Option<String>,
    /// The `aud` values accepted (a token must name one); empty: not checked.
    pub audience: Vec<String>,
    /// Scopes every token must grant (`scope` or `scp` claim).
    pub scopes: Vec<String>,
    /// The claim that names the user (`email`, `preferred_username` or `sub`).
    pub username_claim: String,
    /// Clock skew allowed on `exp` and `nbf` (default 60 s).
    pub leeway: Duration,
    /// Bound on fetching the JWKS (default 1200 ms).
    pub timeout: Duration,
    /// The least time between two fetches caused by an unknown `kid` (default 60 s).
    pub refetch_interval: Duration,
    /// A rustls configuration for `https` (default: the crate's provider and roots).
    pub tls: Option<rustls::ClientConfig>,
    /// Token introspection (RFC 7662) for opaque tokens (and all tokens when `jwks_url` is
    /// empty).
    pub introspection: Option<Introspection>,
    /// The longest a verdict is remembered: a verified JWT, an introspection answer (default 5
    /// minutes; never past the token's `exp`). Zero remembers nothing: every login checks its
    /// token (a revoked token is refused at once by introspection, at its `exp` for a JWT).
    pub remember_for: Duration,
}

/// Where and as whom to introspect tokens (RFC 7662): a `POST` of `token=…` with HTTP Basic
/// client credentials. `Debug` never shows the secret.
#[derive(Clone)]
#[non_exhaustive]
pub struct Introspection {
    /// The introspection endpoint (`https://`, `http://` to a loopback address only).
    pub url: String,
    /// The client id this server authenticates with.
    pub client_id: String,
    /// Its secret.
    pub client_secret: smtp_auth::Password,
}

impl Introspection {
    /// The endpoint and this server's client credentials.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>, client_secret: &str) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            client_secret: smtp_auth::Password::new(client_secret.to_owned()),
        }
    }
}

impl fmt::Debug for Introspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Introspection")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .field("username_claim", &self.username_claim)
            .field("leeway", &self.leeway)
            .field("timeout", &self.timeout)
            .field("introspection", &self.introspection)
            .finish_non_exhaustive()
    }
}

impl OAuthConfig {
    /// Keys from `jwks_url`, no issuer, audience or scope required, `email` as the user
    /// claim. Set the fields to require more.
    pub fn new(jwks_url: impl Into<String>) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            issuer: None,
            audience: Vec::new(),
            scopes: Vec::new(),
            username_claim: "email".into(),
            leeway: Duration::from_secs(60),
            timeout: Duration::from_millis(1200),
            refetch_interval: Duration::from_secs(60),
            tls: None,
            introspection: None,
            remember_for: Duration::from_secs(300),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The JWKS URL is not an `https` URL (or `http` to a loopback address).
    Url(String),
    /// The TLS configuration could not be made.
    Tls(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(why) => write!(f, "jwks_url: {why}"),
            Self::Tls(why) => write!(f, "TLS: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks that `url` is `https://`, or `http://` to a loopback address (a sidecar, a test).
pub fn check_url(url: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ConfigError::Url(e.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| ConfigError::Url("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        Some("http") => Err(ConfigError::Url(
            "http:// is allowed for loopback addresses only: use https://".into(),
        )),
        _ => Err(ConfigError::Url("the scheme must be https".into())),
    }
}

/// The keys last fetched.
struct Keys {
    by_kid: HashMap<Option<String>, DecodingKey>,
    fetched: Instant,
    until: Instant,
}

/// The most verdicts (verified JWTs, introspection answers) kept.
const MAX_VERDICTS: usize = 10_000;

/// An introspection endpoint, ready to call.
struct Introspector {
    url: Uri,
    /// `Basic base64(id:secret)`, marked sensitive.
    authorization: http::HeaderValue,
}

/// A verdict kept until `until`, for one SASL user and token (by digest).
type Verdicts = HashMap<[u8; 32], (Result<(), Refused>, Instant)>;

struct Inner {
    config: OAuthConfig,
    url: Option<Uri>,
    introspector: Option<Introspector>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    keys: tokio::sync::Mutex<Option<Keys>>,
    verdicts: std::sync::Mutex<Verdicts>,
    fetches: std::sync::atomic::AtomicU64,
    introspections: std::sync::atomic::AtomicU64,
}

/// The token checker (see the [crate documentation](crate)). Clones share the key cache.
#[derive(Clone)]
pub struct OAuthProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Why a JWKS could not be had.
#[derive(Debug)]
struct FetchError(String);

/// Why a token was refused (logged; the client gets the RFC 7628 error challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    Malformed,
    Algorithm,
    UnknownKey,
    Claims(String),
    Scope(String),
    User,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("not a JWT"),
            Self::Algorithm => f.write_str("algorithm not accepted"),
            Self::UnknownKey => f.write_str("signed with a key the JWKS does not hold"),
            Self::Claims(why) => write!(f, "{why}"),
            Self::Scope(s) => write!(f, "scope {s} not granted"),
            Self::User => f.write_str("issued for another user"),
        }
    }
}

/// The provider's rustls crypto provider: the process default, else the feature's.
fn crypto() -> Result<Arc<rustls::crypto::CryptoProvider>, ConfigError> {
    if let Some(p) = rustls::crypto::CryptoProvider::get_default() {
        return Ok(p.clone());
    }
    #[cfg(feature = "ring")]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    Err(ConfigError::Tls(
        "no rustls crypto provider: enable `ring` or `aws-lc-rs`, or pass tls".into(),
    ))
}

fn default_tls() -> Result<rustls::ClientConfig, ConfigError> {
    #[allow(unused_mut)]
    let mut roots = rustls::RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(crypto()?)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache`: 0).
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for d in value.split(',').map(str::trim) {
        let d = d.to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    age
}

/// The values of a scope claim: `scope` as a space-separated string, `scp` as a list or a
/// string.
fn granted(claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(a)) => {
                out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    out
}

/// `application/x-www-form-urlencoded` of a value: unreserved characters as they are, every
/// other octet percent-encoded.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the token's user (`claimed`) is the SASL user: equal, or the same address with
/// the domain in another case.
fn same_user(claimed: &str, sasl: &str) -> bool {
    match (claimed.rsplit_once('@'), sasl.rsplit_once('@')) {
        (Some((cl, cd)), Some((sl, sd))) => cl == sl && cd.eq_ignore_ascii_case(sd),
        _ => claimed == sasl,
    }
}

/// Makes `ring` check JWT signatures in this process (the `ring` feature) and says whether it
/// does. `jsonwebtoken` checks signatures through one provider per process, chosen at the
/// first signature it signs or checks: [`OAuthProvider::new`] calls this, so `ring` checks
/// them unless the application installed a `jsonwebtoken` provider of its own, or used
/// `jsonwebtoken` before (then that choice stands, RustCrypto by default, about eight times
/// slower for RS256). An application that uses `jsonwebtoken` itself calls this first.
pub fn ring_checks_signatures() -> bool {
    #[cfg(feature = "ring")]
    return ring_jwt::install();
    #[cfg(not(feature = "ring"))]
    false
}

impl OAuthProvider {
    /// A provider for `config`; no request is made until the first token.
    pub fn new(config: OAuthConfig) -> Result<Self, ConfigError> {
        let ring = ring_checks_signatures();
        tracing::debug!(
            target: "smtp_auth_oauth",
            backend = if ring { "ring" } else { "jsonwebtoken's provider" },
            "JWT signatures checked by"
        );
        let url = match config.jwks_url.as_str() {
            "" => None,
            u => Some(check_url(u)?),
        };
        let introspector = match &config.introspection {
            Some(i) => {
                use base64::Engine as _;
                let url = check_url(&i.url)?;
                let pair = format!("{}:{}", i.client_id, i.client_secret.expose_secret());
                let mut authorization = http::HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                ))
                .map_err(|_| ConfigError::Url("client_id: not a header value".into()))?;
                authorization.set_sensitive(true);
                Some(Introspector { url, authorization })
            }
            None => None,
        };
        if url.is_none() && introspector.is_none() {
            return Err(ConfigError::Url(
                "give a JWKS URL or an introspection endpoint".into(),
            ));
        }
        let tls = match &config.tls {
            Some(t) => t.clone(),
            None => default_tls()?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                url,
                introspector,
                client,
                keys: tokio::sync::Mutex::new(None),
                verdicts: std::sync::Mutex::new(HashMap::new()),
                fetches: std::sync::atomic::AtomicU64::new(0),
                introspections: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// JWKS fetches made so far (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.inner
            .fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets the keys and every remembered verdict (on SIGHUP): the next token fetches the
    /// JWKS again and is checked afresh.
    pub async fn clear(&self) {
        *self.inner.keys.lock().await = None;
        self.inner
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Introspection requests made so far (answers reused from the cache are not counted).
    pub fn introspections(&self) -> u64 {
        self.inner
            .introspections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// GETs the JWKS: its keys and how long they may be used.
    async fn fetch(&self) -> Result<Keys, FetchError> {
        let inner = &self.inner;
        inner
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(url) = inner.url.clone() else {
            return Err(FetchError("no JWKS URL".into()));
        };
        let request = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError(e.to_string()))?;
        let answer = tokio::time::timeout(inner.config.timeout, async {
            let response = inner
                .client
                .request(request)
                .await
                .map_err(|e| FetchError(format!("request failed: {e}")))?;
            let status = response.status();
            let cache = response
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .and_then(max_age);
            let body = Limited::new(response.into_body(), MAX_JWKS)
                .collect()
                .await
                .map_err(|_| FetchError("body unreadable or over 1 MiB".into()))?
                .to_bytes();
            Ok::<_, FetchError>((status, cache, body))
        })
        .await
        .map_err(|_| FetchError("no answer in time".into()))??;
        let (status, cache, body) = answer;
        if !status.is_success() {
            return Err(FetchError(format!("status {status}")));
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| FetchError(format!("not a JWKS: {e}")))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            match DecodingKey::from_jwk(jwk) {
                Ok(k) => {
                    by_kid.insert(jwk.common.key_id.clone(), k);
                }
                Err(e) => {
                    tracing::debug!(target: "smtp_auth_oauth", kid = ?jwk.common.key_id, error = %e, "JWK skipped")
                }
            }
        }
        let now = Instant::now();
        Ok(Keys {
            by_kid,
            fetched: now,
            until: now + cache.unwrap_or(DEFAULT_CACHE).min(MAX_CACHE),
        })
    }

    /// The key named `kid`: from the cache while it is fresh, fetched again when it is stale
    /// or (at most once per `refetch_interval`) when it does not hold `kid`.
    async fn key(&self, kid: &Option<String>) -> Result<Option<DecodingKey>, FetchError> {
        let mut keys = self.inner.keys.lock().await;
        let now = Instant::now();
        let (fresh, held, recent) = match keys.as_ref() {
            Some(k) => (
                now < k.until,
                k.by_kid.get(kid).cloned(),
                now.saturating_duration_since(k.fetched) < self.inner.config.refetch_interval,
            ),
            None => (false, None, false),
        };
        if let (true, Some(k)) = (fresh, &held) {
            return Ok(Some(k.clone()));
        }
        if fresh && recent {
            // An unknown kid moments after a fetch: not worth asking again yet.
            return Ok(None);
        }
        match self.fetch().await {
            Ok(k) => {
                let found = k.by_kid.get(kid).cloned();
                *keys = Some(k);
                Ok(found)
            }
            // Stale keys still hold a key the identity provider could not be asked about.
            Err(e) if held.is_some() => {
                tracing::warn!(target: "smtp_auth_oauth", error = %e.0, "JWKS refresh failed: the cached keys stay in use");
                Ok(held)
            }
            Err(e) => Err(e),
        }
    }

    /// Checks `token` for the SASL user `user`: `Ok(())` or why it is refused; `Err(Err)`
    /// when the JWKS could not be had.
    async fn verify(&self, token: &str, user: &str) -> Result<Result<(), Refused>, FetchError> {
        let c = &self.inner.config;
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) if self.inner.url.is_some() => h,
            // An opaque token, or no JWKS: the introspection endpoint decides.
            _ if self.inner.introspector.is_some() => return self.introspect(token, user).await,
            _ => return Ok(Err(Refused::Malformed)),
        };
        if !ALGORITHMS.contains(&header.alg) {
            return Ok(Err(Refused::Algorithm));
        }
        // A token verified for this user before is not verified again until its `exp` (at
        // most the cap): mail clients reuse one access token for many sessions.
        let remembered = Self::verdict_key(token, user);
        let now = Instant::now();
        if let Some(Ok(())) = self.kept(&remembered, now) {
            return Ok(Ok(()));
        }
        let Some(key) = self.key(&header.kid).await? else {
            return Ok(Err(Refused::UnknownKey));
        };
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = c.leeway.as_secs();
        v.validate_nbf = true;
        match &c.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        if c.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&c.audience);
        }
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v) {
            Ok(d) => d.claims,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                let why = match e.kind() {
                    K::ExpiredSignature => "expired".to_owned(),
                    K::ImmatureSignature => "not valid yet".to_owned(),
                    K::InvalidIssuer => "wrong issuer".to_owned(),
                    K::InvalidAudience => "wrong audience".to_owned(),
                    K::InvalidSignature => "bad signature".to_owned(),
                    K::MissingRequiredClaim(c) => format!("no {c} claim"),
                    other => format!("{other:?}"),
                };
                return Ok(Err(Refused::Claims(why)));
            }
        };
        let verdict = self.scopes_and_user(&claims, user, &c.username_claim);
        if verdict.is_ok() {
            let exp = claims.get("exp").and_then(Value::as_u64);
            self.keep(remembered, Ok(()), exp, now);
        }
        Ok(verdict)
    }

    /// The checks of every token, once its claims are trusted: the scopes and the user.
    fn scopes_and_user(
        &self,
        claims: &Map<String, Value>,
        user: &str,
        username_claim: &str,
    ) -> Result<(), Refused> {
        let scopes = granted(claims);
        if let Some(missing) = self
            .inner
            .config
            .scopes
            .iter()
            .find(|s| !scopes.contains(s))
        {
            return Err(Refused::Scope(missing.clone()));
        }
        match claims.get(username_claim).and_then(Value::as_str) {
            Some(claimed) if same_user(claimed, user) => Ok(()),
            _ => Err(Refused::User),
        }
    }

    /// The key a verdict is kept under: a digest of the token and the SASL user (the token
    /// itself is not kept).
    fn verdict_key(token: &str, user: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::new()
            .chain_update(token.as_bytes())
            .chain_update([0])
            .chain_update(user.as_bytes())
            .finalize()
            .into()
    }

    /// A verdict kept for `key`, while it holds.
    fn kept(&self, key: &[u8; 32], now: Instant) -> Option<Result<(), Refused>> {
        let cache = self
            .inner
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some((verdict, until)) if now < *until => Some(verdict.clone()),
            _ => None,
        }
    }

    /// Keeps `verdict` for `key` until the token's `exp` (unix seconds), at most the cap.
    fn keep(&self, key: [u8; 32], verdict: Result<(), Refused>, exp: Option<u64>, now: Instant) {
        let inner = &self.inner;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let left = exp.map_or(inner.config.remember_for, |e| {
            Duration::from_secs(e.saturating_sub(unix))
        });
        let keep_for = left.min(inner.config.remember_for);
        if keep_for.is_zero() {
            // `remember_for` zero: every session checks its token.
            return;
        }
        let until = now + keep_for;
        let mut cache = inner.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_VERDICTS {
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= MAX_VERDICTS {
                cache.clear();
            }
        }
        cache.insert(key, (verdict, until));
    }

    /// Asks the introspection endpoint about `token` (RFC 7662), or reuses its answer for
    /// this user until the token's `exp` (at most `remember_for`).
    async fn introspect(&self, token: &str, user: &str) -> Result<Result<(), Refused>, FetchError> {
        let inner = &self.inner;
        let Some(i) = &inner.introspector else {
            return Ok(Err(Refused::Malformed));
        };
        let key = Self::verdict_key(token, user);
        let now = Instant::now();
        if let Some(verdict) = self.kept(&key, now) {
            return Ok(verdict);
        }
        inner
            .introspections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let form = format!("token={}&token_type_hint=access_token", form_encode(token));
        let request = Request::post(i.url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, i.authorization.clone())
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| FetchError(e.to_string()))?;
        let (status, body) = tokio::time::timeout(inner.config.timeout, async {
            let response = inner
                .client
                .request(request)
                .await
                .map_err(|e| FetchError(format!("introspection failed: {e}")))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_JWKS)
                .collect()
                .await
                .map_err(|_| FetchError("introspection body unreadable".into()))?
                .to_bytes();
            Ok::<_, FetchError>((status, body))
        })
        .await
        .map_err(|_| FetchError("introspection: no answer in time".into()))??;
        if !status.is_success() {
            return Err(FetchError(format!("introspection: status {status}")));
        }
        let claims: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| FetchError("introspection: not a JSON object".into()))?;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let exp = claims.get("exp").and_then(Value::as_u64);
        let verdict = self.introspected_verdict(&claims, user, unix);
        // Kept until the token expires, never longer than the cap; a refusal as long.
        self.keep(key, verdict.clone(), exp, now);
        Ok(verdict)
    }

    /// The checks of an introspection answer (`unix`: the time now).
    fn introspected_verdict(
        &self,
        claims: &Map<String, Value>,
        user: &str,
        unix: u64,
    ) -> Result<(), Refused> {
        let c = &self.inner.config;
        if claims.get("active").and_then(Value::as_bool) != Some(true) {
            return Err(Refused::Claims("not active".into()));
        }
        let leeway = c.leeway.as_secs();
        if claims
            .get("exp")
            .and_then(Value::as_u64)
            .is_some_and(|e| e.saturating_add(leeway) < unix)
        {
            return Err(Refused::Claims("expired".into()));
        }
        if claims
            .get("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > unix.saturating_add(leeway))
        {
            return Err(Refused::Claims("not valid yet".into()));
        }
        if let Some(iss) = &c.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(iss)
        {
            return Err(Refused::Claims("wrong issuer".into()));
        }
        if !c.audience.is_empty() {
            let aud: Vec<&str> = match claims.get("aud") {
                Some(Value::String(a)) => vec![a],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !aud.iter().any(|a| c.audience.iter().any(|w| w == a)) {
                return Err(Refused::Claims("wrong audience".into()));
            }
        }
        // RFC 7662 names the user `username`; the configured claim first.
        let claim = if claims.contains_key(&c.username_claim) {
            c.username_claim.as_str()
        } else {
            "username"
        };
        self.scopes_and_user(claims, user, claim)
    }

    /// Decides one request: the password is the bearer token, the username the SASL user.
    pub async fn check(&self, req: &AuthRequest) -> AuthDecision {
        let token = req.password.expose_secret();
        match self.verify(token, &req.username).await {
            Ok(Ok(())) => AuthDecision::Ok,
            Ok(Err(why)) => {
                tracing::info!(target: "smtp_auth_oauth", user = %req.username, reason = %why, "token refused");
                AuthDecision::Invalid
            }
            Err(e) => {
                tracing::warn!(target: "smtp_auth_oauth", url = %self.inner.config.jwks_url, error = %e.0, "identity provider unavailable");
                AuthDecision::Failure
            }
        }
    }
}

impl Service<AuthRequest> for OAuthProvider {
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.check(&req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://idp.example.org/certs").is_ok());
        assert!(check_url("http://127.0.0.1:8080/certs").is_ok());
        assert!(check_url("http://[::1]:8080/certs").is_ok());
        assert!(check_url("http://localhost/certs").is_ok());
        assert_eq!(
            check_url("http://idp.example.org/certs").unwrap_err(),
            ConfigError::Url("http:// is allowed for loopback addresses only: use https://".into())
        );
        assert!(check_url("ftp://idp.example.org/").is_err());
    }

    #[test]
    fn cache_control_scopes_and_users() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"scope":"openid email","scp":["smtp.send"]}"#).unwrap();
        assert_eq!(granted(&claims), ["openid", "email", "smtp.send"]);
        assert!(same_user("alice@Example.ORG", "alice@example.org"));
        assert!(!same_user("Alice@example.org", "alice@example.org"));
        assert!(!same_user("bob@example.org", "alice@example.org"));
        assert!(same_user("alice", "alice"));
        assert!(!same_user("alice", "alice@example.org"));
    }
}

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
