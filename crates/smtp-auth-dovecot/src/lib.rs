//! # smtp-auth-dovecot
//!
//! Logins checked by Dovecot, as Postfix's `smtpd_sasl_type = dovecot` checks them: this crate
//! speaks Dovecot's authentication client protocol (version 1.2: `VERSION`, `MECH`, `CPID`,
//! `AUTH`, `CONT`, `OK`, `FAIL`) to its `auth-client` listener, over a Unix socket or TCP. The
//! users, their password hashes and every passdb Dovecot supports (passwd-file, SQL, LDAP,
//! PAM…) stay where the operator keeps them.
//!
//! Two ways in:
//! - [`DovecotProvider`]: an [`AuthProvider`](smtp_auth::AuthProvider) for the built-in PLAIN
//!   and LOGIN mechanisms. Each check is a PLAIN exchange with Dovecot. It sits behind
//!   `smtp-auth`'s credential cache like any other provider, so a client sending many
//!   messages costs Dovecot one check per TTL.
//! - [`Proxy`]: a whole SASL exchange relayed to Dovecot, for mechanisms whose proof only the
//!   store can check (SCRAM-SHA-256 against Dovecot's `{SCRAM-SHA-256}` hashes, or XOAUTH2 and
//!   OAUTHBEARER against its `oauth2` passdb). It is runtime-neutral: the caller relays the
//!   challenges (with `smtp-server`, from a `handle_auth` hook through its `AuthChannel`).
//!
//! Both send `service=smtp`, the client's address (`rip`), the server's (`lip`) and `secured`
//! on TLS, so Dovecot's `disable_plaintext_auth`, its penalties and its logs see the real
//! client. `FAIL` → invalid (535 5.7.8); `FAIL` with `temp`, Dovecot down, or an answer slower
//! than the timeout → temporary failure (454 4.7.0). The [`DovecotClient`] keeps a few
//! connections, each carrying many requests at once, and reconnects a broken one on next use.
//! Requests hold credentials; they are wiped once sent and never logged or shown by `Debug`.
//!
//! The protocol's lines themselves are in [`protocol`], without I/O.
//!
//! ## Plugged into a server
//!
//! ```
//! use smtp_auth_dovecot::{DovecotClient, DovecotConfig, DovecotProvider, Endpoint};
//! use smtp_server::{AcceptAll, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let endpoint = Endpoint::parse("/run/dovecot/auth-client").expect("a socket path");
//! let client = DovecotClient::new(DovecotConfig::new(endpoint));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! Server::new(ServerConfig::default(), AcceptAll)
//!     .provider(DovecotProvider::new(client))
//!     .serve_with_shutdown(listener, async {})
//!     .await
//! # }
//! ```

#![forbid(unsafe_code)]

mod client;
pub mod protocol;
mod provider;

pub use client::{DovecotClient, DovecotConfig, Endpoint, Error, Exchange};
pub use protocol::{Answer, MechanismInfo, RequestInfo};
pub use provider::{DovecotProvider, Proxy, ProxyStep};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
