//! Command arguments as text, and words as numbers.
//!
//! This module holds the crate's only `unsafe` code: two `from_utf8_unchecked` calls, each right
//! after the pass that proves every octet ASCII. Every command argument is checked for control
//! characters in one pass over its octets, eight at a time, and the same pass notes whether any
//! octet is non-ASCII; when none is, the standard UTF-8 check would only repeat what that pass
//! proved, and it cost 6–7% of a command line's parse (`compare/`, instruction counts and time;
//! docs/performance.md). The safe alternative, `<[u8]>::as_ascii`, is not stable yet.
//!
//! Also here: [`word_key`], verbs and parameter keywords as case-folded words.

use crate::ProtoError;

/// The argument of a command as text: refused ([`ProtoError::InvalidUtf8`], 500 5.5.2) when
/// it holds a control character other than TAB (or DEL), or is not UTF-8.
///
/// One pass, eight octets at a time: a word with no octet below 0x20 and none equal to 0x7F
/// is skipped with a few arithmetic operations (a word that may hold one is looked at octet
/// by octet), and the same pass notes whether any octet is non-ASCII. An all-ASCII argument,
/// nearly every one, needs no UTF-8 decoding.
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

/// `b` as text when every octet is ASCII, checked eight at a time (for short values built in
/// a buffer, such as a decoded xtext); `None` otherwise.
#[allow(unsafe_code)]
#[inline]
pub(crate) fn ascii(b: &[u8]) -> Option<&str> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut high = 0u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        high |= u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
    }
    for &c in words.remainder() {
        high |= u64::from(c);
    }
    // SAFETY: no octet has its high bit set (every one was or-ed into `high`), and a sequence
    // of ASCII octets is valid UTF-8.
    (high & HIGH == 0).then(|| unsafe { std::str::from_utf8_unchecked(b) })
}

/// A word of up to 8 octets (a verb or a parameter keyword) as one number, case folded, for
/// matching against [`key`] constants with one comparison each: the `len` octets at `start`
/// of `b`, loaded as one word where the input allows (a copy into a buffer read back as a
/// word stalls on store forwarding).
///
/// Folding clears bit 5 of each octet: within the octets verbs and keywords are made of
/// (letters, digits, `-`) only a letter's two cases share a key.
#[inline(always)]
pub(crate) fn word_key(b: &[u8], start: usize, len: usize) -> u64 {
    debug_assert!(len <= 8 && start + len <= b.len());
    let raw = match b.get(start..start + 8) {
        Some(w) => {
            let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            if len >= 8 {
                x
            } else {
                x & ((1u64 << (8 * len)) - 1)
            }
        }
        None => b[start..start + len]
            .iter()
            .rev()
            .fold(0u64, |k, &c| (k << 8) | u64::from(c)),
    };
    raw & FOLD
}

const FOLD: u64 = !0x2020_2020_2020_2020;

/// The [`word_key`] of a constant word (at most 8 octets).
pub(crate) const fn key(w: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let mut i = 0;
    while i < w.len() {
        a[i] = w[i];
        i += 1;
    }
    u64::from_le_bytes(a) & FOLD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_keys_fold_case_and_nothing_else() {
        let line = b"mail FROM:<a@b> SmtpUtf8 size=1";
        assert_eq!(word_key(line, 0, 4), key(b"MAIL"));
        assert_eq!(word_key(line, 16, 8), key(b"SMTPUTF8"));
        // Near the end of the input the word is gathered octet by octet: the same key.
        assert_eq!(word_key(line, 25, 4), key(b"SIZE"));
        assert_eq!(word_key(b"Quit", 0, 4), key(b"QUIT"));
        assert_ne!(key(b"SIZE"), key(b"SIZ"));
        assert_ne!(key(b"A-B"), key(b"AB-"));
        // Every octet a keyword may hold keeps its own key, but for a letter's two cases.
        let alphabet: Vec<u8> = (b'0'..=b'9').chain(b'A'..=b'Z').chain([b'-']).collect();
        for &x in &alphabet {
            for &y in &alphabet {
                assert_eq!(key(&[x]) == key(&[y]), x == y, "{x} {y}");
                assert_eq!(key(&[x]), key(&[x.to_ascii_lowercase()]));
            }
        }
    }

    #[test]
    fn ascii_is_checked_in_every_position() {
        for len in 0..30 {
            let clean = vec![b'a'; len];
            assert_eq!(ascii(&clean), Some("a".repeat(len).as_str()));
            for pos in 0..len {
                let mut l = clean.clone();
                l[pos] = 0x80;
                assert_eq!(ascii(&l), None, "{len} {pos}");
            }
        }
    }
}
