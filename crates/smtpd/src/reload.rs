//! SIGHUP: what it reloads, and the loop that does it.

use std::sync::Arc;

use smtp_auth::CredentialCache;

use crate::sender::SenderPolicy;
use crate::tls::CertStore;
use crate::users::FileUsers;

/// What a SIGHUP reloads.
pub(crate) struct Reloadable {
    /// The file backend's users, their file and the credential cache to correct.
    pub(crate) users: Option<(FileUsers, std::path::PathBuf, Option<CredentialCache>)>,
    /// The TLS certificate and key.
    pub(crate) certs: Option<Arc<CertStore>>,
    /// The sender/login map.
    pub(crate) senders: SenderPolicy,
    /// The token store of `[auth.oauth]`: its keys and remembered verdicts are dropped.
    pub(crate) oauth: Option<smtp_auth_oauth::OAuthProvider>,
    /// The sending limits' overrides file.
    pub(crate) sending: Arc<crate::sending::SendingLimits>,
    /// A remote identity store to reconnect, with the credential cache to empty (its users
    /// and passwords live elsewhere: a SIGHUP makes changes there take effect at once).
    pub(crate) store: Option<(crate::stores::Remote, Option<CredentialCache>)>,
    /// The DKIM signing keys.
    pub(crate) dkim: Option<Arc<crate::dkim::Dkim>>,
}

/// SIGHUP re-reads the users file, the TLS certificate and key, and the sender/login map,
/// reconnects a remote identity store (emptying the credential cache), for
/// the sessions and handshakes that follow (sessions in progress are untouched), and drops the
/// cached credentials of every user whose line changed or went away. Each file is checked by
/// the loader that `check-config` and a start use; a broken one is refused with a log line
/// naming the problem, and what was in force stays in force.
pub(crate) async fn reload_on_sighup(r: Reloadable) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!(target: "smtpd::app", "no SIGHUP handler: reloads need a restart");
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
                    tracing::info!(target: "smtpd::app",
                        file = %path.display(),
                        users = users.len(),
                        changed = changed.len(),
                        "users file reloaded"
                    );
                }
                Err(e) => tracing::error!(target: "smtpd::app",
                    error = %e,
                    "users file reload refused: the old users stay in force"
                ),
            }
        }
        if let Some(certs) = &r.certs {
            match certs.reload() {
                Ok(()) => tracing::info!(target: "smtpd::app", "TLS certificate and key reloaded"),
                Err(e) => tracing::error!(target: "smtpd::app",
                    error = %e,
                    "TLS reload refused: the old certificate stays in force"
                ),
            }
        }
        if let Some(dkim) = &r.dkim {
            match dkim.reload() {
                Ok(n) => tracing::info!(target: "smtpd::app", keys = n, "DKIM keys reloaded"),
                Err(e) => tracing::error!(target: "smtpd::app",
                    error = %e,
                    "DKIM key reload refused: the old keys stay in force"
                ),
            }
        }
        if let Some((store, cache)) = &r.store {
            store.reconnect().await;
            if let Some(c) = cache {
                c.clear();
            }
            tracing::info!(target: "smtpd::app", store = store.name(), "identity store reconnected, credential cache emptied");
        }
        if let Some(o) = &r.oauth {
            o.clear().await;
            tracing::info!(target: "smtpd::app", "OAuth keys and remembered tokens dropped: the JWKS is fetched again");
        }
        match r.sending.reload() {
            Ok(Some(n)) => {
                tracing::info!(target: "smtpd::app", logins = n, "sending limit overrides reloaded")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(target: "smtpd::app",
                error = %e,
                "sending limit overrides reload refused: the old overrides stay in force"
            ),
        }
        match r.senders.reload() {
            Ok(Some(n)) => {
                tracing::info!(target: "smtpd::app", entries = n, "sender/login map reloaded")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(target: "smtpd::app",
                error = %e,
                "sender/login map reload refused: the old map stays in force"
            ),
        }
    }
}
