//! The local users file: one `name:hash[:scram-keys]` per line (made by
//! `smtpd hash-password [--scram]`), `#` comments and blank lines allowed. The hash is an
//! argon2id PHC string, or any scheme [`crate::hashes`] recognises (bcrypt, SHA-crypt, PBKDF2,
//! scrypt, Dovecot's `{SCHEME}` prefixes): a file taken over from Dovecot or another server
//! works as it is. An unknown or unsupported scheme is refused when the file is loaded, naming
//! the line; a weak one too, unless `[auth] allow_weak_schemes`. The hash serves PLAIN and
//! LOGIN, checked in constant time on a bounded [`VerifyPool`] so hashing never stalls the
//! server; the optional SCRAM keys
//! (`$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>`, base64) serve
//! SCRAM-SHA-256 without the server ever holding the password.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use smtp_auth::{
    AuthDecision, AuthRequest, LookupRequest, LookupResult, ScramKeys, Secret, StoredSecret,
};
use smtp_server::VerifyPool;

use crate::hashes::{Scheme, StoredHash, parse_scram};
use tower_service::Service;

/// Hashes a password into an argon2id PHC string with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Hashes a password into an argon2id PHC string with the given cost.
pub fn hash_password_with(password: &str, params: argon2::Params) -> Result<String, String> {
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Parses `m=KiB,t=passes,p=lanes` (any order, all three needed).
pub fn parse_params(text: &str) -> Result<argon2::Params, String> {
    let (mut m, mut t, mut p) = (None, None, None);
    for part in text.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected key=value"))?;
        let v: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: not a number"))?;
        match k.trim() {
            "m" => m = Some(v),
            "t" => t = Some(v),
            "p" => p = Some(v),
            other => return Err(format!("unknown parameter {other:?} (m, t, p)")),
        }
    }
    let (Some(m), Some(t), Some(p)) = (m, t, p) else {
        return Err("expected m=KiB,t=passes,p=lanes".into());
    };
    argon2::Params::new(m, t, p, None).map_err(|e| e.to_string())
}

/// SCRAM-SHA-256 keys for a password with a random salt, as a users-file field.
pub fn scram_keys(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let iterations = 4096;
    Ok(crate::hashes::format_scram(&ScramKeys::derive_sha256(
        password, &salt, iterations,
    )))
}

fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    getrandom::getrandom(buf).map_err(|e| format!("no randomness: {e}"))
}

/// One stored secret of a user: its hash and, for all but the user's first line, a label (an
/// app password's name).
#[derive(Clone, PartialEq, Eq)]
struct Credential {
    hash: StoredHash,
    label: Option<String>,
}

/// One parsed users file.
struct Table {
    users: HashMap<String, Vec<Credential>>,
    scram: HashMap<String, ScramKeys>,
    /// A hash of the file's most common scheme and cost, verified for unknown users.
    dummy: StoredHash,
    /// The most credentials a user has: every login verifies this many hashes (padded with
    /// the dummy), so the work says nothing about the user or how many secrets it has.
    per_login: usize,
}

/// The users, loaded from a file: argon2 verification on a bounded [`VerifyPool`], and a
/// table that [`FileUsers::reload`] swaps while sessions go on.
#[derive(Clone)]
pub struct FileUsers {
    table: Arc<RwLock<Arc<Table>>>,
    /// Password verifications run (argon2), known user or not: the same work either way.
    verifications: Arc<std::sync::atomic::AtomicU64>,
    /// A digest of the file as first loaded, the stable secret behind unknown users' SCRAM
    /// salts (kept across reloads).
    digest: Arc<Secret<Vec<u8>>>,
    pool: VerifyPool,
    /// Weak schemes accepted (kept for reloads).
    allow_weak: bool,
    /// Labels of the credentials recently matched, by user: keyed digests of the password.
    recall: Arc<std::sync::Mutex<Recall>>,
    /// The random key of those digests.
    recall_key: Arc<Secret<Vec<u8>>>,
}

/// Matched labels by user: (keyed digest of the password, label).
type Recall = HashMap<String, Vec<([u8; 32], String)>>;

/// Users whose matched labels are recalled at once (the table is emptied past it).
const MAX_RECALLED: usize = 100_000;

impl std::fmt::Debug for FileUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUsers")
            .field("users", &self.len())
            .field("pool", &self.pool)
            .finish()
    }
}

/// A PHC string with the parameters of `like` (or argon2's defaults), for a password no one
/// has: verifying it costs what verifying a real user of the file costs.
fn dummy_hash(like: Option<&str>) -> String {
    static DEFAULT: OnceLock<String> = OnceLock::new();
    let params = like
        .and_then(|h| PasswordHash::new(h).ok())
        .and_then(|h| argon2::Params::try_from(&h).ok());
    match params {
        Some(p) if p != argon2::Params::default() => {
            let mut salt = [0u8; 16];
            let _ = fill_random(&mut salt);
            SaltString::encode_b64(&salt)
                .ok()
                .and_then(|salt| {
                    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p)
                        .hash_password(b"not a real password", &salt)
                        .ok()
                        .map(|h| h.to_string())
                })
                .unwrap_or_default()
        }
        _ => DEFAULT
            .get_or_init(|| hash_password("not a real password").unwrap_or_default())
            .clone(),
    }
}

/// What an unknown user's password is verified against: verifying it costs what verifying a
/// user of the file costs. For argon2 a fresh hash with the parameters of the file's first
/// argon2 user; for any other scheme, the first stored hash of the file's most common scheme
/// (with its own cost): a random password never matches it.
fn dummy_for(users: &[(String, StoredHash)]) -> StoredHash {
    let mut counts: HashMap<Scheme, usize> = HashMap::new();
    for (_, h) in users {
        *counts.entry(h.scheme()).or_default() += 1;
    }
    let common = counts
        .into_iter()
        .max_by_key(|(scheme, n)| (*n, *scheme == Scheme::Argon2))
        .map(|(scheme, _)| scheme);
    let first = |scheme| users.iter().map(|(_, h)| h).find(|h| h.scheme() == scheme);
    match common {
        Some(scheme) if scheme != Scheme::Argon2 => first(scheme).cloned(),
        _ => None,
    }
    .unwrap_or_else(|| {
        let like = first(Scheme::Argon2).map(StoredHash::value);
        StoredHash::parse(&dummy_hash(like)).expect("an argon2 PHC string")
    })
}

/// A credential label: 1 to 32 of letters, digits, `.`, `_` and `-`.
fn valid_label(label: &str) -> bool {
    (1..=32).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_table(text: &str, allow_weak: bool) -> Result<Table, String> {
    let mut users: HashMap<String, Vec<Credential>> = HashMap::new();
    let mut order = Vec::new();
    let mut scram = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |what: String| format!("line {}: {what}", i + 1);
        let Some((name, rest)) = line.split_once(':') else {
            return Err(at("expected name:hash".into()));
        };
        if name.is_empty() {
            return Err(at("empty user name".into()));
        }
        let mut fields = rest.split(':');
        let hash = fields.next().unwrap_or_default();
        let (mut keys, mut label) = (None, None);
        for field in fields {
            if let Some(l) = field.strip_prefix("label=") {
                if !valid_label(l) || label.is_some() {
                    return Err(at(format!(
                        "{name}: a label is 1 to 32 of letters, digits, '.', '_' and '-', once"
                    )));
                }
                label = Some(l.to_owned());
            } else if keys.is_none() {
                keys = Some(field);
            } else {
                return Err(at(format!("{name}: unexpected field")));
            }
        }
        let stored = StoredHash::parse(hash).map_err(|e| at(format!("{name}: {e}")))?;
        if stored.scheme().weak() && !allow_weak {
            return Err(at(format!(
                "{name}: the {} scheme is weak (clear or unsalted): rehash the password, or \
                 set [auth] allow_weak_schemes = true",
                stored.scheme().name()
            )));
        }
        let creds = users.entry(name.to_owned()).or_default();
        if !creds.is_empty() {
            match &label {
                None => {
                    return Err(at(format!(
                        "{name}: a second line of a user needs a label (label=NAME)"
                    )));
                }
                Some(l) if creds.iter().any(|c| c.label.as_ref() == Some(l)) => {
                    return Err(at(format!("{name}: label {l:?} is used twice")));
                }
                Some(_) => {}
            }
        }
        if let Some(k) = keys {
            let keys = parse_scram(k).ok_or_else(|| at(format!("{name}: malformed SCRAM keys")))?;
            scram.entry(name.to_owned()).or_insert(keys);
        }
        order.push((name.to_owned(), stored.clone()));
        creds.push(Credential {
            hash: stored,
            label,
        });
    }
    Ok(Table {
        dummy: dummy_for(&order),
        per_login: users.values().map(Vec::len).max().unwrap_or(1),
        users,
        scram,
    })
}

impl FileUsers {
    /// Loads and checks the file: every line must be `name:hash` with a hash of a known,
    /// strong scheme.
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::load_with(path, false)
    }

    /// The same, accepting weak schemes when `allow_weak` (`[auth] allow_weak_schemes`).
    pub fn load_with(path: &Path, allow_weak: bool) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse_with(&text, allow_weak).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text. Verification runs on a pool of as many workers as cores.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with(text, false)
    }

    /// Parses the file's text, accepting weak schemes when `allow_weak`.
    pub fn parse_with(text: &str, allow_weak: bool) -> Result<Self, String> {
        let table = parse_table(text, allow_weak)?;
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"smtpd scram secret\0")
            .chain_update(text.as_bytes())
            .finalize()
            .to_vec();
        Ok(Self {
            table: Arc::new(RwLock::new(Arc::new(table))),
            verifications: Arc::default(),
            digest: Arc::new(Secret::new(digest)),
            pool: VerifyPool::new(smtp_server::default_workers()),
            allow_weak,
            recall: Arc::default(),
            recall_key: Arc::new(Secret::new({
                let mut key = vec![0u8; 32];
                fill_random(&mut key)?;
                key
            })),
        })
    }

    /// Verifies on `workers` threads (at most that many hashes at once, so at most that many
    /// times the hash's memory).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.pool = VerifyPool::new(workers);
        self
    }

    /// The verification pool (for its figures).
    pub fn pool(&self) -> &VerifyPool {
        &self.pool
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file and applies it to the logins that follow; sessions in progress are
    /// untouched. On an error the old users stay in force. Returns the users whose line
    /// changed or went away (their cached credentials must go).
    pub fn reload(&self, path: &Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let new =
            parse_table(&text, self.allow_weak).map_err(|e| format!("{}: {e}", path.display()))?;
        let old = self.table();
        let mut changed: Vec<String> = old
            .users
            .iter()
            .filter(|(name, creds)| {
                new.users.get(*name) != Some(*creds) || old.scram.get(*name) != new.scram.get(*name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        changed.sort();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        // A revoked or changed credential's label is not recalled any more.
        let mut recall = self.recall.lock().unwrap_or_else(|p| p.into_inner());
        for user in &changed {
            recall.remove(user);
        }
        Ok(changed)
    }

    /// The secret for unknown users' fake SCRAM salts: derived from the file as first loaded
    /// (whose argon2 hashes hold random salts), so it is stable across restarts while the
    /// file is unchanged, and unknown to anyone who cannot read the file.
    pub fn scram_secret(&self) -> Arc<Secret<Vec<u8>>> {
        self.digest.clone()
    }

    /// Password verifications run so far (for tests: an unknown user costs one too).
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when the user is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.table().users.contains_key(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.table().users.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a password (blocking: the strong schemes are deliberately slow). An unknown user
    /// costs the same: a hash of the file's usual scheme and cost is verified instead.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.verify_credential(user, password).is_some()
    }

    /// Checks a password against each of the user's credentials: `Some(label)` for the one it
    /// matched (`None` inside for the user's first, unlabelled line). Every login verifies as
    /// many hashes as the user with the most credentials has, so the work tells nothing.
    pub fn verify_credential(&self, user: &str, password: &str) -> Option<Option<String>> {
        let table = self.table();
        let creds = table.users.get(user).map(Vec::as_slice).unwrap_or_default();
        let mut matched = None;
        for i in 0..table.per_login {
            let hash = creds.get(i).map_or(&table.dummy, |c| &c.hash);
            self.verifications
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if hash.verify(password) && i < creds.len() && matched.is_none() {
                matched = Some(creds[i].label.clone());
            }
        }
        if let Some(Some(label)) = &matched {
            self.remember(user, password, label);
        }
        matched
    }

    /// True when some user has more than one credential (labels to recall).
    pub fn labelled(&self) -> bool {
        self.table().per_login > 1
    }

    /// The label of the credential `password` matched for `user` when it was last verified
    /// (a login answered from the credential cache is not verified again): recalled by a
    /// keyed digest, never the password; forgotten when the user's lines change.
    pub fn label_of(&self, user: &str, password: &str) -> Option<String> {
        let tag = self.tag(user, password);
        let recall = self.recall.lock().unwrap_or_else(|p| p.into_inner());
        recall
            .get(user)?
            .iter()
            .find(|(t, _)| bool::from(subtle::ConstantTimeEq::ct_eq(&t[..], &tag[..])))
            .map(|(_, l)| l.clone())
    }

    fn remember(&self, user: &str, password: &str, label: &str) {
        let tag = self.tag(user, password);
        let mut recall = self.recall.lock().unwrap_or_else(|p| p.into_inner());
        if recall.len() >= MAX_RECALLED {
            recall.clear();
        }
        let tags = recall.entry(user.to_owned()).or_default();
        tags.retain(|(t, _)| *t != tag);
        tags.push((tag, label.to_owned()));
        if tags.len() > 16 {
            tags.remove(0);
        }
    }

    /// A digest of the credentials under this process's random key.
    fn tag(&self, user: &str, password: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::new()
            .chain_update(self.recall_key.expose_secret())
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }
}

impl Service<AuthRequest> for FileUsers {
    type Response = AuthDecision;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<AuthDecision, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: AuthRequest) -> Self::Future {
        let users = self.clone();
        Box::pin(async move {
            // No proxy authorisation: an authzid must be the user itself.
            if req.authzid.as_ref().is_some_and(|z| *z != req.username) {
                return Ok(AuthDecision::Invalid);
            }
            if req.mechanism == "EXTERNAL" {
                // The identity comes from a verified client certificate through
                // auth.external_map; it logs in if it is a user of this file.
                return Ok(if users.contains(&req.username) {
                    AuthDecision::Ok
                } else {
                    AuthDecision::Invalid
                });
            }
            // On the bounded pool: at most `workers` hashes at once; a login whose client
            // went away while queued is skipped.
            let pool = users.pool.clone();
            let decision = pool
                .run(move || users.verify(&req.username, req.password.expose_secret()))
                .await;
            Ok(match decision {
                Some(true) => AuthDecision::Ok,
                Some(false) => AuthDecision::Invalid,
                None => AuthDecision::Failure,
            })
        })
    }
}

/// The file backend's [`Authenticator`](smtp_server::Authenticator): `inner` decides (the
/// users behind the credential cache), and a success with one of a user's labelled
/// credentials (an app password) carries its label as
/// [`CredentialLabel`](smtp_auth::CredentialLabel) data, so the AUTH log line names it and a
/// handler can tell which one was used.
pub struct Labelled {
    /// The authenticator that decides.
    pub inner: Arc<dyn smtp_server::Authenticator>,
    /// The users whose labels are recalled.
    pub users: FileUsers,
}

impl smtp_server::Authenticator for Labelled {
    fn authenticate(
        &self,
        session: &smtp_server::Session,
        request: AuthRequest,
    ) -> smtp_server::BoxFuture<smtp_auth::Verdict> {
        let users = self.users.clone();
        let (user, password) = (request.username.clone(), request.password.clone());
        let decided = self.inner.authenticate(session, request);
        Box::pin(async move {
            let verdict = decided.await;
            if verdict.decision != AuthDecision::Ok || !users.labelled() {
                return verdict;
            }
            match users.label_of(&user, password.expose_secret()) {
                Some(label) => smtp_auth::Verdict::ok(Some(smtp_auth::AuthData::Custom {
                    login: Some(user),
                    data: Arc::new(smtp_auth::CredentialLabel(label)),
                })),
                None => verdict,
            }
        })
    }

    fn lookup(
        &self,
        session: &smtp_server::Session,
        request: LookupRequest,
    ) -> smtp_server::BoxFuture<LookupResult> {
        self.inner.lookup(session, request)
    }
}

/// SCRAM-SHA-256 lookups: the stored keys, or not found (the mechanism then fails the
/// exchange without revealing whether the user exists).
impl Service<LookupRequest> for FileUsers {
    type Response = LookupResult;
    type Error = Infallible;
    type Future = std::future::Ready<Result<LookupResult, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LookupRequest) -> Self::Future {
        let table = self.table();
        let found = match (req.mechanism.as_str(), table.scram.get(&req.username)) {
            ("SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS", Some(k)) => {
                LookupResult::Found(StoredSecret::ScramSha256(k.clone()))
            }
            _ => LookupResult::NotFound,
        };
        std::future::ready(Ok(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let users = FileUsers::parse(&format!("# users\n\nalice:{h}\n")).unwrap();
        assert_eq!(users.len(), 1);
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "wrong"));
        assert!(!users.verify("bob", "s3cret"));
    }

    #[test]
    fn scram_keys_round_trip() {
        let h = hash_password("pencil").unwrap();
        let k = scram_keys("pencil").unwrap();
        let users = FileUsers::parse(&format!("user:{h}:{k}\n")).unwrap();
        let table = users.table();
        let keys = table.scram.get("user").unwrap();
        let again = ScramKeys::derive_sha256("pencil", &keys.salt, keys.iterations);
        assert!(again == *keys);
        assert!(FileUsers::parse(&format!("user:{h}:$scram-sha-256$0$AA==$AA==$AA==")).is_err());
        assert!(!format!("{users:?}").contains(&k));
    }

    #[test]
    fn custom_cost_and_a_dummy_that_matches_it() {
        let p = parse_params("m=8,t=1,p=1").unwrap();
        let h = hash_password_with("pw", p).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{h}");
        let users = FileUsers::parse(&format!("alice:{h}\n")).unwrap();
        assert!(users.verify("alice", "pw"));
        // The unknown-user dummy has the file's own cost, so it takes the same time.
        assert!(
            users
                .table()
                .dummy
                .value()
                .starts_with("$argon2id$v=19$m=8,t=1,p=1$")
        );
        assert!(parse_params("m=8,t=1").is_err());
        assert!(parse_params("m=8,t=1,p=1,x=2").is_err());
    }

    #[test]
    fn reload_swaps_users_and_names_the_changed_ones() {
        let dir = std::env::temp_dir().join(format!("smtpd-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let (a, b) = (hash_password("a").unwrap(), hash_password("b").unwrap());
        std::fs::write(&path, format!("alice:{a}\nbob:{b}\ncarol:{b}\n")).unwrap();
        let users = FileUsers::load(&path).unwrap();
        std::fs::write(&path, format!("alice:{b}\nbob:{b}\ndave:{a}\n")).unwrap();
        assert_eq!(users.reload(&path).unwrap(), vec!["alice", "carol"]);
        assert!(users.verify("alice", "b") && users.verify("dave", "a"));
        assert!(!users.contains("carol"));
        std::fs::write(&path, "broken\n").unwrap();
        assert!(users.reload(&path).unwrap_err().contains("line 1"));
        assert!(users.verify("dave", "a"), "the old users stay");
        // A scheme the server cannot verify is refused at a reload too, naming its line; a
        // weak one as at the start (the file was loaded without allow_weak_schemes).
        std::fs::write(&path, format!("dave:{a}\nerin:$1$salt$hash\n")).unwrap();
        let e = users.reload(&path).unwrap_err();
        assert!(
            e.ends_with("line 2: erin: MD5-crypt ($1$) is not supported: rehash the password"),
            "{e}"
        );
        std::fs::write(&path, format!("dave:{a}\nerin:{{PLAIN}}x\n")).unwrap();
        assert!(
            users
                .reload(&path)
                .unwrap_err()
                .contains("line 2: erin: the PLAIN scheme is weak")
        );
        assert!(users.verify("dave", "a") && !users.contains("erin"));
        // A scheme change of a line is a change: its cached credentials go.
        let crypt6 = "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/";
        std::fs::write(&path, format!("dave:{{SHA512-CRYPT}}{crypt6}\n")).unwrap();
        assert_eq!(users.reload(&path).unwrap(), vec!["alice", "bob", "dave"]);
        assert!(users.verify("dave", "pw") && !users.verify("dave", "a"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_users_cost_a_verification_too() {
        let users = FileUsers::parse(&format!("alice:{}\n", hash_password("pw").unwrap())).unwrap();
        assert!(!users.verify("nobody", "pw"));
        assert_eq!(users.verifications(), 1);
        assert!(!users.verify("alice", "wrong"));
        assert_eq!(users.verifications(), 2);
    }

    #[test]
    fn external_map_by_fingerprint() {
        let der = b"not really a certificate";
        let fp = ExternalMap::fingerprint(der);
        let map = ExternalMap::parse(&format!("# certs\n{fp} alice\n")).unwrap();
        assert_eq!(map.user(der).as_deref(), Some("alice"));
        assert_eq!(map.user(b"other"), None);
        let plain_hex = fp.replace(':', "").to_lowercase();
        let map = ExternalMap::parse(&format!("{plain_hex}\tbob\n")).unwrap();
        assert_eq!(map.user(der).as_deref(), Some("bob"));
        assert!(
            ExternalMap::parse("abcd alice\n")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn bad_files() {
        assert!(FileUsers::parse("alice").unwrap_err().contains("line 1"));
        assert!(
            FileUsers::parse("alice:plaintext")
                .unwrap_err()
                .starts_with("line 1: alice: not a password hash")
        );
        assert!(FileUsers::parse(":x").is_err());
    }

    #[test]
    fn every_scheme_in_one_file_and_the_bad_lines_named() {
        let bcrypt = bcrypt::hash("b-pass", 4).unwrap();
        let file = format!(
            "# taken over from Dovecot\n\
             sha:{{SHA512-CRYPT}}$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/\n\
             blf:{bcrypt}\n\
             plain:{{PLAIN}}clear-pass\n"
        );
        // A weak scheme is refused, naming the line, unless allowed.
        let e = FileUsers::parse(&file).unwrap_err();
        assert_eq!(
            e,
            "line 4: plain: the PLAIN scheme is weak (clear or unsalted): rehash the password, \
             or set [auth] allow_weak_schemes = true"
        );
        let users = FileUsers::parse_with(&file, true).unwrap();
        assert!(users.verify("sha", "pw"));
        assert!(users.verify("blf", "b-pass"));
        assert!(users.verify("plain", "clear-pass"));
        assert!(!users.verify("blf", "pw") && !users.verify("sha", "b-pass"));
        // An unknown user costs a verification of the file's most common scheme.
        let before = users.verifications();
        assert!(!users.verify("nobody", "pw"));
        assert_eq!(users.verifications(), before + 1);
        assert_ne!(users.table().dummy.scheme(), Scheme::Argon2);
        // An unknown scheme, named with its line.
        let e = FileUsers::parse(
            "a:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\nb:$y$j9T$salt$hash\n",
        )
        .unwrap_err();
        assert_eq!(e, "line 2: b: unknown password scheme \"y\"");
    }

    #[test]
    fn app_passwords_each_with_a_label_and_constant_work() {
        let cheap =
            |pw: &str| hash_password_with(pw, argon2::Params::new(8, 1, 1, None).unwrap()).unwrap();
        let file = format!(
            "alice:{}\nalice:{}:label=phone\nalice:{}:label=laptop\nbob:{}\n",
            cheap("primary"),
            cheap("phone-pass"),
            cheap("laptop-pass"),
            cheap("bob-pass")
        );
        let users = FileUsers::parse(&file).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.labelled());
        assert_eq!(users.verify_credential("alice", "primary"), Some(None));
        assert_eq!(
            users.verify_credential("alice", "phone-pass"),
            Some(Some("phone".into()))
        );
        assert_eq!(
            users.verify_credential("alice", "laptop-pass"),
            Some(Some("laptop".into()))
        );
        assert_eq!(users.verify_credential("alice", "bob-pass"), None);
        assert_eq!(users.verify_credential("bob", "bob-pass"), Some(None));
        // Recalled for a login the credential cache answers, by digest only.
        assert_eq!(
            users.label_of("alice", "phone-pass").as_deref(),
            Some("phone")
        );
        assert_eq!(users.label_of("alice", "primary"), None);
        assert_eq!(users.label_of("bob", "phone-pass"), None);
        // Every login does the same work: three hashes here, for alice, bob or no one.
        for (user, pw) in [
            ("alice", "x"),
            ("bob", "x"),
            ("nobody", "x"),
            ("bob", "bob-pass"),
        ] {
            let before = users.verifications();
            users.verify(user, pw);
            assert_eq!(users.verifications() - before, 3, "{user}");
        }
        // The lines that cannot be.
        let e = |text: String| FileUsers::parse(&text).unwrap_err();
        let h = cheap("x");
        assert_eq!(
            e(format!("a:{h}\na:{h}\n")),
            "line 2: a: a second line of a user needs a label (label=NAME)"
        );
        assert_eq!(
            e(format!("a:{h}\na:{h}:label=p\na:{h}:label=p\n")),
            "line 3: a: label \"p\" is used twice"
        );
        assert!(e(format!("a:{h}:label=has space\n")).starts_with("line 1: a: a label is"));
        assert!(e(format!("a:{h}:label=x:label=y\n")).starts_with("line 1: a: a label is"));
    }

    #[test]
    fn removing_an_app_passwords_line_revokes_it_at_the_reload() {
        let dir = std::env::temp_dir().join(format!("smtpd-apppw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let cheap =
            |pw: &str| hash_password_with(pw, argon2::Params::new(8, 1, 1, None).unwrap()).unwrap();
        let (primary, phone) = (cheap("primary"), cheap("phone-pass"));
        std::fs::write(
            &path,
            format!("alice:{primary}\nalice:{phone}:label=phone\n"),
        )
        .unwrap();
        let users = FileUsers::load(&path).unwrap();
        assert!(users.verify("alice", "phone-pass"));
        assert!(users.label_of("alice", "phone-pass").is_some());
        std::fs::write(&path, format!("alice:{primary}\n")).unwrap();
        assert_eq!(users.reload(&path).unwrap(), vec!["alice"]);
        assert!(!users.verify("alice", "phone-pass"), "revoked");
        assert_eq!(users.label_of("alice", "phone-pass"), None, "forgotten");
        assert!(users.verify("alice", "primary"));
        assert!(!users.labelled());
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `auth.external_map`: verified client certificates to users, one
/// `<SHA-256 fingerprint of the DER certificate, hex, colons optional> <user>` per line (the
/// form of Postfix's `check_ccert_access` with `smtpd_tls_fingerprint_digest = sha256`).
#[derive(Debug, Clone, Default)]
pub struct ExternalMap {
    by_fingerprint: Arc<HashMap<[u8; 32], String>>,
}

impl ExternalMap {
    /// Loads the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: expected `<sha256 fingerprint> <user>`", i + 1);
            let (fp, user) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let hex: String = fp.chars().filter(|c| *c != ':').collect();
            if hex.len() != 64 || user.trim().is_empty() {
                return Err(bad());
            }
            let mut key = [0u8; 32];
            for (k, pair) in key.iter_mut().zip(hex.as_bytes().chunks(2)) {
                let s = std::str::from_utf8(pair).map_err(|_| bad())?;
                *k = u8::from_str_radix(s, 16).map_err(|_| bad())?;
            }
            map.insert(key, user.trim().to_owned());
        }
        Ok(Self {
            by_fingerprint: Arc::new(map),
        })
    }

    /// The user of a client certificate, if it is listed.
    pub fn user(&self, cert_der: &[u8]) -> Option<String> {
        use sha2::Digest as _;
        let fp: [u8; 32] = sha2::Sha256::digest(cert_der).into();
        self.by_fingerprint.get(&fp).cloned()
    }

    /// The SHA-256 fingerprint of a DER certificate as this file writes it.
    pub fn fingerprint(cert_der: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
