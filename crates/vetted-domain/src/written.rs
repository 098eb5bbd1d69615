//! Reading JSON in the exact shape `serde_json` writes it, without a parser: the pieces the
//! payload readers (`ApplicantEvent`'s `read_as_written`), step data's validation and the
//! projections' scan of stored envelopes share. Each answers `None` for anything but the
//! written shape, and its caller then leaves the text to serde.

/// Where the first byte a JSON string cannot hold as it is (`"`, `\\` or a control
/// character) is in `bytes`. Sixteen bytes at a time are tested at once, written so that the
/// compiler makes it a few vector instructions (compare, then one mask for all sixteen); the
/// chunk that holds the end is then searched eight bytes at a time ([`word_end`]).
#[inline]
pub fn string_end(bytes: &[u8]) -> Option<usize> {
    // `|` rather than `||`: no branch per byte, so the chunk's test vectorizes.
    let special = |b: u8| (b == b'"') | (b == b'\\') | (b < 0x20);
    let mut chunks = bytes.chunks_exact(16);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        if chunk.iter().fold(false, |hit, &b| hit | special(b)) {
            let (low, high) = chunk.split_at(8);
            return word_end(low)
                .or_else(|| word_end(high).map(|i| 8 + i))
                .map(|i| at + i);
        }
        at += 16;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| special(b))
        .map(|i| at + i)
}

/// [`string_end`] within eight bytes, as one word.
fn word_end(chunk: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` below `n` (n <= 128) sets its high bit in the result; so does every
    // byte above it, through the borrow, but the lowest flagged byte is always a true one.
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    let v = u64::from_le_bytes(word);
    let hits = below(v ^ (ONES * u64::from(b'"')), 1)
        | below(v ^ (ONES * u64::from(b'\\')), 1)
        | below(v, 0x20);
    (hits != 0).then(|| (hits.trailing_zeros() / 8) as usize)
}

/// The contents of the JSON string that `rest` continues (just past its opening quote), when
/// they need no unescaping; `rest` moves past the closing quote.
#[inline]
pub fn plain_string<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let end = string_end(rest.as_bytes())?;
    (rest.as_bytes()[end] == b'"').then_some(())?;
    // The quote is ASCII: both slices fall on character boundaries.
    let contents = rest.get(..end)?;
    *rest = rest.get(end + 1..)?;
    Some(contents)
}

/// The non-negative integer `rest` starts with, spelled as JSON spells it (digits, no leading
/// zero), if it fits `u64`; `rest` moves past it.
pub fn uint(rest: &mut &str) -> Option<u64> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (number, after) = rest.split_at(digits);
    if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
        return None;
    }
    let mut n: u64 = 0;
    for b in number.bytes() {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    *rest = after;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The eight-at-a-time search finds what a byte-by-byte one finds.
        #[test]
        fn string_end_finds_the_first_byte_a_json_string_cannot_hold(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let expected = bytes.iter().position(|b| matches!(b, b'"' | b'\\') || *b < 0x20);
            prop_assert_eq!(string_end(&bytes), expected);
        }

        /// A plain string reads as serde reads it; one that needs unescaping is not read.
        #[test]
        fn a_plain_string_reads_as_serde_reads_it(s in "\\PC{0,20}|[a\"\\\\\u{1}é]{0,6}", tail in ",|}") {
            let text = format!("{}{tail}", serde_json::to_string(&s).unwrap());
            let mut rest = &text[1..];
            match plain_string(&mut rest) {
                Some(read) => {
                    prop_assert_eq!(read, s.as_str());
                    prop_assert_eq!(rest, tail.as_str());
                }
                None => prop_assert!(s.contains(['"', '\\']) || s.contains(|c: char| c < ' ')),
            }
        }

        /// An integer reads as serde reads a `u64`, when JSON spells it so.
        #[test]
        fn an_integer_reads_as_serde_reads_it(text in "-?[0-9]{0,22}[.e,}]?") {
            let mut rest = text.as_str();
            if let Some(n) = uint(&mut rest) {
                let number = &text[..text.len() - rest.len()];
                prop_assert_eq!(serde_json::from_str::<u64>(number).ok(), Some(n));
            }
        }
    }
}
