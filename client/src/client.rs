//! [`ClientBuilder`] and [`Client`]: the seed's Share, Connect and Unshare
//! over several relays, on one locked profile.
//!
//! A `Client` is cheap to clone (it is an `Arc`); clones share the profile,
//! the HTTP connection pool and the in-memory delivery state. Every change
//! to the profile is written to disk before the operation returns. Network
//! work is done without holding the profile lock, so a slow relay never
//! blocks other operations.
//!
//! Polling, message checks and acknowledgements are in the `poll` module.
//! This module does not interpret messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectoid_protocol::api::{ApiError, ErrorCode, Operation, RelayInfo, Request, Response};
use connectoid_protocol::envelope::{self, Envelope, Kind, LinkProof};
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::{At, PublicKey, SafetyCode, SecretKey, limits};

use crate::error::{BuildError, ClientError};
use crate::event::{PeerInfo, PeerStatus, RelayProbe, SendReport, UnshareReport, relay_urls};
use crate::poll::Inflight;
use crate::profile::{
    MailboxRecord, PeerRecord, ProfileData, ProfileError, ProfileStore, RetiredRelay, Role, Status,
    StoredKey, StoredReply, StoredSecret,
};
use crate::relay::{
    RelayError, RelayOutcome, Transport, answer_question, fan_out, send_fan_out, unexpected,
};
use crate::rng::{now_ms, system_rng};
use crate::udp::UdpChecker;

/// Default per-relay timeout of every HTTP request: 5 seconds.
pub const DEFAULT_RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait for a UDP check answer, per attempt: 300 ms.
pub const DEFAULT_UDP_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// Default number of UDP check attempts before falling back to HTTP: 2.
pub const DEFAULT_UDP_ATTEMPTS: u32 = 2;
/// Default `limit` of a `receive`: 20 messages.
pub const DEFAULT_RECEIVE_LIMIT: u32 = 20;
/// Longest nickname, in characters.
pub const MAX_NICKNAME_LEN: usize = 64;
/// How long a relay information document is reused, once read.
const INFO_TTL: Duration = Duration::from_secs(600);
/// How long "this relay serves no information document" is remembered.
const NO_INFO_TTL: Duration = Duration::from_secs(60);

/// Builds a [`Client`]. Only the profile directory is required.
#[derive(Debug)]
pub struct ClientBuilder {
    profile_dir: PathBuf,
    relay_timeout: Duration,
    udp: bool,
    udp_attempt_timeout: Duration,
    udp_attempts: u32,
    receive_limit: u32,
    root_certificates: Vec<Vec<u8>>,
    send_wait: SendWait,
}

/// How long a send waits for the relays of its fan-out.
///
/// Either way each relay's request runs as its own task: a send whose future
/// is dropped still completes at the relays already asked (each request is
/// bounded by the per-relay timeout), so a message the app gave up on may
/// still arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SendWait {
    /// Wait for every relay's answer or its per-relay timeout, so the report
    /// says what happened at each relay. A blackholed relay makes every send
    /// take the full per-relay timeout. The default.
    #[default]
    AllRelays,
    /// Return shortly after the first relay accepts: once one has, wait at
    /// most a fifth of the time that took for the others (nothing, beyond
    /// taking the answers already in, when that is under a millisecond,
    /// the resolution of tokio's timers), then return. The
    /// requests still under way go on in the background (each bounded by the
    /// per-relay timeout) and are reported as [`RelayError::InFlight`]. For
    /// apps that want low latency more than a complete report.
    FirstAcceptance,
}

impl ClientBuilder {
    /// A builder for the profile in `profile_dir` (created, mode 0700, if
    /// missing).
    pub fn new(profile_dir: impl Into<PathBuf>) -> Self {
        Self {
            profile_dir: profile_dir.into(),
            relay_timeout: DEFAULT_RELAY_TIMEOUT,
            udp: true,
            udp_attempt_timeout: DEFAULT_UDP_ATTEMPT_TIMEOUT,
            udp_attempts: DEFAULT_UDP_ATTEMPTS,
            receive_limit: DEFAULT_RECEIVE_LIMIT,
            root_certificates: Vec::new(),
            send_wait: SendWait::AllRelays,
        }
    }

    /// How long a send waits for the relays of its fan-out. Default
    /// [`SendWait::AllRelays`].
    pub fn send_wait(mut self, wait: SendWait) -> Self {
        self.send_wait = wait;
        self
    }

    /// The timeout of each HTTP request to one relay (connect, send and read
    /// the answer). Default [`DEFAULT_RELAY_TIMEOUT`] (5 s).
    pub fn relay_timeout(mut self, timeout: Duration) -> Self {
        self.relay_timeout = timeout;
        self
    }

    /// Whether to use the UDP check where a relay advertises it. Default on.
    pub fn udp(mut self, enabled: bool) -> Self {
        self.udp = enabled;
        self
    }

    /// How long to wait for a UDP answer after each attempt. Default
    /// [`DEFAULT_UDP_ATTEMPT_TIMEOUT`] (300 ms).
    pub fn udp_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.udp_attempt_timeout = timeout;
        self
    }

    /// How many UDP attempts before falling back to HTTP. Default
    /// [`DEFAULT_UDP_ATTEMPTS`] (2); at least 1.
    pub fn udp_attempts(mut self, attempts: u32) -> Self {
        self.udp_attempts = attempts.max(1);
        self
    }

    /// The `limit` of each `receive`, 1 to 100. Default
    /// [`DEFAULT_RECEIVE_LIMIT`] (20).
    pub fn receive_limit(mut self, limit: u32) -> Self {
        self.receive_limit = limit.clamp(1, limits::MAX_RECEIVE_LIMIT);
        self
    }

    /// Trusts the certificates in `pem` (one or more PEM blocks) as roots for
    /// HTTPS relays, in addition to the built-in roots: for private relays.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Self {
        self.root_certificates.push(pem.to_vec());
        self
    }

    /// Opens (or creates) the profile, takes its lock and sets up HTTP.
    pub fn build(self) -> Result<Client, BuildError> {
        let http = http_client(&self.root_certificates)?;
        let (store, data) = ProfileStore::open(&self.profile_dir)?;
        let udp = self
            .udp
            .then(|| UdpChecker::new(self.udp_attempt_timeout, self.udp_attempts));
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                state: tokio::sync::Mutex::new(State {
                    data,
                    inflight: Inflight::default(),
                }),
                transport: Transport::new(http, self.relay_timeout),
                udp,
                infos: std::sync::Mutex::new(HashMap::new()),
                receive_limit: self.receive_limit,
                send_wait: self.send_wait,
                peer_sockets: Arc::default(),
            }),
        })
    }
}

fn http_client(root_certificates: &[Vec<u8>]) -> Result<reqwest::Client, BuildError> {
    let mut certificates = Vec::new();
    for pem in root_certificates {
        let bundle = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| BuildError::Certificate(e.to_string()))?;
        if bundle.is_empty() {
            return Err(BuildError::Certificate("no certificate in PEM".to_owned()));
        }
        certificates.extend(bundle);
    }
    reqwest::Client::builder()
        .tls_certs_merge(certificates)
        .user_agent(concat!("connectoid/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))
}

/// Reads one relay's information document without a profile: for tools
/// that only inspect a relay. `root_certificates_pem` are extra PEM roots
/// as in [`ClientBuilder::add_root_certificates_pem`]; `timeout` bounds the
/// whole request.
pub async fn probe_relay(
    relay: &RelayUrl,
    timeout: Duration,
    root_certificates_pem: &[Vec<u8>],
) -> Result<RelayProbe, BuildError> {
    let transport = Transport::new(http_client(root_certificates_pem)?, timeout);
    Ok(match transport.info(relay).await {
        Ok((info, latency)) => RelayProbe {
            relay: relay.clone(),
            latency: Some(latency),
            info: Some(info),
            error: None,
        },
        Err(error) => RelayProbe {
            relay: relay.clone(),
            latency: None,
            info: None,
            error: Some(error),
        },
    })
}

/// What `share` should do beyond the defaults.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ShareOptions {
    /// The relays to name in the link; empty means the profile's relay list.
    pub relays: Vec<RelayEntry>,
    /// Probe the candidate relays and name only the `n` fastest healthy ones.
    pub pick: Option<usize>,
    /// App data for every relay (the seed's `ext`, such as an API key).
    pub ext: Option<String>,
}

impl ShareOptions {
    /// Options naming `relays`.
    pub fn with_relays(relays: Vec<RelayEntry>) -> Self {
        Self {
            relays,
            ..Self::default()
        }
    }
}

/// What `accept` should do beyond the defaults.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AcceptOptions {
    /// The relays to serve our mailbox from; `None` means the link's relays
    /// (with their ext values).
    pub relays: Option<Vec<RelayEntry>>,
}

pub(crate) struct State {
    pub(crate) data: ProfileData,
    pub(crate) inflight: Inflight,
}

pub(crate) struct Inner {
    pub(crate) store: ProfileStore,
    pub(crate) state: tokio::sync::Mutex<State>,
    pub(crate) transport: Transport,
    pub(crate) udp: Option<UdpChecker>,
    /// Relay information documents: `None` = the relay serves none.
    pub(crate) infos: std::sync::Mutex<HashMap<RelayUrl, (Option<RelayInfo>, Instant)>>,
    pub(crate) receive_limit: u32,
    pub(crate) send_wait: SendWait,
    /// Live peer-link sockets (see `peer`).
    pub(crate) peer_sockets: Arc<std::sync::atomic::AtomicUsize>,
}

/// A Connectoid client on one profile. Clone it freely.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("profile", &self.inner.store.dir())
            .finish_non_exhaustive()
    }
}

fn check_nickname(nickname: &str) -> Result<(), ClientError> {
    let len = nickname.chars().count();
    if len == 0 || len > MAX_NICKNAME_LEN || nickname.chars().any(char::is_control) {
        return Err(ClientError::BadNickname(nickname.to_owned()));
    }
    Ok(())
}

impl State {
    /// Saves the profile after dropping expired seen ids.
    pub(crate) fn save(&mut self, store: &ProfileStore) -> Result<(), ProfileError> {
        self.data.expire_seen(now_ms());
        store.save(&self.data)
    }
}

impl Client {
    /// A builder for the profile in `profile_dir`.
    pub fn builder(profile_dir: impl Into<PathBuf>) -> ClientBuilder {
        ClientBuilder::new(profile_dir)
    }

    /// The profile directory.
    pub fn profile_dir(&self) -> &Path {
        self.inner.store.dir()
    }

    // ----- relays -----

    /// The profile's relay list (what `share` uses by default).
    pub async fn relays(&self) -> Vec<RelayEntry> {
        self.inner.state.lock().await.data.relays.clone()
    }

    /// Adds a relay to the profile's list; `false` if it was there already.
    pub async fn add_relay(&self, entry: RelayEntry) -> Result<bool, ClientError> {
        let mut state = self.inner.state.lock().await;
        if state.data.relays.iter().any(|e| e.url == entry.url) {
            return Ok(false);
        }
        state.data.relays.push(entry);
        state.save(&self.inner.store)?;
        Ok(true)
    }

    /// Removes a relay from the profile's list; `false` if it was not there.
    /// Peers already using it keep it until their relay set is changed.
    pub async fn remove_relay(&self, url: &RelayUrl) -> Result<bool, ClientError> {
        let mut state = self.inner.state.lock().await;
        let before = state.data.relays.len();
        state.data.relays.retain(|e| &e.url != url);
        if state.data.relays.len() == before {
            return Ok(false);
        }
        state.save(&self.inner.store)?;
        Ok(true)
    }

    /// Reads one relay's information document and measures the time it took.
    pub async fn probe(&self, relay: &RelayUrl) -> RelayProbe {
        match self.inner.transport.info(relay).await {
            Ok((info, latency)) => {
                self.remember_info(relay, Some(info.clone()));
                RelayProbe {
                    relay: relay.clone(),
                    latency: Some(latency),
                    info: Some(info),
                    error: None,
                }
            }
            Err(error) => RelayProbe {
                relay: relay.clone(),
                latency: None,
                info: None,
                error: Some(error),
            },
        }
    }

    /// Probes every relay of the profile's list concurrently.
    pub async fn probe_relays(&self) -> Vec<RelayProbe> {
        let relays = self.relays().await;
        self.probe_all(&relays).await
    }

    async fn probe_all(&self, relays: &[RelayEntry]) -> Vec<RelayProbe> {
        futures::future::join_all(relays.iter().map(|e| self.probe(&e.url))).await
    }

    fn remember_info(&self, relay: &RelayUrl, info: Option<RelayInfo>) {
        if let Ok(mut infos) = self.inner.infos.lock() {
            infos.insert(relay.clone(), (info, Instant::now()));
        }
    }

    /// The relay's information document from the cache, or fetched.
    /// `Err` only when the relay is unreachable; `Ok(None)` when it serves
    /// no (valid) document.
    pub(crate) async fn cached_info(
        &self,
        relay: &RelayUrl,
    ) -> Result<Option<RelayInfo>, RelayError> {
        if let Ok(infos) = self.inner.infos.lock()
            && let Some((info, fetched)) = infos.get(relay)
        {
            let ttl = if info.is_some() {
                INFO_TTL
            } else {
                NO_INFO_TTL
            };
            if fetched.elapsed() < ttl {
                return Ok(info.clone());
            }
        }
        match self.inner.transport.info(relay).await {
            Ok((info, _)) => {
                self.remember_info(relay, Some(info.clone()));
                Ok(Some(info))
            }
            Err(e) if e.is_unreachable() => Err(e),
            Err(e) => {
                tracing::debug!(%relay, "no information document: {e}");
                self.remember_info(relay, None);
                Ok(None)
            }
        }
    }

    // ----- share, accept, send -----

    /// Makes a link-key pair and a one-time link for `nickname`. The link
    /// names `options.relays`, or the profile's list, or the `pick` fastest
    /// healthy ones among them. Returns the link to share.
    pub async fn share(&self, nickname: &str, options: ShareOptions) -> Result<Link, ClientError> {
        check_nickname(nickname)?;
        let mut relays = if options.relays.is_empty() {
            self.relays().await
        } else {
            options.relays
        };
        if relays.is_empty() {
            return Err(ClientError::NoRelays);
        }
        if let Some(wanted) = options.pick {
            let mut probes: Vec<(RelayEntry, RelayProbe)> = relays
                .iter()
                .cloned()
                .zip(self.probe_all(&relays).await)
                .filter(|(_, probe)| probe.is_healthy())
                .collect();
            probes.sort_by_key(|(_, probe)| probe.latency);
            if probes.len() < wanted.max(1) {
                return Err(ClientError::NotEnoughHealthyRelays {
                    wanted,
                    healthy: probes.len(),
                });
            }
            relays = probes.into_iter().take(wanted).map(|(e, _)| e).collect();
        }
        let key = SecretKey::generate(&mut system_rng());
        let secret = LinkSecret::generate(&mut system_rng());
        let link = Link {
            key: key.public_key(),
            relays: relays.clone(),
            ext: options.ext.clone(),
            secret: Some(secret.clone()),
        };
        link.validate()?;
        let mut state = self.inner.state.lock().await;
        if state.data.peer(nickname).is_some() {
            return Err(ClientError::NicknameTaken(nickname.to_owned()));
        }
        state.data.peers.push(PeerRecord {
            nickname: nickname.to_owned(),
            role: Role::Sharer {
                secret: StoredSecret(secret),
                link: link.encode(),
            },
            status: Status::Waiting,
            mailbox: MailboxRecord {
                key: StoredKey(key),
                relays,
                ext: options.ext,
                cursors: Default::default(),
                retired: Vec::new(),
            },
            their: None,
            their_ts: 0,
            created_ms: now_ms(),
            rotated: false,
            spent_link: None,
        });
        state.save(&self.inner.store)?;
        tracing::info!(nickname, "shared a link");
        Ok(link)
    }

    /// Opens someone's link as `nickname`: makes our reverse key pair and
    /// sends the first message (`hello`, with the link-secret proof and
    /// `body`, such as an offer) to every relay of the link. Succeeds when at
    /// least one relay accepted it.
    pub async fn accept(
        &self,
        link: &Link,
        nickname: &str,
        body: serde_json::Value,
        options: AcceptOptions,
    ) -> Result<SendReport, ClientError> {
        check_nickname(nickname)?;
        link.validate()?;
        let (relays, ext) = match options.relays {
            Some(relays) => (relays, None),
            None => (link.relays.clone(), link.ext.clone()),
        };
        let key = SecretKey::generate(&mut system_rng());
        let mailbox = MailboxRecord {
            key: StoredKey(key.clone()),
            relays,
            ext,
            cursors: Default::default(),
            retired: Vec::new(),
        };
        let their = Link {
            secret: None,
            ..link.clone()
        };
        let hello = Envelope {
            kind: Kind::Hello,
            to: link.key,
            from: mailbox.reply_value(),
            ts: now_ms(),
            proof: link
                .secret
                .as_ref()
                .map(|s| LinkProof::compute(s, &link.key, &key.public_key())),
            body,
        };
        let sealed = envelope::seal_envelope(&mut system_rng(), &key, &hello)?;
        {
            let mut state = self.inner.state.lock().await;
            if state.data.peer(nickname).is_some() {
                return Err(ClientError::NicknameTaken(nickname.to_owned()));
            }
            if state
                .data
                .peers
                .iter()
                .any(|p| p.mailbox.public_key() == link.key)
            {
                return Err(ClientError::OwnLink);
            }
            if let Some(peer) = state
                .data
                .peers
                .iter()
                .find(|p| p.their.as_ref().is_some_and(|t| t.0.key == link.key))
            {
                return Err(ClientError::AlreadyAccepted(peer.nickname.clone()));
            }
            // Stored before sending: a reply may come before we return.
            state.data.peers.push(PeerRecord {
                nickname: nickname.to_owned(),
                role: Role::Acceptor,
                status: Status::Accepted,
                mailbox,
                their: Some(StoredReply(their.clone())),
                their_ts: 0,
                created_ms: now_ms(),
                rotated: false,
                spent_link: None,
            });
            state.save(&self.inner.store)?;
        }
        let report = self.send_sealed(&their, sealed).await;
        if !report.is_success() {
            let mut state = self.inner.state.lock().await;
            state.data.peers.retain(|p| {
                !(p.nickname == nickname && p.mailbox.public_key() == key.public_key())
            });
            state.save(&self.inner.store)?;
            return Err(ClientError::NoRelayAccepted(report));
        }
        tracing::info!(
            nickname,
            accepted = report.accepted().len(),
            "accepted a link"
        );
        Ok(report)
    }

    /// Sends `body` as an envelope of `kind` (offer, answer or app) to the
    /// peer, through all its relays at once.
    pub async fn send(
        &self,
        nickname: &str,
        kind: Kind,
        body: serde_json::Value,
    ) -> Result<SendReport, ClientError> {
        if !matches!(kind, Kind::Offer | Kind::Answer | Kind::App) {
            return Err(ClientError::KindNotAllowed(kind));
        }
        let peer = self.connected_peer(nickname).await?;
        self.send_envelope(&peer, kind, body).await
    }

    /// The peer, if it can be sent to.
    async fn connected_peer(&self, nickname: &str) -> Result<PeerRecord, ClientError> {
        let state = self.inner.state.lock().await;
        let peer = state
            .data
            .peer(nickname)
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        match peer.status {
            Status::LinkUsed => Err(ClientError::LinkAlreadyUsed {
                nickname: nickname.to_owned(),
            }),
            Status::Waiting => Err(ClientError::NotConnected(nickname.to_owned())),
            Status::Accepted | Status::Connected => Ok(peer.clone()),
        }
    }

    async fn send_envelope(
        &self,
        peer: &PeerRecord,
        kind: Kind,
        body: serde_json::Value,
    ) -> Result<SendReport, ClientError> {
        let their = peer
            .their
            .as_ref()
            .ok_or_else(|| ClientError::NotConnected(peer.nickname.clone()))?;
        let envelope = Envelope {
            kind,
            to: their.0.key,
            from: peer.mailbox.reply_value(),
            ts: now_ms(),
            proof: None,
            body,
        };
        let sealed = envelope::seal_envelope(&mut system_rng(), &peer.mailbox.key.0, &envelope)?;
        let report = self.send_sealed(&their.0, sealed).await;
        if report.is_success() {
            Ok(report)
        } else {
            Err(ClientError::NoRelayAccepted(report))
        }
    }

    /// Sends a sealed message to every relay of `target` concurrently, and
    /// waits for them as [`SendWait`] says.
    pub(crate) async fn send_sealed(&self, target: &Link, sealed: Vec<u8>) -> SendReport {
        let sealed = Arc::new(sealed);
        let results = send_fan_out(&target.relays, self.inner.send_wait, |entry| {
            let transport = self.inner.transport.clone();
            let ext = entry.ext.clone().or_else(|| target.ext.clone());
            let (key, sealed) = (target.key, Arc::clone(&sealed));
            async move { transport.send(&entry, ext, key, sealed.to_vec()).await }
        })
        .await;
        SendReport {
            relays: results
                .into_iter()
                .map(|(entry, result)| RelayOutcome {
                    relay: entry.url,
                    result,
                })
                .collect(),
        }
    }

    /// Moves our mailbox for `nickname` to `relays` and tells the peer (a
    /// `relays` envelope) so it sends there from now on. The relays dropped
    /// are still checked for one message lifetime. Returns the report of the
    /// notice, or `None` when there is no peer yet to tell.
    pub async fn set_relays(
        &self,
        nickname: &str,
        relays: Vec<RelayEntry>,
    ) -> Result<Option<SendReport>, ClientError> {
        let peer = {
            let mut state = self.inner.state.lock().await;
            let peer = state
                .data
                .peer_mut(nickname)
                .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
            let candidate = Link {
                relays: relays.clone(),
                ..peer.mailbox.reply_value()
            };
            candidate.validate()?;
            let until_ms = now_ms() + limits::MESSAGE_TTL_US / 1000 + limits::ENVELOPE_MAX_SKEW_MS;
            let dropped: Vec<RelayEntry> = peer
                .mailbox
                .relays
                .iter()
                .filter(|old| !relays.iter().any(|new| new.url == old.url))
                .cloned()
                .collect();
            peer.mailbox
                .retired
                .retain(|r| !relays.iter().any(|new| new.url == r.entry.url));
            for entry in dropped {
                peer.mailbox.retired.push(RetiredRelay { entry, until_ms });
            }
            peer.mailbox.relays = relays;
            let peer = peer.clone();
            state.save(&self.inner.store)?;
            peer
        };
        if peer.their.is_none() || peer.status == Status::LinkUsed {
            return Ok(None);
        }
        self.send_envelope(&peer, Kind::Relays, serde_json::Value::Null)
            .await
            .map(Some)
    }

    // ----- peers -----

    /// Every peer and pending share, in the order they were made.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let state = self.inner.state.lock().await;
        state.data.peers.iter().map(peer_info).collect()
    }

    /// The peer named `nickname`.
    pub async fn peer(&self, nickname: &str) -> Option<PeerInfo> {
        let state = self.inner.state.lock().await;
        state.data.peer(nickname).map(peer_info)
    }

    /// The safety code both sides can compare for `nickname`.
    pub async fn safety_code(&self, nickname: &str) -> Result<SafetyCode, ClientError> {
        let info = self
            .peer(nickname)
            .await
            .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?;
        info.safety_code
            .ok_or_else(|| ClientError::NotConnected(nickname.to_owned()))
    }

    /// Ends the share with `nickname`: tells the peer (an `unshare`
    /// envelope), deletes our mailbox at its relays, and deletes our keys.
    /// The keys are deleted even when relays fail; the report says which did.
    pub async fn unshare(&self, nickname: &str) -> Result<UnshareReport, ClientError> {
        let peer = {
            let state = self.inner.state.lock().await;
            state
                .data
                .peer(nickname)
                .cloned()
                .ok_or_else(|| ClientError::UnknownPeer(nickname.to_owned()))?
        };
        let notified = if peer.their.is_some() && peer.status != Status::LinkUsed {
            match self
                .send_envelope(&peer, Kind::Unshare, serde_json::Value::Null)
                .await
            {
                Ok(report) => Some(report),
                Err(ClientError::NoRelayAccepted(report)) => {
                    tracing::warn!(nickname, "no relay took the unshare notice: {report}");
                    Some(report)
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let mut deleted = self.delete_mailbox(&peer.mailbox).await;
        if let Some(spent) = &peer.spent_link {
            deleted.extend(self.delete_mailbox(spent).await);
        }
        self.forget_peer(&peer).await?;
        tracing::info!(nickname, "unshared");
        Ok(UnshareReport { notified, deleted })
    }

    /// Removes the peer record (matched by nickname and mailbox key) and its
    /// in-memory delivery state, and saves.
    pub(crate) async fn forget_peer(&self, peer: &PeerRecord) -> Result<(), ProfileError> {
        let key = peer.mailbox.public_key();
        let mut state = self.inner.state.lock().await;
        state.data.peers.retain(|p| p.mailbox.public_key() != key);
        state.inflight.forget_mailbox(&key);
        state.save(&self.inner.store)
    }

    /// Deletes a mailbox at each of its relays: `check` for a question, then
    /// `delete` with the answer (or without, when the mailbox is empty).
    pub(crate) async fn delete_mailbox(&self, mailbox: &MailboxRecord) -> Vec<RelayOutcome> {
        let transport = &self.inner.transport;
        let relays = mailbox.relays_to_check(now_ms());
        let results = fan_out(&relays, |entry| async move {
            let ext = mailbox.ext_for(&entry);
            let key = mailbox.public_key();
            let mut last = None;
            // A message may arrive between the check and the delete; one
            // more round covers it.
            for _ in 0..2 {
                let check = Request {
                    key,
                    ext: ext.clone(),
                    op: Operation::Check { at: At::ZERO },
                };
                let answer = match transport.call(&entry.url, &check).await? {
                    Response::NotFound => None,
                    Response::Found { question } => {
                        Some(answer_question(&mailbox.key.0, &question, &entry.url)?)
                    }
                    other => return Err(unexpected(&other)),
                };
                let delete = Request {
                    key,
                    ext: ext.clone(),
                    op: Operation::Delete { answer },
                };
                match transport.call(&entry.url, &delete).await {
                    Ok(Response::Done) => return Ok(()),
                    Ok(other) => return Err(unexpected(&other)),
                    Err(RelayError::Api(ApiError {
                        code: ErrorCode::AnswerRequired | ErrorCode::NoQuestion,
                        detail,
                    })) => last = detail,
                    Err(e) => return Err(e),
                }
            }
            Err(RelayError::Api(ApiError {
                code: ErrorCode::AnswerRequired,
                detail: last,
            }))
        })
        .await;
        results
            .into_iter()
            .map(|(entry, result)| RelayOutcome {
                relay: entry.url,
                result,
            })
            .collect()
    }
}

fn peer_info(peer: &PeerRecord) -> PeerInfo {
    let our_key = peer.mailbox.public_key();
    let their_key: Option<PublicKey> = peer.their.as_ref().map(|t| t.0.key);
    PeerInfo {
        nickname: peer.nickname.clone(),
        status: match peer.status {
            Status::Waiting => PeerStatus::Waiting,
            Status::Accepted => PeerStatus::Accepted,
            Status::Connected => PeerStatus::Connected,
            Status::LinkUsed => PeerStatus::LinkUsed,
        },
        shared_by_us: matches!(peer.role, Role::Sharer { .. }),
        our_key,
        our_relays: relay_urls(&peer.mailbox.relays),
        their_key,
        their_relays: peer
            .their
            .as_ref()
            .map(|t| relay_urls(&t.0.relays))
            .unwrap_or_default(),
        safety_code: their_key.map(|k| SafetyCode::new(&our_key, &k)),
        link: match (&peer.role, peer.status) {
            (Role::Sharer { link, .. }, Status::Waiting) => Some(link.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_outside_a_runtime_and_validates_nicknames() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::builder(dir.path()).build().unwrap();
        assert_eq!(client.profile_dir(), dir.path());
        assert!(check_nickname("Bob").is_ok());
        assert!(check_nickname("").is_err());
        assert!(check_nickname("a\nb").is_err());
        assert!(check_nickname(&"x".repeat(MAX_NICKNAME_LEN + 1)).is_err());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let err = client
                .share("Bob", ShareOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::NoRelays), "{err}");
            let err = client
                .send("Nobody", Kind::App, serde_json::Value::Null)
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::UnknownPeer(_)), "{err}");
            let err = client
                .send("Nobody", Kind::Hello, serde_json::Value::Null)
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::KindNotAllowed(Kind::Hello)));
        });
    }
}
