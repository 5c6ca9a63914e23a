//! Addresses, exactly the RFC 5321 §4.1.2 grammar, with RFC 6531 (SMTPUTF8) extensions.
//!
//! Every type here can only be built valid: through the parsers in this module or through
//! `TryFrom<&str>`. Values keep the wire form of their local part (a quoted-string stays quoted)
//! so that encoding reproduces an equivalent path.
//!
//! The grammar of paths, mailboxes, domains and address literals is scanned by hand, one
//! 256-entry class table deciding each octet: these run for every MAIL and RCPT, and nom's
//! combinators (`alt`, `delimited`, `separated_list1`) cost more there than the grammar itself
//! (measured against Stalwart's parser in `compare/`, docs/performance.md). The rare source
//! route keeps its nom parser, where nom states the grammar most clearly. Parts are kept as
//! [`SmolStr`]: an address of up to 23 octets per part allocates nothing.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use smol_str::SmolStr;

use crate::text::{ATEXT, DCONTENT, LDH, NON_ASCII, is};

use nom::bytes::complete::tag;
use nom::multi::separated_list1;
use nom::sequence::terminated;
use nom::{IResult, Parser};

/// Maximum length of a domain in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;
/// Maximum length of a path including the angle brackets (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH_LEN: usize = 256;

/// A domain name (RFC 5321 §4.1.2 `Domain`), or an RFC 6531 U-label domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(SmolStr);

impl Domain {
    /// The domain as written by the client (case preserved).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the domain holds non-ASCII U-labels, which need SMTPUTF8.
    pub fn is_utf8(&self) -> bool {
        !self.0.is_ascii()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for Domain {
    type Error = crate::ProtoError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        match domain(s) {
            Ok(("", d)) => Ok(d),
            _ => Err(crate::ProtoError::ArgumentSyntax("Invalid domain")),
        }
    }
}

/// An address literal (RFC 5321 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressLiteral {
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]`, a General-address-literal with a standardized tag.
    General {
        /// The Standardized-tag (an Ldh-str).
        tag: String,
        /// The content after the colon (1*dcontent).
        content: String,
    },
}

impl fmt::Display for AddressLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(a) => write!(f, "[{a}]"),
            Self::Ipv6(a) => write!(f, "[IPv6:{a}]"),
            Self::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

/// The part of a mailbox after the `@`, or the argument of HELO/EHLO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(Domain),
    /// An address literal.
    Literal(AddressLiteral),
    /// A HELO/EHLO argument that is not a domain or an address literal, kept as sent. Only the
    /// named leniency [`ParseOptions::lenient_helo`](crate::ParseOptions::lenient_helo)
    /// produces it (clients that send `EHLO DESKTOP_42`); mailboxes never hold one.
    Unchecked(String),
}

impl Host {
    /// True when the host holds non-ASCII characters.
    pub fn is_utf8(&self) -> bool {
        match self {
            Self::Domain(d) => d.is_utf8(),
            Self::Unchecked(s) => !s.is_ascii(),
            Self::Literal(_) => false,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => d.fmt(f),
            Self::Literal(l) => l.fmt(f),
            Self::Unchecked(s) => f.write_str(s),
        }
    }
}

impl TryFrom<&str> for Host {
    type Error = crate::ProtoError;
    /// `Domain / address-literal`, the whole of `s`: scanned, then built where it is returned
    /// (the HELO/EHLO argument; a value built deeper is copied at each layer of results).
    #[inline(always)]
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        const ERR: crate::ProtoError = crate::ProtoError::ArgumentSyntax("Invalid domain");
        if s.starts_with('[') {
            match scan_literal(s, 0) {
                Some((literal, end)) if end == s.len() => Ok(Self::Literal(literal.build(s))),
                _ => Err(ERR),
            }
        } else if domain_len(s) == Some(s.len()) {
            Ok(Self::Domain(Domain(smol(s))))
        } else {
            Err(ERR)
        }
    }
}

/// The local part of a mailbox: a Dot-string or a Quoted-string, kept in its wire form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPart(SmolStr);

impl LocalPart {
    /// The wire form (a Quoted-string keeps its quotes and backslashes).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a Quoted-string.
    pub fn is_quoted(&self) -> bool {
        self.0.starts_with('"')
    }

    /// The value with quoting removed (`"a\ b"` gives `a b`).
    pub fn unquoted(&self) -> String {
        if !self.is_quoted() {
            return self.0.to_string();
        }
        let inner = &self.0[1..self.0.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox: `Local-part "@" ( Domain / address-literal )`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local: LocalPart,
    host: Host,
}

impl Mailbox {
    /// The local part.
    pub fn local_part(&self) -> &LocalPart {
        &self.local
    }

    /// The domain or address literal.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// True when the address needs SMTPUTF8 (RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.local.0.is_ascii() || self.host.is_utf8()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.host)
    }
}

impl FromStr for Mailbox {
    type Err = crate::ProtoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match mailbox(s) {
            Ok(("", m)) => Ok(m),
            _ => Err(crate::ProtoError::ArgumentSyntax("Invalid mailbox")),
        }
    }
}

impl TryFrom<&str> for Mailbox {
    type Error = crate::ProtoError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The argument of MAIL FROM: a mailbox or the null path `<>` (RFC 5321 §4.1.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`, used for bounces.
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// True when the address needs SMTPUTF8.
    pub fn is_utf8(&self) -> bool {
        matches!(self, Self::Mailbox(m) if m.is_utf8())
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// The argument of RCPT TO: a mailbox or the bare `<Postmaster>` (RFC 5321 §4.1.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain.
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Mailbox),
}

impl ForwardPath {
    /// True when the address needs SMTPUTF8.
    pub fn is_utf8(&self) -> bool {
        matches!(self, Self::Mailbox(m) if m.is_utf8())
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postmaster => f.write_str("<Postmaster>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

// ----- the grammar -----

// The parsers take the text (already UTF-8): the parts they keep are slices of it, so no part
// is checked for UTF-8 a second time. Every delimiter is ASCII, so the byte positions the
// hand-written scanners stop at are character boundaries.
type Res<'a, T> = IResult<&'a str, T>;

fn is_ldh(b: u8) -> bool {
    is(b, LDH)
}

/// A [`SmolStr`] of `s`: inline, without a call to copy, when it fits.
#[inline(always)]
pub(crate) fn smol(s: &str) -> SmolStr {
    if s.len() <= SmolStr::INLINE_CAP {
        SmolStr::new_inline(s)
    } else {
        SmolStr::new(s)
    }
}

/// The [`domain_len`] scan as a nom parser, for `Domain::try_from` and the source route.
pub(crate) fn domain(text: &str) -> Res<'_, Domain> {
    let end = domain_len(text).ok_or_else(|| verify_error(text))?;
    Ok((&text[end..], Domain(smol(&text[..end]))))
}

/// `Domain = sub-domain *("." sub-domain)`, where `sub-domain = Let-dig [Ldh-str]` (at most 63
/// octets, no dash at either end) or a U-label (RFC 6531 §3.3: non-ASCII bytes allowed): the
/// length of the one at the start of `text`, if there is one. A dot or a label's last octet
/// ends the scan, and both are ASCII: the length is a character boundary.
///
/// A hand-written scan rather than nom's `separated_list1`, which collects the labels into a
/// `Vec` only to throw it away: this is the hot path of every EHLO, MAIL and RCPT.
#[inline(always)]
fn domain_len(text: &str) -> Option<usize> {
    let label_ok = |l: &[u8]| l.len() <= 63 && l[0] != b'-' && l[l.len() - 1] != b'-';
    dotted(text.as_bytes(), |b| is(b, LDH | NON_ASCII), label_ok)
        .filter(|&end| end <= MAX_DOMAIN_LEN)
}

/// The longest run of labels joined by single dots at the start of `i`, a label being a
/// non-empty run of `byte_ok` octets that `label_ok` accepts: its length (a dot not followed by
/// a good label is left out, as nom's `separated_list1` would), or `None` when even the first
/// label is missing or bad. The scan behind [`domain`] and [`dot_string`], the hot path of every
/// MAIL and RCPT: no `Vec` of labels is built.
fn dotted(
    i: &[u8],
    byte_ok: impl Fn(u8) -> bool,
    label_ok: impl Fn(&[u8]) -> bool,
) -> Option<usize> {
    let mut end = 0;
    loop {
        let start = end;
        while end < i.len() && byte_ok(i[end]) {
            end += 1;
        }
        if end == start || !label_ok(&i[start..end]) {
            return start.checked_sub(1);
        }
        if i.get(end) == Some(&b'.') {
            end += 1;
        } else {
            return Some(end);
        }
    }
}

fn verify_error(i: &str) -> nom::Err<nom::error::Error<&str>> {
    nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Verify))
}

/// `dcontent = %d33-90 / %d94-126`
fn is_dcontent(b: u8) -> bool {
    is(b, DCONTENT)
}

/// An address literal as the scan found it: the addresses themselves, a general literal's
/// tag and content by place (see [`PathScan`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum LiteralScan {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    General {
        tag: (u16, u16),
        content: (u16, u16),
    },
}

impl LiteralScan {
    fn build(self, text: &str) -> AddressLiteral {
        match self {
            Self::Ipv4(a) => AddressLiteral::Ipv4(a),
            Self::Ipv6(a) => AddressLiteral::Ipv6(a),
            Self::General { tag, content } => AddressLiteral::General {
                tag: text[usize::from(tag.0)..usize::from(tag.1)].to_owned(),
                content: text[usize::from(content.0)..usize::from(content.1)].to_owned(),
            },
        }
    }
}

/// `address-literal = "[" ( IPv4 / IPv6 / General-address-literal ) "]"`: scans the literal at
/// `start` of `text`: what it is and where it ends. Positions
/// are kept as `u16`: a literal longer than 65,535 octets is refused (a path holds 256).
fn scan_literal(text: &str, start: usize) -> Option<(LiteralScan, usize)> {
    let b = &text.as_bytes()[start..];
    if b.first() != Some(&b'[') {
        return None;
    }
    // The common literal, IPv4, read straight away, up to the `]`.
    if let Some((a, n)) = ipv4_prefix(&b[1..])
        && b.get(1 + n) == Some(&b']')
    {
        return Some((LiteralScan::Ipv4(a), start + n + 2));
    }
    let end = 1 + b[1..].iter().take_while(|&&c| is_dcontent(c)).count();
    if end == 1 || b.get(end) != Some(&b']') || start + end >= usize::from(u16::MAX) {
        return None;
    }
    // The delimiters are ASCII: the slices fall on character boundaries.
    let inner = &text[start + 1..start + end];
    let lit = if inner.len() > 5 && inner[..5].eq_ignore_ascii_case("IPv6:") {
        LiteralScan::Ipv6(inner[5..].parse().ok()?)
    } else if let Some(colon) = inner.bytes().position(|c| c == b':') {
        // Standardized-tag = Ldh-str: letters, digits, dashes, not ending in a dash.
        let t = &inner[..colon];
        let ok_tag = !t.is_empty() && t.bytes().all(is_ldh) && !t.ends_with('-');
        if !ok_tag || colon + 1 == inner.len() {
            return None;
        }
        // All below `start + end`, checked to fit a u16 above.
        let at = |n: usize| u16::try_from(start + 1 + n).unwrap_or(u16::MAX);
        LiteralScan::General {
            tag: (at(0), at(colon)),
            content: (at(colon + 1), at(inner.len())),
        }
    } else {
        LiteralScan::Ipv4(ipv4(inner.as_bytes())?)
    };
    Some((lit, start + end + 1))
}

/// `IPv4-address-literal = Snum 3("." Snum)`, `Snum = 1*3DIGIT` from 0 to 255, read the way
/// `Ipv4Addr::from_str` reads it (no leading zero), in one pass: the standard parser's
/// general machinery cost more than the rest of a RCPT line.
fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    ipv4_prefix(b)
        .filter(|&(_, n)| n == b.len())
        .map(|(a, _)| a)
}

/// The IPv4 address at the start of `b` (see [`ipv4`]) and the octets it took.
#[inline(always)]
fn ipv4_prefix(b: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, o) in octets.iter_mut().enumerate() {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while i < b.len() && i - start < 3 && b[i].is_ascii_digit() {
            v = v * 10 + u32::from(b[i] - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && b[start] == b'0') {
            return None;
        }
        *o = u8::try_from(v).ok()?;
    }
    Some((Ipv4Addr::from(octets), i))
}

/// `atext` (RFC 5322 §3.2.3), plus UTF-8 non-ASCII bytes (RFC 6531 §3.3).
fn is_atext(b: u8) -> bool {
    is(b, ATEXT)
}

/// `Dot-string = Atom *("." Atom)` (hand-written, like [`domain`]).
fn dot_string(text: &str) -> Res<'_, &str> {
    let end = dotted(text.as_bytes(), is_atext, |_| true).ok_or_else(|| verify_error(text))?;
    match (text.get(..end), text.get(end..)) {
        (Some(d), Some(rest)) => Ok((rest, d)),
        _ => Err(verify_error(text)),
    }
}

/// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE`
fn quoted_string(text: &str) -> Res<'_, &str> {
    let i = text.as_bytes();
    if i.first() != Some(&b'"') {
        return Err(verify_error(text));
    }
    let mut n = 1;
    while n < i.len() {
        match i[n] {
            b'"' => {
                return match (text.get(n + 1..), text.get(..n + 1)) {
                    (Some(rest), Some(q)) => Ok((rest, q)),
                    _ => Err(verify_error(text)),
                };
            }
            // quoted-pairSMTP = %d92 %d32-126
            b'\\' => match i.get(n + 1) {
                Some(c) if (32..=126).contains(c) => n += 2,
                _ => return Err(verify_error(text)),
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 non-ASCII
            c if (32..=126).contains(&c) || c >= 0x80 => n += 1,
            _ => return Err(verify_error(text)),
        }
    }
    Err(verify_error(text))
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )`
pub(crate) fn mailbox(i: &str) -> Res<'_, Mailbox> {
    let (local, host, end) = scan_mailbox(i, 0).ok_or_else(|| verify_error(i))?;
    Ok((&i[end..], build_mailbox(i, local, host)))
}

/// Where a path's parts lie in the text it was scanned from. The scan checks the whole
/// grammar; the values are built from it only where they are kept: a value built deep in the
/// scan and returned through each layer of results is copied at each, and read back right
/// after it was written (a store-forwarding stall). This took a fifth off an EHLO line.
/// Positions are `u16`, so that the scan stays small: a path holds at most 256 octets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PathScan {
    /// `<>` (only in a reverse path).
    Null,
    /// `<Postmaster>` (only in a forward path).
    Postmaster,
    /// A mailbox: the local part between the two positions, then `@` and the host.
    Mailbox { local: (u16, u16), host: HostScan },
}

/// Where a mailbox's host lies: a domain between two positions, or an address literal.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HostScan {
    Domain(u16, u16),
    Literal(LiteralScan),
}

impl PathScan {
    /// The scan of text that had `by` more octets in front of it.
    pub(crate) fn shifted_left(self, by: u16) -> Self {
        let (local, host) = match self {
            Self::Mailbox { local, host } => (local, host),
            other => return other,
        };
        let pos = |p: (u16, u16)| (p.0 - by, p.1 - by);
        Self::Mailbox {
            local: pos(local),
            host: match host {
                HostScan::Domain(a, b) => HostScan::Domain(a - by, b - by),
                HostScan::Literal(LiteralScan::General { tag, content }) => {
                    HostScan::Literal(LiteralScan::General {
                        tag: pos(tag),
                        content: pos(content),
                    })
                }
                literal => literal,
            },
        }
    }

    /// The reverse path, from the text that was scanned (a scan for a reverse path never
    /// gives `Postmaster`).
    #[inline(always)]
    pub(crate) fn reverse(self, text: &str) -> ReversePath {
        match self {
            Self::Mailbox { local, host } => ReversePath::Mailbox(build_mailbox(text, local, host)),
            Self::Null | Self::Postmaster => ReversePath::Null,
        }
    }

    /// The forward path, from the text that was scanned (a scan for a forward path never
    /// gives `Null`).
    #[inline(always)]
    pub(crate) fn forward(self, text: &str) -> ForwardPath {
        match self {
            Self::Mailbox { local, host } => ForwardPath::Mailbox(build_mailbox(text, local, host)),
            Self::Null | Self::Postmaster => ForwardPath::Postmaster,
        }
    }
}

#[inline(always)]
fn build_mailbox(text: &str, local: (u16, u16), host: HostScan) -> Mailbox {
    let part = |p: (u16, u16)| smol(&text[usize::from(p.0)..usize::from(p.1)]);
    Mailbox {
        local: LocalPart(part(local)),
        host: match host {
            HostScan::Domain(a, b) => Host::Domain(Domain(part((a, b)))),
            HostScan::Literal(l) => Host::Literal(l.build(text)),
        },
    }
}

/// Scans the mailbox at `start` of `text`: the local part's place, the host's, and the end
/// (`None` past 65,535 octets, which no path reaches).
#[inline(always)]
fn scan_mailbox(text: &str, start: usize) -> Option<((u16, u16), HostScan, usize)> {
    let i = &text[start..];
    // A dot-string never starts with a quote.
    let local_len = if i.starts_with('"') {
        quoted_string(i).ok()?.1.len()
    } else {
        dot_string(i).ok()?.1.len()
    };
    let at = start + local_len;
    if text.as_bytes().get(at) != Some(&b'@') {
        return None;
    }
    let (host, end) = if text.as_bytes().get(at + 1) == Some(&b'[') {
        let (literal, end) = scan_literal(text, at + 1)?;
        (HostScan::Literal(literal), end)
    } else {
        let end = at + 1 + domain_len(&text[at + 1..])?;
        (
            HostScan::Domain(u16::try_from(at + 1).ok()?, u16::try_from(end).ok()?),
            end,
        )
    };
    let local = (u16::try_from(start).ok()?, u16::try_from(at).ok()?);
    Some((local, host, end))
}

/// `A-d-l = At-domain *( "," At-domain )` followed by `:`; accepted and dropped (Appendix C).
fn source_route(i: &str) -> Res<'_, ()> {
    let at_domain = (tag("@"), domain);
    let (rest, _) = terminated(separated_list1(tag(","), at_domain), tag(":")).parse(i)?;
    Ok((rest, ()))
}

/// `Reverse-path = Path / "<>"` (`reverse`) or `Forward-path = Path / "<Postmaster>"`
/// (RFC 5321 §4.1.1.3), where `Path = "<" [ A-d-l ":" ] Mailbox ">"`: the scan and the number
/// of octets it took. By hand: the hot path of every MAIL and RCPT, where nom's combinators
/// cost more than the grammar; the rare source route keeps its nom parser.
#[inline(always)]
pub(crate) fn scan_path(text: &str, reverse: bool) -> Option<(PathScan, usize)> {
    const POSTMASTER: &str = "<postmaster>";
    if reverse {
        if text.starts_with("<>") {
            return Some((PathScan::Null, 2));
        }
    } else if text
        .get(..POSTMASTER.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(POSTMASTER))
    {
        return Some((PathScan::Postmaster, POSTMASTER.len()));
    }
    if !text.starts_with('<') {
        return None;
    }
    let mut start = 1;
    if text[1..].starts_with('@')
        && let Ok((r, ())) = source_route(&text[1..])
    {
        start = text.len() - r.len();
    }
    let (local, host, end) = scan_mailbox(text, start)?;
    if text.as_bytes().get(end) != Some(&b'>') || end + 1 > MAX_PATH_LEN {
        return None;
    }
    Some((PathScan::Mailbox { local, host }, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Reverse-path = Path / "<>"`
    fn reverse_path(i: &str) -> Res<'_, ReversePath> {
        let (scan, end) = scan_path(i, true).ok_or_else(|| verify_error(i))?;
        Ok((&i[end..], scan.reverse(i)))
    }

    /// `Forward-path = Path`, or `"<Postmaster>"` (RFC 5321 §4.1.1.3).
    fn forward_path(i: &str) -> Res<'_, ForwardPath> {
        let (scan, end) = scan_path(i, false).ok_or_else(|| verify_error(i))?;
        Ok((&i[end..], scan.forward(i)))
    }

    fn mb(s: &str) -> Mailbox {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc_5321_examples() {
        // §4.1.1.3 and Appendix D examples.
        assert_eq!(mb("Smith@bar.com").to_string(), "Smith@bar.com");
        assert_eq!(mb("Jones@foo.com").host().to_string(), "foo.com");
        let (_, p) = forward_path("<@hosta.int,@jkl.org:userc@d.bar.org>").unwrap();
        assert_eq!(p, ForwardPath::Mailbox(mb("userc@d.bar.org")));
        let (_, p) = reverse_path("<>").unwrap();
        assert_eq!(p, ReversePath::Null);
        let (_, p) = forward_path("<Postmaster>").unwrap();
        assert_eq!(p, ForwardPath::Postmaster);
        let (_, p) = forward_path("<postmaster@example.com>").unwrap();
        assert_eq!(p, ForwardPath::Mailbox(mb("postmaster@example.com")));
    }

    #[test]
    fn ipv4_literals_read_as_the_standard_parser_reads_them() {
        for s in [
            "192.0.2.7",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "1234.1.1.1",
            "1.2.3.4 ",
            "",
            "a.b.c.d",
            "10.0.0.00",
            "1.2.3.2555",
        ] {
            assert_eq!(ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok(), "{s:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn ipv4_agrees_with_the_standard_parser(s in "[0-9.]{0,17}") {
            proptest::prop_assert_eq!(ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok());
        }
    }

    #[test]
    fn quoted_local_parts() {
        let m = mb(r#""John Doe"@example.com"#);
        assert!(m.local_part().is_quoted());
        assert_eq!(m.local_part().unquoted(), "John Doe");
        let m = mb(r#""a\"b\\c"@example.com"#);
        assert_eq!(m.local_part().unquoted(), r#"a"b\c"#);
        assert!(r#""unterminated@example.com"#.parse::<Mailbox>().is_err());
        assert!("\"tab\there\"@example.com".parse::<Mailbox>().is_err());
    }

    #[test]
    fn dot_strings() {
        assert!("a.b.c@example.com".parse::<Mailbox>().is_ok());
        assert!("user+tag@example.com".parse::<Mailbox>().is_ok());
        assert!(".a@example.com".parse::<Mailbox>().is_err());
        assert!("a..b@example.com".parse::<Mailbox>().is_err());
        assert!("a.@example.com".parse::<Mailbox>().is_err());
        assert!("a b@example.com".parse::<Mailbox>().is_err());
        assert!("ab@".parse::<Mailbox>().is_err());
        assert!("@example.com".parse::<Mailbox>().is_err());
    }

    #[test]
    fn domains() {
        assert!(Domain::try_from("example.com").is_ok());
        assert!(Domain::try_from("a-b.c0").is_ok());
        assert!(Domain::try_from("localhost").is_ok());
        assert!(Domain::try_from("-a.com").is_err());
        assert!(Domain::try_from("a-.com").is_err());
        assert!(Domain::try_from("a..com").is_err());
        assert!(Domain::try_from("a.com.").is_err());
        assert!(Domain::try_from("a_b.com").is_err());
        assert!(Domain::try_from(&*"a".repeat(64)).is_err());
        let long = vec!["abc"; 70].join(".");
        assert!(Domain::try_from(long.as_str()).is_err());
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            Host::try_from("[192.0.2.1]").unwrap(),
            Host::Literal(AddressLiteral::Ipv4("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            Host::try_from("[IPv6:2001:db8::1]").unwrap(),
            Host::Literal(AddressLiteral::Ipv6("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            Host::try_from("[x-tag:some-content]").unwrap(),
            Host::Literal(AddressLiteral::General {
                tag: "x-tag".into(),
                content: "some-content".into()
            })
        );
        assert!(Host::try_from("[300.1.1.1]").is_err());
        assert!(Host::try_from("[IPv6:zz]").is_err());
        assert!(Host::try_from("[1.2.3.4").is_err());
        assert_eq!(mb("user@[10.0.0.1]").to_string(), "user@[10.0.0.1]");
    }

    #[test]
    fn utf8_addresses_are_marked() {
        let m = mb("用户@例子.广告");
        assert!(m.is_utf8());
        assert!(!mb("user@example.com").is_utf8());
        let m = mb("user@bücher.de");
        assert!(m.is_utf8());
        // Invalid UTF-8 never gets here: the parsers take text.
    }

    #[test]
    fn hand_written_scanners_stop_where_the_grammar_does() {
        let d = |s: &str| {
            domain(s)
                .map(|(rest, d)| (d.0, rest.as_bytes().to_vec()))
                .map_err(|_| ())
        };
        assert_eq!(d("a.b.c>x").unwrap(), ("a.b.c".into(), b">x".to_vec()));
        // A trailing dot, or a bad label after a good one, is left over, not part of it.
        assert_eq!(d("a.b.>").unwrap(), ("a.b".into(), b".>".to_vec()));
        assert_eq!(d("a.-b>").unwrap(), ("a".into(), b".-b>".to_vec()));
        assert_eq!(d("a.b-.c").unwrap(), ("a".into(), b".b-.c".to_vec()));
        assert!(d("").is_err() && d(".a").is_err() && d("-a").is_err() && d("a-").is_err());
        let l63 = "x".repeat(63);
        assert_eq!(d(&format!("{l63}.b")).unwrap().0, format!("{l63}.b"));
        assert!(d(&"x".repeat(64)).is_err());
        assert_eq!(d(&format!("a.{}", "x".repeat(64))).unwrap().0, "a");
        assert_eq!(
            d("例子.广告 ").unwrap(),
            ("例子.广告".into(), b" ".to_vec())
        );
        // 255 octets at most.
        let long = vec!["abcdefg"; 33].join(".");
        assert!(d(&long[..255]).is_ok() && d(&long).is_err());
        let ds = |s: &str| {
            dot_string(s)
                .map(|(rest, v)| (v.as_bytes().to_vec(), rest.as_bytes().to_vec()))
                .map_err(|_| ())
        };
        assert_eq!(ds("a.b@c").unwrap(), (b"a.b".to_vec(), b"@c".to_vec()));
        assert_eq!(ds("a.@c").unwrap(), (b"a".to_vec(), b".@c".to_vec()));
        assert_eq!(ds("a..b@").unwrap(), (b"a".to_vec(), b"..b@".to_vec()));
        assert!(ds("@c").is_err() && ds(".a").is_err());
    }

    #[test]
    fn path_length_limit() {
        let local = "a".repeat(250);
        let p = format!("<{local}@example.com>");
        assert!(forward_path(&p).is_err());
    }
}
