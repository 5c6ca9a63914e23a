//! Sender/login binding (Postfix's `smtpd_sender_login_maps` with
//! `reject_sender_login_mismatch`): which `MAIL FROM` addresses an authenticated user may use.
//!
//! The map file of `sender_login = "map"` has one `address-or-@domain: user1, user2` line per
//! owner list, `#` comments and blank lines allowed. An address is looked up exactly first,
//! then by its `@domain`; matching is case-insensitive.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::SenderLogin;

/// The policy, ready to check.
#[derive(Debug, Clone)]
pub struct SenderPolicy {
    mode: SenderLogin,
    hostname: String,
    map: Arc<HashMap<String, Vec<String>>>,
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
        let map = match (mode, map_file) {
            (SenderLogin::Map, Some(p)) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                parse_map(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            (SenderLogin::Map, None) => {
                return Err("sender_login = \"map\" needs a map file".into());
            }
            _ => HashMap::new(),
        };
        Ok(Self {
            mode,
            hostname: hostname.to_lowercase(),
            map: Arc::new(map),
        })
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
                let owners = self
                    .map
                    .get(&exact)
                    .or_else(|| self.map.get(&format!("@{domain}")));
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
            map: Arc::new(
                parse_map("# owners\nsales@corp.test: alice, bob\n@corp.test: carol\n").unwrap(),
            ),
        }
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
