//! SCRAM-SHA-256 (RFC 5802, RFC 7677) and SCRAM-SHA-256-PLUS with `tls-exporter` channel
//! binding (RFC 9266).
//!
//! The server asks for the user's stored keys with [`Step::Lookup`]. An unknown user gets a
//! made-up salt and iteration count that are the same on every attempt (derived from a server
//! secret and the name) and look like real ones, and fails at the proof after the same work,
//! so the exchange does not reveal which users exist.
//!
//! Channel binding: the `-PLUS` variant requires `p=tls-exporter` and checks the client's
//! `c=` against [`SessionInfo::channel_binding`], so a man in the middle that terminates TLS
//! cannot replay the login. The plain variant accepts `n`, refuses `p=` (that is for `-PLUS`)
//! and refuses `y` when `-PLUS` was offered on this TLS session (RFC 5802 §6: a downgrade).
//!
//! Usernames and passwords are prepared with SASLprep (RFC 4013) before key derivation, as
//! RFC 5802 §2.2 asks and libgsasl and Python's scramp do; a string SASLprep refuses (it holds
//! prohibited characters) is used as it is.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use zeroize::Zeroize;

use super::{ClientError, ClientMechanism, ServerMechanism, done, random_nonce, utf8};
use crate::decision::AuthProgress;
use crate::exchange::Step;
use crate::request::{LookupRequest, LookupResult, ScramKeys, SessionInfo, StoredSecret};
use crate::result::{AuthData, AuthResult, AuthStatus, Identity};
use crate::secret::{Password, Secret, SecretBytes};

/// Iterations used when the server derives keys from a clear password.
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;
/// The most iterations a client accepts (a hostile server could ask for billions).
const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut prepared = saslprep(password);
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut out);
    prepared.zeroize();
    out
}

/// SASLprep (RFC 4013) of `s`; a string SASLprep refuses is returned unchanged (it then simply
/// fails to match, instead of making the exchange fail in a different way).
pub fn saslprep(s: &str) -> String {
    match stringprep::saslprep(s) {
        Ok(p) => p.into_owned(),
        Err(_) => s.to_owned(),
    }
}

/// The channel binding type this crate implements (RFC 9266).
pub const TLS_EXPORTER: &str = "tls-exporter";

/// The label of the `tls-exporter` channel binding (RFC 9266 §2).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The process-wide secret used for unknown users' fake salts when a server was not given one.
fn process_secret() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        if getrandom::getrandom(&mut k).is_err() {
            // No randomness: the salts are then only as stable as the name (still no leak of
            // existence through instability, the goal here).
            k = [0x5a; 32];
        }
        k
    })
}

impl ScramKeys {
    /// Keys for a user that does not exist: a salt of the same length as real ones and the
    /// default iteration count, both stable for `username` under `secret`, and keys no proof
    /// can match.
    pub fn fake_sha256(secret: &[u8], username: &str) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(b"scram-sha-256 fake salt\0");
        mac.update(username.as_bytes());
        let salt = mac.finalize().into_bytes()[..16].to_vec();
        let mut junk = [0u8; 32];
        let _ = getrandom::getrandom(&mut junk);
        Self {
            salt,
            iterations: SCRAM_DEFAULT_ITERATIONS,
            stored_key: Secret::new(junk.to_vec()),
            server_key: Secret::new(junk.to_vec()),
        }
    }

    /// Derives SCRAM-SHA-256 keys from a password (RFC 5802 §3), as a server stores them. The
    /// password is prepared with SASLprep first.
    pub fn derive_sha256(password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut sp = salted_password(password, salt, iterations);
        let client_key = hmac(&sp, b"Client Key");
        let server_key = hmac(&sp, b"Server Key");
        sp.fill(0);
        Self {
            salt: salt.to_vec(),
            iterations,
            stored_key: Secret::new(Sha256::digest(client_key).to_vec()),
            server_key: Secret::new(server_key.to_vec()),
        }
    }
}

/// `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
pub(crate) fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// The inverse of [`decode_saslname`].
pub(crate) fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

fn valid_nonce(n: &str) -> bool {
    // printable = %x21-2B / %x2D-7E (no comma)
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[derive(Default)]
enum State {
    #[default]
    New,
    First,
    Lookup,
    Final {
        keys: ScramKeys,
        known_user: bool,
        server_first: String,
        nonce: String,
    },
    Ack(Identity),
    Done,
}

/// The server side of SCRAM-SHA-256 (and of SCRAM-SHA-256-PLUS, see [`Self::plus`]).
#[derive(Default)]
pub struct ScramSha256Server {
    plus: bool,
    secret: Option<std::sync::Arc<Secret<Vec<u8>>>>,
    cb_data: Vec<u8>,
    fixed_nonce: Option<String>,
    state: State,
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
    username: String,
    authzid: Option<String>,
}

impl std::fmt::Debug for ScramSha256Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSha256Server")
            .field("username", &self.username)
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl ScramSha256Server {
    /// The SCRAM-SHA-256-PLUS server: `tls-exporter` channel binding required.
    pub fn plus() -> Self {
        Self {
            plus: true,
            ..Self::default()
        }
    }

    /// Uses `secret` (keep it stable across restarts, e.g. in a file) to derive unknown
    /// users' fake salts; without one a random per-process secret is used.
    pub fn with_secret(mut self, secret: std::sync::Arc<Secret<Vec<u8>>>) -> Self {
        self.secret = Some(secret);
        self
    }

    fn name(&self) -> &'static str {
        if self.plus {
            "SCRAM-SHA-256-PLUS"
        } else {
            "SCRAM-SHA-256"
        }
    }

    /// A server that uses `nonce` as its part of the nonce (test vectors).
    pub fn with_nonce(nonce: impl Into<String>) -> Self {
        Self {
            fixed_nonce: Some(nonce.into()),
            ..Self::default()
        }
    }

    fn fake_keys(&self) -> ScramKeys {
        match &self.secret {
            Some(k) => ScramKeys::fake_sha256(k.expose_secret(), &self.username),
            None => ScramKeys::fake_sha256(process_secret(), &self.username),
        }
    }

    fn client_first(&mut self, info: &SessionInfo, msg: &[u8]) -> Step {
        let Some(text) = utf8(msg) else {
            return done(AuthStatus::Malformed);
        };
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let mut it = text.splitn(3, ',');
        let (Some(flag), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return done(AuthStatus::Malformed);
        };
        let offered_cb = info.channel_binding.as_ref().map(|c| c.expose_secret());
        match (flag, self.plus) {
            ("n", false) => {}
            // The client supports channel binding but believes we do not: if we offered
            // -PLUS on this session, someone removed it from the list (RFC 5802 §6).
            ("y", false) if offered_cb.is_some() => return done(AuthStatus::Invalid),
            ("y", false) => {}
            ("p=tls-exporter", true) => match offered_cb {
                Some(cb) => self.cb_data = cb.clone(),
                None => return done(AuthStatus::Unsupported),
            },
            (f, _) if f.starts_with("p=") => return done(AuthStatus::Unsupported),
            // -PLUS without channel binding is a contradiction.
            (_, true) => return done(AuthStatus::Malformed),
            _ => return done(AuthStatus::Malformed),
        }
        self.authzid = match authz {
            "" => None,
            a => match a.strip_prefix("a=").and_then(decode_saslname) {
                Some(z) => Some(z),
                None => return done(AuthStatus::Malformed),
            },
        };
        self.gs2_header = format!("{flag},{authz},");
        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        if bare.starts_with("m=") {
            return done(AuthStatus::Unsupported);
        }
        let mut attrs = bare.split(',');
        let (Some(user), Some(nonce)) = (attrs.next(), attrs.next()) else {
            return done(AuthStatus::Malformed);
        };
        let (Some(user), Some(nonce)) = (
            user.strip_prefix("n=").and_then(decode_saslname),
            nonce.strip_prefix("r=").filter(|n| valid_nonce(n)),
        ) else {
            return done(AuthStatus::Malformed);
        };
        // RFC 5802 §5.1: the client should have prepared the name; prepare it again so both
        // spellings of one name find the same user.
        self.username = saslprep(&user);
        self.client_nonce = nonce.to_owned();
        self.client_first_bare = bare.to_owned();
        self.state = State::Lookup;
        Step::Lookup(LookupRequest {
            username: self.username.clone(),
            mechanism: self.name().into(),
            remote_ip: info.remote_ip.map(|i| i.to_string()).unwrap_or_default(),
        })
    }

    fn client_final(&mut self, msg: &[u8]) -> Step {
        let State::Final {
            keys,
            known_user,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return done(AuthStatus::TempFail);
        };
        let Some(text) = utf8(msg) else {
            return done(AuthStatus::Malformed);
        };
        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let Some(at) = text.rfind(",p=") else {
            return done(AuthStatus::Malformed);
        };
        let without_proof = &text[..at];
        let Ok(proof) = STANDARD.decode(&text[at + 3..]) else {
            return done(AuthStatus::Malformed);
        };
        let mut attrs = without_proof.split(',');
        let (Some(cb), Some(r)) = (attrs.next(), attrs.next()) else {
            return done(AuthStatus::Malformed);
        };
        let (Some(cb), Some(r)) = (cb.strip_prefix("c="), r.strip_prefix("r=")) else {
            return done(AuthStatus::Malformed);
        };
        // c= is the base64 of the gs2 header followed by the channel binding data (none
        // without channel binding).
        let mut expected_cb = self.gs2_header.clone().into_bytes();
        expected_cb.extend_from_slice(&self.cb_data);
        let cb_ok: bool = STANDARD
            .decode(cb)
            .is_ok_and(|c| bool::from(c.as_slice().ct_eq(&expected_cb)));
        if !cb_ok || r != nonce || proof.len() != 32 {
            return done(AuthStatus::Invalid);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );
        let client_signature = hmac(keys.stored_key.expose_secret(), auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature))
        {
            *k = p ^ s;
        }
        let computed = Sha256::digest(client_key);
        client_key.fill(0);
        let ok: bool = computed
            .as_slice()
            .ct_eq(keys.stored_key.expose_secret())
            .into();
        // RFC 5802 §5.1: no provider decides an authzid here, so only the user itself may be
        // named (checked after the proof, so the work is the same either way).
        let foreign_authzid = self.authzid.as_ref().is_some_and(|a| *a != self.username);
        if !(ok && known_user) || foreign_authzid {
            return done(AuthStatus::Invalid);
        }
        let server_signature = hmac(keys.server_key.expose_secret(), auth_message.as_bytes());
        self.state = State::Ack(Identity {
            login: self.username.clone(),
            authzid: self.authzid.clone(),
            mechanism: self.name().into(),
        });
        Step::Challenge(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

impl ServerMechanism for ScramSha256Server {
    fn start(&mut self, info: &SessionInfo, initial: Option<SecretBytes>) -> Step {
        match initial {
            None => {
                self.state = State::First;
                Step::Challenge(Vec::new())
            }
            Some(m) => self.client_first(info, m.expose_secret()),
        }
    }

    fn respond(&mut self, info: &SessionInfo, response: SecretBytes) -> Step {
        match std::mem::take(&mut self.state) {
            State::First => self.client_first(info, response.expose_secret()),
            s @ State::Final { .. } => {
                self.state = s;
                self.client_final(response.expose_secret())
            }
            // RFC 4954: after server-final in a 334, the client's (empty) answer ends it.
            State::Ack(identity) => {
                self.state = State::Done;
                Step::Done(AuthResult::success(Some(AuthData::Identity(identity))))
            }
            _ => done(AuthStatus::TempFail),
        }
    }

    fn supply(&mut self, _info: &SessionInfo, found: LookupResult) -> Step {
        if !matches!(self.state, State::Lookup) {
            return done(AuthStatus::TempFail);
        }
        let (keys, known_user) = match found {
            LookupResult::Found(StoredSecret::ScramSha256(k)) => (k, true),
            // A clear password gets the same stable salt an unknown user would: a random one
            // per attempt would itself tell that the user exists.
            LookupResult::Found(StoredSecret::Plain(p)) => {
                let salt = self.fake_keys().salt.clone();
                (plain_keys(&p, &salt), true)
            }
            LookupResult::NotFound => (self.fake_keys(), false),
            LookupResult::Failure => return done(AuthStatus::TempFail),
            LookupResult::Locked => return done(AuthStatus::Locked),
        };
        let server_part = match self.fixed_nonce.clone().or_else(random_nonce) {
            Some(n) => n,
            None => return done(AuthStatus::TempFail),
        };
        let nonce = format!("{}{}", self.client_nonce, server_part);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        self.state = State::Final {
            keys,
            known_user,
            server_first: server_first.clone(),
            nonce,
        };
        Step::Challenge(server_first.into_bytes())
    }

    fn progress(&self) -> AuthProgress {
        match self.state {
            State::New | State::First => AuthProgress::ScramClientFirst,
            State::Final { .. } => AuthProgress::ScramClientFinal,
            State::Ack(_) => AuthProgress::ScramServerFinal,
            State::Lookup | State::Done => AuthProgress::Verifying,
        }
    }
}

fn plain_keys(p: &Password, salt: &[u8]) -> ScramKeys {
    ScramKeys::derive_sha256(p.expose_secret(), salt, SCRAM_DEFAULT_ITERATIONS)
}

/// The client side of SCRAM-SHA-256. It checks the server's signature before answering the
/// server-final message.
pub struct ScramSha256Client {
    channel_binding: Option<Vec<u8>>,
    username: String,
    password: Password,
    authzid: Option<String>,
    nonce: String,
    client_first_bare: String,
    expected_server_signature: Option<[u8; 32]>,
    done: bool,
}

impl std::fmt::Debug for ScramSha256Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSha256Client")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

impl ScramSha256Client {
    /// Credentials for SCRAM-SHA-256 with a random client nonce.
    pub fn new(username: &str, password: &str, authzid: Option<&str>) -> Self {
        let nonce = random_nonce().unwrap_or_else(|| "fallback-nonce".into());
        Self::with_nonce(username, password, authzid, &nonce)
    }

    /// Credentials with a fixed client nonce (test vectors).
    pub fn with_nonce(username: &str, password: &str, authzid: Option<&str>, nonce: &str) -> Self {
        Self {
            channel_binding: None,
            username: username.to_owned(),
            password: Password::new(password.to_owned()),
            authzid: authzid.map(str::to_owned),
            nonce: nonce.to_owned(),
            client_first_bare: String::new(),
            expected_server_signature: None,
            done: false,
        }
    }

    /// SCRAM-SHA-256-PLUS: binds the exchange to the TLS session whose `tls-exporter` value
    /// (RFC 9266) is `data`.
    pub fn with_channel_binding(mut self, data: Vec<u8>) -> Self {
        self.channel_binding = Some(data);
        self
    }

    fn gs2_header(&self) -> String {
        let flag = if self.channel_binding.is_some() {
            "p=tls-exporter"
        } else {
            "n"
        };
        match &self.authzid {
            Some(a) => format!("{flag},a={},", encode_saslname(a)),
            None => format!("{flag},,"),
        }
    }

    fn client_first(&mut self) -> SecretBytes {
        self.client_first_bare = format!(
            "n={},r={}",
            encode_saslname(&saslprep(&self.username)),
            self.nonce
        );
        SecretBytes::new(format!("{}{}", self.gs2_header(), self.client_first_bare).into_bytes())
    }
}

impl ClientMechanism for ScramSha256Client {
    fn name(&self) -> &str {
        if self.channel_binding.is_some() {
            "SCRAM-SHA-256-PLUS"
        } else {
            "SCRAM-SHA-256"
        }
    }

    fn initial_response(&mut self) -> Option<SecretBytes> {
        Some(self.client_first())
    }

    fn respond(&mut self, challenge: &[u8]) -> Result<SecretBytes, ClientError> {
        if challenge.is_empty() && self.client_first_bare.is_empty() {
            return Ok(self.client_first());
        }
        let text = std::str::from_utf8(challenge).map_err(|_| ClientError::MalformedChallenge)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ClientError::ServerError(e.to_owned()));
        }
        if let Some(expected) = self.expected_server_signature {
            // server-final: verify the server knows our keys.
            let v = text
                .strip_prefix("v=")
                .and_then(|v| STANDARD.decode(v).ok())
                .ok_or(ClientError::MalformedChallenge)?;
            if self.done || !bool::from(v.ct_eq(&expected)) {
                return Err(ClientError::ServerNotAuthenticated);
            }
            self.done = true;
            return Ok(SecretBytes::new(Vec::new()));
        }
        // server-first: r=nonce,s=salt,i=iterations
        let mut r = None;
        let mut s = None;
        let mut i = None;
        for attr in text.split(',') {
            match attr.split_at_checked(2) {
                Some(("r=", v)) => r = Some(v),
                Some(("s=", v)) => s = STANDARD.decode(v).ok(),
                Some(("i=", v)) => i = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (r, s, i) else {
            return Err(ClientError::MalformedChallenge);
        };
        if !nonce.starts_with(&self.nonce)
            || nonce.len() == self.nonce.len()
            || iterations == 0
            || iterations > MAX_CLIENT_ITERATIONS
        {
            return Err(ClientError::MalformedChallenge);
        }
        let mut cbind = self.gs2_header().into_bytes();
        cbind.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let mut sp = salted_password(self.password.expose_secret(), &salt, iterations);
        let client_key = hmac(&sp, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&sp, b"Server Key");
        sp.fill(0);
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(SecretBytes::new(
            format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
        ))
    }
}
