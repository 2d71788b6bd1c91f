//! What the client hands to the app: events from peers, deliveries to
//! acknowledge, peer summaries, and per-relay reports of each operation.
//!
//! These are plain data. Deciding them (checking messages, peer status) is
//! in the `core` module, fetching in `poll`; acting on them (ack, release)
//! is on the client.

use std::time::Duration;

use connectoid_protocol::api::RelayInfo;
use connectoid_protocol::envelope::Kind;
use connectoid_protocol::link::RelayUrl;
use connectoid_protocol::{PublicKey, SafetyCode};

use crate::relay::{RelayError, RelayOutcome};

/// The exact text a user sees when a link they accepted had been used by
/// someone else first.
pub const LINK_ALREADY_USED: &str = "this link was already used (intercepted?)";

/// Something that happened with a peer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Someone used a link we shared: their key is now pinned for this
    /// nickname and the link is spent. `body` is their first payload (such
    /// as an offer).
    PeerConnected {
        /// Our nickname for them (the one given to `share`).
        nickname: String,
        /// Their mailbox key, pinned from now on.
        key: PublicKey,
        /// The safety code of the pair, to compare by voice.
        safety_code: SafetyCode,
        /// Their first payload.
        body: serde_json::Value,
    },
    /// A message from a connected peer: an offer, an answer or app data.
    Message {
        /// The peer's nickname.
        nickname: String,
        /// What the sender said it is.
        kind: Kind,
        /// The app's payload.
        body: serde_json::Value,
    },
    /// The peer moved to another set of relays; the client sends there from now on.
    RelaysChanged {
        /// The peer's nickname.
        nickname: String,
        /// The peer's new relays.
        relays: Vec<RelayUrl>,
    },
    /// The peer unshared: its keys are gone, and so are ours for it.
    PeerUnshared {
        /// The nickname the peer had.
        nickname: String,
    },
    /// A link we accepted had been used by someone else first; see
    /// [`LINK_ALREADY_USED`]. The peer record stays, marked, until unshared.
    LinkAlreadyUsed {
        /// Our nickname for the link's owner.
        nickname: String,
    },
    /// Someone else proved they hold a link we shared after it was already
    /// used. They were told so; the connected peer is unchanged.
    LinkReuseRefused {
        /// The nickname of the share.
        nickname: String,
        /// The key of the peer that used the link first (the one we keep).
        connected: PublicKey,
        /// The key of the later user.
        refused: PublicKey,
    },
}

impl Event {
    /// The nickname the event is about.
    pub fn nickname(&self) -> &str {
        match self {
            Self::PeerConnected { nickname, .. }
            | Self::Message { nickname, .. }
            | Self::RelaysChanged { nickname, .. }
            | Self::PeerUnshared { nickname }
            | Self::LinkAlreadyUsed { nickname }
            | Self::LinkReuseRefused { nickname, .. } => nickname,
        }
    }
}

/// Where one copy of a delivered message came from: which mailbox, which
/// relay, at which position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) mailbox: PublicKey,
    pub(crate) relay: RelayUrl,
    pub(crate) at: connectoid_protocol::At,
}

/// An event handed to the app. The message it came from counts as processed
/// (its id remembered, the cursors moved past it) only when the app calls
/// [`Client::ack`](crate::Client::ack); until then it is not delivered again
/// by this client, and after a restart it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// What happened.
    pub event: Event,
    /// The message id: SHA-256 of the sealed bytes.
    pub(crate) id: [u8; 32],
    /// Every copy of the message fetched so far.
    pub(crate) sources: Vec<Source>,
}

impl Delivery {
    /// The message id (SHA-256 of the sealed message), base64url.
    pub fn id(&self) -> String {
        connectoid_protocol::b64::encode(&self.id)
    }
}

/// Where a peer relationship stands. The profile stores it by the names of
/// [`PeerStatus::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PeerStatus {
    /// We shared a link and nobody has used it yet.
    Waiting,
    /// We accepted a link and sent our hello; nothing came back yet.
    Accepted,
    /// Both sides know each other's key.
    Connected,
    /// We accepted a link that someone else had used first.
    LinkUsed,
}

impl PeerStatus {
    /// A short lowercase name: `waiting`, `accepted`, `connected`, `link-used`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Accepted => "accepted",
            Self::Connected => "connected",
            Self::LinkUsed => "link-used",
        }
    }
}

/// A peer as the app sees it. Holds no secret.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// Our nickname for the peer.
    pub nickname: String,
    /// Where things stand.
    pub status: PeerStatus,
    /// Whether we shared the link (true) or accepted it (false).
    pub shared_by_us: bool,
    /// Our mailbox key for this peer.
    pub our_key: PublicKey,
    /// The relays serving our mailbox.
    pub our_relays: Vec<RelayUrl>,
    /// The peer's pinned key, once known.
    pub their_key: Option<PublicKey>,
    /// The relays the peer reads from.
    pub their_relays: Vec<RelayUrl>,
    /// The safety code, once both keys are known.
    pub safety_code: Option<SafetyCode>,
    /// The link we shared, while it is waiting to be used.
    pub link: Option<String>,
}

/// The result of a send (or accept): what each relay said. It succeeded when
/// at least one relay accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// One outcome per relay, in the order of the peer's relays.
    pub relays: Vec<RelayOutcome>,
}

impl SendReport {
    /// The relays that accepted the message.
    pub fn accepted(&self) -> Vec<&RelayUrl> {
        self.relays
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| &o.relay)
            .collect()
    }

    /// Whether at least one relay accepted.
    pub fn is_success(&self) -> bool {
        self.relays.iter().any(|o| o.result.is_ok())
    }

    /// The outcome at `relay`, if it was one of the targets.
    pub fn outcome(&self, relay: &RelayUrl) -> Option<&Result<(), RelayError>> {
        self.relays
            .iter()
            .find(|o| &o.relay == relay)
            .map(|o| &o.result)
    }
}

impl std::fmt::Display for SendReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, outcome) in self.relays.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &outcome.result {
                Ok(()) => write!(f, "{}: ok", outcome.relay)?,
                Err(e) => write!(f, "{}: {e}", outcome.relay)?,
            }
        }
        Ok(())
    }
}

/// The result of an unshare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnshareReport {
    /// The `unshare` notice to the peer, if one was sent (not for a link
    /// nobody used, nor for one someone else had used first).
    pub notified: Option<SendReport>,
    /// The deletion of our mailbox at each of its relays.
    pub deleted: Vec<RelayOutcome>,
}

/// How the UDP check went at one relay during a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UdpUse {
    /// The relay advertises no UDP port (or its information document could
    /// not be read).
    NotAdvertised,
    /// UDP is disabled in this client.
    Disabled,
    /// There was nothing to check at this relay.
    Idle,
    /// Every datagram was answered.
    Answered {
        /// Datagrams answered.
        datagrams: u32,
        /// Our address as the relay saw it (like a STUN binding response),
        /// when it said: a candidate address for a direct connection.
        observed: Option<std::net::SocketAddr>,
    },
    /// At least one datagram got no answer; those mailboxes were checked
    /// over HTTP instead.
    FellBack {
        /// Why (silence after the retries, resolution failure).
        reason: String,
    },
}

/// A message that was fetched and refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The relay it came from.
    pub relay: RelayUrl,
    /// Why it was refused (undecryptable, bad signature, expired, unknown
    /// sender, bad link proof...).
    pub reason: String,
}

/// What one relay contributed to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayPoll {
    /// The relay.
    pub relay: RelayUrl,
    /// How the UDP check went.
    pub udp: UdpUse,
    /// HTTP `check` requests made.
    pub http_checks: u32,
    /// Messages fetched with `receive` (including duplicates and rejects).
    pub fetched: u32,
    /// Fetched messages already seen through another relay or earlier.
    pub duplicates: u32,
    /// Fetched messages refused.
    pub rejected: Vec<Rejection>,
    /// Mailboxes this relay refused to serve (no API key, "Wrong answer",
    /// "Too often" for that mailbox...). The relay's other mailboxes were
    /// polled normally; a refusal does not make the relay count as failed.
    pub refused: Vec<MailboxRefusal>,
    /// Errors of the relay as a whole (unreachable, broken answers); the
    /// poll went on with the other relays.
    pub errors: Vec<RelayError>,
    /// Mailboxes the relay answered for in this poll (nothing new by UDP,
    /// or checked and received over HTTP).
    pub served: u32,
}

/// One mailbox a relay refused to serve during a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailboxRefusal {
    /// The nickname of the peer (or pending share) the mailbox is for.
    pub nickname: String,
    /// The mailbox key.
    pub mailbox: PublicKey,
    /// What the relay said.
    pub error: RelayError,
}

impl RelayPoll {
    pub(crate) fn new(relay: RelayUrl) -> Self {
        Self {
            relay,
            udp: UdpUse::Idle,
            http_checks: 0,
            fetched: 0,
            duplicates: 0,
            rejected: Vec::new(),
            refused: Vec::new(),
            errors: Vec::new(),
            served: 0,
        }
    }
}

/// What a poll did at each relay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PollReport {
    /// One entry per relay polled.
    pub relays: Vec<RelayPoll>,
}

impl PollReport {
    /// The entry for `relay`.
    pub fn relay(&self, relay: &RelayUrl) -> Option<&RelayPoll> {
        self.relays.iter().find(|r| &r.relay == relay)
    }

    /// Whether relays were polled and every one of them failed as a whole:
    /// it had errors and served no mailbox. Refusals of single mailboxes
    /// ([`RelayPoll::refused`]) do not count, and neither does an error of
    /// one mailbox at a relay that served others.
    pub fn all_failed(&self) -> bool {
        !self.relays.is_empty()
            && self
                .relays
                .iter()
                .all(|r| !r.errors.is_empty() && r.served == 0)
    }
}

/// The result of one poll: new deliveries and the per-relay report.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// New events, oldest first. Acknowledge each with
    /// [`Client::ack`](crate::Client::ack) once processed.
    pub deliveries: Vec<Delivery>,
    /// What happened at each relay.
    pub report: PollReport,
}

/// A relay's health as `probe` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayProbe {
    /// The relay.
    pub relay: RelayUrl,
    /// Time to fetch the information document.
    pub latency: Option<Duration>,
    /// The information document, when it could be read.
    pub info: Option<RelayInfo>,
    /// Why the relay is not healthy, when it is not.
    pub error: Option<RelayError>,
}

impl RelayProbe {
    /// Whether the relay answered with an information document for
    /// [`PROTOCOL_VERSION`](connectoid_protocol::api::PROTOCOL_VERSION).
    pub fn is_healthy(&self) -> bool {
        self.error.is_none()
            && self
                .info
                .as_ref()
                .is_some_and(|i| i.protocol == connectoid_protocol::api::PROTOCOL_VERSION)
    }
}

/// Where a pending share or a peer's link came from (for `PeerInfo`).
pub(crate) fn relay_urls(entries: &[connectoid_protocol::RelayEntry]) -> Vec<RelayUrl> {
    entries.iter().map(|e| e.url.clone()).collect()
}
