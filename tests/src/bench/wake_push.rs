//! Bench rows `wake_push_p50` and `wake_push_p99`: from a `send`
//! acknowledged to the push POST arriving at a local push receiver
//! ([`crate::push_receiver`]), through a real relay process with `--push`.
//!
//! Each sample uses its own mailbox (registered once, UnifiedPush, to its
//! own path), so every push measured is the immediate one, never one held
//! back by the per-mailbox interval. Samples run one after another: this is
//! latency, not throughput. The relay runs with `--push-allow-private`, the
//! test-only flag that lets it POST to 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use connectoid::protocol::seal::{open_question, seal_message};
use connectoid::protocol::{Answer, RelayUrl, SecretKey, b64};
use serde_json::{Value, json};

use super::proc::RelayOptions;
use super::report::Row;
use crate::push_receiver::PushReceiver;

/// How long one push may take before the sample counts as lost.
const PUSH_WAIT: Duration = Duration::from_secs(5);

async fn post(http: &reqwest::Client, url: &RelayUrl, body: &Value) -> anyhow::Result<Value> {
    let response = http
        .post(url.as_str())
        .body(body.to_string())
        .send()
        .await?;
    let value: Value = response.json().await?;
    anyhow::ensure!(value["ok"] == json!(true), "relay refused: {value}");
    Ok(value)
}

async fn send(http: &reqwest::Client, url: &RelayUrl, secret: &SecretKey) -> anyhow::Result<()> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let data = seal_message(&mut rng, &secret.public_key(), b"wake")?;
    let body = json!({"pub": secret.public_key().to_string(), "action": "send", "data": b64::encode(&data)});
    post(http, url, &body).await.map(drop)
}

async fn register(
    http: &reqwest::Client,
    url: &RelayUrl,
    secret: &SecretKey,
    endpoint: &str,
) -> anyhow::Result<()> {
    let key = secret.public_key().to_string();
    let check = post(http, url, &json!({"pub": key, "action": "check", "at": 0})).await?;
    let question = b64::decode(check["question"].as_str().unwrap_or_default())?;
    let opened = open_question(secret, &question)?;
    let answer = b64::encode(&Answer::for_relay(&opened, url).0);
    let body = json!({"pub": key, "action": "push", "answer": answer, "push": "register", "endpoint": endpoint});
    post(http, url, &body).await.map(drop)
}

/// Measures `samples` wake-ups through a relay started from `relay_binary`
/// on `data`; the two rows (or one `unavailable` row saying why).
pub async fn wake_push(relay_binary: &Path, data: &Path, samples: usize) -> Vec<Row> {
    match measure(relay_binary, data, samples).await {
        Ok(rows) => rows,
        Err(error) => vec![Row::unavailable(
            "wake_push_p50",
            "send acknowledged -> push POST arrives (UnifiedPush, loopback)",
            format!("{error:#}"),
        )],
    }
}

async fn measure(relay_binary: &Path, data: &Path, samples: usize) -> anyhow::Result<Vec<Row>> {
    let receiver = PushReceiver::start().await?;
    let relay = RelayOptions::new(relay_binary, data)
        .with(&["--push", "--push-allow-private"])
        .start()?;
    let url = crate::url_of(relay.http_addr()?);
    let http = reqwest::Client::new();
    let secrets: Vec<SecretKey> = (0..samples)
        .map(|i| {
            let mut bytes = [0u8; 48];
            bytes[40..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            bytes[0] = 0x11;
            SecretKey::from_bytes(&bytes)
        })
        .collect::<Result<_, _>>()?;
    for (i, secret) in secrets.iter().enumerate() {
        // A message first: its question is the ownership proof.
        send(&http, &url, secret).await?;
        register(&http, &url, secret, &receiver.endpoint(&format!("/{i}"))).await?;
    }
    let mut latencies = Vec::with_capacity(samples);
    let mut lost = 0;
    for (i, secret) in secrets.iter().enumerate() {
        let path = format!("/{i}");
        send(&http, &url, secret).await?;
        let acknowledged = Instant::now();
        match receiver.wait_for(&path, 1, PUSH_WAIT).await.first() {
            Some(push) => latencies.push(push.at.saturating_duration_since(acknowledged)),
            None => lost += 1,
        }
    }
    anyhow::ensure!(!latencies.is_empty(), "no push arrived");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let note = format!(
        "{} samples, {lost} lost; one mailbox per sample; arrival is stamped by the \
         receiver's handler; a push that beats the send's answer counts as 0",
        latencies.len()
    );
    let row = |id: &str, quantile: &str, value: Duration| Row {
        id: id.into(),
        what: format!("send acknowledged -> push POST arrives, {quantile} (UnifiedPush, loopback)"),
        value: Some((value.as_secs_f64() * 1e3, "ms".into())),
        note: note.clone(),
        ..Row::default()
    };
    Ok(vec![
        row("wake_push_p50", "p50", at(0.5)),
        row("wake_push_p99", "p99", at(0.99)),
    ])
}
