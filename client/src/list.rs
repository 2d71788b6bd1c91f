//! The demo app's data: a shared shopping list, its merge rule, its file in
//! the profile directory, and one sync with every peer over peer links.
//!
//! Merge rule (a last-writer-wins map): per item id, the version with the
//! latest `updatedAt` wins; equal times are broken by the writer's replica
//! id, then by deletion, then by text, so every replica picks the same
//! winner. Removing an item keeps a tombstone (`deleted: true`) so the
//! removal spreads. A list shared read-only: the owner ignores everything
//! the read-only peer sends, and the read-only side refuses local edits.
//! The same rule applies both ways: whoever shared read-only with a
//! nickname ignores that nickname's changes.
//!
//! [`ShoppingList`] is pure (no I/O, the caller passes times and ids);
//! [`load`], [`save`], [`update`], [`sync`] and [`Syncer`] do the file and
//! network work.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand_core::Rng as _;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::clock::{Clock as _, SystemClock};
use crate::event::PeerStatus;
use crate::peer::{PeerError, PeerLink, PeerLinkOptions, Rendezvous};
use crate::rng::system_rng;

/// The list file's name inside the profile directory.
pub const LIST_FILE: &str = "shopping-list.json";
/// The lock file that [`update`] holds while it reads, changes and writes
/// the list, inside the profile directory.
pub const LIST_LOCK_FILE: &str = "shopping-list.lock";

/// A list operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The list was shared with us read-only.
    #[error("this list is shared with you read-only: changes are not allowed")]
    ReadOnly,
    /// No item has this text.
    #[error("no item {0:?} on the list")]
    NoSuchItem(String),
    /// The item text is empty or too long.
    #[error("invalid item text: use 1 to 200 characters")]
    BadText,
    /// The list file could not be read or written.
    #[error("list file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The list file or a peer's message is not a valid list.
    #[error("invalid list data: {0}")]
    Corrupt(String),
    /// The peer link failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Polling failed.
    #[error(transparent)]
    Poll(#[from] crate::PollError),
    /// Acknowledging a delivery failed.
    #[error(transparent)]
    Profile(#[from] crate::ProfileError),
}

/// What a peer may do with a list we share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// The peer's edits are merged.
    ReadWrite,
    /// The peer's edits are ignored; it sees ours.
    ReadOnly,
}

/// One item (or its tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// A random id (base64url of 16 bytes).
    pub id: String,
    /// What to buy.
    pub text: String,
    /// When this version was written, in ms since the Unix epoch.
    pub updated_at: u64,
    /// A tombstone: the item was removed.
    #[serde(default)]
    pub deleted: bool,
    /// The replica that wrote this version.
    pub by: String,
}

impl Item {
    /// Whether this version beats `other` under the merge rule.
    pub fn wins_over(&self, other: &Item) -> bool {
        (self.updated_at, &self.by, self.deleted, &self.text)
            > (other.updated_at, &other.by, other.deleted, &other.text)
    }
}

/// What one side sends in a sync: its items and the access it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMessage {
    /// Every item, tombstones included.
    pub items: Vec<Item>,
    /// The access the sender grants the receiver, when it shared the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// A replica of the shopping list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShoppingList {
    /// This replica's writer id.
    pub replica: String,
    /// Items by id, tombstones included.
    #[serde(default)]
    pub items: BTreeMap<String, Item>,
    /// The access we granted, per nickname (we shared the list).
    #[serde(default)]
    pub shared_with: BTreeMap<String, Access>,
    /// The access we were granted, per nickname (they shared it with us).
    #[serde(default)]
    pub granted: BTreeMap<String, Access>,
}

/// A new random id (base64url of 16 random bytes).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    system_rng().fill_bytes(&mut bytes);
    connectoid_protocol::b64::encode(&bytes)
}

impl ShoppingList {
    /// An empty list written by `replica`.
    pub fn new(replica: String) -> Self {
        Self {
            replica,
            items: BTreeMap::new(),
            shared_with: BTreeMap::new(),
            granted: BTreeMap::new(),
        }
    }

    /// Whether someone shared this list with us read-only.
    pub fn is_read_only(&self) -> bool {
        self.granted.values().any(|a| *a == Access::ReadOnly)
    }

    /// Adds `text` as item `id`, written at `now_ms`.
    pub fn add(&mut self, text: &str, id: String, now_ms: u64) -> Result<&Item, ListError> {
        if self.is_read_only() {
            return Err(ListError::ReadOnly);
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 200 {
            return Err(ListError::BadText);
        }
        let item = Item {
            id: id.clone(),
            text: text.to_owned(),
            updated_at: now_ms,
            deleted: false,
            by: self.replica.clone(),
        };
        self.items.insert(id.clone(), item);
        self.items
            .get(&id)
            .ok_or_else(|| ListError::Corrupt("item vanished".to_owned()))
    }

    /// Removes every visible item with `text` (leaving tombstones), written
    /// at `now_ms` (or just after the version it replaces, if later).
    /// Returns how many were removed.
    pub fn remove(&mut self, text: &str, now_ms: u64) -> Result<usize, ListError> {
        if self.is_read_only() {
            return Err(ListError::ReadOnly);
        }
        let mut removed = 0;
        for item in self.items.values_mut() {
            if !item.deleted && item.text == text.trim() {
                item.deleted = true;
                item.updated_at = now_ms.max(item.updated_at + 1);
                item.by = self.replica.clone();
                removed += 1;
            }
        }
        if removed == 0 {
            return Err(ListError::NoSuchItem(text.to_owned()));
        }
        Ok(removed)
    }

    /// The visible items, by text then id.
    pub fn visible(&self) -> Vec<&Item> {
        let mut out: Vec<&Item> = self.items.values().filter(|i| !i.deleted).collect();
        out.sort_by(|a, b| (&a.text, &a.id).cmp(&(&b.text, &b.id)));
        out
    }

    /// The visible texts, sorted: handy to compare replicas.
    pub fn texts(&self) -> Vec<String> {
        self.visible().into_iter().map(|i| i.text.clone()).collect()
    }

    /// Merges `items` under the merge rule. Returns how many items changed.
    pub fn merge(&mut self, items: &[Item]) -> usize {
        let mut changed = 0;
        for item in items {
            match self.items.get(&item.id) {
                Some(current) if !item.wins_over(current) => {}
                _ => {
                    self.items.insert(item.id.clone(), item.clone());
                    changed += 1;
                }
            }
        }
        changed
    }

    /// What we send to `nickname` in a sync.
    pub fn message_for(&self, nickname: &str) -> SyncMessage {
        SyncMessage {
            items: self.items.values().cloned().collect(),
            access: self.shared_with.get(nickname).copied(),
        }
    }

    /// Applies what `nickname` sent: remembers the access it grants us and
    /// merges its items, unless we shared the list with it read-only (then
    /// its items are ignored). Returns how many items changed.
    pub fn apply(&mut self, nickname: &str, message: &SyncMessage) -> usize {
        match message.access {
            Some(access) => {
                self.granted.insert(nickname.to_owned(), access);
            }
            None => {
                self.granted.remove(nickname);
            }
        }
        if self.shared_with.get(nickname) == Some(&Access::ReadOnly) {
            return 0;
        }
        self.merge(&message.items)
    }
}

/// Reads the list from `profile_dir` (a new empty one if there is none).
pub fn load(profile_dir: &Path) -> Result<ShoppingList, ListError> {
    let path = profile_dir.join(LIST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ListError::Corrupt(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ShoppingList::new(new_id())),
        Err(source) => Err(ListError::Io { path, source }),
    }
}

/// Writes the list to `profile_dir` atomically (temporary file, fsync,
/// rename).
pub fn save(profile_dir: &Path, list: &ShoppingList) -> Result<(), ListError> {
    use std::io::Write as _;
    let path = profile_dir.join(LIST_FILE);
    let tmp = profile_dir.join(format!("{LIST_FILE}.tmp-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ListError::Io { path, source }
    };
    let bytes = serde_json::to_vec_pretty(list).map_err(|e| ListError::Corrupt(e.to_string()))?;
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Reads, changes and writes the list in `profile_dir` under its lock
/// ([`LIST_LOCK_FILE`]), so that two processes (`list add` while
/// `sync --watch` runs) never lose each other's changes. Blocks: call it
/// off the async runtime's threads.
pub fn update<T>(
    profile_dir: &Path,
    change: impl FnOnce(&mut ShoppingList) -> Result<T, ListError>,
) -> Result<T, ListError> {
    let _lock = crate::store::lock_file(&profile_dir.join(LIST_LOCK_FILE), profile_dir)?;
    let mut list = load(profile_dir)?;
    let out = change(&mut list)?;
    save(profile_dir, &list)?;
    Ok(out)
}

/// Syncs the list file of `client`'s profile over an open link: sends ours,
/// applies theirs, saves, closes the link. Returns how many items changed.
pub async fn exchange(client: &Client, link: PeerLink) -> Result<usize, ListError> {
    exchange_items(client, link)
        .await
        .map(|(changed, _)| changed)
}

/// [`exchange`], also returning the items the peer now has: ours as sent,
/// merged with theirs.
async fn exchange_items(
    client: &Client,
    mut link: PeerLink,
) -> Result<(usize, BTreeMap<String, Item>), ListError> {
    let dir = client.profile_dir().to_owned();
    let nickname = link.nickname().to_owned();
    let mut sent = load(&dir)?;
    let ours = sent.message_for(&nickname);
    let bytes = serde_json::to_vec(&ours).map_err(|e| ListError::Corrupt(e.to_string()))?;
    link.send(&bytes).await?;
    let theirs = link
        .recv()
        .await?
        .ok_or_else(|| ListError::Corrupt("the peer sent no list".to_owned()))?;
    let theirs: SyncMessage =
        serde_json::from_slice(&theirs).map_err(|e| ListError::Corrupt(e.to_string()))?;
    sent.apply(&nickname, &theirs);
    // Re-read under the lock: the file may have changed while the link was up.
    let changed = tokio::task::spawn_blocking(move || {
        update(&dir, |list| Ok(list.apply(&nickname, &theirs)))
    })
    .await
    .map_err(|e| ListError::Corrupt(format!("the list task failed: {e}")))??;
    link.close().await?;
    Ok((changed, sent.items))
}

/// How [`sync`] polls.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Peer link options.
    pub link: PeerLinkOptions,
    /// Most polls before giving up on peers not synced yet. Default 30.
    pub polls: usize,
    /// Wait between polls. Default 1 s.
    pub interval: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            link: PeerLinkOptions::default(),
            polls: 30,
            interval: Duration::from_secs(1),
        }
    }
}

/// What a [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Peers synced, with how many items changed here.
    pub synced: Vec<(String, usize)>,
    /// Failures, per peer (nickname, error text).
    pub failed: Vec<(String, String)>,
    /// Other events seen while polling, as text (for the CLI to show).
    pub events: Vec<String>,
    /// After the round's last exchange: the items the peer has (ours as
    /// sent, merged with theirs). A local change since is one the peer does
    /// not have yet.
    pub peer_items: Option<BTreeMap<String, Item>>,
}

/// One sync with every connected peer: offers to each, answers their
/// offers, and exchanges lists on every link that comes up; returns when
/// every connected peer was synced (or failed) or after `polls` polls.
/// Every delivery polled is acknowledged.
pub async fn sync(client: &Client, options: &SyncOptions) -> Result<SyncReport, ListError> {
    run(client, options, true).await
}

/// Like [`sync`] without offering: answers the offers that arrive during
/// `polls` polls.
pub async fn answer(client: &Client, options: &SyncOptions) -> Result<SyncReport, ListError> {
    run(client, options, false).await
}

async fn run(client: &Client, options: &SyncOptions, offer: bool) -> Result<SyncReport, ListError> {
    Syncer::new(client.clone(), options.clone())
        .round(offer)
        .await
}

/// Syncs round after round with offers kept pending between rounds, for a
/// process that keeps syncing (`sync --watch`): an offer made in one round
/// is completed when its answer arrives in a later one, so two such
/// processes sync with each other.
pub struct Syncer {
    client: Client,
    options: SyncOptions,
    rendezvous: Rendezvous,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("rendezvous", &self.rendezvous)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    /// A syncer for `client`'s list with `options`.
    pub fn new(client: Client, options: SyncOptions) -> Self {
        let rendezvous = Rendezvous::new(client.clone(), options.link.clone());
        Self {
            client,
            options,
            rendezvous,
        }
    }

    /// One round: offers to every connected peer when `offer` (replacing
    /// offers still pending), then polls at most `options.polls` times,
    /// answering offers, completing pending offers with their answers and
    /// exchanging lists on every link that comes up. Every delivery polled
    /// is acknowledged.
    pub async fn round(&mut self, offer: bool) -> Result<SyncReport, ListError> {
        let client = &self.client;
        let rendezvous = &mut self.rendezvous;
        let options = &self.options;
        let mut report = SyncReport::default();
        let mut done: HashSet<String> = HashSet::new();
        for peer in client.peers().await {
            if offer
                && matches!(peer.status, PeerStatus::Connected | PeerStatus::Accepted)
                && let Err(e) = rendezvous.offer(&peer.nickname).await
            {
                report.failed.push((peer.nickname.clone(), e.to_string()));
                done.insert(peer.nickname);
            }
        }
        for round in 0..options.polls {
            if round > 0 {
                tokio::time::sleep(options.interval).await;
            }
            let poll = client.poll_once().await?;
            for delivery in &poll.deliveries {
                let nickname = delivery.event.nickname().to_owned();
                match rendezvous.handle(&delivery.event).await {
                    Ok(Some(link)) => match exchange_items(client, link).await {
                        Ok((changed, peer_items)) => {
                            report.synced.push((nickname.clone(), changed));
                            report.peer_items = Some(peer_items);
                            done.insert(nickname);
                        }
                        Err(e) => {
                            report.failed.push((nickname.clone(), e.to_string()));
                            done.insert(nickname);
                        }
                    },
                    Ok(None) => report.events.push(format!("{:?}", delivery.event)),
                    Err(e) => {
                        tracing::warn!(%nickname, "peer link: {e}");
                        report.failed.push((nickname.clone(), e.to_string()));
                        rendezvous.cancel(&nickname);
                        done.insert(nickname);
                    }
                }
                client.ack(delivery).await?;
            }
            let open: Vec<String> = client
                .peers()
                .await
                .into_iter()
                .filter(|p| matches!(p.status, PeerStatus::Connected | PeerStatus::Accepted))
                .map(|p| p.nickname)
                .filter(|n| !done.contains(n))
                .collect();
            if (open.is_empty() && !done.is_empty()) || (!offer && rendezvous.pending().is_empty())
            {
                break;
            }
        }
        Ok(report)
    }
}

/// The current time for list edits, in ms since the Unix epoch.
pub fn now() -> u64 {
    SystemClock.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(replica: &str) -> ShoppingList {
        ShoppingList::new(replica.to_owned())
    }

    #[test]
    fn latest_update_wins_and_tombstones_spread() {
        let mut a = list("a");
        let mut b = list("b");
        a.add("milk", "1".into(), 10).unwrap();
        a.add("bread", "2".into(), 11).unwrap();
        b.merge(&a.message_for("b").items);
        assert_eq!(b.texts(), ["bread", "milk"]);
        b.remove("bread", 20).unwrap();
        a.merge(&b.message_for("a").items);
        assert_eq!(a.texts(), ["milk"]);
        // An older version does not bring the item back.
        let mut stale = b.items["2"].clone();
        stale.deleted = false;
        stale.updated_at = 15;
        assert_eq!(a.merge(&[stale]), 0);
        assert_eq!(a.texts(), ["milk"]);
    }

    #[test]
    fn concurrent_edits_converge_in_any_order() {
        let mut a = list("a");
        let mut b = list("b");
        a.add("milk", "1".into(), 10).unwrap();
        b.merge(&a.message_for("b").items);
        // Same time, different writers: the replica id breaks the tie.
        a.remove("milk", 20).unwrap();
        let mut b_edit = b.items["1"].clone();
        b_edit.text = "oat milk".into();
        b_edit.updated_at = 20;
        b_edit.by = "b".into();
        b.items.insert("1".into(), b_edit);
        b.add("eggs", "2".into(), 21).unwrap();
        let (from_a, from_b) = (a.message_for("b").items, b.message_for("a").items);
        a.merge(&from_b);
        b.merge(&from_a);
        assert_eq!(a.items, b.items);
        assert_eq!(a.texts(), ["eggs", "oat milk"]);
    }

    #[test]
    fn read_only_peers_are_ignored_and_refused() {
        let mut owner = list("o");
        owner.shared_with.insert("Bob".into(), Access::ReadOnly);
        owner.add("milk", "1".into(), 10).unwrap();
        let mut bob = list("b");
        bob.apply("Alice", &owner.message_for("Bob"));
        assert!(bob.is_read_only());
        assert!(matches!(
            bob.add("x", "2".into(), 11),
            Err(ListError::ReadOnly)
        ));
        assert!(matches!(bob.remove("milk", 11), Err(ListError::ReadOnly)));
        // Even a forged edit from the read-only side is not applied.
        let mut forged = bob.items["1"].clone();
        forged.deleted = true;
        forged.updated_at = 99;
        bob.items.insert("1".into(), forged);
        assert_eq!(owner.apply("Bob", &bob.message_for("Alice")), 0);
        assert_eq!(owner.texts(), ["milk"]);
    }

    #[test]
    fn remove_of_a_missing_item_is_an_error_and_bad_text_is_refused() {
        let mut a = list("a");
        assert!(matches!(a.remove("x", 1), Err(ListError::NoSuchItem(_))));
        assert!(matches!(
            a.add("  ", "1".into(), 1),
            Err(ListError::BadText)
        ));
    }
}
