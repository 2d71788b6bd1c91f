//! Base64url without padding (RFC 4648 §5), the text encoding of every binary
//! value on the wire: keys, ciphertexts, questions, answers and link parts.
//!
//! Decoding is strict: padding characters, characters outside the URL-safe
//! alphabet and non-zero trailing bits are all rejected, so every value has
//! exactly one text form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A value was not canonical base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64url: {reason}")]
pub struct Base64Error {
    reason: String,
}

impl Base64Error {
    /// A stable identifier of the fault, for tests and other languages
    /// (the `Base64` of [`KeyError::code`](crate::keys::KeyError::code)).
    pub fn code(&self) -> &'static str {
        "Base64"
    }
}

/// Encodes `bytes` as base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes canonical base64url without padding.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    URL_SAFE_NO_PAD.decode(text).map_err(|e| Base64Error {
        reason: e.to_string(),
    })
}

/// The length of the base64url text (no padding) of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_padding_and_standard_alphabet() {
        assert!(decode("YQ==").is_err());
        assert!(decode("a+b/").is_err());
        assert_eq!(decode("YQ").unwrap(), b"a");
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "YR" decodes to 'a' with non-zero trailing bits in a lax decoder.
        assert!(decode("YR").is_err());
    }

    #[test]
    fn encoded_len_matches() {
        for n in 0..100 {
            assert_eq!(encode(&vec![7u8; n]).len(), encoded_len(n));
        }
    }
}
