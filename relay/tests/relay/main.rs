//! The relay's integration tests, one test binary (as ripgrep's
//! `tests/tests.rs`): a module per topic, and `common` with the helpers they
//! share. Relay and Redis processes come from the one launcher of each kind,
//! `connectoid_relay::testing`.
//!
//! Redis tests start their own `redis-server` processes; without Redis
//! installed they are skipped, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod conformance;
mod flags;
mod held;
mod http_server;
mod operator;
mod packaging;
mod process;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_nodes;
mod router;
mod tls;
mod udp;
