//! What one fetched message means for the peer it was sent to: opening
//! it, the pinning of the peer's key, the link proof of a first `hello`,
//! and the status changes a message makes (accepted to connected, link
//! used). Pure functions over one peer record; no I/O.

use connectoid_protocol::SafetyCode;
use connectoid_protocol::envelope::{self, Kind};
use connectoid_protocol::link::Link;

use crate::event::{Event, PeerStatus};
use crate::profile::{MailboxRecord, PeerRecord, Role, StoredReply};

/// Protocol work that an accepted message calls for (always boxed inside
/// a verdict).
#[allow(clippy::large_enum_variant)]
pub(super) enum Followup {
    /// Tell a later user of a spent link that it was used.
    LinkUsed { from: MailboxRecord, to: Link },
    /// Delete the peer's mailboxes at their relays (the peer unshared).
    DeleteMailbox(PeerRecord),
}

/// What judging one message decided.
pub(super) enum Verdict {
    Deliver(Event, Option<Box<Followup>>),
    Reject(String),
}

/// Opens a message for `peer` and decides what it means. Updates the peer
/// record (pinning, status, relay set) for messages it accepts.
pub(super) fn judge(peer: &mut PeerRecord, sealed: &[u8], now: u64) -> Verdict {
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
                peer.status = PeerStatus::LinkUsed;
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
        if peer.status == PeerStatus::Accepted {
            peer.status = PeerStatus::Connected;
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
            peer.status = PeerStatus::Connected;
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
pub(super) fn judge_spent_link(peer: &mut PeerRecord, sealed: &[u8], now: u64) -> Verdict {
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
