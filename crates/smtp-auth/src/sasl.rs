//! The SASL response codec of RFC 4954 §4: a client's response line read into octets (or the
//! reason it ends the exchange), and a challenge written as base64. The one codec of every
//! path that reads or writes one: the built-in [`AuthExchange`](crate::AuthExchange), a
//! server's own `handle_auth` hook, and the [`smtp`](crate::smtp) face.

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
}
