//! A relay that refuses one mailbox (here: a share made without the relay's
//! API key) still serves the others: the refusal is reported for that
//! mailbox only, and another peer's hello on the same relay is delivered.

use connectoid::Event;
use connectoid::protocol::RelayEntry;
use connectoid::protocol::api::ErrorCode;
use connectoid_tests::RelayCommand;
use serde_json::Value;

use crate::cli::{json_lines, ok, run};

const API_KEY: &str = "paid-up";

#[test]
fn a_share_without_the_api_key_does_not_stop_the_others_on_its_relay() {
    let relay = RelayCommand::new()
        .udp()
        .args(["--api-key", API_KEY])
        .start()
        .unwrap();
    let url = relay.url();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());

    // A new user's mistake: a share without the key.
    ok(alice, &["share", "Ghost", "--relay", url.as_str()]);
    // And a good one, which Bob accepts.
    let link = ok(
        alice,
        &["share", "Bob", "--relay", url.as_str(), "--ext", API_KEY],
    );
    ok(bob, &["accept", link.trim(), "Alice"]);

    // One poll delivers Bob's hello and names the refused mailbox.
    let output = run(alice, &["poll", "--json"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let events: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "peer-connected");
    assert_eq!(events[0]["nickname"], "Bob");
    assert!(
        stderr.contains("mailbox for Ghost refused: relay refused: Forbidden"),
        "{stderr}"
    );
    assert!(!stderr.contains("Bob"), "{stderr}");
    assert!(!stderr.contains("every relay failed"), "{stderr}");
    let peers = json_lines(alice, &["peers"]);
    assert_eq!(peers[0][1]["status"], "connected");

    // The library reports the same: the refusal for that mailbox, no error
    // for the relay, and Bob's messages keep coming.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connectoid::Client::builder(alice).build().unwrap();
        let ghost_key = client.peer("Ghost").await.unwrap().our_key;
        let bob_client = connectoid::Client::builder(bob).build().unwrap();
        bob_client
            .send("Alice", connectoid::Kind::App, serde_json::json!({"n": 1}))
            .await
            .unwrap();
        let poll = client.poll_once().await.unwrap();
        let report = poll.report.relay(&url).unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(!poll.report.all_failed());
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert_eq!(report.refused[0].nickname, "Ghost");
        assert_eq!(report.refused[0].mailbox, ghost_key);
        assert_eq!(report.refused[0].error.code(), Some(ErrorCode::Forbidden));
        assert!(matches!(
            &poll.deliveries[..],
            [d] if matches!(&d.event, Event::Message { nickname, .. } if nickname == "Bob")
        ));
        // Moving the broken share to the key fixes it.
        let mut keyed = RelayEntry::new(url.clone());
        keyed.ext = Some(API_KEY.to_owned());
        client.set_relays("Ghost", vec![keyed]).await.unwrap();
        let poll = client.poll_once().await.unwrap();
        let report = poll.report.relay(&url).unwrap();
        assert!(report.refused.is_empty(), "{report:?}");
    });
}
