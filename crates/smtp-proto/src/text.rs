//! Command arguments as text.
//!
//! This module holds the crate's one `unsafe` block. Every command argument is checked for
//! control characters in one pass over its octets, eight at a time, and the same pass notes
//! whether any octet is non-ASCII; when none is, the standard UTF-8 check would only repeat
//! what that pass proved, and it cost 6–7% of a command line's parse (`compare/`, instruction
//! counts and time; docs/performance.md). The safe alternative, `<[u8]>::as_ascii`, is not
//! stable yet.

use crate::ProtoError;

/// The argument of a command as text: refused ([`ProtoError::InvalidUtf8`], 500 5.5.2) when
/// it holds a control character other than TAB (or DEL), or is not UTF-8.
///
/// One pass, eight octets at a time: a word with no octet below 0x20 and none equal to 0x7F
/// is skipped with a few arithmetic operations (a word that may hold one is looked at octet
/// by octet), and the same pass notes whether any octet is non-ASCII. An all-ASCII argument,
/// nearly every one, needs no UTF-8 decoding (this module's one `unsafe` block).
#[allow(unsafe_code)]
#[inline(always)]
pub(crate) fn argument_text(arg: &[u8]) -> Result<&str, ProtoError> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let bad = |b: u8| (b < 32 && b != b'\t') || b == 127;
    let mut high = 0u64;
    let mut words = arg.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        high |= x;
        // Some octet < 0x20 (exact for "is there one"), or some octet == 0x7F.
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let del = x ^ (ONES * 0x7F);
        let is_del = del.wrapping_sub(ONES) & !del & HIGH;
        if (below | is_del) != 0 && w.iter().any(|&b| bad(b)) {
            return Err(ProtoError::InvalidUtf8);
        }
    }
    for &b in words.remainder() {
        if bad(b) {
            return Err(ProtoError::InvalidUtf8);
        }
        high |= u64::from(b);
    }
    if high & HIGH == 0 {
        // SAFETY: no octet has its high bit set (every one was or-ed into `high` above), and
        // a sequence of ASCII octets is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(arg) })
    } else {
        std::str::from_utf8(arg).map_err(|_| ProtoError::InvalidUtf8)
    }
}
