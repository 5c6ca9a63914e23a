//! # smtp-auth-sql
//!
//! Logins checked against an SQL table: an [`AuthProvider`](smtp_auth::AuthProvider) (PLAIN,
//! LOGIN) and a [`SecretProvider`](smtp_auth::SecretProvider) (SCRAM-SHA-256) over one query
//! that returns a user's stored credentials. PostgreSQL (`postgres://…`, tokio-postgres, what a
//! fleet shares) and SQLite (`sqlite:///path/users.db`, rusqlite with SQLite compiled in, the
//! embedded choice), each behind its feature.
//!
//! The query takes the user name as its one bound parameter (`$1`; never spliced into the text)
//! and returns at most one row:
//! - its **first column** is the stored hash, in any scheme [`smtp_auth_hash`] reads (argon2,
//!   bcrypt, SHA-crypt, PBKDF2, scrypt, `{SSHA512}`… as Dovecot, OpenLDAP or another server
//!   wrote it), verified in constant time off the async runtime;
//! - an optional column named **`enabled`** (boolean or integer): a row whose value is false or
//!   0 is refused like a wrong password;
//! - an optional column named **`scram`**: SCRAM-SHA-256 keys (`$scram-sha-256$…` or Dovecot's
//!   `{SCRAM-SHA-256}…`), so SCRAM works without the password.
//!
//! ```sql
//! SELECT password, active AS enabled, scram FROM mailbox WHERE username = $1
//! ```
//!
//! | outcome | decision |
//! | --- | --- |
//! | the hash verifies | `Ok` |
//! | no row, a wrong password, `enabled` false, no hash | `Invalid` |
//! | a hash in an unknown or weak scheme (unless allowed) | `Invalid`, logged once per user |
//! | the database down, a query error, no answer within the timeout | `Failure` (454 4.7.0) |
//!
//! An unknown user costs a verification against the last hash the table returned (the result
//! discarded), so timing says little about who exists. Connections are pooled and reconnected
//! after an error. PostgreSQL connects without TLS (a local socket or a private network).
//!
//! ## Plugged into a server
//!
//! ```
//! use smtp_auth_sql::{SqlConfig, SqlProvider};
//! use smtp_server::{AcceptAll, ProviderAuthenticator, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let config = SqlConfig::new(
//!     "sqlite:///var/lib/mail/users.db",
//!     "SELECT hash, enabled, scram FROM users WHERE name = $1",
//! );
//! let users = SqlProvider::new(config).expect("a valid configuration");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! Server::new(ServerConfig::default(), AcceptAll)
//!     .authenticator(ProviderAuthenticator::new(users.clone()).with_secrets(users))
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

use smtp_auth::{AuthDecision, AuthRequest, LookupRequest, LookupResult, Password, StoredSecret};
use smtp_auth_hash::StoredHash;
use tokio::sync::Semaphore;
use tower_service::Service;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a stored hash is verified (milliseconds of CPU): given the job, run it off the async
/// runtime and return its answer, or `None` when it was not run. The default runs it on
/// tokio's blocking threads, at most as many at once as there are cores.
pub type Verifier =
    Arc<dyn Fn(Box<dyn FnOnce() -> bool + Send>) -> BoxFuture<Option<bool>> + Send + Sync>;

/// What the provider asks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqlConfig {
    /// `postgres://user:password@host:port/db` (or `postgresql://`) or `sqlite:///path`.
    pub url: String,
    /// The query: the user name is `$1`; see the crate documentation for its columns.
    pub query: String,
    /// The longest a query may take, connecting included. Default 5 s.
    pub timeout: Duration,
    /// Connections at most. Default 4.
    pub connections: usize,
    /// Accept weak schemes (clear, unsalted) in the table.
    pub allow_weak_schemes: bool,
}

impl SqlConfig {
    /// The defaults for `url` and `query`.
    pub fn new(url: impl Into<String>, query: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            query: query.into(),
            timeout: Duration::from_secs(5),
            connections: 4,
            allow_weak_schemes: false,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a `postgres://`, `postgresql://` or `sqlite://` URL (or its feature is off).
    Url(String),
    /// The query does not take the user name as `$1`.
    Query,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Only the scheme: a PostgreSQL URL may hold a password.
            Self::Url(scheme) => write!(
                f,
                "{scheme:?} is not a supported database URL (postgres://, sqlite://)"
            ),
            Self::Query => f.write_str("the query must take the user name as $1"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One user's row.
#[derive(Default)]
struct Row {
    hash: Option<String>,
    enabled: bool,
    scram: Option<String>,
}

/// What a database answered: the row, or none.
type Fetched = Result<Option<Row>, String>;

enum Database {
    #[cfg(feature = "postgres")]
    Postgres(postgres::Pool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::Pool),
}

struct Inner {
    config: SqlConfig,
    database: Database,
    verifier: Verifier,
    /// The last hash the table returned: what an unknown user is verified against.
    last_hash: Mutex<Option<StoredHash>>,
}

/// The provider: cheap to clone (the clones share the pool).
#[derive(Clone)]
pub struct SqlProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqlProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlProvider")
            .field("database", &scheme_of(&self.inner.config.url))
            .field("query", &self.inner.config.query)
            .field("connections", &self.inner.config.connections)
            .finish_non_exhaustive()
    }
}

fn scheme_of(url: &str) -> &str {
    url.split_once("://").map_or("", |(s, _)| s)
}

impl SqlProvider {
    /// A provider for `config`, verifying on tokio's blocking threads; it connects on first use.
    pub fn new(config: SqlConfig) -> Result<Self, ConfigError> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let permits = Arc::new(Semaphore::new(workers));
        let verifier: Verifier = Arc::new(move |job| {
            let permits = permits.clone();
            Box::pin(async move {
                let _p = permits.acquire_owned().await.ok()?;
                tokio::task::spawn_blocking(job).await.ok()
            })
        });
        Self::with_verifier(config, verifier)
    }

    /// A provider that verifies hashes with `verifier` (a server's bounded pool).
    pub fn with_verifier(config: SqlConfig, verifier: Verifier) -> Result<Self, ConfigError> {
        if !config.query.contains("$1") {
            return Err(ConfigError::Query);
        }
        let n = config.connections.max(1);
        let database = match scheme_of(&config.url) {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Database::Postgres(postgres::Pool::new(&config, n)),
            #[cfg(feature = "sqlite")]
            "sqlite" => Database::Sqlite(sqlite::Pool::new(&config, n)),
            other => return Err(ConfigError::Url(other.to_owned())),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                database,
                verifier,
                last_hash: Mutex::new(None),
            }),
        })
    }

    /// Closes the pooled connections; the next queries connect afresh (on SIGHUP).
    pub fn reconnect(&self) {
        match &self.inner.database {
            #[cfg(feature = "postgres")]
            Database::Postgres(p) => p.clear(),
            #[cfg(feature = "sqlite")]
            Database::Sqlite(p) => p.clear(),
        }
    }

    async fn fetch(&self, user: &str) -> Fetched {
        let timeout = self.inner.config.timeout;
        let query = async {
            match &self.inner.database {
                #[cfg(feature = "postgres")]
                Database::Postgres(p) => p.fetch(user).await,
                #[cfg(feature = "sqlite")]
                Database::Sqlite(p) => p.fetch(user).await,
            }
        };
        match tokio::time::timeout(timeout, query).await {
            Ok(r) => r,
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// Whether the database answers: the configured query run for an empty user name, within
    /// the configured timeout. For readiness checks.
    pub async fn ping(&self) -> Result<(), String> {
        self.fetch("").await.map(|_| ())
    }

    fn failed(&self, e: &str) {
        tracing::warn!(target: "smtp_auth_sql", database = scheme_of(&self.inner.config.url), error = %e, "SQL query failed");
    }

    /// Decides one request.
    pub async fn check(&self, req: &AuthRequest) -> AuthDecision {
        if req.authzid.as_ref().is_some_and(|z| *z != req.username) {
            return AuthDecision::Invalid;
        }
        let row = match self.fetch(&req.username).await {
            Ok(r) => r,
            Err(e) => {
                self.failed(&e);
                return AuthDecision::Failure;
            }
        };
        let stored = match row.as_ref().and_then(|r| r.hash.as_deref()) {
            Some(text) => match StoredHash::parse(text) {
                Ok(h) if !h.scheme().weak() || self.inner.config.allow_weak_schemes => Some(h),
                Ok(h) => {
                    tracing::warn!(target: "smtp_auth_sql", user = %req.username, scheme = h.scheme().name(), "weak password scheme refused");
                    None
                }
                Err(e) => {
                    tracing::warn!(target: "smtp_auth_sql", user = %req.username, error = %e, "unreadable password hash");
                    None
                }
            },
            None => None,
        };
        let enabled = row.as_ref().is_some_and(|r| r.enabled);
        let (hash, real) = match stored {
            Some(h) => {
                *self.inner.last_hash.lock().expect("last hash") = Some(h.clone());
                (h, true)
            }
            // Costs what a real user's check costs; the answer is thrown away.
            None => match self.inner.last_hash.lock().expect("last hash").clone() {
                Some(h) => (h, false),
                None => return AuthDecision::Invalid,
            },
        };
        let password: Password = req.password.clone();
        let verified =
            (self.inner.verifier)(Box::new(move || hash.verify(password.expose_secret()))).await;
        match verified {
            Some(true) if real && enabled => AuthDecision::Ok,
            Some(_) => AuthDecision::Invalid,
            None => AuthDecision::Failure,
        }
    }

    /// Looks up a user's SCRAM keys.
    pub async fn lookup(&self, req: &LookupRequest) -> LookupResult {
        match self.fetch(&req.username).await {
            Ok(Some(row)) if row.enabled => {
                match row.scram.as_deref().and_then(smtp_auth_hash::parse_scram) {
                    Some(k) => LookupResult::Found(StoredSecret::ScramSha256(k)),
                    None => LookupResult::NotFound,
                }
            }
            Ok(_) => LookupResult::NotFound,
            Err(e) => {
                self.failed(&e);
                LookupResult::Failure
            }
        }
    }
}

impl Service<AuthRequest> for SqlProvider {
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = BoxFuture<Result<AuthDecision, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.check(&req).await) })
    }
}

impl Service<LookupRequest> for SqlProvider {
    type Response = LookupResult;
    type Error = Infallible;
    type Future = BoxFuture<Result<LookupResult, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LookupRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.lookup(&req).await) })
    }
}

/// Idle connections of type `C`, at most `n` open at once.
struct Slots<C> {
    idle: Mutex<Vec<C>>,
    permits: Arc<Semaphore>,
}

impl<C> Slots<C> {
    fn new(n: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(n)),
        }
    }

    fn take(&self) -> Option<C> {
        self.idle.lock().expect("idle").pop()
    }

    fn give_back(&self, c: C) {
        self.idle.lock().expect("idle").push(c);
    }

    fn clear(&self) {
        self.idle.lock().expect("idle").clear();
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::{Fetched, Row, Slots, SqlConfig};
    use tokio_postgres::{Client, NoTls, Statement};

    pub(super) struct Pool {
        url: String,
        query: String,
        slots: Slots<(Client, Statement)>,
    }

    impl Pool {
        pub(super) fn new(config: &SqlConfig, n: usize) -> Self {
            Self {
                url: config.url.clone(),
                query: config.query.clone(),
                slots: Slots::new(n),
            }
        }

        pub(super) fn clear(&self) {
            self.slots.clear();
        }

        /// A connection with the query prepared: idle, or new.
        async fn connection(&self) -> Result<(Client, Statement), String> {
            while let Some(c) = self.slots.take() {
                if !c.0.is_closed() {
                    return Ok(c);
                }
            }
            // The error text names no part of the URL (it may hold a password).
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(target: "smtp_auth_sql", error = %e, "PostgreSQL connection ended");
                }
            });
            let statement = client
                .prepare(&self.query)
                .await
                .map_err(|e| format!("prepare: {e}"))?;
            Ok((client, statement))
        }

        pub(super) async fn fetch(&self, user: &str) -> Fetched {
            let _permit = self
                .slots
                .permits
                .acquire()
                .await
                .map_err(|e| e.to_string())?;
            let (client, statement) = self.connection().await?;
            let rows = client
                .query(&statement, &[&user])
                .await
                .map_err(|e| format!("query: {e}"))?;
            let row = match rows.as_slice() {
                [] => None,
                [r] => Some(read(r)?),
                _ => return Err("the query returned several rows".into()),
            };
            self.slots.give_back((client, statement));
            Ok(row)
        }
    }

    fn read(r: &tokio_postgres::Row) -> Result<Row, String> {
        let hash: Option<String> = r.try_get(0).map_err(|e| format!("first column: {e}"))?;
        let enabled = match r.columns().iter().position(|c| c.name() == "enabled") {
            None => true,
            Some(i) => match r.try_get::<_, Option<bool>>(i) {
                Ok(b) => b.unwrap_or(false),
                Err(_) => match r.try_get::<_, Option<i32>>(i) {
                    Ok(v) => v.is_some_and(|v| v != 0),
                    Err(_) => r
                        .try_get::<_, Option<i64>>(i)
                        .map_err(|e| format!("enabled: {e}"))?
                        .is_some_and(|v| v != 0),
                },
            },
        };
        let scram = match r.columns().iter().position(|c| c.name() == "scram") {
            None => None,
            Some(i) => r.try_get(i).map_err(|e| format!("scram: {e}"))?,
        };
        Ok(Row {
            hash,
            enabled,
            scram,
        })
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::sync::Arc;

    use rusqlite::{Connection, OpenFlags, types::ValueRef};

    use super::{Fetched, Row, Slots, SqlConfig};

    pub(super) struct Pool {
        path: String,
        query: String,
        busy: std::time::Duration,
        slots: Arc<Slots<Connection>>,
    }

    impl Pool {
        pub(super) fn new(config: &SqlConfig, n: usize) -> Self {
            let path = config.url.split_once("://").map_or("", |(_, p)| p);
            Self {
                path: path.to_owned(),
                query: config.query.clone(),
                busy: config.timeout,
                slots: Arc::new(Slots::new(n)),
            }
        }

        pub(super) fn clear(&self) {
            self.slots.clear();
        }

        pub(super) async fn fetch(&self, user: &str) -> Fetched {
            let permit = self
                .slots
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let (path, query, busy, slots) = (
                self.path.clone(),
                self.query.clone(),
                self.busy,
                self.slots.clone(),
            );
            let user = user.to_owned();
            // rusqlite blocks: on tokio's blocking threads, one per connection in use.
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let conn = match slots.take() {
                    Some(c) => c,
                    None => {
                        let c = Connection::open_with_flags(
                            &path,
                            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )
                        .map_err(|e| format!("open {path}: {e}"))?;
                        c.busy_timeout(busy).map_err(|e| e.to_string())?;
                        c
                    }
                };
                let row = read(&conn, &query, &user)?;
                slots.give_back(conn);
                Ok(row)
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }

    fn read(conn: &Connection, query: &str, user: &str) -> Result<Option<Row>, String> {
        let mut stmt = conn
            .prepare_cached(query)
            .map_err(|e| format!("prepare: {e}"))?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let enabled_at = names.iter().position(|n| n == "enabled");
        let scram_at = names.iter().position(|n| n == "scram");
        let mut rows = stmt.query([user]).map_err(|e| format!("query: {e}"))?;
        let Some(r) = rows.next().map_err(|e| format!("query: {e}"))? else {
            return Ok(None);
        };
        let text = |i: usize| -> Result<Option<String>, String> {
            match r.get_ref(i).map_err(|e| e.to_string())? {
                ValueRef::Null => Ok(None),
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    Ok(Some(String::from_utf8_lossy(t).into_owned()))
                }
                _ => Err(format!("column {i} is not text")),
            }
        };
        let row = Row {
            hash: text(0)?,
            enabled: match enabled_at {
                None => true,
                Some(i) => match r.get_ref(i).map_err(|e| e.to_string())? {
                    ValueRef::Integer(v) => v != 0,
                    ValueRef::Real(v) => v != 0.0,
                    ValueRef::Text(t) => matches!(t, b"1" | b"true" | b"TRUE" | b"t" | b"yes"),
                    _ => false,
                },
            },
            scram: match scram_at {
                None => None,
                Some(i) => text(i)?,
            },
        };
        if rows.next().map_err(|e| format!("query: {e}"))?.is_some() {
            return Err("the query returned several rows".into());
        }
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_refused_with_their_reason() {
        let e = SqlProvider::new(SqlConfig::new(
            "mysql://root:hunter2@db/mail",
            "SELECT h FROM u WHERE n = $1",
        ))
        .unwrap_err();
        assert_eq!(e, ConfigError::Url("mysql".into()));
        assert!(!e.to_string().contains("hunter2"));
        assert_eq!(
            SqlProvider::new(SqlConfig::new(
                "sqlite:///x.db",
                "SELECT h FROM u WHERE n = 'alice'"
            ))
            .unwrap_err(),
            ConfigError::Query
        );
    }
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
