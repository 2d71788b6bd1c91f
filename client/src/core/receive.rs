//! Receiving, as decisions: the in-flight state of fetched messages, the
//! checks each message must pass, de-duplication, deliveries, cursors and
//! acknowledgement.
//!
//! Messages are processed one by one, oldest first:
//!
//! - a message whose id (SHA-256 of the sealed bytes) was already processed
//!   or is being delivered is a duplicate (the same message via another
//!   relay, or a replay) and is skipped;
//! - a message that does not open, is not a valid signed envelope for this
//!   mailbox, is too old, or comes from a key that is not the pinned peer is
//!   rejected with a reason; a `hello` on a shared link must carry a valid
//!   link proof;
//! - everything else becomes a [`Delivery`].
//!
//! Cursors move past a message only when it is processed: at once for
//! duplicates and rejects, at [`PeerBook::ack`] for deliveries, and only
//! over a gap-free prefix, so nothing unprocessed is ever skipped.

use std::collections::{BTreeMap, HashMap};

use connectoid_protocol::api::Message;
use connectoid_protocol::envelope::{self, Envelope, Kind};
use connectoid_protocol::link::RelayUrl;
use connectoid_protocol::{At, PublicKey, b64, limits, seal};
use rand_core::CryptoRng;

use super::judge::{self, Verdict};
use super::{Followup, Outgoing, PeerBook};
use crate::event::{Delivery, LINK_ALREADY_USED, PollReport, Rejection, Source};

/// One slot of a mailbox's copy at one relay: a fetched message, processed or not.
#[derive(Debug, Clone, Copy)]
struct Slot {
    done: bool,
}

/// In-memory delivery state: what was fetched and not yet processed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Inflight {
    /// Per (mailbox, relay): fetched messages after the stored cursor.
    slots: HashMap<(PublicKey, RelayUrl), BTreeMap<At, Slot>>,
    /// Deliveries handed out and not yet acknowledged, by message id.
    pending: HashMap<[u8; 32], Vec<Source>>,
}

impl Inflight {
    /// Forgets everything about the mailbox with key `key`.
    pub(crate) fn forget_mailbox(&mut self, key: &PublicKey) {
        self.retain_mailboxes(|mailbox| mailbox != key);
    }

    /// Keeps the state of the mailboxes for which `keep` holds.
    pub(crate) fn retain_mailboxes(&mut self, keep: impl Fn(&PublicKey) -> bool) {
        self.slots.retain(|(mailbox, _), _| keep(mailbox));
        for sources in self.pending.values_mut() {
            sources.retain(|s| keep(&s.mailbox));
        }
    }

    /// The newest message fetched from (mailbox, relay), or zero.
    pub(crate) fn newest_fetched(&self, key: &PublicKey, relay: &RelayUrl) -> At {
        self.slots
            .get(&(*key, relay.clone()))
            .and_then(|slots| slots.keys().next_back().copied())
            .unwrap_or(At::ZERO)
    }
}

/// A message as fetched from one relay.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    /// The mailbox it was fetched from.
    pub(crate) mailbox: PublicKey,
    /// The relay.
    pub(crate) relay: RelayUrl,
    /// The message.
    pub(crate) message: Message,
}

/// What [`PeerBook::handle_fetched`] decided.
#[derive(Debug, Default)]
pub(crate) struct Handled {
    /// New deliveries, oldest first.
    pub(crate) deliveries: Vec<Delivery>,
    /// Protocol work for the shell.
    pub(crate) followups: Vec<Followup>,
}

impl PeerBook {
    /// Processes fetched messages, oldest first: skips duplicates, judges
    /// the others, records rejections and duplicates in `report`, moves
    /// cursors over what is done, and returns the deliveries and the
    /// follow-ups.
    pub(crate) fn handle_fetched<R: CryptoRng + ?Sized>(
        &mut self,
        now: u64,
        rng: &mut R,
        mut fetched: Vec<Fetched>,
        report: &mut PollReport,
    ) -> Handled {
        fetched.sort_by_key(|f| f.message.at);
        let mut out = Handled::default();
        for item in fetched {
            let mut relay_report = report.relays.iter_mut().find(|r| r.relay == item.relay);
            let slot_key = (item.mailbox, item.relay.clone());
            let Some(stored) = self
                .data
                .mailbox_mut(&item.mailbox)
                .map(|m| m.cursors.get(&item.relay).copied().unwrap_or(At::ZERO))
            else {
                continue; // The peer was unshared earlier in this batch.
            };
            if item.message.at <= stored
                || self
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
            let done = if self.data.seen.contains_key(&b64::encode(&id)) {
                if let Some(r) = relay_report.as_deref_mut() {
                    r.duplicates += 1;
                }
                true
            } else if let Some(sources) = self.inflight.pending.get_mut(&id) {
                sources.push(source.clone());
                if let Some(delivery) = out.deliveries.iter_mut().find(|d| d.id == id) {
                    delivery.sources.push(source);
                }
                if let Some(r) = relay_report.as_deref_mut() {
                    r.duplicates += 1;
                }
                false
            } else {
                let verdict = if let Some(peer) = self.data.peer_by_mailbox_mut(&item.mailbox) {
                    judge::judge(peer, &item.message.data, now)
                } else if let Some(peer) = self.data.peer_by_spent_link_mut(&item.mailbox) {
                    judge::judge_spent_link(peer, &item.message.data, now)
                } else {
                    continue;
                };
                match verdict {
                    Verdict::Reject(reason) => {
                        tracing::warn!(relay = %item.relay, "rejected a message: {reason}");
                        if let Some(r) = relay_report {
                            r.rejected.push(Rejection {
                                relay: item.relay.clone(),
                                reason,
                            });
                        }
                        true
                    }
                    Verdict::Deliver(event, followup) => {
                        if let Some(followup) = followup {
                            out.followups.extend(self.followup(now, rng, *followup));
                        }
                        self.inflight.pending.insert(id, vec![source.clone()]);
                        out.deliveries.push(Delivery {
                            event,
                            id,
                            sources: vec![source],
                        });
                        false
                    }
                }
            };
            self.inflight
                .slots
                .entry(slot_key)
                .or_default()
                .insert(item.message.at, Slot { done });
            self.advance(&item.mailbox, &item.relay);
        }
        out
    }

    /// Turns a judge's follow-up into work for the shell; a peer that
    /// unshared leaves the book at once.
    fn followup<R: CryptoRng + ?Sized>(
        &mut self,
        now: u64,
        rng: &mut R,
        followup: judge::Followup,
    ) -> Option<Followup> {
        match followup {
            judge::Followup::LinkUsed { from, to } => {
                let envelope = Envelope {
                    kind: Kind::LinkUsed,
                    to: to.key,
                    from: from.reply_value(),
                    ts: now,
                    proof: None,
                    body: serde_json::json!({ "error": LINK_ALREADY_USED }),
                };
                match envelope::seal_envelope(rng, &from.key.0, &envelope) {
                    Ok(sealed) => Some(Followup::Send(Outgoing { to, sealed })),
                    Err(e) => {
                        tracing::warn!("cannot seal a link-used notice: {e}");
                        None
                    }
                }
            }
            judge::Followup::DeleteMailbox(gone) => {
                let key = gone.mailbox.public_key();
                self.data.peers.retain(|p| p.mailbox.public_key() != key);
                Some(Followup::DeleteMailboxes(
                    std::iter::once(gone.mailbox)
                        .chain(gone.spent_link)
                        .collect(),
                ))
            }
        }
    }

    /// Marks a delivery as processed: remembers its id until it is too old
    /// to be accepted again, and moves the cursors past it.
    pub(crate) fn ack(&mut self, now: u64, delivery: &Delivery) {
        let sources = self
            .inflight
            .pending
            .remove(&delivery.id)
            .unwrap_or_else(|| delivery.sources.clone());
        let until = now + limits::ENVELOPE_MAX_AGE_MS + limits::ENVELOPE_MAX_SKEW_MS;
        self.data.seen.insert(b64::encode(&delivery.id), until);
        for source in &sources {
            if let Some(slot) = self
                .inflight
                .slots
                .get_mut(&(source.mailbox, source.relay.clone()))
                .and_then(|slots| slots.get_mut(&source.at))
            {
                slot.done = true;
            }
            self.advance(&source.mailbox, &source.relay);
        }
    }

    /// Gives a delivery back unprocessed: the next poll fetches it again.
    pub(crate) fn release(&mut self, delivery: &Delivery) {
        let sources = self
            .inflight
            .pending
            .remove(&delivery.id)
            .unwrap_or_else(|| delivery.sources.clone());
        for source in sources {
            if let Some(slots) = self
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

    /// Forgets the in-flight state of mailboxes deleted after an unshare.
    pub(crate) fn forget_inflight(&mut self, key: &PublicKey) {
        self.inflight.forget_mailbox(key);
    }

    /// Moves the stored cursor of (mailbox, relay) over the processed prefix
    /// of its fetched messages. Returns whether it moved.
    fn advance(&mut self, mailbox: &PublicKey, relay: &RelayUrl) -> bool {
        let Some(slots) = self.inflight.slots.get_mut(&(*mailbox, relay.clone())) else {
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
        if let Some(record) = self.data.mailbox_mut(mailbox) {
            let cursor = record.cursors.entry(relay.clone()).or_default();
            if newest > *cursor {
                *cursor = newest;
                return true;
            }
        }
        false
    }
}
