//! Typed protocol errors. Each knows the reply a server sends for it; the texts live in the one
//! table below ([`ProtoError::reply`]).

use std::fmt;

use crate::reply::Reply;

/// What went wrong while reading a command, a parameter or a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The line is not an SMTP command the grammar knows (RFC 5321 §4.2.4): 500 5.5.2.
    UnknownCommand,
    /// The command's verb is known but its arguments do not match its grammar (`MAIL TO:<a@b>`,
    /// `RCPT` without `TO:`): 501 5.5.4 (RFC 5321 §4.2.4: 500 is for unrecognized commands).
    Syntax(&'static str),
    /// An argument is malformed (a domain, a BDAT size, an AUTH mechanism): 501 5.5.4.
    ArgumentSyntax(&'static str),
    /// The reverse-path of MAIL is malformed (RFC 3463 X.1.7): 501 5.1.7.
    SenderSyntax,
    /// The forward-path of RCPT is malformed (RFC 3463 X.1.3): 501 5.1.3.
    RecipientSyntax,
    /// An ESMTP parameter's keyword or value is malformed: 501 5.5.4.
    ParameterSyntax(&'static str),
    /// The same ESMTP parameter was given twice: 501 5.5.4.
    DuplicateParameter,
    /// An ESMTP parameter this server does not implement (RFC 5321 §4.1.1.11): 555 5.5.4.
    UnknownParameter,
    /// The command line exceeds the limit (RFC 5321 §4.5.3.1.4): 500 5.5.6.
    LineTooLong,
    /// Non-ASCII bytes in a command where UTF-8 is not allowed, or invalid UTF-8: 500 5.5.2.
    InvalidUtf8,
    /// The message exceeds the size limit (RFC 1870): 552 5.3.4.
    MessageTooLarge,
    /// The body held a bare CR or LF (RFC 5321 §2.3.8; SMTP smuggling): 550 5.6.0.
    BareLineEnding,
    /// A command line ended with a bare LF while bare newlines are forbidden: 500 5.5.2.
    BareNewline,
}

impl ProtoError {
    /// The reply a server sends for this error.
    pub fn reply(&self) -> Reply {
        // The one table of this crate's reply texts.
        let (code, enhanced, text): (u16, (u8, u16, u16), &str) = match self {
            Self::UnknownCommand => (500, (5, 5, 2), "Syntax error, command unrecognized"),
            Self::Syntax(what) => (501, (5, 5, 4), what),
            Self::ArgumentSyntax(what) => (501, (5, 5, 4), what),
            Self::SenderSyntax => (501, (5, 1, 7), "Bad sender address syntax"),
            Self::RecipientSyntax => (501, (5, 1, 3), "Bad recipient address syntax"),
            Self::ParameterSyntax(what) => (501, (5, 5, 4), what),
            Self::DuplicateParameter => (501, (5, 5, 4), "Duplicate parameter"),
            Self::UnknownParameter => (555, (5, 5, 4), "Unsupported parameter"),
            Self::LineTooLong => (500, (5, 5, 6), "Line too long"),
            Self::InvalidUtf8 => (500, (5, 5, 2), "Invalid characters in command"),
            Self::MessageTooLarge => (552, (5, 3, 4), "Message size exceeds fixed limit"),
            Self::BareLineEnding => (
                550,
                (5, 6, 0),
                "Message refused: bare CR or LF in message data",
            ),
            Self::BareNewline => (
                500,
                (5, 5, 2),
                "Command line must end with CRLF, not a bare LF",
            ),
        };
        Reply::simple(code, Some(enhanced), text)
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reply = self.reply();
        write!(f, "{}", reply.lines()[0])
    }
}

impl std::error::Error for ProtoError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_reply() {
        let cases: &[(ProtoError, &[u8])] = &[
            (
                ProtoError::UnknownCommand,
                b"500 5.5.2 Syntax error, command unrecognized\r\n",
            ),
            (
                ProtoError::Syntax("Syntax: MAIL FROM:<address>"),
                b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n",
            ),
            (
                ProtoError::ArgumentSyntax("Invalid domain"),
                b"501 5.5.4 Invalid domain\r\n",
            ),
            (
                ProtoError::SenderSyntax,
                b"501 5.1.7 Bad sender address syntax\r\n",
            ),
            (
                ProtoError::RecipientSyntax,
                b"501 5.1.3 Bad recipient address syntax\r\n",
            ),
            (
                ProtoError::ParameterSyntax("Invalid SIZE"),
                b"501 5.5.4 Invalid SIZE\r\n",
            ),
            (
                ProtoError::DuplicateParameter,
                b"501 5.5.4 Duplicate parameter\r\n",
            ),
            (
                ProtoError::UnknownParameter,
                b"555 5.5.4 Unsupported parameter\r\n",
            ),
            (ProtoError::LineTooLong, b"500 5.5.6 Line too long\r\n"),
            (
                ProtoError::BareNewline,
                b"500 5.5.2 Command line must end with CRLF, not a bare LF\r\n",
            ),
            (
                ProtoError::InvalidUtf8,
                b"500 5.5.2 Invalid characters in command\r\n",
            ),
            (
                ProtoError::MessageTooLarge,
                b"552 5.3.4 Message size exceeds fixed limit\r\n",
            ),
            (
                ProtoError::BareLineEnding,
                b"550 5.6.0 Message refused: bare CR or LF in message data\r\n",
            ),
        ];
        for (err, wire) in cases {
            assert_eq!(
                String::from_utf8_lossy(&err.reply().to_bytes()),
                String::from_utf8_lossy(wire)
            );
        }
    }
}
