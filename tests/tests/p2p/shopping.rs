//! The shopping list over peer links: items spread both ways, concurrent
//! edits converge, a read-only peer's changes are not applied, and nothing
//! stays open after a sync.

use std::collections::HashSet;

use connectoid::list;

use crate::{add, pair, remove, sync_both, texts};

/// Inodes of this process's UDP sockets (IPv4 and IPv6).
fn udp_sockets() -> anyhow::Result<usize> {
    let mut udp_inodes = HashSet::new();
    for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                udp_inodes.insert(inode.to_owned());
            }
        }
    }
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            && udp_inodes.contains(inode)
        {
            count += 1;
        }
    }
    Ok(count)
}

#[tokio::test]
async fn items_spread_both_ways_and_concurrent_edits_converge() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    add(alice, "milk")?;
    add(alice, "bread")?;
    sync_both(alice, bob).await?;
    assert_eq!(texts(bob)?, ["bread", "milk"]);

    // Bob removes one; Alice adds one; both sync: each sees both changes.
    remove(bob, "bread")?;
    add(alice, "eggs")?;
    sync_both(alice, bob).await?;
    assert_eq!(texts(alice)?, ["eggs", "milk"]);
    assert_eq!(texts(bob)?, ["eggs", "milk"]);

    // Concurrent edits of the same items converge to one list.
    remove(alice, "milk")?;
    add(bob, "butter")?;
    remove(bob, "eggs")?;
    add(alice, "eggs")?;
    sync_both(alice, bob).await?;
    let (a, b) = (
        list::load(alice.profile_dir())?,
        list::load(bob.profile_dir())?,
    );
    assert_eq!(a.items, b.items, "replicas differ");
    assert_eq!(a.texts(), ["butter", "eggs"]);
    Ok(())
}

#[tokio::test]
async fn nothing_stays_open_after_a_sync() -> anyhow::Result<()> {
    let pair = pair(false).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    // Polls first, so lazily made sockets (none expected) exist already.
    alice.poll_once().await?;
    bob.poll_once().await?;
    let before = udp_sockets()?;
    add(alice, "milk")?;
    sync_both(alice, bob).await?;
    assert_eq!(texts(bob)?, ["milk"]);
    assert_eq!(
        alice.peer_sockets() + bob.peer_sockets(),
        0,
        "a peer-link socket is still open"
    );
    // The endpoint driver closes the socket once its last handle is gone:
    // bounded retries, no timing assertion.
    let mut after = udp_sockets()?;
    for _ in 0..50 {
        if after <= before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = udp_sockets()?;
    }
    assert!(
        after <= before,
        "UDP sockets before {before}, after {after}"
    );
    // Polling still works after the sync.
    alice.poll_once().await?;
    Ok(())
}

#[tokio::test]
async fn a_read_only_peers_changes_are_not_applied() -> anyhow::Result<()> {
    let pair = pair(true).await?;
    let (alice, bob) = (&pair.alice, &pair.bob);
    add(alice, "milk")?;
    sync_both(alice, bob).await?;
    assert_eq!(texts(bob)?, ["milk"]);
    // Bob's own edits are refused with a clear error...
    let err = remove(bob, "milk").unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    // ...and edits forced into his file are not applied by Alice.
    let mut forced = list::load(bob.profile_dir())?;
    for item in forced.items.values_mut() {
        item.deleted = true;
        item.updated_at += 1000;
    }
    forced.items.insert(
        "forged".into(),
        list::Item {
            id: "forged".into(),
            text: "caviar".into(),
            updated_at: list::now(),
            deleted: false,
            by: forced.replica.clone(),
        },
    );
    list::save(bob.profile_dir(), &forced)?;
    sync_both(alice, bob).await?;
    assert_eq!(texts(alice)?, ["milk"]);
    Ok(())
}
