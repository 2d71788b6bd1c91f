//! The network side of a poll: one round of checks and receives of every
//! planned mailbox at every relay, and the polling loop as a stream.
//!
//! A poll runs all relays concurrently. At each relay it first asks about
//! all mailboxes in one UDP datagram (where the relay advertises UDP), then
//! uses HTTP `check` and `receive` (answering the relay's question) only for
//! mailboxes that have something, or all of them when UDP is not available
//! or stays silent. A relay that refuses one mailbox ("Forbidden" for a
//! mailbox without the relay's API key, "Wrong answer", "Too often" for that
//! mailbox...) is reported for that mailbox ([`MailboxRefusal`]) and its
//! other mailboxes are polled normally; only an unreachable or broken relay
//! counts as failed.
//!
//! Between polls, [`wait_for_news`] waits: at relays that hold checks
//! (`spec/protocol.md` §7.10) with held checks of all the mailboxes there,
//! answered as soon as a message arrives, and at the others for the
//! polling interval; the first to end starts the next poll. An idle client
//! whose relays all hold checks therefore keeps one request per relay (per
//! 16 mailboxes) open and sets no timer that fires.
//!
//! What the fetched messages mean, which are duplicates and where cursors
//! go is decided by the core (`PeerBook::handle_fetched`), and which relays
//! are waited on how by the core's `plan_waits`; this module only fetches
//! and waits.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use connectoid_protocol::api::{ApiError, ErrorCode, Operation, RelayInfo, Request, Response};
#[cfg(feature = "udp")]
use connectoid_protocol::limits;
use connectoid_protocol::link::RelayUrl;
#[cfg(feature = "udp")]
use connectoid_protocol::udp::{CheckStatus, MailboxCheck};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt as _};

use crate::core::{Fetched, MailboxPlan, RelayWait};
use crate::error::PollError;
use crate::event::{Delivery, MailboxRefusal, Poll, PollReport, RelayPoll, UdpUse};
use crate::relay::{RelayError, Transport, answer_question, unexpected};
use crate::rng::jitter;
#[cfg(feature = "udp")]
use crate::udp::UdpChecker;

/// Most `receive` pages fetched from one mailbox at one relay in one poll.
const MAX_PAGES: usize = 10;

/// How often and how patiently the event stream polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollOptions {
    /// Time between polls when all is well. Default 30 s.
    pub interval: Duration,
    /// A random extra delay of up to this much is added to every wait, so
    /// that many clients do not poll in step. Default 5 s.
    pub jitter: Duration,
    /// The longest wait after repeated failures (the wait doubles from
    /// `interval` with each failure). Default 5 minutes.
    pub max_backoff: Duration,
    /// Between polls, hold a check at every relay that advertises held
    /// checks, so a message is delivered within a round trip of its
    /// arrival and the `interval` applies only to the other relays.
    /// Default `true`; `false` polls every relay at the interval.
    pub held_checks: bool,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            held_checks: true,
        }
    }
}

impl PollOptions {
    /// Options with this interval and a jitter of a tenth of it.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            jitter: interval / 10,
            ..Self::default()
        }
    }

    /// The wait before the next poll after `failures` failures in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(16));
        let base = if failures == 0 {
            self.interval
        } else {
            self.interval.saturating_mul(factor).min(self.max_backoff)
        };
        base + jitter(self.jitter)
    }
}

/// The stream of deliveries from [`Client::events`](crate::Client::events).
pub type EventStream = BoxStream<'static, Result<Delivery, PollError>>;

/// What a poll goes through: HTTP, UDP (when enabled) and the `receive`
/// limit.
pub(crate) struct Fetcher<'a> {
    pub(crate) transport: &'a Transport,
    #[cfg(feature = "udp")]
    pub(crate) udp: Option<&'a UdpChecker>,
    pub(crate) receive_limit: u32,
}

impl Fetcher<'_> {
    /// Polls every planned mailbox at every relay concurrently. Returns the
    /// report (without the core's counts yet) and the messages fetched.
    pub(crate) async fn fetch_all(
        &self,
        plans: BTreeMap<RelayUrl, Vec<MailboxPlan>>,
    ) -> (PollReport, Vec<Fetched>) {
        let results = futures::future::join_all(
            plans
                .into_iter()
                .map(|(relay, mailboxes)| self.poll_relay(relay, mailboxes)),
        )
        .await;
        let mut report = PollReport::default();
        let mut fetched = Vec::new();
        for (relay_report, messages) in results {
            report.relays.push(relay_report);
            fetched.extend(messages);
        }
        (report, fetched)
    }

    /// The UDP round at one relay, where the relay advertises UDP and the
    /// client uses it: marks the mailboxes the relay says are empty as not
    /// wanted.
    #[cfg(feature = "udp")]
    async fn udp_round(
        &self,
        relay: &RelayUrl,
        info: Option<&RelayInfo>,
        mailboxes: &[MailboxPlan],
        wanted: &mut [bool],
    ) -> UdpUse {
        match (self.udp, info) {
            (None, _) => UdpUse::Disabled,
            (Some(_), None) => UdpUse::NotAdvertised,
            (Some(udp), Some(info)) => match info.udp_port {
                None => UdpUse::NotAdvertised,
                Some(port) => {
                    let per_datagram = usize::try_from(info.limits.max_checks_per_datagram)
                        .unwrap_or(1)
                        .clamp(1, limits::MAX_CHECKS_PER_DATAGRAM);
                    check_by_udp(udp, relay, port, per_datagram, mailboxes, wanted).await
                }
            },
        }
    }

    /// Without the `udp` feature every check is HTTP.
    #[cfg(not(feature = "udp"))]
    #[allow(clippy::unused_async)]
    async fn udp_round(
        &self,
        _relay: &RelayUrl,
        _info: Option<&RelayInfo>,
        _mailboxes: &[MailboxPlan],
        _wanted: &mut [bool],
    ) -> UdpUse {
        UdpUse::Disabled
    }

    /// Polls the mailboxes at one relay: UDP first if advertised, then HTTP.
    async fn poll_relay(
        &self,
        relay: RelayUrl,
        mailboxes: Vec<MailboxPlan>,
    ) -> (RelayPoll, Vec<Fetched>) {
        let mut report = RelayPoll::new(relay.clone());
        let mut wanted: Vec<bool> = vec![true; mailboxes.len()];
        // The information document gives the UDP port and the relay's
        // limits; failing to reach it means the relay is down.
        let info = match self.transport.cached_info(&relay).await {
            Ok(info) => info,
            Err(error) => {
                report.errors.push(error);
                return (report, Vec::new());
            }
        };
        let limit = info.as_ref().map_or(self.receive_limit, |info| {
            self.receive_limit.min(info.limits.max_receive_limit).max(1)
        });
        report.udp = self
            .udp_round(&relay, info.as_ref(), &mailboxes, &mut wanted)
            .await;
        let by_http = wanted.iter().filter(|w| **w).count();
        match &report.udp {
            UdpUse::Answered { datagrams, .. } => tracing::info!(
                "{relay}: checked {} mailbox(es) over UDP ({datagrams} datagram(s)), {by_http} to fetch over HTTP",
                mailboxes.len()
            ),
            UdpUse::FellBack { reason } => tracing::info!(
                "{relay}: UDP check failed ({reason}); checking {by_http} mailbox(es) over HTTP"
            ),
            _ => tracing::info!("{relay}: checking {by_http} mailbox(es) over HTTP"),
        }
        let mut fetched = Vec::new();
        for (plan, wanted) in mailboxes.iter().zip(wanted) {
            if !wanted {
                report.served += 1;
                continue;
            }
            match self.fetch_mailbox(&relay, plan, limit, &mut report).await {
                Ok(messages) => {
                    report.served += 1;
                    if !messages.is_empty() {
                        tracing::info!(
                            "{relay}: received {} message(s) for {}",
                            messages.len(),
                            plan.nickname
                        );
                    }
                    fetched.extend(messages);
                }
                Err(error) if error.is_mailbox_refusal() => {
                    // Said at warn level: a refusal is something the user
                    // can fix (an API key, the relay's URL), and `events()`
                    // streams only deliveries.
                    tracing::warn!(%relay, nickname = %plan.nickname, "the relay refused this mailbox: {error}");
                    report.refused.push(MailboxRefusal {
                        nickname: plan.nickname.clone(),
                        mailbox: plan.key.public_key(),
                        error,
                    });
                }
                Err(error) => {
                    // Unreachable, or rate-limited as a whole: asking about
                    // the other mailboxes now would only fail the same way.
                    let stop = error.is_unreachable() || error.code() == Some(ErrorCode::TooOften);
                    report.errors.push(error);
                    if stop {
                        break;
                    }
                }
            }
        }
        (report, fetched)
    }

    /// HTTP `check` and `receive` of one mailbox at one relay, page by page,
    /// `limit` messages per page.
    async fn fetch_mailbox(
        &self,
        relay: &RelayUrl,
        plan: &MailboxPlan,
        limit: u32,
        report: &mut RelayPoll,
    ) -> Result<Vec<Fetched>, RelayError> {
        let transport = self.transport;
        let key = plan.key.public_key();
        let mut after = plan.after;
        let mut out = Vec::new();
        let mut retried_question = false;
        let mut pages = 0;
        while pages < MAX_PAGES {
            let check = Request {
                key,
                ext: plan.ext.clone(),
                op: Operation::Check { at: after },
            };
            report.http_checks += 1;
            let question = match transport.call(relay, &check).await? {
                Response::NotFound => break,
                Response::Found { question } => question,
                other => return Err(unexpected(&other)),
            };
            let answer = answer_question(&plan.key, &question, relay)?;
            let receive = Request {
                key,
                ext: plan.ext.clone(),
                op: Operation::Receive {
                    answer,
                    at: after,
                    limit,
                },
            };
            let messages = match transport.call(relay, &receive).await {
                Ok(response) => response
                    .into_messages()
                    .ok_or_else(|| unexpected(&Response::Done))?,
                // The question expired between check and receive: once more.
                Err(RelayError::Api(ApiError {
                    code: ErrorCode::NoQuestion,
                    ..
                })) if !retried_question => {
                    retried_question = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            pages += 1;
            let count = messages.len();
            for message in messages {
                if message.at <= after {
                    tracing::warn!(%relay, at = message.at.0, "relay returned a message at or before the cursor; ignored");
                    continue;
                }
                after = message.at;
                report.fetched += 1;
                out.push(Fetched {
                    mailbox: key,
                    relay: relay.clone(),
                    message,
                });
            }
            if count < limit as usize {
                break;
            }
        }
        Ok(out)
    }
}

/// How long a held check must have been held for its `found: false` to
/// count as the end of its wait, as a fraction of the wait: an earlier one
/// (a relay that stopped holding, or shut down) makes the client pause
/// before it asks again.
const EARLY_ANSWER_FRACTION: u32 = 2;

/// Longest pause after a held check answered early (see
/// [`EARLY_ANSWER_FRACTION`]): long enough not to hammer a relay that no
/// longer holds checks, short enough that a restarted relay is held on
/// again quickly.
const EARLY_ANSWER_PAUSE: Duration = Duration::from_secs(2);

/// How a wait for news ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Poll now: a relay has news, the interval is over, or a relay failed
    /// or stopped holding checks.
    Poll,
    /// A held check's wait ended without news: hold again (after looking
    /// whether the mailboxes changed meanwhile).
    Expired,
}

/// Waits until one relay has news or the interval is over: held checks at
/// the relays of `waits` that hold them, `interval` for the others. A relay
/// whose held check fails (unreachable, "Too often" past its caps...) falls
/// back to `interval`.
pub(crate) async fn wait_for_news(
    transport: &Transport,
    waits: BTreeMap<RelayUrl, RelayWait>,
    interval: Duration,
) -> Waited {
    let mut waiting: Vec<BoxFuture<'_, Waited>> = Vec::new();
    let mut poll_at_interval = waits.is_empty();
    for (relay, wait) in waits {
        match wait {
            RelayWait::Interval => poll_at_interval = true,
            RelayWait::Held { requests, wait } => {
                waiting.push(Box::pin(hold_at(
                    transport, relay, requests, wait, interval,
                )));
            }
        }
    }
    if poll_at_interval {
        waiting.push(Box::pin(async move {
            tokio::time::sleep(interval).await;
            Waited::Poll
        }));
    }
    futures::future::select_all(waiting).await.0
}

/// Holds `requests` at `relay` until one is answered: with news, or at the
/// end of its wait (`Expired`); after an error, waits `interval`.
async fn hold_at(
    transport: &Transport,
    relay: RelayUrl,
    requests: Vec<Request>,
    wait: Duration,
    interval: Duration,
) -> Waited {
    let relay = &relay;
    let held = requests.iter().map(|request| {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            match transport.call_held(relay, request, wait).await {
                Ok(Response::NotFound) if started.elapsed() < wait / EARLY_ANSWER_FRACTION => {
                    tracing::info!(
                        "{relay}: a held check ended early; pausing before the next poll"
                    );
                    tokio::time::sleep(interval.min(EARLY_ANSWER_PAUSE)).await;
                    Waited::Poll
                }
                Ok(Response::NotFound) => Waited::Expired,
                Ok(_) => {
                    tracing::debug!("{relay}: a held check found news");
                    Waited::Poll
                }
                Err(error) => {
                    tracing::info!(
                        "{relay}: held check failed ({error}); polling it at the interval"
                    );
                    tokio::time::sleep(interval).await;
                    Waited::Poll
                }
            }
        })
    });
    futures::future::select_all(held).await.0
}

/// Polls forever with `options`' interval, jitter and backoff, calling
/// `poll` for each round, and yields each delivery. Between successful
/// rounds it calls `wait` with the interval (plus jitter): the waiting
/// strategy (a sleep, or [`wait_for_news`]). A round where every relay
/// failed yields an error (after queueing whatever it delivered) and backs
/// off with a plain sleep; the stream goes on.
pub(crate) fn event_stream<F, Fut, W, WFut>(options: PollOptions, poll: F, wait: W) -> EventStream
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Poll, PollError>> + Send + 'static,
    W: Fn(Duration) -> WFut + Send + Sync + 'static,
    WFut: Future<Output = ()> + Send + 'static,
{
    /// What comes before the next round.
    enum Pause {
        /// Wait for news, at most this long at relays that poll.
        News(Duration),
        /// Back off this long.
        Backoff(Duration),
    }
    struct Loop<F, W> {
        poll: F,
        wait: W,
        options: PollOptions,
        queue: VecDeque<Delivery>,
        pause: Option<Pause>,
        failures: u32,
    }
    let start = Loop {
        poll,
        wait,
        options,
        queue: VecDeque::new(),
        pause: None,
        failures: 0,
    };
    futures::stream::unfold(start, |mut state| async move {
        loop {
            if let Some(delivery) = state.queue.pop_front() {
                return Some((Ok(delivery), state));
            }
            match state.pause.take() {
                Some(Pause::News(interval)) => (state.wait)(interval).await,
                Some(Pause::Backoff(delay)) => tokio::time::sleep(delay).await,
                None => {}
            }
            let result = match (state.poll)().await {
                Ok(poll) if poll.report.all_failed() => {
                    state.queue.extend(poll.deliveries);
                    Err(PollError::AllRelaysFailed(poll.report))
                }
                other => other,
            };
            match result {
                Ok(poll) => {
                    state.failures = 0;
                    state.pause = Some(Pause::News(state.options.delay(0)));
                    state.queue.extend(poll.deliveries);
                }
                Err(error) => {
                    state.failures = state.failures.saturating_add(1);
                    state.pause = Some(Pause::Backoff(state.options.delay(state.failures)));
                    return Some((Err(error), state));
                }
            }
        }
    })
    .boxed()
}

/// One UDP round at a relay: every wanted mailbox, batched by ext. Marks
/// the mailboxes the relay says are empty as not wanted.
#[cfg(feature = "udp")]
async fn check_by_udp(
    udp: &UdpChecker,
    relay: &RelayUrl,
    port: u16,
    per_datagram: usize,
    mailboxes: &[MailboxPlan],
    wanted: &mut [bool],
) -> UdpUse {
    let Ok(url) = reqwest::Url::parse(relay.as_str()) else {
        return UdpUse::NotAdvertised;
    };
    let Some(host) = url.host() else {
        return UdpUse::NotAdvertised;
    };
    // Group by ext (a datagram carries one), then cut into datagrams.
    let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (index, plan) in mailboxes.iter().enumerate() {
        if plan
            .ext
            .as_ref()
            .is_none_or(|e| e.len() <= limits::MAX_DATAGRAM_EXT_LEN)
        {
            groups.entry(plan.ext.clone()).or_default().push(index);
        }
    }
    let batches: Vec<(Option<String>, Vec<usize>)> = groups
        .into_iter()
        .flat_map(|(ext, indices)| {
            indices
                .chunks(per_datagram)
                .map(|chunk| (ext.clone(), chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    if batches.is_empty() {
        return UdpUse::Idle;
    }
    let host = &host;
    let results = futures::future::join_all(batches.iter().map(|(ext, indices)| {
        let checks = indices
            .iter()
            .map(|&i| MailboxCheck {
                key: *mailboxes[i].key.public_key().as_bytes(),
                at: mailboxes[i].after,
            })
            .collect();
        udp.check(host, port, ext.clone(), checks)
    }))
    .await;
    let mut answered = 0;
    let mut failure = None;
    let mut observed = None;
    for ((_, indices), result) in batches.iter().zip(results) {
        match result {
            Ok((statuses, seen_from)) => {
                answered += 1;
                observed = observed.or(seen_from);
                for (&index, status) in indices.iter().zip(statuses) {
                    if status == CheckStatus::NotFound {
                        wanted[index] = false;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%relay, "UDP check failed, falling back to HTTP: {e}");
                failure = Some(e.to_string());
            }
        }
    }
    match failure {
        Some(reason) => UdpUse::FellBack { reason },
        None => UdpUse::Answered {
            datagrams: answered,
            observed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[tokio::test(start_paused = true)]
    async fn a_poll_where_every_relay_failed_still_hands_over_its_deliveries() {
        let relay = RelayUrl::parse("http://127.0.0.1:1/").unwrap();
        let failed = move || {
            let mut relay_poll = RelayPoll::new(relay.clone());
            relay_poll
                .errors
                .push(RelayError::Connect("reset".to_owned()));
            let poll = Poll {
                deliveries: vec![Delivery {
                    event: Event::PeerUnshared {
                        nickname: "Bob".to_owned(),
                    },
                    id: [7; 32],
                    sources: Vec::new(),
                }],
                report: PollReport {
                    relays: vec![relay_poll],
                },
            };
            async move { Ok(poll) }
        };
        let mut events = event_stream(
            PollOptions::every(Duration::from_secs(1)),
            failed,
            tokio::time::sleep,
        );
        assert!(matches!(
            events.next().await,
            Some(Err(PollError::AllRelaysFailed(_)))
        ));
        let delivery = events.next().await.unwrap().unwrap();
        assert_eq!(delivery.event.nickname(), "Bob");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let options = PollOptions {
            interval: Duration::from_secs(10),
            jitter: Duration::ZERO,
            max_backoff: Duration::from_secs(60),
            held_checks: true,
        };
        assert_eq!(options.delay(0), Duration::from_secs(10));
        assert_eq!(options.delay(1), Duration::from_secs(20));
        assert_eq!(options.delay(2), Duration::from_secs(40));
        assert_eq!(options.delay(3), Duration::from_secs(60));
        assert_eq!(options.delay(40), Duration::from_secs(60));
        let jittery = PollOptions::every(Duration::from_secs(10));
        for _ in 0..50 {
            let d = jittery.delay(0);
            assert!(d >= Duration::from_secs(10) && d < Duration::from_secs(11));
        }
    }
}
