//! End-to-end test support for Connectoid: real relays (processes and
//! in-process servers), misbehaving relays, and small helpers for driving
//! clients. The tests themselves are in `tests/tests/`.
//!
//! Everything listens on 127.0.0.1 with port 0. Waits are bounded loops
//! (a number of polls), never wall-clock assertions.

pub mod bench;
pub mod fake;
pub mod lab;
pub mod process;
pub mod push_receiver;

use std::path::Path;
use std::time::Duration;

use connectoid::protocol::link::{RelayEntry, RelayUrl};
use connectoid::{Client, Delivery, Event};

pub use fake::{Behavior, Blackhole, FakeRelay, RelayProxy};
pub use process::{RelayCommand, RelayProcess, cli_binary, relay_binary, url_of};

/// How many polls a helper makes before giving up.
pub const MAX_POLLS: usize = 20;

/// Logs to the test output (once per process); `RUST_LOG` filters.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("connectoid=info")),
        )
        .with_test_writer()
        .try_init();
}

/// An in-process relay (`connectoid_relay::Server`) with HTTP and UDP on
/// 127.0.0.1 port 0 and no rate limits.
pub struct InProcessRelay {
    server: Option<connectoid_relay::Server>,
    _data: tempfile::TempDir,
}

impl InProcessRelay {
    /// Starts one.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts one published under `urls` only (such as a proxy's URL), so
    /// that answers bound to those URLs are accepted.
    pub async fn start_published_as(urls: Vec<RelayUrl>) -> anyhow::Result<Self> {
        Self::start_with(|config| config.urls = urls).await
    }

    /// Starts one with [`connectoid_relay::Config::for_tests`] changed by `edit`.
    pub async fn start_with(
        edit: impl FnOnce(&mut connectoid_relay::Config),
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut config = connectoid_relay::Config::for_tests(data.path());
        edit(&mut config);
        let server = connectoid_relay::Server::spawn(config).await?;
        Ok(Self {
            server: Some(server),
            _data: data,
        })
    }

    fn server(&self) -> &connectoid_relay::Server {
        // Invariant: `server` is Some until `shutdown` consumes self.
        #[allow(clippy::expect_used)]
        self.server.as_ref().expect("running")
    }

    /// The relay URL.
    pub fn url(&self) -> RelayUrl {
        url_of(self.server().http_addr())
    }

    /// The UDP check address.
    pub fn udp_addr(&self) -> Option<std::net::SocketAddr> {
        self.server().udp_addr()
    }

    /// Stops the server.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.shutdown().await?;
        }
        Ok(())
    }
}

/// Relay entries for `urls`.
pub fn entries(urls: &[RelayUrl]) -> Vec<RelayEntry> {
    urls.iter().cloned().map(RelayEntry::new).collect()
}

/// A client on the profile in `dir`, with a short per-relay timeout so
/// tests with dead relays stay quick.
pub fn client(dir: &Path) -> anyhow::Result<Client> {
    Ok(Client::builder(dir)
        .relay_timeout(Duration::from_secs(3))
        .build()?)
}

/// Polls up to [`MAX_POLLS`] times, acknowledging everything, until
/// `done` holds for the events collected so far. Returns them.
pub async fn poll_until(
    client: &Client,
    mut done: impl FnMut(&[Event]) -> bool,
) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    for _ in 0..MAX_POLLS {
        let poll = client.poll_once().await?;
        for delivery in &poll.deliveries {
            client.ack(delivery).await?;
        }
        events.extend(poll.deliveries.into_iter().map(|d: Delivery| d.event));
        if done(&events) {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("after {MAX_POLLS} polls the expected events had not all come: {events:?}")
}
