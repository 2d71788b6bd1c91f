//! A running relay: [`Server::spawn`] opens the store, binds the sockets and
//! starts the HTTP server, the UDP check loop and the sweeper;
//! [`Server::shutdown`] stops them in order.
//!
//! Plain HTTP and HTTPS are served by the same accept loop, under the same
//! connection caps and timeouts (`spec/relay.md` §6.1); over TLS the
//! handshake is part of the header timeout and HTTP/2 is offered by ALPN.
//!
//! Every task belongs to the [`Server`] handle: dropping it without a
//! shutdown aborts them (the store's writer thread then finishes what is
//! queued and exits by itself). This module reads only the TLS files it is
//! given and installs no signal handlers; the binary does that.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{Config, StoreUrl, TlsConfig};
use crate::connections::{Busy, Connections};
use crate::http::router;
use crate::service::Relay;
#[cfg(feature = "redis")]
use crate::store::RedisStore;
use crate::store::{RedbStore, SourcePrefix, Store, StoreError, StoreOptions};

/// A relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// `--store` names a backend this build does not have.
    #[error(
        "unsupported store {0:?}: this build stores mailboxes in redb (`--store redb`) or Redis \
         (`--store redis://HOST:PORT`, `--store redis+cluster://HOST:PORT,HOST:PORT`)"
    )]
    UnsupportedStore(String),
    /// The store could not be opened (data directory, lock, corruption).
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// The HTTP address could not be bound.
    #[error("cannot listen for HTTP on {addr}")]
    BindHttp {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The UDP address could not be bound.
    #[error("cannot listen for UDP on {addr}")]
    BindUdp {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Push could not be set up (the VAPID key file).
    #[error("cannot set up push")]
    Push(#[from] crate::push::PushError),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A relay did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(io::Error),
    /// The store could not write what it kept in memory.
    #[error("closing the store")]
    Store(#[from] StoreError),
}

/// A running relay. See the module documentation.
#[derive(Debug)]
pub struct Server {
    http_addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    relay: Arc<Relay>,
    /// Tells the HTTP(S) accept loop to stop, with the grace period.
    http_stop: watch::Sender<Option<Duration>>,
    stop: watch::Sender<bool>,
    http_task: Option<JoinHandle<io::Result<()>>>,
    tasks: JoinSet<()>,
    /// The store's feed of sends through other relay nodes, if it has one.
    send_feed: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Server {
    /// Opens the store named by `config.store` and starts serving.
    pub async fn spawn(config: Config) -> Result<Self, SpawnError> {
        let store: Arc<dyn Store> = match &config.store {
            StoreUrl::Redb => {
                let dir = config.data_dir.clone();
                let options = StoreOptions::from_config(&config);
                let store = tokio::task::spawn_blocking(move || RedbStore::open(&dir, options))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??;
                tracing::info!(path = %store.path().display(), "store open");
                Arc::new(store)
            }
            #[cfg(feature = "redis")]
            StoreUrl::Redis(target) => {
                let store = RedisStore::connect(target, StoreOptions::from_config(&config)).await?;
                tracing::info!(redis = %target, "store connected");
                Arc::new(store)
            }
            StoreUrl::Other(url) => return Err(SpawnError::UnsupportedStore(url.clone())),
        };
        match Self::spawn_with_store(config, Arc::clone(&store)).await {
            Ok(server) => Ok(server),
            Err(error) => {
                if let Err(close) = store.close().await {
                    tracing::warn!(error = %close, "closing the store after a failed start");
                }
                Err(error)
            }
        }
    }

    /// Starts serving over an already open `store` (for other backends and
    /// tests); `config.store` and `config.data_dir` are not used.
    pub async fn spawn_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Self, SpawnError> {
        let tls = match &config.tls {
            Some(tls) => Some(tls_config(tls)?),
            None => None,
        };
        let listener =
            std::net::TcpListener::bind(config.http).map_err(|source| SpawnError::BindHttp {
                addr: config.http,
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| SpawnError::BindHttp {
                addr: config.http,
                source,
            })?;
        let udp = match config.udp {
            Some(addr) => {
                let socket = tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|source| SpawnError::BindUdp { addr, source })?;
                let local = socket
                    .local_addr()
                    .map_err(|source| SpawnError::BindUdp { addr, source })?;
                Some((socket, local))
            }
            None => None,
        };
        let udp_addr = udp.as_ref().map(|(_, addr)| *addr);
        let mut config = config;
        if config.urls.is_empty() {
            config.urls = crate::config::default_urls(http_addr, config.tls.is_some());
            if http_addr.ip().is_unspecified() {
                let urls: Vec<&str> = config.urls.iter().map(|u| u.as_str()).collect();
                tracing::warn!(
                    "no public URL configured: answers are accepted only for {}; set --url to the URL clients use",
                    urls.join(", ")
                );
            }
        }
        let mut relay = Relay::new(&config, store, udp_addr.map(|a| a.port()));
        relay.enable_push(&config)?;
        let relay = Arc::new(relay);

        let service = router(Arc::clone(&relay));
        let (http_stop, stopped) = watch::channel(None);
        let http_task = tokio::spawn(serve_http(
            listener,
            service,
            Arc::clone(&relay),
            tls.map(tokio_rustls::TlsAcceptor::from),
            stopped,
        ));

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if let Some((socket, _)) = udp {
            tasks.spawn(crate::udp::serve(
                socket,
                Arc::clone(&relay),
                stopped.clone(),
            ));
        }
        tasks.spawn(sweeper(Arc::clone(&relay), config.sweep_interval, stopped));
        let send_feed = relay
            .store()
            .listen_for_sends(Arc::clone(&relay) as Arc<dyn crate::store::SendListener>);
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        match udp_addr {
            Some(udp) => {
                tracing::info!("relay listening: {scheme} on {http_addr}, UDP checks on {udp}")
            }
            None => tracing::info!("relay listening: {scheme} on {http_addr}, no UDP checks"),
        }
        Ok(Self {
            http_addr,
            udp_addr,
            relay,
            http_stop,
            stop,
            http_task: Some(http_task),
            tasks,
            send_feed,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound HTTP (or HTTPS) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound UDP check address, if the UDP check is on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The relay's logic, for tests and embedders (sweeps, metrics, store).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Stops gracefully: stops accepting connections, lets in-flight requests
    /// finish (closing connections still busy after
    /// [`Config::shutdown_timeout`]), stops the UDP loop and the sweeper,
    /// then flushes and closes the store.
    pub async fn shutdown(mut self) -> Result<(), ShutdownError> {
        // Held checks are answered now, not at the end of their waits.
        self.relay.release_held_checks();
        // The loop sees the change, or the sender's drop, either way.
        let _ = self.http_stop.send(Some(self.shutdown_timeout));
        let http = match self.http_task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(join) => Err(io::Error::other(join)),
            },
            None => Ok(()),
        };
        // The receivers see the change, or the sender's drop, either way.
        let _ = self.stop.send(true);
        if let Some(feed) = self.send_feed.take() {
            feed.abort();
        }
        while self.tasks.join_next().await.is_some() {}
        let closed = self.relay.store().close().await;
        tracing::info!("relay stopped");
        http.map_err(ShutdownError::Http)?;
        closed?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.http_task.take() {
            task.abort();
        }
        if let Some(feed) = self.send_feed.take() {
            feed.abort();
        }
        // `tasks` aborts its tasks when dropped.
    }
}

/// Serves HTTP/1.1, and over TLS (`tls`) also HTTP/2 by ALPN, with hyper's
/// connections directly (the HTTP/1-or-2 detection and per-connection
/// wrappers of a general-purpose server cost CPU on every request of a
/// kept-alive connection, and plain-text HTTP/2 is not something clients of
/// a relay use). When `stop` names a grace period, stops accepting, asks
/// every connection to finish its request under way, and closes those still
/// open after the period. Dropping the task (an abort) closes every
/// connection at once.
///
/// Each connection must deliver a request's headers within
/// [`ConnectionLimits::header_timeout`](crate::ConnectionLimits) of the
/// relay starting to wait for them (hyper's header timer, which also ends
/// idle kept-alive connections); over TLS the handshake must end within the
/// same time of the accept, and a connection with no request under way and
/// none begun for that long is closed (HTTP/2 has no header timer). The caps
/// on connections are enforced by [`Connections`] at accept, for plain HTTP
/// and TLS alike.
async fn serve_http(
    listener: std::net::TcpListener,
    service: crate::http::RelayRouter,
    relay: Arc<Relay>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let limits = *relay.connection_limits();
    let open_files = crate::connections::raise_open_file_limit();
    let max_total = crate::connections::cap_for_open_files(limits.max_total, open_files);
    if max_total < limits.max_total {
        tracing::warn!(
            "connection cap lowered from {} to {max_total} to fit the open-file limit of {}",
            limits.max_total,
            crate::connections::describe_limit(open_files)
        );
    }
    let table = Connections::new(max_total, limits.max_per_source);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut http2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    http2.timer(hyper_util::rt::TokioTimer::new());
    let mut connections = JoinSet::new();
    let mut accept_failures = RareLog::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ip = peer.ip().to_canonical();
                    let (ticket, closed) = table.admit(
                        SourcePrefix::from(ip),
                        // A reverse proxy on this host, or a local test.
                        ip.is_loopback(),
                    );
                    for reason in closed {
                        relay.metrics().connection_closed(reason.label());
                    }
                    let ticket = match ticket {
                        Ok(ticket) => ticket,
                        Err(reason) => {
                            relay.metrics().connection_closed(reason.label());
                            refuse(&stream);
                            continue;
                        }
                    };
                    let id = ticket.id();
                    let activity = Activity::new(ticket.busy_counter());
                    let responder = {
                        let service = service.for_peer(peer);
                        let activity = activity.clone();
                        hyper::service::service_fn(move |request| {
                            let busy = activity.begin();
                            let answer = service.respond(request);
                            async move {
                                let answer = answer.await;
                                drop(busy);
                                answer
                            }
                        })
                    };
                    let watcher = graceful.watcher();
                    let task = match &tls {
                        None => {
                            let connection = http1.serve_connection(
                                hyper_util::rt::TokioIo::new(stream),
                                responder,
                            );
                            connections.spawn(async move {
                                let _ticket = ticket;
                                // A client that went away or timed out: nothing to do.
                                let _ = watcher.watch(connection).await;
                            })
                        }
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            let (http1, http2) = (http1.clone(), http2.clone());
                            let idle = limits.header_timeout;
                            connections.spawn(async move {
                                let _ticket = ticket;
                                let Ok(Ok(stream)) = tokio::time::timeout(idle, handshake).await else {
                                    return;
                                };
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                let io = hyper_util::rt::TokioIo::new(stream);
                                if h2 {
                                    let connection = watcher.watch(http2.serve_connection(io, responder));
                                    tokio::select! {
                                        _ = connection => {}
                                        () = activity.idle_for(idle) => {}
                                    }
                                } else {
                                    let connection = watcher.watch(http1.serve_connection(io, responder));
                                    tokio::select! {
                                        _ = connection => {}
                                        () = activity.idle_for(idle) => {}
                                    }
                                }
                            })
                        }
                    };
                    table.serving(id, task);
                    relay.metrics().connections_open(table.len());
                }
                // Out of file descriptors and the like: wait, then go on.
                Err(error) => {
                    accept_failures.warn(&error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {
                relay.metrics().connections_open(table.len());
            }
            changed = stop.changed() => {
                // A dropped sender stops at once, like an abort.
                let timeout = changed.ok().and(*stop.borrow()).unwrap_or_default();
                drop(listener);
                if tokio::time::timeout(timeout, graceful.shutdown()).await.is_err() {
                    tracing::warn!(
                        "connections still open after the {} s grace period; closing them",
                        timeout.as_secs_f64()
                    );
                }
                connections.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// What a connection is doing: requests under way (the connection's
/// [`Busy`] counter, which [`Connections`] reads to find idle connections)
/// and requests begun so far.
#[derive(Debug, Clone)]
struct Activity {
    busy: Arc<AtomicU32>,
    begun: Arc<AtomicU64>,
}

impl Activity {
    fn new(busy: Arc<AtomicU32>) -> Self {
        Self {
            busy,
            begun: Arc::default(),
        }
    }

    /// Marks a request under way until the guard is dropped.
    fn begin(&self) -> Busy {
        self.begun.fetch_add(1, Ordering::Relaxed);
        Busy::new(Arc::clone(&self.busy))
    }

    /// Ends once a whole period of `idle` passed with no request under way
    /// and none begun: between `idle` and twice `idle` after the last
    /// request ended.
    async fn idle_for(&self, idle: Duration) {
        let mut seen = self.begun.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle).await;
            let begun = self.begun.load(Ordering::Relaxed);
            if begun == seen && self.busy.load(Ordering::Acquire) == 0 {
                return;
            }
            seen = begun;
        }
    }
}

/// Answers a connection refused by a cap with the protocol's 503, if the
/// socket takes it at once, and closes it.
fn refuse(stream: &tokio::net::TcpStream) {
    use connectoid_protocol::{ApiError, ErrorCode, Response};
    let body = Response::Error(ApiError::new(
        ErrorCode::Unavailable,
        "too many connections; retry later",
    ))
    .to_json();
    let mut bytes = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_ref());
    // A full send buffer or a reset: the close alone says it.
    let _ = stream.try_write(&bytes);
}

/// A warning logged at most once a second, with the number of times it was
/// not logged in between (accept failures come in storms: one per attempt
/// while the process is out of file descriptors).
#[derive(Debug, Default)]
struct RareLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RareLog {
    fn warn(&mut self, error: &io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(%error, suppressed = self.suppressed, "accepting a connection failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

async fn sweeper(relay: Arc<Relay>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = interval.tick() => match relay.sweep().await {
                Ok(report) if report != Default::default() => {
                    tracing::info!(
                        "sweep removed {} expired message(s), {} idle mailbox(es) and {} expired question(s); {} last-check time(s) written",
                        report.messages_removed,
                        report.mailboxes_removed,
                        report.questions_removed,
                        report.checks_persisted
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "sweep failed"),
            },
        }
    }
}

/// A rustls server configuration with the aws-lc-rs provider (the only one
/// this project compiles in), whatever the process default is.
fn tls_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, SpawnError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| SpawnError::Tls(format!("certificate {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(SpawnError::Tls(format!(
            "no certificate in {}",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| SpawnError::Tls(format!("private key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SpawnError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SpawnError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
