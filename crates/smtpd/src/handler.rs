//! The handler `smtpd` serves with: sender/login binding at MAIL, the `Received:` header, the
//! header fields a submission lacks, metrics, and the [`Delivery`] backend for everything that
//! stores or forwards the message.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use smtp_proto::{ForwardPath, MailParameters, RcptParameters, Reply, ReversePath};
use smtp_server::{BodyTarget, Envelope, Handler, Session};

use crate::delivery::{Delivery, DeliveryError, MailCommand, Message, RcptCommand, queue_id};
use crate::sender::SenderPolicy;
use crate::{header_from, received, submission};

/// The handler: binds senders to logins, adds the `Received:` header (and, for a submission,
/// missing `Date:`/`Message-ID:`), and delivers through its [`Delivery`].
#[derive(Debug, Clone)]
pub struct App {
    hostname: String,
    lmtp: bool,
    delivery: Arc<dyn Delivery>,
    senders: SenderPolicy,
    add_missing_headers: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// A store that runs some mechanisms itself (Dovecot).
    store: Option<crate::stores::Remote>,
    /// Bind `From:`/`Sender:` to the login ([`header_from`]).
    bind_header: bool,
    /// Sending limits per login and per address.
    sending: Option<Arc<crate::sending::SendingLimits>>,
    /// DKIM signing of authenticated submissions.
    dkim: Option<Arc<crate::dkim::Dkim>>,
}

impl App {
    /// A handler delivering through `delivery`, naming itself `hostname` in `Received:`
    /// headers (`lmtp`: the protocol it records), binding senders with `senders`, adding the
    /// fields a submission lacks when `add_missing_headers`, counting into `metrics`.
    pub fn new(
        hostname: &str,
        lmtp: bool,
        delivery: Arc<dyn Delivery>,
        senders: SenderPolicy,
        add_missing_headers: bool,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        Self {
            hostname: hostname.to_owned(),
            lmtp,
            delivery,
            senders,
            add_missing_headers,
            metrics,
            store: None,
            bind_header: false,
            sending: None,
            dkim: None,
        }
    }

    /// Signs authenticated submissions from the domains `dkim` has keys for ([`crate::dkim`]).
    pub fn with_dkim(mut self, dkim: Option<Arc<crate::dkim::Dkim>>) -> Self {
        self.dkim = dkim;
        self
    }

    /// The DKIM keys this session's messages are signed with: an authenticated submission,
    /// delivered by a backend that reads the message, with keys configured.
    fn signs(&self, session: &Session) -> Option<Arc<crate::dkim::KeySet>> {
        if !session.authenticated || !self.delivery.reads_body() {
            return None;
        }
        let keys = self.dkim.as_ref()?.keys();
        (!keys.is_empty()).then_some(keys)
    }

    /// The `DKIM-Signature:` fields for a message (empty when it is not signed: the reason is
    /// logged), over `added` (the fields we add in front of it) and its header section. The
    /// signing runs on the blocking pool: an RSA signature takes most of a millisecond.
    async fn dkim_signature(
        &self,
        keys: &Arc<crate::dkim::KeySet>,
        added: &str,
        head: Option<&(bytes::Bytes, bool)>,
        envelope: &Envelope,
        id: &str,
    ) -> String {
        let bh = envelope
            .observed
            .as_deref()
            .and_then(|o| (o as &dyn std::any::Any).downcast_ref::<crate::dkim::BodyHash>())
            .and_then(|h| h.hash())
            .map(<[u8]>::to_vec);
        let count = |result| {
            if let Some(m) = &self.metrics {
                m.dkim(result);
            }
        };
        let Some((head, whole)) = head else {
            tracing::warn!(target: "smtpd::app", queue_id = %id, "DKIM: header section unreadable, sent unsigned");
            count("failed");
            return String::new();
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (keys, added, head, whole) = (keys.clone(), added.to_owned(), head.clone(), *whole);
        let signed = tokio::task::spawn_blocking(move || {
            crate::dkim::sign(&keys, &added, &head, whole, bh.as_deref(), now)
        })
        .await
        .unwrap_or_else(|e| Err(crate::dkim::Unsigned::Failed(e.to_string())));
        match signed {
            Ok(s) => {
                tracing::debug!(target: "smtpd::app", queue_id = %id, "DKIM signed");
                count("signed");
                s
            }
            Err(e) => {
                if e != crate::dkim::Unsigned::NoKey {
                    tracing::warn!(target: "smtpd::app", queue_id = %id, reason = ?e, "DKIM: sent unsigned");
                }
                count(e.label());
                String::new()
            }
        }
    }

    /// Holds each login (and each address that did not log in) to its sending limits.
    pub fn with_sending(mut self, limits: Arc<crate::sending::SendingLimits>) -> Self {
        self.sending = Some(limits);
        self
    }

    /// Counts a sending-limit refusal and hands its reply on.
    fn refuse(&self, (reply, reason): (Reply, &'static str)) -> Option<Reply> {
        if let Some(m) = &self.metrics {
            m.policy_refusal(reason);
        }
        Some(reply)
    }

    /// Binds the `From:`/`Sender:` header fields of authenticated submissions to the login
    /// under the sender policy ([`header_from`]), unless that policy is `any`.
    pub fn with_header_binding(mut self, on: bool) -> Self {
        self.bind_header = on;
        self
    }

    /// Relays the mechanisms `store` runs itself to it (from `handle_auth`).
    pub fn with_store(mut self, store: Option<crate::stores::Remote>) -> Self {
        self.store = store;
        self
    }

    /// Whether this session's messages get missing `Date:`/`Message-ID:` fields: authenticated
    /// submission (RFC 6409 §8), when configured.
    fn fixes_headers(&self, session: &Session) -> bool {
        self.add_missing_headers && session.authenticated
    }

    /// The fields a submitted message lacks (`Date:`, `Message-ID:`), read from its first
    /// octets; none when its header section is longer than `submission::MAX_HEAD`.
    fn missing_headers(&self, head: Option<&(bytes::Bytes, bool)>, id: &str) -> String {
        match head.and_then(|(h, whole)| submission::scan(h, *whole)) {
            Some(p) => submission::additions(p, id, &self.hostname, SystemTime::now()),
            None => String::new(),
        }
    }

    /// The login of an authenticated submission whose header fields are bound to it.
    fn binds_header<'s>(&self, session: &'s Session) -> Option<&'s str> {
        session
            .login_data
            .as_deref()
            .filter(|_| self.bind_header && self.senders.checks())
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
    async fn handle_auth(
        &self,
        channel: &mut smtp_server::AuthChannel<'_>,
        session: &Session,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> Option<smtp_auth::AuthResult> {
        let store = self.store.as_ref().filter(|s| s.runs(mechanism))?;
        let metrics = self.metrics.as_deref();
        Some(
            store
                .relay(channel, session, mechanism, initial_response, metrics)
                .await,
        )
    }

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
                tracing::warn!(target: "smtpd::app", user = %login, sender = %address, "sender address not owned by user");
                return Some(Reply::simple(
                    553,
                    Some((5, 7, 1)),
                    &format!("<{address}>: Sender address rejected: not owned by user {login}"),
                ));
            }
        }
        if let Some(limits) = &self.sending
            && let Err(refusal) = limits.check_mail(session).await
        {
            return self.refuse(refusal);
        }
        let mail = MailCommand { from, params };
        self.delivery.begin(session, mail).await.err()
    }

    async fn rcpt(
        &self,
        session: &Session,
        envelope: &Envelope,
        to: &ForwardPath,
        params: &RcptParameters,
    ) -> Option<Reply> {
        if let Some(limits) = &self.sending
            && let Err(refusal) = limits.check_rcpt(session, envelope.rcpt_to.len()).await
        {
            return self.refuse(refusal);
        }
        let rcpt = RcptCommand { to, params };
        self.delivery.recipient(session, rcpt).await.err()
    }

    async fn ehlo(&self, session: &Session, _name: &str) -> Option<Reply> {
        self.delivery.abandon(session).await;
        None
    }

    async fn rset(&self, session: &Session) -> Option<Reply> {
        self.delivery.abandon(session).await;
        None
    }

    async fn disconnect(&self, session: &Session) {
        self.delivery.abandon(session).await;
    }

    async fn body_target(&self, session: &Session, envelope: &Envelope) -> Option<BodyTarget> {
        self.delivery
            .body_target(&|id| bytes::Bytes::from(self.received(session, envelope, id)))
    }

    fn body_observer(
        &self,
        session: &Session,
        _envelope: &Envelope,
    ) -> Option<Box<dyn smtp_server::BodyObserver>> {
        self.signs(session)?;
        Some(Box::new(crate::dkim::BodyHash::default()))
    }

    async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
        let started = Instant::now();
        let fixes = self.fixes_headers(session) && self.delivery.reads_body();
        let binds = self.binds_header(session);
        let signs = self.signs(session);
        let head = if fixes || binds.is_some() || signs.is_some() {
            submission::head(&envelope.body).await
        } else {
            None
        };
        if let Some(login) = binds {
            let verdict = match &head {
                Some((h, whole)) => header_from::check(h, *whole, login, &self.senders),
                None => Err(header_from::Mismatch(
                    "Header section unreadable".to_owned(),
                )),
            };
            if let Err(header_from::Mismatch(why)) = verdict {
                tracing::warn!(target: "smtpd::app", user = %login, reason = %why, "message refused: header sender not owned by user");
                if let Some(m) = &self.metrics {
                    m.refused_header_sender();
                }
                // Nothing is delivered: an upstream transaction is reset, and a body written
                // into the Maildir's tmp/ goes with the envelope.
                self.delivery.abandon(session).await;
                return Reply::simple(550, Some((5, 7, 1)), &why);
            }
        }
        // A body already written into place behind its Received header (body_target) gets
        // only the added fields; any other gets its Received header in front.
        let written = self.delivery.written(&envelope.body);
        let mut header = String::new();
        let id = match written {
            Some(id) => id,
            None => {
                let id = queue_id();
                header = self.received(session, envelope, &id);
                id
            }
        };
        let added = if fixes {
            self.missing_headers(head.as_ref(), &id)
        } else {
            String::new()
        };
        // The signature covers the message as delivered: the fields added above included.
        if let Some(keys) = &signs {
            let signature = self
                .dkim_signature(keys, &added, head.as_ref(), envelope, &id)
                .await;
            header.push_str(&signature);
        }
        header.push_str(&added);
        let outcome = self
            .delivery
            .deliver(Message {
                session,
                envelope,
                id: &id,
                header: &header,
            })
            .await;
        if let Some(m) = &self.metrics {
            m.delivery(self.delivery.kind(), started.elapsed(), outcome.is_ok());
        }
        if outcome.is_ok()
            && let Some(limits) = &self.sending
        {
            limits.accepted(session, envelope.rcpt_to.len());
        }
        delivered(session, envelope, &id, outcome)
    }
}

/// The reply and the log line for a delivery's outcome.
fn delivered(
    session: &Session,
    envelope: &Envelope,
    id: &str,
    outcome: Result<(), DeliveryError>,
) -> Reply {
    match outcome {
        Ok(()) => {
            let rcpts: Vec<String> = envelope.rcpt_to.iter().map(|r| r.to_string()).collect();
            tracing::info!(target: "smtpd::app", queue_id = %id, size = envelope.body.len(), recipients = ?rcpts, user = session.login_data.as_deref().unwrap_or(""), "delivered");
            Reply::simple(250, Some((2, 0, 0)), &format!("OK: queued as {id}"))
        }
        Err(DeliveryError::Local(e)) => {
            tracing::error!(target: "smtpd::app", queue_id = %id, error = %e, "delivery failed");
            Reply::simple(
                451,
                Some((4, 3, 0)),
                "Local error in processing, try again later",
            )
        }
        // The backend logged it; its party's answer goes to the client.
        Err(DeliveryError::Refused(reply)) => reply,
    }
}
