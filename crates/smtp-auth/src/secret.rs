//! [`Secret`]: one wrapper for every password, token and credential line this crate holds.

use std::fmt;

use zeroize::Zeroize;

/// A value that never prints and is wiped from memory when dropped.
///
/// `Debug` shows `<redacted>`; there is no `Display`. The value is reached only through
/// [`Secret::expose_secret`], a name that stands out in review.
#[derive(Clone, Default)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value.
    pub fn expose_secret(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> Zeroize for Secret<T> {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A password or token as text.
pub type Password = Secret<String>;

/// Raw credential bytes (a decoded SASL response).
pub type SecretBytes = Secret<Vec<u8>>;

/// Constant-time comparison, so a secret compare leaks no timing.
impl PartialEq for Secret<Vec<u8>> {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret<Vec<u8>> {}

/// Constant-time comparison, so a secret compare leaks no timing.
impl PartialEq for Secret<String> {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret<String> {}
