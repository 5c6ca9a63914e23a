//! Line framing for command lines and SASL response lines.
//!
//! RFC 5321 §4.5.3.1.4 limits a command line to 512 octets including CRLF. A longer line is not
//! buffered: the decoder drops it as it arrives, up to its line feed, and then reports one
//! [`LineEvent::TooLong`], so memory stays bounded whatever the client sends and the stream
//! resynchronises on the next line.

use bytes::{Buf, Bytes, BytesMut};

/// The default command line limit in octets, CRLF included (RFC 5321 §4.5.3.1.4).
pub const DEFAULT_MAX_LINE: usize = 512;

/// What the line decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its CRLF (or bare LF).
    Line(Bytes),
    /// A line longer than the limit was dropped, up to and including its line feed.
    TooLong,
}

/// A bounded line decoder with a discarding state (the tokio-util `LinesCodec` idea).
#[derive(Debug, Clone)]
pub struct LineDecoder {
    max: usize,
    discarding: bool,
    /// Where the search for LF resumes, so a slowly arriving line is scanned once.
    scanned: usize,
    /// The last line ended with a bare LF (no CR before it).
    bare_lf: bool,
}

impl LineDecoder {
    /// A decoder for lines of at most `max` octets including the line ending.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(3),
            discarding: false,
            scanned: 0,
            bare_lf: false,
        }
    }

    /// The limit in octets, line ending included.
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// Changes the limit (e.g. to RFC 4954's 12288 octets for a SASL response).
    pub fn set_max_len(&mut self, max: usize) {
        self.max = max.max(3);
    }

    /// True while a line is partly read (scanned without its end, or being dropped).
    pub fn in_line(&self) -> bool {
        self.discarding || self.scanned > 0
    }

    /// True when the last line returned ended with a bare LF instead of CRLF.
    pub fn last_line_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// True while the rest of an overlong line is being dropped.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Takes the next event out of `buf`, or returns `None` when more input is needed.
    ///
    /// A line ends at LF; a CR right before it is removed too.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<LineEvent> {
        match self.next(buf)? {
            Found::Line { len, content } => {
                let mut line = buf.split_to(len);
                line.truncate(content);
                Some(LineEvent::Line(line.freeze()))
            }
            Found::TooLong => Some(LineEvent::TooLong),
        }
    }

    /// Like [`decode`](Self::decode), but hands the line to `f` where it lies in `buf`
    /// (without its line end) and then consumes it: no `Bytes` is split off, for a caller that
    /// only reads the line (a command parser). `f` is called for every event, and with `None`
    /// when more input is needed; its result is returned as it is. (A large result, such as a
    /// parsed command, may still be copied once on its way out of the closure; `SmtpCodec`
    /// finds its lines without one.)
    #[inline(always)]
    pub fn decode_with<R>(
        &mut self,
        buf: &mut BytesMut,
        f: impl FnOnce(Option<LineRef<'_>>) -> R,
    ) -> R {
        match self.next(buf) {
            Some(Found::Line { len, content }) => {
                let bare_lf = self.bare_lf;
                let r = f(Some(LineRef::Line {
                    text: &buf[..content],
                    bare_lf,
                }));
                buf.advance(len);
                r
            }
            Some(Found::TooLong) => f(Some(LineRef::TooLong)),
            None => f(None),
        }
    }

    /// Finds the next line in `buf` (consuming only what an overlong line discards); the
    /// caller consumes a line found. The codec's command path uses it directly.
    #[inline]
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Option<Found> {
        if self.discarding {
            return match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    buf.advance(i + 1);
                    self.discarding = false;
                    Some(Found::TooLong)
                }
                None => {
                    buf.clear();
                    None
                }
            };
        }
        let window = buf.len().min(self.max);
        let start = self.scanned.min(window);
        match find_lf(&buf[start..window]) {
            Some(off) => {
                let i = start + off;
                self.scanned = 0;
                self.bare_lf = i == 0 || buf[i - 1] != b'\r';
                let content = if self.bare_lf { i } else { i - 1 };
                Some(Found::Line {
                    len: i + 1,
                    content,
                })
            }
            None if buf.len() >= self.max => {
                self.scanned = 0;
                self.discarding = true;
                self.next(buf)
            }
            None => {
                self.scanned = window;
                None
            }
        }
    }
}

/// The first LF in `b`. A command line is short: its first 64 octets are searched a word at a
/// time in line, and only a longer one goes to `memchr` (whose call and set-up cost more than
/// a short line's whole search). Spelled out rather than `text::find_octet` on the first 64
/// octets, which cost the segmented stream 0.6% more instructions.
#[inline(always)]
fn find_lf(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < 64 {
        let Some(w) = b.get(i..i + 8) else {
            return b[i..].iter().position(|&c| c == b'\n').map(|p| i + p);
        };
        let m =
            crate::text::octets_equal(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])), b'\n');
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr(b'\n', &b[i..]).map(|p| i + p)
}

/// An event of [`LineDecoder::decode_with`]: a line where it lies in the buffer, or an
/// overlong line that was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRef<'a> {
    /// A line without its line end.
    Line {
        /// The octets of the line.
        text: &'a [u8],
        /// True when it ended with a bare LF instead of CRLF.
        bare_lf: bool,
    },
    /// A line longer than the limit, dropped.
    TooLong,
}

/// Where the next line is: `len` octets with its end, `content` without.
pub(crate) enum Found {
    Line { len: usize, content: usize },
    TooLong,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_crlf_and_lf() {
        let mut d = LineDecoder::default();
        let mut b = BytesMut::from(&b"EHLO a\r\nQUIT\nNO"[..]);
        assert_eq!(
            d.decode(&mut b),
            Some(LineEvent::Line(Bytes::from_static(b"EHLO a")))
        );
        assert_eq!(
            d.decode(&mut b),
            Some(LineEvent::Line(Bytes::from_static(b"QUIT")))
        );
        assert_eq!(d.decode(&mut b), None);
        b.extend_from_slice(b"OP\r\n");
        assert_eq!(
            d.decode(&mut b),
            Some(LineEvent::Line(Bytes::from_static(b"NOOP")))
        );
        assert!(b.is_empty());
    }

    #[test]
    fn exactly_at_the_limit() {
        let mut d = LineDecoder::new(10);
        let mut b = BytesMut::from(&b"12345678\r\n"[..]);
        assert_eq!(
            d.decode(&mut b),
            Some(LineEvent::Line(Bytes::from_static(b"12345678")))
        );
        let mut b = BytesMut::from(&b"123456789\r\nNEXT\r\n"[..]);
        assert_eq!(d.decode(&mut b), Some(LineEvent::TooLong));
        assert_eq!(
            d.decode(&mut b),
            Some(LineEvent::Line(Bytes::from_static(b"NEXT")))
        );
    }

    #[test]
    fn overlong_line_is_dropped_in_bounded_memory() {
        let mut d = LineDecoder::new(512);
        let mut b = BytesMut::new();
        for _ in 0..1000 {
            b.extend_from_slice(&[b'A'; 1000]);
            assert_eq!(d.decode(&mut b), None);
            assert!(b.len() < 1024, "the buffer stays bounded");
        }
        b.extend_from_slice(b"AAAA\r\nQUIT\r\n");
        assert_eq!(d.decode(&mut b), Some(LineEvent::TooLong));
        assert_eq!(
            d.decode(&mut b),
            Some(LineEvent::Line(Bytes::from_static(b"QUIT")))
        );
        assert_eq!(d.decode(&mut b), None);
    }

    #[test]
    fn byte_by_byte() {
        let mut d = LineDecoder::default();
        let mut b = BytesMut::new();
        let input = b"MAIL FROM:<a@b.c>\r\n";
        for (n, &c) in input.iter().enumerate() {
            b.extend_from_slice(&[c]);
            let ev = d.decode(&mut b);
            if n + 1 == input.len() {
                assert_eq!(
                    ev,
                    Some(LineEvent::Line(Bytes::from_static(b"MAIL FROM:<a@b.c>")))
                );
            } else {
                assert_eq!(ev, None);
            }
        }
    }

    #[test]
    fn the_first_lf_is_found_in_any_position() {
        for len in 0..150 {
            let mut b = vec![b'a'; len];
            assert_eq!(find_lf(&b), None, "{len}");
            for pos in 0..len {
                b[pos] = b'\n';
                assert_eq!(find_lf(&b), Some(pos), "{len} {pos}");
                // An octet that differs from LF in one bit is not LF; a later LF is found.
                b[pos] = b'\n' ^ 0x80;
                assert_eq!(find_lf(&b), None, "{len} {pos}");
                b[len - 1] = b'\n';
                let last = if pos == len - 1 { pos } else { len - 1 };
                assert_eq!(find_lf(&b), Some(last), "{len} {pos}");
                b[len - 1] = b'a';
                b[pos] = b'a';
            }
        }
    }

    #[test]
    fn decode_with_sees_what_decode_returns() {
        // Every way of cutting one input into two reads: both entry points give the same
        // lines, the same overlong-line events and the same bare-LF flags, and leave the same
        // rest in the buffer.
        let input: &[u8] = b"EHLO a\r\nQUIT\n\r\n0123456789abcdef\r\nNO\rOP\r\nX";
        for cut in 0..=input.len() {
            let (mut a, mut b) = (LineDecoder::new(12), LineDecoder::new(12));
            let (mut ba, mut bb) = (BytesMut::new(), BytesMut::new());
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            for piece in [&input[..cut], &input[cut..]] {
                ba.extend_from_slice(piece);
                bb.extend_from_slice(piece);
                while let Some(ev) = a.decode(&mut ba) {
                    ea.push((ev, a.last_line_bare_lf()));
                }
                let seen = |l: Option<LineRef<'_>>| match l? {
                    LineRef::Line { text, bare_lf } => {
                        Some((LineEvent::Line(Bytes::copy_from_slice(text)), Some(bare_lf)))
                    }
                    LineRef::TooLong => Some((LineEvent::TooLong, None)),
                };
                while let Some((ev, bare_lf)) = b.decode_with(&mut bb, seen) {
                    // The flag handed out with a line is the one the decoder keeps.
                    if let Some(flag) = bare_lf {
                        assert_eq!(flag, b.last_line_bare_lf());
                    }
                    eb.push((ev, b.last_line_bare_lf()));
                }
            }
            assert_eq!(ea, eb, "cut at {cut}");
            assert_eq!(ba, bb, "cut at {cut}");
            assert_eq!(ea.len(), 5, "cut at {cut}: {ea:?}");
        }
    }
}
