//! The profile's data: one app installation's keys, peers, relay list,
//! cursors and seen-message ids, and its JSON form.
//!
//! Where the bytes are kept (a directory, an app's database, memory) is the
//! `store` module's business; what the data means and how it changes is the
//! `core` module's. This module only defines the records and their
//! encoding. Secret keys are in the JSON and nowhere else: no type here
//! prints them in `Debug` output.

use std::collections::BTreeMap;
use std::path::PathBuf;

use connectoid_protocol::b64;
use connectoid_protocol::keys::SecretKey;
use connectoid_protocol::link::{LINK_SECRET_LEN, Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::{At, PublicKey};

use crate::event::PeerStatus;

/// The profile file's name inside the profile directory.
pub const PROFILE_FILE: &str = "profile.json";
/// The lock file's name inside the profile directory.
pub const LOCK_FILE: &str = "profile.lock";
/// The profile format version this crate writes and reads.
pub const PROFILE_VERSION: u32 = 1;

/// The profile could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The store's lock stayed taken for longer than a change can take
    /// (another process hung in the middle of one).
    #[error("profile {} stayed locked for more than {} s (lock {} is held)", dir.display(), waited.as_secs(), dir.join(LOCK_FILE).display())]
    Locked {
        /// The profile directory.
        dir: PathBuf,
        /// How long this process waited for the lock.
        waited: std::time::Duration,
    },
    /// A file system operation failed.
    #[error("profile {}: {action}", path.display())]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The profile file is not a valid profile.
    #[error("profile {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The profile file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The profile was written by a newer version of this library.
    #[error("profile {} has format version {found}, this client reads version {PROFILE_VERSION}", path.display())]
    Version {
        /// The profile file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

/// A secret key as it is stored: base64url of its 48 bytes. `Debug` shows
/// only the public key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct StoredKey(pub(crate) SecretKey);

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for StoredKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64::encode(&self.0.to_bytes()))
    }
}

impl<'de> serde::Deserialize<'de> for StoredKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = b64::decode(&text).map_err(serde::de::Error::custom)?;
        SecretKey::from_bytes(&bytes)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// A link secret as it is stored: base64url of its 16 bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct StoredSecret(pub(crate) LinkSecret);

impl serde::Serialize for StoredSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&b64::encode(&self.0.0))
    }
}

impl<'de> serde::Deserialize<'de> for StoredSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = b64::decode(&text).map_err(serde::de::Error::custom)?;
        let bytes: [u8; LINK_SECRET_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom("link secret must be 16 bytes"))?;
        Ok(Self(LinkSecret(bytes)))
    }
}

/// A reply value (a peer's key, relays and ext) as it is stored: its link text.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct StoredReply(pub(crate) Link);

impl serde::Serialize for StoredReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.encode())
    }
}

impl<'de> serde::Deserialize<'de> for StoredReply {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Link::decode_reply(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// A relay this mailbox no longer names but still checks until `until_ms`,
/// so that messages sent there before the peer learnt the new set arrive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RetiredRelay {
    pub(crate) entry: RelayEntry,
    /// Milliseconds since the Unix epoch.
    pub(crate) until_ms: u64,
}

/// One of our mailboxes: its key pair, where it is served, and how far we
/// have processed each relay's copy of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct MailboxRecord {
    pub(crate) key: StoredKey,
    pub(crate) relays: Vec<RelayEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ext: Option<String>,
    /// Per relay URL: the `at` of the last message processed there.
    #[serde(default)]
    pub(crate) cursors: BTreeMap<RelayUrl, At>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) retired: Vec<RetiredRelay>,
}

impl MailboxRecord {
    pub(crate) fn public_key(&self) -> PublicKey {
        self.key.0.public_key()
    }

    /// The relays to check now: the current set and the retired ones still
    /// within their grace period.
    pub(crate) fn relays_to_check(&self, now_ms: u64) -> Vec<RelayEntry> {
        let mut out = self.relays.clone();
        for retired in &self.retired {
            if retired.until_ms > now_ms && !out.iter().any(|e| e.url == retired.entry.url) {
                out.push(retired.entry.clone());
            }
        }
        out
    }

    /// The ext to send to `entry`: its own, else the mailbox-wide one.
    pub(crate) fn ext_for(&self, entry: &RelayEntry) -> Option<String> {
        entry.ext.clone().or_else(|| self.ext.clone())
    }

    /// This mailbox as a reply value (no secret).
    pub(crate) fn reply_value(&self) -> Link {
        Link {
            key: self.public_key(),
            relays: self.relays.clone(),
            ext: self.ext.clone(),
            secret: None,
        }
    }
}

/// How a peer came to be.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub(crate) enum Role {
    /// We shared a link; our mailbox key is the link key.
    Sharer {
        /// The link's one-time secret, kept to tell a second user that the
        /// link is used.
        secret: StoredSecret,
        /// The link text as shared, so it can be shown again.
        link: String,
    },
    /// We accepted someone's link.
    Acceptor,
}

/// One peer (or a shared link waiting for one).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PeerRecord {
    pub(crate) nickname: String,
    #[serde(flatten)]
    pub(crate) role: Role,
    pub(crate) status: PeerStatus,
    /// Our mailbox for messages from this peer.
    pub(crate) mailbox: MailboxRecord,
    /// The peer's reply value: its key (pinned) and relays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) their: Option<StoredReply>,
    /// `ts` of the newest envelope whose `from` we applied, in ms.
    #[serde(default)]
    pub(crate) their_ts: u64,
    /// When this record was made, in ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Whether our mailbox key was rotated over a direct connection (the
    /// first peer link does it once; see `peer`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) rotated: bool,
    /// The shared link's mailbox after rotation: still checked, only to
    /// answer a later user of the link with `link-used`, until unshare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) spent_link: Option<MailboxRecord>,
}

/// Everything a profile holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProfileData {
    pub(crate) version: u32,
    /// The relays `share` uses when not told otherwise.
    #[serde(default)]
    pub(crate) relays: Vec<RelayEntry>,
    #[serde(default)]
    pub(crate) peers: Vec<PeerRecord>,
    /// Message ids (base64url of SHA-256 of the sealed bytes) already
    /// processed, with the time in ms after which they may be forgotten.
    #[serde(default)]
    pub(crate) seen: BTreeMap<String, u64>,
}

impl Default for ProfileData {
    fn default() -> Self {
        Self {
            version: PROFILE_VERSION,
            relays: Vec::new(),
            peers: Vec::new(),
            seen: BTreeMap::new(),
        }
    }
}

impl ProfileData {
    pub(crate) fn peer(&self, nickname: &str) -> Option<&PeerRecord> {
        self.peers.iter().find(|p| p.nickname == nickname)
    }

    pub(crate) fn peer_mut(&mut self, nickname: &str) -> Option<&mut PeerRecord> {
        self.peers.iter_mut().find(|p| p.nickname == nickname)
    }

    /// The peer whose mailbox has key `key`.
    pub(crate) fn peer_by_mailbox_mut(&mut self, key: &PublicKey) -> Option<&mut PeerRecord> {
        self.peers
            .iter_mut()
            .find(|p| p.mailbox.public_key() == *key)
    }

    /// The mailbox with key `key`: a peer's current one or a spent link's.
    pub(crate) fn mailbox_mut(&mut self, key: &PublicKey) -> Option<&mut MailboxRecord> {
        self.peers.iter_mut().find_map(|p| {
            if p.mailbox.public_key() == *key {
                Some(&mut p.mailbox)
            } else {
                p.spent_link.as_mut().filter(|m| m.public_key() == *key)
            }
        })
    }

    /// The peer whose spent link has key `key`.
    pub(crate) fn peer_by_spent_link_mut(&mut self, key: &PublicKey) -> Option<&mut PeerRecord> {
        self.peers.iter_mut().find(|p| {
            p.spent_link
                .as_ref()
                .is_some_and(|m| m.public_key() == *key)
        })
    }

    /// Forgets seen ids whose expiry is before `now_ms`.
    pub(crate) fn expire_seen(&mut self, now_ms: u64) {
        self.seen.retain(|_, until| *until >= now_ms);
    }
}

impl ProfileData {
    /// Decodes a stored profile. `path` names it in errors.
    pub(crate) fn from_bytes(bytes: &[u8], path: &std::path::Path) -> Result<Self, ProfileError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let found = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if found != u64::from(PROFILE_VERSION) {
            return Err(ProfileError::Version {
                path: path.to_owned(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        serde_json::from_value(value).map_err(|e| ProfileError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Encodes the profile as it is stored (pretty JSON).
    pub(crate) fn to_bytes(&self, path: &std::path::Path) -> Result<Vec<u8>, ProfileError> {
        serde_json::to_vec_pretty(self).map_err(|e| ProfileError::Corrupt {
            path: path.to_owned(),
            reason: format!("cannot serialize: {e}"),
        })
    }
}

/// A profile with one waiting share, for tests of this and other modules.
#[cfg(test)]
pub(crate) fn sample() -> ProfileData {
    let key = SecretKey::generate(&mut crate::rng::system_rng());
    let relay = RelayEntry::new(RelayUrl::parse("http://127.0.0.1:1/").unwrap());
    let mut cursors = BTreeMap::new();
    cursors.insert(relay.url.clone(), At(42));
    ProfileData {
        version: PROFILE_VERSION,
        relays: vec![relay.clone()],
        peers: vec![PeerRecord {
            nickname: "Bob".into(),
            role: Role::Sharer {
                secret: StoredSecret(LinkSecret([5; 16])),
                link: "x".into(),
            },
            status: PeerStatus::Waiting,
            mailbox: MailboxRecord {
                key: StoredKey(key),
                relays: vec![relay],
                ext: Some("api".into()),
                cursors,
                retired: Vec::new(),
            },
            their: None,
            their_ts: 0,
            created_ms: 1,
            rotated: false,
            spent_link: None,
        }],
        seen: [("abc".to_owned(), 99)].into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_statuses_keep_their_names() {
        let path = std::path::Path::new("profile.json");
        let data = sample();
        let bytes = data.to_bytes(path).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""status": "waiting""#));
        assert_eq!(ProfileData::from_bytes(&bytes, path).unwrap(), data);
        let mut used = data.clone();
        used.peers[0].status = PeerStatus::LinkUsed;
        let bytes = used.to_bytes(path).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""status": "link-used""#));
    }

    #[test]
    fn corrupt_and_future_profiles_are_reported() {
        let path = std::path::Path::new("profile.json");
        assert!(matches!(
            ProfileData::from_bytes(b"{not json", path).unwrap_err(),
            ProfileError::Corrupt { .. }
        ));
        assert!(matches!(
            ProfileData::from_bytes(br#"{"version": 9}"#, path).unwrap_err(),
            ProfileError::Version { found: 9, .. }
        ));
    }

    #[test]
    fn debug_output_never_shows_secret_keys() {
        let data = sample();
        let secret = b64::encode(&data.peers[0].mailbox.key.0.to_bytes());
        let shown = format!("{data:?}");
        assert!(!shown.contains(&secret));
        let json = serde_json::to_string(&data).unwrap();
        assert!(json.contains(&secret), "the file itself holds the key");
    }
}
