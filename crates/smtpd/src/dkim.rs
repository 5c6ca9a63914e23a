//! DKIM signing (RFC 6376; ed25519-sha256 from RFC 8463) of authenticated submissions, with
//! Stalwart's `mail-auth` for the canonicalisation, the hashes and the signatures.
//!
//! - Keys per sender domain (`[[dkim]]`: `domain`, `selector`, `key`), rsa-sha256 (2048 bits
//!   and up) and ed25519-sha256, one or both per domain; the domain of the message's `From:`
//!   picks them (its own keys, else those of the nearest parent domain configured, which
//!   DMARC's relaxed alignment accepts). A message whose `From:` names no configured domain is
//!   sent unsigned.
//! - `relaxed/relaxed`. The signed header fields follow RFC 6376 §5.4.1 (every instance
//!   present), with `From` signed once more than it occurs, so a second `From:` added later
//!   breaks the signature.
//! - The body hash is computed while the body arrives ([`BodyHash`], a
//!   [`smtp_server::BodyObserver`]): the body is never read again, never held whole. Signing
//!   at the end of DATA reads only the header section (at most
//!   [`crate::submission::MAX_HEAD`] octets) and covers the fields we add (`Date:`,
//!   `Message-ID:`) as delivered.
//! - Keys reload on SIGHUP ([`Dkim::reload`]); a key that does not load keeps the old set.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use mail_auth::common::crypto::{
    Algorithm, Ed25519Key, HashContext, HashImpl, RsaKey, Sha256, SigningKey,
};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use mail_auth::dkim::canonicalize::{BodyHasher, CanonicalHeaders};
use mail_auth::dkim::{Canonicalization, Signature};
use serde::Deserialize;

/// `[[dkim]]`: one signing key of one domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSection {
    /// The signing domain (`d=`): messages whose `From:` is in it (or below it) are signed.
    pub domain: String,
    /// The selector (`s=`): the key's DNS record is `<selector>._domainkey.<domain>` TXT.
    pub selector: String,
    /// The private key, PEM: RSA (PKCS#1 or PKCS#8, 2048 bits and up) or Ed25519 (PKCS#8).
    pub key: PathBuf,
}

/// The header fields signed when present (RFC 6376 §5.4.1), every instance of each.
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "Sender",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// A loaded private key.
enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl Key {
    fn algorithm(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "rsa-sha256",
            Self::Ed25519(_) => "ed25519-sha256",
        }
    }

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            Self::Rsa(k) => k.sign(input),
            Self::Ed25519(k) => k.sign(input),
        }
    }

    fn mail_auth_algorithm(&self) -> Algorithm {
        match self {
            Self::Rsa(k) => k.algorithm(),
            Self::Ed25519(k) => k.algorithm(),
        }
    }
}

/// One domain's key under one selector. `Debug` shows no key material.
struct DomainKey {
    domain: String,
    selector: String,
    key: Key,
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.key.algorithm())
            .finish_non_exhaustive()
    }
}

/// The smallest RSA key signed with (RFC 8301 §3.2).
pub const MIN_RSA_BITS: usize = 2048;

/// Reads a PEM private key: RSA (PKCS#1 `RSA PRIVATE KEY` or PKCS#8) of at least
/// [`MIN_RSA_BITS`], or Ed25519 (PKCS#8). Errors name the file, never its contents.
fn load_key(path: &Path) -> Result<Key, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let der = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{shown}: not a PEM private key ({e})"))?;
    let rsa_bits = |bits: usize| {
        if bits < MIN_RSA_BITS {
            Err(format!(
                "{shown}: RSA key of {bits} bits; DKIM keys need at least {MIN_RSA_BITS} (RFC 8301)"
            ))
        } else {
            Ok(())
        }
    };
    match &der {
        PrivateKeyDer::Pkcs1(k) => {
            let parsed = rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                .map_err(|e| format!("{shown}: RSA key: {e}"))?;
            rsa_bits(parsed.size() * 8)?;
        }
        PrivateKeyDer::Pkcs8(k) => {
            if let Ok(parsed) = rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der()) {
                rsa_bits(parsed.size() * 8)?;
            } else {
                return Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                    .map(Key::Ed25519)
                    .map_err(|e| format!("{shown}: neither an RSA nor an Ed25519 key ({e})"));
            }
        }
        _ => {
            return Err(format!(
                "{shown}: an EC key; DKIM signs with RSA or Ed25519"
            ));
        }
    }
    RsaKey::<Sha256>::from_key_der(der)
        .map(Key::Rsa)
        .map_err(|e| format!("{shown}: RSA key: {e}"))
}

/// Checks a domain or selector: dot-separated labels of letters, digits and hyphens.
fn dns_name(what: &str, s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{what} {s:?} is not a DNS name"))
    }
}

/// The keys of every `[[dkim]]` section, loaded.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<DomainKey>,
}

impl KeySet {
    /// Loads every section's key; the error names the section (`dkim[i]`) and the problem.
    pub fn load(sections: &[DkimSection]) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(sections.len());
        for (i, s) in sections.iter().enumerate() {
            let at = |e: String| format!("dkim[{i}]: {e}");
            let domain = dns_name("domain", &s.domain).map_err(at)?;
            let selector = dns_name("selector", &s.selector).map_err(at)?;
            let key = load_key(&s.key).map_err(|e| format!("dkim[{i}].key {e}"))?;
            if keys
                .iter()
                .any(|k: &DomainKey| k.domain == domain && k.selector == selector)
            {
                return Err(at(format!("selector {selector} of {domain} given twice")));
            }
            keys.push(DomainKey {
                domain,
                selector,
                key,
            });
        }
        Ok(Self { keys })
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys for mail from `domain`: its own, else those of its nearest configured parent.
    fn for_domain(&self, domain: &str) -> Vec<&DomainKey> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut d = domain.as_str();
        loop {
            let found: Vec<&DomainKey> = self.keys.iter().filter(|k| k.domain == d).collect();
            if !found.is_empty() {
                return found;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return Vec::new(),
            }
        }
    }
}

/// The signer: the key set in force, replaced whole on reload.
#[derive(Debug)]
pub struct Dkim {
    sections: Vec<DkimSection>,
    keys: RwLock<Arc<KeySet>>,
}

impl Dkim {
    /// Loads the keys of `sections`.
    pub fn new(sections: Vec<DkimSection>) -> Result<Self, String> {
        let keys = KeySet::load(&sections)?;
        Ok(Self {
            sections,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    /// The key set in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Reads every key file again (SIGHUP): on success the new set is in force for the
    /// messages that follow and its size is returned; on failure the old set stays.
    pub fn reload(&self) -> Result<usize, String> {
        let fresh = KeySet::load(&self.sections)?;
        let n = fresh.len();
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(fresh),
            Err(e) => *e.into_inner() = Arc::new(fresh),
        }
        Ok(n)
    }
}

/// The SHA-256 context behind a buffer: `mail-auth`'s canonicaliser writes an octet at a
/// time, and the digest takes them 8 KiB at a time (three times fewer CPU cycles per body
/// octet than feeding the digest directly, `cargo xtask bench --dkim`).
struct Buffered {
    ctx: <Sha256 as HashImpl>::Context,
    buf: Vec<u8>,
}

impl Writer for Buffered {
    #[inline]
    fn write(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 8192 {
            self.ctx.write(&self.buf);
            self.buf.clear();
        }
    }
}

impl HashContext for Buffered {
    fn complete(mut self) -> mail_auth::common::crypto::HashOutput {
        self.ctx.write(&self.buf);
        self.ctx.complete()
    }
}

/// The relaxed body hash (SHA-256) of a message, computed while it arrives: the octets after
/// the header section's empty line go through `mail-auth`'s incremental canonicaliser.
pub struct BodyHash {
    /// How much of `\r\n\r\n` was just seen (starts at 2: a message that opens with an empty
    /// line has an empty header section).
    matched: u8,
    /// Past the header section.
    in_body: bool,
    hasher: Option<BodyHasher<Buffered>>,
    /// The finished hash.
    hash: Option<Vec<u8>>,
}

impl std::fmt::Debug for BodyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyHash")
            .field("in_body", &self.in_body)
            .field("finished", &self.hash.is_some())
            .finish()
    }
}

impl Default for BodyHash {
    fn default() -> Self {
        Self {
            matched: 2,
            in_body: false,
            hasher: Some(BodyHasher::new(
                Buffered {
                    ctx: <Sha256 as HashImpl>::hasher(),
                    buf: Vec::with_capacity(8192 + 64),
                },
                Canonicalization::Relaxed,
                0,
            )),
            hash: None,
        }
    }
}

impl BodyHash {
    /// The finished hash (after [`smtp_server::BodyObserver::finish`]).
    pub fn hash(&self) -> Option<&[u8]> {
        self.hash.as_deref()
    }
}

impl smtp_server::BodyObserver for BodyHash {
    fn update(&mut self, mut chunk: &[u8]) {
        if !self.in_body {
            const END: &[u8; 4] = b"\r\n\r\n";
            let mut at = None;
            for (i, &b) in chunk.iter().enumerate() {
                self.matched = if b == END[self.matched as usize] {
                    self.matched + 1
                } else if b == b'\r' {
                    1
                } else {
                    0
                };
                if self.matched == 4 {
                    at = Some(i + 1);
                    break;
                }
            }
            let Some(at) = at else { return };
            self.in_body = true;
            chunk = &chunk[at..];
        }
        if let Some(h) = self.hasher.as_mut() {
            h.write(chunk);
        }
    }

    fn finish(&mut self) {
        if let Some(h) = self.hasher.take() {
            let (buffered, _len) = h.finish();
            self.hash = Some(buffered.complete().as_ref().to_vec());
        }
    }
}

/// What is signed: the canonical header fields, then the signature field without `b=`.
struct Signable<'a> {
    headers: CanonicalHeaders<'a>,
    signature: &'a Signature,
}

impl Writable for Signable<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

/// Why a message was not signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsigned {
    /// No key for the `From:` domain (or no `From:` address): nothing to sign with.
    NoKey,
    /// The header section did not end within the octets read.
    HeaderTooLong,
    /// The body hash was not computed (the body did not pass the observer).
    NoBodyHash,
    /// The key refused to sign.
    Failed(String),
}

impl Unsigned {
    /// The reason as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoKey => "no_key",
            Self::HeaderTooLong => "header_too_long",
            Self::NoBodyHash | Self::Failed(_) => "failed",
        }
    }
}

/// The domain of the (first) `From:` address of a header section.
fn from_domain(section: &[u8]) -> Option<String> {
    let message = mail_parser::MessageParser::new().parse_headers(section)?;
    let from = message.from()?.first()?.address()?;
    let (_, domain) = from.rsplit_once('@')?;
    Some(domain.to_owned())
}

/// The `DKIM-Signature:` fields (one per key of the domain, each ending with CRLF) for a
/// message whose header section starts `head` (`whole`: `head` is the whole message), with
/// `added` (`Date:`/`Message-ID:` fields we put in front of it) and the body hash `bh`.
pub fn sign(
    keys: &KeySet,
    added: &str,
    head: &[u8],
    whole: bool,
    bh: Option<&[u8]>,
    now: u64,
) -> Result<String, Unsigned> {
    let section = crate::submission::header_section(head, whole).ok_or(Unsigned::HeaderTooLong)?;
    let domain = from_domain(section).ok_or(Unsigned::NoKey)?;
    let chosen = keys.for_domain(&domain);
    if chosen.is_empty() {
        return Err(Unsigned::NoKey);
    }
    let bh = bh.ok_or(Unsigned::NoBodyHash)?;
    let mut fields = Vec::with_capacity(added.len() + section.len() + 2);
    fields.extend_from_slice(added.as_bytes());
    fields.extend_from_slice(section);
    fields.extend_from_slice(b"\r\n");
    // Every instance of a signed field, top down; h= lists them bottom up (a verifier takes
    // each name's instances from the bottom), then From once more (RFC 6376 §8.15).
    let headers: Vec<(&[u8], &[u8])> = crate::submission::fields(&fields)
        .filter(|(name, _)| {
            SIGNED
                .iter()
                .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
        })
        .collect();
    let mut h: Vec<String> = headers
        .iter()
        .rev()
        .map(|(name, _)| String::from_utf8_lossy(name).trim().to_owned())
        .collect();
    h.push("From".to_owned());
    let bh = base64::engine::general_purpose::STANDARD
        .encode(bh)
        .into_bytes();
    let mut out = String::new();
    for k in chosen {
        let mut signature = Signature {
            v: 1,
            a: k.key.mail_auth_algorithm(),
            d: k.domain.clone(),
            s: k.selector.clone(),
            bh: bh.clone(),
            h: h.clone(),
            t: now,
            ch: Canonicalization::Relaxed,
            cb: Canonicalization::Relaxed,
            ..Signature::default()
        };
        let b = k
            .key
            .sign(Signable {
                headers: Canonicalization::Relaxed.canonical_headers(headers.clone()),
                signature: &signature,
            })
            .map_err(|e| Unsigned::Failed(e.to_string()))?;
        signature.b = base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes();
        out.push_str(&signature.to_header());
    }
    Ok(out)
}

/// What `smtpd dkim-keygen` made: the private key (PEM) and the DNS TXT record's value.
/// `Debug` shows the record only.
pub struct Generated {
    /// The private key, PEM (PKCS#8).
    pub pem: String,
    /// `v=DKIM1; k=…; p=…`
    pub txt: String,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("pem", &"<redacted>")
            .field("txt", &self.txt)
            .finish()
    }
}

/// Makes a key: `rsa` (of `bits`, at least [`MIN_RSA_BITS`]) or `ed25519`.
pub fn generate(algorithm: &str, bits: usize) -> Result<Generated, String> {
    use mail_auth::dkim::generate::DkimKeyPair;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    match algorithm {
        "rsa" => {
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "--bits {bits}: DKIM keys need at least {MIN_RSA_BITS} (RFC 8301)"
                ));
            }
            let pair = DkimKeyPair::generate_rsa(bits).map_err(|e| e.to_string())?;
            let key = rsa::RsaPrivateKey::from_pkcs1_der(pair.private_key())
                .map_err(|e| e.to_string())?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string();
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            Ok(Generated {
                pem,
                txt: format!("v=DKIM1; k=rsa; p={}", b64(spki.as_bytes())),
            })
        }
        "ed25519" => {
            let pair = DkimKeyPair::generate_ed25519().map_err(|e| e.to_string())?;
            let pem = pem_block("PRIVATE KEY", pair.private_key());
            Ok(Generated {
                pem,
                txt: format!("v=DKIM1; k=ed25519; p={}", b64(pair.public_key())),
            })
        }
        other => Err(format!(
            "--algorithm {other}: `rsa` (rsa-sha256) or `ed25519` (ed25519-sha256)"
        )),
    }
}

/// A PEM block of `der`.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DNS TXT record value split into quoted strings of at most 255 octets (RFC 7208 §3.3's
/// rule for long TXT records, which zone files need).
pub fn txt_strings(txt: &str) -> String {
    txt.as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp_server::BodyObserver;

    fn hash_of(pieces: &[&[u8]]) -> Vec<u8> {
        let mut h = BodyHash::default();
        for p in pieces {
            h.update(p);
        }
        h.finish();
        h.hash().unwrap().to_vec()
    }

    #[test]
    fn the_body_hash_starts_after_the_empty_line_wherever_the_pieces_are_cut() {
        let whole: &[u8] = b"Subject: x\r\nFrom: a@b.example\r\n\r\nHello  world \r\n\r\n\r\n";
        let one = hash_of(&[whole]);
        for cut in 1..whole.len() {
            assert_eq!(
                hash_of(&[&whole[..cut], &whole[cut..]]),
                one,
                "cut at {cut}"
            );
        }
        // Relaxed: trailing white space and empty lines at the end do not count, the header
        // section does not count at all.
        assert_eq!(hash_of(&[b"Subject: other\r\n\r\nHello world\r\n"]), one);
        assert_ne!(hash_of(&[b"Subject: x\r\n\r\nHello world!\r\n"]), one);
        // RFC 6376 §3.4.4: an empty body hashes as the empty string under relaxed.
        let empty = hash_of(&[b"Subject: x\r\n\r\n"]);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(empty),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        // A message that opens with the empty line has an empty header section.
        assert_eq!(hash_of(&[b"\r\nHello world\r\n"]), one);
        // A body already canonical hashes as itself, across many buffer flushes and pieces.
        let body = "a line of the body, already canonical\r\n".repeat(2_000);
        let message = format!("Subject: big\r\n\r\n{body}");
        let pieces: Vec<&[u8]> = message.as_bytes().chunks(1_000).collect();
        use sha2::Digest as _;
        assert_eq!(
            hash_of(&pieces),
            sha2::Sha256::digest(body.as_bytes()).to_vec()
        );
    }

    #[test]
    fn keys_are_chosen_by_the_from_domain_or_its_nearest_parent() {
        let dir = std::env::temp_dir().join(format!("smtpd-dkim-{}", crate::delivery::queue_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = generate("ed25519", 0).unwrap();
        let key = dir.join("ed.pem");
        std::fs::write(&key, &g.pem).unwrap();
        let section = |domain: &str, selector: &str| DkimSection {
            domain: domain.into(),
            selector: selector.into(),
            key: key.clone(),
        };
        let set = KeySet::load(&[
            section("Example.org", "a"),
            section("mail.example.org", "b"),
        ])
        .unwrap();
        let sel = |d: &str| -> Vec<String> {
            set.for_domain(d)
                .iter()
                .map(|k| k.selector.clone())
                .collect()
        };
        assert_eq!(sel("example.org"), ["a"]);
        assert_eq!(sel("EXAMPLE.ORG."), ["a"]);
        assert_eq!(sel("mail.example.org"), ["b"]);
        assert_eq!(sel("eu.mail.example.org"), ["b"]);
        assert_eq!(sel("other.example.org"), ["a"]);
        assert!(sel("example.net").is_empty());
        assert!(sel("org").is_empty());
        // Twice the same selector, a bad name and a small RSA key are refused, naming them.
        let e = KeySet::load(&[section("example.org", "a"), section("example.org", "a")]);
        assert_eq!(
            e.unwrap_err(),
            "dkim[1]: selector a of example.org given twice"
        );
        let e = KeySet::load(&[section("exa mple.org", "a")]).unwrap_err();
        assert_eq!(e, "dkim[0]: domain \"exa mple.org\" is not a DNS name");
        let small = dir.join("small.pem");
        {
            let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(1024).unwrap();
            std::fs::write(&small, pem_block("RSA PRIVATE KEY", pair.private_key())).unwrap();
        }
        let e = KeySet::load(&[DkimSection {
            domain: "example.org".into(),
            selector: "s".into(),
            key: small.clone(),
        }])
        .unwrap_err();
        assert!(e.contains("RSA key of 1024 bits"), "{e}");
        assert!(e.starts_with("dkim[0].key "), "{e}");
        assert!(!e.contains("BEGIN"), "no key material in errors: {e}");
        // No key material in Debug output, of the loaded keys or of a generated one.
        let secret_line = g.pem.lines().nth(1).unwrap();
        assert!(secret_line.len() > 20);
        let shown = format!("{set:?} {g:?}");
        assert!(!shown.contains(secret_line), "{shown}");
        assert!(shown.contains("ed25519-sha256"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn what_is_not_signed_says_why() {
        let dir =
            std::env::temp_dir().join(format!("smtpd-dkim-why-{}", crate::delivery::queue_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.pem");
        std::fs::write(&key, generate("ed25519", 0).unwrap().pem).unwrap();
        let set = KeySet::load(&[DkimSection {
            domain: "example.org".into(),
            selector: "s".into(),
            key,
        }])
        .unwrap();
        let bh = [0u8; 32];
        let sign = |head: &[u8], whole: bool, bh: Option<&[u8]>| sign(&set, "", head, whole, bh, 1);
        let ok = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n";
        let signed = sign(ok, true, Some(&bh)).unwrap();
        assert!(
            signed.starts_with(
                "DKIM-Signature: v=1; a=ed25519-sha256; s=s; d=example.org; c=relaxed/relaxed;"
            ),
            "{signed}"
        );
        assert!(signed.ends_with(";\r\n"), "{signed}");
        assert_eq!(
            sign(b"From: a@example.net\r\n\r\nx", true, Some(&bh)),
            Err(Unsigned::NoKey)
        );
        assert_eq!(
            sign(b"Subject: no from\r\n\r\nx", true, Some(&bh)),
            Err(Unsigned::NoKey)
        );
        assert_eq!(
            sign(b"From: a@example.org\r\nX-Long: aaa", false, Some(&bh)),
            Err(Unsigned::HeaderTooLong)
        );
        assert_eq!(sign(ok, true, None), Err(Unsigned::NoBodyHash));
        assert_eq!(Unsigned::HeaderTooLong.label(), "header_too_long");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn txt_records_are_split_into_strings_of_255() {
        let long = "p".repeat(600);
        let s = txt_strings(&long);
        assert_eq!(s.matches('"').count(), 6);
        assert!(s.starts_with(&format!("\"{}\" \"", "p".repeat(255))));
    }
}
