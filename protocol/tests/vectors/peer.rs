//! `spec/vectors/peer.json`: its generator and its check.

use std::net::SocketAddr;

use connectoid_protocol::b64;
use connectoid_protocol::keys::PublicKey;
use connectoid_protocol::peer::{self, ChallengeMessage, Fingerprint, ProofMessage, QuicOffer};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::util::{arr, get, hx, name, num, opt_str, run, secret_from, st, vector_key};

/// A stand-in certificate: the fingerprint is SHA-256 of whatever DER bytes.
pub(crate) fn vector_certificate(label: &str) -> Vec<u8> {
    format!("connectoid test vector certificate {label}").into_bytes()
}

pub(crate) fn vector_fingerprint(label: &str) -> Fingerprint {
    Fingerprint::of_certificate(&vector_certificate(label))
}

pub(crate) fn vector_challenge(label: &str) -> [u8; peer::CHALLENGE_LEN] {
    sha2::Sha256::digest(format!("connectoid test vector challenge {label}")).into()
}

pub(crate) fn offer_json(offer: &QuicOffer) -> Value {
    json!({
        "session": offer.session,
        "fingerprint_hex": hex::encode(offer.fingerprint.0),
        "candidates": offer.candidates.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

pub(crate) fn build_peer() -> Value {
    let frames: Vec<Value> = [
        ("empty", Vec::new()),
        ("hello", b"hello".to_vec()),
        (
            "challenge",
            ChallengeMessage {
                challenge: vector_challenge("alice"),
            }
            .to_json()
            .into_bytes(),
        ),
        ("300 bytes", (0..300u32).map(|i| i as u8).collect()),
    ]
    .into_iter()
    .map(|(label, message)| {
        json!({
            "name": label,
            "message_hex": hex::encode(&message),
            "frame_hex": hex::encode(peer::encode_frame(&message).unwrap()),
        })
    })
    .collect();
    let over = u32::try_from(peer::MAX_FRAME_LEN + 1)
        .unwrap()
        .to_be_bytes();
    let invalid_frames: Vec<Value> = [
        ("short header", vec![0, 0, 1]),
        ("short message", b"\0\0\0\x05hell".to_vec()),
        ("over the limit", over.to_vec()),
        ("largest header", vec![0xff; 4]),
    ]
    .into_iter()
    .map(|(label, bytes)| {
        let error = peer::decode_frame(&bytes).unwrap_err();
        json!({"name": label, "hex": hex::encode(&bytes), "error": error.code()})
    })
    .collect();
    let fingerprints: Vec<Value> = ["alice", "bob"]
        .into_iter()
        .map(|label| {
            let fingerprint = vector_fingerprint(label);
            json!({
                "name": label,
                "certificate_hex": hex::encode(vector_certificate(label)),
                "fingerprint_hex": hex::encode(fingerprint.0),
                "fingerprint_b64": fingerprint.to_string(),
            })
        })
        .collect();
    let session = b64::encode(&sha2::Sha256::digest("connectoid test vector session")[..16]);
    let candidates: Vec<SocketAddr> = ["127.0.0.1:41000", "192.0.2.7:41000", "[2001:db8::7]:41000"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let offers: Vec<Value> = [
        ("offer", candidates.clone()),
        ("one candidate", candidates[..1].to_vec()),
        ("no candidates", Vec::new()),
    ]
    .into_iter()
    .map(|(label, candidates)| {
        let offer = QuicOffer::new(session.clone(), vector_fingerprint("alice"), candidates);
        json!({"name": label, "body": offer.to_body(), "offer": offer_json(&offer)})
    })
    .collect();
    let good = QuicOffer::new(session.clone(), vector_fingerprint("alice"), candidates).to_body();
    let with = |pointer: &str, value: Value| {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let invalid_offers: Vec<Value> = [
        ("no quic member", json!({"offer": good["quic"]})),
        ("quic not an object", json!({"quic": "offer"})),
        (
            "no session",
            json!({"quic": {"fingerprint": good["quic"]["fingerprint"], "candidates": []}}),
        ),
        (
            "host name candidate",
            with("/quic/candidates/0", "relay.example:41000".into()),
        ),
        (
            "candidate without port",
            with("/quic/candidates/0", "192.0.2.7".into()),
        ),
        (
            "17 candidates",
            with("/quic/candidates", vec!["192.0.2.7:41000"; 17].into()),
        ),
        ("empty session", with("/quic/session", "".into())),
        (
            "65-byte session",
            with("/quic/session", "s".repeat(65).into()),
        ),
        (
            "31-byte fingerprint",
            with("/quic/fingerprint", b64::encode(&[7; 31]).into()),
        ),
        (
            "fingerprint not base64url",
            with("/quic/fingerprint", "a+b/".into()),
        ),
    ]
    .into_iter()
    .map(|(label, body)| {
        let error = QuicOffer::from_body(&body).unwrap_err();
        json!({"name": label, "body": body, "error": error.code()})
    })
    .collect();
    let (alice, bob) = (vector_key("alice"), vector_key("bob"));
    let proofs: Vec<Value> = [
        ("alice to bob, rotating", &alice, "bob", "alice", "bob", Some(vector_key("alice 2").public_key())),
        ("bob to alice, rotating", &bob, "alice", "bob", "alice", Some(vector_key("bob 2").public_key())),
        ("alice to bob, rotated already", &alice, "bob 2", "alice", "bob", None),
    ]
    .into_iter()
    .map(|(label, signer_key, challenge, signer, verifier, new_key)| {
        let challenge = vector_challenge(challenge);
        let (signer, verifier) = (vector_fingerprint(signer), vector_fingerprint(verifier));
        let proof = ProofMessage::sign(signer_key, &challenge, &signer, &verifier, new_key);
        json!({
            "name": label,
            "signer_secret_hex": hex::encode(signer_key.to_bytes()),
            "signer_public_b64": signer_key.public_key().to_string(),
            "challenge_hex": hex::encode(challenge),
            "signer_fingerprint_hex": hex::encode(signer.0),
            "verifier_fingerprint_hex": hex::encode(verifier.0),
            "new_key_b64": new_key.map(|k| k.to_string()),
            "signing_input_hex": hex::encode(peer::signing_input(&challenge, &signer, &verifier, new_key.as_ref())),
            "signature_hex": hex::encode(proof.signature),
            "challenge_json": ChallengeMessage { challenge }.to_json(),
            "proof_json": proof.to_json(),
        })
    })
    .collect();
    let signature = b64::encode(&[1; 96]);
    let invalid_messages: Vec<Value> = [
        ("challenge", "not JSON", "challenge".to_owned()),
        (
            "challenge",
            "challenge not a string",
            r#"{"challenge":32}"#.to_owned(),
        ),
        (
            "challenge",
            "31-byte challenge",
            format!(r#"{{"challenge":"{}"}}"#, b64::encode(&[1; 31])),
        ),
        ("proof", "no signature", r#"{"key":null}"#.to_owned()),
        (
            "proof",
            "95-byte signature",
            format!(r#"{{"signature":"{}"}}"#, b64::encode(&[1; 95])),
        ),
        (
            "proof",
            "new key not a key",
            format!(r#"{{"signature":"{signature}","key":"AAAA"}}"#),
        ),
    ]
    .into_iter()
    .map(|(message, label, text)| {
        let error = match message {
            "challenge" => ChallengeMessage::from_json(text.as_bytes()).unwrap_err(),
            _ => ProofMessage::from_json(text.as_bytes()).unwrap_err(),
        };
        json!({"name": label, "message": message, "json": text, "error": error.code()})
    })
    .collect();
    json!({
        "description": "Peer link wire format (spec/protocol.md §15): frames (4-byte big-endian length, at most max_frame_len bytes), certificate fingerprints (SHA-256 of the DER; the certificates here are stand-in bytes), QUIC offer bodies and the errors of bad ones, and challenge-response messages: signing input, deterministic ES384 signature by the signer's current mailbox key, and the JSON of both messages. Error names are the codes of FrameError, OfferError and AuthMessageError.",
        "limits": {
            "auth_label": String::from_utf8(peer::AUTH_LABEL.to_vec()).unwrap(),
            "challenge_len": peer::CHALLENGE_LEN,
            "fingerprint_len": peer::FINGERPRINT_LEN,
            "max_frame_len": peer::MAX_FRAME_LEN,
            "max_candidates": peer::MAX_CANDIDATES,
            "max_session_len": peer::MAX_SESSION_LEN,
        },
        "frames": frames,
        "invalid_frames": invalid_frames,
        "fingerprints": fingerprints,
        "offers": offers,
        "invalid_offers": invalid_offers,
        "proofs": proofs,
        "invalid_messages": invalid_messages,
    })
}

pub(crate) fn check_peer(v: &Value) {
    let limits = get(v, "limits");
    assert_eq!(st(limits, "auth_label").as_bytes(), peer::AUTH_LABEL);
    assert_eq!(num(limits, "max_frame_len"), peer::MAX_FRAME_LEN as u64);
    assert_eq!(num(limits, "max_candidates"), peer::MAX_CANDIDATES as u64);
    assert_eq!(num(limits, "max_session_len"), peer::MAX_SESSION_LEN as u64);
    for f in arr(v, "frames") {
        let (message, frame) = (hx(f, "message_hex"), hx(f, "frame_hex"));
        assert_eq!(peer::encode_frame(&message).unwrap(), frame, "{}", name(f));
        assert_eq!(peer::decode_frame(&frame).unwrap(), (&message[..], &[][..]));
    }
    for f in arr(v, "invalid_frames") {
        let error = peer::decode_frame(&hx(f, "hex")).expect_err(name(f));
        assert_eq!(error.code(), st(f, "error"), "{}: {error}", name(f));
    }
    for f in arr(v, "fingerprints") {
        let fingerprint = Fingerprint::of_certificate(&hx(f, "certificate_hex"));
        assert_eq!(fingerprint.0.to_vec(), hx(f, "fingerprint_hex"));
        assert_eq!(
            Fingerprint::parse(st(f, "fingerprint_b64")),
            Ok(fingerprint)
        );
    }
    for o in arr(v, "offers") {
        let offer = QuicOffer::from_body(get(o, "body")).unwrap();
        assert_eq!(offer_json(&offer), *get(o, "offer"), "{}", name(o));
        assert_eq!(offer.to_body(), *get(o, "body"));
    }
    for o in arr(v, "invalid_offers") {
        let error = QuicOffer::from_body(get(o, "body")).expect_err(name(o));
        assert_eq!(error.code(), st(o, "error"), "{}: {error}", name(o));
    }
    let other = vector_key("eve").public_key();
    for p in arr(v, "proofs") {
        let signer_key = secret_from(p, "signer_secret_hex");
        assert_eq!(
            signer_key.public_key().to_string(),
            st(p, "signer_public_b64")
        );
        let challenge: [u8; peer::CHALLENGE_LEN] = hx(p, "challenge_hex").try_into().unwrap();
        let signer = Fingerprint(hx(p, "signer_fingerprint_hex").try_into().unwrap());
        let verifier = Fingerprint(hx(p, "verifier_fingerprint_hex").try_into().unwrap());
        let new_key = opt_str(p, "new_key_b64").map(|k| k.parse::<PublicKey>().unwrap());
        let input = peer::signing_input(&challenge, &signer, &verifier, new_key.as_ref());
        assert_eq!(input, hx(p, "signing_input_hex"), "{}", name(p));
        let proof = ProofMessage::sign(&signer_key, &challenge, &signer, &verifier, new_key);
        assert_eq!(
            proof.signature.to_vec(),
            hx(p, "signature_hex"),
            "{}",
            name(p)
        );
        assert_eq!(proof.to_json(), st(p, "proof_json"));
        let read = ProofMessage::from_json(st(p, "proof_json").as_bytes()).unwrap();
        assert_eq!(read, proof);
        assert!(read.verify(&signer_key.public_key(), &challenge, &signer, &verifier));
        assert!(!read.verify(&other, &challenge, &signer, &verifier));
        assert!(!read.verify(&signer_key.public_key(), &challenge, &verifier, &signer));
        let message = ChallengeMessage::from_json(st(p, "challenge_json").as_bytes()).unwrap();
        assert_eq!(message.challenge, challenge);
        assert_eq!(message.to_json(), st(p, "challenge_json"));
    }
    for m in arr(v, "invalid_messages") {
        let text = st(m, "json").as_bytes();
        let error = match st(m, "message") {
            "challenge" => ChallengeMessage::from_json(text).expect_err(name(m)),
            _ => ProofMessage::from_json(text).expect_err(name(m)),
        };
        assert_eq!(error.code(), st(m, "error"), "{}: {error}", name(m));
    }
}

#[test]
fn peer() {
    run("peer.json", build_peer, check_peer);
}
