//! The relay's token buckets, kept in memory with `governor` (GCRA) and
//! driven by the relay's [`Clock`], so that tests with a manual clock are
//! exact: a bucket refills only when the test moves the clock.
//!
//! The buckets are laid out so that what a stranger who knows a mailbox's
//! key can do does not spend its owner's budget (`spec/relay.md` §5.1):
//!
//! | [`Limit`] | key | rate |
//! | --- | --- | --- |
//! | `SendPerSource` | source | `send_per_ip` |
//! | `SendPerMailboxSource` | mailbox and source | a third of `send_per_mailbox` |
//! | `SendPerMailbox` | mailbox | `send_per_mailbox` |
//! | `CheckPerSource` | source (HTTP) | `check_per_ip` |
//! | `CheckPerMailboxSource` | mailbox and source (HTTP check, receive with the right answer) | `check_per_mailbox` |
//! | `UdpPerSource` | source (UDP datagrams) | `check_per_ip` |
//! | `UdpPerMailboxSource` | mailbox and source (each UDP check) | `check_per_mailbox` |
//! | `WrongAnswerPerSource` | source | a twentieth of `check_per_ip` |
//! | `WrongAnswerPerMailbox` | mailbox | half of `check_per_mailbox` |
//!
//! Turning a configured rate off turns off the buckets derived from it. A
//! backend that shares buckets across relay nodes
//! ([`Store::rate_limits_shared`]) keeps the two send buckets it knows
//! (per source, per mailbox); every other bucket stays per node, so that a
//! check costs at most one store round trip. This module decides nothing
//! about which requests use which bucket; the relay's service does.

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

/// One bucket a request takes a token from (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `send` and `delete` from one source.
    SendPerSource(SourcePrefix),
    /// `send` and `delete` to one mailbox from one source.
    SendPerMailboxSource(MailboxId, SourcePrefix),
    /// `send` to one mailbox, from everyone.
    SendPerMailbox(MailboxId),
    /// HTTP `check` and `receive` from one source.
    CheckPerSource(SourcePrefix),
    /// HTTP `check`, and `receive` with the right answer, of one mailbox from one source.
    CheckPerMailboxSource(MailboxId, SourcePrefix),
    /// UDP datagrams from one source.
    UdpPerSource(SourcePrefix),
    /// UDP checks of one mailbox from one source.
    UdpPerMailboxSource(MailboxId, SourcePrefix),
    /// Wrong answers from one source.
    WrongAnswerPerSource(SourcePrefix),
    /// Wrong answers for one mailbox.
    WrongAnswerPerMailbox(MailboxId),
}

impl Limit {
    /// The bucket's kind, as the "Too often" detail and the metrics name it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::SendPerSource(_) => "send_per_ip",
            // A share of the mailbox's bucket: refusals read the same.
            Self::SendPerMailboxSource(..) => "send_per_mailbox",
            Self::SendPerMailbox(_) => "send_per_mailbox",
            Self::CheckPerSource(_) => "check_per_ip",
            Self::CheckPerMailboxSource(..) => "check_per_mailbox",
            Self::UdpPerSource(_) => "udp_per_ip",
            Self::UdpPerMailboxSource(..) => "udp_per_mailbox",
            Self::WrongAnswerPerSource(_) => "wrong_answer_per_ip",
            Self::WrongAnswerPerMailbox(_) => "wrong_answer_per_mailbox",
        }
    }
}

/// `rate` divided by `by` (at least 1 a minute), with a burst of at least
/// two (or `rate`'s burst, if smaller).
fn fraction(rate: Option<Rate>, by: u32) -> Option<Rate> {
    rate.map(|rate| {
        Rate::new(
            (rate.per_minute / by).max(1),
            (rate.burst / by).max(rate.burst.min(2)),
        )
    })
}

type Pair = (MailboxId, SourcePrefix);

/// All the relay's buckets.
pub(crate) struct Limiters {
    rates: RateLimits,
    send_per_ip: Option<Keyed<SourcePrefix>>,
    send_per_mailbox_ip: (Option<Rate>, Option<Keyed<Pair>>),
    send_per_mailbox: Option<Keyed<MailboxId>>,
    check_per_ip: Option<Keyed<SourcePrefix>>,
    check_per_mailbox: Option<Keyed<Pair>>,
    udp_per_ip: Option<Keyed<SourcePrefix>>,
    udp_per_mailbox: Option<Keyed<Pair>>,
    wrong_per_ip: Option<Keyed<SourcePrefix>>,
    wrong_per_mailbox: Option<Keyed<MailboxId>>,
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
        let send_pair = fraction(rates.send_per_mailbox, 3);
        Self {
            rates: rates.clone(),
            send_per_ip: keyed(rates.send_per_ip, clock),
            send_per_mailbox_ip: (send_pair, keyed(send_pair, clock)),
            send_per_mailbox: keyed(rates.send_per_mailbox, clock),
            check_per_ip: keyed(rates.check_per_ip, clock),
            check_per_mailbox: keyed(rates.check_per_mailbox, clock),
            udp_per_ip: keyed(rates.check_per_ip, clock),
            udp_per_mailbox: keyed(rates.check_per_mailbox, clock),
            wrong_per_ip: keyed(fraction(rates.check_per_ip, 20), clock),
            wrong_per_mailbox: keyed(fraction(rates.check_per_mailbox, 2), clock),
        }
    }

    fn take_local(&self, limit: &Limit) -> bool {
        fn take<K: Hash + Eq + Clone>(limiter: Option<&Keyed<K>>, key: &K) -> bool {
            limiter.is_none_or(|l| l.check_key(key).is_ok())
        }
        match *limit {
            Limit::SendPerSource(s) => take(self.send_per_ip.as_ref(), &s),
            Limit::SendPerMailboxSource(m, s) => take(self.send_per_mailbox_ip.1.as_ref(), &(m, s)),
            Limit::SendPerMailbox(m) => take(self.send_per_mailbox.as_ref(), &m),
            Limit::CheckPerSource(s) => take(self.check_per_ip.as_ref(), &s),
            Limit::CheckPerMailboxSource(m, s) => take(self.check_per_mailbox.as_ref(), &(m, s)),
            Limit::UdpPerSource(s) => take(self.udp_per_ip.as_ref(), &s),
            Limit::UdpPerMailboxSource(m, s) => take(self.udp_per_mailbox.as_ref(), &(m, s)),
            Limit::WrongAnswerPerSource(s) => take(self.wrong_per_ip.as_ref(), &s),
            Limit::WrongAnswerPerMailbox(m) => take(self.wrong_per_mailbox.as_ref(), &m),
        }
    }

    /// Takes a token from `limit`'s bucket: `Ok(false)` when it is empty.
    /// Disabled buckets always have tokens.
    pub(crate) async fn take(
        &self,
        store: &dyn Store,
        limit: Limit,
        now_us: u64,
    ) -> Result<bool, StoreError> {
        // The two send buckets a sharing store knows are taken there.
        let shared = match limit {
            Limit::SendPerSource(s) => self
                .rates
                .send_per_ip
                .map(|r| (Bucket::SendPerSource(s), r)),
            Limit::SendPerMailbox(m) => self
                .rates
                .send_per_mailbox
                .map(|r| (Bucket::SendPerMailbox(m), r)),
            _ => None,
        };
        match shared {
            Some((bucket, rate)) if store.rate_limits_shared() => {
                store.take_token(bucket, rate, now_us).await
            }
            _ => Ok(self.take_local(&limit)),
        }
    }

    /// How long the bucket of kind `kind` ([`Limit::kind`]) takes to gain
    /// one token: 60 s divided by its rate per minute, the longest of the
    /// buckets of that kind (the `Retry-After` of a "Too often" answer).
    /// `None` for an unknown or disabled kind.
    pub(crate) fn refill_period(&self, kind: &str) -> Option<Duration> {
        let rates = &self.rates;
        let rate = match kind {
            "send_per_ip" => rates.send_per_ip,
            // The per-source share refills three times slower.
            "send_per_mailbox" => self.send_per_mailbox_ip.0.or(rates.send_per_mailbox),
            "check_per_ip" | "udp_per_ip" => rates.check_per_ip,
            "check_per_mailbox" | "udp_per_mailbox" => rates.check_per_mailbox,
            "wrong_answer_per_ip" => fraction(rates.check_per_ip, 20),
            "wrong_answer_per_mailbox" => fraction(rates.check_per_mailbox, 2),
            _ => None,
        }?;
        Some(Duration::from_secs(60) / rate.per_minute.max(1))
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
        shrink(self.send_per_mailbox_ip.1.as_ref());
        shrink(self.send_per_mailbox.as_ref());
        shrink(self.check_per_ip.as_ref());
        shrink(self.check_per_mailbox.as_ref());
        shrink(self.udp_per_ip.as_ref());
        shrink(self.udp_per_mailbox.as_ref());
        shrink(self.wrong_per_ip.as_ref());
        shrink(self.wrong_per_mailbox.as_ref());
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
        let a = Limit::CheckPerSource(SourcePrefix::V4([192, 0, 2, 1]));
        let b = Limit::CheckPerSource(SourcePrefix::V4([192, 0, 2, 2]));
        for _ in 0..3 {
            assert!(limiters.take_local(&a));
        }
        assert!(!limiters.take_local(&a));
        assert!(limiters.take_local(&b));
        clock.advance(Duration::from_secs(1));
        assert!(limiters.take_local(&a));
        assert!(!limiters.take_local(&a));
        // Disabled buckets never run out.
        let m = Limit::SendPerMailbox(MailboxId([2; 49]));
        for _ in 0..100 {
            assert!(limiters.take_local(&m));
        }
    }

    #[test]
    fn strangers_do_not_spend_the_owners_buckets() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_test_start());
        let limiters = Limiters::new(&RateLimits::default(), &clock);
        let mailbox = MailboxId([3; 49]);
        let owner = SourcePrefix::V4([192, 0, 2, 1]);
        for n in 0..50u8 {
            let stranger = SourcePrefix::V4([198, 51, 100, n]);
            for _ in 0..100 {
                limiters.take_local(&Limit::UdpPerMailboxSource(mailbox, stranger));
                limiters.take_local(&Limit::CheckPerMailboxSource(mailbox, stranger));
                limiters.take_local(&Limit::WrongAnswerPerMailbox(mailbox));
            }
        }
        assert!(limiters.take_local(&Limit::UdpPerMailboxSource(mailbox, owner)));
        assert!(limiters.take_local(&Limit::CheckPerMailboxSource(mailbox, owner)));
        assert!(limiters.take_local(&Limit::UdpPerSource(owner)));
        // A stranger's sends to the mailbox stop at their share.
        let stranger = SourcePrefix::V4([198, 51, 100, 1]);
        let taken = (0..100)
            .filter(|_| limiters.take_local(&Limit::SendPerMailboxSource(mailbox, stranger)))
            .count();
        assert_eq!(taken, 10, "a third of the per-mailbox burst of 30");
        assert_eq!(fraction(Some(Rate::new(1, 2)), 3), Some(Rate::new(1, 2)));
        assert_eq!(fraction(None, 3), None);
    }
}
