//! The embedded store: redb in a data directory, with an in-memory index.
//!
//! Layout (file `relay.redb` in the data directory):
//!
//! - `messages_by_at`: key `at (8 bytes, big-endian) || mailbox (49 bytes)`
//!   -> sealed bytes: every message of the relay in `at` order (`at` grows
//!   per mailbox but may repeat across mailboxes, hence the suffix). The
//!   sends of one commit append at the right edge of the tree, so a commit
//!   rewrites a few leaf pages however many mailboxes it touches, and
//!   messages expire from the left edge, one key range. A mailbox's
//!   messages are found by point lookups of the `at`s the index lists;
//! - `mailboxes`: key `mailbox` -> `(newest at, last check µs)`;
//! - `meta`: `schema` -> 2, and `floor` -> the newest `at` of any removed
//!   mailbox: a mailbox made anew after a delete starts above it, so `at`
//!   never goes back even if the clock does (`spec/protocol.md` §12).
//!
//! Schema 1 kept messages in `messages`, keyed `mailbox || at`; opening such
//! a file moves every message to `messages_by_at` and sets schema 2, in one
//! write transaction.
//!
//! **Writes** (send, delete, sweep, flush) go through one writer thread fed
//! by a bounded channel. The thread takes everything that is waiting (up to
//! [`StoreOptions::max_commit_batch`] operations, default 512; 1 turns group
//! commit off), applies it in one write transaction and commits
//! once with `Durability::Immediate` (fsync): concurrent sends share one
//! commit (group commit), and each is answered only after that commit
//! returned. A full channel makes senders wait; nothing queues without bound.
//! A batch keeps, per mailbox it touches, only what it changed (the messages
//! it added, how many old ones it removed) and applies that to the index
//! after the commit.
//!
//! **Reads** never wait for the writer. The index in memory knows, per
//! mailbox, the `at` and size of every message, the newest `at`, the last
//! check time and the live question, so `check` (and a `receive` that would
//! find nothing) is a hash lookup. `receive` of real messages takes the
//! `at`s to return from the index and looks them up in a redb snapshot on
//! the blocking pool. The index is updated only after a commit, so it never
//! announces a message that is not durable; a message it lists that a later
//! commit removed (expired, deleted) is skipped.
//!
//! Last-check times live in memory and are written when they are
//! [`StoreOptions::check_persist_us`] newer than the stored value (by the
//! sweep; the difference is kept in milliseconds, rounded up at each check),
//! at every send (which writes the mailbox record anyway) and at
//! [`Store::close`]. Questions are not persisted: after a restart a client
//! gets "No question" and checks again.
//!
//! **Memory.** Nearly every mailbox is idle, so an idle one costs the index
//! 106 to 117 bytes: the mailboxes are an [`IndexMap`], whose 96-byte
//! entries (the id, its hash and a 32-byte record: newest `at`, last check,
//! how far the stored check is behind, and a pointer to the message queue,
//! which idle mailboxes do not have) sit in one dense vector, found by id
//! through a table of 8-byte positions (9 bytes a bucket, 7/16 to 7/8 of
//! them in use). redb's page cache is held to [`CACHE_BYTES`] (redb's
//! default is 1 GiB).
//!
//! Opening rebuilds the index by scanning both tables (keys and value
//! lengths only); `messages_by_at` yields each mailbox's messages in `at`
//! order. This module does not do rate limiting, cryptography or
//! time keeping.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::RandomState;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use connectoid_protocol::At;
use connectoid_protocol::api::Message;
use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use indexmap::IndexMap;
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    Deleted, MailboxId, Question, Store, StoreError, StoreOptions, StoreStats, SweepReport,
};

/// Every message, in `at` order: `at || mailbox` -> sealed bytes.
const MESSAGES: TableDefinition<&[u8; KEY_LEN], &[u8]> = TableDefinition::new("messages_by_at");
const MAILBOXES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("mailboxes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA: u64 = 2;
/// Schema 1's messages, by mailbox: `mailbox || at` -> sealed bytes.
const MESSAGES_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");

/// The database file's name inside the data directory.
pub(crate) const FILE_NAME: &str = "relay.redb";
/// Operations that may wait for the writer before senders wait too.
const QUEUE: usize = 1024;
/// redb's page cache (reads and not yet written pages), bytes. redb's default
/// of 1 GiB would in time keep every page the relay touched, on top of the
/// index, which already answers checks; this holds the tables' upper levels
/// and a busy commit, and the operating system's cache holds the file.
const CACHE_BYTES: usize = 16 << 20;

const KEY_LEN: usize = 8 + PUBLIC_KEY_LEN;

/// A message's key: `at` first, so that keys sort in time order.
fn message_key(mailbox: &MailboxId, at: At) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&at.0.to_be_bytes());
    key[8..].copy_from_slice(&mailbox.0);
    key
}

fn split_key(key: &[u8; KEY_LEN]) -> (MailboxId, At) {
    let (mut at, mut mailbox) = ([0u8; 8], [0u8; PUBLIC_KEY_LEN]);
    at.copy_from_slice(&key[..8]);
    mailbox.copy_from_slice(&key[8..]);
    (MailboxId(mailbox), At(u64::from_be_bytes(at)))
}

/// Splits a schema 1 key, `mailbox || at`.
fn split_key_v1(key: &[u8]) -> Result<(MailboxId, At), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("schema 1 message key of {} bytes", key.len()));
    let (mailbox, at) = key
        .split_first_chunk::<PUBLIC_KEY_LEN>()
        .ok_or_else(corrupt)?;
    let at: [u8; 8] = at.try_into().map_err(|_| corrupt())?;
    Ok((MailboxId(*mailbox), At(u64::from_be_bytes(at))))
}

/// The newest `at` that has expired at `now_us`: a message lives until
/// `at + ttl_us` (saturating), so these are a prefix of the `at` order.
fn expired_until(now_us: u64, ttl_us: u64) -> Option<At> {
    if now_us == u64::MAX {
        return Some(At(u64::MAX));
    }
    now_us.checked_sub(ttl_us).map(At)
}

fn mailbox_id(key: &[u8]) -> Result<MailboxId, StoreError> {
    let bytes: [u8; PUBLIC_KEY_LEN] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("mailbox key of {} bytes", key.len())))?;
    Ok(MailboxId(bytes))
}

fn unavailable(error: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Locks a mutex even if a thread panicked while holding it: every critical
/// section leaves the index consistent before anything that could panic, and
/// a relay that keeps serving is better than one that aborts on a bug.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How much newer a mailbox's last check in memory is than the one on disk:
/// milliseconds, rounded up at every check that moves the time forward and
/// saturating at `u32::MAX` (49.7 days). Zero exactly when the disk has the
/// last check; otherwise at least the real difference and at most 1 ms per
/// check more. It replaces a second 8-byte time in every [`Mailbox`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CheckLag(u32);

impl CheckLag {
    /// The disk has the last check.
    const NONE: Self = Self(0);

    /// The lag after the last check moved forward by `us` microseconds.
    fn add_us(self, us: u64) -> Self {
        let ms = u32::try_from(us.div_ceil(1_000)).unwrap_or(u32::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Whether the disk is behind at all (so a flush must write).
    fn is_behind(self) -> bool {
        self != Self::NONE
    }

    /// Whether the disk is at least `persist_us` behind (so a sweep writes).
    /// A saturated lag is always due.
    fn is_due(self, persist_us: u64) -> bool {
        self.is_behind() && (self.0 == u32::MAX || u64::from(self.0) * 1_000 >= persist_us)
    }
}

/// One mailbox in memory, without its id (the key it is found by). Its
/// fields are laid out flat (32 bytes on 64-bit targets) because there is one
/// per mailbox, and idle mailboxes, which are nearly all of them, have
/// nothing pending.
#[derive(Debug, Clone)]
struct Mailbox {
    /// The newest `at` ever assigned (0: none).
    last_at: At,
    /// The last check (or creation), µs.
    last_check_us: u64,
    /// How far the last check time on disk is behind `last_check_us`.
    check_lag: CheckLag,
    /// `(at, size)` of every stored message, oldest first; `None` when there
    /// is none.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes in every mailbox instead of a 32-byte VecDeque that idle ones leave empty"
    )]
    pending: Option<Box<VecDeque<(At, u32)>>>,
}

/// What [`Mailbox::remove_expired`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expired {
    count: u64,
    bytes: u64,
}

impl Mailbox {
    /// A mailbox whose last check, `now_us`, is on disk.
    fn new(now_us: u64) -> Self {
        Self {
            last_at: At::ZERO,
            last_check_us: now_us,
            check_lag: CheckLag::NONE,
            pending: None,
        }
    }

    /// `(at, size)` of every stored message, oldest first.
    fn pending(&self) -> impl Iterator<Item = &(At, u32)> {
        self.pending.iter().flat_map(|pending| pending.iter())
    }

    fn pending_len(&self) -> usize {
        self.pending.as_ref().map_or(0, |pending| pending.len())
    }

    fn push(&mut self, at: At, size: u32) {
        self.pending.get_or_insert_default().push_back((at, size));
    }

    /// The same mailbox without its messages.
    fn record(&self) -> Self {
        Self {
            pending: None,
            ..*self
        }
    }

    /// Records a check at `now_us` (a clock that went back changes nothing).
    fn checked(&mut self, now_us: u64) {
        if now_us > self.last_check_us {
            self.check_lag = self.check_lag.add_us(now_us - self.last_check_us);
            self.last_check_us = now_us;
        }
    }

    /// The last check time has been written to disk.
    fn persisted(&mut self) {
        self.check_lag = CheckLag::NONE;
    }

    /// How many messages at the front have expired at `now_us`.
    fn expired(&self, now_us: u64, ttl_us: u64) -> usize {
        match (&self.pending, expired_until(now_us, ttl_us)) {
            (Some(pending), Some(until)) => pending.partition_point(|(at, _)| *at <= until),
            _ => 0,
        }
    }

    /// The `at`s of at most `limit` unexpired messages after `after`,
    /// oldest first.
    fn pending_after(&self, after: At, limit: usize, now_us: u64, ttl_us: u64) -> Vec<At> {
        let Some(pending) = &self.pending else {
            return Vec::new();
        };
        let first = pending
            .partition_point(|(at, _)| *at <= after)
            .max(self.expired(now_us, ttl_us));
        pending
            .range(first..)
            .take(limit)
            .map(|(at, _)| *at)
            .collect()
    }

    fn live(&self, now_us: u64, ttl_us: u64) -> usize {
        self.pending_len() - self.expired(now_us, ttl_us)
    }

    /// Messages expire in `at` order, so the newest decides.
    fn has_after(&self, after: At, now_us: u64, ttl_us: u64) -> bool {
        self.pending
            .as_ref()
            .and_then(|pending| pending.back())
            .is_some_and(|(at, _)| *at > after && at.0.saturating_add(ttl_us) > now_us)
    }

    /// Forgets the messages expired at `now_us` (and the queue once it is
    /// empty); `None` if there were none.
    fn remove_expired(&mut self, now_us: u64, ttl_us: u64) -> Option<Expired> {
        let count = self.expired(now_us, ttl_us);
        let pending = self.pending.as_mut().filter(|_| count > 0)?;
        let bytes = pending
            .drain(..count)
            .map(|(_, size)| u64::from(size))
            .sum();
        if pending.is_empty() {
            self.pending = None;
        }
        Some(Expired {
            count: count as u64,
            bytes,
        })
    }
}

/// Every mailbox in memory, by id. An [`IndexMap`] keeps its entries (the
/// hash, the id and the record: 96 bytes on 64-bit targets) in one dense
/// vector and finds them through a hashbrown table of 8-byte positions, so
/// the table's growth at powers of two leaves empty 9-byte buckets rather
/// than empty entries, and the vector's spare capacity is never written (for
/// a large vector, never resident). Removing moves the last entry into the
/// hole ([`IndexMap::swap_remove`]). The hasher is keyed at random per
/// process (SipHash, as `HashMap`'s default), so that nobody can choose ids
/// that collide.
type Mailboxes = IndexMap<MailboxId, Mailbox, RandomState>;

#[derive(Default)]
struct Index {
    mailboxes: Mailboxes,
    questions: HashMap<MailboxId, Question>,
    messages: u64,
    bytes: u64,
    /// The newest `at` of any removed mailbox.
    floor: At,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("mailboxes", &self.mailboxes.len())
            .field("questions", &self.questions.len())
            .field("messages", &self.messages)
            .field("bytes", &self.bytes)
            .field("floor", &self.floor)
            .finish()
    }
}

impl Index {
    /// Forgets mailbox `id` and its question.
    fn remove(&mut self, id: &MailboxId) {
        self.mailboxes.swap_remove(id);
        self.questions.remove(id);
    }

    /// Gives memory back once most of it is unused (after a sweep removed
    /// many idle mailboxes), keeping room to double again.
    fn shrink(&mut self) {
        let len = self.mailboxes.len();
        if self.mailboxes.capacity() >= 1024 && len * 4 < self.mailboxes.capacity() {
            self.mailboxes.shrink_to(len * 2);
        }
    }
}

enum Op {
    Send {
        mailbox: MailboxId,
        data: Vec<u8>,
        now_us: u64,
        reply: oneshot::Sender<Result<At, StoreError>>,
    },
    Delete {
        mailbox: MailboxId,
        only_if_empty: bool,
        now_us: u64,
        reply: oneshot::Sender<Result<Deleted, StoreError>>,
    },
    Sweep {
        now_us: u64,
        reply: oneshot::Sender<Result<SweepReport, StoreError>>,
    },
    Flush {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

struct Writer {
    queue: mpsc::Sender<Op>,
    thread: JoinHandle<()>,
}

/// The embedded redb store. See the module documentation.
pub struct RedbStore {
    path: PathBuf,
    options: StoreOptions,
    index: Arc<Mutex<Index>>,
    db: RwLock<Option<Arc<Database>>>,
    writer: Mutex<Option<Writer>>,
    commits: Arc<AtomicU64>,
    closed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the directory if
    /// needed, recovers after a crash, loads the index and starts the writer
    /// thread. Blocking: call it from `spawn_blocking` in async code.
    ///
    /// Fails if another process (or another `RedbStore` in this one) has the
    /// database open.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io {
                    path: path.clone(),
                    source,
                },
                other => unavailable(format!("{}: {other}", path.display())),
            })?;
        init_schema(&db)?;
        let index = load_index(&db)?;
        let db = Arc::new(db);
        let index = Arc::new(Mutex::new(index));
        let (queue, receiver) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let thread = {
            let db = Arc::clone(&db);
            let index = Arc::clone(&index);
            let commits = Arc::clone(&commits);
            std::thread::Builder::new()
                .name("connectoid-store-writer".into())
                .spawn(move || run_writer(&db, &index, options, receiver, &commits))
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?
        };
        Ok(Self {
            path,
            options,
            index,
            db: RwLock::new(Some(db)),
            writer: Mutex::new(Some(Writer { queue, thread })),
            commits,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions were committed since opening (each may
    /// hold many operations).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Fails once [`Store::close`] has begun.
    fn open_index(&self) -> Result<MutexGuard<'_, Index>, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(lock(&self.index))
    }

    fn queue(&self) -> Result<mpsc::Sender<Op>, StoreError> {
        lock(&self.writer)
            .as_ref()
            .map(|writer| writer.queue.clone())
            .ok_or(StoreError::Closed)
    }

    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue()?
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Makes the tables of a new database, or brings an older schema's up to
/// date (in one write transaction, so a crash leaves the old schema whole).
fn init_schema(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let found = meta.get("schema").map_err(unavailable)?.map(|v| v.value());
        match found {
            None | Some(SCHEMA) => {}
            Some(1) => {
                let moved = migrate_v1(&txn)?;
                tracing::info!(messages = moved, "store migrated from schema 1 to {SCHEMA}");
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {other}, this relay reads 1 and {SCHEMA}"
                )));
            }
        }
        meta.insert("schema", SCHEMA).map_err(unavailable)?;
        txn.open_table(MESSAGES).map_err(unavailable)?;
        txn.open_table(MAILBOXES).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

/// Moves schema 1's messages (by mailbox) to [`MESSAGES`] (by `at`) and
/// deletes the old table; returns how many it moved.
fn migrate_v1(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut moved = 0;
    {
        let old = txn.open_table(MESSAGES_V1).map_err(unavailable)?;
        let mut new = txn.open_table(MESSAGES).map_err(unavailable)?;
        for entry in old.iter().map_err(unavailable)? {
            let (key, value) = entry.map_err(unavailable)?;
            let (id, at) = split_key_v1(key.value())?;
            new.insert(&message_key(&id, at), value.value())
                .map_err(unavailable)?;
            moved += 1;
        }
    }
    txn.delete_table(MESSAGES_V1).map_err(unavailable)?;
    Ok(moved)
}

fn load_index(db: &Database) -> Result<Index, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let mailboxes = txn.open_table(MAILBOXES).map_err(unavailable)?;
    let count = mailboxes.len().map_err(unavailable)?;
    let mut index = Index {
        // Exactly as many as there are: the index does not grow while loading.
        mailboxes: Mailboxes::with_capacity_and_hasher(
            usize::try_from(count).unwrap_or(0),
            RandomState::new(),
        ),
        ..Index::default()
    };
    for entry in mailboxes.iter().map_err(unavailable)? {
        let (key, value) = entry.map_err(unavailable)?;
        let (last_at, last_check_us) = value.value();
        let mut mailbox = Mailbox::new(last_check_us);
        mailbox.last_at = At(last_at);
        index.mailboxes.insert(mailbox_id(key.value())?, mailbox);
    }
    let meta = txn.open_table(META).map_err(unavailable)?;
    if let Some(floor) = meta.get("floor").map_err(unavailable)? {
        index.floor = At(floor.value());
    }
    // In `at` order, so each mailbox's queue is filled oldest first.
    let messages = txn.open_table(MESSAGES).map_err(unavailable)?;
    for entry in messages.iter().map_err(unavailable)? {
        let (key, value) = entry.map_err(unavailable)?;
        let (id, at) = split_key(key.value());
        let size = u32::try_from(value.value().len()).unwrap_or(u32::MAX);
        // A message without a mailbox record cannot be written by this
        // version; keep it anyway, its mailbox then counts as created now.
        let mailbox = index.mailboxes.entry(id).or_insert_with(|| Mailbox::new(0));
        mailbox.push(at, size);
        mailbox.last_at = mailbox.last_at.max(at);
        index.messages += 1;
        index.bytes += u64::from(size);
    }
    Ok(index)
}

/// The tables a batch writes, opened once per transaction (opening one
/// per operation cost a table-tree lookup and write-back each time).
struct Tables<'txn> {
    messages: redb::Table<'txn, &'static [u8; KEY_LEN], &'static [u8]>,
    mailboxes: redb::Table<'txn, &'static [u8], (u64, u64)>,
    meta: redb::Table<'txn, &'static str, u64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            mailboxes: txn.open_table(MAILBOXES)?,
            meta: txn.open_table(META)?,
        })
    }
}

/// What a batch did to one mailbox. The messages committed before the batch
/// stay in the index (copying them would cost O(pending) per mailbox and
/// batch, and readers keep seeing them until the commit): the change counts
/// how many of the oldest it removed, and holds the ones it added.
struct Change {
    /// The mailbox as the batch leaves it (`None`: removed, or never made),
    /// except that its queue holds only the messages the batch added.
    mailbox: Option<Mailbox>,
    /// How many messages the index's queue holds (only the writer changes
    /// queues, so this stays true until the batch is applied).
    committed: usize,
    /// How many of those, oldest first, the batch removed.
    dropped: usize,
}

impl Change {
    fn new(committed: Option<&Mailbox>) -> Self {
        Self {
            mailbox: committed.map(Mailbox::record),
            committed: committed.map_or(0, Mailbox::pending_len),
            dropped: 0,
        }
    }

    /// How many messages the mailbox keeps, expired or not.
    fn pending_len(&self) -> usize {
        self.committed - self.dropped + self.mailbox.as_ref().map_or(0, Mailbox::pending_len)
    }

    /// Runs `f` on the index's mailbox `id` (under the index lock) if the
    /// batch kept any of its committed messages.
    fn with_kept<R>(
        &self,
        index: &Mutex<Index>,
        id: &MailboxId,
        f: impl FnOnce(&Mailbox) -> R,
    ) -> Option<R> {
        if self.dropped == self.committed {
            return None;
        }
        lock(index).mailboxes.get(id).map(f)
    }

    /// How many messages the mailbox keeps unexpired at `now_us`.
    fn live(&self, index: &Mutex<Index>, id: &MailboxId, now_us: u64, ttl_us: u64) -> usize {
        let Some(mailbox) = &self.mailbox else {
            return 0;
        };
        let kept = self.with_kept(index, id, |committed| {
            self.committed - committed.expired(now_us, ttl_us).max(self.dropped)
        });
        kept.unwrap_or(0) + mailbox.live(now_us, ttl_us)
    }

    /// Removes the messages expired at `now_us`, from the committed ones (by
    /// counting them) and from the added ones; `None` if there were none.
    fn remove_expired(
        &mut self,
        index: &Mutex<Index>,
        id: &MailboxId,
        now_us: u64,
        ttl_us: u64,
    ) -> Option<Expired> {
        self.mailbox.as_ref()?;
        let dropped = self.dropped;
        let kept = self.with_kept(index, id, |committed| {
            let until = committed.expired(now_us, ttl_us).max(dropped);
            let bytes = committed
                .pending()
                .skip(dropped)
                .take(until - dropped)
                .map(|(_, size)| u64::from(*size))
                .sum();
            (until, bytes)
        });
        let mut expired = Expired { count: 0, bytes: 0 };
        if let Some((until, bytes)) = kept {
            expired = Expired {
                count: (until - dropped) as u64,
                bytes,
            };
            self.dropped = until;
        }
        if let Some(added) = self.mailbox.as_mut()?.remove_expired(now_us, ttl_us) {
            expired.count += added.count;
            expired.bytes += added.bytes;
        }
        (expired.count > 0).then_some(expired)
    }

    /// Removes the mailbox; returns it and every message it kept, oldest
    /// first (`None` if there was no mailbox).
    fn remove(
        &mut self,
        index: &Mutex<Index>,
        id: &MailboxId,
    ) -> Option<(Mailbox, Vec<(At, u32)>)> {
        self.mailbox.as_ref()?;
        let mut messages: Vec<(At, u32)> = self
            .with_kept(index, id, |committed| {
                committed.pending().skip(self.dropped).copied().collect()
            })
            .unwrap_or_default();
        self.dropped = self.committed;
        let mailbox = self.mailbox.take()?;
        messages.extend(mailbox.pending());
        Some((mailbox, messages))
    }

    /// The mailbox after the commit (`None`: removed), made from the
    /// index's `current` one: its queue is the committed one, and its last
    /// check may be newer than the batch's.
    fn merge(self, current: Option<&mut Mailbox>) -> Option<Mailbox> {
        let mut mailbox = self.mailbox?;
        let added = mailbox.pending.take();
        if let Some(current) = current {
            // Checks may have come in while the batch committed.
            mailbox.checked(current.last_check_us);
            mailbox.pending = current.pending.take();
            if let Some(pending) = &mut mailbox.pending {
                pending.drain(..self.dropped);
                if pending.is_empty() {
                    mailbox.pending = None;
                }
            }
        }
        for &(at, size) in added.iter().flat_map(|added| added.iter()) {
            mailbox.push(at, size);
        }
        Some(mailbox)
    }
}

/// Changes of one batch, applied to the index only after the commit.
struct Batch<'a> {
    index: &'a Mutex<Index>,
    options: StoreOptions,
    /// Mailboxes this batch touched, and what it did to them.
    touched: HashMap<MailboxId, Change>,
    messages: u64,
    bytes: u64,
    mailboxes: u64,
    floor: At,
}

impl<'a> Batch<'a> {
    fn new(index: &'a Mutex<Index>, options: StoreOptions) -> Self {
        let guard = lock(index);
        let (messages, bytes, mailboxes, floor) = (
            guard.messages,
            guard.bytes,
            guard.mailboxes.len() as u64,
            guard.floor,
        );
        drop(guard);
        Self {
            index,
            options,
            touched: HashMap::new(),
            messages,
            bytes,
            mailboxes,
            floor,
        }
    }

    fn change(&mut self, id: MailboxId) -> &mut Change {
        let index = self.index;
        self.touched
            .entry(id)
            .or_insert_with(|| Change::new(lock(index).mailboxes.get(&id)))
    }

    fn send(
        &mut self,
        tables: &mut Tables<'_>,
        id: MailboxId,
        data: &[u8],
        now_us: u64,
    ) -> Result<Result<At, StoreError>, redb::Error> {
        let options = self.options;
        let size = data.len() as u64;
        let (index, mailboxes, bytes, floor) = (self.index, self.mailboxes, self.bytes, self.floor);
        let change = self.change(id);
        let created = change.mailbox.is_none();
        if created && mailboxes >= options.max_mailboxes {
            return Ok(Err(StoreError::RelayFull("too many mailboxes")));
        }
        if bytes.saturating_add(size) > options.max_stored_bytes {
            return Ok(Err(StoreError::RelayFull("storage limit reached")));
        }
        // Counting the live messages takes the index lock: only when the
        // mailbox holds enough messages, expired or not, to be full.
        let max_pending = options.max_pending_per_mailbox as usize;
        if change.pending_len() >= max_pending
            && change.live(index, &id, now_us, options.message_ttl_us) >= max_pending
        {
            return Ok(Err(StoreError::MailboxFull));
        }
        let mailbox = change.mailbox.get_or_insert_with(|| Mailbox::new(now_us));
        let newest = mailbox.last_at.max(floor);
        let last = (newest != At::ZERO).then_some(newest);
        let at = At::next(now_us, last);
        tables.messages.insert(&message_key(&id, at), data)?;
        tables
            .mailboxes
            .insert(id.0.as_slice(), (at.0, mailbox.last_check_us))?;
        mailbox.last_at = at;
        mailbox.push(at, u32::try_from(size).unwrap_or(u32::MAX));
        mailbox.persisted();
        self.messages += 1;
        self.bytes += size;
        if created {
            self.mailboxes += 1;
        }
        Ok(Ok(at))
    }

    fn remove_mailbox(
        &mut self,
        tables: &mut Tables<'_>,
        id: MailboxId,
    ) -> Result<bool, redb::Error> {
        let index = self.index;
        let Some((mailbox, messages)) = self.change(id).remove(index, &id) else {
            return Ok(false);
        };
        for (at, _) in &messages {
            tables.messages.remove(&message_key(&id, *at))?;
        }
        tables.mailboxes.remove(id.0.as_slice())?;
        if mailbox.last_at > self.floor {
            self.floor = mailbox.last_at;
            tables.meta.insert("floor", self.floor.0)?;
        }
        self.messages -= messages.len() as u64;
        self.bytes -= messages.iter().map(|(_, s)| u64::from(*s)).sum::<u64>();
        self.mailboxes -= 1;
        Ok(true)
    }

    fn delete(
        &mut self,
        tables: &mut Tables<'_>,
        id: MailboxId,
        only_if_empty: bool,
        now_us: u64,
    ) -> Result<Deleted, redb::Error> {
        let (index, ttl) = (self.index, self.options.message_ttl_us);
        let change = self.change(id);
        if change.mailbox.is_none() {
            Ok(Deleted::Absent)
        } else if only_if_empty && change.live(index, &id, now_us, ttl) > 0 {
            Ok(Deleted::NotEmpty)
        } else {
            self.remove_mailbox(tables, id)?;
            Ok(Deleted::Removed)
        }
    }

    fn persist_check(
        &mut self,
        tables: &mut Tables<'_>,
        id: MailboxId,
    ) -> Result<bool, redb::Error> {
        let Some(mailbox) = self.change(id).mailbox.as_mut() else {
            return Ok(false);
        };
        tables
            .mailboxes
            .insert(id.0.as_slice(), (mailbox.last_at.0, mailbox.last_check_us))?;
        mailbox.persisted();
        Ok(true)
    }

    fn sweep(&mut self, tables: &mut Tables<'_>, now_us: u64) -> Result<SweepReport, redb::Error> {
        let options = self.options;
        let ttl = options.message_ttl_us;
        let mut report = SweepReport::default();
        let (idle, mut expiring, checks_due) = {
            let mut index = lock(self.index);
            let before = index.questions.len();
            index.questions.retain(|_, q| q.expires_us > now_us);
            report.questions_removed = (before - index.questions.len()) as u64;
            let mut idle = Vec::new();
            let mut expiring = Vec::new();
            let mut checks_due = Vec::new();
            for (&id, mailbox) in &index.mailboxes {
                if mailbox.expired(now_us, ttl) > 0 {
                    expiring.push(id);
                }
                if mailbox
                    .last_check_us
                    .saturating_add(options.mailbox_idle_us)
                    <= now_us
                {
                    idle.push(id);
                } else if mailbox.check_lag.is_due(options.check_persist_us) {
                    checks_due.push(id);
                }
            }
            (idle, expiring, checks_due)
        };
        // What this batch changed may have expired too (a mailbox it made is
        // not in the index yet); a mailbox listed twice expires once.
        expiring.extend(self.touched.keys().copied());
        // Messages expire in `at` order relay-wide: forget them per mailbox
        // in memory, and remove them from the table as one range from its
        // start.
        let index = self.index;
        let mut expired_count = 0;
        for id in expiring {
            let Some(expired) = self.change(id).remove_expired(index, &id, now_us, ttl) else {
                continue;
            };
            self.messages -= expired.count;
            self.bytes -= expired.bytes;
            expired_count += expired.count;
        }
        if let Some(until) = expired_until(now_us, ttl) {
            let last = message_key(&MailboxId([u8::MAX; PUBLIC_KEY_LEN]), until);
            let mut removed = 0;
            tables
                .messages
                .retain_in::<&[u8; KEY_LEN], _>(..=&last, |_, _| {
                    removed += 1;
                    false
                })?;
            if removed != expired_count {
                tracing::error!(
                    removed,
                    expected = expired_count,
                    "expired messages in the table and in the index differ"
                );
            }
            debug_assert_eq!(removed, expired_count, "expired messages");
        }
        report.messages_removed = expired_count;
        // After the expiry, so that only their live messages are left to
        // remove one by one.
        for id in idle {
            if self.remove_mailbox(tables, id)? {
                report.mailboxes_removed += 1;
            }
        }
        for id in checks_due {
            if self.persist_check(tables, id)? {
                report.checks_persisted += 1;
            }
        }
        Ok(report)
    }

    fn flush(&mut self, tables: &mut Tables<'_>) -> Result<u64, redb::Error> {
        let due: Vec<MailboxId> = lock(self.index)
            .mailboxes
            .iter()
            .filter(|(_, m)| m.check_lag.is_behind())
            .map(|(&id, _)| id)
            .collect();
        let mut written = 0;
        for id in due {
            if self.persist_check(tables, id)? {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Publishes the committed changes.
    fn apply(self) {
        let mut index = lock(self.index);
        let mut removed = false;
        for (id, change) in self.touched {
            match change.merge(index.mailboxes.get_mut(&id)) {
                Some(mailbox) => {
                    index.mailboxes.insert(id, mailbox);
                }
                None => {
                    index.remove(&id);
                    removed = true;
                }
            }
        }
        if removed {
            index.shrink();
        }
        index.messages = self.messages;
        index.bytes = self.bytes;
        index.floor = self.floor;
    }
}

/// A reply to send once the batch's fate is known.
enum Reply {
    Send(
        oneshot::Sender<Result<At, StoreError>>,
        Result<At, StoreError>,
    ),
    Delete(oneshot::Sender<Result<Deleted, StoreError>>, Deleted),
    Sweep(
        oneshot::Sender<Result<SweepReport, StoreError>>,
        SweepReport,
    ),
    Flush(oneshot::Sender<Result<u64, StoreError>>, u64),
}

impl Reply {
    fn send(self, failure: Option<&str>) {
        fn fail<T>(message: &str) -> Result<T, StoreError> {
            Err(StoreError::Unavailable(message.to_owned()))
        }
        // A dropped receiver means the request was cancelled; nothing to do.
        match (self, failure) {
            (Self::Send(tx, _), Some(f)) => drop(tx.send(fail(f))),
            (Self::Send(tx, result), None) => drop(tx.send(result)),
            (Self::Delete(tx, _), Some(f)) => drop(tx.send(fail(f))),
            (Self::Delete(tx, result), None) => drop(tx.send(Ok(result))),
            (Self::Sweep(tx, _), Some(f)) => drop(tx.send(fail(f))),
            (Self::Sweep(tx, result), None) => drop(tx.send(Ok(result))),
            (Self::Flush(tx, _), Some(f)) => drop(tx.send(fail(f))),
            (Self::Flush(tx, result), None) => drop(tx.send(Ok(result))),
        }
    }
}

fn run_writer(
    db: &Database,
    index: &Mutex<Index>,
    options: StoreOptions,
    mut queue: mpsc::Receiver<Op>,
    commits: &AtomicU64,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < options.max_commit_batch.max(1) {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        commit(db, index, options, ops);
        commits.fetch_add(1, Ordering::Relaxed);
    }
    // Every handle is gone without a close(): keep what is only in memory.
    let (reply, _) = oneshot::channel();
    commit(db, index, options, vec![Op::Flush { reply }]);
}

fn commit(db: &Database, index: &Mutex<Index>, options: StoreOptions, ops: Vec<Op>) {
    let count = ops.len();
    let mut batch = Batch::new(index, options);
    let mut replies = Vec::with_capacity(count);
    let outcome = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        let mut tables = Tables::open(&txn)?;
        for op in ops {
            match op {
                Op::Send {
                    mailbox,
                    data,
                    now_us,
                    reply,
                } => {
                    let result = batch.send(&mut tables, mailbox, &data, now_us)?;
                    replies.push(Reply::Send(reply, result));
                }
                Op::Delete {
                    mailbox,
                    only_if_empty,
                    now_us,
                    reply,
                } => {
                    let result = batch.delete(&mut tables, mailbox, only_if_empty, now_us)?;
                    replies.push(Reply::Delete(reply, result));
                }
                Op::Sweep { now_us, reply } => {
                    let report = batch.sweep(&mut tables, now_us)?;
                    replies.push(Reply::Sweep(reply, report));
                }
                Op::Flush { reply } => {
                    let written = batch.flush(&mut tables)?;
                    replies.push(Reply::Flush(reply, written));
                }
            }
        }
        drop(tables);
        txn.commit()?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            batch.apply();
            tracing::trace!(operations = count, "store commit");
            for reply in replies {
                reply.send(None);
            }
        }
        Err(error) => {
            // The transaction is dropped (aborted): nothing of the batch is
            // stored, and the index was not touched.
            tracing::error!(%error, operations = count, "store commit failed");
            let message = format!("commit failed: {error}");
            for reply in replies {
                reply.send(Some(&message));
            }
        }
    }
}

/// Reads the messages at `ats` (at most `limit`, the first ones the index
/// listed for mailbox `id` after the receive's cursor) from a snapshot.
///
/// The index is read before the snapshot is taken, and updated only after a
/// commit, so the snapshot has every message it listed unless a later commit
/// removed it (a sweep with a later clock, a delete): such a message is
/// skipped, and the index is asked for more in its place.
fn read_messages(
    db: &Database,
    index: &Mutex<Index>,
    id: MailboxId,
    mut ats: Vec<At>,
    limit: usize,
    now_us: u64,
    ttl_us: u64,
) -> Result<Vec<Message>, StoreError> {
    let mut out = Vec::with_capacity(ats.len());
    while !ats.is_empty() {
        let wanted = limit - out.len();
        let txn = db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(MESSAGES).map_err(unavailable)?;
        for &at in &ats {
            if let Some(data) = table.get(&message_key(&id, at)).map_err(unavailable)? {
                out.push(Message {
                    at,
                    data: data.value().to_vec(),
                });
            }
        }
        // Done if every message was found or the index listed no more.
        let Some(&last) = ats.last() else { break };
        if out.len() >= limit || ats.len() < wanted {
            break;
        }
        ats = lock(index)
            .mailboxes
            .get(&id)
            .map_or_else(Vec::new, |mailbox| {
                mailbox.pending_after(last, limit - out.len(), now_us, ttl_us)
            });
    }
    Ok(out)
}

#[async_trait]
impl Store for RedbStore {
    async fn send(&self, mailbox: MailboxId, data: Vec<u8>, now_us: u64) -> Result<At, StoreError> {
        self.submit(|reply| Op::Send {
            mailbox,
            data,
            now_us,
            reply,
        })
        .await
    }

    async fn check(
        &self,
        checks: &[(MailboxId, At)],
        now_us: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let ttl = self.options.message_ttl_us;
        let mut index = self.open_index()?;
        Ok(checks
            .iter()
            .map(|(id, after)| match index.mailboxes.get_mut(id) {
                Some(mailbox) => {
                    mailbox.checked(now_us);
                    mailbox.has_after(*after, now_us, ttl)
                }
                None => false,
            })
            .collect())
    }

    async fn receive(
        &self,
        mailbox: MailboxId,
        after: At,
        limit: u32,
        now_us: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let ttl = self.options.message_ttl_us;
        let limit = limit as usize;
        let ats = self
            .open_index()?
            .mailboxes
            .get(&mailbox)
            .map_or_else(Vec::new, |m| m.pending_after(after, limit, now_us, ttl));
        if ats.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.database()?;
        let index = Arc::clone(&self.index);
        tokio::task::spawn_blocking(move || {
            read_messages(&db, &index, mailbox, ats, limit, now_us, ttl)
        })
        .await
        .map_err(unavailable)?
    }

    async fn question(
        &self,
        mailbox: MailboxId,
        now_us: u64,
    ) -> Result<Option<Question>, StoreError> {
        Ok(self
            .open_index()?
            .questions
            .get(&mailbox)
            .filter(|q| q.expires_us > now_us)
            .cloned())
    }

    async fn offer_question(
        &self,
        mailbox: MailboxId,
        question: Question,
        now_us: u64,
    ) -> Result<Question, StoreError> {
        let mut index = self.open_index()?;
        if let Some(live) = index
            .questions
            .get(&mailbox)
            .filter(|q| q.expires_us > now_us)
        {
            return Ok(live.clone());
        }
        // Keep questions only for mailboxes that exist, so that memory is
        // bounded by the mailboxes.
        if index.mailboxes.contains_key(&mailbox) {
            index.questions.insert(mailbox, question.clone());
        }
        Ok(question)
    }

    async fn delete(
        &self,
        mailbox: MailboxId,
        only_if_empty: bool,
        now_us: u64,
    ) -> Result<Deleted, StoreError> {
        self.submit(|reply| Op::Delete {
            mailbox,
            only_if_empty,
            now_us,
            reply,
        })
        .await
    }

    async fn sweep(&self, now_us: u64) -> Result<SweepReport, StoreError> {
        self.submit(|reply| Op::Sweep { now_us, reply }).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let index = self.open_index()?;
        Ok(StoreStats {
            mailboxes: index.mailboxes.len() as u64,
            messages: index.messages,
            bytes: index.bytes,
            questions: index.questions.len() as u64,
        })
    }

    async fn close(&self) -> Result<(), StoreError> {
        let flushed = match self.submit(|reply| Op::Flush { reply }).await {
            Ok(_) | Err(StoreError::Closed) => Ok(()),
            Err(other) => Err(other),
        };
        self.closed.store(true, Ordering::SeqCst);
        let writer = lock(&self.writer).take();
        if let Some(Writer { queue, thread }) = writer {
            drop(queue);
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(unavailable)?
                .map_err(|_| StoreError::Unavailable("the writer thread panicked".into()))?;
        }
        self.db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        flushed
    }
}

#[cfg(test)]
mod tests {
    use redb::TableHandle as _;

    use super::*;

    #[test]
    fn keys_order_by_at_then_mailbox() {
        let a = MailboxId([1; PUBLIC_KEY_LEN]);
        let b = MailboxId([2; PUBLIC_KEY_LEN]);
        assert!(message_key(&b, At(0)) < message_key(&a, At(1)));
        assert!(message_key(&b, At(255)) < message_key(&a, At(256)));
        assert!(message_key(&a, At(7)) < message_key(&b, At(7)));
        assert_eq!(split_key(&message_key(&b, At(77))), (b, At(77)));
        let mut v1 = b.0.to_vec();
        v1.extend_from_slice(&77u64.to_be_bytes());
        assert_eq!(split_key_v1(&v1).unwrap(), (b, At(77)));
        assert!(split_key_v1(&[0; 3]).is_err());
        assert!(split_key_v1(&[0; KEY_LEN + 1]).is_err());
    }

    /// The sweep removes the table's keys up to [`expired_until`] and the
    /// index's messages that [`Mailbox::expired`] counts: the same ones.
    #[test]
    fn expired_until_agrees_with_the_ttl() {
        for (now, ttl) in [
            (0, 0),
            (0, 5),
            (4, 5),
            (5, 5),
            (100, 5),
            (100, 0),
            (u64::MAX - 1, 5),
            (u64::MAX, 5),
            (u64::MAX, u64::MAX),
            (5, u64::MAX),
        ] {
            for at in [
                0,
                1,
                94,
                95,
                96,
                99,
                100,
                101,
                u64::MAX - 7,
                u64::MAX - 6,
                u64::MAX,
            ] {
                let by_ttl = at.saturating_add(ttl) <= now;
                let by_cutoff = expired_until(now, ttl).is_some_and(|until| At(at) <= until);
                assert_eq!(by_ttl, by_cutoff, "at {at}, now {now}, ttl {ttl}");
            }
        }
    }

    fn id(n: u16) -> MailboxId {
        let mut bytes = [0x02; PUBLIC_KEY_LEN];
        bytes[1..3].copy_from_slice(&n.to_be_bytes());
        MailboxId(bytes)
    }

    #[test]
    fn expiry_follows_at_order() {
        let mut mailbox = Mailbox::new(0);
        for at in [10, 20, 30] {
            mailbox.push(At(at), 1);
        }
        assert_eq!(mailbox.expired(25, 5), 2);
        assert_eq!(mailbox.live(25, 5), 1);
        assert!(mailbox.has_after(At(29), 34, 5));
        assert!(!mailbox.has_after(At(29), 35, 5));
        assert!(!mailbox.has_after(At(30), 0, 5));
    }

    /// An idle mailbox holds no queue; one comes with the first message and
    /// goes with the last.
    #[test]
    fn mailboxes_go_idle_pending_idle() {
        let mut mailbox = Mailbox::new(0);
        assert!(mailbox.pending.is_none());
        assert_eq!((mailbox.pending_len(), mailbox.live(0, 5)), (0, 0));
        assert!(!mailbox.has_after(At::ZERO, 0, 5));
        assert_eq!(mailbox.remove_expired(100, 5), None);

        mailbox.push(At(10), 100);
        mailbox.push(At(20), 200);
        assert!(mailbox.has_after(At(10), 12, 5));
        assert_eq!(mailbox.remove_expired(14, 5), None, "nothing expired yet");
        let first = Expired {
            count: 1,
            bytes: 100,
        };
        assert_eq!(mailbox.remove_expired(15, 5), Some(first));
        assert_eq!(
            mailbox.pending().copied().collect::<Vec<_>>(),
            [(At(20), 200)]
        );
        let second = Expired {
            count: 1,
            bytes: 200,
        };
        assert_eq!(mailbox.remove_expired(u64::MAX, 5), Some(second));
        assert!(mailbox.pending.is_none(), "idle again");
        assert_eq!(mailbox.pending_len(), 0);

        mailbox.push(At(30), 1);
        mailbox.push(At(40), 2);
        let both = Expired { count: 2, bytes: 3 };
        assert_eq!(mailbox.remove_expired(45, 5), Some(both));
        assert!(mailbox.pending.is_none());
    }

    /// The record is 32 bytes, and an entry of the map (`indexmap` keeps the
    /// hash, the key and the value) 96.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn an_idle_mailbox_takes_96_bytes() {
        assert_eq!(std::mem::size_of::<Mailbox>(), 32);
        assert_eq!(std::mem::size_of::<(u64, MailboxId, Mailbox)>(), 96);
    }

    #[test]
    fn check_lag_rounds_up_and_saturates() {
        assert!(!CheckLag::NONE.is_behind());
        assert!(!CheckLag::NONE.is_due(0));
        let tiny = CheckLag::NONE.add_us(1);
        assert!(tiny.is_behind(), "any later check must be written at close");
        assert_eq!(tiny, CheckLag(1));
        assert!(tiny.is_due(0) && tiny.is_due(1_000) && !tiny.is_due(1_001));
        let minute = CheckLag::NONE.add_us(60_000_000);
        assert!(minute.is_due(60_000_000) && !minute.is_due(60_000_001));
        assert!(
            CheckLag::NONE.add_us(59_999_001).is_due(60_000_000),
            "1 ms early at most"
        );
        assert!(!CheckLag::NONE.add_us(59_999_000).is_due(60_000_000));
        // Checks far in the future or long after the last write saturate.
        let far = CheckLag::NONE.add_us(u64::MAX);
        assert_eq!(far, CheckLag(u32::MAX));
        assert!(far.is_due(u64::MAX));
        assert_eq!(far.add_us(u64::MAX), far);
        assert_eq!(CheckLag(u32::MAX - 1).add_us(5_000), far);
    }

    #[test]
    fn checks_move_the_time_forward_only() {
        const T0: u64 = 1_700_000_000_000_000;
        let mut mailbox = Mailbox::new(T0);
        mailbox.checked(T0 - 1);
        mailbox.checked(0);
        assert_eq!(
            (mailbox.last_check_us, mailbox.check_lag),
            (T0, CheckLag::NONE)
        );
        mailbox.checked(T0 + 1_500);
        mailbox.checked(T0 + 1_700);
        assert_eq!(mailbox.last_check_us, T0 + 1_700);
        assert_eq!(
            mailbox.check_lag,
            CheckLag(3),
            "1.5 ms and 0.2 ms, each rounded up"
        );
        mailbox.persisted();
        assert!(!mailbox.check_lag.is_behind());
        assert_eq!(mailbox.last_check_us, T0 + 1_700);
        mailbox.checked(u64::MAX);
        assert_eq!(mailbox.last_check_us, u64::MAX);
        assert!(mailbox.check_lag.is_due(u64::MAX));
        // A mailbox loaded without a record counts as checked at 0.
        let mut orphan = Mailbox::new(0);
        orphan.checked(T0);
        assert!(orphan.check_lag.is_due(3_600_000_000));
    }

    /// Checks that come in while a batch commits are kept, and still count
    /// as not written.
    #[test]
    fn a_commit_keeps_checks_made_meanwhile() {
        let index = Mutex::new(Index::default());
        lock(&index).mailboxes.insert(id(4), Mailbox::new(1_000));
        let mut batch = Batch::new(&index, StoreOptions::default());
        let mailbox = batch.change(id(4)).mailbox.as_mut().unwrap();
        mailbox.last_at = At(7);
        mailbox.persisted();
        lock(&index)
            .mailboxes
            .get_mut(&id(4))
            .unwrap()
            .checked(5_000);
        batch.apply();
        let index = lock(&index);
        let mailbox = index.mailboxes.get(&id(4)).unwrap();
        assert_eq!(mailbox.last_at, At(7));
        assert_eq!(mailbox.last_check_us, 5_000);
        assert_eq!(mailbox.check_lag, CheckLag(4));
    }

    /// A sweep that removes most mailboxes gives their memory back, and
    /// every mailbox left is still found.
    #[tokio::test]
    async fn a_big_sweep_gives_memory_back() {
        const T0: u64 = 1_700_000_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let store = RedbStore::open(dir.path(), options).unwrap();
        let sends = (0..4_000).map(|n| store.send(id(n), vec![1; 10], T0));
        for result in futures::future::join_all(sends).await {
            result.unwrap();
        }
        let later = T0 + options.mailbox_idle_us;
        let kept: Vec<(MailboxId, At)> =
            (0..4_000).step_by(100).map(|n| (id(n), At::ZERO)).collect();
        store.check(&kept, later).await.unwrap();
        let capacity = store.open_index().unwrap().mailboxes.capacity();
        assert!(capacity >= 4_000);
        let report = store.sweep(later + 1).await.unwrap();
        assert_eq!(report.mailboxes_removed, 3_960);
        {
            let index = store.open_index().unwrap();
            assert_eq!(index.mailboxes.len(), 40);
            assert!(
                index.mailboxes.capacity() < capacity / 4,
                "memory given back: {} of {capacity}",
                index.mailboxes.capacity()
            );
            for n in 0..4_000 {
                let found = index.mailboxes.get(&id(n)).map(|m| m.last_check_us);
                assert_eq!(found, (n % 100 == 0).then_some(later), "{n}");
            }
        }
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.mailboxes, 40);
        store.close().await.unwrap();
    }

    /// What the index holds after a restart: exact check times, nothing
    /// behind, and a queue only where messages are left.
    #[tokio::test]
    async fn the_index_reloads_exactly() {
        const T0: u64 = 1_700_000_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let ttl = options.message_ttl_us;
        let store = RedbStore::open(dir.path(), options).unwrap();
        store.send(id(5), vec![1; 100], T0).await.unwrap();
        store.send(id(6), vec![2; 100], T0).await.unwrap();
        store.send(id(6), vec![3; 50], T0 + ttl).await.unwrap();
        store
            .check(&[(id(5), At::ZERO)], T0 + 1_234_567)
            .await
            .unwrap();
        store.sweep(T0 + ttl).await.unwrap();
        store.close().await.unwrap();

        let store = RedbStore::open(dir.path(), options).unwrap();
        {
            let index = store.open_index().unwrap();
            assert_eq!(
                (index.mailboxes.len(), index.messages, index.bytes),
                (2, 1, 50)
            );
            let idle = index.mailboxes.get(&id(5)).unwrap();
            assert_eq!(idle.last_check_us, T0 + 1_234_567);
            assert_eq!(idle.check_lag, CheckLag::NONE);
            assert!(idle.pending.is_none());
            assert_eq!(idle.last_at, At(T0));
            let busy = index.mailboxes.get(&id(6)).unwrap();
            assert_eq!(busy.pending().count(), 1);
            assert_eq!(busy.last_at, At(T0 + ttl));
        }
        store.close().await.unwrap();
    }

    /// A new database with its (empty) index, in a temporary directory.
    fn fresh_database() -> (tempfile::TempDir, Database, Mutex<Index>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        init_schema(&db).unwrap();
        let index = Mutex::new(load_index(&db).unwrap());
        (dir, db, index)
    }

    /// Queues `count` sends to one mailbox before the writer runs, runs it
    /// with `options` until the queue is drained, and returns how many
    /// commits it made, each send's answer, and the index.
    fn run_queued_sends(
        count: u8,
        options: StoreOptions,
    ) -> (u64, Vec<Result<At, StoreError>>, Index) {
        let (_dir, db, index) = fresh_database();
        let (queue, receiver) = mpsc::channel(QUEUE);
        let mut answers = Vec::new();
        for i in 0..count {
            let (reply, answer) = oneshot::channel();
            let op = Op::Send {
                mailbox: MailboxId([2; PUBLIC_KEY_LEN]),
                data: vec![i; 120],
                now_us: 1,
                reply,
            };
            assert!(queue.try_send(op).is_ok());
            answers.push(answer);
        }
        drop(queue);
        let commits = AtomicU64::new(0);
        run_writer(&db, &index, options, receiver, &commits);
        let answers = answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap())
            .collect();
        let index = index.into_inner().unwrap();
        (commits.load(Ordering::Relaxed), answers, index)
    }

    /// Operations that wait while the writer is busy share one commit.
    #[test]
    fn queued_sends_share_one_commit() {
        let (commits, answers, index) = run_queued_sends(50, StoreOptions::default());
        assert_eq!(commits, 1, "one commit for 50 sends");
        let ats: Vec<At> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(ats, (0..50).map(|i| At(1 + i)).collect::<Vec<_>>());
        assert_eq!(index.messages, 50);
    }

    /// `max_commit_batch: 1` turns group commit off: one commit per send.
    #[test]
    fn a_commit_batch_of_one_commits_every_send() {
        let options = StoreOptions {
            max_commit_batch: 1,
            ..StoreOptions::default()
        };
        let (commits, answers, _) = run_queued_sends(10, options);
        assert_eq!(commits, 10, "one commit per send");
        for answer in answers {
            assert!(answer.is_ok());
        }
    }

    /// Every message of the table is in the index and the other way round,
    /// with its size, and the index's totals add up.
    fn assert_table_matches_index(db: &Database, index: &Index) {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(MESSAGES).unwrap();
        let mut in_table = Vec::new();
        for entry in table.iter().unwrap() {
            let (key, value) = entry.unwrap();
            let (id, at) = split_key(key.value());
            in_table.push((id, at, u32::try_from(value.value().len()).unwrap()));
        }
        let mut in_index: Vec<(MailboxId, At, u32)> = index
            .mailboxes
            .iter()
            .flat_map(|(id, m)| m.pending().map(|&(at, size)| (*id, at, size)))
            .collect();
        in_table.sort();
        in_index.sort();
        assert_eq!(in_table, in_index);
        assert_eq!(index.messages, in_index.len() as u64);
        let bytes: u64 = in_index.iter().map(|(_, _, size)| u64::from(*size)).sum();
        assert_eq!(index.bytes, bytes);
    }

    /// Sends, deletes and sweeps (expired messages, idle mailboxes that
    /// still hold live ones) leave the table and the index in agreement.
    #[tokio::test]
    async fn the_table_follows_the_index() {
        const T0: u64 = 1_700_000_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let (ttl, idle) = (options.message_ttl_us, options.mailbox_idle_us);
        let store = RedbStore::open(dir.path(), options).unwrap();
        let check = |store: &RedbStore| {
            assert_table_matches_index(&store.database().unwrap(), &store.open_index().unwrap());
        };
        // Mailboxes 0..8 get messages at T0 and T0 + ttl / 2, 8 only late.
        for n in 0..8 {
            store
                .send(id(n), vec![1; 10 + usize::from(n)], T0)
                .await
                .unwrap();
        }
        for n in 0..9 {
            let half = T0 + ttl / 2;
            store.send(id(n), vec![2; 100], half).await.unwrap();
            store.send(id(n), vec![3; 7], half).await.unwrap();
        }
        // Mailbox 9 is made at T0 and sent to just before it goes idle.
        store.send(id(9), vec![4; 50], T0).await.unwrap();
        store
            .send(id(9), vec![5; 60], T0 + idle - 10)
            .await
            .unwrap();
        check(&store);
        assert_eq!(
            store.delete(id(1), false, T0 + 1).await.unwrap(),
            Deleted::Removed
        );
        check(&store);
        let report = store.sweep(T0 + ttl).await.unwrap();
        assert_eq!(report.messages_removed, 7 + 1, "the first of 0, 2..8 and 9");
        check(&store);
        // Everything but the last of mailbox 9 has expired, and every
        // mailbox made at T0 but the ones checked now is idle.
        for n in [0, 2] {
            store
                .check(&[(id(n), At::ZERO)], T0 + idle - 5)
                .await
                .unwrap();
        }
        let report = store.sweep(T0 + idle).await.unwrap();
        assert_eq!(report.messages_removed, 2 * 8, "0 and 2..8 twice");
        assert_eq!(
            report.mailboxes_removed,
            5 + 1,
            "3..7, and 9 with its message"
        );
        check(&store);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.mailboxes, stats.messages, stats.bytes), (3, 0, 0));
        store.close().await.unwrap();
    }

    /// A sweep also expires what the sends of its own batch stored (their
    /// mailboxes are not in the index yet).
    #[test]
    fn a_sweep_expires_what_its_own_batch_sent() {
        const T0: u64 = 1_700_000_000_000_000;
        let (_dir, db, index) = fresh_database();
        let options = StoreOptions::default();
        let ttl = options.message_ttl_us;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let mut sends = Vec::new();
        for (n, now_us) in [(0, T0), (1, T0), (2, T0), (0, T0 + ttl)] {
            let (reply, answer) = oneshot::channel();
            let data = vec![n as u8; 10 + n];
            let op = Op::Send {
                mailbox: id(n as u16),
                data,
                now_us,
                reply,
            };
            assert!(queue.try_send(op).is_ok());
            sends.push(answer);
        }
        let (reply, mut swept) = oneshot::channel();
        let sweep = Op::Sweep {
            now_us: T0 + ttl,
            reply,
        };
        assert!(queue.try_send(sweep).is_ok());
        drop(queue);
        let commits = AtomicU64::new(0);
        run_writer(&db, &index, options, receiver, &commits);
        assert_eq!(commits.load(Ordering::Relaxed), 1);
        for mut answer in sends {
            answer.try_recv().unwrap().unwrap();
        }
        assert_eq!(swept.try_recv().unwrap().unwrap().messages_removed, 3);
        let index = index.into_inner().unwrap();
        assert_eq!((index.messages, index.bytes), (1, 10));
        assert_eq!(index.mailboxes.len(), 3);
        assert_table_matches_index(&db, &index);
    }

    /// A message the index lists but a later commit removed is skipped,
    /// and `receive` looks further for the limit.
    #[tokio::test]
    async fn receive_skips_what_the_snapshot_lacks() {
        const T0: u64 = 1_700_000_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let a = id(1);
        let mut ats = Vec::new();
        for n in 0..6u8 {
            ats.push(store.send(a, vec![n; 20], T0).await.unwrap());
            store.send(id(2), vec![n; 30], T0).await.unwrap();
        }
        // Remove messages 0, 1 and 3 behind the index's back, as a commit
        // after the index was read would.
        let db = store.database().unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(MESSAGES).unwrap();
            for n in [0, 1, 3] {
                assert!(table.remove(&message_key(&a, ats[n])).unwrap().is_some());
            }
        }
        txn.commit().unwrap();
        let received = |after: At, limit: u32| {
            let store = &store;
            async move {
                let got = store.receive(a, after, limit, T0).await.unwrap();
                got.into_iter()
                    .map(|m| (m.at, m.data[0]))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(received(At::ZERO, 1).await, [(ats[2], 2)]);
        assert_eq!(received(At::ZERO, 2).await, [(ats[2], 2), (ats[4], 4)]);
        assert_eq!(
            received(At::ZERO, 10).await,
            [(ats[2], 2), (ats[4], 4), (ats[5], 5)]
        );
        assert_eq!(received(ats[2], 1).await, [(ats[4], 4)]);
        assert_eq!(received(ats[4], 5).await, [(ats[5], 5)]);
        assert_eq!(received(ats[5], 5).await, []);
        let other = store.receive(id(2), At::ZERO, 10, T0).await.unwrap();
        assert_eq!(other.len(), 6);
        store.close().await.unwrap();
    }

    /// A file written by schema 1 (messages keyed `mailbox || at`) is
    /// migrated when opened: every message is still there, received in
    /// order, and the old table is gone.
    #[tokio::test]
    async fn a_schema_1_file_is_migrated() {
        const T0: u64 = 1_700_000_000_000_000;
        const OLD_MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
        const OLD_MAILBOXES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("mailboxes");
        const OLD_META: TableDefinition<&str, u64> = TableDefinition::new("meta");
        let dir = tempfile::tempdir().unwrap();
        // 7 mailboxes, `at`s that interleave and repeat across mailboxes.
        let sent: Vec<(MailboxId, At, Vec<u8>)> = (0..300u32)
            .map(|n| {
                let data = n.to_be_bytes().repeat(1 + n as usize % 5);
                (id((n % 7) as u16), At(T0 + u64::from(n / 3)), data)
            })
            .collect();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(OLD_META).unwrap();
                meta.insert("schema", 1).unwrap();
                meta.insert("floor", T0 - 1).unwrap();
                let mut mailboxes = txn.open_table(OLD_MAILBOXES).unwrap();
                let mut messages = txn.open_table(OLD_MESSAGES).unwrap();
                for (id, at, data) in &sent {
                    let mut key = id.0.to_vec();
                    key.extend_from_slice(&at.0.to_be_bytes());
                    messages.insert(key.as_slice(), data.as_slice()).unwrap();
                    mailboxes.insert(id.0.as_slice(), (at.0, T0)).unwrap();
                }
                // A mailbox without messages.
                mailboxes.insert(id(99).0.as_slice(), (T0 - 5, T0)).unwrap();
            }
            txn.commit().unwrap();
        }
        let options = StoreOptions {
            max_pending_per_mailbox: 1_000,
            ..StoreOptions::default()
        };
        for _ in 0..2 {
            // Opened twice: the second time there is nothing to migrate.
            let store = RedbStore::open(dir.path(), options).unwrap();
            let stats = store.stats().await.unwrap();
            let bytes: usize = sent.iter().map(|(_, _, data)| data.len()).sum();
            assert_eq!(
                (stats.mailboxes, stats.messages, stats.bytes),
                (8, 300, bytes as u64)
            );
            for n in 0..7 {
                let expected: Vec<(At, Vec<u8>)> = sent
                    .iter()
                    .filter(|(mailbox, _, _)| *mailbox == id(n))
                    .map(|(_, at, data)| (*at, data.clone()))
                    .collect();
                let mut got = Vec::new();
                let mut after = At::ZERO;
                loop {
                    let page = store.receive(id(n), after, 6, T0).await.unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.at;
                    got.extend(page.into_iter().map(|m| (m.at, m.data)));
                }
                assert_eq!(got, expected, "mailbox {n}");
            }
            assert_table_matches_index(&store.database().unwrap(), &store.open_index().unwrap());
            assert_eq!(store.open_index().unwrap().floor, At(T0 - 1));
            store.close().await.unwrap();
        }
        let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|table| table.name().to_owned())
            .collect();
        assert!(!tables.iter().any(|name| name == "messages"), "{tables:?}");
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("schema").unwrap().unwrap().value(), SCHEMA);
        assert!(txn.open_table(MESSAGES).unwrap().len().unwrap() == 300);
    }

    /// A schema this relay does not know is refused, not overwritten.
    #[test]
    fn an_unknown_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema", 3).unwrap();
        txn.commit().unwrap();
        assert!(matches!(init_schema(&db), Err(StoreError::Corrupt(_))));
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("schema").unwrap().unwrap().value(), 3);
    }

    /// Runs the writer over `ops` queued before it starts: one batch.
    fn run_batch(db: &Database, index: &Mutex<Index>, options: StoreOptions, ops: Vec<Op>) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        for op in ops {
            assert!(queue.try_send(op).is_ok());
        }
        drop(queue);
        let commits = AtomicU64::new(0);
        run_writer(db, index, options, receiver, &commits);
        assert_eq!(commits.load(Ordering::Relaxed), 1);
    }

    fn send_op(n: u16, now_us: u64) -> (Op, oneshot::Receiver<Result<At, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let op = Op::Send {
            mailbox: id(n),
            data: vec![n as u8; 10],
            now_us,
            reply,
        };
        (op, answer)
    }

    /// A batch that expires, deletes and sends on top of messages committed
    /// before it leaves exactly the right queues (the batch keeps only what
    /// it changed, and merges it into the index after the commit).
    #[test]
    fn a_batch_changes_committed_queues() {
        const T0: u64 = 1_700_000_000_000_000;
        let (_dir, db, index) = fresh_database();
        let options = StoreOptions {
            max_pending_per_mailbox: 3,
            ..StoreOptions::default()
        };
        let ttl = options.message_ttl_us;
        let first: Vec<_> = [1, 1, 1, 2, 2].map(|n| send_op(n, T0)).into();
        let (ops, answers): (Vec<Op>, Vec<_>) = first.into_iter().unzip();
        run_batch(&db, &index, options, ops);
        for mut answer in answers {
            answer.try_recv().unwrap().unwrap();
        }
        let pending = |index: &Mutex<Index>, n: u16| -> Vec<At> {
            lock(index)
                .mailboxes
                .get(&id(n))
                .map(|m| m.pending().map(|(at, _)| *at).collect())
                .unwrap_or_default()
        };
        assert_eq!(pending(&index, 1), [At(T0), At(T0 + 1), At(T0 + 2)]);
        assert_eq!(pending(&index, 2), [At(T0), At(T0 + 1)]);

        let now = T0 + 1 + ttl;
        let (reply, mut swept) = oneshot::channel();
        let mut ops = vec![Op::Sweep { now_us: now, reply }];
        let mut sends = Vec::new();
        for _ in 0..3 {
            let (op, answer) = send_op(1, now);
            ops.push(op);
            sends.push(answer);
        }
        let mut deletes = Vec::new();
        for n in [2, 3] {
            let (reply, answer) = oneshot::channel();
            ops.push(Op::Delete {
                mailbox: id(n),
                only_if_empty: true,
                now_us: now,
                reply,
            });
            deletes.push(answer);
        }
        let (op, mut remade) = send_op(2, now);
        ops.push(op);
        run_batch(&db, &index, options, ops);

        assert_eq!(swept.try_recv().unwrap().unwrap().messages_removed, 4);
        let sent: Vec<_> = sends
            .into_iter()
            .map(|mut a| a.try_recv().unwrap())
            .collect();
        assert_eq!(sent[0].as_ref().unwrap(), &At(now));
        assert_eq!(sent[1].as_ref().unwrap(), &At(now + 1));
        assert!(matches!(sent[2], Err(StoreError::MailboxFull)), "3 live");
        let deleted: Vec<_> = deletes
            .into_iter()
            .map(|mut a| a.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(deleted, [Deleted::Removed, Deleted::Absent]);
        assert_eq!(remade.try_recv().unwrap().unwrap(), At(now));
        assert_eq!(pending(&index, 1), [At(T0 + 2), At(now), At(now + 1)]);
        assert_eq!(pending(&index, 2), [At(now)]);
        let index = index.into_inner().unwrap();
        assert_eq!(index.floor, At(T0 + 1));
        assert_eq!(index.mailboxes.len(), 2);
        assert_table_matches_index(&db, &index);
    }
}
