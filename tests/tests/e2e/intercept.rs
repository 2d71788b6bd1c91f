//! A one-time link used twice: Eve uses Alice's link before Bob. Bob gets
//! "this link was already used (intercepted?)"; Alice's side shows that Eve
//! is the peer who connected and that Bob was turned away.

use connectoid::{ClientError, Event, Kind, LINK_ALREADY_USED, PeerStatus, ShareOptions};
use connectoid_tests::{InProcessRelay, client, entries, init_tracing, poll_until};
use serde_json::json;

#[tokio::test]
async fn eve_uses_the_link_before_bob() -> anyhow::Result<()> {
    init_tracing();
    let relays = [
        InProcessRelay::start().await?,
        InProcessRelay::start().await?,
    ];
    let urls: Vec<_> = relays.iter().map(InProcessRelay::url).collect();
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let alice = client(dirs[0].path())?;
    let bob = client(dirs[1].path())?;
    let eve = client(dirs[2].path())?;
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&urls)))
        .await?;

    // Eve intercepted the link and uses it first.
    eve.accept(&link, "Alice", json!({"offer": "eve"}), Default::default())
        .await?;
    let eve_key = eve.peer("Alice").await.unwrap().our_key;
    // Neither side can use the link twice from the same profile.
    let again = eve
        .accept(&link, "Alice again", json!({}), Default::default())
        .await;
    assert!(
        matches!(again, Err(ClientError::AlreadyAccepted(ref n)) if n == "Alice"),
        "{again:?}"
    );
    let own = alice
        .accept(&link, "Me", json!({}), Default::default())
        .await;
    assert!(matches!(own, Err(ClientError::OwnLink)), "{own:?}");
    let events = poll_until(&alice, |e| !e.is_empty()).await?;
    assert!(
        matches!(events.as_slice(), [Event::PeerConnected { key, .. }] if *key == eve_key),
        "{events:?}"
    );

    // Bob comes second. His hello proves the link secret too, but the link
    // is spent: Alice keeps Eve and tells Bob.
    bob.accept(&link, "Alice", json!({"offer": "bob"}), Default::default())
        .await?;
    let bob_key = bob.peer("Alice").await.unwrap().our_key;
    let events = poll_until(&alice, |e| !e.is_empty()).await?;
    assert_eq!(
        events,
        vec![Event::LinkReuseRefused {
            nickname: "Bob".into(),
            connected: eve_key,
            refused: bob_key,
        }]
    );
    let shown = alice.peer("Bob").await.unwrap();
    assert_eq!(
        shown.their_key,
        Some(eve_key),
        "Alice's side shows who connected"
    );
    assert_eq!(shown.status, PeerStatus::Connected);

    // Bob's client surfaces the error, and keeps refusing to send.
    let events = poll_until(&bob, |e| !e.is_empty()).await?;
    assert_eq!(
        events,
        vec![Event::LinkAlreadyUsed {
            nickname: "Alice".into()
        }]
    );
    assert_eq!(
        bob.peer("Alice").await.unwrap().status,
        PeerStatus::LinkUsed
    );
    let error = bob.send("Alice", Kind::Offer, json!({})).await.unwrap_err();
    assert!(matches!(error, ClientError::LinkAlreadyUsed { .. }));
    assert_eq!(error.to_string(), LINK_ALREADY_USED);
    assert_eq!(
        LINK_ALREADY_USED,
        "this link was already used (intercepted?)"
    );

    // Eve got nothing from Bob's attempt; Bob can clean up.
    assert!(eve.poll_once().await?.deliveries.is_empty());
    let report = bob.unshare("Alice").await?;
    assert!(report.notified.is_none());
    assert!(bob.peers().await.is_empty());
    Ok(())
}
