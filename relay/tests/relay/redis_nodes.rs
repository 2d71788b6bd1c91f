//! Several relay processes (the real binary) on one Redis, as behind a load
//! balancer: a message sent through one node is checked and received
//! through the other, questions and rate limits are shared, concurrent sends
//! through both nodes get distinct increasing `at`s, and a Redis outage gives
//! 503 until Redis is back, without restarting the relays.
//!
//! Every test starts its own `redis-server` (see `connectoid_relay::testing::RedisServer`);
//! without it they are skipped, except under `CI=true`.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::common::*;
use connectoid_protocol::{RelayUrl, SecretKey, b64};
use connectoid_relay::testing::RedisServer;
use serde_json::Value;

/// The URL every node is published under (the load balancer's).
const PUBLIC: &str = "http://relay.test/";

/// A relay process; killed on drop.
struct Node {
    _process: RelayProcess,
    http: SocketAddr,
}

impl Node {
    /// Starts the binary on `store`, published under [`PUBLIC`], with every
    /// rate limit off unless `extra` sets it (`--send-rate-mailbox 1:3`),
    /// and with the other flags of `extra`.
    fn start(store: &str, extra: &[&str]) -> Self {
        let mut args: Vec<&str> = vec!["--store", store];
        for flag in [
            "--send-rate-ip",
            "--send-rate-mailbox",
            "--check-rate-ip",
            "--check-rate-mailbox",
        ] {
            if !extra.contains(&flag) {
                args.extend([flag, "off"]);
            }
        }
        if !extra.contains(&"--url") {
            args.extend(["--url", PUBLIC]);
        }
        args.extend(extra);
        let process = relay_command()
            .args(args)
            .log("error,tower_http=off")
            .start()
            .unwrap();
        Self {
            http: process.http_addr(),
            _process: process,
        }
    }

    async fn post(&self, body: &str) -> (u16, Value) {
        http_post(self.http, body).await.unwrap()
    }

    async fn send(&self, key: &SecretKey, data: &[u8]) -> (u16, Value) {
        self.post(&send_body(&key.public_key(), data)).await
    }

    async fn check(&self, key: &SecretKey, at: u64) -> (u16, Value) {
        self.post(&check_body(&key.public_key(), at)).await
    }

    /// `GET /healthz`: the status code.
    async fn health(&self) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.http).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

fn url(text: &str) -> RelayUrl {
    RelayUrl::parse(text).unwrap()
}

/// Every message of `key`'s mailbox through `node`: check, answer for
/// `answer_url`, then receive in pages of 100. `(at, data)`, oldest first.
async fn receive_all(node: &Node, key: &SecretKey, answer_url: &str) -> Vec<(u64, Vec<u8>)> {
    let (status, check) = node.check(key, 0).await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["found"], true, "{check}");
    let answer = answer_of(key, &check, &url(answer_url));
    let mut at = 0;
    let mut all = Vec::new();
    for _ in 0..1_000 {
        let (status, page) = node
            .post(&receive_body(&key.public_key(), &answer, at, 100))
            .await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        for message in messages {
            at = message["at"].as_u64().unwrap();
            all.push((at, b64::decode(message["data"].as_str().unwrap()).unwrap()));
        }
        if messages.len() < 100 {
            return all;
        }
    }
    panic!("more pages than messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_through_one_node_is_received_through_the_other() {
    let Some(redis) = RedisServer::start("two nodes") else {
        return;
    };
    let store = redis.url();
    // Both nodes are published under the load balancer's URL; B also under
    // a name of its own.
    let a = Node::start(&store, &[]);
    let b = Node::start(&store, &["--url", PUBLIC, "--url", "http://b.relay.test/"]);
    let owner = secret(11);
    let data = sealed(&owner.public_key(), "through A");

    let (status, sent) = a.send(&owner, &data).await;
    assert_eq!(status, 200, "{sent}");
    let (status, on_b) = b.check(&owner, 0).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b["found"], true, "B sees what A stored");
    // One question for the mailbox, whichever node is asked.
    let (_, on_a) = a.check(&owner, 0).await;
    assert_eq!(on_a["question"], on_b["question"]);

    let received = receive_all(&b, &owner, PUBLIC).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].1, data);
    // The question fetched through A, answered for B's own URL, works on B
    // (and an answer for B's URL is, rightly, wrong on A).
    let answer_b = answer_of(&owner, &on_a, &url("http://b.relay.test/"));
    let (status, page) = b
        .post(&receive_body(&owner.public_key(), &answer_b, 0, 10))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let (status, wrong) = a
        .post(&receive_body(&owner.public_key(), &answer_b, 0, 10))
        .await;
    assert_eq!(
        (status, wrong["error"].as_str()),
        (403, Some("Wrong answer"))
    );
    // Nothing new after the received message, on either node.
    let at = received[0].0;
    assert_eq!(a.check(&owner, at).await.1["found"], false);
    assert_eq!(b.check(&owner, at).await.1["found"], false);

    // A delete through A (with the answer) is seen by B.
    let answer = answer_of(&owner, &on_a, &url(PUBLIC));
    let body = format!(
        r#"{{"pub": "{}", "action": "delete", "answer": "{answer}"}}"#,
        owner.public_key()
    );
    assert_eq!(a.post(&body).await.0, 200);
    assert_eq!(b.check(&owner, 0).await.1["found"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sends_through_two_nodes_get_distinct_increasing_ats() {
    let Some(redis) = RedisServer::start("1000 sends") else {
        return;
    };
    let store = redis.url();
    let nodes = [
        Node::start(&store, &["--max-pending", "2000"]),
        Node::start(&store, &["--max-pending", "2000"]),
    ];
    let owner = secret(12);
    let key = owner.public_key();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..1_000u32 {
        let http = nodes[(i % 2) as usize].http;
        let mut data = vec![0u8; 120];
        data[..4].copy_from_slice(&i.to_be_bytes());
        let body = send_body(&key, &data);
        sends.spawn(async move { (data, http_post(http, &body).await) });
    }
    let mut sent = HashSet::new();
    while let Some(joined) = sends.join_next().await {
        let (data, result) = joined.unwrap();
        let (status, body) = result.unwrap();
        assert_eq!(status, 200, "{body}");
        sent.insert(data);
    }
    assert_eq!(sent.len(), 1_000);

    let received = receive_all(&nodes[1], &owner, PUBLIC).await;
    assert_eq!(received.len(), 1_000, "every acknowledged send is stored");
    for pair in received.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "at {} then {}: not strictly increasing",
            pair[0].0,
            pair[1].0
        );
    }
    let received: HashSet<Vec<u8>> = received.into_iter().map(|(_, data)| data).collect();
    assert_eq!(received, sent, "exactly the messages sent, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_reached_through_one_node_holds_on_the_other() {
    let Some(redis) = RedisServer::start("shared rate limits") else {
        return;
    };
    let store = redis.url();
    // One token a minute and bursts of three sends per mailbox and five
    // checks per source: the test never waits long enough for a refill.
    // Send buckets are shared by the nodes; check buckets are per node.
    let rates = [
        "--send-rate-mailbox",
        "1:3",
        "--check-rate-ip",
        "1:5",
        "--check-rate-mailbox",
        "off",
        "--send-rate-ip",
        "off",
    ];
    let a = Node::start(&store, &rates);
    let b = Node::start(&store, &rates);
    let owner = secret(13);
    let data = sealed(&owner.public_key(), "limited");

    for node in [&a, &b, &a] {
        assert_eq!(node.send(&owner, &data).await.0, 200);
    }
    for node in [&b, &a] {
        let (status, body) = node.send(&owner, &data).await;
        assert_eq!((status, body["error"].as_str()), (429, Some("Too often")));
        assert_eq!(body["detail"], "send_per_mailbox");
    }
    // Another mailbox has its own bucket.
    let other = secret(14);
    assert_eq!(
        b.send(&other, &sealed(&other.public_key(), "x")).await.0,
        200
    );

    // Check buckets stay on each node (a check must cost at most one Redis
    // round trip): five checks from this source exhaust node A's bucket,
    // and node B still has its own five.
    for _ in 0..5 {
        assert_eq!(a.check(&owner, 0).await.0, 200);
    }
    let (status, body) = a.check(&owner, 0).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("Too often")));
    assert_eq!(body["detail"], "check_per_ip");
    for _ in 0..5 {
        assert_eq!(b.check(&owner, 0).await.0, 200);
    }
    let (status, body) = b.check(&owner, 0).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("Too often")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_gives_503_and_the_nodes_recover_by_themselves() {
    // AOF with an fsync per write: what Redis acknowledged survives its crash.
    let Some(mut redis) = RedisServer::start_with(
        "redis outage",
        &["--appendonly", "yes", "--appendfsync", "always"],
    ) else {
        return;
    };
    let store = format!("{}?timeout_ms=500", redis.url());
    let a = Node::start(&store, &[]);
    let b = Node::start(&store, &[]);
    let owner = secret(15);
    let before = sealed(&owner.public_key(), "before the outage");
    assert_eq!(a.send(&owner, &before).await.0, 200);
    assert_eq!(a.health().await, 200);

    redis.stop();
    for _ in 0..3 {
        for node in [&a, &b] {
            let (status, body) = node.send(&owner, &before).await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"], "Unavailable", "{body}");
            assert_eq!(body["detail"], "storage is unavailable", "{body}");
            let (status, body) = node.check(&owner, 0).await;
            assert_eq!((status, body["error"].as_str()), (503, Some("Unavailable")));
            assert_eq!(node.health().await, 503);
        }
    }

    redis.restart();
    // Each node may fail a request or two while it reconnects.
    for node in [&a, &b] {
        let mut healthy = false;
        for _ in 0..400 {
            if node.check(&owner, 0).await.0 == 200 {
                healthy = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(healthy, "the node serves again once Redis is back");
        assert_eq!(node.health().await, 200);
    }
    // The message acknowledged before the crash is still there (AOF, fsync
    // always), and new sends work through both nodes.
    let after = sealed(&owner.public_key(), "after the outage");
    assert_eq!(b.send(&owner, &after).await.0, 200);
    let received: Vec<Vec<u8>> = receive_all(&a, &owner, PUBLIC)
        .await
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(received, vec![before, after]);
}
