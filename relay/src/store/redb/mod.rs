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
//! 106 to 117 bytes: the mailboxes are an [`IndexMap`](indexmap::IndexMap), whose 96-byte
//! entries (the id, its hash and a 32-byte record: newest `at`, last check,
//! how far the stored check is behind, and a pointer to the message queue,
//! which idle mailboxes do not have) sit in one dense vector, found by id
//! through a table of 8-byte positions (9 bytes a bucket, 7/16 to 7/8 of
//! them in use). redb's page cache is held to [`CACHE_BYTES`] (redb's
//! default is 1 GiB).
//!
//! Opening rebuilds the index by scanning both tables (keys and value
//! lengths only); `messages_by_at` yields each mailbox's messages in `at`
//! order.
//!
//! **Faults.** Opening runs redb's integrity check first and refuses a
//! damaged file, naming it (`file`). A commit that fails (a full disk) is
//! answered [`StoreError::Unavailable`]; the writer then reopens the
//! database before the next batch, and the first commit that succeeds ends
//! the failure; meanwhile [`Store::health`] says so (`writer`).
//!
//! This module does not do rate limiting, cryptography or time keeping.

mod file;
mod index;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use connectoid_protocol::At;
use connectoid_protocol::api::Message;
use connectoid_protocol::push::PushSubscription;
use redb::{Database, ReadableDatabase as _, ReadableTable as _};
use tokio::sync::{mpsc, oneshot};

use self::index::Index;
use self::schema::{MAILBOXES, MESSAGES, PUSH, message_key};
use self::writer::{Handle, Op, Writer, run_writer};
use super::{
    Deleted, MailboxId, Question, Store, StoreError, StoreOptions, StoreStats, SweepReport,
    decode_push, encode_push,
};

/// The database file's name inside the data directory.
pub(crate) const FILE_NAME: &str = "relay.redb";
/// Operations that may wait for the writer before senders wait too.
const QUEUE: usize = 1024;
/// redb's page cache (reads and not yet written pages), bytes. redb's default
/// of 1 GiB would in time keep every page the relay touched, on top of the
/// index, which already answers checks; this holds the tables' upper levels
/// and a busy commit, and the operating system's cache holds the file.
const CACHE_BYTES: usize = 16 << 20;

fn unavailable(error: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Locks a mutex even if a thread panicked while holding it: every critical
/// section leaves the index consistent before anything that could panic, and
/// a relay that keeps serving is better than one that aborts on a bug.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The embedded redb store. See the module documentation.
pub struct RedbStore {
    path: PathBuf,
    options: StoreOptions,
    index: Arc<Mutex<Index>>,
    handle: Arc<Handle>,
    writer: Mutex<Option<Writer>>,
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
    /// needed, recovers after a crash, checks the file's integrity, loads
    /// the index and starts the writer thread. Blocking: call it from
    /// `spawn_blocking` in async code. The integrity check reads the whole
    /// file (`spec/relay.md` §9 gives its cost).
    ///
    /// Fails if another process (or another `RedbStore` in this one) has the
    /// database open, and with [`StoreError::Corrupt`], naming the file and
    /// what to do, if the file is damaged (also when redb panics reading it:
    /// the panic is caught). Logs a warning when it creates a new file.
    ///
    /// A directory it creates is private (0700) and so is a new database
    /// file (0600); an existing directory that group or others can read is
    /// left as the operator made it, with a warning.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        file::private_dir(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let (db, index) = file::open_checked(&path)?;
        let handle = Arc::new(Handle::new(path.clone(), db));
        let index = Arc::new(Mutex::new(index));
        let (queue, receiver) = mpsc::channel(QUEUE);
        let thread = {
            let handle = Arc::clone(&handle);
            let index = Arc::clone(&index);
            std::thread::Builder::new()
                .name("connectoid-store-writer".into())
                .spawn(move || run_writer(&handle, &index, options, receiver))
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?
        };
        Ok(Self {
            path,
            options,
            index,
            handle,
            writer: Mutex::new(Some(Writer { queue, thread })),
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
        self.handle.commits.load(Ordering::Relaxed)
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
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        self.handle.database().ok_or_else(|| {
            unavailable(
                self.handle
                    .failing()
                    .unwrap_or_else(|| "the database is not open".into()),
            )
        })
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

    async fn set_push(
        &self,
        mailbox: MailboxId,
        subscription: &PushSubscription,
        _now_us: u64,
    ) -> Result<bool, StoreError> {
        let db = self.database()?;
        let text = encode_push(subscription);
        // Outside the writer thread: redb serializes this transaction with
        // the writer's, and the mailbox record is read inside it, so a
        // registration is never kept for a mailbox a commit removed.
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(unavailable)?;
            let kept = {
                let mailboxes = txn.open_table(MAILBOXES).map_err(unavailable)?;
                if mailboxes
                    .get(mailbox.0.as_slice())
                    .map_err(unavailable)?
                    .is_none()
                {
                    false
                } else {
                    let mut push = txn.open_table(PUSH).map_err(unavailable)?;
                    push.insert(mailbox.0.as_slice(), text.as_str())
                        .map_err(unavailable)?;
                    true
                }
            };
            txn.commit().map_err(unavailable)?;
            Ok(kept)
        })
        .await
        .map_err(unavailable)?
    }

    async fn remove_push(
        &self,
        mailbox: MailboxId,
        only_endpoint: Option<&str>,
        _now_us: u64,
    ) -> Result<bool, StoreError> {
        let db = self.database()?;
        let only_endpoint = only_endpoint.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut push = txn.open_table(PUSH).map_err(unavailable)?;
                let stored = push
                    .get(mailbox.0.as_slice())
                    .map_err(unavailable)?
                    .map(|text| decode_push(text.value()))
                    .transpose()?;
                match stored {
                    Some(stored)
                        if only_endpoint
                            .as_deref()
                            .is_none_or(|endpoint| endpoint == stored.endpoint) =>
                    {
                        push.remove(mailbox.0.as_slice()).map_err(unavailable)?;
                        true
                    }
                    _ => false,
                }
            };
            txn.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
        .map_err(unavailable)?
    }

    async fn push(
        &self,
        mailbox: MailboxId,
        _now_us: u64,
    ) -> Result<Option<PushSubscription>, StoreError> {
        let db = self.database()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            let push = txn.open_table(PUSH).map_err(unavailable)?;
            push.get(mailbox.0.as_slice())
                .map_err(unavailable)?
                .map(|text| decode_push(text.value()))
                .transpose()
        })
        .await
        .map_err(unavailable)?
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
        self.handle
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        flushed
    }

    fn holds(&self, mailbox: &MailboxId) -> bool {
        self.open_index()
            .is_ok_and(|index| index.mailboxes.contains_key(mailbox))
    }

    async fn health(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let Some(error) = self.handle.failing() else {
            return Ok(());
        };
        // Writes failed: healthy again only once the file system takes new
        // data and a commit succeeds (the writer reopens the database first).
        let probe = self.path.with_extension("redb.probe");
        tokio::task::spawn_blocking(move || file::probe(&probe))
            .await
            .map_err(unavailable)?
            .map_err(|probe| unavailable(format!("{error}; {probe}")))?;
        self.submit(|reply| Op::Flush { reply }).await.map(drop)
    }
}
