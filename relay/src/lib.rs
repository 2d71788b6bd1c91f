//! The Connectoid relay (built by the relay issue).
