//! The seed's Alice/Bob flow through the library, over three relay processes:
//! share, accept with an offer, poll, answer, poll, unshare; both profiles
//! end clean.

use connectoid::{Event, Kind, PeerStatus, ShareOptions};
use connectoid_tests::{RelayProcess, client, entries, init_tracing, poll_until};
use serde_json::json;

#[tokio::test]
async fn alice_and_bob_share_connect_and_unshare_through_three_relays() -> anyhow::Result<()> {
    init_tracing();
    let relays = [
        RelayProcess::start()?,
        RelayProcess::start()?,
        RelayProcess::start()?,
    ];
    let urls: Vec<_> = relays.iter().map(RelayProcess::url).collect();
    let (alice_dir, bob_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = client(alice_dir.path())?;
    let bob = client(bob_dir.path())?;
    for entry in entries(&urls) {
        assert!(alice.add_relay(entry).await?);
    }

    // Share: the link names all three relays and carries a one-time secret.
    let link = alice.share("Bob", ShareOptions::default()).await?;
    assert_eq!(link.relays.len(), 3);
    assert!(link.secret.is_some());
    let text = link.encode();
    assert_eq!(
        alice.peer("Bob").await.unwrap().link.as_deref(),
        Some(text.as_str())
    );

    // Connect: Bob opens the link and sends his offer to every relay.
    let offer = json!({"sdpOffer": {"type": "offer", "sdp": "v=0 bob"}});
    let link = connectoid::Link::decode(&format!("https://app.example/?connectoid={text}"))?;
    let report = bob
        .accept(&link, "Alice", offer.clone(), Default::default())
        .await?;
    assert_eq!(report.accepted().len(), 3, "{report}");
    assert_eq!(
        bob.peer("Alice").await.unwrap().status,
        PeerStatus::Accepted
    );

    // Alice polls: Bob's offer arrives once, though three relays hold it.
    let events = poll_until(&alice, |e| !e.is_empty()).await?;
    let [
        Event::PeerConnected {
            nickname,
            key,
            body,
            safety_code,
        },
    ] = events.as_slice()
    else {
        panic!("expected one PeerConnected, got {events:?}");
    };
    assert_eq!(nickname, "Bob");
    assert_eq!(body, &offer);
    let bob_info = bob.peer("Alice").await.unwrap();
    assert_eq!(*key, bob_info.our_key);
    assert_eq!(Some(*safety_code), bob_info.safety_code);
    assert_eq!(
        alice.safety_code("Bob").await?,
        bob.safety_code("Alice").await?
    );
    assert_eq!(
        alice.peer("Bob").await.unwrap().status,
        PeerStatus::Connected
    );
    assert_eq!(
        alice.peer("Bob").await.unwrap().link,
        None,
        "the link is spent"
    );

    // Alice answers; Bob polls and gets it.
    let answer = json!({"sdpAnswer": {"type": "answer", "sdp": "v=0 alice"}});
    let report = alice.send("Bob", Kind::Answer, answer.clone()).await?;
    assert_eq!(report.accepted().len(), 3, "{report}");
    let events = poll_until(&bob, |e| !e.is_empty()).await?;
    assert_eq!(
        events,
        vec![Event::Message {
            nickname: "Alice".into(),
            kind: Kind::Answer,
            body: answer
        }]
    );
    assert_eq!(
        bob.peer("Alice").await.unwrap().status,
        PeerStatus::Connected
    );

    // Nothing more is delivered to either side.
    assert!(alice.poll_once().await?.deliveries.is_empty());
    assert!(bob.poll_once().await?.deliveries.is_empty());

    // Unshare: Alice tells Bob, deletes her mailbox at every relay and her keys.
    let report = alice.unshare("Bob").await?;
    assert_eq!(
        report.notified.as_ref().map(|r| r.accepted().len()),
        Some(3)
    );
    assert!(
        report.deleted.iter().all(|o| o.result.is_ok()),
        "{report:?}"
    );
    assert!(alice.peers().await.is_empty());
    let events = poll_until(&bob, |e| !e.is_empty()).await?;
    assert_eq!(
        events,
        vec![Event::PeerUnshared {
            nickname: "Alice".into()
        }]
    );
    assert!(bob.peers().await.is_empty());

    // Both profiles end clean, on disk too.
    drop((alice, bob));
    for dir in [alice_dir.path(), bob_dir.path()] {
        let profile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(connectoid::PROFILE_FILE))?)?;
        assert_eq!(profile["peers"], json!([]), "{profile}");
        let reopened = client(dir)?;
        assert!(reopened.peers().await.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn pages_through_a_relay_with_a_small_receive_limit() -> anyhow::Result<()> {
    init_tracing();
    let relay = connectoid_tests::InProcessRelay::start_with(|config| {
        config.limits.max_receive_limit = 2;
    })
    .await?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (client(a.path())?, client(b.path())?);
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&[relay.url()])))
        .await?;
    bob.accept(&link, "Alice", json!({"n": 0}), Default::default())
        .await?;
    for n in 1..=4 {
        bob.send("Alice", Kind::App, json!({"n": n})).await?;
    }
    // One poll fetches all five in pages of two, in order.
    let poll = alice.poll_once().await?;
    let numbers: Vec<_> = poll
        .deliveries
        .iter()
        .map(|d| match &d.event {
            Event::PeerConnected { body, .. } | Event::Message { body, .. } => body["n"].clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        numbers,
        vec![json!(0), json!(1), json!(2), json!(3), json!(4)]
    );
    assert_eq!(poll.report.relays[0].http_checks, 3);
    Ok(())
}
