//! [`ClientBuilder`] and [`Client`]: the async shell around the core's
//! [`PeerBook`]. The seed's Share, Connect and Unshare over several relays,
//! polling and acknowledgement, on a profile other processes may share.
//!
//! Every operation that changes the profile is one read-modify-write: take
//! the store's lock, re-read the profile (another process may have changed
//! it), let the core decide, write the profile back, release the lock. The
//! store's blocking calls run on tokio's blocking threads. Network work is
//! done outside the lock, so a slow relay never blocks another operation
//! or another process.
//!
//! A `Client` is cheap to clone (it is an `Arc`); clones share the profile,
//! the HTTP connection pool and the in-memory delivery state. This module
//! takes no protocol decision itself: those are the core's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use connectoid_protocol::envelope::Kind;
use connectoid_protocol::link::{Link, RelayEntry, RelayUrl};
use connectoid_protocol::{SafetyCode, limits};
use sha2::Digest as _;

use crate::clock::{Clock, SystemClock};
use crate::core::{Followup, Outgoing, PeerBook, check_nickname};
use crate::error::{BuildError, ClientError, PollError};
use crate::event::{Delivery, PeerInfo, Poll, RelayProbe, SendReport, UnshareReport};
use crate::poll::{EventStream, Fetcher, PollOptions, event_stream};
use crate::profile::{MailboxRecord, ProfileData, ProfileError};
use crate::relay::{RelayOutcome, SendWait, Transport, delete_mailbox, send_fan_out};
use crate::rng::system_rng;
use crate::store::{DirectoryStore, ProfileLock, ProfileStore};
#[cfg(feature = "udp")]
use crate::udp::UdpChecker;

/// Default per-relay timeout of every HTTP request: 5 seconds.
pub const DEFAULT_RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default wait for a UDP check answer, per attempt: 300 ms.
pub const DEFAULT_UDP_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// Default number of UDP check attempts before falling back to HTTP: 2.
pub const DEFAULT_UDP_ATTEMPTS: u32 = 2;
/// Default `limit` of a `receive`: 20 messages.
pub const DEFAULT_RECEIVE_LIMIT: u32 = 20;

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
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn ProfileStore>>,
}

impl ClientBuilder {
    /// A builder for the profile in `profile_dir` (created, mode 0700, if
    /// missing, when the client is built with the directory store).
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
            clock: Arc::new(SystemClock),
            store: None,
        }
    }

    /// Keeps the profile in `store` instead of the profile directory (an
    /// app's own database, or a [`MemoryStore`](crate::MemoryStore) in
    /// tests). The directory is then only what
    /// [`Client::profile_dir`] reports. Default: a
    /// [`DirectoryStore`] on the directory.
    pub fn store(mut self, store: Arc<dyn ProfileStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock of every timestamp and age the client uses. Default
    /// [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
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

    /// Whether to use the UDP check where a relay advertises it. Default on
    /// (with the crate's `udp` feature, a default one; without it every
    /// check is HTTP and this and the other `udp_*` settings do nothing).
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

    /// Opens (or creates) the profile, reads it once (so a corrupt or newer
    /// profile is reported here) and sets up HTTP. Takes no lock beyond
    /// that read: other processes may use the profile meanwhile.
    pub fn build(self) -> Result<Client, BuildError> {
        let http = http_client(&self.root_certificates)?;
        let store: Arc<dyn ProfileStore> = match self.store {
            Some(store) => store,
            None => Arc::new(DirectoryStore::open(&self.profile_dir)?),
        };
        let mut state = State {
            book: PeerBook::default(),
            digest: None,
            location: store.location().join(crate::PROFILE_FILE),
        };
        state.reload(store.read()?)?;
        #[cfg(feature = "udp")]
        let udp = self
            .udp
            .then(|| UdpChecker::new(self.udp_attempt_timeout, self.udp_attempts));
        Ok(Client {
            inner: Arc::new(Inner {
                profile_dir: self.profile_dir,
                store,
                clock: self.clock,
                state: tokio::sync::Mutex::new(state),
                transport: Transport::new(http, self.relay_timeout),
                #[cfg(feature = "udp")]
                udp,
                receive_limit: self.receive_limit,
                send_wait: self.send_wait,
                #[cfg(feature = "quic")]
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
    Ok(match transport.probe(relay).await {
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

/// The book and what it was last read from.
struct State {
    book: PeerBook,
    /// SHA-256 of the stored bytes the book reflects (`None`: unknown, so
    /// the next read is applied whatever it holds).
    digest: Option<[u8; 32]>,
    /// The profile file (or the store's location), for error messages.
    location: PathBuf,
}

impl State {
    /// Applies the stored bytes, unless they are what the book already holds.
    fn reload(&mut self, bytes: Option<Vec<u8>>) -> Result<(), ProfileError> {
        let digest = bytes.as_deref().map(|b| sha2::Sha256::digest(b).into());
        if digest.is_some() && digest == self.digest {
            return Ok(());
        }
        let data = match bytes {
            Some(bytes) => ProfileData::from_bytes(&bytes, &self.location)?,
            None => ProfileData::default(),
        };
        self.book.replace_data(data);
        self.digest = digest;
        Ok(())
    }
}

pub(crate) struct Inner {
    profile_dir: PathBuf,
    store: Arc<dyn ProfileStore>,
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<State>,
    pub(crate) transport: Transport,
    #[cfg(feature = "udp")]
    pub(crate) udp: Option<UdpChecker>,
    receive_limit: u32,
    send_wait: SendWait,
    /// Live peer-link sockets (see `peer`).
    #[cfg(feature = "quic")]
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
            .field("profile", &self.inner.profile_dir)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

/// Runs a blocking store call on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ProfileError> + Send + 'static,
) -> Result<T, ProfileError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(ProfileError::Io {
            action: "run a blocking store task",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

impl Client {
    /// A builder for the profile in `profile_dir`.
    pub fn builder(profile_dir: impl Into<PathBuf>) -> ClientBuilder {
        ClientBuilder::new(profile_dir)
    }

    /// The profile directory (given to the builder; other files of the app,
    /// such as the demo's shopping list, live there too).
    pub fn profile_dir(&self) -> &Path {
        &self.inner.profile_dir
    }

    /// Now, from the client's clock, in ms since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// One read-modify-write of the profile: takes the store's lock,
    /// re-reads the profile, runs `change` on the book with `now`, and
    /// writes the profile back if it changed. When `change` fails nothing
    /// is written.
    pub(crate) async fn update<T, E: From<ProfileError>>(
        &self,
        change: impl FnOnce(&mut PeerBook, u64) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut state = self.inner.state.lock().await;
        let store = Arc::clone(&self.inner.store);
        let (lock, bytes): (ProfileLock, _) = blocking(move || {
            let lock = store.lock()?;
            let bytes = store.read()?;
            Ok((lock, bytes))
        })
        .await?;
        state.reload(bytes)?;
        let now = self.now_ms();
        // A change that is not stored must leave no trace in memory either:
        // deliveries it made were never handed out.
        let inflight = state.book.inflight_snapshot();
        let result = change(&mut state.book, now);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                // The book may hold a half-made change: read it again next time.
                state.digest = None;
                state.book.restore_inflight(inflight);
                return Err(e);
            }
        };
        state.book.expire_seen(now);
        let stored = match state.book.data().to_bytes(&state.location) {
            Ok(bytes) => {
                let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
                if state.digest == Some(digest) {
                    Ok(())
                } else {
                    state.digest = None;
                    let store = Arc::clone(&self.inner.store);
                    let written = blocking(move || {
                        store.write(&bytes)?;
                        drop(lock);
                        Ok(())
                    })
                    .await;
                    if written.is_ok() {
                        state.digest = Some(digest);
                    }
                    written
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            state.digest = None;
            state.book.restore_inflight(inflight);
            return Err(e.into());
        }
        Ok(out)
    }

    /// Reads the book, first taking in what other processes wrote (without
    /// the store's lock: a read sees one complete write).
    pub(crate) async fn view<T>(
        &self,
        look: impl FnOnce(&PeerBook, u64) -> T,
    ) -> Result<T, ProfileError> {
        let mut state = self.inner.state.lock().await;
        let store = Arc::clone(&self.inner.store);
        let bytes = blocking(move || store.read()).await?;
        state.reload(bytes)?;
        Ok(look(&state.book, self.now_ms()))
    }

    /// Like [`Client::view`] for reads that cannot fail: when the store
    /// cannot be read (or holds something unreadable), the last profile
    /// read is used and the error logged.
    async fn snapshot<T>(&self, look: impl FnOnce(&PeerBook, u64) -> T) -> T {
        let mut state = self.inner.state.lock().await;
        let store = Arc::clone(&self.inner.store);
        match blocking(move || store.read()).await {
            Ok(bytes) => {
                if let Err(e) = state.reload(bytes) {
                    tracing::warn!("using the profile as last read: {e}");
                }
            }
            Err(e) => tracing::warn!("using the profile as last read: {e}"),
        }
        look(&state.book, self.now_ms())
    }

    /// Changes only the in-memory state of the book (nothing stored).
    async fn in_memory<T>(&self, change: impl FnOnce(&mut PeerBook) -> T) -> T {
        change(&mut self.inner.state.lock().await.book)
    }

    // ----- relays -----

    /// The profile's relay list (what `share` uses by default).
    pub async fn relays(&self) -> Vec<RelayEntry> {
        self.snapshot(|book, _| book.relays().to_vec()).await
    }

    /// Adds a relay to the profile's list; `false` if it was there already.
    pub async fn add_relay(&self, entry: RelayEntry) -> Result<bool, ClientError> {
        self.update(|book, _| Ok(book.add_relay(entry))).await
    }

    /// Removes a relay from the profile's list; `false` if it was not there.
    /// Peers already using it keep it until their relay set is changed.
    pub async fn remove_relay(&self, url: &RelayUrl) -> Result<bool, ClientError> {
        self.update(|book, _| Ok(book.remove_relay(url))).await
    }

    /// Reads one relay's information document and measures the time it took.
    pub async fn probe(&self, relay: &RelayUrl) -> RelayProbe {
        match self.inner.transport.probe(relay).await {
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
        let ext = options.ext;
        let link = self
            .update(|book, now| book.share(now, &mut system_rng(), nickname, relays, ext))
            .await?;
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
        let (key, hello) = self
            .update(|book, now| {
                book.accept(now, &mut system_rng(), link, nickname, body, options.relays)
            })
            .await?;
        let report = self.send_sealed(&hello).await;
        if !report.is_success() {
            self.update::<_, ClientError>(|book, _| {
                book.abandon(nickname, &key);
                Ok(())
            })
            .await?;
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
        let outgoing = self
            .view(|book, now| book.seal_to(now, &mut system_rng(), nickname, kind, body))
            .await??;
        self.deliver(&outgoing).await
    }

    /// Sends `outgoing`; an error when no relay accepted it.
    async fn deliver(&self, outgoing: &Outgoing) -> Result<SendReport, ClientError> {
        let report = self.send_sealed(outgoing).await;
        if report.is_success() {
            Ok(report)
        } else {
            Err(ClientError::NoRelayAccepted(report))
        }
    }

    /// Sends a sealed message to every relay of its target concurrently,
    /// and waits for them as [`SendWait`] says.
    async fn send_sealed(&self, outgoing: &Outgoing) -> SendReport {
        let target = &outgoing.to;
        let sealed = Arc::new(outgoing.sealed.clone());
        let results = send_fan_out(&target.relays, self.inner.send_wait, |entry| {
            let transport = self.inner.transport.clone();
            let ext = entry.ext.clone().or_else(|| target.ext.clone());
            let (key, sealed) = (target.key, Arc::clone(&sealed));
            async move { transport.send(&entry, ext, key, sealed.to_vec()).await }
        })
        .await;
        for (entry, result) in &results {
            match result {
                Ok(()) => tracing::info!("{}: sent {} bytes over HTTP", entry.url, sealed.len()),
                Err(e) => tracing::info!("{}: send failed: {e}", entry.url),
            }
        }
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
        let notice = self
            .update(|book, now| book.set_relays(now, &mut system_rng(), nickname, relays))
            .await?;
        match notice {
            Some(notice) => self.deliver(&notice).await.map(Some),
            None => Ok(None),
        }
    }

    // ----- peers -----

    /// Every peer and pending share, in the order they were made.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.snapshot(|book, _| book.peers()).await
    }

    /// The peer named `nickname`.
    pub async fn peer(&self, nickname: &str) -> Option<PeerInfo> {
        self.snapshot(|book, _| book.peer(nickname)).await
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

    /// The answer (base64url, as the relay API carries it) to `relay`'s
    /// `question` (base64url, as `check` returned it) about our mailbox for
    /// `nickname`: what a `receive` or `delete` made by hand (curl) at that
    /// relay must carry. Sends nothing.
    pub async fn answer(
        &self,
        nickname: &str,
        relay: &RelayUrl,
        question: &str,
    ) -> Result<String, ClientError> {
        let sealed = connectoid_protocol::b64::decode(question.trim())
            .map_err(|_| ClientError::BadQuestion(nickname.to_owned()))?;
        let answer = self
            .view(|book, _| book.answer(nickname, &sealed, relay))
            .await??;
        Ok(connectoid_protocol::b64::encode(&answer.0))
    }

    /// Ends the share with `nickname`: tells the peer (an `unshare`
    /// envelope), deletes our mailbox at its relays, and deletes our keys.
    /// The keys are deleted even when relays fail; the report says which did.
    pub async fn unshare(&self, nickname: &str) -> Result<UnshareReport, ClientError> {
        let plan = self
            .view(|book, now| book.unshare_plan(now, &mut system_rng(), nickname))
            .await??;
        let notified = match &plan.notice {
            Some(notice) => {
                let report = self.send_sealed(notice).await;
                if !report.is_success() {
                    tracing::warn!(nickname, "no relay took the unshare notice: {report}");
                }
                Some(report)
            }
            None => None,
        };
        let mut deleted = Vec::new();
        for mailbox in &plan.mailboxes {
            deleted.extend(self.delete_mailbox(mailbox).await);
        }
        self.update::<_, ClientError>(|book, _| {
            book.forget(&plan.key);
            Ok(())
        })
        .await?;
        tracing::info!(nickname, "unshared");
        Ok(UnshareReport { notified, deleted })
    }

    // ----- polling -----

    /// Polls every mailbox at every relay once. Returns the new deliveries
    /// (acknowledge each with [`Client::ack`]) and what each relay did.
    /// Relay failures and per-mailbox refusals are in the report, not
    /// errors.
    pub async fn poll_once(&self) -> Result<Poll, PollError> {
        let plans = self.view(|book, now| book.plan_poll(now)).await?;
        let fetcher = Fetcher {
            transport: &self.inner.transport,
            #[cfg(feature = "udp")]
            udp: self.inner.udp.as_ref(),
            receive_limit: self.inner.receive_limit,
        };
        let (mut report, fetched) = fetcher.fetch_all(plans).await;
        let handled = self
            .update::<_, PollError>(|book, now| {
                Ok(book.handle_fetched(now, &mut system_rng(), fetched, &mut report))
            })
            .await?;
        for followup in handled.followups {
            self.follow_up(followup).await;
        }
        Ok(Poll {
            deliveries: handled.deliveries,
            report,
        })
    }

    async fn follow_up(&self, followup: Followup) {
        match followup {
            Followup::Send(outgoing) => {
                let report = self.send_sealed(&outgoing).await;
                tracing::info!(to = %outgoing.to.key, "told a later user of a spent link: {report}");
            }
            Followup::DeleteMailboxes(mailboxes) => {
                for mailbox in &mailboxes {
                    for outcome in self.delete_mailbox(mailbox).await {
                        if let Err(e) = outcome.result {
                            tracing::warn!(relay = %outcome.relay, "could not delete a mailbox after unshare: {e}");
                        }
                    }
                    let key = mailbox.public_key();
                    self.in_memory(|book| book.forget_inflight(&key)).await;
                }
            }
        }
    }

    /// Deletes `mailbox` at its relays and at its retired relays still in
    /// grace.
    async fn delete_mailbox(&self, mailbox: &MailboxRecord) -> Vec<RelayOutcome> {
        let relays: Vec<(RelayEntry, Option<String>)> = mailbox
            .relays_to_check(self.now_ms())
            .into_iter()
            .map(|entry| {
                let ext = mailbox.ext_for(&entry);
                (entry, ext)
            })
            .collect();
        delete_mailbox(&self.inner.transport, &mailbox.key.0, &relays).await
    }

    /// Marks a delivery as processed: remembers its id (so no copy of it is
    /// delivered again, even after a restart) and moves the cursors past it.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), ProfileError> {
        self.update(|book, now| {
            book.ack(now, delivery);
            Ok(())
        })
        .await
    }

    /// Gives a delivery back unprocessed: it is fetched and delivered again
    /// at the next poll.
    pub async fn release(&self, delivery: &Delivery) {
        self.in_memory(|book| book.release(delivery)).await;
    }

    /// Polls forever, with `options`' interval, jitter and backoff, and
    /// yields each delivery. A poll where every relay failed yields an
    /// error and backs off; the stream goes on. Acknowledge each delivery
    /// with [`Client::ack`].
    pub fn events(&self, options: PollOptions) -> EventStream {
        let client = self.clone();
        event_stream(options, move || {
            let client = client.clone();
            async move { client.poll_once().await }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MAX_NICKNAME_LEN;

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

    /// A clock that says what the test sets.
    #[derive(Debug, Default)]
    struct SetClock(std::sync::atomic::AtomicU64);

    impl Clock for SetClock {
        fn now_ms(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn every_timestamp_comes_from_the_builders_clock() {
        let store = crate::MemoryStore::new();
        let clock = Arc::new(SetClock::default());
        clock
            .0
            .store(1_234_567, std::sync::atomic::Ordering::SeqCst);
        let client = Client::builder("unused")
            .store(Arc::new(store.clone()))
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .build()
            .unwrap();
        let relay = RelayEntry::new(RelayUrl::parse("http://127.0.0.1:9/").unwrap());
        let link = client
            .share("Bob", ShareOptions::with_relays(vec![relay.clone()]))
            .await
            .unwrap();
        // A retired relay's grace is counted from the clock too.
        clock
            .0
            .store(2_000_000, std::sync::atomic::Ordering::SeqCst);
        let other = RelayEntry::new(RelayUrl::parse("http://127.0.0.1:10/").unwrap());
        assert!(
            client
                .set_relays("Bob", vec![other])
                .await
                .unwrap()
                .is_none()
        );
        let stored: serde_json::Value =
            serde_json::from_slice(&store.read().unwrap().unwrap()).unwrap();
        let peer = &stored["peers"][0];
        assert_eq!(peer["created_ms"], 1_234_567);
        let grace = limits::MESSAGE_TTL_US / 1000 + limits::ENVELOPE_MAX_SKEW_MS;
        assert_eq!(peer["mailbox"]["retired"][0]["until_ms"], 2_000_000 + grace);
        assert_eq!(link.relays, vec![relay]);
    }

    #[tokio::test]
    async fn two_clients_on_one_store_see_each_others_changes() {
        let store: Arc<dyn ProfileStore> = Arc::new(crate::MemoryStore::new());
        let open = || {
            Client::builder("unused")
                .store(Arc::clone(&store))
                .build()
                .unwrap()
        };
        let (one, two) = (open(), open());
        let relay = |port: u16| {
            RelayEntry::new(RelayUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap())
        };
        let adds = (1..=20).map(|port| {
            let client = if port % 2 == 0 {
                one.clone()
            } else {
                two.clone()
            };
            async move { client.add_relay(relay(port)).await.unwrap() }
        });
        assert!(
            futures::future::join_all(adds)
                .await
                .into_iter()
                .all(|added| added)
        );
        assert_eq!(one.relays().await.len(), 20);
        assert_eq!(two.relays().await.len(), 20);
        let link = one
            .share("Bob", ShareOptions::with_relays(vec![relay(1)]))
            .await
            .unwrap();
        assert_eq!(two.peer("Bob").await.unwrap().link, Some(link.encode()));
        let err = two
            .share("Bob", ShareOptions::with_relays(vec![relay(1)]))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::NicknameTaken(_)), "{err}");
    }
}
