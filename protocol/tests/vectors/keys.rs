//! `spec/vectors/keys.json`: its generator and its check.

use connectoid_protocol::b64;
use connectoid_protocol::keys::{KeyError, PublicKey, SecretKey};
use serde_json::{Value, json};

use crate::util::{arr, hx, name, run, secret_from, st, vector_key};

pub(crate) const P384_ORDER_HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

pub(crate) fn build_keys() -> Value {
    let mut one = [0u8; 48];
    one[47] = 1;
    let mut order_minus_one = hex::decode(P384_ORDER_HEX).unwrap();
    order_minus_one[47] -= 1;
    let secrets = [
        ("alice", vector_key("alice").to_bytes().to_vec()),
        ("bob", vector_key("bob").to_bytes().to_vec()),
        ("one (the generator)", one.to_vec()),
        ("order minus one", order_minus_one),
    ];
    let valid: Vec<Value> = secrets
        .iter()
        .map(|(label, bytes)| {
            let public = SecretKey::from_bytes(bytes).unwrap().public_key();
            json!({
                "name": label,
                "secret_hex": hex::encode(bytes),
                "public_hex": hex::encode(public.as_bytes()),
                "public_b64": public.to_string(),
            })
        })
        .collect();

    let alice = vector_key("alice");
    let signatures: Vec<Value> = ["", "connectoid"]
        .iter()
        .map(|message| {
            json!({
                "secret_hex": hex::encode(alice.to_bytes()),
                "message": message,
                "signature_hex": hex::encode(alice.sign(message.as_bytes())),
            })
        })
        .collect();

    let real = *alice.public_key().as_bytes();
    let real_text = alice.public_key().to_string();
    let with_prefix = |prefix: u8| {
        let mut bytes = real;
        bytes[0] = prefix;
        b64::encode(&bytes)
    };
    // The smallest x with no point on the curve.
    let off_curve = (1u8..=255)
        .map(|x| {
            let mut candidate = [0u8; 49];
            candidate[0] = 0x02;
            candidate[48] = x;
            candidate
        })
        .find(|c| PublicKey::from_bytes(c) == Err(KeyError::NotOnCurve))
        .unwrap();
    let mut x_too_big = [0xffu8; 49];
    x_too_big[0] = 0x03;
    let replace_last = |c: char| format!("{}{c}", &real_text[..65]);
    // The last character carries 2 data bits and 4 zero bits; 'B' sets one of those.
    let mut trailing = real_text.clone();
    let last = trailing.pop().unwrap();
    let last_index = b64_alphabet_index(last);
    let noncanonical = b64_alphabet_char(last_index | 1);
    trailing.push(noncanonical);
    let invalid_public = vec![
        json!({"name": "uncompressed prefix 0x04", "text": with_prefix(0x04), "error": "NotCompressed"}),
        json!({"name": "prefix 0x00", "text": with_prefix(0x00), "error": "NotCompressed"}),
        json!({"name": "x with no point on the curve", "text": b64::encode(&off_curve), "error": "NotOnCurve"}),
        json!({"name": "x not below the field prime", "text": b64::encode(&x_too_big), "error": "NotOnCurve"}),
        json!({"name": "48 bytes", "text": b64::encode(&real[..48]), "error": "WrongLength"}),
        json!({"name": "97-byte uncompressed point", "text": b64::encode(&{
            use p384::elliptic_curve::sec1::ToSec1Point as _;
            let point = p384::SecretKey::from_slice(&alice.to_bytes()).unwrap().public_key().to_sec1_point(false);
            point.as_bytes().to_vec()
        }), "error": "WrongLength"}),
        json!({"name": "padding character", "text": replace_last('='), "error": "Base64"}),
        json!({"name": "standard alphabet '+'", "text": replace_last('+'), "error": "Base64"}),
        json!({"name": "non-zero trailing bits", "text": trailing, "error": "Base64"}),
    ];
    let invalid_secret = vec![
        json!({"name": "zero", "secret_hex": hex::encode([0u8; 48]), "error": "InvalidScalar"}),
        json!({"name": "the group order", "secret_hex": P384_ORDER_HEX, "error": "InvalidScalar"}),
        json!({"name": "47 bytes", "secret_hex": hex::encode([1u8; 47]), "error": "WrongLength"}),
    ];
    json!({
        "description": "P-384 keys: a secret is the 48-byte big-endian scalar; a public key is the 49-byte SEC1 compressed point, in text base64url without padding (66 characters). Signatures are ES384 (ECDSA P-384, SHA-384, RFC 6979 deterministic), r || s, 96 bytes. invalid_public texts are parsed as the text form; invalid_secret as bytes.",
        "valid": valid,
        "signatures": signatures,
        "invalid_public": invalid_public,
        "invalid_secret": invalid_secret,
    })
}

pub(crate) fn b64_alphabet_index(c: char) -> u8 {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET.iter().position(|&a| a == c as u8).unwrap() as u8
}

pub(crate) fn b64_alphabet_char(i: u8) -> char {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET[usize::from(i)] as char
}

pub(crate) fn check_keys(v: &Value) {
    for vector in arr(v, "valid") {
        let secret = secret_from(vector, "secret_hex");
        assert_eq!(secret.to_bytes().to_vec(), hx(vector, "secret_hex"));
        let public = secret.public_key();
        assert_eq!(
            public.as_bytes().to_vec(),
            hx(vector, "public_hex"),
            "{}",
            name(vector)
        );
        assert_eq!(public.to_string(), st(vector, "public_b64"));
        assert_eq!(
            st(vector, "public_b64").parse::<PublicKey>().unwrap(),
            public
        );
        assert_eq!(
            PublicKey::from_bytes(&hx(vector, "public_hex")).unwrap(),
            public
        );
    }
    for vector in arr(v, "signatures") {
        let secret = secret_from(vector, "secret_hex");
        let message = st(vector, "message").as_bytes();
        let signature = hx(vector, "signature_hex");
        assert_eq!(secret.sign(message).to_vec(), signature);
        assert!(secret.public_key().verify(message, &signature));
    }
    for vector in arr(v, "invalid_public") {
        let error = st(vector, "text").parse::<PublicKey>().unwrap_err();
        assert_eq!(error.code(), st(vector, "error"), "{}", name(vector));
    }
    for vector in arr(v, "invalid_secret") {
        let error = SecretKey::from_bytes(&hx(vector, "secret_hex")).unwrap_err();
        assert_eq!(error.code(), st(vector, "error"), "{}", name(vector));
    }
}

#[test]
fn keys() {
    run("keys.json", build_keys, check_keys);
}
