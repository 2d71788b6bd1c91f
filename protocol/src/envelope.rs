//! Envelopes: the signed plaintext that peers exchange inside HPKE.
//!
//! An envelope is a JWS compact serialization (RFC 7515) signed with ES384:
//! `b64(header) "." b64(payload) "." b64(signature)`, where the header is
//! exactly [`JWS_HEADER`], the payload is the JSON object of an [`Envelope`],
//! and the signature is ECDSA P-384 / SHA-384 (RFC 6979 deterministic) over
//! the ASCII bytes `b64(header) "." b64(payload)`, as `r || s` (96 bytes).
//! Because the signature covers the exact payload bytes, no JSON
//! canonicalization is needed, and any JWS library can check it.
//!
//! The signing key is the sender's own mailbox key: the key in the
//! envelope's `from` value. The first envelope sent on a link (kind `hello`)
//! also carries a [`LinkProof`]: an HMAC under the link secret, which the
//! relays never see, binding the link key and the sender's new key.
//!
//! This module does not decide which sender to trust; the caller compares
//! `from.key` with the peer it knows, or checks the proof of a `hello`.

use hmac::{KeyInit as _, Mac as _};
use rand_core::CryptoRng;

use crate::b64;
use crate::keys::{PublicKey, SIGNATURE_LEN, SecretKey};
use crate::limits;
use crate::link::{Link, LinkError, LinkSecret};
use crate::seal::{self, OpenError, SealError};

/// The only JWS protected header an envelope has, byte for byte.
pub const JWS_HEADER: &str = r#"{"alg":"ES384","typ":"connectoid"}"#;
/// The envelope format version, the payload's `v`.
pub const ENVELOPE_VERSION: u64 = 1;
/// Length in bytes of a link proof (HMAC-SHA-256).
pub const LINK_PROOF_LEN: usize = 32;
/// The label that starts a link proof's HMAC input.
pub const LINK_PROOF_LABEL: &[u8] = b"connectoid/v1 link proof";

/// What an envelope is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Kind {
    /// The first message on a link: introduces the sender's reply value,
    /// carries a [`LinkProof`] when the link has a secret, and usually the
    /// app's offer.
    Hello,
    /// A connection offer (such as a WebRTC SDP offer or QUIC candidates).
    Offer,
    /// The answer to an offer.
    Answer,
    /// The sender's relay set changed; `from` names the new one.
    Relays,
    /// The sender ended the share and deleted its keys.
    Unshare,
    /// App data that is none of the above.
    App,
    /// Sent by a link's owner to the second user of a one-time link: the link
    /// was already used (perhaps intercepted).
    LinkUsed,
}

impl Kind {
    /// The wire name (`"hello"`, `"link-used"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Relays => "relays",
            Self::Unshare => "unshare",
            Self::App => "app",
            Self::LinkUsed => "link-used",
        }
    }
}

/// Proof that the sender of a `hello` holds the link secret.
///
/// `HMAC-SHA-256(key = secret, LINK_PROOF_LABEL || 0x00 || to || from_key)`,
/// where `to` and `from_key` are the 49-byte compressed keys.
///
/// It compares only in constant time (`==` and [`subtle::ConstantTimeEq`]).
#[derive(Debug, Clone, Copy)]
pub struct LinkProof(pub [u8; LINK_PROOF_LEN]);

impl subtle::ConstantTimeEq for LinkProof {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

/// Equality in constant time ([`subtle::ConstantTimeEq`]): a secret-bearing
/// value is never compared byte by byte with an early exit.
impl PartialEq for LinkProof {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self, other).into()
    }
}

impl Eq for LinkProof {}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl LinkProof {
    fn mac(secret: &LinkSecret, to: &PublicKey, from_key: &PublicKey) -> HmacSha256 {
        // Invariant: HMAC takes keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = HmacSha256::new_from_slice(&secret.0).expect("any key length");
        mac.update(LINK_PROOF_LABEL);
        mac.update(&[0]);
        mac.update(to.as_bytes());
        mac.update(from_key.as_bytes());
        mac
    }

    /// Computes the proof for a `hello` from `from_key` to the link key `to`.
    pub fn compute(secret: &LinkSecret, to: &PublicKey, from_key: &PublicKey) -> Self {
        Self(
            Self::mac(secret, to, from_key)
                .finalize()
                .into_bytes()
                .into(),
        )
    }

    /// Checks the proof in constant time.
    pub fn verify(&self, secret: &LinkSecret, to: &PublicKey, from_key: &PublicKey) -> bool {
        Self::mac(secret, to, from_key)
            .verify_slice(&self.0)
            .is_ok()
    }
}

impl serde::Serialize for LinkProof {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64::encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for LinkProof {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = b64::decode(&text).map_err(serde::de::Error::custom)?;
        let bytes: [u8; LINK_PROOF_LEN] = bytes.as_slice().try_into().map_err(|_| {
            serde::de::Error::custom(format!("proof must be {LINK_PROOF_LEN} bytes"))
        })?;
        Ok(Self(bytes))
    }
}

/// The content of an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// What the envelope is for.
    pub kind: Kind,
    /// The recipient's mailbox key (the key the envelope is sealed to).
    pub to: PublicKey,
    /// The sender's reply value: its mailbox key (which signs) and relays.
    pub from: Link,
    /// When the sender made the envelope, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The link proof of a `hello` on a link with a secret.
    pub proof: Option<LinkProof>,
    /// The app's payload: any JSON value (`null` when there is none).
    pub body: serde_json::Value,
}

/// The payload's JSON form, field for field as on the wire.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    v: u64,
    kind: String,
    to: PublicKey,
    from: String,
    ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proof: Option<LinkProof>,
    #[serde(default)]
    body: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
}

/// An envelope could not be made, or was rejected when opened.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Sealing failed (the envelope is too big).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The sealed bytes did not open with the recipient's key.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The signing key is not the key in `from`.
    #[error("the signing key does not match the envelope's from key")]
    SignerMismatch,
    /// The `from` value is not a valid reply value.
    #[error("from: {0}")]
    From(LinkError),
    /// The plaintext is not a JWS compact serialization.
    #[error("malformed JWS: {0}")]
    Jws(String),
    /// The JWS header is not ES384 / connectoid.
    #[error("unsupported JWS header: {0}")]
    Header(String),
    /// The payload is not a valid envelope object.
    #[error("malformed payload: {0}")]
    Payload(String),
    /// The payload's `v` is not [`ENVELOPE_VERSION`].
    #[error("unsupported envelope version {0}")]
    Version(u64),
    /// The payload's `kind` is unknown.
    #[error("unknown envelope kind {0:?}")]
    UnknownKind(String),
    /// The signature does not verify with the `from` key.
    #[error("bad signature")]
    BadSignature,
    /// The envelope is addressed to another mailbox.
    #[error("addressed to another mailbox")]
    WrongRecipient,
    /// `ts` is older than the maximum age (a replay of an old message).
    #[error("envelope is too old (ts {ts} ms, now {now} ms)")]
    Expired {
        /// The envelope's time.
        ts: u64,
        /// The time it was opened.
        now: u64,
    },
    /// `ts` is further in the future than the allowed clock skew.
    #[error("envelope is from the future (ts {ts} ms, now {now} ms)")]
    FromFuture {
        /// The envelope's time.
        ts: u64,
        /// The time it was opened.
        now: u64,
    },
    /// A `hello` on a link with a secret has no proof.
    #[error("missing link proof")]
    MissingProof,
    /// The link proof does not verify.
    #[error("bad link proof")]
    BadProof,
}

impl EnvelopeError {
    /// A stable identifier of the fault, used by the test vectors
    /// (`spec/vectors/envelopes.json`) and by implementations in other
    /// languages. A wrapped sealing or opening fault is named
    /// `Seal::<code>` or `Open::<code>` after [`SealError::code`] and
    /// [`OpenError::code`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::Seal(SealError::TooBig { .. }) => "Seal::TooBig",
            Self::Seal(SealError::Hpke(_)) => "Seal::Hpke",
            Self::Open(OpenError::TooShort { .. }) => "Open::TooShort",
            Self::Open(OpenError::BadEncappedKey) => "Open::BadEncappedKey",
            Self::Open(OpenError::Decrypt) => "Open::Decrypt",
            Self::Open(OpenError::Padding) => "Open::Padding",
            Self::Open(OpenError::WrongLength { .. }) => "Open::WrongLength",
            Self::SignerMismatch => "SignerMismatch",
            Self::From(_) => "From",
            Self::Jws(_) => "Jws",
            Self::Header(_) => "Header",
            Self::Payload(_) => "Payload",
            Self::Version(_) => "Version",
            Self::UnknownKind(_) => "UnknownKind",
            Self::BadSignature => "BadSignature",
            Self::WrongRecipient => "WrongRecipient",
            Self::Expired { .. } => "Expired",
            Self::FromFuture { .. } => "FromFuture",
            Self::MissingProof => "MissingProof",
            Self::BadProof => "BadProof",
        }
    }
}

impl Envelope {
    /// Signs the envelope with `sender`, whose public key must be `from.key`.
    /// Returns the JWS compact text.
    pub fn sign(&self, sender: &SecretKey) -> Result<String, EnvelopeError> {
        if sender.public_key() != self.from.key {
            return Err(EnvelopeError::SignerMismatch);
        }
        if self.from.secret.is_some() {
            return Err(EnvelopeError::From(LinkError::UnexpectedSecret));
        }
        self.from.validate().map_err(EnvelopeError::From)?;
        let payload = Payload {
            v: ENVELOPE_VERSION,
            kind: self.kind.as_str().to_owned(),
            to: self.to,
            from: self.from.encode(),
            ts: self.ts,
            proof: self.proof,
            body: self.body.clone(),
        };
        let payload =
            serde_json::to_vec(&payload).map_err(|e| EnvelopeError::Payload(e.to_string()))?;
        let signing_input = format!(
            "{}.{}",
            b64::encode(JWS_HEADER.as_bytes()),
            b64::encode(&payload)
        );
        let signature = sender.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", b64::encode(&signature)))
    }

    /// Parses a JWS compact text and checks its signature against the `from`
    /// key. Does not check `to`, `ts` or the proof (see [`open_envelope`]).
    pub fn verify_jws(text: &str) -> Result<Self, EnvelopeError> {
        let mut parts = text.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EnvelopeError::Jws(
                "expected three dot-separated parts".to_owned(),
            ));
        };
        let header_bytes =
            b64::decode(header_b64).map_err(|e| EnvelopeError::Jws(format!("header: {e}")))?;
        let parsed: Header = serde_json::from_slice(&header_bytes)
            .map_err(|e| EnvelopeError::Header(e.to_string()))?;
        if parsed.alg != "ES384" {
            return Err(EnvelopeError::Header(format!(
                "alg {:?} is not ES384",
                parsed.alg
            )));
        }
        if parsed.typ.as_deref() != Some("connectoid") {
            return Err(EnvelopeError::Header(format!(
                "typ {:?} is not \"connectoid\"",
                parsed.typ
            )));
        }
        // One header form only: no `crit`, `kid` or other parameters that a
        // receiver would have to understand (RFC 7515 §4.1.11).
        if header_bytes != JWS_HEADER.as_bytes() {
            return Err(EnvelopeError::Header(format!(
                "the header is not exactly {JWS_HEADER}"
            )));
        }
        let payload_bytes =
            b64::decode(payload_b64).map_err(|e| EnvelopeError::Jws(format!("payload: {e}")))?;
        let signature = b64::decode(signature_b64)
            .map_err(|e| EnvelopeError::Jws(format!("signature: {e}")))?;
        if signature.len() != SIGNATURE_LEN {
            return Err(EnvelopeError::BadSignature);
        }
        if !crate::api::is_json_object(&payload_bytes) {
            return Err(EnvelopeError::Payload("not a JSON object".to_owned()));
        }
        let payload: Payload = serde_json::from_slice(&payload_bytes)
            .map_err(|e| EnvelopeError::Payload(e.to_string()))?;
        if payload.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(payload.v));
        }
        let kind: Kind = serde_json::from_value(serde_json::Value::String(payload.kind.clone()))
            .map_err(|_| EnvelopeError::UnknownKind(payload.kind.clone()))?;
        let from = Link::decode_reply(&payload.from).map_err(EnvelopeError::From)?;
        let signing_input = &text[..header_b64.len() + 1 + payload_b64.len()];
        if !from.key.verify(signing_input.as_bytes(), &signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Self {
            kind,
            to: payload.to,
            from,
            ts: payload.ts,
            proof: payload.proof,
            body: payload.body,
        })
    }

    /// Checks the link proof of a `hello` on a link with `secret`.
    pub fn check_proof(&self, secret: &LinkSecret) -> Result<(), EnvelopeError> {
        let proof = self.proof.ok_or(EnvelopeError::MissingProof)?;
        if proof.verify(secret, &self.to, &self.from.key) {
            Ok(())
        } else {
            Err(EnvelopeError::BadProof)
        }
    }
}

/// Signs `envelope` with `sender` and seals it to `envelope.to`.
pub fn seal_envelope<R: CryptoRng + ?Sized>(
    rng: &mut R,
    sender: &SecretKey,
    envelope: &Envelope,
) -> Result<Vec<u8>, EnvelopeError> {
    let jws = envelope.sign(sender)?;
    Ok(seal::seal_message(rng, &envelope.to, jws.as_bytes())?)
}

/// Opens a sealed envelope with the recipient's key and checks everything
/// but the sender's identity: decryption, padding, JWS form, signature by the
/// `from` key, `to` equal to the recipient, and `ts` within
/// [`limits::ENVELOPE_MAX_AGE_MS`] before and [`limits::ENVELOPE_MAX_SKEW_MS`]
/// after `now_ms`.
///
/// `Ok` proves only that whoever holds the `from` key signed the envelope:
/// anyone, a relay included, can seal a self-signed envelope to a mailbox.
/// The caller must still accept it only if `from.key` is the peer it knows,
/// or, for the `hello` that opens a link, if [`Envelope::check_proof`] passes.
pub fn open_envelope(
    recipient: &SecretKey,
    sealed: &[u8],
    now_ms: u64,
) -> Result<Envelope, EnvelopeError> {
    let plaintext = seal::open_message(recipient, sealed)?;
    let text =
        std::str::from_utf8(&plaintext).map_err(|_| EnvelopeError::Jws("not UTF-8".to_owned()))?;
    let envelope = Envelope::verify_jws(text)?;
    if envelope.to != recipient.public_key() {
        return Err(EnvelopeError::WrongRecipient);
    }
    if envelope.ts.saturating_add(limits::ENVELOPE_MAX_AGE_MS) < now_ms {
        return Err(EnvelopeError::Expired {
            ts: envelope.ts,
            now: now_ms,
        });
    }
    if envelope.ts > now_ms.saturating_add(limits::ENVELOPE_MAX_SKEW_MS) {
        return Err(EnvelopeError::FromFuture {
            ts: envelope.ts,
            now: now_ms,
        });
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::RepeatableRng;
    use crate::link::{RelayEntry, RelayUrl};

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; 48]).unwrap()
    }

    fn reply(key: &SecretKey) -> Link {
        Link {
            key: key.public_key(),
            relays: vec![RelayEntry::new(
                RelayUrl::parse("https://relay.example/").unwrap(),
            )],
            ext: None,
            secret: None,
        }
    }

    fn hello(alice: &SecretKey, bob: &SecretKey, secret: &LinkSecret) -> Envelope {
        Envelope {
            kind: Kind::Hello,
            to: alice.public_key(),
            from: reply(bob),
            ts: 1_700_000_000_000,
            proof: Some(LinkProof::compute(
                secret,
                &alice.public_key(),
                &bob.public_key(),
            )),
            body: serde_json::json!({"sdpOffer": {"type": "offer", "sdp": "v=0"}}),
        }
    }

    #[test]
    fn seal_open_checks_everything() {
        let (alice, bob) = (key(1), key(2));
        let secret = LinkSecret([3; 16]);
        let envelope = hello(&alice, &bob, &secret);
        let sealed = seal_envelope(&mut RepeatableRng::new(1), &bob, &envelope).unwrap();
        let now = envelope.ts + 1000;
        let opened = open_envelope(&alice, &sealed, now).unwrap();
        assert_eq!(opened, envelope);
        opened.check_proof(&secret).unwrap();
        assert_eq!(
            opened.check_proof(&LinkSecret([4; 16])),
            Err(EnvelopeError::BadProof)
        );
        assert!(matches!(
            open_envelope(
                &alice,
                &sealed,
                envelope.ts + limits::ENVELOPE_MAX_AGE_MS + 1
            ),
            Err(EnvelopeError::Expired { .. })
        ));
        assert!(matches!(
            open_envelope(
                &alice,
                &sealed,
                envelope.ts - limits::ENVELOPE_MAX_SKEW_MS - 1
            ),
            Err(EnvelopeError::FromFuture { .. })
        ));
    }

    #[test]
    fn wrong_signer_and_wrong_recipient() {
        let (alice, bob, eve) = (key(1), key(2), key(5));
        let envelope = hello(&alice, &bob, &LinkSecret([3; 16]));
        assert_eq!(envelope.sign(&eve), Err(EnvelopeError::SignerMismatch));
        // Sealed to Eve but addressed to Alice: Eve's open rejects it.
        let jws = envelope.sign(&bob).unwrap();
        let sealed = seal::seal_message(
            &mut RepeatableRng::new(2),
            &eve.public_key(),
            jws.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            open_envelope(&eve, &sealed, envelope.ts),
            Err(EnvelopeError::WrongRecipient)
        );
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let (alice, bob) = (key(1), key(2));
        let envelope = hello(&alice, &bob, &LinkSecret([3; 16]));
        let jws = envelope.sign(&bob).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
        payload["ts"] = serde_json::json!(envelope.ts + 1);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(&serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert_eq!(
            Envelope::verify_jws(&forged),
            Err(EnvelopeError::BadSignature)
        );
    }
}
