//! The in-memory mailbox index: per mailbox the `at` and size of every
//! message, the newest `at`, the last check time; and the live questions.
//! It reads no disk.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::RandomState;

use connectoid_protocol::At;
use indexmap::IndexMap;

use crate::store::{MailboxId, Question};

/// The newest `at` that has expired at `now_us`: a message lives until
/// `at + ttl_us` (saturating), so these are a prefix of the `at` order.
pub(super) fn expired_until(now_us: u64, ttl_us: u64) -> Option<At> {
    if now_us == u64::MAX {
        return Some(At(u64::MAX));
    }
    now_us.checked_sub(ttl_us).map(At)
}

/// How much newer a mailbox's last check in memory is than the one on disk:
/// milliseconds, rounded up at every check that moves the time forward and
/// saturating at `u32::MAX` (49.7 days). Zero exactly when the disk has the
/// last check; otherwise at least the real difference and at most 1 ms per
/// check more. It replaces a second 8-byte time in every [`Mailbox`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CheckLag(pub(super) u32);

impl CheckLag {
    /// The disk has the last check.
    pub(super) const NONE: Self = Self(0);

    /// The lag after the last check moved forward by `us` microseconds.
    pub(super) fn add_us(self, us: u64) -> Self {
        let ms = u32::try_from(us.div_ceil(1_000)).unwrap_or(u32::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Whether the disk is behind at all (so a flush must write).
    pub(super) fn is_behind(self) -> bool {
        self != Self::NONE
    }

    /// Whether the disk is at least `persist_us` behind (so a sweep writes).
    /// A saturated lag is always due.
    pub(super) fn is_due(self, persist_us: u64) -> bool {
        self.is_behind() && (self.0 == u32::MAX || u64::from(self.0) * 1_000 >= persist_us)
    }
}

/// One mailbox in memory, without its id (the key it is found by). Its
/// fields are laid out flat (32 bytes on 64-bit targets) because there is one
/// per mailbox, and idle mailboxes, which are nearly all of them, have
/// nothing pending.
#[derive(Debug, Clone)]
pub(super) struct Mailbox {
    /// The newest `at` ever assigned (0: none).
    pub(super) last_at: At,
    /// The last check (or creation), µs.
    pub(super) last_check_us: u64,
    /// How far the last check time on disk is behind `last_check_us`.
    pub(super) check_lag: CheckLag,
    /// `(at, size)` of every stored message, oldest first; `None` when there
    /// is none.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes in every mailbox instead of a 32-byte VecDeque that idle ones leave empty"
    )]
    pub(super) pending: Option<Box<VecDeque<(At, u32)>>>,
}

/// What [`Mailbox::remove_expired`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expired {
    pub(super) count: u64,
    pub(super) bytes: u64,
}

impl Mailbox {
    /// A mailbox whose last check, `now_us`, is on disk.
    pub(super) fn new(now_us: u64) -> Self {
        Self {
            last_at: At::ZERO,
            last_check_us: now_us,
            check_lag: CheckLag::NONE,
            pending: None,
        }
    }

    /// `(at, size)` of every stored message, oldest first.
    pub(super) fn pending(&self) -> impl Iterator<Item = &(At, u32)> {
        self.pending.iter().flat_map(|pending| pending.iter())
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.as_ref().map_or(0, |pending| pending.len())
    }

    pub(super) fn push(&mut self, at: At, size: u32) {
        self.pending.get_or_insert_default().push_back((at, size));
    }

    /// The same mailbox without its messages.
    pub(super) fn record(&self) -> Self {
        Self {
            pending: None,
            ..*self
        }
    }

    /// Records a check at `now_us` (a clock that went back changes nothing).
    pub(super) fn checked(&mut self, now_us: u64) {
        if now_us > self.last_check_us {
            self.check_lag = self.check_lag.add_us(now_us - self.last_check_us);
            self.last_check_us = now_us;
        }
    }

    /// The last check time has been written to disk.
    pub(super) fn persisted(&mut self) {
        self.check_lag = CheckLag::NONE;
    }

    /// How many messages at the front have expired at `now_us`.
    pub(super) fn expired(&self, now_us: u64, ttl_us: u64) -> usize {
        match (&self.pending, expired_until(now_us, ttl_us)) {
            (Some(pending), Some(until)) => pending.partition_point(|(at, _)| *at <= until),
            _ => 0,
        }
    }

    /// The `at`s of at most `limit` unexpired messages after `after`,
    /// oldest first.
    pub(super) fn pending_after(
        &self,
        after: At,
        limit: usize,
        now_us: u64,
        ttl_us: u64,
    ) -> Vec<At> {
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

    pub(super) fn live(&self, now_us: u64, ttl_us: u64) -> usize {
        self.pending_len() - self.expired(now_us, ttl_us)
    }

    /// Messages expire in `at` order, so the newest decides.
    pub(super) fn has_after(&self, after: At, now_us: u64, ttl_us: u64) -> bool {
        self.pending
            .as_ref()
            .and_then(|pending| pending.back())
            .is_some_and(|(at, _)| *at > after && at.0.saturating_add(ttl_us) > now_us)
    }

    /// Forgets the messages expired at `now_us` (and the queue once it is
    /// empty); `None` if there were none.
    pub(super) fn remove_expired(&mut self, now_us: u64, ttl_us: u64) -> Option<Expired> {
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
pub(super) type Mailboxes = IndexMap<MailboxId, Mailbox, RandomState>;

#[derive(Default)]
pub(super) struct Index {
    pub(super) mailboxes: Mailboxes,
    pub(super) questions: HashMap<MailboxId, Question>,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    /// The newest `at` of any removed mailbox.
    pub(super) floor: At,
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
    pub(super) fn remove(&mut self, id: &MailboxId) {
        self.mailboxes.swap_remove(id);
        self.questions.remove(id);
    }

    /// Gives memory back once most of it is unused (after a sweep removed
    /// many idle mailboxes), keeping room to double again.
    pub(super) fn shrink(&mut self) {
        let len = self.mailboxes.len();
        if self.mailboxes.capacity() >= 1024 && len * 4 < self.mailboxes.capacity() {
            self.mailboxes.shrink_to(len * 2);
        }
    }
}
