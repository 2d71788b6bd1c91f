//! The same message through three relays is delivered once; cursors and
//! seen ids are persisted, so a restarted client delivers nothing twice.

use connectoid::{Event, ShareOptions};
use connectoid_tests::{InProcessRelay, RelayProxy, client, entries, init_tracing};
use serde_json::json;

#[tokio::test]
async fn one_message_through_three_relays_is_delivered_once_across_restarts() -> anyhow::Result<()>
{
    init_tracing();
    // The third relay sits behind a proxy that can be switched off.
    let late = RelayProxy::start(false).await?;
    let relays = [
        InProcessRelay::start().await?,
        InProcessRelay::start().await?,
        InProcessRelay::start_published_as(vec![late.url()]).await?,
    ];
    late.set_upstream(&relays[2].url());
    let urls = [relays[0].url(), relays[1].url(), late.url()];
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let bob = client(b.path())?;
    let link = {
        let alice = client(a.path())?;
        alice
            .share("Bob", ShareOptions::with_relays(entries(&urls)))
            .await?
    };
    let report = bob
        .accept(&link, "Alice", json!({"offer": "x"}), Default::default())
        .await?;
    assert_eq!(report.accepted().len(), 3);

    // First run: three copies fetched, one delivery; not acknowledged.
    {
        let alice = client(a.path())?;
        let poll = alice.poll_once().await?;
        assert_eq!(poll.deliveries.len(), 1, "{poll:?}");
        let fetched: u32 = poll.report.relays.iter().map(|r| r.fetched).sum();
        let duplicates: u32 = poll.report.relays.iter().map(|r| r.duplicates).sum();
        assert_eq!((fetched, duplicates), (3, 2));
        // Polling again in the same run does not deliver it again.
        assert!(alice.poll_once().await?.deliveries.is_empty());
    }

    // Second run: the unacknowledged message comes again (at least once),
    // this time only through the first two relays.
    late.set_up(false);
    {
        let alice = client(a.path())?;
        let poll = alice.poll_once().await?;
        assert_eq!(poll.deliveries.len(), 1);
        assert!(matches!(
            poll.deliveries[0].event,
            Event::PeerConnected { .. }
        ));
        assert!(!poll.report.relay(&urls[2]).unwrap().errors.is_empty());
        alice.ack(&poll.deliveries[0]).await?;
    }
    let profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path().join(connectoid::PROFILE_FILE))?)?;
    let cursors = &profile["peers"][0]["mailbox"]["cursors"];
    assert!(cursors[urls[0].as_str()].as_u64().unwrap() > 0, "{profile}");
    assert!(cursors[urls[1].as_str()].as_u64().unwrap() > 0, "{profile}");
    assert!(cursors.get(urls[2].as_str()).is_none(), "{profile}");
    assert_eq!(profile["seen"].as_object().unwrap().len(), 1);

    // Third run: the late relay is back with its copy. Its cursor never
    // moved, but the persisted seen id stops a second delivery.
    late.set_up(true);
    {
        let alice = client(a.path())?;
        let poll = alice.poll_once().await?;
        assert!(poll.deliveries.is_empty(), "{poll:?}");
        let late_report = poll.report.relay(&urls[2]).unwrap();
        assert_eq!((late_report.fetched, late_report.duplicates), (1, 1));
        assert_eq!(poll.report.relay(&urls[0]).unwrap().fetched, 0);
    }
    // Fourth run: every cursor is past the message now.
    let alice = client(a.path())?;
    let poll = alice.poll_once().await?;
    assert!(poll.deliveries.is_empty());
    assert!(
        poll.report.relays.iter().all(|r| r.fetched == 0),
        "{poll:?}"
    );
    Ok(())
}
