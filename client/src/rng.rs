//! The operating system's random number generator, which the core and the
//! protocol crate take from their caller.
//!
//! Nothing here is seeded or cached: every call reads the OS.

use getrandom::SysRng;
use rand_core::UnwrapErr;

/// A cryptographic RNG reading the OS source. It panics only if the OS
/// cannot provide randomness at all, in which case no key could be made
/// safely anyway.
pub(crate) fn system_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
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
