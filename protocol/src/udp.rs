//! The UDP check fast path: one datagram asks about several mailboxes, at
//! most one datagram answers.
//!
//! ```text
//! datagram = magic "CNID" | version 0x01 | type | postcard body
//! type     = 0x01 check request | 0x02 check response
//! ```
//!
//! A request carries a random nonce, an optional `ext` and 1 to
//! [`limits::MAX_CHECKS_PER_DATAGRAM`] `(mailbox key, at)` pairs. The
//! response echoes the nonce, gives one [`CheckStatus`] per pair in request
//! order, and may carry the source address the relay saw (as a STUN binding
//! response does). Every request pair takes at least 50 bytes and every
//! status one, so a response always fits in the size of its request;
//! [`CheckResponse::encode_within`] enforces it anyway, dropping the observed
//! address first and answering nothing if it still does not fit.
//!
//! Mailbox keys here are the raw 49 bytes and are not checked to be curve
//! points: a relay looks them up, and a key that is not a point never has a
//! mailbox. This module does no I/O and keeps no state.

use std::net::{IpAddr, SocketAddr};

use crate::at::At;
use crate::keys::PUBLIC_KEY_LEN;
use crate::limits;
use crate::serde_bytes::FixedBytes;

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"CNID";
/// The datagram format version.
pub const VERSION: u8 = 1;
/// Type byte of a check request.
pub const TYPE_CHECK_REQUEST: u8 = 0x01;
/// Type byte of a check response.
pub const TYPE_CHECK_RESPONSE: u8 = 0x02;
/// Bytes before the postcard body.
pub const HEADER_LEN: usize = 6;
/// Length in bytes of a nonce.
pub const NONCE_LEN: usize = 16;

/// One mailbox to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailboxCheck {
    /// The mailbox key's 49 compressed bytes.
    #[serde(with = "raw_key")]
    pub key: [u8; PUBLIC_KEY_LEN],
    /// The cursor: is there a message after this `at`? On the wire a
    /// postcard varint, as a bare `u64` would be.
    pub at: At,
}

/// A check request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckRequest {
    /// Random bytes that the response echoes.
    #[serde(with = "raw_nonce")]
    pub nonce: [u8; NONCE_LEN],
    /// App data for the relay, such as an API key.
    pub ext: Option<String>,
    /// The mailboxes to check, 1 to [`limits::MAX_CHECKS_PER_DATAGRAM`].
    pub checks: Vec<MailboxCheck>,
}

/// The answer for one mailbox. Postcard writes the variant index as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CheckStatus {
    /// 0: nothing after `at` (HTTP `"found": false`).
    NotFound,
    /// 1: a message after `at`; fetch the question over HTTP `check`.
    Found,
    /// 2: the mailbox's rate limit was reached ("Too often").
    TooOften,
    /// 3: the relay requires an API key ("Forbidden").
    Forbidden,
}

/// The source address the relay observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ObservedAddr {
    /// 0: IPv4 address bytes and port.
    V4([u8; 4], u16),
    /// 1: IPv6 address bytes and port.
    V6([u8; 16], u16),
}

impl From<SocketAddr> for ObservedAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(ip) => Self::V4(ip.octets(), addr.port()),
            IpAddr::V6(ip) => Self::V6(ip.octets(), addr.port()),
        }
    }
}

impl From<ObservedAddr> for SocketAddr {
    fn from(addr: ObservedAddr) -> Self {
        match addr {
            ObservedAddr::V4(ip, port) => SocketAddr::from((ip, port)),
            ObservedAddr::V6(ip, port) => SocketAddr::from((ip, port)),
        }
    }
}

/// A check response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckResponse {
    /// The request's nonce.
    #[serde(with = "raw_nonce")]
    pub nonce: [u8; NONCE_LEN],
    /// One status per request pair, in the same order.
    pub statuses: Vec<CheckStatus>,
    /// The request's source address as the relay saw it.
    pub observed: Option<ObservedAddr>,
}

/// A datagram could not be decoded. A relay drops such datagrams silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Larger than [`limits::MAX_DATAGRAM_LEN`].
    #[error("datagram is {len} bytes, the maximum is {max}")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Does not start with [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// An unknown version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Not the expected type.
    #[error("unexpected type 0x{0:02x}")]
    Type(u8),
    /// The body is not valid postcard for the type.
    #[error("malformed body: {0}")]
    Body(String),
    /// Bytes after the body.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// No mailboxes, or more than [`limits::MAX_CHECKS_PER_DATAGRAM`].
    #[error("{count} mailboxes, expected 1 to {max}")]
    CheckCount {
        /// Mailboxes given.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// `ext` is longer than [`limits::MAX_DATAGRAM_EXT_LEN`].
    #[error("ext is {0} bytes, the maximum is {max}", max = limits::MAX_DATAGRAM_EXT_LEN)]
    ExtTooLong(usize),
}

impl DatagramError {
    /// A stable identifier of the fault, used by the test vectors
    /// (`spec/vectors/udp.json`) and by implementations in other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "TooLong",
            Self::BadMagic => "BadMagic",
            Self::Version(_) => "Version",
            Self::Type(_) => "Type",
            Self::Body(_) => "Body",
            Self::Trailing(_) => "Trailing",
            Self::CheckCount { .. } => "CheckCount",
            Self::ExtTooLong(_) => "ExtTooLong",
        }
    }
}

fn encode<T: serde::Serialize>(kind: u8, body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    // Invariant: postcard serializes these plain types into a Vec infallibly.
    #[allow(clippy::expect_used)]
    let out = postcard::to_extend(body, out).expect("postcard encoding");
    out
}

fn decode<'a, T: serde::Deserialize<'a>>(kind: u8, bytes: &'a [u8]) -> Result<T, DatagramError> {
    if bytes.len() > limits::MAX_DATAGRAM_LEN {
        return Err(DatagramError::TooLong {
            len: bytes.len(),
            max: limits::MAX_DATAGRAM_LEN,
        });
    }
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return Err(DatagramError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(DatagramError::Version(bytes[4]));
    }
    if bytes[5] != kind {
        return Err(DatagramError::Type(bytes[5]));
    }
    let (value, rest) = postcard::take_from_bytes(&bytes[HEADER_LEN..])
        .map_err(|e| DatagramError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DatagramError::Trailing(rest.len()));
    }
    Ok(value)
}

impl CheckRequest {
    /// Checks the counts and lengths that [`CheckRequest::decode`] enforces.
    pub fn validate(&self) -> Result<(), DatagramError> {
        if self.checks.is_empty() || self.checks.len() > limits::MAX_CHECKS_PER_DATAGRAM {
            return Err(DatagramError::CheckCount {
                count: self.checks.len(),
                max: limits::MAX_CHECKS_PER_DATAGRAM,
            });
        }
        match &self.ext {
            Some(ext) if ext.len() > limits::MAX_DATAGRAM_EXT_LEN => {
                Err(DatagramError::ExtTooLong(ext.len()))
            }
            _ => Ok(()),
        }
    }

    /// Encodes the datagram. Valid requests (see [`CheckRequest::validate`])
    /// always fit in [`limits::MAX_DATAGRAM_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        encode(TYPE_CHECK_REQUEST, self)
    }

    /// Decodes and validates a request datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, DatagramError> {
        let request: Self = decode(TYPE_CHECK_REQUEST, bytes)?;
        request.validate()?;
        Ok(request)
    }
}

impl CheckResponse {
    /// Encodes the datagram.
    pub fn encode(&self) -> Vec<u8> {
        encode(TYPE_CHECK_RESPONSE, self)
    }

    /// Encodes the response only if it fits in `request_len` bytes, dropping
    /// the observed address first if that makes it fit. `None`: do not answer.
    pub fn encode_within(mut self, request_len: usize) -> Option<Vec<u8>> {
        let bytes = self.encode();
        if bytes.len() <= request_len {
            return Some(bytes);
        }
        self.observed = None;
        let bytes = self.encode();
        (bytes.len() <= request_len).then_some(bytes)
    }

    /// Decodes a response datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, DatagramError> {
        decode(TYPE_CHECK_RESPONSE, bytes)
    }

    /// Whether this response answers `request`: same nonce, one status per pair.
    pub fn answers(&self, request: &CheckRequest) -> bool {
        self.nonce == request.nonce && self.statuses.len() == request.checks.len()
    }
}

mod raw_key {
    use super::{FixedBytes, PUBLIC_KEY_LEN};
    pub(super) fn serialize<S: serde::Serializer>(
        key: &[u8; PUBLIC_KEY_LEN],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&FixedBytes(*key), s)
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; PUBLIC_KEY_LEN], D::Error> {
        Ok(<FixedBytes<PUBLIC_KEY_LEN> as serde::Deserialize>::deserialize(d)?.0)
    }
}

mod raw_nonce {
    use super::{FixedBytes, NONCE_LEN};
    pub(super) fn serialize<S: serde::Serializer>(
        nonce: &[u8; NONCE_LEN],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&FixedBytes(*nonce), s)
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; NONCE_LEN], D::Error> {
        Ok(<FixedBytes<NONCE_LEN> as serde::Deserialize>::deserialize(d)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> CheckRequest {
        CheckRequest {
            nonce: [7; NONCE_LEN],
            ext: None,
            checks: (0..n)
                .map(|i| MailboxCheck {
                    key: [i as u8; PUBLIC_KEY_LEN],
                    at: At(1_700_000_000_000_000 + i as u64),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let req = request(2);
        let bytes = req.encode();
        assert_eq!(&bytes[..6], b"CNID\x01\x01");
        assert_eq!(&bytes[6..22], &[7; 16]);
        assert_eq!(bytes[22], 0); // ext: None
        assert_eq!(bytes[23], 2); // two checks
        assert_eq!(CheckRequest::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn response_fits_request() {
        let req = request(1);
        let len = req.encode().len();
        let resp = CheckResponse {
            nonce: req.nonce,
            statuses: vec![CheckStatus::Found],
            observed: Some(ObservedAddr::V6([1; 16], 443)),
        };
        let bytes = resp.clone().encode_within(len).unwrap();
        assert!(bytes.len() <= len);
        assert_eq!(CheckResponse::decode(&bytes).unwrap(), resp);
        assert!(resp.clone().encode_within(30).unwrap().len() <= 30);
        assert_eq!(resp.encode_within(10), None);
    }

    #[test]
    fn rejects_bad_datagrams() {
        let bytes = request(1).encode();
        assert_eq!(
            CheckRequest::decode(&bytes[..3]),
            Err(DatagramError::BadMagic)
        );
        let mut wrong = bytes.clone();
        wrong[4] = 2;
        assert_eq!(CheckRequest::decode(&wrong), Err(DatagramError::Version(2)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            CheckRequest::decode(&trailing),
            Err(DatagramError::Trailing(1))
        );
        assert!(matches!(
            CheckRequest::decode(&request(0).encode()),
            Err(DatagramError::CheckCount { count: 0, .. })
        ));
        assert!(matches!(
            CheckRequest::decode(&request(17).encode()),
            Err(DatagramError::CheckCount { count: 17, .. })
        ));
        assert_eq!(CheckResponse::decode(&bytes), Err(DatagramError::Type(1)));
    }

    #[test]
    fn largest_request_fits_the_datagram_limit() {
        let mut req = request(limits::MAX_CHECKS_PER_DATAGRAM);
        for check in &mut req.checks {
            check.at = At(u64::MAX);
        }
        req.ext = Some("x".repeat(limits::MAX_DATAGRAM_EXT_LEN));
        assert!(
            req.encode().len() <= limits::MAX_DATAGRAM_LEN,
            "{}",
            req.encode().len()
        );
    }
}
