//! The Connectoid client: what an app embeds to share a link, accept one,
//! exchange signaling messages (offers, answers) with peers through several
//! relays at once, and unshare.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use connectoid::{Client, ShareOptions, Event, Kind};
//! use connectoid::protocol::{Link, RelayEntry, RelayUrl};
//!
//! // Alice shares a link through two relays.
//! let alice = Client::builder("/tmp/alice").build()?;
//! let relays = ["https://relay-a.example/", "https://relay-b.example/"]
//!     .into_iter()
//!     .map(|url| Ok(RelayEntry::new(RelayUrl::parse(url)?)))
//!     .collect::<Result<Vec<_>, connectoid::protocol::RelayUrlError>>()?;
//! let link = alice.share("Bob", ShareOptions::with_relays(relays)).await?;
//!
//! // Bob opens it (on his device) and sends his offer.
//! let bob = Client::builder("/tmp/bob").build()?;
//! bob.accept(&Link::decode(&link.encode())?, "Alice",
//!     serde_json::json!({"sdp": "offer"}), Default::default()).await?;
//!
//! // Alice polls, answers, and acknowledges what she processed.
//! for delivery in alice.poll_once().await?.deliveries {
//!     if let Event::PeerConnected { nickname, body, .. } = &delivery.event {
//!         println!("{nickname} connected with {body}");
//!         alice.send(nickname, Kind::Answer, serde_json::json!({"sdp": "answer"})).await?;
//!     }
//!     alice.ack(&delivery).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Client`] and [`ClientBuilder`]: share, accept, send, unshare, peers,
//!   safety codes, the relay list and probes.
//! - Polling ([`Client::poll_once`], [`Client::events`]): UDP check where
//!   relays offer it, HTTP check and receive, validation, de-duplication and
//!   acknowledgement.
//! - Every relay operation fans out to all relays of a mailbox concurrently,
//!   each with its own timeout; reports say what each relay did.
//! - The profile (keys, peers, cursors, seen ids) is kept by a
//!   [`ProfileStore`]: by default one JSON file in the profile directory,
//!   written atomically with mode 0600. Several processes may use one
//!   profile at once: each change is a locked read-modify-write.
//! - The decisions (what a message means, de-duplication, cursors, peer
//!   status, follow-ups) are made without I/O by the crate's core; the
//!   async [`Client`] does the I/O around it and reads the time from one
//!   [`Clock`].
//!
//! - Peer links (`peer`, with the default `quic` feature): after signaling, a direct QUIC connection pinned
//!   to the certificate fingerprints in the offer and answer, a
//!   challenge-response with the Connectoid keys, a one-time key rotation
//!   that retires the link, framed messages, and close.
//! - The shared shopping list (`list`, with the default `cli` feature): the
//!   demo app's data and its merge.
//!
//! The library reads no file but the profile it is given, and never sends or
//! logs a private key. The app's payloads are opaque JSON: WebRTC SDP, QUIC
//! candidates or anything else.

mod client;
mod clock;
mod core;
mod error;
mod event;
#[cfg(feature = "cli")]
pub mod list;
#[cfg(feature = "quic")]
pub mod peer;
mod poll;
mod profile;
mod relay;
mod rng;
mod store;
#[cfg(feature = "udp")]
mod udp;

pub use crate::core::MAX_NICKNAME_LEN;
pub use client::{
    AcceptOptions, Client, ClientBuilder, DEFAULT_RECEIVE_LIMIT, DEFAULT_RELAY_TIMEOUT,
    DEFAULT_UDP_ATTEMPT_TIMEOUT, DEFAULT_UDP_ATTEMPTS, PushOutcome, ShareOptions, probe_relay,
};
pub use clock::{Clock, SystemClock};
pub use error::{BuildError, ClientError, PollError};
pub use event::{
    Delivery, Event, LINK_ALREADY_USED, MailboxRefusal, PeerInfo, PeerStatus, Poll, PollReport,
    Rejection, RelayPoll, RelayProbe, SendReport, UdpUse, UnshareReport,
};
#[cfg(feature = "quic")]
pub use peer::{PeerError, PeerLink, PeerLinkOptions, PendingLink, Rendezvous};
pub use poll::{EventStream, PollOptions};
pub use profile::{LOCK_FILE, PROFILE_FILE, PROFILE_VERSION, ProfileError};
pub use relay::{RelayError, RelayOutcome, SendWait};
pub use store::{DirectoryStore, LOCK_WAIT, MemoryStore, ProfileLock, ProfileStore};

/// The protocol crate, re-exported so apps name the same types.
pub use connectoid_protocol as protocol;
pub use connectoid_protocol::envelope::Kind;
pub use connectoid_protocol::{Link, RelayEntry, RelayUrl, SafetyCode};
