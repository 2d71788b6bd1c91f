//! The resilience suite: real `connectoid-relay` processes on loopback,
//! killed with SIGKILL under load, flooded, fed garbage, and restarted while
//! a client polls. Every test is bounded in rounds and request counts; no
//! test asserts on wall-clock time. Random choices print their seed.
//!
//! - `kill_9_under_send_load_loses_no_acknowledged_message`
//! - `a_flood_from_one_source_leaves_other_sources_served`
//! - `corpus_and_random_inputs_never_crash_the_relay`
//! - `a_restart_during_polling_loses_and_duplicates_nothing`
//! - [`storage`]: a full disk and damaged database files
//! - `slow_clients`: trickled headers, unfinished bodies, the connection cap
//! - `lockout`: a stranger who knows a mailbox's key against its owner
//! - `connection_flood`: memory after rounds of 10,000 connections

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectoid::{Client, Event, Kind, ShareOptions};
use connectoid_protocol::api::{Action, Response};
use connectoid_protocol::seal::open_question;
use connectoid_protocol::udp::{CheckRequest, MailboxCheck};
use connectoid_protocol::{Answer, PublicKey, RelayUrl, SecretKey, b64};
use connectoid_tests::bench::load::HttpConn;
use connectoid_tests::bench::proc::{RelayOptions, ServerProcess};
use connectoid_tests::bench::scenarios::{check_body, secret_key, send_body};
use connectoid_tests::{entries, init_tracing, relay_binary, url_of};
use serde_json::json;

mod connection_flood;
mod lockout;
mod slow_clients;
mod storage;

/// A small xorshift generator, seeded from the OS and printed, so a failing
/// run can be replayed with `RESILIENCE_SEED`.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Self {
        let seed = std::env::var("RESILIENCE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).unwrap();
                u64::from_le_bytes(bytes) | 1
            });
        eprintln!("{test}: RESILIENCE_SEED={seed}");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max) as usize;
        self.bytes(len)
    }
}

fn relay(data: &Path) -> RelayOptions {
    RelayOptions::new(&relay_binary().unwrap(), data).with(&["--max-pending", "100000"])
}

/// Every message stored in `key`'s mailbox (answering its question).
async fn receive_all(addr: SocketAddr, secret: &SecretKey) -> anyhow::Result<Vec<Vec<u8>>> {
    let key = secret.public_key();
    let url = url_of(addr);
    let mut conn = HttpConn::connect(addr).await?;
    let check = conn.post(&check_body(&key, 0), false).await?;
    let value: serde_json::Value = serde_json::from_slice(&check.body)?;
    let Some(question) = value["question"].as_str() else {
        return Ok(Vec::new());
    };
    let secret_bytes = open_question(secret, &b64::decode(question)?)
        .map_err(|e| anyhow::anyhow!("open question: {e}"))?;
    let answer = b64::encode(&Answer::for_relay(&secret_bytes, &url).0);
    let mut out = Vec::new();
    let mut at = 0u64;
    loop {
        let body = format!(
            r#"{{"pub":"{key}","action":"receive","answer":"{answer}","at":{at},"limit":100}}"#
        );
        let reply = conn.post(body.as_bytes(), false).await?;
        let messages = Response::from_json(Action::Receive, &reply.body)?
            .into_messages()
            .ok_or_else(|| {
                anyhow::anyhow!("receive failed: {}", String::from_utf8_lossy(&reply.body))
            })?;
        let done = messages.len() < 100;
        for message in messages {
            at = message.at.0;
            out.push(message.data);
        }
        if done {
            return Ok(out);
        }
    }
}

/// A message body: sender, sequence number, padding to a sealed size.
fn tagged(sender: u64, n: u64) -> Vec<u8> {
    let mut data = vec![0u8; 128];
    data[..8].copy_from_slice(&sender.to_be_bytes());
    data[8..16].copy_from_slice(&n.to_be_bytes());
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_send_load_loses_no_acknowledged_message() -> anyhow::Result<()> {
    init_tracing();
    const ROUNDS: usize = 6;
    const SENDERS: u64 = 8;
    let mut rng = Rng::new("kill_9");
    let data = tempfile::tempdir()?;
    let mut options = relay(data.path());
    options.udp = None;
    let mut process = options.start()?;
    let secrets: Vec<SecretKey> = (1..=SENDERS).map(|n| secret_key(1000 + n)).collect();
    let keys: Vec<PublicKey> = secrets.iter().map(SecretKey::public_key).collect();
    // Every (sender, n) the relay acknowledged.
    let acked: Arc<Mutex<BTreeSet<(u64, u64)>>> = Arc::default();
    let mut next_n = vec![0u64; SENDERS as usize];
    for round in 0..ROUNDS {
        let base = acked.lock().unwrap().len() as u64;
        let addr = process.http_addr()?;
        let mut tasks = Vec::new();
        for sender in 0..SENDERS {
            let key = keys[sender as usize];
            let acked = Arc::clone(&acked);
            let start = next_n[sender as usize];
            tasks.push(tokio::spawn(async move {
                // Send until the relay dies (bounded: at most 2000 per round).
                let Ok(mut conn) = HttpConn::connect(addr).await else {
                    return start;
                };
                let mut n = start;
                while n < start + 2000 {
                    let body = send_body(&key, &tagged(sender, n));
                    n += 1;
                    match conn.post(&body, false).await {
                        Ok(answer) if answer.status == 200 => {
                            acked.lock().unwrap().insert((sender, n - 1));
                        }
                        Ok(answer) => panic!(
                            "send refused: {} {}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                        ),
                        Err(_) => break,
                    }
                }
                n
            }));
        }
        // A random moment: after a random number of acknowledgements.
        let threshold = base + 10 + rng.below(150);
        for _ in 0..2000 {
            if acked.lock().unwrap().len() as u64 >= threshold {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_micros(rng.below(20_000))).await;
        process.kill();
        for (sender, task) in tasks.into_iter().enumerate() {
            next_n[sender] = task.await?;
        }
        process = options.restart(&process)?;
        // Everything acknowledged so far is there after the restart.
        let addr = process.http_addr()?;
        let acked_now = acked.lock().unwrap().clone();
        for (sender, secret) in secrets.iter().enumerate() {
            let stored: HashSet<Vec<u8>> = receive_all(addr, secret).await?.into_iter().collect();
            for &(s, n) in acked_now.iter().filter(|(s, _)| *s == sender as u64) {
                assert!(
                    stored.contains(&tagged(s, n)),
                    "round {round}: acknowledged message {n} of sender {s} lost after kill -9"
                );
            }
        }
        eprintln!(
            "round {round}: {} acknowledged messages, all present",
            acked_now.len()
        );
    }
    assert!(
        acked.lock().unwrap().len() >= ROUNDS * 10,
        "too few sends were acknowledged to mean anything"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_leaves_other_sources_served() -> anyhow::Result<()> {
    init_tracing();
    let data = tempfile::tempdir()?;
    // The default rate limits: this is what they are for.
    let mut options = relay(data.path());
    options.no_rate_limits = false;
    let process = options.start()?;
    let (addr, udp) = (process.http_addr()?, process.udp_addr()?);
    let flood_keys: Vec<PublicKey> = (1..=16)
        .map(|n| secret_key(2000 + n).public_key())
        .collect();
    // Pre-flood memory, after a little traffic.
    let mut warm = HttpConn::connect(addr).await?;
    for key in &flood_keys {
        warm.post(&check_body(key, 0), false).await?;
    }
    let rss_before = process.rss_bytes()?;

    // The flood: 127.0.0.1, HTTP on 8 connections and UDP on 4 sockets, each
    // a bounded number of requests, answered or refused as the relay likes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for worker in 0..8usize {
        let (stop, body) = (
            Arc::clone(&stop),
            send_body(&flood_keys[worker], &tagged(worker as u64, 0)),
        );
        let check = check_body(&flood_keys[worker + 8], 0);
        flood.push(tokio::spawn(async move {
            let mut refused = 0u64;
            let mut conn = HttpConn::connect(addr).await.ok();
            for i in 0..3000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if conn.is_none() {
                    conn = HttpConn::connect(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                let request = if i % 2 == 0 { &body } else { &check };
                match c.post(request, false).await {
                    Ok(answer) if answer.status == 429 => refused += 1,
                    Ok(_) => {}
                    Err(_) => conn = None,
                }
            }
            refused
        }));
    }
    for worker in 0..4u8 {
        let stop = Arc::clone(&stop);
        let datagram = CheckRequest {
            nonce: [worker; 16],
            ext: None,
            checks: flood_keys
                .iter()
                .map(|k| MailboxCheck {
                    key: *k.as_bytes(),
                    at: connectoid_protocol::At(0),
                })
                .collect(),
        }
        .encode();
        flood.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for _ in 0..20_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = socket.send_to(&datagram, udp).await;
                tokio::task::yield_now().await;
            }
            0
        }));
    }

    // Other clients from 127.0.0.2..4: each checks its own mailboxes and
    // sends a few messages, within the default per-source budgets.
    let mut others = Vec::new();
    for client in 0..3u8 {
        others.push(tokio::spawn(async move {
            let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + client));
            let keys: Vec<PublicKey> = (0..20)
                .map(|n| secret_key(3000 + u64::from(client) * 100 + n).public_key())
                .collect();
            let (mut ok, mut total) = (0u32, 0u32);
            let mut conn = HttpConn::connect_from(local, addr).await.ok();
            for round in 0..4 {
                for (i, key) in keys.iter().enumerate() {
                    let body = if round == 0 && i < 10 {
                        send_body(key, &tagged(u64::from(client), i as u64))
                    } else {
                        check_body(key, 0)
                    };
                    total += 1;
                    if conn.is_none() {
                        conn = HttpConn::connect_from(local, addr).await.ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match c.post(&body, false).await {
                        Ok(answer) if answer.status == 200 => ok += 1,
                        Ok(answer) => eprintln!(
                            "client {client}: {} {}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                        ),
                        Err(_) => conn = None,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (ok, total)
        }));
    }
    let (mut ok, mut total) = (0u32, 0u32);
    for other in others {
        let (o, t) = other.await?;
        ok += o;
        total += t;
    }
    let rss_during = process.rss_bytes()?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for task in flood {
        refused += task.await?;
    }
    let rss_after = process.rss_bytes()?;
    eprintln!(
        "others: {ok}/{total} ok; flood: {refused} HTTP requests refused; \
         VmRSS before {} KiB, during {} KiB, after {} KiB",
        rss_before >> 10,
        rss_during >> 10,
        rss_after >> 10
    );
    assert!(
        u64::from(ok) * 100 >= u64::from(total) * 99,
        "other sources got {ok}/{total} answers during the flood"
    );
    assert!(refused > 0, "the flood was never rate limited");
    // Bounded memory: a generous multiple of the pre-flood size.
    let bound = rss_before * 4 + (64 << 20);
    assert!(
        rss_during.max(rss_after) <= bound,
        "VmRSS grew from {rss_before} to {} bytes under the flood",
        rss_during.max(rss_after)
    );
    Ok(())
}

/// The committed fuzz corpus, every file.
fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut files = Vec::new();
    for target in std::fs::read_dir(&root).expect("fuzz/corpus") {
        let target = target.unwrap().path();
        if !target.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&target).unwrap() {
            let path = file.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// A random JSON value shaped like a request: known field names with values
/// of random types, sometimes nested, sometimes valid.
fn random_json(rng: &mut Rng, key: &PublicKey, depth: u32) -> serde_json::Value {
    let scalar = |rng: &mut Rng| -> serde_json::Value {
        match rng.below(9) {
            0 => json!(null),
            1 => json!(rng.next().is_multiple_of(2)),
            2 => json!(rng.next()),
            3 => json!(-(rng.below(1 << 40) as i64)),
            4 => json!((rng.next() as f64) / 7.0),
            5 => json!(key.to_string()),
            6 => json!(b64::encode(&rng.some_bytes(300))),
            7 => json!(["send", "check", "receive", "delete", "", "SEND"][rng.below(6) as usize]),
            _ => json!(String::from_utf8_lossy(&rng.some_bytes(40)).into_owned()),
        }
    };
    if depth > 0 && rng.below(4) == 0 {
        return if rng.below(2) == 0 {
            json!(
                (0..rng.below(4))
                    .map(|_| random_json(rng, key, depth - 1))
                    .collect::<Vec<_>>()
            )
        } else {
            let mut map = serde_json::Map::new();
            map.insert("x".into(), random_json(rng, key, depth - 1));
            json!(map)
        };
    }
    let mut map = serde_json::Map::new();
    for field in ["pub", "ext", "action", "data", "at", "answer", "limit"] {
        if rng.below(4) != 0 {
            let value = if depth > 0 && rng.below(6) == 0 {
                random_json(rng, key, depth - 1)
            } else {
                scalar(rng)
            };
            map.insert(field.into(), value);
        }
    }
    json!(map)
}

/// The relay is alive: `/healthz` answers and a send and check work.
async fn assert_serving(process: &mut ServerProcess, key: &PublicKey) -> anyhow::Result<()> {
    assert!(process.is_running(), "the relay process died");
    let addr = process.http_addr()?;
    let mut conn = HttpConn::connect(addr).await?;
    assert_eq!(conn.get("/healthz").await?.status, 200);
    let sent = conn.post(&send_body(key, &tagged(9, 9)), false).await?;
    assert_eq!(sent.status, 200, "{}", String::from_utf8_lossy(&sent.body));
    let checked = conn.post(&check_body(key, 0), false).await?;
    assert_eq!(checked.status, 200);
    let value: serde_json::Value = serde_json::from_slice(&checked.body)?;
    assert_eq!(value["found"], json!(true), "{value}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_and_random_inputs_never_crash_the_relay() -> anyhow::Result<()> {
    init_tracing();
    let mut rng = Rng::new("garbage");
    let data = tempfile::tempdir()?;
    let mut process = relay(data.path()).start()?;
    let (addr, udp) = (process.http_addr()?, process.udp_addr()?);
    let key = secret_key(4000).public_key();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut conn = HttpConn::connect(addr).await?;
    let mut post = async |body: &[u8]| {
        match conn.post(body, false).await {
            Ok(answer) => assert!(
                answer.status < 500 || answer.status == 503,
                "status {} for {:?}",
                answer.status,
                String::from_utf8_lossy(body)
            ),
            // The relay may close a connection after a bad request; reconnect.
            Err(_) => conn = HttpConn::connect(addr).await.unwrap(),
        }
    };
    let corpus = corpus();
    assert!(corpus.len() > 100, "the fuzz corpus is missing");
    for (_, bytes) in &corpus {
        post(bytes).await;
        if bytes.len() <= 65_000 {
            let _ = socket.send_to(bytes, udp).await;
        }
    }
    for _ in 0..400 {
        let value = random_json(&mut rng, &key, 3);
        post(value.to_string().as_bytes()).await;
        let len = rng.below(1400) as usize;
        let mut datagram = rng.bytes(len);
        if rng.below(2) == 0 && datagram.len() >= 6 {
            // Past the magic and version, into the decoder.
            datagram[..6].copy_from_slice(&[b'C', b'N', b'I', b'D', 1, 1]);
        }
        let _ = socket.send_to(&datagram, udp).await;
    }
    // Raw non-HTTP bytes on fresh connections.
    for _ in 0..20 {
        use tokio::io::AsyncWriteExt as _;
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let _ = stream.write_all(&rng.some_bytes(2000)).await;
        }
    }
    assert_serving(&mut process, &key).await?;
    eprintln!(
        "{} corpus files and 400 random JSON bodies and datagrams: the relay still serves",
        corpus.len()
    );
    Ok(())
}

/// Polls once, counting each delivered message by its `n`, and acknowledges.
async fn poll(alice: &Client, delivered: &mut BTreeMap<u64, u32>) -> anyhow::Result<()> {
    let poll = alice.poll_once().await?;
    for delivery in &poll.deliveries {
        if let Event::Message { body, .. } = &delivery.event {
            *delivered.entry(body["n"].as_u64().unwrap()).or_default() += 1;
        }
        alice.ack(delivery).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_polling_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    init_tracing();
    const MESSAGES: u64 = 24;
    let data = tempfile::tempdir()?;
    let mut options = relay(data.path());
    let mut process = options.start()?;
    let url: RelayUrl = url_of(process.http_addr()?);
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = Client::builder(a.path())
        .relay_timeout(Duration::from_secs(2))
        .build()?;
    let bob = Client::builder(b.path())
        .relay_timeout(Duration::from_secs(2))
        .build()?;
    let link = alice
        .share(
            "Bob",
            ShareOptions::with_relays(entries(std::slice::from_ref(&url))),
        )
        .await?;
    bob.accept(&link, "Alice", json!({"offer": 1}), Default::default())
        .await?;

    let mut delivered: BTreeMap<u64, u32> = BTreeMap::new();
    let mut n = 0;
    let mut restarts = 0;
    for step in 0..(MESSAGES * 4) {
        if n < MESSAGES {
            // A send that fails (relay down) is retried after the restart;
            // one that succeeded is never repeated.
            if bob
                .send("Alice", Kind::App, json!({ "n": n }))
                .await
                .is_ok()
            {
                n += 1;
            }
        }
        poll(&alice, &mut delivered).await?;
        // Restart the relay (kill -9) three times while polling goes on.
        if step % 9 == 4 && restarts < 3 {
            process.kill();
            // Poll while it is down: errors in the report, nothing delivered twice.
            poll(&alice, &mut delivered).await?;
            process = options.restart(&process)?;
            restarts += 1;
        }
        if n == MESSAGES && delivered.len() as u64 == MESSAGES {
            break;
        }
    }
    for _ in 0..10 {
        if delivered.len() as u64 == MESSAGES {
            break;
        }
        poll(&alice, &mut delivered).await?;
    }
    assert_eq!(restarts, 3);
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        (0..MESSAGES).collect::<Vec<_>>(),
        "every message delivered"
    );
    assert!(
        delivered.values().all(|&count| count == 1),
        "no message delivered twice: {delivered:?}"
    );
    Ok(())
}
