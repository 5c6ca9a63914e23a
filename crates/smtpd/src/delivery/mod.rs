//! Delivery: where an accepted message goes, as a [`Delivery`] trait with one file per
//! backend: [`maildir`] (atomic: tmp/, fsync, rename into new/, all before the 250),
//! [`relay`] (an upstream SMTP server, the transaction opened at MAIL) and [`discard`].
//!
//! The contract, in the order a session calls it:
//! - [`Delivery::begin`] at MAIL and [`Delivery::recipient`] at each RCPT, after the session
//!   accepted them: a backend that talks to someone else (the relay) opens its transaction
//!   now, so each command gets that party's own answer (`Err(reply)` refuses it).
//! - [`Delivery::body_target`] before the body arrives: a backend that stores files may have
//!   the body written straight into place behind the `Received:` header (the Maildir's
//!   `tmp/`); [`Delivery::written`] later recognises such a body and names its queue id.
//! - [`Delivery::deliver`] with the whole message: `header` goes in front of the body (the
//!   `Received:` header and, for a submission, missing `Date:`/`Message-ID:`; only the added
//!   fields when the body was written into place). `Ok` only once the message is safe.
//! - [`Delivery::abandon`] when the transaction ends without a message (RSET, EHLO, hang-up).
//!
//! A new backend is one file here plus one line in [`from_config`]; a stage such as DKIM
//! signing can wrap any `Delivery`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use smtp_proto::{ForwardPath, MailParameters, RcptParameters, Reply, ReversePath};
use smtp_server::{Body, BodyTarget, Envelope, Session};

pub mod discard;
pub mod maildir;
pub mod relay;

pub use discard::Discard;
pub use maildir::{Maildir, MaildirDelivery};
pub use relay::Relay;

/// A boxed future borrowing the delivery and the session.
pub type DeliveryFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Delivery::begin`] and [`Delivery::recipient`] answer: `Err(reply)` refuses.
pub type Answer<'a> = DeliveryFuture<'a, Result<(), Reply>>;

/// A MAIL the session accepted: its reverse-path and parameters.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MailCommand<'a> {
    /// The reverse-path.
    pub from: &'a ReversePath,
    /// Its parameters.
    pub params: &'a MailParameters,
}

/// An RCPT the session accepted: its forward-path and parameters.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RcptCommand<'a> {
    /// The forward-path.
    pub to: &'a ForwardPath,
    /// Its parameters.
    pub params: &'a RcptParameters,
}

/// A whole message handed to [`Delivery::deliver`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Message<'a> {
    /// The session it arrived in.
    pub session: &'a Session,
    /// Its envelope and body.
    pub envelope: &'a Envelope,
    /// Its queue id (the name in logs and in the 250 reply).
    pub id: &'a str,
    /// Header fields to put in front of the body (see the module documentation).
    pub header: &'a str,
}

/// Why a message was not delivered.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A local failure (disk, task): logged, answered 451 4.3.0.
    Local(String),
    /// Someone else's answer, sent as is (the relay's upstream refused; the backend logged it).
    Refused(Reply),
}

/// Where accepted messages go. See the [module documentation](self) for the calling order.
pub trait Delivery: Send + Sync + std::fmt::Debug + 'static {
    /// The backend's name in logs and metrics (`maildir`, `relay`, `discard`).
    fn kind(&self) -> &'static str;

    /// MAIL was accepted by the session: `Err(reply)` refuses it.
    fn begin<'a>(&'a self, session: &'a Session, mail: MailCommand<'a>) -> Answer<'a> {
        let _ = (session, mail);
        Box::pin(std::future::ready(Ok(())))
    }

    /// RCPT was accepted by the session: `Err(reply)` refuses this recipient.
    fn recipient<'a>(&'a self, session: &'a Session, rcpt: RcptCommand<'a>) -> Answer<'a> {
        let _ = (session, rcpt);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Where the body is written while it arrives; `header(id)` makes the `Received:` header
    /// of message `id`, to write in front of it (called only by a backend that takes the
    /// body, so the others pay nothing). `None`: in memory or a spool file.
    fn body_target(&self, header: &dyn Fn(&str) -> bytes::Bytes) -> Option<BodyTarget> {
        let _ = header;
        None
    }

    /// The queue id of a body written into a [`Delivery::body_target`] of this backend.
    fn written(&self, body: &Body) -> Option<String> {
        let _ = body;
        None
    }

    /// Whether delivering reads the message (false: the header fields a submission lacks are
    /// not looked for).
    fn reads_body(&self) -> bool {
        true
    }

    /// Delivers the whole message.
    fn deliver<'a>(&'a self, message: Message<'a>)
    -> DeliveryFuture<'a, Result<(), DeliveryError>>;

    /// The session's transaction ended without a message.
    fn abandon<'a>(&'a self, session: &'a Session) -> DeliveryFuture<'a, ()> {
        let _ = session;
        Box::pin(std::future::ready(()))
    }
}

/// The backend `[delivery]` names, ready to use (a Maildir is opened and its stale `tmp/`
/// files removed).
pub fn from_config(
    delivery: &crate::config::Delivery,
    hostname: &str,
) -> Result<Arc<dyn Delivery>, String> {
    use crate::config::Delivery as Kind;
    Ok(match delivery {
        Kind::Maildir { path } => Arc::new(MaildirDelivery::open(path, hostname)?),
        Kind::Relay(r) => Arc::new(Relay::new(r.clone(), hostname)),
        Kind::Discard => Arc::new(Discard),
    })
}

/// A unique message id: seconds, microseconds, process and a counter.
pub fn queue_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
