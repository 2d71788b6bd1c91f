//! The writer thread: takes the queued operations, applies them in one
//! write transaction (group commit), and publishes them to the index only
//! after the commit.
//!
//! A failed commit (an I/O error such as a full disk) answers every
//! operation of its batch "unavailable" and marks the store failing: redb
//! then refuses every operation until the database is reopened, so the
//! writer reopens it before the next batch (at most every
//! [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], doubling), and the first commit
//! that succeeds clears the failure. Nothing acknowledged is lost: an
//! answer is sent only after its commit returned.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use connectoid_protocol::At;
use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::index::{Expired, Index, Mailbox, expired_until};
use super::lock;
use super::schema::{KEY_LEN, MAILBOXES, MESSAGES, META, PUSH, message_key};
use crate::store::{Deleted, MailboxId, StoreError, StoreOptions, SweepReport};

pub(super) enum Op {
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

pub(super) struct Writer {
    pub(super) queue: mpsc::Sender<Op>,
    pub(super) thread: JoinHandle<()>,
}

/// The tables a batch writes, opened once per transaction (opening one
/// per operation cost a table-tree lookup and write-back each time).
pub(super) struct Tables<'txn> {
    pub(super) messages: redb::Table<'txn, &'static [u8; KEY_LEN], &'static [u8]>,
    pub(super) mailboxes: redb::Table<'txn, &'static [u8], (u64, u64)>,
    pub(super) meta: redb::Table<'txn, &'static str, u64>,
    pub(super) push: redb::Table<'txn, &'static [u8], &'static str>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            mailboxes: txn.open_table(MAILBOXES)?,
            meta: txn.open_table(META)?,
            push: txn.open_table(PUSH)?,
        })
    }
}

/// What a batch did to one mailbox. The messages committed before the batch
/// stay in the index (copying them would cost O(pending) per mailbox and
/// batch, and readers keep seeing them until the commit): the change counts
/// how many of the oldest it removed, and holds the ones it added.
pub(super) struct Change {
    /// The mailbox as the batch leaves it (`None`: removed, or never made),
    /// except that its queue holds only the messages the batch added.
    pub(super) mailbox: Option<Mailbox>,
    /// How many messages the index's queue holds (only the writer changes
    /// queues, so this stays true until the batch is applied).
    pub(super) committed: usize,
    /// How many of those, oldest first, the batch removed.
    pub(super) dropped: usize,
}

impl Change {
    pub(super) fn new(committed: Option<&Mailbox>) -> Self {
        Self {
            mailbox: committed.map(Mailbox::record),
            committed: committed.map_or(0, Mailbox::pending_len),
            dropped: 0,
        }
    }

    /// How many messages the mailbox keeps, expired or not.
    pub(super) fn pending_len(&self) -> usize {
        self.committed - self.dropped + self.mailbox.as_ref().map_or(0, Mailbox::pending_len)
    }

    /// Runs `f` on the index's mailbox `id` (under the index lock) if the
    /// batch kept any of its committed messages.
    pub(super) fn with_kept<R>(
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
    pub(super) fn live(
        &self,
        index: &Mutex<Index>,
        id: &MailboxId,
        now_us: u64,
        ttl_us: u64,
    ) -> usize {
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
    pub(super) fn remove_expired(
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
    pub(super) fn remove(
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
    pub(super) fn merge(self, current: Option<&mut Mailbox>) -> Option<Mailbox> {
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
pub(super) struct Batch<'a> {
    pub(super) index: &'a Mutex<Index>,
    pub(super) options: StoreOptions,
    /// Mailboxes this batch touched, and what it did to them.
    pub(super) touched: HashMap<MailboxId, Change>,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) mailboxes: u64,
    pub(super) floor: At,
}

impl<'a> Batch<'a> {
    pub(super) fn new(index: &'a Mutex<Index>, options: StoreOptions) -> Self {
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

    pub(super) fn change(&mut self, id: MailboxId) -> &mut Change {
        let index = self.index;
        self.touched
            .entry(id)
            .or_insert_with(|| Change::new(lock(index).mailboxes.get(&id)))
    }

    pub(super) fn send(
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

    pub(super) fn remove_mailbox(
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
        // A push registration goes with its mailbox.
        tables.push.remove(id.0.as_slice())?;
        if mailbox.last_at > self.floor {
            self.floor = mailbox.last_at;
            tables.meta.insert("floor", self.floor.0)?;
        }
        self.messages -= messages.len() as u64;
        self.bytes -= messages.iter().map(|(_, s)| u64::from(*s)).sum::<u64>();
        self.mailboxes -= 1;
        Ok(true)
    }

    pub(super) fn delete(
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

    pub(super) fn persist_check(
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

    pub(super) fn sweep(
        &mut self,
        tables: &mut Tables<'_>,
        now_us: u64,
    ) -> Result<SweepReport, redb::Error> {
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

    pub(super) fn flush(&mut self, tables: &mut Tables<'_>) -> Result<u64, redb::Error> {
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
    pub(super) fn apply(self) {
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

/// What an operation did, to answer it with once its batch committed.
pub(super) enum Done {
    Send(Result<At, StoreError>),
    Delete(Deleted),
    Sweep(SweepReport),
    Flush(u64),
}

impl Op {
    /// Applies the operation to the batch's tables.
    fn apply(&self, batch: &mut Batch<'_>, tables: &mut Tables<'_>) -> Result<Done, redb::Error> {
        Ok(match self {
            Self::Send {
                mailbox,
                data,
                now_us,
                ..
            } => Done::Send(batch.send(tables, *mailbox, data, *now_us)?),
            Self::Delete {
                mailbox,
                only_if_empty,
                now_us,
                ..
            } => Done::Delete(batch.delete(tables, *mailbox, *only_if_empty, *now_us)?),
            Self::Sweep { now_us, .. } => Done::Sweep(batch.sweep(tables, *now_us)?),
            Self::Flush { .. } => Done::Flush(batch.flush(tables)?),
        })
    }

    /// Answers with what the committed operation did (`done` is what
    /// [`Op::apply`] returned for it).
    fn answer(self, done: Done) {
        // A dropped receiver means the request was cancelled; nothing to do.
        match (self, done) {
            (Self::Send { reply, .. }, Done::Send(result)) => drop(reply.send(result)),
            (Self::Delete { reply, .. }, Done::Delete(result)) => drop(reply.send(Ok(result))),
            (Self::Sweep { reply, .. }, Done::Sweep(result)) => drop(reply.send(Ok(result))),
            (Self::Flush { reply, .. }, Done::Flush(result)) => drop(reply.send(Ok(result))),
            (op, _) => op.fail("internal error: an operation's result does not match it"),
        }
    }

    /// Answers that nothing of the operation was stored, and why.
    pub(super) fn fail(self, why: &str) {
        fn fail<T>(reply: oneshot::Sender<Result<T, StoreError>>, why: &str) {
            drop(reply.send(Err(StoreError::Unavailable(why.to_owned()))));
        }
        match self {
            Self::Send { reply, .. } => fail(reply, why),
            Self::Delete { reply, .. } => fail(reply, why),
            Self::Sweep { reply, .. } => fail(reply, why),
            Self::Flush { reply } => fail(reply, why),
        }
    }
}

/// First wait before reopening the database after a failed commit; it
/// doubles with every failed attempt up to [`MAX_BACKOFF`] (a reopen may
/// read the whole file to recover it).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a reopen waits for reads that still hold the old database.
const READS_DRAIN: Duration = Duration::from_secs(2);

/// The database the writer and readers share, and whether writes fail.
pub(super) struct Handle {
    pub(super) path: PathBuf,
    /// `None` once closed, or when a reopen failed.
    pub(super) db: RwLock<Option<Arc<Database>>>,
    /// Set by a failed commit, cleared by the next one that succeeds.
    pub(super) failure: Mutex<Option<WriteFailure>>,
    /// Write transactions committed since opening.
    pub(super) commits: AtomicU64,
}

/// Writes fail: the last error, and when to reopen the database.
pub(super) struct WriteFailure {
    /// The last error, as the log and the answers say it.
    pub(super) error: String,
    /// The database must be reopened before the next write (redb refuses
    /// every operation after an I/O error until then).
    reopen: bool,
    next_attempt: Instant,
    backoff: Duration,
}

impl Handle {
    pub(super) fn new(path: PathBuf, db: Database) -> Self {
        Self {
            path,
            db: RwLock::new(Some(Arc::new(db))),
            failure: Mutex::new(None),
            commits: AtomicU64::new(0),
        }
    }

    /// The database, if it is open.
    pub(super) fn database(&self) -> Option<Arc<Database>> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why writes fail now, if they do.
    pub(super) fn failing(&self) -> Option<String> {
        lock(&self.failure).as_ref().map(|f| f.error.clone())
    }

    /// The database to write to: reopened first if a commit failed and it
    /// is time to try again; otherwise why writing is pointless now.
    fn ready(&self, index: &Mutex<Index>) -> Result<Arc<Database>, String> {
        let due = {
            let mut failure = lock(&self.failure);
            match failure.as_mut() {
                Some(f) if f.reopen => {
                    let now = Instant::now();
                    if now < f.next_attempt {
                        return Err(f.error.clone());
                    }
                    f.next_attempt = now + f.backoff;
                    f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
                    true
                }
                _ => false,
            }
        };
        if due {
            let reopened = self.reopen(index);
            let mut failure = lock(&self.failure);
            if let Some(f) = failure.as_mut() {
                match reopened {
                    Ok(()) => f.reopen = false,
                    Err(error) => {
                        f.error = format!("reopening the database failed: {error}");
                        tracing::warn!(error = %f.error, "storage still unavailable");
                        return Err(f.error.clone());
                    }
                }
            }
        }
        self.database()
            .ok_or_else(|| "the database is not open".to_owned())
    }

    /// Closes the database and opens it again, then loads the index from
    /// what the file holds, keeping what only memory knew (check times,
    /// questions).
    fn reopen(&self, index: &Mutex<Index>) -> Result<(), StoreError> {
        let taken = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut db) = taken {
            // Reads hold the database for one lookup each: wait for them.
            let deadline = Instant::now() + READS_DRAIN;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => break drop(db),
                    Err(shared) if Instant::now() < deadline => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(shared) => {
                        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(shared);
                        return Err(StoreError::Unavailable(
                            "reads still hold the database".into(),
                        ));
                    }
                }
            }
        }
        let (db, mut fresh) = super::file::reopen(&self.path)?;
        {
            let mut index = lock(index);
            for (id, mailbox) in fresh.mailboxes.iter_mut() {
                if let Some(known) = index.mailboxes.get(id) {
                    mailbox.checked(known.last_check_us);
                }
            }
            let mut questions = std::mem::take(&mut index.questions);
            questions.retain(|id, _| fresh.mailboxes.contains_key(id));
            fresh.questions = questions;
            *index = fresh;
        }
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
        tracing::info!(path = %self.path.display(), "database reopened");
        Ok(())
    }

    /// Records a failed commit.
    fn failed(&self, error: &redb::Error) {
        let error = format!("commit failed: {error}");
        let mut failure = lock(&self.failure);
        match failure.as_mut() {
            Some(f) => {
                f.error = error;
                f.reopen = true;
            }
            None => {
                tracing::error!(
                    %error,
                    "storage writes fail: sends are refused (503) until a write succeeds again"
                );
                *failure = Some(WriteFailure {
                    error,
                    reopen: true,
                    next_attempt: Instant::now(),
                    backoff: FIRST_BACKOFF,
                });
            }
        }
    }

    /// Records a successful commit.
    fn succeeded(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = lock(&self.failure).take() {
            tracing::warn!(after = %failure.error, "storage writes succeed again");
        }
    }
}

pub(super) fn run_writer(
    handle: &Handle,
    index: &Mutex<Index>,
    options: StoreOptions,
    mut queue: mpsc::Receiver<Op>,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < options.max_commit_batch.max(1) {
            match queue.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        write(handle, index, options, ops);
    }
    // Every handle is gone without a close(): keep what is only in memory
    // (not counted in `commits`: nobody asked for it).
    let (reply, _) = oneshot::channel();
    if let Ok(db) = handle.ready(index) {
        let _ = commit(&db, index, options, vec![Op::Flush { reply }]);
    }
}

/// Commits `ops` (reopening the database first if a commit failed before)
/// and answers each of them.
fn write(handle: &Handle, index: &Mutex<Index>, options: StoreOptions, ops: Vec<Op>) {
    let db = match handle.ready(index) {
        Ok(db) => db,
        Err(why) => {
            for op in ops {
                op.fail(&why);
            }
            return;
        }
    };
    match commit(&db, index, options, ops) {
        Ok(()) => handle.succeeded(),
        Err(error) => handle.failed(&error),
    }
}

/// Applies `ops` in one write transaction and commits it, then updates the
/// index and answers each operation; if anything failed, nothing of the
/// batch is stored, the index is untouched, and every operation is
/// answered [`StoreError::Unavailable`].
pub(super) fn commit(
    db: &Database,
    index: &Mutex<Index>,
    options: StoreOptions,
    ops: Vec<Op>,
) -> Result<(), redb::Error> {
    let count = ops.len();
    let mut batch = Batch::new(index, options);
    let mut done = Vec::with_capacity(count);
    let outcome = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        let mut tables = Tables::open(&txn)?;
        for op in &ops {
            done.push(op.apply(&mut batch, &mut tables)?);
        }
        drop(tables);
        txn.commit()?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            batch.apply();
            tracing::trace!(operations = count, "store commit");
            for (op, done) in ops.into_iter().zip(done) {
                op.answer(done);
            }
            Ok(())
        }
        Err(error) => {
            // The transaction is dropped (aborted): nothing of the batch is
            // stored, and the index was not touched.
            tracing::error!(%error, operations = count, "store commit failed");
            let why = format!("commit failed: {error}");
            for op in ops {
                op.fail(&why);
            }
            Err(error)
        }
    }
}
