//! The [`Handler`] trait: async hooks with defaults, each able to answer with its own reply.

use std::future::Future;

use smtp_auth::AuthResult;
use smtp_proto::{ForwardPath, MailParameters, RcptParameters, Reply, ReversePath};

use crate::channel::AuthChannel;
use crate::replies;
use crate::session::{Envelope, Session};

/// Hooks called by the server. Every method has a default; implement the ones you need.
///
/// Hooks returning `Option<Reply>` answer with the default reply on `None`; a positive reply
/// (2xx) accepts with that text, any other reply refuses.
pub trait Handler: Send + Sync + 'static {
    /// A client connected (before the greeting). A non-2xx reply refuses the connection.
    fn connect(&self, session: &Session) -> impl Future<Output = Option<Reply>> + Send {
        let _ = session;
        async { None }
    }

    /// HELO, EHLO or LHLO with `name`. A non-2xx reply refuses the greeting.
    fn ehlo(&self, session: &Session, name: &str) -> impl Future<Output = Option<Reply>> + Send {
        let _ = (session, name);
        async { None }
    }

    /// MAIL FROM.
    ///
    /// The place for sender/login binding: after a successful AUTH, `session.login_data` is
    /// the authenticated login, so a handler can refuse addresses the user does not own
    /// (Postfix's `reject_sender_login_mismatch`; `smtpd`'s `sender_login` does this):
    ///
    /// ```
    /// use smtp_proto::{MailParameters, Reply, ReversePath};
    /// use smtp_server::{Envelope, Handler, Session};
    ///
    /// struct OwnAddressOnly;
    ///
    /// impl Handler for OwnAddressOnly {
    ///     async fn mail(
    ///         &self,
    ///         session: &Session,
    ///         _envelope: &Envelope,
    ///         from: &ReversePath,
    ///         _params: &MailParameters,
    ///     ) -> Option<Reply> {
    ///         let (Some(login), ReversePath::Mailbox(m)) = (&session.login_data, from) else {
    ///             return None; // not authenticated, or the null sender
    ///         };
    ///         let address = m.to_string();
    ///         if address.eq_ignore_ascii_case(&format!("{login}@example.org")) {
    ///             None // the default 250
    ///         } else {
    ///             Some(Reply::simple(
    ///                 553,
    ///                 Some((5, 7, 1)),
    ///                 &format!("<{address}>: Sender address rejected: not owned by user {login}"),
    ///             ))
    ///         }
    ///     }
    /// }
    /// # let _ = OwnAddressOnly;
    /// ```
    fn mail(
        &self,
        session: &Session,
        envelope: &Envelope,
        from: &ReversePath,
        params: &MailParameters,
    ) -> impl Future<Output = Option<Reply>> + Send {
        let _ = (session, envelope, from, params);
        async { None }
    }

    /// RCPT TO.
    fn rcpt(
        &self,
        session: &Session,
        envelope: &Envelope,
        to: &ForwardPath,
        params: &RcptParameters,
    ) -> impl Future<Output = Option<Reply>> + Send {
        let _ = (session, envelope, to, params);
        async { None }
    }

    /// Chooses where the body of the message about to arrive (DATA, or the first BDAT chunk) is
    /// written: `Some(target)` writes it straight into `target.path`, after `target.prefix`,
    /// whatever its size, so a handler that stores messages in files (a Maildir's `tmp/`)
    /// can rename the finished file into place instead of copying it. `None` (the default):
    /// in memory when small, in a spool file when large. A refused or abandoned message's file
    /// is removed.
    fn body_target(
        &self,
        session: &Session,
        envelope: &Envelope,
    ) -> impl Future<Output = Option<crate::BodyTarget>> + Send {
        let _ = (session, envelope);
        async { None }
    }

    /// Something that sees the body of the message about to arrive while it arrives (called
    /// with [`Handler::body_target`]): each piece goes to [`BodyObserver::update`](crate::BodyObserver::update) as it is
    /// stored, and the finished observer is [`Envelope::observed`] in [`Handler::data`]. `None`
    /// (the default): nothing is observed, and nothing is paid.
    fn body_observer(
        &self,
        session: &Session,
        envelope: &Envelope,
    ) -> Option<Box<dyn crate::BodyObserver>> {
        let _ = (session, envelope);
        None
    }

    /// A complete message: `envelope.body` holds it (in memory, or spooled when large). The reply is sent as is; return a
    /// 250 only once the message is safe.
    fn data(&self, session: &Session, envelope: &Envelope) -> impl Future<Output = Reply> + Send {
        let _ = (session, envelope);
        async { replies::queued() }
    }

    /// LMTP (RFC 2033): one reply per accepted recipient, in order. The default repeats
    /// [`Handler::data`]'s reply.
    fn data_lmtp(
        &self,
        session: &Session,
        envelope: &Envelope,
    ) -> impl Future<Output = Vec<Reply>> + Send {
        async move {
            let r = self.data(session, envelope).await;
            vec![r; envelope.rcpt_to.len()]
        }
    }

    /// RSET.
    fn rset(&self, session: &Session) -> impl Future<Output = Option<Reply>> + Send {
        let _ = session;
        async { None }
    }

    /// NOOP.
    fn noop(&self, session: &Session) -> impl Future<Output = Option<Reply>> + Send {
        let _ = session;
        async { None }
    }

    /// VRFY; the default is 252 2.5.0.
    fn vrfy(&self, session: &Session, arg: &str) -> impl Future<Output = Option<Reply>> + Send {
        let _ = (session, arg);
        async { None }
    }

    /// QUIT.
    fn quit(&self, session: &Session) -> impl Future<Output = Option<Reply>> + Send {
        let _ = session;
        async { None }
    }

    /// The connection is over (any reason).
    fn disconnect(&self, session: &Session) -> impl Future<Output = ()> + Send {
        let _ = session;
        async {}
    }

    /// The whole AUTH command (aiosmtpd's `handle_AUTH`). Return `None` to let the server run
    /// its mechanisms; return `Some(result)` after driving the exchange yourself with
    /// `channel.challenge(...)` and `channel.push(...)`. The server applies the result to the
    /// session (authenticated, auth_data, login_data) and sends its reply unless `handled`.
    /// You MUST comply with RFC 4954.
    fn handle_auth(
        &self,
        channel: &mut AuthChannel<'_>,
        session: &Session,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> impl Future<Output = Option<AuthResult>> + Send {
        let _ = (channel, session, mechanism, initial_response);
        async { None }
    }
}

/// A handler that accepts everything and keeps nothing: for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Handler for AcceptAll {}
