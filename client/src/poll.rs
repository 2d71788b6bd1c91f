//! Checking and receiving: one poll of every mailbox at every relay, the
//! checks each message must pass, delivery to the app, acknowledgement, and
//! the polling loop as a stream.
//!
//! A poll runs all relays concurrently. At each relay it first asks about
//! all mailboxes in one UDP datagram (where the relay advertises UDP), then
//! uses HTTP `check` and `receive` (answering the relay's question) only for
//! mailboxes that have something, or all of them when UDP is not available
//! or stays silent. Messages are then processed one by one, oldest first:
//!
//! - a message whose id (SHA-256 of the sealed bytes) was already processed
//!   or is being delivered is a duplicate (the same message via another
//!   relay, or a replay) and is skipped;
//! - a message that does not open, is not a valid signed envelope for this
//!   mailbox, is too old, or comes from a key that is not the pinned peer is
//!   rejected with a logged reason; a `hello` on a shared link must carry a
//!   valid link proof;
//! - everything else becomes a [`Delivery`].
//!
//! Cursors move past a message only when it is processed: at once for
//! duplicates and rejects, at [`Client::ack`] for deliveries, and only over
//! a gap-free prefix, so nothing unprocessed is ever skipped.
//!
//! This module does not send app messages; the protocol replies it makes
//! (`link-used`, mailbox deletion after an `unshare`) go through the client.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use connectoid_protocol::api::{ApiError, ErrorCode, Message, Operation, Request, Response};
use connectoid_protocol::envelope::{self, Envelope, Kind};
use connectoid_protocol::link::{Link, RelayUrl};
use connectoid_protocol::udp::{CheckStatus, MailboxCheck};
use connectoid_protocol::{At, PublicKey, SafetyCode, SecretKey, b64, limits, seal};
use futures::stream::{BoxStream, StreamExt as _};

use crate::client::{Client, State};
use crate::error::PollError;
use crate::event::{
    Delivery, Event, LINK_ALREADY_USED, Poll, PollReport, Rejection, RelayPoll, Source, UdpUse,
};
use crate::profile::{MailboxRecord, PeerRecord, Role, Status, StoredReply};
use crate::relay::{RelayError, answer_question, unexpected};
use crate::rng::{jitter, now_ms, system_rng};

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
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
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

/// The stream of deliveries from [`Client::events`].
pub type EventStream = BoxStream<'static, Result<Delivery, PollError>>;

/// One slot of a mailbox's copy at one relay: a fetched message, processed or not.
#[derive(Debug, Clone, Copy)]
struct Slot {
    done: bool,
}

/// In-memory delivery state: what was fetched and not yet processed.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    /// Per (mailbox, relay): fetched messages after the stored cursor.
    slots: HashMap<(PublicKey, RelayUrl), BTreeMap<At, Slot>>,
    /// Deliveries handed out and not yet acknowledged, by message id.
    pending: HashMap<[u8; 32], Vec<Source>>,
}

impl Inflight {
    pub(crate) fn forget_mailbox(&mut self, key: &PublicKey) {
        self.slots.retain(|(mailbox, _), _| mailbox != key);
        for sources in self.pending.values_mut() {
            sources.retain(|s| &s.mailbox != key);
        }
    }
}

/// One mailbox to poll at one relay.
#[derive(Clone)]
struct MailboxPlan {
    key: SecretKey,
    ext: Option<String>,
    /// Fetch after this: the stored cursor or the newest fetched message.
    after: At,
}

/// A message as fetched.
struct Fetched {
    mailbox: PublicKey,
    relay: RelayUrl,
    message: Message,
}

/// Protocol work that a processed message calls for, done after the
/// profile lock is released (always boxed inside a verdict).
#[allow(clippy::large_enum_variant)]
enum Followup {
    /// Tell a later user of a spent link that it was used.
    LinkUsed { from: MailboxRecord, to: Link },
    /// Delete a mailbox at its relays (the peer unshared).
    DeleteMailbox(PeerRecord),
}

/// What processing one message decided.
enum Verdict {
    Deliver(Event, Option<Box<Followup>>),
    Reject(String),
}

impl Client {
    /// Polls every mailbox at every relay once. Returns the new deliveries
    /// (acknowledge each with [`Client::ack`]) and what each relay did.
    /// Relay failures are in the report, not errors.
    pub async fn poll_once(&self) -> Result<Poll, PollError> {
        let now = now_ms();
        let plans = self.plan(now).await;
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
        let (deliveries, followups) = self.process(fetched, &mut report, now).await?;
        for followup in followups {
            self.follow_up(followup).await;
        }
        Ok(Poll { deliveries, report })
    }

    /// Marks a delivery as processed: remembers its id (so no copy of it is
    /// delivered again, even after a restart) and moves the cursors past it.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), crate::ProfileError> {
        let mut state = self.inner.state.lock().await;
        let sources = state
            .inflight
            .pending
            .remove(&delivery.id)
            .unwrap_or_else(|| delivery.sources.clone());
        let until = now_ms() + limits::ENVELOPE_MAX_AGE_MS + limits::ENVELOPE_MAX_SKEW_MS;
        state.data.seen.insert(b64::encode(&delivery.id), until);
        for source in &sources {
            if let Some(slot) = state
                .inflight
                .slots
                .get_mut(&(source.mailbox, source.relay.clone()))
                .and_then(|slots| slots.get_mut(&source.at))
            {
                slot.done = true;
            }
            advance(&mut state, &source.mailbox, &source.relay);
        }
        state.save(&self.inner.store)
    }

    /// Gives a delivery back unprocessed: it is fetched and delivered again
    /// at the next poll.
    pub async fn release(&self, delivery: &Delivery) {
        let mut state = self.inner.state.lock().await;
        let sources = state
            .inflight
            .pending
            .remove(&delivery.id)
            .unwrap_or_else(|| delivery.sources.clone());
        for source in sources {
            if let Some(slots) = state
                .inflight
                .slots
                .get_mut(&(source.mailbox, source.relay.clone()))
            {
                // Later slots go too, so the fetch position falls back to
                // before this message.
                slots.retain(|at, _| *at < source.at);
            }
        }
    }

    /// Polls forever, with `options`' interval, jitter and backoff, and
    /// yields each delivery. A poll where every relay failed yields an
    /// error and backs off; the stream goes on. Acknowledge each delivery
    /// with [`Client::ack`].
    pub fn events(&self, options: PollOptions) -> EventStream {
        struct Loop {
            client: Client,
            options: PollOptions,
            queue: VecDeque<Delivery>,
            wait: Option<Duration>,
            failures: u32,
        }
        let start = Loop {
            client: self.clone(),
            options,
            queue: VecDeque::new(),
            wait: None,
            failures: 0,
        };
        futures::stream::unfold(start, |mut state| async move {
            loop {
                if let Some(delivery) = state.queue.pop_front() {
                    return Some((Ok(delivery), state));
                }
                if let Some(wait) = state.wait.take() {
                    tokio::time::sleep(wait).await;
                }
                let result = state.client.poll_once().await;
                let result = match result {
                    Ok(poll) if poll.report.all_failed() => {
                        Err(PollError::AllRelaysFailed(poll.report))
                    }
                    other => other,
                };
                match result {
                    Ok(poll) => {
                        state.failures = 0;
                        state.wait = Some(state.options.delay(0));
                        state.queue.extend(poll.deliveries);
                    }
                    Err(error) => {
                        state.failures = state.failures.saturating_add(1);
                        state.wait = Some(state.options.delay(state.failures));
                        return Some((Err(error), state));
                    }
                }
            }
        })
        .boxed()
    }

    /// Which mailboxes to check at which relay, grouped by relay.
    async fn plan(&self, now: u64) -> BTreeMap<RelayUrl, Vec<MailboxPlan>> {
        let state = self.inner.state.lock().await;
        let mut plans: BTreeMap<RelayUrl, Vec<MailboxPlan>> = BTreeMap::new();
        for peer in &state.data.peers {
            if peer.status == Status::LinkUsed {
                continue;
            }
            for mailbox in std::iter::once(&peer.mailbox).chain(&peer.spent_link) {
                let key = mailbox.public_key();
                for entry in mailbox.relays_to_check(now) {
                    let stored = mailbox.cursors.get(&entry.url).copied().unwrap_or(At::ZERO);
                    let fetched = state
                        .inflight
                        .slots
                        .get(&(key, entry.url.clone()))
                        .and_then(|slots| slots.keys().next_back().copied())
                        .unwrap_or(At::ZERO);
                    plans
                        .entry(entry.url.clone())
                        .or_default()
                        .push(MailboxPlan {
                            key: mailbox.key.0.clone(),
                            ext: mailbox.ext_for(&entry),
                            after: stored.max(fetched),
                        });
                }
            }
        }
        plans
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
        let info = match self.cached_info(&relay).await {
            Ok(info) => info,
            Err(error) => {
                report.errors.push(error);
                return (report, Vec::new());
            }
        };
        let limit = info.as_ref().map_or(self.inner.receive_limit, |info| {
            self.inner
                .receive_limit
                .min(info.limits.max_receive_limit)
                .max(1)
        });
        report.udp = match (&self.inner.udp, &info) {
            (None, _) => UdpUse::Disabled,
            (Some(_), None) => UdpUse::NotAdvertised,
            (Some(udp), Some(info)) => match info.udp_port {
                None => UdpUse::NotAdvertised,
                Some(port) => {
                    let per_datagram = usize::try_from(info.limits.max_checks_per_datagram)
                        .unwrap_or(1)
                        .clamp(1, limits::MAX_CHECKS_PER_DATAGRAM);
                    udp_round(udp, &relay, port, per_datagram, &mailboxes, &mut wanted).await
                }
            },
        };
        let mut fetched = Vec::new();
        for (plan, wanted) in mailboxes.iter().zip(wanted) {
            if !wanted {
                continue;
            }
            match self.fetch_mailbox(&relay, plan, limit, &mut report).await {
                Ok(messages) => fetched.extend(messages),
                Err(error) => {
                    let unreachable = error.is_unreachable();
                    report.errors.push(error);
                    if unreachable {
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
        let transport = &self.inner.transport;
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

    /// Processes fetched messages under the profile lock, oldest first.
    async fn process(
        &self,
        mut fetched: Vec<Fetched>,
        report: &mut PollReport,
        now: u64,
    ) -> Result<(Vec<Delivery>, Vec<Followup>), PollError> {
        fetched.sort_by_key(|f| f.message.at);
        let mut state = self.inner.state.lock().await;
        let mut deliveries: Vec<Delivery> = Vec::new();
        let mut followups = Vec::new();
        let mut changed = false;
        for item in fetched {
            let relay_report = report.relays.iter_mut().find(|r| r.relay == item.relay);
            let slot_key = (item.mailbox, item.relay.clone());
            let stored = state
                .data
                .mailbox_mut(&item.mailbox)
                .map(|m| m.cursors.get(&item.relay).copied().unwrap_or(At::ZERO));
            let Some(stored) = stored else {
                continue; // The peer was unshared earlier in this batch.
            };
            if item.message.at <= stored
                || state
                    .inflight
                    .slots
                    .get(&slot_key)
                    .is_some_and(|s| s.contains_key(&item.message.at))
            {
                continue;
            }
            let id = seal::message_id(&item.message.data);
            let source = Source {
                mailbox: item.mailbox,
                relay: item.relay.clone(),
                at: item.message.at,
            };
            let done = if state.data.seen.contains_key(&b64::encode(&id)) {
                if let Some(r) = relay_report {
                    r.duplicates += 1;
                }
                true
            } else if let Some(sources) = state.inflight.pending.get_mut(&id) {
                sources.push(source.clone());
                if let Some(delivery) = deliveries.iter_mut().find(|d| d.id == id) {
                    delivery.sources.push(source);
                }
                if let Some(r) = relay_report {
                    r.duplicates += 1;
                }
                false
            } else {
                changed = true;
                let verdict = if let Some(peer) = state.data.peer_by_mailbox_mut(&item.mailbox) {
                    judge(peer, &item.message.data, now)
                } else if let Some(peer) = state.data.peer_by_spent_link_mut(&item.mailbox) {
                    judge_spent_link(peer, &item.message.data, now)
                } else {
                    continue;
                };
                let nickname = state
                    .data
                    .peers
                    .iter()
                    .find(|p| {
                        p.mailbox.public_key() == item.mailbox
                            || p.spent_link
                                .as_ref()
                                .is_some_and(|m| m.public_key() == item.mailbox)
                    })
                    .map(|p| p.nickname.clone())
                    .unwrap_or_default();
                match verdict {
                    Verdict::Reject(reason) => {
                        tracing::warn!(relay = %item.relay, %nickname, "rejected a message: {reason}");
                        if let Some(r) = relay_report {
                            r.rejected.push(Rejection {
                                relay: item.relay.clone(),
                                reason,
                            });
                        }
                        true
                    }
                    Verdict::Deliver(event, followup) => {
                        if let Some(Followup::DeleteMailbox(gone)) = followup.as_deref() {
                            let key = gone.mailbox.public_key();
                            state.data.peers.retain(|p| p.mailbox.public_key() != key);
                        }
                        followups.extend(followup.map(|f| *f));
                        state.inflight.pending.insert(id, vec![source.clone()]);
                        deliveries.push(Delivery {
                            event,
                            id,
                            sources: vec![source],
                        });
                        false
                    }
                }
            };
            state
                .inflight
                .slots
                .entry(slot_key)
                .or_default()
                .insert(item.message.at, Slot { done });
            changed |= advance(&mut state, &item.mailbox, &item.relay);
        }
        if changed {
            state.save(&self.inner.store)?;
        }
        Ok((deliveries, followups))
    }

    async fn follow_up(&self, followup: Followup) {
        match followup {
            Followup::LinkUsed { from, to } => {
                let envelope = Envelope {
                    kind: Kind::LinkUsed,
                    to: to.key,
                    from: from.reply_value(),
                    ts: now_ms(),
                    proof: None,
                    body: serde_json::json!({ "error": LINK_ALREADY_USED }),
                };
                match envelope::seal_envelope(&mut system_rng(), &from.key.0, &envelope) {
                    Ok(sealed) => {
                        let report = self.send_sealed(&to, sealed).await;
                        tracing::info!(to = %to.key, "told a later user of a spent link: {report}");
                    }
                    Err(e) => tracing::warn!("cannot seal a link-used notice: {e}"),
                }
            }
            Followup::DeleteMailbox(peer) => {
                let mut outcomes = self.delete_mailbox(&peer.mailbox).await;
                if let Some(spent) = &peer.spent_link {
                    outcomes.extend(self.delete_mailbox(spent).await);
                }
                for outcome in outcomes {
                    if let Err(e) = outcome.result {
                        tracing::warn!(relay = %outcome.relay, "could not delete a mailbox after unshare: {e}");
                    }
                }
                self.inner
                    .state
                    .lock()
                    .await
                    .inflight
                    .forget_mailbox(&peer.mailbox.public_key());
            }
        }
    }
}

/// Moves the stored cursor of (mailbox, relay) over the processed prefix of
/// its fetched messages. Returns whether it moved.
fn advance(state: &mut State, mailbox: &PublicKey, relay: &RelayUrl) -> bool {
    let Some(slots) = state.inflight.slots.get_mut(&(*mailbox, relay.clone())) else {
        return false;
    };
    let mut newest = None;
    while let Some(entry) = slots.first_entry() {
        if !entry.get().done {
            break;
        }
        newest = Some(*entry.key());
        entry.remove();
    }
    let Some(newest) = newest else {
        return false;
    };
    if let Some(record) = state.data.mailbox_mut(mailbox) {
        let cursor = record.cursors.entry(relay.clone()).or_default();
        if newest > *cursor {
            *cursor = newest;
            return true;
        }
    }
    false
}

/// Opens a message for `peer` and decides what it means. Updates the peer
/// record (pinning, status, relay set) for messages it accepts.
fn judge(peer: &mut PeerRecord, sealed: &[u8], now: u64) -> Verdict {
    let envelope = match envelope::open_envelope(&peer.mailbox.key.0, sealed, now) {
        Ok(envelope) => envelope,
        Err(e) => return Verdict::Reject(e.to_string()),
    };
    let our_key = peer.mailbox.public_key();
    let pinned = peer.their.as_ref().map(|t| t.0.key);
    let nickname = peer.nickname.clone();
    if pinned == Some(envelope.from.key) {
        if envelope.ts > peer.their_ts {
            peer.their = Some(StoredReply(envelope.from.clone()));
            peer.their_ts = envelope.ts;
        }
        let sharer = matches!(peer.role, Role::Sharer { .. });
        let event = match envelope.kind {
            Kind::Hello if sharer => Event::PeerConnected {
                nickname,
                key: envelope.from.key,
                safety_code: SafetyCode::new(&our_key, &envelope.from.key),
                body: envelope.body,
            },
            Kind::LinkUsed if !sharer => {
                peer.status = Status::LinkUsed;
                return Verdict::Deliver(Event::LinkAlreadyUsed { nickname }, None);
            }
            Kind::LinkUsed => {
                return Verdict::Reject("link-used sent to the link's owner".to_owned());
            }
            Kind::Unshare => {
                return Verdict::Deliver(
                    Event::PeerUnshared { nickname },
                    Some(Box::new(Followup::DeleteMailbox(peer.clone()))),
                );
            }
            Kind::Relays => Event::RelaysChanged {
                nickname,
                relays: envelope.from.relays.iter().map(|e| e.url.clone()).collect(),
            },
            kind => Event::Message {
                nickname,
                kind,
                body: envelope.body,
            },
        };
        if peer.status == Status::Accepted {
            peer.status = Status::Connected;
        }
        return Verdict::Deliver(event, None);
    }
    let Role::Sharer { secret, .. } = &peer.role else {
        return Verdict::Reject(format!(
            "sender {} is not this mailbox's peer",
            envelope.from.key
        ));
    };
    if envelope.kind != Kind::Hello {
        return Verdict::Reject(format!(
            "{} from {}, who is not this mailbox's peer",
            envelope.kind.as_str(),
            envelope.from.key
        ));
    }
    if let Err(e) = envelope.check_proof(&secret.0) {
        return Verdict::Reject(format!("hello from {}: {e}", envelope.from.key));
    }
    match pinned {
        None => {
            peer.their = Some(StoredReply(envelope.from.clone()));
            peer.their_ts = envelope.ts;
            peer.status = Status::Connected;
            Verdict::Deliver(
                Event::PeerConnected {
                    nickname,
                    key: envelope.from.key,
                    safety_code: SafetyCode::new(&our_key, &envelope.from.key),
                    body: envelope.body,
                },
                None,
            )
        }
        Some(connected) => Verdict::Deliver(
            Event::LinkReuseRefused {
                nickname,
                connected,
                refused: envelope.from.key,
            },
            Some(Box::new(Followup::LinkUsed {
                from: peer.mailbox.clone(),
                to: envelope.from,
            })),
        ),
    }
}

/// Opens a message sent to the spent link of `peer` (the link key, after
/// the first direct connection rotated the mailbox key). Only a `hello`
/// with a valid link proof means anything there: someone else holds the
/// link, and is told it was used. Everything else is refused.
fn judge_spent_link(peer: &mut PeerRecord, sealed: &[u8], now: u64) -> Verdict {
    let Some(spent) = &peer.spent_link else {
        return Verdict::Reject("no spent link".to_owned());
    };
    let envelope = match envelope::open_envelope(&spent.key.0, sealed, now) {
        Ok(envelope) => envelope,
        Err(e) => return Verdict::Reject(e.to_string()),
    };
    let Role::Sharer { secret, .. } = &peer.role else {
        return Verdict::Reject("a spent link on an accepted peer".to_owned());
    };
    if envelope.kind != Kind::Hello {
        return Verdict::Reject(format!(
            "{} sent to a retired link key",
            envelope.kind.as_str()
        ));
    }
    if let Err(e) = envelope.check_proof(&secret.0) {
        return Verdict::Reject(format!("hello from {}: {e}", envelope.from.key));
    }
    let Some(connected) = peer.their.as_ref().map(|t| t.0.key) else {
        return Verdict::Reject("a spent link without a peer".to_owned());
    };
    Verdict::Deliver(
        Event::LinkReuseRefused {
            nickname: peer.nickname.clone(),
            connected,
            refused: envelope.from.key,
        },
        Some(Box::new(Followup::LinkUsed {
            from: spent.clone(),
            to: envelope.from,
        })),
    )
}

/// One UDP round at a relay: every wanted mailbox, batched by ext. Marks
/// the mailboxes the relay says are empty as not wanted.
async fn udp_round(
    udp: &crate::udp::UdpChecker,
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

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let options = PollOptions {
            interval: Duration::from_secs(10),
            jitter: Duration::ZERO,
            max_backoff: Duration::from_secs(60),
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
