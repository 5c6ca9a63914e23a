//! Sender/login binding (Postfix's `smtpd_sender_login_maps` with
//! `reject_sender_login_mismatch`): which `MAIL FROM` addresses an authenticated user may use.
//!
//! The map file of `sender_login = "map"` has one `address-or-@domain: user1, user2` line per
//! owner list, `#` comments and blank lines allowed. An address is looked up exactly first,
//! then by its `@domain`; matching is case-insensitive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::config::SenderLogin;

/// Owners by address or `@domain`.
type Owners = HashMap<String, Vec<String>>;

/// The policy, ready to check. Clones share the map, so a [`SenderPolicy::reload`] reaches
/// every listener at once.
#[derive(Debug, Clone)]
pub struct SenderPolicy {
    mode: SenderLogin,
    hostname: String,
    map: Arc<RwLock<Arc<Owners>>>,
    file: Option<PathBuf>,
}

/// Reads and parses a map file; errors name the file and the line.
fn read_map(p: &Path) -> Result<Owners, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    parse_map(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Parses a map file's text.
pub fn parse_map(text: &str) -> Result<HashMap<String, Vec<String>>, String> {
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, owners)) = line.split_once(':') else {
            return Err(format!(
                "line {}: expected `address-or-@domain: user, ...`",
                i + 1
            ));
        };
        let key = key.trim().to_lowercase();
        let owners: Vec<String> = owners
            .split(',')
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if key.is_empty() || !key.contains('@') || owners.is_empty() {
            return Err(format!(
                "line {}: expected `address-or-@domain: user, ...`",
                i + 1
            ));
        }
        map.entry(key).or_insert_with(Vec::new).extend(owners);
    }
    Ok(map)
}

/// `(local, domain)` of an address, the domain lower-cased.
fn split(address: &str) -> (&str, String) {
    match address.rsplit_once('@') {
        Some((l, d)) => (l, d.to_lowercase()),
        None => (address, String::new()),
    }
}

impl SenderPolicy {
    /// A policy; `map_file` is read for `SenderLogin::Map`.
    pub fn load(
        mode: SenderLogin,
        hostname: &str,
        map_file: Option<&Path>,
    ) -> Result<Self, String> {
        let (map, file) = match (mode, map_file) {
            (SenderLogin::Map, Some(p)) => (read_map(p)?, Some(p.to_path_buf())),
            (SenderLogin::Map, None) => {
                return Err("sender_login = \"map\" needs a map file".into());
            }
            _ => (HashMap::new(), None),
        };
        Ok(Self {
            mode,
            hostname: hostname.to_lowercase(),
            map: Arc::new(RwLock::new(Arc::new(map))),
            file,
        })
    }

    /// Re-reads the map file (`sender_login = "map"`) for the sessions that follow; a broken
    /// file is refused with the reason and the old map stays in force. `Ok(None)` when there is
    /// no map file; else the number of entries now in force.
    pub fn reload(&self) -> Result<Option<usize>, String> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let map = read_map(path)?;
        let n = map.len();
        if let Ok(mut current) = self.map.write() {
            *current = Arc::new(map);
        }
        Ok(Some(n))
    }

    fn map(&self) -> Arc<Owners> {
        match self.map.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether the policy checks anything (every mode but `any`).
    pub fn checks(&self) -> bool {
        self.mode != SenderLogin::Any
    }

    /// True when `login` may use `address` (an address without angle brackets).
    pub fn allows(&self, login: &str, address: &str) -> bool {
        let (local, domain) = split(address);
        match self.mode {
            SenderLogin::Any => true,
            SenderLogin::Exact => {
                if login.contains('@') {
                    let (ll, ld) = split(login);
                    ll == local && ld == domain
                } else {
                    local.eq_ignore_ascii_case(login) && domain == self.hostname
                }
            }
            SenderLogin::Domain => {
                let own = match login.rsplit_once('@') {
                    Some((_, d)) => d.to_lowercase(),
                    None => self.hostname.clone(),
                };
                domain == own
            }
            SenderLogin::Map => {
                let exact = address.to_lowercase();
                let map = self.map();
                let owners = map.get(&exact).or_else(|| map.get(&format!("@{domain}")));
                owners.is_some_and(|o| o.iter().any(|u| u == login))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: SenderLogin) -> SenderPolicy {
        SenderPolicy {
            mode,
            hostname: "mx.test".into(),
            map: Arc::new(RwLock::new(Arc::new(
                parse_map("# owners\nsales@corp.test: alice, bob\n@corp.test: carol\n").unwrap(),
            ))),
            file: None,
        }
    }

    #[test]
    fn a_reload_reaches_every_clone_and_a_broken_file_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("smtpd-senders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("senders");
        std::fs::write(&file, "sales@corp.test: alice\n").unwrap();
        let p = SenderPolicy::load(SenderLogin::Map, "mx.test", Some(&file)).unwrap();
        let listener_copy = p.clone();
        assert!(listener_copy.allows("alice", "sales@corp.test"));
        assert!(!listener_copy.allows("bob", "sales@corp.test"));
        std::fs::write(&file, "sales@corp.test: bob\n@corp.test: carol\n").unwrap();
        assert_eq!(p.reload(), Ok(Some(2)));
        assert!(listener_copy.allows("bob", "sales@corp.test"));
        assert!(!listener_copy.allows("alice", "sales@corp.test"));
        std::fs::write(&file, "no colon on this line\n").unwrap();
        let e = p.reload().unwrap_err();
        assert!(e.contains("senders") && e.contains("line 1"), "{e}");
        assert!(
            listener_copy.allows("bob", "sales@corp.test"),
            "the old map stays"
        );
        assert_eq!(policy(SenderLogin::Exact).reload(), Ok(None));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn each_mode() {
        let any = policy(SenderLogin::Any);
        assert!(any.allows("alice", "bob@anywhere.test"));

        let exact = policy(SenderLogin::Exact);
        assert!(exact.allows("alice", "alice@mx.test"));
        assert!(exact.allows("alice", "Alice@MX.test"));
        assert!(!exact.allows("alice", "bob@mx.test"));
        assert!(!exact.allows("alice", "alice@elsewhere.test"));
        assert!(exact.allows("dave@corp.test", "dave@CORP.test"));
        assert!(!exact.allows("dave@corp.test", "erin@corp.test"));

        let domain = policy(SenderLogin::Domain);
        assert!(domain.allows("dave@corp.test", "erin@corp.test"));
        assert!(!domain.allows("dave@corp.test", "erin@other.test"));
        assert!(domain.allows("alice", "anyone@mx.test"));

        let map = policy(SenderLogin::Map);
        assert!(map.allows("alice", "Sales@corp.test"));
        assert!(map.allows("bob", "sales@corp.test"));
        assert!(!map.allows("carol", "sales@corp.test"), "exact entry wins");
        assert!(map.allows("carol", "info@corp.test"));
        assert!(!map.allows("alice", "info@corp.test"));
        assert!(!map.allows("alice", "alice@unlisted.test"));
    }

    #[test]
    fn bad_map_lines_name_the_line() {
        assert!(
            parse_map("a@b: x\nnonsense\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(parse_map("a@b:\n").unwrap_err().contains("line 1"));
        assert!(parse_map("nodomain: x\n").is_err());
    }
}
