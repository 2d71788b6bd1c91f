//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```
//!
//! Two kinds of seeds, both deterministic, so rerunning it changes nothing
//! unless the library or the vectors changed:
//! - `lib-*`: valid encodings made with the library (links of every form,
//!   requests and responses of every action, datagrams, envelopes sealed to
//!   the fixed fuzzing recipient) and a few near misses;
//! - `vec-*`: values taken from `spec/vectors/*.json` when that directory
//!   exists: every string of a link vector file, every hex string (datagrams
//!   to `udp_datagram`, other bytes to `envelope_open`), every JWS text, and
//!   every JSON request or response body; every hex value (frames) and
//!   string (JSON messages) of `peer.json` to `peer_link`.
//!
//! Files named otherwise (such as those libFuzzer names by hash after a
//! `-merge=1`) are left alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use connectoid_protocol::api::{
    Action, ApiError, ErrorCode, Message, Operation, Request, Response,
};
use connectoid_protocol::envelope::{Envelope, Kind, LinkProof, seal_envelope};
use connectoid_protocol::fuzzing;
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::peer::{self, ChallengeMessage, Fingerprint, ProofMessage, QuicOffer};
use connectoid_protocol::udp::{
    CheckRequest, CheckResponse, CheckStatus, MailboxCheck, ObservedAddr,
};
use connectoid_protocol::{Answer, At, SecretKey, b64, limits, seal};
use serde_json::{Value, json};

/// Seeds per target, by file name.
#[derive(Default)]
struct Corpus(BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>);

impl Corpus {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0
            .entry(target)
            .or_default()
            .insert(name.into(), bytes.into());
    }
}

fn url(text: &str) -> RelayUrl {
    RelayUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 48]).expect("valid scalar")
}

fn links() -> Vec<(&'static str, Link)> {
    let key = key(7).public_key();
    let one = |u: &str| vec![RelayEntry::new(url(u))];
    let mut with_ext = RelayEntry::new(url("https://a.example/"));
    with_ext.ext = Some("api-key-a".to_owned());
    let many: Vec<RelayEntry> = (0..limits::MAX_RELAYS_PER_LINK)
        .map(|i| RelayEntry::new(url(&format!("https://relay{i}.example.org:8443/v1"))))
        .collect();
    vec![
        (
            "seed-2-parts",
            Link {
                key,
                relays: one("https://connecto.id/"),
                ext: None,
                secret: None,
            },
        ),
        (
            "seed-3-parts",
            Link {
                key,
                relays: one("https://connecto.id/"),
                ext: Some("app data".to_owned()),
                secret: None,
            },
        ),
        (
            "multi-relay-secret",
            Link {
                key,
                relays: vec![
                    with_ext.clone(),
                    RelayEntry::new(url("http://127.0.0.1:8080/")),
                ],
                ext: None,
                secret: Some(LinkSecret([9; 16])),
            },
        ),
        (
            "multi-relay-ext-secret",
            Link {
                key,
                relays: vec![RelayEntry::new(url("http://[::1]:8080/")), with_ext],
                ext: Some("{\"app\":\"chat\"}".to_owned()),
                secret: Some(LinkSecret([0xa5; 16])),
            },
        ),
        (
            "eight-relays",
            Link {
                key,
                relays: many,
                ext: None,
                secret: Some(LinkSecret([1; 16])),
            },
        ),
        (
            "unicode-ext",
            Link {
                key,
                relays: one("https://b.example/path?q=1"),
                ext: Some("ключ 🔑".to_owned()),
                secret: None,
            },
        ),
    ]
}

fn link_seeds(corpus: &mut Corpus) {
    let app = url::Url::parse("https://app.example.com/?x=1").expect("app URL");
    for (name, link) in links() {
        link.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let value = link.encode();
        corpus.add("link_decode", format!("lib-{name}"), value.clone());
        corpus.add(
            "link_decode",
            format!("lib-{name}-pair"),
            format!("connectoid={value}"),
        );
        corpus.add(
            "link_decode",
            format!("lib-{name}-app-url"),
            link.to_app_url(&app).to_string(),
        );
    }
    // Near misses: each part damaged once.
    let good = links()[2].1.encode();
    let parts: Vec<&str> = good.split('.').collect();
    corpus.add("link_decode", "lib-bad-part-count", parts[..1].join("."));
    corpus.add("link_decode", "lib-bad-pub", format!("A{}", &good[1..]));
    corpus.add(
        "link_decode",
        "lib-bad-relay",
        format!("{}.{}", parts[0], b64::encode(b"ftp://x/ https://y/|")),
    );
    corpus.add(
        "link_decode",
        "lib-bad-secret",
        format!("{}.{}..AAAA", parts[0], parts[1]),
    );
}

fn request_seeds(corpus: &mut Corpus) {
    let pk = key(7).public_key();
    let requests = [
        (
            "send",
            Operation::Send {
                data: vec![0x5a; seal::SEAL_OVERHEAD + seal::MIN_PADDED_LEN],
            },
        ),
        (
            "check",
            Operation::Check {
                at: At(1_700_000_000_000_000),
            },
        ),
        ("check-zero", Operation::Check { at: At::ZERO }),
        (
            "receive-one",
            Operation::Receive {
                answer: Answer([3; 32]),
                at: At(5),
                limit: 1,
            },
        ),
        (
            "receive-many",
            Operation::Receive {
                answer: Answer([4; 32]),
                at: At(6),
                limit: 100,
            },
        ),
        ("delete", Operation::Delete { answer: None }),
        (
            "delete-answer",
            Operation::Delete {
                answer: Some(Answer([5; 32])),
            },
        ),
    ];
    for (name, op) in requests {
        let request = Request {
            key: pk,
            ext: None,
            op: op.clone(),
        };
        corpus.add("http_request", format!("lib-{name}"), request.to_json());
        let request = Request {
            key: pk,
            ext: Some("api-key".to_owned()),
            op,
        };
        corpus.add("http_request", format!("lib-{name}-ext"), request.to_json());
    }
    // The seed's own request shape, with spaces and a null ext.
    corpus.add(
        "http_request",
        "lib-seed-shape",
        format!(r#"{{"pub": "{pk}", "ext": null, "action": "check", "at": 0}}"#),
    );
    corpus.add(
        "http_request",
        "lib-unknown-action",
        format!(r#"{{"pub":"{pk}","action":"fly"}}"#),
    );
}

fn response_seeds(corpus: &mut Corpus) {
    let message = |at: u64| Message {
        at: At(at),
        data: vec![at as u8; 8],
    };
    let responses = [
        ("done", Action::Send, Response::Done),
        ("not-found", Action::Check, Response::NotFound),
        (
            "found",
            Action::Check,
            Response::Found {
                question: vec![7; seal::SEALED_QUESTION_LEN],
            },
        ),
        ("receive-none", Action::Receive, Response::NotFound),
        ("receive-one", Action::Receive, Response::One(message(5))),
        (
            "receive-many",
            Action::Receive,
            Response::Many(vec![message(5), message(6)]),
        ),
        (
            "too-often",
            Action::Send,
            Response::Error(ErrorCode::TooOften.into()),
        ),
        (
            "missing-field",
            Action::Receive,
            Response::Error(ApiError::new(ErrorCode::MissingField, "answer")),
        ),
    ];
    for (name, action, response) in responses {
        let index = Action::ALL
            .iter()
            .position(|a| *a == action)
            .expect("listed action") as u8;
        let mut bytes = vec![index];
        bytes.extend_from_slice(response.to_json().as_bytes());
        corpus.add("http_response", format!("lib-{name}"), bytes);
    }
}

fn datagram_seeds(corpus: &mut Corpus) {
    let checks = |n: usize| -> Vec<MailboxCheck> {
        (0..n)
            .map(|i| MailboxCheck {
                key: *key(i as u8 + 1).public_key().as_bytes(),
                at: At(1_700_000_000_000_000 + i as u64),
            })
            .collect()
    };
    let requests = [
        (
            "request-1",
            CheckRequest {
                nonce: [1; 16],
                ext: None,
                checks: checks(1),
            },
        ),
        (
            "request-2-ext",
            CheckRequest {
                nonce: [2; 16],
                ext: Some("api-key".to_owned()),
                checks: checks(2),
            },
        ),
        (
            "request-16-max-ext",
            CheckRequest {
                nonce: [3; 16],
                ext: Some("e".repeat(limits::MAX_DATAGRAM_EXT_LEN)),
                checks: checks(limits::MAX_CHECKS_PER_DATAGRAM),
            },
        ),
    ];
    for (name, request) in requests {
        request.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        corpus.add("udp_datagram", format!("lib-{name}"), request.encode());
    }
    let responses = [
        (
            "response-v4",
            CheckResponse {
                nonce: [1; 16],
                statuses: vec![CheckStatus::Found],
                observed: Some(ObservedAddr::V4([192, 0, 2, 1], 40000)),
            },
        ),
        (
            "response-v6",
            CheckResponse {
                nonce: [2; 16],
                statuses: vec![CheckStatus::NotFound, CheckStatus::TooOften],
                observed: Some(ObservedAddr::V6(
                    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    443,
                )),
            },
        ),
        (
            "response-none",
            CheckResponse {
                nonce: [3; 16],
                statuses: vec![CheckStatus::Forbidden; 16],
                observed: None,
            },
        ),
    ];
    for (name, response) in responses {
        corpus.add("udp_datagram", format!("lib-{name}"), response.encode());
    }
}

fn envelope_seeds(corpus: &mut Corpus) {
    let sender = fuzzing::sender();
    let recipient = fuzzing::recipient().public_key();
    let secret = LinkSecret([0x33; 16]);
    let from = Link {
        key: sender.public_key(),
        relays: vec![
            RelayEntry::new(url("https://relay.example/")),
            RelayEntry::new(url("http://127.0.0.1:8080/")),
        ],
        ext: None,
        secret: None,
    };
    let bodies = [
        (
            "hello",
            Kind::Hello,
            json!({"sdpOffer": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}),
        ),
        (
            "offer",
            Kind::Offer,
            json!({"quic": ["192.0.2.1:4433", "[2001:db8::1]:4433"], "cert": "AAAA"}),
        ),
        (
            "answer",
            Kind::Answer,
            json!({"type": "answer", "sdp": "v=0"}),
        ),
        ("relays", Kind::Relays, Value::Null),
        ("unshare", Kind::Unshare, Value::Null),
        (
            "app",
            Kind::App,
            json!([1, -2, "three", true, null, {"n": 18446744073709551615u64}]),
        ),
        ("link-used", Kind::LinkUsed, Value::Null),
        ("large", Kind::App, json!({"blob": "x".repeat(3000)})),
    ];
    let mut rng = fuzzing::RepeatableRng::new(1);
    for (name, kind, body) in bodies {
        let envelope = Envelope {
            kind,
            to: recipient,
            from: from.clone(),
            ts: fuzzing::NOW_MS - 1000,
            proof: (kind == Kind::Hello)
                .then(|| LinkProof::compute(&secret, &recipient, &sender.public_key())),
            body,
        };
        let sealed =
            seal_envelope(&mut rng, sender, &envelope).unwrap_or_else(|e| panic!("{name}: {e}"));
        corpus.add("envelope_open", format!("lib-sealed-{name}"), sealed);
        let jws = envelope
            .sign(sender)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        corpus.add("envelope_open", format!("lib-jws-{name}"), jws);
    }
    // Sealed to the recipient but not an envelope; and a plain sealed question.
    let sealed = seal::seal_message(&mut rng, &recipient, b"not a JWS").expect("seal");
    corpus.add("envelope_open", "lib-sealed-not-jws", sealed);
    let question = seal::seal_question(&mut rng, &recipient, &[8; 32]).expect("seal");
    corpus.add("envelope_open", "lib-sealed-question", question);
}

/// Every string in a JSON tree with the name of its field, leaving out
/// fields that only describe a vector (names, error codes, descriptions).
fn walk<'a>(field: &'a str, value: &'a Value, strings: &mut Vec<(&'a str, &'a str)>) {
    const METADATA: [&str; 9] = [
        "name",
        "description",
        "code",
        "error",
        "mode",
        "purpose",
        "info",
        "kind",
        "type",
    ];
    match value {
        Value::String(s) if !METADATA.contains(&field) => strings.push((field, s)),
        Value::Array(items) => items.iter().for_each(|v| walk(field, v, strings)),
        Value::Object(map) => map.iter().for_each(|(k, v)| walk(k, v, strings)),
        _ => {}
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Peer-link seeds: frames of each message kind, several frames in a row,
/// bare JSON messages, and near misses (short, over the limit).
fn peer_seeds(corpus: &mut Corpus) {
    let (alice, bob) = (key(1), key(2));
    let (ours, theirs) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
    let challenge = ChallengeMessage { challenge: [3; 32] }.to_json();
    let rotating = ProofMessage::sign(&alice, &[4; 32], &ours, &theirs, Some(bob.public_key()));
    let rotated = ProofMessage::sign(&alice, &[4; 32], &ours, &theirs, None);
    let offer = QuicOffer::new(
        "c2Vzc2lvbi1pZC0xMjM0NQ".to_owned(),
        ours,
        vec![
            "127.0.0.1:41000".parse().expect("address"),
            "[2001:db8::7]:41000".parse().expect("address"),
        ],
    )
    .to_body()
    .to_string();
    let frame = |bytes: &[u8]| peer::encode_frame(bytes).expect("small frame");
    let messages = [
        ("challenge", challenge.clone()),
        ("proof-rotating", rotating.to_json()),
        ("proof-rotated", rotated.to_json()),
        ("offer", offer.clone()),
    ];
    for (name, message) in &messages {
        corpus.add("peer_link", format!("lib-frame-{name}"), frame(message.as_bytes()));
        corpus.add("peer_link", format!("lib-json-{name}"), message.as_bytes());
    }
    let mut conversation = frame(challenge.as_bytes());
    conversation.extend(frame(rotating.to_json().as_bytes()));
    conversation.extend(frame(b""));
    corpus.add("peer_link", "lib-conversation", conversation);
    let mut short = frame(offer.as_bytes());
    short.pop();
    corpus.add("peer_link", "lib-short-frame", short);
    let over = u32::try_from(peer::MAX_FRAME_LEN + 1).expect("fits");
    corpus.add("peer_link", "lib-over-limit", over.to_be_bytes());
}

/// Seeds from the spec's vectors: every string of a link vector file; hex
/// datagrams (they start with `CNID`); sealed values (fields named
/// `sealed*`, hex or base64url) and JWS texts; JSON request and response
/// bodies (a response once per action).
fn vector_seeds(corpus: &mut Corpus, dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut count = 0;
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("vectors")
            .to_owned();
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let tree: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut strings = Vec::new();
        walk("", &tree, &mut strings);
        let mut seen = std::collections::BTreeSet::new();
        let mut add = |target: &'static str, bytes: Vec<u8>| {
            if seen.insert((target, bytes.clone())) {
                let n = seen.len();
                corpus.add(target, format!("vec-{stem}-{n:04}"), bytes);
                count += 1;
            }
        };
        for (field, s) in strings {
            if stem.contains("link") {
                add("link_decode", s.as_bytes().to_vec());
            }
            let bytes = hex(s).or_else(|| {
                field
                    .contains("sealed")
                    .then(|| b64::decode(s).ok())
                    .flatten()
            });
            if stem == "peer" {
                let bytes = bytes.unwrap_or_else(|| s.as_bytes().to_vec());
                add("peer_link", bytes);
            } else if let Some(bytes) = bytes {
                if bytes.starts_with(b"CNID") {
                    add("udp_datagram", bytes);
                } else if field.contains("sealed") {
                    add("envelope_open", bytes);
                }
            } else if s.starts_with("eyJ") && s.split('.').count() == 3 {
                add("envelope_open", s.as_bytes().to_vec());
            } else if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(s) {
                if object.contains_key("action") || object.contains_key("pub") {
                    add("http_request", s.as_bytes().to_vec());
                } else if object.contains_key("ok") {
                    for index in 0..Action::ALL.len() as u8 {
                        let mut bytes = vec![index];
                        bytes.extend_from_slice(s.as_bytes());
                        add("http_response", bytes);
                    }
                }
            }
        }
    }
    count
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = Corpus::default();
    link_seeds(&mut corpus);
    request_seeds(&mut corpus);
    response_seeds(&mut corpus);
    datagram_seeds(&mut corpus);
    envelope_seeds(&mut corpus);
    peer_seeds(&mut corpus);
    let vectors = root.join("../spec/vectors");
    let from_vectors = vector_seeds(&mut corpus, &vectors);
    if from_vectors == 0 {
        eprintln!(
            "note: no seeds from {} (missing or empty)",
            vectors.display()
        );
    }
    for (target, seeds) in &corpus.0 {
        let dir = root.join("corpus").join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        for entry in fs::read_dir(&dir).expect("read corpus directory").flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("lib-") || name.starts_with("vec-") {
                fs::remove_file(entry.path()).expect("remove old seed");
            }
        }
        for (name, bytes) in seeds {
            fs::write(dir.join(name), bytes).expect("write seed");
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
}
