//! The client's one source of wall-clock time, injectable like the relay's.
//!
//! Every `now` the client uses (envelope timestamps, message ages, seen-id
//! expiry, retired-relay grace periods) comes from the [`Clock`] given to
//! [`ClientBuilder::clock`](crate::ClientBuilder::clock), default
//! [`SystemClock`]. Timers (timeouts, poll intervals) are tokio's and are
//! not read from here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock (0 if it is set before 1970).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}
