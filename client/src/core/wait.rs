//! How to wait for the next poll, relay by relay (`spec/client.md` §11):
//! a held check where the relay advertises one, the polling interval
//! elsewhere. Pure: the shell (`poll`) passes the plans of the last poll and
//! the relays' information documents, and does the waiting.
//!
//! A held check carries one `ext` and at most the relay's `max_mailboxes`
//! (16 by the protocol), so a relay's mailboxes are grouped by `ext` and
//! cut into batches; every batch is one request, all held at once.

use std::collections::BTreeMap;
use std::time::Duration;

use connectoid_protocol::RelayInfo;
use connectoid_protocol::api::{MailboxCursor, Operation, Request};
use connectoid_protocol::limits;
use connectoid_protocol::link::RelayUrl;

use super::MailboxPlan;

/// How to wait at one relay.
#[derive(Debug)]
pub(crate) enum RelayWait {
    /// Hold these requests; each is answered when a message arrives for
    /// one of its mailboxes (or at the end of `wait`, then ask again).
    Held {
        /// The held checks, one per batch of mailboxes.
        requests: Vec<Request>,
        /// How long the relay holds each (its advertised maximum).
        wait: Duration,
    },
    /// The relay does not hold checks (or the app asked for polling):
    /// wait for the polling interval.
    Interval,
}

/// The way to wait at each relay of `plans`: held checks at relays whose
/// information document (`infos`) advertises them, when `held_checks` is
/// on; the interval elsewhere.
pub(crate) fn plan_waits(
    plans: &BTreeMap<RelayUrl, Vec<MailboxPlan>>,
    infos: &BTreeMap<RelayUrl, RelayInfo>,
    held_checks: bool,
) -> BTreeMap<RelayUrl, RelayWait> {
    plans
        .iter()
        .map(|(relay, mailboxes)| {
            let held = infos
                .get(relay)
                .and_then(|info| info.held_check.as_ref())
                .filter(|held| held_checks && held.max_wait_seconds > 0 && held.max_mailboxes > 0);
            let wait = match held {
                None => RelayWait::Interval,
                Some(held) => {
                    let per_request = usize::try_from(held.max_mailboxes)
                        .unwrap_or(1)
                        .clamp(1, limits::MAX_MAILBOXES_PER_HELD_CHECK);
                    RelayWait::Held {
                        requests: held_requests(mailboxes, per_request, held.max_wait_seconds),
                        wait: Duration::from_secs(held.max_wait_seconds),
                    }
                }
            };
            (relay.clone(), wait)
        })
        .collect()
}

/// Whether two poll plans ask the same relays about the same mailboxes
/// after the same cursors (with the same `ext`): when a held check's wait
/// ended without news and the plan is still the same, the client holds the
/// same checks again instead of polling.
pub(crate) fn same_plans(
    a: &BTreeMap<RelayUrl, Vec<MailboxPlan>>,
    b: &BTreeMap<RelayUrl, Vec<MailboxPlan>>,
) -> bool {
    let same_mailbox = |x: &MailboxPlan, y: &MailboxPlan| {
        x.key.public_key() == y.key.public_key() && x.after == y.after && x.ext == y.ext
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((relay_a, plans_a), (relay_b, plans_b))| {
                relay_a == relay_b
                    && plans_a.len() == plans_b.len()
                    && plans_a.iter().zip(plans_b).all(|(x, y)| same_mailbox(x, y))
            })
}

/// The held checks of `mailboxes`: grouped by `ext` (in order of first
/// appearance), `per_request` mailboxes at most per request.
fn held_requests(mailboxes: &[MailboxPlan], per_request: usize, wait_seconds: u64) -> Vec<Request> {
    let mut by_ext: Vec<(Option<String>, Vec<&MailboxPlan>)> = Vec::new();
    for plan in mailboxes {
        match by_ext.iter_mut().find(|(ext, _)| *ext == plan.ext) {
            Some((_, group)) => group.push(plan),
            None => by_ext.push((plan.ext.clone(), vec![plan])),
        }
    }
    let mut requests = Vec::new();
    for (ext, group) in by_ext {
        for batch in group.chunks(per_request) {
            let Some((first, rest)) = batch.split_first() else {
                continue;
            };
            requests.push(Request {
                key: first.key.public_key(),
                ext: ext.clone(),
                op: Operation::HeldCheck {
                    at: first.after,
                    also: rest
                        .iter()
                        .map(|plan| MailboxCursor {
                            key: plan.key.public_key(),
                            at: plan.after,
                        })
                        .collect(),
                    wait_seconds,
                },
            });
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectoid_protocol::api::{InfoHeldCheck, InfoLimits, InfoRetention};
    use connectoid_protocol::{At, SecretKey};

    fn plan(n: u8, ext: Option<&str>) -> MailboxPlan {
        MailboxPlan {
            key: SecretKey::from_bytes(&[n; 48]).unwrap(),
            nickname: format!("peer {n}"),
            ext: ext.map(str::to_owned),
            after: At(u64::from(n)),
        }
    }

    fn info(held: Option<InfoHeldCheck>) -> RelayInfo {
        let mut info = RelayInfo::new(
            "test",
            "0",
            InfoLimits::new(65536, 100, 100, 16),
            InfoRetention::new(3600, 60, 86400),
        );
        info.held_check = held;
        info
    }

    #[test]
    fn held_where_advertised_in_batches_of_sixteen_per_ext_interval_elsewhere() {
        let holding = RelayUrl::parse("https://a.example/").unwrap();
        let polling = RelayUrl::parse("https://b.example/").unwrap();
        let mut mailboxes: Vec<MailboxPlan> = (1..=20).map(|n| plan(n, None)).collect();
        mailboxes.push(plan(21, Some("key")));
        let plans = BTreeMap::from([
            (holding.clone(), mailboxes.clone()),
            (polling.clone(), mailboxes),
        ]);
        let infos = BTreeMap::from([
            (
                holding.clone(),
                info(Some(InfoHeldCheck::new(25, 16, 64, 5000))),
            ),
            (polling.clone(), info(None)),
        ]);
        let waits = plan_waits(&plans, &infos, true);
        let RelayWait::Held { requests, wait } = &waits[&holding] else {
            panic!("{:?}", waits[&holding]);
        };
        assert_eq!(*wait, Duration::from_secs(25));
        let sizes: Vec<(Option<&str>, usize)> = requests
            .iter()
            .map(|r| match &r.op {
                Operation::HeldCheck {
                    also, wait_seconds, ..
                } => {
                    assert_eq!(*wait_seconds, 25);
                    (r.ext.as_deref(), also.len() + 1)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [(None, 16), (None, 4), (Some("key"), 1)]);
        // Each mailbox is asked about after its own cursor.
        let Operation::HeldCheck { at, also, .. } = &requests[1].op else {
            unreachable!()
        };
        assert_eq!((*at, also[0].at), (At(17), At(18)));
        assert!(matches!(waits[&polling], RelayWait::Interval));
        // Without a document, or with held checks turned off: the interval.
        assert!(matches!(
            plan_waits(&plans, &BTreeMap::new(), true)[&holding],
            RelayWait::Interval
        ));
        assert!(matches!(
            plan_waits(&plans, &infos, false)[&holding],
            RelayWait::Interval
        ));
    }

    #[test]
    fn plans_are_the_same_only_with_the_same_mailboxes_and_cursors() {
        let relay = RelayUrl::parse("https://a.example/").unwrap();
        let plans = |mailboxes: Vec<MailboxPlan>| BTreeMap::from([(relay.clone(), mailboxes)]);
        let base = plans(vec![plan(1, None), plan(2, None)]);
        assert!(same_plans(
            &base,
            &plans(vec![plan(1, None), plan(2, None)])
        ));
        assert!(!same_plans(&base, &plans(vec![plan(1, None)])));
        assert!(!same_plans(
            &base,
            &plans(vec![plan(1, None), plan(3, None)])
        ));
        assert!(!same_plans(
            &base,
            &plans(vec![plan(1, None), plan(2, Some("k"))])
        ));
        let mut moved = plan(2, None);
        moved.after = At(99);
        assert!(!same_plans(&base, &plans(vec![plan(1, None), moved])));
        assert!(!same_plans(&base, &BTreeMap::new()));
    }

    #[test]
    fn a_relay_with_a_smaller_batch_gets_smaller_requests() {
        let relay = RelayUrl::parse("https://a.example/").unwrap();
        let plans = BTreeMap::from([(relay.clone(), (1..=5).map(|n| plan(n, None)).collect())]);
        let infos = BTreeMap::from([(relay.clone(), info(Some(InfoHeldCheck::new(30, 2, 1, 1))))]);
        let RelayWait::Held { requests, .. } = &plan_waits(&plans, &infos, true)[&relay] else {
            panic!("not held");
        };
        assert_eq!(requests.len(), 3);
    }
}
