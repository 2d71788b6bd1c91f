//! `spec/vectors/push.json`: the `push` request and its answers
//! (`spec/protocol.md` §7.11), its generator and its check.

use connectoid_protocol::api::{Answer, ApiError, ErrorCode, Operation, PushListing, PushRequest};
use connectoid_protocol::push::{PushKind, PushSubscription, WebPushKeys};
use connectoid_protocol::{Request, Response, b64};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::api::response_json;
use crate::util::{arr, get, hx, num, run, st, vector_key};

/// The vector form of a `push` request's own members.
pub(crate) fn push_json(out: &mut Value, answer: &Answer, request: &PushRequest) {
    out["answer_hex"] = hex::encode(answer.0).into();
    out["push"] = request.verb().into();
    if let PushRequest::Register(subscription) = request {
        out["endpoint"] = subscription.endpoint.clone().into();
        let keys = subscription.web_push.as_ref();
        out["p256dh_hex"] = keys.map(|k| hex::encode(k.p256dh)).into();
        out["auth_hex"] = keys.map(|k| hex::encode(k.auth)).into();
    }
}

/// Reads what [`push_json`] wrote.
pub(crate) fn push_from_json(v: &Value) -> Operation {
    let answer = Answer(hx(v, "answer_hex").try_into().unwrap());
    let request = match st(v, "push") {
        "register" => PushRequest::Register(PushSubscription {
            endpoint: st(v, "endpoint").to_owned(),
            web_push: get(v, "p256dh_hex").as_str().map(|_| WebPushKeys {
                p256dh: hx(v, "p256dh_hex").try_into().unwrap(),
                auth: hx(v, "auth_hex").try_into().unwrap(),
            }),
        }),
        "remove" => PushRequest::Remove,
        "list" => PushRequest::List,
        other => panic!("unknown push verb {other}"),
    };
    Operation::Push { answer, request }
}

fn build_push() -> Value {
    let k = vector_key("alice").public_key().to_string();
    let answer = b64::encode(&sha2::Sha256::digest(b"connectoid test vector question"));
    // A P-256 point's uncompressed form (the generator) and a 16-byte secret.
    let p256dh = b64::encode(
        &hex::decode(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        )
        .unwrap(),
    );
    let auth = b64::encode(&sha2::Sha256::digest(b"connectoid push auth")[..16]);
    let up = "https://push.example/UP?token=abc";
    let wp = "https://fcm.googleapis.com/fcm/send/d1b2";
    let bodies: Vec<(&str, String)> = vec![
        (
            "register UnifiedPush",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{up}"}}"#
            ),
        ),
        (
            "register Web Push (the keys of PushSubscription.toJSON())",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{wp}","keys":{{"p256dh":"{p256dh}","auth":"{auth}"}}}}"#
            ),
        ),
        (
            "remove",
            format!(r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"remove"}}"#),
        ),
        (
            "list, with null keys and an unused endpoint",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"list","endpoint":5,"keys":null}}"#
            ),
        ),
        (
            "no push member",
            format!(r#"{{"action":"push","pub":"{k}","answer":"{answer}"}}"#),
        ),
        (
            "push not a string",
            format!(r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":1}}"#),
        ),
        (
            "unknown push verb",
            format!(r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"subscribe"}}"#),
        ),
        (
            "register without endpoint",
            format!(r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register"}}"#),
        ),
        (
            "endpoint not a URL",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"push.example"}}"#
            ),
        ),
        (
            "endpoint not http or https",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"ftp://push.example/"}}"#
            ),
        ),
        (
            "endpoint with a password",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"https://a:b@push.example/"}}"#
            ),
        ),
        (
            "endpoint too long",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"https://push.example/{}"}}"#,
                "a".repeat(1024)
            ),
        ),
        (
            "keys without auth",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{wp}","keys":{{"p256dh":"{p256dh}"}}}}"#
            ),
        ),
        (
            "keys not an object",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{wp}","keys":"{p256dh}"}}"#
            ),
        ),
        (
            "p256dh compressed",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{wp}","keys":{{"p256dh":"{}","auth":"{auth}"}}}}"#,
                b64::encode(&[2u8; 65])
            ),
        ),
        (
            "auth of 15 bytes",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{wp}","keys":{{"p256dh":"{p256dh}","auth":"{}"}}}}"#,
                b64::encode(&[1u8; 15])
            ),
        ),
        (
            "auth not base64url",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{answer}","push":"register","endpoint":"{wp}","keys":{{"p256dh":"{p256dh}","auth":"a+b/"}}}}"#
            ),
        ),
        (
            "no answer",
            format!(r#"{{"action":"push","pub":"{k}","push":"list"}}"#),
        ),
        (
            "answer of 31 bytes",
            format!(
                r#"{{"action":"push","pub":"{k}","answer":"{}","push":"list"}}"#,
                b64::encode(&[0u8; 31])
            ),
        ),
    ];
    let requests: Vec<Value> = bodies
        .into_iter()
        .map(|(label, body)| match Request::from_json(body.as_bytes()) {
            Ok(request) => json!({
                "name": label,
                "body": body,
                "decoded": crate::api::request_json(&request),
                "canonical": request.to_json(),
            }),
            Err(error) => {
                let mut out = json!({
                    "name": label,
                    "body": body,
                    "error": error.code.as_str(),
                    "status": error.code.http_status(),
                });
                if error.code == ErrorCode::MissingField {
                    out["detail"] = error.detail.into();
                }
                out
            }
        })
        .collect();
    let responses: Vec<(&str, Response)> = vec![
        ("registered or removed", Response::Done),
        ("list: none", Response::Pushes(Vec::new())),
        (
            "list: one UnifiedPush endpoint",
            Response::Pushes(vec![PushListing {
                kind: PushKind::UnifiedPush,
                endpoint: up.into(),
            }]),
        ),
        (
            "list: one Web Push endpoint",
            Response::Pushes(vec![PushListing {
                kind: PushKind::WebPush,
                endpoint: wp.into(),
            }]),
        ),
        (
            "push is off",
            Response::Error(ApiError::new(
                ErrorCode::PushDisabled,
                "this relay sends no pushes",
            )),
        ),
        (
            "endpoint refused",
            Response::Error(ApiError::new(
                ErrorCode::EndpointRefused,
                "endpoint: only https endpoints are accepted",
            )),
        ),
    ];
    let responses: Vec<Value> = responses
        .iter()
        .map(|(label, response)| {
            json!({
                "name": label,
                "action": "push",
                "value": response_json(response),
                "json": response.to_json(),
                "status": response.http_status(),
            })
        })
        .collect();
    let errors: Vec<Value> = ErrorCode::PUSH
        .iter()
        .map(|c| json!({"error": c.as_str(), "status": c.http_status()}))
        .collect();
    json!({
        "description": "The push request (POST / with action push; spec/protocol.md 7.11). requests: a body either decodes to the fields in decoded (answer, p256dh and auth as hex of the decoded bytes; p256dh_hex and auth_hex are null for a UnifiedPush endpoint; canonical is the library's encoding of the same request) or fails with error and HTTP status (and detail, for Missing field). responses: a value, its exact JSON text and HTTP status for a push request. errors: the error strings only push requests get, with their status.",
        "limits": {
            "max_endpoint_len": connectoid_protocol::push::MAX_ENDPOINT_LEN,
            "p256dh_len": connectoid_protocol::push::P256DH_LEN,
            "auth_len": connectoid_protocol::push::AUTH_LEN,
        },
        "requests": requests,
        "responses": responses,
        "errors": errors,
    })
}

fn check_push(v: &Value) {
    crate::api::check_requests(v);
    crate::api::check_responses(v);
    let errors = arr(v, "errors");
    assert_eq!(errors.len(), ErrorCode::PUSH.len());
    for (vector, code) in errors.iter().zip(ErrorCode::PUSH) {
        assert_eq!(st(vector, "error"), code.as_str());
        assert_eq!(num(vector, "status"), u64::from(code.http_status()));
    }
}

#[test]
fn push() {
    run("push.json", build_push, check_push);
}
