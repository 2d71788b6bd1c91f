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
//! - [`peer`]: the peer link's QUIC offer, framing and challenge-response;
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
pub mod peer;
pub mod push;
pub mod safety;
pub mod seal;
pub mod udp;

mod serde_bytes;

pub use api::{
    Action, Answer, ApiError, ErrorCode, FoundQuestion, MailboxCursor, Message, Operation,
    RelayInfo, Request, Response,
};
pub use at::At;
pub use envelope::{Envelope, EnvelopeError, Kind, LinkProof, open_envelope, seal_envelope};
pub use keys::{KeyError, PublicKey, SecretKey, UnvalidatedKey};
pub use link::{Link, LinkError, LinkSecret, RelayEntry, RelayEntryError, RelayUrl, RelayUrlError};
pub use safety::SafetyCode;
pub use udp::{CheckRequest, CheckResponse, CheckStatus, MailboxCheck, ObservedAddr};

/// Re-exported so that callers name the same RNG traits this crate takes.
pub use rand_core;
/// Re-exported so that callers name the same `ConstantTimeEq` that
/// [`Answer`], [`LinkSecret`] and [`LinkProof`] implement.
pub use subtle;

#[cfg(test)]
mod error_chain_tests {
    //! Every error says each cause once: an error either prints its cause
    //! in its `Display` or returns it from `source()`, never both, so an
    //! error chain printed link by link (`anyhow`'s `{:#}`) repeats nothing.

    use std::error::Error;

    use crate::keys::{PublicKey, SecretKey};
    use crate::seal::{self, Purpose};
    use crate::udp::{CheckRequest, CheckResponse};
    use crate::{Link, RelayUrl, Request, Response, api::Action, envelope, fuzzing::RepeatableRng};

    /// The messages of `error`'s source chain, outermost first.
    fn chain(error: &dyn Error) -> Vec<String> {
        let mut messages = vec![error.to_string()];
        let mut next = error.source();
        while let Some(cause) = next {
            messages.push(cause.to_string());
            next = cause.source();
        }
        messages
    }

    fn assert_each_cause_once(error: &dyn Error) {
        let messages = chain(error);
        for (i, outer) in messages.iter().enumerate() {
            assert!(!outer.is_empty(), "empty message in {messages:?}");
            for inner in &messages[i + 1..] {
                assert!(
                    !outer.contains(inner.as_str()),
                    "{outer:?} repeats its cause {inner:?}"
                );
            }
        }
    }

    /// The check fails on the pattern it looks for: a `Display` that
    /// prints its `source()` too.
    #[test]
    fn check_catches_a_repeated_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Twice(#[source] crate::RelayUrlError);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Once(#[source] crate::RelayUrlError);

        let cause = || RelayUrl::parse("ftp://x/").unwrap_err();
        assert_eq!(chain(&Once(cause())).len(), 2);
        assert_each_cause_once(&Once(cause()));
        let twice = std::panic::catch_unwind(|| assert_each_cause_once(&Twice(cause())));
        assert!(twice.is_err());
    }

    #[test]
    fn protocol_errors_say_each_cause_once() {
        let key = SecretKey::from_bytes(&[7; 48]).unwrap();
        let public = key.public_key();
        let mut errors: Vec<Box<dyn Error>> = Vec::new();
        // Links: every part, bad relays, bad base64 (the case that once
        // printed "invalid base64url: ...: invalid base64url: ...").
        for text in [
            "",
            "a.b.c.d.e",
            "a,b.aHR0cHM6Ly9hLmV4YW1wbGUv",
            "AAAA.aHR0cHM6Ly9hLmV4YW1wbGUv",
            "A27jvdk637WKskGvGCcq9KYYG5Zrhh2uMz5dyP5K6dJ9ubOzaW7ArF5-L6zi729l7A.Zm9vOi8vYmFy",
            "A27jvdk637WKskGvGCcq9KYYG5Zrhh2uMz5dyP5K6dJ9ubOzaW7ArF5-L6zi729l7A.aHR0cHM6Ly9hLmV4YW1wbGUvfCw",
            // Damaged (a changed character) and cut four-part links.
            "A27jvdk637WKskGvGCcq9KYYG5Zrhh2uMz5dyP5K6dJ9ubOzaW7ArF5-L6zi729l7A.aHR0cHM6Ly9jb25uZWN0by5pZC8..OO4miLQPPFqlmx0dP-WLtIXCkxA",
            "A27jvdk637WKskGvGCcq9KYYG5Zrhh2uMz5dyP5K6dJ9ubOzaW7ArF5-L6zi729l7A.aHR0cHM6Ly9jb25uZWN0by5pZC8..OO4miLQPPFqlmx0dP-W",
        ] {
            errors.push(Box::new(Link::decode(text).unwrap_err()));
        }
        for text in [
            "ftp://x/",
            "https://a b/",
            "not a url",
            "https://u:p@x/",
            "https://x/#f",
        ] {
            errors.push(Box::new(RelayUrl::parse(text).unwrap_err()));
        }
        errors.push(Box::new("a,b".parse::<PublicKey>().unwrap_err()));
        errors.push(Box::new(PublicKey::from_bytes(&[9; 49]).unwrap_err()));
        errors.push(Box::new(crate::b64::decode("YR").unwrap_err()));
        // Sealing and opening, directly and inside an envelope error (the
        // case that once printed "plaintext is N bytes ...: plaintext is ...").
        let big = vec![0; crate::seal::MAX_PLAINTEXT_LEN + 1];
        let mut rng = RepeatableRng::new(1);
        errors.push(Box::new(
            seal::seal_message(&mut rng, &public, &big).unwrap_err(),
        ));
        errors.push(Box::new(
            seal::open(&key, Purpose::Message, &[1; 3]).unwrap_err(),
        ));
        errors.push(Box::new(
            envelope::open_envelope(&key, &[1; 200], 0).unwrap_err(),
        ));
        errors.push(Box::new(envelope::EnvelopeError::from(
            seal::seal_message(&mut rng, &public, &big).unwrap_err(),
        )));
        errors.push(Box::new(
            envelope::Envelope::verify_jws("a.b.c").unwrap_err(),
        ));
        errors.push(Box::new(CheckRequest::decode(b"nope").unwrap_err()));
        errors.push(Box::new(CheckResponse::decode(&[0; 2000]).unwrap_err()));
        errors.push(Box::new(Request::from_json(b"{").unwrap_err()));
        errors.push(Box::new(
            Response::from_json(Action::Check, b"[]").unwrap_err(),
        ));
        for error in &errors {
            assert_each_cause_once(error.as_ref());
        }
    }
}
