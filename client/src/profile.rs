//! The profile: one app installation's keys, peers, relay list, cursors and
//! seen-message ids, kept in one JSON file in a directory the app chooses.
//!
//! The file is written atomically (a temporary file in the same directory,
//! `fsync`, `rename`, `fsync` of the directory) with mode 0600, so a crash
//! leaves either the old or the new profile, never a torn one. A lock file
//! (`profile.lock`, an exclusive advisory lock held for the store's lifetime)
//! keeps a second process from using the same profile; it gets
//! [`ProfileError::Locked`] instead.
//!
//! This module only stores; it makes no network requests and takes no
//! protocol decisions. Secret keys are written to the profile file and to
//! nowhere else: no type here prints them in `Debug` output.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use connectoid_protocol::b64;
use connectoid_protocol::keys::SecretKey;
use connectoid_protocol::link::{LINK_SECRET_LEN, Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::{At, PublicKey};

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
    /// Another process (or another client in this process) holds the profile's lock.
    #[error("profile {} is in use by another process (lock {} is held)", dir.display(), dir.join(LOCK_FILE).display())]
    Locked {
        /// The profile directory.
        dir: PathBuf,
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

/// Where a peer relationship stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Status {
    /// We shared a link and nobody has used it yet.
    Waiting,
    /// We accepted a link and sent our hello; nothing came back yet.
    Accepted,
    /// Both sides know each other's key.
    Connected,
    /// We accepted a link that someone else had used first.
    LinkUsed,
}

/// One peer (or a shared link waiting for one).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PeerRecord {
    pub(crate) nickname: String,
    #[serde(flatten)]
    pub(crate) role: Role,
    pub(crate) status: Status,
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

/// A locked profile directory and its data on disk.
#[derive(Debug)]
pub(crate) struct ProfileStore {
    dir: PathBuf,
    /// Held open for the store's lifetime: closing it releases the lock.
    _lock: File,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError {
    let path = path.to_owned();
    move |source| ProfileError::Io {
        action,
        path,
        source,
    }
}

impl ProfileStore {
    /// Creates the directory if needed (mode 0700) and takes the lock.
    pub(crate) fn open(dir: &Path) -> Result<(Self, ProfileData), ProfileError> {
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("open lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ProfileError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        let store = Self {
            dir: dir.to_owned(),
            _lock: lock,
        };
        let data = store.load()?;
        Ok((store, data))
    }

    /// The profile directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&self) -> Result<ProfileData, ProfileError> {
        let path = self.dir.join(PROFILE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ProfileData::default());
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        let version: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ProfileError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let found = version
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if found != u64::from(PROFILE_VERSION) {
            return Err(ProfileError::Version {
                path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        serde_json::from_value(version).map_err(|e| ProfileError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Writes `data` atomically: temporary file, fsync, rename, fsync of the
    /// directory.
    pub(crate) fn save(&self, data: &ProfileData) -> Result<(), ProfileError> {
        let path = self.dir.join(PROFILE_FILE);
        let tmp = self
            .dir
            .join(format!("{PROFILE_FILE}.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(data).map_err(|e| ProfileError::Corrupt {
            path: path.clone(),
            reason: format!("cannot serialize: {e}"),
        })?;
        let mut file = private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("create temporary file", &tmp))?;
        set_private_mode(&file, &tmp)?;
        file.write_all(&bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        // Make the rename durable. Opening a directory for fsync works on Unix.
        #[cfg(unix)]
        if let Ok(dir) = File::open(&self.dir) {
            dir.sync_all().map_err(io("fsync directory", &self.dir))?;
        }
        Ok(())
    }
}

fn private_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

fn set_private_mode(file: &File, path: &Path) -> Result<(), ProfileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("chmod 0600", path))?;
    }
    #[cfg(not(unix))]
    let _ = (file, path);
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create directory", dir))
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir).map_err(io("create directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::system_rng;

    fn sample() -> ProfileData {
        let key = SecretKey::generate(&mut system_rng());
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
                status: Status::Waiting,
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

    #[test]
    fn save_and_reload_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample();
        {
            let (store, empty) = ProfileStore::open(dir.path()).unwrap();
            assert_eq!(empty, ProfileData::default());
            store.save(&data).unwrap();
        }
        let (_store, loaded) = ProfileStore::open(dir.path()).unwrap();
        assert_eq!(loaded, data);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(PROFILE_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ProfileStore::open(dir.path()).unwrap();
        let err = ProfileStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, ProfileError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
        drop(store);
        ProfileStore::open(dir.path()).unwrap();
    }

    #[test]
    fn corrupt_and_future_profiles_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(PROFILE_FILE), b"{not json").unwrap();
        assert!(matches!(
            ProfileStore::open(dir.path()).unwrap_err(),
            ProfileError::Corrupt { .. }
        ));
        fs::write(dir.path().join(PROFILE_FILE), br#"{"version": 9}"#).unwrap();
        assert!(matches!(
            ProfileStore::open(dir.path()).unwrap_err(),
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
