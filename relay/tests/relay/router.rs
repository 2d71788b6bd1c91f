//! Router tests (`oneshot`, no sockets): every action, response shape and
//! error, the seed's examples with real keys, limits at and past each edge,
//! rate limits per source, and expiry with the manual clock.

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use connectoid_protocol::RelayInfo;
use connectoid_protocol::seal::open_message;
use connectoid_protocol::{b64, limits};
use connectoid_relay::Rate;
use serde_json::{Value, json};

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn the_seed_flow_with_real_keys() {
    let relay = TestRelay::new(|_| {});
    let alice = secret(1);
    let key = alice.public_key();
    let sealed = sealed(&key, r#"{"sdpOffer":"v=0"}"#);

    let (status, body) = relay.post(send_body(&key, &sealed)).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"ok": true})));

    let (status, check) = relay.post(check_body(&key, 0)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(check["found"], true);
    assert_eq!(check["question"].as_str().unwrap().len(), 194);
    let answer = relay.answer_of(&alice, &check);

    let (status, got) = relay.post(receive_body(&key, &answer, 0, 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got.as_object().unwrap().len(), 3, "{got}");
    let at = got["at"].as_u64().unwrap();
    assert!(at >= connectoid_relay::ManualClock::TEST_START_US);
    let data = b64::decode(got["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, sealed);
    assert_eq!(
        open_message(&alice, &data).unwrap(),
        br#"{"sdpOffer":"v=0"}"#
    );

    // Nothing after the message's `at`; the cursor moves.
    let (_, check) = relay.post(check_body(&key, at)).await;
    assert_eq!(check, json!({"ok": true, "found": false}));
    let (_, none) = relay.post(receive_body(&key, &answer, at, 1)).await;
    assert_eq!(none, json!({"ok": true, "found": false}));
    let (_, many) = relay.post(receive_body(&key, &answer, 0, 5)).await;
    assert_eq!(many["messages"][0]["at"], at);
    assert_eq!(many["messages"].as_array().unwrap().len(), 1);
    let (_, empty) = relay.post(receive_body(&key, &answer, at, 5)).await;
    assert_eq!(empty, json!({"ok": true, "messages": []}));
}

#[tokio::test]
async fn at_is_strictly_increasing_in_one_microsecond() {
    let relay = TestRelay::new(|_| {});
    let alice = secret(2);
    let key = alice.public_key();
    for i in 0..3 {
        let (status, _) = relay
            .post(send_body(&key, &sealed(&key, &format!("m{i}"))))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let answer = relay.answer(&alice).await;
    let (_, many) = relay.post(receive_body(&key, &answer, 0, 10)).await;
    let ats: Vec<u64> = many["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["at"].as_u64().unwrap())
        .collect();
    let start = connectoid_relay::ManualClock::TEST_START_US;
    assert_eq!(ats, vec![start, start + 1, start + 2]);
}

#[tokio::test]
async fn malformed_requests_get_precise_400s_and_store_nothing() {
    let relay = TestRelay::new(|_| {});
    let key = secret(3).public_key();
    let answer = b64::encode(&[0; 32]);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{".into(), StatusCode::BAD_REQUEST, "Malformed JSON"),
        ("[]".into(), StatusCode::BAD_REQUEST, "Malformed JSON"),
        (
            "pub=x&action=send".into(),
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
        ),
        (
            r#"{"pub":"x"}"#.into(),
            StatusCode::BAD_REQUEST,
            "Missing field",
        ),
        (
            r#"{"action":"fly"}"#.into(),
            StatusCode::BAD_REQUEST,
            "Unknown action",
        ),
        (
            r#"{"action":"check"}"#.into(),
            StatusCode::BAD_REQUEST,
            "Missing field",
        ),
        (
            r#"{"action":"check","pub":"abc"}"#.into(),
            StatusCode::BAD_REQUEST,
            "Bad public key",
        ),
        (
            format!(r#"{{"action":"send","pub":"{key}","data":"a+b/"}}"#),
            StatusCode::BAD_REQUEST,
            "Bad base64",
        ),
        (
            format!(r#"{{"action":"send","pub":"{key}","data":"AAAA"}}"#),
            StatusCode::BAD_REQUEST,
            "Bad value",
        ),
        (
            format!(r#"{{"action":"check","pub":"{key}","at":-1}}"#),
            StatusCode::BAD_REQUEST,
            "Bad value",
        ),
        (
            format!(r#"{{"action":"receive","pub":"{key}"}}"#),
            StatusCode::BAD_REQUEST,
            "Missing field",
        ),
        (
            format!(r#"{{"action":"receive","pub":"{key}","answer":"{answer}","limit":101}}"#),
            StatusCode::BAD_REQUEST,
            "Bad value",
        ),
        (
            format!(r#"{{"action":"send","pub":"{key}","ext":5,"data":"AAAA"}}"#),
            StatusCode::BAD_REQUEST,
            "Bad value",
        ),
        (
            format!(
                r#"{{"action":"send","pub":"{key}","data":"{}"}}"#,
                "A".repeat(b64::encoded_len(limits::MAX_MESSAGE_BYTES) + 1)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too big",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = relay.post(body.clone()).await;
        assert_eq!((got, error(&answer)), (status, code), "{body:.80}");
        assert!(
            answer["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{answer}"
        );
    }
    // Over the body limit: "Too big" before any parsing.
    let huge = vec![b' '; limits::MAX_REQUEST_BODY + 1];
    let (status, answer) = relay.post(huge).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "Too big")
    );
    let stats = relay.relay.store().stats().await.unwrap();
    assert_eq!((stats.mailboxes, stats.messages), (0, 0));
}

#[tokio::test]
async fn the_largest_message_fits_and_one_byte_more_is_too_big() {
    let relay = TestRelay::new(|config| config.limits.max_message_bytes = 1000);
    let key = secret(4).public_key();
    let (status, _) = relay.post(send_body(&key, &vec![7; 1000])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = relay.post(send_body(&key, &vec![7; 1001])).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "Too big")
    );
    // The protocol maximum with the default configuration.
    let relay = TestRelay::new(|_| {});
    let (status, answer) = relay
        .post(send_body(&key, &vec![7; limits::MAX_MESSAGE_BYTES]))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = relay
        .post(send_body(&key, &vec![7; limits::MAX_MESSAGE_BYTES + 1]))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn questions_and_answers() {
    let relay = TestRelay::new(|_| {});
    let alice = secret(5);
    let key = alice.public_key();
    let wrong = b64::encode(&[1; 32]);
    // No message yet: no question, and nothing to answer.
    let (_, check) = relay.post(check_body(&key, 0)).await;
    assert_eq!(check, json!({"ok": true, "found": false}));
    let (status, answer) = relay.post(receive_body(&key, &wrong, 0, 1)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "No question")
    );

    relay.post(send_body(&key, &sealed(&key, "hi"))).await;
    let (_, first) = relay.post(check_body(&key, 0)).await;
    let (_, second) = relay.post(check_body(&key, 0)).await;
    assert_eq!(
        first["question"], second["question"],
        "one question, reused"
    );
    let (status, answer) = relay.post(receive_body(&key, &wrong, 0, 1)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Wrong answer")
    );
    // Another mailbox's answer does not open this one.
    let bob = secret(6);
    relay
        .post(send_body(
            &bob.public_key(),
            &sealed(&bob.public_key(), "x"),
        ))
        .await;
    let bobs = relay.answer(&bob).await;
    let (status, _) = relay.post(receive_body(&key, &bobs, 0, 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The bare secret (an answer bound to no relay) and an answer for
    // another relay's URL are wrong here.
    let question = b64::decode(first["question"].as_str().unwrap()).unwrap();
    let opened = connectoid_protocol::seal::open_question(&alice, &question).unwrap();
    let (status, answer) = relay
        .post(receive_body(&key, &b64::encode(&opened), 0, 1))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Wrong answer")
    );
    let elsewhere = connectoid_protocol::RelayUrl::parse("https://other.example/").unwrap();
    let theirs = answer_of(&alice, &first, &elsewhere);
    let (status, answer) = relay.post(receive_body(&key, &theirs, 0, 1)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Wrong answer")
    );
    let right = relay.answer_of(&alice, &first);
    let (status, _) = relay.post(receive_body(&key, &right, 0, 1)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, metrics) = relay.get("/metrics").await;
    assert!(
        metrics.contains("connectoid_questions_made_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn answers_for_every_published_url_are_accepted() {
    let urls: Vec<_> = [
        "https://relay.example/",
        "https://relay.example/connectoid/",
    ]
    .iter()
    .map(|u| connectoid_protocol::RelayUrl::parse(u).unwrap())
    .collect();
    let relay = TestRelay::new(|config| config.urls = urls.clone());
    let alice = secret(22);
    let key = alice.public_key();
    relay.post(send_body(&key, &[1; 200])).await;
    let (_, check) = relay.post(check_body(&key, 0)).await;
    for url in &urls {
        let answer = answer_of(&alice, &check, url);
        assert_eq!(
            relay.post(receive_body(&key, &answer, 0, 1)).await.0,
            StatusCode::OK,
            "{url:?}"
        );
    }
}

#[tokio::test]
async fn delete_needs_an_answer_only_for_a_mailbox_with_messages() {
    let relay = TestRelay::new(|_| {});
    let alice = secret(7);
    let key = alice.public_key();
    let delete = |answer: Option<&str>| match answer {
        Some(a) => format!(r#"{{"pub":"{key}","action":"delete","answer":"{a}"}}"#),
        None => format!(r#"{{"pub":"{key}","action":"delete"}}"#),
    };
    // Nothing there: idempotent success.
    assert_eq!(relay.post(delete(None)).await.0, StatusCode::OK);
    relay.post(send_body(&key, &sealed(&key, "hi"))).await;
    let (status, answer) = relay.post(delete(None)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Answer required")
    );
    let (status, answer) = relay.post(delete(Some(&b64::encode(&[0; 32])))).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "No question")
    );
    let right = relay.answer(&alice).await;
    assert_eq!(relay.post(delete(Some(&right))).await.0, StatusCode::OK);
    let (_, check) = relay.post(check_body(&key, 0)).await;
    assert_eq!(check, json!({"ok": true, "found": false}));
    // The question went with the mailbox.
    let (status, answer) = relay.post(receive_body(&key, &right, 0, 1)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "No question")
    );
    assert_eq!(relay.relay.store().stats().await.unwrap().mailboxes, 0);
}

#[tokio::test]
async fn other_routes() {
    let relay = TestRelay::new(|config| {
        config.contact = Some("mailto:ops@relay.example".into());
        config.peers = vec!["https://relay-b.example/".into()];
        config.connections.max_per_source = 32;
        config.connections.header_timeout = std::time::Duration::from_secs(20);
    });
    let (status, headers, text) = relay.get("/.well-known/connectoid").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let info: RelayInfo = serde_json::from_str(&text).unwrap();
    assert_eq!(info.software, "connectoid-relay");
    assert_eq!(info.protocol, 1);
    assert_eq!(info.udp_port, Some(7447));
    assert_eq!(info.limits.max_message_bytes, 65_536);
    assert_eq!(info.limits.max_checks_per_datagram, 16);
    assert_eq!(info.limits.max_connections_per_source, Some(32));
    assert_eq!(info.limits.idle_timeout_seconds, Some(20));
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(raw["limits"]["max_connections_per_source"], 32);
    assert_eq!(raw["limits"]["idle_timeout_seconds"], 20);
    assert_eq!(info.retention.message_seconds, 3600);
    assert_eq!(info.retention.question_seconds, 60);
    assert_eq!(info.retention.mailbox_idle_seconds, 30 * 86_400);
    assert!(!info.api_key_required);
    assert_eq!(info.contact.as_deref(), Some("mailto:ops@relay.example"));
    assert_eq!(info.peers, ["https://relay-b.example/"]);

    let (status, _, text) = relay.get("/healthz").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, r#"{"ok":true}"#));

    relay
        .post(send_body(&secret(8).public_key(), &[1; 200]))
        .await;
    let (status, headers, text) = relay.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    for name in [
        "connectoid_requests_total{action=\"send\",result=\"ok\"} 1",
        "connectoid_mailboxes 1",
        "connectoid_pending_messages 1",
        "connectoid_stored_bytes 200",
        "connectoid_store_commit_seconds_count 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    let (status, _, text) = relay.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"],
        "Not found"
    );
    // `GET /` says what the server is (operator::get_root_says_what_this_server_is).
    let (status, _, text) = relay.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["api"],
        "POST /"
    );
}

#[tokio::test]
async fn cors_allows_any_origin() {
    use tower::ServiceExt as _;
    let relay = TestRelay::new(|_| {});
    let preflight = axum::http::Request::builder()
        .method("OPTIONS")
        .uri("/")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = relay.router.clone().oneshot(preflight).await.unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let simple = axum::http::Request::post("/")
        .header("origin", "https://app.example")
        .body(axum::body::Body::from("{"))
        .unwrap();
    let response = relay.router.clone().oneshot(simple).await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn api_keys_in_ext() {
    let relay = TestRelay::new(|config| config.api_keys = vec!["paid-key-1".into()]);
    let key = secret(9).public_key();
    let with = |ext: &str| format!(r#"{{"pub":"{key}","ext":{ext},"action":"check"}}"#);
    for ext in ["null", "\"\"", "\"paid-key-2\"", "\"paid-key-1 \""] {
        let (status, answer) = relay.post(with(ext)).await;
        assert_eq!(
            (status, error(&answer)),
            (StatusCode::FORBIDDEN, "Forbidden"),
            "{ext}"
        );
    }
    let (status, _) = relay.post(with("\"paid-key-1\"")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, text) = relay.get("/.well-known/connectoid").await;
    assert!(
        serde_json::from_str::<RelayInfo>(&text)
            .unwrap()
            .api_key_required
    );
}

#[tokio::test]
async fn mailbox_full_at_the_cap_until_messages_expire() {
    let relay = TestRelay::new(|config| config.limits.max_pending_per_mailbox = 3);
    let key = secret(10).public_key();
    for _ in 0..3 {
        assert_eq!(
            relay.post(send_body(&key, &[1; 200])).await.0,
            StatusCode::OK
        );
    }
    let (status, answer) = relay.post(send_body(&key, &[1; 200])).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::TOO_MANY_REQUESTS, "Mailbox full")
    );
    relay.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        relay.post(send_body(&key, &[1; 200])).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn relay_full_at_the_storage_cap() {
    let relay = TestRelay::new(|config| {
        config.limits.max_stored_bytes = 400;
        config.limits.max_mailboxes = 2;
    });
    let (a, b, c) = (
        secret(11).public_key(),
        secret(12).public_key(),
        secret(13).public_key(),
    );
    assert_eq!(relay.post(send_body(&a, &[1; 200])).await.0, StatusCode::OK);
    assert_eq!(relay.post(send_body(&b, &[1; 200])).await.0, StatusCode::OK);
    let (status, answer) = relay.post(send_body(&a, &[1; 200])).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::SERVICE_UNAVAILABLE, "Relay full")
    );
    let (status, answer) = relay.post(send_body(&c, &[1; 113])).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::SERVICE_UNAVAILABLE, "Relay full")
    );
}

#[tokio::test]
async fn receive_limits_are_capped() {
    let relay = TestRelay::new(|config| config.limits.max_receive_limit = 2);
    let alice = secret(14);
    let key = alice.public_key();
    for _ in 0..3 {
        relay.post(send_body(&key, &[1; 200])).await;
    }
    let answer = relay.answer(&alice).await;
    let (_, many) = relay.post(receive_body(&key, &answer, 0, 100)).await;
    assert_eq!(many["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_flood_from_one_source_is_limited_while_others_are_served() {
    let relay = TestRelay::new(|config| config.limits.rate.check_per_ip = Some(Rate::new(60, 5)));
    let key = secret(15).public_key();
    for i in 0..5 {
        let (status, _) = relay.post_from("192.0.2.7", check_body(&key, 0)).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    let (status, answer) = relay.post_from("192.0.2.7", check_body(&key, 0)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::TOO_MANY_REQUESTS, "Too often")
    );
    assert_eq!(
        relay.post_from("192.0.2.8", check_body(&key, 0)).await.0,
        StatusCode::OK
    );
    // IPv6 sources share a bucket per /64.
    for _ in 0..5 {
        assert_eq!(
            relay
                .post_from("2001:db8:1:2::1", check_body(&key, 0))
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        relay
            .post_from("2001:db8:1:2::ffff", check_body(&key, 0))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        relay
            .post_from("2001:db8:1:3::1", check_body(&key, 0))
            .await
            .0,
        StatusCode::OK
    );
    // One token a second comes back with time.
    relay.clock.advance(Duration::from_secs(1));
    assert_eq!(
        relay.post_from("192.0.2.7", check_body(&key, 0)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        relay.post_from("192.0.2.7", check_body(&key, 0)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, _, metrics) = relay.get("/metrics").await;
    assert!(
        metrics.contains("connectoid_rate_limited_total{bucket=\"check_per_ip\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sends_are_limited_per_mailbox_across_sources() {
    let relay = TestRelay::new(|config| {
        config.limits.rate.send_per_mailbox = Some(Rate::new(1, 2));
        config.limits.rate.send_per_ip = Some(Rate::new(1, 3));
    });
    let (a, b) = (secret(16).public_key(), secret(17).public_key());
    assert_eq!(
        relay
            .post_from("192.0.2.1", send_body(&a, &[1; 200]))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        relay
            .post_from("192.0.2.2", send_body(&a, &[1; 200]))
            .await
            .0,
        StatusCode::OK
    );
    let (status, answer) = relay.post_from("192.0.2.3", send_body(&a, &[1; 200])).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::TOO_MANY_REQUESTS, "Too often")
    );
    assert_eq!(answer["detail"], "send_per_mailbox");
    // Per source: 192.0.2.1 has used 1 of 3.
    assert_eq!(
        relay
            .post_from("192.0.2.1", send_body(&b, &[1; 200]))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        relay
            .post_from("192.0.2.1", send_body(&b, &[1; 200]))
            .await
            .0,
        StatusCode::OK
    );
    let (status, answer) = relay.post_from("192.0.2.1", send_body(&b, &[1; 200])).await;
    assert_eq!(
        (status, answer["detail"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("send_per_ip"))
    );
    assert_eq!(relay.relay.store().stats().await.unwrap().messages, 4);
}

#[tokio::test]
async fn messages_expire_after_an_hour() {
    let relay = TestRelay::new(|_| {});
    let alice = secret(18);
    let key = alice.public_key();
    relay.post(send_body(&key, &[1; 200])).await;
    relay
        .clock
        .advance(Duration::from_secs(3600) - Duration::from_micros(1));
    let (_, check) = relay.post(check_body(&key, 0)).await;
    assert_eq!(check["found"], true);
    let answer = relay.answer_of(&alice, &check);
    relay.clock.advance(Duration::from_micros(1));
    let (_, check) = relay.post(check_body(&key, 0)).await;
    assert_eq!(check, json!({"ok": true, "found": false}));
    let (_, got) = relay.post(receive_body(&key, &answer, 0, 1)).await;
    assert_eq!(got, json!({"ok": true, "found": false}));
    let report = relay.relay.sweep().await.unwrap();
    assert_eq!(report.messages_removed, 1);
    assert_eq!(relay.relay.store().stats().await.unwrap().messages, 0);
}

#[tokio::test]
async fn questions_expire_after_a_minute() {
    let relay = TestRelay::new(|_| {});
    let alice = secret(19);
    let key = alice.public_key();
    relay.post(send_body(&key, &[1; 200])).await;
    let (_, first) = relay.post(check_body(&key, 0)).await;
    let old = relay.answer_of(&alice, &first);
    relay.clock.advance(Duration::from_secs(59));
    let (_, same) = relay.post(check_body(&key, 0)).await;
    assert_eq!(same["question"], first["question"]);
    assert_eq!(
        relay.post(receive_body(&key, &old, 0, 1)).await.0,
        StatusCode::OK
    );
    relay.clock.advance(Duration::from_secs(1));
    let (status, answer) = relay.post(receive_body(&key, &old, 0, 1)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "No question")
    );
    let (_, fresh) = relay.post(check_body(&key, 0)).await;
    assert_ne!(fresh["question"], first["question"]);
    let (status, answer) = relay.post(receive_body(&key, &old, 0, 1)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Wrong answer")
    );
    let new = relay.answer_of(&alice, &fresh);
    assert_eq!(
        relay.post(receive_body(&key, &new, 0, 1)).await.0,
        StatusCode::OK
    );
    let (_, _, metrics) = relay.get("/metrics").await;
    assert!(
        metrics.contains("connectoid_questions_made_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_mailboxes_are_deleted_after_thirty_days() {
    let relay = TestRelay::new(|_| {});
    let (a, b) = (secret(20).public_key(), secret(21).public_key());
    relay.post(send_body(&a, &[1; 200])).await;
    relay.post(send_body(&b, &[1; 200])).await;
    let day = Duration::from_secs(86_400);
    relay.clock.advance(29 * day);
    relay.post(check_body(&b, 0)).await;
    relay.relay.sweep().await.unwrap();
    assert_eq!(relay.relay.store().stats().await.unwrap().mailboxes, 2);
    relay.clock.advance(day);
    let report = relay.relay.sweep().await.unwrap();
    assert_eq!(report.mailboxes_removed, 1);
    assert_eq!(relay.relay.store().stats().await.unwrap().mailboxes, 1);
    relay.clock.advance(29 * day);
    relay.relay.sweep().await.unwrap();
    assert_eq!(relay.relay.store().stats().await.unwrap().mailboxes, 0);
}
