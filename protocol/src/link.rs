//! Links: the `connectoid` value a user shares, and the reply address that
//! every envelope carries.
//!
//! ```text
//! value   = pub "." relays [ "." ext [ "." secret ] ]
//! pub     = b64( 49-byte compressed P-384 point )
//! relays  = b64( UTF-8: entry *( " " entry ) )
//! entry   = relay-url [ "|" b64( per-relay ext, UTF-8 ) ]
//! ext     = b64( UTF-8 app data ), empty = none
//! secret  = b64( 16 random bytes || 4-byte checksum )
//! ```
//!
//! A one-relay link without a secret is exactly the seed's
//! `<pub>.<relay url>[.<ext>]`. The four-part form this project added ends
//! in a checksum (the first 4 bytes of SHA-256 of everything before it), so
//! a mistyped or cut link is refused when it is opened. A decoder accepts
//! the bare value, a `connectoid=` query pair, or a whole app URL such as
//! `https://app.example.com/?connectoid=...`, after removing what pasting
//! adds (quotes, white space and line breaks, trailing punctuation). Every
//! fault is reported with the part it is in ([`LinkError::code`] gives a
//! stable identifier for it).
//!
//! This module does not decide which relays are healthy or reachable; it only
//! checks that each entry is an absolute `http`/`https` URL.

use std::fmt;
use std::str::FromStr;

use crate::b64;
use crate::keys::{KeyError, PublicKey};
use crate::limits;

/// Length in bytes of a link secret.
pub const LINK_SECRET_LEN: usize = 16;

/// Length in bytes of the checksum that follows the secret in a link's last
/// part: the first bytes of SHA-256 of the value before it (spec §4.3).
pub const LINK_CHECK_LEN: usize = 4;

/// Characters of a complete secret part: base64url of the secret and the
/// checksum (27).
pub const SECRET_PART_LEN: usize = b64::encoded_len(LINK_SECRET_LEN + LINK_CHECK_LEN);

/// Characters removed from the start of a pasted link (spec §4.6).
const PASTE_OPENERS: &[char] = &[
    '"', '\'', '`', '<', '(', '[', '\u{201c}', '\u{2018}', '\u{ab}',
];

/// Characters removed from the end of a pasted link; a `.` only while
/// another `.` stays before it (spec §4.6).
const PASTE_CLOSERS: &[char] = &[
    '"', '\'', '`', '>', ')', ']', ',', '.', '\u{201d}', '\u{2019}', '\u{bb}',
];

/// A part of a link value, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkPart {
    /// The first part: the mailbox public key.
    Pub,
    /// The second part: the relay list.
    Relays,
    /// The third part: app data.
    Ext,
    /// The fourth part: the one-time link secret.
    Secret,
}

impl fmt::Display for LinkPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pub => "pub",
            Self::Relays => "relays",
            Self::Ext => "ext",
            Self::Secret => "secret",
        })
    }
}

/// A link or reply value could not be decoded (or built).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Nothing was given.
    #[error("link is empty")]
    Empty,
    /// The value is longer than [`limits::MAX_LINK_LEN`] bytes, or an app URL
    /// longer than that plus [`limits::MAX_APP_URL_OVERHEAD`].
    #[error("link is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Bytes given (UTF-8).
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A URL was given but it has no `connectoid` query parameter.
    #[error("the URL has no connectoid parameter")]
    NoConnectoidParameter,
    /// The value does not have 2 to 4 dot-separated parts.
    #[error("link has {count} parts, expected 2 to 4 (pub.relays[.ext[.secret]])")]
    PartCount {
        /// Parts found.
        count: usize,
    },
    /// A part is not canonical base64url.
    #[error("{part}: {error}")]
    Base64 {
        /// Which part.
        part: LinkPart,
        /// What is wrong (part of the message, not a `source()`).
        error: b64::Base64Error,
    },
    /// The public key part is not a valid key.
    #[error("pub: {0}")]
    Key(KeyError),
    /// A text part is not UTF-8.
    #[error("{0}: not UTF-8 text")]
    NotUtf8(LinkPart),
    /// The relay list is empty.
    #[error("relays: no relay given")]
    NoRelays,
    /// The relay list has more than [`limits::MAX_RELAYS_PER_LINK`] entries.
    #[error("relays: {count} relays given, the maximum is {max}")]
    TooManyRelays {
        /// Entries found.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A relay entry is not a valid relay URL.
    #[error("relays: entry {index}: {reason}{}", if *cut { "; the link may be cut short, copy the whole link again" } else { "" })]
    BadRelay {
        /// Zero-based index of the entry.
        index: usize,
        /// What is wrong (part of the message, not a `source()`).
        reason: RelayEntryError,
        /// The entry ends a seed-form value (2 parts) and its URL is not a
        /// URL or has no host, as when a link is cut inside its relays
        /// part (`https://`): the message says the link may be cut short.
        cut: bool,
    },
    /// The same relay URL appears twice.
    #[error("relays: entry {index} repeats an earlier relay")]
    DuplicateRelay {
        /// Zero-based index of the repeated entry.
        index: usize,
    },
    /// An ext (link-wide or per relay) is longer than [`limits::MAX_EXT_LEN`] bytes.
    #[error("{part}: ext is {len} bytes, the maximum is {max}")]
    ExtTooLong {
        /// Which part.
        part: LinkPart,
        /// Bytes given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The last part of a four-part value is longer than
    /// [`SECRET_PART_LEN`] characters: more than a secret and its checksum.
    #[error(
        "secret: expected {LINK_SECRET_LEN} bytes and a checksum, got {len} bytes and a checksum"
    )]
    SecretLength {
        /// Bytes given before the checksum.
        len: usize,
    },
    /// A link to encode has an empty link-wide ext (`Some("")`), which would
    /// decode as no ext; use `None`.
    #[error("ext: empty (use no ext instead)")]
    EmptyExt,
    /// A reply value (an envelope's `from`) carries a link secret.
    #[error("secret: a reply value must not carry a link secret")]
    UnexpectedSecret,
    /// The four-part link's checksum does not match: a character was
    /// changed, added or lost.
    #[error(
        "this link is damaged or incomplete (its checksum does not match); copy the whole link again"
    )]
    Damaged,
    /// The link's last part ends early, as when a link is cut short.
    #[error("this link looks truncated ({part} ends early); copy the whole link again")]
    Truncated {
        /// The last part of the value, the one that ends early.
        part: LinkPart,
    },
}

/// What is wrong with one entry of a link's relay list
/// ([`LinkError::BadRelay`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayEntryError {
    /// The entry is empty (two spaces in a row, or a leading or trailing one).
    #[error("empty entry (relays are separated by one space)")]
    Empty,
    /// The per-relay ext after `|` is not canonical base64url.
    #[error("ext: {0}")]
    ExtBase64(b64::Base64Error),
    /// The per-relay ext is not UTF-8 text.
    #[error("ext: not UTF-8 text")]
    ExtUtf8,
    /// The per-relay ext is empty (omit the `|` instead).
    #[error("ext: empty (omit the '|' instead)")]
    EmptyExt,
    /// The URL is not a valid relay URL.
    #[error(transparent)]
    Url(RelayUrlError),
}

impl RelayEntryError {
    /// A stable identifier of the fault, for tests and other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::ExtBase64(_) => "ext-base64",
            Self::ExtUtf8 => "ext-utf8",
            Self::EmptyExt => "empty-ext",
            Self::Url(_) => "url",
        }
    }
}

impl LinkError {
    /// A stable identifier of the fault, used by the test vectors and by
    /// implementations in other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong { .. } => "too-long",
            Self::NoConnectoidParameter => "no-connectoid-parameter",
            Self::PartCount { .. } => "part-count",
            Self::Base64 { part, .. } => match part {
                LinkPart::Pub => "pub-base64",
                LinkPart::Relays => "relays-base64",
                LinkPart::Ext => "ext-base64",
                LinkPart::Secret => "secret-base64",
            },
            Self::Key(_) => "pub-key",
            Self::NotUtf8(LinkPart::Relays) => "relays-utf8",
            Self::NotUtf8(_) => "ext-utf8",
            Self::NoRelays => "no-relays",
            Self::TooManyRelays { .. } => "too-many-relays",
            Self::BadRelay { .. } => "bad-relay",
            Self::DuplicateRelay { .. } => "duplicate-relay",
            Self::ExtTooLong { .. } => "ext-too-long",
            Self::SecretLength { .. } => "secret-length",
            Self::EmptyExt => "empty-ext",
            Self::UnexpectedSecret => "unexpected-secret",
            Self::Damaged => "damaged",
            Self::Truncated { .. } => "truncated",
        }
    }
}

/// A text is not a valid relay URL ([`RelayUrl::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayUrlError {
    /// Longer than [`limits::MAX_RELAY_URL_LEN`] bytes (UTF-8).
    #[error("URL is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Contains white space or `|` (the link's relay separators).
    #[error("URL contains {0:?}")]
    ForbiddenChar(char),
    /// Not an absolute URL; the URL parser's reason is part of the message.
    #[error("not a URL: {0}")]
    NotAUrl(url::ParseError),
    /// The scheme is not `http` or `https`.
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    /// The URL has no host.
    #[error("URL has no host")]
    NoHost,
    /// The URL carries a user name or password.
    #[error("URL carries credentials; put an API key in ext instead")]
    Credentials,
    /// The URL has a `#fragment`.
    #[error("URL has a fragment")]
    Fragment,
    /// The normalized URL is too long or contains `|`.
    #[error("URL does not normalize to a valid relay URL")]
    Normalization,
}

impl RelayUrlError {
    /// A stable identifier of the fault, for tests and other languages.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "too-long",
            Self::ForbiddenChar(_) => "forbidden-character",
            Self::NotAUrl(_) => "not-a-url",
            Self::Scheme(_) => "scheme",
            Self::NoHost => "no-host",
            Self::Credentials => "credentials",
            Self::Fragment => "fragment",
            Self::Normalization => "normalization",
        }
    }
}

/// An absolute `http` or `https` relay URL.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayUrl(String);

impl RelayUrl {
    /// Parses and normalizes a relay URL (`https://Relay.Example` becomes
    /// `https://relay.example/`).
    pub fn parse(text: &str) -> Result<Self, RelayUrlError> {
        if text.len() > limits::MAX_RELAY_URL_LEN {
            return Err(RelayUrlError::TooLong {
                len: text.len(),
                max: limits::MAX_RELAY_URL_LEN,
            });
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || *c == '|') {
            return Err(RelayUrlError::ForbiddenChar(c));
        }
        let url = url::Url::parse(text).map_err(RelayUrlError::NotAUrl)?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(RelayUrlError::Scheme(url.scheme().to_owned()));
        }
        if url.host().is_none() {
            return Err(RelayUrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RelayUrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(RelayUrlError::Fragment);
        }
        let normalized = url.as_str();
        if normalized.len() > limits::MAX_RELAY_URL_LEN || normalized.contains('|') {
            return Err(RelayUrlError::Normalization);
        }
        Ok(Self(normalized.to_owned()))
    }

    /// The normalized URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayUrl({})", self.0)
    }
}

impl FromStr for RelayUrl {
    type Err = RelayUrlError;
    fn from_str(text: &str) -> Result<Self, RelayUrlError> {
        Self::parse(text)
    }
}

impl serde::Serialize for RelayUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RelayUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One relay of a link, with the app data to send to that relay only (such
/// as its API key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RelayEntry {
    /// The relay's URL.
    pub url: RelayUrl,
    /// App data for this relay; overrides the link-wide ext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
}

impl RelayEntry {
    /// An entry without per-relay data.
    pub fn new(url: RelayUrl) -> Self {
        Self { url, ext: None }
    }
}

/// The one-time secret that a link carries and that a relay never sees.
///
/// The first message sent on a link proves possession of it (see
/// [`crate::envelope::LinkProof`]).
///
/// It compares only in constant time (`==` and [`subtle::ConstantTimeEq`]).
#[derive(Clone)]
pub struct LinkSecret(pub [u8; LINK_SECRET_LEN]);

impl subtle::ConstantTimeEq for LinkSecret {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

/// Equality in constant time ([`subtle::ConstantTimeEq`]): a secret-bearing
/// value is never compared byte by byte with an early exit.
impl PartialEq for LinkSecret {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self, other).into()
    }
}

impl Eq for LinkSecret {}

impl LinkSecret {
    /// Draws a fresh secret from the caller's RNG.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; LINK_SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

/// A decoded link (or reply value): a mailbox key, where it is served, app
/// data and, for a shared link, the one-time secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The mailbox the recipient of the link sends to.
    pub key: PublicKey,
    /// The relays that serve the mailbox, in the order the link gives them.
    pub relays: Vec<RelayEntry>,
    /// App data for every relay (the seed's `ext`).
    pub ext: Option<String>,
    /// The one-time link secret; `None` in the seed's form and in reply values.
    pub secret: Option<LinkSecret>,
}

impl Link {
    /// Checks the limits that [`Link::decode`] enforces, so that every link
    /// this crate encodes also decodes.
    pub fn validate(&self) -> Result<(), LinkError> {
        if self.relays.is_empty() {
            return Err(LinkError::NoRelays);
        }
        if self.relays.len() > limits::MAX_RELAYS_PER_LINK {
            return Err(LinkError::TooManyRelays {
                count: self.relays.len(),
                max: limits::MAX_RELAYS_PER_LINK,
            });
        }
        for (index, entry) in self.relays.iter().enumerate() {
            if self.relays[..index].iter().any(|e| e.url == entry.url) {
                return Err(LinkError::DuplicateRelay { index });
            }
            // `url|` with nothing after the bar does not decode.
            if entry.ext.as_deref() == Some("") {
                return Err(LinkError::BadRelay {
                    index,
                    reason: RelayEntryError::EmptyExt,
                    cut: false,
                });
            }
            check_ext(LinkPart::Relays, entry.ext.as_deref())?;
        }
        if self.ext.as_deref() == Some("") {
            return Err(LinkError::EmptyExt);
        }
        check_ext(LinkPart::Ext, self.ext.as_deref())?;
        let len = self.encode().len();
        if len > limits::MAX_LINK_LEN {
            return Err(LinkError::TooLong {
                len,
                max: limits::MAX_LINK_LEN,
            });
        }
        Ok(())
    }

    /// Encodes the value: the seed's form when there is one relay and no
    /// secret, otherwise the extended form.
    pub fn encode(&self) -> String {
        let relays = self
            .relays
            .iter()
            .map(|entry| match &entry.ext {
                Some(ext) => format!("{}|{}", entry.url, b64::encode(ext.as_bytes())),
                None => entry.url.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut out = format!("{}.{}", self.key, b64::encode(relays.as_bytes()));
        let ext = self.ext.as_deref().map(|e| b64::encode(e.as_bytes()));
        match (&ext, &self.secret) {
            (None, None) => {}
            (Some(ext), None) => {
                out.push('.');
                out.push_str(ext);
            }
            (ext, Some(secret)) => {
                out.push('.');
                out.push_str(ext.as_deref().unwrap_or(""));
                out.push('.');
                let check = link_check(&out, secret);
                out.push_str(&b64::encode(&[&secret.0[..], &check[..]].concat()));
            }
        }
        out
    }

    /// The app URL with this link as its `connectoid` query parameter, for
    /// example `https://app.example.com/?connectoid=...` (spec §4.3).
    ///
    /// The query's other `&`-separated pieces are kept byte for byte, a
    /// `connectoid` parameter already there is replaced (so the result holds
    /// exactly one), empty pieces are dropped, and the fragment stays after
    /// the query. URLs without `//` (`myapp:open`) work the same way.
    pub fn to_app_url(&self, app_url: &url::Url) -> url::Url {
        let pair = format!("connectoid={}", self.encode());
        let mut pieces: Vec<&str> = app_url
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|piece| !piece.is_empty() && !is_connectoid_pair(piece))
            .collect();
        pieces.push(&pair);
        let mut url = app_url.clone();
        url.set_query(Some(&pieces.join("&")));
        url
    }

    /// Decodes a bare value, a `connectoid=` pair, or an app URL carrying
    /// one, once [`clean_pasted`] has removed what pasting adds.
    pub fn decode(input: &str) -> Result<Self, LinkError> {
        let input = clean_pasted(input);
        if input.is_empty() {
            return Err(LinkError::Empty);
        }
        let value = extract_value(&input)?;
        Self::decode_value(&value)
    }

    /// Decodes a reply value (an envelope's `from`): a link without a secret.
    pub fn decode_reply(value: &str) -> Result<Self, LinkError> {
        let link = Self::decode_value(value)?;
        if link.secret.is_some() {
            return Err(LinkError::UnexpectedSecret);
        }
        Ok(link)
    }

    fn decode_value(value: &str) -> Result<Self, LinkError> {
        if value.is_empty() {
            return Err(LinkError::Empty);
        }
        if value.len() > limits::MAX_LINK_LEN {
            return Err(LinkError::TooLong {
                len: value.len(),
                max: limits::MAX_LINK_LEN,
            });
        }
        let parts: Vec<&str> = value.split('.').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(LinkError::PartCount { count: parts.len() });
        }
        // The checksum first: a changed character anywhere is "damaged",
        // not whatever that character happens to break.
        let secret = match parts.get(3) {
            None => None,
            Some(part) => Some(check_secret_part(value, part)?),
        };
        let key_bytes = decode_part(LinkPart::Pub, parts[0])?;
        let key = PublicKey::from_bytes(&key_bytes).map_err(LinkError::Key)?;
        if parts.len() == 2 && looks_cut(parts[1]) {
            return Err(LinkError::Truncated {
                part: LinkPart::Relays,
            });
        }
        let relays = decode_relays(parts[1], parts.len() == 2)?;
        let ext = match parts.get(2) {
            None | Some(&"") => None,
            Some(part) if parts.len() == 3 && looks_cut(part) => {
                return Err(LinkError::Truncated {
                    part: LinkPart::Ext,
                });
            }
            Some(part) => Some(decode_text(LinkPart::Ext, part)?),
        };
        check_ext(LinkPart::Ext, ext.as_deref())?;
        let link = Self {
            key,
            relays,
            ext,
            secret,
        };
        // Normalizing relay URLs (percent-encoding) can lengthen the value
        // past the maximum; such a link would not decode again once encoded.
        let len = link.encode().len();
        if len > limits::MAX_LINK_LEN {
            return Err(LinkError::TooLong {
                len,
                max: limits::MAX_LINK_LEN,
            });
        }
        Ok(link)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Link {
    type Err = LinkError;
    fn from_str(text: &str) -> Result<Self, LinkError> {
        Self::decode(text)
    }
}

/// Removes what pasting a link adds (spec §4.6): every white-space
/// character (line breaks that mail clients insert included), then, until
/// none is left, an opening quote or bracket (`"` `'` `` ` `` `<` `(` `[`
/// `“` `‘` `«`) at the start and a closing one or trailing punctuation
/// (`"` `'` `` ` `` `>` `)` `]` `,` `.` `”` `’` `»`) at the end. A trailing
/// `.` is removed only while another `.` stays before it, so `pub.` stays
/// itself (and reports no relays).
pub fn clean_pasted(input: &str) -> String {
    let mut text: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    loop {
        let before = text.len();
        if text.starts_with(PASTE_OPENERS) {
            text.remove(0);
        }
        if let Some(last) = text.chars().next_back()
            && PASTE_CLOSERS.contains(&last)
        {
            let rest = &text[..text.len() - last.len_utf8()];
            if last != '.' || rest.contains('.') {
                text.truncate(rest.len());
            }
        }
        if text.len() == before {
            return text;
        }
    }
}

/// The checksum of a four-part value: the first [`LINK_CHECK_LEN`] bytes of
/// SHA-256 over the value's text up to and including its third `.`, then
/// the 16 secret bytes.
fn link_check(head: &str, secret: &LinkSecret) -> [u8; LINK_CHECK_LEN] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(head.as_bytes())
        .chain_update(secret.0)
        .finalize();
    let mut check = [0u8; LINK_CHECK_LEN];
    check.copy_from_slice(&digest[..LINK_CHECK_LEN]);
    check
}

/// Whether every character is of the base64url alphabet (`A-Z a-z 0-9 - _`).
fn is_b64_alphabet(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads the last part of a four-part value (the secret and the checksum)
/// and verifies the checksum against the rest of `value`.
fn check_secret_part(value: &str, part: &str) -> Result<LinkSecret, LinkError> {
    let decoded = decode_part(LinkPart::Secret, part);
    if let Err(error) = &decoded
        && !is_b64_alphabet(part)
    {
        return Err(error.clone());
    }
    if part.len() < SECRET_PART_LEN {
        return Err(LinkError::Truncated {
            part: LinkPart::Secret,
        });
    }
    if part.len() > SECRET_PART_LEN {
        let len = decoded?.len() - LINK_CHECK_LEN;
        return Err(LinkError::SecretLength { len });
    }
    // 27 characters of the alphabet: non-canonical trailing bits are a
    // changed last character.
    let bytes = decoded.map_err(|_| LinkError::Damaged)?;
    let (secret, check) = bytes.split_at(LINK_SECRET_LEN);
    let secret = LinkSecret(secret.try_into().map_err(|_| LinkError::Damaged)?);
    let head = &value[..value.len() - part.len()];
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &link_check(head, &secret)[..],
        check,
    )) {
        return Err(LinkError::Damaged);
    }
    Ok(secret)
}

/// Whether the last part of a seed-form value (2 or 3 parts) was cut
/// short: only base64url characters, but not canonical base64url.
fn looks_cut(text: &str) -> bool {
    is_b64_alphabet(text) && b64::decode(text).is_err()
}

fn extract_value(input: &str) -> Result<String, LinkError> {
    if let Some(value) = input.strip_prefix("connectoid=") {
        return Ok(value.to_owned());
    }
    // A value never holds ':' (only base64url characters and dots), so any
    // input with one is an app URL: `https://...` as well as `myapp:open?...`.
    if !input.contains(':') {
        return Ok(input.to_owned());
    }
    // A whole app URL. Bound the work before handing it to the URL parser.
    let max = limits::MAX_LINK_LEN + limits::MAX_APP_URL_OVERHEAD;
    if input.len() > max {
        return Err(LinkError::TooLong {
            len: input.len(),
            max,
        });
    }
    let url = url::Url::parse(input).map_err(|_| LinkError::NoConnectoidParameter)?;
    url.query_pairs()
        .find(|(name, _)| name == "connectoid")
        .map(|(_, value)| value.into_owned())
        .ok_or(LinkError::NoConnectoidParameter)
}

/// Whether a query piece (`name[=value]`) names the `connectoid` parameter
/// once form-urlencoding is undone (`connectoid`, `connect%6Fid`).
fn is_connectoid_pair(piece: &str) -> bool {
    url::form_urlencoded::parse(piece.as_bytes())
        .next()
        .is_some_and(|(name, _)| name == "connectoid")
}

fn decode_part(part: LinkPart, text: &str) -> Result<Vec<u8>, LinkError> {
    b64::decode(text).map_err(|error| LinkError::Base64 { part, error })
}

fn decode_text(part: LinkPart, text: &str) -> Result<String, LinkError> {
    String::from_utf8(decode_part(part, text)?).map_err(|_| LinkError::NotUtf8(part))
}

fn check_ext(part: LinkPart, ext: Option<&str>) -> Result<(), LinkError> {
    match ext {
        Some(ext) if ext.len() > limits::MAX_EXT_LEN => Err(LinkError::ExtTooLong {
            part,
            len: ext.len(),
            max: limits::MAX_EXT_LEN,
        }),
        _ => Ok(()),
    }
}

/// The relay list of a value; `ends_value` when it is the value's last part.
fn decode_relays(part: &str, ends_value: bool) -> Result<Vec<RelayEntry>, LinkError> {
    let text = decode_text(LinkPart::Relays, part)?;
    if text.is_empty() {
        return Err(LinkError::NoRelays);
    }
    let entries: Vec<&str> = text.split(' ').collect();
    if entries.len() > limits::MAX_RELAYS_PER_LINK {
        return Err(LinkError::TooManyRelays {
            count: entries.len(),
            max: limits::MAX_RELAYS_PER_LINK,
        });
    }
    let mut relays: Vec<RelayEntry> = Vec::with_capacity(entries.len());
    let last = entries.len() - 1;
    for (index, entry) in entries.into_iter().enumerate() {
        let bad = |reason: RelayEntryError| {
            let cut = ends_value
                && index == last
                && matches!(
                    reason,
                    RelayEntryError::Url(RelayUrlError::NotAUrl(_) | RelayUrlError::NoHost)
                );
            LinkError::BadRelay { index, reason, cut }
        };
        if entry.is_empty() {
            return Err(bad(RelayEntryError::Empty));
        }
        let (url, ext) = match entry.split_once('|') {
            None => (entry, None),
            Some((url, ext)) => {
                let bytes = b64::decode(ext).map_err(|e| bad(RelayEntryError::ExtBase64(e)))?;
                let ext = String::from_utf8(bytes).map_err(|_| bad(RelayEntryError::ExtUtf8))?;
                if ext.is_empty() {
                    return Err(bad(RelayEntryError::EmptyExt));
                }
                (url, Some(ext))
            }
        };
        check_ext(LinkPart::Relays, ext.as_deref())?;
        let url = RelayUrl::parse(url).map_err(|e| bad(RelayEntryError::Url(e)))?;
        if relays.iter().any(|r| r.url == url) {
            return Err(LinkError::DuplicateRelay { index });
        }
        relays.push(RelayEntry { url, ext });
    }
    Ok(relays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn key() -> PublicKey {
        SecretKey::from_bytes(&[7u8; 48]).unwrap().public_key()
    }

    fn relay(url: &str) -> RelayEntry {
        RelayEntry::new(RelayUrl::parse(url).unwrap())
    }

    #[test]
    fn seed_form_two_and_three_parts() {
        let pub_text = key().to_string();
        let url = b64::encode(b"https://connecto.id/");
        let two = Link::decode(&format!("{pub_text}.{url}")).unwrap();
        assert_eq!(two.relays, vec![relay("https://connecto.id/")]);
        assert_eq!(two.ext, None);
        assert_eq!(two.encode(), format!("{pub_text}.{url}"));
        let ext = b64::encode(b"api-key-1");
        let three = Link::decode(&format!(
            "https://app.example.com/?connectoid={pub_text}.{url}.{ext}"
        ))
        .unwrap();
        assert_eq!(three.ext.as_deref(), Some("api-key-1"));
        assert_eq!(three.encode(), format!("{pub_text}.{url}.{ext}"));
    }

    #[test]
    fn multi_relay_with_secret_round_trips() {
        let mut first = relay("https://a.example/");
        first.ext = Some("key a".to_owned());
        let link = Link {
            key: key(),
            relays: vec![first, relay("http://127.0.0.1:8080/")],
            ext: None,
            secret: Some(LinkSecret([9; 16])),
        };
        link.validate().unwrap();
        let text = link.encode();
        assert_eq!(text.split('.').count(), 4);
        assert_eq!(Link::decode(&text).unwrap(), link);
    }

    #[test]
    fn errors_name_the_part() {
        assert_eq!(Link::decode("").unwrap_err().code(), "empty");
        assert_eq!(Link::decode("abc").unwrap_err().code(), "part-count");
        assert_eq!(Link::decode("a=.b").unwrap_err().code(), "pub-base64");
        let pub_text = key().to_string();
        assert_eq!(
            Link::decode(&format!("{pub_text}.")).unwrap_err().code(),
            "no-relays"
        );
        let ftp = b64::encode(b"ftp://x/");
        assert_eq!(
            Link::decode(&format!("{pub_text}.{ftp}"))
                .unwrap_err()
                .code(),
            "bad-relay"
        );
        assert_eq!(
            Link::decode("https://app.example.com/?x=1")
                .unwrap_err()
                .code(),
            "no-connectoid-parameter"
        );
    }

    fn shared_link() -> Link {
        Link {
            key: key(),
            relays: vec![relay("https://a.example/")],
            ext: None,
            secret: Some(LinkSecret([5; 16])),
        }
    }

    #[test]
    fn any_changed_character_of_a_four_part_link_is_damaged() {
        let text = shared_link().encode();
        assert_eq!(text.rsplit('.').next().map(str::len), Some(SECRET_PART_LEN));
        for (index, c) in text.char_indices() {
            if c == '.' {
                continue;
            }
            let other = if c == 'A' { 'B' } else { 'A' };
            let damaged = format!("{}{other}{}", &text[..index], &text[index + 1..]);
            assert_eq!(
                Link::decode(&damaged).unwrap_err().code(),
                "damaged",
                "{damaged}"
            );
        }
    }

    #[test]
    fn a_link_cut_in_its_last_part_looks_truncated() {
        let text = shared_link().encode();
        // Cut right after the dot, the rest is a seed-form link without a
        // secret, which no checksum covers (spec §4.6).
        let secret_start = text.rfind('.').unwrap() + 1;
        for end in secret_start + 1..text.len() {
            let error = Link::decode(&text[..end]).unwrap_err();
            assert_eq!(error.code(), "truncated", "{}", &text[..end]);
            assert!(error.to_string().contains("looks truncated"));
        }
        // A seed-form link cut inside its relays part: as base64url, or
        // as a URL ("https://" has no host).
        let cut = format!("{}.{}", key(), b64::encode(b"https://"));
        let error = Link::decode(&cut).unwrap_err();
        assert_eq!(error.code(), "bad-relay");
        assert!(
            error
                .to_string()
                .ends_with("may be cut short, copy the whole link again"),
            "{error}"
        );
        let seed = format!("{}.{}", key(), b64::encode(b"https://connecto.id/"));
        assert_eq!(
            Link::decode(&seed[..seed.len() - 1]).unwrap_err().code(),
            "truncated"
        );
    }

    #[test]
    fn pasted_links_are_cleaned() {
        let link = shared_link();
        let text = link.encode();
        let (head, tail) = text.split_at(40);
        for pasted in [
            format!("\"{text}\""),
            format!("'{text}'."),
            format!("<{text}>,"),
            format!("({text})."),
            format!("\u{201c}{text}\u{201d}"),
            format!("  {head}\r\n  {tail}\n"),
            format!("https://app.example.com/?connectoid={text})."),
        ] {
            assert_eq!(Link::decode(&pasted), Ok(link.clone()), "{pasted:?}");
        }
        assert_eq!(clean_pasted(&format!("{}.", key())), format!("{}.", key()));
        assert_eq!(clean_pasted(" \"a.b..\" "), "a.b");
    }

    #[test]
    fn a_value_that_normalizes_past_the_maximum_is_too_long() {
        // Each "é" becomes "%C3%A9" when the URL is normalized.
        let relays: Vec<String> = (0..8)
            .map(|i| format!("http://h{i}/{}", "é".repeat(40)))
            .collect();
        let text = format!("{}.{}", key(), b64::encode(relays.join(" ").as_bytes()));
        assert!(text.len() < limits::MAX_LINK_LEN);
        assert_eq!(Link::decode(&text).unwrap_err().code(), "too-long");
    }

    #[test]
    fn reply_values_have_no_secret() {
        let link = Link {
            key: key(),
            relays: vec![relay("https://a.example/")],
            ext: None,
            secret: Some(LinkSecret([1; 16])),
        };
        assert_eq!(
            Link::decode_reply(&link.encode()),
            Err(LinkError::UnexpectedSecret)
        );
    }
}
