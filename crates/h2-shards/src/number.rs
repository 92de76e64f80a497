//! Header values for numbers (a content length, an expiry), made the cheap way: requests carry
//! them on every push.

use http::HeaderValue;

/// `n` as a header value, in one allocation: `HeaderValue::from(u64)` takes two (a `BytesMut`
/// to write into, then the shared form it is frozen into), and every push sends its body's length.
pub fn number(n: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    // Digits are always a valid value; the fallback only keeps this free of a panic path.
    HeaderValue::from_bytes(digits.format(n).as_bytes()).unwrap_or_else(|_| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_reads_as_the_standard_conversion_writes_it() {
        for n in [0, 7, 10, 99, 123, 4_096, 1_700_000_000, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }
}
