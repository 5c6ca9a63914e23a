//! The DATA body decoder (RFC 5321 §4.1.1.4, §4.5.2).
//!
//! It removes dot-stuffing and ends only at `CRLF . CRLF`. The body starts at the beginning of
//! a line, so `.` as the very first line ends an empty message. A bare LF or bare CR never ends
//! the body or a line (SMTP smuggling, CVE-2023-51766 and its relatives): by default the message
//! is refused once its end is reached ([`DataVerdict::BareLineEnding`]); with
//! [`BarePolicy::Normalize`] each bare CR or LF is replaced by CRLF instead.
//!
//! The decoder is zero-copy: it hands out slices of the read buffer ([`Bytes`]) and only splits
//! where the wire form and the content differ (a stuffed dot, a normalised line ending).
//! The size is counted as it streams; past the limit the rest is read and dropped, and the end
//! says [`DataVerdict::TooLarge`].

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtoError;

/// What to do with a bare CR or LF in a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BarePolicy {
    /// Refuse the message after its end (the default).
    #[default]
    Reject,
    /// Replace each bare CR or LF by CRLF and accept the message.
    Normalize,
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataVerdict {
    /// The body is complete and acceptable.
    Ok,
    /// The body exceeded the size limit; its content was dropped (552 5.3.4).
    TooLarge,
    /// The body held a bare CR or LF and the policy is [`BarePolicy::Reject`] (550 5.6.0).
    BareLineEnding,
}

/// The end of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataEnd {
    /// Octets of content seen (after un-stuffing), counted even past the limit.
    pub size: u64,
    /// Whether the message may be accepted.
    pub verdict: DataVerdict,
}

impl DataEnd {
    /// The error to answer with, if the message must be refused.
    pub fn error(&self) -> Option<ProtoError> {
        match self.verdict {
            DataVerdict::Ok => None,
            DataVerdict::TooLarge => Some(ProtoError::MessageTooLarge),
            DataVerdict::BareLineEnding => Some(ProtoError::BareLineEnding),
        }
    }
}

/// What the decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEvent {
    /// A piece of the message content (un-stuffed).
    Chunk(Bytes),
    /// The terminating `.` line was consumed.
    End(DataEnd),
}

/// A streaming DATA decoder; one per message.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    max_size: u64,
    policy: BarePolicy,
    line_start: bool,
    size: u64,
    bare: bool,
    /// A normalised line ending to hand out before anything else.
    pending_crlf: bool,
    done: bool,
}

const CRLF: Bytes = Bytes::from_static(b"\r\n");

impl DataDecoder {
    /// A decoder for a body of at most `max_size` octets (`u64::MAX` for no limit).
    pub fn new(max_size: u64, policy: BarePolicy) -> Self {
        Self {
            max_size,
            policy,
            line_start: true,
            size: 0,
            bare: false,
            pending_crlf: false,
            done: false,
        }
    }

    /// Octets of content so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once the end was returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn refusing(&self) -> bool {
        self.size > self.max_size || (self.bare && self.policy == BarePolicy::Reject)
    }

    /// Takes the next event out of `buf`; `None` means more input is needed (everything that
    /// could be handed out was). After [`DataEvent::End`] the rest of `buf` is the next command.
    ///
    /// Chunks of a message being refused (too large, bare line endings) are dropped here, so
    /// such a body costs no memory.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<DataEvent> {
        loop {
            let ev = self.step(buf)?;
            if let DataEvent::Chunk(c) = &ev {
                self.size = self.size.saturating_add(c.len() as u64);
                if self.refusing() {
                    continue;
                }
            }
            return Some(ev);
        }
    }

    fn chunk(&mut self, buf: &mut BytesMut, n: usize) -> Option<DataEvent> {
        Some(DataEvent::Chunk(buf.split_to(n).freeze()))
    }

    /// Hands out `buf[..k]` and replaces the bare CR or LF at `k` by CRLF.
    fn normalize_at(&mut self, buf: &mut BytesMut, k: usize) -> Option<DataEvent> {
        self.line_start = false;
        if k > 0 {
            self.pending_crlf = true;
            let ev = self.chunk(buf, k);
            buf.advance(1);
            return ev;
        }
        buf.advance(1);
        Some(DataEvent::Chunk(CRLF))
    }

    fn step(&mut self, buf: &mut BytesMut) -> Option<DataEvent> {
        /// What follows the region `buf[..pos]` that the scan cleared.
        enum After {
            /// The buffer is exhausted (a trailing CR is held back).
            Wait,
            /// A dot-stuffed line starts at `pos`.
            StuffedDot,
            /// The terminating `.CRLF` starts at `pos`.
            End,
            /// A bare CR or LF to normalise is at `pos`.
            Bare,
        }
        if self.done {
            return None;
        }
        if self.pending_crlf {
            self.pending_crlf = false;
            return Some(DataEvent::Chunk(CRLF));
        }
        let len = buf.len();
        let mut pos = 0;
        let mut line_start = self.line_start;
        let after = loop {
            if line_start {
                if pos == len {
                    break After::Wait;
                }
                if buf[pos] == b'.' {
                    // RFC 5321 §4.5.2: a line starting with '.' is either the end (".CRLF")
                    // or dot-stuffed (the first dot is removed).
                    match (buf.get(pos + 1), buf.get(pos + 2)) {
                        (None, _) | (Some(b'\r'), None) => break After::Wait,
                        (Some(b'\r'), Some(b'\n')) => break After::End,
                        _ => break After::StuffedDot,
                    }
                }
                line_start = false;
            }
            match memchr::memchr2(b'\r', b'\n', &buf[pos..]) {
                None => {
                    pos = len;
                    break After::Wait;
                }
                Some(off) => {
                    let j = pos + off;
                    if buf[j] == b'\r' {
                        match buf.get(j + 1) {
                            None => {
                                // Hold a trailing CR back until the byte after it arrives.
                                pos = j;
                                break After::Wait;
                            }
                            Some(b'\n') => {
                                pos = j + 2;
                                line_start = true;
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    // A bare CR or bare LF at j: it ends no line.
                    self.bare = true;
                    match self.policy {
                        BarePolicy::Reject => pos = j + 1,
                        BarePolicy::Normalize => {
                            pos = j;
                            break After::Bare;
                        }
                    }
                }
            }
        };
        match after {
            After::Wait => {
                self.line_start = line_start;
                if pos > 0 { self.chunk(buf, pos) } else { None }
            }
            After::StuffedDot if pos > 0 => {
                // The dot is dealt with at the start of the next call.
                self.line_start = true;
                self.chunk(buf, pos)
            }
            After::StuffedDot => {
                buf.advance(1);
                self.line_start = false;
                self.step(buf)
            }
            After::End if pos > 0 => {
                self.line_start = true;
                self.chunk(buf, pos)
            }
            After::End => {
                buf.advance(3);
                self.done = true;
                let verdict = if self.size > self.max_size {
                    DataVerdict::TooLarge
                } else if self.bare && self.policy == BarePolicy::Reject {
                    DataVerdict::BareLineEnding
                } else {
                    DataVerdict::Ok
                };
                Some(DataEvent::End(DataEnd {
                    size: self.size,
                    verdict,
                }))
            }
            After::Bare => self.normalize_at(buf, pos),
        }
    }
}

/// Dot-stuffs `body` for sending with DATA and appends the terminating `.CRLF` (client side).
///
/// A body that does not end with CRLF gets one first. Bare CR and LF are sent as they are; use
/// a body with CRLF line endings.
pub fn encode_data(body: &[u8], out: &mut BytesMut) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut e = DataEncoder::new();
    e.encode(body, out);
    e.finish(out);
}

/// [`encode_data`] for a body that arrives in pieces (a relay reading a spool file): the same
/// output whatever the split, with memory bounded by the piece.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    line_start: bool,
    last: Option<u8>,
    prev: Option<u8>,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataEncoder {
    /// At the start of a body.
    pub fn new() -> Self {
        Self {
            line_start: true,
            last: None,
            prev: None,
        }
    }

    /// Dot-stuffs the next piece of the body into `out`.
    pub fn encode(&mut self, piece: &[u8], out: &mut BytesMut) {
        let mut rest = piece;
        while !rest.is_empty() {
            if self.line_start && rest[0] == b'.' {
                out.extend_from_slice(b".");
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    out.extend_from_slice(&rest[..=i]);
                    let before = if i > 0 { Some(rest[i - 1]) } else { self.last };
                    self.line_start = before == Some(b'\r');
                    self.prev = before;
                    self.last = Some(b'\n');
                    rest = &rest[i + 1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.line_start = false;
                    self.prev = if rest.len() > 1 {
                        Some(rest[rest.len() - 2])
                    } else {
                        self.last
                    };
                    self.last = rest.last().copied();
                    rest = &[];
                }
            }
        }
    }

    /// Ends the body: CRLF if it did not end with one, then `.CRLF`.
    pub fn finish(self, out: &mut BytesMut) {
        let ends_crlf = self.last == Some(b'\n') && self.prev == Some(b'\r');
        if self.last.is_some() && !ends_crlf {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streaming_encoder_matches_encode_data_whatever_the_split() {
        let bodies: &[&[u8]] = &[
            b"",
            b".",
            b"a\r\n.b\r\n..c\r\n",
            b".start\r\nmid\r\n.\r\nend",
            b"line\n.bare lf\r\n.\r",
            b"\r\n.\r\n",
            b"x\r",
        ];
        for body in bodies {
            let mut whole = BytesMut::new();
            encode_data(body, &mut whole);
            for split in 0..=body.len() {
                for step in 1..=3 {
                    let mut e = DataEncoder::new();
                    let mut out = BytesMut::new();
                    e.encode(&body[..split], &mut out);
                    for piece in body[split..].chunks(step) {
                        e.encode(piece, &mut out);
                    }
                    e.finish(&mut out);
                    assert_eq!(out, whole, "{body:?} split at {split}, step {step}");
                }
            }
        }
    }

    /// Feeds `input` in pieces of `step` bytes; returns the content, the end and the leftover.
    fn run(
        input: &[u8],
        step: usize,
        max: u64,
        policy: BarePolicy,
    ) -> (Vec<u8>, Option<DataEnd>, Vec<u8>) {
        let mut d = DataDecoder::new(max, policy);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(ev) = d.decode(&mut buf) {
                match ev {
                    DataEvent::Chunk(c) => out.extend_from_slice(&c),
                    DataEvent::End(e) => return (out, Some(e), buf.to_vec()),
                }
            }
        }
        (out, None, buf.to_vec())
    }

    fn all_steps(input: &[u8], expect: &[u8], verdict: DataVerdict, policy: BarePolicy) {
        for step in [1, 2, 3, 5, 7, 64, 100_000] {
            let (out, end, _) = run(input, step, u64::MAX, policy);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(expect),
                "step {step}"
            );
            assert_eq!(end.map(|e| e.verdict), Some(verdict), "step {step}");
        }
    }

    #[test]
    fn simple_body() {
        all_steps(
            b"Subject: hi\r\n\r\nHello\r\n.\r\n",
            b"Subject: hi\r\n\r\nHello\r\n",
            DataVerdict::Ok,
            BarePolicy::Reject,
        );
    }

    #[test]
    fn empty_body_first_line_is_dot() {
        // The body begins at the start of a line: ".CRLF" right away is an empty message.
        let (out, end, rest) = run(b".\r\nQUIT\r\n", 1000, u64::MAX, BarePolicy::Reject);
        assert!(out.is_empty());
        assert_eq!(
            end,
            Some(DataEnd {
                size: 0,
                verdict: DataVerdict::Ok
            })
        );
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn dot_unstuffing() {
        all_steps(
            b"..leading\r\n.\r\n..\r\n...x\r\n.\r\n",
            b".leading\r\n",
            DataVerdict::Ok,
            BarePolicy::Reject,
        );
        all_steps(
            b"..leading\r\n..\r\n...x\r\na.b\r\n.\r\n",
            b".leading\r\n.\r\n..x\r\na.b\r\n",
            DataVerdict::Ok,
            BarePolicy::Reject,
        );
        // A stuffed first line.
        all_steps(
            b"..\r\n.\r\n",
            b".\r\n",
            DataVerdict::Ok,
            BarePolicy::Reject,
        );
    }

    #[test]
    fn bare_lf_never_ends_the_body() {
        // The smuggling shapes: <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF>, <CR>.<CR>
        for input in [
            &b"a\n.\nMAIL FROM:<x@y.z>\r\n.\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y.z>\r\n.\r\n",
            b"a\r\n.\nMAIL FROM:<x@y.z>\r\n.\r\n",
            b"a\r.\rMAIL FROM:<x@y.z>\r\n.\r\n",
        ] {
            let (_, end, rest) = run(input, 1000, u64::MAX, BarePolicy::Reject);
            let end = end.expect("ends at the real CRLF.CRLF");
            assert_eq!(end.verdict, DataVerdict::BareLineEnding);
            assert!(
                rest.is_empty(),
                "nothing smuggled out: {:?}",
                String::from_utf8_lossy(&rest)
            );
            assert_eq!(end.error(), Some(ProtoError::BareLineEnding));
        }
    }

    #[test]
    fn bare_endings_normalised_on_request() {
        all_steps(
            b"a\nb\rc\r\n.\r\n",
            b"a\r\nb\r\nc\r\n",
            DataVerdict::Ok,
            BarePolicy::Normalize,
        );
        // Normalisation does not make a smuggled end.
        all_steps(
            b"a\n.\nb\r\n.\r\n",
            b"a\r\n.\r\nb\r\n",
            DataVerdict::Ok,
            BarePolicy::Normalize,
        );
    }

    #[test]
    fn size_limit() {
        let body = [b'x'; 100];
        let mut input = body.to_vec();
        input.extend_from_slice(b"\r\n.\r\nNEXT");
        let (out, end, _) = run(&input, 7, 50, BarePolicy::Reject);
        assert!(out.len() <= 56, "content past the limit is dropped");
        let end = end.unwrap();
        assert_eq!(end.verdict, DataVerdict::TooLarge);
        assert_eq!(end.size, 102);
        assert_eq!(end.error().unwrap().reply().code().get(), 552);
        let (_, _, rest) = run(&input, 1000, 50, BarePolicy::Reject);
        assert_eq!(rest, b"NEXT");
        let (out, end, _) = run(&input, 7, 102, BarePolicy::Reject);
        assert_eq!(out.len(), 102);
        assert_eq!(end.unwrap().verdict, DataVerdict::Ok);
    }

    #[test]
    fn incomplete_needs_more() {
        let (out, end, rest) = run(b"abc\r\n.\r", 1000, u64::MAX, BarePolicy::Reject);
        assert_eq!(out, b"abc\r\n");
        assert_eq!(end, None);
        assert_eq!(rest, b".\r");
    }

    #[test]
    fn encode_round_trip() {
        let bodies: &[&[u8]] = &[
            b"",
            b"a\r\n",
            b".\r\n",
            b"..x\r\n.y\r\nz",
            b"line\r\n.\r\nafter\r\n",
        ];
        for body in bodies {
            let mut wire = BytesMut::new();
            encode_data(body, &mut wire);
            let (out, end, rest) = run(&wire, 3, u64::MAX, BarePolicy::Reject);
            let mut expect = body.to_vec();
            if !body.is_empty() && !body.ends_with(b"\r\n") {
                expect.extend_from_slice(b"\r\n");
            }
            assert_eq!(out, expect);
            assert_eq!(end.unwrap().verdict, DataVerdict::Ok);
            assert!(rest.is_empty());
        }
    }
}
