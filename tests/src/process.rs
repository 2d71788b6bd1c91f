//! Real relay processes and the workspace's binaries, for end-to-end tests:
//! the relay crate's launcher (`connectoid_relay::testing`, one launcher per
//! kind of process for every test crate) and the `connectoid` CLI binary.
//!
//! [`RelayProcess::start`] runs the `connectoid-relay` binary on 127.0.0.1
//! port 0 (HTTP and UDP) and reads the addresses it prints; the binaries are
//! found next to the test executable (`target/<profile>/`) and built once
//! with cargo if missing or older than their sources.

use std::path::PathBuf;

pub use connectoid_relay::testing::{
    LaunchError, Listening, RelayCommand, RelayProcess, relay_binary, spawn_listening, url_of,
};

/// The `connectoid` CLI binary.
pub fn cli_binary() -> Result<PathBuf, LaunchError> {
    connectoid_relay::testing::workspace_binary("connectoid", "client", "connectoid")
}
