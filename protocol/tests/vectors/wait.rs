//! `spec/vectors/wait.json`: held checks (`check` with `wait` and `also`,
//! `spec/protocol.md` §7.10), their generator and their check. A file of its
//! own so that `api.json` stays byte for byte as it was.

use connectoid_protocol::api::{FoundQuestion, MailboxCursor, Operation};
use connectoid_protocol::{Action, At, ErrorCode, Request, Response, limits, seal};
use serde_json::{Value, json};

use crate::api::{request_json as api_request_json, response_json as api_response_json};
use crate::util::{arr, get, hx, name, num, opt_str, run, st, vector_key};

fn request_json(request: &Request) -> Value {
    match &request.op {
        Operation::HeldCheck {
            at,
            also,
            wait_seconds,
        } => json!({
            "pub": request.key.to_string(),
            "ext": request.ext,
            "action": "check",
            "at": at.0,
            "wait": wait_seconds,
            "also": also
                .iter()
                .map(|c| json!({"pub": c.key.to_string(), "at": c.at.0}))
                .collect::<Vec<_>>(),
        }),
        _ => api_request_json(request),
    }
}

fn request_from_json(v: &Value) -> Request {
    let at = At(num(v, "at"));
    let op = if v.get("wait").is_some() {
        Operation::HeldCheck {
            at,
            also: arr(v, "also")
                .iter()
                .map(|c| MailboxCursor {
                    key: st(c, "pub").parse().unwrap(),
                    at: At(num(c, "at")),
                })
                .collect(),
            wait_seconds: num(v, "wait"),
        }
    } else {
        Operation::Check { at }
    };
    Request {
        key: st(v, "pub").parse().unwrap(),
        ext: opt_str(v, "ext"),
        op,
    }
}

fn response_json(response: &Response) -> Value {
    match response {
        Response::FoundMany(found) => json!({
            "type": "found-many",
            "checks": found
                .iter()
                .map(|f| json!({"pub": f.key.to_string(), "question_hex": hex::encode(&f.question)}))
                .collect::<Vec<_>>(),
        }),
        other => api_response_json(other),
    }
}

fn response_from_json(v: &Value) -> Response {
    match st(v, "type") {
        "found-many" => Response::FoundMany(
            arr(v, "checks")
                .iter()
                .map(|c| FoundQuestion {
                    key: st(c, "pub").parse().unwrap(),
                    question: hx(c, "question_hex"),
                })
                .collect(),
        ),
        "not-found" => Response::NotFound,
        other => panic!("unknown response type {other}"),
    }
}

fn build_wait() -> Value {
    let a = vector_key("alice").public_key().to_string();
    let b = vector_key("bob").public_key().to_string();
    let c = vector_key("carol").public_key().to_string();
    let fifteen: Vec<String> = (0..15)
        .map(|i| {
            format!(
                r#"{{"pub":"{}","at":{i}}}"#,
                vector_key(&format!("mailbox {i}")).public_key()
            )
        })
        .collect();
    let sixteen = [fifteen.clone(), vec![format!(r#"{{"pub":"{c}"}}"#)]].concat();
    let bodies: Vec<(&str, String)> = vec![
        (
            "held check of one mailbox",
            format!(r#"{{"pub":"{a}","action":"check","at":5,"wait":30}}"#),
        ),
        (
            "held check of three mailboxes",
            format!(
                r#"{{"pub":"{a}","ext":"api-key-123","action":"check","at":1700000000000123,"wait":30,"also":[{{"pub":"{b}","at":7}},{{"pub":"{c}"}}]}}"#
            ),
        ),
        (
            "check of several mailboxes answered at once (no wait)",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"pub":"{b}","at":null}}]}}"#),
        ),
        (
            "a wait above the relay's maximum decodes (the relay shortens it)",
            format!(r#"{{"pub":"{a}","action":"check","wait":18446744073709551615}}"#),
        ),
        (
            "sixteen mailboxes",
            format!(
                r#"{{"pub":"{a}","action":"check","wait":30,"also":[{}]}}"#,
                fifteen.join(",")
            ),
        ),
        (
            "wait 0 and also empty is a plain check",
            format!(r#"{{"pub":"{a}","action":"check","at":3,"wait":0,"also":[]}}"#),
        ),
        (
            "wait and also are ignored by other actions",
            format!(r#"{{"pub":"{a}","action":"delete","wait":-1,"also":"x"}}"#),
        ),
        (
            "wait negative",
            format!(r#"{{"pub":"{a}","action":"check","wait":-1}}"#),
        ),
        (
            "wait a string",
            format!(r#"{{"pub":"{a}","action":"check","wait":"30"}}"#),
        ),
        (
            "also not an array",
            format!(r#"{{"pub":"{a}","action":"check","also":{{"pub":"{b}"}}}}"#),
        ),
        (
            "seventeen mailboxes",
            format!(
                r#"{{"pub":"{a}","action":"check","wait":30,"also":[{}]}}"#,
                sixteen.join(",")
            ),
        ),
        (
            "also element not an object",
            format!(r#"{{"pub":"{a}","action":"check","also":["{b}"]}}"#),
        ),
        (
            "also element without pub",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"at":1}}]}}"#),
        ),
        (
            "also pub not a string",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"pub":5}}]}}"#),
        ),
        (
            "also pub not a key",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"pub":"abc"}}]}}"#),
        ),
        (
            "also at negative",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"pub":"{b}","at":-1}}]}}"#),
        ),
        (
            "also names the request's own mailbox",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"pub":"{a}"}}]}}"#),
        ),
        (
            "also names a mailbox twice",
            format!(
                r#"{{"pub":"{a}","action":"check","also":[{{"pub":"{b}"}},{{"pub":"{b}","at":9}}]}}"#
            ),
        ),
        (
            "also element with a member twice",
            format!(r#"{{"pub":"{a}","action":"check","also":[{{"pub":"{b}","pub":"{b}"}}]}}"#),
        ),
        (
            "wait twice",
            format!(r#"{{"pub":"{a}","action":"check","wait":1,"wait":2}}"#),
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
            Err(e) => json!({
                "name": label,
                "body": body,
                "error": e.code.as_str(),
                "status": e.code.http_status(),
                // The parser's wording of a JSON syntax error is not part of the contract.
                "detail": if e.code == ErrorCode::MalformedJson { None } else { e.detail },
            }),
        })
        .collect();
    let question = |first: u8| -> Vec<u8> {
        (0..seal::SEALED_QUESTION_LEN)
            .map(|i| first.wrapping_add(i as u8))
            .collect()
    };
    let responses_in: Vec<(&str, Response)> = vec![
        ("held check found nothing", Response::NotFound),
        (
            "held check found one mailbox",
            Response::FoundMany(vec![FoundQuestion {
                key: vector_key("bob").public_key(),
                question: question(0),
            }]),
        ),
        (
            "held check found two mailboxes",
            Response::FoundMany(vec![
                FoundQuestion {
                    key: vector_key("alice").public_key(),
                    question: question(1),
                },
                FoundQuestion {
                    key: vector_key("carol").public_key(),
                    question: question(2),
                },
            ]),
        ),
    ];
    let responses: Vec<Value> = responses_in
        .iter()
        .map(|(label, response)| {
            json!({
                "name": label,
                "action": "check",
                "value": response_json(response),
                "json": response.to_json(),
                "status": response.http_status(),
            })
        })
        .collect();
    json!({
        "description": "Held checks: check with wait (seconds) and also (up to 15 more mailboxes with cursors). requests: a body either decodes to the fields in decoded (a held check has wait and also; canonical is the library's encoding) or fails with error, HTTP status and detail. responses: a value, its exact JSON text and HTTP status; a client decoding json as a check answer gets value back.",
        "limits": {
            "max_mailboxes_per_held_check": limits::MAX_MAILBOXES_PER_HELD_CHECK,
            "default_max_wait_seconds": limits::DEFAULT_MAX_WAIT_SECONDS,
        },
        "requests": requests,
        "responses": responses,
    })
}

fn check_wait(v: &Value) {
    for vector in arr(v, "requests") {
        let label = name(vector);
        let result = Request::from_json(st(vector, "body").as_bytes());
        if let Some(decoded) = vector.get("decoded") {
            let request = result.unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(request_json(&request), *decoded, "{label}");
            if decoded["action"] == "check" {
                assert_eq!(request_from_json(decoded), request, "{label}");
            }
            assert_eq!(request.to_json(), st(vector, "canonical"), "{label}");
            assert_eq!(
                Request::from_json(st(vector, "canonical").as_bytes()).unwrap(),
                request
            );
        } else {
            let error = result.expect_err(label);
            assert_eq!(error.code.as_str(), st(vector, "error"), "{label}: {error}");
            assert_eq!(u64::from(error.code.http_status()), num(vector, "status"));
            if let Some(detail) = get(vector, "detail").as_str() {
                assert_eq!(error.detail.as_deref(), Some(detail), "{label}");
            }
        }
    }
    for vector in arr(v, "responses") {
        let label = name(vector);
        let response = response_from_json(get(vector, "value"));
        assert_eq!(response.to_json(), st(vector, "json"), "{label}");
        assert_eq!(u64::from(response.http_status()), num(vector, "status"));
        let decoded = Response::from_json(Action::Check, st(vector, "json").as_bytes()).unwrap();
        assert_eq!(decoded, response, "{label}");
    }
}

#[test]
fn wait() {
    run("wait.json", build_wait, check_wait);
}
