//! Inputs shared by the comparison benchmark and its tests: the command lines of
//! `smtp-proto`'s own benchmark, a stream of transcripts cut into TCP-sized segments, and a DATA
//! body fed in 16 KiB chunks; and one function per crate and input doing the same work. For the
//! stream and DATA, both sides first read each segment into their own buffer, as a server reads
//! from its socket.

use bytes::BytesMut;
use smtp_proto::codec::{Frame, SmtpCodec};
use smtp_proto::{BarePolicy, Command, DataDecoder, DataEvent};

/// The 8 command lines of `benches/proto.rs` (without CRLF).
pub const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example.org",
    b"MAIL FROM:<alice.smith@example.org> SIZE=123456 BODY=8BITMIME",
    b"RCPT TO:<bob@example.net>",
    b"RCPT TO:<carol+list@[192.0.2.7]> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol+2Blist@example.net",
    b"DATA",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"NOOP",
    b"QUIT",
];

/// The lines of [`COMMANDS`] that both crates accept: all but the RCPT with an address literal,
/// which Stalwart refuses at the `[` (so that, on the eight lines, it skips the work of the
/// literal, NOTIFY and ORCPT that ours does).
pub fn both_accept() -> Vec<&'static [u8]> {
    COMMANDS
        .iter()
        .copied()
        .filter(|l| !l.contains(&b'['))
        .collect()
}

/// The command lines with their CRLF (Stalwart's parser wants the line end).
pub fn lines_crlf() -> Vec<Vec<u8>> {
    crlf(COMMANDS)
}

/// `lines` with a CRLF each.
pub fn crlf(lines: &[&[u8]]) -> Vec<Vec<u8>> {
    lines
        .iter()
        .map(|l| {
            let mut v = l.to_vec();
            v.extend_from_slice(b"\r\n");
            v
        })
        .collect()
}

/// `n` transcripts (the 8 lines each) as one stream, cut into `segment`-octet pieces.
pub fn stream(n: usize, segment: usize) -> Vec<Vec<u8>> {
    stream_of(COMMANDS, n, segment)
}

/// `n` transcripts of `lines` as one stream, cut into `segment`-octet pieces.
pub fn stream_of(lines: &[&[u8]], n: usize, segment: usize) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for _ in 0..n {
        for l in crlf(lines) {
            all.extend_from_slice(&l);
        }
    }
    all.chunks(segment).map(<[u8]>::to_vec).collect()
}

/// A wire-form DATA body of about `size` octets: 76-octet lines, one in 50 dot-stuffed, and
/// the terminator.
pub fn body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 100);
    let mut n = 0u32;
    while out.len() < size {
        n += 1;
        if n.is_multiple_of(50) {
            out.extend_from_slice(b"..a line that starts with a dot, stuffed on the wire\r\n");
        } else {
            out.extend_from_slice(
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\r\n",
            );
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Ours: parses each line; returns how many parsed.
pub fn ours_commands(lines: &[&[u8]]) -> usize {
    lines.iter().filter(|l| Command::parse(l).is_ok()).count()
}

/// Stalwart: parses each line (with its CRLF); returns how many parsed.
pub fn stalwart_commands(lines: &[Vec<u8>]) -> usize {
    use stalwart_smtp_proto::Request;
    lines
        .iter()
        .filter(|l| Request::parse(&mut l.iter()).is_ok())
        .count()
}

/// Ours: frames and parses a segmented stream with the server's codec.
pub fn ours_stream(segments: &[Vec<u8>]) -> usize {
    let mut codec = SmtpCodec::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut n = 0;
    for s in segments {
        buf.extend_from_slice(s);
        while let Some(f) = codec.decode_frame(&mut buf) {
            if matches!(f, Frame::Command(Ok(_))) {
                n += 1;
            }
        }
    }
    n
}

/// Stalwart: the same stream through its `RequestReceiver`. Each segment is first read into a
/// buffer, as from a socket (ours pays the same copy into its `BytesMut`).
pub fn stalwart_stream(segments: &[Vec<u8>]) -> usize {
    use stalwart_smtp_proto::request::receiver::RequestReceiver;
    let mut rx = RequestReceiver::default();
    let mut read = Vec::with_capacity(4096);
    let mut n = 0;
    for s in segments {
        read.clear();
        read.extend_from_slice(s);
        let mut it = read.iter();
        loop {
            match rx.ingest(&mut it) {
                Ok(_) => n += 1,
                Err(stalwart_smtp_proto::Error::NeedsMoreData { .. }) => break,
                Err(_) => {}
            }
        }
    }
    n
}

/// Ours: un-stuffs a body fed in `chunk`-octet pieces; the pieces come out as `Bytes` (no
/// copy). Returns the body's length.
pub fn ours_data(wire: &[u8], chunk: usize) -> usize {
    let mut d = DataDecoder::new(u64::MAX, BarePolicy::Reject);
    let mut buf = BytesMut::with_capacity(2 * chunk);
    let mut n = 0;
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(ev) = d.decode(&mut buf) {
            match ev {
                DataEvent::Chunk(c) => n += c.len(),
                DataEvent::End(_) => return n,
            }
        }
    }
    n
}

/// Ours, copied into one buffer as a server that keeps the body in memory does.
pub fn ours_data_copied(wire: &[u8], chunk: usize) -> Vec<u8> {
    let mut d = DataDecoder::new(u64::MAX, BarePolicy::Reject);
    let mut buf = BytesMut::with_capacity(2 * chunk);
    let mut out = Vec::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(ev) = d.decode(&mut buf) {
            match ev {
                DataEvent::Chunk(c) => out.extend_from_slice(&c),
                DataEvent::End(_) => return out,
            }
        }
    }
    out
}

/// Stalwart: its `DataReceiver`, which copies into one buffer. Each chunk is first read into a
/// buffer, as from a socket (ours pays the same copy into its `BytesMut`).
pub fn stalwart_data(wire: &[u8], chunk: usize) -> Vec<u8> {
    use stalwart_smtp_proto::request::receiver::DataReceiver;
    let mut rx = DataReceiver::new();
    let mut read = Vec::with_capacity(chunk);
    let mut out = Vec::new();
    for piece in wire.chunks(chunk) {
        read.clear();
        read.extend_from_slice(piece);
        if rx.ingest(&mut read.iter(), &mut out) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_crates_do_the_same_work() {
        let ours: Vec<&[u8]> = COMMANDS.to_vec();
        assert_eq!(ours_commands(&ours), 8);
        // Stalwart refuses the address literal of `RCPT TO:<carol+list@[192.0.2.7]>`
        // (InvalidRecipientAddress); RFC 5321 §4.1.3 allows it, and so do we.
        assert_eq!(stalwart_commands(&lines_crlf()), 7);
        let common = both_accept();
        assert_eq!(common.len(), 7);
        assert_eq!(ours_commands(&common), 7);
        assert_eq!(stalwart_commands(&crlf(&common)), 7);
        let segs = stream(100, 1460);
        assert_eq!(ours_stream(&segs), 800);
        assert_eq!(stalwart_stream(&segs), 700);
        let segs = stream_of(&common, 100, 1460);
        assert_eq!(ours_stream(&segs), 700);
        assert_eq!(stalwart_stream(&segs), 700);
        let wire = body(1 << 20);
        let a = ours_data_copied(&wire, 16 * 1024);
        let b = stalwart_data(&wire, 16 * 1024);
        assert_eq!(a.len(), ours_data(&wire, 16 * 1024));
        assert_eq!(a, b, "the same body out of both");
    }
}
