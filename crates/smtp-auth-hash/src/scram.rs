//! SCRAM-SHA-256 keys as stores keep them, so a store that holds them can serve SCRAM without
//! the password: `$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>` (smtpd's users
//! file, `smtpd hash-password --scram`) and Dovecot's `{SCRAM-SHA-256}<iterations>,<salt>,
//! <StoredKey>,<ServerKey>` (`doveadm pw -s SCRAM-SHA-256`), each value base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use smtp_auth::{ScramKeys, Secret};

/// Reads SCRAM-SHA-256 keys in either form; `None` for anything else or malformed keys
/// (keys of 32 octets, a salt, at least one iteration).
pub fn parse_scram(field: &str) -> Option<ScramKeys> {
    let parts: Vec<&str> = if let Some(rest) = field.strip_prefix("$scram-sha-256$") {
        rest.split('$').collect()
    } else {
        field.strip_prefix("{SCRAM-SHA-256}")?.split(',').collect()
    };
    let [i, salt, stored, server] = parts[..] else {
        return None;
    };
    let iterations: u32 = i.parse().ok().filter(|i| *i >= 1)?;
    let (salt, stored, server) = (
        STANDARD.decode(salt).ok()?,
        STANDARD.decode(stored).ok()?,
        STANDARD.decode(server).ok()?,
    );
    (stored.len() == 32 && server.len() == 32 && !salt.is_empty()).then(|| ScramKeys {
        salt,
        iterations,
        stored_key: Secret::new(stored),
        server_key: Secret::new(server),
    })
}

/// Writes keys as `$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>`.
pub fn format_scram(keys: &ScramKeys) -> String {
    format!(
        "$scram-sha-256${}${}${}${}",
        keys.iterations,
        STANDARD.encode(&keys.salt),
        STANDARD.encode(keys.stored_key.expose_secret()),
        STANDARD.encode(keys.server_key.expose_secret())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_and_ours_round_trips() {
        let k = ScramKeys::derive_sha256("pencil", b"saltsaltsaltsalt", 4096);
        let ours = format_scram(&k);
        assert!(
            ours.starts_with("$scram-sha-256$4096$c2FsdHNhbHRzYWx0c2FsdA==$"),
            "{ours}"
        );
        let back = parse_scram(&ours).unwrap();
        assert_eq!(back, k);
        let dovecot = format!(
            "{{SCRAM-SHA-256}}4096,{},{},{}",
            STANDARD.encode(&k.salt),
            STANDARD.encode(k.stored_key.expose_secret()),
            STANDARD.encode(k.server_key.expose_secret())
        );
        assert_eq!(parse_scram(&dovecot).unwrap(), k);
        for bad in [
            "$scram-sha-256$0$AA==$AA==$AA==",
            "$scram-sha-256$4096$c2FsdA==$AA==$AA==",
            "{SCRAM-SHA-256}4096,c2FsdA==",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$AA",
        ] {
            assert!(parse_scram(bad).is_none(), "{bad}");
        }
    }
}
