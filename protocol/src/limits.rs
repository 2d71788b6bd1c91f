//! Protocol limits and retention defaults, one place for every number that
//! the spec names. A relay may be configured with other retention values; the
//! size limits here are the protocol's maxima.

/// Maximum length in characters of a link value (the part after `connectoid=`).
pub const MAX_LINK_LEN: usize = 2048;
/// Extra characters allowed around a link value when a whole app URL is given.
pub const MAX_APP_URL_OVERHEAD: usize = 2048;
/// Maximum relays named by one link.
pub const MAX_RELAYS_PER_LINK: usize = 8;
/// Maximum length in bytes of one relay URL.
pub const MAX_RELAY_URL_LEN: usize = 256;
/// Maximum length in bytes of an `ext` value (link-wide, per relay, or in a request).
pub const MAX_EXT_LEN: usize = 256;

/// Default maximum size in bytes of a sealed message (the decoded `data` of a
/// `send`): 64 KiB. A relay answers "Too big" above its limit.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Maximum `limit` of one `receive`.
pub const MAX_RECEIVE_LIMIT: u32 = 100;
/// Maximum size in bytes of an HTTP request body a relay must read before it
/// may answer "Too big": the base64url text of the largest message plus room
/// for the other fields.
pub const MAX_REQUEST_BODY: usize = crate::b64::encoded_len(MAX_MESSAGE_BYTES) + 4096;

/// Default time a message lives after it arrives: 1 hour, in microseconds.
pub const MESSAGE_TTL_US: u64 = 3_600 * 1_000_000;
/// Default time a question lives after it is made: 1 minute, in microseconds.
pub const QUESTION_TTL_US: u64 = 60 * 1_000_000;
/// Default time after the last check when a mailbox is deleted: 30 days, in microseconds.
pub const MAILBOX_IDLE_TTL_US: u64 = 30 * 24 * 3_600 * 1_000_000;

/// How old an envelope's `ts` may be when it is opened: the message lifetime
/// plus 10 minutes of clock skew, in milliseconds.
pub const ENVELOPE_MAX_AGE_MS: u64 = 70 * 60 * 1_000;
/// How far in the future an envelope's `ts` may be when it is opened: 10
/// minutes of clock skew, in milliseconds.
pub const ENVELOPE_MAX_SKEW_MS: u64 = 10 * 60 * 1_000;

/// Maximum size in bytes of a UDP check datagram, request or response. Fits
/// the IPv6 minimum MTU with room for headers.
pub const MAX_DATAGRAM_LEN: usize = 1200;
/// Maximum mailboxes checked by one UDP datagram.
pub const MAX_CHECKS_PER_DATAGRAM: usize = 16;
/// Maximum mailboxes named by one HTTP held check (`pub` and up to 15 in
/// `also`): the same bound as [`MAX_CHECKS_PER_DATAGRAM`], so an app that
/// checks all its mailboxes at a relay in one datagram holds them in one request.
pub const MAX_MAILBOXES_PER_HELD_CHECK: usize = 16;
/// Default longest time in seconds a relay holds a held check (`wait`) before
/// it answers `found: false`; a relay advertises its own in the information
/// document.
pub const DEFAULT_MAX_WAIT_SECONDS: u64 = 30;
/// Maximum length in bytes of the `ext` of a UDP check request (smaller than
/// [`MAX_EXT_LEN`] so that the largest request fits [`MAX_DATAGRAM_LEN`]).
pub const MAX_DATAGRAM_EXT_LEN: usize = 128;
