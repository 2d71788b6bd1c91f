//! What the benchmark measures, in order: baselines and HTTP/UDP checks,
//! durable sends (group commit and one commit per send), receive, Redis,
//! client fan-out over three relays, memory; then the targets computed from
//! the rows.
//!
//! Every relay here is a release `connectoid-relay` process with its data
//! directory under `target/` (a real disk, so fsync costs what it costs) and
//! no rate limits. This module does not print; the binary prints the report.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use connectoid::{Client, Event, Kind, SendWait, ShareOptions};
use connectoid_protocol::seal::open_question;
use connectoid_protocol::udp::{CheckRequest, CheckResponse, CheckStatus, MailboxCheck};
use connectoid_protocol::{Answer, PublicKey, RelayUrl, SecretKey, b64};
use serde_json::json;

use super::Options;
use super::load::{Budget, HttpAnswer, HttpConn, Sample, http_load, is_ok, udp_load};
use super::proc::{RelayOptions, ServerProcess};
use super::report::{Measure, Report, Row, Target, ratio};
use crate::Blackhole;

/// A check cursor above every `at` the relay has assigned: "nothing new".
pub(super) const FAR_CURSOR: u64 = (1 << 53) - 1;
/// Mailboxes the check, send and receive rows use.
const MAILBOXES: usize = 64;
/// Bytes of a benchmark message (the relay does not open it).
const MESSAGE_LEN: usize = 256;
/// Flags every benchmark relay gets: caps out of the way.
pub(super) const ROOMY: &[&str] = &[
    "--max-pending",
    "4000000000",
    "--max-mailboxes",
    "4000000",
    "--max-stored-bytes",
    "20000000000",
];

/// The `n`th benchmark key (valid for every `n`).
pub fn secret_key(n: u64) -> SecretKey {
    let mut bytes = [0u8; 48];
    bytes[0] = 1;
    bytes[40..].copy_from_slice(&n.to_be_bytes());
    #[allow(clippy::expect_used)]
    SecretKey::from_bytes(&bytes).expect("a scalar below the group order")
}

/// The body of a `send`.
pub fn send_body(key: &PublicKey, data: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"pub":"{key}","action":"send","data":"{}"}}"#,
        b64::encode(data)
    )
    .into_bytes()
}

/// The body of a `check`.
pub fn check_body(key: &PublicKey, at: u64) -> Vec<u8> {
    format!(r#"{{"pub":"{key}","action":"check","at":{at}}}"#).into_bytes()
}

fn receive_body(key: &PublicKey, answer: &Answer, at: u64) -> Vec<u8> {
    format!(
        r#"{{"pub":"{key}","action":"receive","answer":"{}","at":{at},"limit":1}}"#,
        b64::encode(&answer.0)
    )
    .into_bytes()
}

fn message(n: u64) -> Vec<u8> {
    let mut data = vec![0x5a; MESSAGE_LEN];
    data[..8].copy_from_slice(&n.to_be_bytes());
    data
}

pub(super) fn found_false(answer: &HttpAnswer) -> bool {
    answer.status == 200 && answer.body.windows(13).any(|w| w == br#""found":false"#)
}

fn has_data(answer: &HttpAnswer) -> bool {
    answer.status == 200 && answer.body.windows(7).any(|w| w == br#""data":"#)
}

pub(super) fn udp_not_found(bytes: &[u8]) -> bool {
    CheckResponse::decode(bytes).is_ok_and(|r| {
        !r.statuses.is_empty() && r.statuses.iter().all(|s| *s == CheckStatus::NotFound)
    })
}

fn udp_any(bytes: &[u8]) -> bool {
    CheckResponse::decode(bytes).is_ok()
}

/// Runs `load` against `server`, reading its CPU time before and after.
async fn measure(
    server: &ServerProcess,
    load: impl Future<Output = anyhow::Result<Sample>>,
) -> anyhow::Result<Measure> {
    let before = server.cpu_time()?;
    let sample = load.await?;
    let after = server.cpu_time()?;
    Ok(Measure::new(&sample, Some(after.saturating_sub(before))))
}

/// Rounds of [`measure_pair`].
const PAIR_ROUNDS: u32 = 5;

/// Measures our server and its baseline in alternating rounds (ours, base,
/// ours, base, ...), each with a share of the run's budget, and sums CPU
/// time and samples over the rounds. Measured one after the other, a drift
/// of the shared machine's load between the two runs moved the ratio by a
/// third; alternating, both sides see the same machine.
pub(super) async fn measure_pair<FutO, FutB>(
    setup: &Setup,
    (ours_server, mut ours): (&ServerProcess, impl FnMut(Arc<Budget>) -> FutO),
    (base_server, mut base): (&ServerProcess, impl FnMut(Arc<Budget>) -> FutB),
) -> anyhow::Result<(Measure, Measure)>
where
    FutO: Future<Output = anyhow::Result<Sample>>,
    FutB: Future<Output = anyhow::Result<Sample>>,
{
    let budget = || {
        Budget::new(
            setup.options.run_time() / PAIR_ROUNDS,
            setup.options.max_ops() / u64::from(PAIR_ROUNDS),
        )
    };
    let mut totals = [
        (Sample::default(), Duration::ZERO),
        (Sample::default(), Duration::ZERO),
    ];
    for _ in 0..PAIR_ROUNDS {
        for (side, (sample, cpu)) in totals.iter_mut().enumerate() {
            let server = if side == 0 { ours_server } else { base_server };
            let before = server.cpu_time()?;
            let round = if side == 0 {
                ours(budget()).await?
            } else {
                base(budget()).await?
            };
            *cpu += server.cpu_time()?.saturating_sub(before);
            sample.wall += round.wall;
            sample.merge(round);
        }
    }
    let [(ours, ours_cpu), (base, base_cpu)] = totals;
    Ok((
        Measure::new(&ours, Some(ours_cpu)),
        Measure::new(&base, Some(base_cpu)),
    ))
}

fn warmup() -> Arc<Budget> {
    Budget::new(Duration::from_millis(300), 2_000)
}

/// Everything the benchmark needs to start processes.
pub(super) struct Setup {
    pub(super) relay_binary: PathBuf,
    self_exe: PathBuf,
    work: tempfile::TempDir,
    keys: Vec<SecretKey>,
    /// The run's size and sections.
    pub(super) options: Options,
    next_dir: std::sync::atomic::AtomicU32,
}

impl Setup {
    pub(super) fn budget(&self) -> Arc<Budget> {
        Budget::new(self.options.run_time(), self.options.max_ops())
    }

    /// A fresh data directory for a relay or a client profile.
    pub(super) fn data_dir(&self, name: &str) -> PathBuf {
        let n = self
            .next_dir
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.work.path().join(format!("{n}-{name}"))
    }

    /// A release relay with roomy caps, no rate limits and `extra` flags.
    pub(super) fn relay(&self, name: &str, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        RelayOptions::new(&self.relay_binary, &self.data_dir(name))
            .with(ROOMY)
            .with(extra)
            .start()
            .with_context(|| format!("starting relay {name}"))
    }

    fn baseline(&self, flag: &str, http: bool) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(&self.self_exe);
        command.arg(flag);
        ServerProcess::spawn(command, http, !http)
    }

    pub(super) fn publics(&self) -> Vec<PublicKey> {
        self.keys.iter().map(SecretKey::public_key).collect()
    }
}

/// Sends one message to each benchmark mailbox so that they exist.
async fn fill_mailboxes(addr: SocketAddr, keys: &[PublicKey]) -> anyhow::Result<()> {
    let mut conn = HttpConn::connect(addr).await?;
    for (i, key) in keys.iter().enumerate() {
        let answer = conn
            .post(&send_body(key, &message(i as u64)), false)
            .await?;
        if answer.status != 200 {
            bail!(
                "setup send failed: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    Ok(())
}

pub(super) fn udp_datagram(keys: &[PublicKey], count: usize) -> Vec<u8> {
    CheckRequest {
        nonce: [7; 16],
        ext: None,
        checks: (0..count)
            .map(|i| MailboxCheck {
                key: *keys[i % keys.len()].as_bytes(),
                at: connectoid_protocol::At(FAR_CURSOR),
            })
            .collect(),
    }
    .encode()
}

/// Runs the whole benchmark.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let relay_binary = crate::relay_binary()?;
    let self_exe = std::env::current_exe()?;
    // Data directories on the target's disk (not a tmpfs), so fsync is real.
    let target = self_exe
        .parent()
        .and_then(Path::parent)
        .map_or_else(std::env::temp_dir, Path::to_owned);
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&target)?;
    eprintln!("bench: generating {MAILBOXES} keys");
    let keys = (1..=MAILBOXES as u64).map(secret_key).collect();
    let setup = Setup {
        relay_binary,
        self_exe,
        work,
        keys,
        options: options.clone(),
        next_dir: std::sync::atomic::AtomicU32::new(0),
    };
    let mut report = Report {
        mode: if options.quick { "quick" } else { "full" }.into(),
        context: context(&setup),
        ..Report::default()
    };

    if options.runs("checks") {
        eprintln!("bench: checks (HTTP, UDP) and baselines");
        checks(&setup, &mut report).await?;
        super::spread::checks_spread(&setup, &mut report).await?;
    }
    if options.runs("sends") {
        eprintln!("bench: durable sends");
        sends(&setup, &mut report).await?;
    }
    if options.runs("receive") {
        eprintln!("bench: receive");
        receive(&setup, &mut report).await?;
    }
    if options.runs("redis") {
        eprintln!("bench: Redis");
        redis(&setup, &mut report).await;
    }
    if options.runs("fanout") {
        eprintln!("bench: client fan-out over three relays");
        fanout(&setup, &mut report).await?;
    }
    if options.runs("memory") {
        eprintln!("bench: memory");
        memory(&setup, &mut report).await?;
    }
    if options.runs("wake") {
        eprintln!("bench: wake-up (held checks)");
        super::wake::wake(&setup, &mut report).await?;
        eprintln!("bench: wake-up (push)");
        let samples = if options.quick { 50 } else { 200 };
        let rows =
            super::wake_push::wake_push(&setup.relay_binary, &setup.data_dir("wake-push"), samples)
                .await;
        report.rows.extend(rows);
    }
    targets(&mut report);
    Ok(report)
}

fn context(setup: &Setup) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    vec![
        (
            "machine".into(),
            format!("{cores} cores, {cpu}, Linux {kernel}"),
        ),
        (
            "runs".into(),
            format!(
                "{:?} or {} operations each, loopback only",
                setup.options.run_time(),
                setup.options.max_ops()
            ),
        ),
        (
            "cpu".into(),
            "server process user+system time from /proc/<pid>/stat per successful operation".into(),
        ),
    ]
}

async fn checks(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let base_http = setup.baseline("--baseline-http", true)?;
    let base_udp = setup.baseline("--baseline-udp", false)?;
    let relay = setup.relay("checks", &[])?;
    let (addr, udp) = (relay.http_addr()?, relay.udp_addr()?);
    let (base_addr, base_udp_addr) = (base_http.http_addr()?, base_udp.udp_addr()?);
    let publics = setup.publics();
    fill_mailboxes(addr, &publics).await?;
    let bodies = Arc::new(
        publics
            .iter()
            .map(|k| check_body(k, FAR_CURSOR))
            .collect::<Vec<_>>(),
    );

    for (id, what, new_connection, concurrency) in [
        (
            "check_http_keepalive",
            "check over HTTP, kept-alive connection",
            false,
            4,
        ),
        (
            "check_http_new_connection",
            "check over HTTP, a new TCP connection per check",
            true,
            4,
        ),
    ] {
        for (server, target, accept) in [
            (&relay, addr, found_false as fn(&HttpAnswer) -> bool),
            (&base_http, base_addr, is_ok),
        ] {
            let _ = http_load(
                target,
                Arc::clone(&bodies),
                concurrency,
                new_connection,
                warmup(),
                accept,
            )
            .await?;
            let _ = server;
        }
        let (ours, base) = measure_pair(
            setup,
            (&relay, |budget| {
                http_load(
                    addr,
                    Arc::clone(&bodies),
                    concurrency,
                    new_connection,
                    budget,
                    found_false,
                )
            }),
            (&base_http, |budget| {
                http_load(
                    base_addr,
                    Arc::clone(&bodies),
                    concurrency,
                    new_connection,
                    budget,
                    is_ok,
                )
            }),
        )
        .await?;
        let mut row = Row::ours(id, what, ours);
        row.baseline = Some(("hyper, fixed JSON body".into(), base));
        row.note = format!("{concurrency} concurrent clients, {MAILBOXES} mailboxes, nothing new");
        report.rows.push(row);
    }

    let wait = Duration::from_millis(500);
    for (id, what, count) in [
        ("check_udp_1", "UDP check, 1 mailbox per datagram", 1),
        ("check_udp_16", "UDP check, 16 mailboxes per datagram", 16),
    ] {
        let datagram = Arc::new(udp_datagram(&publics, count));
        let _ = udp_load(udp, Arc::clone(&datagram), 4, wait, warmup(), udp_not_found).await?;
        let _ = udp_load(
            base_udp_addr,
            Arc::clone(&datagram),
            4,
            wait,
            warmup(),
            udp_any,
        )
        .await?;
        let (ours, base) = measure_pair(
            setup,
            (&relay, |budget| {
                udp_load(udp, Arc::clone(&datagram), 4, wait, budget, udp_not_found)
            }),
            (&base_udp, |budget| {
                udp_load(
                    base_udp_addr,
                    Arc::clone(&datagram),
                    4,
                    wait,
                    budget,
                    udp_any,
                )
            }),
        )
        .await?;
        let mut row = Row::ours(id, what, ours);
        row.baseline = Some(("tokio UDP, fixed datagram".into(), base));
        row.note = format!(
            "4 concurrent clients, {} byte request, per datagram",
            datagram.len()
        );
        report.rows.push(row);
    }
    Ok(())
}

async fn send_row(
    setup: &Setup,
    relay: &ServerProcess,
    id: &str,
    what: &str,
    senders: usize,
) -> anyhow::Result<Row> {
    let addr = relay.http_addr()?;
    let bodies = Arc::new(
        setup
            .publics()
            .iter()
            .enumerate()
            .map(|(i, k)| send_body(k, &message(i as u64)))
            .collect::<Vec<_>>(),
    );
    let _ = http_load(addr, Arc::clone(&bodies), senders, false, warmup(), is_ok).await?;
    let ours = measure(
        relay,
        http_load(addr, bodies, senders, false, setup.budget(), is_ok),
    )
    .await?;
    let mut row = Row::ours(id, what, ours);
    row.note = format!("{senders} concurrent senders, kept-alive, {MESSAGE_LEN} byte messages");
    Ok(row)
}

async fn sends(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let relay = setup.relay("group-commit", &[])?;
    fill_mailboxes(relay.http_addr()?, &setup.publics()).await?;
    for senders in [1, 16, 128] {
        let row = send_row(
            setup,
            &relay,
            &format!("send_group_commit_{senders}"),
            &format!("durable send, group commit, {senders} senders"),
            senders,
        )
        .await?;
        report.rows.push(row);
    }
    drop(relay);
    let single = setup.relay("one-commit", &["--max-commit-batch", "1"])?;
    fill_mailboxes(single.http_addr()?, &setup.publics()).await?;
    for senders in [1, 128] {
        let mut row = send_row(
            setup,
            &single,
            &format!("send_one_commit_{senders}"),
            &format!("durable send, one commit per send, {senders} senders"),
            senders,
        )
        .await?;
        row.note.push_str(", --max-commit-batch 1");
        report.rows.push(row);
    }
    Ok(())
}

async fn receive(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let base_http = setup.baseline("--baseline-http", true)?;
    let relay = setup.relay("receive", &[])?;
    let addr = relay.http_addr()?;
    let url = RelayUrl::parse(&format!("http://{addr}/")).map_err(|e| anyhow!("{e}"))?;
    let mut conn = HttpConn::connect(addr).await?;
    let mut bodies = Vec::new();
    for (i, secret) in setup.keys.iter().take(8).enumerate() {
        let key = secret.public_key();
        conn.post(&send_body(&key, &message(i as u64)), false)
            .await?;
        let answer = conn.post(&check_body(&key, 0), false).await?;
        let value: serde_json::Value = serde_json::from_slice(&answer.body)?;
        let question = value["question"]
            .as_str()
            .ok_or_else(|| anyhow!("no question in {value}"))?;
        let opened = open_question(secret, &b64::decode(question)?)
            .map_err(|e| anyhow!("open question: {e}"))?;
        bodies.push(receive_body(&key, &Answer::for_relay(&opened, &url), 0));
    }
    let bodies = Arc::new(bodies);
    let base_addr = base_http.http_addr()?;
    let _ = http_load(addr, Arc::clone(&bodies), 4, false, warmup(), has_data).await?;
    let _ = http_load(base_addr, Arc::clone(&bodies), 4, false, warmup(), is_ok).await?;
    let (ours, base) = measure_pair(
        setup,
        (&relay, |budget| {
            http_load(addr, Arc::clone(&bodies), 4, false, budget, has_data)
        }),
        (&base_http, |budget| {
            http_load(base_addr, Arc::clone(&bodies), 4, false, budget, is_ok)
        }),
    )
    .await?;
    let mut row = Row::ours(
        "receive_answered",
        "receive (limit 1) with the question answered",
        ours,
    );
    row.baseline = Some(("hyper, fixed JSON body".into(), base));
    row.note = format!(
        "4 concurrent clients, kept-alive, {MESSAGE_LEN} byte message returned; answer checked per request"
    );
    report.rows.push(row);
    Ok(())
}

async fn redis(setup: &Setup, report: &mut Report) {
    let ids = [
        (
            "redis_check_http_keepalive",
            "Redis: check over HTTP, kept-alive",
        ),
        ("redis_check_udp_1", "Redis: UDP check, 1 mailbox"),
        ("redis_send_16", "Redis: send, 16 senders"),
        ("redis_send_128", "Redis: send, 128 senders"),
    ];
    let help = Command::new(&setup.relay_binary)
        .arg("--help")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let why = if !help.contains("redis") {
        Some("not available: Redis backend not present".to_owned())
    } else if !connectoid_relay::testing::redis_installed() {
        Some("not available: redis-server not installed".to_owned())
    } else {
        None
    };
    if let Some(why) = why {
        for (id, what) in ids {
            report.rows.push(Row::unavailable(id, what, why.clone()));
        }
        return;
    }
    match redis_rows(setup).await {
        Ok(rows) => report.rows.extend(rows),
        Err(error) => {
            for (id, what) in ids {
                report
                    .rows
                    .push(Row::unavailable(id, what, format!("failed: {error:#}")));
            }
        }
    }
}

async fn redis_rows(setup: &Setup) -> anyhow::Result<Vec<Row>> {
    let server = connectoid_relay::testing::RedisServer::spawn(&[])?;
    let store = server.url();
    let relay = setup.relay("redis", &["--store", &store])?;
    let (addr, udp) = (relay.http_addr()?, relay.udp_addr()?);
    let publics = setup.publics();
    fill_mailboxes(addr, &publics).await?;
    let mut rows = Vec::new();
    let bodies = Arc::new(
        publics
            .iter()
            .map(|k| check_body(k, FAR_CURSOR))
            .collect::<Vec<_>>(),
    );
    let _ = http_load(addr, Arc::clone(&bodies), 4, false, warmup(), found_false).await?;
    let m = measure(
        &relay,
        http_load(addr, bodies, 4, false, setup.budget(), found_false),
    )
    .await?;
    let mut row = Row::ours(
        "redis_check_http_keepalive",
        "Redis: check over HTTP, kept-alive",
        m,
    );
    row.note =
        "relay CPU only (Redis's own CPU not counted); redis-server without persistence".into();
    rows.push(row);
    let datagram = Arc::new(udp_datagram(&publics, 1));
    let wait = Duration::from_millis(500);
    let _ = udp_load(udp, Arc::clone(&datagram), 4, wait, warmup(), udp_not_found).await?;
    let m = measure(
        &relay,
        udp_load(udp, datagram, 4, wait, setup.budget(), udp_not_found),
    )
    .await?;
    let mut row = Row::ours("redis_check_udp_1", "Redis: UDP check, 1 mailbox", m);
    row.note = "relay CPU only".into();
    rows.push(row);
    for senders in [16, 128] {
        let mut row = send_row(
            setup,
            &relay,
            &format!("redis_send_{senders}"),
            &format!("Redis: send, {senders} senders"),
            senders,
        )
        .await?;
        row.note
            .push_str(", relay CPU only; redis-server without persistence (no fsync)");
        rows.push(row);
    }
    Ok(rows)
}

/// The figures of one fan-out scenario.
struct Fanout {
    sends: Sample,
    polls: Sample,
    attempted: usize,
    sent: usize,
    delivered: usize,
}

/// What happens to the second of the three relays in a fan-out scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Killed (kill -9) after the link is accepted.
    Killed,
    /// Replaced by a server that accepts connections and never answers.
    Blackholed,
}

/// One fan-out scenario on three fresh relays, so that no scenario runs
/// on relays that earlier scenarios have filled (the comparisons between
/// scenarios would otherwise depend on their order).
async fn fanout_once(
    setup: &Setup,
    sends: usize,
    fault: Fault,
    wait: SendWait,
) -> anyhow::Result<Fanout> {
    // The blackhole, if any, lives until the scenario ends.
    let (mut relays, mut urls, mut _hole) = (Vec::new(), Vec::new(), None);
    for n in 0..3 {
        if n == 1 && fault == Fault::Blackholed {
            let blackhole = Blackhole::start().await?;
            urls.push(blackhole.url());
            _hole = Some(blackhole);
            continue;
        }
        let relay = setup.relay(&format!("fanout-{n}"), &[])?;
        urls.push(crate::url_of(relay.http_addr()?));
        relays.push(relay);
    }
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let timeout = Duration::from_millis(500);
    let alice = Client::builder(a.path()).relay_timeout(timeout).build()?;
    let bob = Client::builder(b.path())
        .relay_timeout(timeout)
        .send_wait(wait)
        .build()?;
    let link = alice
        .share("Bob", ShareOptions::with_relays(crate::entries(&urls)))
        .await?;
    bob.accept(&link, "Alice", json!({"offer": 1}), Default::default())
        .await?;
    if fault == Fault::Killed {
        relays[1].kill();
    }
    let mut result = Fanout {
        sends: Sample::default(),
        polls: Sample::default(),
        attempted: sends,
        sent: 0,
        delivered: 0,
    };
    let start = Instant::now();
    for i in 0..sends {
        let began = Instant::now();
        match bob.send("Alice", Kind::App, json!({ "n": i })).await {
            Ok(_) => {
                result.sends.ops += 1;
                result.sends.latencies.push(began.elapsed());
                result.sent += 1;
            }
            Err(_) => result.sends.errors += 1,
        }
    }
    result.sends.wall = start.elapsed();
    let mut seen = std::collections::BTreeSet::new();
    let start = Instant::now();
    for _ in 0..(sends + 10) {
        let began = Instant::now();
        let poll = alice.poll_once().await?;
        result.polls.ops += 1;
        result.polls.latencies.push(began.elapsed());
        for delivery in &poll.deliveries {
            if let Event::Message { body, .. } = &delivery.event
                && let Some(n) = body["n"].as_u64()
            {
                seen.insert(n);
            }
            alice.ack(delivery).await?;
        }
        if seen.len() >= sends {
            break;
        }
    }
    result.polls.wall = start.elapsed();
    result.delivered = seen.len();
    Ok(result)
}

async fn fanout(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let sends = setup.options.fanout_sends();
    // The sender returns shortly after the first relay accepts
    // (SendWait::FirstAcceptance): the mode for apps that want latency. The
    // last row shows the default mode, which waits for every relay's answer
    // or timeout so that its report is complete.
    let fast = SendWait::FirstAcceptance;
    let healthy = fanout_once(setup, sends, Fault::None, fast).await?;
    let blackholed = fanout_once(setup, sends, Fault::Blackholed, fast).await?;
    // Every send of this row takes the 500 ms timeout: a few show it.
    let blackholed_all =
        fanout_once(setup, sends.min(10), Fault::Blackholed, SendWait::AllRelays).await?;
    let killed = fanout_once(setup, sends, Fault::Killed, fast).await?;
    for (id, what, f) in [
        (
            "fanout_healthy",
            "client send + poll over 3 relays, all healthy",
            &healthy,
        ),
        (
            "fanout_one_killed",
            "client send + poll over 3 relays, one killed (kill -9)",
            &killed,
        ),
        (
            "fanout_one_blackholed",
            "client send + poll over 3 relays, one blackholed (accepts, never answers)",
            &blackholed,
        ),
        (
            "fanout_one_blackholed_wait_all",
            "same, sender waiting for every relay (SendWait::AllRelays, the default)",
            &blackholed_all,
        ),
    ] {
        let mut row = Row::ours(id, what, Measure::new(&f.sends, None));
        row.note = format!(
            "send latency; {}/{} sends accepted, {}/{} delivered; poll p50 {:.1}ms p99 {:.1}ms; per-relay timeout 500ms",
            f.sent,
            f.attempted,
            f.delivered,
            f.attempted,
            f.polls.quantile(0.5).as_secs_f64() * 1e3,
            f.polls.quantile(0.99).as_secs_f64() * 1e3,
        );
        report.rows.push(row);
    }
    let healthy_p50 = healthy.sends.quantile(0.5).as_secs_f64();
    for (name, f) in [("killed", &killed), ("blackholed", &blackholed)] {
        let p50 = f.sends.quantile(0.5).as_secs_f64();
        let all = f.delivered == sends && f.sent == sends;
        let target = Target::new(
            &format!("fan-out send p50, one relay {name} / all healthy"),
            ratio(p50, healthy_p50),
            1.2,
            true,
        )
        .also(all, "100% of sends accepted and delivered")
        .note(
            "sender with SendWait::FirstAcceptance; with the default SendWait::AllRelays a \
             blackholed relay costs every send the per-relay timeout (row fanout_one_blackholed_wait_all)",
        );
        report.targets.push(target);
    }
    Ok(())
}

pub(super) async fn settle_rss(relay: &ServerProcess) -> anyhow::Result<u64> {
    let addr = relay.http_addr()?;
    let mut conn = HttpConn::connect(addr).await?;
    for _ in 0..20 {
        conn.get("/healthz").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.rss_bytes()
}

async fn memory(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let count = setup.options.idle_mailboxes();
    let full_dir = setup.data_dir("idle-mailboxes");
    let began = Instant::now();
    super::spread::populate(&full_dir, count).await?;
    eprintln!(
        "bench: {count} idle mailboxes written in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    let empty = setup.relay("empty", &[])?;
    let empty_rss = settle_rss(&empty).await?;
    drop(empty);
    let full = RelayOptions::new(&setup.relay_binary, &full_dir)
        .with(ROOMY)
        .start()?;
    let full_rss = settle_rss(&full).await?;
    drop(full);
    let per_mailbox = full_rss.saturating_sub(empty_rss) as f64 / count as f64;
    let mut row = Row {
        id: "memory_idle_mailbox".into(),
        what: "relay memory per idle mailbox".into(),
        value: Some((per_mailbox, "bytes/mailbox".into())),
        ..Row::default()
    };
    row.note = format!(
        "VmRSS {} MiB with {count} idle mailboxes vs {} MiB empty{}",
        full_rss >> 20,
        empty_rss >> 20,
        if setup.options.quick {
            " (--quick: 100 000 mailboxes; a full run uses 1 000 000)"
        } else {
            ""
        }
    );
    report.rows.push(row);
    report.targets.push(
        Target::new(
            "relay memory per idle mailbox (bytes)",
            Some(per_mailbox),
            256.0,
            true,
        )
        .note(format!("measured with {count} mailboxes")),
    );

    let relay = setup.relay("pending", &[])?;
    let before = settle_rss(&relay).await?;
    let messages = setup.options.pending_messages();
    let bodies = Arc::new(
        setup
            .publics()
            .iter()
            .enumerate()
            .map(|(i, k)| send_body(k, &message(i as u64)))
            .collect::<Vec<_>>(),
    );
    let sample = http_load(
        relay.http_addr()?,
        bodies,
        16,
        false,
        Budget::new(Duration::from_secs(120), messages),
        is_ok,
    )
    .await?;
    let after = settle_rss(&relay).await?;
    let per_message = after.saturating_sub(before) as f64 / sample.ops.max(1) as f64;
    let mut row = Row {
        id: "memory_pending_message".into(),
        what: "relay memory per pending message".into(),
        value: Some((per_message, "bytes/message".into())),
        ..Row::default()
    };
    row.note = format!(
        "{} messages of {MESSAGE_LEN} bytes in {MAILBOXES} mailboxes; VmRSS {} -> {} MiB (includes redb's page cache)",
        sample.ops,
        before >> 20,
        after >> 20
    );
    report.rows.push(row);
    Ok(())
}

/// The targets computed from the rows (the fan-out and memory targets are
/// added where they are measured).
fn targets(report: &mut Report) {
    let cpu = |id: &str| report.cpu(id);
    let row_ratio = |id: &str| report.row(id).and_then(Row::cpu_ratio);
    let rate = |id: &str| report.row(id).and_then(|r| r.ours.as_ref()).map(|m| m.rate);
    let mut targets = vec![
        Target::new(
            "HTTP check CPU/request, kept-alive / hyper baseline",
            row_ratio("check_http_keepalive"),
            1.5,
            true,
        ),
        Target::new(
            "HTTP check CPU/request, new connection / hyper baseline",
            row_ratio("check_http_new_connection"),
            1.5,
            true,
        ),
        Target::new(
            "UDP check CPU/datagram (1 mailbox) / UDP baseline",
            row_ratio("check_udp_1"),
            1.5,
            true,
        ),
        Target::new(
            "UDP check (1 mailbox) / HTTP check on a new connection",
            cpu("check_udp_1")
                .zip(cpu("check_http_new_connection"))
                .and_then(|(u, h)| ratio(u, h)),
            0.2,
            true,
        ),
        Target::new(
            "UDP check CPU, 16-mailbox datagram / 1-mailbox datagram",
            cpu("check_udp_16")
                .zip(cpu("check_udp_1"))
                .and_then(|(a, b)| ratio(a, b)),
            3.0,
            true,
        ),
        Target::new(
            "HTTP check CPU, spread over many mailboxes / over 64",
            row_ratio("check_http_spread"),
            1.3,
            true,
        ),
        Target::new(
            "UDP check CPU, spread over many mailboxes / over 64",
            row_ratio("check_udp_spread"),
            1.3,
            true,
        ),
        Target::new(
            "send rate at 128 senders, group commit / one commit per send",
            rate("send_group_commit_128")
                .zip(rate("send_one_commit_128"))
                .and_then(|(a, b)| ratio(a, b)),
            10.0,
            false,
        ),
    ];
    const HTTP_LIMITS: &str = "what limits it (perf record on the relay under this load): `POST /` \
         is answered directly rather than through axum's router and tower's layers (which cost \
         more than the protocol work), and a request's `pub` is checked to be a curve point only \
         for a mailbox the store does not hold; what remains is spread over hyper, tokio wake-ups, JSON \
         decoding and encoding, the store lookup and metrics, next to the kernel's TCP work that \
         the baseline has too";
    for target in &mut targets[..2] {
        if target.passed() == Some(false) {
            target.note = HTTP_LIMITS.into();
        }
    }
    // The UDP / new-connection target compares two kernels' paths as much
    // as two relays: say what the bare baselines give on this machine.
    let base_cpu = |id: &str| {
        report
            .row(id)
            .and_then(|r| r.baseline.as_ref())
            .and_then(|(_, m)| m.cpu_per_op)
            .map(|d| d.as_secs_f64())
    };
    if let Some(bare) = base_cpu("check_udp_1")
        .zip(base_cpu("check_http_new_connection"))
        .and_then(|(u, h)| ratio(u, h))
        && let Some(target) = targets
            .iter_mut()
            .find(|t| t.goal.starts_with("UDP check (1 mailbox) / HTTP"))
        && target.passed() == Some(false)
    {
        target.note = format!(
            "the bare baselines on this machine (tokio UDP echo / hyper on a new connection) \
             give {bare:.3}: a datagram's kernel path costs that much of a TCP connection here, \
             before any relay work"
        );
    }
    targets.append(&mut report.targets);
    report.targets = targets;
}
