//! Through real NATs: devices in network namespaces behind routers of every
//! kind (`connectoid_tests::lab`), the relay on the lab's public network.
//! `stun` checks the relay's STUN answers across a NAT; `matrix` syncs the
//! shopping list between every pair of router kinds with the `connectoid`
//! CLI and prints which path each pair took.
//!
//! Needs root, iproute2 and nftables (scripts/test installs them); without
//! them the tests say so and pass, except under `CI=true`, where they fail.

// Helpers outside #[test] functions unwrap too: a test failure is a panic.
#![allow(clippy::unwrap_used)]

mod matrix;
mod stun;

use std::path::Path;
use std::process::{Command, Output};

use connectoid_tests::cli_binary;
use connectoid_tests::lab::Device;

/// `connectoid --profile PROFILE ARGS...` inside `device`'s namespace.
pub(crate) fn cli(device: &Device, profile: &Path, args: &[&str]) -> Command {
    let mut command = device.command(cli_binary().unwrap());
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("CONNECTOID_PROFILE")
        .env_remove("CONNECTOID_LOG");
    command
}

/// Runs a CLI command that must succeed; returns its stdout.
pub(crate) fn ok(device: &Device, profile: &Path, args: &[&str]) -> String {
    let output = cli(device, profile, args).output().unwrap();
    assert_success(&output, device, args);
    String::from_utf8(output.stdout).unwrap()
}

/// Panics with the command's output unless it succeeded.
pub(crate) fn assert_success(output: &Output, device: &Device, args: &[&str]) {
    assert!(
        output.status.success(),
        "connectoid {args:?} in {} ({}) failed: {}{}",
        device.namespace,
        device.kind,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
