//! Checks spread over many existing mailboxes: the rows `check_http_spread`
//! and `check_udp_spread`, whose CPU per check is compared with the
//! 64-mailbox rows (`check_http_keepalive`, `check_udp_1`) by the targets in
//! `scenarios`. The mailboxes are made directly in a redb data directory
//! (with valid keys, so that HTTP checks of them are accepted) before the
//! relay starts on it; [`populate`] makes the idle mailboxes of the memory
//! row the same way. This module computes no targets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use connectoid_protocol::PublicKey;
use connectoid_relay::store::MailboxId;
use connectoid_relay::{RedbStore, Store as _, StoreOptions};

use super::load::{Budget, http_load_spread, udp_load_spread};
use super::proc::RelayOptions;
use super::report::{Report, Row};
use super::scenarios::{
    FAR_CURSOR, ROOMY, Setup, check_body, found_false, measure_pair, udp_datagram, udp_not_found,
};

/// `count` valid public keys, fast: random compressed points, kept when
/// they decompress (about half do; no scalar multiplication), on every core.
fn spread_keys(count: usize) -> Vec<PublicKey> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let want = count / threads + usize::from(t < count % threads);
                scope.spawn(move || {
                    let mut state = 0x9e37_79b9_7f4a_7c15u64
                        ^ (t as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    let mut next = || {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state
                    };
                    let mut keys = Vec::with_capacity(want);
                    while keys.len() < want {
                        let mut bytes = [0u8; 49];
                        bytes[0] = 0x02 | (next() & 1) as u8;
                        for chunk in bytes[1..].chunks_mut(8) {
                            let word = next().to_le_bytes();
                            chunk.copy_from_slice(&word[..chunk.len()]);
                        }
                        if let Ok(key) = PublicKey::from_bytes(&bytes) {
                            keys.push(key);
                        }
                    }
                    keys
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Checks spread over many existing mailboxes (1 000 000, 100 000 with
/// `--quick`), over HTTP and UDP: the CPU per check must not depend on how
/// many distinct mailboxes poll. Each row's baseline is the same relay
/// (which also holds the 64 benchmark mailboxes) checked over those 64 by
/// the same load generator, in alternating rounds with the spread load, so
/// that a drift of a shared machine's load does not move the ratio.
pub(super) async fn checks_spread(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let count = setup.options.idle_mailboxes() as usize;
    let began = Instant::now();
    let keys = tokio::task::spawn_blocking(move || spread_keys(count)).await?;
    let few = setup.publics();
    let dir = setup.data_dir("spread");
    populate_ids(&dir, keys.iter().chain(&few).map(MailboxId::from).collect()).await?;
    eprintln!(
        "bench: {count} mailboxes with valid keys made in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    let relay = RelayOptions::new(&setup.relay_binary, &dir)
        .with(ROOMY)
        .start()?;
    let (addr, udp) = (relay.http_addr()?, relay.udp_addr()?);
    let bodies = |keys: &[PublicKey]| {
        Arc::new(
            keys.iter()
                .map(|k| check_body(k, FAR_CURSOR))
                .collect::<Vec<_>>(),
        )
    };
    let datagrams = |keys: &[PublicKey]| {
        Arc::new(
            keys.iter()
                .map(|k| udp_datagram(std::slice::from_ref(k), 1))
                .collect::<Vec<_>>(),
        )
    };
    let (spread_bodies, few_bodies) = (bodies(&keys), bodies(&few));
    let (spread_datagrams, few_datagrams) = (datagrams(&keys), datagrams(&few));
    drop(keys);
    // One pass over every mailbox first, as polling apps make: the relay
    // has seen each key once (as it has when the mailbox was made by a send).
    let warm = http_load_spread(
        addr,
        Arc::clone(&spread_bodies),
        4,
        Budget::new(Duration::from_secs(600), count as u64),
        found_false,
    )
    .await?;
    if warm.errors > 0 {
        bail!("{} warm-up checks failed", warm.errors);
    }
    let note = |what: &str| {
        format!(
            "4 concurrent clients, {what} spread over {count} existing mailboxes, each seen once before{}",
            if setup.options.quick {
                " (--quick; a full run uses 1 000 000)"
            } else {
                ""
            }
        )
    };
    let baseline = |what: &str| format!("the same relay, {what} over the 64 benchmark mailboxes");
    let (spread, few_measure) = measure_pair(
        setup,
        (&relay, |budget| {
            http_load_spread(addr, Arc::clone(&spread_bodies), 4, budget, found_false)
        }),
        (&relay, |budget| {
            http_load_spread(addr, Arc::clone(&few_bodies), 4, budget, found_false)
        }),
    )
    .await?;
    let mut row = Row::ours(
        "check_http_spread",
        "check over HTTP, kept-alive, spread over many mailboxes",
        spread,
    );
    row.baseline = Some((baseline("checks"), few_measure));
    row.note = note("checks");
    report.rows.push(row);
    let wait = Duration::from_millis(500);
    let (spread, few_measure) = measure_pair(
        setup,
        (&relay, |budget| {
            udp_load_spread(
                udp,
                Arc::clone(&spread_datagrams),
                4,
                wait,
                budget,
                udp_not_found,
            )
        }),
        (&relay, |budget| {
            udp_load_spread(
                udp,
                Arc::clone(&few_datagrams),
                4,
                wait,
                budget,
                udp_not_found,
            )
        }),
    )
    .await?;
    let mut row = Row::ours(
        "check_udp_spread",
        "UDP check, 1 mailbox per datagram, spread over many mailboxes",
        spread,
    );
    row.baseline = Some((baseline("datagrams"), few_measure));
    row.note = note("datagrams");
    report.rows.push(row);
    Ok(())
}

/// Creates `count` idle mailboxes (no message left) directly in a redb
/// store in `dir`, as sends would, then closes it. Their ids are not valid
/// keys (only the store sees them); see [`populate_ids`] for valid ones.
pub(super) async fn populate(dir: &Path, count: u64) -> anyhow::Result<()> {
    let ids = (0..count)
        .map(|n| {
            let mut id = [0u8; 49];
            id[0] = 0x02;
            id[1..9].copy_from_slice(&n.to_be_bytes());
            id[9..17].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            MailboxId(id)
        })
        .collect();
    populate_ids(dir, ids).await
}

/// Creates an idle mailbox (no message left) for each of `ids` directly in
/// a redb store in `dir`, as sends would, then closes it.
async fn populate_ids(dir: &Path, ids: Vec<MailboxId>) -> anyhow::Result<()> {
    let count = ids.len() as u64;
    let options = StoreOptions {
        message_ttl_us: 1,
        max_mailboxes: count * 2,
        ..StoreOptions::default()
    };
    let path = dir.to_owned();
    let store =
        Arc::new(tokio::task::spawn_blocking(move || RedbStore::open(&path, options)).await??);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as u64;
    for chunk in ids.chunks(4096) {
        let sends = chunk.iter().map(|id| {
            let store = Arc::clone(&store);
            async move { store.send(*id, vec![0; 113], now_us).await }
        });
        for result in futures::future::join_all(sends).await {
            result?;
        }
    }
    store.sweep(now_us + 10_000_000).await?;
    store.close().await?;
    Ok(())
}
