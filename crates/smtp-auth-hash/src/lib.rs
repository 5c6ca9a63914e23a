//! # smtp-auth-hash
//!
//! Password hashes as stores keep them: every scheme `smtpd`'s users file and any store that
//! hands back a hash (an SQL table, a directory's `userPassword`) accepts, recognised when the
//! hash is read ([`StoredHash::parse`]) and verified ([`StoredHash::verify`]) by the RustCrypto
//! crates and the `bcrypt` crate in constant time, never by hand-written hash code.
//!
//! | stored as | scheme |
//! | --- | --- |
//! | `$argon2id$…`, `$argon2i$…`, `{ARGON2ID}…`, `{ARGON2I}…` | argon2 (PHC) |
//! | `$2a$`, `$2b$`, `$2y$`, `{BLF-CRYPT}…` | bcrypt |
//! | `$6$…`, `{SHA512-CRYPT}…` / `$5$…`, `{SHA256-CRYPT}…` | SHA-512-crypt / SHA-256-crypt |
//! | `$pbkdf2-sha256$…`, `$pbkdf2-sha512$…` | PBKDF2 (PHC) |
//! | `{PBKDF2}$1$salt$rounds$hex` | Dovecot's PBKDF2 (HMAC-SHA1) |
//! | `$scrypt$…` | scrypt (PHC) |
//! | `{SSHA512}…`, `{SSHA256}…` | salted SHA-2 (Dovecot, OpenLDAP) |
//! | `{CRYPT}…` | the crypt string's own scheme (bcrypt, SHA-crypt, argon2) |
//!
//! Weak schemes (`{PLAIN}`, `{CLEAR}`, `{CLEARTEXT}`, `{PLAIN-MD5}`, unsalted `{SHA}`,
//! `{SHA1}`, `{SHA256}`, `{SHA512}`) are recognised and refused unless the operator opts in
//! (`[auth] allow_weak_schemes`); MD5-crypt and DES crypt are refused always (no verifier).
//! Anything else is an unknown scheme, refused with its name.
//!
//! Verification is CPU work of milliseconds (argon2, bcrypt, scrypt): run it off the async
//! runtime, on a bounded pool (`smtp-server`'s `VerifyPool`) or a blocking thread.
//!
//! ```
//! use smtp_auth_hash::{Scheme, StoredHash};
//!
//! // SHA-256 of the password and a salt, then the salt: Dovecot's and OpenLDAP's {SSHA256}.
//! let h = StoredHash::parse("{SSHA256}+E+iFJ27Yu1ODPH1UNKUmzOmUT06dwfghQJRHHnMsO5zYWx0").unwrap();
//! assert_eq!(h.scheme(), Scheme::Ssha256);
//! assert!(h.verify("secret"));
//! assert!(!h.verify("Secret"));
//! // The hash never prints.
//! assert_eq!(format!("{h:?}"), "StoredHash { scheme: Ssha256, .. }");
//! // MD5-crypt has no verifier here: refused when read, not when a login comes.
//! assert!(StoredHash::parse("$1$saltsalt$x").is_err());
//! ```

#![forbid(unsafe_code)]

mod scram;
pub use scram::{format_scram, parse_scram};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use password_hash::{PasswordHash, PasswordVerifier};
use subtle::ConstantTimeEq;

/// How a stored hash is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// argon2id / argon2i / argon2d, a PHC string.
    Argon2,
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`).
    Bcrypt,
    /// SHA-512-crypt (`$6$`).
    Sha512Crypt,
    /// SHA-256-crypt (`$5$`).
    Sha256Crypt,
    /// PBKDF2 with SHA-256 or SHA-512, a PHC string.
    Pbkdf2,
    /// Dovecot's `{PBKDF2}` (HMAC-SHA1, hex).
    DovecotPbkdf2,
    /// scrypt, a PHC string.
    Scrypt,
    /// `{SSHA512}`: SHA-512 of password and salt, then the salt, base64.
    Ssha512,
    /// `{SSHA256}`.
    Ssha256,
    /// Weak: the password itself.
    Plain,
    /// Weak: hex MD5, unsalted.
    PlainMd5,
    /// Weak: base64 SHA-1, unsalted.
    Sha1,
    /// Weak: base64 SHA-256, unsalted.
    Sha256,
    /// Weak: base64 SHA-512, unsalted.
    Sha512,
}

impl Scheme {
    /// The scheme's name in messages (Dovecot's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Self::Argon2 => "ARGON2",
            Self::Bcrypt => "BLF-CRYPT",
            Self::Sha512Crypt => "SHA512-CRYPT",
            Self::Sha256Crypt => "SHA256-CRYPT",
            Self::Pbkdf2 => "PBKDF2 (PHC)",
            Self::DovecotPbkdf2 => "PBKDF2",
            Self::Scrypt => "SCRYPT",
            Self::Ssha512 => "SSHA512",
            Self::Ssha256 => "SSHA256",
            Self::Plain => "PLAIN",
            Self::PlainMd5 => "PLAIN-MD5",
            Self::Sha1 => "SHA",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    /// Unsalted or clear: a stolen file gives the passwords away.
    pub fn weak(self) -> bool {
        matches!(
            self,
            Self::Plain | Self::PlainMd5 | Self::Sha1 | Self::Sha256 | Self::Sha512
        )
    }
}

/// A stored password hash, recognised. `Debug` shows the scheme only.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash {
    scheme: Scheme,
    /// The hash without a Dovecot `{SCHEME}` prefix (the payload, for the salted SHA-2 and
    /// weak schemes).
    value: String,
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHash")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// The `$…$` crypt strings this module verifies.
fn crypt_scheme(s: &str) -> Result<Scheme, String> {
    let scheme = if s.starts_with("$argon2") {
        Scheme::Argon2
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
        Scheme::Bcrypt
    } else if s.starts_with("$6$") {
        Scheme::Sha512Crypt
    } else if s.starts_with("$5$") {
        Scheme::Sha256Crypt
    } else if s.starts_with("$pbkdf2-sha256$") || s.starts_with("$pbkdf2-sha512$") {
        Scheme::Pbkdf2
    } else if s.starts_with("$scrypt$") {
        Scheme::Scrypt
    } else if s.starts_with("$1$") {
        return Err("MD5-crypt ($1$) is not supported: rehash the password".into());
    } else if !s.starts_with('$') && s.len() == 13 {
        return Err("DES crypt is not supported: rehash the password".into());
    } else if !s.starts_with('$') {
        return Err(
            "not a password hash (a PHC or crypt string, or a {SCHEME} prefix, was expected)"
                .into(),
        );
    } else {
        let id = s.split('$').nth(1).unwrap_or(s);
        return Err(format!("unknown password scheme {id:?}"));
    };
    Ok(scheme)
}

/// Checks the form of a crypt string of `scheme` (cheaply: no hashing at load time).
fn check_form(scheme: Scheme, s: &str) -> Result<(), String> {
    let ok = match scheme {
        Scheme::Argon2 => {
            PasswordHash::new(s).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
        }
        Scheme::Pbkdf2 | Scheme::Scrypt => PasswordHash::new(s).is_ok(),
        Scheme::Bcrypt => {
            // $2y$NN$ + 22 salt + 31 hash characters.
            let cost = s.get(4..6).and_then(|c| c.parse::<u32>().ok());
            s.len() == 60
                && s.as_bytes().get(6) == Some(&b'$')
                && cost.is_some_and(|c| (4..=31).contains(&c))
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let want = if scheme == Scheme::Sha512Crypt {
                86
            } else {
                43
            };
            s.rsplit('$').next().is_some_and(|h| h.len() == want)
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("malformed {} hash", scheme.name()))
    }
}

impl StoredHash {
    /// Recognises a stored hash; the error names what is wrong (an unknown or unsupported
    /// scheme, a malformed hash). Weak schemes are recognised: the caller decides
    /// ([`Scheme::weak`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let hash = |scheme, value: &str| {
            check_form(scheme, value)?;
            Ok(Self {
                scheme,
                value: value.to_owned(),
            })
        };
        let Some(rest) = text.strip_prefix('{') else {
            return hash(crypt_scheme(text)?, text);
        };
        let Some((prefix, value)) = rest.split_once('}') else {
            return Err("a {SCHEME} prefix without its closing brace".into());
        };
        let named = |want: Scheme| -> Result<Self, String> {
            let found = crypt_scheme(value)?;
            if found != want {
                return Err(format!("{{{prefix}}} holds a {} hash", found.name()));
            }
            hash(want, value)
        };
        let payload = |scheme, digest_len: usize, salted: bool| -> Result<Self, String> {
            let bytes = match scheme {
                Scheme::Plain => {
                    return Ok(Self {
                        scheme,
                        value: value.to_owned(),
                    });
                }
                Scheme::PlainMd5 => decode_hex(value),
                _ => STANDARD.decode(value).ok(),
            };
            match bytes {
                Some(b) if b.len() == digest_len || (salted && b.len() > digest_len) => Ok(Self {
                    scheme,
                    value: value.to_owned(),
                }),
                _ => Err(format!("malformed {{{prefix}}} hash")),
            }
        };
        match prefix.to_ascii_uppercase().as_str() {
            "ARGON2ID" | "ARGON2I" => named(Scheme::Argon2),
            "BLF-CRYPT" => named(Scheme::Bcrypt),
            "SHA512-CRYPT" => named(Scheme::Sha512Crypt),
            "SHA256-CRYPT" => named(Scheme::Sha256Crypt),
            "CRYPT" => hash(crypt_scheme(value)?, value),
            "SSHA512" => payload(Scheme::Ssha512, 64, true),
            "SSHA256" => payload(Scheme::Ssha256, 32, true),
            "PBKDF2" => {
                let parts: Vec<&str> = value.split('$').collect();
                match parts.as_slice() {
                    ["", "1", salt, rounds, hex]
                        if !salt.is_empty()
                            && rounds.parse::<u32>().is_ok_and(|r| r > 0)
                            && decode_hex(hex).is_some_and(|h| h.len() == 20) =>
                    {
                        Ok(Self {
                            scheme: Scheme::DovecotPbkdf2,
                            value: value.to_owned(),
                        })
                    }
                    _ => Err("malformed {PBKDF2} hash ($1$salt$rounds$hex)".into()),
                }
            }
            "PLAIN" | "CLEAR" | "CLEARTEXT" => payload(Scheme::Plain, 0, false),
            "PLAIN-MD5" => payload(Scheme::PlainMd5, 16, false),
            "SHA" | "SHA1" => payload(Scheme::Sha1, 20, false),
            "SHA256" => payload(Scheme::Sha256, 32, false),
            "SHA512" => payload(Scheme::Sha512, 64, false),
            "MD5" | "MD5-CRYPT" | "SMD5" | "LDAP-MD5" | "DES" => Err(format!(
                "{{{prefix}}} is not supported: rehash the password"
            )),
            _ => Err(format!("unknown password scheme {{{prefix}}}")),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The hash as the crypt or PHC string a verifier takes (without a `{SCHEME}` prefix).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Verifies `password` in constant time (blocking: the strong schemes are slow on
    /// purpose; run it on the verify pool).
    pub fn verify(&self, password: &str) -> bool {
        let v = self.value.as_str();
        let pw = password.as_bytes();
        match self.scheme {
            Scheme::Argon2 => verify_argon2(pw, v),
            Scheme::Bcrypt => bcrypt::verify(pw, v).unwrap_or(false),
            Scheme::Sha512Crypt => sha_crypt::sha512_check(password, v).is_ok(),
            Scheme::Sha256Crypt => sha_crypt::sha256_check(password, v).is_ok(),
            Scheme::Pbkdf2 => {
                PasswordHash::new(v).is_ok_and(|h| pbkdf2::Pbkdf2.verify_password(pw, &h).is_ok())
            }
            Scheme::Scrypt => {
                PasswordHash::new(v).is_ok_and(|h| scrypt::Scrypt.verify_password(pw, &h).is_ok())
            }
            Scheme::DovecotPbkdf2 => {
                let parts: Vec<&str> = v.split('$').collect();
                let (Some(salt), Some(rounds), Some(want)) = (
                    parts.get(2),
                    parts.get(3).and_then(|r| r.parse().ok()),
                    parts.get(4).and_then(|h| decode_hex(h)),
                ) else {
                    return false;
                };
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pw, salt.as_bytes(), rounds, &mut out);
                out.ct_eq(&want).into()
            }
            Scheme::Ssha512 => salted::<sha2::Sha512>(pw, v, 64),
            Scheme::Ssha256 => salted::<sha2::Sha256>(pw, v, 32),
            Scheme::Plain => pw.ct_eq(v.as_bytes()).into(),
            Scheme::PlainMd5 => decode_hex(v).is_some_and(|want| {
                use md5::Digest as _;
                md5::Md5::digest(pw).as_slice().ct_eq(&want).into()
            }),
            Scheme::Sha1 => unsalted::<sha1::Sha1>(pw, v),
            Scheme::Sha256 => unsalted::<sha2::Sha256>(pw, v),
            Scheme::Sha512 => unsalted::<sha2::Sha512>(pw, v),
        }
    }
}

thread_local! {
    /// The argon2 working memory of this thread, kept between verifications: a worker
    /// allocates it once, so hashing memory stays at workers × the hash's memory (a fresh
    /// 19 MiB allocation per login is what glibc keeps after free, per thread arena).
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies `password` against an argon2 PHC string, in constant time, reusing this thread's
/// working memory.
fn verify_argon2(password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(params), Ok(algorithm), Some(salt), Some(expected)) = (
        argon2::Params::try_from(&hash),
        argon2::Algorithm::try_from(hash.algorithm),
        hash.salt,
        hash.hash,
    ) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from) {
        None => argon2::Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    let argon = argon2::Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() != blocks {
            *b = Vec::new();
            b.resize(blocks, argon2::Block::default());
        }
        argon
            .hash_password_into_with_memory(password, salt, &mut out, &mut b[..])
            .is_ok()
    });
    // `Output` compares in constant time.
    let ok = hashed && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected);
    out.fill(0);
    ok
}

/// `{SSHA…}`: base64 of digest(password ‖ salt) ‖ salt.
fn salted<D: sha2::Digest>(pw: &[u8], value: &str, len: usize) -> bool {
    let Ok(stored) = STANDARD.decode(value) else {
        return false;
    };
    let Some((want, salt)) = stored.split_at_checked(len) else {
        return false;
    };
    let got = D::new().chain_update(pw).chain_update(salt).finalize();
    got.as_slice().ct_eq(want).into()
}

/// Unsalted base64 digests (weak).
fn unsalted<D: sha2::Digest>(pw: &[u8], value: &str) -> bool {
    STANDARD
        .decode(value)
        .is_ok_and(|want| D::digest(pw).as_slice().ct_eq(&want).into())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use password_hash::{PasswordHasher, SaltString};

    fn check(stored: &str, password: &str, scheme: Scheme) {
        let h = StoredHash::parse(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
        assert_eq!(h.scheme(), scheme, "{stored}");
        assert!(h.verify(password), "{stored}: the right password");
        assert!(!h.verify("wrong"), "{stored}: a wrong password");
        assert!(!h.verify(""), "{stored}: an empty password");
        assert!(
            !format!("{h:?}").contains(h.value()),
            "Debug shows the scheme only"
        );
    }

    #[test]
    fn hashes_written_by_other_implementations_verify() {
        // libxcrypt (Python's crypt module, OpenSSL's `passwd`) for "pw".
        check(
            "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/",
            "pw",
            Scheme::Sha512Crypt,
        );
        check(
            "{SHA256-CRYPT}$5$saltsalt$0rl.MZtoLLPP3X0Rdl8riRnphIcAXJY27/aOAyK2hB5",
            "pw",
            Scheme::Sha256Crypt,
        );
        check(
            "$2b$05$aaaaaaaaaaaaaaaaaaaaaOscpG3LiIv8VbJ.Xo.NYfhRB9T5lwoHC",
            "pw",
            Scheme::Bcrypt,
        );
        check(
            "{CRYPT}$2b$05$aaaaaaaaaaaaaaaaaaaaaOscpG3LiIv8VbJ.Xo.NYfhRB9T5lwoHC",
            "pw",
            Scheme::Bcrypt,
        );
    }

    #[test]
    fn hashes_made_here_verify_in_every_scheme() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let pbkdf2 = pbkdf2::Pbkdf2
            .hash_password_customized(
                b"s3cret",
                Some(pbkdf2::Algorithm::Pbkdf2Sha512.ident()),
                None,
                pbkdf2::Params {
                    rounds: 1000,
                    output_length: 64,
                },
                &salt,
            )
            .unwrap()
            .to_string();
        check(&pbkdf2, "s3cret", Scheme::Pbkdf2);
        let scrypt = scrypt::Scrypt
            .hash_password_customized(
                b"s3cret",
                None,
                None,
                scrypt::Params::new(4, 8, 1, 32).unwrap(),
                &salt,
            )
            .unwrap()
            .to_string();
        check(&scrypt, "s3cret", Scheme::Scrypt);
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(
            b"s3cret",
            &SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap(),
        )
        .unwrap()
        .to_string();
        check(&argon, "s3cret", Scheme::Argon2);
        check(&format!("{{ARGON2ID}}{argon}"), "s3cret", Scheme::Argon2);
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        check(&format!("{{BLF-CRYPT}}{bcrypt}"), "s3cret", Scheme::Bcrypt);
        // Salted SHA-2: digest(password ‖ salt) ‖ salt.
        use sha2::Digest as _;
        let salted = |digest: Vec<u8>| STANDARD.encode([digest, b"NaCl".to_vec()].concat());
        let d = sha2::Sha512::new()
            .chain_update(b"s3cret")
            .chain_update(b"NaCl")
            .finalize()
            .to_vec();
        check(
            &format!("{{SSHA512}}{}", salted(d)),
            "s3cret",
            Scheme::Ssha512,
        );
        let d = sha2::Sha256::new()
            .chain_update(b"s3cret")
            .chain_update(b"NaCl")
            .finalize()
            .to_vec();
        check(
            &format!("{{SSHA256}}{}", salted(d)),
            "s3cret",
            Scheme::Ssha256,
        );
        // Dovecot's PBKDF2: HMAC-SHA1 over the salt text, hex.
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(b"s3cret", b"saltsalt", 1000, &mut out);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        check(
            &format!("{{PBKDF2}}$1$saltsalt$1000${hex}"),
            "s3cret",
            Scheme::DovecotPbkdf2,
        );
    }

    #[test]
    fn weak_schemes_are_recognised_as_weak() {
        use sha2::Digest as _;
        for (stored, scheme) in [
            ("{PLAIN}s3cret".to_owned(), Scheme::Plain),
            ("{CLEAR}s3cret".to_owned(), Scheme::Plain),
            (
                format!("{{SHA}}{}", STANDARD.encode(sha1::Sha1::digest(b"s3cret"))),
                Scheme::Sha1,
            ),
            (
                format!(
                    "{{SHA256}}{}",
                    STANDARD.encode(sha2::Sha256::digest(b"s3cret"))
                ),
                Scheme::Sha256,
            ),
            (
                format!(
                    "{{SHA512}}{}",
                    STANDARD.encode(sha2::Sha512::digest(b"s3cret"))
                ),
                Scheme::Sha512,
            ),
            (
                format!(
                    "{{PLAIN-MD5}}{}",
                    md5::Md5::digest(b"s3cret")
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
                Scheme::PlainMd5,
            ),
        ] {
            check(&stored, "s3cret", scheme);
            assert!(scheme.weak(), "{stored}");
        }
        assert!(!Scheme::Bcrypt.weak() && !Scheme::Ssha512.weak());
    }

    #[test]
    fn unknown_unsupported_and_malformed_hashes_are_named() {
        let err = |s: &str| StoredHash::parse(s).unwrap_err();
        assert_eq!(err("$7$abc$def"), "unknown password scheme \"7\"");
        assert_eq!(err("{NOPE}xyz"), "unknown password scheme {NOPE}");
        assert!(err("$1$salt$hash").starts_with("MD5-crypt ($1$) is not supported"));
        assert!(err("abJnggxhB/yWI").starts_with("DES crypt is not supported"));
        assert!(err("{MD5-CRYPT}$1$x$y").contains("not supported"));
        assert_eq!(err("$2b$05$short"), "malformed BLF-CRYPT hash");
        assert_eq!(err("$6$salt$tooshort"), "malformed SHA512-CRYPT hash");
        assert_eq!(
            err("{SHA512-CRYPT}$5$saltsalt$0rl.MZtoLLPP3X0Rdl8riRnphIcAXJY27/aOAyK2hB5"),
            "{SHA512-CRYPT} holds a SHA256-CRYPT hash"
        );
        assert_eq!(err("{SSHA512}AAAA"), "malformed {SSHA512} hash");
        assert!(err("{PBKDF2}$1$salt$0$00").starts_with("malformed {PBKDF2}"));
        assert_eq!(
            err("{SSHA512"),
            "a {SCHEME} prefix without its closing brace"
        );
    }
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
