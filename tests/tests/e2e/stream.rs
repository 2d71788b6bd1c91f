//! The polling loop as a stream: deliveries arrive as they come, and a
//! poll where every relay fails yields an error and the stream goes on.

use std::time::Duration;

use connectoid::{Event, Kind, PollError, PollOptions, ShareOptions};
use connectoid_tests::{RelayProcess, client, entries, init_tracing};
use futures::StreamExt as _;
use serde_json::json;

#[tokio::test]
async fn events_stream_delivers_and_survives_relay_failure() -> anyhow::Result<()> {
    init_tracing();
    let mut relay = RelayProcess::start()?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (client(a.path())?, client(b.path())?);
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&[relay.url()])))
        .await?;
    bob.accept(&link, "Alice", json!({"offer": 1}), Default::default())
        .await?;
    bob.send("Alice", Kind::Offer, json!({"offer": 2})).await?;

    let mut options = PollOptions::every(Duration::from_millis(20));
    options.max_backoff = Duration::from_millis(100);
    let mut events = alice.events(options);
    let mut got = Vec::new();
    while got.len() < 2 {
        let delivery = events.next().await.unwrap()?;
        alice.ack(&delivery).await?;
        got.push(delivery.event);
    }
    assert!(matches!(got[0], Event::PeerConnected { .. }), "{got:?}");
    assert!(
        matches!(
            &got[1],
            Event::Message {
                kind: Kind::Offer,
                ..
            }
        ),
        "{got:?}"
    );

    // The only relay dies: the stream reports it and keeps going.
    relay.kill();
    let item = events.next().await.unwrap();
    assert!(
        matches!(item, Err(PollError::AllRelaysFailed(_))),
        "{item:?}"
    );
    let item = events.next().await.unwrap();
    assert!(
        matches!(item, Err(PollError::AllRelaysFailed(_))),
        "{item:?}"
    );
    Ok(())
}
