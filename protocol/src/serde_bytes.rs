//! Serde helper for fixed-size byte arrays longer than serde's built-in 32.
//!
//! Postcard encodes a tuple of `N` bytes as exactly `N` raw bytes, with no
//! length prefix; this helper reads and writes that form.

use std::fmt;

/// `N` bytes serialized as a tuple (raw bytes in postcard).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FixedBytes<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> serde::Serialize for FixedBytes<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple as _;
        let mut tuple = serializer.serialize_tuple(N)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for FixedBytes<N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<const N: usize>;
        impl<'de, const N: usize> serde::de::Visitor<'de> for Visit<N> {
            type Value = FixedBytes<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = [0u8; N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(FixedBytes(out))
            }
        }
        deserializer.deserialize_tuple(N, Visit::<N>)
    }
}
