//! # smtp-auth-ldap
//!
//! An [`AuthProvider`](smtp_auth::AuthProvider) that checks a password by binding to an LDAP
//! directory as the user, so the directory's own hashes (`userPassword` in `{SSHA}`,
//! `{CRYPT}`, `{ARGON2}`…) and policies (locked accounts, password expiry) decide, as Dovecot's
//! and Postfix's LDAP lookups do. With [`ldap3`].
//!
//! Two ways to find the user's entry:
//! - **Direct bind** ([`Lookup::Template`]): the DN is a template such as
//!   `uid=%u,ou=people,dc=example,dc=org`, `%u` replaced by the user name escaped as an RDN value
//!   (RFC 4514), so `alice,ou=admins` stays one value.
//! - **Search, then bind** ([`Lookup::Search`]): bind as a service account, search `base` with
//!   `filter` (`%u` replaced by the user name escaped as RFC 4515 requires, so `*)(uid=*`
//!   matches no other entry), and bind as the one entry found. No entry, or more than one, is
//!   a refusal.
//!
//! An empty password is refused without a request: an LDAP simple bind with an empty password
//! is an *unauthenticated* bind that servers answer with success (RFC 4513 §5.1.2).
//!
//! | outcome | decision |
//! | --- | --- |
//! | the bind succeeds | `Ok` |
//! | `invalidCredentials` (49), no such entry, an empty password, no or several search results | `Invalid` |
//! | the server down, a TLS failure, another result code, no answer within the timeout | `Failure` (454 4.7.0) |
//!
//! `ldap://` (with StartTLS when [`LdapConfig::starttls`] is set) and `ldaps://` URLs work;
//! TLS is rustls with your `ClientConfig` or the system's roots. Connections are pooled
//! ([`LdapConfig::connections`] at most, reused between logins, dropped after an error or a
//! timeout); the whole check runs under [`LdapConfig::timeout`]. The service account's password
//! and the user's never appear in `Debug` output, errors or logs.
//!
//! ## Plugged into a server
//!
//! ```
//! use smtp_auth_ldap::{LdapConfig, LdapProvider, Lookup};
//! use smtp_server::{AcceptAll, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let config = LdapConfig::new(
//!     "ldap://127.0.0.1:389",
//!     Lookup::Template("uid=%u,ou=people,dc=example,dc=org".into()),
//! );
//! let provider = LdapProvider::new(config).expect("a valid configuration");
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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope, dn_escape, ldap_escape};
use smtp_auth::{AuthDecision, AuthRequest, Password};
use tokio::sync::Semaphore;
use tower_service::Service;

/// The LDAP result code of a wrong password or an unknown bind DN.
const INVALID_CREDENTIALS: u32 = 49;
/// `noSuchObject`: some servers answer it to a bind as an entry that does not exist.
const NO_SUCH_OBJECT: u32 = 32;

/// How the user's entry is found.
#[derive(Clone)]
pub enum Lookup {
    /// Bind directly as this DN, `%u` replaced by the user name (escaped as an RDN value).
    Template(String),
    /// Bind as `bind_dn`, search `base` (subtree) with `filter` (`%u` replaced by the user
    /// name, escaped for a filter), and bind as the one entry found.
    Search {
        /// The service account's DN.
        bind_dn: String,
        /// Its password. Never printed.
        bind_password: Password,
        /// Where to search.
        base: String,
        /// The filter, e.g. `(&(objectClass=inetOrgPerson)(uid=%u))`.
        filter: String,
    },
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Template(t) => f.debug_tuple("Template").field(t).finish(),
            Self::Search {
                bind_dn,
                base,
                filter,
                ..
            } => f
                .debug_struct("Search")
                .field("bind_dn", bind_dn)
                .field("bind_password", &"<redacted>")
                .field("base", base)
                .field("filter", filter)
                .finish(),
        }
    }
}

/// Where and how to bind.
#[derive(Clone)]
#[non_exhaustive]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything else.
    pub starttls: bool,
    /// The TLS client configuration (for a private CA); the system's roots when `None`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How the user's entry is found.
    pub lookup: Lookup,
    /// The longest a whole check may take (connecting included). Default 5 s.
    pub timeout: Duration,
    /// Most connections open at once (and kept for reuse). Default 4.
    pub connections: usize,
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("tls", &self.tls.is_some())
            .field("lookup", &self.lookup)
            .field("timeout", &self.timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

impl LdapConfig {
    /// The defaults for `url` and `lookup`.
    pub fn new(url: impl Into<String>, lookup: Lookup) -> Self {
        Self {
            url: url.into(),
            starttls: false,
            tls: None,
            lookup,
            timeout: Duration::from_secs(5),
            connections: 4,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not `ldap://` or `ldaps://` with a host.
    Url(String),
    /// StartTLS was asked for on an `ldaps://` URL.
    StartTlsOnLdaps,
    /// The DN template or the filter lacks `%u`.
    NoPlaceholder(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(u) => write!(f, "{u:?} is not an ldap:// or ldaps:// URL with a host"),
            Self::StartTlsOnLdaps => f.write_str("StartTLS goes with ldap://, not ldaps://"),
            Self::NoPlaceholder(what) => write!(f, "the {what} must contain %u"),
        }
    }
}

impl std::error::Error for ConfigError {}

struct Inner {
    config: LdapConfig,
    /// Connections between logins.
    idle: Mutex<Vec<Ldap>>,
    /// One permit per connection that may be open.
    permits: Semaphore,
}

/// The provider: cheap to clone (the clones share the pool).
#[derive(Clone)]
pub struct LdapProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for LdapProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Why a check could not decide (logged; the decision is `Failure`).
enum Trouble {
    Ldap(ldap3::LdapError),
    Result(u32, String),
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ldap(e) => write!(f, "{e}"),
            Self::Result(rc, text) => write!(f, "result code {rc}: {text}"),
        }
    }
}

impl From<ldap3::LdapError> for Trouble {
    fn from(e: ldap3::LdapError) -> Self {
        Self::Ldap(e)
    }
}

impl LdapProvider {
    /// A provider for `config`; it connects on first use.
    pub fn new(config: LdapConfig) -> Result<Self, ConfigError> {
        let (scheme, rest) = config
            .url
            .split_once("://")
            .ok_or_else(|| ConfigError::Url(config.url.clone()))?;
        if !matches!(scheme, "ldap" | "ldaps") || rest.trim_end_matches('/').is_empty() {
            return Err(ConfigError::Url(config.url.clone()));
        }
        if scheme == "ldaps" && config.starttls {
            return Err(ConfigError::StartTlsOnLdaps);
        }
        match &config.lookup {
            Lookup::Template(t) if !t.contains("%u") => {
                return Err(ConfigError::NoPlaceholder("DN template"));
            }
            Lookup::Search { filter, .. } if !filter.contains("%u") => {
                return Err(ConfigError::NoPlaceholder("filter"));
            }
            _ => {}
        }
        let n = config.connections.max(1);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(n),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LdapConfig {
        &self.inner.config
    }

    /// Closes the idle connections; the next logins connect afresh (on SIGHUP).
    pub fn reconnect(&self) {
        self.inner.idle.lock().expect("idle").clear();
    }

    /// Whether the directory answers: a "Who am I?" (RFC 4532) on a pooled or new connection,
    /// within the configured timeout. For readiness checks; binds as no one.
    pub async fn ping(&self) -> Result<(), String> {
        let round_trip = async {
            let _permit = self
                .inner
                .permits
                .acquire()
                .await
                .map_err(|_| Trouble::Result(0, "pool closed".into()))?;
            let mut ldap = self.connection().await?;
            ldap.extended(ldap3::exop::WhoAmI).await?;
            self.give_back(ldap);
            Ok::<(), Trouble>(())
        };
        match tokio::time::timeout(self.inner.config.timeout, round_trip).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// Decides one request.
    pub async fn check(&self, req: &AuthRequest) -> AuthDecision {
        let password = req.password.expose_secret();
        if password.is_empty() || req.username.is_empty() {
            return AuthDecision::Invalid;
        }
        let timeout = self.inner.config.timeout;
        match tokio::time::timeout(timeout, self.bind_as(&req.username, password)).await {
            Ok(Ok(decision)) => decision,
            Ok(Err(e)) => {
                tracing::warn!(target: "smtp_auth_ldap", url = %self.inner.config.url, error = %e, "LDAP check failed");
                AuthDecision::Failure
            }
            Err(_) => {
                tracing::warn!(target: "smtp_auth_ldap", url = %self.inner.config.url, "LDAP server did not answer in time");
                AuthDecision::Failure
            }
        }
    }

    /// Finds the user's DN and binds as it, on a pooled connection. The connection goes back
    /// to the pool only when every operation on it answered.
    async fn bind_as(&self, user: &str, password: &str) -> Result<AuthDecision, Trouble> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| Trouble::Result(0, "pool closed".into()))?;
        let mut ldap = self.connection().await?;
        let dn = match &self.inner.config.lookup {
            Lookup::Template(t) => t.replace("%u", &dn_escape(user)),
            Lookup::Search {
                bind_dn,
                bind_password,
                base,
                filter,
            } => {
                let r = ldap
                    .simple_bind(bind_dn, bind_password.expose_secret())
                    .await?;
                if r.rc != 0 {
                    return Err(Trouble::Result(
                        r.rc,
                        format!("service bind as {bind_dn}: {}", r.text),
                    ));
                }
                let filter = filter.replace("%u", &ldap_escape(user));
                let (entries, r) = ldap
                    .search(base, Scope::Subtree, &filter, vec!["1.1"])
                    .await?
                    .non_error()?;
                if r.rc != 0 {
                    return Err(Trouble::Result(r.rc, r.text));
                }
                match entries.len() {
                    1 => match entries.into_iter().next().and_then(entry_dn) {
                        Some(dn) => dn,
                        None => return Err(Trouble::Result(0, "malformed entry".into())),
                    },
                    0 => {
                        self.give_back(ldap);
                        return Ok(AuthDecision::Invalid);
                    }
                    n => {
                        tracing::warn!(target: "smtp_auth_ldap", user = %user, entries = n, "LDAP filter matched several entries: refused");
                        self.give_back(ldap);
                        return Ok(AuthDecision::Invalid);
                    }
                }
            }
        };
        let r = ldap.simple_bind(&dn, password).await?;
        let decision = match r.rc {
            0 => AuthDecision::Ok,
            INVALID_CREDENTIALS | NO_SUCH_OBJECT => AuthDecision::Invalid,
            rc => return Err(Trouble::Result(rc, r.text)),
        };
        self.give_back(ldap);
        Ok(decision)
    }

    /// An idle connection, or a new one.
    async fn connection(&self) -> Result<Ldap, Trouble> {
        while let Some(mut l) = self.inner.idle.lock().expect("idle").pop() {
            if !l.is_closed() {
                return Ok(l);
            }
        }
        let c = &self.inner.config;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(c.timeout)
            .set_starttls(c.starttls);
        if let Some(tls) = &c.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &c.url).await?;
        let url = c.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(target: "smtp_auth_ldap", url = %url, error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    fn give_back(&self, ldap: Ldap) {
        self.inner.idle.lock().expect("idle").push(ldap);
    }
}

/// The DN of a search result entry, read without trusting the server's encoding.
fn entry_dn(entry: ResultEntry) -> Option<String> {
    let mut tags = entry.0.match_id(4)?.expect_constructed()?.into_iter();
    String::from_utf8(tags.next()?.expect_primitive()?).ok()
}

impl Service<AuthRequest> for LdapProvider {
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

    fn search() -> Lookup {
        Lookup::Search {
            bind_dn: "cn=smtpd,dc=example,dc=org".into(),
            bind_password: Password::new("s3rvice-pw".into()),
            base: "dc=example,dc=org".into(),
            filter: "(uid=%u)".into(),
        }
    }

    #[test]
    fn configurations_refused_with_their_reason() {
        let t = || Lookup::Template("uid=%u,dc=x".into());
        for (url, starttls, lookup, want) in [
            ("http://h", false, t(), ConfigError::Url("http://h".into())),
            ("ldap://", false, t(), ConfigError::Url("ldap://".into())),
            ("ldaps://h:636", true, t(), ConfigError::StartTlsOnLdaps),
            (
                "ldap://h",
                false,
                Lookup::Template("uid=alice,dc=x".into()),
                ConfigError::NoPlaceholder("DN template"),
            ),
        ] {
            let mut c = LdapConfig::new(url, lookup);
            c.starttls = starttls;
            assert_eq!(LdapProvider::new(c).unwrap_err(), want);
        }
        let Lookup::Search {
            bind_dn,
            bind_password,
            base,
            ..
        } = search()
        else {
            unreachable!()
        };
        let no_u = Lookup::Search {
            bind_dn,
            bind_password,
            base,
            filter: "(uid=alice)".into(),
        };
        assert_eq!(
            LdapProvider::new(LdapConfig::new("ldap://h", no_u)).unwrap_err(),
            ConfigError::NoPlaceholder("filter")
        );
        assert!(LdapProvider::new(LdapConfig::new("ldaps://h:636", search())).is_ok());
    }

    #[test]
    fn the_service_password_never_prints() {
        let p = LdapProvider::new(LdapConfig::new("ldap://h", search())).unwrap();
        let shown = format!("{p:?} {:?}", p.config());
        assert!(!shown.contains("s3rvice-pw"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
