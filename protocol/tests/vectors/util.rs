//! The harness every vector module shares: reading and (with
//! `CONNECTOID_WRITE_VECTORS=1`) writing a vector file, the RNG that
//! yields a vector's `ikm_e`, JSON accessors and the fixed keys.

use std::convert::Infallible;
use std::path::PathBuf;

use connectoid_protocol::keys::SecretKey;
use connectoid_protocol::rand_core::{TryCryptoRng, TryRng};
use serde_json::Value;
use sha2::Digest as _;

pub(crate) fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

/// Writes `name` from `build` in generator mode, then reads it back, checks it
/// with `check` and compares it with what `build` makes.
pub(crate) fn run(name: &str, build: fn() -> Value, check: fn(&Value)) {
    let path = vectors_dir().join(name);
    let built = build();
    if std::env::var("CONNECTOID_WRITE_VECTORS").as_deref() == Ok("1") {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        let mut text = serde_json::to_string_pretty(&built).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; CONNECTOID_WRITE_VECTORS=1 writes it",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&text).unwrap();
    check(&stored);
    assert!(
        stored == built,
        "{name} is not what the generator makes; if the change is intended, rerun with \
         CONNECTOID_WRITE_VECTORS=1 and review the diff"
    );
}

/// Yields exactly the bytes it was given, then panics.
pub(crate) struct VectorRng {
    bytes: Vec<u8>,
    used: usize,
}

impl VectorRng {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            used: 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.used + n <= self.bytes.len(),
            "the RNG was asked for {n} more bytes after {} of {}",
            self.used,
            self.bytes.len()
        );
        let out = &self.bytes[self.used..self.used + n];
        self.used += n;
        out
    }

    pub(crate) fn assert_drained(&self) {
        assert_eq!(self.used, self.bytes.len(), "the RNG was not fully used");
    }
}

impl TryRng for VectorRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_le_bytes(self.take(4).try_into().unwrap()))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_le_bytes(self.take(8).try_into().unwrap()))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        dst.copy_from_slice(self.take(dst.len()));
        Ok(())
    }
}

impl TryCryptoRng for VectorRng {}

pub(crate) fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("vector has no {key:?}: {v}"))
}

pub(crate) fn st<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

pub(crate) fn num(v: &Value, key: &str) -> u64 {
    get(v, key)
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a u64"))
}

pub(crate) fn hx(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(st(v, key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

pub(crate) fn opt_str(v: &Value, key: &str) -> Option<String> {
    get(v, key).as_str().map(str::to_owned)
}

pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    get(v, key)
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array"))
}

pub(crate) fn name(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("?")
}

/// A fixed secret key for vectors: SHA-384 of a label (always below the order).
pub(crate) fn vector_key(label: &str) -> SecretKey {
    let digest = sha2::Sha384::digest(format!("connectoid test vector key {label}"));
    SecretKey::from_bytes(&digest).unwrap()
}

/// Fixed HPKE ephemeral input keying material (48 bytes).
pub(crate) fn vector_ikm(label: &str) -> Vec<u8> {
    sha2::Sha384::digest(format!("connectoid test vector ikm {label}")).to_vec()
}

pub(crate) fn secret_from(v: &Value, key: &str) -> SecretKey {
    SecretKey::from_bytes(&hx(v, key)).unwrap()
}
