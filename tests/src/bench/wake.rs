//! The `wake` section: held checks (`spec/protocol.md` §7.10).
//!
//! | row | what | baseline (same run) |
//! | --- | --- | --- |
//! | `wake_latency_redb` | from a `send` acknowledged to a held check of its mailbox answered, one relay | — |
//! | `wake_latency_redis` | the same, held on node B of two relays on one Redis, sent through node A | — |
//! | `wake_memory_per_held_request` | relay VmRSS per held request, with [`Options::held_requests`](super::Options::held_requests) held | an idle kept-alive connection |
//! | `wake_cpu_per_held_request_minute` | relay CPU per held request per minute, re-held every 5 s | one HTTP check per minute (polling every 60 s) |
//! | `wake_idle_client_cpu_hour` | an idle `connectoid poll --watch` process's CPU per hour with held checks | the same client polling every 60 s (`--no-held-checks`) |
//!
//! The idle-client rows are measured fast and scaled: the relay holds for
//! 1 s and the polling client polls every second, so one run sees many
//! rounds; per hour a client holds 120 times (the default 30 s wait) and
//! polls 60 times. Everything is on 127.0.0.1; nothing here prints but the
//! progress lines on stderr.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use connectoid_protocol::PublicKey;

use super::load::{Budget, HttpConn, Sample, http_load, is_ok};
use super::proc::cpu_time;
use super::report::{Measure, Report, Row, Target, ratio};
use super::scenarios::{Setup, check_body, secret_key, send_body, settle_rss};

/// Keys of the wake rows start here (apart from the other sections' keys).
const KEY_BASE: u64 = 5_000_000;
/// Distinct mailboxes the many held requests name (several requests may
/// hold the same mailbox; the relay keeps a waiter per request).
const HELD_MAILBOXES: u64 = 256;
/// How long the idle-client rows measure each client.
const IDLE_CLIENT_RUN: Duration = Duration::from_secs(12);

/// A held check of `key` after `at`, held up to `wait` seconds.
fn held_body(key: &PublicKey, at: u64, wait: u64) -> Vec<u8> {
    format!(r#"{{"pub":"{key}","action":"check","at":{at},"wait":{wait}}}"#).into_bytes()
}

fn message() -> Vec<u8> {
    vec![0x5a; 256]
}

/// `connectoid_held_checks` of the relay at `addr`.
async fn held_now(conn: &mut HttpConn) -> anyhow::Result<u64> {
    let answer = conn.get("/metrics").await?;
    let text = String::from_utf8_lossy(&answer.body);
    text.lines()
        .find_map(|line| line.strip_prefix("connectoid_held_checks "))
        .and_then(|n| n.trim().parse().ok())
        .context("no connectoid_held_checks in /metrics")
}

/// Waits until the relay at `addr` holds `count` checks (at most a minute).
async fn until_held(addr: SocketAddr, count: u64) -> anyhow::Result<()> {
    let mut conn = HttpConn::connect(addr).await?;
    let started = Instant::now();
    loop {
        let now = held_now(&mut conn).await?;
        if now == count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the relay holds {now} checks, not {count}, after a minute");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `rounds` times: hold a check of a fresh mailbox at `hold`, send to it
/// through `send`, and time from the send's answer to the held check's.
async fn latency(
    send: SocketAddr,
    hold: SocketAddr,
    rounds: usize,
    first_key: u64,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let mut sample = Sample::default();
    let mut sender = HttpConn::connect(send).await?;
    for round in 0..rounds {
        let key = secret_key(first_key + round as u64).public_key();
        let body = held_body(&key, 0, 30);
        let held = tokio::spawn(async move {
            let mut conn = HttpConn::connect(hold).await?;
            let answer = conn.post(&body, false).await?;
            Ok::<_, anyhow::Error>((answer, Instant::now()))
        });
        until_held(hold, 1).await?;
        let sent = sender.post(&send_body(&key, &message()), false).await?;
        let acknowledged = Instant::now();
        if sent.status != 200 {
            sample.errors += 1;
            held.abort();
            continue;
        }
        let (answer, answered) = held.await??;
        let found = answer.body.windows(12).any(|w| w == br#""found":true"#);
        if answer.status == 200 && found {
            sample.ops += 1;
            sample
                .latencies
                .push(answered.saturating_duration_since(acknowledged));
        } else {
            sample.errors += 1;
        }
    }
    sample.wall = started.elapsed();
    Ok(sample)
}

fn latency_row(id: &str, what: &str, sample: &Sample) -> Row {
    let mut row = Row::ours(id, what, Measure::new(sample, None));
    row.note = format!(
        "{} rounds; p50 {:?}, p99 {:?}",
        sample.ops,
        sample.quantile(0.5),
        sample.quantile(0.99)
    );
    row
}

/// Runs the section.
pub(super) async fn wake(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let rounds = setup.options.wake_rounds();

    let relay = setup.relay("wake-redb", &[])?;
    let addr = relay.http_addr()?;
    let sample = latency(addr, addr, rounds, KEY_BASE).await?;
    report.rows.push(latency_row(
        "wake_latency_redb",
        "held check answered after its send was acknowledged (redb)",
        &sample,
    ));
    drop(relay);

    match redis_latency(setup, rounds).await {
        Ok(sample) => report.rows.push(latency_row(
            "wake_latency_redis",
            "held check on node B answered after a send through node A (Redis)",
            &sample,
        )),
        Err(error) => report.rows.push(Row::unavailable(
            "wake_latency_redis",
            "held check on node B answered after a send through node A (Redis)",
            format!("{error:#}"),
        )),
    }

    held_memory(setup, report).await?;
    held_cpu(setup, report).await?;
    idle_client(setup, report).await?;

    let p50 = |id: &str| {
        report
            .row(id)
            .and_then(|r| r.ours.as_ref())
            .map(|m| m.p50.as_secs_f64() * 1e3)
    };
    let (redb, redis) = (p50("wake_latency_redb"), p50("wake_latency_redis"));
    report.targets.push(Target::new(
        "wake-up latency p50, send acknowledged -> held check answered, redb (ms)",
        redb,
        5.0,
        true,
    ));
    report.targets.push(Target::new(
        "wake-up latency p50, across two Redis nodes (ms)",
        redis,
        5.0,
        true,
    ));
    Ok(())
}

async fn redis_latency(setup: &Setup, rounds: usize) -> anyhow::Result<Sample> {
    let redis = connectoid_relay::testing::RedisServer::spawn(&[])?;
    let store = redis.url();
    let node_a = setup.relay("wake-redis-a", &["--store", &store])?;
    let node_b = setup.relay("wake-redis-b", &["--store", &store])?;
    latency(
        node_a.http_addr()?,
        node_b.http_addr()?,
        rounds,
        KEY_BASE + 100_000,
    )
    .await
}

/// Flags of a relay that holds `count` checks from 127.0.0.1 for `wait` s.
fn roomy_holds(count: usize, wait: u64) -> Vec<String> {
    vec![
        "--held-max-total".into(),
        (count * 2).to_string(),
        "--held-max-per-ip".into(),
        (count * 2).to_string(),
        "--max-connections".into(),
        (count * 4).to_string(),
        "--held-max-wait".into(),
        wait.to_string(),
    ]
}

/// Opens `count` held checks at `addr`, each on its own connection, each
/// asked again whenever it is answered (on a new connection if it was
/// closed); they stay until the tasks are aborted.
fn hold_many(addr: SocketAddr, count: usize, wait: u64) -> Vec<tokio::task::JoinHandle<()>> {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..HELD_MAILBOXES)
            .map(|n| held_body(&secret_key(KEY_BASE + 200_000 + n).public_key(), 0, wait))
            .collect(),
    );
    (0..count)
        .map(|i| {
            let bodies = Arc::clone(&bodies);
            tokio::spawn(async move {
                let body = &bodies[i % bodies.len()];
                // Thousands of connects at once overflow the listen backlog:
                // a connection refused or reset is opened again.
                loop {
                    if let Ok(mut conn) = HttpConn::connect(addr).await {
                        while conn.post(body, false).await.is_ok() {}
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

async fn held_memory(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let count = setup.options.held_requests();
    let flags = roomy_holds(count, 300);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let relay = setup.relay("wake-memory", &flags)?;
    let addr = relay.http_addr()?;
    // Baseline: the same number of idle kept-alive connections.
    let empty = settle_rss(&relay).await?;
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(HttpConn::connect(addr).await?);
    }
    let with_idle = settle_rss(&relay).await?;
    drop(idle);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = settle_rss(&relay).await?;
    let holds = hold_many(addr, count, 300);
    until_held(addr, count as u64).await?;
    let with_holds = settle_rss(&relay).await?;
    for hold in &holds {
        hold.abort();
    }
    let per_held = with_holds.saturating_sub(before) as f64 / count as f64;
    let per_idle = with_idle.saturating_sub(empty) as f64 / count as f64;
    report.rows.push(Row {
        id: "wake_memory_per_held_request".into(),
        what: "relay memory per held request (connection included)".into(),
        value: Some((per_held, "bytes/request".into())),
        note: format!(
            "{count} held: VmRSS {} -> {} MiB; an idle kept-alive connection costs {per_idle:.0} bytes ({})",
            before >> 20,
            with_holds >> 20,
            ratio(per_held, per_idle).map_or_else(|| "n/a".into(), |r| format!("held/idle {r:.2}x")),
        ),
        ..Row::default()
    });
    Ok(())
}

async fn held_cpu(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let count = setup.options.held_requests();
    // Held for 5 s and asked again: every request is answered and re-held
    // several times in the run (the default wait, 30 s, costs less).
    let wait = 5;
    let flags = roomy_holds(count, wait);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let relay = setup.relay("wake-cpu", &flags)?;
    let addr = relay.http_addr()?;
    let holds = hold_many(addr, count, wait);
    until_held(addr, count as u64).await?;
    let run = if setup.options.quick {
        Duration::from_secs(12)
    } else {
        Duration::from_secs(30)
    };
    let before = relay.cpu_time()?;
    tokio::time::sleep(run).await;
    let cpu = relay.cpu_time()?.saturating_sub(before);
    for hold in &holds {
        hold.abort();
    }
    let per_request_minute = cpu.as_secs_f64() / count as f64 * (60.0 / run.as_secs_f64());
    // Baseline: polling every 60 s is one check a minute, on a new connection.
    let bodies = Arc::new(
        (0..HELD_MAILBOXES)
            .map(|n| check_body(&secret_key(KEY_BASE + 200_000 + n).public_key(), 0))
            .collect::<Vec<_>>(),
    );
    let before = relay.cpu_time()?;
    let sample = http_load(addr, bodies, 8, true, setup_budget(setup), is_ok).await?;
    let check_cpu = relay.cpu_time()?.saturating_sub(before);
    let per_check = check_cpu.as_secs_f64() / sample.ops.max(1) as f64;
    let mut row = Row {
        id: "wake_cpu_per_held_request_minute".into(),
        what: "relay CPU per held request per minute (re-held every 5 s)".into(),
        value: Some((per_request_minute * 1e6, "us/request/minute".into())),
        ..Row::default()
    };
    row.note = format!(
        "{count} held for {run:?}: {:.0} ms of relay CPU; polling every 60 s costs one check a minute, {:.1} us ({} ours/polling)",
        cpu.as_secs_f64() * 1e3,
        per_check * 1e6,
        ratio(per_request_minute, per_check).map_or_else(|| "n/a".into(), |r| format!("{r:.2}x")),
    );
    report.rows.push(row);
    Ok(())
}

fn setup_budget(setup: &Setup) -> Arc<Budget> {
    Budget::new(setup.options.run_time(), setup.options.max_ops())
}

/// CPU time of process `pid` over `run`.
async fn process_cpu(pid: u32, run: Duration) -> anyhow::Result<Duration> {
    let before = cpu_time(pid)?;
    tokio::time::sleep(run).await;
    Ok(cpu_time(pid)?.saturating_sub(before))
}

async fn idle_client(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    // The relay holds for 1 s, so the held client re-asks every second.
    let relay = setup.relay("wake-client", &["--held-max-wait", "1"])?;
    let url = format!("http://{}/", relay.http_addr()?);
    let cli = crate::cli_binary()?;
    let profile = setup.data_dir("wake-client-profile");
    let status = Command::new(&cli)
        .arg("--profile")
        .arg(&profile)
        .args(["share", "Peer", "--relay", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("connectoid share failed: {status}");
    }
    let watch = |extra: &[&str]| -> anyhow::Result<WatchProcess> {
        let child = Command::new(&cli)
            .arg("--profile")
            .arg(&profile)
            .args(["poll", "--watch", "--no-udp"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(WatchProcess(child))
    };
    let held = watch(&["--interval", "3600"])?;
    until_held(relay.http_addr()?, 1).await?;
    let held_cpu = process_cpu(held.0.id(), IDLE_CLIENT_RUN).await?;
    drop(held);
    let polling = watch(&["--interval", "1", "--no-held-checks"])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polling_cpu = process_cpu(polling.0.id(), IDLE_CLIENT_RUN).await?;
    drop(polling);
    // Per hour: 120 holds of 30 s against 60 polls, each measured as one
    // round a second here.
    let rounds = IDLE_CLIENT_RUN.as_secs_f64();
    let held_hour = held_cpu.as_secs_f64() / rounds * 120.0;
    let polling_hour = polling_cpu.as_secs_f64() / rounds * 60.0;
    let mut row = Row {
        id: "wake_idle_client_cpu_hour".into(),
        what: "idle client CPU per hour, held checks (30 s waits)".into(),
        value: Some((held_hour * 1e3, "ms/hour".into())),
        ..Row::default()
    };
    row.note = format!(
        "polling every 60 s: {:.1} ms/hour ({}); measured over {IDLE_CLIENT_RUN:?} each at one round a second and scaled",
        polling_hour * 1e3,
        ratio(held_hour, polling_hour)
            .map_or_else(|| "n/a".into(), |r| format!("held/polling {r:.2}x")),
    );
    report.rows.push(row);
    Ok(())
}

/// A `connectoid poll --watch` process, killed on drop.
struct WatchProcess(std::process::Child);

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
