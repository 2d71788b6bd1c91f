//! Safety codes: a short code that both peers can read aloud to compare.
//!
//! The code is derived from the two current mailbox keys of a pair of peers,
//! in sorted order so that both sides compute the same code:
//! `SHA-384("connectoid/v1 safety code" || 0x00 || min(a, b) || max(a, b))`,
//! where the keys are the 49-byte compressed encodings compared as byte
//! strings. The first 72 bits, taken as twelve 6-bit groups (most significant
//! first), index [`SYMBOLS`]. 72 bits keep a man in the middle who grinds
//! keys for a matching code (a second-preimage search) out of practical reach. A relay that put its own keys between the peers
//! (a man in the middle) gives each side a different code.

use sha2::Digest as _;

use crate::keys::PublicKey;

/// The label that starts the hashed input.
pub const SAFETY_CODE_LABEL: &[u8] = b"connectoid/v1 safety code";
/// Symbols in a code.
pub const SAFETY_CODE_LEN: usize = 12;

/// The 64 symbols: an emoji and the English word to say for it.
pub const SYMBOLS: [(&str, &str); 64] = [
    ("🐶", "dog"),
    ("🐱", "cat"),
    ("🐭", "mouse"),
    ("🐰", "rabbit"),
    ("🦊", "fox"),
    ("🐻", "bear"),
    ("🐼", "panda"),
    ("🐨", "koala"),
    ("🐯", "tiger"),
    ("🦁", "lion"),
    ("🐮", "cow"),
    ("🐷", "pig"),
    ("🐸", "frog"),
    ("🐵", "monkey"),
    ("🐔", "chicken"),
    ("🐧", "penguin"),
    ("🐦", "bird"),
    ("🦆", "duck"),
    ("🦉", "owl"),
    ("🐺", "wolf"),
    ("🐴", "horse"),
    ("🦄", "unicorn"),
    ("🐝", "bee"),
    ("🐛", "worm"),
    ("🦋", "butterfly"),
    ("🐌", "snail"),
    ("🐞", "ladybug"),
    ("🐢", "turtle"),
    ("🐍", "snake"),
    ("🐙", "octopus"),
    ("🦀", "crab"),
    ("🐬", "dolphin"),
    ("🐳", "whale"),
    ("🦈", "shark"),
    ("🐊", "crocodile"),
    ("🦒", "giraffe"),
    ("🐘", "elephant"),
    ("🦔", "hedgehog"),
    ("🌵", "cactus"),
    ("🌲", "tree"),
    ("🍀", "clover"),
    ("🍁", "leaf"),
    ("🍄", "mushroom"),
    ("🌻", "sunflower"),
    ("🌙", "moon"),
    ("⭐", "star"),
    ("🔥", "fire"),
    ("🌈", "rainbow"),
    ("🍎", "apple"),
    ("🍌", "banana"),
    ("🍇", "grapes"),
    ("🍓", "strawberry"),
    ("🍒", "cherry"),
    ("🍍", "pineapple"),
    ("🥕", "carrot"),
    ("🌽", "corn"),
    ("🍕", "pizza"),
    ("🎈", "balloon"),
    ("🎁", "gift"),
    ("🔑", "key"),
    ("⚓", "anchor"),
    ("🚲", "bicycle"),
    ("🚀", "rocket"),
    ("🔔", "bell"),
];

/// A safety code: twelve indices into [`SYMBOLS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SafetyCode([u8; SAFETY_CODE_LEN]);

impl SafetyCode {
    /// The code for the pair of keys `a` and `b`, in either order.
    pub fn new(a: &PublicKey, b: &PublicKey) -> Self {
        let (low, high) = if a.as_bytes() <= b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let mut hasher = sha2::Sha384::new();
        hasher.update(SAFETY_CODE_LABEL);
        hasher.update([0]);
        hasher.update(low.as_bytes());
        hasher.update(high.as_bytes());
        let digest = hasher.finalize();
        let bits = digest[..9]
            .iter()
            .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
        let mut out = [0u8; SAFETY_CODE_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = ((bits >> (66 - 6 * i)) & 0x3f) as u8;
        }
        Self(out)
    }

    /// The twelve indices into [`SYMBOLS`], each below 64.
    pub fn indices(&self) -> &[u8; SAFETY_CODE_LEN] {
        &self.0
    }

    /// The code as twelve emoji separated by spaces.
    pub fn emoji(&self) -> String {
        self.0
            .iter()
            .map(|&i| SYMBOLS[usize::from(i)].0)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The code as twelve words separated by spaces, for reading aloud.
    pub fn words(&self) -> String {
        self.0
            .iter()
            .map(|&i| SYMBOLS[usize::from(i)].1)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn symmetric_and_distinct() {
        let a = SecretKey::from_bytes(&[1; 48]).unwrap().public_key();
        let b = SecretKey::from_bytes(&[2; 48]).unwrap().public_key();
        let c = SecretKey::from_bytes(&[3; 48]).unwrap().public_key();
        assert_eq!(SafetyCode::new(&a, &b), SafetyCode::new(&b, &a));
        assert_ne!(SafetyCode::new(&a, &b), SafetyCode::new(&a, &c));
        assert_eq!(
            SafetyCode::new(&a, &b).words().split(' ').count(),
            SAFETY_CODE_LEN
        );
    }

    #[test]
    fn symbols_are_unique() {
        let mut words: Vec<_> = SYMBOLS.iter().map(|s| s.1).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), 64);
    }
}
