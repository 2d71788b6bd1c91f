//! The UDP check fast path is used where a relay advertises it, and the
//! client falls back to HTTP when the datagrams go unanswered.

use std::time::Duration;

use connectoid::{Client, Event, ShareOptions, UdpUse};
use connectoid_tests::{InProcessRelay, RelayProxy, client, entries, init_tracing};
use serde_json::json;

#[tokio::test]
async fn udp_check_is_used_when_advertised() -> anyhow::Result<()> {
    init_tracing();
    let relay = InProcessRelay::start().await?;
    assert!(relay.udp_addr().is_some());
    let urls = [relay.url()];
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    // Patient UDP, so that a loaded machine does not turn "answered" into
    // "fell back".
    let alice = Client::builder(a.path())
        .udp_attempt_timeout(Duration::from_secs(2))
        .udp_attempts(3)
        .build()?;
    let bob = client(b.path())?;
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&urls)))
        .await?;

    // Nothing there yet: one datagram answers, no HTTP check at all. The
    // relay also says which address it saw us at.
    let poll = alice.poll_once().await?;
    let report = poll.report.relay(&urls[0]).unwrap();
    if let UdpUse::Answered {
        observed: Some(addr),
        ..
    } = &report.udp
    {
        assert!(addr.ip().is_loopback());
    }
    assert!(
        matches!(report.udp, UdpUse::Answered { datagrams: 1, .. }),
        "{report:?}"
    );
    assert_eq!(report.http_checks, 0);

    bob.accept(&link, "Alice", json!({"offer": 1}), Default::default())
        .await?;
    // Something there: UDP says so, HTTP fetches it.
    let poll = alice.poll_once().await?;
    let report = poll.report.relay(&urls[0]).unwrap();
    assert!(
        matches!(report.udp, UdpUse::Answered { datagrams: 1, .. }),
        "{report:?}"
    );
    assert!(report.http_checks >= 1);
    assert_eq!(poll.deliveries.len(), 1);
    alice.ack(&poll.deliveries[0]).await?;

    // Bob's mailbox and a second share of Alice's ride in one datagram each.
    alice
        .share("Carol", ShareOptions::with_relays(entries(&urls)))
        .await?;
    let poll = alice.poll_once().await?;
    let report = poll.report.relay(&urls[0]).unwrap();
    assert!(
        matches!(report.udp, UdpUse::Answered { datagrams: 1, .. }),
        "{report:?}"
    );
    assert_eq!(report.http_checks, 0);

    // With UDP off in the client, HTTP does the checks.
    drop(alice);
    let alice = Client::builder(a.path()).udp(false).build()?;
    let poll = alice.poll_once().await?;
    let report = poll.report.relay(&urls[0]).unwrap();
    assert_eq!(report.udp, UdpUse::Disabled);
    assert_eq!(report.http_checks, 2);
    Ok(())
}

#[tokio::test]
async fn blocked_udp_falls_back_to_http() -> anyhow::Result<()> {
    init_tracing();
    let proxy = RelayProxy::start(true).await?;
    let relay = InProcessRelay::start_published_as(vec![proxy.url()]).await?;
    proxy.set_upstream(&relay.url());
    let urls = [proxy.url()];
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = Client::builder(a.path())
        .udp_attempt_timeout(Duration::from_millis(100))
        .udp_attempts(2)
        .build()?;
    let bob = client(b.path())?;
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&urls)))
        .await?;
    bob.accept(&link, "Alice", json!({"offer": 2}), Default::default())
        .await?;

    let poll = alice.poll_once().await?;
    let report = poll.report.relay(&urls[0]).unwrap();
    assert!(
        matches!(&report.udp, UdpUse::FellBack { reason } if reason.contains("no answer after 2 attempts")),
        "{report:?}"
    );
    assert!(report.http_checks >= 1);
    assert!(report.errors.is_empty());
    assert!(matches!(
        poll.deliveries.as_slice(),
        [d] if matches!(d.event, Event::PeerConnected { .. })
    ));
    Ok(())
}
