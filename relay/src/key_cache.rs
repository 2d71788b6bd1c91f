//! A bounded cache of mailbox keys this relay has already validated.
//!
//! Validating a `pub` (decompressing the P-384 point and checking it is on
//! the curve) is the costliest step of an HTTP `check`: about two fifths of
//! the relay's CPU under a check load, by `perf record`. Apps poll the same
//! few keys again and again, so the relay remembers the keys it has parsed.
//! Only keys that validated are kept; validation is deterministic, so a
//! cached key is exactly what parsing would give again.
//!
//! The cache holds at most [`MAX_CACHED_KEYS`] keys (about 2.5 MiB) and is
//! emptied when full, which keeps it bounded without bookkeeping per hit. It
//! knows nothing about mailboxes, expiry or rate limits.

use std::collections::HashMap;
use std::sync::Mutex;

use connectoid_protocol::{KeyError, PublicKey};

/// Most keys kept before the cache is emptied.
pub(crate) const MAX_CACHED_KEYS: usize = 16_384;

/// Validated keys by their base64url text.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    keys: Mutex<HashMap<Box<str>, PublicKey>>,
}

impl KeyCache {
    /// Parses `text` as `PublicKey::from_str` does, from the cache when the
    /// key was parsed before.
    pub(crate) fn parse(&self, text: &str) -> Result<PublicKey, KeyError> {
        if let Some(key) = self.lock().get(text) {
            return Ok(*key);
        }
        // Parse outside the lock: it is the expensive part.
        let key: PublicKey = text.parse()?;
        let mut keys = self.lock();
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(text.into(), key);
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, PublicKey>> {
        // A panic while holding the lock cannot leave the map inconsistent.
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
    fn stays_bounded() {
        let cache = KeyCache::default();
        let text = key_text(2);
        {
            let mut keys = cache.lock();
            let key: PublicKey = text.parse().unwrap();
            for i in 0..MAX_CACHED_KEYS {
                keys.insert(format!("filler{i}").into(), key);
            }
        }
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        cache.parse(&text).unwrap();
        assert_eq!(cache.len(), 1);
    }
}
