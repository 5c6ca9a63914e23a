//! The mechanism registry, keyed by exact SASL names (RFC 4422 §3.1 syntax).

use std::fmt;
use std::sync::Arc;

use crate::mechanism::{
    CramMd5Server, ExternalServer, LoginServer, OAuthServer, PlainServer, ScramSha256Server,
    ServerMechanism,
};

type Factory = Arc<dyn Fn() -> Box<dyn ServerMechanism> + Send + Sync>;

/// A name that is not a valid SASL mechanism name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMechanismName(pub String);

impl fmt::Display for InvalidMechanismName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid SASL mechanism name {:?}: 1 to 20 of A-Z 0-9 - _",
            self.0
        )
    }
}

impl std::error::Error for InvalidMechanismName {}

/// Checks RFC 4422 §3.1: 1 to 20 characters of upper-case letters, digits, `-` and `_`.
pub fn valid_mechanism_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[derive(Clone)]
struct Entry {
    name: String,
    factory: Factory,
}

/// A name [`Registry::only`] was asked for that the registry does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownMechanism {
    /// The name, upper-case.
    pub name: String,
    /// The names the registry holds, comma-separated.
    pub known: String,
}

impl fmt::Display for UnknownMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown mechanism {:?} (known: {})",
            self.name, self.known
        )
    }
}

impl std::error::Error for UnknownMechanism {}

/// Which mechanisms exist, in advertising order, and which are excluded.
///
/// Cheap to clone (shared until changed). `Registry::default()` holds PLAIN and LOGIN, like
/// aiosmtpd; [`Registry::all_builtin`] adds CRAM-MD5, SCRAM-SHA-256, XOAUTH2, OAUTHBEARER and
/// EXTERNAL. A mechanism registered under an existing name replaces it; an excluded name is
/// neither listed nor created.
#[derive(Clone)]
pub struct Registry {
    entries: Arc<Vec<Entry>>,
    excluded: Arc<Vec<String>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("mechanisms", &self.names())
            .field("excluded", &self.excluded)
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::empty()
            .with("PLAIN", || Box::new(PlainServer::default()))
            .with("LOGIN", || Box::new(LoginServer::default()))
    }
}

impl Registry {
    /// A registry with no mechanisms.
    pub fn empty() -> Self {
        Self {
            entries: Arc::new(Vec::new()),
            excluded: Arc::new(Vec::new()),
        }
    }

    /// Every built-in mechanism: PLAIN, LOGIN, SCRAM-SHA-256, CRAM-MD5, XOAUTH2, OAUTHBEARER,
    /// EXTERNAL.
    pub fn all_builtin() -> Self {
        Self::default()
            .with("SCRAM-SHA-256", || Box::new(ScramSha256Server::default()))
            .with("SCRAM-SHA-256-PLUS", || Box::new(ScramSha256Server::plus()))
            .with("CRAM-MD5", || Box::new(CramMd5Server::default()))
            .with("XOAUTH2", || Box::new(OAuthServer::xoauth2()))
            .with("OAUTHBEARER", || Box::new(OAuthServer::oauthbearer()))
            .with("EXTERNAL", || Box::new(ExternalServer::default()))
    }

    fn with(
        mut self,
        name: &'static str,
        f: impl Fn() -> Box<dyn ServerMechanism> + Send + Sync + 'static,
    ) -> Self {
        // Built-in names are valid by construction.
        let _ = self.register(name, f);
        self
    }

    /// Adds a mechanism under its exact SASL name, replacing one of the same name (a handler's
    /// PLAIN replaces the built-in PLAIN). New names go at the end of the advertised list.
    pub fn register(
        &mut self,
        name: &str,
        factory: impl Fn() -> Box<dyn ServerMechanism> + Send + Sync + 'static,
    ) -> Result<&mut Self, InvalidMechanismName> {
        if !valid_mechanism_name(name) {
            return Err(InvalidMechanismName(name.to_owned()));
        }
        let entry = Entry {
            name: name.to_owned(),
            factory: Arc::new(factory),
        };
        let entries = Arc::make_mut(&mut self.entries);
        match entries.iter_mut().find(|e| e.name == name) {
            Some(e) => *e = entry,
            None => entries.push(entry),
        }
        Ok(self)
    }

    /// Excludes a mechanism (aiosmtpd's `auth_exclude_mechanism`): neither listed nor accepted.
    pub fn exclude(&mut self, name: &str) -> &mut Self {
        let name = name.to_ascii_uppercase();
        if !self.excluded.contains(&name) {
            Arc::make_mut(&mut self.excluded).push(name);
        }
        self
    }

    /// True when `name` is registered and not excluded.
    pub fn contains(&self, name: &str) -> bool {
        !self.excluded.iter().any(|x| x == name) && self.entries.iter().any(|e| e.name == name)
    }

    /// The usable names, in advertising order.
    pub fn names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| !self.excluded.contains(&e.name))
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The names to advertise on a session: channel-binding mechanisms (`-PLUS`) only when the
    /// session has a channel binding to offer.
    pub fn offered(&self, channel_binding: bool) -> Vec<&str> {
        self.names()
            .into_iter()
            .filter(|m| channel_binding || !m.ends_with("-PLUS"))
            .collect()
    }

    /// The mechanisms of this registry named in `names` (any case), in that order: the one
    /// place a configured list of names becomes a registry (`smtpd`'s `mechanisms`). A name
    /// this registry does not hold (or excludes) is refused, naming it and the known ones.
    ///
    /// ```
    /// use smtp_auth::Registry;
    /// let r = Registry::all_builtin().only(&["login", "SCRAM-SHA-256"]).unwrap();
    /// assert_eq!(r.names(), ["LOGIN", "SCRAM-SHA-256"]);
    /// let e = Registry::default().only(&["X-NOPE"]).unwrap_err();
    /// assert_eq!(e.to_string(), r#"unknown mechanism "X-NOPE" (known: PLAIN, LOGIN)"#);
    /// ```
    pub fn only<S: AsRef<str>>(&self, names: &[S]) -> Result<Registry, UnknownMechanism> {
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref().to_ascii_uppercase();
            let found = self
                .entries
                .iter()
                .find(|e| e.name == name)
                .filter(|_| !self.excluded.contains(&name));
            match found {
                Some(e) if !entries.iter().any(|x: &Entry| x.name == name) => entries.push(Entry {
                    name: e.name.clone(),
                    factory: e.factory.clone(),
                }),
                Some(_) => {}
                None => {
                    return Err(UnknownMechanism {
                        name,
                        known: self.names().join(", "),
                    });
                }
            }
        }
        Ok(Self {
            entries: Arc::new(entries),
            excluded: Arc::new(Vec::new()),
        })
    }

    /// A fresh server mechanism for `name` (exact, upper-case), unless unknown or excluded.
    pub fn create(&self, name: &str) -> Option<Box<dyn ServerMechanism>> {
        if self.excluded.iter().any(|x| x == name) {
            return None;
        }
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.factory)())
    }
}
