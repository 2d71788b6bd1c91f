//! The NAT matrix: for every unordered pair of router kinds (15 with
//! same-kind pairs), Alice shares her list with Bob, Bob accepts, each adds
//! an item and both run `connectoid sync --json` at once. Every pair must
//! sync (both lists hold both items and are equal); a pair that
//! [`RouterKind::direct_with`] says must connect directly must report
//! `"path": "direct"` on both sides. Pairs run five at a time; the table of
//! pair -> path and time to sync is printed (shown with `--nocapture`, and
//! by nextest for this test, see `.config/nextest.toml`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use connectoid_tests::lab::{Device, Lab, RouterKind};
use serde_json::Value;

use super::{cli, ok};

/// How long each side's `sync` waits for the other, in seconds; the
/// relayed fallback must finish well within it.
const SYNC_WAIT_SECONDS: &str = "60";

/// How many pairs run at once.
const PARALLEL_PAIRS: usize = 5;

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".into())
}

/// What one side's `sync --json` said about its peer.
#[derive(Debug, Clone)]
struct Synced {
    path: String,
    remote: Option<String>,
}

/// One pair's result.
#[derive(Debug)]
struct Outcome {
    alice: RouterKind,
    bob: RouterKind,
    /// Alice's view, then Bob's.
    paths: Result<(Synced, Synced), String>,
    took: Duration,
}

impl Outcome {
    /// "direct", "relayed", or both sides' paths when they differ.
    fn path(&self) -> String {
        match &self.paths {
            Ok((a, b)) if a.path == b.path => a.path.clone(),
            Ok((a, b)) => format!("{} / {}", a.path, b.path),
            Err(_) => "FAILED".into(),
        }
    }
}

/// The line about `peer` in a `sync --json` output.
fn synced_with(stdout: &str, peer: &str) -> Result<Synced, String> {
    for line in stdout.lines() {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if value["synced"] == peer {
            let path = value["path"]
                .as_str()
                .ok_or_else(|| format!("no \"path\" in {line}"))?;
            return Ok(Synced {
                path: path.to_owned(),
                remote: value["remote"].as_str().map(str::to_owned),
            });
        }
    }
    Err(format!("not synced with {peer}: {stdout}"))
}

/// The list's visible items in `profile`, as JSON.
fn items(device: &Device, profile: &Path) -> Value {
    let shown = ok(device, profile, &["list", "show", "--json"]);
    let shown: Value = serde_json::from_str(shown.lines().next().unwrap_or("null")).unwrap();
    shown["items"].clone()
}

/// Runs one pair; panics (caught by the caller's thread) on setup failures.
fn run_pair(lab: &Lab, relay: &str, alice_kind: RouterKind, bob_kind: RouterKind) -> Outcome {
    let alice = lab.add_device(alice_kind).unwrap();
    let bob = lab.add_device(bob_kind).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice_dir, bob_dir) = (a.path(), b.path());
    let link = ok(
        &alice,
        alice_dir,
        &["list", "share", "Bob", "--relay", relay],
    );
    ok(&bob, bob_dir, &["accept", link.trim(), "Alice"]);
    let from_alice = format!("from alice ({alice_kind})");
    let from_bob = format!("from bob ({bob_kind})");
    ok(&alice, alice_dir, &["list", "add", &from_alice]);
    ok(&bob, bob_dir, &["list", "add", &from_bob]);

    let args = [
        "sync",
        "--json",
        "--interval",
        "0.5",
        "--wait",
        SYNC_WAIT_SECONDS,
    ];
    // Both at once, as two people would: spawned, then waited for.
    let started = Instant::now();
    let alice_sync = cli(&alice, alice_dir, &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bob_sync = cli(&bob, bob_dir, &args).output().unwrap();
    let alice_sync = alice_sync.wait_with_output().unwrap();
    let took = started.elapsed();
    let paths = (|| {
        for (output, device) in [(&alice_sync, &alice), (&bob_sync, &bob)] {
            if !output.status.success() {
                return Err(format!(
                    "sync in {} ({}) failed: {}{}",
                    device.namespace,
                    device.kind,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        let a = synced_with(&String::from_utf8_lossy(&alice_sync.stdout), "Bob")?;
        let b = synced_with(&String::from_utf8_lossy(&bob_sync.stdout), "Alice")?;
        let (alice_items, bob_items) = (items(&alice, alice_dir), items(&bob, bob_dir));
        if alice_items != bob_items {
            return Err(format!("the lists differ: {alice_items} / {bob_items}"));
        }
        let texts: Vec<&str> = alice_items
            .as_array()
            .map(|items| items.iter().filter_map(|i| i["text"].as_str()).collect())
            .unwrap_or_default();
        if !(texts.contains(&from_alice.as_str()) && texts.contains(&from_bob.as_str())) {
            return Err(format!("an item is missing: {texts:?}"));
        }
        Ok((a, b))
    })();
    Outcome {
        alice: alice_kind,
        bob: bob_kind,
        paths,
        took,
    }
}

/// Every unordered pair of kinds, same-kind pairs included.
fn pairs() -> Vec<(RouterKind, RouterKind)> {
    let kinds = RouterKind::ALL;
    let mut pairs = Vec::new();
    for (i, a) in kinds.iter().enumerate() {
        for b in &kinds[i..] {
            pairs.push((*a, *b));
        }
    }
    pairs
}

#[test]
fn every_pair_of_router_kinds_syncs_and_the_easy_ones_directly() {
    let Some(lab) =
        Lab::start_or_skip("every_pair_of_router_kinds_syncs_and_the_easy_ones_directly")
    else {
        return;
    };
    let relay = lab.start_relay(&[]).unwrap().to_string();
    let pairs = pairs();
    assert_eq!(pairs.len(), 15);
    // A few pairs at a time: each is mostly waiting (round trips,
    // retries), but thirty CLI processes at once would starve a 2-core
    // machine enough to slow direct connections past the relayed fallback.
    let next = AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, Outcome)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL_PAIRS)
            .map(|_| {
                let (lab, relay, pairs, next) = (&lab, relay.as_str(), &pairs, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(alice, bob)) = pairs.get(index) else {
                            return done;
                        };
                        let outcome = std::panic::catch_unwind(|| run_pair(lab, relay, alice, bob))
                            .unwrap_or_else(|panic| Outcome {
                                alice,
                                bob,
                                paths: Err(panic_message(&*panic)),
                                took: Duration::ZERO,
                            });
                        done.push((index, outcome));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    outcomes.sort_by_key(|(index, _)| *index);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, outcome)| outcome).collect();

    let mut table = String::from(
        "\nNAT matrix (Alice / Bob -> path, time to sync):\n\
         | Alice | Bob | must be direct | path | sync (s) | Alice's peer address |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut failures = Vec::new();
    for outcome in &outcomes {
        let must_be_direct = outcome.alice.direct_with(outcome.bob);
        let remote = match &outcome.paths {
            Ok((a, _)) => a.remote.clone().unwrap_or_else(|| "-".into()),
            Err(_) => "-".into(),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} |\n",
            outcome.alice,
            outcome.bob,
            if must_be_direct { "yes" } else { "no" },
            outcome.path(),
            outcome.took.as_secs_f64(),
            remote,
        ));
        match &outcome.paths {
            Err(error) => failures.push(format!(
                "{} / {}: did not sync: {error}",
                outcome.alice, outcome.bob
            )),
            Ok((a, b)) if must_be_direct && (a.path != "direct" || b.path != "direct") => failures
                .push(format!(
                    "{} / {}: should connect directly, took {} / {}",
                    outcome.alice, outcome.bob, a.path, b.path
                )),
            Ok(_) => {}
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{table}\n{}", failures.join("\n"));
}
