//! Peer-link security: a certificate other than the pinned one is refused,
//! a replayed offer is not delivered again, and after the first link the
//! original share link only gets "already used".

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use connectoid::{ClientError, Event, Kind, LINK_ALREADY_USED, PeerError};
use connectoid_tests::{InProcessRelay, client, entries, init_tracing, poll_until, url_of};
use serde_json::{Value, json};

use crate::{link_options, next_offer, pair, sync_both};

#[tokio::test]
async fn a_peer_with_another_certificate_is_refused() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    let keys_before = (
        alice.peer("Bob").await.unwrap().our_key,
        bob.peer("Alice").await.unwrap().our_key,
    );
    let mut options = link_options();
    options.connect_timeout = std::time::Duration::from_secs(3);
    let pending = bob.offer_link("Alice", &options).await?;
    let offer = next_offer(alice).await?;
    let answering = alice.answer_link("Bob", &offer, &options);
    let completing = async {
        let events = poll_until(bob, |events| {
            events.iter().any(|e| {
                matches!(
                    e,
                    Event::Message {
                        kind: Kind::Answer,
                        ..
                    }
                )
            })
        })
        .await?;
        let mut answer = events
            .iter()
            .find_map(|e| match e {
                Event::Message {
                    kind: Kind::Answer,
                    body,
                    ..
                } => Some(body.clone()),
                _ => None,
            })
            .unwrap();
        // Bob is made to pin a certificate Alice does not present.
        answer["quic"]["fingerprint"] = json!(connectoid::protocol::b64::encode(&[7u8; 32]));
        anyhow::Ok(pending.complete(bob, &answer).await)
    };
    let (answered, completed) = tokio::join!(answering, completing);
    let completed = completed?;
    assert!(
        matches!(completed, Err(PeerError::Connect { .. })),
        "{completed:?}"
    );
    // Alice's side fails too. Which error it sees depends on the QUIC roles,
    // which the session's fingerprints decide: as the server she never
    // completes the handshake (Connect); as the client her handshake
    // completes before Bob checks her certificate, and Bob then closes the
    // connection before any authenticated exchange (Link).
    assert!(
        matches!(
            answered,
            Err(PeerError::Connect { .. } | PeerError::Link(_))
        ),
        "{answered:?}"
    );
    // No key was rotated and nothing stays open.
    assert_eq!(alice.peer("Bob").await.unwrap().our_key, keys_before.0);
    assert_eq!(bob.peer("Alice").await.unwrap().our_key, keys_before.1);
    assert_eq!(alice.peer_sockets() + bob.peer_sockets(), 0);
    Ok(())
}

/// The recorder's state: upstream URL, recorded sends, HTTP client.
type RecorderState = (String, Arc<Mutex<Vec<Bytes>>>, reqwest::Client);

/// A relay front that records every `send` request body it forwards.
struct Recorder {
    url: connectoid::RelayUrl,
    sends: Arc<Mutex<Vec<Bytes>>>,
    _relay: InProcessRelay,
    relay_url: String,
}

async fn recorder() -> anyhow::Result<Recorder> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = url_of(listener.local_addr()?);
    let relay = InProcessRelay::start_published_as(vec![url.clone()]).await?;
    let relay_url = relay.url().as_str().trim_end_matches('/').to_owned();
    let sends: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let state = (relay_url.clone(), sends.clone(), reqwest::Client::new());
    let app = axum::Router::new()
        .fallback(
            |State((upstream, sends, http)): State<RecorderState>,
             method: axum::http::Method,
             uri: axum::http::Uri,
             body: Bytes| async move {
                let url = format!("{upstream}{}", uri.path());
                let request = if method == axum::http::Method::GET {
                    http.get(&url)
                } else {
                    if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["action"] == "send") {
                        sends.lock().unwrap().push(body.clone());
                    }
                    http.post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                };
                let response = request.send().await.unwrap();
                let status = axum::http::StatusCode::from_u16(response.status().as_u16()).unwrap();
                (status, response.bytes().await.unwrap())
            },
        )
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Recorder {
        url,
        sends,
        _relay: relay,
        relay_url,
    })
}

#[tokio::test]
async fn a_replayed_offer_is_rejected() -> anyhow::Result<()> {
    let _serial = crate::serial();
    init_tracing();
    let front = recorder().await?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    // UDP off: the recorder fronts HTTP only.
    let alice = connectoid::Client::builder(a.path()).udp(false).build()?;
    let bob = connectoid::Client::builder(b.path()).udp(false).build()?;
    let link = alice
        .share(
            "Bob",
            connectoid::ShareOptions::with_relays(entries(std::slice::from_ref(&front.url))),
        )
        .await?;
    bob.accept(&link, "Alice", Value::Null, Default::default())
        .await?;
    poll_until(&alice, |e| {
        e.iter().any(|e| matches!(e, Event::PeerConnected { .. }))
    })
    .await?;
    front.sends.lock().unwrap().clear();
    let pending = bob.offer_link("Alice", &link_options()).await?;
    let offer = front.sends.lock().unwrap().last().cloned().unwrap();
    let first = alice.poll_once().await?;
    assert_eq!(first.deliveries.len(), 1);
    assert!(matches!(
        first.deliveries[0].event,
        Event::Message {
            kind: Kind::Offer,
            ..
        }
    ));
    alice.ack(&first.deliveries[0]).await?;
    drop(pending);
    // The relay (or anyone) sends the same sealed offer again.
    let response = reqwest::Client::new()
        .post(format!("{}/", front.relay_url))
        .header("content-type", "application/json")
        .body(offer)
        .send()
        .await?;
    assert!(response.status().is_success());
    let replay = alice.poll_once().await?;
    assert!(replay.deliveries.is_empty(), "{replay:?}");
    let duplicates: u32 = replay.report.relays.iter().map(|r| r.duplicates).sum();
    assert_eq!(duplicates, 1, "{replay:?}");
    Ok(())
}

#[tokio::test]
async fn after_rotation_the_original_link_is_already_used() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    let link_key = pair.link.key;
    let bob_key = bob.peer("Alice").await.unwrap().our_key;
    sync_both(alice, bob).await?;
    // Both rotated, and each pinned the other's new key.
    let (a, b) = (
        alice.peer("Bob").await.unwrap(),
        bob.peer("Alice").await.unwrap(),
    );
    assert_ne!(a.our_key, link_key);
    assert_ne!(b.our_key, bob_key);
    assert_eq!(a.their_key, Some(b.our_key));
    assert_eq!(b.their_key, Some(a.our_key));
    assert_eq!(a.safety_code, b.safety_code);
    // A second sync works on the new keys and rotates no more.
    sync_both(alice, bob).await?;
    assert_eq!(alice.peer("Bob").await.unwrap().our_key, a.our_key);

    // Carol got hold of the original link: it is spent.
    let c = tempfile::tempdir()?;
    let carol = client(c.path())?;
    carol
        .accept(&pair.link, "Alice", Value::Null, Default::default())
        .await?;
    poll_until(alice, |e| {
        e.iter()
            .any(|e| matches!(e, Event::LinkReuseRefused { .. }))
    })
    .await?;
    poll_until(&carol, |e| {
        e.iter().any(|e| matches!(e, Event::LinkAlreadyUsed { .. }))
    })
    .await?;
    let err = carol
        .send("Alice", Kind::App, Value::Null)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::LinkAlreadyUsed { .. }), "{err}");
    assert_eq!(err.to_string(), LINK_ALREADY_USED);
    // Bob and Alice are untouched.
    sync_both(alice, bob).await?;
    let _ = &pair.relay;
    Ok(())
}
