//! What the handler hooks see: the [`Session`] (the connection and its AUTH state) and the
//! [`Envelope`] (one mail transaction).

use std::net::SocketAddr;

use smtp_auth::{AuthData, AuthProgress};

use crate::body::Body;
use smtp_proto::{AuthParam, ForwardPath, MailParameters, RcptParameters, ReversePath};

/// Facts about the TLS layer of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The negotiated protocol version, e.g. `TLSv1_3`.
    pub protocol: String,
    /// The negotiated cipher suite.
    pub cipher: String,
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// True when the session began with TLS (implicit TLS, RFC 8314) rather than STARTTLS.
    pub implicit: bool,
    /// The client's certificate (DER), when the TLS configuration asked for one and the client
    /// sent one the verifier accepted.
    pub peer_certificate: Option<rustls::pki_types::CertificateDer<'static>>,
}

/// One connection's state, as the hooks see it (aiosmtpd's `Session`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Session {
    /// The client's address (from the PROXY header when PROXY protocol is on).
    pub peer_addr: SocketAddr,
    /// The address the client connected to.
    pub local_addr: SocketAddr,
    /// The HELO/EHLO/LHLO name, once given.
    pub helo_name: Option<String>,
    /// True after EHLO or LHLO (extended SMTP).
    pub extended: bool,
    /// TLS facts once the connection is encrypted.
    pub tls: Option<TlsInfo>,
    /// True after a successful AUTH.
    pub authenticated: bool,
    /// What the AUTH exchange or the authenticator recorded.
    pub auth_data: Option<AuthData>,
    /// `auth_data`'s login (aiosmtpd's `session.login_data`).
    pub login_data: Option<String>,
    /// The mechanism of the successful AUTH.
    pub auth_mechanism: Option<String>,
    /// Where an AUTH exchange in progress is.
    pub auth_progress: AuthProgress,
    /// Failed AUTH attempts on this connection.
    pub auth_failures: u32,
}

impl Session {
    /// A new session of a client at `peer_addr` connected to `local_addr`, before its
    /// greeting (what the connect hook sees; also for testing handlers without a server).
    pub fn new(peer_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        Self {
            peer_addr,
            local_addr,
            helo_name: None,
            extended: false,
            tls: None,
            authenticated: false,
            auth_data: None,
            login_data: None,
            auth_mechanism: None,
            auth_progress: AuthProgress::None,
            auth_failures: 0,
        }
    }

    /// Forgets what STARTTLS requires forgetting (RFC 3207 §4.2): the greeting and any AUTH.
    pub(crate) fn reset_after_tls(&mut self) {
        self.helo_name = None;
        self.extended = false;
        self.authenticated = false;
        self.auth_data = None;
        self.login_data = None;
        self.auth_mechanism = None;
        self.auth_progress = AuthProgress::None;
    }
}

/// One mail transaction (aiosmtpd's `Envelope`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Envelope {
    /// The reverse-path of MAIL FROM.
    pub mail_from: Option<ReversePath>,
    /// MAIL FROM's parameters.
    pub mail_params: MailParameters,
    /// The accepted recipients, in order.
    pub rcpt_to: Vec<ForwardPath>,
    /// Each accepted recipient's parameters, in the same order.
    pub rcpt_params: Vec<RcptParameters>,
    /// The message (after dot-unstuffing or BDAT reassembly), set before the DATA hook runs:
    /// in memory when it is small, in a spool file when it is large (see [`Body`]).
    pub body: Body,
    /// The AUTH= parameter of MAIL (RFC 4954 §5), recorded as given.
    pub auth: Option<AuthParam>,
    /// True when the message arrived with BDAT.
    pub chunked: bool,
    /// The handler's [`BodyObserver`](crate::BodyObserver) for this message, finished, set
    /// with the body (see [`Handler::body_observer`](crate::Handler::body_observer)).
    pub observed: Option<std::sync::Arc<dyn crate::BodyObserver>>,
}

impl Envelope {
    /// True once MAIL was accepted.
    pub fn in_transaction(&self) -> bool {
        self.mail_from.is_some()
    }
}
