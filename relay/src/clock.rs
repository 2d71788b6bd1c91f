//! Where the relay reads the time: a [`Clock`] trait, the [`SystemClock`]
//! every real relay uses, and the [`ManualClock`] that tests move by hand.
//!
//! Everything with a lifetime (messages, questions, idle mailboxes, rate-limit
//! buckets) is measured with the relay's one clock, in microseconds since the
//! Unix epoch, so that retention tests can jump an hour or thirty days without
//! sleeping. This module does not schedule anything: the sweeper's *period* is
//! real time (tokio), only the *decisions* use this clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now" for the relay.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Microseconds since the Unix epoch.
    fn now_us(&self) -> u64;
}

/// The system's wall clock. A clock before 1970 reads as 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to: for tests of retention and rate
/// limits. Shared through an `Arc`, so a test keeps one handle and gives the
/// relay another.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_us: AtomicU64,
}

impl ManualClock {
    /// A typical "now" for tests: 2023-11-14T22:13:20Z, in microseconds.
    pub const TEST_START_US: u64 = 1_700_000_000_000_000;

    /// A clock that reads `now_us` until moved.
    pub fn new(now_us: u64) -> Self {
        Self {
            now_us: AtomicU64::new(now_us),
        }
    }

    /// A clock at [`ManualClock::TEST_START_US`].
    pub fn at_test_start() -> Self {
        Self::new(Self::TEST_START_US)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.now_us.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `now_us` (it may move backwards, as a wall clock can).
    pub fn set(&self, now_us: u64) {
        self.now_us.store(now_us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.now_us.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(10);
        assert_eq!(clock.now_us(), 10);
        clock.advance(Duration::from_millis(2));
        assert_eq!(clock.now_us(), 2_010);
        clock.set(5);
        assert_eq!(clock.now_us(), 5);
    }

    #[test]
    fn system_clock_is_after_2023() {
        assert!(SystemClock.now_us() > ManualClock::TEST_START_US);
    }
}
