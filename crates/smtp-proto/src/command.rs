//! SMTP commands (RFC 5321 §4.1, plus LHLO from RFC 2033, BDAT from RFC 3030, STARTTLS from
//! RFC 3207 and AUTH from RFC 4954): parsing of one command line and encoding back to the wire.

use std::fmt;

use bytes::{BufMut, BytesMut};
use smol_str::SmolStr;
use zeroize::Zeroize;

use crate::ProtoError;
use crate::params::{MailParameters, RcptParameters};
use crate::path::{self, ForwardPath, Host, PathScan, ReversePath};
use crate::text::key;

/// A SASL mechanism name (RFC 4422 §3.1): 1 to 20 characters of `A-Z 0-9 - _`, stored
/// upper-case (SMTP AUTH mechanism names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mechanism(SmolStr);

impl Mechanism {
    /// Validates and upper-cases a mechanism name.
    pub fn new(name: &str) -> Result<Self, ProtoError> {
        const ERR: ProtoError = ProtoError::ArgumentSyntax("Invalid mechanism name");
        // Upper-cased into a buffer as it is checked: at most 20 octets, always inline.
        let mut buf = [0u8; 20];
        if name.is_empty() || name.len() > buf.len() {
            return Err(ERR);
        }
        for (o, &b) in buf.iter_mut().zip(name.as_bytes()) {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(ERR);
            }
            *o = b.to_ascii_uppercase();
        }
        let upper = crate::text::ascii(&buf[..name.len()]).ok_or(ERR)?;
        Ok(Self(SmolStr::new_inline(upper)))
    }

    /// The upper-case name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The initial response of `AUTH mechanism initial-response` (RFC 4954 §4), still base64
/// encoded, exactly as the client sent it. `=` stands for an empty response.
///
/// It carries credentials: `Debug` never shows it and it is zeroized on drop. Up to 62 octets
/// (PLAIN with a short name and password) it is held inline, without an allocation.
#[derive(Clone)]
pub struct InitialResponse(SecretRepr);

#[derive(Clone)]
enum SecretRepr {
    Inline { len: u8, buf: [u8; INLINE_SECRET] },
    Heap(Vec<u8>),
}

const INLINE_SECRET: usize = 62;

impl InitialResponse {
    /// Wraps the base64 text (or `=`).
    pub fn new(base64: impl AsRef<[u8]>) -> Self {
        let b = base64.as_ref();
        Self(match u8::try_from(b.len()) {
            Ok(len) if b.len() <= INLINE_SECRET => {
                let mut buf = [0u8; INLINE_SECRET];
                buf[..b.len()].copy_from_slice(b);
                SecretRepr::Inline { len, buf }
            }
            _ => SecretRepr::Heap(b.to_vec()),
        })
    }

    /// The base64 text as sent, `=` for empty. Named loudly: this is a secret.
    pub fn expose_secret(&self) -> &[u8] {
        match &self.0 {
            SecretRepr::Inline { len, buf } => &buf[..usize::from(*len)],
            SecretRepr::Heap(v) => v,
        }
    }
}

impl PartialEq for InitialResponse {
    fn eq(&self, other: &Self) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl Eq for InitialResponse {}

impl Drop for InitialResponse {
    fn drop(&mut self) {
        match &mut self.0 {
            // Past `len` the buffer was never written: zeros already.
            SecretRepr::Inline { len, buf } => buf[..usize::from(*len)].zeroize(),
            SecretRepr::Heap(v) => v.zeroize(),
        }
    }
}

impl fmt::Debug for InitialResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitialResponse(<redacted>)")
    }
}

/// One SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `HELO domain`
    Helo(Host),
    /// `EHLO domain`
    Ehlo(Host),
    /// `LHLO domain` (LMTP, RFC 2033)
    Lhlo(Host),
    /// `MAIL FROM:<reverse-path> [params]`
    Mail {
        /// The sender, or `<>`.
        from: ReversePath,
        /// ESMTP parameters.
        params: MailParameters,
    },
    /// `RCPT TO:<forward-path> [params]`
    Rcpt {
        /// The recipient.
        to: ForwardPath,
        /// ESMTP parameters.
        params: RcptParameters,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat {
        /// The exact number of octets that follow.
        size: u64,
        /// True for the last chunk.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop(Option<String>),
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy(String),
    /// `EXPN string`
    Expn(String),
    /// `HELP [string]`
    Help(Option<String>),
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4)
    Auth {
        /// The mechanism, upper-case.
        mechanism: Mechanism,
        /// The initial response, base64 as sent (`=` for empty).
        initial_response: Option<InitialResponse>,
    },
    /// A verb this grammar does not know; a server answers 500 5.5.2.
    Unknown(String),
}

/// Leniencies of the command parser. Each one is named and off unless stated. More may come,
/// so it is `#[non_exhaustive]`: start from [`Default`] and set the ones you need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Accept `MAIL FROM: <a@b>` with one space after the colon. Many clients send it; on by
    /// default.
    pub space_after_colon: bool,
    /// Accept trailing spaces at the end of a MAIL or RCPT line. Off by default.
    pub trailing_spaces: bool,
    /// Accept any single printable word as the HELO/EHLO/LHLO argument (as
    /// [`Host::Unchecked`]), for clients whose host names are not domains (`DESKTOP_42`,
    /// `my.host.`). Off by default.
    pub lenient_helo: bool,
    /// Accept a MAIL/RCPT path without angle brackets (`MAIL FROM: alice@example.org`) and any
    /// number of spaces after the colon (`MAIL FROM:  <a@b>`), as Postfix does with its default
    /// `strict_rfc821_envelopes = no`, go-smtp and aiosmtpd. The address itself is still
    /// checked. Off by default (RFC 5321's `"FROM:" Reverse-path`).
    pub lenient_paths: bool,
    /// Refuse a command line that ends with a bare LF instead of CRLF
    /// ([`ProtoError::BareNewline`], 500 5.5.2), like Postfix's
    /// `smtpd_forbid_bare_newline = reject`. Off by default: such lines are read as if they
    /// ended with CRLF (Postfix 3.9's default, `normalize`), since the smuggling attacks need
    /// a bare LF inside DATA, where it is always refused.
    pub forbid_bare_newline: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            space_after_colon: true,
            trailing_spaces: false,
            lenient_helo: false,
            lenient_paths: false,
            forbid_bare_newline: false,
        }
    }
}

impl Command {
    /// Parses one command line (without its CRLF) with the default options.
    #[inline]
    pub fn parse(line: &[u8]) -> Result<Self, ProtoError> {
        Self::parse_with(line, ParseOptions::default())
    }

    /// Parses one command line (without its CRLF).
    pub fn parse_with(line: &[u8], opts: ParseOptions) -> Result<Self, ProtoError> {
        // Every known verb has at most 8 letters: the space after it is within the first 9
        // octets (found in the first eight as one word; `text::find_octet` over nine octets
        // cost 0.9% more per batch). Only a longer first word needs the search over the whole
        // line.
        let space = match line.get(..8) {
            Some(w) => {
                let m = crate::text::octets_equal(
                    u64::from_le_bytes(w.try_into().unwrap_or([0; 8])),
                    b' ',
                );
                if m != 0 {
                    Some((m.trailing_zeros() / 8) as usize)
                } else if line.len() == 8 {
                    None
                } else if line[8] == b' ' {
                    Some(8)
                } else {
                    memchr::memchr(b' ', line)
                }
            }
            None => line.iter().position(|&b| b == b' '),
        };
        let (verb, rest) = match space {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        // The verb as one number, case folded: one comparison per candidate instead of a
        // slice comparison. A verb of letters (nearly every one) is proved so on that word;
        // any other is checked octet by octet, for the error its octets call for.
        let key = if verb.len() <= 8 {
            crate::text::word_key(line, 0, verb.len())
        } else {
            0
        };
        if verb.is_empty() || verb.len() > 8 || !crate::text::all_letters(key, verb.len()) {
            if verb.is_empty() || !verb.iter().all(|b| b.is_ascii_graphic()) {
                return Err(ProtoError::UnknownCommand);
            }
            return Ok(Self::Unknown(
                String::from_utf8_lossy(&verb[..verb.len().min(32)]).into_owned(),
            ));
        }
        let rest = match rest {
            Some(r) => Some(crate::text::argument_text(r)?),
            None => None,
        };
        // A verb without arguments: the error when there are some (a macro, not a closure,
        // so the command is built where it is returned).
        macro_rules! no_args {
            ($cmd:expr, $msg:literal) => {
                match rest {
                    None => Ok($cmd),
                    Some(_) => Err(ProtoError::ArgumentSyntax($msg)),
                }
            };
        }
        match key {
            MAIL => parse_mail(rest, opts),
            RCPT => parse_rcpt(rest, opts),
            EHLO => Ok(Self::Ehlo(helo_arg(rest, opts)?)),
            DATA => no_args!(Self::Data, "Syntax: DATA"),
            HELO => Ok(Self::Helo(helo_arg(rest, opts)?)),
            LHLO => Ok(Self::Lhlo(helo_arg(rest, opts)?)),
            RSET => no_args!(Self::Rset, "Syntax: RSET"),
            QUIT => no_args!(Self::Quit, "Syntax: QUIT"),
            STARTTLS => no_args!(Self::StartTls, "Syntax: STARTTLS"),
            NOOP => Ok(Self::Noop(rest.map(str::to_owned))),
            HELP => Ok(Self::Help(rest.map(str::to_owned))),
            VRFY => match rest {
                Some(s) if !s.is_empty() => Ok(Self::Vrfy(s.to_owned())),
                _ => Err(ProtoError::ArgumentSyntax("Syntax: VRFY <address>")),
            },
            EXPN => match rest {
                Some(s) if !s.is_empty() => Ok(Self::Expn(s.to_owned())),
                _ => Err(ProtoError::ArgumentSyntax("Syntax: EXPN <list>")),
            },
            BDAT => parse_bdat(rest),
            AUTH => parse_auth(rest),
            _ => Ok(Self::Unknown(
                String::from_utf8_lossy(verb).to_ascii_uppercase(),
            )),
        }
    }

    /// Appends the command line with its CRLF to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Auth {
                mechanism,
                initial_response,
            } => {
                out.put_slice(b"AUTH ");
                out.put_slice(mechanism.as_str().as_bytes());
                if let Some(ir) = initial_response {
                    out.put_u8(b' ');
                    out.put_slice(ir.expose_secret());
                }
            }
            // The wire form keeps the verb that the log form hides.
            Self::Unknown(verb) => out.put_slice(verb.as_bytes()),
            other => out.put_slice(other.public_line().as_bytes()),
        }
        out.put_slice(b"\r\n");
    }

    /// The wire form with CRLF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.to_vec()
    }

    /// The command line for logs: everything but an AUTH initial response, which is shown as
    /// `<redacted>`, and an unrecognized verb, shown by its length only (a line a client sent
    /// where a SASL response belonged is its password in base64).
    pub fn public_line(&self) -> String {
        let opt = |verb: &str, s: &Option<String>| match s {
            Some(s) => format!("{verb} {s}"),
            None => verb.to_owned(),
        };
        match self {
            Self::Helo(h) => format!("HELO {h}"),
            Self::Ehlo(h) => format!("EHLO {h}"),
            Self::Lhlo(h) => format!("LHLO {h}"),
            Self::Mail { from, params } => format!("MAIL FROM:{from}{params}"),
            Self::Rcpt { to, params } => format!("RCPT TO:{to}{params}"),
            Self::Data => "DATA".into(),
            Self::Bdat { size, last: true } => format!("BDAT {size} LAST"),
            Self::Bdat { size, last: false } => format!("BDAT {size}"),
            Self::Rset => "RSET".into(),
            Self::Noop(s) => opt("NOOP", s),
            Self::Quit => "QUIT".into(),
            Self::Vrfy(s) => format!("VRFY {s}"),
            Self::Expn(s) => format!("EXPN {s}"),
            Self::Help(s) => opt("HELP", s),
            Self::StartTls => "STARTTLS".into(),
            Self::Auth {
                mechanism,
                initial_response: None,
            } => format!("AUTH {mechanism}"),
            Self::Auth { mechanism, .. } => format!("AUTH {mechanism} <redacted>"),
            Self::Unknown(v) => format!("<unrecognized verb, {} octets>", v.len()),
        }
    }

    /// The verb, upper-case, for logs and metrics (`UNKNOWN` for any unrecognized verb, which
    /// is never repeated: it may be a credential).
    pub fn verb(&self) -> &str {
        match self {
            Self::Helo(_) => "HELO",
            Self::Ehlo(_) => "EHLO",
            Self::Lhlo(_) => "LHLO",
            Self::Mail { .. } => "MAIL",
            Self::Rcpt { .. } => "RCPT",
            Self::Data => "DATA",
            Self::Bdat { .. } => "BDAT",
            Self::Rset => "RSET",
            Self::Noop(_) => "NOOP",
            Self::Quit => "QUIT",
            Self::Vrfy(_) => "VRFY",
            Self::Expn(_) => "EXPN",
            Self::Help(_) => "HELP",
            Self::StartTls => "STARTTLS",
            Self::Auth { .. } => "AUTH",
            Self::Unknown(_) => "UNKNOWN",
        }
    }

    /// True when the command needs SMTPUTF8 (a UTF-8 address, RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        match self {
            Self::Mail { from, .. } => from.is_utf8(),
            Self::Rcpt { to, .. } => to.is_utf8(),
            _ => false,
        }
    }
}

const MAIL: u64 = key(b"MAIL");
const RCPT: u64 = key(b"RCPT");
const EHLO: u64 = key(b"EHLO");
const DATA: u64 = key(b"DATA");
const HELO: u64 = key(b"HELO");
const LHLO: u64 = key(b"LHLO");
const RSET: u64 = key(b"RSET");
const QUIT: u64 = key(b"QUIT");
const STARTTLS: u64 = key(b"STARTTLS");
const NOOP: u64 = key(b"NOOP");
const HELP: u64 = key(b"HELP");
const VRFY: u64 = key(b"VRFY");
const EXPN: u64 = key(b"EXPN");
const BDAT: u64 = key(b"BDAT");
const AUTH: u64 = key(b"AUTH");

#[inline(always)]
fn helo_arg(rest: Option<&str>, opts: ParseOptions) -> Result<Host, ProtoError> {
    let s = rest.ok_or(ProtoError::ArgumentSyntax("Syntax: EHLO hostname"))?;
    match Host::try_from(s) {
        Ok(h) => Ok(h),
        // One word of visible characters, at most a domain's length.
        Err(_)
            if opts.lenient_helo
                && !s.is_empty()
                && s.len() <= crate::path::MAX_DOMAIN_LEN
                && s.chars().all(|c| !c.is_whitespace() && !c.is_control()) =>
        {
            Ok(Host::Unchecked(s.to_owned()))
        }
        Err(_) => Err(ProtoError::ArgumentSyntax("Invalid domain name")),
    }
}

/// Strips `prefix` (case-insensitive) and the optional space after the colon.
fn after_prefix<'a>(rest: Option<&'a str>, prefix: &str, opts: ParseOptions) -> Option<&'a str> {
    let r = rest?;
    // "FROM:" or "TO:" compared as one case-folded word: `:` shares its folded value only
    // with 0x1A, a control octet the argument has been checked not to hold.
    if r.len() < prefix.len()
        || crate::text::word_key(r.as_bytes(), 0, prefix.len()) != key(prefix.as_bytes())
    {
        return None;
    }
    // The prefix is ASCII, so this is a character boundary.
    let r = r.get(prefix.len()..)?;
    Some(match r.strip_prefix(' ') {
        Some(s) if opts.lenient_paths => s.trim_start_matches(' '),
        Some(s) if opts.space_after_colon => s,
        _ => r,
    })
}

/// Scans `<path>[ SP params]` (a reverse path when `reverse`), applying the trailing-space and
/// lenient-path leniencies: the path's scan, to be built from `s`, and the parameters' text.
#[inline(always)]
fn path_and_params(
    s: &str,
    opts: ParseOptions,
    reverse: bool,
    err: ProtoError,
) -> Result<(PathScan, Option<&str>), ProtoError> {
    // Trimming keeps a prefix of `s`: the scan's positions hold in `s` too.
    let s = if opts.trailing_spaces {
        s.trim_end_matches(' ')
    } else {
        s
    };
    if opts.lenient_paths && !s.starts_with('<') && !s.is_empty() {
        // `alice@example.org [params]`: the same as `<alice@example.org> [params]`.
        let (addr, params) = match s.split_once(' ') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let bracketed = format!("<{addr}>");
        let (scan, end) = path::scan_path(&bracketed, reverse).ok_or_else(|| err.clone())?;
        if end != bracketed.len() {
            return Err(err);
        }
        // `addr` begins `s`, one octet before where it stands in `bracketed`.
        let scan = scan.shifted_left(1);
        return match params {
            None => Ok((scan, None)),
            Some(params) if !params.is_empty() => Ok((scan, Some(params))),
            Some(_) => Err(err),
        };
    }
    let (scan, end) = path::scan_path(s, reverse).ok_or_else(|| err.clone())?;
    match &s[end..] {
        "" => Ok((scan, None)),
        r => match r.strip_prefix(' ') {
            Some(params) if !params.is_empty() => Ok((scan, Some(params))),
            _ => Err(err),
        },
    }
}

/// The path is built last, in the command itself, from the scan (see [`PathScan`]).
///
/// Kept out of line, like [`parse_rcpt`]: called last in [`Command::parse_with`], it writes
/// its result where that function returns it, and inlined it made that function large enough
/// to spill (both measured in `compare/`, 2–4% of a MAIL or RCPT line).
#[inline(never)]
fn parse_mail(rest: Option<&str>, opts: ParseOptions) -> Result<Command, ProtoError> {
    let s = after_prefix(rest, "FROM:", opts)
        .ok_or(ProtoError::Syntax("Syntax: MAIL FROM:<address>"))?;
    let (from, params) = path_and_params(s, opts, true, ProtoError::SenderSyntax)?;
    let params = match params {
        Some(p) => MailParameters::parse(p)?,
        None => MailParameters::default(),
    };
    Ok(Command::Mail {
        from: from.reverse(s),
        params,
    })
}

#[inline(never)]
fn parse_rcpt(rest: Option<&str>, opts: ParseOptions) -> Result<Command, ProtoError> {
    let s =
        after_prefix(rest, "TO:", opts).ok_or(ProtoError::Syntax("Syntax: RCPT TO:<address>"))?;
    let (to, params) = path_and_params(s, opts, false, ProtoError::RecipientSyntax)?;
    let params = match params {
        Some(p) => RcptParameters::parse(p)?,
        None => RcptParameters::default(),
    };
    Ok(Command::Rcpt {
        to: to.forward(s),
        params,
    })
}

fn parse_bdat(rest: Option<&str>) -> Result<Command, ProtoError> {
    const ERR: ProtoError = ProtoError::ArgumentSyntax("Syntax: BDAT <size> [LAST]");
    let s = rest.ok_or(ERR)?;
    let (size, last) = match s.split_once(' ') {
        Some((n, l)) if l.eq_ignore_ascii_case("LAST") => (n, true),
        Some(_) => return Err(ERR),
        None => (s, false),
    };
    // chunk-size = 1*DIGIT; 20 digits cover u64.
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ERR);
    }
    let size = size.parse().map_err(|_| ERR)?;
    Ok(Command::Bdat { size, last })
}

fn parse_auth(rest: Option<&str>) -> Result<Command, ProtoError> {
    const ERR: ProtoError =
        ProtoError::ArgumentSyntax("Syntax: AUTH <mechanism> [initial-response]");
    let s = rest.ok_or(ERR)?;
    // A mechanism name has at most 20 octets: the space after it is within the first 21.
    let (mech, ir) = match s.as_bytes().iter().take(21).position(|&b| b == b' ') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mechanism = Mechanism::new(mech)?;
    let initial_response = match ir {
        // initial-response = base64 / "=" ; the base64 itself is checked by the SASL layer,
        // which answers 501 5.5.2 when it cannot decode it.
        Some(ir) if !ir.is_empty() && memchr::memchr(b' ', ir.as_bytes()).is_none() => {
            Some(InitialResponse::new(ir))
        }
        Some(_) => return Err(ERR),
        None => None,
    };
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{AuthParam, BodyType};
    use crate::path::Mailbox;
    use crate::text::argument_text;

    fn p(s: &str) -> Result<Command, ProtoError> {
        Command::parse(s.as_bytes())
    }

    fn mb(s: &str) -> Mailbox {
        s.parse().unwrap()
    }

    /// The verb decisions as they were made octet by octet before the verb was read as one
    /// word: where the verb ends, and the refusals that come before the argument is looked at.
    fn verb_reference(line: &[u8]) -> Option<Result<Command, ProtoError>> {
        let head = &line[..line.len().min(9)];
        let verb = match head.iter().position(|&b| b == b' ') {
            Some(i) => &line[..i],
            None => match line.iter().position(|&b| b == b' ') {
                Some(i) => &line[..i],
                None => line,
            },
        };
        if verb.is_empty() || !verb.iter().all(|b| b.is_ascii_graphic()) {
            return Some(Err(ProtoError::UnknownCommand));
        }
        if verb.len() > 8 || !verb.iter().all(u8::is_ascii_alphabetic) {
            let v = String::from_utf8_lossy(&verb[..verb.len().min(32)]).into_owned();
            return Some(Ok(Command::Unknown(v)));
        }
        None
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]
        /// Verbs of every length around the eight-octet word, of letters and of the octets a
        /// word test could confuse with them, decided as octet by octet.
        #[test]
        fn verbs_read_as_words_are_decided_as_octet_by_octet(
            verb in proptest::collection::vec(proptest::sample::select(vec![
                b'a', b'Z', b'M', b'i', b'@', b'[', b'`', b'{', b'0', b'-', 0u8, b'\t', 0x7F,
                0x80, 0xC1, 0xE1, b' ', b'T', b's',
            ]), 0..12),
            arg in proptest::sample::select(vec!["", " ", " x", " FROM:<a@b>", "  "]),
        ) {
            let mut line = verb.clone();
            line.extend_from_slice(arg.as_bytes());
            let got = Command::parse(&line);
            match verb_reference(&line) {
                Some(want) => proptest::prop_assert_eq!(got, want),
                None => {
                    // A verb of letters: dispatched; an unknown one comes back upper-case.
                    proptest::prop_assert_ne!(&got, &Err(ProtoError::UnknownCommand));
                    if let Ok(Command::Unknown(v)) = &got {
                        proptest::prop_assert_eq!(v.clone(), v.to_ascii_uppercase());
                    }
                }
            }
        }
    }

    #[test]
    fn the_verb_ends_at_the_first_space_wherever_it_is() {
        assert_eq!(p("STARTTLS"), Ok(Command::StartTls));
        assert_eq!(
            p("STARTTLS x"),
            Err(ProtoError::ArgumentSyntax("Syntax: STARTTLS"))
        );
        assert_eq!(p("STARTTLSX"), Ok(Command::Unknown("STARTTLSX".into())));
        assert_eq!(p("NOOPNOOP x"), Ok(Command::Unknown("NOOPNOOP".into())));
        assert_eq!(p("QUI"), Ok(Command::Unknown("QUI".into())));
        assert_eq!(p("QUITS"), Ok(Command::Unknown("QUITS".into())));
        assert_eq!(p("quit\u{e9}"), Err(ProtoError::UnknownCommand));
        assert_eq!(p("QU1T"), Ok(Command::Unknown("QU1T".into())));
        assert_eq!(p("QUIT "), Err(ProtoError::ArgumentSyntax("Syntax: QUIT")));
        assert_eq!(p("NOOP  "), Ok(Command::Noop(Some(" ".into()))));
        assert_eq!(Command::parse(b"QUIT\x00"), Err(ProtoError::UnknownCommand));
        assert_eq!(
            p("XCLIENTLONGVERB NAME=x"),
            Ok(Command::Unknown("XCLIENTLONGVERB".into()))
        );
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(p("quit"), Ok(Command::Quit));
        assert_eq!(p("QuIt"), Ok(Command::Quit));
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("starttls"), Ok(Command::StartTls));
        assert_eq!(p("rset"), Ok(Command::Rset));
        assert_eq!(p("noop"), Ok(Command::Noop(None)));
        assert_eq!(p("NOOP hello"), Ok(Command::Noop(Some("hello".into()))));
        assert_eq!(p("help"), Ok(Command::Help(None)));
        assert_eq!(p("HELP MAIL"), Ok(Command::Help(Some("MAIL".into()))));
    }

    #[test]
    fn greetings() {
        assert_eq!(
            p("EHLO mail.example.com"),
            Ok(Command::Ehlo(Host::try_from("mail.example.com").unwrap()))
        );
        assert_eq!(
            p("helo [192.0.2.1]"),
            Ok(Command::Helo(Host::try_from("[192.0.2.1]").unwrap()))
        );
        assert!(matches!(p("LHLO foo"), Ok(Command::Lhlo(_))));
        assert_eq!(
            p("EHLO"),
            Err(ProtoError::ArgumentSyntax("Syntax: EHLO hostname"))
        );
        assert_eq!(
            p("EHLO bad_name!"),
            Err(ProtoError::ArgumentSyntax("Invalid domain name"))
        );
        let lenient = ParseOptions {
            lenient_helo: true,
            ..Default::default()
        };
        assert_eq!(
            Command::parse_with(b"EHLO DESKTOP_42", lenient),
            Ok(Command::Ehlo(Host::Unchecked("DESKTOP_42".into())))
        );
        assert_eq!(
            Command::parse_with(b"EHLO mx.example.org", lenient),
            Ok(Command::Ehlo(Host::try_from("mx.example.org").unwrap()))
        );
        assert!(Command::parse_with(b"EHLO two words", lenient).is_err());
        assert!(Command::parse_with(b"EHLO ", lenient).is_err());
    }

    #[test]
    fn mail_and_rcpt() {
        // RFC 5321 Appendix D.1 scenario.
        assert_eq!(
            p("MAIL FROM:<Smith@bar.com>"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mb("Smith@bar.com")),
                params: MailParameters::default()
            })
        );
        assert_eq!(
            p("RCPT TO:<Jones@foo.com>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Mailbox(mb("Jones@foo.com")),
                params: RcptParameters::default()
            })
        );
        assert_eq!(
            p("mail from:<>"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: MailParameters::default()
            })
        );
        let Ok(Command::Mail { params, .. }) = p("MAIL FROM:<a@b.c> SIZE=42 BODY=8BITMIME AUTH=<>")
        else {
            panic!()
        };
        assert_eq!(params.size, Some(42));
        assert_eq!(params.body, Some(BodyType::EightBitMime));
        assert_eq!(params.auth, Some(AuthParam::Unknown));
        assert_eq!(
            p("RCPT TO:<postmaster>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
                params: RcptParameters::default()
            })
        );
        // The common client quirk: one space after the colon.
        assert!(p("MAIL FROM: <a@b.c>").is_ok());
        assert_eq!(
            Command::parse_with(
                b"MAIL FROM: <a@b.c>",
                ParseOptions {
                    space_after_colon: false,
                    ..Default::default()
                }
            ),
            Err(ProtoError::SenderSyntax)
        );
        assert_eq!(p("MAIL FROM:<a@b.c> "), Err(ProtoError::SenderSyntax));
        assert!(
            Command::parse_with(
                b"MAIL FROM:<a@b.c>  ",
                ParseOptions {
                    trailing_spaces: true,
                    ..Default::default()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn address_errors_have_their_codes() {
        assert_eq!(p("MAIL FROM:a@b.c"), Err(ProtoError::SenderSyntax));
        // The named leniency (off by default): no angle brackets, extra spaces.
        let lenient = ParseOptions {
            lenient_paths: true,
            ..ParseOptions::default()
        };
        let pl = |s: &str| Command::parse_with(s.as_bytes(), lenient);
        for line in [
            "MAIL FROM:a@b.c",
            "MAIL FROM: a@b.c",
            "MAIL FROM:  <a@b.c>",
            "mail from:   a@b.c",
        ] {
            assert_eq!(pl(line), p("MAIL FROM:<a@b.c>"), "{line}");
        }
        assert_eq!(
            pl("MAIL FROM: a@b.c SIZE=42"),
            p("MAIL FROM:<a@b.c> SIZE=42")
        );
        assert_eq!(pl("RCPT TO: bob@b.c"), p("RCPT TO:<bob@b.c>"));
        // Every kind of host, and a source route, read without brackets as with them (the
        // unbracketed form is scanned in a copy with a `<` in front).
        for (path, kept) in [
            ("\"a.b\"@[IPv6:2001:db8::1]", "<\"a.b\"@[IPv6:2001:db8::1]>"),
            ("x@[x-tag:some-content]", "<x@[x-tag:some-content]>"),
            ("x@[192.0.2.1]", "<x@[192.0.2.1]>"),
            ("@r.example:q@example.org", "<q@example.org>"),
        ] {
            for verb in ["MAIL FROM:", "RCPT TO:"] {
                let bare = pl(&format!("{verb}{path} NOTIFY=NEVER"));
                let bracketed = p(&format!("{verb}<{path}> NOTIFY=NEVER"));
                assert_eq!(bare, bracketed, "{verb}{path}");
                match bare {
                    Ok(Command::Mail { from, .. }) => assert_eq!(from.to_string(), kept),
                    Ok(Command::Rcpt { to, .. }) => assert_eq!(to.to_string(), kept),
                    other => panic!("{verb}{path}: {other:?}"),
                }
            }
        }
        assert_eq!(
            pl("MAIL FROM: not-an-address"),
            Err(ProtoError::SenderSyntax)
        );
        assert_eq!(pl("RCPT TO:"), Err(ProtoError::RecipientSyntax));
        assert_eq!(pl("MAIL FROM: a@b.c "), Err(ProtoError::SenderSyntax));
        assert_eq!(p("MAIL FROM:  <a@b.c>"), Err(ProtoError::SenderSyntax));
        assert_eq!(p("MAIL FROM:<a@b.c"), Err(ProtoError::SenderSyntax));
        assert_eq!(p("MAIL FROM:<a@b.c>x"), Err(ProtoError::SenderSyntax));
        assert_eq!(p("RCPT TO:<>"), Err(ProtoError::RecipientSyntax));
        assert_eq!(p("RCPT TO:<@a.b>"), Err(ProtoError::RecipientSyntax));
        assert_eq!(
            p("MAIL TO:<a@b.c>"),
            Err(ProtoError::Syntax("Syntax: MAIL FROM:<address>"))
        );
        assert_eq!(
            p("MAIL"),
            Err(ProtoError::Syntax("Syntax: MAIL FROM:<address>"))
        );
        assert_eq!(
            p("RCPT TO:<a@b.c> FOO"),
            Ok(Command::Rcpt {
                to: ForwardPath::Mailbox(mb("a@b.c")),
                params: RcptParameters::parse("FOO").unwrap()
            })
        );
        assert_eq!(
            p("MAIL FROM:<a@b.c> SIZE=x"),
            Err(ProtoError::ParameterSyntax("Invalid SIZE parameter"))
        );
    }

    #[test]
    fn utf8_needs_smtputf8() {
        let c = p("MAIL FROM:<用户@例子.广告> SMTPUTF8").unwrap();
        assert!(c.needs_smtputf8());
        assert!(!p("MAIL FROM:<a@b.c>").unwrap().needs_smtputf8());
        assert_eq!(
            Command::parse(b"MAIL FROM:<\xff@b.c>"),
            Err(ProtoError::InvalidUtf8)
        );
    }

    #[test]
    fn control_characters_and_bad_utf8_are_found_in_any_position() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert!(argument_text(&clean).is_ok());
            let mut tabbed = clean.clone();
            if len > 0 {
                tabbed[len / 2] = b'\t';
                assert!(argument_text(&tabbed).is_ok());
            }
            for pos in 0..len {
                for bad in [0u8, 1, 0x0a, 0x0d, 0x1f, 0x7f] {
                    let mut l = clean.clone();
                    l[pos] = bad;
                    assert_eq!(
                        argument_text(&l),
                        Err(ProtoError::InvalidUtf8),
                        "{len} {pos} {bad}"
                    );
                }
                // The printable range is not a control.
                for ok in [0x20u8, 0x7e] {
                    let mut l = clean.clone();
                    l[pos] = ok;
                    assert!(argument_text(&l).is_ok(), "{len} {pos} {ok}");
                }
                // A non-ASCII octet anywhere takes the UTF-8 check: a whole character passes,
                // a lone octet does not.
                let mut l = clean.clone();
                l[pos] = 0xff;
                assert_eq!(
                    argument_text(&l),
                    Err(ProtoError::InvalidUtf8),
                    "{len} {pos}"
                );
                if pos + 1 < len {
                    let mut l = clean.clone();
                    l[pos..pos + 2].copy_from_slice("é".as_bytes());
                    let text = String::from_utf8(l.clone()).unwrap();
                    assert_eq!(argument_text(&l), Ok(text.as_str()), "{len} {pos}");
                }
            }
        }
    }

    #[test]
    fn multibyte_after_verb_is_not_a_panic() {
        // Found by the fuzzer: a multi-byte character where "FROM:" is expected.
        assert_eq!(
            Command::parse("MAIL FROMƹchchELO 127".as_bytes()),
            Err(ProtoError::Syntax("Syntax: MAIL FROM:<address>"))
        );
        assert!(p("RCPT é").is_err());
    }

    #[test]
    fn bdat() {
        assert_eq!(
            p("BDAT 1000"),
            Ok(Command::Bdat {
                size: 1000,
                last: false
            })
        );
        assert_eq!(
            p("BDAT 0 LAST"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            p("bdat 5 last"),
            Ok(Command::Bdat {
                size: 5,
                last: true
            })
        );
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 1 FIRST",
            "BDAT 99999999999999999999999",
        ] {
            assert!(
                matches!(p(bad), Err(ProtoError::ArgumentSyntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn auth() {
        // RFC 4954 §4 examples.
        let c = p("AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=").unwrap();
        let Command::Auth {
            mechanism,
            initial_response: Some(ir),
        } = &c
        else {
            panic!()
        };
        assert_eq!(mechanism.as_str(), "PLAIN");
        assert_eq!(ir.expose_secret(), b"dGVzdAB0ZXN0ADEyMzQ=");
        assert!(!format!("{c:?}").contains("dGVzd"));
        assert_eq!(c.public_line(), "AUTH PLAIN <redacted>");
        let c = p("auth plain =").unwrap();
        assert!(
            matches!(c, Command::Auth { initial_response: Some(ref r), .. } if r.expose_secret() == b"=")
        );
        assert!(
            matches!(p("AUTH cram-md5"), Ok(Command::Auth { ref mechanism, initial_response: None }) if mechanism.as_str() == "CRAM-MD5")
        );
        assert!(matches!(p("AUTH SCRAM-SHA-256"), Ok(Command::Auth { .. })));
        assert_eq!(
            p("AUTH THIS-NAME-IS-FAR-TOO-LONG-FOR-SASL"),
            Err(ProtoError::ArgumentSyntax("Invalid mechanism name"))
        );
        assert!(p("AUTH").is_err());
        assert!(p("AUTH PLAIN a b").is_err());
    }

    #[test]
    fn unknown_and_garbage() {
        assert_eq!(p("FOO bar"), Ok(Command::Unknown("FOO".into())));
        assert_eq!(
            p("XCLIENTLONGVERB"),
            Ok(Command::Unknown("XCLIENTLONGVERB".into()))
        );
        assert_eq!(p(""), Err(ProtoError::UnknownCommand));
        // A pipelined LOGIN password read as a command is never repeated in logs.
        let c = p("c2VjcmV0LXBhc3N3b3Jk").unwrap();
        assert_eq!(c.verb(), "UNKNOWN");
        assert_eq!(c.public_line(), "<unrecognized verb, 20 octets>");
        assert_eq!(c.to_bytes(), b"c2VjcmV0LXBhc3N3b3Jk\r\n");
        assert_eq!(p(" QUIT"), Err(ProtoError::UnknownCommand));
        assert_eq!(Command::parse(b"\x00\x01"), Err(ProtoError::UnknownCommand));
        assert_eq!(Command::parse(b"NOOP \x00"), Err(ProtoError::InvalidUtf8));
        assert_eq!(
            p("DATA now"),
            Err(ProtoError::ArgumentSyntax("Syntax: DATA"))
        );
        assert_eq!(
            ProtoError::UnknownCommand.reply().to_bytes(),
            b"500 5.5.2 Syntax error, command unrecognized\r\n"
        );
    }

    #[test]
    fn encode_examples() {
        assert_eq!(
            p("mail from:<a@b.c> size=10").unwrap().to_bytes(),
            b"MAIL FROM:<a@b.c> SIZE=10\r\n"
        );
        assert_eq!(
            p("rcpt to:<postmaster>").unwrap().to_bytes(),
            b"RCPT TO:<Postmaster>\r\n"
        );
        assert_eq!(
            p("auth login dXNlcg==").unwrap().to_bytes(),
            b"AUTH LOGIN dXNlcg==\r\n"
        );
    }
}
