//! The SASL response codec of RFC 4954 §4: a client's response line read into octets (or the
//! reason it ends the exchange), and a challenge written as base64. The one codec of every
//! path that reads or writes one: the built-in [`AuthExchange`](crate::AuthExchange), a
//! server's own `handle_auth` hook, and the [`smtp`](crate::smtp) face.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::result::AuthStatus;
use crate::secret::SecretBytes;

/// A client's SASL response line, read.
#[derive(Debug)]
pub enum Response {
    /// The decoded octets.
    Data(SecretBytes),
    /// The client sent `*`: the exchange is cancelled.
    Cancelled,
    /// The line was not base64.
    Undecodable,
    /// The line was longer than allowed.
    TooLong,
}

impl Response {
    /// The status an exchange ends with for this response, when it ends it.
    pub fn failure(&self) -> Option<AuthStatus> {
        match self {
            Self::Data(_) => None,
            Self::Cancelled => Some(AuthStatus::Cancelled),
            Self::Undecodable => Some(AuthStatus::Undecodable),
            Self::TooLong => Some(AuthStatus::TooLong),
        }
    }
}

/// Reads a response line (without its CRLF) of at most `max` octets: `*` cancels, anything
/// else must be base64.
pub fn decode_response(line: &[u8], max: usize) -> Response {
    if line == b"*" {
        return Response::Cancelled;
    }
    if line.len() > max {
        return Response::TooLong;
    }
    match STANDARD.decode(line) {
        Ok(b) => Response::Data(SecretBytes::new(b)),
        Err(_) => Response::Undecodable,
    }
}

/// Reads an initial response as the AUTH command carries it (RFC 4954 §4): `=` is an empty
/// response; `*` cancels only a response to a challenge, so here it is just not base64.
pub fn decode_initial_response(text: &[u8], max: usize) -> Response {
    match text {
        b"=" => Response::Data(SecretBytes::new(Vec::new())),
        b"*" => Response::Undecodable,
        text => decode_response(text, max),
    }
}

/// Why a user name or authorization identity was refused before any provider saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadName {
    /// It holds CR, LF or NUL: the characters that end lines and fields in the protocols a
    /// name travels on to a backend (SMTP, Dovecot's auth protocol, LDAP filters, logs).
    LineBreakOrNul,
    /// It holds a character SASLprep's output prohibits (RFC 4013 §2.3: other control
    /// characters, non-ASCII spaces, private use, non-characters, surrogates, tagging and
    /// display-changing characters).
    Prohibited,
    /// It mixes right-to-left and left-to-right text against RFC 3454 §6 (RFC 4013 §2.4).
    Bidi,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LineBreakOrNul => "the name holds CR, LF or NUL",
            Self::Prohibited => "the name holds a character SASLprep prohibits",
            Self::Bidi => "the name breaks SASLprep's bidirectional text rules",
        })
    }
}

/// Checks the names in a mechanism's first client message (its initial response, or its answer
/// to the first challenge) with [`check_name`], for a relay that hands the whole exchange to
/// another process (`smtp-auth-dovecot`'s `Proxy`): such a name reaches no store either. Knows
/// PLAIN, LOGIN, CRAM-MD5, SCRAM-*, XOAUTH2 and OAUTHBEARER; a message that does not parse is
/// left to the process that runs the mechanism.
///
/// ```
/// use smtp_auth::sasl::{check_first_message, BadName};
/// assert_eq!(check_first_message("SCRAM-SHA-256", b"n,,n=alice,r=abc"), Ok(()));
/// assert_eq!(
///     check_first_message("SCRAM-SHA-256", b"n,,n=al\rice,r=abc"),
///     Err(BadName::LineBreakOrNul)
/// );
/// ```
pub fn check_first_message(mechanism: &str, msg: &[u8]) -> Result<(), BadName> {
    crate::mechanism::first_message_names(mechanism, msg)
        .iter()
        .try_for_each(|name| check_name(name))
}

/// Checks a user name or authorization identity as SASLprep (RFC 4013) prepares a query
/// string: its mapped and NFKC-normalised form must hold no prohibited output (§2.3) and
/// follow the bidirectional rules (§2.4). Unassigned code points are allowed, as in a query
/// (RFC 3454 §7). The exchange refuses a name that fails this for every mechanism, before
/// any provider or store sees it.
pub fn check_name(name: &str) -> Result<(), BadName> {
    if name.contains(['\r', '\n', '\0']) {
        return Err(BadName::LineBreakOrNul);
    }
    // Fast path: printable ASCII maps to itself and holds nothing prohibited.
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    use stringprep::tables as t;
    use unicode_normalization::UnicodeNormalization as _;
    let mapped: String = name
        .chars()
        .filter(|&c| !t::commonly_mapped_to_nothing(c))
        .map(|c| {
            if t::non_ascii_space_character(c) {
                ' '
            } else {
                c
            }
        })
        .nfkc()
        .collect();
    let prohibited = |c: char| {
        t::non_ascii_space_character(c)
            || t::ascii_control_character(c)
            || t::non_ascii_control_character(c)
            || t::private_use(c)
            || t::non_character_code_point(c)
            || t::surrogate_code(c)
            || t::inappropriate_for_plain_text(c)
            || t::inappropriate_for_canonical_representation(c)
            || t::change_display_properties_or_deprecated(c)
            || t::tagging_character(c)
    };
    if mapped.chars().any(prohibited) {
        return Err(BadName::Prohibited);
    }
    // RFC 3454 §6: text with a RandALCat character holds no LCat character, and starts and
    // ends with a RandALCat character.
    if mapped.chars().any(t::bidi_r_or_al) {
        let first = mapped.chars().next().is_some_and(t::bidi_r_or_al);
        let last = mapped.chars().next_back().is_some_and(t::bidi_r_or_al);
        if mapped.chars().any(t::bidi_l) || !first || !last {
            return Err(BadName::Bidi);
        }
    }
    Ok(())
}

/// Base64 of a challenge, as SMTP sends it after `334 `.
pub fn encode_challenge(challenge: &[u8]) -> String {
    STANDARD.encode(challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        assert!(matches!(decode_response(b"*", 10), Response::Cancelled));
        assert!(
            matches!(decode_response(b"AGEAYg==", 10), Response::Data(d) if d.expose_secret() == b"\0a\0b")
        );
        assert!(matches!(
            decode_response(b"not base64!", 100),
            Response::Undecodable
        ));
        assert!(matches!(decode_response(b"AGEAYg==", 4), Response::TooLong));
        assert!(
            matches!(decode_initial_response(b"=", 10), Response::Data(d) if d.expose_secret().is_empty())
        );
        assert!(matches!(
            decode_initial_response(b"*", 10),
            Response::Undecodable
        ));
        assert!(
            matches!(decode_initial_response(b"AGEAYg==", 10), Response::Data(d) if d.expose_secret() == b"\0a\0b")
        );
        assert_eq!(
            decode_response(b"*", 1).failure(),
            Some(AuthStatus::Cancelled)
        );
        assert_eq!(decode_response(b"", 1).failure(), None);
        assert_eq!(encode_challenge(b"Username:"), "VXNlcm5hbWU6");
    }

    #[test]
    fn the_names_of_a_first_message_are_found_and_checked_for_each_mechanism() {
        let names = |m: &str, msg: &[u8]| crate::mechanism::first_message_names(m, msg);
        assert_eq!(names("PLAIN", b"admin\0alice\0s3cret"), ["admin", "alice"]);
        assert_eq!(names("LOGIN", b"alice"), ["alice"]);
        assert_eq!(names("CRAM-MD5", b"al ice 0123abcd"), ["al ice"]);
        assert_eq!(
            names(
                "scram-sha-256-plus",
                b"p=tls-exporter,a=b=2Cob,n=al=3Dice,r=xyz"
            ),
            ["b,ob", "al=ice"]
        );
        assert_eq!(names("SCRAM-SHA-256", b"n,,n=alice,r=xyz"), ["alice"]);
        assert_eq!(
            names(
                "XOAUTH2",
                b"user=alice@example.org\x01auth=Bearer t\x01\x01"
            ),
            ["alice@example.org"]
        );
        assert_eq!(
            names(
                "OAUTHBEARER",
                b"n,a=alice@example.org,\x01auth=Bearer t\x01\x01"
            ),
            ["alice@example.org"]
        );
        assert!(names("OAUTHBEARER", b"n,,\x01auth=Bearer t\x01\x01").is_empty());
        assert!(names("EXTERNAL", b"alice").is_empty());
        assert!(names("X-UNKNOWN", b"n=alice").is_empty());
        // The checks, each mechanism with a bad name where it carries one.
        for (m, msg, why) in [
            (
                "SCRAM-SHA-256",
                &b"n,,n=al\0ice,r=xyz"[..],
                BadName::LineBreakOrNul,
            ),
            (
                "SCRAM-SHA-256",
                b"n,a=bob\n,n=alice,r=xyz",
                BadName::LineBreakOrNul,
            ),
            (
                "SCRAM-SHA-256",
                b"n,,n=al\xffice,r=xyz",
                BadName::Prohibited,
            ),
            (
                "XOAUTH2",
                b"user=alice\r\x01auth=Bearer t\x01\x01",
                BadName::LineBreakOrNul,
            ),
            (
                "OAUTHBEARER",
                b"n,a=ali\x07ce,\x01auth=Bearer t\x01\x01",
                BadName::Prohibited,
            ),
            (
                "CRAM-MD5",
                "alice\u{200e} 0123".as_bytes(),
                BadName::Prohibited,
            ),
            ("PLAIN", b"\0ali\rce\0pw", BadName::LineBreakOrNul),
            ("LOGIN", b"ali\nce", BadName::LineBreakOrNul),
        ] {
            assert_eq!(check_first_message(m, msg), Err(why), "{m} {msg:?}");
        }
        // The password is not a name: a control character in it is not refused here.
        assert_eq!(check_first_message("PLAIN", b"\0alice\0p\x07w"), Ok(()));
    }

    #[test]
    fn names_are_checked_as_saslprep_queries() {
        for ok in [
            "alice",
            "alice@example.com",
            "first last",
            "j\u{f6}rg",
            "\u{5d0}\u{5d1}",
            // Unassigned in Unicode 3.2, allowed in a query.
            "\u{1f600}",
            // Mapped to a space, then fine.
            "a\u{a0}b",
            // Mapped to nothing (a soft hyphen).
            "ab\u{ad}c",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("ali\rce", BadName::LineBreakOrNul),
            ("alice\n", BadName::LineBreakOrNul),
            ("al\0ice", BadName::LineBreakOrNul),
            ("al\tice", BadName::Prohibited),
            ("al\u{7f}ice", BadName::Prohibited),
            ("a\u{85}b", BadName::Prohibited),
            ("a\u{e000}b", BadName::Prohibited),
            ("a\u{fffe}b", BadName::Prohibited),
            ("a\u{200e}b", BadName::Prohibited),
            ("a\u{e0041}b", BadName::Prohibited),
            ("a\u{2028}b", BadName::Prohibited),
            ("\u{5d0}a\u{5d1}", BadName::Bidi),
            ("\u{5d0}1", BadName::Bidi),
        ] {
            assert_eq!(check_name(bad), Err(why), "{bad:?}");
        }
    }
}
