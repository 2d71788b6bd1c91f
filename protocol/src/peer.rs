//! The wire format of a peer link: what two peers exchange to connect
//! directly over QUIC once signaling has made them known to each other
//! (`spec/protocol.md` §15).
//!
//! - [`QuicOffer`]: the `{"quic": {...}}` body of the `offer` and `answer`
//!   envelopes (session id, certificate [`Fingerprint`], candidates);
//! - the length framing of the messages on the link's one stream
//!   ([`frame_header`], [`decode_frame_header`], [`encode_frame`],
//!   [`decode_frame`]);
//! - the challenge-response that authenticates the link with the peers'
//!   mailbox keys ([`ChallengeMessage`], [`ProofMessage`],
//!   [`signing_input`]).
//!
//! This module only encodes, decodes, signs and verifies. It opens no
//! socket, draws no randomness (challenges and session ids come from the
//! caller) and decides nothing about connections or key rotation: the
//! client's `peer` module does.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize as _;
use sha2::Digest as _;

use crate::b64;
use crate::keys::{KeyError, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SecretKey};

/// The label that starts every [`signing_input`]: the 23 ASCII bytes
/// `connectoid/v1 peer link`.
pub const AUTH_LABEL: &[u8] = b"connectoid/v1 peer link";
/// Length of a challenge in bytes.
pub const CHALLENGE_LEN: usize = 32;
/// Length of a certificate fingerprint (SHA-256) in bytes.
pub const FINGERPRINT_LEN: usize = 32;
/// Length of a frame header (the big-endian message length) in bytes.
pub const FRAME_HEADER_LEN: usize = 4;
/// Longest message a frame carries: 16 MiB.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Most candidate addresses an offer or answer may carry.
pub const MAX_CANDIDATES: usize = 16;
/// Longest session id, in bytes (of UTF-8).
pub const MAX_SESSION_LEN: usize = 64;

/// The SHA-256 fingerprint of a DER certificate; base64url (43 characters)
/// in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        Self(sha2::Sha256::digest(der).into())
    }

    /// Parses the base64url form.
    pub fn parse(text: &str) -> Result<Self, OfferError> {
        b64::decode(text)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .map(Self)
            .ok_or(OfferError::Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An offer or answer body is not a valid QUIC offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The body has no `quic` member.
    #[error("no \"quic\" member")]
    NoQuic,
    /// The `quic` member is not an object of the expected fields and types
    /// (a candidate that is not `ip:port`, for one).
    #[error("malformed quic member: {0}")]
    Malformed(String),
    /// More than [`MAX_CANDIDATES`] candidates.
    #[error("{count} candidates, the maximum is {max}")]
    TooManyCandidates {
        /// Candidates given.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// The session id is empty or longer than [`MAX_SESSION_LEN`] bytes.
    #[error("the session id must be 1 to {MAX_SESSION_LEN} bytes")]
    Session,
    /// The fingerprint is not base64url of 32 bytes.
    #[error("the fingerprint must be base64url of {FINGERPRINT_LEN} bytes")]
    Fingerprint,
}

impl OfferError {
    /// A stable identifier of the fault, used by `spec/vectors/peer.json`
    /// and by implementations in other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoQuic => "no-quic",
            Self::Malformed(_) => "malformed",
            Self::TooManyCandidates { .. } => "too-many-candidates",
            Self::Session => "session",
            Self::Fingerprint => "fingerprint",
        }
    }
}

/// The `quic` member of an offer or answer body:
/// `{"quic": {"session": S, "fingerprint": F, "candidates": ["ip:port", ...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QuicOffer {
    /// The session id (the offerer's base64url of 16 random bytes); the
    /// answer repeats it.
    pub session: String,
    /// The fingerprint of the sender's certificate for this session.
    pub fingerprint: Fingerprint,
    /// Where the sender listens.
    pub candidates: Vec<SocketAddr>,
}

#[derive(serde::Deserialize)]
struct RawOffer {
    session: String,
    fingerprint: String,
    candidates: Vec<SocketAddr>,
}

impl QuicOffer {
    /// An offer of `session` with `fingerprint` and `candidates`.
    pub fn new(session: String, fingerprint: Fingerprint, candidates: Vec<SocketAddr>) -> Self {
        Self {
            session,
            fingerprint,
            candidates,
        }
    }

    /// Reads the `quic` member of an envelope body. Other members of the
    /// body, and unknown members of `quic`, are ignored.
    pub fn from_body(body: &serde_json::Value) -> Result<Self, OfferError> {
        let quic = body.get("quic").ok_or(OfferError::NoQuic)?;
        let raw = RawOffer::deserialize(quic).map_err(|e| OfferError::Malformed(e.to_string()))?;
        if raw.candidates.len() > MAX_CANDIDATES {
            return Err(OfferError::TooManyCandidates {
                count: raw.candidates.len(),
                max: MAX_CANDIDATES,
            });
        }
        if raw.session.is_empty() || raw.session.len() > MAX_SESSION_LEN {
            return Err(OfferError::Session);
        }
        let fingerprint = Fingerprint::parse(&raw.fingerprint)?;
        Ok(Self {
            session: raw.session,
            fingerprint,
            candidates: raw.candidates,
        })
    }

    /// This offer as an envelope body.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "quic": self })
    }
}

/// A frame could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message is longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLong {
        /// Bytes given or announced.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The bytes end inside a header or a message.
    #[error("frame truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
}

impl FrameError {
    /// A stable identifier of the fault, used by `spec/vectors/peer.json`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "too-long",
            Self::Truncated { .. } => "truncated",
        }
    }
}

/// The header of a frame of `len` bytes: `len` as 4 big-endian bytes.
pub fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // MAX_FRAME_LEN fits in a u32.
    Ok((len as u32).to_be_bytes())
}

/// The message length a frame header announces, at most [`MAX_FRAME_LEN`].
pub fn decode_frame_header(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// One frame: the header, then the message.
pub fn encode_frame(message: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = frame_header(message.len())?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + message.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(message);
    Ok(out)
}

/// Reads the first frame of `bytes`: its message and the bytes after it.
pub fn decode_frame(bytes: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    let Some((header, rest)) = bytes.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            available: bytes.len(),
        });
    };
    let len = decode_frame_header(*header)?;
    if rest.len() < len {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN + len,
            available: bytes.len(),
        });
    }
    Ok(rest.split_at(len))
}

/// What a peer's mailbox key signs on a peer link:
/// `AUTH_LABEL || challenge || signer fingerprint || verifier fingerprint
/// || 0x00`, or `... || 0x01 || new public key (49 bytes, SEC1 compressed)`
/// when the signer rotates to `new_key`. `challenge` is the verifier's.
pub fn signing_input(
    challenge: &[u8; CHALLENGE_LEN],
    signer: &Fingerprint,
    verifier: &Fingerprint,
    new_key: Option<&PublicKey>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        AUTH_LABEL.len() + CHALLENGE_LEN + 2 * FINGERPRINT_LEN + 1 + PUBLIC_KEY_LEN,
    );
    out.extend_from_slice(AUTH_LABEL);
    out.extend_from_slice(challenge);
    out.extend_from_slice(&signer.0);
    out.extend_from_slice(&verifier.0);
    match new_key {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            out.extend_from_slice(key.as_bytes());
        }
    }
    out
}

/// A challenge-response message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthMessageError {
    /// Not a JSON object of the expected members and types.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The challenge is not base64url of [`CHALLENGE_LEN`] bytes.
    #[error("the challenge must be base64url of {CHALLENGE_LEN} bytes")]
    Challenge,
    /// The signature is not base64url of [`SIGNATURE_LEN`] bytes.
    #[error("the signature must be base64url of {SIGNATURE_LEN} bytes")]
    Signature,
    /// The new key is not a valid public key.
    #[error("new key: {0}")]
    Key(KeyError),
}

impl AuthMessageError {
    /// A stable identifier of the fault, used by `spec/vectors/peer.json`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Challenge => "challenge",
            Self::Signature => "signature",
            Self::Key(_) => "key",
        }
    }
}

/// The first message each side sends on a peer link: `{"challenge": C}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeMessage {
    /// Random bytes the peer must sign over.
    pub challenge: [u8; CHALLENGE_LEN],
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RawChallenge {
    challenge: String,
}

impl ChallengeMessage {
    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        let raw = RawChallenge {
            challenge: b64::encode(&self.challenge),
        };
        // Invariant: a struct of one string serializes infallibly.
        #[allow(clippy::expect_used)]
        serde_json::to_string(&raw).expect("serializable")
    }

    /// Reads the message; unknown members are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, AuthMessageError> {
        let raw: RawChallenge = serde_json::from_slice(bytes)
            .map_err(|e| AuthMessageError::Malformed(e.to_string()))?;
        let challenge = b64::decode(&raw.challenge)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AuthMessageError::Challenge)?;
        Ok(Self { challenge })
    }
}

/// The second message each side sends: `{"signature": S, "key": K?}`, the
/// signature by its current mailbox key over [`signing_input`] and,
/// when it rotates, its new mailbox public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofMessage {
    /// ES384 signature (`r || s`) over the signing input.
    pub signature: [u8; SIGNATURE_LEN],
    /// The signer's new mailbox key, if it rotates now.
    pub key: Option<PublicKey>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RawProof {
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl ProofMessage {
    /// Signs the verifier's `challenge` with `signer`'s current mailbox key,
    /// announcing `new_key` if given.
    pub fn sign(
        signer_key: &SecretKey,
        challenge: &[u8; CHALLENGE_LEN],
        signer: &Fingerprint,
        verifier: &Fingerprint,
        new_key: Option<PublicKey>,
    ) -> Self {
        let input = signing_input(challenge, signer, verifier, new_key.as_ref());
        Self {
            signature: signer_key.sign(&input),
            key: new_key,
        }
    }

    /// Whether the signature verifies with the signer's pinned `key` over
    /// our `challenge`, the `signer`'s and our (`verifier`) fingerprints and
    /// the announced new key.
    pub fn verify(
        &self,
        key: &PublicKey,
        challenge: &[u8; CHALLENGE_LEN],
        signer: &Fingerprint,
        verifier: &Fingerprint,
    ) -> bool {
        key.verify(
            &signing_input(challenge, signer, verifier, self.key.as_ref()),
            &self.signature,
        )
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        let raw = RawProof {
            signature: b64::encode(&self.signature),
            key: self.key.map(|k| k.to_string()),
        };
        // Invariant: a struct of strings serializes infallibly.
        #[allow(clippy::expect_used)]
        serde_json::to_string(&raw).expect("serializable")
    }

    /// Reads the message; unknown members are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, AuthMessageError> {
        let raw: RawProof = serde_json::from_slice(bytes)
            .map_err(|e| AuthMessageError::Malformed(e.to_string()))?;
        let signature = b64::decode(&raw.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AuthMessageError::Signature)?;
        let key = raw
            .key
            .map(|text| text.parse::<PublicKey>())
            .transpose()
            .map_err(AuthMessageError::Key)?;
        Ok(Self { signature, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_what_is_over_or_short() {
        let frame = encode_frame(b"hello").unwrap();
        assert_eq!(frame, b"\0\0\0\x05hello");
        let mut two = frame.clone();
        two.extend_from_slice(&encode_frame(b"").unwrap());
        let (first, rest) = decode_frame(&two).unwrap();
        assert_eq!((first, rest), (&b"hello"[..], &[0u8; 4][..]));
        assert_eq!(decode_frame(rest).unwrap(), (&[][..], &[][..]));
        assert_eq!(decode_frame(&frame[..7]).unwrap_err().code(), "truncated");
        assert_eq!(decode_frame(&frame[..3]).unwrap_err().code(), "truncated");
        assert_eq!(
            decode_frame_header(((MAX_FRAME_LEN + 1) as u32).to_be_bytes()),
            Err(FrameError::TooLong {
                len: MAX_FRAME_LEN + 1,
                max: MAX_FRAME_LEN
            })
        );
        assert!(frame_header(MAX_FRAME_LEN).is_ok());
        assert!(frame_header(MAX_FRAME_LEN + 1).is_err());
    }

    #[test]
    fn offer_round_trips_and_checks_its_members() {
        let offer = QuicOffer::new(
            "c2Vzc2lvbg".into(),
            Fingerprint([7; 32]),
            vec![
                "127.0.0.1:5000".parse().unwrap(),
                "[::1]:6000".parse().unwrap(),
            ],
        );
        let body = offer.to_body();
        assert_eq!(QuicOffer::from_body(&body), Ok(offer.clone()));
        let bad = |quic: serde_json::Value| QuicOffer::from_body(&quic).unwrap_err().code();
        assert_eq!(bad(serde_json::json!({})), "no-quic");
        assert_eq!(bad(serde_json::json!({"quic": 1})), "malformed");
        let mut body = offer.to_body();
        body["quic"]["session"] = "".into();
        assert_eq!(bad(body), "session");
        let mut body = offer.to_body();
        body["quic"]["fingerprint"] = "AAAA".into();
        assert_eq!(bad(body), "fingerprint");
        let mut body = offer.to_body();
        body["quic"]["candidates"] = vec!["1.2.3.4:5"; MAX_CANDIDATES + 1].into();
        assert_eq!(bad(body), "too-many-candidates");
    }

    #[test]
    fn proof_verifies_only_with_its_inputs() {
        let key = SecretKey::from_bytes(&[7; 48]).unwrap();
        let new_key = SecretKey::from_bytes(&[8; 48]).unwrap().public_key();
        let (ours, theirs) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let proof = ProofMessage::sign(&key, &[3; 32], &ours, &theirs, Some(new_key));
        let read = ProofMessage::from_json(proof.to_json().as_bytes()).unwrap();
        assert_eq!(read, proof);
        let public = key.public_key();
        assert!(read.verify(&public, &[3; 32], &ours, &theirs));
        assert!(!read.verify(&public, &[4; 32], &ours, &theirs));
        assert!(!read.verify(&public, &[3; 32], &theirs, &ours));
        assert!(!read.verify(&new_key, &[3; 32], &ours, &theirs));
        let swapped = ProofMessage { key: None, ..read };
        assert!(!swapped.verify(&public, &[3; 32], &ours, &theirs));
        let challenge = ChallengeMessage { challenge: [9; 32] };
        assert_eq!(
            ChallengeMessage::from_json(challenge.to_json().as_bytes()),
            Ok(challenge)
        );
    }
}
