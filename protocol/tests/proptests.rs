//! Property tests for every encoded type of the protocol crate.
//!
//! For each wire type: `decode(encode(x)) == x`, the encoded length stays
//! within its documented bound, and arbitrary input never panics a decoder
//! (it returns an error instead). Crypto-heavy properties (P-384 costs about
//! a millisecond per operation in release and much more in debug) run fewer
//! cases; keys come from a small pool made once.
//!
//! Failures are persisted in `protocol/proptest-regressions/proptests.txt`,
//! which is committed so every later run replays them first.
//!
//! This file does not check the spec's byte-exact vectors (`tests/vectors/`
//! does) and does no I/O besides proptest's regression file.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

use connectoid_protocol::api::{
    Action, ApiError, ErrorCode, Message, Operation, Request, Response,
};
use connectoid_protocol::b64;
use connectoid_protocol::envelope::{Envelope, Kind, LinkProof, open_envelope, seal_envelope};
use connectoid_protocol::keys::{PUBLIC_KEY_LEN, PUBLIC_KEY_TEXT_LEN, PublicKey, SecretKey};
use connectoid_protocol::link::{Link, LinkError, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::safety::{SAFETY_CODE_LEN, SYMBOLS, SafetyCode};
use connectoid_protocol::seal::{
    self, MAX_PADDED_LEN, MAX_PLAINTEXT_LEN, MIN_PADDED_LEN, OpenError, SEAL_OVERHEAD,
};
use connectoid_protocol::udp::{
    CheckRequest, CheckResponse, CheckStatus, DatagramError, MailboxCheck, NONCE_LEN, ObservedAddr,
};
use connectoid_protocol::{At, limits};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use subtle::ConstantTimeEq as _;

// ---------------------------------------------------------------------------
// Test support: a deterministic RNG, a key pool, configurations.
// ---------------------------------------------------------------------------

/// The deterministic RNG for sealing and key generation in tests.
type TestRng = connectoid_protocol::fuzzing::RepeatableRng;

/// Key pairs made once: generating a P-384 key costs a scalar multiplication.
static KEYS: LazyLock<Vec<(SecretKey, PublicKey)>> = LazyLock::new(|| {
    (1..=8u64)
        .map(|seed| {
            let secret = SecretKey::generate(&mut TestRng::new(seed));
            let public = secret.public_key();
            (secret, public)
        })
        .collect()
});

fn pool_index() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

fn pool_secret(index: usize) -> &'static SecretKey {
    &KEYS[index].0
}

fn pool_public(index: usize) -> PublicKey {
    KEYS[index].1
}

/// Where proptest stores failing cases: `protocol/proptest-regressions/`
/// (cargo and nextest run integration tests from the package directory).
fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    Some(Box::new(FileFailurePersistence::Direct(
        "proptest-regressions/proptests.txt",
    )))
}

/// Cheap properties: proptest's default number of cases.
fn cheap() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: persistence(),
        ..ProptestConfig::default()
    }
}

/// Properties that do P-384 operations: few cases, unless `PROPTEST_CASES`
/// asks for a number (as it does for the cheap ones).
fn crypto(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        failure_persistence: persistence(),
        ..ProptestConfig::with_cases(cases)
    }
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

/// Texts of valid relay URLs: http(s), a DNS name (mixed case), IPv4 or IPv6
/// host, optional port, path and query. They normalize when parsed.
fn relay_url_text() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![Just("http"), Just("https")];
    let host = prop_oneof![
        3 => prop::collection::vec("[a-zA-Z][a-zA-Z0-9]{0,8}", 1..4).prop_map(|l| l.join(".")),
        1 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        1 => any::<[u8; 16]>().prop_map(|o| format!("[{}]", Ipv6Addr::from(o))),
    ];
    let port = prop::option::of(any::<u16>());
    let path = prop::collection::vec("[a-zA-Z0-9_~-]{1,10}", 0..4);
    let query = prop::option::of("[a-z0-9]{1,8}=[a-zA-Z0-9]{0,8}");
    (scheme, host, port, path, query).prop_map(|(scheme, host, port, path, query)| {
        let mut text = format!("{scheme}://{host}");
        if let Some(port) = port {
            text.push_str(&format!(":{port}"));
        }
        text.push('/');
        text.push_str(&path.join("/"));
        if let Some(query) = query {
            text.push('?');
            text.push_str(&query);
        }
        text
    })
}

fn relay_url() -> impl Strategy<Value = RelayUrl> {
    relay_url_text().prop_map(|text| {
        RelayUrl::parse(&text).unwrap_or_else(|e| panic!("generated {text:?} is invalid: {e}"))
    })
}

/// App data: non-empty text of any Unicode, sometimes exactly the maximum.
fn ext() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ".{1,40}",
        1 => Just("k".repeat(limits::MAX_EXT_LEN)),
    ]
}

/// App data for links, sometimes empty, which `Link::validate` rejects: an
/// empty part decodes as "no ext", so `Some("")` could not round-trip.
fn link_ext() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => ext(),
        1 => Just(String::new()),
    ]
}

/// 1 to 8 relays with distinct URLs, some with per-relay app data.
fn relays() -> impl Strategy<Value = Vec<RelayEntry>> {
    relays_with(ext())
}

fn relays_with(ext: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<RelayEntry>> {
    prop::collection::vec(
        (relay_url(), prop::option::of(ext)),
        1..=limits::MAX_RELAYS_PER_LINK,
    )
    .prop_map(|entries| {
        let mut relays: Vec<RelayEntry> = Vec::new();
        for (url, ext) in entries {
            if !relays.iter().any(|r| r.url == url) {
                relays.push(RelayEntry { url, ext });
            }
        }
        relays
    })
}

/// A link: a key from the pool, relays, app data and maybe a secret.
fn link() -> impl Strategy<Value = Link> {
    (
        pool_index(),
        relays_with(link_ext()),
        prop::option::of(link_ext()),
        prop::option::of(any::<[u8; 16]>()),
    )
        .prop_map(|(key, relays, ext, secret)| Link {
            key: pool_public(key),
            relays,
            ext,
            secret: secret.map(LinkSecret),
        })
}

/// Any JSON value: the body of an envelope is whatever the app sends.
///
/// Numbers are integers: serde_json without its `float_roundtrip` feature
/// may parse a float one ULP off what it printed.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..6)
                .prop_map(|map: BTreeMap<String, Value>| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![
        Kind::Hello,
        Kind::Offer,
        Kind::Answer,
        Kind::Relays,
        Kind::Unshare,
        Kind::App,
        Kind::LinkUsed,
    ])
}

/// An envelope from pool key `sender` to pool key `recipient`.
fn envelope() -> impl Strategy<Value = (usize, Envelope)> {
    (
        pool_index(),
        pool_index(),
        kind(),
        relays(),
        prop::option::of(ext()),
        0u64..=4_000_000_000_000,
        prop::option::of(any::<[u8; 32]>()),
        json(),
    )
        .prop_map(|(sender, recipient, kind, relays, ext, ts, proof, body)| {
            let envelope = Envelope {
                kind,
                to: pool_public(recipient),
                from: Link {
                    key: pool_public(sender),
                    relays,
                    ext,
                    secret: None,
                },
                ts,
                proof: proof.map(LinkProof),
                body,
            };
            (sender, envelope)
        })
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        Just(At::ZERO),
        any::<u64>().prop_map(At),
        (1_600_000_000_000_000u64..2_000_000_000_000_000).prop_map(At),
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), SEAL_OVERHEAD..SEAL_OVERHEAD + 2048)
            .prop_map(|data| Operation::Send { data }),
        at().prop_map(|at| Operation::Check { at }),
        (any::<[u8; 32]>(), at(), 1..=limits::MAX_RECEIVE_LIMIT).prop_map(|(answer, at, limit)| {
            Operation::Receive {
                answer: connectoid_protocol::Answer(answer),
                at,
                limit,
            }
        }),
        prop::option::of(any::<[u8; 32]>()).prop_map(|answer| Operation::Delete {
            answer: answer.map(connectoid_protocol::Answer),
        }),
    ]
}

fn request_ext() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        ".{0,40}",
        Just("x".repeat(limits::MAX_EXT_LEN)),
    ])
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (pool_index(), request_ext(), operation()).prop_map(|(key, ext, op)| Request {
            key: pool_public(key),
            ext,
            op,
        }),
        held_check(),
    ]
}

/// A held check: distinct mailboxes of the pool (up to 16, or as many as
/// the pool has), cursors, and a wait (0 only with other mailboxes, else
/// it decodes as a plain check).
fn held_check() -> impl Strategy<Value = Request> {
    let most = KEYS.len().min(limits::MAX_MAILBOXES_PER_HELD_CHECK);
    (
        Just((0..KEYS.len()).collect::<Vec<usize>>()).prop_shuffle(),
        1..=most,
        prop::collection::vec(at(), most),
        any::<u64>(),
        request_ext(),
    )
        .prop_map(|(order, count, ats, wait, ext)| {
            let also: Vec<connectoid_protocol::MailboxCursor> = order[1..count]
                .iter()
                .zip(&ats[1..])
                .map(|(&i, &at)| connectoid_protocol::MailboxCursor {
                    key: pool_public(i),
                    at,
                })
                .collect();
            let wait_seconds = if also.is_empty() { wait.max(1) } else { wait };
            Request {
                key: pool_public(order[0]),
                ext,
                op: Operation::HeldCheck {
                    at: ats[0],
                    also,
                    wait_seconds,
                },
            }
        })
}

fn message() -> impl Strategy<Value = Message> {
    (at(), prop::collection::vec(any::<u8>(), 0..512)).prop_map(|(at, data)| Message { at, data })
}

fn api_error() -> impl Strategy<Value = ApiError> {
    (
        prop::sample::select(ErrorCode::ALL.to_vec()),
        prop::option::of(".{0,40}"),
    )
        .prop_map(|(code, detail)| ApiError { code, detail })
}

/// A response together with the action of the request it answers.
fn response() -> impl Strategy<Value = (Action, Response)> {
    let action = prop::sample::select(Action::ALL.to_vec());
    prop_oneof![
        prop::sample::select(vec![Action::Send, Action::Delete]).prop_map(|a| (a, Response::Done)),
        prop::sample::select(vec![Action::Check, Action::Receive])
            .prop_map(|a| (a, Response::NotFound)),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|question| (Action::Check, Response::Found { question })),
        (pool_index(), prop::collection::vec(any::<u8>(), 145)).prop_map(|(key, question)| (
            Action::Check,
            Response::FoundMany(vec![connectoid_protocol::FoundQuestion {
                key: pool_public(key),
                question,
            }])
        )),
        message().prop_map(|m| (Action::Receive, Response::One(m))),
        prop::collection::vec(message(), 0..8).prop_map(|m| (Action::Receive, Response::Many(m))),
        (action, api_error()).prop_map(|(a, e)| (a, Response::Error(e))),
    ]
}

fn mailbox_check() -> impl Strategy<Value = MailboxCheck> {
    (any::<[u8; PUBLIC_KEY_LEN]>(), any::<u64>())
        .prop_map(|(key, at)| MailboxCheck { key, at: At(at) })
}

/// `ext` of a datagram: up to [`limits::MAX_DATAGRAM_EXT_LEN`] bytes.
fn datagram_ext() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        ".{0,32}",
        "[ -~]{0,128}",
        Just("e".repeat(limits::MAX_DATAGRAM_EXT_LEN)),
    ])
}

/// A valid check request: 1 to 16 mailboxes, a short enough ext.
fn check_request() -> impl Strategy<Value = CheckRequest> {
    (
        any::<[u8; NONCE_LEN]>(),
        datagram_ext(),
        prop::collection::vec(mailbox_check(), 1..=limits::MAX_CHECKS_PER_DATAGRAM),
    )
        .prop_map(|(nonce, ext, checks)| CheckRequest { nonce, ext, checks })
}

fn check_status() -> impl Strategy<Value = CheckStatus> {
    prop::sample::select(vec![
        CheckStatus::NotFound,
        CheckStatus::Found,
        CheckStatus::TooOften,
        CheckStatus::Forbidden,
    ])
}

fn observed_addr() -> impl Strategy<Value = ObservedAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| ObservedAddr::V4(ip, port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| ObservedAddr::V6(ip, port)),
    ]
}

/// A check request and a response with one status per check.
fn check_exchange() -> impl Strategy<Value = (CheckRequest, CheckResponse)> {
    check_request().prop_flat_map(|request| {
        let n = request.checks.len();
        (
            prop::collection::vec(check_status(), n),
            prop::option::of(observed_addr()),
        )
            .prop_map(move |(statuses, observed)| {
                let response = CheckResponse {
                    nonce: request.nonce,
                    statuses,
                    observed,
                };
                (request.clone(), response)
            })
    })
}

/// Arbitrary text, mostly short, sometimes long enough to hit length limits.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[A-Za-z0-9_=.|: /?&%-]{0,200}",
        1 => ".{0,5000}",
    ]
}

/// Replaces or inserts characters of `text` at the given positions.
fn mutate(text: &str, edits: &[(usize, char, bool)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(position, c, insert) in edits {
        let position = position % (chars.len() + 1);
        if insert || position == chars.len() {
            chars.insert(position, c);
        } else {
            chars[position] = c;
        }
    }
    chars.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(usize, char, bool)>> {
    let c = prop_oneof![
        4 => prop::sample::select(
            "ABCXYZabcxyz0189-_.=|+/% ".chars().collect::<Vec<_>>()
        ),
        1 => any::<char>(),
    ];
    prop::collection::vec((any::<usize>(), c, any::<bool>()), 1..4)
}

// ---------------------------------------------------------------------------
// Keys.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(crypto(48))]

    #[test]
    fn public_key_text_and_bytes_round_trip(seed in any::<u64>()) {
        let secret = SecretKey::generate(&mut TestRng::new(seed));
        let public = secret.public_key();
        let text = public.to_string();
        prop_assert_eq!(text.len(), PUBLIC_KEY_TEXT_LEN);
        prop_assert_eq!(&text, &b64::encode(public.as_bytes()));
        prop_assert_eq!(text.parse::<PublicKey>(), Ok(public));
        prop_assert_eq!(PublicKey::from_bytes(public.as_bytes()), Ok(public));
        prop_assert_eq!(SecretKey::from_bytes(&secret.to_bytes()), Ok(secret));
    }

    /// A compressed-looking point either parses (and then re-encodes to the
    /// same bytes) or is rejected as not on the curve.
    #[test]
    fn public_key_compressed_candidates(
        tag in prop::sample::select(vec![0x02u8, 0x03]),
        x in any::<[u8; 48]>(),
    ) {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes[0] = tag;
        bytes[1..].copy_from_slice(&x);
        match PublicKey::from_bytes(&bytes) {
            Ok(key) => {
                prop_assert_eq!(key.as_bytes(), &bytes);
                prop_assert_eq!(key.to_string().parse::<PublicKey>(), Ok(key));
            }
            Err(e) => prop_assert_eq!(e, connectoid_protocol::KeyError::NotOnCurve),
        }
    }
}

proptest! {
    #![proptest_config(cheap())]

    #[test]
    fn public_key_from_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(key) = PublicKey::from_bytes(&bytes) {
            prop_assert_eq!(key.as_bytes().as_slice(), bytes.as_slice());
        }
    }

    #[test]
    fn public_key_from_str_never_panics(
        text in prop_oneof![any_text(), "[A-Za-z0-9_-]{66}", "[AB][A-Za-z0-9_-]{65}"],
    ) {
        if let Ok(key) = text.parse::<PublicKey>() {
            // Parsing is strict: only the canonical text is accepted.
            prop_assert_eq!(key.to_string(), text);
        }
    }
}

// ---------------------------------------------------------------------------
// Links.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cheap())]

    /// Every URL the strategy makes is valid, and normalizing is idempotent.
    #[test]
    fn relay_urls_parse_and_normalize_idempotently(text in relay_url_text()) {
        let url = RelayUrl::parse(&text);
        prop_assert!(url.is_ok(), "{:?}: {:?}", text, url);
        let url = url.unwrap();
        prop_assert_eq!(RelayUrl::parse(url.as_str()), Ok(url.clone()));
        prop_assert!(url.as_str().len() <= limits::MAX_RELAY_URL_LEN);
    }

    /// A link that validates encodes within the maximum length and decodes to
    /// itself, from the bare value, a `connectoid=` pair and an app URL.
    #[test]
    fn link_round_trip(link in link()) {
        let text = link.encode();
        match link.validate() {
            Ok(()) => {
                prop_assert!(text.len() <= limits::MAX_LINK_LEN);
                prop_assert_eq!(Link::decode(&text), Ok(link.clone()));
                prop_assert_eq!(Link::decode(&format!("connectoid={text}")), Ok(link.clone()));
                let app = url::Url::parse("https://app.example.com/open?x=1").unwrap();
                prop_assert_eq!(Link::decode(link.to_app_url(&app).as_str()), Ok(link.clone()));
                let parts = text.split('.').count();
                let expected = match (&link.ext, &link.secret) {
                    (_, Some(_)) => 4,
                    (Some(_), None) => 3,
                    (None, None) => 2,
                };
                prop_assert_eq!(parts, expected);
                if link.secret.is_none() {
                    prop_assert_eq!(Link::decode_reply(&text), Ok(link.clone()));
                } else {
                    prop_assert_eq!(Link::decode_reply(&text), Err(LinkError::UnexpectedSecret));
                }
            }
            Err(LinkError::TooLong { len, max }) => {
                prop_assert_eq!(len, text.len());
                prop_assert_eq!(Link::decode(&text), Err(LinkError::TooLong { len, max }));
            }
            Err(LinkError::EmptyExt) => prop_assert_eq!(link.ext.as_deref(), Some("")),
            Err(LinkError::BadRelay { index, .. }) => {
                prop_assert_eq!(link.relays[index].ext.as_deref(), Some(""));
            }
            Err(e) => prop_assert!(false, "unexpected validation error {:?}", e),
        }
    }

    /// A one-relay link without a secret is exactly the seed's form:
    /// `<pub>.<b64 relay url>[.<b64 ext>]`.
    #[test]
    fn one_relay_link_is_the_seed_form(
        key in pool_index(),
        url in relay_url(),
        ext in prop::option::of(ext()),
    ) {
        let link = Link { key: pool_public(key), relays: vec![RelayEntry::new(url.clone())], ext: ext.clone(), secret: None };
        let mut seed = format!("{}.{}", pool_public(key), b64::encode(url.as_str().as_bytes()));
        if let Some(ext) = &ext {
            seed.push('.');
            seed.push_str(&b64::encode(ext.as_bytes()));
        }
        prop_assert_eq!(link.encode(), seed.clone());
        prop_assert_eq!(Link::decode(&seed), Ok(link));
    }

    #[test]
    fn link_decode_never_panics(text in any_text()) {
        if let Ok(link) = Link::decode(&text) {
            prop_assert!(link.encode().len() <= limits::MAX_LINK_LEN);
        }
    }

    /// Damaged links: decoding gives an error or a link, never a panic, and
    /// whatever decodes re-encodes to something that decodes the same.
    #[test]
    fn damaged_links_never_panic(link in link(), edits in edits()) {
        let damaged = mutate(&link.encode(), &edits);
        // Whatever decodes validates, so it round-trips.
        if let Ok(decoded) = Link::decode(&damaged) {
            prop_assert_eq!(decoded.validate(), Ok(()));
            prop_assert_eq!(Link::decode(&decoded.encode()), Ok(decoded));
        }
    }

    /// Valid parts in the wrong places or with damaged base64 inside.
    #[test]
    fn links_from_random_parts_never_panic(
        key in pool_index(),
        parts in prop::collection::vec(
            prop_oneof![
                any::<String>().prop_map(|s| b64::encode(s.as_bytes())),
                prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| b64::encode(&b)),
                relay_url_text().prop_map(|s| b64::encode(s.as_bytes())),
                (relay_url_text(), relay_url_text()).prop_map(|(a, b)| b64::encode(format!("{a} {b}").as_bytes())),
                (relay_url_text(), any::<String>()).prop_map(|(a, b)| b64::encode(format!("{a}|{b}").as_bytes())),
            ],
            0..5,
        ),
    ) {
        let mut text = pool_public(key).to_string();
        for part in parts {
            text.push('.');
            text.push_str(&part);
        }
        let _ = Link::decode(&text);
    }
}

// ---------------------------------------------------------------------------
// Sealing and padding.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(crypto(24))]

    /// Sealed messages open to the same plaintext, have the padded size, and
    /// open with no other key; any changed byte makes opening fail.
    #[test]
    fn seal_open_message_round_trip(
        recipient in pool_index(),
        other in pool_index(),
        seed in any::<u64>(),
        plaintext in prop_oneof![
            3 => prop::collection::vec(any::<u8>(), 0..600),
            1 => prop::collection::vec(any::<u8>(), 0..4096),
        ],
        flip in (any::<usize>(), 1..=255u8),
    ) {
        let sealed = seal::seal_message(&mut TestRng::new(seed), &pool_public(recipient), &plaintext).unwrap();
        prop_assert_eq!(sealed.len(), SEAL_OVERHEAD + seal::padded_len(plaintext.len()).unwrap());
        prop_assert_eq!(seal::open_message(pool_secret(recipient), &sealed), Ok(plaintext));
        if other != recipient {
            prop_assert_eq!(seal::open_message(pool_secret(other), &sealed), Err(OpenError::Decrypt));
        }
        let mut altered = sealed;
        let position = flip.0 % altered.len();
        altered[position] ^= flip.1;
        prop_assert!(seal::open_message(pool_secret(recipient), &altered).is_err());
    }

    #[test]
    fn seal_open_question_round_trip(
        recipient in pool_index(),
        seed in any::<u64>(),
        secret in any::<[u8; 32]>(),
    ) {
        let sealed = seal::seal_question(&mut TestRng::new(seed), &pool_public(recipient), &secret).unwrap();
        prop_assert_eq!(sealed.len(), seal::SEALED_QUESTION_LEN);
        prop_assert_eq!(seal::open_question(pool_secret(recipient), &sealed), Ok(secret));
        // A question never opens as a message and the other way round.
        prop_assert_eq!(seal::open_message(pool_secret(recipient), &sealed), Err(OpenError::Decrypt));
    }

    /// A valid encapsulated key followed by garbage: an error, not a panic.
    #[test]
    fn open_message_garbage_after_valid_key(
        recipient in pool_index(),
        seed in any::<u64>(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let sealed = seal::seal_message(&mut TestRng::new(seed), &pool_public(recipient), b"").unwrap();
        let mut garbage = sealed[..seal::ENCAPPED_KEY_LEN].to_vec();
        garbage.extend_from_slice(&tail);
        prop_assert!(seal::open_message(pool_secret(recipient), &garbage).is_err());
    }
}

proptest! {
    #![proptest_config(cheap())]

    /// Random bytes (mostly not a valid encapsulated key, so no ECDH).
    #[test]
    fn open_message_never_panics(
        recipient in pool_index(),
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|mut b| { b.insert(0, 4); b }),
        ],
    ) {
        prop_assert!(seal::open_message(pool_secret(recipient), &bytes).is_err());
    }

    #[test]
    fn pad_unpad_round_trip(plaintext in prop::collection::vec(any::<u8>(), 0..3000)) {
        let padded = seal::pad(&plaintext).unwrap();
        prop_assert_eq!(padded.len(), seal::padded_len(plaintext.len()).unwrap());
        prop_assert_eq!(seal::unpad(&padded), Ok(plaintext.as_slice()));
    }

    /// Large plaintexts, up to and past the maximum.
    #[test]
    fn pad_unpad_large(len in (MAX_PLAINTEXT_LEN - 40_000)..=(MAX_PLAINTEXT_LEN + 8), byte in any::<u8>()) {
        let plaintext = vec![byte; len];
        match seal::pad(&plaintext) {
            Ok(padded) => {
                prop_assert!(len <= MAX_PLAINTEXT_LEN);
                prop_assert_eq!(seal::unpad(&padded), Ok(plaintext.as_slice()));
            }
            Err(_) => prop_assert!(len > MAX_PLAINTEXT_LEN),
        }
    }

    /// Buckets: big enough for the plaintext and its marker byte, at least
    /// the minimum, a power of two (or the largest bucket), the smallest such
    /// bucket, and monotonic in the plaintext length.
    #[test]
    fn padded_len_buckets(len in prop_oneof![0usize..4096, 0..=(MAX_PLAINTEXT_LEN + 100)]) {
        match seal::padded_len(len) {
            Ok(bucket) => {
                prop_assert!(len <= MAX_PLAINTEXT_LEN);
                prop_assert!(bucket > len);
                prop_assert!(bucket >= MIN_PADDED_LEN);
                prop_assert!(bucket <= MAX_PADDED_LEN);
                prop_assert!(bucket + SEAL_OVERHEAD <= limits::MAX_MESSAGE_BYTES);
                if bucket == MAX_PADDED_LEN {
                    prop_assert!(len + 1 > MAX_PADDED_LEN.next_power_of_two() / 2);
                } else {
                    prop_assert!(bucket.is_power_of_two());
                    prop_assert!(bucket == MIN_PADDED_LEN || bucket / 2 < len + 1);
                }
                if len < MAX_PLAINTEXT_LEN {
                    prop_assert!(seal::padded_len(len + 1).unwrap() >= bucket);
                }
            }
            Err(_) => prop_assert!(len > MAX_PLAINTEXT_LEN),
        }
    }

    /// Unpadding arbitrary bytes returns a prefix followed by exactly
    /// `0x80 0x00*`, or an error.
    #[test]
    fn unpad_never_panics(bytes in prop::collection::vec(prop_oneof![Just(0u8), Just(0x80), any::<u8>()], 0..300)) {
        if let Ok(plaintext) = seal::unpad(&bytes) {
            let n = plaintext.len();
            prop_assert_eq!(&bytes[..n], plaintext);
            prop_assert_eq!(bytes[n], 0x80);
            prop_assert!(bytes[n + 1..].iter().all(|&b| b == 0));
        }
    }
}

proptest! {
    #![proptest_config(cheap())]

    /// The answer to a question is bound to the relay it is sent to: the
    /// same secret gives another answer at any other relay URL.
    #[test]
    fn answers_are_bound_to_their_relay(
        secret in any::<[u8; 32]>(),
        a in relay_url(),
        b in relay_url(),
    ) {
        let answer = connectoid_protocol::Answer::for_relay(&secret, &a);
        prop_assert!(bool::from(answer.ct_eq(&connectoid_protocol::Answer::for_relay(&secret, &a))));
        let other = connectoid_protocol::Answer::for_relay(&secret, &b);
        prop_assert_eq!(a == b, bool::from(answer.ct_eq(&other)));
        prop_assert_eq!(answer == other, bool::from(answer.ct_eq(&other)));
    }
}

// ---------------------------------------------------------------------------
// Envelopes.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(crypto(24))]

    /// A signed envelope verifies to itself; any changed character of its
    /// JWS text makes verification fail.
    #[test]
    fn envelope_sign_verify_round_trip(
        (sender, envelope) in envelope(),
        edit in (any::<usize>(), prop::sample::select("AQgw-_.xyz=".chars().collect::<Vec<_>>())),
    ) {
        prop_assume!(envelope.from.validate().is_ok());
        let jws = envelope.sign(pool_secret(sender)).unwrap();
        prop_assert_eq!(Envelope::verify_jws(&jws), Ok(envelope.clone()));
        let position = edit.0 % jws.len();
        let mut bytes = jws.clone().into_bytes();
        prop_assume!(bytes[position] != edit.1 as u8);
        bytes[position] = edit.1 as u8;
        let tampered = String::from_utf8(bytes).unwrap();
        prop_assert!(Envelope::verify_jws(&tampered).is_err(), "{}", tampered);
    }

    /// Sealed envelopes open for the recipient inside the time window, and
    /// for nobody else.
    #[test]
    fn envelope_seal_open_round_trip(
        (sender, envelope) in envelope(),
        other in pool_index(),
        seed in any::<u64>(),
        skew in -(limits::ENVELOPE_MAX_SKEW_MS as i64)..=(limits::ENVELOPE_MAX_AGE_MS as i64),
    ) {
        prop_assume!(envelope.from.validate().is_ok());
        let recipient = KEYS.iter().position(|(_, p)| *p == envelope.to).unwrap();
        let sealed = seal_envelope(&mut TestRng::new(seed), pool_secret(sender), &envelope).unwrap();
        let now = envelope.ts.saturating_add_signed(skew);
        prop_assert_eq!(open_envelope(pool_secret(recipient), &sealed, now), Ok(envelope.clone()));
        if other != recipient {
            prop_assert!(open_envelope(pool_secret(other), &sealed, now).is_err());
        }
    }
}

proptest! {
    #![proptest_config(cheap())]

    #[test]
    fn verify_jws_never_panics(text in any_text()) {
        let _ = Envelope::verify_jws(&text);
    }

    /// Three base64url parts: a real or random header, a random JSON payload
    /// (sometimes shaped like an envelope), a random signature.
    #[test]
    fn verify_jws_structured_never_panics(
        header in prop_oneof![
            Just(connectoid_protocol::envelope::JWS_HEADER.to_owned()),
            json().prop_map(|v| v.to_string()),
        ],
        payload in prop_oneof![
            json().prop_map(|v| v.to_string()),
            (pool_index(), json(), kind(), any::<u64>()).prop_map(|(key, body, kind, ts)| {
                serde_json::json!({
                    "v": 1,
                    "kind": kind.as_str(),
                    "to": pool_public(key).to_string(),
                    "from": format!("{}.{}", pool_public(key), b64::encode(b"https://relay.example/")),
                    "ts": ts,
                    "body": body,
                }).to_string()
            }),
        ],
        signature in prop_oneof![
            prop::collection::vec(any::<u8>(), 96),
            prop::collection::vec(any::<u8>(), 0..120),
        ],
    ) {
        let text = format!(
            "{}.{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(payload.as_bytes()),
            b64::encode(&signature),
        );
        // A random signature never verifies.
        prop_assert!(Envelope::verify_jws(&text).is_err());
    }

    #[test]
    fn open_envelope_never_panics(
        recipient in pool_index(),
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        now in any::<u64>(),
    ) {
        prop_assert!(open_envelope(pool_secret(recipient), &bytes, now).is_err());
    }
}

// ---------------------------------------------------------------------------
// Relay HTTP API.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cheap())]

    #[test]
    fn request_json_round_trip(request in request()) {
        let json = request.to_json();
        prop_assert!(json.len() <= limits::MAX_REQUEST_BODY);
        prop_assert_eq!(Request::from_json(json.as_bytes()), Ok(request));
    }

    #[test]
    fn response_json_round_trip((action, response) in response()) {
        let json = response.to_json();
        prop_assert_eq!(Response::from_json(action, json.as_bytes()), Ok(response));
    }

    #[test]
    fn request_from_json_never_panics(body in prop_oneof![
        any::<Vec<u8>>(),
        any_text().prop_map(String::into_bytes),
        json().prop_map(|v| v.to_string().into_bytes()),
    ]) {
        if let Ok(request) = Request::from_json(&body) {
            prop_assert_eq!(Request::from_json(request.to_json().as_bytes()), Ok(request));
        }
    }

    /// Objects with the request's field names and values of any type.
    #[test]
    fn request_fields_of_any_type_never_panic(
        fields in prop::collection::btree_map(
            prop::sample::select(vec!["pub", "ext", "action", "data", "at", "answer", "limit", "other"]),
            prop_oneof![
                json(),
                prop::sample::select(vec!["send", "check", "receive", "delete"]).prop_map(Value::from),
                pool_index().prop_map(|k| Value::from(pool_public(k).to_string())),
                prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| Value::from(b64::encode(&b))),
                (0u64..200).prop_map(Value::from),
            ],
            0..8,
        ),
    ) {
        let body = Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        if let Ok(request) = Request::from_json(body.to_string().as_bytes()) {
            prop_assert_eq!(Request::from_json(request.to_json().as_bytes()), Ok(request));
        }
    }

    #[test]
    fn response_from_json_never_panics(
        action in prop::sample::select(Action::ALL.to_vec()),
        body in prop_oneof![
            any::<Vec<u8>>(),
            json().prop_map(|v| v.to_string().into_bytes()),
            (any::<bool>(), json(), json()).prop_map(|(ok, a, b)| serde_json::json!({
                "ok": ok, "found": a, "question": b, "at": 5, "data": "AQI",
                "messages": [{"at": 1, "data": ""}], "error": "Too often",
            }).to_string().into_bytes()),
        ],
    ) {
        if let Ok(response) = Response::from_json(action, &body) {
            prop_assert_eq!(Response::from_json(action, response.to_json().as_bytes()), Ok(response));
        }
    }
}

// ---------------------------------------------------------------------------
// UDP check datagrams.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cheap())]

    /// Valid requests round-trip and fit in one datagram.
    #[test]
    fn check_request_round_trip(request in check_request()) {
        prop_assert!(request.validate().is_ok());
        let bytes = request.encode();
        prop_assert!(bytes.len() <= limits::MAX_DATAGRAM_LEN, "{} bytes", bytes.len());
        prop_assert_eq!(CheckRequest::decode(&bytes), Ok(request));
    }

    /// Requests with too many (or no) mailboxes or too long an ext are
    /// rejected by the decoder with the same error `validate` gives.
    #[test]
    fn invalid_check_requests_are_rejected(
        nonce in any::<[u8; NONCE_LEN]>(),
        ext in prop::option::of("[a-z]{0,200}"),
        checks in prop::collection::vec(mailbox_check(), 0..24),
    ) {
        let request = CheckRequest { nonce, ext, checks };
        let bytes = request.encode();
        match (request.validate(), CheckRequest::decode(&bytes)) {
            (_, Err(DatagramError::TooLong { len, .. })) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert!(len > limits::MAX_DATAGRAM_LEN);
            }
            (Ok(()), decoded) => prop_assert_eq!(decoded, Ok(request)),
            (Err(e), decoded) => prop_assert_eq!(decoded, Err(e)),
        }
    }

    /// The amplification rule: for any valid request, a response with one
    /// status per mailbox and any observed address is no larger than the
    /// request, so `encode_within` never has to drop anything.
    #[test]
    fn check_response_fits_its_request((request, response) in check_exchange()) {
        let request_len = request.encode().len();
        let bytes = response.encode();
        prop_assert!(bytes.len() <= request_len, "response {} > request {}", bytes.len(), request_len);
        prop_assert_eq!(response.clone().encode_within(request_len), Some(bytes.clone()));
        let decoded = CheckResponse::decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&response));
        prop_assert!(decoded.unwrap().answers(&request));
    }

    #[test]
    fn check_response_round_trip(
        nonce in any::<[u8; NONCE_LEN]>(),
        statuses in prop::collection::vec(check_status(), 0..=limits::MAX_CHECKS_PER_DATAGRAM),
        observed in prop::option::of(observed_addr()),
    ) {
        let response = CheckResponse { nonce, statuses, observed };
        prop_assert_eq!(CheckResponse::decode(&response.encode()), Ok(response));
    }

    /// `encode_within` answers only within the given size, dropping the
    /// observed address first.
    #[test]
    fn encode_within_respects_the_limit(
        nonce in any::<[u8; NONCE_LEN]>(),
        statuses in prop::collection::vec(check_status(), 0..=limits::MAX_CHECKS_PER_DATAGRAM),
        observed in prop::option::of(observed_addr()),
        limit in 0usize..80,
    ) {
        let response = CheckResponse { nonce, statuses, observed };
        match response.clone().encode_within(limit) {
            Some(bytes) => {
                prop_assert!(bytes.len() <= limit);
                let decoded = CheckResponse::decode(&bytes).unwrap();
                prop_assert_eq!(&decoded.statuses, &response.statuses);
                prop_assert!(decoded.observed.is_none() || decoded.observed == response.observed);
            }
            None => {
                let bare = CheckResponse { observed: None, ..response };
                prop_assert!(bare.encode().len() > limit);
            }
        }
    }

    #[test]
    fn observed_addr_socket_round_trip(addr in observed_addr()) {
        let socket = SocketAddr::from(addr);
        prop_assert_eq!(ObservedAddr::from(socket), addr);
    }

    #[test]
    fn datagram_decoders_never_panic(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1300),
        // A valid header, then random bytes: reaches the postcard decoder.
        (prop::sample::select(vec![1u8, 2]), prop::collection::vec(any::<u8>(), 0..1300)).prop_map(|(kind, body)| {
            let mut bytes = b"CNID\x01".to_vec();
            bytes.push(kind);
            bytes.extend(body);
            bytes
        }),
    ]) {
        if let Ok(request) = CheckRequest::decode(&bytes) {
            prop_assert_eq!(CheckRequest::decode(&request.encode()), Ok(request));
        }
        if let Ok(response) = CheckResponse::decode(&bytes) {
            prop_assert_eq!(CheckResponse::decode(&response.encode()), Ok(response));
        }
    }

    /// Damaged valid requests: an error or a request, never a panic.
    #[test]
    fn damaged_datagrams_never_panic(
        request in check_request(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = request.encode();
        for (position, value) in flips {
            let position = position % bytes.len();
            bytes[position] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = CheckRequest::decode(&bytes);
        let _ = CheckResponse::decode(&bytes);
    }
}

// ---------------------------------------------------------------------------
// `at` and safety codes.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cheap())]

    /// Whatever the clock does (steps back, repeats), `at` strictly
    /// increases and is never before the clock.
    #[test]
    fn at_next_strictly_increasing(
        nows in prop::collection::vec(
            prop_oneof![0u64..1000, 1_700_000_000_000_000u64..1_700_000_000_000_100, 0u64..(1 << 62)],
            1..64,
        ),
    ) {
        let mut last: Option<At> = None;
        for now in nows {
            let next = At::next(now, last);
            prop_assert!(next.0 >= now);
            if let Some(last) = last {
                prop_assert!(next > last);
                prop_assert!(next.0 == now || next.0 == last.0 + 1);
            } else {
                prop_assert_eq!(next, At(now));
            }
            last = Some(next);
        }
    }

    #[test]
    fn at_json_is_a_plain_number(at in any::<u64>()) {
        prop_assert_eq!(serde_json::to_string(&At(at)).unwrap(), at.to_string());
        prop_assert_eq!(serde_json::from_str::<At>(&at.to_string()).unwrap(), At(at));
    }
}

proptest! {
    #![proptest_config(crypto(32))]

    /// Both sides compute the same code, whatever the order of the keys.
    #[test]
    fn safety_code_is_symmetric(a in any::<u64>(), b in any::<u64>()) {
        let a = SecretKey::generate(&mut TestRng::new(a)).public_key();
        let b = SecretKey::generate(&mut TestRng::new(b)).public_key();
        let code = SafetyCode::new(&a, &b);
        prop_assert_eq!(code, SafetyCode::new(&b, &a));
        prop_assert!(code.indices().iter().all(|&i| usize::from(i) < SYMBOLS.len()));
        let words = code.words();
        prop_assert_eq!(words.split(' ').count(), SAFETY_CODE_LEN);
        prop_assert!(words.split(' ').all(|w| SYMBOLS.iter().any(|s| s.1 == w)));
        prop_assert_eq!(code.emoji().split(' ').count(), SAFETY_CODE_LEN);
    }
}
