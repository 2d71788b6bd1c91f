//! The `connectoid-relay` binary: flags, environment variables and an
//! optional TOML file become a [`Config`]; the relay runs until Ctrl-C or
//! SIGTERM, then shuts down gracefully.
//!
//! Precedence: a flag beats its environment variable, which beats the TOML
//! file, which beats the built-in default. Once listening it prints
//! `listening http=ADDR` (and `listening udp=ADDR`) on stdout; logs go to
//! stderr. Exit codes: 0 after a clean shutdown, 1 when the relay cannot
//! start or stops with an error, 2 for bad flags or a bad config file.

use std::cell::Cell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use connectoid_relay::{Config, Rate, Server, StoreUrl, TlsConfig};

/// mimalloc rather than the system allocator: after floods of connections
/// glibc's malloc kept more of the freed buffers each round (10,000
/// connections: 138, 185, 205 MB). mimalloc alone kept them too, in another
/// way: a block freed by one runtime worker goes back to the heap of the
/// worker that allocated it, and mimalloc releases those pages only when
/// the owning thread allocates or collects, which an idle worker never does
/// (a debug relay stayed at 85 to 226 MiB after a round, from 34 MiB). So each
/// worker collects its own heap when it parks ([`collect_when_idle`]); after
/// a flood the relay goes back to within a few MiB of where it started (the
/// resilience suite's connection-flood test; `spec/relay.md` §6.1).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often at most a runtime worker collects its heap when it parks.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Runs each time a runtime worker parks (finds nothing to do): gives back
/// to the system the memory other threads freed to this worker's heap, at
/// most once every [`COLLECT_EVERY`] on each thread, so that a busy relay,
/// whose workers park and wake many times a second, pays for one look at
/// the clock per park and not for a collection.
fn collect_when_idle() {
    thread_local! {
        static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        collect_this_thread();
    }
}

/// mimalloc's `mi_collect(true)` for the calling thread's heap: frees the
/// pages whose blocks have all been freed (also those freed by other
/// threads) and gives free memory back to the system now. `mi_collect(false)`
/// leaves the giving back to mimalloc's purge delay (1 s), which only a later
/// collection or allocation acts on: after a flood the relay kept 37 to
/// 82 MiB more than before (debug relay), against 0 to 14 MiB with `true`.
/// It took 85 µs (median of 96 calls; 155 µs at the 90th percentile) in a
/// debug build, and 8 to 20 ms for the calls that gave back a flood's
/// memory.
#[allow(unsafe_code)]
fn collect_this_thread() {
    // SAFETY: `mi_collect` has no preconditions: it takes no pointers, works
    // on the calling thread's own heap (made on first use) and the shared
    // arenas, which mimalloc synchronizes itself.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

const ABOUT: &str = "Connectoid relay: keeps end-to-end encrypted signaling messages in \
per-key mailboxes for an hour (HTTP API, optional UDP check).";

const AFTER_HELP: &str = "\
Every flag can also be set with its environment variable or in the TOML file given with \
--config, using the flag's name as key (e.g. `http = \"0.0.0.0:8080\"`, `send-rate-ip = \"120:60\"`); \
repeatable flags take a list under the plural name (`urls`, `peers`, `api-keys`). \
A flag beats its environment variable, which beats the file.

Rates are PER_MINUTE:BURST token buckets (e.g. 120:60), or `off`. A request that finds a \
bucket empty gets \"Too often\" (HTTP 429); UDP datagrams are dropped.

With no flags at all: HTTP on 127.0.0.1:8080, embedded storage in ./connectoid-data, no UDP. \
Several relay nodes share mailboxes through --store redis://... (give them all the same --url).
Exit codes: 0 clean shutdown (Ctrl-C or SIGTERM), 1 failed to start or failed while running, \
2 bad flags or config file.";

#[derive(Debug, Parser)]
#[command(
    name = "connectoid-relay",
    version = env!("CONNECTOID_VERSION"),
    about = ABOUT,
    after_help = AFTER_HELP
)]
struct Args {
    /// Read settings from this TOML file (keys are the flag names).
    #[arg(long, env = "CONNECTOID_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,
}

/// A token bucket or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
struct RateSetting(Option<Rate>);

impl FromStr for RateSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        // Only the documented form: a bare number is refused rather than
        // read as a guess of what was meant.
        if !text.contains(':') {
            return Err(format!(
                "invalid rate {text:?}: use PER_MINUTE:BURST (e.g. 120:60) or off"
            ));
        }
        text.parse()
            .map(|r| Self(Some(r)))
            .map_err(|e| format!("{e}"))
    }
}

impl TryFrom<String> for RateSetting {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, all optional so that flags, environment and file merge.
#[derive(Debug, Default, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Settings {
    /// HTTP listen address [default: 127.0.0.1:8080]. Use 0.0.0.0:8080 to serve other hosts.
    #[arg(long, env = "CONNECTOID_HTTP", value_name = "ADDR")]
    http: Option<SocketAddr>,

    /// Enable the UDP check fast path on this address and advertise its port
    /// in /.well-known/connectoid [default: off].
    #[arg(long, env = "CONNECTOID_UDP", value_name = "ADDR")]
    udp: Option<SocketAddr>,

    /// Directory of the embedded store [default: ./connectoid-data].
    #[arg(long, env = "CONNECTOID_DATA", value_name = "DIR")]
    data: Option<PathBuf>,

    /// Storage backend: `redb` (the embedded store in --data), or Redis shared by
    /// several relay nodes: redis://HOST:PORT[/DB] or
    /// redis+cluster://HOST:PORT,HOST:PORT,... (query: ?prefix=cnid&timeout_ms=2000)
    /// [default: redb].
    #[arg(long, env = "CONNECTOID_STORE", value_name = "URL")]
    store: Option<String>,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(
        long,
        env = "CONNECTOID_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "CONNECTOID_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// A public URL of this relay, as links name it (e.g. https://relay.example/).
    /// Answers to questions are bound to it. Repeatable; the variable takes a
    /// comma-separated list [default: http://IP:PORT/ of --http, and
    /// http://localhost:PORT/ for a loopback address].
    #[arg(
        long = "url",
        env = "CONNECTOID_URLS",
        value_name = "URL",
        value_delimiter = ','
    )]
    urls: Option<Vec<String>>,

    /// Operator contact (email or URL) published in the information document.
    #[arg(long, env = "CONNECTOID_CONTACT", value_name = "TEXT")]
    contact: Option<String>,

    /// A relay this operator federates with or recommends, published in the
    /// information document. Repeatable; the variable takes a comma-separated list.
    #[arg(
        long = "peer",
        env = "CONNECTOID_PEERS",
        value_name = "URL",
        value_delimiter = ','
    )]
    peers: Option<Vec<String>>,

    /// Require this API key as a request's `ext` ("Forbidden" otherwise). Repeatable;
    /// the variable takes a comma-separated list [default: no key required].
    #[arg(
        long = "api-key",
        env = "CONNECTOID_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Option<Vec<String>>,

    /// Largest sealed message in bytes; larger sends get "Too big" [default and maximum: 65536].
    #[arg(long, env = "CONNECTOID_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    max_message_bytes: Option<usize>,

    /// Largest `limit` honoured by receive; larger ones are capped [default and maximum: 100].
    #[arg(long, env = "CONNECTOID_MAX_RECEIVE_LIMIT", value_name = "N")]
    max_receive_limit: Option<u32>,

    /// Most unexpired messages per mailbox; then "Mailbox full" [default: 100].
    #[arg(long, env = "CONNECTOID_MAX_PENDING", value_name = "N")]
    max_pending: Option<u32>,

    /// Most bytes of message data stored in total; then "Relay full" [default: 1073741824].
    #[arg(long, env = "CONNECTOID_MAX_STORED_BYTES", value_name = "BYTES")]
    max_stored_bytes: Option<u64>,

    /// Most mailboxes kept; then "Relay full" for new ones [default: 1000000].
    #[arg(long, env = "CONNECTOID_MAX_MAILBOXES", value_name = "N")]
    max_mailboxes: Option<u64>,

    /// Most sends (and other writes) committed and fsynced together by the
    /// embedded store; 1 turns group commit off (for benchmarks) [default: 512].
    #[arg(long, env = "CONNECTOID_MAX_COMMIT_BATCH", value_name = "N")]
    max_commit_batch: Option<usize>,

    /// Token bucket for send/delete per source IP (IPv6 per /64) [default: 120:60].
    #[arg(long, env = "CONNECTOID_SEND_RATE_IP", value_name = "RATE")]
    send_rate_ip: Option<RateSetting>,

    /// Token bucket for send/delete per mailbox [default: 60:30].
    #[arg(long, env = "CONNECTOID_SEND_RATE_MAILBOX", value_name = "RATE")]
    send_rate_mailbox: Option<RateSetting>,

    /// Token bucket for check/receive/UDP datagrams per source IP [default: 1200:200].
    #[arg(long, env = "CONNECTOID_CHECK_RATE_IP", value_name = "RATE")]
    check_rate_ip: Option<RateSetting>,

    /// Token bucket for check/receive per mailbox [default: 120:30].
    #[arg(long, env = "CONNECTOID_CHECK_RATE_MAILBOX", value_name = "RATE")]
    check_rate_mailbox: Option<RateSetting>,

    /// Seconds a message lives after it arrives, received or not [default: 3600].
    #[arg(long, env = "CONNECTOID_MESSAGE_TTL", value_name = "SECONDS")]
    message_ttl: Option<u64>,

    /// Seconds a question lives after it is made [default: 60].
    #[arg(long, env = "CONNECTOID_QUESTION_TTL", value_name = "SECONDS")]
    question_ttl: Option<u64>,

    /// Seconds without a check after which a mailbox is deleted [default: 2592000, 30 days].
    #[arg(long, env = "CONNECTOID_MAILBOX_IDLE_TTL", value_name = "SECONDS")]
    mailbox_idle_ttl: Option<u64>,

    /// Seconds between runs of the sweeper that deletes expired data [default: 60].
    #[arg(long, env = "CONNECTOID_SWEEP_INTERVAL", value_name = "SECONDS")]
    sweep_interval: Option<u64>,

    /// Behind a reverse proxy on this host: take the client address from the
    /// last X-Forwarded-For entry of loopback connections [default: false].
    #[arg(
        long,
        env = "CONNECTOID_TRUST_FORWARDED_FOR",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    trust_forwarded_for: Option<bool>,

    /// Seconds a connection may take to send a request's headers, from its
    /// accept or its previous answer (so also the idle keep-alive time) [default: 30].
    #[arg(long, env = "CONNECTOID_HEADER_TIMEOUT", value_name = "SECONDS")]
    header_timeout: Option<u64>,

    /// Seconds the relay waits for a request's whole body [default: 10].
    #[arg(long, env = "CONNECTOID_BODY_TIMEOUT", value_name = "SECONDS")]
    body_timeout: Option<u64>,

    /// Most HTTP(S) connections open at once (lowered to fit the open-file
    /// limit); at the cap the oldest idle connection is closed [default: 10000].
    #[arg(long, env = "CONNECTOID_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,

    /// Most connections open at once from one source IP (IPv6 per /64) [default: 256].
    #[arg(long, env = "CONNECTOID_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<usize>,

    /// Longest time in seconds a held check (`check` with `wait`) waits for a
    /// message before it is answered found:false; 0 turns held checks off [default: 30].
    #[arg(long, env = "CONNECTOID_HELD_MAX_WAIT", value_name = "SECONDS")]
    held_max_wait: Option<u64>,

    /// Most held checks waiting at once from one source IP (IPv6 per /64);
    /// past it "Too often" [default: 64].
    #[arg(long, env = "CONNECTOID_HELD_MAX_PER_IP", value_name = "N")]
    held_max_per_ip: Option<u32>,

    /// Most held checks waiting at once in all (each keeps a connection open:
    /// keep it below --max-connections); past it "Too often" [default: 5000].
    #[arg(long, env = "CONNECTOID_HELD_MAX_TOTAL", value_name = "N")]
    held_max_total: Option<u32>,

    /// Serve `push` requests and send push notifications (UnifiedPush, Web
    /// Push with a VAPID key kept in the data directory) [default: false].
    #[arg(
        long,
        env = "CONNECTOID_PUSH",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    push: Option<bool>,

    /// Seconds between two pushes to one mailbox at least [default: 10].
    #[arg(long, env = "CONNECTOID_PUSH_MIN_INTERVAL", value_name = "SECONDS")]
    push_min_interval: Option<u64>,

    /// Most pushes waiting to be sent; more are dropped [default: 1024].
    #[arg(long, env = "CONNECTOID_PUSH_QUEUE", value_name = "N")]
    push_queue: Option<usize>,

    /// Seconds one push delivery may take [default: 5].
    #[arg(long, env = "CONNECTOID_PUSH_TIMEOUT", value_name = "SECONDS")]
    push_timeout: Option<u64>,

    /// FOR TESTS ONLY: accept http push endpoints and endpoints on loopback,
    /// private and link-local addresses (request forgery) [default: false].
    #[arg(
        long,
        env = "CONNECTOID_PUSH_ALLOW_PRIVATE",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    push_allow_private: Option<bool>,

    /// Log format on stderr [default: text].
    #[arg(long, env = "CONNECTOID_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Log level on stderr: error, warn, info, debug or trace, or a filter
    /// such as `connectoid_relay=debug,info`. Without it, RUST_LOG is used
    /// if set [default: info].
    #[arg(long, env = "CONNECTOID_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
}

impl Settings {
    /// Fills every setting missing here from `file`.
    fn or(self, file: Self) -> Self {
        macro_rules! merge {
            ($($field:ident),* $(,)?) => { Self { $($field: self.$field.or(file.$field)),* } };
        }
        merge!(
            http,
            udp,
            data,
            store,
            tls_cert,
            tls_key,
            urls,
            contact,
            peers,
            api_keys,
            max_message_bytes,
            max_receive_limit,
            max_pending,
            max_stored_bytes,
            max_mailboxes,
            max_commit_batch,
            send_rate_ip,
            send_rate_mailbox,
            check_rate_ip,
            check_rate_mailbox,
            message_ttl,
            question_ttl,
            mailbox_idle_ttl,
            sweep_interval,
            trust_forwarded_for,
            header_timeout,
            body_timeout,
            max_connections,
            max_connections_per_ip,
            held_max_wait,
            held_max_per_ip,
            held_max_total,
            push,
            push_min_interval,
            push_queue,
            push_timeout,
            push_allow_private,
            log_format,
            log_level,
        )
    }

    fn into_config(self) -> anyhow::Result<Config> {
        use connectoid_protocol::limits as protocol;
        let mut config = Config::new(
            self.data
                .unwrap_or_else(|| PathBuf::from("connectoid-data")),
        );
        if let Some(http) = self.http {
            config.http = http;
        }
        config.udp = self.udp;
        if let Some(store) = self.store {
            config.store = store.parse::<StoreUrl>()?;
            if let StoreUrl::Other(_) = config.store {
                // The URL is not repeated: it may hold a password.
                bail!(
                    "--store: unsupported store; use redb, redis://HOST:PORT or redis+cluster://HOST:PORT,..."
                );
            }
        }
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        config.urls = self
            .urls
            .unwrap_or_default()
            .iter()
            .map(|url| {
                connectoid_protocol::RelayUrl::parse(url)
                    .map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        config.contact = self.contact;
        config.peers = self.peers.unwrap_or_default();
        config.api_keys = self.api_keys.unwrap_or_default();
        if config.api_keys.iter().any(String::is_empty) {
            bail!("an API key must not be empty");
        }
        let limits = &mut config.limits;
        if let Some(max) = self.max_message_bytes {
            // No sealed message is smaller than the smallest padding bucket
            // plus the seal's overhead: a lower limit refuses every message.
            let smallest = connectoid_protocol::seal::MIN_PADDED_LEN
                + connectoid_protocol::seal::SEAL_OVERHEAD;
            if !(smallest..=protocol::MAX_MESSAGE_BYTES).contains(&max) {
                bail!(
                    "max-message-bytes must be {smallest} (the smallest sealed message) to {}",
                    protocol::MAX_MESSAGE_BYTES
                );
            }
            limits.max_message_bytes = max;
        }
        if let Some(max) = self.max_receive_limit {
            if max == 0 || max > protocol::MAX_RECEIVE_LIMIT {
                bail!(
                    "max-receive-limit must be 1 to {}",
                    protocol::MAX_RECEIVE_LIMIT
                );
            }
            limits.max_receive_limit = max;
        }
        if let Some(max) = self.max_pending {
            limits.max_pending_per_mailbox = max;
        }
        if let Some(max) = self.max_stored_bytes {
            limits.max_stored_bytes = max;
        }
        if let Some(max) = self.max_mailboxes {
            limits.max_mailboxes = max;
        }
        if let Some(max) = self.max_commit_batch {
            if max == 0 {
                bail!("max-commit-batch must be at least 1");
            }
            limits.max_commit_batch = max;
        }
        let rates = [
            (self.send_rate_ip, &mut limits.rate.send_per_ip),
            (self.send_rate_mailbox, &mut limits.rate.send_per_mailbox),
            (self.check_rate_ip, &mut limits.rate.check_per_ip),
            (self.check_rate_mailbox, &mut limits.rate.check_per_mailbox),
        ];
        for (setting, slot) in rates {
            if let Some(RateSetting(rate)) = setting {
                *slot = rate;
            }
        }
        let seconds = |value: Option<u64>, name: &str| -> anyhow::Result<Option<Duration>> {
            match value {
                Some(0) => bail!("{name} must be at least 1 second"),
                other => Ok(other.map(Duration::from_secs)),
            }
        };
        let retention = &mut config.retention;
        if let Some(ttl) = seconds(self.message_ttl, "message-ttl")? {
            retention.message = ttl;
        }
        if let Some(ttl) = seconds(self.question_ttl, "question-ttl")? {
            retention.question = ttl;
        }
        if let Some(ttl) = seconds(self.mailbox_idle_ttl, "mailbox-idle-ttl")? {
            retention.mailbox_idle = ttl;
        }
        if let Some(every) = seconds(self.sweep_interval, "sweep-interval")? {
            config.sweep_interval = every;
        }
        config.trust_forwarded_for = self.trust_forwarded_for.unwrap_or(false);
        config.push.enabled = self.push.unwrap_or(false);
        config.push.allow_private = self.push_allow_private.unwrap_or(false);
        if let Some(every) = seconds(self.push_min_interval, "push-min-interval")? {
            config.push.min_interval = every;
        }
        if let Some(timeout) = seconds(self.push_timeout, "push-timeout")? {
            config.push.timeout = timeout;
        }
        if let Some(queue) = self.push_queue {
            if queue == 0 {
                bail!("push-queue must be at least 1");
            }
            config.push.queue = queue;
        }
        let connections = &mut config.connections;
        if let Some(timeout) = seconds(self.header_timeout, "header-timeout")? {
            connections.header_timeout = timeout;
        }
        if let Some(timeout) = seconds(self.body_timeout, "body-timeout")? {
            connections.body_timeout = timeout;
        }
        for (value, slot, name) in [
            (
                self.max_connections,
                &mut connections.max_total,
                "max-connections",
            ),
            (
                self.max_connections_per_ip,
                &mut connections.max_per_source,
                "max-connections-per-ip",
            ),
        ] {
            match value {
                Some(0) => bail!("{name} must be at least 1"),
                Some(max) => *slot = max,
                None => {}
            }
        }
        if let Some(wait) = self.held_max_wait {
            config.held.max_wait = Duration::from_secs(wait);
        }
        for (value, slot, name) in [
            (
                self.held_max_per_ip,
                &mut config.held.max_per_source,
                "held-max-per-ip",
            ),
            (
                self.held_max_total,
                &mut config.held.max_total,
                "held-max-total",
            ),
        ] {
            match value {
                Some(0) => bail!("{name} must be at least 1"),
                Some(max) => *slot = max,
                None => {}
            }
        }
        Ok(config)
    }
}

fn settings(args: Args) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => Settings::default(),
    };
    Ok(args.settings.or(file))
}

/// Logs on stderr at `level` (a filter), else RUST_LOG, else `info` (with
/// the STUN codec's warnings about malformed datagrams, which anyone can
/// send, off).
fn init_logging(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level)
            .with_context(|| format!("invalid --log-level {level:?}"))?,
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,stun_types=error")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Ctrl-C (SIGINT) and SIGTERM, registered as soon as this is made, so that
/// a signal arriving right after the `listening` lines is never lost.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the first of them.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::register().context("cannot listen for signals")?;
    let tls = config.tls.is_some();
    let server = Server::spawn(config).await?;
    {
        let mut out = std::io::stdout().lock();
        let scheme = if tls { "https" } else { "http" };
        writeln!(out, "listening {scheme}={}", server.http_addr())?;
        if let Some(udp) = server.udp_addr() {
            writeln!(out, "listening udp={udp}")?;
        }
        out.flush()?;
    }
    signals.recv().await;
    tracing::info!("shutting down");
    server.shutdown().await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match settings(args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("connectoid-relay: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = init_logging(
        settings.log_format.unwrap_or(LogFormat::Text),
        settings.log_level.as_deref(),
    ) {
        eprintln!("connectoid-relay: {error:#}");
        return ExitCode::from(2);
    }
    let config = match settings.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("connectoid-relay: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("connectoid-relay: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("connectoid-relay: {error:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file() {
        let args = Args::try_parse_from([
            "connectoid-relay",
            "--http",
            "127.0.0.1:9000",
            "--send-rate-ip",
            "off",
            "--peer",
            "https://a.example",
            "--peer",
            "https://b.example",
            "--url",
            "https://Relay.Example",
        ])
        .unwrap();
        let file: Settings = toml::from_str(
            "http = \"0.0.0.0:1\"\nudp = \"0.0.0.0:2\"\ncheck-rate-ip = \"10:5\"\nmessage-ttl = 60\n",
        )
        .unwrap();
        let config = args.settings.or(file).into_config().unwrap();
        assert_eq!(config.http, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.udp, Some("0.0.0.0:2".parse().unwrap()));
        assert_eq!(config.limits.rate.send_per_ip, None);
        assert_eq!(config.limits.rate.check_per_ip, Some(Rate::new(10, 5)));
        assert_eq!(config.retention.message, Duration::from_secs(60));
        assert_eq!(config.peers, ["https://a.example", "https://b.example"]);
        assert_eq!(config.urls[0].as_str(), "https://relay.example/");
    }

    #[test]
    fn no_flags_gives_the_defaults() {
        let args = Args::try_parse_from(["connectoid-relay"]).unwrap();
        let config = args.settings.into_config().unwrap();
        assert_eq!(config.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.udp, None);
        assert_eq!(config.data_dir, PathBuf::from("connectoid-data"));
        assert_eq!(config.store, StoreUrl::Redb);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<Settings>("unknown = 1").is_err());
        assert!(toml::from_str::<Settings>("send-rate-ip = \"fast\"").is_err());
        let settings: Settings = toml::from_str("max-message-bytes = 100000").unwrap();
        assert!(settings.into_config().is_err());
        assert!(Args::try_parse_from(["connectoid-relay", "--tls-cert", "a.pem"]).is_err());
    }

    #[test]
    fn help_explains_every_flag() {
        use clap::CommandFactory as _;
        let command = Args::command();
        command.clone().debug_assert();
        for arg in command.get_arguments() {
            assert!(arg.get_help().is_some(), "{} has no help", arg.get_id());
        }
    }
}
