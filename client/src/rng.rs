//! The operating system's random number generator and the wall clock, the
//! two things the protocol crate takes from its caller.
//!
//! Nothing here is seeded or cached: every call reads the OS.

use std::time::{SystemTime, UNIX_EPOCH};

use getrandom::SysRng;
use rand_core::UnwrapErr;

/// A cryptographic RNG reading the OS source. It panics only if the OS
/// cannot provide randomness at all, in which case no key could be made
/// safely anyway.
pub(crate) fn system_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A uniformly random duration in `[0, max)`; zero when `max` is zero.
pub(crate) fn jitter(max: std::time::Duration) -> std::time::Duration {
    use rand_core::Rng as _;
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    if max_us == 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_micros(system_rng().next_u64() % max_us)
}
