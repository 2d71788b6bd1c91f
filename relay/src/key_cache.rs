//! A bounded cache of mailbox keys this relay has already validated.
//!
//! Validating a `pub` (decompressing the P-384 point and checking it is on
//! the curve, about 40 µs) costs several times more than the rest of an
//! HTTP `check`. The relay therefore remembers the keys it has parsed, as
//! many as it keeps mailboxes ([`Limits::max_mailboxes`](crate::Limits),
//! default 1 000 000), so that the cost of a check does not depend on how
//! many distinct mailboxes poll. Only keys that validated are kept;
//! validation is deterministic, so a cached key is exactly what parsing
//! would give again.
//!
//! A key is looked up by its 49 decoded bytes (base64url decoding is cheap)
//! in an [`IndexSet`] of keys: about 66 bytes per key (the 49-byte key and
//! its hash in a vector, an index in the table). When full, a new key
//! replaces one chosen by the new key's hash (pseudo-random, O(1)). The
//! cache knows nothing about mailboxes, expiry or rate limits.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use connectoid_protocol::keys::PUBLIC_KEY_LEN;
use connectoid_protocol::{KeyError, PublicKey, b64};
use indexmap::{Equivalent, IndexSet};

/// Fewest keys kept, whatever the mailbox cap.
pub(crate) const MIN_CACHED_KEYS: usize = 16_384;

/// A key's bytes, found in the set without making a [`PublicKey`] (which
/// would mean validating it). Hashes exactly as the key does: a derived
/// `Hash` of a one-field struct hashes that field.
struct KeyBytes<'a>(&'a [u8; PUBLIC_KEY_LEN]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<PublicKey> for KeyBytes<'_> {
    fn equivalent(&self, key: &PublicKey) -> bool {
        self.0 == key.as_bytes()
    }
}

/// Validated keys (see the module documentation).
#[derive(Debug)]
pub(crate) struct KeyCache {
    capacity: usize,
    keys: Mutex<IndexSet<PublicKey>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(MIN_CACHED_KEYS)
    }
}

impl KeyCache {
    /// A cache of at most `capacity` keys (at least [`MIN_CACHED_KEYS`]).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(MIN_CACHED_KEYS),
            keys: Mutex::default(),
        }
    }

    /// Parses `text` as `PublicKey::from_str` does, from the cache when the
    /// key was parsed before.
    pub(crate) fn parse(&self, text: &str) -> Result<PublicKey, KeyError> {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        // Only a text of the right length can be a key; anything else gets
        // the parser's own error below.
        if text.len() == connectoid_protocol::keys::PUBLIC_KEY_TEXT_LEN
            && let Ok(decoded) = b64::decode(text)
            && decoded.len() == PUBLIC_KEY_LEN
        {
            bytes.copy_from_slice(&decoded);
            if let Some(key) = self.lock().get(&KeyBytes(&bytes)) {
                return Ok(*key);
            }
        }
        // Parse outside the lock: it is the expensive part.
        let key: PublicKey = text.parse()?;
        let mut keys = self.lock();
        if keys.len() >= self.capacity {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut hasher);
            let victim = (hasher.finish() % keys.len() as u64) as usize;
            keys.swap_remove_index(victim);
        }
        keys.insert(key);
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexSet<PublicKey>> {
        // A panic while holding the lock cannot leave the set inconsistent.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectoid_protocol::SecretKey;

    fn key_text(byte: u8) -> String {
        SecretKey::from_bytes(&[byte; 48])
            .unwrap()
            .public_key()
            .to_string()
    }

    #[test]
    fn gives_what_parsing_gives_and_keeps_only_valid_keys() {
        let cache = KeyCache::default();
        let text = key_text(1);
        assert_eq!(cache.parse(&text), text.parse());
        assert_eq!(cache.parse(&text), text.parse());
        assert_eq!(cache.len(), 1);
        let bad = format!("B{}", &text[1..]);
        assert_eq!(cache.parse(&bad), bad.parse::<PublicKey>());
        assert!(cache.parse("short").is_err());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn finds_keys_by_their_bytes() {
        let cache = KeyCache::default();
        let text = key_text(3);
        let key = cache.parse(&text).unwrap();
        let bytes = *key.as_bytes();
        assert!(cache.lock().get(&KeyBytes(&bytes)).is_some());
        let mut other = bytes;
        other[48] ^= 1;
        assert!(cache.lock().get(&KeyBytes(&other)).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = KeyCache::new(0);
        assert_eq!(cache.capacity, MIN_CACHED_KEYS);
        let texts: Vec<String> = (1..=20).map(key_text).collect();
        let small = KeyCache {
            capacity: 8,
            keys: Mutex::default(),
        };
        for text in &texts {
            assert_eq!(small.parse(text), text.parse());
        }
        assert_eq!(small.len(), 8);
        // The newest key is always kept.
        let last: PublicKey = texts[19].parse().unwrap();
        assert!(small.lock().contains(&last));
    }
}
