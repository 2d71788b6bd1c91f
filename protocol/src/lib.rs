//! The Connectoid wire format, without I/O.
//!
//! Connectoid carries the few small messages two devices need to connect
//! directly (WebRTC offers and answers, QUIC addresses, new keys) through
//! relays that keep end-to-end encrypted messages in per-key mailboxes for an
//! hour. This crate is the protocol both sides speak, as `spec/protocol.md`
//! defines it:
//!
//! - [`keys`]: P-384 key pairs, compressed base64url public keys, ES384 signatures;
//! - [`link`]: the shared link (`pub.relays[.ext[.secret]]`), seed-compatible;
//! - [`seal`]: HPKE (RFC 9180) sealing of messages and relay questions, padding;
//! - [`envelope`]: the signed JWS plaintext peers exchange, link proofs;
//! - [`api`]: the relay's HTTP request and response bodies and error strings;
//! - [`udp`]: the UDP check datagrams;
//! - [`at`]: message positions; [`safety`]: safety codes; [`limits`]: every limit.
//!
//! It does no I/O, reads no clock and draws no randomness of its own: callers
//! pass `now` and an RNG. Every decoder is total: malformed input gives a
//! typed error, never a panic.
//!
//! Features: `fuzzing` (off by default) exports the fuzz targets' entry
//! points and `RepeatableRng`, a deterministic RNG for tests. Only tests and
//! `fuzz/` enable it.

pub mod api;
pub mod at;
pub mod b64;
pub mod envelope;
/// Fuzz entry points and the repeatable test RNG: only with the
/// non-default `fuzzing` feature, which the fuzz targets and the test crates
/// enable. An app that depends on this crate cannot reach a predictable RNG.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
// The crate's own unit tests use the same module without the feature.
#[cfg(all(test, not(feature = "fuzzing")))]
#[allow(unreachable_pub, dead_code)]
mod fuzzing;
pub mod keys;
pub mod limits;
pub mod link;
pub mod safety;
pub mod seal;
pub mod udp;

mod serde_bytes;

pub use api::{
    Action, Answer, ApiError, ErrorCode, Message, Operation, RelayInfo, Request, Response,
};
pub use at::At;
pub use envelope::{Envelope, EnvelopeError, Kind, LinkProof, open_envelope, seal_envelope};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use link::{Link, LinkError, LinkSecret, RelayEntry, RelayUrl};
pub use safety::SafetyCode;
pub use udp::{CheckRequest, CheckResponse, CheckStatus, MailboxCheck, ObservedAddr};

/// Re-exported so that callers name the same RNG traits this crate takes.
pub use rand_core;
