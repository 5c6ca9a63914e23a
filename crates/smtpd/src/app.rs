//! The composition: configuration → `smtp-server` with the chosen auth backend and delivery.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use smtp_auth::Registry;
use smtp_auth::mechanism::ScramSha256Server;
use smtp_auth::{CacheConfig, CredentialCache};
use smtp_auth_http::HttpAuthProvider;
use smtp_proto::{BarePolicy, ForwardPath, MailParameters, RcptParameters, Reply, ReversePath};
use smtp_server::{
    AuthLimiter, Authenticator, BodyTarget, Envelope, Handler, ProviderAuthenticator, Server,
    ServerConfig, Session,
};
use tokio::sync::watch;
use tower_layer::Layer as _;

use crate::config::{AuthSection, BareLineEndings, Config, Delivery, ListenerTls, RelaySection};
use crate::delivery::{Maildir, queue_id};
use crate::sender::SenderPolicy;
use crate::shared_limit::{RedisTarget, SharedCheck, SharedLimiter};
use crate::users::{ExternalMap, FileUsers};
use crate::{received, relay, submission};

#[derive(Debug)]
enum Target {
    Maildir(Maildir),
    /// The upstream, and its connections kept between messages.
    Relay(RelaySection, Arc<relay::RelayPool>),
    Discard,
}

/// The handler: adds the Received header and delivers.
#[derive(Debug, Clone)]
pub struct App {
    hostname: String,
    lmtp: bool,
    target: Arc<Target>,
    senders: SenderPolicy,
    add_missing_headers: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl App {
    /// Whether this session's messages get missing `Date:`/`Message-ID:` fields: authenticated
    /// submission (RFC 6409 §8), when configured.
    fn fixes_headers(&self, session: &Session) -> bool {
        self.add_missing_headers && session.authenticated
    }

    /// The fields a submitted message lacks (`Date:`, `Message-ID:`), read from its first
    /// octets; none when its header section is longer than `submission::MAX_HEAD`.
    async fn missing_headers(&self, body: &smtp_server::Body, id: &str) -> String {
        let whole = body.len() <= submission::MAX_HEAD as u64;
        let present = match body.as_memory() {
            Some(b) => submission::scan(&b[..b.len().min(submission::MAX_HEAD)], whole),
            None => {
                use tokio::io::AsyncReadExt;
                let mut head = Vec::with_capacity(submission::MAX_HEAD.min(body.len() as usize));
                match body.reader().await {
                    Ok(r) => {
                        let mut r = r.take(submission::MAX_HEAD as u64);
                        if r.read_to_end(&mut head).await.is_err() {
                            return String::new();
                        }
                        submission::scan(&head, whole)
                    }
                    Err(_) => None,
                }
            }
        };
        match present {
            Some(p) => submission::additions(p, id, &self.hostname, SystemTime::now()),
            None => String::new(),
        }
    }

    /// Gives up the session's upstream transaction, if the relay has one open.
    async fn abandon_relay(&self, session: &Session) {
        if let Target::Relay(_, pool) = &*self.target {
            relay::abandon(pool, session_key(session)).await;
        }
    }

    /// Counts a delivery for the metrics endpoint, when there is one.
    fn observe_delivery(&self, kind: &'static str, started: std::time::Instant, ok: bool) {
        if let Some(m) = &self.metrics {
            m.delivery(kind, started.elapsed(), ok);
        }
    }

    /// The `Received:` header of message `id`, stamped now.
    fn received(&self, session: &Session, envelope: &Envelope, id: &str) -> String {
        received::header(
            session,
            envelope,
            &self.hostname,
            id,
            self.lmtp,
            SystemTime::now(),
        )
    }
}

impl Handler for App {
    async fn mail(
        &self,
        session: &Session,
        _envelope: &Envelope,
        from: &ReversePath,
        params: &MailParameters,
    ) -> Option<Reply> {
        // Sender/login binding: an authenticated user sends only as addresses it owns.
        if let (Some(login), ReversePath::Mailbox(m)) = (&session.login_data, from) {
            let address = m.to_string();
            if !self.senders.allows(login, &address) {
                tracing::warn!(user = %login, sender = %address, "sender address not owned by user");
                return Some(Reply::simple(
                    553,
                    Some((5, 7, 1)),
                    &format!("<{address}>: Sender address rejected: not owned by user {login}"),
                ));
            }
        }
        // Relay: the upstream transaction opens now, so each recipient gets its own answer.
        if let Target::Relay(cfg, pool) = &*self.target
            && let Err(e) = relay::begin(
                cfg,
                pool,
                session_key(session),
                &self.hostname,
                from,
                params,
            )
            .await
        {
            tracing::warn!(error = %e.detail, "relay: MAIL not taken upstream");
            return Some(e.command_reply());
        }
        None
    }

    async fn rcpt(
        &self,
        session: &Session,
        _envelope: &Envelope,
        to: &ForwardPath,
        params: &RcptParameters,
    ) -> Option<Reply> {
        if let Target::Relay(_, pool) = &*self.target
            && let Err(e) = relay::recipient(pool, session_key(session), to, params).await
        {
            tracing::info!(recipient = %to, error = %e.detail, "relay: recipient refused upstream");
            return Some(e.command_reply());
        }
        None
    }

    async fn ehlo(&self, session: &Session, _name: &str) -> Option<Reply> {
        self.abandon_relay(session).await;
        None
    }

    async fn rset(&self, session: &Session) -> Option<Reply> {
        self.abandon_relay(session).await;
        None
    }

    async fn disconnect(&self, session: &Session) {
        self.abandon_relay(session).await;
    }

    /// Maildir: the body is written straight into `tmp/`, after the `Received:` header, while
    /// it arrives; `data` then only renames it into `new/` (no second copy).
    async fn body_target(&self, session: &Session, envelope: &Envelope) -> Option<BodyTarget> {
        let Target::Maildir(md) = &*self.target else {
            return None;
        };

        let id = queue_id();
        let header = self.received(session, envelope, &id);
        Some(BodyTarget {
            path: md.tmp_path(&id, &self.hostname),
            prefix: bytes::Bytes::from(header),
        })
    }

    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        let started = std::time::Instant::now();
        // A body already written into the Maildir's tmp/ (see body_target) is committed.
        if let (Target::Maildir(md), Some(path)) = (&*self.target, envelope.body.spool_path())
            && path.parent() == Some(&md.root().join("tmp"))
        {
            let id = md.queue_id_of(path, &self.hostname).unwrap_or_default();
            // A submission that lacks Date or Message-ID is written again with them (the one
            // case that copies); everything else is renamed into place as it is.
            let additions = if self.fixes_headers(session) {
                self.missing_headers(&envelope.body, &id).await
            } else {
                String::new()
            };
            let offset = match &envelope.body {
                smtp_server::Body::Spooled(f) => f.offset(),
                smtp_server::Body::Memory(_) => 0,
            };
            let (md, path, host, id2) = (
                md.clone(),
                path.to_path_buf(),
                self.hostname.clone(),
                id.clone(),
            );
            let size = envelope.body.len();
            let rcpts: Vec<String> = envelope.rcpt_to.iter().map(|r| r.to_string()).collect();
            let commit = move || {
                if additions.is_empty() {
                    return md.commit(&path);
                }
                with_added_fields(&md, &path, offset, &additions, &id2, &host)
            };
            let committed = match tokio::task::spawn_blocking(commit).await {
                Ok(r) => r.map_err(|e| format!("maildir: {e}")),
                Err(e) => Err(format!("maildir task: {e}")),
            };
            self.observe_delivery("maildir", started, committed.is_ok());
            return delivered(session, &id, size, &rcpts, committed.map(|_| ()));
        }
        let id = queue_id();
        let mut header = self.received(session, envelope, &id);
        // (Discarded messages are not read for it.)
        if self.fixes_headers(session) && !matches!(&*self.target, Target::Discard) {
            header.push_str(&self.missing_headers(&envelope.body, &id).await);
        }
        let size = envelope.body.len();
        let rcpts: Vec<String> = envelope.rcpt_to.iter().map(|r| r.to_string()).collect();
        let outcome = match &*self.target {
            Target::Discard => Ok(()),
            Target::Maildir(md) => {
                let (md, body, host, id2) = (
                    md.clone(),
                    envelope.body.clone(),
                    self.hostname.clone(),
                    id.clone(),
                );
                // The header, then the body streamed from memory or its spool file.
                match tokio::task::spawn_blocking(move || {
                    let mut message = std::io::Read::chain(
                        std::io::Cursor::new(header.into_bytes()),
                        body.blocking_reader()?,
                    );
                    md.store_from(&id2, &host, &mut message)
                })
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("maildir: {e}")),
                    Err(e) => Err(format!("maildir task: {e}")),
                }
            }
            Target::Relay(cfg, pool) => {
                // Streamed from memory or the spool file, never loaded whole: on the
                // transaction opened at MAIL, or a whole new one when there is none.
                let sent = match relay::finish(
                    pool,
                    session_key(session),
                    header.as_bytes(),
                    &envelope.body,
                )
                .await
                {
                    Some(r) => r,
                    None => {
                        relay::relay(
                            cfg,
                            pool,
                            session_key(session),
                            &self.hostname,
                            envelope,
                            header.as_bytes(),
                        )
                        .await
                    }
                };
                match sent {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::warn!(queue_id = %id, error = %e.detail, "relay failed");
                        self.observe_delivery("relay", started, false);
                        return e.reply();
                    }
                }
            }
        };
        let kind = match &*self.target {
            Target::Maildir(_) => "maildir",
            Target::Relay(..) => "relay",
            Target::Discard => "discard",
        };
        self.observe_delivery(kind, started, outcome.is_ok());
        delivered(session, &id, size, &rcpts, outcome)
    }
}

/// The key of a session's upstream transaction: its connection's two addresses.
fn session_key(session: &Session) -> relay::SessionKey {
    (session.peer_addr, session.local_addr)
}

/// Writes the message at `tmp` again with `additions` after its first `offset` octets (the
/// `Received:` header), into `new/` under the same name. Blocking.
fn with_added_fields(
    md: &Maildir,
    tmp: &std::path::Path,
    offset: u64,
    additions: &str,
    id: &str,
    hostname: &str,
) -> std::io::Result<std::path::PathBuf> {
    use std::io::Read;
    // The name is the new file's: the original moves aside while it is read.
    let mut aside = tmp.as_os_str().to_owned();
    aside.push(".orig");
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(tmp, &aside)?;
    let result = (|| {
        let mut original = std::fs::File::open(&aside)?;
        let mut prefix = vec![0u8; usize::try_from(offset).unwrap_or(0)];
        original.read_exact(&mut prefix)?;
        let mut message = std::io::Cursor::new(prefix)
            .chain(std::io::Cursor::new(additions.as_bytes()))
            .chain(original);
        md.store_from(id, hostname, &mut message)
    })();
    let _ = std::fs::remove_file(&aside);
    result
}

/// The reply and the log line for a delivery's outcome.
fn delivered(
    session: &Session,
    id: &str,
    size: u64,
    rcpts: &[String],
    outcome: Result<(), String>,
) -> Reply {
    match outcome {
        Ok(()) => {
            tracing::info!(queue_id = %id, size, recipients = ?rcpts, user = session.login_data.as_deref().unwrap_or(""), "delivered");
            Reply::simple(250, Some((2, 0, 0)), &format!("OK: queued as {id}"))
        }
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "delivery failed");
            Reply::simple(
                451,
                Some((4, 3, 0)),
                "Local error in processing, try again later",
            )
        }
    }
}

/// The server's certificate and key, swappable while it runs: the TLS configuration resolves
/// every handshake through it, so a [`CertStore::reload`] (SIGHUP) reaches the next handshake
/// on every listener, and sessions already in TLS keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl CertStore {
    /// Loads the certificate chain and key (PEM); errors name the key and the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        Ok(Self {
            current: std::sync::RwLock::new(Arc::new(certified_key(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Re-reads both files for the handshakes that follow; a broken or mismatched pair is
    /// refused with the reason and the current one stays in force.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = Arc::new(certified_key(&self.cert, &self.key)?);
        if let Ok(mut current) = self.current.write() {
            *current = fresh;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match self.current.read() {
            Ok(c) => Some(c.clone()),
            Err(poisoned) => Some(poisoned.into_inner().clone()),
        }
    }
}

/// A certificate chain and its private key from PEM files, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key_der, &provider).map_err(|e| {
        format!(
            "tls.key {}: {e} (does it belong to tls.cert?)",
            key.display()
        )
    })
}

/// The TLS configuration: the certificate and key through a [`CertStore`] (reloadable), and
/// client certificates verified against `client_ca` when given (EXTERNAL).
pub fn load_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertStore>), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let store = Arc::new(CertStore::load(cert, key)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("tls.client_ca {}: no certificate", ca.display()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_cert_resolver(store.clone());
    Ok((Arc::new(config), store))
}

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
            ..
        } => {
            let workers = match config.server.auth_workers {
                0 => smtp_server::default_workers(),
                n => n,
            };
            let users = FileUsers::load(users_file)
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
        AuthSection::Http { .. } => (None, None),
    };
    let s = &config.server;
    let senders = SenderPolicy::load(s.sender_login, &s.hostname, s.sender_login_map.as_deref())
        .map_err(|e| format!("server.sender_login_map: {e}"))?;
    Ok(Loaded {
        tls,
        certs,
        users,
        external,
        senders,
    })
}

fn server_config(
    c: &Config,
    loaded: &Loaded,
    mode: ListenerTls,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
) -> ServerConfig {
    let s = &c.server;
    let mut registry = Registry::empty();
    let all = Registry::all_builtin();
    let scram_secret = loaded.users.as_ref().map(FileUsers::scram_secret);
    for m in &s.mechanisms {
        let name = m.to_ascii_uppercase();
        match (name.as_str(), &scram_secret) {
            // Unknown users' fake salts stay the same across restarts.
            ("SCRAM-SHA-256", Some(k)) => {
                let k = k.clone();
                let _ = registry.register(&name, move || {
                    Box::new(ScramSha256Server::default().with_secret(k.clone()))
                });
            }
            ("SCRAM-SHA-256-PLUS", Some(k)) => {
                let k = k.clone();
                let _ = registry.register(&name, move || {
                    Box::new(ScramSha256Server::plus().with_secret(k.clone()))
                });
            }
            _ if all.contains(&name) => {
                let all = all.clone();
                let n2 = name.clone();
                // Names were validated with the configuration.
                let _ = registry.register(&name, move || {
                    all.create(&n2).expect("a built-in mechanism")
                });
            }
            _ => {}
        }
    }
    for m in &s.exclude_mechanisms {
        registry.exclude(m);
    }
    let mut b = ServerConfig::builder()
        .hostname(s.hostname.clone())
        .greeting(s.greeting.clone())
        .max_message_size(s.max_message_size)
        .max_recipients(s.max_recipients)
        .max_line_length(s.max_line_length)
        .read_timeout(Duration::from_secs(s.read_timeout_secs))
        .max_connections(s.max_connections)
        .auth_required(s.auth_required)
        .auth_require_tls(s.auth_require_tls)
        .max_auth_failures(s.max_auth_failures)
        .auth_failure_delay(Duration::from_millis(s.auth_failure_delay_ms))
        .max_auth_failures_per_ip(
            s.max_auth_failures_per_ip,
            Duration::from_secs(s.auth_failure_window_secs),
        )
        .registry(registry)
        .smtputf8(s.smtputf8)
        .lmtp(s.lmtp)
        .proxy_protocol(s.proxy_protocol)
        .bare_line_endings(match s.bare_line_endings {
            BareLineEndings::Reject => BarePolicy::Reject,
            BareLineEndings::Normalize => BarePolicy::Normalize,
        })
        .shutdown_grace(Duration::from_secs(s.shutdown_grace_secs))
        .auth_timeout(Duration::from_secs(s.auth_timeout_secs))
        .max_errors(s.max_errors)
        .lenient_helo(s.lenient_helo)
        .lenient_paths(s.lenient_paths)
        .max_connections_per_ip(s.max_connections_per_ip)
        .max_junk_commands(s.max_junk_commands)
        .max_session_duration(Duration::from_secs(s.max_session_duration_secs))
        .spool_threshold(s.spool_threshold)
        .memory_budget(s.memory_budget)
        .spool_dir(s.spool_dir.clone().unwrap_or_else(std::env::temp_dir))
        .forbid_bare_newline(s.forbid_bare_newline)
        .max_data_duration(Duration::from_secs(s.max_data_duration_secs))
        .max_auth_failures_per_user(s.max_auth_failures_per_user)
        .allow_pipelined_body(s.allow_pipelined_body)
        .proxy_authorization(matches!(
            c.auth,
            AuthSection::Http {
                send_authzid: true,
                ..
            }
        ));
    if let (Some(t), ListenerTls::Starttls | ListenerTls::Implicit) = (loaded.tls.clone(), mode) {
        b = b.tls(t).implicit_tls(mode == ListenerTls::Implicit);
    }
    if let Some(map) = loaded.external.clone() {
        b = b.external_identity(move |cert| map.user(cert));
    }
    if let Some(m) = metrics {
        b = b.observer(m.clone());
    }
    b.build()
}

/// Builds one [`Server`] per listener from the configuration, sharing the delivery target,
/// the authenticator (with its cache and the users file's SIGHUP reload) and one AUTH failure
/// limiter, without binding anything: `run` binds and serves them, and a test can serve a
/// connection of its own with `Server::serve_connection`.
pub async fn build(config: &Config) -> Result<Built, String> {
    let loaded = load(config)?;
    let target = match &config.delivery {
        Delivery::Maildir { path } => {
            let md = Maildir::open(path)
                .map_err(|e| format!("delivery.path {}: {e}", path.display()))?;
            match md.clean_tmp(&config.server.hostname) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    removed = n,
                    dir = %path.join("tmp").display(),
                    "removed stale files from the Maildir's tmp/ (crashed writes, or older than 36 hours)"
                ),
                Err(e) => tracing::warn!(error = %e, "could not clean the Maildir's tmp/"),
            }
            Target::Maildir(md)
        }
        Delivery::Relay(r) => Target::Relay(
            r.clone(),
            Arc::new(relay::RelayPool::new(Duration::from_secs(
                r.reuse_idle_secs,
            ))),
        ),
        Delivery::Discard => Target::Discard,
    };
    let metrics = config
        .metrics
        .as_ref()
        .map(|_| Arc::new(crate::metrics::Metrics::default()));
    let app = App {
        hostname: config.server.hostname.clone(),
        lmtp: config.server.lmtp,
        target: Arc::new(target),
        senders: loaded.senders.clone(),
        add_missing_headers: config.server.add_missing_headers,
        metrics: metrics.clone(),
    };
    let keys = config.auth.cache();
    let cache = keys.enabled.then(|| {
        CredentialCache::new(CacheConfig {
            ttl: Duration::from_secs(keys.ttl_secs),
            negative_ttl: Duration::from_secs(keys.negative_ttl_secs),
            max_entries: keys.max_entries,
            ..CacheConfig::default()
        })
    });
    if let (Some(m), Some(c)) = (&metrics, &cache) {
        m.watch_cache(c.clone());
    }
    let authenticator: Arc<dyn Authenticator> = match (&config.auth, &loaded.users) {
        (AuthSection::File { users_file, .. }, Some(users)) => {
            tracing::info!(
                users = users.len(),
                file = %users_file.display(),
                workers = users.pool().workers(),
                cache = keys.enabled,
                "users loaded"
            );
            match &cache {
                Some(c) => Arc::new(
                    ProviderAuthenticator::new(c.layer().layer(users.clone()))
                        .with_secrets(users.clone()),
                ),
                None => {
                    Arc::new(ProviderAuthenticator::new(users.clone()).with_secrets(users.clone()))
                }
            }
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
            let p = HttpAuthProvider::builder(url.clone())
                .bearer_token(bearer_token.clone())
                .timeout(Duration::from_millis(*timeout_ms))
                .send_authzid(*send_authzid)
                .build()
                .map_err(|e| format!("auth.url: {e}"))?;
            match &cache {
                Some(c) => Arc::new(ProviderAuthenticator::new(c.layer().layer(p))),
                None => Arc::new(ProviderAuthenticator::new(p)),
            }
        }
        (AuthSection::File { .. }, None) => return Err("auth.users_file: not loaded".into()),
    };
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
    }));
    // One failure limiter for the whole process: every listener counts into it. With
    // `[limiter]` it also tells Redis, and the authenticator asks Redis first.
    let s = &config.server;
    let mut limiter = AuthLimiter::new(
        s.max_auth_failures_per_ip,
        s.max_auth_failures_per_user,
        Duration::from_secs(s.auth_failure_window_secs),
    );
    let mut authenticator = authenticator;
    if let Some(l) = &config.limiter {
        let shared = SharedLimiter::start(
            RedisTarget {
                address: l.redis.clone(),
                prefix: l.key_prefix.clone(),
                timeout: Duration::from_millis(l.timeout_ms),
                auth: l
                    .password
                    .as_ref()
                    .map(|p| (l.username.clone(), zeroize::Zeroizing::new(p.clone()))),
            },
            &limiter,
        );
        tracing::info!(redis = %l.redis, prefix = %l.key_prefix, "AUTH failures shared through Redis");
        limiter = limiter.with_listener(shared.clone());
        if let Some(m) = &metrics {
            m.watch_limiter(shared.clone());
        }
        authenticator = Arc::new(SharedCheck {
            inner: authenticator,
            shared,
        });
    }
    let limiter = Arc::new(limiter);
    let servers = config
        .listeners
        .iter()
        .map(|l| {
            let cfg = server_config(config, &loaded, l.tls, metrics.as_ref());
            let server = Server::new(cfg, app.clone())
                .authenticator(Shared(authenticator.clone()))
                .limiter(limiter.clone());
            (l.address, server)
        })
        .collect();
    Ok(Built { servers, metrics })
}

/// What [`build`] makes: one server per listener, and the metrics they report into when
/// `[metrics]` is configured.
pub struct Built {
    /// Each listener's address and server, in the configuration's order.
    pub servers: Vec<(std::net::SocketAddr, Server<App>)>,
    /// The counters behind `[metrics]`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
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
    let metrics_task = match (&config.metrics, built.metrics) {
        (Some(m), Some(metrics)) => {
            let listener = tokio::net::TcpListener::bind(m.address)
                .await
                .map_err(|e| format!("metrics.address {}: {e}", m.address))?;
            tracing::info!(address = %m.address, "metrics endpoint");
            Some(tokio::spawn(crate::metrics::serve(listener, metrics)))
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

/// What a SIGHUP reloads.
struct Reloadable {
    /// The file backend's users, their file and the credential cache to correct.
    users: Option<(FileUsers, std::path::PathBuf, Option<CredentialCache>)>,
    /// The TLS certificate and key.
    certs: Option<Arc<CertStore>>,
    /// The sender/login map.
    senders: SenderPolicy,
}

/// SIGHUP re-reads the users file, the TLS certificate and key, and the sender/login map, for
/// the sessions and handshakes that follow (sessions in progress are untouched), and drops the
/// cached credentials of every user whose line changed or went away. Each file is checked by
/// the loader that `check-config` and a start use; a broken one is refused with a log line
/// naming the problem, and what was in force stays in force.
async fn reload_on_sighup(r: Reloadable) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: reloads need a restart");
        return;
    };
    while hup.recv().await.is_some() {
        if let Some((users, path, cache)) = &r.users {
            match users.reload(path) {
                Ok(changed) => {
                    if let Some(c) = cache {
                        for u in &changed {
                            c.invalidate_user(u);
                        }
                    }
                    tracing::info!(
                        file = %path.display(),
                        users = users.len(),
                        changed = changed.len(),
                        "users file reloaded"
                    );
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "users file reload refused: the old users stay in force"
                ),
            }
        }
        if let Some(certs) = &r.certs {
            match certs.reload() {
                Ok(()) => tracing::info!("TLS certificate and key reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    "TLS reload refused: the old certificate stays in force"
                ),
            }
        }
        match r.senders.reload() {
            Ok(Some(n)) => tracing::info!(entries = n, "sender/login map reloaded"),
            Ok(None) => {}
            Err(e) => tracing::error!(
                error = %e,
                "sender/login map reload refused: the old map stays in force"
            ),
        }
    }
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
