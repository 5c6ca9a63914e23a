//! The server side of an SMTP connection's framing: [`SmtpCodec::decode_frame`] turns input
//! bytes into [`Frame`]s with no runtime at all (a sans-IO session drives it directly); with the
//! `codec` feature the same type is a tokio-util `Decoder`/`Encoder`.
//!
//! The server switches the codec's [`Mode`] as the session moves between phases: command lines,
//! one SASL response line, a DATA body, or a BDAT chunk of `n` octets. Bodies come out as
//! [`Bytes`] slices of the read buffer, never copied line by line. After a DATA body ends or a
//! BDAT chunk is complete the codec returns to [`Mode::Command`] by itself.
//!
//! ```
//! use bytes::BytesMut;
//! use smtp_proto::codec::{Frame, Mode, SmtpCodec};
//! use smtp_proto::{Command, Reply};
//!
//! let mut codec = SmtpCodec::default();
//! let mut buf = BytesMut::from(&b"DATA\r\nHello\r\n.\r\nQUIT\r\n"[..]);
//! assert!(matches!(codec.decode_frame(&mut buf), Some(Frame::Command(Ok(Command::Data)))));
//! codec.set_mode(Mode::data(1024));
//! assert!(matches!(codec.decode_frame(&mut buf), Some(Frame::DataChunk(c)) if &c[..] == b"Hello\r\n"));
//! assert!(matches!(codec.decode_frame(&mut buf), Some(Frame::DataEnd(_))));
//! assert!(matches!(codec.decode_frame(&mut buf), Some(Frame::Command(Ok(Command::Quit)))));
//!
//! let mut out = BytesMut::new();
//! Reply::simple(221, Some((2, 0, 0)), "Bye").encode(&mut out);
//! assert_eq!(&out[..], b"221 2.0.0 Bye\r\n");
//! ```

use bytes::{Buf, Bytes, BytesMut};
#[cfg(feature = "codec")]
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtoError;
use crate::bdat::{BdatDecoder, BdatEvent};
use crate::command::{Command, ParseOptions};
use crate::data::{BarePolicy, DataDecoder, DataEnd, DataEvent};
use crate::line::{DEFAULT_MAX_LINE, Found, LineDecoder, LineEvent};
#[cfg(feature = "codec")]
use crate::reply::Reply;

/// The minimum SASL response line the codec accepts (RFC 4954 §4: at least 12288 octets).
pub const DEFAULT_MAX_SASL_LINE: usize = 12288 + 2;

/// The longest AUTH command line: `AUTH`, a 20-character mechanism name and an initial response
/// as long as a SASL response line (RFC 4954 §4 asks clients to stay within 512 octets, but
/// real clients send 1–4 KB OAuth tokens on the AUTH line, and Postfix and Gmail take them).
pub const fn max_auth_line(max_sasl_line: usize) -> usize {
    max_sasl_line + "AUTH ".len() + 20 + 1
}

/// The known verb a line starts with, upper-case.
fn known_verb(line: &[u8]) -> Option<&'static str> {
    const VERBS: &[&str] = &[
        "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY",
        "EXPN", "HELP", "STARTTLS", "AUTH",
    ];
    let word = line.split(|b| *b == b' ').next().unwrap_or_default();
    VERBS
        .iter()
        .find(|v| v.as_bytes().eq_ignore_ascii_case(word))
        .copied()
}

/// What the decoder expects next.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Command lines.
    Command,
    /// One SASL response line (RFC 4954 §4), handed out raw.
    SaslResponse,
    /// A DATA body.
    Data(DataDecoder),
    /// A BDAT chunk.
    Bdat(BdatDecoder),
}

impl Mode {
    /// A DATA body of at most `max_size` octets with the default bare CR/LF policy (refuse).
    pub fn data(max_size: u64) -> Self {
        Self::Data(DataDecoder::new(max_size, BarePolicy::Reject))
    }

    /// A BDAT chunk of exactly `size` octets.
    pub fn bdat(size: u64) -> Self {
        Self::Bdat(BdatDecoder::new(size))
    }
}

/// One decoded unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A command line, parsed (or the error to answer it with, e.g. 500 5.5.6 for a line that
    /// was too long).
    Command(Result<Command, ProtoError>),
    /// A SASL response line without its CRLF (`Err` when it was too long).
    SaslResponse(Result<Bytes, ProtoError>),
    /// A piece of a DATA body.
    DataChunk(Bytes),
    /// The end of a DATA body; the codec is back in command mode.
    DataEnd(DataEnd),
    /// A piece of a BDAT chunk.
    BdatChunk(Bytes),
    /// All octets of the BDAT chunk were read; the codec is back in command mode.
    BdatEnd,
}

/// The codec's I/O error: only the transport's own errors (protocol errors are frames).
#[cfg(feature = "codec")]
pub type CodecError = std::io::Error;

/// The server-side SMTP codec.
#[derive(Debug, Clone)]
pub struct SmtpCodec {
    mode: Mode,
    commands: LineDecoder,
    /// Command lines that start with `AUTH `: as long as a SASL response.
    auth_lines: LineDecoder,
    sasl: LineDecoder,
    options: ParseOptions,
    error_verb: Option<&'static str>,
}

impl Default for SmtpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE, DEFAULT_MAX_SASL_LINE)
    }
}

impl SmtpCodec {
    /// A codec with the given command-line and SASL-line limits (line endings included).
    pub fn new(max_command_line: usize, max_sasl_line: usize) -> Self {
        Self {
            mode: Mode::Command,
            commands: LineDecoder::new(max_command_line),
            auth_lines: LineDecoder::new(max_auth_line(max_sasl_line).max(max_command_line)),
            sasl: LineDecoder::new(max_sasl_line),
            options: ParseOptions::default(),
            error_verb: None,
        }
    }

    /// Sets the command parser's leniencies.
    pub fn set_parse_options(&mut self, options: ParseOptions) {
        self.options = options;
    }

    /// Switches what the decoder expects next.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// The longest AUTH command line: `AUTH`, a 20-character mechanism name and an initial response
    /// as long as a SASL response line (RFC 4954 §4 asks clients to stay within 512 octets, but
    /// real clients send 1–4 KB OAuth tokens on the AUTH line, and Postfix and Gmail take them).
    pub const fn max_auth_line(max_sasl_line: usize) -> usize {
        max_sasl_line + "AUTH ".len() + 20 + 1
    }

    /// What the decoder expects next.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The verb of the line behind the last `Frame::Command(Err(_))`, when it is one this
    /// grammar knows (upper-case), so a server can apply its sequencing rules before the
    /// syntax error: RFC 4954 §4 wants 503 for any AUTH after a successful one, even a
    /// malformed one.
    pub fn error_verb(&self) -> Option<&'static str> {
        self.error_verb
    }
}

impl SmtpCodec {
    /// The next frame in `buf` (consumed from it), or `None` until more input arrives.
    #[inline]
    pub fn decode_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match &mut self.mode {
            Mode::Command => {
                // An AUTH line may be as long as a SASL response; any other command keeps the
                // RFC 5321 limit. A line stays with the decoder that began it.
                let auth = if self.auth_lines.in_line() {
                    true
                } else if self.commands.in_line() {
                    false
                } else if buf.len() < 5 {
                    if !buf.contains(&b'\n') {
                        return None;
                    }
                    false
                } else {
                    buf[4] == b' ' && crate::text::word_key(buf, 0, 4) == crate::text::key(b"AUTH")
                };
                let lines = if auth {
                    &mut self.auth_lines
                } else {
                    &mut self.commands
                };
                // The command is parsed where its line lies in `buf` (no `Bytes` is split off,
                // and reference-counted, for a line that is only read), straight into the frame
                // returned: built through `LineDecoder::decode_with`'s closure, the frame (168
                // octets) was copied once more per line (`compare/`: stream −3.6% instructions).
                let found = lines.next(buf)?;
                let bare_lf = lines.last_line_bare_lf();
                match found {
                    Found::Line { len, content } => {
                        if bare_lf && self.options.forbid_bare_newline {
                            buf.advance(len);
                            self.error_verb = None;
                            return Some(Frame::Command(Err(ProtoError::BareNewline)));
                        }
                        let frame =
                            Frame::Command(Command::parse_with(&buf[..content], self.options));
                        self.error_verb = match &frame {
                            Frame::Command(Err(_)) => known_verb(&buf[..content]),
                            _ => None,
                        };
                        buf.advance(len);
                        Some(frame)
                    }
                    Found::TooLong => {
                        self.error_verb = auth.then_some("AUTH");
                        Some(Frame::Command(Err(ProtoError::LineTooLong)))
                    }
                }
            }
            Mode::SaslResponse => self.sasl.decode(buf).map(|ev| {
                Frame::SaslResponse(match ev {
                    LineEvent::Line(l) => Ok(l),
                    LineEvent::TooLong => Err(ProtoError::LineTooLong),
                })
            }),
            Mode::Data(d) => match d.decode(buf) {
                Some(DataEvent::Chunk(c)) => Some(Frame::DataChunk(c)),
                Some(DataEvent::End(e)) => {
                    self.mode = Mode::Command;
                    Some(Frame::DataEnd(e))
                }
                None => None,
            },
            Mode::Bdat(d) => match d.decode(buf) {
                Some(BdatEvent::Chunk(c)) => Some(Frame::BdatChunk(c)),
                Some(BdatEvent::End) => {
                    self.mode = Mode::Command;
                    Some(Frame::BdatEnd)
                }
                None => None,
            },
        }
    }
}

#[cfg(feature = "codec")]
impl Decoder for SmtpCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.decode_frame(buf))
    }
}

#[cfg(feature = "codec")]
impl Encoder<Reply> for SmtpCodec {
    type Error = CodecError;
    fn encode(&mut self, item: Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(feature = "codec")]
impl Encoder<&Reply> for SmtpCodec {
    type Error = CodecError;
    fn encode(&mut self, item: &Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

/// Raw bytes (e.g. a `334` challenge line built elsewhere) pass through unchanged.
#[cfg(feature = "codec")]
impl Encoder<Bytes> for SmtpCodec {
    type Error = CodecError;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut SmtpCodec, buf: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = codec.decode_frame(buf) {
            out.push(f);
        }
        out
    }

    #[test]
    fn pipelined_commands() {
        let mut c = SmtpCodec::default();
        let mut buf = BytesMut::from(
            &b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<bad\r\nDATA\r\n"[..],
        );
        let f = frames(&mut c, &mut buf);
        assert_eq!(f.len(), 4);
        assert!(matches!(
            f[2],
            Frame::Command(Err(ProtoError::RecipientSyntax))
        ));
        assert_eq!(f[3], Frame::Command(Ok(Command::Data)));
    }

    #[test]
    fn bare_lf_command_lines_are_read_unless_forbidden() {
        let mut c = SmtpCodec::default();
        let mut buf = BytesMut::from(&b"NOOP\nQUIT\r\n"[..]);
        assert_eq!(
            frames(&mut c, &mut buf),
            vec![
                Frame::Command(Ok(Command::Noop(None))),
                Frame::Command(Ok(Command::Quit))
            ]
        );
        c.set_parse_options(ParseOptions {
            forbid_bare_newline: true,
            ..ParseOptions::default()
        });
        let mut buf = BytesMut::from(&b"NOOP\nQUIT\r\n"[..]);
        assert_eq!(
            frames(&mut c, &mut buf),
            vec![
                Frame::Command(Err(ProtoError::BareNewline)),
                Frame::Command(Ok(Command::Quit))
            ]
        );
    }

    #[test]
    fn the_verb_of_a_malformed_command_is_kept() {
        let mut c = SmtpCodec::default();
        let mut buf = BytesMut::from(&b"auth\r\nMAIL TO:<a@b>\r\nFROB x\r\nNOOP\r\n"[..]);
        let f = frames(&mut c, &mut BytesMut::from(&b"auth\r\n"[..]));
        assert!(matches!(f[..], [Frame::Command(Err(_))]));
        assert_eq!(c.error_verb(), Some("AUTH"));
        let _ = c.decode_frame(&mut buf);
        assert!(matches!(
            c.decode_frame(&mut buf),
            Some(Frame::Command(Err(_)))
        ));
        assert_eq!(c.error_verb(), Some("MAIL"));
        // An unknown verb parses (as Command::Unknown); a good command clears the verb.
        assert!(matches!(
            c.decode_frame(&mut buf),
            Some(Frame::Command(Ok(_)))
        ));
        assert_eq!(c.error_verb(), None);
        let mut long = BytesMut::from(&b"AUTH PLAIN "[..]);
        long.extend_from_slice(&[b'A'; 13000]);
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            frames(&mut c, &mut long),
            vec![Frame::Command(Err(ProtoError::LineTooLong))]
        );
        assert_eq!(c.error_verb(), Some("AUTH"));
    }

    #[test]
    fn auth_lines_carry_long_initial_responses() {
        // A 4 KB token (a JWT) as XOAUTH2's initial response, arriving in small pieces.
        let token = "A".repeat(4096);
        let line = format!("AUTH XOAUTH2 {token}\r\nNOOP\r\n");
        let mut c = SmtpCodec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in line.as_bytes().chunks(3) {
            buf.extend_from_slice(piece);
            got.extend(frames(&mut c, &mut buf));
        }
        assert_eq!(got.len(), 2, "{got:?}");
        match &got[0] {
            Frame::Command(Ok(Command::Auth {
                mechanism,
                initial_response: Some(r),
            })) => {
                assert_eq!(mechanism.as_str(), "XOAUTH2");
                assert_eq!(r.expose_secret(), token.as_bytes());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[1], Frame::Command(Ok(Command::Noop(None))));
        // Past the SASL limit it is refused once, and the stream goes on.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"auth PLAIN ");
        buf.extend_from_slice(&[b'A'; 13000]);
        buf.extend_from_slice(b"\r\nQUIT\r\n");
        assert_eq!(
            frames(&mut c, &mut buf),
            vec![
                Frame::Command(Err(ProtoError::LineTooLong)),
                Frame::Command(Ok(Command::Quit))
            ]
        );
        // Other commands keep the 512-octet limit.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"NOOP ");
        buf.extend_from_slice(&[b'x'; 600]);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            frames(&mut c, &mut buf),
            vec![Frame::Command(Err(ProtoError::LineTooLong))]
        );
    }

    #[test]
    fn overlong_command_yields_one_error() {
        let mut c = SmtpCodec::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"NOOP ");
        buf.extend_from_slice(&[b'x'; 2000]);
        buf.extend_from_slice(b"\r\nQUIT\r\n");
        let f = frames(&mut c, &mut buf);
        assert_eq!(
            f,
            vec![
                Frame::Command(Err(ProtoError::LineTooLong)),
                Frame::Command(Ok(Command::Quit))
            ]
        );
    }

    #[test]
    fn sasl_lines_allow_12288_octets() {
        let mut c = SmtpCodec::default();
        c.set_mode(Mode::SaslResponse);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'A'; 12288]);
        buf.extend_from_slice(b"\r\n");
        assert!(
            matches!(c.decode_frame(&mut buf), Some(Frame::SaslResponse(Ok(l))) if l.len() == 12288)
        );
        buf.extend_from_slice(&[b'A'; 13000]);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            c.decode_frame(&mut buf),
            Some(Frame::SaslResponse(Err(ProtoError::LineTooLong)))
        );
    }

    #[test]
    fn bdat_then_commands() {
        let mut c = SmtpCodec::default();
        let mut buf = BytesMut::from(&b"BDAT 5 LAST\r\nab\r\n.QUIT\r\n"[..]);
        assert_eq!(
            c.decode_frame(&mut buf),
            Some(Frame::Command(Ok(Command::Bdat {
                size: 5,
                last: true
            })))
        );
        c.set_mode(Mode::bdat(5));
        let f = frames(&mut c, &mut buf);
        assert_eq!(
            f,
            vec![
                Frame::BdatChunk(Bytes::from_static(b"ab\r\n.")),
                Frame::BdatEnd,
                Frame::Command(Ok(Command::Quit))
            ]
        );
    }
}
