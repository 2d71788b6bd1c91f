//! `spec/vectors/links.json`: its generator and its check.

use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::{b64, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::util::{arr, get, name, opt_str, run, st, vector_key};

pub(crate) fn link_json(link: &Link) -> Value {
    json!({
        "pub": link.key.to_string(),
        "relays": link.relays.iter().map(|r| json!({"url": r.url.as_str(), "ext": r.ext})).collect::<Vec<_>>(),
        "ext": link.ext,
        "secret_hex": link.secret.as_ref().map(|s| hex::encode(s.0)),
    })
}

pub(crate) fn link_from_json(v: &Value) -> Link {
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

pub(crate) fn decode_link(mode: &str, input: &str) -> Result<Link, connectoid_protocol::LinkError> {
    match mode {
        "link" => Link::decode(input),
        "reply" => Link::decode_reply(input),
        other => panic!("unknown mode {other}"),
    }
}

pub(crate) fn build_links() -> Value {
    let alice = vector_key("alice").public_key();
    let k = alice.to_string();
    let e = |s: &str| b64::encode(s.as_bytes());
    let seed_url = e("https://connecto.id/");
    let secret_bytes: [u8; 16] = sha2::Sha256::digest(b"connectoid test vector link secret")[..16]
        .try_into()
        .unwrap();
    // A four-part value: the seed-form `head` with the secret and its
    // checksum appended by the encoder.
    let with_secret = |head: &str| {
        let mut link = Link::decode(head).unwrap();
        link.secret = Some(LinkSecret(secret_bytes));
        link.encode()
    };
    let multi = e(
        "https://relay-a.example/ https://relay-b.example:8443/connectoid http://127.0.0.1:8080/",
    );
    let per_relay = e(&format!(
        "https://relay-a.example/|{} https://relay-b.example/",
        e("key-a")
    ));
    let seed3 = format!("{k}.{seed_url}.{}", e("api-key-123"));
    let shared = with_secret(&format!("{k}.{seed_url}"));
    let shared_multi = with_secret(&format!("{k}.{multi}.{}", e("api-key-123")));
    // One character replaced at byte `index` (by `A`, or `B` if it was `A`).
    let change_at = |text: &str, index: usize| {
        let other = if &text[index..=index] == "A" {
            "B"
        } else {
            "A"
        };
        format!("{}{other}{}", &text[..index], &text[index + 1..])
    };
    let secret_at = shared.rfind('.').unwrap() + 1;
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
        ("link secret and ext", "link", shared_multi.clone()),
        ("link secret, no ext", "link", shared.clone()),
        (
            "app URL",
            "link",
            format!("https://app.example.com/?connectoid={seed3}"),
        ),
        (
            "app URL with other parameters",
            "link",
            format!(
                "https://app.example.com/share?list=7&connectoid={}#top",
                with_secret(&format!("{k}.{per_relay}"))
            ),
        ),
        ("connectoid= pair", "link", format!("connectoid={seed3}")),
        (
            "surrounding whitespace",
            "link",
            format!("  {k}.{seed_url}\n"),
        ),
        ("reply value", "reply", format!("{k}.{multi}")),
        (
            "pasted: quotes and a full stop",
            "link",
            format!("\"{shared}\"."),
        ),
        (
            "pasted: angle brackets, line breaks inside (mail wrapping)",
            "link",
            format!(
                "<{}\r\n  {}\n{}>",
                &shared_multi[..40],
                &shared_multi[40..110],
                &shared_multi[110..]
            ),
        ),
        (
            "pasted: app URL in parentheses, then a comma",
            "link",
            format!("(https://app.example.com/?connectoid={shared}),"),
        ),
        (
            "pasted: typographic quotes",
            "link",
            format!("\u{201c}{shared}\u{201d}"),
        ),
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
        ("five parts", "link", format!("{k}.{seed_url}.YQ.YQ.YQ")),
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
            "secret: 24 bytes",
            "link",
            format!("{k}.{seed_url}..{}", b64::encode(&[7; 24])),
        ),
        ("reply value with a secret", "reply", shared.clone()),
        (
            "damaged: a character of the key changed",
            "link",
            change_at(&shared, 10),
        ),
        (
            "damaged: a character of the relays changed",
            "link",
            change_at(&shared, k.len() + 5),
        ),
        (
            "damaged: a character of the secret changed",
            "link",
            change_at(&shared, secret_at + 3),
        ),
        (
            "damaged: the last character changed",
            "link",
            change_at(&shared, shared.len() - 1),
        ),
        (
            "damaged: a character inserted",
            "link",
            format!("{}x{}", &shared[..30], &shared[30..]),
        ),
        (
            "damaged: a secret from another link",
            "link",
            format!(
                "{}{}",
                &shared[..secret_at],
                &shared_multi[shared_multi.rfind('.').unwrap() + 1..]
            ),
        ),
        (
            "truncated: cut inside the secret part",
            "link",
            shared[..shared.len() - 5].to_owned(),
        ),
        (
            "truncated: a 16-byte secret without its checksum",
            "link",
            format!("{k}.{seed_url}..{}", b64::encode(&secret_bytes)),
        ),
        (
            "truncated: seed form cut inside the relays part",
            "link",
            format!("{k}.{}", &seed_url[..25]),
        ),
        (
            "truncated: seed form cut inside the ext part",
            "link",
            format!("{k}.{seed_url}.{}", &e("api-key-123")[..13]),
        ),
        (
            "truncated: a pasted four-part link cut short, then a full stop",
            "link",
            format!("{}.", &shared[..shared.len() - 8]),
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
        "description": "Link values. mode \"link\" decodes a shared link (bare value, connectoid= pair or app URL); mode \"reply\" decodes an envelope's from value (no secret allowed). valid: the decoded fields and the canonical encoding. invalid: the expected stable error code. A four-part value's last part is the secret followed by its 4-byte checksum (spec §4.3); inputs named pasted: are cleaned as §4.6 says.",
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

pub(crate) fn check_links(v: &Value) {
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
        "damaged",
        "truncated",
    ];
    for code in all {
        assert!(codes.contains(code), "no invalid vector for {code}");
    }
}

#[test]
fn links() {
    run("links.json", build_links, check_links);
}
