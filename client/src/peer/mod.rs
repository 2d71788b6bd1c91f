//! Peer links: after signaling, two peers connect directly over QUIC
//! (quinn), authenticate each other with their Connectoid keys, rotate to
//! fresh mailbox keys once, let the app exchange framed messages, and close.
//!
//! The offer and the answer travel through the relays as ordinary `offer`
//! and `answer` envelopes (signed by the pinned mailbox keys) whose body is
//! `{"quic": {"session": S, "fingerprint": F, "candidates": ["ip:port", ...]}}`
//! (an offer also has `"expires": ms`): a random session id, the SHA-256
//! fingerprint of a fresh self-signed certificate, and the addresses the
//! side can be reached at: the address relays saw for the socket (learnt
//! with a UDP check sent from the socket itself, so it is the NAT mapping
//! QUIC will use), then the host's interface addresses. Both sides then
//! dial each other's candidates at once, again every few round trips,
//! while accepting (simultaneous open, which punches through NATs that
//! map a socket to one public address whatever the destination), each
//! pinning the other's fingerprint as server and as client. The side with
//! the lower fingerprint (the leader) keeps the first connection that
//! completes and opens the one stream on it; the other side keeps the
//! connection on which that stream arrives. Every other connection is
//! dropped. See `spec/client.md`, "Peer links", for the byte-level details.
//!
//! [`Rendezvous`] drives the signaling part for an app: it sends offers,
//! answers offers it is handed (resolving glare when both sides offer at
//! once) and completes its own offers with their answers.
//!
//! This module does not sync anything itself: the app decides what the
//! messages mean (see `list` for the shopping list). It keeps no connection
//! or socket once a [`PeerLink`] is closed or dropped, nor after a failed
//! attempt; [`Client::peer_sockets`] counts the ones that exist.

mod auth;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use connectoid_protocol::b64;
use connectoid_protocol::envelope::Kind;
use rand_core::Rng as _;

use crate::client::Client;
use crate::error::ClientError;
use crate::event::Event;
use crate::profile::ProfileError;
use crate::rng::system_rng;
use tls::Identity;

/// Default time to get an authenticated connection after the offer and
/// answer are known: 10 seconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an offer waits for its answer: 30 seconds. The offer says
/// until when (`expires`); a peer ignores an offer past it.
pub const DEFAULT_OFFER_LIFETIME: Duration = Duration::from_secs(30);
/// Default QUIC idle timeout of a peer link: 10 seconds.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest message [`PeerLink::send`] and [`PeerLink::recv`] carry: 16 MiB
/// (the protocol's frame limit).
pub const MAX_MESSAGE_LEN: usize = connectoid_protocol::peer::MAX_FRAME_LEN;
pub use connectoid_protocol::peer::{Fingerprint, MAX_CANDIDATES, QuicOffer};

/// Counts one live peer-link socket of a client while it exists.
#[derive(Debug)]
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A peer link could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Sending the offer or answer through the relays failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The profile could not be written (key rotation).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The UDP socket could not be bound or set up.
    #[error("peer link socket")]
    Io(#[from] std::io::Error),
    /// The TLS or QUIC configuration could not be made.
    #[error("peer link TLS: {0}")]
    Tls(String),
    /// The offer or answer body is not a valid QUIC offer.
    #[error("invalid QUIC offer: {0}")]
    BadOffer(String),
    /// No authenticated connection came up within the connect timeout
    /// (unreachable candidates, or a peer with another certificate).
    #[error("no direct connection to {nickname:?}: {reason}")]
    Connect {
        /// The peer.
        nickname: String,
        /// The last error seen, or the timeout.
        reason: String,
    },
    /// The peer failed the challenge-response with its pinned key.
    #[error("peer {nickname:?} failed authentication: {reason}")]
    Auth {
        /// The peer.
        nickname: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection broke or the peer broke the framing.
    #[error("peer link: {0}")]
    Link(String),
}

fn bad_offer(error: connectoid_protocol::peer::OfferError) -> PeerError {
    PeerError::BadOffer(error.to_string())
}

/// How peer links bind, advertise and wait.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeerLinkOptions {
    /// The address the QUIC socket binds (port 0 = any). Default
    /// `0.0.0.0`.
    pub bind: IpAddr,
    /// Advertise and dial loopback addresses only (tests, or two apps on
    /// one machine): nothing is ever sent to another address. Default off.
    pub loopback_only: bool,
    /// Our address as a relay observed it (from a UDP check), advertised
    /// with our QUIC port as one more candidate. Default none.
    pub observed: Option<IpAddr>,
    /// Time to get an authenticated connection. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`] (10 s).
    pub connect_timeout: Duration,
    /// QUIC idle timeout. Default [`DEFAULT_IDLE_TIMEOUT`] (10 s).
    pub idle_timeout: Duration,
    /// How long our offers wait for their answer: they carry `expires`
    /// (ms since the Unix epoch, now plus this), and a peer answers none
    /// past it, so an offer left over from an earlier run is not answered.
    /// Default [`DEFAULT_OFFER_LIFETIME`] (30 s).
    pub offer_lifetime: Duration,
}

impl Default for PeerLinkOptions {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            loopback_only: false,
            observed: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            offer_lifetime: DEFAULT_OFFER_LIFETIME,
        }
    }
}

impl PeerLinkOptions {
    /// Options that bind 127.0.0.1 and use loopback addresses only.
    pub fn loopback() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            loopback_only: true,
            ..Self::default()
        }
    }

    fn allows(&self, addr: &SocketAddr) -> bool {
        !addr.ip().is_unspecified() && (!self.loopback_only || addr.ip().is_loopback())
    }
}

/// Shortest and longest round trip assumed for a peer before QUIC measures
/// one: 10 ms to 1 s.
const RTT_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Shortest and longest wait between two rounds of dialing every
/// candidate: 200 ms to 2 s.
const REDIAL_BOUNDS: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// Most rounds of dialing every candidate in one connect: 8.
const MAX_DIAL_ROUNDS: u32 = 8;
/// Fewest UDP checks sent to each relay to learn the socket's reflexive
/// address: 4 (the client's own attempts if more). Without that address
/// two NATed peers cannot connect directly, and a lossy link loses a check
/// or its answer often enough that two tries miss now and then; a relay
/// that answers ends its tries at once, so only silent relays cost time
/// (4 attempt timeouts, 1.2 s by default), well within a sync's wait.
#[cfg(feature = "udp")]
const MIN_REFLEXIVE_ATTEMPTS: u32 = 4;
/// Longest wait in [`PeerLink::close`] for the connections to drain once
/// the peer has finished: 1 second (a close takes three probe timeouts,
/// about 100 ms on a near link).
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// One side's socket and certificate for one session, before connecting.
struct Side {
    socket: UdpSocket,
    identity: Identity,
    session: String,
    /// Our socket's address as relays saw it (after every NAT).
    reflexive: Vec<SocketAddr>,
    /// The shortest round trip to a relay from this socket, if measured.
    relay_rtt: Option<Duration>,
    /// Whether one of the peer's relays is on loopback (then loopback
    /// candidates may work: both sides are on this machine).
    loopback_relay: bool,
    _live: LiveGuard,
}

impl Side {
    /// Binds the socket, makes the certificate and learns the socket's
    /// reflexive address from the relays of `nickname` that answer UDP
    /// checks (with the `udp` feature and UDP enabled).
    async fn prepare(
        client: &Client,
        nickname: &str,
        options: &PeerLinkOptions,
        session: Option<String>,
    ) -> Result<Self, PeerError> {
        let live = LiveGuard::new(&client.inner.peer_sockets);
        let socket = UdpSocket::bind(SocketAddr::new(options.bind, 0))?;
        let identity = Identity::generate()?;
        let session = session.unwrap_or_else(|| {
            let mut bytes = [0u8; 16];
            system_rng().fill_bytes(&mut bytes);
            b64::encode(&bytes)
        });
        let relays = client.peer_relay_hosts(nickname).await;
        let loopback_relay = relays.iter().any(|(host, _)| host_is_loopback(host));
        let (socket, reflexive, relay_rtt) = discover(client, socket, &relays, options).await?;
        tracing::debug!(nickname, ?reflexive, ?relay_rtt, "peer link socket ready");
        Ok(Self {
            socket,
            identity,
            session,
            reflexive,
            relay_rtt,
            loopback_relay,
            _live: live,
        })
    }

    /// The offer (or answer) describing this side: the reflexive
    /// addresses, then `options.observed`, then loopback (when a relay is
    /// on loopback) and the host's interface addresses; deduplicated, at
    /// most [`MAX_CANDIDATES`].
    fn offer(&self, options: &PeerLinkOptions) -> Result<QuicOffer, PeerError> {
        let local = self.socket.local_addr()?;
        let port = local.port();
        let mut candidates = self.reflexive.clone();
        if let Some(ip) = options.observed {
            candidates.push(SocketAddr::new(ip, port));
        }
        if local.ip().is_unspecified() {
            if self.loopback_relay || options.loopback_only {
                let loopback = match local.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                };
                candidates.push(SocketAddr::new(loopback, port));
            }
            candidates.extend(
                interface_ips(local.is_ipv4())
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port)),
            );
        } else {
            candidates.push(local);
        }
        let mut seen = HashSet::new();
        candidates.retain(|c| options.allows(c) && seen.insert(*c));
        candidates.truncate(MAX_CANDIDATES);
        Ok(QuicOffer::new(
            self.session.clone(),
            self.identity.fingerprint,
            candidates,
        ))
    }

    /// The round trip to assume for the peer before QUIC measures one:
    /// twice the relay round trip (the peer is about as far again), within
    /// [`RTT_BOUNDS`]; `None` (quinn's 333 ms) when not measured.
    fn initial_rtt(&self) -> Option<Duration> {
        self.relay_rtt
            .map(|rtt| rtt.saturating_mul(2).clamp(RTT_BOUNDS.0, RTT_BOUNDS.1))
    }
}

/// Whether a relay URL's host is this machine's loopback.
fn host_is_loopback(host: &url::Host<String>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// The host's interface addresses of one family (IPv4 when `v4`), without
/// loopback and link-local ones: a network namespace or a machine with
/// several interfaces has several.
fn interface_ips(v4: bool) -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .into_iter()
            .filter(|i| !i.is_loopback() && !i.is_link_local())
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified())
            .collect(),
        Err(e) => {
            tracing::debug!("cannot list the interface addresses: {e}");
            Vec::new()
        }
    }
}

/// Learns `socket`'s reflexive addresses from the UDP checks of `relays`
/// (host, UDP port if any), sent from the socket itself so that the NAT mapping
/// they reveal is the one QUIC will use. Without UDP, returns the socket
/// unchanged and nothing learnt.
#[cfg(feature = "udp")]
async fn discover(
    client: &Client,
    socket: UdpSocket,
    relays: &[(url::Host<String>, Option<u16>)],
    options: &PeerLinkOptions,
) -> Result<(UdpSocket, Vec<SocketAddr>, Option<Duration>), PeerError> {
    let Some(udp) = client.inner.udp.as_ref() else {
        return Ok((socket, Vec::new(), None));
    };
    let v4 = socket.local_addr()?.is_ipv4();
    let mut targets = Vec::new();
    for (host, port) in relays {
        let Some(port) = *port else { continue };
        let host = match host {
            url::Host::Domain(name) => url::Host::Domain(name.as_str()),
            url::Host::Ipv4(ip) => url::Host::Ipv4(*ip),
            url::Host::Ipv6(ip) => url::Host::Ipv6(*ip),
        };
        match udp.resolve(&host).await {
            Ok(ips) => targets.extend(
                ips.into_iter()
                    .filter(|ip| ip.is_ipv4() == v4)
                    .take(1)
                    .map(|ip| SocketAddr::new(ip, port))
                    .filter(|addr| options.allows(addr)),
            ),
            Err(e) => tracing::debug!("reflexive check: {e}"),
        }
    }
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return Ok((socket, Vec::new(), None));
    }
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let attempts = udp.attempts().max(MIN_REFLEXIVE_ATTEMPTS);
    let found = crate::udp::reflexive(&socket, &targets, udp.attempt_timeout(), attempts).await;
    let socket = socket.into_std()?;
    let rtt = found.iter().map(|f| f.rtt).min();
    let mut reflexive: Vec<SocketAddr> = Vec::new();
    for f in found {
        tracing::debug!(relay = %f.relay, observed = %f.observed, rtt = ?f.rtt, "reflexive address");
        if !reflexive.contains(&f.observed) {
            reflexive.push(f.observed);
        }
    }
    Ok((socket, reflexive, rtt))
}

/// Without the `udp` feature no reflexive address is learnt.
#[cfg(not(feature = "udp"))]
#[allow(clippy::unused_async)]
async fn discover(
    _client: &Client,
    socket: UdpSocket,
    _relays: &[(url::Host<String>, Option<u16>)],
    _options: &PeerLinkOptions,
) -> Result<(UdpSocket, Vec<SocketAddr>, Option<Duration>), PeerError> {
    Ok((socket, Vec::new(), None))
}

/// An offer we sent, waiting for its answer.
pub struct PendingLink {
    nickname: String,
    side: Side,
    options: PeerLinkOptions,
    /// When the offer expires, in ms since the Unix epoch.
    expires_ms: u64,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLink")
            .field("nickname", &self.nickname)
            .field("session", &self.side.session)
            .finish_non_exhaustive()
    }
}

impl PendingLink {
    /// The session id of our offer.
    pub fn session(&self) -> &str {
        &self.side.session
    }

    /// When the offer expires (its `expires`), in ms since the Unix epoch:
    /// the peer answers it no later.
    pub fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    /// Whether `body` is the answer to this offer (same session id).
    pub fn is_answered_by(&self, body: &serde_json::Value) -> bool {
        QuicOffer::from_body(body).is_ok_and(|answer| answer.session == self.side.session)
    }

    /// Connects with the answer's candidates and fingerprint, authenticates
    /// and (the first time) rotates keys.
    pub async fn complete(
        self,
        client: &Client,
        answer: &serde_json::Value,
    ) -> Result<PeerLink, PeerError> {
        let answer = QuicOffer::from_body(answer).map_err(bad_offer)?;
        if answer.session != self.side.session {
            return Err(PeerError::BadOffer(
                "the answer is for another session".to_owned(),
            ));
        }
        connect(client, &self.nickname, self.side, &answer, &self.options).await
    }
}

impl Client {
    /// The hosts of `nickname`'s relays (ours and theirs), each with its
    /// UDP port when the relay advertises one.
    async fn peer_relay_hosts(&self, nickname: &str) -> Vec<(url::Host<String>, Option<u16>)> {
        let Some(peer) = self.peer(nickname).await else {
            return Vec::new();
        };
        let mut relays = peer.our_relays;
        relays.extend(peer.their_relays);
        relays.sort();
        relays.dedup();
        let mut hosts = Vec::new();
        for relay in relays {
            let Some(host) = url::Url::parse(relay.as_str())
                .ok()
                .and_then(|url| url.host().map(|h| h.to_owned()))
            else {
                continue;
            };
            let port = match self.inner.transport.cached_info(&relay).await {
                Ok(Some(info)) => info.udp_port,
                _ => None,
            };
            hosts.push((host, port));
        }
        hosts
    }

    /// How many peer-link sockets of this client exist right now (pending
    /// offers, connecting or open links). Zero when nothing is syncing.
    pub fn peer_sockets(&self) -> usize {
        self.inner.peer_sockets.load(Ordering::SeqCst)
    }

    /// Starts a peer link to `nickname`: binds a QUIC socket, makes a
    /// certificate and sends an `offer` envelope carrying them. Complete it
    /// with [`PendingLink::complete`] when the answer arrives.
    pub async fn offer_link(
        &self,
        nickname: &str,
        options: &PeerLinkOptions,
    ) -> Result<PendingLink, PeerError> {
        let side = Side::prepare(self, nickname, options, None).await?;
        let mut body = side.offer(options)?.to_body();
        let lifetime = u64::try_from(options.offer_lifetime.as_millis()).unwrap_or(u64::MAX);
        let expires_ms = self.now_ms().saturating_add(lifetime);
        body["expires"] = expires_ms.into();
        self.send(nickname, Kind::Offer, body).await?;
        Ok(PendingLink {
            nickname: nickname.to_owned(),
            side,
            options: options.clone(),
            expires_ms,
        })
    }

    /// Answers `nickname`'s offer (the body of its `offer` envelope): binds
    /// a QUIC socket, sends an `answer` envelope, connects, authenticates
    /// and (the first time) rotates keys.
    pub async fn answer_link(
        &self,
        nickname: &str,
        offer: &serde_json::Value,
        options: &PeerLinkOptions,
    ) -> Result<PeerLink, PeerError> {
        let offer = QuicOffer::from_body(offer).map_err(bad_offer)?;
        let side = Side::prepare(self, nickname, options, Some(offer.session.clone())).await?;
        let answer = side.offer(options)?;
        self.send(nickname, Kind::Answer, answer.to_body()).await?;
        connect(self, nickname, side, &offer, options).await
    }
}

/// An authenticated direct connection to a peer. Messages are
/// length-framed on one stream. Close it with [`PeerLink::close`] when the
/// sync is done; dropping it closes it too, less politely.
pub struct PeerLink {
    nickname: String,
    peer_fingerprint: Fingerprint,
    rotated: bool,
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    endpoint: quinn::Endpoint,
    idle_timeout: Duration,
    _live: LiveGuard,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("nickname", &self.nickname)
            .field("peer_fingerprint", &self.peer_fingerprint)
            .field("remote", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    /// The peer's nickname.
    pub fn nickname(&self) -> &str {
        &self.nickname
    }

    /// The pinned fingerprint of the peer's certificate.
    pub fn peer_fingerprint(&self) -> Fingerprint {
        self.peer_fingerprint
    }

    /// The peer's address on this connection.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Whether this link rotated our mailbox key (the first link does).
    pub fn rotated(&self) -> bool {
        self.rotated
    }

    /// Sends one message (at most [`MAX_MESSAGE_LEN`] bytes).
    pub async fn send(&mut self, message: &[u8]) -> Result<(), PeerError> {
        auth::write_frame(&mut self.send, message).await
    }

    /// Receives one message; `None` when the peer has finished sending.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, PeerError> {
        auth::read_frame(&mut self.recv).await
    }

    /// Finishes our side, waits (up to the idle timeout) until the peer has
    /// finished too, closes the connection and the socket.
    ///
    /// The peer finishes its side only in its own `close`, after reading
    /// what it wanted from us, so once its finish is read nothing is left
    /// to deliver either way. Then the endpoint is closed at once, with
    /// the connection and any other connection attempt of the dialing
    /// rounds still handshaking (left alone, such an attempt would hold
    /// the socket until the idle timeout), and `close` waits at most
    /// [`CLOSE_LINGER`] for the closes to go out.
    pub async fn close(mut self) -> Result<(), PeerError> {
        let _ = self.send.finish();
        let drain = async { while let Ok(Some(_)) = auth::read_frame(&mut self.recv).await {} };
        let _ = tokio::time::timeout(self.idle_timeout, drain).await;
        self.connection.close(0u32.into(), b"done");
        self.endpoint.close(0u32.into(), b"done");
        if tokio::time::timeout(CLOSE_LINGER, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!(
                nickname = %self.nickname,
                open = self.endpoint.open_connections(),
                "peer link closed without waiting for every connection to drain"
            );
        }
        Ok(())
    }
}

/// A connection from either direction, as it completed.
type Established = Result<quinn::Connection, String>;

/// Simultaneous open, choice of one connection, then authentication.
async fn connect(
    client: &Client,
    nickname: &str,
    side: Side,
    their: &QuicOffer,
    options: &PeerLinkOptions,
) -> Result<PeerLink, PeerError> {
    let their_fp = their.fingerprint;
    let our_fp = side.identity.fingerprint;
    let fail = |reason: String| PeerError::Connect {
        nickname: nickname.to_owned(),
        reason,
    };
    let initial_rtt = side.initial_rtt();
    let Side {
        socket,
        identity,
        _live: live,
        ..
    } = side;
    socket.set_nonblocking(true)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(identity.server_config(their_fp, options.idle_timeout, initial_rtt)?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let client_config = identity.client_config(their_fp, options.idle_timeout, initial_rtt)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Established>();
    let mut tasks = tokio::task::JoinSet::new();
    let candidates: Vec<SocketAddr> = their
        .candidates
        .iter()
        .copied()
        .filter(|a| options.allows(a))
        .collect();
    // Hole punching: dial every candidate now, and again every few round
    // trips (a first packet may die at the peer's NAT before the peer's own
    // packets opened it), until a connection completes or time runs out.
    let redial = initial_rtt
        .unwrap_or(Duration::from_millis(333))
        .saturating_mul(3)
        .clamp(REDIAL_BOUNDS.0, REDIAL_BOUNDS.1);
    {
        let endpoint = endpoint.clone();
        let tx = tx.clone();
        let candidates = candidates.clone();
        tasks.spawn(async move {
            let mut attempts = tokio::task::JoinSet::new();
            for round in 0..MAX_DIAL_ROUNDS {
                if round > 0 {
                    tokio::time::sleep(redial).await;
                }
                for addr in &candidates {
                    match endpoint.connect_with(client_config.clone(), *addr, tls::SERVER_NAME) {
                        Ok(connecting) => {
                            let tx = tx.clone();
                            attempts.spawn(async move {
                                let _ = tx.send(connecting.await.map_err(|e| e.to_string()));
                            });
                        }
                        Err(e) => tracing::debug!(%addr, "cannot dial: {e}"),
                    }
                }
            }
            // Keep the attempts alive until the connect is decided.
            std::future::pending::<()>().await;
        });
    }
    {
        let endpoint = endpoint.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            // The handshakes belong to this task: when the connect is
            // decided they are dropped (closed) with it, rather than left
            // to time out on the endpoint.
            let mut handshakes = tokio::task::JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                let tx = tx.clone();
                handshakes.spawn(async move {
                    let _ = tx.send(incoming.await.map_err(|e| e.to_string()));
                });
                while handshakes.try_join_next().is_some() {}
            }
            std::future::pending::<()>().await;
        });
    }
    drop(tx);
    tracing::debug!(
        nickname,
        ?candidates,
        ?redial,
        leader = our_fp < their_fp,
        "connecting"
    );
    let leader = our_fp < their_fp;
    let choose = async {
        let mut last_error = String::from("no connection completed");
        if leader {
            // Keep the first connection that completes; open the stream on it.
            while let Some(result) = rx.recv().await {
                match result {
                    Ok(connection) => match connection.open_bi().await {
                        Ok((send, recv)) => return Ok((connection, send, recv)),
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e,
                }
            }
            Err(last_error)
        } else {
            // Keep the connection on which the leader opens its stream.
            let (chosen_tx, mut chosen_rx) = tokio::sync::mpsc::unbounded_channel();
            let mut waiting = tokio::task::JoinSet::new();
            let mut open = true;
            loop {
                tokio::select! {
                    result = rx.recv(), if open => match result {
                        Some(Ok(connection)) => {
                            let chosen_tx = chosen_tx.clone();
                            waiting.spawn(async move {
                                if let Ok((send, recv)) = connection.accept_bi().await {
                                    let _ = chosen_tx.send((connection, send, recv));
                                }
                            });
                        }
                        Some(Err(e)) => last_error = e,
                        None => open = false,
                    },
                    chosen = chosen_rx.recv() => match chosen {
                        Some(chosen) => return Ok(chosen),
                        None => return Err(last_error),
                    },
                }
            }
        }
    };
    let chosen = tokio::time::timeout(options.connect_timeout, choose).await;
    tasks.abort_all();
    let (connection, mut send, mut recv) = match chosen {
        Ok(Ok(chosen)) => chosen,
        Ok(Err(reason)) => {
            endpoint.close(0u32.into(), b"failed");
            return Err(fail(reason));
        }
        Err(_) => {
            endpoint.close(0u32.into(), b"timeout");
            return Err(fail(format!(
                "timed out after {:?}",
                options.connect_timeout
            )));
        }
    };
    // Only the chosen connection stays; the endpoint takes no more.
    endpoint.set_server_config(None);
    let rotated = match tokio::time::timeout(
        options.connect_timeout,
        auth::authenticate(client, nickname, our_fp, their_fp, &mut send, &mut recv),
    )
    .await
    {
        Ok(Ok(rotated)) => rotated,
        Ok(Err(e)) => {
            connection.close(1u32.into(), b"authentication failed");
            endpoint.close(1u32.into(), b"authentication failed");
            return Err(e);
        }
        Err(_) => {
            endpoint.close(1u32.into(), b"timeout");
            return Err(fail("authentication timed out".to_owned()));
        }
    };
    tracing::info!(nickname, remote = %connection.remote_address(), rotated, "peer link up");
    Ok(PeerLink {
        nickname: nickname.to_owned(),
        peer_fingerprint: their_fp,
        rotated,
        connection,
        send,
        recv,
        endpoint,
        idle_timeout: options.idle_timeout,
        _live: live,
    })
}

/// Signaling for peer links on behalf of an app: offers to send, offers to
/// answer, answers to complete. Feed it every delivered event with
/// [`Rendezvous::handle`]; it returns a link when one comes up.
///
/// Glare (both sides offer at once): the offer with the lower session id
/// wins (ours only while it has not expired); the side whose offer lost
/// drops it and answers the other. An offer
/// whose session was already answered is refused (a replay); an offer
/// past its `expires` (left over from an earlier run) is ignored.
pub struct Rendezvous {
    client: Client,
    options: PeerLinkOptions,
    pending: HashMap<String, PendingLink>,
    answered: HashSet<String>,
}

impl std::fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendezvous")
            .field("pending", &self.pending.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Rendezvous {
    /// A rendezvous for `client`'s peers.
    pub fn new(client: Client, options: PeerLinkOptions) -> Self {
        Self {
            client,
            options,
            pending: HashMap::new(),
            answered: HashSet::new(),
        }
    }

    /// Sends an offer to `nickname` (replacing a pending one).
    pub async fn offer(&mut self, nickname: &str) -> Result<(), PeerError> {
        let pending = self.client.offer_link(nickname, &self.options).await?;
        self.pending.insert(nickname.to_owned(), pending);
        Ok(())
    }

    /// The peers with an offer waiting for its answer.
    pub fn pending(&self) -> Vec<String> {
        self.pending.keys().cloned().collect()
    }

    /// Drops the pending offer to `nickname`, closing its socket.
    pub fn cancel(&mut self, nickname: &str) {
        self.pending.remove(nickname);
    }

    /// Acts on one event: answers a QUIC offer (in an `offer` or a first
    /// `hello`), completes our offer with its answer. Returns the link when
    /// one came up, `None` for events that are not about peer links (or a
    /// losing side of glare).
    pub async fn handle(&mut self, event: &Event) -> Result<Option<PeerLink>, PeerError> {
        let (nickname, kind, body) = match event {
            Event::Message {
                nickname,
                kind,
                body,
            } => (nickname, *kind, body),
            Event::PeerConnected { nickname, body, .. } => (nickname, Kind::Offer, body),
            _ => return Ok(None),
        };
        let Ok(quic) = QuicOffer::from_body(body) else {
            return Ok(None);
        };
        match kind {
            Kind::Offer => {
                if let Some(expires) = body.get("expires").and_then(serde_json::Value::as_u64)
                    && expires < self.client.now_ms()
                {
                    tracing::debug!(%nickname, session = %quic.session, "ignoring an expired offer");
                    return Ok(None);
                }
                if !self.answered.insert(quic.session.clone()) {
                    return Err(PeerError::BadOffer(format!(
                        "session {} was already answered (replay)",
                        quic.session
                    )));
                }
                if let Some(ours) = self.pending.get(nickname.as_str()) {
                    // Our offer wins glare only while the peer may still
                    // answer it.
                    if ours.session() < quic.session.as_str()
                        && ours.expires_ms() >= self.client.now_ms()
                    {
                        tracing::debug!(%nickname, "glare: our offer wins");
                        return Ok(None);
                    }
                    self.pending.remove(nickname.as_str());
                }
                self.client
                    .answer_link(nickname, body, &self.options)
                    .await
                    .map(Some)
            }
            Kind::Answer => match self.pending.remove(nickname.as_str()) {
                Some(ours) if ours.is_answered_by(body) => {
                    ours.complete(&self.client, body).await.map(Some)
                }
                Some(ours) => {
                    self.pending.insert(nickname.clone(), ours);
                    Ok(None)
                }
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }
}
