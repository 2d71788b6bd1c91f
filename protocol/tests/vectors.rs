//! Checks every test vector in `spec/vectors/*.json` byte for byte against
//! the library.
//!
//! Each file is checked in two ways: its inputs are run through the library
//! and must give exactly its outputs (what an implementation in another
//! language does with the file), and the file must equal what this file's
//! generator makes (so that a change of the library or of the generator that
//! nobody wrote into the vectors fails the run).
//!
//! `CONNECTOID_WRITE_VECTORS=1 cargo test -p connectoid-protocol --test vectors`
//! (re)writes the files from the library first; review the diff before
//! committing it. Without the variable the files are only read.
//!
//! The ephemeral HPKE keys come from [`VectorRng`], which yields exactly the
//! `ikm_e` bytes of a vector (RFC 9180 `DeriveKeyPair` input) and panics if
//! asked for more.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed vector

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use connectoid_protocol::api::{Action, Answer, ApiError, ErrorCode, Message, Operation};
use connectoid_protocol::envelope::{
    self, ENVELOPE_VERSION, Envelope, EnvelopeError, JWS_HEADER, Kind, LinkProof,
};
use connectoid_protocol::keys::{KeyError, PublicKey, SecretKey};
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::peer::{self, ChallengeMessage, Fingerprint, ProofMessage, QuicOffer};
use connectoid_protocol::rand_core::{TryCryptoRng, TryRng};
use connectoid_protocol::safety::{SYMBOLS, SafetyCode};
use connectoid_protocol::seal::{self, OpenError, Purpose};
use connectoid_protocol::udp::{
    CheckRequest, CheckResponse, CheckStatus, MailboxCheck, ObservedAddr,
};
use connectoid_protocol::{At, Request, Response, b64, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

// ---------------------------------------------------------------------------
// Harness

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

/// Writes `name` from `build` in generator mode, then reads it back, checks it
/// with `check` and compares it with what `build` makes.
fn run(name: &str, build: fn() -> Value, check: fn(&Value)) {
    let path = vectors_dir().join(name);
    let built = build();
    if std::env::var("CONNECTOID_WRITE_VECTORS").as_deref() == Ok("1") {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        let mut text = serde_json::to_string_pretty(&built).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; CONNECTOID_WRITE_VECTORS=1 writes it",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&text).unwrap();
    check(&stored);
    assert!(
        stored == built,
        "{name} is not what the generator makes; if the change is intended, rerun with \
         CONNECTOID_WRITE_VECTORS=1 and review the diff"
    );
}

/// Yields exactly the bytes it was given, then panics.
struct VectorRng {
    bytes: Vec<u8>,
    used: usize,
}

impl VectorRng {
    fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            used: 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.used + n <= self.bytes.len(),
            "the RNG was asked for {n} more bytes after {} of {}",
            self.used,
            self.bytes.len()
        );
        let out = &self.bytes[self.used..self.used + n];
        self.used += n;
        out
    }

    fn assert_drained(&self) {
        assert_eq!(self.used, self.bytes.len(), "the RNG was not fully used");
    }
}

impl TryRng for VectorRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_le_bytes(self.take(4).try_into().unwrap()))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_le_bytes(self.take(8).try_into().unwrap()))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.copy_from_slice(self.take(dst.len()));
        Ok(())
    }
}

impl TryCryptoRng for VectorRng {}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("vector has no {key:?}: {v}"))
}

fn st<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

fn num(v: &Value, key: &str) -> u64 {
    get(v, key)
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a u64"))
}

fn hx(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(st(v, key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    get(v, key).as_str().map(str::to_owned)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    get(v, key)
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array"))
}

fn name(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("?")
}

/// A fixed secret key for vectors: SHA-384 of a label (always below the order).
fn vector_key(label: &str) -> SecretKey {
    let digest = sha2::Sha384::digest(format!("connectoid test vector key {label}"));
    SecretKey::from_bytes(&digest).unwrap()
}

/// Fixed HPKE ephemeral input keying material (48 bytes).
fn vector_ikm(label: &str) -> Vec<u8> {
    sha2::Sha384::digest(format!("connectoid test vector ikm {label}")).to_vec()
}

fn secret_from(v: &Value, key: &str) -> SecretKey {
    SecretKey::from_bytes(&hx(v, key)).unwrap()
}

// ---------------------------------------------------------------------------
// keys.json

const P384_ORDER_HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

fn build_keys() -> Value {
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

fn b64_alphabet_index(c: char) -> u8 {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET.iter().position(|&a| a == c as u8).unwrap() as u8
}

fn b64_alphabet_char(i: u8) -> char {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    ALPHABET[usize::from(i)] as char
}

fn check_keys(v: &Value) {
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

// ---------------------------------------------------------------------------
// hpke.json

type Kem = hpke::kem::DhP384HkdfSha384;

fn purpose_named(name: &str) -> Purpose {
    match name {
        "message" => Purpose::Message,
        "question" => Purpose::Question,
        other => panic!("unknown purpose {other}"),
    }
}

fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Message => "message",
        Purpose::Question => "question",
    }
}

fn hpke_vector(label: &str, recipient: &SecretKey, purpose: Purpose, plaintext: &[u8]) -> Value {
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

fn build_hpke() -> Value {
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

fn check_hpke(v: &Value) {
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

// ---------------------------------------------------------------------------
// links.json

fn link_json(link: &Link) -> Value {
    json!({
        "pub": link.key.to_string(),
        "relays": link.relays.iter().map(|r| json!({"url": r.url.as_str(), "ext": r.ext})).collect::<Vec<_>>(),
        "ext": link.ext,
        "secret_hex": link.secret.as_ref().map(|s| hex::encode(s.0)),
    })
}

fn link_from_json(v: &Value) -> Link {
    Link {
        key: st(v, "pub").parse().unwrap(),
        relays: arr(v, "relays")
            .iter()
            .map(|r| RelayEntry {
                url: RelayUrl::parse(st(r, "url")).unwrap(),
                ext: opt_str(r, "ext"),
            })
            .collect(),
        ext: opt_str(v, "ext"),
        secret: get(v, "secret_hex")
            .as_str()
            .map(|s| LinkSecret(hex::decode(s).unwrap().try_into().unwrap())),
    }
}

fn decode_link(mode: &str, input: &str) -> Result<Link, connectoid_protocol::LinkError> {
    match mode {
        "link" => Link::decode(input),
        "reply" => Link::decode_reply(input),
        other => panic!("unknown mode {other}"),
    }
}

fn build_links() -> Value {
    let alice = vector_key("alice").public_key();
    let k = alice.to_string();
    let e = |s: &str| b64::encode(s.as_bytes());
    let seed_url = e("https://connecto.id/");
    let secret = b64::encode(&sha2::Sha256::digest(b"connectoid test vector link secret")[..16]);
    let multi = e(
        "https://relay-a.example/ https://relay-b.example:8443/connectoid http://127.0.0.1:8080/",
    );
    let per_relay = e(&format!(
        "https://relay-a.example/|{} https://relay-b.example/",
        e("key-a")
    ));
    let seed3 = format!("{k}.{seed_url}.{}", e("api-key-123"));
    let valid_inputs: Vec<(&str, &str, String)> = vec![
        ("seed form, 2 parts", "link", format!("{k}.{seed_url}")),
        ("seed form, 3 parts", "link", seed3.clone()),
        (
            "seed form, relay URL normalized",
            "link",
            format!("{k}.{}", e("HTTPS://Connecto.ID:443")),
        ),
        ("empty ext part", "link", format!("{k}.{seed_url}.")),
        ("several relays", "link", format!("{k}.{multi}")),
        (
            "per-relay ext",
            "link",
            format!("{k}.{per_relay}.{}", e("app data")),
        ),
        (
            "link secret and ext",
            "link",
            format!("{k}.{multi}.{}.{secret}", e("api-key-123")),
        ),
        (
            "link secret, no ext",
            "link",
            format!("{k}.{seed_url}..{secret}"),
        ),
        (
            "app URL",
            "link",
            format!("https://app.example.com/?connectoid={seed3}"),
        ),
        (
            "app URL with other parameters",
            "link",
            format!(
                "https://app.example.com/share?list=7&connectoid={k}.{per_relay}..{secret}#top"
            ),
        ),
        ("connectoid= pair", "link", format!("connectoid={seed3}")),
        (
            "surrounding whitespace",
            "link",
            format!("  {k}.{seed_url}\n"),
        ),
        ("reply value", "reply", format!("{k}.{multi}")),
    ];
    let valid: Vec<Value> = valid_inputs
        .iter()
        .map(|(label, mode, input)| {
            let link = decode_link(mode, input).unwrap_or_else(|e| panic!("{label}: {e}"));
            json!({
                "name": label,
                "mode": mode,
                "input": input,
                "link": link_json(&link),
                "encoded": link.encode(),
            })
        })
        .collect();

    let app_url = url::Url::parse("https://app.example.com/open?list=7").unwrap();
    let seed_link = Link::decode(&seed3).unwrap();
    let app_urls = vec![json!({
        "app_url": app_url.as_str(),
        "link": seed3,
        "result": seed_link.to_app_url(&app_url).as_str(),
    })];

    let relays = |list: &str| e(list);
    let nine = (0..9)
        .map(|i| format!("https://r{i}.example/"))
        .collect::<Vec<_>>()
        .join(" ");
    let short_key = b64::encode(&alice.as_bytes()[..48]);
    let invalid_inputs: Vec<(&str, &str, String)> = vec![
        ("empty", "link", String::new()),
        ("only whitespace", "link", "  \t".to_owned()),
        (
            "empty connectoid parameter",
            "link",
            "https://app.example.com/?connectoid=".to_owned(),
        ),
        (
            "value over 2048 characters",
            "link",
            format!("{k}.{}", "A".repeat(limits::MAX_LINK_LEN)),
        ),
        (
            "app URL over 4096 characters",
            "link",
            format!("https://app.example.com/?x={}", "a".repeat(4096)),
        ),
        (
            "URL without connectoid parameter",
            "link",
            "https://app.example.com/?x=1".to_owned(),
        ),
        ("one part", "link", k.clone()),
        ("five parts", "link", format!("{k}.{seed_url}...")),
        ("pub: padding", "link", format!("{}=.{seed_url}", &k[..65])),
        ("pub: 48 bytes", "link", format!("{short_key}.{seed_url}")),
        (
            "pub: not compressed",
            "link",
            format!(
                "{}.{seed_url}",
                b64::encode(&[&[4u8][..], &alice.as_bytes()[1..]].concat())
            ),
        ),
        ("relays: standard alphabet", "link", format!("{k}.a+b")),
        (
            "relays: not UTF-8",
            "link",
            format!("{k}.{}", b64::encode(&[0xff, 0xfe])),
        ),
        ("relays: empty", "link", format!("{k}.")),
        ("relays: nine", "link", format!("{k}.{}", relays(&nine))),
        (
            "relays: ftp scheme",
            "link",
            format!("{k}.{}", relays("ftp://relay.example/")),
        ),
        (
            "relays: not absolute",
            "link",
            format!("{k}.{}", relays("relay.example")),
        ),
        (
            "relays: two spaces",
            "link",
            format!("{k}.{}", relays("https://a.example/  https://b.example/")),
        ),
        (
            "relays: trailing space",
            "link",
            format!("{k}.{}", relays("https://a.example/ ")),
        ),
        (
            "relays: credentials",
            "link",
            format!("{k}.{}", relays("https://user:pw@a.example/")),
        ),
        (
            "relays: fragment",
            "link",
            format!("{k}.{}", relays("https://a.example/#x")),
        ),
        (
            "relays: empty per-relay ext",
            "link",
            format!("{k}.{}", relays("https://a.example/|")),
        ),
        (
            "relays: per-relay ext not base64url",
            "link",
            format!("{k}.{}", relays("https://a.example/|a=")),
        ),
        (
            "relays: URL over 256 bytes",
            "link",
            format!(
                "{k}.{}",
                relays(&format!("https://a.example/{}", "p".repeat(240)))
            ),
        ),
        (
            "relays: same relay twice after normalization",
            "link",
            format!("{k}.{}", relays("https://a.example https://A.EXAMPLE:443/")),
        ),
        (
            "relays: per-relay ext over 256 bytes",
            "link",
            format!(
                "{k}.{}",
                relays(&format!("https://a.example/|{}", e(&"x".repeat(257))))
            ),
        ),
        ("ext: padding", "link", format!("{k}.{seed_url}.YQ==")),
        (
            "ext: not UTF-8",
            "link",
            format!("{k}.{seed_url}.{}", b64::encode(&[0xc3])),
        ),
        (
            "ext: over 256 bytes",
            "link",
            format!("{k}.{seed_url}.{}", e(&"x".repeat(257))),
        ),
        (
            "secret: standard alphabet",
            "link",
            format!("{k}.{seed_url}..a+b"),
        ),
        (
            "secret: 15 bytes",
            "link",
            format!("{k}.{seed_url}..{}", b64::encode(&[7; 15])),
        ),
        ("secret: empty", "link", format!("{k}.{seed_url}..")),
        (
            "reply value with a secret",
            "reply",
            format!("{k}.{seed_url}..{secret}"),
        ),
    ];
    let invalid: Vec<Value> = invalid_inputs
        .iter()
        .map(|(label, mode, input)| {
            let error = decode_link(mode, input).expect_err(label);
            json!({"name": label, "mode": mode, "input": input, "code": error.code()})
        })
        .collect();
    json!({
        "description": "Link values. mode \"link\" decodes a shared link (bare value, connectoid= pair or app URL); mode \"reply\" decodes an envelope's from value (no secret allowed). valid: the decoded fields and the canonical encoding. invalid: the expected stable error code.",
        "limits": {
            "max_link_len": limits::MAX_LINK_LEN,
            "max_app_url_overhead": limits::MAX_APP_URL_OVERHEAD,
            "max_relays_per_link": limits::MAX_RELAYS_PER_LINK,
            "max_relay_url_len": limits::MAX_RELAY_URL_LEN,
            "max_ext_len": limits::MAX_EXT_LEN,
        },
        "valid": valid,
        "app_urls": app_urls,
        "invalid": invalid,
    })
}

fn check_links(v: &Value) {
    let mut codes = std::collections::BTreeSet::new();
    for vector in arr(v, "valid") {
        let link = decode_link(st(vector, "mode"), st(vector, "input"))
            .unwrap_or_else(|e| panic!("{}: {e}", name(vector)));
        assert_eq!(link_json(&link), *get(vector, "link"), "{}", name(vector));
        assert_eq!(link, link_from_json(get(vector, "link")));
        assert_eq!(link.encode(), st(vector, "encoded"), "{}", name(vector));
        link.validate().unwrap();
        assert_eq!(
            decode_link(st(vector, "mode"), st(vector, "encoded")).unwrap(),
            link
        );
    }
    for vector in arr(v, "app_urls") {
        let link = Link::decode(st(vector, "link")).unwrap();
        let app_url = url::Url::parse(st(vector, "app_url")).unwrap();
        assert_eq!(link.to_app_url(&app_url).as_str(), st(vector, "result"));
        assert_eq!(Link::decode(st(vector, "result")).unwrap(), link);
    }
    for vector in arr(v, "invalid") {
        let error = decode_link(st(vector, "mode"), st(vector, "input")).unwrap_err();
        assert_eq!(
            error.code(),
            st(vector, "code"),
            "{}: {error}",
            name(vector)
        );
        codes.insert(error.code());
    }
    // One vector at least for every code.
    let all = [
        "empty",
        "too-long",
        "no-connectoid-parameter",
        "part-count",
        "pub-base64",
        "relays-base64",
        "ext-base64",
        "secret-base64",
        "pub-key",
        "relays-utf8",
        "ext-utf8",
        "no-relays",
        "too-many-relays",
        "bad-relay",
        "duplicate-relay",
        "ext-too-long",
        "secret-length",
        "unexpected-secret",
    ];
    for code in all {
        assert!(codes.contains(code), "no invalid vector for {code}");
    }
}

#[test]
fn links() {
    run("links.json", build_links, check_links);
}

// ---------------------------------------------------------------------------
// envelopes.json

const TS: u64 = 1_700_000_000_000;
/// The relay URL that question vectors answer to.
const VECTOR_RELAY_URL: &str = "https://connecto.id/";

fn reply_value(key: &SecretKey, relays: &[(&str, Option<&str>)]) -> Link {
    Link {
        key: key.public_key(),
        relays: relays
            .iter()
            .map(|(url, ext)| RelayEntry {
                url: RelayUrl::parse(url).unwrap(),
                ext: ext.map(str::to_owned),
            })
            .collect(),
        ext: None,
        secret: None,
    }
}

fn envelope_json(e: &Envelope) -> Value {
    json!({
        "kind": e.kind.as_str(),
        "to": e.to.to_string(),
        "from": e.from.encode(),
        "ts": e.ts,
        "proof_b64": e.proof.map(|p| b64::encode(&p.0)),
        "body": e.body,
    })
}

fn envelope_from_json(v: &Value) -> Envelope {
    Envelope {
        kind: serde_json::from_value::<Kind>(get(v, "kind").clone()).unwrap(),
        to: st(v, "to").parse().unwrap(),
        from: Link::decode_reply(st(v, "from")).unwrap(),
        ts: num(v, "ts"),
        proof: get(v, "proof_b64")
            .as_str()
            .map(|p| LinkProof(b64::decode(p).unwrap().try_into().unwrap())),
        body: get(v, "body").clone(),
    }
}

struct ValidEnvelope<'a> {
    label: &'a str,
    sender: SecretKey,
    recipient: SecretKey,
    link_secret: Option<LinkSecret>,
    envelope: Envelope,
}

fn link_secret() -> LinkSecret {
    LinkSecret(
        sha2::Sha256::digest(b"connectoid test vector link secret")[..16]
            .try_into()
            .unwrap(),
    )
}

fn valid_envelope_vector(case: &ValidEnvelope<'_>) -> Value {
    let jws = case.envelope.sign(&case.sender).unwrap();
    let parts: Vec<&str> = jws.split('.').collect();
    let payload = String::from_utf8(b64::decode(parts[1]).unwrap()).unwrap();
    let ikm = vector_ikm(case.label);
    let mut rng = VectorRng::new(&ikm);
    let sealed = envelope::seal_envelope(&mut rng, &case.sender, &case.envelope).unwrap();
    rng.assert_drained();
    let mut out = json!({
        "name": case.label,
        "sender_secret_hex": hex::encode(case.sender.to_bytes()),
        "recipient_secret_hex": hex::encode(case.recipient.to_bytes()),
        "link_secret_hex": case.link_secret.as_ref().map(|s| hex::encode(s.0)),
        "envelope": envelope_json(&case.envelope),
        "payload_json": payload,
        "signing_input": format!("{}.{}", parts[0], parts[1]),
        "signature_hex": hex::encode(b64::decode(parts[2]).unwrap()),
        "jws": jws,
        "ikm_e_hex": hex::encode(&ikm),
        "padded_len": seal::padded_len(jws.len()).unwrap(),
        "sealed_hex": hex::encode(&sealed),
        "open_at_ms": [
            case.envelope.ts - limits::ENVELOPE_MAX_SKEW_MS,
            case.envelope.ts + 1000,
            case.envelope.ts + limits::ENVELOPE_MAX_AGE_MS,
        ],
    });
    if let (Some(secret), Some(_)) = (&case.link_secret, case.envelope.proof) {
        let mut input = envelope::LINK_PROOF_LABEL.to_vec();
        input.push(0);
        input.extend_from_slice(case.envelope.to.as_bytes());
        input.extend_from_slice(case.envelope.from.key.as_bytes());
        out["proof_input_hex"] = hex::encode(&input).into();
        out["proof_hex"] =
            hex::encode(LinkProof::compute(secret, &case.envelope.to, &case.envelope.from.key).0)
                .into();
    }
    out
}

/// A rejected-envelope vector: `padded` sealed to `sealed_to` with `purpose`,
/// opened by `recipient` at `now_ms` (then `check_proof` if a link secret is given).
struct Rejected<'a> {
    label: &'a str,
    recipient: &'a SecretKey,
    sealed_to: PublicKey,
    purpose: Purpose,
    jws: Option<String>,
    padded: Vec<u8>,
    now_ms: u64,
    link_secret: Option<LinkSecret>,
}

fn rejected_vector(case: Rejected<'_>) -> Value {
    let ikm = vector_ikm(case.label);
    let mut rng = VectorRng::new(&ikm);
    let sealed = seal::seal(&mut rng, &case.sealed_to, case.purpose, &case.padded).unwrap();
    rng.assert_drained();
    let error = open_and_check(
        case.recipient,
        &sealed,
        case.now_ms,
        case.link_secret.as_ref(),
    )
    .expect_err(case.label);
    json!({
        "name": case.label,
        "recipient_secret_hex": hex::encode(case.recipient.to_bytes()),
        "sealed_to_b64": case.sealed_to.to_string(),
        "purpose": purpose_name(case.purpose),
        "jws": case.jws,
        "padded_hex": hex::encode(&case.padded),
        "ikm_e_hex": hex::encode(&ikm),
        "sealed_hex": hex::encode(&sealed),
        "now_ms": case.now_ms,
        "link_secret_hex": case.link_secret.as_ref().map(|s| hex::encode(s.0)),
        "error": error.code(),
    })
}

fn open_and_check(
    recipient: &SecretKey,
    sealed: &[u8],
    now_ms: u64,
    link_secret: Option<&LinkSecret>,
) -> Result<Envelope, EnvelopeError> {
    let envelope = envelope::open_envelope(recipient, sealed, now_ms)?;
    if let Some(secret) = link_secret {
        envelope.check_proof(secret)?;
    }
    Ok(envelope)
}

/// A JWS over arbitrary header and payload text, signed by `signer`.
fn forge(signer: &SecretKey, header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.as_bytes()),
        b64::encode(payload.as_bytes())
    );
    format!("{input}.{}", b64::encode(&signer.sign(input.as_bytes())))
}

fn build_envelopes() -> Value {
    let alice_link = vector_key("alice");
    let bob = vector_key("bob");
    let eve = vector_key("eve");
    let secret = link_secret();
    let bob_reply = reply_value(
        &bob,
        &[
            ("https://relay-a.example/", None),
            ("https://relay-b.example/", Some("key-b")),
        ],
    );
    // Alice answers from the link key itself: the only key Bob knows is hers.
    let alice_reply = reply_value(&alice_link, &[("https://connecto.id/", None)]);
    let hello = Envelope {
        kind: Kind::Hello,
        to: alice_link.public_key(),
        from: bob_reply.clone(),
        ts: TS,
        proof: Some(LinkProof::compute(
            &secret,
            &alice_link.public_key(),
            &bob.public_key(),
        )),
        body: json!({"sdpOffer": {"sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "type": "offer"}}),
    };
    let cases = [
        ValidEnvelope {
            label: "hello with link proof",
            sender: bob.clone(),
            recipient: alice_link.clone(),
            link_secret: Some(secret.clone()),
            envelope: hello.clone(),
        },
        ValidEnvelope {
            label: "answer signed by the link key",
            sender: alice_link.clone(),
            recipient: bob.clone(),
            link_secret: None,
            envelope: Envelope {
                kind: Kind::Answer,
                to: bob.public_key(),
                from: alice_reply.clone(),
                ts: TS + 2_500,
                proof: None,
                body: json!({"sdpAnswer": {"sdp": "v=0\r\n", "type": "answer"}}),
            },
        },
        ValidEnvelope {
            label: "link-used with null body",
            sender: alice_link.clone(),
            recipient: eve.clone(),
            link_secret: None,
            envelope: Envelope {
                kind: Kind::LinkUsed,
                to: eve.public_key(),
                from: reply_value(&alice_link, &[("https://connecto.id/", None)]),
                ts: TS + 60_000,
                proof: None,
                body: Value::Null,
            },
        },
        ValidEnvelope {
            label: "app with non-ASCII text",
            sender: bob.clone(),
            recipient: alice_link.clone(),
            link_secret: None,
            envelope: Envelope {
                kind: Kind::App,
                to: alice_link.public_key(),
                from: bob_reply.clone(),
                ts: TS + 90_000,
                proof: None,
                body: json!(["list", {"item": "Äpfel 🍎", "qty": 3}]),
            },
        },
    ];
    let valid: Vec<Value> = cases.iter().map(valid_envelope_vector).collect();

    let hello_jws = hello.sign(&bob).unwrap();
    let header_b64 = b64::encode(JWS_HEADER.as_bytes());
    let hello_payload =
        String::from_utf8(b64::decode(hello_jws.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let to = alice_link.public_key().to_string();
    let from = bob_reply.encode();
    let payload = |v: &str, kind: &str, to: &str, from: &str, ts: u64| {
        format!(r#"{{"v":{v},"kind":"{kind}","to":"{to}","from":"{from}","ts":{ts},"body":null}}"#)
    };
    let good_payload = payload("1", "offer", &to, &from, TS);
    let rejected_jws = |label, jws: String, now_ms, link_secret: Option<LinkSecret>| Rejected {
        label,
        recipient: &alice_link,
        sealed_to: alice_link.public_key(),
        purpose: Purpose::Message,
        padded: seal::pad(jws.as_bytes()).unwrap(),
        jws: Some(jws),
        now_ms,
        link_secret,
    };
    let tampered = {
        let parts: Vec<&str> = hello_jws.split('.').collect();
        let altered = hello_payload.replace(&format!("\"ts\":{TS}"), &format!("\"ts\":{}", TS + 1));
        format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(altered.as_bytes()),
            parts[2]
        )
    };
    let short_signature = {
        let parts: Vec<&str> = hello_jws.split('.').collect();
        let signature = b64::decode(parts[2]).unwrap();
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            b64::encode(&signature[..95])
        )
    };
    let without_proof = Envelope {
        proof: None,
        ..hello.clone()
    }
    .sign(&bob)
    .unwrap();
    let wrong_proof = Envelope {
        proof: Some(LinkProof::compute(
            &LinkSecret([0; 16]),
            &alice_link.public_key(),
            &bob.public_key(),
        )),
        ..hello.clone()
    }
    .sign(&bob)
    .unwrap();
    let to_eve = Envelope {
        to: eve.public_key(),
        ..hello.clone()
    }
    .sign(&bob)
    .unwrap();
    let from_with_secret = Link {
        secret: Some(secret.clone()),
        ..bob_reply.clone()
    }
    .encode();
    let now = TS + 1000;
    let mut rejected = vec![
        rejected_vector(Rejected {
            label: "sealed to another key",
            recipient: &alice_link,
            sealed_to: eve.public_key(),
            purpose: Purpose::Message,
            jws: Some(hello_jws.clone()),
            padded: seal::pad(hello_jws.as_bytes()).unwrap(),
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(Rejected {
            label: "sealed as a question",
            recipient: &alice_link,
            sealed_to: alice_link.public_key(),
            purpose: Purpose::Question,
            jws: Some(hello_jws.clone()),
            padded: seal::pad(hello_jws.as_bytes()).unwrap(),
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(Rejected {
            label: "no padding marker",
            recipient: &alice_link,
            sealed_to: alice_link.public_key(),
            purpose: Purpose::Message,
            jws: None,
            padded: vec![0; 256],
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(Rejected {
            label: "not UTF-8",
            recipient: &alice_link,
            sealed_to: alice_link.public_key(),
            purpose: Purpose::Message,
            jws: None,
            padded: seal::pad(&[0xff, 0xfe]).unwrap(),
            now_ms: now,
            link_secret: None,
        }),
        rejected_vector(rejected_jws(
            "two parts",
            format!("{header_b64}.e30"),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "alg none",
            forge(&bob, r#"{"alg":"none","typ":"connectoid"}"#, &good_payload),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "header with kid",
            forge(
                &bob,
                r#"{"alg":"ES384","typ":"connectoid","kid":"x"}"#,
                &good_payload,
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "header in another order",
            forge(&bob, r#"{"typ":"connectoid","alg":"ES384"}"#, &good_payload),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "payload is an array",
            forge(
                &bob,
                JWS_HEADER,
                &format!(r#"[1,"offer","{to}","{from}",{TS},null,null]"#),
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "payload without to",
            forge(
                &bob,
                JWS_HEADER,
                &format!(r#"{{"v":1,"kind":"offer","from":"{from}","ts":{TS}}}"#),
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "version 2",
            forge(&bob, JWS_HEADER, &payload("2", "offer", &to, &from, TS)),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "unknown kind",
            forge(&bob, JWS_HEADER, &payload("1", "greeting", &to, &from, TS)),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "from carries a link secret",
            forge(
                &bob,
                JWS_HEADER,
                &payload("1", "offer", &to, &from_with_secret, TS),
            ),
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "signed by another key",
            forge(&eve, JWS_HEADER, &good_payload),
            now,
            None,
        )),
        rejected_vector(rejected_jws("altered payload", tampered, now, None)),
        rejected_vector(rejected_jws(
            "95-byte signature",
            short_signature,
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "addressed to another mailbox",
            to_eve,
            now,
            None,
        )),
        rejected_vector(rejected_jws(
            "expired",
            hello_jws.clone(),
            TS + limits::ENVELOPE_MAX_AGE_MS + 1,
            None,
        )),
        rejected_vector(rejected_jws(
            "from the future",
            hello_jws.clone(),
            TS - limits::ENVELOPE_MAX_SKEW_MS - 1,
            None,
        )),
        rejected_vector(rejected_jws(
            "hello without proof",
            without_proof,
            now,
            Some(secret.clone()),
        )),
        rejected_vector(rejected_jws(
            "hello with a wrong proof",
            wrong_proof,
            now,
            Some(secret.clone()),
        )),
    ];
    // Hand-made sealed values that no seal produces.
    rejected.push(json!({
        "name": "shorter than enc and tag",
        "recipient_secret_hex": hex::encode(alice_link.to_bytes()),
        "sealed_hex": hex::encode([0u8; seal::SEAL_OVERHEAD - 1]),
        "now_ms": now,
        "error": "Open::TooShort",
    }));
    let mut bad_enc = vec![0u8; seal::SEAL_OVERHEAD + seal::MIN_PADDED_LEN];
    bad_enc[0] = 0x04;
    rejected.push(json!({
        "name": "enc not on the curve",
        "recipient_secret_hex": hex::encode(alice_link.to_bytes()),
        "sealed_hex": hex::encode(&bad_enc),
        "now_ms": now,
        "error": "Open::BadEncappedKey",
    }));
    json!({
        "description": "Envelopes: JWS compact (ES384) inside HPKE. valid: the envelope fields, the exact payload JSON, signing input, signature, JWS, link proof, and the sealed bytes for ikm_e; each opens at every open_at_ms. rejected: sealed = HPKE seal (purpose info) of padded_hex to sealed_to_b64 with ikm_e (when given); opening with the recipient key at now_ms, then checking the link proof when link_secret_hex is given, fails with error.",
        "header": JWS_HEADER,
        "version": ENVELOPE_VERSION,
        "max_age_ms": limits::ENVELOPE_MAX_AGE_MS,
        "max_skew_ms": limits::ENVELOPE_MAX_SKEW_MS,
        "valid": valid,
        "rejected": rejected,
    })
}

fn check_envelopes(v: &Value) {
    assert_eq!(st(v, "header"), JWS_HEADER);
    assert_eq!(num(v, "version"), ENVELOPE_VERSION);
    assert_eq!(num(v, "max_age_ms"), limits::ENVELOPE_MAX_AGE_MS);
    assert_eq!(num(v, "max_skew_ms"), limits::ENVELOPE_MAX_SKEW_MS);
    for vector in arr(v, "valid") {
        let label = name(vector);
        let sender = secret_from(vector, "sender_secret_hex");
        let recipient = secret_from(vector, "recipient_secret_hex");
        let envelope = envelope_from_json(get(vector, "envelope"));
        assert_eq!(
            envelope_json(&envelope),
            *get(vector, "envelope"),
            "{label}"
        );
        let jws = envelope.sign(&sender).unwrap();
        assert_eq!(jws, st(vector, "jws"), "{label}");
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(b64::decode(parts[0]).unwrap(), JWS_HEADER.as_bytes());
        assert_eq!(
            b64::decode(parts[1]).unwrap(),
            st(vector, "payload_json").as_bytes()
        );
        assert_eq!(
            format!("{}.{}", parts[0], parts[1]),
            st(vector, "signing_input")
        );
        let signature = hx(vector, "signature_hex");
        assert_eq!(b64::decode(parts[2]).unwrap(), signature);
        assert!(
            envelope
                .from
                .key
                .verify(st(vector, "signing_input").as_bytes(), &signature)
        );
        if let Some(secret_hex) = get(vector, "link_secret_hex").as_str() {
            let secret = LinkSecret(hex::decode(secret_hex).unwrap().try_into().unwrap());
            let proof = LinkProof::compute(&secret, &envelope.to, &envelope.from.key);
            assert_eq!(proof.0.to_vec(), hx(vector, "proof_hex"));
            assert_eq!(Some(proof), envelope.proof);
            let input = hx(vector, "proof_input_hex");
            let mut expected = envelope::LINK_PROOF_LABEL.to_vec();
            expected.push(0);
            expected.extend_from_slice(envelope.to.as_bytes());
            expected.extend_from_slice(envelope.from.key.as_bytes());
            assert_eq!(input, expected);
            envelope.check_proof(&secret).unwrap();
        }
        let ikm = hx(vector, "ikm_e_hex");
        let mut rng = VectorRng::new(&ikm);
        let sealed = envelope::seal_envelope(&mut rng, &sender, &envelope).unwrap();
        rng.assert_drained();
        assert_eq!(sealed, hx(vector, "sealed_hex"), "{label}");
        assert_eq!(
            sealed.len(),
            seal::SEAL_OVERHEAD + num(vector, "padded_len") as usize
        );
        for now in arr(vector, "open_at_ms") {
            let opened = envelope::open_envelope(&recipient, &sealed, now.as_u64().unwrap())
                .unwrap_or_else(|e| panic!("{label} at {now}: {e}"));
            assert_eq!(opened, envelope);
        }
    }
    let mut errors = std::collections::BTreeSet::new();
    for vector in arr(v, "rejected") {
        let label = name(vector);
        let recipient = secret_from(vector, "recipient_secret_hex");
        let sealed = hx(vector, "sealed_hex");
        if vector.get("ikm_e_hex").is_some() {
            let padded = hx(vector, "padded_hex");
            if let Some(jws) = get(vector, "jws").as_str() {
                assert_eq!(seal::pad(jws.as_bytes()).unwrap(), padded);
            }
            let sealed_to: PublicKey = st(vector, "sealed_to_b64").parse().unwrap();
            let mut rng = VectorRng::new(&hx(vector, "ikm_e_hex"));
            let purpose = purpose_named(st(vector, "purpose"));
            assert_eq!(
                seal::seal(&mut rng, &sealed_to, purpose, &padded).unwrap(),
                sealed
            );
            rng.assert_drained();
        }
        let secret = vector
            .get("link_secret_hex")
            .and_then(Value::as_str)
            .map(|s| LinkSecret(hex::decode(s).unwrap().try_into().unwrap()));
        let error = open_and_check(&recipient, &sealed, num(vector, "now_ms"), secret.as_ref())
            .expect_err(label);
        assert_eq!(error.code(), st(vector, "error"), "{label}: {error}");
        errors.insert(error.code());
    }
    for expected in [
        "Open::TooShort",
        "Open::BadEncappedKey",
        "Open::Decrypt",
        "Open::Padding",
        "Jws",
        "Header",
        "Payload",
        "Version",
        "UnknownKind",
        "From",
        "BadSignature",
        "WrongRecipient",
        "Expired",
        "FromFuture",
        "MissingProof",
        "BadProof",
    ] {
        assert!(
            errors.contains(expected),
            "no rejected vector for {expected}"
        );
    }
}

#[test]
fn envelopes() {
    run("envelopes.json", build_envelopes, check_envelopes);
}

// ---------------------------------------------------------------------------
// api.json

fn action_named(name: &str) -> Action {
    Action::ALL
        .into_iter()
        .find(|a| a.as_str() == name)
        .unwrap_or_else(|| panic!("unknown action {name}"))
}

fn request_json(request: &Request) -> Value {
    let mut out = json!({
        "pub": request.key.to_string(),
        "ext": request.ext,
        "action": request.op.action().as_str(),
    });
    match &request.op {
        Operation::Send { data } => out["data_hex"] = hex::encode(data).into(),
        Operation::Check { at } => out["at"] = at.0.into(),
        Operation::Receive { answer, at, limit } => {
            out["answer_hex"] = hex::encode(answer.0).into();
            out["at"] = at.0.into();
            out["limit"] = (*limit).into();
        }
        Operation::Delete { answer } => {
            out["answer_hex"] = answer.map(|a| hex::encode(a.0)).into();
        }
        other => panic!("no vector form for {other:?}"),
    }
    out
}

fn answer_from(v: &Value) -> Option<Answer> {
    get(v, "answer_hex")
        .as_str()
        .map(|a| Answer(hex::decode(a).unwrap().try_into().unwrap()))
}

fn request_from_json(v: &Value) -> Request {
    let op = match action_named(st(v, "action")) {
        Action::Send => Operation::Send {
            data: hx(v, "data_hex"),
        },
        Action::Check => Operation::Check {
            at: At(num(v, "at")),
        },
        Action::Receive => Operation::Receive {
            answer: answer_from(v).unwrap(),
            at: At(num(v, "at")),
            limit: num(v, "limit") as u32,
        },
        Action::Delete => Operation::Delete {
            answer: answer_from(v),
        },
    };
    Request {
        key: st(v, "pub").parse().unwrap(),
        ext: opt_str(v, "ext"),
        op,
    }
}

fn response_json(response: &Response) -> Value {
    let message = |m: &Message| json!({"at": m.at.0, "data_hex": hex::encode(&m.data)});
    match response {
        Response::Done => json!({"type": "done"}),
        Response::NotFound => json!({"type": "not-found"}),
        Response::Found { question } => {
            json!({"type": "found", "question_hex": hex::encode(question)})
        }
        Response::One(m) => {
            let mut out = message(m);
            out["type"] = "one".into();
            out
        }
        Response::Many(messages) => {
            json!({"type": "many", "messages": messages.iter().map(message).collect::<Vec<_>>()})
        }
        Response::Error(e) => {
            json!({"type": "error", "error": e.code.as_str(), "detail": e.detail})
        }
        other => panic!("no vector form for {other:?}"),
    }
}

fn response_from_json(v: &Value) -> Response {
    let message = |m: &Value| Message {
        at: At(num(m, "at")),
        data: hx(m, "data_hex"),
    };
    match st(v, "type") {
        "done" => Response::Done,
        "not-found" => Response::NotFound,
        "found" => Response::Found {
            question: hx(v, "question_hex"),
        },
        "one" => Response::One(message(v)),
        "many" => Response::Many(arr(v, "messages").iter().map(message).collect()),
        "error" => Response::Error(ApiError {
            code: ErrorCode::from_str_exact(st(v, "error")).unwrap(),
            detail: opt_str(v, "detail"),
        }),
        other => panic!("unknown response type {other}"),
    }
}

fn build_api() -> Value {
    let k = vector_key("alice").public_key().to_string();
    let data: Vec<u8> = (0..369u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = b64::encode(&data);
    let answer = b64::encode(&sha2::Sha256::digest(b"connectoid test vector question"));
    let uncompressed = b64::encode(
        &[
            &[4u8][..],
            &vector_key("alice").public_key().as_bytes()[1..],
        ]
        .concat(),
    );
    let too_big = "A".repeat(b64::encoded_len(limits::MAX_MESSAGE_BYTES) + 1);
    let bodies: Vec<(&str, String)> = vec![
        (
            "seed send",
            format!(r#"{{"pub": "{k}", "ext": null, "action": "send", "data": "{d}"}}"#),
        ),
        (
            "seed check",
            format!(r#"{{"pub": "{k}", "ext": null, "action": "check", "at": 0}}"#),
        ),
        (
            "seed receive",
            format!(
                r#"{{"pub": "{k}", "ext": null, "answer": "{answer}", "action": "receive", "at": 0, "limit": 1}}"#
            ),
        ),
        (
            "check without at, with ext",
            format!(r#"{{"action":"check","pub":"{k}","ext":"api-key-123"}}"#),
        ),
        (
            "check with null at",
            format!(r#"{{"action":"check","pub":"{k}","at":null}}"#),
        ),
        (
            "check at above 2^53",
            format!(r#"{{"action":"check","pub":"{k}","at":18446744073709551615}}"#),
        ),
        (
            "receive without limit",
            format!(
                r#"{{"action":"receive","pub":"{k}","answer":"{answer}","at":1700000000000123}}"#
            ),
        ),
        (
            "receive limit 100",
            format!(r#"{{"action":"receive","pub":"{k}","answer":"{answer}","at":5,"limit":100}}"#),
        ),
        (
            "delete without answer",
            format!(r#"{{"action":"delete","pub":"{k}"}}"#),
        ),
        (
            "delete with answer",
            format!(r#"{{"action":"delete","pub":"{k}","answer":"{answer}"}}"#),
        ),
        (
            "unknown fields and unused fields are ignored",
            format!(
                r#"{{"action":"send","pub":"{k}","data":"{d}","at":-1,"limit":"x","answer":5,"sig":"?"}}"#
            ),
        ),
        ("malformed JSON", "{".to_owned()),
        ("empty body", String::new()),
        (
            "array body",
            format!(r#"["{k}",null,"check",null,0,null,null]"#),
        ),
        ("null body", "null".to_owned()),
        (
            "duplicate field",
            format!(r#"{{"action":"check","pub":"{k}","pub":"{k}"}}"#),
        ),
        ("no action", format!(r#"{{"pub":"{k}"}}"#)),
        (
            "action not a string",
            format!(r#"{{"action":1,"pub":"{k}"}}"#),
        ),
        (
            "unknown action",
            format!(r#"{{"action":"fly","pub":"{k}"}}"#),
        ),
        (
            "action in upper case",
            format!(r#"{{"action":"CHECK","pub":"{k}"}}"#),
        ),
        ("no pub", r#"{"action":"check"}"#.to_owned()),
        (
            "pub not a string",
            r#"{"action":"check","pub":7}"#.to_owned(),
        ),
        (
            "pub too short",
            r#"{"action":"check","pub":"abc"}"#.to_owned(),
        ),
        (
            "pub not compressed",
            format!(r#"{{"action":"check","pub":"{uncompressed}"}}"#),
        ),
        (
            "ext not a string",
            format!(r#"{{"action":"check","pub":"{k}","ext":5}}"#),
        ),
        (
            "ext over 256 bytes",
            format!(
                r#"{{"action":"check","pub":"{k}","ext":"{}"}}"#,
                "x".repeat(257)
            ),
        ),
        (
            "send without data",
            format!(r#"{{"action":"send","pub":"{k}"}}"#),
        ),
        (
            "data not a string",
            format!(r#"{{"action":"send","pub":"{k}","data":[1]}}"#),
        ),
        (
            "data with padding",
            format!(r#"{{"action":"send","pub":"{k}","data":"{d}=="}}"#),
        ),
        (
            "data shorter than a sealed message",
            format!(
                r#"{{"action":"send","pub":"{k}","data":"{}"}}"#,
                b64::encode(&[0; 112])
            ),
        ),
        (
            "data over 64 KiB",
            format!(r#"{{"action":"send","pub":"{k}","data":"{too_big}"}}"#),
        ),
        (
            "at negative",
            format!(r#"{{"action":"check","pub":"{k}","at":-1}}"#),
        ),
        (
            "at fractional",
            format!(r#"{{"action":"check","pub":"{k}","at":1.5}}"#),
        ),
        (
            "at with exponent",
            format!(r#"{{"action":"check","pub":"{k}","at":1e3}}"#),
        ),
        (
            "at a string",
            format!(r#"{{"action":"check","pub":"{k}","at":"5"}}"#),
        ),
        (
            "at above u64",
            format!(r#"{{"action":"check","pub":"{k}","at":18446744073709551616}}"#),
        ),
        (
            "receive without answer",
            format!(r#"{{"action":"receive","pub":"{k}","at":0}}"#),
        ),
        (
            "answer not base64url",
            format!(r#"{{"action":"receive","pub":"{k}","answer":"a+b/"}}"#),
        ),
        (
            "answer 31 bytes",
            format!(
                r#"{{"action":"receive","pub":"{k}","answer":"{}"}}"#,
                b64::encode(&[1; 31])
            ),
        ),
        (
            "limit 0",
            format!(r#"{{"action":"receive","pub":"{k}","answer":"{answer}","limit":0}}"#),
        ),
        (
            "limit 101",
            format!(r#"{{"action":"receive","pub":"{k}","answer":"{answer}","limit":101}}"#),
        ),
        (
            "delete with a bad answer",
            format!(
                r#"{{"action":"delete","pub":"{k}","answer":"{}"}}"#,
                b64::encode(&[1; 33])
            ),
        ),
    ];
    let requests: Vec<Value> = bodies
        .iter()
        .map(|(label, body)| match Request::from_json(body.as_bytes()) {
            Ok(request) => json!({
                "name": label,
                "body": body,
                "decoded": request_json(&request),
                "canonical": request.to_json(),
            }),
            Err(e) => {
                let mut out = json!({
                    "name": label,
                    "body": body,
                    "error": e.code.as_str(),
                    "status": e.code.http_status(),
                });
                if e.code == ErrorCode::MissingField {
                    out["detail"] = e.detail.clone().into();
                }
                out
            }
        })
        .collect();

    let question: Vec<u8> = (0..seal::SEALED_QUESTION_LEN as u32)
        .map(|i| i as u8)
        .collect();
    let responses_in: Vec<(&str, Action, Response)> = vec![
        ("send stored", Action::Send, Response::Done),
        ("delete done", Action::Delete, Response::Done),
        ("check found nothing", Action::Check, Response::NotFound),
        (
            "check found a message",
            Action::Check,
            Response::Found { question },
        ),
        (
            "receive limit 1 (seed shape)",
            Action::Receive,
            Response::One(Message {
                at: At(1_700_000_000_000_123),
                data: vec![1, 2, 3, 4, 5],
            }),
        ),
        (
            "receive limit 1 found nothing",
            Action::Receive,
            Response::NotFound,
        ),
        (
            "receive larger limit",
            Action::Receive,
            Response::Many(vec![
                Message {
                    at: At(1_700_000_000_000_123),
                    data: vec![1, 2, 3],
                },
                Message {
                    at: At(1_700_000_000_000_124),
                    data: vec![0xff; 4],
                },
            ]),
        ),
        (
            "receive larger limit found nothing",
            Action::Receive,
            Response::Many(vec![]),
        ),
        (
            "seed error Too often",
            Action::Send,
            Response::Error(ErrorCode::TooOften.into()),
        ),
        (
            "seed error Too big",
            Action::Send,
            Response::Error(ApiError::new(
                ErrorCode::TooBig,
                "data: the maximum is 65536 bytes",
            )),
        ),
        (
            "error with detail",
            Action::Check,
            Response::Error(ApiError::new(ErrorCode::MissingField, "pub")),
        ),
        (
            "no question",
            Action::Receive,
            Response::Error(ErrorCode::NoQuestion.into()),
        ),
    ];
    let responses: Vec<Value> = responses_in
        .iter()
        .map(|(label, action, response)| {
            json!({
                "name": label,
                "action": action.as_str(),
                "value": response_json(response),
                "json": response.to_json(),
                "status": response.http_status(),
            })
        })
        .collect();
    let errors: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|c| json!({"error": c.as_str(), "status": c.http_status()}))
        .collect();
    json!({
        "description": "Relay HTTP API (POST / with a JSON body). requests: a body either decodes to the fields in decoded (data and answer as hex of the decoded bytes; canonical is the library's encoding of the same request) or fails with error and HTTP status (and detail, for Missing field). responses: a value, its exact JSON text and HTTP status; a client decoding json for the request's action gets value back. errors: every error string with its status.",
        "limits": {
            "max_message_bytes": limits::MAX_MESSAGE_BYTES,
            "max_receive_limit": limits::MAX_RECEIVE_LIMIT,
            "max_ext_len": limits::MAX_EXT_LEN,
            "max_request_body": limits::MAX_REQUEST_BODY,
        },
        "requests": requests,
        "responses": responses,
        "errors": errors,
    })
}

fn check_api(v: &Value) {
    for vector in arr(v, "requests") {
        let label = name(vector);
        let result = Request::from_json(st(vector, "body").as_bytes());
        if let Some(decoded) = vector.get("decoded") {
            let request = result.unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(request_json(&request), *decoded, "{label}");
            assert_eq!(request_from_json(decoded), request);
            assert_eq!(request.to_json(), st(vector, "canonical"), "{label}");
            assert_eq!(
                Request::from_json(st(vector, "canonical").as_bytes()).unwrap(),
                request
            );
        } else {
            let error = result.expect_err(label);
            assert_eq!(error.code.as_str(), st(vector, "error"), "{label}: {error}");
            assert_eq!(u64::from(error.code.http_status()), num(vector, "status"));
            if let Some(detail) = vector.get("detail") {
                assert_eq!(error.detail.as_deref(), detail.as_str(), "{label}");
            }
        }
    }
    for vector in arr(v, "responses") {
        let label = name(vector);
        let response = response_from_json(get(vector, "value"));
        assert_eq!(response.to_json(), st(vector, "json"), "{label}");
        assert_eq!(u64::from(response.http_status()), num(vector, "status"));
        let action = action_named(st(vector, "action"));
        let decoded = Response::from_json(action, st(vector, "json").as_bytes()).unwrap();
        assert_eq!(decoded, response, "{label}");
    }
    let errors = arr(v, "errors");
    assert_eq!(errors.len(), ErrorCode::ALL.len());
    for (vector, code) in errors.iter().zip(ErrorCode::ALL) {
        assert_eq!(st(vector, "error"), code.as_str());
        assert_eq!(num(vector, "status"), u64::from(code.http_status()));
    }
}

#[test]
fn api() {
    run("api.json", build_api, check_api);
}

// ---------------------------------------------------------------------------
// udp.json

fn status_name(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::NotFound => "not-found",
        CheckStatus::Found => "found",
        CheckStatus::TooOften => "too-often",
        CheckStatus::Forbidden => "forbidden",
        other => panic!("no vector form for {other:?}"),
    }
}

fn status_named(name: &str) -> CheckStatus {
    [
        CheckStatus::NotFound,
        CheckStatus::Found,
        CheckStatus::TooOften,
        CheckStatus::Forbidden,
    ]
    .into_iter()
    .find(|s| status_name(*s) == name)
    .unwrap_or_else(|| panic!("unknown status {name}"))
}

fn udp_request_json(r: &CheckRequest) -> Value {
    json!({
        "nonce_hex": hex::encode(r.nonce),
        "ext": r.ext,
        "checks": r.checks.iter().map(|c| json!({"key_hex": hex::encode(c.key), "at": c.at})).collect::<Vec<_>>(),
    })
}

fn udp_request_from(v: &Value) -> CheckRequest {
    CheckRequest {
        nonce: hx(v, "nonce_hex").try_into().unwrap(),
        ext: opt_str(v, "ext"),
        checks: arr(v, "checks")
            .iter()
            .map(|c| MailboxCheck {
                key: hx(c, "key_hex").try_into().unwrap(),
                at: At(num(c, "at")),
            })
            .collect(),
    }
}

fn udp_response_json(r: &CheckResponse) -> Value {
    json!({
        "nonce_hex": hex::encode(r.nonce),
        "statuses": r.statuses.iter().map(|s| status_name(*s)).collect::<Vec<_>>(),
        "observed": r.observed.map(|o| {
            let addr = SocketAddr::from(o);
            json!({"ip": addr.ip().to_string(), "port": addr.port()})
        }),
    })
}

fn udp_response_from(v: &Value) -> CheckResponse {
    CheckResponse {
        nonce: hx(v, "nonce_hex").try_into().unwrap(),
        statuses: arr(v, "statuses")
            .iter()
            .map(|s| status_named(s.as_str().unwrap()))
            .collect(),
        observed: get(v, "observed").as_object().map(|_| {
            let observed = get(v, "observed");
            let ip: IpAddr = st(observed, "ip").parse().unwrap();
            ObservedAddr::from(SocketAddr::new(ip, num(observed, "port") as u16))
        }),
    }
}

fn build_udp() -> Value {
    let nonce: [u8; 16] = sha2::Sha256::digest(b"connectoid test vector nonce")[..16]
        .try_into()
        .unwrap();
    let alice = *vector_key("alice").public_key().as_bytes();
    let bob = *vector_key("bob").public_key().as_bytes();
    let one = CheckRequest {
        nonce,
        ext: None,
        checks: vec![MailboxCheck {
            key: alice,
            at: At(0),
        }],
    };
    let two = CheckRequest {
        nonce,
        ext: Some("api-key-123".to_owned()),
        checks: vec![
            MailboxCheck {
                key: alice,
                at: At(1_700_000_000_000_123),
            },
            MailboxCheck {
                key: bob,
                at: At(u64::MAX),
            },
        ],
    };
    let largest = CheckRequest {
        nonce,
        ext: Some("k".repeat(limits::MAX_DATAGRAM_EXT_LEN)),
        checks: (0..limits::MAX_CHECKS_PER_DATAGRAM as u8)
            .map(|i| MailboxCheck {
                key: [i; 49],
                at: At(u64::MAX),
            })
            .collect(),
    };
    let requests_in = [
        ("one mailbox", &one),
        ("two mailboxes with ext", &two),
        ("largest", &largest),
    ];
    let requests: Vec<Value> = requests_in
        .iter()
        .map(|(label, r)| json!({"name": label, "value": udp_request_json(r), "hex": hex::encode(r.encode())}))
        .collect();

    let v4 = CheckResponse {
        nonce,
        statuses: vec![
            CheckStatus::Found,
            CheckStatus::NotFound,
            CheckStatus::TooOften,
            CheckStatus::Forbidden,
        ],
        observed: Some(ObservedAddr::from(
            "203.0.113.7:54321".parse::<SocketAddr>().unwrap(),
        )),
    };
    let v6 = CheckResponse {
        nonce,
        statuses: vec![CheckStatus::NotFound],
        observed: Some(ObservedAddr::from(
            "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
        )),
    };
    let bare = CheckResponse {
        nonce,
        statuses: vec![CheckStatus::NotFound],
        observed: None,
    };
    let responses: Vec<Value> = [("not found, no address", &bare), ("four statuses, IPv4 address", &v4), ("IPv6 address", &v6)]
        .iter()
        .map(|(label, r)| json!({"name": label, "value": udp_response_json(r), "hex": hex::encode(r.encode())}))
        .collect();
    let v6_len = v6.encode().len();
    let within: Vec<Value> = [
        (v6_len, "fits"),
        (v6_len - 1, "address dropped"),
        (bare.encode().len() - 1, "no answer"),
    ]
    .iter()
    .map(|&(len, label)| {
        json!({
            "name": label,
            "response": udp_response_json(&v6),
            "request_len": len,
            "hex": v6.clone().encode_within(len).map(hex::encode),
        })
    })
    .collect();

    let one_bytes = one.encode();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = one_bytes.clone();
        f(&mut bytes);
        bytes
    };
    let no_checks = CheckRequest {
        checks: vec![],
        ..one.clone()
    }
    .encode();
    let seventeen = CheckRequest {
        checks: vec![
            MailboxCheck {
                key: alice,
                at: At(0)
            };
            17
        ],
        ..one.clone()
    }
    .encode();
    let long_ext = CheckRequest {
        ext: Some("k".repeat(limits::MAX_DATAGRAM_EXT_LEN + 1)),
        ..one.clone()
    }
    .encode();
    let bad_utf8 = {
        let mut bytes = CheckRequest {
            ext: Some("ab".to_owned()),
            ..one.clone()
        }
        .encode();
        // header 6, nonce 16, Some 1, length 1, then the text.
        bytes[24] = 0xff;
        bytes
    };
    let bare_bytes = bare.encode();
    let invalid_in: Vec<(&str, &str, Vec<u8>)> = vec![
        ("over 1200 bytes", "request", with(&|b| b.resize(1201, 0))),
        ("three bytes", "request", one_bytes[..3].to_vec()),
        ("bad magic", "request", with(&|b| b[3] = b'X')),
        ("version 2", "request", with(&|b| b[4] = 2)),
        (
            "response given to the request decoder",
            "request",
            bare_bytes.clone(),
        ),
        ("trailing byte", "request", with(&|b| b.push(0))),
        ("truncated key", "request", one_bytes[..50].to_vec()),
        ("option tag 2", "request", with(&|b| b[22] = 2)),
        ("ext not UTF-8", "request", bad_utf8),
        ("no mailboxes", "request", no_checks),
        ("17 mailboxes", "request", seventeen),
        ("ext over 128 bytes", "request", long_ext),
        (
            "request given to the response decoder",
            "response",
            one_bytes.clone(),
        ),
        ("unknown status 4", "response", {
            let mut b = bare_bytes.clone();
            b[23] = 4;
            b
        }),
        ("observed tag 2", "response", {
            let mut b = v4.encode();
            // header 6, nonce 16, count 1, 4 statuses, Some 1, then the tag.
            b[28] = 2;
            b
        }),
    ];
    let invalid: Vec<Value> = invalid_in
        .iter()
        .map(|(label, decoder, bytes)| {
            let error = match *decoder {
                "request" => CheckRequest::decode(bytes).map(|_| ()).unwrap_err(),
                _ => CheckResponse::decode(bytes).map(|_| ()).unwrap_err(),
            };
            json!({"name": label, "decoder": decoder, "hex": hex::encode(bytes), "error": error.code()})
        })
        .collect();
    json!({
        "description": "UDP check datagrams: \"CNID\" 0x01 type, then the postcard body. requests and responses: a value and its exact bytes. encode_within: the relay's answer to a request of request_len bytes (null: no answer). invalid: the decoder (request or response) and the expected error.",
        "limits": {
            "max_datagram_len": limits::MAX_DATAGRAM_LEN,
            "max_checks_per_datagram": limits::MAX_CHECKS_PER_DATAGRAM,
            "max_datagram_ext_len": limits::MAX_DATAGRAM_EXT_LEN,
        },
        "requests": requests,
        "responses": responses,
        "encode_within": within,
        "invalid": invalid,
    })
}

fn check_udp(v: &Value) {
    for vector in arr(v, "requests") {
        let request = udp_request_from(get(vector, "value"));
        assert_eq!(udp_request_json(&request), *get(vector, "value"));
        let bytes = hx(vector, "hex");
        assert_eq!(request.encode(), bytes, "{}", name(vector));
        assert!(bytes.len() <= limits::MAX_DATAGRAM_LEN);
        assert_eq!(CheckRequest::decode(&bytes).unwrap(), request);
    }
    for vector in arr(v, "responses") {
        let response = udp_response_from(get(vector, "value"));
        assert_eq!(udp_response_json(&response), *get(vector, "value"));
        let bytes = hx(vector, "hex");
        assert_eq!(response.encode(), bytes, "{}", name(vector));
        assert_eq!(CheckResponse::decode(&bytes).unwrap(), response);
    }
    for vector in arr(v, "encode_within") {
        let response = udp_response_from(get(vector, "response"));
        let result = response.encode_within(num(vector, "request_len") as usize);
        assert_eq!(
            result.map(hex::encode).as_deref(),
            get(vector, "hex").as_str(),
            "{}",
            name(vector)
        );
    }
    for vector in arr(v, "invalid") {
        let bytes = hx(vector, "hex");
        let error = match st(vector, "decoder") {
            "request" => CheckRequest::decode(&bytes).map(|_| ()).unwrap_err(),
            "response" => CheckResponse::decode(&bytes).map(|_| ()).unwrap_err(),
            other => panic!("unknown decoder {other}"),
        };
        assert_eq!(
            error.code(),
            st(vector, "error"),
            "{}: {error}",
            name(vector)
        );
    }
}

#[test]
fn udp() {
    run("udp.json", build_udp, check_udp);
}

// ---------------------------------------------------------------------------
// safety.json

fn build_safety() -> Value {
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

fn check_safety(v: &Value) {
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

// ---------------------------------------------------------------------------
// peer.json

/// A stand-in certificate: the fingerprint is SHA-256 of whatever DER bytes.
fn vector_certificate(label: &str) -> Vec<u8> {
    format!("connectoid test vector certificate {label}").into_bytes()
}

fn vector_fingerprint(label: &str) -> Fingerprint {
    Fingerprint::of_certificate(&vector_certificate(label))
}

fn vector_challenge(label: &str) -> [u8; peer::CHALLENGE_LEN] {
    sha2::Sha256::digest(format!("connectoid test vector challenge {label}")).into()
}

fn offer_json(offer: &QuicOffer) -> Value {
    json!({
        "session": offer.session,
        "fingerprint_hex": hex::encode(offer.fingerprint.0),
        "candidates": offer.candidates.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn build_peer() -> Value {
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

fn check_peer(v: &Value) {
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
