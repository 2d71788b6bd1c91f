//! `spec/vectors/hpke.json`: its generator and its check.

use connectoid_protocol::api::Answer;
use connectoid_protocol::keys::SecretKey;
use connectoid_protocol::link::RelayUrl;
use connectoid_protocol::seal::{self, OpenError, Purpose};
use connectoid_protocol::{b64, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::envelopes::VECTOR_RELAY_URL;
use crate::util::{
    VectorRng, arr, get, hx, name, num, run, secret_from, st, vector_ikm, vector_key,
};

pub(crate) type Kem = hpke::kem::DhP384HkdfSha384;

pub(crate) fn purpose_named(name: &str) -> Purpose {
    match name {
        "message" => Purpose::Message,
        "question" => Purpose::Question,
        other => panic!("unknown purpose {other}"),
    }
}

pub(crate) fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Message => "message",
        Purpose::Question => "question",
    }
}

pub(crate) fn hpke_vector(
    label: &str,
    recipient: &SecretKey,
    purpose: Purpose,
    plaintext: &[u8],
) -> Value {
    use hpke::{Kem as _, Serializable as _};
    let ikm = vector_ikm(label);
    let (eph_secret, eph_public) = Kem::derive_keypair(&ikm);
    let padded = match purpose {
        Purpose::Message => seal::pad(plaintext).unwrap(),
        Purpose::Question => plaintext.to_vec(),
    };
    let mut rng = VectorRng::new(&ikm);
    let sealed = seal::seal(&mut rng, &recipient.public_key(), purpose, &padded).unwrap();
    rng.assert_drained();
    let mut out = json!({
        "name": label,
        "purpose": purpose_name(purpose),
        "info": String::from_utf8(purpose.info().to_vec()).unwrap(),
        "recipient_secret_hex": hex::encode(recipient.to_bytes()),
        "recipient_public_b64": recipient.public_key().to_string(),
        "ikm_e_hex": hex::encode(&ikm),
        "eph_secret_hex": hex::encode(eph_secret.to_bytes()),
        "enc_hex": hex::encode(eph_public.to_bytes()),
        "plaintext_hex": hex::encode(plaintext),
        "padded_hex": hex::encode(&padded),
        "sealed_hex": hex::encode(&sealed),
        "sealed_b64": b64::encode(&sealed),
        "id_hex": hex::encode(seal::message_id(&sealed)),
    });
    if purpose == Purpose::Question {
        let secret: [u8; 32] = plaintext.try_into().unwrap();
        let relay = RelayUrl::parse(VECTOR_RELAY_URL).unwrap();
        out["relay_url"] = relay.as_str().into();
        out["answer_b64"] = b64::encode(&Answer::for_relay(&secret, &relay).0).into();
    }
    out
}

pub(crate) fn build_hpke() -> Value {
    let alice = vector_key("alice");
    let bob = vector_key("bob");
    let long: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let question: Vec<u8> = sha2::Sha256::digest(b"connectoid test vector question").to_vec();
    let vectors = vec![
        hpke_vector("message hello", &alice, Purpose::Message, b"hello"),
        hpke_vector("message empty", &bob, Purpose::Message, b""),
        hpke_vector("message 300 bytes", &alice, Purpose::Message, &long),
        hpke_vector("message 255 bytes", &bob, Purpose::Message, &[0x80; 255]),
        hpke_vector("question", &alice, Purpose::Question, &question),
    ];
    let padding: Vec<Value> = [
        0usize, 1, 255, 256, 511, 512, 1000, 4095, 4096, 32767, 32768, 40000, 65422,
    ]
    .iter()
    .map(|&len| json!({"plaintext_len": len, "padded_len": seal::padded_len(len).unwrap()}))
    .collect();
    json!({
        "description": "HPKE (RFC 9180) base mode. sealed = enc (97-byte uncompressed ephemeral public key) || AES-256-GCM ciphertext with tag; aad is empty. The ephemeral key pair is DeriveKeyPair(ikm_e). Messages are padded (ISO/IEC 7816-4: 0x80 then zeros) to padded_len before sealing; questions are not padded. id = SHA-256(sealed). answer_b64 is the answer sent to relay_url for a question: HMAC-SHA-256(key = opened secret, \"connectoid/v1 answer\" || 0x00 || relay_url).",
        "suite": {"mode": 0, "kem_id": 0x0011, "kdf_id": 0x0002, "aead_id": 0x0002},
        "max_plaintext_len": seal::MAX_PLAINTEXT_LEN,
        "padding": padding,
        "vectors": vectors,
    })
}

pub(crate) fn check_hpke(v: &Value) {
    use hpke::{Kem as _, Serializable as _};
    let suite = get(v, "suite");
    assert_eq!(
        (
            num(suite, "mode"),
            num(suite, "kem_id"),
            num(suite, "kdf_id"),
            num(suite, "aead_id")
        ),
        (0, 0x11, 2, 2)
    );
    let max = num(v, "max_plaintext_len") as usize;
    assert_eq!(
        seal::padded_len(max).unwrap(),
        limits::MAX_MESSAGE_BYTES - seal::SEAL_OVERHEAD
    );
    assert!(seal::padded_len(max + 1).is_err());
    for entry in arr(v, "padding") {
        let len = num(entry, "plaintext_len") as usize;
        assert_eq!(
            seal::padded_len(len).unwrap(),
            num(entry, "padded_len") as usize
        );
    }
    for vector in arr(v, "vectors") {
        let recipient = secret_from(vector, "recipient_secret_hex");
        assert_eq!(
            recipient.public_key().to_string(),
            st(vector, "recipient_public_b64")
        );
        let purpose = purpose_named(st(vector, "purpose"));
        assert_eq!(purpose.info(), st(vector, "info").as_bytes());
        let ikm = hx(vector, "ikm_e_hex");
        assert_eq!(ikm.len(), 48);
        let (eph_secret, eph_public) = Kem::derive_keypair(&ikm);
        assert_eq!(eph_secret.to_bytes().to_vec(), hx(vector, "eph_secret_hex"));
        assert_eq!(eph_public.to_bytes().to_vec(), hx(vector, "enc_hex"));
        let plaintext = hx(vector, "plaintext_hex");
        let padded = hx(vector, "padded_hex");
        let sealed = hx(vector, "sealed_hex");
        assert_eq!(b64::encode(&sealed), st(vector, "sealed_b64"));
        assert_eq!(&sealed[..seal::ENCAPPED_KEY_LEN], hx(vector, "enc_hex"));
        assert_eq!(seal::message_id(&sealed).to_vec(), hx(vector, "id_hex"));
        let mut rng = VectorRng::new(&ikm);
        let resealed = seal::seal(&mut rng, &recipient.public_key(), purpose, &padded).unwrap();
        rng.assert_drained();
        assert_eq!(resealed, sealed, "{}", name(vector));
        assert_eq!(seal::open(&recipient, purpose, &sealed).unwrap(), padded);
        let other = match purpose {
            Purpose::Message => Purpose::Question,
            Purpose::Question => Purpose::Message,
        };
        assert_eq!(
            seal::open(&recipient, other, &sealed),
            Err(OpenError::Decrypt)
        );
        match purpose {
            Purpose::Message => {
                assert_eq!(seal::pad(&plaintext).unwrap(), padded);
                let mut rng = VectorRng::new(&ikm);
                let sealed_message =
                    seal::seal_message(&mut rng, &recipient.public_key(), &plaintext).unwrap();
                assert_eq!(sealed_message, sealed);
                assert_eq!(seal::open_message(&recipient, &sealed).unwrap(), plaintext);
            }
            Purpose::Question => {
                assert_eq!(plaintext, padded);
                let secret: [u8; 32] = plaintext.as_slice().try_into().unwrap();
                let mut rng = VectorRng::new(&ikm);
                let question =
                    seal::seal_question(&mut rng, &recipient.public_key(), &secret).unwrap();
                assert_eq!(question, sealed);
                assert_eq!(sealed.len(), seal::SEALED_QUESTION_LEN);
                let secret = seal::open_question(&recipient, &sealed).unwrap();
                let relay = RelayUrl::parse(st(vector, "relay_url")).unwrap();
                let answer = Answer::for_relay(&secret, &relay);
                assert_eq!(b64::encode(&answer.0), st(vector, "answer_b64"));
            }
        }
    }
}

#[test]
fn hpke() {
    run("hpke.json", build_hpke, check_hpke);
}
