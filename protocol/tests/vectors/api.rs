//! `spec/vectors/api.json`: its generator and its check.

use connectoid_protocol::api::{Action, Answer, ApiError, ErrorCode, Message, Operation};
use connectoid_protocol::seal::{self};
use connectoid_protocol::{At, Request, Response, b64, limits};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::util::{arr, get, hx, name, num, opt_str, run, st, vector_key};

pub(crate) fn action_named(name: &str) -> Action {
    Action::ALL
        .into_iter()
        .find(|a| a.as_str() == name)
        .unwrap_or_else(|| panic!("unknown action {name}"))
}

pub(crate) fn request_json(request: &Request) -> Value {
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
        Operation::Push { answer, request } => crate::push::push_json(&mut out, answer, request),
        other => panic!("no vector form for {other:?}"),
    }
    out
}

pub(crate) fn answer_from(v: &Value) -> Option<Answer> {
    get(v, "answer_hex")
        .as_str()
        .map(|a| Answer(hex::decode(a).unwrap().try_into().unwrap()))
}

pub(crate) fn request_from_json(v: &Value) -> Request {
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
        Action::Push => crate::push::push_from_json(v),
    };
    Request {
        key: st(v, "pub").parse().unwrap(),
        ext: opt_str(v, "ext"),
        op,
    }
}

pub(crate) fn response_json(response: &Response) -> Value {
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
        Response::Pushes(listings) => json!({"type": "pushes", "push": listings}),
        Response::Error(e) => {
            json!({"type": "error", "error": e.code.as_str(), "detail": e.detail})
        }
        other => panic!("no vector form for {other:?}"),
    }
}

pub(crate) fn response_from_json(v: &Value) -> Response {
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
        "pushes" => Response::Pushes(serde_json::from_value(get(v, "push").clone()).unwrap()),
        "error" => Response::Error(ApiError {
            code: ErrorCode::from_str_exact(st(v, "error")).unwrap(),
            detail: opt_str(v, "detail"),
        }),
        other => panic!("unknown response type {other}"),
    }
}

pub(crate) fn build_api() -> Value {
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

pub(crate) fn check_api(v: &Value) {
    check_requests(v);
    check_responses(v);
    let errors = arr(v, "errors");
    assert_eq!(errors.len(), ErrorCode::ALL.len());
    for (vector, code) in errors.iter().zip(ErrorCode::ALL) {
        assert_eq!(st(vector, "error"), code.as_str());
        assert_eq!(num(vector, "status"), u64::from(code.http_status()));
    }
}

/// Checks a file's `requests` (in `api.json`'s form).
pub(crate) fn check_requests(v: &Value) {
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
}

/// Checks a file's `responses` (in `api.json`'s form).
pub(crate) fn check_responses(v: &Value) {
    for vector in arr(v, "responses") {
        let label = name(vector);
        let response = response_from_json(get(vector, "value"));
        assert_eq!(response.to_json(), st(vector, "json"), "{label}");
        assert_eq!(u64::from(response.http_status()), num(vector, "status"));
        let action = action_named(st(vector, "action"));
        let decoded = Response::from_json(action, st(vector, "json").as_bytes()).unwrap();
        assert_eq!(decoded, response, "{label}");
    }
}

#[test]
fn api() {
    run("api.json", build_api, check_api);
}
