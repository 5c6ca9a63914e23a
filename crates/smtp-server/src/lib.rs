//! # smtp-server
//!
//! An SMTP server (RFC 5321) with aiosmtpd's AUTH framework (RFC 4954) on top of the sans-IO
//! [`smtp_auth`] core, STARTTLS and implicit TLS (rustls), PIPELINING, CHUNKING, SMTPUTF8, LMTP,
//! PROXY protocol and safe defaults: 5-minute read timeout, 32 MiB messages, 100 recipients,
//! AUTH only over TLS unless told otherwise.
//!
//! Two layers:
//! - [`machine::Machine`]: the session as a state machine with no runtime, clock or I/O. It
//!   owns every protocol rule; a driver feeds it bytes and time and acts on what
//!   [`machine::Machine::next`] returns. Build with `default-features = false` to get it (and
//!   [`ServerConfig`], [`AuthLimiter`]) without tokio; `examples/blocking.rs` drives it with
//!   `std::net` and one thread per connection.
//! - With the default `tokio` feature, the server: [`Server`] (accept loop, limits, graceful
//!   shutdown, [`Server::serve_connection`] for any stream) and its driver.
//!
//! - [`ServerConfig`]: every option, documented with its default.
//! - [`Handler`]: async hooks (connect, EHLO, MAIL, RCPT, DATA, RSET, NOOP, VRFY, QUIT,
//!   disconnect, and `handle_auth`, aiosmtpd's `handle_AUTH`), each with a default.
//! - [`Authenticator`]: aiosmtpd's authenticator callback; any `AuthProvider` tower service
//!   becomes one with [`Server::provider`].
//! - Per-mechanism hooks: [`ServerConfigBuilder::mechanism`] adds a
//!   [`smtp_auth::ServerMechanism`] or replaces PLAIN/LOGIN by name;
//!   [`ServerConfigBuilder::exclude_mechanism`] removes one.
//!
//! Runnable examples, each driven by a test (`tests/examples.rs`): `examples/minimal.rs` (a
//! handler and an authenticator), `examples/custom_mechanism.rs` (a SASL mechanism of your
//! own), `examples/handle_auth.rs` (the `handle_auth` hook running an exchange itself) and
//! `examples/relayer.rs` (an authenticated relayer on top of these crates), plus
//! `examples/blocking.rs` (the machine without a runtime, `tests/blocking.rs`); run one with
//! `cargo run -p smtp-server --example minimal`.
//!
//! ## Example
//!
//! ```
//! # // The server needs the default `tokio` feature; without it this example is skipped.
//! # #[cfg(feature = "tokio")]
//! # mod example {
//! use smtp_auth::MemoryProvider;
//! use smtp_server::{Envelope, Handler, Server, ServerConfig, Session};
//! use smtp_proto::Reply;
//!
//! struct Print;
//!
//! impl Handler for Print {
//!     async fn data(&self, session: &Session, envelope: &Envelope) -> Reply {
//!         println!("{:?} sent {} octets", session.login_data, envelope.body.len());
//!         Reply::simple(250, Some((2, 0, 0)), "OK")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # pub async fn main() -> std::io::Result<()> {
//! let config = ServerConfig::builder()
//!     .hostname("mx.example.org")
//!     .auth_require_tls(false) // a loopback demo; keep the default (true) in production
//!     .build();
//! let users = MemoryProvider::new().with_user("alice", "wonderland");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = Server::new(config, Print).provider(users);
//! // Serve until the signal future completes (here: at once).
//! server.serve_with_shutdown(listener, async {}).await
//! # }
//! # }
//! # fn main() {
//! #     #[cfg(feature = "tokio")]
//! #     example::main().unwrap();
//! # }
//! ```

#![forbid(unsafe_code)]

mod auth;
mod body;
#[cfg(feature = "tokio")]
mod channel;
mod config;
#[cfg(feature = "tokio")]
mod conn;
#[cfg(feature = "tokio")]
mod handler;
#[cfg(feature = "tokio")]
mod io;
pub mod machine;
mod observe;
mod options;
#[cfg(feature = "tokio")]
mod pool;
mod protocol;
pub mod proxy;
mod replies;
#[cfg(feature = "tokio")]
mod server;
mod session;

pub use auth::{
    AuthLimiter, Authenticator, BoxFuture, DEFAULT_LIMITER_CAPACITY, DEFAULT_MAX_LOCK,
    FailureListener, ProviderAuthenticator, address_key, user_key,
};
pub use body::{Body, BodyObserver, BodyTarget, SpoolFile};
#[cfg(feature = "tokio")]
pub use channel::AuthChannel;
pub use config::{ExternalIdentity, ServerConfig, ServerConfigBuilder};
#[cfg(feature = "tokio")]
pub use handler::{AcceptAll, Handler};
pub use observe::{AUTH_FAILURE_TARGET, AuthOutcome, Observer, Refusal};
pub use options::{InvalidOption, ServerOptions};
#[cfg(feature = "tokio")]
pub use pool::{DEFAULT_MAX_QUEUE, VerifyPool, default_workers};
#[cfg(feature = "tokio")]
pub use server::{Server, bind};
pub use session::{Envelope, Session, TlsInfo};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
