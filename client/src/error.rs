//! The errors of the client's operations, one enum per kind of operation:
//! building a client, acting on peers (share, accept, send, unshare...),
//! and polling.
//!
//! Transport faults of a single relay are [`RelayError`](crate::RelayError)s
//! and never fail an operation on their own: they are reported per relay
//! (or per mailbox) inside [`SendReport`] and [`PollReport`]. Only when no
//! relay at all did what was asked does an operation fail.

use connectoid_protocol::envelope::{EnvelopeError, Kind};
use connectoid_protocol::link::LinkError;

use crate::event::{LINK_ALREADY_USED, PollReport, SendReport};
use crate::profile::ProfileError;

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The profile could not be opened (locked, unreadable, corrupt).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// An extra root certificate is not valid PEM.
    #[error("root certificate: {0}")]
    Certificate(String),
    /// The HTTP client could not be set up.
    #[error("HTTP client: {0}")]
    Http(String),
}

/// An operation on the profile or a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The profile could not be written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The nickname is empty, too long or has control characters.
    #[error(
        "invalid nickname {0:?}: use 1 to {max} characters, no control characters",
        max = crate::MAX_NICKNAME_LEN
    )]
    BadNickname(String),
    /// The profile already has a peer (or a pending share) with this nickname.
    #[error("there is already a peer named {0:?}")]
    NicknameTaken(String),
    /// No peer has this nickname.
    #[error("no peer named {0:?}")]
    UnknownPeer(String),
    /// The peer has not answered yet (a shared link nobody used).
    #[error("{0:?} has not connected yet: nobody has used the link")]
    NotConnected(String),
    /// The link we accepted had been used by someone else first.
    #[error("{LINK_ALREADY_USED}")]
    LinkAlreadyUsed {
        /// Our nickname for the link's owner.
        nickname: String,
    },
    /// A push endpoint that is not an absolute http or https URL.
    #[error("bad push endpoint: {0}")]
    BadEndpoint(String),
    /// No relays were given and the profile's relay list is empty.
    #[error("no relays: add one with `relays add URL` or pass --relay")]
    NoRelays,
    /// Fewer healthy relays than asked for.
    #[error("asked for {wanted} healthy relays, found {healthy}")]
    NotEnoughHealthyRelays {
        /// How many were asked for.
        wanted: usize,
        /// How many answered.
        healthy: usize,
    },
    /// The link or relay set is not valid (too many relays, too long...).
    #[error("invalid link or relay set")]
    Link(#[from] LinkError),
    /// The link is one this profile shared.
    #[error("this is your own link")]
    OwnLink,
    /// The link was already accepted under another nickname.
    #[error("this link was already accepted as {0:?}")]
    AlreadyAccepted(String),
    /// The payload is too big to seal into one message (at most
    /// `limits::MAX_MESSAGE_BYTES`, 64 KiB, sealed).
    #[error("the payload is {len} bytes of JSON; it may be at most {max} bytes")]
    PayloadTooBig {
        /// Bytes of the payload's compact JSON.
        len: usize,
        /// The most bytes of compact JSON a payload may have.
        max: usize,
    },
    /// The envelope could not be made (the payload is too big).
    #[error("cannot seal the message")]
    Envelope(#[from] EnvelopeError),
    /// Only offers, answers and app data are sent by the app; the other
    /// kinds are the client's own.
    #[error("the app cannot send {0:?} envelopes")]
    KindNotAllowed(Kind),
    /// The question does not open with the mailbox key of this peer (it
    /// was asked about another mailbox, or it is damaged).
    #[error("the question is not about your mailbox for {0:?} (or it is damaged)")]
    BadQuestion(String),
    /// No relay accepted the message; the report says why for each.
    #[error("no relay accepted the message ({0})")]
    NoRelayAccepted(SendReport),
}

/// A poll failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The profile could not be written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Every relay failed; the report says how. Polling backs off.
    #[error("every relay failed: {}", describe(.0))]
    AllRelaysFailed(PollReport),
}

fn describe(report: &PollReport) -> String {
    report
        .relays
        .iter()
        .map(|r| {
            let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
            format!("{}: {}", r.relay, errors.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
