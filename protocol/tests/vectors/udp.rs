//! `spec/vectors/udp.json`: its generator and its check.

use std::net::{IpAddr, SocketAddr};

use connectoid_protocol::udp::{
    CheckRequest, CheckResponse, CheckStatus, MailboxCheck, ObservedAddr,
};
use connectoid_protocol::{At, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::util::{arr, get, hx, name, num, opt_str, run, st, vector_key};

pub(crate) fn status_name(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::NotFound => "not-found",
        CheckStatus::Found => "found",
        CheckStatus::TooOften => "too-often",
        CheckStatus::Forbidden => "forbidden",
        other => panic!("no vector form for {other:?}"),
    }
}

pub(crate) fn status_named(name: &str) -> CheckStatus {
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

pub(crate) fn udp_request_json(r: &CheckRequest) -> Value {
    json!({
        "nonce_hex": hex::encode(r.nonce),
        "ext": r.ext,
        "checks": r.checks.iter().map(|c| json!({"key_hex": hex::encode(c.key), "at": c.at})).collect::<Vec<_>>(),
    })
}

pub(crate) fn udp_request_from(v: &Value) -> CheckRequest {
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

pub(crate) fn udp_response_json(r: &CheckResponse) -> Value {
    json!({
        "nonce_hex": hex::encode(r.nonce),
        "statuses": r.statuses.iter().map(|s| status_name(*s)).collect::<Vec<_>>(),
        "observed": r.observed.map(|o| {
            let addr = SocketAddr::from(o);
            json!({"ip": addr.ip().to_string(), "port": addr.port()})
        }),
    })
}

pub(crate) fn udp_response_from(v: &Value) -> CheckResponse {
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

pub(crate) fn build_udp() -> Value {
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

pub(crate) fn check_udp(v: &Value) {
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
