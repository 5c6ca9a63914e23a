//! Octet-level tools of the parsers: command arguments as text, words as numbers, the octet
//! class table, and tests on eight octets at a time.
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
    let bad = |b: u8| (b < 32 && b != b'\t') || b == 127;
    let mut high = 0u64;
    let mut words = arg.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        high |= x;
        // Some octet < 0x20, or some octet == 0x7F (TAB is let through octet by octet).
        if (octets_below(x, 0x20) | octets_equal(x, 0x7F)) != 0 && w.iter().any(|&b| bad(b)) {
            return Err(ProtoError::InvalidUtf8);
        }
    }
    for &b in words.remainder() {
        if bad(b) {
            return Err(ProtoError::InvalidUtf8);
        }
        high |= u64::from(b);
    }
    if high & HIGH_BITS == 0 {
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
    (high & HIGH_BITS == 0).then(|| unsafe { std::str::from_utf8_unchecked(b) })
}

/// Eight octets at a time: `ONES` has 1 in every octet, `HIGH_BITS` the high bit of every
/// octet, of a word read little-endian (the first octet lowest).
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each octet of `x` below `n` (at most 0x80). Exact for the lowest flagged
/// octet: a false flag (from a borrow) can only sit above a true one.
#[inline(always)]
pub(crate) const fn octets_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * n as u64) & !x & HIGH_BITS
}

/// The high bit of each octet of `x` equal to `octet`; exact for the lowest, as above.
#[inline(always)]
pub(crate) const fn octets_equal(x: u64, octet: u8) -> u64 {
    octets_below(x ^ (ONES * octet as u64), 1)
}

/// The first `octet` in `b`, eight octets at a time (for short values: no `memchr` call).
#[inline(always)]
pub(crate) fn find_octet(b: &[u8], octet: u8) -> Option<usize> {
    let mut words = b.chunks_exact(8);
    let mut i = 0;
    for w in &mut words {
        let m = octets_equal(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])), octet);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == octet)
        .map(|p| i + p)
}

/// Octet classes of the address and parameter grammars, one table lookup per octet
/// ([`CLASS`]): letters and digits; `Let-dig`/`Ldh-str` octets (also `esmtp-keyword`'s);
/// `atext` (RFC 5322 §3.2.3) with UTF-8 octets (RFC 6531 §3.3); non-ASCII; `dcontent`; and
/// `esmtp-value` octets with UTF-8.
pub(crate) const ALNUM: u8 = 1;
pub(crate) const LDH: u8 = 2;
pub(crate) const ATEXT: u8 = 4;
pub(crate) const NON_ASCII: u8 = 8;
pub(crate) const DCONTENT: u8 = 16;
pub(crate) const VALUE: u8 = 32;

/// The class of every octet (see [`ALNUM`]).
pub(crate) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut f = 0;
        if b.is_ascii_alphanumeric() {
            f |= ALNUM | LDH | ATEXT;
        }
        if b == b'-' {
            f |= LDH;
        }
        let specials = b"!#$%&'*+-/=?^_`{|}~";
        let mut k = 0;
        while k < specials.len() {
            if specials[k] == b {
                f |= ATEXT;
            }
            k += 1;
        }
        if b >= 0x80 {
            f |= ATEXT | NON_ASCII | VALUE;
        }
        // dcontent = %d33-90 / %d94-126
        if (b >= 33 && b <= 90) || (b >= 94 && b <= 126) {
            f |= DCONTENT;
        }
        // esmtp-value = 1*(%d33-60 / %d62-126)
        if b.is_ascii_graphic() && b != b'=' {
            f |= VALUE;
        }
        t[c] = f;
        c += 1;
    }
    t
};

/// True when octet `b` is in any of the classes `flags`.
#[inline(always)]
pub(crate) fn is(b: u8, flags: u8) -> bool {
    CLASS[usize::from(b)] & flags != 0
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

/// True when the `len` (1 to 8) octets of a [`word_key`] are all letters: folded, a letter is
/// an octet from `A` to `Z` (only a letter's two cases fold there), tested on the whole word.
#[inline(always)]
pub(crate) fn all_letters(folded: u64, len: usize) -> bool {
    debug_assert!((1..=8).contains(&len));
    let used = HIGH_BITS >> (8 * (8 - len));
    // With each octet's high bit set first, subtracting never borrows across octets: the high
    // bit stays set exactly where the low seven bits are at least the octet subtracted.
    let at_least_a = (folded | HIGH_BITS).wrapping_sub(ONES * u64::from(b'A'));
    let above_z = (folded | HIGH_BITS).wrapping_sub(ONES * u64::from(b'Z' + 1));
    let letters = at_least_a & !above_z & !folded & HIGH_BITS;
    letters & used == used
}

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
    fn letters_are_told_from_every_other_octet_in_every_position() {
        for len in 1..=8 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut w = *b"abcdefgh";
                    w[pos] = b;
                    let word = &w[..len];
                    let want = word.iter().all(u8::is_ascii_alphabetic);
                    assert_eq!(
                        all_letters(word_key(word, 0, len), len),
                        want,
                        "{b} at {pos} of {len}"
                    );
                    // Octets past the verb (a space, an argument) do not count.
                    let mut line = word.to_vec();
                    line.extend_from_slice(b" \x00\xff12345678");
                    assert_eq!(
                        all_letters(word_key(&line, 0, len), len),
                        want,
                        "{b} at {pos} of {len}, in a line"
                    );
                }
            }
        }
    }

    #[test]
    fn an_octet_is_found_first_in_every_position() {
        for len in 0..30 {
            // Octets one below and one above, which a word test could take for it.
            let clean: Vec<u8> = (0..len)
                .map(|k| if k % 2 == 0 { b'*' } else { b',' })
                .collect();
            assert_eq!(find_octet(&clean, b'+'), None, "{len}");
            for pos in 0..len {
                let mut v = clean.clone();
                v[pos] = b'+';
                if pos + 1 < len {
                    v[pos + 1] = b'+';
                }
                assert_eq!(find_octet(&v, b'+'), Some(pos), "{len} {pos}");
            }
        }
    }

    #[test]
    fn every_octet_is_in_the_classes_of_the_grammars() {
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            let high = b >= 0x80;
            assert_eq!(is(b, ALNUM), alnum, "{b}");
            assert_eq!(is(b, LDH), alnum || b == b'-', "{b}");
            let special = b"!#$%&'*+-/=?^_`{|}~".contains(&b);
            assert_eq!(is(b, ATEXT), alnum || special || high, "{b}");
            assert_eq!(is(b, NON_ASCII), high, "{b}");
            let dcontent = (33..=90).contains(&b) || (94..=126).contains(&b);
            assert_eq!(is(b, DCONTENT), dcontent, "{b}");
            let value = (33..=60).contains(&b) || (62..=126).contains(&b) || high;
            assert_eq!(is(b, VALUE), value, "{b}");
        }
    }

    #[test]
    fn word_tests_flag_the_first_matching_octet_exactly() {
        for pos in 0..8 {
            for (octet, other) in [(0x7Fu8, 0x80u8), (b'\n', b'\x0b'), (b'=', b'<')] {
                let mut w = [b'a'; 8];
                w[pos] = octet;
                // The octet above a match may flag falsely; the lowest flag is the match.
                if pos < 7 {
                    w[pos + 1] = other;
                }
                let m = octets_equal(u64::from_le_bytes(w), octet);
                assert_eq!(m.trailing_zeros() / 8, pos as u32, "{octet} at {pos}");
            }
            let mut w = [b'a'; 8];
            w[pos] = 0x1F;
            let m = octets_below(u64::from_le_bytes(w), 0x20);
            assert_eq!(m.trailing_zeros() / 8, pos as u32, "0x1F at {pos}");
        }
        assert_eq!(octets_equal(u64::from_le_bytes(*b"abcdefgh"), b'\n'), 0);
        assert_eq!(octets_below(u64::from_le_bytes([0x80; 8]), 0x20), 0);
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
