//! The SMTP face of the core (RFC 4954): challenges as `334` lines and results as replies.
//! The only SMTP-specific module; an IMAP driver would write its own few lines instead.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::exchange::encode_challenge;
use crate::result::{AuthResult, AuthStatus};
use crate::secret::SecretBytes;

/// A client's SASL response line (RFC 4954 §4), read: the one decoder of every path that takes
/// one (the built-in exchange and a server's own `handle_auth` hook alike).
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

/// The standard reply for a status: code, enhanced code (RFC 3463) and text.
pub fn status_reply(status: AuthStatus) -> (u16, (u8, u16, u16), &'static str) {
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

/// The reply line (without CRLF) to send for `result`: `None` when a hook already replied
/// (`handled`), its `message` as is when set, else the standard reply for its status.
pub fn reply_line(result: &AuthResult) -> Option<String> {
    if result.handled && !result.is_success() {
        return None;
    }
    if let Some(m) = &result.message {
        return Some(m.clone());
    }
    let (code, (c, s, d), text) = status_reply(result.status);
    Some(format!("{code} {c}.{s}.{d} {text}"))
}

/// The `334` line (without CRLF) carrying a challenge.
pub fn challenge_line(challenge: &[u8]) -> String {
    format!("334 {}", encode_challenge(challenge))
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
        assert_eq!(
            decode_response(b"*", 1).failure(),
            Some(AuthStatus::Cancelled)
        );
        assert_eq!(decode_response(b"", 1).failure(), None);
    }

    #[test]
    fn lines() {
        assert_eq!(challenge_line(b"Username:"), "334 VXNlcm5hbWU6");
        assert_eq!(challenge_line(b"Password:"), "334 UGFzc3dvcmQ6");
        assert_eq!(challenge_line(b""), "334 ");
        assert_eq!(
            reply_line(&AuthResult::success(None)).unwrap(),
            "235 2.7.0 Authentication successful"
        );
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::Invalid)).unwrap(),
            "535 5.7.8 Authentication credentials invalid"
        );
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::TempFail)).unwrap(),
            "454 4.7.0 Temporary authentication failure"
        );
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::Cancelled)).unwrap(),
            "501 5.7.0 Authentication cancelled"
        );
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::Undecodable)).unwrap(),
            "501 5.5.2 Cannot decode response"
        );
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::TooLong)).unwrap(),
            "500 5.5.6 Authentication line too long"
        );
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::UnknownMechanism)).unwrap(),
            "504 5.5.4 Unrecognized authentication type"
        );
        assert_eq!(reply_line(&AuthResult::handled()), None);
        assert_eq!(
            reply_line(&AuthResult::failure(AuthStatus::Invalid).with_message("535 5.7.8 Go away"))
                .unwrap(),
            "535 5.7.8 Go away"
        );
    }
}
