//! The relay's typed configuration: listen addresses, storage, limits,
//! retention, rate limits, operator information and TLS.
//!
//! [`Config`] is plain data with documented defaults. It reads no files and
//! no environment: the binary turns flags, environment variables and a TOML
//! file into a `Config`; embedders and tests build one in code.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use connectoid_protocol::RelayUrl;
use connectoid_protocol::limits as protocol_limits;

pub use crate::bucket::{Rate, RateParseError};
use crate::clock::{Clock, SystemClock};
use crate::store::StoreOptions;
#[cfg(feature = "redis")]
use crate::store::{RedisTarget, RedisUrlError};

/// The default HTTP listen address: `127.0.0.1:8080`.
pub const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The default data directory of the embedded store: `./connectoid-data`.
pub const DEFAULT_DATA_DIR: &str = "connectoid-data";

/// Everything a relay needs to start. Build it with [`Config::new`] (the
/// defaults) or `Config::for_tests` (feature `testing`) and change fields
/// as needed.
#[derive(Clone)]
pub struct Config {
    /// HTTP (or HTTPS with [`Config::tls`]) listen address. Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// UDP check listen address; `None` (the default) disables the UDP check.
    pub udp: Option<SocketAddr>,
    /// Directory of the embedded store. Default `./connectoid-data`; created if missing.
    pub data_dir: PathBuf,
    /// Which storage backend to use. Default [`StoreUrl::Redb`].
    pub store: StoreUrl,
    /// Size caps and rate limits.
    pub limits: Limits,
    /// How long things live.
    pub retention: Retention,
    /// How to reach the operator (email address or URL), published in the
    /// information document. Default none.
    pub contact: Option<String>,
    /// Other relays this operator federates with or recommends, published in
    /// the information document. Default none.
    pub peers: Vec<String>,
    /// The public URLs under which this relay is published (as links name
    /// it). A `receive` or `delete` answer is accepted when it is the answer
    /// for one of them (`spec/protocol.md` §7.6). Empty (the default): derived
    /// from the bound HTTP address by [`default_urls`].
    pub urls: Vec<RelayUrl>,
    /// API keys accepted in a request's `ext`; empty (the default) means none
    /// is required. When not empty every request (HTTP and UDP) must carry one
    /// of them as its whole `ext`, or gets "Forbidden".
    pub api_keys: Vec<String>,
    /// Serve HTTPS with these PEM files instead of plain HTTP. Default none.
    pub tls: Option<TlsConfig>,
    /// Take the client address from the last `X-Forwarded-For` entry when the
    /// connection comes from a loopback address (a reverse proxy on the same
    /// host). Default `false`: the socket's peer address is the client.
    pub trust_forwarded_for: bool,
    /// How often the background sweeper runs (real time). Default 60 s.
    pub sweep_interval: Duration,
    /// How long a graceful shutdown waits for in-flight requests before it
    /// closes their connections. Default 10 s.
    pub shutdown_timeout: Duration,
    /// The relay's clock. Default [`SystemClock`]; tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub clock: Arc<dyn Clock>,
    /// Timeouts and caps of HTTP(S) connections; see [`ConnectionLimits`].
    pub connections: ConnectionLimits,
    /// How long and how many checks the relay holds; see [`HeldCheckLimits`].
    pub held: HeldCheckLimits,
    /// Push notifications; off by default ([`PushConfig`]).
    pub push: crate::push::PushConfig,
}

/// Held checks (`check` with `wait`, `spec/relay.md` §5.2): the longest
/// wait and the caps on held checks waiting at once. Advertised in the
/// information document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCheckLimits {
    /// Longest time a check is held before it is answered `found: false`;
    /// a longer `wait` is shortened to it. Zero turns held checks off (a
    /// `check` with `wait` is answered at once and the information document
    /// does not advertise them). Default 30 s.
    pub max_wait: Duration,
    /// Most held checks waiting at once from one source (an IPv4 address
    /// or an IPv6 /64); past it "Too often". Default 64.
    pub max_per_source: u32,
    /// Most held checks waiting at once in all; past it "Too often".
    /// Default 5 000: half the default connection cap, so that held checks
    /// never take every connection. Each waits on an open connection, so
    /// keep it below [`ConnectionLimits::max_total`].
    pub max_total: u32,
}

impl Default for HeldCheckLimits {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(protocol_limits::DEFAULT_MAX_WAIT_SECONDS),
            max_per_source: 64,
            max_total: 5_000,
        }
    }
}

/// How long an HTTP(S) connection may take and how many may be open
/// (`spec/relay.md` §6.1). Timeouts are real time, not the relay's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most time a connection may take to deliver a request's headers,
    /// counted from when the relay starts waiting for them: its accept, or
    /// the previous answer on a kept-alive connection. It is therefore also
    /// the idle keep-alive timeout. Default 30 s.
    pub header_timeout: Duration,
    /// Most time the relay waits for a request's whole body once its
    /// headers are in; then "Malformed JSON" (408) and the connection
    /// closes. Default 10 s.
    pub body_timeout: Duration,
    /// Most connections open at once. Lowered at start to leave 64 file
    /// descriptors of the process's limit free. At the cap, a new
    /// connection closes the oldest one that has no request under way; if
    /// every one has, the new one is refused (503). Default 10 000.
    pub max_total: usize,
    /// Most connections open at once from one source (an IPv4 address or
    /// an IPv6 /64). Past it, the source's oldest connection without a
    /// request under way is closed, or the new one refused (503). Loopback
    /// peers are exempt (a reverse proxy on the same host, local tests).
    /// Default 256.
    pub max_per_source: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_total: 10_000,
            max_per_source: 256,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // API keys are secrets: show how many there are, not what they are.
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("udp", &self.udp)
            .field("data_dir", &self.data_dir)
            .field("store", &self.store)
            .field("limits", &self.limits)
            .field("retention", &self.retention)
            .field("contact", &self.contact)
            .field("peers", &self.peers)
            .field("urls", &self.urls)
            .field("api_keys", &format_args!("[{} keys]", self.api_keys.len()))
            .field("tls", &self.tls)
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .field("sweep_interval", &self.sweep_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("clock", &self.clock)
            .field("connections", &self.connections)
            .field("held", &self.held)
            .finish()
    }
}

impl Config {
    /// The defaults, with the embedded store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            http: DEFAULT_HTTP,
            udp: None,
            data_dir: data_dir.into(),
            store: StoreUrl::Redb,
            limits: Limits::default(),
            retention: Retention::default(),
            contact: None,
            peers: Vec::new(),
            urls: Vec::new(),
            api_keys: Vec::new(),
            tls: None,
            trust_forwarded_for: false,
            sweep_interval: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
            connections: ConnectionLimits::default(),
            held: HeldCheckLimits::default(),
            push: crate::push::PushConfig::default(),
        }
    }

    /// For tests: HTTP and UDP on `127.0.0.1:0` (the system picks free
    /// ports; read them back with [`Server::http_addr`](crate::Server::http_addr)
    /// and [`Server::udp_addr`](crate::Server::udp_addr)), and **no rate
    /// limits** ([`RateLimits::off`]) so that tests sending many requests are
    /// never flaky. Tests of rate limiting set [`Limits::rate`] themselves.
    ///
    /// Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        let any_port = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let mut config = Self::new(data_dir);
        config.http = any_port;
        config.udp = Some(any_port);
        config.limits.rate = RateLimits::off();
        config
    }
}

/// Which storage backend holds the mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// The embedded redb store in [`Config::data_dir`] (`--store redb`).
    Redb,
    /// Redis (`redis://HOST:PORT`) or a Redis Cluster
    /// (`redis+cluster://HOST:PORT,HOST:PORT`), shared by several relay nodes;
    /// see [`RedisTarget`]. Only with the `redis` feature (a default one).
    #[cfg(feature = "redis")]
    Redis(RedisTarget),
    /// Any other URL (another scheme); not supported by this build. Starting
    /// with it fails cleanly.
    Other(String),
}

/// A store URL could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreUrlError {
    /// A `redis://` or `redis+cluster://` URL is malformed.
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] RedisUrlError),
    /// A `redis://` or `redis+cluster://` URL, in a relay built without the
    /// `redis` feature. (The URL is not repeated: it may hold a password.)
    #[error(
        "Redis store URLs need the relay's `redis` feature, which this build does not have; \
         use `redb` or build the relay with `--features redis`"
    )]
    RedisNotBuilt,
}

/// `redb` (or empty) is the embedded store, `redis://` and
/// `redis+cluster://` URLs are Redis (an invalid one is an error, and so is
/// any without the `redis` feature), anything else is [`StoreUrl::Other`].
impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "redb" | "redb:" | "" => Self::Redb,
            redis if redis.starts_with("redis://") || redis.starts_with("redis+cluster://") => {
                #[cfg(feature = "redis")]
                {
                    Self::Redis(redis.parse()?)
                }
                #[cfg(not(feature = "redis"))]
                return Err(StoreUrlError::RedisNotBuilt);
            }
            other => Self::Other(other.to_owned()),
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redb => f.write_str("redb"),
            #[cfg(feature = "redis")]
            Self::Redis(target) => target.fmt(f),
            Self::Other(url) => f.write_str(url),
        }
    }
}

/// Size caps and rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest sealed message (decoded `data`) in bytes; larger sends get
    /// "Too big". Default and maximum 65 536 ([`protocol_limits::MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Largest `limit` honoured by `receive`; larger limits are capped to it.
    /// Default and maximum 100 ([`protocol_limits::MAX_RECEIVE_LIMIT`]).
    pub max_receive_limit: u32,
    /// Most unexpired messages one mailbox holds; past it a send gets
    /// "Mailbox full". Default 100.
    pub max_pending_per_mailbox: u32,
    /// Most bytes of message data the relay stores in total; past it a send
    /// gets "Relay full". Default 1 GiB.
    pub max_stored_bytes: u64,
    /// Most mailboxes the relay keeps; past it a send to a new mailbox gets
    /// "Relay full". Default 1 000 000.
    pub max_mailboxes: u64,
    /// Token buckets; see [`RateLimits`].
    pub rate: RateLimits,
    /// Most operations the embedded store commits (and fsyncs) together:
    /// concurrent sends share one commit (group commit). `1` makes every
    /// send its own commit, the comparison point of the benchmarks.
    /// Default 512 (values below 1 count as 1).
    pub max_commit_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: protocol_limits::MAX_MESSAGE_BYTES,
            max_receive_limit: protocol_limits::MAX_RECEIVE_LIMIT,
            max_pending_per_mailbox: 100,
            max_stored_bytes: 1 << 30,
            max_mailboxes: 1_000_000,
            rate: RateLimits::default(),
            max_commit_batch: 512,
        }
    }
}

/// The relay's token buckets. Each is optional; `None` disables it. A request
/// that finds a bucket empty gets "Too often" (429); a UDP datagram from a
/// source whose bucket is empty is dropped silently, and a mailbox whose
/// bucket is empty gets the `TooOften` status.
///
/// Sources are grouped: an IPv4 address is its own source, an IPv6 address
/// counts for its /64 prefix (one customer network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// `send` and `delete` per source. Default 120/min, burst 60.
    pub send_per_ip: Option<Rate>,
    /// `send` per mailbox; a third of it (burst at least 2) is also each
    /// source's share of a mailbox, for `send` and `delete`. Default 60/min,
    /// burst 30.
    pub send_per_mailbox: Option<Rate>,
    /// HTTP `check` and `receive` per source; UDP datagrams per source in a
    /// bucket of their own. A twentieth of it limits wrong answers per
    /// source. Default 1200/min, burst 200.
    pub check_per_ip: Option<Rate>,
    /// `check`, and `receive` with the right answer, per mailbox per
    /// source; UDP checks per mailbox per source in a bucket of their own.
    /// Half of it limits wrong answers per mailbox. Default 120/min, burst 30.
    pub check_per_mailbox: Option<Rate>,
}

impl RateLimits {
    /// No rate limits at all.
    pub fn off() -> Self {
        Self {
            send_per_ip: None,
            send_per_mailbox: None,
            check_per_ip: None,
            check_per_mailbox: None,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            send_per_ip: Some(Rate::new(120, 60)),
            send_per_mailbox: Some(Rate::new(60, 30)),
            check_per_ip: Some(Rate::new(1200, 200)),
            check_per_mailbox: Some(Rate::new(120, 30)),
        }
    }
}

/// How long things live. Defaults are the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A message lives this long after it arrives, received or not. Default 1 hour.
    pub message: Duration,
    /// A question lives this long after it is made. Default 1 minute.
    pub question: Duration,
    /// A mailbox with no check for this long is deleted. Default 30 days.
    pub mailbox_idle: Duration,
    /// Last-check times are kept in memory and written to disk when they are
    /// this much newer than the stored one (and at shutdown), so a check
    /// never costs a disk write. Default 1 hour.
    pub check_persist: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            message: Duration::from_micros(protocol_limits::MESSAGE_TTL_US),
            question: Duration::from_micros(protocol_limits::QUESTION_TTL_US),
            mailbox_idle: Duration::from_micros(protocol_limits::MAILBOX_IDLE_TTL_US),
            check_persist: Duration::from_secs(3600),
        }
    }
}

/// HTTPS certificate and key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The URLs a relay bound to `http` answers to when none are configured:
/// `http://IP:PORT/` (`https` with TLS) and, for a loopback or unspecified
/// address, `http://localhost:PORT/` (an unspecified address is named by its
/// loopback address). A relay reachable under a host name needs
/// [`Config::urls`].
pub fn default_urls(http: SocketAddr, tls: bool) -> Vec<RelayUrl> {
    let scheme = if tls { "https" } else { "http" };
    let ip = match http.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        other => other,
    };
    let mut texts = vec![format!("{scheme}://{}/", SocketAddr::new(ip, http.port()))];
    if ip.is_loopback() {
        texts.push(format!("{scheme}://localhost:{}/", http.port()));
    }
    texts
        .iter()
        .filter_map(|text| RelayUrl::parse(text).ok())
        .collect()
}

/// The bridge from the relay's configuration to its store's options, kept
/// here so that the store does not depend on the configuration.
impl StoreOptions {
    /// The options a relay with `config` gives its store.
    pub fn from_config(config: &Config) -> Self {
        let Limits {
            max_pending_per_mailbox,
            max_stored_bytes,
            max_mailboxes,
            max_commit_batch,
            ..
        } = config.limits;
        Self {
            message_ttl_us: micros(config.retention.message),
            mailbox_idle_us: micros(config.retention.mailbox_idle),
            check_persist_us: micros(config.retention.check_persist),
            max_pending_per_mailbox,
            max_stored_bytes,
            max_mailboxes,
            max_commit_batch,
        }
    }
}

/// The options of a relay with the default [`Config`].
impl Default for StoreOptions {
    fn default() -> Self {
        Self::from_config(&Config::new("unused"))
    }
}

/// A duration in microseconds, saturating.
pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_protocol() {
        let config = Config::new("data");
        assert_eq!(config.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.udp, None);
        assert_eq!(config.retention.message, Duration::from_secs(3600));
        assert_eq!(config.retention.question, Duration::from_secs(60));
        assert_eq!(
            config.retention.mailbox_idle,
            Duration::from_secs(30 * 86_400)
        );
    }

    #[cfg(feature = "testing")]
    #[test]
    fn the_test_configuration_binds_any_port_without_rate_limits() {
        let tests = Config::for_tests("data");
        assert_eq!(tests.http.port(), 0);
        assert_eq!(tests.udp.map(|a| a.port()), Some(0));
        assert_eq!(tests.limits.rate, RateLimits::off());
    }

    #[test]
    fn default_urls_name_the_bound_address() {
        let urls = |addr: &str, tls| -> Vec<String> {
            default_urls(addr.parse().unwrap(), tls)
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect()
        };
        assert_eq!(
            urls("127.0.0.1:8080", false),
            ["http://127.0.0.1:8080/", "http://localhost:8080/"]
        );
        assert_eq!(
            urls("0.0.0.0:443", true),
            ["https://127.0.0.1/", "https://localhost/"]
        );
        assert_eq!(
            urls("[::1]:80", false),
            ["http://[::1]/", "http://localhost/"]
        );
        assert_eq!(urls("192.0.2.1:8080", false), ["http://192.0.2.1:8080/"]);
    }

    #[test]
    fn debug_hides_api_keys() {
        let mut config = Config::new("data");
        config.api_keys = vec!["secret-key".into()];
        assert!(!format!("{config:?}").contains("secret-key"));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn store_urls() {
        assert_eq!("redb".parse::<StoreUrl>().unwrap(), StoreUrl::Redb);
        assert!(matches!(
            "redis://x:1".parse::<StoreUrl>().unwrap(),
            StoreUrl::Redis(target) if !target.is_cluster()
        ));
        assert!(matches!(
            "redis+cluster://x:1,y:2".parse::<StoreUrl>().unwrap(),
            StoreUrl::Redis(target) if target.is_cluster()
        ));
        assert!("redis://x:1?nope=1".parse::<StoreUrl>().is_err());
        assert_eq!(
            "postgres://x".parse::<StoreUrl>().unwrap(),
            StoreUrl::Other("postgres://x".into())
        );
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn redis_urls_need_the_redis_feature() {
        assert_eq!("redb".parse::<StoreUrl>().unwrap(), StoreUrl::Redb);
        for url in ["redis://user:secret@x:1", "redis+cluster://x:1,y:2"] {
            let error = url.parse::<StoreUrl>().unwrap_err();
            assert_eq!(error, StoreUrlError::RedisNotBuilt);
            assert!(error.to_string().contains("`redis` feature"));
            assert!(!error.to_string().contains("secret"));
        }
    }
}
