//! The SMTP face of the core (RFC 4954): challenges as `334` lines and an exchange's outcome
//! as its reply. The only SMTP-specific module; an IMAP driver would write its own few lines
//! instead.
//!
//! [`reply`] is the one function that maps an outcome to its reply, for every driver: the
//! standard reply of its status ([`status_reply`], the one table of AUTH replies), or the
//! outcome's own `message` when that is one well-formed reply line of the outcome's kind (2xx
//! for a success, 4xx or 5xx for a failure). Any other message is replaced by the standard
//! reply, with a warning, so a client never reads a success the session does not have, or the
//! reverse.

use std::fmt;

use crate::result::{AuthResult, AuthStatus};
use crate::sasl::encode_challenge;

/// An enhanced status code (RFC 3463): class, subject, detail.
pub type EnhancedCode = (u8, u16, u16);

/// The reply an exchange ends with: code, optional enhanced code and text. Built only by
/// [`reply`], so its class always matches the outcome. `Display` writes the line without
/// CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthReply {
    /// The reply code (235, 454, 501, 535, ...).
    pub code: u16,
    /// The enhanced status code, when the reply has one.
    pub enhanced: Option<EnhancedCode>,
    /// The text after the codes (no CR or LF).
    pub text: String,
}

impl fmt::Display for AuthReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// The standard reply for a status: code, enhanced code (RFC 3463) and text.
pub fn status_reply(status: AuthStatus) -> (u16, EnhancedCode, &'static str) {
    // The one table of AUTH reply texts.
    match status {
        AuthStatus::Success => (235, (2, 7, 0), "Authentication successful"),
        AuthStatus::Invalid => (535, (5, 7, 8), "Authentication credentials invalid"),
        // A lock reads as a temporary failure: it must not tell a guesser anything.
        AuthStatus::TempFail | AuthStatus::Locked => {
            (454, (4, 7, 0), "Temporary authentication failure")
        }
        AuthStatus::Cancelled => (501, (5, 7, 0), "Authentication cancelled"),
        AuthStatus::Undecodable => (501, (5, 5, 2), "Cannot decode response"),
        AuthStatus::Malformed => (501, (5, 5, 2), "Malformed authentication data"),
        AuthStatus::TooLong => (500, (5, 5, 6), "Authentication line too long"),
        AuthStatus::UnknownMechanism => (504, (5, 5, 4), "Unrecognized authentication type"),
        AuthStatus::Unsupported => (501, (5, 5, 4), "Unsupported authentication option"),
    }
}

/// The reply to send for `result`: `None` when a `handle_auth` hook already replied
/// (`handled`, for a failure); its `message` when that is a reply of the outcome's kind; else
/// the standard reply for its status (see the [module documentation](self)).
pub fn reply(result: &AuthResult) -> Option<AuthReply> {
    if result.handled && !result.is_success() {
        return None;
    }
    let standard = || {
        let (code, enhanced, text) = status_reply(result.status);
        AuthReply {
            code,
            enhanced: Some(enhanced),
            text: text.to_owned(),
        }
    };
    let Some(message) = &result.message else {
        return Some(standard());
    };
    match parse_reply(message) {
        Some(r) if r.code / 100 != 3 && (r.code / 100 == 2) == result.is_success() => Some(r),
        _ => {
            tracing::warn!(
                status = ?result.status,
                "an AUTH message that is not a reply of its outcome's kind: the standard reply is sent"
            );
            Some(standard())
        }
    }
}

/// A one-line reply as an authenticator or hook writes it: `NNN[ x.y.z][ text]`, code 200 to
/// 599. CR and LF are dropped first (a message cannot smuggle a second reply line).
fn parse_reply(message: &str) -> Option<AuthReply> {
    let line: String = message
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let digits = line.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = digits.parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    let rest = &line[3..];
    let rest = match rest.strip_prefix(' ') {
        Some(r) => r,
        None if rest.is_empty() => rest,
        None => return None,
    };
    let (enhanced, text) = match rest.split_once(' ').unwrap_or((rest, "")) {
        (word, text) if enhanced_code(word, code).is_some() => (enhanced_code(word, code), text),
        _ => (None, rest),
    };
    Some(AuthReply {
        code,
        enhanced,
        text: text.to_owned(),
    })
}

/// `x.y.z` as RFC 3463 writes it, of the same class as `code`.
fn enhanced_code(word: &str, code: u16) -> Option<EnhancedCode> {
    let mut parts = word.split('.');
    let (Some(c), Some(s), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let short = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    if !(short(c, 1) && short(s, 3) && short(d, 3)) {
        return None;
    }
    let class: u8 = c.parse().ok()?;
    (u16::from(class) == code / 100).then(|| Some((class, s.parse().ok()?, d.parse().ok()?)))?
}

/// The `334` line (without CRLF) carrying a challenge.
pub fn challenge_line(challenge: &[u8]) -> String {
    format!("334 {}", encode_challenge(challenge))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &AuthResult) -> Option<String> {
        reply(r).map(|r| r.to_string())
    }

    #[test]
    fn lines() {
        assert_eq!(challenge_line(b"Username:"), "334 VXNlcm5hbWU6");
        assert_eq!(challenge_line(b"Password:"), "334 UGFzc3dvcmQ6");
        assert_eq!(challenge_line(b""), "334 ");
        let cases = [
            (
                AuthStatus::Invalid,
                "535 5.7.8 Authentication credentials invalid",
            ),
            (
                AuthStatus::TempFail,
                "454 4.7.0 Temporary authentication failure",
            ),
            (
                AuthStatus::Locked,
                "454 4.7.0 Temporary authentication failure",
            ),
            (AuthStatus::Cancelled, "501 5.7.0 Authentication cancelled"),
            (AuthStatus::Undecodable, "501 5.5.2 Cannot decode response"),
            (
                AuthStatus::TooLong,
                "500 5.5.6 Authentication line too long",
            ),
            (
                AuthStatus::UnknownMechanism,
                "504 5.5.4 Unrecognized authentication type",
            ),
        ];
        for (status, want) in cases {
            assert_eq!(line(&AuthResult::failure(status)).unwrap(), want);
        }
        assert_eq!(
            line(&AuthResult::success(None)).unwrap(),
            "235 2.7.0 Authentication successful"
        );
        assert_eq!(line(&AuthResult::handled()), None);
        assert_eq!(
            line(&AuthResult::failure(AuthStatus::Invalid).with_message("535 5.7.8 Go away"))
                .unwrap(),
            "535 5.7.8 Go away"
        );
    }

    #[test]
    fn a_message_must_be_a_reply_of_its_outcomes_kind() {
        let invalid = |m: &str| line(&AuthResult::failure(AuthStatus::Invalid).with_message(m));
        let standard = "535 5.7.8 Authentication credentials invalid";
        assert_eq!(invalid("235 2.7.0 Come in").unwrap(), standard);
        assert_eq!(invalid("go away\r\n250 OK").unwrap(), standard);
        assert_eq!(invalid("334 more?").unwrap(), standard);
        assert_eq!(invalid("5355 no").unwrap(), standard);
        assert_eq!(invalid("").unwrap(), standard);
        // CR and LF are dropped: one line only.
        assert_eq!(invalid("535 5.7.8 a\r\nb").unwrap(), "535 5.7.8 ab");
        // No enhanced code, or one of another class, is text.
        assert_eq!(invalid("535 Nope").unwrap(), "535 Nope");
        assert_eq!(invalid("535 4.7.0 odd").unwrap(), "535 4.7.0 odd");
        assert_eq!(
            reply(&AuthResult::failure(AuthStatus::Invalid).with_message("535 4.7.0 odd"))
                .unwrap()
                .enhanced,
            None
        );
        assert_eq!(invalid("550").unwrap(), "550");
        let ok = |m: &str| line(&AuthResult::success(None).with_message(m));
        assert_eq!(ok("235 2.7.0 Welcome").unwrap(), "235 2.7.0 Welcome");
        assert_eq!(
            ok("535 5.7.8 nope").unwrap(),
            "235 2.7.0 Authentication successful"
        );
    }
}
