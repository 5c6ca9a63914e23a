//! The composition: configuration → `smtp-server` with the chosen auth backend and delivery.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use smtp_server::{AuthLimiter, Authenticator, Server, ServerConfig, Session};
use tokio::sync::watch;

use crate::config::{AuthSection, Config, ListenerTls};
pub use crate::handler::App;
use crate::reload::{Reloadable, reload_on_sighup};
use crate::sender::SenderPolicy;
pub use crate::tls::{CertStore, load_tls};
use crate::users::{ExternalMap, FileUsers};

/// Everything the configuration names besides itself, loaded and checked: what `serve`
/// starts with and what `check-config` validates.
pub struct Loaded {
    /// `[tls]`, when present.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its certificate and key, reloadable.
    pub certs: Option<Arc<CertStore>>,
    /// The file backend's users.
    pub users: Option<FileUsers>,
    /// The EXTERNAL certificate map.
    pub external: Option<ExternalMap>,
    /// The sender/login policy.
    pub senders: SenderPolicy,
    /// The sending limits (`[rate_limits]`).
    pub sending: Arc<crate::sending::SendingLimits>,
    /// The DKIM signing keys (`[[dkim]]`), when any.
    pub dkim: Option<Arc<crate::dkim::Dkim>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users)
            .field("senders", &self.senders)
            .finish_non_exhaustive()
    }
}

/// Loads every file the configuration names; errors name the key.
pub fn load(config: &Config) -> Result<Loaded, String> {
    let (tls, certs) = match &config.tls {
        Some(t) => {
            let (c, s) = load_tls(&t.cert, &t.key, t.client_ca.as_deref())?;
            (Some(c), Some(s))
        }
        None => (None, None),
    };
    let (users, external) = match &config.auth {
        AuthSection::File {
            users_file,
            external_map,
            allow_weak_schemes,
            ..
        } => {
            let workers = match config.server.auth_workers {
                0 => smtp_server::default_workers(),
                n => n,
            };
            let users = FileUsers::load_with(users_file, *allow_weak_schemes)
                .map_err(|e| format!("auth.users_file: {e}"))?
                .with_workers(workers);
            let external = match external_map {
                Some(p) => {
                    Some(ExternalMap::load(p).map_err(|e| format!("auth.external_map: {e}"))?)
                }
                None => None,
            };
            (Some(users), external)
        }
        AuthSection::Http { .. }
        | AuthSection::Dovecot { .. }
        | AuthSection::Ldap(_)
        | AuthSection::Sql(_) => (None, None),
    };
    let s = &config.server;
    let senders = SenderPolicy::load(s.sender_login, &s.hostname, s.sender_login_map.as_deref())
        .map_err(|e| format!("server.sender_login_map: {e}"))?;
    let sending = crate::sending::SendingLimits::load(&config.rate_limits, config.server.lmtp)
        .map_err(|e| format!("rate_limits.overrides: {e}"))?;
    let dkim = if config.dkim.is_empty() {
        None
    } else {
        Some(Arc::new(crate::dkim::Dkim::new(config.dkim.clone())?))
    };
    Ok(Loaded {
        tls,
        certs,
        users,
        external,
        senders,
        sending: Arc::new(sending),
        dkim,
    })
}

/// The mechanisms `[server]` offers: the configured names, in their order, from the one list
/// of offerable mechanisms, less the excluded ones.
fn offered(s: &crate::config::ServerSection) -> Result<smtp_auth::Registry, String> {
    let mut registry = crate::config::offerable()
        .only(&s.mechanisms)
        .map_err(|e| format!("server.mechanisms: {e}"))?;
    for m in &s.exclude_mechanisms {
        registry.exclude(m);
    }
    Ok(registry)
}

fn server_config(
    c: &Config,
    loaded: &Loaded,
    mode: ListenerTls,
    limiter: &Arc<AuthLimiter>,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
) -> Result<ServerConfig, String> {
    let s = &c.server;
    let mut registry = offered(s)?;
    crate::stores::tailor_mechanisms(&mut registry, c, loaded.users.as_ref());
    let mut options = s.options();
    options.implicit_tls = mode == ListenerTls::Implicit;
    options.proxy_authorization = matches!(
        c.auth,
        AuthSection::Http {
            send_authzid: true,
            ..
        }
    );
    let mut b = ServerConfig::builder()
        .options(options)
        .registry(registry)
        .limiter(limiter.clone());
    if let (Some(t), ListenerTls::Starttls | ListenerTls::Implicit) = (loaded.tls.clone(), mode) {
        b = b.tls(t);
    }
    if let Some(map) = loaded.external.clone() {
        b = b.external_identity(move |cert| map.user(cert));
    }
    if let Some(m) = metrics {
        b = b.observer(m.clone());
    }
    b.try_build().map_err(|e| format!("server.{e}"))
}

/// Builds one [`Server`] per listener from the configuration, sharing the delivery target,
/// the authenticator (with its cache and the users file's SIGHUP reload) and one AUTH failure
/// limiter, without binding anything: `run` binds and serves them, and a test can serve a
/// connection of its own with `Server::serve_connection`.
pub async fn build(config: &Config) -> Result<Built, String> {
    let loaded = load(config)?;
    let delivery = crate::delivery::from_config(&config.delivery, &config.server.hostname)?;
    let metrics = config
        .metrics
        .as_ref()
        .map(|_| Arc::new(crate::metrics::Metrics::default()));
    let offered: Vec<String> = offered(&config.server)?
        .names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let remote = crate::stores::Remote::from_config(&config.auth, &config.server, &offered)?;
    let app = App::new(
        &config.server.hostname,
        config.server.lmtp,
        delivery,
        loaded.senders.clone(),
        config.server.add_missing_headers,
        metrics.clone(),
    )
    .with_store(remote.clone())
    .with_header_binding(config.server.bind_header_from)
    .with_sending(loaded.sending.clone())
    .with_dkim(loaded.dkim.clone());
    let composed = crate::stores::compose(
        config,
        loaded.users.as_ref(),
        remote.as_ref(),
        &offered,
        metrics.as_ref(),
    )?;
    let cache = composed.cache;
    let users = match (&config.auth, &loaded.users) {
        (AuthSection::File { users_file, .. }, Some(users)) => {
            Some((users.clone(), users_file.clone(), cache.clone()))
        }
        _ => None,
    };
    tokio::spawn(reload_on_sighup(Reloadable {
        users,
        certs: loaded.certs.clone(),
        senders: loaded.senders.clone(),
        sending: loaded.sending.clone(),
        oauth: composed.tokens,
        store: remote.map(|r| (r, cache.clone())),
        dkim: loaded.dkim.clone(),
    }));
    // One failure limiter for the whole process: every listener counts into it.
    let (limiter, authenticator) = crate::shared_limit::from_config(
        config,
        &loaded.sending,
        metrics.as_ref(),
        composed.authenticator,
    )?;
    let servers = config
        .listeners
        .iter()
        .map(|l| {
            let cfg = server_config(config, &loaded, l.tls, &limiter, metrics.as_ref())?;
            let server = Server::new(cfg, app.clone()).authenticator(Shared(authenticator.clone()));
            Ok((l.address, server))
        })
        .collect::<Result<_, String>>()?;
    Ok(Built {
        servers,
        metrics,
        store: composed.probe,
    })
}

/// What [`build`] makes: one server per listener, and the metrics they report into when
/// `[metrics]` is configured.
pub struct Built {
    /// Each listener's address and server, in the configuration's order.
    pub servers: Vec<(std::net::SocketAddr, Server<App>)>,
    /// The counters behind `[metrics]`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The password store readiness checks ask, when it is not the users file.
    pub store: Option<crate::stores::Probe>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("listeners", &self.servers.len())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// Runs every listener until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let built = build(&config).await?;
    let (tx, rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let health = Arc::new(crate::metrics::Health::new(
        built.store.clone(),
        // A probe waits for an answer, not for a login: at most 5 s.
        Duration::from_secs(config.server.auth_timeout_secs).min(Duration::from_secs(5)),
    ));
    let metrics_task = match (&config.metrics, built.metrics) {
        (Some(m), Some(metrics)) => {
            let listener = tokio::net::TcpListener::bind(m.address)
                .await
                .map_err(|e| format!("metrics.address {}: {e}", m.address))?;
            tracing::info!(address = %m.address, "metrics endpoint");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics,
                health.clone(),
            )))
        }
        _ => None,
    };
    for (l, (address, server)) in config.listeners.iter().zip(built.servers) {
        let listener = bind(address, config.server.listen_backlog)
            .map_err(|e| format!("listener {address}: {e}"))?;
        tracing::info!(address = %address, tls = ?l.tls, "listening");
        let mut rx = rx.clone();
        servers.spawn(server.serve_with_shutdown(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    health.listening();
    shutdown.await;
    tracing::info!("shutting down");
    let _ = tx.send(true);
    while let Some(r) = servers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "listener failed");
        }
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(())
}

/// A listener with an explicit backlog (the default of `TcpListener::bind` is 128: a burst of
/// connects while busy overflows it, and the kernel drops them silently).
fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// One authenticator shared by every listener.
struct Shared(Arc<dyn Authenticator>);

impl Authenticator for Shared {
    fn authenticate(
        &self,
        session: &Session,
        request: smtp_auth::AuthRequest,
    ) -> smtp_server::BoxFuture<smtp_auth::Verdict> {
        self.0.authenticate(session, request)
    }

    fn lookup(
        &self,
        session: &Session,
        request: smtp_auth::LookupRequest,
    ) -> smtp_server::BoxFuture<smtp_auth::LookupResult> {
        self.0.lookup(session, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of its own under the system's temporary one.
    fn scratch(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("smtpd-app-{name}-{}", crate::delivery::queue_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A users file of one user (`demo`, the demo's hash) in `dir`.
    fn users(dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("users");
        let demo =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/users"))
                .unwrap();
        std::fs::write(&p, demo).unwrap();
        p
    }

    fn limiter() -> Arc<AuthLimiter> {
        Arc::new(AuthLimiter::new(1, 1, Duration::from_secs(1)))
    }

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap()
    }

    #[tokio::test]
    async fn one_server_per_listener_and_metrics_only_when_configured() {
        let dir = scratch("listeners");
        let u = users(&dir);
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[[listener]]\naddress = \"127.0.0.1:2\"\n\
             [auth]\nbackend = \"file\"\nusers_file = {u:?}\n[delivery]\nkind = \"discard\"\n"
        );
        let built = build(&parse(&text)).await.unwrap();
        let addrs: Vec<_> = built.servers.iter().map(|(a, _)| a.port()).collect();
        assert_eq!(addrs, [1, 2]);
        assert!(built.metrics.is_none());
        let with = format!("{text}[metrics]\naddress = \"127.0.0.1:3\"\n");
        assert!(build(&parse(&with)).await.unwrap().metrics.is_some());
    }

    #[tokio::test]
    async fn the_mechanisms_are_the_configured_ones_in_their_order() {
        let dir = scratch("mechs");
        let u = users(&dir);
        let text = format!(
            "[server]\nmechanisms = [\"login\", \"SCRAM-SHA-256\", \"PLAIN\"]\n\
             exclude_mechanisms = [\"PLAIN\"]\n\
             [auth]\nbackend = \"file\"\nusers_file = {u:?}\n[delivery]\nkind = \"discard\"\n"
        );
        let config = parse(&text);
        let loaded = load(&config).unwrap();
        let cfg = server_config(&config, &loaded, ListenerTls::None, &limiter(), None).unwrap();
        assert!(
            format!("{cfg:?}").contains(r#"mechanisms: ["LOGIN", "SCRAM-SHA-256"]"#),
            "{cfg:?}"
        );
        // Every listener counts into the one limiter the process built.
        let shared = limiter();
        let a = server_config(&config, &loaded, ListenerTls::None, &shared, None).unwrap();
        let b = server_config(&config, &loaded, ListenerTls::None, &shared, None).unwrap();
        assert!(Arc::ptr_eq(a.limiter(), &shared) && Arc::ptr_eq(b.limiter(), &shared));
        // A configuration built in code without the check is refused here, not served.
        let mut unchecked = config.clone();
        unchecked.server.mechanisms = vec!["X-NOPE".into()];
        let e =
            server_config(&unchecked, &loaded, ListenerTls::None, &limiter(), None).unwrap_err();
        assert!(
            e.starts_with("server.mechanisms: unknown mechanism \"X-NOPE\""),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_stores_and_the_limiter_are_composed_as_configured() {
        let dir = scratch("compose");
        let u = users(&dir);
        let base = format!(
            "[server]\nmax_auth_lock_secs = 7200\n[auth]\nbackend = \"file\"\nusers_file = {u:?}\n"
        );
        let compose = |text: &str| {
            let config = parse(&format!("{text}[delivery]\nkind = \"discard\"\n"));
            let loaded = load(&config).unwrap();
            let c =
                crate::stores::compose(&config, loaded.users.as_ref(), None, &[], None).unwrap();
            (config, loaded, c)
        };
        // The users file behind the credential cache (on by default), no token store.
        let (config, loaded, passwords) = compose(&base);
        assert!(passwords.cache.is_some() && passwords.tokens.is_none());
        // Without [limiter] the authenticator is the store's own, and the limiter takes
        // [server]'s limits.
        let before = Arc::as_ptr(&passwords.authenticator) as *const ();
        let (limiter, authenticator) = crate::shared_limit::from_config(
            &config,
            &loaded.sending,
            None,
            passwords.authenticator,
        )
        .unwrap();
        assert_eq!(Arc::as_ptr(&authenticator) as *const (), before);
        assert_eq!(limiter.max_lock(), Duration::from_secs(7200));
        // [auth.oauth] adds the token store; cache = false leaves the cache out.
        let (_, _, both) = compose(&format!(
            "{base}cache = false\n[auth.oauth]\njwks_url = \"http://127.0.0.1:9/certs\"\n"
        ));
        assert!(both.cache.is_none() && both.tokens.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn files_the_configuration_names_are_loaded_or_named_in_the_error() {
        let dir = scratch("load");
        let missing = dir.join("no-such-users");
        let text = format!(
            "[auth]\nbackend = \"file\"\nusers_file = {missing:?}\n[delivery]\nkind = \"discard\"\n"
        );
        let e = load(&parse(&text)).unwrap_err();
        assert!(e.starts_with("auth.users_file: "), "{e}");
        assert!(build(&parse(&text)).await.is_err());
        // The Maildir is created (tmp/, new/, cur/) when the server is built.
        let u = users(&dir);
        let md = dir.join("Maildir");
        let text = format!(
            "[auth]\nbackend = \"file\"\nusers_file = {u:?}\n[delivery]\nkind = \"maildir\"\npath = {md:?}\n"
        );
        build(&parse(&text)).await.unwrap();
        for sub in ["tmp", "new", "cur"] {
            assert!(md.join(sub).is_dir(), "{sub}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
