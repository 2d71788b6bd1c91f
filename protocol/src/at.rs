//! `at`: a message's position in its mailbox.
//!
//! `at` is the relay's receive time of a message in microseconds since the
//! Unix epoch, made strictly increasing per mailbox: when two messages arrive
//! in the same microsecond (or the clock steps back) the later one gets the
//! previous `at` plus one. It is unique within a mailbox, orders its messages,
//! and stays below 2^53 (exact in JavaScript) until the year 2255.
//!
//! The seed's example `20221231235959123456` (a date written as digits) does
//! not fit in a u64 and is not used.

use std::fmt;

/// Microseconds since the Unix epoch, strictly increasing per mailbox.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct At(pub u64);

impl At {
    /// "Nothing received yet": every message is after it.
    pub const ZERO: Self = Self(0);

    /// The `at` for a message arriving at `now_us` in a mailbox whose newest
    /// message has `last` (if any): `max(now_us, last + 1)`. (At `u64::MAX`,
    /// half a million years from now, it saturates.)
    pub fn next(now_us: u64, last: Option<Self>) -> Self {
        match last {
            Some(last) if last.0 >= now_us => Self(last.0.saturating_add(1)),
            _ => Self(now_us),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing() {
        let first = At::next(100, None);
        assert_eq!(first, At(100));
        assert_eq!(At::next(100, Some(first)), At(101));
        assert_eq!(At::next(50, Some(At(101))), At(102));
        assert_eq!(At::next(200, Some(At(102))), At(200));
    }
}
