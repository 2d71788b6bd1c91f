//! Who may hold an HTTP(S) connection: the caps on open connections in
//! total and per source, the choice of which connection to close when a
//! cap is reached, and the process's open-file limit.
//!
//! [`Connections`] is a table of the open connections in the order they
//! were accepted. [`Connections::admit`] decides for a new one: under both
//! caps it is let in; at a cap, the oldest connection *without a request
//! under way* (still sending its headers, or kept alive and idle) is closed
//! to make room, and only when every connection is busy is the new one
//! refused. A slow client therefore holds its connection only until
//! someone needs the room (or the header timeout ends it), while a request
//! being answered is never cut off. A [`Ticket`] is the connection's place
//! in the table; dropping it (the connection ended, or its task was
//! aborted) gives the place back.
//!
//! This module does not read or write sockets and knows nothing about HTTP;
//! the server's accept loop (`server`) calls it and enforces what it says.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

use crate::store::SourcePrefix;

/// File descriptors kept free of connections (the store, Redis, logs, the
/// UDP socket, accept itself).
pub(crate) const RESERVED_FILES: u64 = 64;

/// Raises the soft limit on open files to the hard limit and returns the
/// soft limit in force afterwards (`None` when unlimited or unknown). Logs
/// both limits.
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = rustix::process::Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(
                "cannot raise the open-file limit from {} to {}: {error}",
                describe_limit(before.current),
                describe_limit(before.maximum)
            );
            return before.current;
        }
    }
    let after = getrlimit(Resource::Nofile);
    tracing::info!(
        "open-file limit {} (was {}, hard limit {})",
        describe_limit(after.current),
        describe_limit(before.current),
        describe_limit(after.maximum)
    );
    after.current
}

/// An open-file limit in words: the number, or "unlimited".
pub(crate) fn describe_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

/// The connection cap that fits in `open_files` file descriptors: `wanted`,
/// or less to keep [`RESERVED_FILES`] free (at least 1).
pub(crate) fn cap_for_open_files(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => {
            let fits = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
            wanted.min(fits).max(1)
        }
        None => wanted.max(1),
    }
}

/// Why a connection was closed or refused by [`Connections::admit`], as the
/// metric `connectoid_connections_closed_total` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// An idle or slow connection closed to make room for a new one.
    Evicted,
    /// A new connection refused: its source is at its cap with every
    /// connection busy.
    RefusedPerSource,
    /// A new connection refused: the relay is at its cap with every
    /// connection busy.
    RefusedFull,
}

impl Closed {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::RefusedPerSource => "refused_per_source",
            Self::RefusedFull => "refused_full",
        }
    }
}

struct Entry {
    source: SourcePrefix,
    busy: Arc<AtomicU32>,
    abort: Option<AbortHandle>,
}

impl Entry {
    fn idle(&self) -> bool {
        self.abort.is_some() && self.busy.load(Ordering::Acquire) == 0
    }
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// By accept order (ids only grow).
    open: BTreeMap<u64, Entry>,
    per_source: HashMap<SourcePrefix, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }

    /// Closes the oldest idle connection (of `source`, if given).
    fn evict_oldest(&mut self, source: Option<SourcePrefix>) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| e.idle() && source.is_none_or(|s| e.source == s))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(entry) => {
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
                true
            }
            None => false,
        }
    }
}

/// The open connections and their caps. See the module documentation.
pub(crate) struct Connections {
    max_total: usize,
    max_per_source: usize,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("max_total", &self.max_total)
            .field("max_per_source", &self.max_per_source)
            .field("open", &self.len())
            .finish()
    }
}

impl Connections {
    /// At most `max_total` connections, `max_per_source` from one source.
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            table: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every change to the table is completed before the lock is let go.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Names the task serving connection `id`, so that it can be closed to
    /// make room. Until then the connection is never chosen. Nothing
    /// happens if the connection is gone already.
    pub(crate) fn serving(&self, id: u64, task: AbortHandle) {
        if let Some(entry) = self.lock().open.get_mut(&id) {
            entry.abort = Some(task);
        }
    }

    /// Decides for a new connection from `source` (`exempt`: not subject to
    /// the per-source cap). Returns its ticket, or why it is refused, and
    /// what was closed to make room.
    pub(crate) fn admit(
        self: &Arc<Self>,
        source: SourcePrefix,
        exempt: bool,
    ) -> (Result<Ticket, Closed>, Vec<Closed>) {
        let mut closed = Vec::new();
        let mut table = self.lock();
        if !exempt && table.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            if table.evict_oldest(Some(source)) {
                closed.push(Closed::Evicted);
            } else {
                return (Err(Closed::RefusedPerSource), closed);
            }
        }
        if table.open.len() >= self.max_total {
            if table.evict_oldest(None) {
                closed.push(Closed::Evicted);
            } else {
                return (Err(Closed::RefusedFull), closed);
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let busy = Arc::new(AtomicU32::new(0));
        table.open.insert(
            id,
            Entry {
                source,
                busy: Arc::clone(&busy),
                abort: None,
            },
        );
        *table.per_source.entry(source).or_default() += 1;
        let ticket = Ticket {
            id,
            busy,
            connections: Arc::clone(self),
        };
        (Ok(ticket), closed)
    }
}

/// A connection's place in [`Connections`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    busy: Arc<AtomicU32>,
    connections: Arc<Connections>,
}

impl Ticket {
    /// The connection's number, for [`Connections::serving`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    #[cfg(test)]
    fn serving(&self, task: AbortHandle) {
        self.connections.serving(self.id, task);
    }

    /// Marks a request under way until the returned guard is dropped.
    #[cfg(test)]
    pub(crate) fn busy(&self) -> Busy {
        Busy::new(Arc::clone(&self.busy))
    }

    /// A handle that marks requests under way, for the connection's service.
    pub(crate) fn busy_counter(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.busy)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.lock().remove(self.id);
    }
}

/// A request under way on a connection (see [`Ticket::busy`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<AtomicU32>);

impl Busy {
    /// Marks a request under way on the connection that owns `counter`.
    pub(crate) fn new(counter: Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(n: u8) -> SourcePrefix {
        SourcePrefix::V4([192, 0, 2, n])
    }

    /// A task that never ends, standing for a connection's task.
    fn task(set: &mut tokio::task::JoinSet<()>) -> AbortHandle {
        set.spawn(std::future::pending())
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let mut tasks = tokio::task::JoinSet::new();
        let connections = Connections::new(3, 10);
        let mut tickets = Vec::new();
        for n in 0..3 {
            let (ticket, closed) = connections.admit(source(n), false);
            let ticket = ticket.unwrap();
            assert!(closed.is_empty());
            ticket.serving(task(&mut tasks));
            tickets.push(ticket);
        }
        // The oldest is busy: the second goes.
        let _busy = tickets[0].busy();
        let (fourth, closed) = connections.admit(source(9), false);
        assert!(fourth.is_ok());
        assert_eq!(closed, [Closed::Evicted]);
        assert_eq!(connections.len(), 3);
        let aborted = tasks.join_next().await.unwrap().unwrap_err();
        assert!(aborted.is_cancelled());
        // Every one busy: refused.
        let fourth = fourth.unwrap();
        fourth.serving(task(&mut tasks));
        let _b = (tickets[2].busy(), fourth.busy());
        let (refused, _) = connections.admit(source(9), false);
        assert_eq!(refused.unwrap_err(), Closed::RefusedFull);
        // Dropping a ticket gives its place back.
        drop(tickets.pop());
        assert_eq!(connections.len(), 2);
        assert!(connections.admit(source(9), false).0.is_ok());
    }

    #[tokio::test]
    async fn a_source_at_its_cap_makes_room_among_its_own() {
        let mut tasks = tokio::task::JoinSet::new();
        let connections = Connections::new(100, 2);
        let other = connections.admit(source(2), false).0.unwrap();
        other.serving(task(&mut tasks));
        let a = connections.admit(source(1), false).0.unwrap();
        a.serving(task(&mut tasks));
        let b = connections.admit(source(1), false).0.unwrap();
        b.serving(task(&mut tasks));
        let _busy = b.busy();
        let (c, closed) = connections.admit(source(1), false);
        let c = c.unwrap();
        assert_eq!(closed, [Closed::Evicted]);
        // The other source's older connection was not touched.
        assert_eq!(connections.len(), 3);
        c.serving(task(&mut tasks));
        let _busy_c = c.busy();
        assert_eq!(
            connections.admit(source(1), false).0.unwrap_err(),
            Closed::RefusedPerSource
        );
        // An exempt source (a trusted proxy) is not capped per source.
        assert!(connections.admit(source(1), true).0.is_ok());
    }

    #[test]
    fn the_cap_leaves_files_free() {
        assert_eq!(cap_for_open_files(10_000, Some(1024)), 960);
        assert_eq!(cap_for_open_files(100, Some(1024)), 100);
        assert_eq!(cap_for_open_files(100, None), 100);
        assert_eq!(cap_for_open_files(100, Some(10)), 1);
    }
}
