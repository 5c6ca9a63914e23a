//! SMTP replies (RFC 5321 §4.2): reply codes, enhanced status codes (RFC 3463), encoding of
//! single- and multi-line replies, and a streaming reply parser for the client side.

use std::fmt;

use bytes::{Buf, BufMut, BytesMut};

/// A three-digit SMTP reply code (RFC 5321 §4.2): first digit 2 to 5, the others 0 to 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// Builds a reply code; `None` unless `200 <= code <= 599`.
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 200 && code <= 599 {
            Some(Self(code))
        } else {
            None
        }
    }

    /// Builds a reply code from a constant; panics at compile time in a const context when invalid.
    pub const fn new_const(code: u16) -> Self {
        match Self::new(code) {
            Some(c) => c,
            None => panic!("invalid SMTP reply code"),
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The first digit: 2 positive completion, 3 intermediate, 4 transient, 5 permanent.
    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }

    /// True for 2xx and 3xx.
    pub const fn is_positive(self) -> bool {
        self.0 < 400
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An enhanced mail system status code (RFC 3463): `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedCode {
    /// Builds a code; `None` unless class is 2, 4 or 5 and subject and detail are at most 999.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        if (class == 2 || class == 4 || class == 5) && subject <= 999 && detail <= 999 {
            Some(Self {
                class,
                subject,
                detail,
            })
        } else {
            None
        }
    }

    /// Builds a code from constants; panics at compile time in a const context when invalid.
    pub const fn new_const(class: u8, subject: u16, detail: u16) -> Self {
        match Self::new(class, subject, detail) {
            Some(c) => c,
            None => panic!("invalid enhanced status code"),
        }
    }

    /// The class digit (2, 4 or 5).
    pub const fn class(self) -> u8 {
        self.class
    }
    /// The subject number.
    pub const fn subject(self) -> u16 {
        self.subject
    }
    /// The detail number.
    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// Parses `d.ddd.ddd` at the start of `text`, returning the code and the rest after one space.
    fn parse_prefix(text: &str) -> Option<(Self, &str)> {
        let (word, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let mut parts = word.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some()
            || class.len() != 1
            || !(1..=3).contains(&subject.len())
            || !(1..=3).contains(&detail.len())
            || ![class, subject, detail]
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let code = Self::new(
            class.parse().ok()?,
            subject.parse().ok()?,
            detail.parse().ok()?,
        )?;
        Some((code, rest))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// An SMTP reply: a code, an optional enhanced status code and one or more text lines.
///
/// The enhanced code, when present, is written at the start of every line (RFC 2034 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    code: ReplyCode,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

/// Why a reply could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line did not start with three digits followed by space, `-` or the line end.
    Malformed,
    /// The lines of a multi-line reply carried different codes.
    CodeMismatch,
    /// A text line held CR or LF, or a byte outside printable US-ASCII and UTF-8.
    InvalidText,
    /// A line or the whole reply exceeded the parser's limits.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed reply line",
            Self::CodeMismatch => "reply lines carry different codes",
            Self::InvalidText => "reply text holds a line break or control character",
            Self::TooLong => "reply exceeds the size limit",
        })
    }
}

impl std::error::Error for ReplyError {}

fn valid_text(s: &str) -> bool {
    !s.chars()
        .any(|c| c == '\r' || c == '\n' || (c.is_control() && c != '\t'))
}

impl Reply {
    /// Builds a reply. Each line must be free of CR, LF and control characters.
    pub fn new<I, S>(
        code: ReplyCode,
        enhanced: Option<EnhancedCode>,
        lines: I,
    ) -> Result<Self, ReplyError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let lines: Vec<String> = lines.into_iter().map(Into::into).collect();
        if !lines.iter().all(|l| valid_text(l)) {
            return Err(ReplyError::InvalidText);
        }
        Ok(Self {
            code,
            enhanced,
            lines,
        })
    }

    /// A one-line reply from trusted constants (the reply tables). Control characters in `text`
    /// are replaced by spaces so the wire stays well formed.
    pub fn simple(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> Self {
        let code = ReplyCode::new(code).unwrap_or(ReplyCode(451));
        let enhanced = enhanced.and_then(|(c, s, d)| EnhancedCode::new(c, s, d));
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Self {
            code,
            enhanced,
            lines: vec![text],
        }
    }

    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status code, if any.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text lines, without codes.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Appends the wire form (every line CRLF-terminated) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { b' ' } else { b'-' };
            out.put_slice(self.code.0.to_string().as_bytes());
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            match self.enhanced {
                Some(e) => {
                    out.put_u8(sep);
                    out.put_slice(e.to_string().as_bytes());
                    if !text.is_empty() {
                        out.put_u8(b' ');
                        out.put_slice(text.as_bytes());
                    }
                }
                None => {
                    if !text.is_empty() || i + 1 != n {
                        out.put_u8(sep);
                        out.put_slice(text.as_bytes());
                    }
                }
            }
            out.put_slice(b"\r\n");
        }
    }

    /// The wire form as a vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.to_vec()
    }

    /// Parses one complete reply (all its lines, CRLF-terminated) with the default limits.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReplyError> {
        let mut p = ReplyParser::default();
        let mut buf = BytesMut::from(bytes);
        match p.decode(&mut buf)? {
            Some(r) if buf.is_empty() => Ok(r),
            _ => Err(ReplyError::Malformed),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        f.write_str(String::from_utf8_lossy(&bytes).trim_end())
    }
}

/// A streaming parser for replies as a client reads them.
///
/// Feed it the read buffer; it consumes complete lines and returns a [`Reply`] once the last
/// line (`ddd SP` or a bare `ddd`) arrives. A line longer than `max_line` or a reply of more
/// than `max_lines` lines is an error, so memory stays bounded.
#[derive(Debug, Clone)]
pub struct ReplyParser {
    max_line: usize,
    max_lines: usize,
    pending: Vec<String>,
    code: Option<u16>,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new(4096, 512)
    }
}

impl ReplyParser {
    /// A parser with the given limits (line length including CRLF, lines per reply).
    pub fn new(max_line: usize, max_lines: usize) -> Self {
        Self {
            max_line,
            max_lines,
            pending: Vec::new(),
            code: None,
        }
    }

    /// Consumes complete lines from `buf`; returns the reply once complete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        loop {
            let window = &buf[..buf.len().min(self.max_line)];
            let Some(lf) = memchr::memchr(b'\n', window) else {
                if buf.len() >= self.max_line {
                    return Err(ReplyError::TooLong);
                }
                return Ok(None);
            };
            let mut line = &buf[..lf];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
                return Err(ReplyError::Malformed);
            }
            let code = (line[0] - b'0') as u16 * 100
                + (line[1] - b'0') as u16 * 10
                + (line[2] - b'0') as u16;
            let (last, text) = match line.get(3) {
                None => (true, &b""[..]),
                Some(b' ') => (true, &line[4..]),
                Some(b'-') => (false, &line[4..]),
                Some(_) => return Err(ReplyError::Malformed),
            };
            let text = std::str::from_utf8(text).map_err(|_| ReplyError::InvalidText)?;
            if self.code.is_some_and(|c| c != code) {
                return Err(ReplyError::CodeMismatch);
            }
            self.code = Some(code);
            self.pending.push(text.to_owned());
            buf.advance(lf + 1);
            if self.pending.len() > self.max_lines {
                return Err(ReplyError::TooLong);
            }
            if last {
                let code = ReplyCode::new(code).ok_or(ReplyError::Malformed)?;
                let mut lines = std::mem::take(&mut self.pending);
                self.code = None;
                // The enhanced code counts only when every line carries the same one and its
                // class matches the reply's (RFC 3463 §2).
                let first = EnhancedCode::parse_prefix(&lines[0]).map(|(e, _)| e);
                let enhanced = first.filter(|e| {
                    e.class() == code.class()
                        && lines
                            .iter()
                            .all(|l| EnhancedCode::parse_prefix(l).map(|(x, _)| x) == Some(*e))
                });
                if enhanced.is_some() {
                    for l in &mut lines {
                        let rest = EnhancedCode::parse_prefix(l).map(|(_, r)| r.to_owned());
                        *l = rest.unwrap_or_default();
                    }
                }
                if !lines.iter().all(|l| valid_text(l)) {
                    return Err(ReplyError::InvalidText);
                }
                return Ok(Some(Reply {
                    code,
                    enhanced,
                    lines,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let r = Reply::simple(250, Some((2, 1, 0)), "Sender OK");
        assert_eq!(r.to_bytes(), b"250 2.1.0 Sender OK\r\n");
        assert_eq!(Reply::parse(b"250 2.1.0 Sender OK\r\n").unwrap(), r);
    }

    #[test]
    fn multi_line_ehlo_style() {
        let r = Reply::new(
            ReplyCode::new(250).unwrap(),
            None,
            ["mx.example.org", "PIPELINING", "SIZE 1000"],
        )
        .unwrap();
        assert_eq!(
            r.to_bytes(),
            b"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
        assert_eq!(Reply::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn bare_code_and_empty_text() {
        let r = Reply::parse(b"354\r\n").unwrap();
        assert_eq!(r.code().get(), 354);
        assert_eq!(r.lines(), &[String::new()]);
        assert_eq!(r.to_bytes(), b"354\r\n");
        let c = Reply::parse(b"334 \r\n").unwrap();
        assert_eq!(c.lines(), &[String::new()]);
    }

    #[test]
    fn streaming_across_reads() {
        let mut p = ReplyParser::default();
        let mut buf = BytesMut::from(&b"250-first\r\n250-sec"[..]);
        assert_eq!(p.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"ond\r\n250 third\r\n220 next");
        let r = p.decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.lines(), &["first", "second", "third"]);
        assert_eq!(&buf[..], b"220 next");
    }

    #[test]
    fn errors() {
        assert_eq!(Reply::parse(b"25 x\r\n"), Err(ReplyError::Malformed));
        assert_eq!(Reply::parse(b"250x\r\n"), Err(ReplyError::Malformed));
        assert_eq!(
            Reply::parse(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch)
        );
        let mut p = ReplyParser::new(16, 4);
        let mut buf = BytesMut::from(&[b'2'; 40][..]);
        assert_eq!(p.decode(&mut buf), Err(ReplyError::TooLong));
        assert!(Reply::new(ReplyCode::new(250).unwrap(), None, ["a\r\nb"]).is_err());
        assert!(ReplyCode::new(199).is_none());
        assert!(ReplyCode::new(600).is_none());
        assert!(EnhancedCode::new(3, 0, 0).is_none());
    }

    #[test]
    fn enhanced_class_must_match() {
        let r = Reply::parse(b"250 5.1.1 odd\r\n").unwrap();
        assert_eq!(r.enhanced(), None);
        assert_eq!(r.lines(), &["5.1.1 odd"]);
    }
}
