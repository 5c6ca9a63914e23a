//! # smtpd
//!
//! The integration crate: a mail submission server composed from `smtp-proto`, `smtp-auth`,
//! `smtp-server` and `smtp-auth-http`, configured with TOML, with a local users file (argon2id
//! hashes, checked in constant time) or the HTTP auth provider, and Maildir, relay or discard
//! delivery, DKIM signing of submissions. The binary is `smtpd` (`serve`, `check-config`,
//! `hash-password`, `dkim-keygen`).
//!
//! ```
//! let config = smtpd::config::Config::parse(
//!     "[server]\nhostname = \"mx.example.org\"\n[delivery]\nkind = \"discard\"\n",
//!     "inline",
//! )
//! .unwrap();
//! assert_eq!(config.server.max_message_size, 32 * 1024 * 1024);
//! assert!(smtpd::config::Config::parse("[server]\nhostnme = \"x\"\n", "inline").is_err());
//! ```

#![forbid(unsafe_code)]

/// jemalloc with background threads instead of glibc's malloc: memory freed after a burst
/// (connections, messages) goes back to the system within seconds; glibc keeps it. Figures in
/// docs/performance.md (`cargo xtask soak`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod handler;
pub mod header_from;
/// The password schemes (the `smtp-auth-hash` crate).
pub use smtp_auth_hash as hashes;
pub mod metrics;
pub mod received;
mod reload;
pub mod sender;
pub mod sending;
pub mod shared_limit;
pub mod stores;
pub mod submission;
pub mod tls;
pub mod users;

/// The configuration `smtpd serve` uses without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../smtpd.example.toml");

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
