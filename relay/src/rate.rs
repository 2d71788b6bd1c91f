//! The relay's token buckets, kept in memory with `governor` (GCRA) and
//! driven by the relay's [`Clock`], so that tests with a manual clock are
//! exact: a bucket refills only when the test moves the clock.
//!
//! Four keyed limiters, each optional (see [`RateLimits`]): sends per source
//! and per mailbox, checks per source and per mailbox. A backend that shares
//! buckets across relay nodes ([`Store::rate_limits_shared`]) replaces the
//! two send limiters; the check limiters stay per node, so that a check costs
//! at most one store round trip.
//! This module decides nothing about which requests use which bucket; the
//! relay's service does.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::Clock;
use crate::config::{Rate, RateLimits};
use crate::store::{Bucket, MailboxId, SourcePrefix, Store, StoreError};

/// Adapts the relay's clock to governor's.
#[derive(Debug, Clone)]
struct GovernorClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_micros(self.0.now_us())
    }
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, GovernorClock, NoOpMiddleware<Duration>>;

fn quota(rate: Rate) -> Quota {
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(60) / rate.per_minute.max(1);
    // A zero period cannot come from a u32 rate per minute (60 s / 2^32 > 0).
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

fn keyed<K: Hash + Eq + Clone>(rate: Option<Rate>, clock: &Arc<dyn Clock>) -> Option<Keyed<K>> {
    rate.map(|rate| {
        RateLimiter::new(
            quota(rate),
            DashMapStateStore::default(),
            GovernorClock(Arc::clone(clock)),
        )
    })
}

/// All the relay's buckets.
pub(crate) struct Limiters {
    rates: RateLimits,
    send_per_ip: Option<Keyed<SourcePrefix>>,
    send_per_mailbox: Option<Keyed<MailboxId>>,
    check_per_ip: Option<Keyed<SourcePrefix>>,
    check_per_mailbox: Option<Keyed<MailboxId>>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("rates", &self.rates)
            .finish()
    }
}

impl Limiters {
    pub(crate) fn new(rates: &RateLimits, clock: &Arc<dyn Clock>) -> Self {
        Self {
            rates: rates.clone(),
            send_per_ip: keyed(rates.send_per_ip, clock),
            send_per_mailbox: keyed(rates.send_per_mailbox, clock),
            check_per_ip: keyed(rates.check_per_ip, clock),
            check_per_mailbox: keyed(rates.check_per_mailbox, clock),
        }
    }

    fn rate(&self, bucket: &Bucket) -> Option<Rate> {
        match bucket {
            Bucket::SendPerSource(_) => self.rates.send_per_ip,
            Bucket::SendPerMailbox(_) => self.rates.send_per_mailbox,
            Bucket::CheckPerSource(_) => self.rates.check_per_ip,
            Bucket::CheckPerMailbox(_) => self.rates.check_per_mailbox,
        }
    }

    fn take_local(&self, bucket: &Bucket) -> bool {
        fn take<K: Hash + Eq + Clone>(limiter: Option<&Keyed<K>>, key: &K) -> bool {
            limiter.is_none_or(|l| l.check_key(key).is_ok())
        }
        match bucket {
            Bucket::SendPerSource(k) => take(self.send_per_ip.as_ref(), k),
            Bucket::SendPerMailbox(k) => take(self.send_per_mailbox.as_ref(), k),
            Bucket::CheckPerSource(k) => take(self.check_per_ip.as_ref(), k),
            Bucket::CheckPerMailbox(k) => take(self.check_per_mailbox.as_ref(), k),
        }
    }

    /// Takes a token from `bucket`: `Ok(false)` when it is empty. Disabled
    /// buckets always have tokens.
    pub(crate) async fn take(
        &self,
        store: &dyn Store,
        bucket: Bucket,
        now_us: u64,
    ) -> Result<bool, StoreError> {
        let Some(rate) = self.rate(&bucket) else {
            return Ok(true);
        };
        // Send buckets are shared across nodes by a store that can share
        // them; check buckets always stay on this node, so that a check that
        // finds nothing costs at most one store round trip.
        let is_send = matches!(bucket, Bucket::SendPerSource(_) | Bucket::SendPerMailbox(_));
        if is_send && store.rate_limits_shared() {
            store.take_token(bucket, rate, now_us).await
        } else {
            Ok(self.take_local(&bucket))
        }
    }

    /// Forgets buckets that are full again, so memory follows recent activity.
    pub(crate) fn forget_idle(&self) {
        fn shrink<K: Hash + Eq + Clone>(limiter: Option<&Keyed<K>>) {
            if let Some(limiter) = limiter {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        shrink(self.send_per_ip.as_ref());
        shrink(self.send_per_mailbox.as_ref());
        shrink(self.check_per_ip.as_ref());
        shrink(self.check_per_mailbox.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn buckets_refill_with_the_relay_clock() {
        let clock = Arc::new(ManualClock::at_test_start());
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let mut rates = RateLimits::off();
        rates.check_per_ip = Some(Rate::new(60, 3));
        let limiters = Limiters::new(&rates, &dyn_clock);
        let a = Bucket::CheckPerSource(SourcePrefix::V4([192, 0, 2, 1]));
        let b = Bucket::CheckPerSource(SourcePrefix::V4([192, 0, 2, 2]));
        for _ in 0..3 {
            assert!(limiters.take_local(&a));
        }
        assert!(!limiters.take_local(&a));
        assert!(limiters.take_local(&b));
        clock.advance(Duration::from_secs(1));
        assert!(limiters.take_local(&a));
        assert!(!limiters.take_local(&a));
        // Disabled buckets never run out.
        let m = Bucket::SendPerMailbox(MailboxId([2; 49]));
        for _ in 0..100 {
            assert!(limiters.take_local(&m));
        }
    }
}
