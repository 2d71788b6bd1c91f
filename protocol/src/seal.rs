//! HPKE (RFC 9180) sealing of messages and relay questions.
//!
//! Suite: base mode, DHKEM(P-384, HKDF-SHA384) (KEM 0x0011), HKDF-SHA384
//! (KDF 0x0002), AES-256-GCM (AEAD 0x0002). A sealed value is
//! `enc || ciphertext`: the 97-byte uncompressed ephemeral public key followed
//! by the AEAD output (plaintext length + 16-byte tag). The `info` string
//! separates purposes, so a ciphertext made for one purpose never opens as the
//! other; `aad` is empty.
//!
//! Message plaintexts are padded to size buckets before sealing so that a
//! relay learns only the bucket, not the exact size. The ephemeral key comes
//! from the caller's RNG (RFC 9180 `DeriveKeyPair` over 48 random bytes), so
//! test vectors can fix it.

use hpke::{Deserializable as _, Serializable as _};
use rand_core::CryptoRng;
use sha2::Digest as _;

use crate::keys::{PublicKey, SecretKey};
use crate::limits;

type Kem = hpke::kem::DhP384HkdfSha384;
type Kdf = hpke::kdf::HkdfSha384;
type Aead = hpke::aead::AesGcm256;

/// Length in bytes of the encapsulated key (an uncompressed P-384 point).
pub const ENCAPPED_KEY_LEN: usize = 97;
/// Length in bytes of the AES-256-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes that sealing adds to a plaintext.
pub const SEAL_OVERHEAD: usize = ENCAPPED_KEY_LEN + TAG_LEN;
/// Length in bytes of a relay question's secret.
pub const QUESTION_SECRET_LEN: usize = 32;
/// Length in bytes of a sealed question.
pub const SEALED_QUESTION_LEN: usize = SEAL_OVERHEAD + QUESTION_SECRET_LEN;
/// The smallest padded message size.
pub const MIN_PADDED_LEN: usize = 256;
/// The largest padded message size: a sealed message of exactly
/// [`limits::MAX_MESSAGE_BYTES`].
pub const MAX_PADDED_LEN: usize = limits::MAX_MESSAGE_BYTES - SEAL_OVERHEAD;
/// The largest message plaintext (one byte goes to the padding marker).
pub const MAX_PLAINTEXT_LEN: usize = MAX_PADDED_LEN - 1;

/// What a ciphertext is for; each purpose has its own HPKE `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An envelope from one peer to another.
    Message,
    /// A relay's question to a mailbox owner.
    Question,
}

impl Purpose {
    /// The HPKE `info` bytes of this purpose.
    pub fn info(self) -> &'static [u8] {
        match self {
            Self::Message => b"connectoid/v1 message",
            Self::Question => b"connectoid/v1 question",
        }
    }
}

/// A value could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The plaintext is larger than [`MAX_PLAINTEXT_LEN`].
    #[error("plaintext is {len} bytes, the maximum is {max}")]
    TooBig {
        /// Bytes given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The HPKE library refused (it does not for valid keys).
    #[error("HPKE seal failed: {0}")]
    Hpke(String),
}

impl SealError {
    /// A stable identifier of the fault, for tests and other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooBig { .. } => "TooBig",
            Self::Hpke(_) => "Hpke",
        }
    }
}

/// A sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than the encapsulated key and tag.
    #[error("sealed value is {len} bytes, shorter than the minimum {min}")]
    TooShort {
        /// Bytes given.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The encapsulated key is not a valid point.
    #[error("the encapsulated key is not a valid P-384 point")]
    BadEncappedKey,
    /// Decryption failed: sealed to another key, for another purpose, or altered.
    #[error("decryption failed (wrong key, wrong purpose, or altered ciphertext)")]
    Decrypt,
    /// The padding after the plaintext is malformed.
    #[error("malformed padding")]
    Padding,
    /// The opened value has the wrong length for its purpose.
    #[error("opened {len} bytes, expected {expected}")]
    WrongLength {
        /// Bytes opened.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
}

impl OpenError {
    /// A stable identifier of the fault, used by the test vectors
    /// (`spec/vectors/hpke.json`, `envelopes.json`) and by implementations
    /// in other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "TooShort",
            Self::BadEncappedKey => "BadEncappedKey",
            Self::Decrypt => "Decrypt",
            Self::Padding => "Padding",
            Self::WrongLength { .. } => "WrongLength",
        }
    }
}

fn hpke_public(key: &PublicKey) -> Result<<Kem as hpke::Kem>::PublicKey, SealError> {
    use p384::elliptic_curve::sec1::ToSec1Point as _;
    let point = key.to_p384().to_sec1_point(false);
    <Kem as hpke::Kem>::PublicKey::from_bytes(point.as_bytes())
        .map_err(|e| SealError::Hpke(e.to_string()))
}

fn hpke_secret(key: &SecretKey) -> <Kem as hpke::Kem>::PrivateKey {
    // Invariant: a SecretKey is always a valid non-zero scalar.
    #[allow(clippy::expect_used)]
    <Kem as hpke::Kem>::PrivateKey::from_bytes(&key.as_p384().to_bytes()).expect("valid scalar")
}

/// Seals `plaintext` to `recipient` for `purpose`. Returns `enc || ct`.
pub fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    recipient: &PublicKey,
    purpose: Purpose,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let public = hpke_public(recipient)?;
    let mut rng = RngRef(rng);
    let (enc, ct) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
        &hpke::OpModeS::Base,
        &public,
        purpose.info(),
        plaintext,
        b"",
        &mut rng,
    )
    .map_err(|e| SealError::Hpke(e.to_string()))?;
    let mut out = Vec::with_capacity(ENCAPPED_KEY_LEN + ct.len());
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens `enc || ct` sealed to `recipient` for `purpose`.
pub fn open(recipient: &SecretKey, purpose: Purpose, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError::TooShort {
            len: sealed.len(),
            min: SEAL_OVERHEAD,
        });
    }
    let (enc, ct) = sealed.split_at(ENCAPPED_KEY_LEN);
    let enc =
        <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| OpenError::BadEncappedKey)?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(
        &hpke::OpModeR::Base,
        &hpke_secret(recipient),
        &enc,
        purpose.info(),
        ct,
        b"",
    )
    .map_err(|_| OpenError::Decrypt)
}

/// The padded length for a plaintext of `len` bytes: the smallest power of
/// two that is at least `len + 1` and at least [`MIN_PADDED_LEN`], or
/// [`MAX_PADDED_LEN`] above 32 KiB.
pub fn padded_len(len: usize) -> Result<usize, SealError> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(SealError::TooBig {
            len,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let bucket = (len + 1).next_power_of_two().max(MIN_PADDED_LEN);
    // Every bucket up to 32 KiB is a power of two; the next (64 KiB) is cut
    // to the largest size that still fits the message limit once sealed.
    Ok(bucket.min(MAX_PADDED_LEN))
}

/// Pads: `plaintext || 0x80 || 0x00 ...` up to [`padded_len`] (ISO/IEC 7816-4).
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let len = padded_len(plaintext.len())?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(len, 0);
    Ok(out)
}

/// Removes the padding that [`pad`] added.
pub fn unpad(padded: &[u8]) -> Result<&[u8], OpenError> {
    let end = padded
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(OpenError::Padding)?;
    if padded[end] != 0x80 {
        return Err(OpenError::Padding);
    }
    Ok(&padded[..end])
}

/// Pads and seals a message plaintext to `recipient`.
pub fn seal_message<R: CryptoRng + ?Sized>(
    rng: &mut R,
    recipient: &PublicKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal(rng, recipient, Purpose::Message, &pad(plaintext)?)
}

/// Opens a sealed message and removes its padding.
pub fn open_message(recipient: &SecretKey, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let padded = open(recipient, Purpose::Message, sealed)?;
    Ok(unpad(&padded)?.to_vec())
}

/// Seals a relay question's 32-byte secret to a mailbox key.
pub fn seal_question<R: CryptoRng + ?Sized>(
    rng: &mut R,
    mailbox: &PublicKey,
    secret: &[u8; QUESTION_SECRET_LEN],
) -> Result<Vec<u8>, SealError> {
    seal(rng, mailbox, Purpose::Question, secret)
}

/// Opens a relay question; the result, base64url-encoded, is the answer.
pub fn open_question(
    mailbox: &SecretKey,
    sealed: &[u8],
) -> Result<[u8; QUESTION_SECRET_LEN], OpenError> {
    let secret = open(mailbox, Purpose::Question, sealed)?;
    secret
        .as_slice()
        .try_into()
        .map_err(|_| OpenError::WrongLength {
            len: secret.len(),
            expected: QUESTION_SECRET_LEN,
        })
}

/// The id of a sealed message: SHA-256 of its bytes. A message that arrives
/// through several relays has one id, so it is delivered once.
pub fn message_id(sealed: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(sealed).into()
}

/// Adapts `&mut R` (possibly unsized) to the sized RNG the HPKE crate takes.
struct RngRef<'a, R: ?Sized>(&'a mut R);

impl<R: CryptoRng + ?Sized> rand_core::TryRng for RngRef<'_, R> {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl<R: CryptoRng + ?Sized> rand_core::TryCryptoRng for RngRef<'_, R> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::RepeatableRng;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; 48]).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_purpose_separation() {
        let alice = key(1);
        let mut rng = RepeatableRng::new(5);
        let sealed = seal_message(&mut rng, &alice.public_key(), b"hello").unwrap();
        assert_eq!(sealed.len(), SEAL_OVERHEAD + MIN_PADDED_LEN);
        assert_eq!(open_message(&alice, &sealed).unwrap(), b"hello");
        assert_eq!(
            open(&alice, Purpose::Question, &sealed),
            Err(OpenError::Decrypt)
        );
        assert_eq!(open_message(&key(2), &sealed), Err(OpenError::Decrypt));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open_message(&alice, &altered), Err(OpenError::Decrypt));
    }

    #[test]
    fn question_round_trip() {
        let alice = key(3);
        let sealed =
            seal_question(&mut RepeatableRng::new(1), &alice.public_key(), &[4; 32]).unwrap();
        assert_eq!(sealed.len(), SEALED_QUESTION_LEN);
        assert_eq!(open_question(&alice, &sealed).unwrap(), [4; 32]);
    }

    #[test]
    fn padding_buckets() {
        assert_eq!(padded_len(0).unwrap(), 256);
        assert_eq!(padded_len(255).unwrap(), 256);
        assert_eq!(padded_len(256).unwrap(), 512);
        assert_eq!(padded_len(32 * 1024 - 1).unwrap(), 32 * 1024);
        assert_eq!(padded_len(32 * 1024).unwrap(), MAX_PADDED_LEN);
        assert_eq!(padded_len(MAX_PLAINTEXT_LEN).unwrap(), MAX_PADDED_LEN);
        assert!(padded_len(MAX_PLAINTEXT_LEN + 1).is_err());
        assert_eq!(unpad(&pad(b"ab\x80\0").unwrap()).unwrap(), b"ab\x80\0");
        assert_eq!(unpad(&[0, 0]), Err(OpenError::Padding));
        assert_eq!(unpad(&[1, 0]), Err(OpenError::Padding));
    }
}
