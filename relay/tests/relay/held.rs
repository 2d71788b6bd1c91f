//! Held checks against the real relay binary (`spec/relay.md` §5.2): a
//! held check answers when a message is sent to any mailbox it names, at
//! the end of its (shortened) wait, and at once when the relay shuts down;
//! the caps refuse with "Too often"; the header timeout does not cut a held
//! request; and on Redis a send through one node wakes a check held on
//! another.
//!
//! Waiting is observed through `GET /metrics` (`connectoid_held_checks`),
//! never by sleeping and hoping. The time bounds asserted are wide (a held
//! check of 30 s answering within 10 s), so a loaded machine does not make
//! them flaky.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use connectoid_protocol::{PublicKey, SecretKey};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A held check body: `key` with `wait` seconds, and `also` the others.
fn held_body(key: &PublicKey, at: u64, wait: u64, also: &[(&PublicKey, u64)]) -> String {
    let also: Vec<Value> = also
        .iter()
        .map(|(key, at)| serde_json::json!({"pub": key.to_string(), "at": at}))
        .collect();
    serde_json::json!({
        "pub": key.to_string(),
        "action": "check",
        "at": at,
        "wait": wait,
        "also": also,
    })
    .to_string()
}

/// `GET /metrics` of the relay at `addr`.
async fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await
}

/// Waits until the relay at `addr` holds `count` checks.
async fn until_held(addr: SocketAddr, count: u32) {
    let line = format!("connectoid_held_checks {count}\n");
    for _ in 0..400 {
        if metrics(addr).await.contains(&line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the relay never held {count} checks:\n{}",
        metrics(addr).await
    );
}

fn start(extra: &[&str]) -> RelayProcess {
    relay_command()
        .no_rate_limits()
        .args(extra)
        .log("error,tower_http=off")
        .start()
        .unwrap()
}

/// Posts a held check in a task: its answer and how long it took.
fn hold(addr: SocketAddr, body: String) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    tokio::spawn(async move {
        let started = Instant::now();
        let (status, json) = http_post(addr, &body).await.unwrap();
        (status, json, started.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_check_answers_when_a_message_arrives_for_any_of_its_mailboxes() {
    let relay = start(&[]);
    let addr = relay.http_addr();
    let (a, b, c) = (secret(11), secret(12), secret(13));
    let held = hold(
        addr,
        held_body(
            &a.public_key(),
            0,
            30,
            &[(&b.public_key(), 0), (&c.public_key(), 0)],
        ),
    );
    until_held(addr, 1).await;
    let (status, sent) = http_post(
        addr,
        &send_body(&b.public_key(), &sealed(&b.public_key(), "hi")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{sent}");
    let (status, answer, took) = held.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["found"], true, "{answer}");
    let checks = answer["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{answer}");
    assert_eq!(checks[0]["pub"], b.public_key().to_string());
    // The question opens with b's key, as a plain check's would.
    answer_of(&b, &checks[0], &connectoid_relay::testing::url_of(addr));
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} of a 30 s wait"
    );
    until_held(addr, 0).await;

    // A message already there (after the cursor) is answered at once,
    // with the questions of every mailbox that has one, in request order.
    http_post(
        addr,
        &send_body(&a.public_key(), &sealed(&a.public_key(), "x")),
    )
    .await
    .unwrap();
    let (status, answer) = http_post(
        addr,
        &held_body(
            &a.public_key(),
            0,
            30,
            &[(&b.public_key(), 0), (&c.public_key(), 0)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let named: Vec<&str> = answer["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pub"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        [a.public_key().to_string(), b.public_key().to_string()]
    );
    assert!(
        metrics(addr)
            .await
            .contains("connectoid_held_checks_answered_total{result=\"found\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_check_ends_found_false_at_the_relays_maximum_wait_even_past_the_header_timeout() {
    // The wait asked (30 s) is shortened to the relay's 2 s; the header
    // timeout (1 s) applies to headers, not to a request being answered.
    let relay = start(&["--held-max-wait", "2", "--header-timeout", "1"]);
    let addr = relay.http_addr();
    let info = get_info(addr).await;
    assert_eq!(info["held_check"]["max_wait_seconds"], 2, "{info}");
    let key = secret(21).public_key();
    let (status, answer, took) = hold(addr, held_body(&key, 0, 30, &[])).await.unwrap();
    assert_eq!(
        (status, &answer),
        (200, &serde_json::json!({"ok": true, "found": false}))
    );
    assert!(
        took >= Duration::from_millis(1_900),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    assert!(
        metrics(addr)
            .await
            .contains("connectoid_held_checks_answered_total{result=\"timeout\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_checks_off_answer_at_once_and_are_not_advertised() {
    let relay = start(&["--held-max-wait", "0"]);
    let addr = relay.http_addr();
    assert!(get_info(addr).await.get("held_check").is_none());
    let key = secret(22).public_key();
    let (status, answer, took) = hold(addr, held_body(&key, 0, 30, &[])).await.unwrap();
    assert_eq!((status, answer["found"].clone()), (200, Value::Bool(false)));
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_held_checks_at_once() {
    let mut relay = start(&[]);
    let addr = relay.http_addr();
    let held: Vec<_> = (0..3)
        .map(|n| hold(addr, held_body(&secret(30 + n).public_key(), 0, 30, &[])))
        .collect();
    until_held(addr, 3).await;
    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || relay.stop().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    for held in held {
        let (status, answer, _) = held.await.unwrap();
        assert_eq!((status, answer["found"].clone()), (200, Value::Bool(false)));
    }
    // Well below the 30 s wait and the 10 s shutdown grace period.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_refuse_held_checks_with_too_often() {
    let relay = start(&["--held-max-per-ip", "2", "--held-max-total", "3"]);
    let addr = relay.http_addr();
    // Two from 127.0.0.1 wait; a third from it is refused.
    let first: Vec<_> = (0..2)
        .map(|n| hold(addr, held_body(&secret(40 + n).public_key(), 0, 30, &[])))
        .collect();
    until_held(addr, 2).await;
    let (status, refused) = http_post(addr, &held_body(&secret(43).public_key(), 0, 30, &[]))
        .await
        .unwrap();
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"], "Too often");
    assert_eq!(
        refused["detail"],
        "held checks: 2 from this address are already waiting"
    );
    // Another source (127.0.0.2 is loopback too, and another IPv4 address)
    // takes the last place of the total, then the total is full for it.
    let other = held_from(
        addr,
        "127.0.0.2",
        held_body(&secret(44).public_key(), 0, 30, &[]),
    );
    until_held(addr, 3).await;
    let (status, refused) = post_from(
        addr,
        "127.0.0.2",
        &held_body(&secret(45).public_key(), 0, 30, &[]),
    )
    .await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(
        refused["detail"],
        "held checks: the relay already holds its maximum of 3"
    );
    // A plain check still works: the caps are on waiting, not on checking.
    let (status, plain) = http_post(addr, &check_body(&secret(46).public_key(), 0))
        .await
        .unwrap();
    assert_eq!((status, plain["found"].clone()), (200, Value::Bool(false)));
    let text = metrics(addr).await;
    assert!(
        text.contains("connectoid_held_checks_refused_total{limit=\"per_source\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("connectoid_held_checks_refused_total{limit=\"total\"} 1"),
        "{text}"
    );
    // A waiting client that goes away gives its place back.
    for task in first {
        task.abort();
    }
    other.abort();
    until_held(addr, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_held_checks_are_bad_values() {
    let relay = start(&[]);
    let addr = relay.http_addr();
    let key = secret(50).public_key();
    let too_many: Vec<SecretKey> = (51..67).map(secret).collect();
    let too_many: Vec<(PublicKey, u64)> = too_many.iter().map(|k| (k.public_key(), 0)).collect();
    let refs: Vec<(&PublicKey, u64)> = too_many.iter().map(|(k, at)| (k, *at)).collect();
    let (status, answer) = http_post(addr, &held_body(&key, 0, 30, &refs))
        .await
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["detail"], "also: 16 mailboxes, the maximum is 15");
    let (status, answer) = http_post(addr, &held_body(&key, 0, 30, &[(&key, 0)]))
        .await
        .unwrap();
    assert_eq!((status, answer["error"].as_str()), (400, Some("Bad value")));
}

/// The information document of the relay at `addr`.
async fn get_info(addr: SocketAddr) -> Value {
    let response = http_get(addr, "/.well-known/connectoid").await;
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// POSTs `body` from the local address `ip` (another loopback address).
async fn post_from(addr: SocketAddr, ip: &str, body: &str) -> (u16, Value) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

fn held_from(
    addr: SocketAddr,
    ip: &'static str,
    body: String,
) -> tokio::task::JoinHandle<(u16, Value)> {
    tokio::spawn(async move { post_from(addr, ip, &body).await })
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_through_one_redis_node_wakes_a_check_held_on_another() {
    let Some(redis) = connectoid_relay::testing::RedisServer::start("held across nodes") else {
        return;
    };
    let store = redis.url();
    let node_a = start(&["--store", &store]);
    let node_b = start(&["--store", &store]);
    let key = secret(60);
    let held = hold(node_b.http_addr(), held_body(&key.public_key(), 0, 30, &[]));
    until_held(node_b.http_addr(), 1).await;
    let (status, _) = http_post(
        node_a.http_addr(),
        &send_body(&key.public_key(), &sealed(&key.public_key(), "hello")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (status, answer, took) = held.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["checks"][0]["pub"],
        key.public_key().to_string(),
        "{answer}"
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} of a 30 s wait"
    );
}
