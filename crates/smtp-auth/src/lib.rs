//! # smtp-auth
//!
//! The sans-IO SASL core of SMTP AUTH (RFC 4954): every mechanism is a state machine that does
//! no I/O, reads no clock and owns no runtime, so a server on any runtime (tokio, a blocking
//! `std::net` loop, an IMAP server's `AUTHENTICATE`) drives the same code.
//!
//! The driver feeds what the client sent and acts on the [`Step`] it gets back:
//!
//! ```text
//! AUTH line   ─▶ exchange.start(mechanism, initial_response) ─▶ Step
//! client line ─▶ exchange.respond(line)                      ─▶ Step
//! Step = Challenge(bytes)   send "334 " + base64, read the client's line
//!      | Verify(request)    ask the AuthProvider, then exchange.decide(decision)
//!      | Lookup(request)    ask the SecretProvider (CRAM-MD5, SCRAM), then exchange.supply(found)
//!      | Done(result)       send the reply (smtp::reply) and record the outcome
//! ```
//!
//! The exchange owns base64, the `*` cancel, `=` as an empty initial response, the response
//! length limit (12288 octets at least) and [`AuthProgress`]. Calls in the wrong state return
//! an [`ExchangeError`], never panic. Mechanisms: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256,
//! XOAUTH2, OAUTHBEARER and EXTERNAL, server and client side of each; add your own with a
//! [`ServerMechanism`] in the [`Registry`].
//!
//! The names come from the two documents the project implements: `AuthDecision`,
//! `AuthProgress`, `AuthRequest` and `AuthProvider` from the `smtpauth` module, and
//! `AuthResult`, `LoginPassword` and excluded mechanisms from aiosmtpd. Every type that holds a
//! secret (`Secret`, `AuthRequest`, `LoginPassword`, `ScramKeys`) prints it as `<redacted>` and
//! wipes it on drop.
//!
//! ## Driving an exchange
//!
//! ```
//! use smtp_auth::{smtp, AuthExchange, MemoryProvider, Registry, SessionInfo, Step};
//!
//! let users = MemoryProvider::new().with_user("alice", "wonderland");
//! let mut info = SessionInfo::default();
//! info.helo_name = Some("client.example".into());
//! let mut exchange = AuthExchange::new(Registry::default(), info);
//!
//! // C: AUTH LOGIN
//! let step = exchange.start("LOGIN", None).unwrap();
//! let Step::Challenge(c) = step else { panic!() };
//! assert_eq!(smtp::challenge_line(&c), "334 VXNlcm5hbWU6");
//! assert_eq!(exchange.progress(), smtp_auth::AuthProgress::LoginUser);
//!
//! // C: YWxpY2U=   ("alice")
//! let Step::Challenge(c) = exchange.respond(b"YWxpY2U=").unwrap() else { panic!() };
//! assert_eq!(smtp::challenge_line(&c), "334 UGFzc3dvcmQ6");
//!
//! // C: d29uZGVybGFuZA==   ("wonderland")
//! let Step::Verify(request) = exchange.respond(b"d29uZGVybGFuZA==").unwrap() else { panic!() };
//! assert_eq!(request.username, "alice");
//! assert!(!format!("{request:?}").contains("wonderland"));
//!
//! // The driver asks its provider (here synchronously; usually an awaited tower Service).
//! let decision = users.check(&request);
//! let Step::Done(result) = exchange.decide(decision).unwrap() else { panic!() };
//! assert!(result.is_success());
//! assert_eq!(smtp::reply(&result).unwrap().to_string(), "235 2.7.0 Authentication successful");
//! assert_eq!(result.auth_data.unwrap().login(), Some("alice"));
//! ```
//!
//! See `examples/blocking.rs` for a whole server on `std::net` with no async runtime.

#![forbid(unsafe_code)]

mod cache;
mod decision;
mod exchange;
pub mod mechanism;
mod provider;
mod registry;
mod request;
mod result;
pub mod sasl;
mod secret;
pub mod smtp;

pub use cache::{CacheConfig, Cached, CredentialCache, CredentialCacheLayer};
pub use decision::{AuthDecision, AuthProgress, Verdict};
pub use exchange::{AuthExchange, DEFAULT_MAX_RESPONSE, ExchangeError, Step};
pub use mechanism::{ClientError, ClientMechanism, ServerMechanism};
pub use provider::{AuthProvider, MemoryProvider, ProviderFn, SecretProvider, provider_fn};
pub use registry::{InvalidMechanismName, Registry, UnknownMechanism, valid_mechanism_name};
pub use request::{AuthRequest, LookupRequest, LookupResult, ScramKeys, SessionInfo, StoredSecret};
pub use result::{AuthData, AuthResult, AuthStatus, CredentialLabel, Identity, LoginPassword};
pub use sasl::encode_challenge;
pub use secret::{Password, Secret, SecretBytes};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
