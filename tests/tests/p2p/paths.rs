//! Which path a sync takes: a direct link reports the peer's address; a
//! link that cannot come up (or direct links turned off) falls back to the
//! relays' mailboxes, with big lists cut into parts; an offer carries the
//! reflexive address a relay saw for the link's own socket.

use std::net::SocketAddr;
use std::time::Duration;

use connectoid::list::{self, SyncPath, SyncReport};
use connectoid::peer::QuicOffer;
use connectoid::{PeerLinkOptions, ShareOptions};
use connectoid_tests::fake::RelayProxy;
use connectoid_tests::{InProcessRelay, client, entries, init_tracing};
use serde_json::Value;

use crate::{add, next_offer, pair, serial, sync_both, sync_options, texts};

fn path_of(report: &SyncReport, nickname: &str) -> SyncPath {
    report
        .synced_with(nickname)
        .unwrap_or_else(|| panic!("{nickname} not synced: {report:?}"))
        .path
}

#[tokio::test]
async fn a_loopback_sync_is_direct_and_names_the_peers_address() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (a, b) = sync_both(&pair.alice, &pair.bob).await?;
    for report in [(&a, "Bob"), (&b, "Alice")] {
        match path_of(report.0, report.1) {
            SyncPath::Direct(remote) => assert!(remote.ip().is_loopback(), "{remote}"),
            other => panic!("expected a direct sync, got {other:?}"),
        }
    }
    Ok(())
}

/// Both sides' links time out at once (a connect timeout of zero stands
/// for candidates that never answer): each sends its list through the
/// relays and applies the other's.
#[tokio::test]
async fn a_link_that_does_not_come_up_falls_back_to_the_relays() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    add(alice, "milk")?;
    add(bob, "eggs")?;
    let mut options = sync_options();
    options.link.connect_timeout = Duration::ZERO;
    let (a, b) = tokio::join!(list::sync(alice, &options), list::sync(bob, &options));
    let (a, b) = (a?, b?);
    assert_eq!(path_of(&a, "Bob"), SyncPath::Relayed, "{a:?}");
    assert_eq!(path_of(&b, "Alice"), SyncPath::Relayed, "{b:?}");
    assert!(a.failed.is_empty() && b.failed.is_empty(), "{a:?} {b:?}");
    assert_eq!(texts(alice)?, ["eggs", "milk"]);
    assert_eq!(texts(bob)?, ["eggs", "milk"]);
    assert_eq!(alice.peer_sockets() + bob.peer_sockets(), 0);
    Ok(())
}

/// One side turns direct links off: it neither offers nor answers, sends
/// its list (here big enough to be cut into parts) through the relays, and
/// the other side answers the same way.
#[tokio::test]
async fn with_direct_links_off_a_big_list_goes_through_the_relays_in_parts() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    let mut shopping = list::load(alice.profile_dir())?;
    for i in 0..120 {
        let text = format!("{i:03} {}", "x".repeat(190));
        shopping.add(&text, list::new_id(), list::now())?;
    }
    list::save(alice.profile_dir(), &shopping)?;
    let json_len = serde_json::to_vec(&shopping.message_for("Bob"))?.len();
    assert!(json_len > 2 * list::MAX_RELAYED_PART_LEN, "{json_len}");
    add(bob, "eggs")?;
    let (relayed, direct) = (sync_options().direct(false), sync_options());
    let (a, b) = tokio::join!(list::sync(alice, &relayed), list::sync(bob, &direct));
    let (a, b) = (a?, b?);
    assert_eq!(path_of(&a, "Bob"), SyncPath::Relayed, "{a:?}");
    assert_eq!(path_of(&b, "Alice"), SyncPath::Relayed, "{b:?}");
    assert_eq!(texts(bob)?.len(), 121);
    assert_eq!(texts(alice)?, texts(bob)?);
    Ok(())
}

/// A UDP forwarder stands for a NAT: the relay sees the forwarder's
/// address, not the peer-link socket's. The offer must carry that address
/// (learnt from the check datagram sent from the link's own socket), and
/// the socket's own port for the local candidates.
#[tokio::test]
async fn an_offer_carries_the_reflexive_address_a_relay_saw() -> anyhow::Result<()> {
    let _serial = serial();
    init_tracing();
    let inside = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let outside = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mapped = outside.local_addr()?;
    let proxy = RelayProxy::start_advertising_udp(inside.local_addr()?.port()).await?;
    let relay = InProcessRelay::start_published_as(vec![proxy.url()]).await?;
    proxy.set_upstream(&relay.url());
    let relay_udp = relay.udp_addr().expect("the test relay serves UDP");
    let forwarder = tokio::spawn(async move {
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        let mut client: Option<SocketAddr> = None;
        loop {
            tokio::select! {
                Ok((len, from)) = inside.recv_from(&mut a) => {
                    client = Some(from);
                    let _ = outside.send_to(&a[..len], relay_udp).await;
                }
                Ok((len, _)) = outside.recv_from(&mut b) => {
                    if let Some(client) = client {
                        let _ = inside.send_to(&b[..len], client).await;
                    }
                }
            }
        }
    });
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = client(dirs.0.path())?;
    let bob = client(dirs.1.path())?;
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&[proxy.url()])))
        .await?;
    bob.accept(&link, "Alice", Value::Null, Default::default())
        .await?;
    let pending = bob.offer_link("Alice", &PeerLinkOptions::default()).await?;
    let offer = QuicOffer::from_body(&next_offer(&alice).await?)?;
    assert_eq!(offer.session, pending.session());
    assert_eq!(offer.candidates.first(), Some(&mapped), "{offer:?}");
    let local_port = offer.candidates[1].port();
    assert_ne!(local_port, mapped.port());
    assert!(
        offer.candidates[1..].iter().all(|c| c.port() == local_port),
        "{offer:?}"
    );
    // The relay is on loopback, so a loopback candidate is offered too.
    assert!(
        offer
            .candidates
            .iter()
            .any(|c| c.ip().is_loopback() && c.port() == local_port),
        "{offer:?}"
    );
    drop(pending);
    forwarder.abort();
    relay.shutdown().await?;
    Ok(())
}
