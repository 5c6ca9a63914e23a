//! # smtp-auth-http
//!
//! An [`AuthProvider`](smtp_auth::AuthProvider) that asks an HTTP service, the Rust form of the
//! `smtpauth`'s `newHTTPAuthProvider(url, bearerToken = "", timeoutMs = 1200)`.
//!
//! Each decision is one `POST` to the URL with `Content-Type: application/json`, the body
//! `{"username":"...","password":"...","mechanism":"...","remoteIp":"...","heloName":"..."}`
//! and `Authorization: Bearer <token>` when a token is set. With
//! [`send_authzid(true)`](HttpAuthProviderBuilder::send_authzid) the body also carries
//! `"authzid"`, and the service decides proxy logins; without it a request to act as another
//! user is refused without a request. The answer maps to a decision:
//!
//! | response | decision |
//! | --- | --- |
//! | 200 with `{"ok":true}` | `Ok` |
//! | 200 with `{"ok":false}` | `Invalid` |
//! | 401, 403 | `Invalid` |
//! | 200 with another or malformed body, a body over 64 KiB | `Failure` |
//! | 5xx and every other status | `Failure` |
//! | connection refused or reset, DNS failure, TLS failure | `Failure` |
//! | no complete answer within the timeout (connect and whole response; 1200 ms by default) | `Failure` |
//!
//! Connections are pooled and kept alive (hyper-util's client), so a burst of logins reuses
//! them. `http` and `https` URLs both work (hyper-rustls with the roots and the crypto provider
//! the crate's features name, or your own rustls configuration: features `ring` (default) or
//! `aws-lc-rs`, `webpki-roots` (default) or `native-roots`, `tls12` (default); a process
//! default provider the application installed is used first). The password and the token never appear in `Debug` output, errors or
//! logs, and the request body that held the password is zeroized once the request is done.
//!
//! ## Plugged into a server
//!
//! ```
//! use smtp_auth_http::HttpAuthProvider;
//! use smtp_server::{AcceptAll, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let provider = HttpAuthProvider::builder("http://127.0.0.1:8080/smtp-auth")
//!     .bearer_token("s3cret-token")
//!     .build()
//!     .expect("a valid URL");
//! assert!(!format!("{provider:?}").contains("s3cret-token"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! Server::new(ServerConfig::default(), AcceptAll)
//!     .provider(provider)
//!     .serve_with_shutdown(listener, async {})
//!     .await
//! # }
//! ```

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use smtp_auth::{AuthDecision, AuthRequest, Password};
use tower_service::Service;
use zeroize::Zeroize;

/// `smtpauth`'s default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1200);
/// The largest response body read; a larger one is a `Failure`.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why a provider could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The URL does not parse or is not `http`/`https` with a host.
    InvalidUrl(String),
    /// The TLS configuration could not be built.
    Tls(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(why) => write!(f, "invalid auth URL: {why}"),
            Self::Tls(why) => write!(f, "TLS configuration: {why}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Builds an [`HttpAuthProvider`].
pub struct HttpAuthProviderBuilder {
    url: String,
    token: Option<Password>,
    timeout: Duration,
    tls: Option<rustls::ClientConfig>,
    max_idle_per_host: usize,
    send_authzid: bool,
}

impl fmt::Debug for HttpAuthProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAuthProviderBuilder")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpAuthProviderBuilder {
    /// Sends `Authorization: Bearer <token>`; an empty token sends none (`smtpauth`'s default).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        let t: String = token.into();
        self.token = (!t.is_empty()).then(|| Password::new(t));
        self
    }

    /// The time allowed for connecting and receiving the whole response (default 1200 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A rustls client configuration for `https` URLs (default: Mozilla's roots).
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Let the service decide proxy logins: the JSON gets an extra `"authzid"` field (the
    /// authorization identity the client asked for, `""` for none), and the service's
    /// `{"ok":true}` means the user may act as it. Off by default, so the body is exactly
    /// `smtpauth`'s; then a request whose authzid names another user is refused (`Invalid`) without
    /// asking the service. Pair it with the server's `proxy_authorization(true)`.
    pub fn send_authzid(mut self, on: bool) -> Self {
        self.send_authzid = on;
        self
    }

    /// Idle keep-alive connections kept per host (default 64).
    pub fn max_idle_per_host(mut self, n: usize) -> Self {
        self.max_idle_per_host = n;
        self
    }

    /// The provider.
    pub fn build(self) -> Result<HttpAuthProvider, BuildError> {
        let url: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| BuildError::InvalidUrl(e.to_string()))?;
        match url.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(BuildError::InvalidUrl(
                    "the scheme must be http or https".into(),
                ));
            }
        }
        if url.host().is_none() {
            return Err(BuildError::InvalidUrl("no host".into()));
        }
        let tls = match self.tls {
            Some(c) => c,
            None => default_tls(url.scheme_str() == Some("https"))?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(self.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(HttpAuthProvider {
            inner: Arc::new(Inner {
                client,
                url,
                token: self.token,
                timeout: self.timeout,
                send_authzid: self.send_authzid,
            }),
        })
    }
}

/// The crypto provider of the default TLS configuration: the process's default when the
/// application installed one, else the one this crate's features name.
fn provider() -> Result<Arc<rustls::crypto::CryptoProvider>, BuildError> {
    if let Some(p) = rustls::crypto::CryptoProvider::get_default() {
        return Ok(p.clone());
    }
    #[cfg(feature = "ring")]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    Err(BuildError::Tls(
        "no rustls crypto provider: enable the `ring` or `aws-lc-rs` feature, install a \
         process default provider, or pass tls_config"
            .into(),
    ))
}

/// The roots of the default TLS configuration: Mozilla's (`webpki-roots`) and the system's
/// (`native-roots`), as the features say.
fn roots() -> Result<rustls::RootCertStore, BuildError> {
    #[allow(unused_mut)]
    let mut roots = rustls::RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "native-roots")]
    {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 && !found.errors.is_empty() {
            tracing::warn!(target: "smtp_auth_http", errors = found.errors.len(), "no system root certificate could be read");
        }
    }
    if roots.is_empty() {
        return Err(BuildError::Tls(
            "no root certificates: enable the `webpki-roots` or `native-roots` feature, or pass \
             tls_config"
                .into(),
        ));
    }
    Ok(roots)
}

/// The TLS configuration used when none is given; an `http` URL (`https` false) needs no
/// roots.
fn default_tls(https: bool) -> Result<rustls::ClientConfig, BuildError> {
    let roots = match roots() {
        Ok(r) => r,
        Err(_) if !https => rustls::RootCertStore::empty(),
        Err(e) => return Err(e),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider()?)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

struct Inner {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    token: Option<Password>,
    timeout: Duration,
    send_authzid: bool,
}

/// The HTTP authentication provider. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct HttpAuthProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpAuthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAuthProvider")
            .field("url", &redact_url(&self.inner.url.to_string()))
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// The URL without any `user:password@` part.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<redacted>@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The JSON body, field names exactly as `smtpauth` gives them.
#[derive(serde::Serialize)]
struct Body<'a> {
    username: &'a str,
    password: &'a str,
    mechanism: &'a str,
    #[serde(rename = "remoteIp")]
    remote_ip: &'a str,
    #[serde(rename = "heloName")]
    helo_name: &'a str,
    /// Only with `send_authzid(true)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    authzid: Option<&'a str>,
}

impl HttpAuthProvider {
    /// `smtpauth`'s constructor: `newHTTPAuthProvider(url, bearerToken = "", timeoutMs = 1200)`.
    pub fn new(url: &str, bearer_token: &str, timeout_ms: u64) -> Result<Self, BuildError> {
        Self::builder(url)
            .bearer_token(bearer_token)
            .timeout(Duration::from_millis(timeout_ms))
            .build()
    }

    /// A builder with `smtpauth`'s defaults (no token, 1200 ms).
    pub fn builder(url: impl Into<String>) -> HttpAuthProviderBuilder {
        HttpAuthProviderBuilder {
            url: url.into(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            tls: None,
            max_idle_per_host: 64,
            send_authzid: false,
        }
    }

    /// Asks the service about one request.
    pub async fn decide(&self, req: &AuthRequest) -> AuthDecision {
        let inner = &self.inner;
        let foreign = req
            .authzid
            .as_deref()
            .is_some_and(|z| !z.is_empty() && z != req.username);
        if foreign && !inner.send_authzid {
            // The service would not know who the user asked to act as.
            return AuthDecision::Invalid;
        }
        let json = match serde_json::to_vec(&Body {
            username: &req.username,
            password: req.password.expose_secret(),
            mechanism: &req.mechanism,
            remote_ip: &req.remote_ip,
            helo_name: &req.helo_name,
            authzid: inner
                .send_authzid
                .then(|| req.authzid.as_deref().unwrap_or("")),
        }) {
            Ok(j) => Bytes::from(j),
            Err(_) => return AuthDecision::Failure,
        };
        // Kept so the password's bytes can be wiped once hyper is done with its copy.
        let keep = json.clone();
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(inner.url.clone())
            .header(header::CONTENT_TYPE, "application/json");
        match self.authorization() {
            Ok(Some(v)) => builder = builder.header(header::AUTHORIZATION, v),
            Ok(None) => {}
            Err(()) => return AuthDecision::Failure,
        }
        let request = match builder.body(Full::new(json)) {
            Ok(r) => r,
            Err(_) => return AuthDecision::Failure,
        };
        let outcome = tokio::time::timeout(inner.timeout, async {
            let response = inner.client.request(request).await.map_err(|e| {
                tracing::warn!(error = %e, "auth service request failed");
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|_| tracing::warn!(%status, "auth service body unreadable or too large"))?
                .to_bytes();
            Ok::<_, ()>((status, body))
        })
        .await;
        wipe(keep);
        let decision = match outcome {
            Err(_) => {
                tracing::warn!(timeout = ?inner.timeout, "auth service timed out");
                AuthDecision::Failure
            }
            Ok(Err(())) => AuthDecision::Failure,
            Ok(Ok((status, body))) => map_response(status, &body),
        };
        tracing::debug!(user = %req.username, mechanism = %req.mechanism, %decision, "auth service decided");
        decision
    }
}

impl HttpAuthProvider {
    /// `Authorization: Bearer …` for the configured token, marked sensitive (never logged by
    /// hyper); `Err` when the token cannot be a header value.
    fn authorization(&self) -> Result<Option<http::HeaderValue>, ()> {
        let Some(t) = &self.inner.token else {
            return Ok(None);
        };
        let mut value = format!("Bearer {}", t.expose_secret());
        let header = http::HeaderValue::from_str(&value).map_err(|_| ());
        value.zeroize();
        let mut header = header?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    /// Whether the service answers now (readiness checks): a `HEAD` request to the URL, with
    /// the bearer token when one is set, within the timeout. Any HTTP status counts as an
    /// answer (a service that only takes `POST` says 405); no connection, a broken answer or
    /// none in time is the error, said without the URL's credentials.
    pub async fn ping(&self) -> Result<(), String> {
        let inner = &self.inner;
        let mut builder = Request::builder()
            .method(Method::HEAD)
            .uri(inner.url.clone());
        if let Ok(Some(v)) = self.authorization() {
            builder = builder.header(header::AUTHORIZATION, v);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(inner.timeout, inner.client.request(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("request failed: {e}")),
            Err(_) => Err(format!("no answer within {:?}", inner.timeout)),
        }
    }
}

/// Zeroizes the request body if no one else holds it any more.
fn wipe(body: Bytes) {
    if let Ok(mut owned) = body.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

/// `smtpauth`'s status mapping.
fn map_response(status: StatusCode, body: &[u8]) -> AuthDecision {
    match status {
        // Only a JSON object with a boolean "ok" counts (serde would take `[true]` too).
        StatusCode::OK => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => match map.get("ok") {
                Some(serde_json::Value::Bool(true)) => AuthDecision::Ok,
                Some(serde_json::Value::Bool(false)) => AuthDecision::Invalid,
                _ => AuthDecision::Failure,
            },
            _ => AuthDecision::Failure,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AuthDecision::Invalid,
        _ => AuthDecision::Failure,
    }
}

impl Service<AuthRequest> for HttpAuthProvider {
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.decide(&req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_table() {
        let table: &[(StatusCode, &[u8], AuthDecision)] = &[
            (StatusCode::OK, &br#"{"ok":true}"#[..], AuthDecision::Ok),
            (
                StatusCode::OK,
                &br#"{"ok":false}"#[..],
                AuthDecision::Invalid,
            ),
            (
                StatusCode::OK,
                &br#"{"ok":"yes"}"#[..],
                AuthDecision::Failure,
            ),
            (StatusCode::OK, &b"garbage"[..], AuthDecision::Failure),
            (StatusCode::OK, &b"[true]"[..], AuthDecision::Failure),
            (StatusCode::UNAUTHORIZED, &b""[..], AuthDecision::Invalid),
            (StatusCode::FORBIDDEN, &b""[..], AuthDecision::Invalid),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                &b""[..],
                AuthDecision::Failure,
            ),
            (StatusCode::BAD_GATEWAY, &b""[..], AuthDecision::Failure),
            (
                StatusCode::NOT_FOUND,
                &br#"{"ok":true}"#[..],
                AuthDecision::Failure,
            ),
            (
                StatusCode::CREATED,
                &br#"{"ok":true}"#[..],
                AuthDecision::Failure,
            ),
        ];
        for (status, body, want) in table {
            let got = map_response(*status, body);
            assert_eq!(got, *want, "{status} {}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn urls() {
        assert!(HttpAuthProvider::builder("ftp://x/").build().is_err());
        assert!(HttpAuthProvider::builder("not a url").build().is_err());
        assert_eq!(
            redact_url("https://u:p@host/x"),
            "https://<redacted>@host/x"
        );
    }
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
