//! The client's decisions, without I/O: a [`PeerBook`] owns the profile's
//! data and the in-memory delivery state, is fed `now` (milliseconds since
//! the Unix epoch) and an RNG, and returns what to do: a sealed envelope to
//! send, the mailboxes to poll, deliveries, rejections and follow-ups.
//!
//! As quinn-proto is to quinn: this module opens no socket, reads no file
//! and no clock, and spawns nothing. The async [`Client`](crate::Client)
//! reads the profile from its store, calls one method here, writes the
//! profile back and does the network work the answer asks for.
//!
//! - Peers: share, accept (the `hello`), sends, relay-set changes, unshare
//!   and the key rotation of the first peer link, with the peer status
//!   ([`PeerStatus`]) each of them moves.
//! - Receiving (`receive` submodule): judging each fetched envelope,
//!   de-duplication by message id, cursors over a gap-free processed
//!   prefix, and the follow-ups (`link-used` notices, mailbox deletion).
//! - Waiting (`wait` submodule): a held check per batch of mailboxes at
//!   relays that hold checks, the polling interval at the others.

mod judge;
mod receive;
#[cfg(test)]
mod tests;
mod wait;

use std::collections::BTreeMap;

use connectoid_protocol::envelope::{self, Envelope, Kind, LinkProof};
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::{At, PublicKey, SafetyCode, SecretKey, limits};
use rand_core::CryptoRng;

use crate::error::ClientError;
use crate::event::{PeerInfo, PeerStatus, relay_urls};
use crate::profile::{
    MailboxRecord, PeerRecord, ProfileData, RetiredRelay, Role, StoredKey, StoredReply,
    StoredSecret,
};

pub(crate) use receive::{Fetched, Inflight};
pub(crate) use wait::{RelayWait, plan_waits, same_plans};

/// Longest nickname, in characters.
pub const MAX_NICKNAME_LEN: usize = 64;

/// A sealed envelope to send to every relay of `to`.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The recipient's reply value (key, relays, ext).
    pub(crate) to: Link,
    /// The sealed envelope.
    pub(crate) sealed: Vec<u8>,
}

/// Protocol work a decision calls for, for the shell to do.
#[derive(Debug)]
pub(crate) enum Followup {
    /// Send this (a `link-used` notice to a later user of a spent link).
    Send(Outgoing),
    /// Delete these mailboxes at their relays (the peer unshared; its
    /// record is already gone from the book).
    DeleteMailboxes(Vec<MailboxRecord>),
}

/// One mailbox to poll at one relay.
#[derive(Clone)]
pub(crate) struct MailboxPlan {
    /// The mailbox key (to answer the relay's question).
    pub(crate) key: SecretKey,
    /// The peer it is for, for reports.
    pub(crate) nickname: String,
    /// The ext to send to this relay.
    pub(crate) ext: Option<String>,
    /// Fetch after this: the stored cursor or the newest fetched message.
    pub(crate) after: At,
}

/// What an unshare has to do, decided before anything is forgotten.
#[derive(Debug)]
pub(crate) struct UnsharePlan {
    /// The peer's mailbox key (to forget it afterwards).
    pub(crate) key: PublicKey,
    /// The `unshare` notice to the peer, when there is a peer to tell.
    pub(crate) notice: Option<Outgoing>,
    /// Our mailboxes to delete at their relays.
    pub(crate) mailboxes: Vec<MailboxRecord>,
}

/// The peer book: the profile's data plus what was fetched and not yet
/// processed. Every method is synchronous and deterministic given `now`
/// and the RNG.
#[derive(Debug, Default)]
pub(crate) struct PeerBook {
    data: ProfileData,
    inflight: Inflight,
}

/// Checks a nickname: 1 to [`MAX_NICKNAME_LEN`] characters, no control
/// characters.
pub(crate) fn check_nickname(nickname: &str) -> Result<(), ClientError> {
    let len = nickname.chars().count();
    if len == 0 || len > MAX_NICKNAME_LEN || nickname.chars().any(char::is_control) {
        return Err(ClientError::BadNickname(nickname.to_owned()));
    }
    Ok(())
}

impl PeerBook {
    /// The profile's data, to store.
    pub(crate) fn data(&self) -> &ProfileData {
        &self.data
    }

    /// Takes `data` as read from the store (another process changed it),
    /// keeping the in-flight state of the mailboxes that still exist.
    pub(crate) fn replace_data(&mut self, data: ProfileData) {
        self.data = data;
        let data = &self.data;
        self.inflight
            .retain_mailboxes(|key| data_has_mailbox(data, key));
    }

    /// A copy of the in-memory delivery state, to put back with
    /// [`PeerBook::restore_inflight`] when a change cannot be stored.
    pub(crate) fn inflight_snapshot(&self) -> Inflight {
        self.inflight.clone()
    }

    /// Puts back the delivery state of [`PeerBook::inflight_snapshot`]:
    /// deliveries made by a change that was not stored were never handed
    /// out, so their messages must be fetched and judged again.
    pub(crate) fn restore_inflight(&mut self, inflight: Inflight) {
        self.inflight = inflight;
    }

    /// Forgets seen ids that expired before `now`.
    pub(crate) fn expire_seen(&mut self, now: u64) {
        self.data.expire_seen(now);
    }

    // ----- relay list -----

    /// The profile's relay list.
    pub(crate) fn relays(&self) -> &[RelayEntry] {
        &self.data.relays
    }

    /// Adds a relay to the list; `false` if it was there.
    pub(crate) fn add_relay(&mut self, entry: RelayEntry) -> bool {
        if self.data.relays.iter().any(|e| e.url == entry.url) {
            return false;
        }
        self.data.relays.push(entry);
        true
    }

    /// Removes a relay from the list; `false` if it was not there.
    pub(crate) fn remove_relay(&mut self, url: &RelayUrl) -> bool {
        let before = self.data.relays.len();
        self.data.relays.retain(|e| &e.url != url);
        self.data.relays.len() != before
    }

    // ----- peers -----

    /// Every peer and pending share, in the order they were made.
    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        self.data.peers.iter().map(peer_info).collect()
    }

    /// The peer named `nickname`.
    pub(crate) fn peer(&self, nickname: &str) -> Option<PeerInfo> {
        self.data.peer(nickname).map(peer_info)
    }

    /// The answer to `relay`'s `question` (the sealed bytes a `check`
    /// returned) about our mailbox for `nickname`: what a `receive` or
    /// `delete` at that relay must carry (spec/protocol.md 7.6).
    pub(crate) fn answer(
        &self,
        nickname: &str,
        question: &[u8],
        relay: &RelayUrl,
    ) -> Result<connectoid_protocol::Answer, ClientError> {
        let peer = self
            .data
            .peer(nickname)
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        let secret = connectoid_protocol::seal::open_question(&peer.mailbox.key.0, question)
            .map_err(|_| ClientError::BadQuestion(nickname.to_owned()))?;
        Ok(connectoid_protocol::Answer::for_relay(&secret, relay))
    }

    /// Makes a link-key pair and a one-time link for `nickname` naming
    /// `relays`, and records the share (status [`PeerStatus::Waiting`]).
    pub(crate) fn share<R: CryptoRng + ?Sized>(
        &mut self,
        now: u64,
        rng: &mut R,
        nickname: &str,
        relays: Vec<RelayEntry>,
        ext: Option<String>,
    ) -> Result<Link, ClientError> {
        check_nickname(nickname)?;
        if relays.is_empty() {
            return Err(ClientError::NoRelays);
        }
        let key = SecretKey::generate(rng);
        let secret = LinkSecret::generate(rng);
        let link = Link {
            key: key.public_key(),
            relays: relays.clone(),
            ext: ext.clone(),
            secret: Some(secret.clone()),
        };
        link.validate()?;
        if self.data.peer(nickname).is_some() {
            return Err(ClientError::NicknameTaken(nickname.to_owned()));
        }
        self.data.peers.push(PeerRecord {
            nickname: nickname.to_owned(),
            role: Role::Sharer {
                secret: StoredSecret(secret),
                link: link.encode(),
            },
            status: PeerStatus::Waiting,
            mailbox: MailboxRecord {
                key: StoredKey(key),
                relays,
                ext,
                cursors: Default::default(),
                retired: Vec::new(),
            },
            their: None,
            their_ts: 0,
            created_ms: now,
            rotated: false,
            spent_link: None,
        });
        Ok(link)
    }

    /// Accepts `link` as `nickname`: makes our reverse key pair, records the
    /// peer (status [`PeerStatus::Accepted`], recorded before sending since
    /// a reply may come first) and returns the `hello` to send, with the
    /// link-secret proof and `body`. Our mailbox is served from `relays`, or
    /// from the link's relays (with their ext) when `None`.
    pub(crate) fn accept<R: CryptoRng + ?Sized>(
        &mut self,
        now: u64,
        rng: &mut R,
        link: &Link,
        nickname: &str,
        body: serde_json::Value,
        relays: Option<Vec<RelayEntry>>,
    ) -> Result<(PublicKey, Outgoing), ClientError> {
        check_nickname(nickname)?;
        link.validate()?;
        if self.data.peer(nickname).is_some() {
            return Err(ClientError::NicknameTaken(nickname.to_owned()));
        }
        if self
            .data
            .peers
            .iter()
            .any(|p| p.mailbox.public_key() == link.key)
        {
            return Err(ClientError::OwnLink);
        }
        if let Some(peer) = self
            .data
            .peers
            .iter()
            .find(|p| p.their.as_ref().is_some_and(|t| t.0.key == link.key))
        {
            return Err(ClientError::AlreadyAccepted(peer.nickname.clone()));
        }
        let (relays, ext) = match relays {
            Some(relays) => (relays, None),
            None => (link.relays.clone(), link.ext.clone()),
        };
        let key = SecretKey::generate(rng);
        let mailbox = MailboxRecord {
            key: StoredKey(key.clone()),
            relays,
            ext,
            cursors: Default::default(),
            retired: Vec::new(),
        };
        let their = Link {
            secret: None,
            ..link.clone()
        };
        let hello = Envelope {
            kind: Kind::Hello,
            to: link.key,
            from: mailbox.reply_value(),
            ts: now,
            proof: link
                .secret
                .as_ref()
                .map(|s| LinkProof::compute(s, &link.key, &key.public_key())),
            body,
        };
        let sealed = envelope::seal_envelope(rng, &key, &hello)?;
        self.data.peers.push(PeerRecord {
            nickname: nickname.to_owned(),
            role: Role::Acceptor,
            status: PeerStatus::Accepted,
            mailbox,
            their: Some(StoredReply(their.clone())),
            their_ts: 0,
            created_ms: now,
            rotated: false,
            spent_link: None,
        });
        Ok((key.public_key(), Outgoing { to: their, sealed }))
    }

    /// Drops an accepted peer whose `hello` no relay took (matched by
    /// nickname and our mailbox key).
    pub(crate) fn abandon(&mut self, nickname: &str, key: &PublicKey) {
        self.data
            .peers
            .retain(|p| !(p.nickname == nickname && p.mailbox.public_key() == *key));
        self.inflight.forget_mailbox(key);
    }

    /// Seals `body` as an envelope of `kind` to the peer, if it can be sent
    /// to ([`PeerStatus::Accepted`] or [`PeerStatus::Connected`]).
    pub(crate) fn seal_to<R: CryptoRng + ?Sized>(
        &self,
        now: u64,
        rng: &mut R,
        nickname: &str,
        kind: Kind,
        body: serde_json::Value,
    ) -> Result<Outgoing, ClientError> {
        let peer = self
            .data
            .peer(nickname)
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        match peer.status {
            PeerStatus::LinkUsed => Err(ClientError::LinkAlreadyUsed {
                nickname: nickname.to_owned(),
            }),
            PeerStatus::Waiting => Err(ClientError::NotConnected(nickname.to_owned())),
            PeerStatus::Accepted | PeerStatus::Connected => seal_for(now, rng, peer, kind, body),
        }
    }

    /// Moves our mailbox for `nickname` to `relays`; the relays dropped stay
    /// checked for one message lifetime. Returns the `relays` notice to send
    /// when there is a peer to tell.
    pub(crate) fn set_relays<R: CryptoRng + ?Sized>(
        &mut self,
        now: u64,
        rng: &mut R,
        nickname: &str,
        relays: Vec<RelayEntry>,
    ) -> Result<Option<Outgoing>, ClientError> {
        let peer = self
            .data
            .peer_mut(nickname)
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        let candidate = Link {
            relays: relays.clone(),
            ..peer.mailbox.reply_value()
        };
        candidate.validate()?;
        let until_ms = now + limits::MESSAGE_TTL_US / 1000 + limits::ENVELOPE_MAX_SKEW_MS;
        let dropped: Vec<RelayEntry> = peer
            .mailbox
            .relays
            .iter()
            .filter(|old| !relays.iter().any(|new| new.url == old.url))
            .cloned()
            .collect();
        peer.mailbox
            .retired
            .retain(|r| !relays.iter().any(|new| new.url == r.entry.url));
        for entry in dropped {
            peer.mailbox.retired.push(RetiredRelay { entry, until_ms });
        }
        peer.mailbox.relays = relays;
        if peer.their.is_none() || peer.status == PeerStatus::LinkUsed {
            return Ok(None);
        }
        seal_for(now, rng, peer, Kind::Relays, serde_json::Value::Null).map(Some)
    }

    /// What unsharing `nickname` takes: the notice to the peer (when there
    /// is one to tell) and our mailboxes to delete. Changes nothing; call
    /// [`PeerBook::forget`] once the notice and deletions were tried.
    pub(crate) fn unshare_plan<R: CryptoRng + ?Sized>(
        &self,
        now: u64,
        rng: &mut R,
        nickname: &str,
    ) -> Result<UnsharePlan, ClientError> {
        let peer = self
            .data
            .peer(nickname)
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        let notice = if peer.their.is_some() && peer.status != PeerStatus::LinkUsed {
            Some(seal_for(
                now,
                rng,
                peer,
                Kind::Unshare,
                serde_json::Value::Null,
            )?)
        } else {
            None
        };
        Ok(UnsharePlan {
            key: peer.mailbox.public_key(),
            notice,
            mailboxes: std::iter::once(peer.mailbox.clone())
                .chain(peer.spent_link.clone())
                .collect(),
        })
    }

    /// Removes the peer whose mailbox key is `key`, and its in-flight state.
    pub(crate) fn forget(&mut self, key: &PublicKey) {
        if let Some(peer) = self
            .data
            .peers
            .iter()
            .find(|p| p.mailbox.public_key() == *key)
        {
            for mailbox in peer.spent_link.iter() {
                self.inflight.forget_mailbox(&mailbox.public_key());
            }
        }
        self.data.peers.retain(|p| p.mailbox.public_key() != *key);
        self.inflight.forget_mailbox(key);
    }

    // ----- peer links -----

    /// Our mailbox secret key, the peer's pinned key and whether we rotated
    /// already, for the challenge-response of a peer link.
    // Used by the QUIC peer link (`quic` feature).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn link_keys(
        &self,
        nickname: &str,
    ) -> Result<(SecretKey, PublicKey, bool), ClientError> {
        let peer = self
            .data
            .peer(nickname)
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        let their = peer
            .their
            .as_ref()
            .map(|t| t.0.key)
            .ok_or_else(|| ClientError::NotConnected(nickname.to_owned()))?;
        Ok((peer.mailbox.key.0.clone(), their, peer.rotated))
    }

    /// Applies a verified rotation: our new mailbox key (the old one becomes
    /// the spent link when it was the link key, and is dropped otherwise),
    /// the peer's new key, and [`PeerStatus::Connected`]. Returns `false`,
    /// changing nothing, when `nickname`'s mailbox is no longer `old` (the
    /// peer changed during the link).
    // Used by the QUIC peer link (`quic` feature).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn commit_rotation(
        &mut self,
        nickname: &str,
        old: &PublicKey,
        new_key: Option<SecretKey>,
        their_new: Option<PublicKey>,
    ) -> bool {
        let Some(peer) = self
            .data
            .peer_mut(nickname)
            .filter(|p| p.mailbox.public_key() == *old)
        else {
            return false;
        };
        let mut forget = false;
        if let Some(new_key) = new_key {
            let mut previous = peer.mailbox.clone();
            previous.retired.clear();
            peer.mailbox.key = StoredKey(new_key);
            peer.mailbox.cursors.clear();
            peer.mailbox.retired.clear();
            peer.rotated = true;
            if matches!(peer.role, Role::Sharer { .. }) && peer.spent_link.is_none() {
                peer.spent_link = Some(previous);
            } else {
                forget = true;
            }
        }
        if let Some(key) = their_new
            && let Some(their) = peer.their.as_mut()
        {
            their.0.key = key;
        }
        if peer.status == PeerStatus::Accepted {
            peer.status = PeerStatus::Connected;
        }
        if forget {
            self.inflight.forget_mailbox(old);
        }
        true
    }

    // ----- polling -----

    /// Which mailboxes to check at which relay, grouped by relay: every
    /// peer's mailbox and spent link (except peers whose link was used by
    /// someone else), at its relays and its retired relays still in grace.
    pub(crate) fn plan_poll(&self, now: u64) -> BTreeMap<RelayUrl, Vec<MailboxPlan>> {
        let mut plans: BTreeMap<RelayUrl, Vec<MailboxPlan>> = BTreeMap::new();
        for peer in &self.data.peers {
            if peer.status == PeerStatus::LinkUsed {
                continue;
            }
            for mailbox in std::iter::once(&peer.mailbox).chain(&peer.spent_link) {
                let key = mailbox.public_key();
                for entry in mailbox.relays_to_check(now) {
                    let stored = mailbox.cursors.get(&entry.url).copied().unwrap_or(At::ZERO);
                    let fetched = self.inflight.newest_fetched(&key, &entry.url);
                    plans
                        .entry(entry.url.clone())
                        .or_default()
                        .push(MailboxPlan {
                            key: mailbox.key.0.clone(),
                            nickname: peer.nickname.clone(),
                            ext: mailbox.ext_for(&entry),
                            after: stored.max(fetched),
                        });
                }
            }
        }
        plans
    }
}

/// Whether `data` has a mailbox (current or spent link) with key `key`.
fn data_has_mailbox(data: &ProfileData, key: &PublicKey) -> bool {
    data.peers.iter().any(|p| {
        p.mailbox.public_key() == *key
            || p.spent_link
                .as_ref()
                .is_some_and(|m| m.public_key() == *key)
    })
}

/// Seals an envelope of `kind` from `peer`'s mailbox to its pinned reply value.
fn seal_for<R: CryptoRng + ?Sized>(
    now: u64,
    rng: &mut R,
    peer: &PeerRecord,
    kind: Kind,
    body: serde_json::Value,
) -> Result<Outgoing, ClientError> {
    let their = peer
        .their
        .as_ref()
        .ok_or_else(|| ClientError::NotConnected(peer.nickname.clone()))?;
    let envelope = Envelope {
        kind,
        to: their.0.key,
        from: peer.mailbox.reply_value(),
        ts: now,
        proof: None,
        body,
    };
    let sealed = envelope::seal_envelope(rng, &peer.mailbox.key.0, &envelope)
        .map_err(|e| payload_too_big(&peer.mailbox.key.0, &envelope, e))?;
    Ok(Outgoing {
        to: their.0.clone(),
        sealed,
    })
}

/// Says "too big" in the app's terms: how many bytes of JSON the payload
/// has and may have. The sealed plaintext is a JWS whose middle part is the
/// envelope's JSON in base64url (4 characters per 3 bytes, unpadded); only
/// the body's bytes vary, so the largest body follows exactly.
fn payload_too_big(
    key: &SecretKey,
    envelope: &Envelope,
    error: envelope::EnvelopeError,
) -> ClientError {
    let envelope::EnvelopeError::Seal(connectoid_protocol::seal::SealError::TooBig { max, .. }) =
        error
    else {
        return ClientError::Envelope(error);
    };
    let Ok(jws) = envelope.sign(key) else {
        return ClientError::Envelope(error);
    };
    let Some(encoded) = jws.split('.').nth(1).map(str::len) else {
        return ClientError::Envelope(error);
    };
    let fixed = jws.len() - encoded;
    let json = encoded * 3 / 4;
    let json_max = max.saturating_sub(fixed) * 3 / 4;
    let body = envelope.body.to_string().len();
    ClientError::PayloadTooBig {
        len: body,
        max: body.saturating_sub(json.saturating_sub(json_max)),
    }
}

fn peer_info(peer: &PeerRecord) -> PeerInfo {
    let our_key = peer.mailbox.public_key();
    let their_key: Option<PublicKey> = peer.their.as_ref().map(|t| t.0.key);
    PeerInfo {
        nickname: peer.nickname.clone(),
        status: peer.status,
        shared_by_us: matches!(peer.role, Role::Sharer { .. }),
        our_key,
        our_relays: relay_urls(&peer.mailbox.relays),
        their_key,
        their_relays: peer
            .their
            .as_ref()
            .map(|t| relay_urls(&t.0.relays))
            .unwrap_or_default(),
        safety_code: their_key.map(|k| SafetyCode::new(&our_key, &k)),
        link: match (&peer.role, peer.status) {
            (Role::Sharer { link, .. }, PeerStatus::Waiting) => Some(link.clone()),
            _ => None,
        },
    }
}
