//! ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2 `Mail-parameters`), typed where an
//! extension defines them: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531),
//! AUTH (RFC 4954 §5), RET, ENVID, NOTIFY and ORCPT (RFC 3461).

use std::fmt::{self, Write as _};

use smol_str::SmolStr;

use crate::ProtoError;
use crate::text::{ALNUM, LDH, VALUE, find_octet, is, key, octets_below, octets_equal, word_key};

/// One `esmtp-param`: a keyword (stored upper-case) and an optional value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    keyword: String,
    value: Option<String>,
}

impl Param {
    /// Builds a parameter, checking the RFC 5321 keyword and value grammar.
    pub fn new(keyword: &str, value: Option<&str>) -> Result<Self, ProtoError> {
        check_param(keyword, value)?;
        Ok(Self {
            keyword: keyword.to_ascii_uppercase(),
            value: value.map(str::to_owned),
        })
    }

    /// The keyword, upper-case.
    pub fn keyword(&self) -> &str {
        &self.keyword
    }

    /// The value, if any.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.keyword, v),
            None => f.write_str(&self.keyword),
        }
    }
}

/// Checks one `esmtp-param`: the RFC 5321 keyword and value grammar.
fn check_param(keyword: &str, value: Option<&str>) -> Result<(), ProtoError> {
    // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    let kw = keyword.as_bytes();
    let kw_ok = kw.first().is_some_and(u8::is_ascii_alphanumeric)
        && kw.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    if !kw_ok {
        return Err(ProtoError::ParameterSyntax("Invalid parameter keyword"));
    }
    // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 non-ASCII (RFC 6531 §3.3): on bytes,
    // since the text is UTF-8 and every non-ASCII byte belongs to a non-ASCII character.
    if let Some(v) = value {
        let ok = !v.is_empty()
            && v.bytes()
                .all(|b| (b.is_ascii_graphic() && b != b'=') || b >= 0x80);
        if !ok {
            return Err(ProtoError::ParameterSyntax("Invalid parameter value"));
        }
    }
    Ok(())
}

/// Scans `esmtp-param *(SP esmtp-param)` in one pass over its octets, handing each parameter
/// to `each` as it is found: its keyword, the keyword's [`word_key`] (0 past 8 octets, where no
/// typed keyword is) and its value.
///
/// The grammar (empty words, keyword and value octets) and repeated keywords are checked here
/// and end the scan at once. An error `each` returns about a parameter it interprets is kept
/// and returned only when the rest of the line is well formed: the first syntax error is
/// reported whatever precedes it, as when the whole line was checked before any parameter was
/// interpreted. (One pass that interprets as it goes, instead of a table of the parameters
/// built and then read, was a quarter of a MAIL line's parse.)
#[inline(always)]
fn scan_params<'a>(
    s: &'a str,
    mut each: impl FnMut(&'a str, u64, Option<&'a str>) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    const KEYWORD: ProtoError = ProtoError::ParameterSyntax("Invalid parameter keyword");
    const VALUE: ProtoError = ProtoError::ParameterSyntax("Invalid parameter value");
    // The keys of the keywords seen (eight without allocating), and the longer keywords.
    let mut keys = [0u64; 8];
    let mut seen = 0;
    let mut more_keys: Vec<u64> = Vec::new();
    let mut long: Vec<&str> = Vec::new();
    let mut deferred = None;
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        // One `keyword[=value]` word; every delimiter is ASCII, so the slices fall on
        // character boundaries.
        let start = i;
        if i == b.len() || b[i] == b' ' {
            return Err(ProtoError::ParameterSyntax("Invalid parameter syntax"));
        }
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        if !is(b[i], ALNUM) {
            return Err(KEYWORD);
        }
        while i < b.len() && is(b[i], LDH) {
            i += 1;
        }
        let k = &s[start..i];
        let v = if i < b.len() && b[i] == b'=' {
            // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 non-ASCII (RFC 6531 §3.3)
            i += 1;
            let vstart = i;
            i = value_end(b, i);
            if i == vstart || (i < b.len() && b[i] != b' ') {
                return Err(VALUE);
            }
            Some(&s[vstart..i])
        } else if i < b.len() && b[i] != b' ' {
            return Err(KEYWORD);
        } else {
            None
        };
        let key = if k.len() <= 8 {
            word_key(b, start, k.len())
        } else {
            0
        };
        let repeated = if key == 0 {
            let r = long.iter().any(|q| q.eq_ignore_ascii_case(k));
            long.push(k);
            r
        } else {
            let r = keys[..seen].contains(&key) || more_keys.contains(&key);
            if seen < keys.len() {
                keys[seen] = key;
                seen += 1;
            } else {
                more_keys.push(key);
            }
            r
        };
        if repeated {
            return Err(ProtoError::DuplicateParameter);
        }
        if deferred.is_none() {
            deferred = each(k, key, v).err();
        }
        if i == b.len() {
            return deferred.map_or(Ok(()), Err);
        }
        i += 1;
    }
}

/// The end of the `esmtp-value` octets from `i`: the first octet at or below SP, `=` or DEL.
/// Eight octets at a time (a value is often an address): the lowest octet a word flags is
/// exact, since a false flag can only follow a true one.
fn value_end(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = b.get(i..i + 8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let x = u64::from_le_bytes(a);
        // Octets below 0x21 (octets from 0x80 never flag: `!x` clears their high bit).
        let m = octets_below(x, 0x21) | octets_equal(x, b'=') | octets_equal(x, 0x7F);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && is(b[i], VALUE) {
        i += 1;
    }
    i
}

/// xtext decoding (RFC 3461 §4): `+XX` is the octet with hex value XX (upper-case digits).
pub fn xtext_decode(s: &str) -> Result<String, ProtoError> {
    // xtext octets are the parameter value octets but `+` (checked eight at a time).
    if value_end(s.as_bytes(), 0) != s.len() {
        return Err(XTEXT);
    }
    xtext_decode_value(s).map(String::from)
}

/// `xtchar` and UTF-8 octets (RFC 6533 allows UTF-8 in utf-8-addr-xtext; accepted here too).
fn is_xtext_octet(c: u8) -> bool {
    ((33..=126).contains(&c) && c != b'=' && c != b'+') || c >= 0x80
}

/// [`xtext_decode`] of a parameter value (or part of one), whose octets the parameter scan
/// has already checked (xtext octets are the value octets but `+`), into a [`SmolStr`].
/// Without a `+XX`, the value is its own decoding (no allocation up to 23 octets); a decoding
/// that fits inline is built in a buffer on the stack from the runs between escapes, and needs
/// no UTF-8 check when it is ASCII (the runs are slices of the text, and only an escape can
/// give a non-ASCII octet).
fn xtext_decode_value(s: &str) -> Result<SmolStr, ProtoError> {
    let b = s.as_bytes();
    debug_assert_eq!(value_end(b, 0), b.len(), "not a checked parameter value");
    let plus = |from: usize| find_octet(&b[from..], b'+').map(|p| from + p);
    let Some(mut esc) = plus(0) else {
        return Ok(crate::path::smol(s));
    };
    // With one escape at least, the decoding is at least two octets shorter.
    if b.len() > SmolStr::INLINE_CAP + 2 {
        return xtext_decode_octets(s);
    }
    let mut buf = [0u8; SmolStr::INLINE_CAP];
    let (mut i, mut n) = (0, 0);
    loop {
        let run = esc - i;
        // Only well-formed escapes make the decoding shorter: text with a bad one may not
        // fit, and the general decoding reports it.
        if n + run >= buf.len() && esc < b.len() || n + run > buf.len() {
            return xtext_decode_octets(s);
        }
        buf[n..n + run].copy_from_slice(&b[i..esc]);
        n += run;
        if esc == b.len() {
            break;
        }
        buf[n] = xtext_escape(b, esc)?;
        n += 1;
        i = esc + 3;
        esc = plus(i).unwrap_or(b.len());
    }
    match crate::text::ascii(&buf[..n]) {
        Some(t) => Ok(SmolStr::new_inline(t)),
        None => std::str::from_utf8(&buf[..n])
            .map(SmolStr::new_inline)
            .map_err(|_| XTEXT),
    }
}

const XTEXT: ProtoError = ProtoError::ParameterSyntax("Invalid xtext");

/// The octet of the `+XX` escape at `i` (upper-case hex digits).
fn xtext_escape(b: &[u8], i: usize) -> Result<u8, ProtoError> {
    const ERR: ProtoError = XTEXT;
    if b[i] != b'+' {
        return Err(ERR);
    }
    let hex = b.get(i + 1..i + 3).ok_or(ERR)?;
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ERR),
    };
    Ok(digit(hex[0])? << 4 | digit(hex[1])?)
}

/// The general decoding: escapes may give any octet, so the result is checked for UTF-8.
fn xtext_decode_octets(s: &str) -> Result<SmolStr, ProtoError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if is_xtext_octet(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            out.push(xtext_escape(b, i)?);
            i += 3;
        }
    }
    std::str::from_utf8(&out)
        .map(crate::path::smol)
        .map_err(|_| ProtoError::ParameterSyntax("Invalid xtext"))
}

/// xtext encoding (RFC 3461 §4): characters outside `!`..`~`, `+` and `=` become `+XX`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// The BODY parameter (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyType {
    /// `BODY=7BIT`
    SevenBit,
    /// `BODY=8BITMIME`
    EightBitMime,
    /// `BODY=BINARYMIME` (requires BDAT)
    BinaryMime,
}

impl BodyType {
    fn as_str(self) -> &'static str {
        match self {
            Self::SevenBit => "7BIT",
            Self::EightBitMime => "8BITMIME",
            Self::BinaryMime => "BINARYMIME",
        }
    }
}

/// The AUTH parameter of MAIL (RFC 4954 §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuthParam {
    /// `AUTH=<>`: the identity is unknown or the message was not submitted with authentication.
    Unknown,
    /// `AUTH=xtext`: the decoded authenticated identity (an addr-spec).
    Identity(String),
}

/// The RET parameter (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`
    Full,
    /// `RET=HDRS`
    Headers,
}

/// The NOTIFY parameter (RFC 3461 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify {
    /// `NOTIFY=NEVER` (then the others are false).
    pub never: bool,
    /// `SUCCESS` listed.
    pub success: bool,
    /// `FAILURE` listed.
    pub failure: bool,
    /// `DELAY` listed.
    pub delay: bool,
}

/// The ORCPT parameter (RFC 3461 §4.2): `addr-type ";" xtext`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822`.
    pub addr_type: SmolStr,
    /// The decoded original recipient.
    pub address: SmolStr,
}

/// Parameters of MAIL FROM. New SMTP extensions add fields, so it is `#[non_exhaustive]`:
/// build one from [`Default`] and set the fields you need.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct MailParameters {
    /// `SIZE=n`, the declared message size in octets.
    pub size: Option<u64>,
    /// `BODY=`
    pub body: Option<BodyType>,
    /// `SMTPUTF8` present.
    pub smtputf8: bool,
    /// `AUTH=`
    pub auth: Option<AuthParam>,
    /// `RET=`
    pub ret: Option<Ret>,
    /// `ENVID=`, decoded.
    pub envid: Option<String>,
    /// `REQUIRETLS` present (RFC 8689): every hop must use TLS with a verified certificate.
    pub requiretls: bool,
    /// Every other parameter, in order. A server answers 555 to those it does not implement.
    pub other: Vec<Param>,
}

/// Parameters of RCPT TO. New SMTP extensions add fields, so it is `#[non_exhaustive]`:
/// build one from [`Default`] and set the fields you need.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct RcptParameters {
    /// `NOTIFY=`
    pub notify: Option<Notify>,
    /// `ORCPT=`
    pub orcpt: Option<Orcpt>,
    /// Every other parameter, in order.
    pub other: Vec<Param>,
}

const SIZE: u64 = key(b"SIZE");
const BODY: u64 = key(b"BODY");
const SMTPUTF8: u64 = key(b"SMTPUTF8");
const AUTH: u64 = key(b"AUTH");
const RET: u64 = key(b"RET");
const ENVID: u64 = key(b"ENVID");
const NOTIFY: u64 = key(b"NOTIFY");
const ORCPT: u64 = key(b"ORCPT");

fn required<'a>(v: Option<&'a str>, what: &'static str) -> Result<&'a str, ProtoError> {
    v.ok_or(ProtoError::ParameterSyntax(what))
}

/// A parameter this crate does not type, kept with its keyword upper-cased.
fn other(keyword: &str, value: Option<&str>) -> Param {
    Param {
        keyword: keyword.to_ascii_uppercase(),
        value: value.map(str::to_owned),
    }
}

impl MailParameters {
    /// Parses the text after the reverse-path (without the leading space).
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let mut out = Self::default();
        scan_params(s, |k, key, value| {
            match key {
                SIZE => {
                    const ERR: ProtoError = ProtoError::ParameterSyntax("Invalid SIZE parameter");
                    let v = value.ok_or(ERR)?;
                    // 1*20DIGIT: at most 20 digits, which may still overflow a u64.
                    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(ERR);
                    }
                    let n = v.bytes().try_fold(0u64, |n, d| {
                        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    });
                    out.size = Some(n.ok_or(ERR)?);
                }
                BODY => {
                    const ERR: ProtoError = ProtoError::ParameterSyntax("Invalid BODY parameter");
                    let v = value.ok_or(ERR)?;
                    out.body = Some(match v.len() {
                        4 if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                        8 if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                        10 if v.eq_ignore_ascii_case("BINARYMIME") => BodyType::BinaryMime,
                        _ => return Err(ERR),
                    });
                }
                SMTPUTF8 => {
                    if value.is_some() {
                        return Err(ProtoError::ParameterSyntax("SMTPUTF8 takes no value"));
                    }
                    out.smtputf8 = true;
                }
                AUTH => {
                    let v = required(value, "Invalid AUTH parameter")?;
                    out.auth = Some(if v == "<>" {
                        AuthParam::Unknown
                    } else {
                        AuthParam::Identity(xtext_decode_value(v)?.into())
                    });
                }
                RET => {
                    let v = required(value, "Invalid RET parameter")?;
                    out.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                        Ret::Full
                    } else if v.eq_ignore_ascii_case("HDRS") {
                        Ret::Headers
                    } else {
                        return Err(ProtoError::ParameterSyntax("Invalid RET parameter"));
                    });
                }
                ENVID => {
                    let v: String =
                        xtext_decode_value(required(value, "Invalid ENVID parameter")?)?.into();
                    // RFC 3461 §4.4: at most 100 characters of printable ASCII.
                    if v.len() > 100 || !v.bytes().all(|b| (32..=126).contains(&b)) {
                        return Err(ProtoError::ParameterSyntax("Invalid ENVID parameter"));
                    }
                    out.envid = Some(v);
                }
                // Longer than a word key: told by its name.
                _ if k.eq_ignore_ascii_case("REQUIRETLS") => {
                    if value.is_some() {
                        return Err(ProtoError::ParameterSyntax("REQUIRETLS takes no value"));
                    }
                    out.requiretls = true;
                }
                _ => out.other.push(other(k, value)),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first parameter this crate does not type, if any: a server that implements none of
    /// the others answers it with 555 5.5.4 ([`ProtoError::UnknownParameter`]).
    pub fn first_unknown(&self) -> Option<&Param> {
        self.other.first()
    }

    /// True when no parameter was given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for MailParameters {
    /// Writes ` KEY=VALUE` for each parameter (each with a leading space).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.size {
            write!(f, " SIZE={s}")?;
        }
        if let Some(b) = self.body {
            write!(f, " BODY={}", b.as_str())?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        match &self.auth {
            Some(AuthParam::Unknown) => f.write_str(" AUTH=<>")?,
            Some(AuthParam::Identity(id)) => write!(f, " AUTH={}", xtext_encode(id))?,
            None => {}
        }
        match self.ret {
            Some(Ret::Full) => f.write_str(" RET=FULL")?,
            Some(Ret::Headers) => f.write_str(" RET=HDRS")?,
            None => {}
        }
        if let Some(e) = &self.envid {
            write!(f, " ENVID={}", xtext_encode(e))?;
        }
        if self.requiretls {
            f.write_str(" REQUIRETLS")?;
        }
        for p in &self.other {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// `NOTIFY="NEVER" / 1#notify-list-element` (RFC 3461 §4.1), each element at most once.
fn parse_notify(v: &str) -> Result<Notify, ProtoError> {
    const ERR: ProtoError = ProtoError::ParameterSyntax("Invalid NOTIFY parameter");
    const NEVER: u64 = key(b"NEVER");
    const SUCCESS: u64 = key(b"SUCCESS");
    const FAILURE: u64 = key(b"FAILURE");
    const DELAY: u64 = key(b"DELAY");
    let b = v.as_bytes();
    let mut n = Notify::default();
    let mut start = 0;
    loop {
        // Each element is read as one word: its end is the first `,` in it (or the value's
        // end), and an element of 8 octets or more names nothing. No letter check is needed:
        // a folded key equals one of the four names only when its octets are those letters in
        // some case (folding clears bit 5, which only a letter's two cases differ by), and
        // every other element is refused.
        let word = word_key(b, start, (b.len() - start).min(8));
        let comma = octets_equal(word, b',' & 0xDF);
        let len = if comma != 0 {
            (comma.trailing_zeros() / 8) as usize
        } else {
            (b.len() - start).min(8)
        };
        if len > 7 {
            return Err(ERR);
        }
        let end = start + len;
        let item = word & ((1u64 << (8 * len)) - 1);
        let slot = match item {
            NEVER if start == 0 && end == b.len() => {
                n.never = true;
                return Ok(n);
            }
            SUCCESS => &mut n.success,
            FAILURE => &mut n.failure,
            DELAY => &mut n.delay,
            _ => return Err(ERR),
        };
        if *slot {
            return Err(ERR);
        }
        *slot = true;
        if end == b.len() {
            return Ok(n);
        }
        start = end + 1;
    }
}

impl RcptParameters {
    /// Parses the text after the forward-path (without the leading space).
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let mut out = Self::default();
        scan_params(s, |k, key, value| {
            match key {
                NOTIFY => {
                    let v = required(value, "Invalid NOTIFY parameter")?;
                    out.notify = Some(parse_notify(v)?);
                }
                ORCPT => {
                    const ERR: ProtoError = ProtoError::ParameterSyntax("Invalid ORCPT parameter");
                    let v = required(value, "Invalid ORCPT parameter")?;
                    // addr-type = atom (RFC 3461 §4.2), held to letters, digits and dashes.
                    let semi = find_octet(v.as_bytes(), b';').ok_or(ERR)?;
                    let (t, a) = (&v[..semi], &v[semi + 1..]);
                    let type_ok = !t.is_empty() && t.bytes().all(|b| is(b, LDH));
                    if !type_ok || a.is_empty() {
                        return Err(ERR);
                    }
                    out.orcpt = Some(Orcpt {
                        addr_type: crate::path::smol(t),
                        address: xtext_decode_value(a)?,
                    });
                }
                _ => out.other.push(other(k, value)),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first parameter this crate does not type, if any (see
    /// [`MailParameters::first_unknown`]).
    pub fn first_unknown(&self) -> Option<&Param> {
        self.other.first()
    }
}

impl fmt::Display for RcptParameters {
    /// Writes ` KEY=VALUE` for each parameter (each with a leading space).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.notify {
            if n.never {
                f.write_str(" NOTIFY=NEVER")?;
            } else {
                let items: Vec<&str> = [
                    (n.success, "SUCCESS"),
                    (n.failure, "FAILURE"),
                    (n.delay, "DELAY"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, s)| *s)
                .collect();
                write!(f, " NOTIFY={}", items.join(","))?;
            }
        }
        if let Some(o) = &self.orcpt {
            write!(f, " ORCPT={};{}", o.addr_type, xtext_encode(&o.address))?;
        }
        for p in &self.other {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod one_pass {
    use super::*;
    use proptest::prelude::*;

    /// The two-pass reference the one-pass scan replaced: split on spaces, then on the first
    /// `=`, then check each part.
    fn reference(s: &str) -> Result<Vec<(String, Option<String>)>, ProtoError> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for word in s.split(' ') {
            let (k, v) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            if k.is_empty() && v.is_none() {
                return Err(ProtoError::ParameterSyntax("Invalid parameter syntax"));
            }
            check_param(k, v)?;
            if out.iter().any(|(q, _)| q.eq_ignore_ascii_case(k)) {
                return Err(ProtoError::DuplicateParameter);
            }
            out.push((k.to_owned(), v.map(str::to_owned)));
        }
        Ok(out)
    }

    /// The parameters as the scan hands them out.
    fn scanned(s: &str) -> Result<Vec<(String, Option<String>)>, ProtoError> {
        let mut out = Vec::new();
        scan_params(s, |k, _, v| {
            out.push((k.to_owned(), v.map(str::to_owned)));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn more_than_eight_parameters() {
        let got = scanned("K1 K2=x K3 K4 K5 K6 K7 K8 K9=y K10").unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[8], ("K9".to_owned(), Some("y".to_owned())));
        for dup in [
            "K1 K2 K3 K4 K5 K6 K7 K8 K9 k9",
            "K1 K2 K3 K4 K5 K6 K7 K8 K9 k1",
            "LONGKEYWORD=1 K longkeyword=2",
        ] {
            assert_eq!(scanned(dup), Err(ProtoError::DuplicateParameter), "{dup}");
        }
    }

    #[test]
    fn keywords_are_typed_by_their_whole_name_in_any_case() {
        let p = MailParameters::parse("sMtPuTf8 SIZEE=1 SIZ=2 size=5 Body=7bit").unwrap();
        assert!(p.smtputf8);
        assert_eq!((p.size, p.body), (Some(5), Some(BodyType::SevenBit)));
        let other: Vec<_> = p.other.iter().map(|p| p.to_string()).collect();
        assert_eq!(other, ["SIZEE=1", "SIZ=2"]);
        let p = RcptParameters::parse("notify=never ORCPTX=a Orcpt=rfc822;x").unwrap();
        assert_eq!(p.notify.map(|n| n.never), Some(true));
        assert_eq!(p.orcpt.map(|o| o.address), Some("x".into()));
        assert_eq!(p.other[0].to_string(), "ORCPTX=a");
        assert_eq!(
            MailParameters::parse("SIZE=18446744073709551616"),
            Err(ProtoError::ParameterSyntax("Invalid SIZE parameter")),
            "one past u64::MAX"
        );
        assert_eq!(
            MailParameters::parse("SIZE=18446744073709551615")
                .unwrap()
                .size,
            Some(u64::MAX)
        );
    }

    #[test]
    fn a_syntax_error_comes_before_a_bad_value_that_precedes_it() {
        // A typed parameter's value is wrong and a later word breaks the grammar: the
        // grammar error is the one reported, as when the line was checked first.
        assert_eq!(
            MailParameters::parse("SIZE=abc BODY=7BIT ==x"),
            Err(ProtoError::ParameterSyntax("Invalid parameter keyword"))
        );
        assert_eq!(
            MailParameters::parse("SIZE=abc size=1"),
            Err(ProtoError::DuplicateParameter)
        );
        assert_eq!(
            MailParameters::parse("SIZE=abc BODY=9BIT"),
            Err(ProtoError::ParameterSyntax("Invalid SIZE parameter"))
        );
        assert_eq!(
            RcptParameters::parse("NOTIFY=SOMETIMES ORCPT=rfc822;a@b X=="),
            Err(ProtoError::ParameterSyntax("Invalid parameter value"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn the_one_pass_scan_agrees_with_the_reference(
            s in "[ =aAz1-_é;,+\\t]{0,24}"
        ) {
            prop_assert_eq!(scanned(&s), reference(&s), "{:?}", s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_mail_parameters() {
        let p = MailParameters::parse(
            "SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=e+3Dmc2@example.com RET=HDRS ENVID=QQ314159",
        )
        .unwrap();
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(BodyType::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(
            p.auth,
            Some(AuthParam::Identity("e=mc2@example.com".into()))
        );
        assert_eq!(p.ret, Some(Ret::Headers));
        assert_eq!(p.envid.as_deref(), Some("QQ314159"));
        assert!(p.first_unknown().is_none());
        assert_eq!(
            p.to_string(),
            " SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=e+3Dmc2@example.com RET=HDRS ENVID=QQ314159"
        );
    }

    #[test]
    fn auth_null_and_xtext() {
        // RFC 4954 §5 example: AUTH=<>
        let p = MailParameters::parse("AUTH=<>").unwrap();
        assert_eq!(p.auth, Some(AuthParam::Unknown));
        assert_eq!(xtext_decode("a+2Bb").unwrap(), "a+b");
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert!(xtext_decode("a+2").is_err());
        // Found by the differential fuzz target (`AUTH=+`): an escape cut short at once.
        for cut in ["+", "+2", "a+", "++41"] {
            assert_eq!(
                xtext_decode(cut),
                Err(ProtoError::ParameterSyntax("Invalid xtext"))
            );
        }
        // And a bad escape after a run that fills the inline buffer.
        let long = format!("{}+", "o".repeat(24));
        assert_eq!(
            xtext_decode(&long),
            Err(ProtoError::ParameterSyntax("Invalid xtext"))
        );
        let fits = format!("{}+41", "o".repeat(22));
        assert_eq!(xtext_decode(&fits).unwrap(), format!("{}A", "o".repeat(22)));
        let over = format!("{}+41", "o".repeat(23));
        assert_eq!(xtext_decode(&over).unwrap(), format!("{}A", "o".repeat(23)));
        assert_eq!(
            MailParameters::parse("AUTH=+ NO2B"),
            Err(ProtoError::ParameterSyntax("Invalid xtext"))
        );
        assert!(xtext_decode("a+zz").is_err());
        assert!(xtext_decode("a+2b").is_err(), "lower-case hex is not xtext");
        // The three paths: no escape, ASCII escapes, escapes that spell UTF-8 (checked).
        assert_eq!(
            xtext_decode("carol@example.net").unwrap(),
            "carol@example.net"
        );
        assert_eq!(xtext_decode("+2Bé+3D+20x").unwrap(), "+é= x");
        assert_eq!(xtext_decode("a+E4+B8+ADb").unwrap(), "a中b");
        assert!(xtext_decode("a+FFb").is_err(), "not UTF-8 once decoded");
        assert!(xtext_decode("a+E4+B8").is_err(), "a cut UTF-8 sequence");
        assert!(xtext_decode("a b").is_err() && xtext_decode("a=b").is_err());
        let long = format!("{}+2B{}", "x".repeat(40), "y".repeat(40));
        assert_eq!(
            xtext_decode(&long).unwrap(),
            format!("{}+{}", "x".repeat(40), "y".repeat(40))
        );
    }

    #[test]
    fn parameter_errors() {
        assert_eq!(
            MailParameters::parse("SIZE=abc"),
            Err(ProtoError::ParameterSyntax("Invalid SIZE parameter"))
        );
        assert_eq!(
            MailParameters::parse("SIZE=1 SIZE=2"),
            Err(ProtoError::DuplicateParameter)
        );
        assert_eq!(
            MailParameters::parse("size=1 SIZE=2"),
            Err(ProtoError::DuplicateParameter)
        );
        assert!(MailParameters::parse("BODY=9BIT").is_err());
        assert!(MailParameters::parse("SMTPUTF8=yes").is_err());
        assert!(MailParameters::parse("-X=1").is_err());
        assert!(MailParameters::parse("X==1").is_err());
        assert!(MailParameters::parse("SIZE=1  BODY=7BIT").is_err());
        assert!(MailParameters::parse(&format!("ENVID={}", "a".repeat(101))).is_err());
        let p = MailParameters::parse("X-FOO=bar MT-PRIORITY=3").unwrap();
        assert_eq!(p.first_unknown().unwrap().keyword(), "X-FOO");
    }

    #[test]
    fn rcpt_dsn_parameters() {
        // RFC 3461 §4.2 / §4.1 examples.
        let p =
            RcptParameters::parse("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Example.COM").unwrap();
        let n = p.notify.unwrap();
        assert!(n.success && n.failure && !n.delay && !n.never);
        assert_eq!(
            p.orcpt,
            Some(Orcpt {
                addr_type: "rfc822".into(),
                address: "Bob@Example.COM".into()
            })
        );
        assert_eq!(
            p.to_string(),
            " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Example.COM"
        );
        assert!(
            RcptParameters::parse("NOTIFY=NEVER")
                .unwrap()
                .notify
                .unwrap()
                .never
        );
        assert!(RcptParameters::parse("NOTIFY=NEVER,SUCCESS").is_err());
        assert!(RcptParameters::parse("NOTIFY=DELAY,DELAY").is_err());
        assert!(RcptParameters::parse("ORCPT=rfc822").is_err());
    }

    /// Every NOTIFY list the element words must take apart exactly: any case, any order, and
    /// nothing that is not one of the four names (near misses, digits, empty elements, long
    /// elements, elements in a long list).
    #[test]
    fn notify_lists() {
        let notify = |v: &str| parse_notify(v).map(|n| (n.never, n.success, n.failure, n.delay));
        for (v, want) in [
            ("NEVER", (true, false, false, false)),
            ("never", (true, false, false, false)),
            ("SUCCESS", (false, true, false, false)),
            ("failure,Success", (false, true, true, false)),
            ("DELAY,FAILURE,SUCCESS", (false, true, true, true)),
            ("Delay", (false, false, false, true)),
        ] {
            assert_eq!(notify(v), Ok(want), "{v}");
        }
        for bad in [
            "SUCCES",
            "SUCCESSS",
            "SUCCESSFUL",
            "SUCCESS,",
            ",SUCCESS",
            "SUCCESS,,FAILURE",
            "DELAY,DELAY",
            "NEVER,SUCCESS",
            "SUCCESS,NEVER",
            "DELA1",
            "D3LAY",
            "DELAY;",
            "DELAY,FAILURE,SUCCESS,X",
            "FAILURE,SUCCESS,DELAYED",
            "\u{e9}",
        ] {
            assert!(notify(bad).is_err(), "{bad}");
        }
        // Through the parameter scan, with the value at the end of the line and before another.
        let p = RcptParameters::parse("NOTIFY=delay ORCPT=rfc822;a@b").unwrap();
        assert!(p.notify.unwrap().delay);
        assert!(RcptParameters::parse("NOTIFY=DELAYS ORCPT=rfc822;a@b").is_err());
    }

    #[test]
    fn requiretls_is_typed_takes_no_value_and_round_trips() {
        let p = MailParameters::parse("SIZE=10 requiretls").unwrap();
        assert!(p.requiretls);
        assert!(p.first_unknown().is_none());
        assert_eq!(p.to_string(), " SIZE=10 REQUIRETLS");
        assert!(MailParameters::parse("REQUIRETLS=yes").is_err());
        assert!(!MailParameters::parse("SIZE=10").unwrap().requiretls);
    }
}
