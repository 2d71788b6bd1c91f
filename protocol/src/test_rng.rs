//! Deterministic RNGs for tests and test vectors. Never used outside tests.

use sha2::Digest as _;

/// A repeatable byte stream: SHA-256(seed || counter) blocks.
pub(crate) struct FixedRng {
    seed: u8,
    counter: u64,
    buffer: Vec<u8>,
}

impl FixedRng {
    pub(crate) fn new(seed: u8) -> Self {
        Self {
            seed,
            counter: 0,
            buffer: Vec::new(),
        }
    }
}

impl rand_core::TryRng for FixedRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for byte in dst {
            if self.buffer.is_empty() {
                let mut hasher = sha2::Sha256::new();
                hasher.update([self.seed]);
                hasher.update(self.counter.to_be_bytes());
                self.counter += 1;
                self.buffer = hasher.finalize().to_vec();
            }
            *byte = self.buffer.remove(0);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedRng {}
