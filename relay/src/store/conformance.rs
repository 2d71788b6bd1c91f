//! The conformance suite for [`Store`](super::Store) backends.
