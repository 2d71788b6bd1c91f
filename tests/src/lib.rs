//! End-to-end test support for Connectoid (filled by the relay and client issues).
