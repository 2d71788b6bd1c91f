//! One profile used by several `connectoid` processes at once: concurrent
//! changes are all kept, and a `poll --watch` running in one terminal does
//! not stop `send`, `peers`, `relays` or `list` in another.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use connectoid_tests::{RelayProcess, cli_binary};
use serde_json::{Value, json};

use crate::cli::{json_lines, ok, poll_for, watch};

/// Changes each of the two concurrent writers makes.
const CHANGES: usize = 12;

#[test]
fn two_processes_changing_one_profile_lose_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path();
    std::thread::scope(|scope| {
        // One writer adds relays, the other makes shares: each CLI process
        // is one read-modify-write, and the two writers run side by side.
        scope.spawn(|| {
            for n in 0..CHANGES {
                ok(
                    profile,
                    &["relays", "add", &format!("http://127.0.0.1:{}/", 1000 + n)],
                );
            }
        });
        scope.spawn(|| {
            for n in 0..CHANGES {
                ok(
                    profile,
                    &[
                        "share",
                        &format!("Peer{n}"),
                        "--relay",
                        "http://127.0.0.1:9/",
                    ],
                );
            }
        });
    });
    let relays = json_lines(profile, &["relays", "list"]);
    assert_eq!(relays[0].as_array().unwrap().len(), CHANGES, "{relays:?}");
    let peers = json_lines(profile, &["peers"]);
    let mut nicknames: Vec<&str> = peers[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["nickname"].as_str().unwrap())
        .collect();
    nicknames.sort_unstable();
    let mut expected: Vec<String> = (0..CHANGES).map(|n| format!("Peer{n}")).collect();
    expected.sort_unstable();
    assert_eq!(nicknames, expected);
}

/// The next event the watcher prints that satisfies `wanted`.
fn next_event(events: &Receiver<Value>, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = events
            .recv_timeout(Duration::from_secs(60))
            .expect("poll --watch printed nothing more");
        if wanted(&event) {
            return event;
        }
    }
}

#[test]
fn commands_run_while_poll_watch_holds_the_profile() {
    let relay = RelayProcess::start().unwrap();
    let url = relay.url();
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let (alice, bob, carol) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    ok(alice, &["relays", "add", url.as_str()]);

    // Terminal 1: Alice watches.
    let (mut watcher, events) = watch(alice, &["--interval", "0.1", "--no-held-checks"]);

    // Terminal 2: Alice shares; Bob accepts; the watcher sees his hello.
    let link = ok(alice, &["share", "Bob"]);
    ok(
        bob,
        &["accept", link.trim(), "Alice", "--payload", "{\"hi\":1}"],
    );
    let hello = next_event(&events, |e| e["event"] == "peer-connected");
    assert_eq!(hello["nickname"], "Bob");

    // Terminal 2 again, while the watcher runs: send, peers, relays, list.
    ok(
        alice,
        &["send", "Bob", &json!({"from": "terminal 2"}).to_string()],
    );
    assert_eq!(json_lines(alice, &["peers"])[0][0]["status"], "connected");
    ok(alice, &["relays", "add", "http://127.0.0.1:9/"]);
    assert_eq!(
        json_lines(alice, &["relays", "list"])[0]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    ok(alice, &["list", "add", "milk"]);
    assert_eq!(
        json_lines(alice, &["list", "show"])[0]["items"][0]["text"],
        "milk"
    );

    // A share made in terminal 2 is polled by the watcher in terminal 1.
    let second = ok(alice, &["share", "Carol", "--relay", url.as_str()]);
    ok(carol, &["accept", second.trim(), "Alice"]);
    let hello = next_event(&events, |e| e["event"] == "peer-connected");
    assert_eq!(hello["nickname"], "Carol");

    // Bob got what terminal 2 sent.
    let message = poll_for(bob, |e| e["event"] == "message");
    assert_eq!(message["body"], json!({"from": "terminal 2"}));
    // ...and the watcher gets his reply.
    ok(bob, &["send", "Alice", &json!({"reply": true}).to_string()]);
    let reply = next_event(&events, |e| e["event"] == "message");
    assert_eq!(reply["body"], json!({"reply": true}));

    watcher.kill().unwrap();
    watcher.wait().unwrap();
    // Every change of both terminals is in the profile.
    let peers = json_lines(alice, &["peers"]);
    let statuses: Vec<(&str, &str)> = peers[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["nickname"].as_str().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [("Bob", "connected"), ("Carol", "connected")]);
    assert_eq!(
        json_lines(alice, &["relays", "list"])[0]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A `connectoid sync --watch --loopback` on `profile`, its output unread.
fn sync_watch(profile: &Path) -> Child {
    Command::new(cli_binary().unwrap())
        .arg("--profile")
        .arg(profile)
        .args(["sync", "--watch", "--loopback", "--interval", "0.2"])
        .env_remove("CONNECTOID_PROFILE")
        .env_remove("CONNECTOID_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Checks (bounded) until `profile`'s list shows `wanted`.
fn wait_for_items(profile: &Path, wanted: &[&str]) {
    let mut items = Vec::new();
    for _ in 0..connectoid_tests::MAX_POLLS * 6 {
        let shown = json_lines(profile, &["list", "show"]);
        items = shown[0]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["text"].as_str().unwrap().to_owned())
            .collect();
        if items == wanted {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the list never became {wanted:?}: {items:?}");
}

#[test]
fn list_changes_made_beside_two_sync_watchers_reach_the_peer() {
    let relay = RelayProcess::start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());
    ok(alice, &["list", "add", "milk"]);
    let link = ok(
        alice,
        &["list", "share", "Bob", "--relay", relay.url().as_str()],
    );
    ok(bob, &["accept", link.trim(), "Alice"]);

    // Each side keeps syncing in its own terminal...
    let mut watchers = [sync_watch(alice), sync_watch(bob)];
    wait_for_items(bob, &["milk"]);
    // ...while other commands change the same profiles.
    ok(alice, &["list", "add", "bread"]);
    ok(bob, &["list", "add", "eggs"]);
    assert_eq!(json_lines(alice, &["peers"])[0][0]["status"], "connected");
    wait_for_items(bob, &["bread", "eggs", "milk"]);
    wait_for_items(alice, &["bread", "eggs", "milk"]);
    for watcher in &mut watchers {
        watcher.kill().unwrap();
        watcher.wait().unwrap();
    }
}
