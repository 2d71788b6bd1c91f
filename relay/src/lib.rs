//! The Connectoid relay: a small HTTP (and optional UDP) service that keeps
//! end-to-end encrypted messages in per-key mailboxes for an hour, as
//! `spec/protocol.md` and `spec/relay.md` define it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = connectoid_relay::Server::spawn(connectoid_relay::Config::new("./connectoid-data")).await?;
//! println!("listening http={}", server.http_addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! - [`Server`]: binds the sockets and owns every task; [`Config`]: what to
//!   bind, limits, retention, TLS;
//! - [`Relay`]: the protocol logic shared by HTTP ([`router`]) and UDP;
//! - [`store`]: the [`Store`] trait, the embedded [`RedbStore`], the shared
//!   `RedisStore` (several relay nodes; feature `redis`) and the conformance
//!   suite every backend passes (feature `testing`);
//! - [`Clock`]: the time source, [`ManualClock`] for tests.
//!
//! The library reads no files other than the data directory and the TLS
//! files it is given, connects to no server other than the Redis it is
//! given, and installs no signal handlers; the
//! `connectoid-relay` binary parses flags, environment and a TOML file.
//!
//! **Cargo features.** `cli` (default): the `connectoid-relay` binary and
//! what only it uses (clap, toml, tracing-subscriber, anyhow). `redis`
//! (default): the Redis store, `RedisStore` and `redis://` store URLs
//! (without it such a URL is a [`StoreUrlError::RedisNotBuilt`]). `testing`:
//! what tests of the relay and of apps use (`Config::for_tests`, the store
//! conformance suite, launchers of relay and Redis processes). An app that
//! embeds the relay can take `default-features = false`.

mod bucket;
pub mod clock;
pub mod config;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

mod connections;
mod held;
mod http;
mod metrics;
pub mod push;
mod rate;
mod server;
mod service;
mod stun;
mod udp;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    Config, ConnectionLimits, HeldCheckLimits, Limits, Rate, RateLimits, Retention, StoreUrl,
    StoreUrlError, TlsConfig,
};
pub use http::{RelayRouter, router};
pub use server::{Server, ShutdownError, SpawnError};
pub use service::{PROTOCOL_VERSION, Relay, ValidRequest};
pub use store::{RedbStore, Store, StoreError, StoreOptions};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisTarget};
