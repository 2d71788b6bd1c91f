//! The Connectoid client library (built by the client issue).
