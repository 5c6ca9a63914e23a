//! JWT signatures checked with `ring` (the `ring` feature, on by default).
//!
//! `jsonwebtoken` checks signatures through a process-wide `CryptoProvider`. Its RustCrypto
//! one verifies an RS256 signature in about 0.2 ms on the machines we measure on, which at 100
//! concurrent token logins on 2 cores queues logins behind each other; `ring`, the crate the
//! workspace already builds for TLS, verifies the same signature about eight times faster.
//! This provider verifies RS256, ES256 and EdDSA (the algorithms [`crate::OAuthProvider`]
//! accepts) with `ring`'s verification algorithms, and leaves everything else (signing, the
//! HMAC family, JWK helpers) to `jsonwebtoken`'s RustCrypto provider. No signature code is
//! written here: each check is one call of `ring::signature`.

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: verifier,
    jwk_utils: rust_crypto::DEFAULT_PROVIDER.jwk_utils.clone(),
});

/// Makes `ring` check JWT signatures in this process, unless a `jsonwebtoken` provider is
/// already in place (one the application installed, or the RustCrypto default that any earlier
/// `jsonwebtoken` signature or verification settled on). Returns whether `ring` checks them.
pub(crate) fn install() -> bool {
    match PROVIDER.install_default() {
        Ok(()) => true,
        Err(current) => std::ptr::eq(current, &*PROVIDER),
    }
}

/// How a verifier checks: RSA keys come as DER or as modulus and exponent (a JWK), the others
/// as the raw public key (an uncompressed P-256 point, an Ed25519 key).
#[derive(Clone, Copy)]
enum Check {
    Rsa(&'static RsaParameters),
    Raw(&'static dyn signature::VerificationAlgorithm),
}

struct RingVerifier {
    algorithm: Algorithm,
    check: Check,
    key: DecodingKeyKind,
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let (family, check) = match algorithm {
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::ES256 => (
            AlgorithmFamily::Ec,
            Check::Raw(&signature::ECDSA_P256_SHA256_FIXED),
        ),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, Check::Raw(&signature::ED25519)),
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        check,
        key: key.kind().clone(),
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), Error> {
        let checked = match (self.check, &self.key) {
            (Check::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(params, msg, sig)
            }
            (Check::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(params, der).verify(msg, sig)
            }
            (Check::Raw(alg), DecodingKeyKind::SecretOrDer(raw)) => {
                UnparsedPublicKey::new(alg, raw).verify(msg, sig)
            }
            (Check::Raw(_), DecodingKeyKind::RsaModulusExponent { .. }) => {
                return Err(Error::new());
            }
        };
        checked.map_err(|_| Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use std::process::{Command, Stdio};

    /// Signs `msg` with RustCrypto (jsonwebtoken's own signer) and checks it with ring.
    fn round_trip(algorithm: Algorithm, signing: &EncodingKey, public: &DecodingKey) {
        let signer = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&algorithm, signing).unwrap();
        let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
        let sig = signer.try_sign(msg).unwrap();
        let ring = verifier(&algorithm, public).unwrap();
        assert!(
            ring.verify(msg, &sig).is_ok(),
            "{algorithm:?} good signature"
        );
        let mut bad = sig.clone();
        bad[7] ^= 1;
        assert!(
            ring.verify(msg, &bad).is_err(),
            "{algorithm:?} altered signature"
        );
        assert!(
            ring.verify(b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ", &sig)
                .is_err(),
            "{algorithm:?} other message"
        );
    }

    #[test]
    fn ring_checks_what_rustcrypto_signs_and_refuses_any_change() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        round_trip(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(&ec.serialize_der()),
            &DecodingKey::from_ec_der(ec.public_key_raw()),
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        round_trip(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(&ed.serialize_der()),
            &DecodingKey::from_ed_der(ed.public_key_raw()),
        );
    }

    #[test]
    fn a_key_of_another_family_is_refused_before_any_check() {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let key = DecodingKey::from_ed_der(ed.public_key_raw());
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let err = verifier(&alg, &key).err().expect("refused");
            assert_eq!(*err.kind(), ErrorKind::InvalidKeyFormat, "{alg:?}");
        }
        // HMAC is not ours: RustCrypto's provider answers it.
        let hs = verifier(&Algorithm::HS256, &DecodingKey::from_secret(b"k")).unwrap();
        assert_eq!(hs.algorithm(), Algorithm::HS256);
    }

    /// An RSA key made by the openssl command line: the private and the public key, each as
    /// PKCS#1 DER. (A JWK's modulus and exponent reach the same verifier through
    /// `tests/tokens.rs`, whose RS256 keys are published that way.)
    fn openssl_rsa() -> (Vec<u8>, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("ring-jwt-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ]);
        run(&[
            "rsa",
            "-in",
            "key.pem",
            "-traditional",
            "-outform",
            "DER",
            "-out",
            "key.der",
        ]);
        run(&[
            "rsa",
            "-in",
            "key.pem",
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            "pub.der",
        ]);
        let keys = (
            std::fs::read(dir.join("key.der")).unwrap(),
            std::fs::read(dir.join("pub.der")).unwrap(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        keys
    }

    #[test]
    fn rs256_with_a_der_public_key() {
        let (private, public) = openssl_rsa();
        round_trip(
            Algorithm::RS256,
            &EncodingKey::from_rsa_der(&private),
            &DecodingKey::from_rsa_der(&public),
        );
    }
}
