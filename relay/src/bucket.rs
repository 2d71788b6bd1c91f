//! Token-bucket rates: a [`Rate`] is how many requests a bucket lets
//! through a minute and at once. The configuration's
//! [`RateLimits`](crate::RateLimits), the relay's in-memory buckets and
//! stores that share buckets across relay nodes
//! ([`Store::take_token`](crate::Store::take_token)) all use it. This module
//! keeps no buckets and reads no clock.

use std::fmt;
use std::str::FromStr;

/// A token bucket: `burst` tokens, refilled at `per_minute` tokens a minute.
/// Written `PER_MINUTE:BURST` in flags and config files (`120:60`), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per minute (at least 1).
    pub per_minute: u32,
    /// Bucket size: how many requests may come at once (at least 1).
    pub burst: u32,
}

impl Rate {
    /// A bucket of `burst` tokens refilled at `per_minute` a minute. Zeros
    /// are raised to 1.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
        }
    }
}

/// A rate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {0:?}: expected PER_MINUTE:BURST (two positive integers, e.g. 120:60) or off"
)]
pub struct RateParseError(String);

/// Parses `PER_MINUTE:BURST` or `PER_MINUTE` (burst = per minute); `off` is
/// handled by the caller (it is `None`, not a `Rate`).
impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || RateParseError(text.to_owned());
        let (per_minute, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, burst),
            None => (text, text),
        };
        let per_minute: u32 = per_minute.trim().parse().map_err(|_| err())?;
        let burst: u32 = burst.trim().parse().map_err(|_| err())?;
        if per_minute == 0 || burst == 0 {
            return Err(err());
        }
        Ok(Self { per_minute, burst })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.per_minute, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("120:60".parse::<Rate>().unwrap(), Rate::new(120, 60));
        assert_eq!("5".parse::<Rate>().unwrap(), Rate::new(5, 5));
        assert!("0:1".parse::<Rate>().is_err());
        assert!("x".parse::<Rate>().is_err());
        assert_eq!(Rate::new(7, 3).to_string(), "7:3");
    }
}
