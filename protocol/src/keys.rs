//! P-384 key pairs and their wire encodings.
//!
//! A [`PublicKey`] names a mailbox. On the wire it is the SEC1 *compressed*
//! point (49 bytes), in text base64url without padding (66 characters).
//! Parsing accepts only that form and only points on the curve.
//!
//! A [`SecretKey`] signs envelopes (ECDSA P-384 / SHA-384, deterministic per
//! RFC 6979) and opens HPKE ciphertexts sealed to its public key. This module
//! draws no randomness of its own: key generation takes the caller's RNG.

use std::fmt;
use std::str::FromStr;

use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::elliptic_curve::Generate as _;
use p384::elliptic_curve::sec1::ToSec1Point as _;
use rand_core::CryptoRng;

use crate::b64;

/// Length in bytes of a compressed SEC1 P-384 point.
pub const PUBLIC_KEY_LEN: usize = 49;
/// Length in characters of a public key's base64url text.
pub const PUBLIC_KEY_TEXT_LEN: usize = b64::encoded_len(PUBLIC_KEY_LEN);
/// Length in bytes of a P-384 secret scalar.
pub const SECRET_KEY_LEN: usize = 48;
/// Length in bytes of an ES384 signature (`r || s`, big-endian, fixed width).
pub const SIGNATURE_LEN: usize = 96;

/// A key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text was not canonical base64url.
    #[error(transparent)]
    Base64(#[from] b64::Base64Error),
    /// The encoding had the wrong number of bytes.
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength {
        /// Bytes required.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The first byte of a public key was not 0x02 or 0x03 (compressed form).
    #[error("not a compressed point (first byte 0x{0:02x}, expected 0x02 or 0x03)")]
    NotCompressed(u8),
    /// The bytes do not name a point on the P-384 curve.
    #[error("not a point on the P-384 curve")]
    NotOnCurve,
    /// The bytes are not a valid P-384 secret scalar (zero or >= the group order).
    #[error("not a valid P-384 secret scalar")]
    InvalidScalar,
}

impl KeyError {
    /// A stable identifier of the fault, used by the test vectors
    /// (`spec/vectors/keys.json`) and by implementations in other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Base64(_) => "Base64",
            Self::WrongLength { .. } => "WrongLength",
            Self::NotCompressed(_) => "NotCompressed",
            Self::NotOnCurve => "NotOnCurve",
            Self::InvalidScalar => "InvalidScalar",
        }
    }
}

/// A P-384 public key: the name of a mailbox.
///
/// Equality, ordering and hashing use the 49-byte compressed encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey {
    bytes: [u8; PUBLIC_KEY_LEN],
}

impl PublicKey {
    /// Parses a compressed SEC1 point, rejecting anything not on the curve.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        UnvalidatedKey::from_bytes(bytes)?.validate()
    }

    /// The 49-byte compressed SEC1 encoding.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// The point as the elliptic-curve crate's type.
    pub(crate) fn to_p384(self) -> p384::PublicKey {
        // Invariant: `bytes` was validated (or produced) as a point on the curve.
        #[allow(clippy::expect_used)]
        p384::PublicKey::from_sec1_bytes(&self.bytes).expect("validated point")
    }

    fn from_p384(key: &p384::PublicKey) -> Self {
        let point = key.to_sec1_point(true);
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(point.as_bytes());
        Self { bytes }
    }

    /// Checks an ES384 signature (`r || s`, 96 bytes) over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = p384::ecdsa::Signature::from_slice(signature) else {
            return false;
        };
        let key = p384::ecdsa::VerifyingKey::from(self.to_p384());
        key.verify(message, &signature).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.bytes))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        text.parse::<UnvalidatedKey>()?.validate()
    }
}

/// A public key in its wire form whose point has not been checked yet: 49
/// bytes starting with 0x02 or 0x03 (canonical base64url text of 66
/// characters), which may or may not name a point on the curve.
///
/// Checking the point (decompressing it, about 40 µs) is the costliest part
/// of parsing a key. A relay that already holds a mailbox for these bytes
/// knows they were validated when the mailbox was made, and skips it;
/// everyone else calls [`UnvalidatedKey::validate`]. Parsing an
/// `UnvalidatedKey` and then validating it gives exactly what parsing a
/// [`PublicKey`] gives, errors included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnvalidatedKey {
    bytes: [u8; PUBLIC_KEY_LEN],
}

impl UnvalidatedKey {
    /// Reads a compressed SEC1 encoding without checking the point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::WrongLength {
            expected: PUBLIC_KEY_LEN,
            actual: bytes.len(),
        })?;
        if bytes[0] != 0x02 && bytes[0] != 0x03 {
            return Err(KeyError::NotCompressed(bytes[0]));
        }
        Ok(Self { bytes })
    }

    /// The 49 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// Checks that the bytes name a point on the P-384 curve.
    pub fn validate(&self) -> Result<PublicKey, KeyError> {
        p384::PublicKey::from_sec1_bytes(&self.bytes).map_err(|_| KeyError::NotOnCurve)?;
        Ok(PublicKey { bytes: self.bytes })
    }
}

impl From<PublicKey> for UnvalidatedKey {
    fn from(key: PublicKey) -> Self {
        Self { bytes: key.bytes }
    }
}

impl FromStr for UnvalidatedKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        if text.len() != PUBLIC_KEY_TEXT_LEN {
            // Report the length in bytes a correct text would decode to.
            return Err(KeyError::WrongLength {
                expected: PUBLIC_KEY_LEN,
                actual: b64::decode(text)
                    .map(|b| b.len())
                    .unwrap_or(text.len() * 3 / 4),
            });
        }
        Self::from_bytes(&b64::decode(text)?)
    }
}

impl fmt::Display for UnvalidatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.bytes))
    }
}

impl fmt::Debug for UnvalidatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnvalidatedKey({self})")
    }
}

/// In human-readable formats (JSON) a public key is its base64url text; in
/// binary formats (postcard) it is a tuple of its 49 bytes.
impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            use serde::ser::SerializeTuple as _;
            let mut tuple = serializer.serialize_tuple(PUBLIC_KEY_LEN)?;
            for byte in &self.bytes {
                tuple.serialize_element(byte)?;
            }
            tuple.end()
        }
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes =
                crate::serde_bytes::FixedBytes::<PUBLIC_KEY_LEN>::deserialize(deserializer)?;
            Self::from_bytes(&bytes.0).map_err(serde::de::Error::custom)
        }
    }
}

/// A P-384 secret key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct SecretKey {
    inner: p384::SecretKey,
}

impl SecretKey {
    /// Generates a fresh key from the caller's cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            inner: p384::SecretKey::generate_from_rng(rng),
        }
    }

    /// Parses the 48-byte big-endian secret scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != SECRET_KEY_LEN {
            return Err(KeyError::WrongLength {
                expected: SECRET_KEY_LEN,
                actual: bytes.len(),
            });
        }
        let inner = p384::SecretKey::from_slice(bytes).map_err(|_| KeyError::InvalidScalar)?;
        Ok(Self { inner })
    }

    /// The 48-byte big-endian secret scalar, for the caller's keystore.
    pub fn to_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        let mut out = [0u8; SECRET_KEY_LEN];
        out.copy_from_slice(&self.inner.to_bytes());
        out
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_p384(&self.inner.public_key())
    }

    /// Signs `message` with ECDSA P-384 / SHA-384, deterministically (RFC
    /// 6979). Returns `r || s` (96 bytes).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let key = p384::ecdsa::SigningKey::from(&self.inner);
        let signature: p384::ecdsa::Signature = key.sign(message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(&signature.to_bytes());
        out
    }

    pub(crate) fn as_p384(&self) -> &p384::SecretKey {
        &self.inner
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {})", self.public_key())
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.to_bytes().ct_eq(&other.to_bytes()))
    }
}

impl Eq for SecretKey {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; SECRET_KEY_LEN]).unwrap()
    }

    #[test]
    fn public_key_text_round_trip() {
        let public = key(1).public_key();
        let text = public.to_string();
        assert_eq!(text.len(), PUBLIC_KEY_TEXT_LEN);
        assert_eq!(text.parse::<PublicKey>().unwrap(), public);
    }

    #[test]
    fn rejects_uncompressed_and_off_curve() {
        let mut bytes = *key(2).public_key().as_bytes();
        bytes[0] = 0x04;
        assert_eq!(
            PublicKey::from_bytes(&bytes),
            Err(KeyError::NotCompressed(4))
        );
        // x >= p is not a field element.
        let mut too_big = [0xffu8; PUBLIC_KEY_LEN];
        too_big[0] = 0x02;
        assert_eq!(PublicKey::from_bytes(&too_big), Err(KeyError::NotOnCurve));
        // About half of all x have no point; among small x some must be rejected.
        let rejected = (1u8..40)
            .filter(|x| {
                let mut candidate = [0u8; PUBLIC_KEY_LEN];
                candidate[0] = 0x02;
                candidate[48] = *x;
                PublicKey::from_bytes(&candidate) == Err(KeyError::NotOnCurve)
            })
            .count();
        assert!(rejected > 5, "{rejected}");
        assert!(matches!(
            PublicKey::from_bytes(&bytes[..48]),
            Err(KeyError::WrongLength {
                expected: 49,
                actual: 48
            })
        ));
    }

    #[test]
    fn unvalidated_keys_leave_only_the_point_check_for_later() {
        let public = key(6).public_key();
        let text = public.to_string();
        let unvalidated: UnvalidatedKey = text.parse().unwrap();
        assert_eq!(unvalidated.as_bytes(), public.as_bytes());
        assert_eq!(unvalidated.to_string(), text);
        assert_eq!(unvalidated.validate(), Ok(public));
        assert_eq!(UnvalidatedKey::from(public), unvalidated);
        // Off the curve: well-formed, refused only by validate.
        let mut off = [0xffu8; PUBLIC_KEY_LEN];
        off[0] = 0x03;
        let off_text = b64::encode(&off);
        let unvalidated: UnvalidatedKey = off_text.parse().unwrap();
        assert_eq!(unvalidated.validate(), Err(KeyError::NotOnCurve));
        // Every other fault is found at once, as PublicKey finds it.
        let mut uncompressed = off;
        uncompressed[0] = 0x04;
        for bad in [
            b64::encode(&uncompressed),
            "short".to_owned(),
            format!("{}=", &text[..65]),
            format!("{text}AA"),
        ] {
            assert_eq!(
                bad.parse::<UnvalidatedKey>().map(|k| k.validate()),
                Err(bad.parse::<PublicKey>().unwrap_err()),
                "{bad}"
            );
        }
    }

    #[test]
    fn signatures_verify_and_are_deterministic() {
        let secret = key(3);
        let sig = secret.sign(b"hello");
        assert_eq!(sig, secret.sign(b"hello"));
        assert!(secret.public_key().verify(b"hello", &sig));
        assert!(!secret.public_key().verify(b"hellO", &sig));
        assert!(!key(4).public_key().verify(b"hello", &sig));
        assert!(!secret.public_key().verify(b"hello", &sig[..95]));
    }

    #[test]
    fn secret_scalar_zero_is_rejected() {
        assert_eq!(
            SecretKey::from_bytes(&[0u8; SECRET_KEY_LEN]),
            Err(KeyError::InvalidScalar)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = key(5);
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&b64::encode(&secret.to_bytes())));
    }
}
