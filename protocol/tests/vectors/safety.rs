//! `spec/vectors/safety.json`: its generator and its check.

use connectoid_protocol::keys::PublicKey;
use connectoid_protocol::safety::{SYMBOLS, SafetyCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::util::{arr, hx, run, st, vector_key};

pub(crate) fn build_safety() -> Value {
    let keys = ["alice", "bob", "eve", "alice 2"].map(|l| vector_key(l).public_key());
    let pairs = [(0, 1), (1, 0), (0, 2), (1, 3), (2, 3)];
    let vectors: Vec<Value> = pairs
        .iter()
        .map(|&(i, j)| {
            let (a, b) = (keys[i], keys[j]);
            let (low, high) = if a.as_bytes() <= b.as_bytes() {
                (a, b)
            } else {
                (b, a)
            };
            let mut hasher = sha2::Sha384::new();
            hasher.update(connectoid_protocol::safety::SAFETY_CODE_LABEL);
            hasher.update([0]);
            hasher.update(low.as_bytes());
            hasher.update(high.as_bytes());
            let code = SafetyCode::new(&a, &b);
            json!({
                "a_b64": a.to_string(),
                "b_b64": b.to_string(),
                "digest_hex": hex::encode(hasher.finalize()),
                "indices": code.indices().to_vec(),
                "emoji": code.emoji(),
                "words": code.words(),
            })
        })
        .collect();
    json!({
        "description": "Safety codes: SHA-384(label || 0x00 || min(a, b) || max(a, b)) over the 49-byte compressed keys; the first 72 bits as twelve 6-bit indices into symbols (emoji, word).",
        "label": String::from_utf8(connectoid_protocol::safety::SAFETY_CODE_LABEL.to_vec()).unwrap(),
        "symbols": SYMBOLS.iter().map(|(e, w)| json!([e, w])).collect::<Vec<_>>(),
        "vectors": vectors,
    })
}

pub(crate) fn check_safety(v: &Value) {
    assert_eq!(
        st(v, "label").as_bytes(),
        connectoid_protocol::safety::SAFETY_CODE_LABEL
    );
    let symbols = arr(v, "symbols");
    assert_eq!(symbols.len(), SYMBOLS.len());
    for (stored, (emoji, word)) in symbols.iter().zip(SYMBOLS) {
        assert_eq!(stored[0].as_str(), Some(emoji));
        assert_eq!(stored[1].as_str(), Some(word));
    }
    for vector in arr(v, "vectors") {
        let a: PublicKey = st(vector, "a_b64").parse().unwrap();
        let b: PublicKey = st(vector, "b_b64").parse().unwrap();
        let code = SafetyCode::new(&a, &b);
        assert_eq!(code, SafetyCode::new(&b, &a));
        let digest = hx(vector, "digest_hex");
        let (low, high) = if a.as_bytes() <= b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let mut hasher = sha2::Sha384::new();
        hasher.update(st(v, "label").as_bytes());
        hasher.update([0]);
        hasher.update(low.as_bytes());
        hasher.update(high.as_bytes());
        assert_eq!(hasher.finalize().to_vec(), digest);
        let indices: Vec<u8> = arr(vector, "indices")
            .iter()
            .map(|i| i.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(code.indices().to_vec(), indices);
        // The indices are the first 72 bits of the digest, 6 at a time.
        let bits = digest[..9]
            .iter()
            .fold(0u128, |acc, &x| (acc << 8) | u128::from(x));
        assert_eq!(indices.len(), 12);
        for (i, index) in indices.iter().enumerate() {
            assert_eq!(u128::from(*index), (bits >> (66 - 6 * i)) & 0x3f);
        }
        assert_eq!(code.emoji(), st(vector, "emoji"));
        assert_eq!(code.words(), st(vector, "words"));
    }
}

#[test]
fn safety() {
    run("safety.json", build_safety, check_safety);
}
