//! Checks every test vector in `spec/vectors/*.json` byte for byte against
//! the library.
//!
//! Each file is checked in two ways: its inputs are run through the library
//! and must give exactly its outputs (what an implementation in another
//! language does with the file), and the file must equal what its module.s
//! generator makes (so that a change of the library or of the generator that
//! nobody wrote into the vectors fails the run).
//!
//! `CONNECTOID_WRITE_VECTORS=1 cargo test -p connectoid-protocol --test vectors`
//! (re)writes the files from the library first; review the diff before
//! committing it. Without the variable the files are only read.
//!
//! The ephemeral HPKE keys come from `util::VectorRng`, which yields exactly the
//! `ikm_e` bytes of a vector (RFC 9180 `DeriveKeyPair` input) and panics if
//! asked for more.
//!
//! One test binary with a module per vector file and a shared harness
//! (`util`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed vector

mod api;
mod clarified;
mod envelopes;
mod hpke;
mod keys;
mod links;
mod peer;
mod push;
mod safety;
mod udp;
mod util;
mod wait;
