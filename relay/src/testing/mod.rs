//! Test support, with the `testing` feature only: launchers of the
//! processes that integration tests run, one per kind of process, shared by
//! the relay's own tests and the workspace's end-to-end tests and benchmark.
//!
//! - [`RelayCommand`] / [`RelayProcess`]: the `connectoid-relay` binary on
//!   127.0.0.1 port 0, its `listening http=ADDR` / `listening udp=ADDR`
//!   lines read back; [`workspace_binary`] finds (and builds, when missing
//!   or stale) a binary of this workspace.
//! - [`RedisServer`] / [`RedisCluster`]: `redis-server` processes on free
//!   ports with temporary directories, and a three-master cluster.
//!
//! Every process is killed when its handle is dropped. Waits are bounded
//! loops that fail with a clear message; nothing here asserts on time. This
//! module is not for production use and no relay code path reaches it.

mod process;
mod redis;

pub use self::process::{
    LaunchError, Listening, RelayCommand, RelayProcess, relay_binary, spawn_listening, url_of,
    workspace_binary,
};
pub use self::redis::{RedisCluster, RedisServer, redis_available, redis_installed};
