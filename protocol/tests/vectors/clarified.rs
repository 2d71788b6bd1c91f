//! Checks `spec/vectors/clarified.json` byte for byte against the library:
//! the cases that a second implementation written from `spec/` alone had to
//! guess (issue 12) and that `spec/protocol.md` now settles.
//!
//! - app URLs (§4.3, §4.6): no query, a fragment, an existing `connectoid`
//!   parameter, a URL without `//` such as `myapp:open`;
//! - relay URL normalization (§4.5) of non-ASCII hosts (IDNA UTS #46,
//!   non-transitional: `faß` is `xn--fa-hia`) and paths, and the answers
//!   bound to such URLs (§7.6);
//! - lengths in bytes, not characters (§4.6, §4.8);
//! - envelopes whose `to` is not a key (§6.2: `Payload`) and the JSON nesting
//!   limit (§6.2).
//!
//! As for the other files, `CONNECTOID_WRITE_VECTORS=1 cargo test -p
//! connectoid-protocol --test vectors` (re)writes the file; without
//! the variable it is only read and compared with what the generator makes.
//! The existing vector files are not touched by this module.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed vector

use std::convert::Infallible;
use std::path::PathBuf;

use connectoid_protocol::api::Answer;
use connectoid_protocol::envelope::{self, EnvelopeError, JWS_HEADER};
use connectoid_protocol::keys::SecretKey;
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::rand_core::{TryCryptoRng, TryRng};
use connectoid_protocol::seal::{self, OpenError, Purpose};
use connectoid_protocol::{b64, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

const FILE: &str = "clarified.json";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../spec/vectors")
        .join(FILE)
}

/// Yields exactly the bytes it was given, then panics.
struct VectorRng {
    bytes: Vec<u8>,
    used: usize,
}

impl TryRng for VectorRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert!(self.used + dst.len() <= self.bytes.len(), "RNG exhausted");
        dst.copy_from_slice(&self.bytes[self.used..self.used + dst.len()]);
        self.used += dst.len();
        Ok(())
    }
}

impl TryCryptoRng for VectorRng {}

/// The same fixed keys as `vectors.rs`: SHA-384 of a label.
fn vector_key(label: &str) -> SecretKey {
    let digest = sha2::Sha384::digest(format!("connectoid test vector key {label}"));
    SecretKey::from_bytes(&digest).unwrap()
}

fn vector_ikm(label: &str) -> Vec<u8> {
    sha2::Sha384::digest(format!("connectoid test vector ikm {label}")).to_vec()
}

fn st<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap()
}

fn link_json(link: &Link) -> Value {
    json!({
        "pub": link.key.to_string(),
        "relays": link.relays.iter().map(|r| json!({"url": r.url.as_str(), "ext": r.ext})).collect::<Vec<_>>(),
        "ext": link.ext,
        "secret_hex": link.secret.as_ref().map(|s| hex::encode(s.0)),
    })
}

fn decode(mode: &str, input: &str) -> Result<Link, connectoid_protocol::LinkError> {
    match mode {
        "link" => Link::decode(input),
        "reply" => Link::decode_reply(input),
        other => panic!("unknown mode {other}"),
    }
}

fn the_link() -> Link {
    Link {
        key: vector_key("alice").public_key(),
        relays: vec![RelayEntry::new(
            RelayUrl::parse("https://connecto.id/").unwrap(),
        )],
        ext: None,
        secret: Some(LinkSecret(
            sha2::Sha256::digest(b"connectoid test vector link secret")[..16]
                .try_into()
                .unwrap(),
        )),
    }
}

// ---------------------------------------------------------------------------
// Generator

fn build_app_urls() -> Vec<Value> {
    let link = the_link();
    [
        ("no query", "https://app.example.com/open"),
        ("no path, no query", "https://app.example.com"),
        (
            "fragment after the query",
            "https://app.example.com/open?list=7#items",
        ),
        (
            "fragment without a query",
            "https://app.example.com/#/lists/7",
        ),
        (
            "an earlier connectoid parameter is replaced",
            "https://app.example.com/open?connectoid=OLD&list=7",
        ),
        (
            "a percent-encoded connectoid name is replaced too",
            "https://app.example.com/open?connect%6Fid=OLD&list=7&connectoid",
        ),
        (
            "other pieces are kept byte for byte",
            "https://app.example.com/open?q=a%20b+c&x=%7E&flag",
        ),
        (
            "empty pieces are dropped",
            "https://app.example.com/open?&a=1&&",
        ),
        ("a URL without //", "myapp:open"),
        ("a custom scheme with //", "myapp://open?list=7#top"),
        (
            "the app URL is normalized first",
            "HTTPS://App.Example.COM:443/ö?ä=1",
        ),
    ]
    .into_iter()
    .map(|(name, app_url)| {
        let parsed = url::Url::parse(app_url).unwrap();
        json!({
            "name": name,
            "app_url": app_url,
            "link": link.encode(),
            "result": link.to_app_url(&parsed).as_str(),
        })
    })
    .collect()
}

fn build_relay_urls() -> Vec<Value> {
    [
        (
            "German sharp s: UTS #46 non-transitional keeps it",
            "https://faß.example/",
        ),
        ("a lone sharp s label", "https://ß.example/"),
        (
            "upper-case non-ASCII host, non-ASCII path and query",
            "https://BÜCHER.example/Pfad/é?q=ü",
        ),
        (
            "full-width letters fold to ASCII",
            "https://ｆｕｌｌ.example/",
        ),
        ("a circled letter maps to a", "https://Ⓐ.example/"),
        ("an emoji host", "https://💩.example/"),
        ("already punycode", "https://xn--fa-hia.example/x"),
        ("upper case and the default port", "HTTPS://Connecto.ID:443"),
        ("IPv6 with the default port", "https://[::1]:443/"),
        ("hexadecimal IPv4", "https://0x7f.1/"),
        ("a percent-encoded host", "http://%41.example/"),
        ("a trailing dot stays", "https://example.com./"),
        (
            "a space in the path is rejected before parsing",
            "https://a.example/a b",
        ),
        ("invalid punycode", "https://xn--a.example/"),
        (
            "a zero-width joiner in a host",
            "https://a\u{200d}b.example/",
        ),
        (
            "a non-ASCII query is percent-encoded",
            "https://relay.example/?k=ключ",
        ),
    ]
    .into_iter()
    .map(|(name, input)| {
        let result = RelayUrl::parse(input);
        json!({
            "name": name,
            "input": input,
            "normalized": result.ok().map(|u| u.as_str().to_owned()),
        })
    })
    .collect()
}

fn build_links() -> (Vec<Value>, Vec<Value>) {
    let link = the_link();
    let value = link.encode();
    let alice = vector_key("alice").public_key();
    let mut valid = Vec::new();
    let mut push_valid = |name: &str, mode: &str, input: String| {
        let decoded = decode(mode, &input).unwrap_or_else(|e| panic!("{name}: {e}"));
        valid.push(json!({
            "name": name,
            "mode": mode,
            "input": input,
            "link": link_json(&decoded),
            "encoded": decoded.encode(),
        }));
    };
    push_valid(
        "an app URL without //",
        "link",
        format!("myapp:open?connectoid={value}"),
    );
    push_valid(
        "an app URL with a fragment",
        "link",
        format!("https://app.example.com/?connectoid={value}#/lists/7"),
    );
    push_valid(
        "the first connectoid parameter wins",
        "link",
        format!("https://app.example.com/?connectoid={value}&connectoid=x.y"),
    );
    let idn = format!(
        "{alice}.{}",
        b64::encode("https://faß.example/ https://BÜCHER.example/Pfad/é".as_bytes())
    );
    push_valid("non-ASCII relay URLs are normalized", "reply", idn);

    let mut invalid = Vec::new();
    let mut push_invalid = |name: &str, mode: &str, input: String| {
        let code = decode(mode, &input).expect_err(name).code();
        invalid.push(json!({"name": name, "mode": mode, "input": input, "code": code}));
    };
    let max_app = limits::MAX_LINK_LEN + limits::MAX_APP_URL_OVERHEAD;
    let prefix = "https://app.example.com/?x=";
    let suffix = format!("&connectoid={value}");
    // Two-byte characters: fewer than 4096 characters, more than 4096 bytes.
    let fill = "é".repeat((max_app - prefix.len() - suffix.len()) / 2 + 1);
    let long_app = format!("{prefix}{fill}{suffix}");
    assert!(long_app.chars().count() <= max_app && long_app.len() > max_app);
    push_invalid(
        "an app URL over 4096 bytes but not 4096 characters",
        "link",
        long_app,
    );
    push_invalid(
        "an app URL without // and without the parameter",
        "link",
        "myapp:open?list=7".to_owned(),
    );
    let relay_path = "é".repeat((limits::MAX_RELAY_URL_LEN - "https://a.example/".len()) / 2 + 1);
    let long_relay = format!("https://a.example/{relay_path}");
    assert!(
        long_relay.chars().count() <= limits::MAX_RELAY_URL_LEN
            && long_relay.len() > limits::MAX_RELAY_URL_LEN
    );
    push_invalid(
        "a relay URL over 256 bytes but not 256 characters",
        "reply",
        format!("{alice}.{}", b64::encode(long_relay.as_bytes())),
    );
    let grows = format!("https://a.example/{}", "é".repeat(40));
    assert!(grows.len() <= limits::MAX_RELAY_URL_LEN);
    push_invalid(
        "a relay URL that percent-encodes past 256 bytes",
        "reply",
        format!("{alice}.{}", b64::encode(grows.as_bytes())),
    );
    push_invalid(
        "a relay host that is not valid IDNA",
        "reply",
        format!("{alice}.{}", b64::encode(b"https://xn--a.example/")),
    );
    push_invalid(
        "two relays that are one after IDNA",
        "reply",
        format!(
            "{alice}.{}",
            b64::encode("https://faß.example/ https://xn--fa-hia.example".as_bytes())
        ),
    );
    (valid, invalid)
}

fn build_answers() -> Vec<Value> {
    [
        "https://faß.example/connectoid/",
        "HTTPS://BÜCHER.example:443",
    ]
    .into_iter()
    .map(|input| {
        let relay = RelayUrl::parse(input).unwrap();
        let secret: [u8; 32] = sha2::Sha256::digest(format!("question secret {input}")).into();
        json!({
            "relay_url_input": input,
            "relay_url": relay.as_str(),
            "secret_hex": hex::encode(secret),
            "answer_b64": b64::encode(&Answer::for_relay(&secret, &relay).0),
        })
    })
    .collect()
}

fn open_error_name(e: &OpenError) -> &'static str {
    match e {
        OpenError::TooShort { .. } => "TooShort",
        OpenError::BadEncappedKey => "BadEncappedKey",
        OpenError::Decrypt => "Decrypt",
        OpenError::Padding => "Padding",
        other => panic!("unnamed open error {other:?}"),
    }
}

fn envelope_error_name(e: &EnvelopeError) -> String {
    match e {
        EnvelopeError::Open(inner) => format!("Open::{}", open_error_name(inner)),
        EnvelopeError::Jws(_) => "Jws".into(),
        EnvelopeError::Header(_) => "Header".into(),
        EnvelopeError::Payload(_) => "Payload".into(),
        EnvelopeError::Version(_) => "Version".into(),
        EnvelopeError::UnknownKind(_) => "UnknownKind".into(),
        EnvelopeError::From(_) => "From".into(),
        EnvelopeError::BadSignature => "BadSignature".into(),
        EnvelopeError::WrongRecipient => "WrongRecipient".into(),
        other => panic!("unexpected envelope error {other:?}"),
    }
}

const TS: u64 = 1_700_000_000_000;

/// An envelope vector in the shape of `envelopes.json`'s `rejected`, with
/// `error` null when the envelope opens.
fn envelope_vector(label: &str, payload: &str) -> Value {
    let sender = vector_key("bob");
    let recipient = vector_key("alice");
    let input = format!(
        "{}.{}",
        b64::encode(JWS_HEADER.as_bytes()),
        b64::encode(payload.as_bytes())
    );
    let jws = format!("{input}.{}", b64::encode(&sender.sign(input.as_bytes())));
    let padded = seal::pad(jws.as_bytes()).unwrap();
    let ikm = vector_ikm(label);
    let mut rng = VectorRng {
        bytes: ikm.clone(),
        used: 0,
    };
    let sealed = seal::seal(&mut rng, &recipient.public_key(), Purpose::Message, &padded).unwrap();
    let now_ms = TS + 1000;
    let error = envelope::open_envelope(&recipient, &sealed, now_ms)
        .err()
        .map(|e| envelope_error_name(&e));
    json!({
        "name": label,
        "recipient_secret_hex": hex::encode(recipient.to_bytes()),
        "sealed_to_b64": recipient.public_key().to_string(),
        "purpose": "message",
        "jws": jws,
        "padded_hex": hex::encode(&padded),
        "ikm_e_hex": hex::encode(&ikm),
        "sealed_hex": hex::encode(&sealed),
        "now_ms": now_ms,
        "link_secret_hex": null,
        "error": error,
    })
}

/// A payload whose nesting depth is `depth`: the payload object is level 1,
/// and `body` holds `depth - 1` nested arrays.
fn nested_payload(to: &str, from: &str, depth: usize) -> String {
    let inner = depth - 1;
    format!(
        r#"{{"v":1,"kind":"app","to":"{to}","from":"{from}","ts":{TS},"body":{}{}}}"#,
        "[".repeat(inner),
        "]".repeat(inner)
    )
}

fn build_envelopes() -> Vec<Value> {
    let alice = vector_key("alice").public_key().to_string();
    let bob = vector_key("bob").public_key();
    let from = Link {
        key: bob,
        relays: vec![RelayEntry::new(
            RelayUrl::parse("https://relay-b.example/").unwrap(),
        )],
        ext: None,
        secret: None,
    }
    .encode();
    let payload = |to: &str| {
        format!(r#"{{"v":1,"kind":"app","to":"{to}","from":"{from}","ts":{TS},"body":null}}"#)
    };
    // 66 characters of canonical base64url that are not a point (prefix 0x04).
    let not_compressed = b64::encode(&[4u8; 49]);
    vec![
        envelope_vector("to is not a key", &payload("not a key")),
        envelope_vector("to is an empty string", &payload("")),
        envelope_vector(
            "to is 66 characters but not a compressed point",
            &payload(&not_compressed),
        ),
        envelope_vector("to is a number", &payload("1").replace("\"1\"", "1")),
        envelope_vector(
            "payload nested 127 deep",
            &nested_payload(&alice, &from, 127),
        ),
        envelope_vector(
            "payload nested 128 deep",
            &nested_payload(&alice, &from, 128),
        ),
        envelope_vector(
            "payload nested 129 deep",
            &nested_payload(&alice, &from, 129),
        ),
    ]
}

fn build() -> Value {
    let (links_valid, links_invalid) = build_links();
    json!({
        "description": "Cases settled by issue 12 (spec/protocol.md §4.3, §4.5, §4.6, §6.2, §7.6). app_urls: the link put into app_url gives result, which decodes back to the link. relay_urls: input -> normalized relay URL, or null when rejected (bad-relay). links_valid / links_invalid: as in links.json. answers: the answer for a question secret sent to relay_url (the normalized form of relay_url_input). envelopes: as rejected in envelopes.json; error null means the envelope opens.",
        "app_urls": build_app_urls(),
        "relay_urls": build_relay_urls(),
        "links_valid": links_valid,
        "links_invalid": links_invalid,
        "answers": build_answers(),
        "envelopes": build_envelopes(),
    })
}

// ---------------------------------------------------------------------------
// Checker: what an implementation in another language does with the file.

fn check(v: &Value) {
    for c in arr(v, "app_urls") {
        let link = Link::decode(st(c, "link")).unwrap();
        let app = url::Url::parse(st(c, "app_url")).unwrap();
        let result = link.to_app_url(&app);
        assert_eq!(result.as_str(), st(c, "result"), "{}", st(c, "name"));
        assert_eq!(Link::decode(result.as_str()).unwrap(), link);
        assert_eq!(result.as_str().matches("connectoid=").count(), 1);
    }
    for c in arr(v, "relay_urls") {
        let got = RelayUrl::parse(st(c, "input")).ok();
        assert_eq!(
            got.as_ref().map(RelayUrl::as_str),
            c["normalized"].as_str(),
            "{}",
            st(c, "name")
        );
    }
    for c in arr(v, "links_valid") {
        let link = decode(st(c, "mode"), st(c, "input")).unwrap();
        assert_eq!(link_json(&link), c["link"], "{}", st(c, "name"));
        assert_eq!(link.encode(), st(c, "encoded"));
    }
    for c in arr(v, "links_invalid") {
        let err = decode(st(c, "mode"), st(c, "input")).unwrap_err();
        assert_eq!(err.code(), st(c, "code"), "{}", st(c, "name"));
    }
    for c in arr(v, "answers") {
        let relay = RelayUrl::parse(st(c, "relay_url_input")).unwrap();
        assert_eq!(relay.as_str(), st(c, "relay_url"));
        let secret: [u8; 32] = hex::decode(st(c, "secret_hex"))
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            b64::encode(&Answer::for_relay(&secret, &relay).0),
            st(c, "answer_b64")
        );
    }
    for c in arr(v, "envelopes") {
        let recipient =
            SecretKey::from_bytes(&hex::decode(st(c, "recipient_secret_hex")).unwrap()).unwrap();
        let sealed = hex::decode(st(c, "sealed_hex")).unwrap();
        let got = envelope::open_envelope(&recipient, &sealed, c["now_ms"].as_u64().unwrap())
            .err()
            .map(|e| envelope_error_name(&e));
        assert_eq!(got.as_deref(), c["error"].as_str(), "{}", st(c, "name"));
    }
}

#[test]
fn clarified() {
    let built = build();
    if std::env::var("CONNECTOID_WRITE_VECTORS").as_deref() == Ok("1") {
        let mut text = serde_json::to_string_pretty(&built).unwrap();
        text.push('\n');
        std::fs::write(path(), text).unwrap();
    }
    let text = std::fs::read_to_string(path())
        .unwrap_or_else(|e| panic!("{FILE}: {e}; CONNECTOID_WRITE_VECTORS=1 writes it"));
    let stored: Value = serde_json::from_str(&text).unwrap();
    check(&stored);
    assert!(
        stored == built,
        "{FILE} is not what the generator makes; rerun with CONNECTOID_WRITE_VECTORS=1 and review the diff"
    );
}
