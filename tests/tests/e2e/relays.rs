//! Relay sets: `share` picks healthy relays; a peer moves its mailbox to
//! other relays and tells the other side without a new link.

use connectoid::{Event, Kind, ShareOptions};
use connectoid_tests::{Blackhole, InProcessRelay, client, entries, init_tracing, poll_until};
use serde_json::json;

#[tokio::test]
async fn share_picks_the_healthy_relays() -> anyhow::Result<()> {
    init_tracing();
    let good = [
        InProcessRelay::start().await?,
        InProcessRelay::start().await?,
    ];
    let hole = Blackhole::start().await?;
    let dir = tempfile::tempdir()?;
    let alice = connectoid::Client::builder(dir.path())
        .relay_timeout(std::time::Duration::from_millis(500))
        .build()?;
    for url in [good[0].url(), hole.url(), good[1].url()] {
        alice.add_relay(connectoid::RelayEntry::new(url)).await?;
    }
    let probes = alice.probe_relays().await;
    let healthy: Vec<_> = probes.iter().map(|p| p.is_healthy()).collect();
    assert_eq!(healthy, vec![true, false, true]);
    assert_eq!(probes[0].info.as_ref().unwrap().protocol, 1);

    let mut options = ShareOptions::default();
    options.pick = Some(2);
    let link = alice.share("Bob", options).await?;
    let mut named: Vec<_> = link.relays.iter().map(|e| e.url.clone()).collect();
    named.sort();
    let mut expected = vec![good[0].url(), good[1].url()];
    expected.sort();
    assert_eq!(named, expected);

    let mut options = ShareOptions::default();
    options.pick = Some(3);
    let error = alice.share("Carol", options).await.unwrap_err();
    assert!(matches!(
        error,
        connectoid::ClientError::NotEnoughHealthyRelays {
            wanted: 3,
            healthy: 2
        }
    ));
    Ok(())
}

#[tokio::test]
async fn a_peer_moves_to_new_relays_without_a_new_link() -> anyhow::Result<()> {
    init_tracing();
    let old = InProcessRelay::start().await?;
    let new = InProcessRelay::start().await?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (client(a.path())?, client(b.path())?);
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&[old.url()])))
        .await?;
    bob.accept(&link, "Alice", json!({"offer": 1}), Default::default())
        .await?;
    poll_until(&alice, |e| !e.is_empty()).await?;

    // Bob sends one message to the old relay before Alice moves.
    bob.send("Alice", Kind::App, json!({"n": 1})).await?;

    // Alice moves her mailbox to the new relay and tells Bob.
    let report = alice
        .set_relays("Bob", entries(&[new.url()]))
        .await?
        .unwrap();
    assert!(report.is_success());
    let events = poll_until(&bob, |e| !e.is_empty()).await?;
    assert_eq!(
        events,
        vec![Event::RelaysChanged {
            nickname: "Alice".into(),
            relays: vec![new.url()]
        }]
    );
    assert_eq!(
        bob.peer("Alice").await.unwrap().their_relays,
        vec![new.url()]
    );

    // Bob's next message goes to the new relay only; Alice still drains the
    // old one for the message lifetime, so she gets both.
    let report = bob.send("Alice", Kind::App, json!({"n": 2})).await?;
    assert_eq!(report.accepted(), vec![&new.url()]);
    let events = poll_until(&alice, |e| e.len() >= 2).await?;
    let bodies: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Message { body, .. } => body["n"].as_u64().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bodies, vec![1, 2]);
    assert_eq!(alice.peer("Bob").await.unwrap().our_relays, vec![new.url()]);
    Ok(())
}
