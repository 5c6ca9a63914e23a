//! BDAT chunks (RFC 3030): exactly `size` octets follow the command, with no dot handling and
//! no line structure.

use bytes::{Bytes, BytesMut};

/// Reads the octets of one BDAT chunk out of the stream.
#[derive(Debug, Clone)]
pub struct BdatDecoder {
    remaining: u64,
}

/// What the BDAT decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdatEvent {
    /// Octets of the chunk.
    Chunk(Bytes),
    /// All octets of the chunk were read.
    End,
}

impl BdatDecoder {
    /// A decoder for a chunk of `size` octets.
    pub fn new(size: u64) -> Self {
        Self { remaining: size }
    }

    /// Octets still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Takes the next event out of `buf`; `None` means more input is needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<BdatEvent> {
        if self.remaining == 0 {
            return Some(BdatEvent::End);
        }
        if buf.is_empty() {
            return None;
        }
        let n = (buf.len() as u64).min(self.remaining) as usize;
        self.remaining -= n as u64;
        Some(BdatEvent::Chunk(buf.split_to(n).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_byte_counts_without_dot_handling() {
        let mut d = BdatDecoder::new(7);
        let mut buf = BytesMut::from(&b".\r\n.."[..]);
        assert_eq!(
            d.decode(&mut buf),
            Some(BdatEvent::Chunk(Bytes::from_static(b".\r\n..")))
        );
        assert_eq!(d.decode(&mut buf), None);
        buf.extend_from_slice(b"\n\rQUIT\r\n");
        assert_eq!(
            d.decode(&mut buf),
            Some(BdatEvent::Chunk(Bytes::from_static(b"\n\r")))
        );
        assert_eq!(d.decode(&mut buf), Some(BdatEvent::End));
        assert_eq!(&buf[..], b"QUIT\r\n");
        assert_eq!(BdatDecoder::new(0).decode(&mut buf), Some(BdatEvent::End));
    }
}
