//! Entry points for the fuzz targets in `fuzz/` (not a public API).
//!
//! Each `fuzz/fuzz_targets/<name>.rs` is one line that calls the function of
//! the same name here, in the style of rustls' `internal::fuzzing`. Each
//! function feeds the bytes to the same decoders the relay and the client
//! use and, where an encoder exists, re-encodes what decoded and asserts that
//! it decodes to the same value. A panic here is a bug: either a decoder
//! panicked on hostile input, or a round trip did not hold.
//!
//! This module does no I/O and keeps no state beyond two fixed test keys.
//! It also holds [`RepeatableRng`], the deterministic RNG of the tests and
//! the seed corpus.

use std::sync::LazyLock;

use crate::api::{Action, Request, Response};
use crate::envelope::{Envelope, open_envelope};
use crate::keys::{PublicKey, SecretKey};
use crate::link::Link;
use crate::peer::{self, ChallengeMessage, ProofMessage, QuicOffer};
use crate::udp::{CheckRequest, CheckResponse, CheckStatus, ObservedAddr};

/// The secret scalar of the fixed recipient that [`envelope_open`] opens
/// with: "alice" of `spec/vectors/keys.json`, so that the sealed envelopes of
/// the vectors open in the fuzzer too. The seed corpus seals to it.
pub const RECIPIENT_SECRET: [u8; 48] = [
    0x81, 0x8f, 0x60, 0xa1, 0xf4, 0x93, 0x27, 0x14, 0xce, 0xbe, 0x2b, 0x76, 0xf5, 0x53, 0xa5, 0xff,
    0x0a, 0xdb, 0xa0, 0xdf, 0x28, 0x56, 0x76, 0x74, 0xf6, 0xee, 0x7b, 0xce, 0xbf, 0x6a, 0xcb, 0x50,
    0x5b, 0x15, 0x65, 0x54, 0x45, 0x9f, 0x89, 0x09, 0xf0, 0x74, 0xa0, 0xbb, 0x38, 0x02, 0xde, 0x5a,
];
/// The secret scalar of the fixed sender: "bob" of `spec/vectors/keys.json`.
/// It signs the seed corpus's envelopes; [`envelope_open`] re-signs
/// envelopes from it.
pub const SENDER_SECRET: [u8; 48] = [
    0x3f, 0x10, 0xbc, 0x90, 0x32, 0xdd, 0x07, 0x36, 0x1b, 0x91, 0x4d, 0xee, 0x70, 0x19, 0xbe, 0x68,
    0x63, 0xed, 0x7e, 0xe6, 0x68, 0x7e, 0x06, 0x0c, 0x04, 0xdb, 0xdb, 0x5b, 0xe5, 0xac, 0xf3, 0xb3,
    0x97, 0xb8, 0x6d, 0x3c, 0x1d, 0xb4, 0x71, 0x8d, 0x93, 0xf1, 0x30, 0xea, 0xc3, 0x28, 0x22, 0x71,
];
/// The `now` (milliseconds since the Unix epoch) at which [`envelope_open`]
/// opens envelopes: the `now_ms` of the vectors' rejected envelopes and one
/// of the `open_at_ms` of their first valid one. The seed corpus's envelopes
/// carry a `ts` near it.
pub const NOW_MS: u64 = 1_700_000_001_000;

struct Pair {
    secret: SecretKey,
    public: PublicKey,
}

fn pair(bytes: &[u8; 48]) -> Pair {
    // Invariant: the constants above are valid non-zero scalars.
    #[allow(clippy::expect_used)]
    let secret = SecretKey::from_bytes(bytes).expect("fixed fuzzing key");
    let public = secret.public_key();
    Pair { secret, public }
}

static RECIPIENT: LazyLock<Pair> = LazyLock::new(|| pair(&RECIPIENT_SECRET));
static SENDER: LazyLock<Pair> = LazyLock::new(|| pair(&SENDER_SECRET));

/// The fixed recipient key of [`envelope_open`].
pub fn recipient() -> &'static SecretKey {
    &RECIPIENT.secret
}

/// The fixed sender key of the seed corpus's envelopes.
pub fn sender() -> &'static SecretKey {
    &SENDER.secret
}

/// `link_decode`: [`Link::decode`] on the bytes as text (a bare value, a
/// `connectoid=` pair or an app URL). What decodes validates and encodes to
/// a value that decodes to the same link (URLs are compared normalized, as
/// decoding normalizes them), as the bare value and inside an app URL.
pub fn link_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(link) = Link::decode(text) else {
        return;
    };
    // Every decoded link satisfies `Link::validate`, so it encodes to a
    // value that decodes to the same link.
    assert_eq!(link.validate(), Ok(()), "{text}");
    let encoded = link.encode();
    assert_eq!(Link::decode(&encoded).as_ref(), Ok(&link), "{encoded}");
    if link.secret.is_none() {
        assert_eq!(Link::decode_reply(&encoded).as_ref(), Ok(&link));
    }
    let app = url::Url::parse("https://app.example.com/open?x=1");
    if let Ok(app) = app {
        let url = link.to_app_url(&app);
        assert_eq!(Link::decode(url.as_str()).as_ref(), Ok(&link), "{url}");
    }
}

/// `http_request`: [`Request::from_json`] on the bytes as a request body;
/// what decodes re-encodes with [`Request::to_json`] to the same request.
pub fn http_request(data: &[u8]) {
    let Ok(request) = Request::from_json(data) else {
        return;
    };
    let json = request.to_json();
    assert_eq!(
        Request::from_json(json.as_bytes()).as_ref(),
        Ok(&request),
        "{json}"
    );
}

/// `http_response`: the first byte picks the action, the rest is a relay's
/// answer for [`Response::from_json`]; what decodes re-encodes with
/// [`Response::to_json`] to the same response.
pub fn http_response(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let action = Action::ALL[usize::from(first) % Action::ALL.len()];
    let Ok(response) = Response::from_json(action, body) else {
        return;
    };
    let json = response.to_json();
    assert_eq!(
        Response::from_json(action, json.as_bytes()).as_ref(),
        Ok(&response),
        "{json}"
    );
}

/// `udp_datagram`: [`CheckRequest::decode`] and [`CheckResponse::decode`] on
/// the same bytes. What decodes re-encodes, no longer than the input, to the
/// same value; and for a request, the largest possible response (a status
/// per mailbox and an IPv6 observed address) is no larger than the request.
pub fn udp_datagram(data: &[u8]) {
    if let Ok(request) = CheckRequest::decode(data) {
        let encoded = request.encode();
        assert!(encoded.len() <= data.len());
        assert_eq!(CheckRequest::decode(&encoded).as_ref(), Ok(&request));
        let response = CheckResponse {
            nonce: request.nonce,
            statuses: vec![CheckStatus::Forbidden; request.checks.len()],
            observed: Some(ObservedAddr::V6([0xff; 16], u16::MAX)),
        };
        let answer = response.encode();
        assert!(
            answer.len() <= data.len(),
            "response {} bytes > request {} bytes",
            answer.len(),
            data.len()
        );
        assert_eq!(response.encode_within(data.len()), Some(answer));
    }
    if let Ok(response) = CheckResponse::decode(data) {
        let encoded = response.encode();
        assert!(encoded.len() <= data.len());
        assert_eq!(CheckResponse::decode(&encoded).as_ref(), Ok(&response));
    }
}

/// `envelope_open`: [`open_envelope`] of the bytes with the fixed
/// [`recipient`] key at [`NOW_MS`], and [`Envelope::verify_jws`] of the bytes
/// as text. What opens is addressed to the recipient, carries a reply value
/// that round-trips, and, when the fixed [`sender`] signed it, re-signs to a
/// JWS that verifies to the same envelope.
pub fn envelope_open(data: &[u8]) {
    if let Ok(envelope) = open_envelope(&RECIPIENT.secret, data, NOW_MS) {
        assert_eq!(envelope.to, RECIPIENT.public);
        check_envelope(&envelope);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(envelope) = Envelope::verify_jws(text)
    {
        check_envelope(&envelope);
    }
}

/// `peer_link`: the bytes as a stream of peer-link frames
/// ([`peer::decode_frame`] until they run out or fail); each frame
/// re-encodes to exactly the bytes it was read from. Each message, and the
/// whole input, also goes to [`ChallengeMessage::from_json`],
/// [`ProofMessage::from_json`] and, as JSON, [`QuicOffer::from_body`]; what
/// decodes re-encodes to a value that decodes to the same message.
pub fn peer_link(data: &[u8]) {
    let mut rest = data;
    let mut frames = 0;
    while !rest.is_empty() && frames < 64 {
        let Ok((message, after)) = peer::decode_frame(rest) else {
            break;
        };
        let consumed = &rest[..rest.len() - after.len()];
        assert_eq!(peer::encode_frame(message).as_deref(), Ok(consumed));
        peer_message(message);
        rest = after;
        frames += 1;
    }
    peer_message(data);
}

fn peer_message(message: &[u8]) {
    if let Ok(challenge) = ChallengeMessage::from_json(message) {
        let json = challenge.to_json();
        assert_eq!(
            ChallengeMessage::from_json(json.as_bytes()),
            Ok(challenge),
            "{json}"
        );
    }
    if let Ok(proof) = ProofMessage::from_json(message) {
        let json = proof.to_json();
        assert_eq!(
            ProofMessage::from_json(json.as_bytes()),
            Ok(proof),
            "{json}"
        );
    }
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(message)
        && let Ok(offer) = QuicOffer::from_body(&body)
    {
        let body = offer.to_body();
        assert_eq!(QuicOffer::from_body(&body), Ok(offer), "{body}");
    }
}

fn check_envelope(envelope: &Envelope) {
    assert!(envelope.from.secret.is_none());
    assert_eq!(envelope.from.validate(), Ok(()));
    let from = envelope.from.encode();
    assert_eq!(Link::decode_reply(&from).as_ref(), Ok(&envelope.from));
    if envelope.from.key == SENDER.public
        && let Ok(jws) = envelope.sign(&SENDER.secret)
    {
        assert_eq!(Envelope::verify_jws(&jws).as_ref(), Ok(envelope), "{jws}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed keys are the vectors' alice and bob, so that the vectors'
    /// sealed envelopes in the seed corpus open in `envelope_open`.
    #[test]
    fn fixed_keys_are_the_vectors_alice_and_bob() {
        assert_eq!(
            recipient().public_key().to_string(),
            "A27jvdk637WKskGvGCcq9KYYG5Zrhh2uMz5dyP5K6dJ9ubOzaW7ArF5-L6zi729l7A"
        );
        assert_eq!(
            sender().public_key().to_string(),
            "AkD8GHpZLEjAj35GxpT1hdICxrhqevIOROZG4N6guiAW80iQ8kA9pVK0oQ9eySoZGA"
        );
    }

    type Target = (&'static str, fn(&[u8]));

    fn corpus(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .map(|entry| {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                (path, data)
            })
            .collect()
    }

    /// Every committed seed (and every input merged in after a campaign)
    /// passes its target, so a crash once found stays fixed.
    #[test]
    fn fuzz_corpus_passes() {
        let targets: [Target; 6] = [
            ("link_decode", link_decode),
            ("http_request", http_request),
            ("http_response", http_response),
            ("udp_datagram", udp_datagram),
            ("envelope_open", envelope_open),
            ("peer_link", peer_link),
        ];
        for (target, run) in targets {
            for (path, data) in corpus(target) {
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target} panics on {}", path.display());
            }
        }
    }

    /// The corpus reaches past decryption: envelopes made by the seed
    /// generator and by the vectors open with the fixed recipient.
    #[test]
    fn corpus_envelopes_open() {
        let seeds = corpus("envelope_open");
        if seeds.is_empty() {
            return;
        }
        for prefix in ["lib-sealed-hello", "vec-"] {
            let opened = seeds
                .iter()
                .filter(|(path, _)| {
                    path.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .filter(|(_, data)| open_envelope(recipient(), data, NOW_MS).is_ok())
                .count();
            assert!(opened > 0, "no {prefix}* seed opens");
        }
    }
}

/// A repeatable RNG (SplitMix64) for tests, the fuzz seed corpus and other
/// places whose output must not change between runs. Not cryptographically
/// secure: never use it for real keys.
#[derive(Debug, Clone)]
pub struct RepeatableRng(u64);

impl RepeatableRng {
    /// The stream that starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl rand_core::TryRng for RepeatableRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let word = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for RepeatableRng {}
