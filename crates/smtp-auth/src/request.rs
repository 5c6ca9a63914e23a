//! What the exchange asks of its driver: [`AuthRequest`] (verify these credentials) and
//! [`LookupRequest`] (give me the stored secret of this user), plus the session facts the
//! exchange needs ([`SessionInfo`]).

use std::fmt;
use std::net::IpAddr;

use zeroize::Zeroize;

use crate::secret::{Password, Secret};

/// Facts about the session that mechanisms and requests need. The driver fills them in.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The client's address (after PROXY protocol, when used).
    pub remote_ip: Option<IpAddr>,
    /// The server's address the client reached (after PROXY protocol, when used).
    pub local_ip: Option<IpAddr>,
    /// The HELO/EHLO name the client gave.
    pub helo_name: Option<String>,
    /// The server's host name (used in CRAM-MD5 challenges).
    pub server_name: String,
    /// The identity established by the transport (e.g. a verified TLS client certificate's
    /// subject), for EXTERNAL.
    pub external_identity: Option<String>,
    /// True when the transport is encrypted.
    pub tls: bool,
    /// The session's `tls-exporter` channel binding (RFC 9266: 32 octets exported with the
    /// label `EXPORTER-Channel-Binding`), when the transport is TLS 1.3. SCRAM-SHA-256-PLUS
    /// needs it; [`AuthExchange`](crate::AuthExchange) clears it when the registry does not
    /// offer SCRAM-SHA-256-PLUS, so a `y` flag is judged against what was really offered.
    pub channel_binding: Option<Secret<Vec<u8>>>,
}

/// A request for a credential decision: `smtpauth`'s `AuthRequest`.
///
/// For PLAIN and LOGIN `password` is the password; for XOAUTH2 and OAUTHBEARER it is the bearer
/// token; for EXTERNAL it is empty and `username` is the transport's identity.
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The authentication identity (authcid).
    pub username: String,
    /// The password or token. Never printed.
    pub password: Password,
    /// The mechanism name, upper-case (`PLAIN`, `LOGIN`, ...).
    pub mechanism: String,
    /// The client's address, as text (`""` when unknown), as in `smtpauth`.
    pub remote_ip: String,
    /// The HELO/EHLO name (`""` when none was given).
    pub helo_name: String,
    /// The authorization identity, when the mechanism carries one and it differs from empty.
    pub authzid: Option<String>,
    /// The server's address the client reached, as text (`""` when unknown): a store that
    /// applies its own policy per address (Dovecot's `lip`) needs it.
    pub local_ip: String,
    /// The session is encrypted (TLS): a store that refuses passwords in clear over plain
    /// connections (Dovecot's `disable_plaintext_auth`) needs it.
    pub secured: bool,
}

impl AuthRequest {
    /// Builds a request from the mechanism's credentials and the session facts.
    pub fn new(
        info: &SessionInfo,
        mechanism: &str,
        username: String,
        password: Password,
        authzid: Option<String>,
    ) -> Self {
        Self {
            username,
            password,
            mechanism: mechanism.to_owned(),
            remote_ip: info.remote_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            helo_name: info.helo_name.clone().unwrap_or_default(),
            authzid,
            local_ip: info.local_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            secured: info.tls,
        }
    }
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("mechanism", &self.mechanism)
            .field("remote_ip", &self.remote_ip)
            .field("helo_name", &self.helo_name)
            .field("authzid", &self.authzid)
            .field("local_ip", &self.local_ip)
            .field("secured", &self.secured)
            .finish()
    }
}

impl fmt::Display for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} login by {:?} from {}",
            self.mechanism, self.username, self.remote_ip
        )
    }
}

/// A request for a user's stored secret, for mechanisms that verify the client's proof
/// themselves (CRAM-MD5, SCRAM-SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// The user.
    pub username: String,
    /// The mechanism asking, upper-case.
    pub mechanism: String,
    /// The client's address, as text.
    pub remote_ip: String,
}

/// SCRAM keys as a server stores them (RFC 5802 §3): never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// The salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count (RFC 7677 recommends at least 4096).
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Secret<Vec<u8>>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Secret<Vec<u8>>,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("salt", &"<redacted>")
            .field("iterations", &self.iterations)
            .field("stored_key", &self.stored_key)
            .field("server_key", &self.server_key)
            .finish()
    }
}

impl Zeroize for ScramKeys {
    fn zeroize(&mut self) {
        self.salt.zeroize();
    }
}

/// A stored secret handed to a mechanism.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoredSecret {
    /// The password in clear (CRAM-MD5 needs it; SCRAM derives its keys from it).
    Plain(Password),
    /// SCRAM-SHA-256 keys.
    ScramSha256(ScramKeys),
}

/// The answer to a [`LookupRequest`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LookupResult {
    /// The user exists; here is the secret.
    Found(StoredSecret),
    /// No such user (answered like a wrong password).
    NotFound,
    /// The store could not answer (answered 454 4.7.0).
    Failure,
    /// The secret was not read: the user or the client's address is past its failure limit
    /// (answered 454 4.7.0 like `Failure`; the exchange ends as [`AuthStatus::Locked`]).
    ///
    /// [`AuthStatus::Locked`]: crate::AuthStatus::Locked
    Locked,
}
