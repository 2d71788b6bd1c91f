//! Held checks (`spec/relay.md` §5.2): who is waiting for which mailbox,
//! waking them when a message is stored, the caps on waiting requests, and
//! releasing them all at shutdown.
//!
//! [`HeldChecks`] is a table from mailbox to the waiters that named it. A
//! held check calls [`HeldChecks::hold`] *before* it consults the store, so
//! that a message stored between "nothing found" and "start waiting" still
//! wakes it: each waiter is a [`Notify`], whose `notify_one` keeps a permit
//! when nobody is waiting yet. [`HeldChecks::wake`] is called after every
//! stored `send` (and, with Redis, for every send another node announces);
//! [`HeldChecks::release_all`] wakes everyone and makes later holds return
//! at once. A [`Hold`] is the waiter's place in the table; dropping it (the
//! answer went out, or the client went away and its request future was
//! dropped) gives the place back.
//!
//! This module does not read the store, the clock or sockets; `service`
//! decides what a woken request answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::store::{MailboxId, SourcePrefix};

/// Why [`HeldChecks::hold`] refused to hold a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldRefused {
    /// The source already has `max_per_source` held checks waiting.
    PerSource(u32),
    /// The relay already holds `max_total` checks.
    Total(u32),
}

/// The waiting held checks of a relay. See the module documentation.
#[derive(Debug)]
pub(crate) struct HeldChecks {
    max_per_source: u32,
    max_total: u32,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// Waiters by mailbox: (waiter id, its notifier).
    by_mailbox: HashMap<MailboxId, Vec<(u64, Arc<Notify>)>>,
    per_source: HashMap<SourcePrefix, u32>,
    total: u32,
    /// Set by [`HeldChecks::release_all`]: nothing is held any more.
    released: bool,
}

/// One held check's place in the table; dropping it removes it.
#[derive(Debug)]
pub(crate) struct Hold<'a> {
    checks: &'a HeldChecks,
    id: u64,
    source: SourcePrefix,
    mailboxes: Vec<MailboxId>,
    notify: Arc<Notify>,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A panic while holding the lock leaves the table consistent (every
    // change is one statement), so a poisoned lock is still usable.
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HeldChecks {
    /// A table holding at most `max_per_source` checks per source and
    /// `max_total` in all.
    pub(crate) fn new(max_per_source: u32, max_total: u32) -> Self {
        Self {
            max_per_source,
            max_total,
            table: Mutex::new(Table::default()),
        }
    }

    /// Registers a waiter for `mailboxes` from `source`. `Ok(None)` after
    /// [`HeldChecks::release_all`]: answer at once without holding.
    pub(crate) fn hold(
        &self,
        source: SourcePrefix,
        mailboxes: Vec<MailboxId>,
    ) -> Result<Option<Hold<'_>>, HoldRefused> {
        let mut table = lock(&self.table);
        if table.released {
            return Ok(None);
        }
        if table.total >= self.max_total {
            return Err(HoldRefused::Total(self.max_total));
        }
        let from_source = table.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.max_per_source {
            return Err(HoldRefused::PerSource(self.max_per_source));
        }
        table.per_source.insert(source, from_source + 1);
        table.total += 1;
        let id = table.next_id;
        table.next_id += 1;
        let notify = Arc::new(Notify::new());
        for mailbox in &mailboxes {
            table
                .by_mailbox
                .entry(*mailbox)
                .or_default()
                .push((id, Arc::clone(&notify)));
        }
        Ok(Some(Hold {
            checks: self,
            id,
            source,
            mailboxes,
            notify,
        }))
    }

    /// Wakes every held check that names `mailbox`.
    pub(crate) fn wake(&self, mailbox: &MailboxId) {
        let table = lock(&self.table);
        if let Some(waiters) = table.by_mailbox.get(mailbox) {
            for (_, notify) in waiters {
                notify.notify_one();
            }
        }
    }

    /// Wakes every held check (the store's feed of other nodes' sends was
    /// interrupted, so any of them may have missed one).
    pub(crate) fn wake_all(&self) {
        let table = lock(&self.table);
        for waiters in table.by_mailbox.values() {
            for (_, notify) in waiters {
                notify.notify_one();
            }
        }
    }

    /// Wakes every held check and holds none from now on (shutdown).
    pub(crate) fn release_all(&self) {
        lock(&self.table).released = true;
        self.wake_all();
    }

    /// Whether [`HeldChecks::release_all`] was called.
    pub(crate) fn released(&self) -> bool {
        lock(&self.table).released
    }

    /// How many held checks are waiting now.
    pub(crate) fn waiting(&self) -> u32 {
        lock(&self.table).total
    }
}

impl Hold<'_> {
    /// Resolves when a mailbox of this hold got a message since the hold
    /// began or since the previous wake-up, or at release.
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut table = lock(&self.checks.table);
        for mailbox in &self.mailboxes {
            if let Some(waiters) = table.by_mailbox.get_mut(mailbox) {
                waiters.retain(|(id, _)| *id != self.id);
                if waiters.is_empty() {
                    table.by_mailbox.remove(mailbox);
                }
            }
        }
        if let Some(count) = table.per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                table.per_source.remove(&self.source);
            }
        }
        table.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(byte: u8) -> MailboxId {
        MailboxId([byte; 49])
    }

    const A: SourcePrefix = SourcePrefix::V4([10, 0, 0, 1]);
    const B: SourcePrefix = SourcePrefix::V4([10, 0, 0, 2]);

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let checks = HeldChecks::new(4, 8);
        let hold = checks
            .hold(A, vec![mailbox(1), mailbox(2)])
            .unwrap()
            .unwrap();
        // The send lands between the store lookup and the wait.
        checks.wake(&mailbox(2));
        hold.woken().await;
        checks.wake(&mailbox(3));
        let other = tokio::time::timeout(std::time::Duration::from_millis(20), hold.woken());
        assert!(other.await.is_err(), "woken by a mailbox it did not name");
    }

    #[test]
    fn caps_per_source_and_in_total_and_places_come_back() {
        let checks = HeldChecks::new(2, 3);
        let a1 = checks.hold(A, vec![mailbox(1)]).unwrap().unwrap();
        let _a2 = checks.hold(A, vec![mailbox(1)]).unwrap().unwrap();
        assert_eq!(
            checks.hold(A, vec![mailbox(1)]).unwrap_err(),
            HoldRefused::PerSource(2)
        );
        let _b1 = checks.hold(B, vec![mailbox(1)]).unwrap().unwrap();
        assert_eq!(
            checks.hold(B, vec![mailbox(1)]).unwrap_err(),
            HoldRefused::Total(3)
        );
        drop(a1);
        assert_eq!(checks.waiting(), 2);
        assert!(checks.hold(A, vec![mailbox(1)]).unwrap().is_some());
        assert_eq!(checks.waiting(), 2, "the hold above was dropped at once");
    }

    #[tokio::test]
    async fn release_wakes_everyone_and_holds_nothing_after() {
        let checks = HeldChecks::new(2, 3);
        let hold = checks.hold(A, vec![mailbox(1)]).unwrap().unwrap();
        checks.release_all();
        hold.woken().await;
        assert!(checks.released());
        assert!(checks.hold(A, vec![mailbox(1)]).unwrap().is_none());
        drop(hold);
        assert_eq!(checks.waiting(), 0);
        assert!(lock(&checks.table).by_mailbox.is_empty());
    }
}
