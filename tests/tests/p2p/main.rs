//! Peer links and the shared shopping list, end to end: real relays and
//! real QUIC on 127.0.0.1 (loopback candidates only). One module per
//! subject; shared setup here.

// Helpers outside #[test] functions unwrap too: a test failure is a panic.
#![allow(clippy::unwrap_used)]
// The serializing guard is held across awaits on purpose: each test has
// its own runtime thread, and the guard only orders whole tests.
#![allow(clippy::await_holding_lock)]

mod security;
mod shopping;

use std::time::Duration;

use connectoid::list::{self, SyncOptions, SyncReport};
use connectoid::{Client, Link, PeerLinkOptions, ShareOptions};
use connectoid_tests::{InProcessRelay, client, entries, init_tracing};
use serde_json::Value;

/// Loopback-only links with a bounded connect timeout.
pub(crate) fn link_options() -> PeerLinkOptions {
    let mut options = PeerLinkOptions::loopback();
    options.connect_timeout = Duration::from_secs(10);
    options
}

/// Sync options for tests: loopback, short waits, bounded polls.
pub(crate) fn sync_options() -> SyncOptions {
    let mut options = SyncOptions::default();
    options.link = link_options();
    options.polls = 60;
    options.interval = Duration::from_millis(100);
    options
}

/// Tests in this binary run one at a time: one of them counts the
/// process's UDP sockets, which the others would disturb.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Alice, Bob (who accepted Alice's link) and the relay.
pub(crate) struct Pair {
    pub(crate) _serial: std::sync::MutexGuard<'static, ()>,
    pub(crate) relay: InProcessRelay,
    pub(crate) alice: Client,
    pub(crate) bob: Client,
    pub(crate) link: Link,
    pub(crate) _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Alice shares with Bob (`read_only` or not, recorded in her list) and
/// Bob accepts.
pub(crate) async fn pair(read_only: bool) -> anyhow::Result<Pair> {
    let serial = serial();
    init_tracing();
    let relay = InProcessRelay::start().await?;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let alice = client(dirs.0.path())?;
    let bob = client(dirs.1.path())?;
    let link = alice
        .share("Bob", ShareOptions::with_relays(entries(&[relay.url()])))
        .await?;
    let mut shared = list::load(alice.profile_dir())?;
    shared.shared_with.insert(
        "Bob".into(),
        if read_only {
            list::Access::ReadOnly
        } else {
            list::Access::ReadWrite
        },
    );
    list::save(alice.profile_dir(), &shared)?;
    bob.accept(&link, "Alice", Value::Null, Default::default())
        .await?;
    Ok(Pair {
        _serial: serial,
        relay,
        alice,
        bob,
        link,
        _dirs: dirs,
    })
}

/// Both sides run one `list::sync` at once; both must sync with the other.
pub(crate) async fn sync_both(
    alice: &Client,
    bob: &Client,
) -> anyhow::Result<(SyncReport, SyncReport)> {
    let options = sync_options();
    let (a, b) = tokio::join!(list::sync(alice, &options), list::sync(bob, &options));
    let (a, b) = (a?, b?);
    anyhow::ensure!(
        a.synced_with("Bob").is_some() && a.failed.is_empty(),
        "alice: {a:?}"
    );
    anyhow::ensure!(
        b.synced_with("Alice").is_some() && b.failed.is_empty(),
        "bob: {b:?}"
    );
    Ok((a, b))
}

/// Adds an item to the list in `client`'s profile.
pub(crate) fn add(client: &Client, text: &str) -> anyhow::Result<()> {
    let mut shopping = list::load(client.profile_dir())?;
    shopping.add(text, list::new_id(), list::now())?;
    list::save(client.profile_dir(), &shopping)?;
    Ok(())
}

/// Removes an item from the list in `client`'s profile.
pub(crate) fn remove(client: &Client, text: &str) -> anyhow::Result<()> {
    let mut shopping = list::load(client.profile_dir())?;
    shopping.remove(text, list::now())?;
    list::save(client.profile_dir(), &shopping)?;
    Ok(())
}

/// The visible items in `client`'s list.
pub(crate) fn texts(client: &Client) -> anyhow::Result<Vec<String>> {
    Ok(list::load(client.profile_dir())?.texts())
}
