//! The embedded store: redb in a data directory, with an in-memory index.
//!
//! Layout (file `relay.redb` in the data directory):
//!
//! - `messages`: key `mailbox (49 bytes) || at (8 bytes, big-endian)` ->
//!   sealed bytes, so one mailbox's messages are one key range in `at` order;
//! - `mailboxes`: key `mailbox` -> `(newest at, last check µs)`;
//! - `meta`: `schema` -> 1, and `floor` -> the newest `at` of any removed
//!   mailbox: a mailbox made anew after a delete starts above it, so `at`
//!   never goes back even if the clock does (`spec/protocol.md` §12).
//!
//! **Writes** (send, delete, sweep, flush) go through one writer thread fed
//! by a bounded channel. The thread takes everything that is waiting (up to
//! [`StoreOptions::max_commit_batch`] operations, default 512; 1 turns group
//! commit off), applies it in one write transaction and commits
//! once with `Durability::Immediate` (fsync): concurrent sends share one
//! commit (group commit), and each is answered only after that commit
//! returned. A full channel makes senders wait; nothing queues without bound.
//!
//! **Reads** never wait for the writer. The index in memory knows, per
//! mailbox, the `at` and size of every message, the newest `at`, the last
//! check time and the live question, so `check` (and a `receive` that would
//! find nothing) is a hash lookup. `receive` of real messages reads a redb
//! snapshot on the blocking pool. The index is updated only after a commit,
//! so it never announces a message that is not durable.
//!
//! Last-check times live in memory and are written when they are
//! [`StoreOptions::check_persist_us`] newer than the stored value (by the
//! sweep), at every send (which writes the mailbox record anyway) and at
//! [`Store::close`]. Questions are not persisted: after a restart a client
//! gets "No question" and checks again.
//!
//! Opening rebuilds the index by scanning both tables (keys and value
//! lengths only). This module does not do rate limiting, cryptography or
//! time keeping.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use connectoid_protocol::At;
use connectoid_protocol::api::Message;
use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{
    Deleted, MailboxId, Question, Store, StoreError, StoreOptions, StoreStats, SweepReport,
};

const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
const MAILBOXES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("mailboxes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA: u64 = 1;

/// The database file's name inside the data directory.
pub(crate) const FILE_NAME: &str = "relay.redb";
/// Operations that may wait for the writer before senders wait too.
const QUEUE: usize = 1024;

const KEY_LEN: usize = PUBLIC_KEY_LEN + 8;

fn message_key(mailbox: &MailboxId, at: At) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..PUBLIC_KEY_LEN].copy_from_slice(&mailbox.0);
    key[PUBLIC_KEY_LEN..].copy_from_slice(&at.0.to_be_bytes());
    key
}

fn split_key(key: &[u8]) -> Result<(MailboxId, At), StoreError> {
    let (mailbox, at) = key
        .split_at_checked(PUBLIC_KEY_LEN)
        .ok_or_else(|| StoreError::Corrupt(format!("message key of {} bytes", key.len())))?;
    let at: [u8; 8] = at
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("message key of {} bytes", key.len())))?;
    let mailbox: [u8; PUBLIC_KEY_LEN] = mailbox
        .try_into()
        .map_err(|_| StoreError::Corrupt("mailbox key length".into()))?;
    Ok((MailboxId(mailbox), At(u64::from_be_bytes(at))))
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

/// One mailbox in memory.
#[derive(Debug, Clone)]
struct Mailbox {
    /// The newest `at` ever assigned (0: none).
    last_at: At,
    /// `(at, size)` of every stored message, oldest first.
    pending: VecDeque<(At, u32)>,
    /// The last check (or creation), µs.
    last_check_us: u64,
    /// The last check time written to disk, µs.
    persisted_check_us: u64,
}

impl Mailbox {
    fn new(now_us: u64) -> Self {
        Self {
            last_at: At::ZERO,
            pending: VecDeque::new(),
            last_check_us: now_us,
            persisted_check_us: now_us,
        }
    }

    /// How many messages at the front have expired at `now_us`.
    fn expired(&self, now_us: u64, ttl_us: u64) -> usize {
        self.pending
            .partition_point(|(at, _)| at.0.saturating_add(ttl_us) <= now_us)
    }

    fn live(&self, now_us: u64, ttl_us: u64) -> usize {
        self.pending.len() - self.expired(now_us, ttl_us)
    }

    /// Messages expire in `at` order, so the newest decides.
    fn has_after(&self, after: At, now_us: u64, ttl_us: u64) -> bool {
        self.pending
            .back()
            .is_some_and(|(at, _)| *at > after && at.0.saturating_add(ttl_us) > now_us)
    }
}

#[derive(Debug, Default)]
struct Index {
    mailboxes: HashMap<MailboxId, Mailbox>,
    questions: HashMap<MailboxId, Question>,
    messages: u64,
    bytes: u64,
    /// The newest `at` of any removed mailbox.
    floor: At,
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
        let db = Database::create(&path).map_err(|e| match e {
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

fn init_schema(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let found = meta.get("schema").map_err(unavailable)?.map(|v| v.value());
        match found {
            None => {
                meta.insert("schema", SCHEMA).map_err(unavailable)?;
            }
            Some(SCHEMA) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {other}, this relay reads {SCHEMA}"
                )));
            }
        }
        txn.open_table(MESSAGES).map_err(unavailable)?;
        txn.open_table(MAILBOXES).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)
}

fn load_index(db: &Database) -> Result<Index, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let mut index = Index::default();
    let mailboxes = txn.open_table(MAILBOXES).map_err(unavailable)?;
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
    let messages = txn.open_table(MESSAGES).map_err(unavailable)?;
    for entry in messages.iter().map_err(unavailable)? {
        let (key, value) = entry.map_err(unavailable)?;
        let (id, at) = split_key(key.value())?;
        let size = u32::try_from(value.value().len()).unwrap_or(u32::MAX);
        // A message without a mailbox record cannot be written by this
        // version; keep it anyway, its mailbox then counts as created now.
        let mailbox = index.mailboxes.entry(id).or_insert_with(|| Mailbox::new(0));
        mailbox.pending.push_back((at, size));
        mailbox.last_at = mailbox.last_at.max(at);
        index.messages += 1;
        index.bytes += u64::from(size);
    }
    Ok(index)
}

/// Changes of one batch, applied to the index only after the commit.
struct Batch<'a> {
    index: &'a Mutex<Index>,
    options: StoreOptions,
    /// Mailboxes this batch touched: their new state (`None`: removed).
    touched: HashMap<MailboxId, Option<Mailbox>>,
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

    fn mailbox(&mut self, id: MailboxId) -> &mut Option<Mailbox> {
        let index = self.index;
        self.touched
            .entry(id)
            .or_insert_with(|| lock(index).mailboxes.get(&id).cloned())
    }

    fn send(
        &mut self,
        txn: &redb::WriteTransaction,
        id: MailboxId,
        data: &[u8],
        now_us: u64,
    ) -> Result<Result<At, StoreError>, redb::Error> {
        let options = self.options;
        let size = data.len() as u64;
        let (mailboxes, bytes, floor) = (self.mailboxes, self.bytes, self.floor);
        let slot = self.mailbox(id);
        if slot.is_none() && mailboxes >= options.max_mailboxes {
            return Ok(Err(StoreError::RelayFull("too many mailboxes")));
        }
        if bytes.saturating_add(size) > options.max_stored_bytes {
            return Ok(Err(StoreError::RelayFull("storage limit reached")));
        }
        let created = slot.is_none();
        let mailbox = slot.get_or_insert_with(|| Mailbox::new(now_us));
        if mailbox.live(now_us, options.message_ttl_us) >= options.max_pending_per_mailbox as usize
        {
            return Ok(Err(StoreError::MailboxFull));
        }
        let newest = mailbox.last_at.max(floor);
        let last = (newest != At::ZERO).then_some(newest);
        let at = At::next(now_us, last);
        txn.open_table(MESSAGES)?
            .insert(message_key(&id, at).as_slice(), data)?;
        txn.open_table(MAILBOXES)?
            .insert(id.0.as_slice(), (at.0, mailbox.last_check_us))?;
        mailbox.last_at = at;
        mailbox
            .pending
            .push_back((at, u32::try_from(size).unwrap_or(u32::MAX)));
        mailbox.persisted_check_us = mailbox.last_check_us;
        self.messages += 1;
        self.bytes += size;
        if created {
            self.mailboxes += 1;
        }
        Ok(Ok(at))
    }

    fn remove_mailbox(
        &mut self,
        txn: &redb::WriteTransaction,
        id: MailboxId,
    ) -> Result<bool, redb::Error> {
        let Some(mailbox) = self.mailbox(id).take() else {
            return Ok(false);
        };
        let (start, end) = (message_key(&id, At::ZERO), message_key(&id, At(u64::MAX)));
        txn.open_table(MESSAGES)?
            .retain_in::<&[u8], _>(start.as_slice()..=end.as_slice(), |_, _| false)?;
        txn.open_table(MAILBOXES)?.remove(id.0.as_slice())?;
        if mailbox.last_at > self.floor {
            self.floor = mailbox.last_at;
            txn.open_table(META)?.insert("floor", self.floor.0)?;
        }
        self.messages -= mailbox.pending.len() as u64;
        self.bytes -= mailbox
            .pending
            .iter()
            .map(|(_, s)| u64::from(*s))
            .sum::<u64>();
        self.mailboxes -= 1;
        Ok(true)
    }

    fn delete(
        &mut self,
        txn: &redb::WriteTransaction,
        id: MailboxId,
        only_if_empty: bool,
        now_us: u64,
    ) -> Result<Deleted, redb::Error> {
        let ttl = self.options.message_ttl_us;
        match self.mailbox(id) {
            None => Ok(Deleted::Absent),
            Some(mailbox) if only_if_empty && mailbox.live(now_us, ttl) > 0 => {
                Ok(Deleted::NotEmpty)
            }
            Some(_) => {
                self.remove_mailbox(txn, id)?;
                Ok(Deleted::Removed)
            }
        }
    }

    fn persist_check(
        &mut self,
        txn: &redb::WriteTransaction,
        id: MailboxId,
    ) -> Result<bool, redb::Error> {
        let Some(mailbox) = self.mailbox(id).as_mut() else {
            return Ok(false);
        };
        txn.open_table(MAILBOXES)?
            .insert(id.0.as_slice(), (mailbox.last_at.0, mailbox.last_check_us))?;
        mailbox.persisted_check_us = mailbox.last_check_us;
        Ok(true)
    }

    fn sweep(
        &mut self,
        txn: &redb::WriteTransaction,
        now_us: u64,
    ) -> Result<SweepReport, redb::Error> {
        let options = self.options;
        let mut report = SweepReport::default();
        let (idle, expiring, checks_due) = {
            let mut index = lock(self.index);
            let before = index.questions.len();
            index.questions.retain(|_, q| q.expires_us > now_us);
            report.questions_removed = (before - index.questions.len()) as u64;
            let mut idle = Vec::new();
            let mut expiring = Vec::new();
            let mut checks_due = Vec::new();
            for (id, mailbox) in &index.mailboxes {
                if mailbox
                    .last_check_us
                    .saturating_add(options.mailbox_idle_us)
                    <= now_us
                {
                    idle.push(*id);
                    continue;
                }
                if mailbox.expired(now_us, options.message_ttl_us) > 0 {
                    expiring.push(*id);
                }
                if mailbox.last_check_us
                    >= mailbox
                        .persisted_check_us
                        .saturating_add(options.check_persist_us)
                    && mailbox.last_check_us > mailbox.persisted_check_us
                {
                    checks_due.push(*id);
                }
            }
            (idle, expiring, checks_due)
        };
        for id in idle {
            if self.remove_mailbox(txn, id)? {
                report.mailboxes_removed += 1;
            }
        }
        for id in expiring {
            let Some(mailbox) = self.mailbox(id).as_mut() else {
                continue;
            };
            let expired = mailbox.expired(now_us, options.message_ttl_us);
            let Some(&(newest_expired, _)) =
                expired.checked_sub(1).and_then(|i| mailbox.pending.get(i))
            else {
                continue;
            };
            let removed: Vec<(At, u32)> = mailbox.pending.drain(..expired).collect();
            let (start, end) = (message_key(&id, At::ZERO), message_key(&id, newest_expired));
            txn.open_table(MESSAGES)?
                .retain_in::<&[u8], _>(start.as_slice()..=end.as_slice(), |_, _| false)?;
            self.messages -= removed.len() as u64;
            self.bytes -= removed.iter().map(|(_, s)| u64::from(*s)).sum::<u64>();
            report.messages_removed += removed.len() as u64;
        }
        for id in checks_due {
            if self.persist_check(txn, id)? {
                report.checks_persisted += 1;
            }
        }
        Ok(report)
    }

    fn flush(&mut self, txn: &redb::WriteTransaction) -> Result<u64, redb::Error> {
        let due: Vec<MailboxId> = lock(self.index)
            .mailboxes
            .iter()
            .filter(|(_, m)| m.last_check_us != m.persisted_check_us)
            .map(|(id, _)| *id)
            .collect();
        let mut written = 0;
        for id in due {
            if self.persist_check(txn, id)? {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Publishes the committed changes.
    fn apply(self) {
        let mut index = lock(self.index);
        for (id, state) in self.touched {
            match state {
                None => {
                    index.mailboxes.remove(&id);
                    index.questions.remove(&id);
                }
                Some(mut mailbox) => {
                    if let Some(current) = index.mailboxes.get(&id) {
                        // Checks may have come in while the batch committed.
                        mailbox.last_check_us = mailbox.last_check_us.max(current.last_check_us);
                    }
                    index.mailboxes.insert(id, mailbox);
                }
            }
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
        for op in ops {
            match op {
                Op::Send {
                    mailbox,
                    data,
                    now_us,
                    reply,
                } => {
                    let result = batch.send(&txn, mailbox, &data, now_us)?;
                    replies.push(Reply::Send(reply, result));
                }
                Op::Delete {
                    mailbox,
                    only_if_empty,
                    now_us,
                    reply,
                } => {
                    let result = batch.delete(&txn, mailbox, only_if_empty, now_us)?;
                    replies.push(Reply::Delete(reply, result));
                }
                Op::Sweep { now_us, reply } => {
                    let report = batch.sweep(&txn, now_us)?;
                    replies.push(Reply::Sweep(reply, report));
                }
                Op::Flush { reply } => {
                    let written = batch.flush(&txn)?;
                    replies.push(Reply::Flush(reply, written));
                }
            }
        }
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

fn read_messages(
    db: &Database,
    id: MailboxId,
    after: At,
    limit: u32,
    now_us: u64,
    ttl_us: u64,
) -> Result<Vec<Message>, StoreError> {
    let Some(first) = after.0.checked_add(1) else {
        return Ok(Vec::new());
    };
    let txn = db.begin_read().map_err(unavailable)?;
    let table = txn.open_table(MESSAGES).map_err(unavailable)?;
    let (start, end) = (message_key(&id, At(first)), message_key(&id, At(u64::MAX)));
    let mut out = Vec::new();
    for entry in table
        .range::<&[u8]>(start.as_slice()..=end.as_slice())
        .map_err(unavailable)?
    {
        let (key, value) = entry.map_err(unavailable)?;
        let (_, at) = split_key(key.value())?;
        if at.0.saturating_add(ttl_us) <= now_us {
            continue;
        }
        out.push(Message {
            at,
            data: value.value().to_vec(),
        });
        if out.len() >= limit as usize {
            break;
        }
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
                    mailbox.last_check_us = mailbox.last_check_us.max(now_us);
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
        let any = self
            .open_index()?
            .mailboxes
            .get(&mailbox)
            .is_some_and(|m| m.has_after(after, now_us, ttl));
        if !any || limit == 0 {
            return Ok(Vec::new());
        }
        let db = self.database()?;
        tokio::task::spawn_blocking(move || read_messages(&db, mailbox, after, limit, now_us, ttl))
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
    use super::*;

    #[test]
    fn keys_order_by_mailbox_then_at() {
        let a = MailboxId([1; PUBLIC_KEY_LEN]);
        let b = MailboxId([2; PUBLIC_KEY_LEN]);
        assert!(message_key(&a, At(u64::MAX)) < message_key(&b, At(0)));
        assert!(message_key(&a, At(255)) < message_key(&a, At(256)));
        assert_eq!(split_key(&message_key(&b, At(77))).unwrap(), (b, At(77)));
        assert!(split_key(&[0; 3]).is_err());
    }

    #[test]
    fn expiry_follows_at_order() {
        let mut mailbox = Mailbox::new(0);
        mailbox
            .pending
            .extend([(At(10), 1), (At(20), 1), (At(30), 1)]);
        assert_eq!(mailbox.expired(25, 5), 2);
        assert_eq!(mailbox.live(25, 5), 1);
        assert!(mailbox.has_after(At(29), 34, 5));
        assert!(!mailbox.has_after(At(29), 35, 5));
        assert!(!mailbox.has_after(At(30), 0, 5));
    }

    /// Queues `count` sends to one mailbox before the writer runs, runs it
    /// with `options` until the queue is drained, and returns how many
    /// commits it made, each send's answer, and the index.
    fn run_queued_sends(
        count: u8,
        options: StoreOptions,
    ) -> (u64, Vec<Result<At, StoreError>>, Index) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        init_schema(&db).unwrap();
        let index = Mutex::new(load_index(&db).unwrap());
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
}
