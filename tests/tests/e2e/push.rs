//! Push notifications against real relay processes and a real local push
//! receiver (`connectoid_tests::push_receiver`): Web Push arrives encrypted,
//! signed and without message data, once per burst per interval and only
//! for the registered mailbox; 404/410 remove a registration; the request
//! forgery rules refuse loopback endpoints unless the operator allows them;
//! registration needs the owner's answer; registrations survive a restart
//! (redb) and work on Redis.

use std::time::Duration;

use connectoid::protocol::seal::{open_question, seal_message};
use connectoid::protocol::{Answer, PublicKey, RelayUrl, SecretKey, b64};
use connectoid_relay::testing::RedisServer;
use connectoid_tests::push_receiver::PushReceiver;
use connectoid_tests::{RelayCommand, RelayProcess};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn secret(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 48]).unwrap()
}

async fn post(url: &RelayUrl, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url.as_str())
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn send(url: &RelayUrl, key: &PublicKey) {
    let data = seal_message(&mut rand_core::UnwrapErr(getrandom::SysRng), key, b"hello").unwrap();
    let (status, body) = post(
        url,
        &json!({"pub": key.to_string(), "action": "send", "data": b64::encode(&data)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Checks the mailbox and answers its question for the relay at `url`.
async fn answer(url: &RelayUrl, secret: &SecretKey) -> String {
    let key = secret.public_key().to_string();
    let (_, check) = post(url, &json!({"pub": key, "action": "check", "at": 0})).await;
    let question = b64::decode(check["question"].as_str().expect("a question")).unwrap();
    let opened = open_question(secret, &question).unwrap();
    b64::encode(&Answer::for_relay(&opened, url).0)
}

async fn push(url: &RelayUrl, secret: &SecretKey, answer: &str, members: Value) -> (u16, Value) {
    let mut body =
        json!({"pub": secret.public_key().to_string(), "action": "push", "answer": answer});
    for (name, value) in members.as_object().unwrap() {
        body[name] = value.clone();
    }
    post(url, &body).await
}

fn push_relay() -> RelayCommand {
    RelayCommand::new().no_rate_limits().args([
        "--push",
        "--push-allow-private",
        "--push-min-interval",
        "2",
    ])
}

async fn vapid_key(relay: &RelayProcess) -> String {
    let info: Value = reqwest::get(format!("{}.well-known/connectoid", relay.url().as_str()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["push"]["min_interval_seconds"], 2);
    info["push"]["vapid_public_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn web_push_arrives_once_per_burst_encrypted_signed_and_without_message_data() {
    let receiver = PushReceiver::start().await.unwrap();
    let relay = push_relay().start().unwrap();
    let url = relay.url();
    let vapid = vapid_key(&relay).await;
    let (owner, other) = (secret(1), secret(2));
    for who in [&owner, &other] {
        send(&url, &who.public_key()).await;
    }
    let owner_answer = answer(&url, &owner).await;
    let (status, body) = push(
        &url,
        &owner,
        &owner_answer,
        json!({"push": "register", "endpoint": receiver.endpoint("/owner"), "keys": receiver.web_push_keys()}),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"ok": true})));
    let (status, listed) = push(&url, &owner, &owner_answer, json!({"push": "list"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["push"],
        json!([{"kind": "webpush", "endpoint": receiver.endpoint("/owner")}])
    );

    // A burst of three sends: one push at once, one more when the interval
    // is over (for the messages after the first), none for the other mailbox.
    for _ in 0..3 {
        send(&url, &owner.public_key()).await;
    }
    send(&url, &other.public_key()).await;
    let first = receiver.wait_for("/owner", 1, WAIT).await;
    assert_eq!(first.len(), 1, "the first push arrives");
    let all = receiver.wait_for("/owner", 3, Duration::from_secs(5)).await;
    assert_eq!(
        all.len(),
        2,
        "one push at once and one at the interval's end"
    );
    assert!(all[1].at.duration_since(all[0].at) >= Duration::from_millis(1900));
    assert_eq!(receiver.received().len(), 2, "nothing for other endpoints");
    for received in &all {
        assert_eq!(
            received.open(&receiver, &vapid, &receiver.audience()),
            b"check"
        );
        let ttl: u64 = received.header("ttl").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&ttl), "TTL within the message's life");
        assert_eq!(received.header("topic"), Some("connectoid"));
        // The ciphertext is the same length whatever the message.
        assert_eq!(received.body.len(), all[0].body.len());
    }

    // Removed by the owner: no more pushes.
    let (status, _) = push(&url, &owner, &owner_answer, json!({"push": "remove"})).await;
    assert_eq!(status, 200);
    let (_, listed) = push(&url, &owner, &owner_answer, json!({"push": "list"})).await;
    assert_eq!(listed["push"], json!([]));
}

#[tokio::test]
async fn refusals_push_off_loopback_endpoints_wrong_or_missing_answers() {
    let receiver = PushReceiver::start().await.unwrap();
    let owner = secret(3);
    let register = |endpoint: String| json!({"push": "register", "endpoint": endpoint});

    // Push off: "Push disabled".
    let off = RelayCommand::new().no_rate_limits().start().unwrap();
    send(&off.url(), &owner.public_key()).await;
    let answer_off = answer(&off.url(), &owner).await;
    let (status, body) = push(&off.url(), &owner, &answer_off, json!({"push": "list"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (501, Some("Push disabled"))
    );

    // Push on, private endpoints not allowed: loopback refused however named.
    let strict = RelayCommand::new()
        .no_rate_limits()
        .args(["--push"])
        .start()
        .unwrap();
    let url = strict.url();
    send(&url, &owner.public_key()).await;
    let good = answer(&url, &owner).await;
    let port = receiver.endpoint("").rsplit(':').next().unwrap().to_owned();
    for endpoint in [
        receiver.endpoint("/x"),
        format!("https://127.0.0.1:{port}/x"),
        format!("https://localhost:{port}/x"),
        format!("https://[::1]:{port}/x"),
        "https://10.0.0.1/x".to_owned(),
        "https://169.254.169.254/latest".to_owned(),
    ] {
        let (status, body) = push(&url, &owner, &good, register(endpoint.clone())).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("Endpoint refused")),
            "{endpoint}: {body}"
        );
    }

    // Allowed endpoints, but no proof of ownership.
    let relay = push_relay().start().unwrap();
    let url = relay.url();
    send(&url, &owner.public_key()).await;
    let wrong = b64::encode(&[7u8; 32]);
    let (status, body) = push(&url, &owner, &wrong, register(receiver.endpoint("/x"))).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("No question")));
    let _ = answer(&url, &owner).await;
    let (status, body) = push(&url, &owner, &wrong, register(receiver.endpoint("/x"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("Wrong answer"))
    );
    // Another mailbox's right answer is not this one's.
    let stranger = secret(4);
    send(&url, &stranger.public_key()).await;
    let theirs = answer(&url, &stranger).await;
    let (status, body) = push(&url, &owner, &theirs, register(receiver.endpoint("/x"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("Wrong answer"))
    );
    send(&url, &owner.public_key()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.received().is_empty(), "nothing was registered");
}

/// UnifiedPush on `relay`: register, a send POSTs the fixed body; then the
/// push service says 410 and the registration is gone.
async fn unified_push_until_gone(relay: &RelayProcess, receiver: &PushReceiver, owner: &SecretKey) {
    let url = relay.url();
    let good = answer(&url, owner).await;
    let (_, listed) = push(&url, owner, &good, json!({"push": "list"})).await;
    assert_eq!(
        listed["push"],
        json!([{"kind": "unifiedpush", "endpoint": receiver.endpoint("/up")}])
    );
    let before = receiver.received_at("/up").len();
    send(&url, &owner.public_key()).await;
    let got = receiver.wait_for("/up", before + 1, WAIT).await;
    assert_eq!(got.len(), before + 1, "the push arrives");
    assert_eq!(
        got[before].body, b"check",
        "a constant body, no message data"
    );
    assert!(got[before].header("authorization").is_none());

    receiver.answer_with(410);
    tokio::time::sleep(Duration::from_millis(2100)).await; // the interval
    send(&url, &owner.public_key()).await;
    receiver.wait_for("/up", before + 2, WAIT).await;
    let mut listed = json!(null);
    for _ in 0..50 {
        listed = push(&url, owner, &good, json!({"push": "list"})).await.1;
        if listed["push"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["push"], json!([]), "410 removed the registration");
    let metrics = reqwest::get(format!("{}metrics", url.as_str()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"connectoid_pushes_total{result="removed"} 1"#),
        "{metrics}"
    );
}

async fn register_unified(relay: &RelayProcess, receiver: &PushReceiver, owner: &SecretKey) {
    let url = relay.url();
    send(&url, &owner.public_key()).await;
    let good = answer(&url, owner).await;
    let (status, body) = push(
        &url,
        owner,
        &good,
        json!({"push": "register", "endpoint": receiver.endpoint("/up")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn registrations_survive_a_restart_and_410_removes_them() {
    let receiver = PushReceiver::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let owner = secret(5);
    let mut relay = push_relay().data_dir(data.path()).start().unwrap();
    register_unified(&relay, &receiver, &owner).await;
    let vapid = vapid_key(&relay).await;
    relay.stop().unwrap();
    let relay = push_relay().data_dir(data.path()).start().unwrap();
    assert_eq!(vapid_key(&relay).await, vapid, "the VAPID key is kept");
    let mode = std::fs::metadata(data.path().join("vapid-key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    unified_push_until_gone(&relay, &receiver, &owner).await;
}

#[tokio::test]
async fn push_works_on_redis() {
    let Some(redis) = RedisServer::start("push_works_on_redis") else {
        return;
    };
    let receiver = PushReceiver::start().await.unwrap();
    let owner = secret(6);
    let relay = push_relay()
        .args(["--store", redis.url().as_str()])
        .start()
        .unwrap();
    register_unified(&relay, &receiver, &owner).await;
    unified_push_until_gone(&relay, &receiver, &owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unified_push_registration_through_the_cli_receives_a_post() {
    use crate::cli::{json_lines, ok, poll_for};
    let receiver = PushReceiver::start().await.unwrap();
    let relay = push_relay().start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());
    ok(alice, &["relays", "add", relay.url().as_str()]);
    let link = ok(alice, &["share", "Bob"]).trim().to_owned();
    ok(bob, &["accept", &link, "Alice"]);
    poll_for(alice, |e| e["event"] == "peer-connected");

    let endpoint = receiver.endpoint("/cli");
    let registered = json_lines(alice, &["push", "register", &endpoint]);
    let outcomes = registered[0].as_array().unwrap();
    assert!(
        outcomes.iter().any(|o| o["ok"] == json!(true)),
        "{registered:?}"
    );
    let listed = json_lines(alice, &["push", "list"]);
    assert!(
        listed[0]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["push"] == json!([{"kind": "unifiedpush", "endpoint": endpoint}])),
        "{listed:?}"
    );
    ok(bob, &["send", "Alice", "\"hello\""]);
    let got = receiver.wait_for("/cli", 1, WAIT).await;
    assert_eq!(got.len(), 1, "the relay POSTed to the registered endpoint");
    assert_eq!(got[0].body, b"check");
    ok(alice, &["push", "remove"]);
    let listed = json_lines(alice, &["push", "list"]);
    assert!(
        listed[0]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["push"] == json!([]) || o["ok"] == json!(false)),
        "{listed:?}"
    );
}
