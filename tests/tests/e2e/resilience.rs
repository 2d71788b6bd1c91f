//! Relays that die, never answer, answer garbage or forge messages: every
//! send and poll still succeeds through the others, and each report says
//! what the bad relay did.

use std::time::Duration;

use connectoid::{Client, Event, Kind, RelayError, ShareOptions};
use connectoid_tests::{
    Behavior, Blackhole, FakeRelay, RelayProcess, client, entries, init_tracing, poll_until,
};
use serde_json::json;

/// Alice shares through `urls`, Bob accepts; returns both clients and the
/// accept report.
async fn connect(
    urls: &[connectoid::RelayUrl],
    alice: &Client,
    bob: &Client,
) -> anyhow::Result<connectoid::SendReport> {
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(urls)))
        .await?;
    Ok(bob
        .accept(&link, "Alice", json!({"offer": 1}), Default::default())
        .await?)
}

#[tokio::test]
async fn one_of_three_relays_killed_during_the_test() -> anyhow::Result<()> {
    init_tracing();
    let mut relays = [
        RelayProcess::start()?,
        RelayProcess::start()?,
        RelayProcess::start()?,
    ];
    let urls: Vec<_> = relays.iter().map(RelayProcess::url).collect();
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (client(a.path())?, client(b.path())?);
    let report = connect(&urls, &alice, &bob).await?;
    assert_eq!(report.accepted().len(), 3);

    relays[1].kill();

    // Alice still gets Bob's hello, once; the report names the dead relay.
    let poll = alice.poll_once().await?;
    assert_eq!(poll.deliveries.len(), 1, "{poll:?}");
    assert!(matches!(
        poll.deliveries[0].event,
        Event::PeerConnected { .. }
    ));
    alice.ack(&poll.deliveries[0]).await?;
    let dead = poll.report.relay(&urls[1]).unwrap();
    assert!(
        dead.errors.iter().any(RelayError::is_unreachable),
        "{dead:?}"
    );
    assert!(!poll.report.all_failed());

    // Sends succeed through the two live relays.
    let report = alice
        .send("Bob", Kind::Answer, json!({"answer": 1}))
        .await?;
    assert_eq!(report.accepted(), vec![&urls[0], &urls[2]]);
    assert!(
        report
            .outcome(&urls[1])
            .unwrap()
            .as_ref()
            .unwrap_err()
            .is_unreachable()
    );
    let events = poll_until(&bob, |e| !e.is_empty()).await?;
    assert_eq!(events.len(), 1);
    let report = bob.send("Alice", Kind::App, json!({"more": 2})).await?;
    assert_eq!(report.accepted().len(), 2);
    let events = poll_until(&alice, |e| !e.is_empty()).await?;
    assert_eq!(
        events,
        vec![Event::Message {
            nickname: "Bob".into(),
            kind: Kind::App,
            body: json!({"more": 2})
        }]
    );
    Ok(())
}

#[tokio::test]
async fn a_blackholed_relay_times_out_without_blocking_the_others() -> anyhow::Result<()> {
    init_tracing();
    let relay = RelayProcess::start()?;
    let hole = Blackhole::start().await?;
    let urls = [relay.url(), hole.url()];
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let timeout = Duration::from_millis(800);
    let alice = Client::builder(a.path()).relay_timeout(timeout).build()?;
    let bob = Client::builder(b.path()).relay_timeout(timeout).build()?;

    let report = connect(&urls, &alice, &bob).await?;
    assert_eq!(report.outcome(&urls[0]), Some(&Ok(())));
    assert_eq!(
        report.outcome(&urls[1]),
        Some(&Err(RelayError::Timeout(timeout)))
    );

    let poll = alice.poll_once().await?;
    assert_eq!(poll.deliveries.len(), 1);
    alice.ack(&poll.deliveries[0]).await?;
    let stuck = poll.report.relay(&urls[1]).unwrap();
    assert_eq!(stuck.errors, vec![RelayError::Timeout(timeout)]);

    let report = alice.send("Bob", Kind::Answer, json!({})).await?;
    assert_eq!(
        report.outcome(&urls[1]),
        Some(&Err(RelayError::Timeout(timeout)))
    );
    assert_eq!(poll_until(&bob, |e| !e.is_empty()).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_relay_answering_garbage_is_reported_and_the_others_work() -> anyhow::Result<()> {
    init_tracing();
    let relay = RelayProcess::start()?;
    let garbage = FakeRelay::start(Behavior::Garbage).await?;
    let urls = [relay.url(), garbage.url()];
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (client(a.path())?, client(b.path())?);

    let report = connect(&urls, &alice, &bob).await?;
    assert!(matches!(
        report.outcome(&urls[1]),
        Some(Err(RelayError::Malformed { .. }))
    ));
    let poll = alice.poll_once().await?;
    assert_eq!(poll.deliveries.len(), 1);
    alice.ack(&poll.deliveries[0]).await?;
    let bad = poll.report.relay(&urls[1]).unwrap();
    assert!(
        matches!(bad.errors.as_slice(), [RelayError::Malformed { .. }]),
        "{bad:?}"
    );
    assert!(garbage.requests() > 0);
    Ok(())
}

#[tokio::test]
async fn forged_messages_are_rejected_and_never_delivered() -> anyhow::Result<()> {
    init_tracing();
    let relay = RelayProcess::start()?;
    let forger = FakeRelay::start(Behavior::Forger).await?;
    let urls = [relay.url(), forger.url()];
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (client(a.path())?, client(b.path())?);
    let report = connect(&urls, &alice, &bob).await?;
    assert_eq!(
        report.accepted().len(),
        2,
        "the forger says ok and drops it"
    );

    // Alice: the real hello comes through; the seven forgeries do not.
    let poll = alice.poll_once().await?;
    let events: Vec<_> = poll.deliveries.iter().map(|d| d.event.clone()).collect();
    let bob_key = bob.peer("Alice").await.unwrap().our_key;
    assert!(
        matches!(events.as_slice(), [Event::PeerConnected { key, .. }] if *key == bob_key),
        "{events:?}"
    );
    alice.ack(&poll.deliveries[0]).await?;
    let forged = poll.report.relay(&urls[1]).unwrap();
    assert_eq!(forged.rejected.len(), 7, "{forged:?}");
    let reasons: Vec<_> = forged.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("decryption failed")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a valid P-384 point")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("bad link proof")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("missing link proof")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not this mailbox's peer")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("another mailbox")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("too old")), "{reasons:?}");
    assert!(forged.errors.is_empty());
    // Rejected messages count as processed: the cursor moved past them.
    let again = alice.poll_once().await?;
    assert!(again.deliveries.is_empty());
    assert!(again.report.relay(&urls[1]).unwrap().rejected.is_empty());

    // Bob: Alice's answer arrives through the honest relay only.
    alice
        .send("Bob", Kind::Answer, json!({"answer": true}))
        .await?;
    let poll = bob.poll_once().await?;
    let events: Vec<_> = poll.deliveries.iter().map(|d| d.event.clone()).collect();
    assert_eq!(
        events,
        vec![Event::Message {
            nickname: "Alice".into(),
            kind: Kind::Answer,
            body: json!({"answer": true})
        }]
    );
    assert_eq!(poll.report.relay(&urls[1]).unwrap().rejected.len(), 7);
    Ok(())
}
