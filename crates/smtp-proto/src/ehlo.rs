//! The EHLO response (RFC 5321 §4.1.1.1): a typed list of service extensions, encoded as a
//! multi-line 250 reply, and parsed back on the client side.

use std::fmt;

use crate::reply::{Reply, ReplyCode};

/// One service extension as advertised in the EHLO response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Extension {
    /// `8BITMIME` (RFC 6152)
    EightBitMime,
    /// `PIPELINING` (RFC 2920)
    Pipelining,
    /// `SIZE [n]` (RFC 1870); `None` or `Some(0)` means no fixed limit announced.
    Size(Option<u64>),
    /// `AUTH mech...` (RFC 4954)
    Auth(Vec<String>),
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `ENHANCEDSTATUSCODES` (RFC 2034)
    EnhancedStatusCodes,
    /// `SMTPUTF8` (RFC 6531)
    SmtpUtf8,
    /// `CHUNKING` (RFC 3030)
    Chunking,
    /// `BINARYMIME` (RFC 3030)
    BinaryMime,
    /// `DSN` (RFC 3461)
    Dsn,
    /// `HELP`
    Help,
    /// `REQUIRETLS` (RFC 8689), offered over TLS only.
    RequireTls,
    /// Any other keyword with its parameters, as one line.
    Other(String),
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EightBitMime => f.write_str("8BITMIME"),
            Self::Pipelining => f.write_str("PIPELINING"),
            Self::Size(Some(n)) => write!(f, "SIZE {n}"),
            Self::Size(None) => f.write_str("SIZE"),
            Self::Auth(m) => write!(f, "AUTH {}", m.join(" ")),
            Self::StartTls => f.write_str("STARTTLS"),
            Self::EnhancedStatusCodes => f.write_str("ENHANCEDSTATUSCODES"),
            Self::SmtpUtf8 => f.write_str("SMTPUTF8"),
            Self::Chunking => f.write_str("CHUNKING"),
            Self::BinaryMime => f.write_str("BINARYMIME"),
            Self::Dsn => f.write_str("DSN"),
            Self::Help => f.write_str("HELP"),
            Self::RequireTls => f.write_str("REQUIRETLS"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl Extension {
    /// Parses one EHLO response line (after the first).
    pub fn parse(line: &str) -> Self {
        let mut words = line.split(' ');
        let kw = words.next().unwrap_or("").to_ascii_uppercase();
        let rest: Vec<&str> = words.filter(|w| !w.is_empty()).collect();
        match (kw.as_str(), rest.as_slice()) {
            ("8BITMIME", []) => Self::EightBitMime,
            ("PIPELINING", []) => Self::Pipelining,
            ("SIZE", []) => Self::Size(None),
            ("SIZE", [n]) if n.parse::<u64>().is_ok() => Self::Size(n.parse().ok()),
            ("AUTH", mechs) => Self::Auth(mechs.iter().map(|m| m.to_ascii_uppercase()).collect()),
            ("STARTTLS", []) => Self::StartTls,
            ("ENHANCEDSTATUSCODES", []) => Self::EnhancedStatusCodes,
            ("SMTPUTF8", []) => Self::SmtpUtf8,
            ("CHUNKING", []) => Self::Chunking,
            ("BINARYMIME", []) => Self::BinaryMime,
            ("DSN", []) => Self::Dsn,
            ("HELP", []) => Self::Help,
            ("REQUIRETLS", []) => Self::RequireTls,
            _ => Self::Other(line.to_owned()),
        }
    }
}

/// An EHLO response: the server's name, an optional greeting and its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EhloResponse {
    /// The server's domain, first word of the first line.
    pub domain: String,
    /// Free text after the domain on the first line.
    pub greeting: Option<String>,
    /// The extensions, one per following line.
    pub extensions: Vec<Extension>,
}

impl EhloResponse {
    /// A response with no extensions.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            greeting: None,
            extensions: Vec::new(),
        }
    }

    /// Adds an extension (builder style).
    pub fn with(mut self, ext: Extension) -> Self {
        self.extensions.push(ext);
        self
    }

    /// True when the extension keyword is advertised.
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|e| {
            let s = e.to_string();
            s.split(' ')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }

    /// The advertised AUTH mechanisms (empty when AUTH is not advertised).
    pub fn auth_mechanisms(&self) -> &[String] {
        self.extensions
            .iter()
            .find_map(|e| match e {
                Extension::Auth(m) => Some(m.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// The 250 reply (RFC 5321 §4.1.1.1: no enhanced code on EHLO lines).
    pub fn to_reply(&self) -> Reply {
        let mut first = self.domain.clone();
        if let Some(g) = &self.greeting {
            first.push(' ');
            first.push_str(g);
        }
        let lines = std::iter::once(first).chain(self.extensions.iter().map(|e| e.to_string()));
        Reply::new(ReplyCode::new_const(250), None, lines)
            .unwrap_or_else(|_| Reply::simple(250, None, &self.domain))
    }

    /// Reads an EHLO response back from a 250 reply.
    pub fn from_reply(reply: &Reply) -> Option<Self> {
        if reply.code().get() != 250 {
            return None;
        }
        let mut lines = reply.lines().iter();
        let first = lines.next()?;
        let (domain, greeting) = match first.split_once(' ') {
            Some((d, g)) => (d.to_owned(), Some(g.to_owned())),
            None => (first.clone(), None),
        };
        Some(Self {
            domain,
            greeting,
            extensions: lines.map(|l| Extension::parse(l)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let r = EhloResponse::new("mx.example.org")
            .with(Extension::Pipelining)
            .with(Extension::Size(Some(33554432)))
            .with(Extension::Auth(vec!["PLAIN".into(), "LOGIN".into()]))
            .with(Extension::EnhancedStatusCodes)
            .with(Extension::Other("X-FOO bar".into()));
        assert_eq!(
            r.to_reply().to_bytes(),
            b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250 X-FOO bar\r\n"
        );
        let back = EhloResponse::from_reply(&r.to_reply()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.auth_mechanisms(), &["PLAIN", "LOGIN"]);
        assert!(back.has("pipelining"));
        assert!(!back.has("STARTTLS"));
    }

    #[test]
    fn greeting_and_plain_domain() {
        let reply = Reply::parse(b"250-smtp.example.com Hello client\r\n250 8BITMIME\r\n").unwrap();
        let e = EhloResponse::from_reply(&reply).unwrap();
        assert_eq!(e.domain, "smtp.example.com");
        assert_eq!(e.greeting.as_deref(), Some("Hello client"));
        assert_eq!(e.extensions, vec![Extension::EightBitMime]);
        assert!(EhloResponse::from_reply(&Reply::simple(550, None, "no")).is_none());
    }

    #[test]
    fn requiretls_extension() {
        assert_eq!(Extension::parse("requiretls"), Extension::RequireTls);
        assert_eq!(Extension::RequireTls.to_string(), "REQUIRETLS");
        let r = EhloResponse::new("mx").with(Extension::RequireTls);
        assert!(r.has("REQUIRETLS"));
    }
}
