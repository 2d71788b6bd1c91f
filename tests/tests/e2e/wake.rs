//! Wake-up instead of polling (`spec/client.md` §11): a `connectoid poll
//! --watch` with an interval of an hour, against a relay that holds checks,
//! prints a message sent from another process within a round trip, while
//! it keeps one held check open at the relay; with `--no-held-checks` it
//! keeps none.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use connectoid_tests::RelayProcess;
use serde_json::json;

use crate::cli::{ok, poll_for, watch};

/// The watcher's polling interval: an hour, so that only a held check can
/// deliver within the test.
const INTERVAL_SECONDS: &str = "3600";

/// The relay's `GET /metrics` answer, head and body.
fn metrics(addr: SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// How many checks the relay at `addr` holds now (`GET /metrics`).
fn held_checks(addr: SocketAddr) -> u64 {
    let text = metrics(addr);
    text.lines()
        .find_map(|line| line.strip_prefix("connectoid_held_checks "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connectoid_held_checks in\n{text}"))
}

/// Waits (up to a minute) until the relay holds `count` checks.
fn until_held(addr: SocketAddr, count: u64) {
    for _ in 0..600 {
        if held_checks(addr) == count {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the relay never held {count} check(s)");
}

#[test]
fn poll_watch_prints_a_message_within_a_round_trip_of_its_send() {
    let relay = RelayProcess::start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());
    let link = ok(alice, &["share", "Bob", "--relay", relay.url().as_str()]);
    ok(bob, &["accept", link.trim(), "Alice"]);
    poll_for(alice, |e| e["event"] == "peer-connected");

    // Terminal 1: Bob watches, with an hour between polls.
    let (mut watcher, events) = watch(bob, &["--interval", INTERVAL_SECONDS]);
    // Idle, the watcher keeps one held check at the relay (its one mailbox).
    until_held(relay.http_addr(), 1);
    for n in 1..=3 {
        // Terminal 2: Alice sends.
        ok(alice, &["send", "Bob", &json!({"n": n}).to_string()]);
        let sent = Instant::now();
        let event = events
            .recv_timeout(Duration::from_secs(60))
            .expect("poll --watch printed nothing within a minute");
        let took = sent.elapsed();
        assert_eq!(event["event"], "message", "{event}");
        assert_eq!(event["body"]["n"], json!(n));
        // A round trip, not the hour of the interval; the bound is wide so
        // that a loaded machine does not fail it.
        assert!(
            took < Duration::from_secs(20),
            "printed {took:?} after the send"
        );
        until_held(relay.http_addr(), 1);
    }
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    until_held(relay.http_addr(), 0);
}

#[test]
fn poll_watch_without_held_checks_holds_none() {
    let relay = RelayProcess::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bob = dir.path();
    ok(bob, &["share", "Alice", "--relay", relay.url().as_str()]);
    let (mut watcher, _events) = watch(bob, &["--interval", INTERVAL_SECONDS, "--no-held-checks"]);
    // The watcher's first poll reaches the relay (its mailbox's check)...
    let addr = relay.http_addr();
    let polled = || {
        let text = metrics(addr);
        text.contains("connectoid_requests_total{action=\"check\",result=\"ok\"}")
            || text.contains("connectoid_udp_checks_total 1")
    };
    let started = Instant::now();
    while !polled() {
        assert!(started.elapsed() < Duration::from_secs(60), "never polled");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and then it waits for its interval without holding a check.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(held_checks(addr), 0);
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}
