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
//! A sync goes over a direct peer link when one comes up within the
//! connect timeout; otherwise (both behind NATs that map a socket to a new
//! address per destination, or a firewall) each side sends its
//! [`SyncMessage`] through the relays as end-to-end encrypted `app`
//! messages ([`RelayedPart`]s) and applies the other's. See
//! `spec/client.md`, "The shopping list through the relays".
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
use crate::event::{Event, PeerStatus};
use crate::peer::{PeerError, PeerLink, PeerLinkOptions, Rendezvous};
use crate::rng::system_rng;
use connectoid_protocol::envelope::Kind;

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
    /// The list is too big to send through the relays.
    #[error("the list is {len} bytes of JSON; through the relays it may be at most {max}")]
    TooBigToRelay {
        /// Bytes of the list's JSON.
        len: usize,
        /// The most bytes the relayed parts carry.
        max: usize,
    },
    /// Sending the list through the relays failed.
    #[error("sending the list through the relays: {0}")]
    Relayed(String),
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

/// Most parts a list sent through the relays may be cut into: 16 (a relay
/// holds 100 messages per mailbox and, by default, takes bursts of 30 sends
/// to one mailbox).
pub const MAX_RELAYED_PARTS: usize = 16;
/// Largest part of a list sent through the relays, in bytes of the
/// [`SyncMessage`] JSON (carried base64url): 16 KiB, or a third of the
/// smallest `max_message_bytes` of the peer's relays if that is less.
pub const MAX_RELAYED_PART_LEN: usize = 16 * 1024;

/// One part of a list sent through the relays: the body of an `app`
/// message is `{"list": RelayedPart}`. The parts of one `session`, joined
/// in `part` order, are the JSON of a [`SyncMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedPart {
    /// A random id shared by the parts of one list (base64url of 16
    /// bytes).
    pub session: String,
    /// This part's index, from 0.
    pub part: usize,
    /// How many parts the list has, 1 to [`MAX_RELAYED_PARTS`].
    pub parts: usize,
    /// The sender wants our list back through the relays (it has not
    /// received it).
    pub reply: bool,
    /// This part's bytes, base64url.
    pub data: String,
}

impl RelayedPart {
    /// The part in an app message's `body`, if it carries one.
    pub fn from_body(body: &serde_json::Value) -> Option<Self> {
        let part: Self = serde_json::from_value(body.get("list")?.clone()).ok()?;
        (part.parts >= 1 && part.parts <= MAX_RELAYED_PARTS && part.part < part.parts)
            .then_some(part)
    }

    /// Cuts `message` into parts of at most `part_len` bytes (at least 1).
    pub fn split(
        message: &SyncMessage,
        session: &str,
        reply: bool,
        part_len: usize,
    ) -> Result<Vec<Self>, ListError> {
        let bytes = serde_json::to_vec(message).map_err(|e| ListError::Corrupt(e.to_string()))?;
        let chunks: Vec<&[u8]> = bytes.chunks(part_len.max(1)).collect();
        if chunks.len() > MAX_RELAYED_PARTS {
            return Err(ListError::TooBigToRelay {
                len: bytes.len(),
                max: MAX_RELAYED_PARTS * part_len.max(1),
            });
        }
        let parts = chunks.len();
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(part, chunk)| Self {
                session: session.to_owned(),
                part,
                parts,
                reply,
                data: connectoid_protocol::b64::encode(chunk),
            })
            .collect())
    }

    /// This part as an app message body.
    pub fn to_body(&self) -> serde_json::Value {
        serde_json::json!({ "list": self })
    }
}

/// The parts of relayed lists received so far, per peer and session.
#[derive(Debug, Default)]
struct Reassembly {
    sessions: BTreeMap<(String, String), BTreeMap<usize, Vec<u8>>>,
}

impl Reassembly {
    /// Adds a part; returns the whole message (and whether the sender asked
    /// for a reply) once every part of its session is there.
    fn add(&mut self, nickname: &str, part: RelayedPart) -> Option<Result<SyncMessage, ListError>> {
        let Ok(bytes) = connectoid_protocol::b64::decode(&part.data) else {
            return Some(Err(ListError::Corrupt(
                "a relayed list part is not base64url".to_owned(),
            )));
        };
        let key = (nickname.to_owned(), part.session.clone());
        let parts = self.sessions.entry(key.clone()).or_default();
        parts.insert(part.part, bytes);
        if parts.len() < part.parts {
            return None;
        }
        let parts = self.sessions.remove(&key)?;
        let joined: Vec<u8> = parts.into_values().flatten().collect();
        Some(serde_json::from_slice(&joined).map_err(|e| ListError::Corrupt(e.to_string())))
    }
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
    /// Try a direct peer link first. Default on. Off: send the list
    /// through the relays at once and neither offer nor answer a link (the
    /// peer never learns our addresses).
    pub direct: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            link: PeerLinkOptions::default(),
            polls: 30,
            interval: Duration::from_secs(1),
            direct: true,
        }
    }
}

impl SyncOptions {
    /// These options with direct peer links on or off (see
    /// [`SyncOptions::direct`]).
    pub fn direct(mut self, direct: bool) -> Self {
        self.direct = direct;
        self
    }
}

/// How a sync reached a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPath {
    /// Over a direct peer link; the peer's address on it.
    Direct(std::net::SocketAddr),
    /// Through the relays' mailboxes, as end-to-end encrypted `app`
    /// messages.
    Relayed,
}

/// One peer synced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Synced {
    /// The peer.
    pub nickname: String,
    /// How many items changed here.
    pub changed: usize,
    /// The path the lists took.
    pub path: SyncPath,
}

/// What a [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Peers synced, each once, in the order they were.
    pub synced: Vec<Synced>,
    /// Failures, per peer (nickname, error text).
    pub failed: Vec<(String, String)>,
    /// Other events seen while polling, as text (for the CLI to show).
    pub events: Vec<String>,
    /// After the round's last exchange: the items the peer has (ours as
    /// sent, merged with theirs). A local change since is one the peer does
    /// not have yet.
    pub peer_items: Option<BTreeMap<String, Item>>,
}

impl SyncReport {
    /// Whether `nickname` was synced.
    pub fn synced_with(&self, nickname: &str) -> Option<&Synced> {
        self.synced.iter().find(|s| s.nickname == nickname)
    }
}

/// One sync with every connected peer: offers to each, answers their
/// offers, and exchanges lists on every link that comes up; where a link
/// does not come up within the connect timeout, exchanges them through the
/// relays instead. Returns when every connected peer was synced (or
/// failed) or after `polls` polls. Every delivery polled is acknowledged.
pub async fn sync(client: &Client, options: &SyncOptions) -> Result<SyncReport, ListError> {
    run(client, options, true).await
}

/// Like [`sync`] without offering: answers the offers (and relayed lists)
/// that arrive during `polls` polls.
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
    reassembly: Reassembly,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("rendezvous", &self.rendezvous)
            .finish_non_exhaustive()
    }
}

/// What one round knows about each peer.
#[derive(Debug, Default)]
struct RoundState {
    report: SyncReport,
    /// Synced or failed: nothing more to do this round.
    done: HashSet<String>,
    /// Sent our list through the relays this round.
    relayed_to: HashSet<String>,
    /// Fell back to the relays after this direct failure; waiting for the
    /// peer's list.
    awaiting: BTreeMap<String, String>,
}

impl RoundState {
    fn synced(&mut self, nickname: &str, changed: usize, path: SyncPath) {
        self.awaiting.remove(nickname);
        if self.done.insert(nickname.to_owned()) {
            self.report.synced.push(Synced {
                nickname: nickname.to_owned(),
                changed,
                path,
            });
        }
    }

    fn failed(&mut self, nickname: &str, error: String) {
        self.awaiting.remove(nickname);
        if self.done.insert(nickname.to_owned()) {
            self.report.failed.push((nickname.to_owned(), error));
        }
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
            reassembly: Reassembly::default(),
        }
    }

    /// One round: offers to every connected peer when `offer` (replacing
    /// offers still pending; with direct links off, sends the list through
    /// the relays instead), then polls at most `options.polls` times,
    /// answering offers, completing pending offers with their answers,
    /// exchanging lists on every link that comes up, falling back to the
    /// relays for a peer whose link did not come up, and applying (and
    /// answering) lists that came through the relays. Every delivery
    /// polled is acknowledged.
    pub async fn round(&mut self, offer: bool) -> Result<SyncReport, ListError> {
        let mut state = RoundState::default();
        for peer in self.client.peers().await {
            if !offer || !matches!(peer.status, PeerStatus::Connected | PeerStatus::Accepted) {
                continue;
            }
            if self.options.direct {
                if let Err(e) = self.rendezvous.offer(&peer.nickname).await {
                    state.failed(&peer.nickname, e.to_string());
                }
            } else {
                match self.send_relayed(&peer.nickname, true).await {
                    Ok(()) => {
                        state.relayed_to.insert(peer.nickname.clone());
                        state
                            .awaiting
                            .insert(peer.nickname.clone(), "direct links are off".to_owned());
                    }
                    Err(e) => state.failed(&peer.nickname, e.to_string()),
                }
            }
        }
        for round in 0..self.options.polls {
            if round > 0 {
                tokio::time::sleep(self.options.interval).await;
            }
            let poll = self.client.poll_once().await?;
            for delivery in &poll.deliveries {
                self.handle(&delivery.event, &mut state).await;
                self.client.ack(delivery).await?;
            }
            let open: Vec<String> = self
                .client
                .peers()
                .await
                .into_iter()
                .filter(|p| matches!(p.status, PeerStatus::Connected | PeerStatus::Accepted))
                .map(|p| p.nickname)
                .filter(|n| !state.done.contains(n))
                .collect();
            if (open.is_empty() && !state.done.is_empty())
                || (!offer && self.rendezvous.pending().is_empty() && state.awaiting.is_empty())
            {
                break;
            }
        }
        for (nickname, reason) in std::mem::take(&mut state.awaiting) {
            state.failed(
                &nickname,
                format!("{reason}; the list sent through the relays got no answer"),
            );
        }
        Ok(state.report)
    }

    /// Acts on one delivered event.
    async fn handle(&mut self, event: &Event, state: &mut RoundState) {
        let nickname = event.nickname().to_owned();
        if let Event::Message {
            kind: Kind::App,
            body,
            ..
        } = event
            && let Some(part) = RelayedPart::from_body(body)
        {
            let reply = part.reply;
            match self.reassembly.add(&nickname, part) {
                None => {}
                Some(Ok(message)) => self.apply_relayed(&nickname, message, reply, state).await,
                Some(Err(e)) => state.failed(&nickname, e.to_string()),
            }
            return;
        }
        if !self.options.direct {
            state.report.events.push(format!("{event:?}"));
            return;
        }
        match self.rendezvous.handle(event).await {
            Ok(Some(link)) => {
                let remote = link.remote_address();
                match exchange_items(&self.client, link).await {
                    Ok((changed, peer_items)) => {
                        state.report.peer_items = Some(peer_items);
                        state.synced(&nickname, changed, SyncPath::Direct(remote));
                    }
                    Err(e) => state.failed(&nickname, e.to_string()),
                }
            }
            Ok(None) => state.report.events.push(format!("{event:?}")),
            Err(PeerError::Connect { reason, .. }) if !state.done.contains(&nickname) => {
                // No direct path: send the list through the relays and wait
                // for theirs (the peer, timing out too, does the same).
                tracing::info!(%nickname, "no direct connection ({reason}); syncing through the relays");
                self.rendezvous.cancel(&nickname);
                if state.relayed_to.contains(&nickname) {
                    state
                        .awaiting
                        .insert(nickname, format!("no direct connection: {reason}"));
                } else {
                    match self.send_relayed(&nickname, true).await {
                        Ok(()) => {
                            state.relayed_to.insert(nickname.clone());
                            state
                                .awaiting
                                .insert(nickname, format!("no direct connection: {reason}"));
                        }
                        Err(e) => state.failed(
                            &nickname,
                            format!("no direct connection ({reason}), and through the relays: {e}"),
                        ),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%nickname, "peer link: {e}");
                self.rendezvous.cancel(&nickname);
                state.failed(&nickname, e.to_string());
            }
        }
    }

    /// Applies a list that came through the relays and, when the sender
    /// asked and we sent it none this round, sends ours back.
    async fn apply_relayed(
        &mut self,
        nickname: &str,
        message: SyncMessage,
        reply: bool,
        state: &mut RoundState,
    ) {
        let dir = self.client.profile_dir().to_owned();
        let peer = nickname.to_owned();
        let applied = tokio::task::spawn_blocking(move || {
            update(&dir, |list| {
                let changed = list.apply(&peer, &message);
                Ok((changed, list.items.clone()))
            })
        })
        .await
        .map_err(|e| ListError::Corrupt(format!("the list task failed: {e}")));
        let (changed, items) = match applied {
            Ok(Ok(applied)) => applied,
            Ok(Err(e)) | Err(e) => {
                state.failed(nickname, e.to_string());
                return;
            }
        };
        if reply && !state.relayed_to.contains(nickname) {
            if let Err(e) = self.send_relayed(nickname, false).await {
                state.failed(nickname, format!("cannot answer through the relays: {e}"));
                return;
            }
            state.relayed_to.insert(nickname.to_owned());
        }
        self.rendezvous.cancel(nickname);
        state.report.peer_items = Some(items);
        state.synced(nickname, changed, SyncPath::Relayed);
    }

    /// Sends our list to `nickname` through the relays, in parts that fit
    /// the smallest message limit of its relays; `reply` asks for theirs.
    async fn send_relayed(&self, nickname: &str, reply: bool) -> Result<(), ListError> {
        let list = load(self.client.profile_dir())?;
        let message = list.message_for(nickname);
        let part_len = relayed_part_len(&self.client, nickname).await;
        let session = new_id();
        let parts = RelayedPart::split(&message, &session, reply, part_len)?;
        tracing::info!(%nickname, parts = parts.len(), reply, "sending the list through the relays");
        for part in &parts {
            self.client
                .send(nickname, Kind::App, part.to_body())
                .await
                .map_err(|e| ListError::Relayed(e.to_string()))?;
        }
        Ok(())
    }
}

/// The part length for `nickname`: [`MAX_RELAYED_PART_LEN`], or a third
/// of the smallest `max_message_bytes` its relays advertise if that is
/// less (sealing and base64url make a message about 1.8 times its part).
async fn relayed_part_len(client: &Client, nickname: &str) -> usize {
    let mut part_len = MAX_RELAYED_PART_LEN;
    if let Some(peer) = client.peer(nickname).await {
        for relay in &peer.their_relays {
            if let Ok(Some(info)) = client.inner.transport.cached_info(relay).await {
                let limit = usize::try_from(info.limits.max_message_bytes).unwrap_or(usize::MAX);
                part_len = part_len.min(limit / 3);
            }
        }
    }
    part_len.max(1)
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
