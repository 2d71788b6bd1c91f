//! Mailbox storage behind one [`Store`] trait, so that the relay's logic runs
//! unchanged over the embedded [`RedbStore`] or a shared backend such as Redis.
//!
//! A store keeps, per mailbox: its messages (sealed bytes with their `at`),
//! the newest `at` it ever assigned, the time of its last check, and at most
//! one live [`Question`]. It assigns `at` (strictly increasing per mailbox,
//! [`At::next`]), enforces the per-mailbox and total caps, filters out
//! expired data on every read, and reclaims it in [`Store::sweep`].
//!
//! Backends: the embedded [`RedbStore`] (one relay process) and the shared
//! `RedisStore` (feature `redis`: several relay nodes on one Redis or Redis
//! Cluster).
//!
//! A store does not parse requests, check answers, make questions (no
//! cryptography), apply rate limits of its own unless it shares them across
//! relay nodes ([`Store::rate_limits_shared`]), or read the clock: every call
//! takes `now_us` from the relay's [`Clock`](crate::Clock), so that retention
//! is testable with a manual clock.
//!
//! `conformance` (feature `testing`) is the test suite every backend must
//! pass.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
#[cfg(doc)]
use connectoid_protocol::api::Answer;
use connectoid_protocol::api::Message;
use connectoid_protocol::b64;
use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use connectoid_protocol::push::{AUTH_LEN, P256DH_LEN, PushSubscription, WebPushKeys};
use connectoid_protocol::seal::QUESTION_SECRET_LEN;
use connectoid_protocol::{At, PublicKey};

use crate::bucket::Rate;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod conformance;
mod redb;
#[cfg(feature = "redis")]
mod redis;

pub use self::redb::RedbStore;
#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, RedisTarget, RedisUrlError};

/// A mailbox as the store names it: the 49 bytes of its compressed key. The
/// bytes are not checked to be a curve point (UDP checks carry raw bytes; a
/// key that is not a point simply never has a mailbox).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(pub [u8; PUBLIC_KEY_LEN]);

impl From<&PublicKey> for MailboxId {
    fn from(key: &PublicKey) -> Self {
        Self(*key.as_bytes())
    }
}

impl fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first bytes are enough to tell mailboxes apart in a log.
        write!(f, "MailboxId(")?;
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A mailbox's live question: the secret it seals (answers are derived from
/// it and the relay's URL, [`Answer::for_relay`]), the secret sealed to the
/// mailbox key, and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct Question {
    /// The 32 random bytes the question seals. Never logged.
    pub secret: [u8; QUESTION_SECRET_LEN],
    /// The sealed question as `check` returns it.
    pub sealed: Vec<u8>,
    /// Microseconds since the Unix epoch at which it stops being valid.
    pub expires_us: u64,
}

impl fmt::Debug for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Question")
            .field("sealed_len", &self.sealed.len())
            .field("expires_us", &self.expires_us)
            .finish_non_exhaustive()
    }
}

/// What a store enforces and how long it keeps things, in microseconds.
/// [`StoreOptions::from_config`] makes them from a relay's
/// [`Config`](crate::Config); the default is that of the default `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// A message is visible until `at + message_ttl_us`.
    pub message_ttl_us: u64,
    /// A mailbox whose last check (or creation) is this old is deleted by
    /// [`Store::sweep`].
    pub mailbox_idle_us: u64,
    /// How much newer an in-memory last-check time must be than the stored
    /// one before a sweep writes it (backends that write every check ignore it).
    pub check_persist_us: u64,
    /// Most unexpired messages per mailbox ([`StoreError::MailboxFull`] past it).
    pub max_pending_per_mailbox: u32,
    /// Most bytes of message data in total ([`StoreError::RelayFull`] past it).
    pub max_stored_bytes: u64,
    /// Most mailboxes ([`StoreError::RelayFull`] for a new one past it).
    pub max_mailboxes: u64,
    /// Most operations committed together ([`Limits::max_commit_batch`](crate::Limits::max_commit_batch));
    /// backends without batched commits ignore it.
    pub max_commit_batch: usize,
}

/// How a [`Store::delete`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deleted {
    /// The mailbox existed and is gone, with its messages and question.
    Removed,
    /// There was no such mailbox (deleting is idempotent).
    Absent,
    /// `only_if_empty` was set and the mailbox holds unexpired messages;
    /// nothing was changed.
    NotEmpty,
}

/// Counts for metrics and tests. Expired data that no sweep has removed yet
/// still counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Mailboxes kept.
    pub mailboxes: u64,
    /// Messages kept.
    pub messages: u64,
    /// Bytes of message data kept.
    pub bytes: u64,
    /// Live (or not yet swept) questions.
    pub questions: u64,
}

/// What one [`Store::sweep`] removed or wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired messages removed.
    pub messages_removed: u64,
    /// Idle mailboxes removed.
    pub mailboxes_removed: u64,
    /// Expired questions removed.
    pub questions_removed: u64,
    /// Last-check times written to durable storage.
    pub checks_persisted: u64,
}

/// A rate-limit bucket, for backends that share buckets across relay nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bucket {
    /// `send`/`delete` from one source.
    SendPerSource(SourcePrefix),
    /// `send`/`delete` to one mailbox.
    SendPerMailbox(MailboxId),
    /// `check`/`receive`/UDP from one source.
    CheckPerSource(SourcePrefix),
    /// `check`/`receive` of one mailbox.
    CheckPerMailbox(MailboxId),
}

impl Bucket {
    /// The bucket's kind as metrics and logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SendPerSource(_) => "send_per_ip",
            Self::SendPerMailbox(_) => "send_per_mailbox",
            Self::CheckPerSource(_) => "check_per_ip",
            Self::CheckPerMailbox(_) => "check_per_mailbox",
        }
    }
}

/// A request's source for rate limiting: an IPv4 address, or the /64 prefix
/// of an IPv6 address (IPv4-mapped IPv6 addresses count as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourcePrefix {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl From<IpAddr> for SourcePrefix {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6(prefix)
                }
            },
        }
    }
}

/// A storage operation failed. Each cause is said once: a variant with a
/// `source` does not repeat it in its message (print the chain, as
/// `{:#}` of `anyhow` does, to see it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The mailbox holds [`StoreOptions::max_pending_per_mailbox`] unexpired messages.
    #[error("mailbox full")]
    MailboxFull,
    /// The store holds [`StoreOptions::max_stored_bytes`] bytes or
    /// [`StoreOptions::max_mailboxes`] mailboxes.
    #[error("relay full: {0}")]
    RelayFull(&'static str),
    /// The store has been closed (the relay is shutting down).
    #[error("store closed")]
    Closed,
    /// The backend is unreachable or failed to commit; nothing was changed,
    /// retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The stored data is not what this version wrote.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory could not be used.
    #[error("data directory {path}")]
    Io {
        /// The path involved.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Mailbox storage. Implementations are shared by all request handlers (`&self`,
/// `Send + Sync`) and used as `Arc<dyn Store>`.
///
/// Every method takes `now_us`, the relay's time in microseconds since the
/// Unix epoch; expiry visible through the trait follows it, not the backend's
/// own clock. All methods are cancel-safe in the sense that dropping the
/// future never leaves a half-applied change (a send either commits whole or
/// not at all).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Stores a sealed message and returns its `at` ([`At::next`] of `now_us`
    /// and the mailbox's newest `at`), creating the mailbox if needed (its
    /// creation counts as a check; a mailbox made anew after a removal starts
    /// above the removed one's newest `at`). Returns only once the message is
    /// durable.
    ///
    /// Errors: [`StoreError::MailboxFull`], [`StoreError::RelayFull`], or a
    /// backend failure (then nothing was stored).
    async fn send(&self, mailbox: MailboxId, data: Vec<u8>, now_us: u64) -> Result<At, StoreError>;

    /// For each `(mailbox, after)`: is there an unexpired message with `at`
    /// greater than `after`? Records `now_us` as the last check of each
    /// existing mailbox; unknown mailboxes are answered `false` and not
    /// created. Must be cheap (no disk write per call; one round trip at most
    /// for a networked backend).
    async fn check(&self, checks: &[(MailboxId, At)], now_us: u64)
    -> Result<Vec<bool>, StoreError>;

    /// Up to `limit` unexpired messages with `at > after`, oldest first.
    async fn receive(
        &self,
        mailbox: MailboxId,
        after: At,
        limit: u32,
        now_us: u64,
    ) -> Result<Vec<Message>, StoreError>;

    /// The mailbox's question if it has one that has not expired.
    async fn question(
        &self,
        mailbox: MailboxId,
        now_us: u64,
    ) -> Result<Option<Question>, StoreError>;

    /// Keeps `question` as the mailbox's question unless a live one is
    /// already there; returns the one that is kept (so that concurrent
    /// checks, even on several relay nodes, all hand out the same question).
    async fn offer_question(
        &self,
        mailbox: MailboxId,
        question: Question,
        now_us: u64,
    ) -> Result<Question, StoreError>;

    /// Deletes a mailbox, its messages and its question; with `only_if_empty`
    /// only when it holds no unexpired message. Durable when it returns.
    async fn delete(
        &self,
        mailbox: MailboxId,
        only_if_empty: bool,
        now_us: u64,
    ) -> Result<Deleted, StoreError>;

    /// Removes expired messages and questions and idle mailboxes, and writes
    /// last-check times that are due. Backends that expire data by themselves
    /// may do less; reads never show expired data either way.
    async fn sweep(&self, now_us: u64) -> Result<SweepReport, StoreError>;

    /// Current counts.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Writes everything kept only in memory (last-check times) and releases
    /// the backend; later calls fail with [`StoreError::Closed`]. Idempotent.
    async fn close(&self) -> Result<(), StoreError>;

    /// Keeps `subscription` as the push registration of an existing
    /// mailbox, replacing the one it had; `false` (and nothing kept) when
    /// there is no such mailbox. The registration is removed with the
    /// mailbox ([`Store::delete`], idle removal by [`Store::sweep`]).
    async fn set_push(
        &self,
        mailbox: MailboxId,
        subscription: &PushSubscription,
        now_us: u64,
    ) -> Result<bool, StoreError>;

    /// Removes the mailbox's push registration; with `only_endpoint`, only
    /// if it is for that endpoint (so that a push service's "gone" for an
    /// old endpoint does not remove its replacement). `true` if one was
    /// removed.
    async fn remove_push(
        &self,
        mailbox: MailboxId,
        only_endpoint: Option<&str>,
        now_us: u64,
    ) -> Result<bool, StoreError>;

    /// The push registration of the mailbox, if it exists and has one.
    async fn push(
        &self,
        mailbox: MailboxId,
        now_us: u64,
    ) -> Result<Option<PushSubscription>, StoreError>;

    /// Whether the store works now, for `GET /healthz`: `Ok` when it can
    /// serve reads and take writes. The default asks for [`Store::stats`].
    /// A backend whose writes failed (a full disk) answers
    /// [`StoreError::Unavailable`] until a write succeeds again, and may try
    /// one to find out.
    async fn health(&self) -> Result<(), StoreError> {
        self.stats().await.map(drop)
    }

    /// Whether the store holds `mailbox` now, answered from memory at once
    /// (no I/O, no waiting on other requests); `false` when it cannot tell
    /// that way, which is the default. Only a send whose key was validated
    /// makes a mailbox, so the relay does not validate the key of a request
    /// for a mailbox held here (`spec/relay.md` §5).
    fn holds(&self, mailbox: &MailboxId) -> bool {
        let _ = mailbox;
        false
    }

    /// Whether this backend keeps rate-limit buckets itself, shared by every
    /// relay node using it. When `false` (the default) the relay keeps its
    /// buckets in memory and never calls [`Store::take_token`].
    fn rate_limits_shared(&self) -> bool {
        false
    }

    /// Takes one token from `bucket` (refilled per `rate`); `false` when it
    /// is empty. Only called when [`Store::rate_limits_shared`] is `true`.
    async fn take_token(
        &self,
        bucket: Bucket,
        rate: Rate,
        now_us: u64,
    ) -> Result<bool, StoreError> {
        let _ = (bucket, rate, now_us);
        Ok(true)
    }

    /// Starts telling `listener` about messages stored through *other*
    /// relay nodes sharing this store, so that checks held on this node
    /// wake (`spec/relay.md` §5.2); the returned task runs until aborted
    /// (the server aborts it at shutdown). `None` (the default) for a
    /// store only this relay uses: the relay wakes its own held checks.
    fn listen_for_sends(
        &self,
        listener: std::sync::Arc<dyn SendListener>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let _ = listener;
        None
    }
}

/// Where a shared store reports sends made through other relay nodes
/// ([`Store::listen_for_sends`]).
pub trait SendListener: Send + Sync + 'static {
    /// A message was stored in `mailbox`.
    fn message_stored(&self, mailbox: &MailboxId);
    /// The feed was interrupted (and is back, or being re-established):
    /// sends may have been missed, so every held check should look again.
    fn feed_interrupted(&self);
}

/// A push registration as both backends store it: JSON with `endpoint`
/// and, for Web Push, `p256dh` and `auth` in base64url.
pub(crate) fn encode_push(subscription: &PushSubscription) -> String {
    let mut value = serde_json::json!({ "endpoint": subscription.endpoint });
    if let Some(keys) = &subscription.web_push {
        value["p256dh"] = b64::encode(&keys.p256dh).into();
        value["auth"] = b64::encode(&keys.auth).into();
    }
    value.to_string()
}

/// Reads what [`encode_push`] wrote.
pub(crate) fn decode_push(text: &str) -> Result<PushSubscription, StoreError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        endpoint: String,
        p256dh: Option<String>,
        auth: Option<String>,
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("push registration: {what}"));
    let stored: Stored = serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))?;
    let web_push = match (stored.p256dh, stored.auth) {
        (Some(p256dh), Some(auth)) => {
            let p256dh: [u8; P256DH_LEN] = b64::decode(&p256dh)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("p256dh"))?;
            let auth: [u8; AUTH_LEN] = b64::decode(&auth)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("auth"))?;
            Some(WebPushKeys { p256dh, auth })
        }
        _ => None,
    };
    Ok(PushSubscription {
        endpoint: stored.endpoint,
        web_push,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_group_ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourcePrefix::from(a), SourcePrefix::from(b));
        assert_ne!(SourcePrefix::from(a), SourcePrefix::from(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(SourcePrefix::from(mapped), SourcePrefix::from(v4));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_ne!(SourcePrefix::from(other), SourcePrefix::from(v4));
    }
}
