//! The local users file: one `name:PHC-string` per line (argon2id hashes made by
//! `smtpd hash-password`), `#` comments and blank lines allowed. Checked in constant time, on
//! the blocking pool so hashing never stalls the server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use smtp_auth::{AuthDecision, AuthRequest};
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

fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    getrandom::getrandom(buf).map_err(|e| format!("no randomness: {e}"))
}

/// The users, loaded from a file.
#[derive(Clone)]
pub struct FileUsers {
    users: Arc<HashMap<String, String>>,
}

impl std::fmt::Debug for FileUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUsers")
            .field("users", &self.users.len())
            .finish()
    }
}

/// A PHC string verified when the user is unknown, so timing does not tell.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default())
}

impl FileUsers {
    /// Loads and checks the file: every line must be `name:PHC` with a parsable hash.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected name:hash", i + 1));
            };
            if name.is_empty() {
                return Err(format!("line {}: empty user name", i + 1));
            }
            if PasswordHash::new(hash).is_err() {
                return Err(format!("line {}: {name}: not a PHC password hash", i + 1));
            }
            users.insert(name.to_owned(), hash.to_owned());
        }
        Ok(Self {
            users: Arc::new(users),
        })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password (blocking: argon2 is deliberately slow).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (known, hash) = match self.users.get(user) {
            Some(h) => (true, h.as_str()),
            None => (false, dummy_hash()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        known && ok
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
            let decision = tokio::task::spawn_blocking(move || {
                users.verify(&req.username, req.password.expose_secret())
            })
            .await;
            Ok(match decision {
                Ok(true) => AuthDecision::Ok,
                Ok(false) => AuthDecision::Invalid,
                Err(_) => AuthDecision::Failure,
            })
        })
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
    fn bad_files() {
        assert!(FileUsers::parse("alice").unwrap_err().contains("line 1"));
        assert!(
            FileUsers::parse("alice:plaintext")
                .unwrap_err()
                .contains("not a PHC")
        );
        assert!(FileUsers::parse(":x").is_err());
    }
}
