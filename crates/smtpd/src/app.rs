//! The composition: configuration → `smtp-server` with the chosen auth backend and delivery.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use smtp_auth::Registry;
use smtp_auth_http::HttpAuthProvider;
use smtp_proto::{BarePolicy, Reply};
use smtp_server::{
    Authenticator, Envelope, Handler, ProviderAuthenticator, Server, ServerConfig, Session,
};
use tokio::sync::watch;

use crate::config::{AuthSection, BareLineEndings, Config, Delivery, ListenerTls, RelaySection};
use crate::delivery::{Maildir, queue_id};
use crate::users::FileUsers;
use crate::{received, relay};

#[derive(Debug)]
enum Target {
    Maildir(Maildir),
    Relay(RelaySection),
    Discard,
}

/// The handler: adds the Received header and delivers.
#[derive(Debug, Clone)]
pub struct App {
    hostname: String,
    lmtp: bool,
    target: Arc<Target>,
}

impl Handler for App {
    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        let id = queue_id();
        let header = received::header(
            session,
            envelope,
            &self.hostname,
            &id,
            self.lmtp,
            SystemTime::now(),
        );
        let size = envelope.content.len();
        let rcpts: Vec<String> = envelope.rcpt_to.iter().map(|r| r.to_string()).collect();
        let outcome = match &*self.target {
            Target::Discard => Ok(()),
            Target::Maildir(md) => {
                let (md, content, host, id2) = (
                    md.clone(),
                    envelope.content.clone(),
                    self.hostname.clone(),
                    id.clone(),
                );
                match tokio::task::spawn_blocking(move || {
                    md.store(&id2, &host, &[header.as_bytes(), &content])
                })
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("maildir: {e}")),
                    Err(e) => Err(format!("maildir task: {e}")),
                }
            }
            Target::Relay(cfg) => {
                let mut message = header.into_bytes();
                message.extend_from_slice(&envelope.content);
                let from = envelope
                    .mail_from
                    .as_ref()
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "<>".into());
                match relay::relay(cfg, &self.hostname, &from, &rcpts, &message).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::warn!(queue_id = %id, error = %e.detail, "relay failed");
                        return e.reply();
                    }
                }
            }
        };
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
}

/// Loads the TLS certificate and key named by `[tls]`.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("tls: {e}"))?;
    Ok(Arc::new(config))
}

fn server_config(
    c: &Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    mode: ListenerTls,
) -> ServerConfig {
    let s = &c.server;
    let mut registry = Registry::empty();
    let all = Registry::all_builtin();
    for m in &s.mechanisms {
        let name = m.to_ascii_uppercase();
        if all.contains(&name) {
            let all = all.clone();
            let n2 = name.clone();
            // Names were validated with the configuration.
            let _ = registry.register(&name, move || {
                all.create(&n2).expect("a built-in mechanism")
            });
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
        .max_data_duration(Duration::from_secs(s.max_data_duration_secs));
    if let (Some(t), ListenerTls::Starttls | ListenerTls::Implicit) = (tls, mode) {
        b = b.tls(t).implicit_tls(mode == ListenerTls::Implicit);
    }
    b.build()
}

/// Runs every listener until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let tls = match &config.tls {
        Some(t) => Some(load_tls(&t.cert, &t.key)?),
        None => None,
    };
    let target = match &config.delivery {
        Delivery::Maildir { path } => Target::Maildir(
            Maildir::open(path).map_err(|e| format!("delivery.path {}: {e}", path.display()))?,
        ),
        Delivery::Relay(r) => Target::Relay(r.clone()),
        Delivery::Discard => Target::Discard,
    };
    let app = App {
        hostname: config.server.hostname.clone(),
        lmtp: config.server.lmtp,
        target: Arc::new(target),
    };
    let authenticator: Arc<dyn Authenticator> = match &config.auth {
        AuthSection::File { users_file } => {
            let users = FileUsers::load(users_file).map_err(|e| format!("auth.users_file: {e}"))?;
            tracing::info!(users = users.len(), file = %users_file.display(), "users loaded");
            Arc::new(ProviderAuthenticator::new(users.clone()).with_secrets(users))
        }
        AuthSection::Http {
            url,
            bearer_token,
            timeout_ms,
        } => {
            let p = HttpAuthProvider::new(url, bearer_token, *timeout_ms)
                .map_err(|e| format!("auth.url: {e}"))?;
            Arc::new(ProviderAuthenticator::new(p))
        }
    };
    let (tx, rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for l in &config.listeners {
        let listener = tokio::net::TcpListener::bind(l.address)
            .await
            .map_err(|e| format!("listener {}: {e}", l.address))?;
        tracing::info!(address = %l.address, tls = ?l.tls, "listening");
        let cfg = server_config(&config, tls.clone(), l.tls);
        let server = Server::new(cfg, app.clone()).authenticator(Shared(authenticator.clone()));
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
    Ok(())
}

/// One authenticator shared by every listener.
struct Shared(Arc<dyn Authenticator>);

impl Authenticator for Shared {
    fn authenticate(
        &self,
        session: &Session,
        request: smtp_auth::AuthRequest,
    ) -> smtp_server::BoxFuture<smtp_auth::AuthResult> {
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
