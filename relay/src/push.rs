//! Push notifications: after a `send`, tell the mailbox's registered
//! endpoint "check now" (`spec/protocol.md` §7.11, `spec/relay.md` §12).
//!
//! [`Pusher::notify`] only puts the mailbox into a bounded queue (a full
//! queue drops the push and counts it), so a push never delays the `send`
//! answer. One task takes the queue, coalesces (at most one push per mailbox
//! per [`PushConfig::min_interval`]: a push due sooner is folded into one
//! sent when the interval is over, so the last message of a burst still
//! wakes the owner), and hands each push to a delivery task, at most
//! [`MAX_DELIVERIES`] at once.
//!
//! A push carries a constant body ([`PUSH_BODY`]; for Web Push encrypted
//! with RFC 8291 `aes128gcm` and signed with the relay's RFC 8292 VAPID
//! key), `TTL` no longer than the message's life and a constant `Topic` so
//! that a push service replaces one not yet delivered. 404 and 410 answers
//! remove the registration.
//!
//! Request forgery: endpoints must be `https` and their hosts must not be
//! or resolve to loopback, private, link-local or other non-public
//! addresses ([`is_public`]); the rule is applied when an endpoint is
//! registered and again by the HTTP client's resolver at every connection,
//! so a DNS answer that changed since cannot bypass it. Redirects are not
//! followed, every delivery has a short timeout. With
//! [`PushConfig::allow_private`] (for tests) both rules are off: `http` and
//! any address, such as `http://127.0.0.1:PORT/`, are accepted.
//!
//! This module does not decide who may register (the service checks the
//! answer) and keeps no state of its own beyond the coalescing times.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use connectoid_protocol::b64;
use connectoid_protocol::push::PushSubscription;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike as _, ES256KeyPair};

use crate::metrics::PushCounter;
use crate::store::{MailboxId, Store};

/// The body of every push (encrypted for Web Push): it says only "check
/// now", the same for every mailbox and message.
pub const PUSH_BODY: &[u8] = b"check";
/// The `Topic` header of every push (RFC 8030 §5.4): a push service keeps
/// only the newest undelivered push of a subscription with this topic.
pub const PUSH_TOPIC: &str = "connectoid";
/// Most deliveries in flight at once; the queue waits beyond.
pub const MAX_DELIVERIES: usize = 64;
/// The file in the data directory that holds the VAPID private key.
pub const VAPID_FILE: &str = "vapid-key";
/// Longest `exp` of a VAPID token (RFC 8292 §2: at most 24 hours).
const MAX_VAPID_VALIDITY: Duration = Duration::from_secs(12 * 3600);

/// How the relay sends pushes. The default is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// Whether `push` requests are served and pushes sent. Default `false`.
    pub enabled: bool,
    /// At most one push per mailbox per this interval. Default 10 s.
    pub min_interval: Duration,
    /// Allow `http` endpoints and endpoints on loopback, private and
    /// link-local addresses. For tests only. Default `false`.
    pub allow_private: bool,
    /// Most pushes waiting to be sent; more are dropped (and counted).
    /// Default 1024.
    pub queue: usize,
    /// Most time one delivery may take, connection included. Default 5 s.
    pub timeout: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_interval: Duration::from_secs(10),
            allow_private: false,
            queue: 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Push could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The VAPID key file could not be read or written.
    #[error("VAPID key file {path}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The VAPID key file does not hold a key.
    #[error("VAPID key file {0} does not hold a P-256 key")]
    BadKey(std::path::PathBuf),
    /// The HTTP client could not be built.
    #[error("push HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Whether `ip` is an address a push may go to: not loopback, private,
/// link-local, unspecified, multicast, shared (100.64/10), documentation,
/// benchmarking or reserved, and for IPv6 not unique-local or an
/// IPv4-mapped address that is not public.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0xdb8
                || first == 0x64 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// The resolver of the push client: the system's, keeping only public
/// addresses unless private ones are allowed.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Sends the pushes; see the module documentation.
pub(crate) struct Pusher {
    queue: mpsc::Sender<Job>,
    counter: PushCounter,
    vapid_public_key: String,
    allow_private: bool,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

/// One push to send: to `mailbox`'s registration, for a message queued at
/// `queued` that lives `ttl` from then.
struct Job {
    mailbox: MailboxId,
    ttl: Duration,
    queued: Instant,
}

/// What a delivery needs, shared by the delivery tasks.
struct Deliverer {
    client: reqwest::Client,
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::Clock>,
    vapid: ES256KeyPair,
    contact: String,
    counter: PushCounter,
}

/// The coalescing state of one mailbox.
struct Slot {
    /// When its last push was handed to a delivery task.
    last: Instant,
    /// Whether a push is already due at `last + min_interval`.
    pending: bool,
}

/// Reads the VAPID key from `dir`, or makes one and writes it (mode 0600).
pub(crate) fn load_or_make_vapid(dir: &Path) -> Result<ES256KeyPair, PushError> {
    let path = dir.join(VAPID_FILE);
    let io = |source| PushError::KeyFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => b64::decode(text.trim())
            .ok()
            .and_then(|bytes| ES256KeyPair::from_bytes(&bytes).ok())
            .ok_or_else(|| PushError::BadKey(path.clone())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let key = ES256KeyPair::generate();
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            file.write_all(b64::encode(&key.to_bytes()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            tracing::info!(path = %path.display(), "made a VAPID key for push");
            Ok(key)
        }
        Err(error) => Err(io(error)),
    }
}

impl Pusher {
    /// Starts the sender over `store` with the VAPID key `vapid`; `contact`
    /// is the VAPID `sub` (a `mailto:` or `https:` URL).
    pub(crate) fn start(
        config: &PushConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn crate::Clock>,
        vapid: ES256KeyPair,
        contact: String,
        counter: PushCounter,
    ) -> Result<Self, PushError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .no_proxy()
            .dns_resolver(PublicOnly {
                allow_private: config.allow_private,
            })
            .https_only(!config.allow_private)
            .build()
            .map_err(PushError::Client)?;
        let vapid_public_key =
            b64::encode(&vapid.public_key().public_key().to_bytes_uncompressed());
        let deliverer = Arc::new(Deliverer {
            client,
            store,
            clock,
            vapid,
            contact,
            counter: counter.clone(),
        });
        let (queue, jobs) = mpsc::channel(config.queue.max(1));
        tokio::spawn(coalesce(jobs, deliverer, config.min_interval));
        Ok(Self {
            queue,
            counter,
            vapid_public_key,
            allow_private: config.allow_private,
        })
    }

    /// The VAPID public key: base64url of the uncompressed point.
    pub(crate) fn vapid_public_key(&self) -> &str {
        &self.vapid_public_key
    }

    /// Queues a push for `mailbox` whose newest message lives `ttl` more;
    /// never waits (a full queue drops it).
    pub(crate) fn notify(&self, mailbox: MailboxId, ttl: Duration) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(Job {
            mailbox,
            ttl,
            queued: Instant::now(),
        }) {
            self.counter.count("dropped");
        }
    }

    /// Whether pushes may go to `endpoint` (already checked to be an http or
    /// https URL with a host): the detail of a refusal. Resolves the host.
    pub(crate) async fn check_endpoint(&self, endpoint: &url::Url) -> Result<(), String> {
        if self.allow_private {
            return Ok(());
        }
        if endpoint.scheme() != "https" {
            return Err("endpoint: only https endpoints are accepted".into());
        }
        let port = endpoint.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = match endpoint.host() {
            Some(url::Host::Ipv4(v4)) => vec![IpAddr::V4(v4)],
            Some(url::Host::Ipv6(v6)) => vec![IpAddr::V6(v6)],
            Some(url::Host::Domain(name)) => {
                let lookup = tokio::net::lookup_host((name, port));
                match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    _ => return Err(format!("endpoint: {name} does not resolve")),
                }
            }
            None => return Err("endpoint: no host".into()),
        };
        if addrs.is_empty() || !addrs.iter().copied().any(is_public) {
            return Err(
                "endpoint: the host is or resolves to a loopback, private or link-local address"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The queue's task: coalesces and starts deliveries.
async fn coalesce(mut jobs: mpsc::Receiver<Job>, deliverer: Arc<Deliverer>, interval: Duration) {
    let slots: Arc<Mutex<HashMap<MailboxId, Slot>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(MAX_DELIVERIES));
    while let Some(job) = jobs.recv().await {
        let now = Instant::now();
        let due = {
            let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
            if slots.len() > 4 * MAX_DELIVERIES {
                slots.retain(|_, slot| slot.pending || now < slot.last + interval);
            }
            match slots.get_mut(&job.mailbox) {
                Some(slot) if now < slot.last + interval => {
                    if slot.pending {
                        deliverer.counter.count("coalesced");
                        continue;
                    }
                    slot.pending = true;
                    Some(slot.last + interval)
                }
                _ => {
                    slots.insert(
                        job.mailbox,
                        Slot {
                            last: now,
                            pending: false,
                        },
                    );
                    None
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let deliverer = Arc::clone(&deliverer);
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(at) = due {
                tokio::time::sleep_until(at).await;
                let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
                slots.insert(
                    job.mailbox,
                    Slot {
                        last: Instant::now(),
                        pending: false,
                    },
                );
            }
            let mailbox = job.mailbox;
            if !deliverer.deliver(job).await {
                // No registration: the next message is not held back by
                // a push that was never sent.
                let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
                if slots.get(&mailbox).is_some_and(|slot| !slot.pending) {
                    slots.remove(&mailbox);
                }
            }
        });
    }
}

impl Deliverer {
    /// Sends the push for `job`; `false` when the mailbox has no registration.
    async fn deliver(&self, job: Job) -> bool {
        let now_us = self.clock.now_us();
        let subscription = match self.store.push(job.mailbox, now_us).await {
            Ok(Some(subscription)) => subscription,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(%error, "push: reading the registration failed");
                self.counter.count("failed");
                return true;
            }
        };
        // The message's remaining life, also for a push held back by the
        // interval.
        let ttl = job.ttl.saturating_sub(job.queued.elapsed());
        let status = match self.send(&subscription, ttl).await {
            Ok(status) => status,
            Err(error) => {
                tracing::debug!(error = %error, "push failed");
                self.counter.count("failed");
                return true;
            }
        };
        if status.is_success() {
            self.counter.count("sent");
        } else if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            match self
                .store
                .remove_push(job.mailbox, Some(&subscription.endpoint), now_us)
                .await
            {
                Ok(_) => self.counter.count("removed"),
                Err(error) => {
                    tracing::warn!(%error, "push: removing a gone registration failed");
                    self.counter.count("failed");
                }
            }
        } else {
            tracing::debug!(%status, "push refused");
            self.counter.count("failed");
        }
        true
    }

    async fn send(
        &self,
        subscription: &PushSubscription,
        ttl: Duration,
    ) -> Result<reqwest::StatusCode, Box<dyn std::error::Error + Send + Sync>> {
        let ttl_seconds = ttl.as_secs().max(1);
        let request = match &subscription.web_push {
            None => self
                .client
                .post(subscription.endpoint.as_str())
                .header("Content-Type", "text/plain")
                .body(PUSH_BODY),
            Some(keys) => {
                use web_push_native::{Auth, WebPushBuilder, p256};
                let built = WebPushBuilder::new(
                    subscription.endpoint.parse()?,
                    p256::PublicKey::from_sec1_bytes(&keys.p256dh)?,
                    Auth::clone_from_slice(&keys.auth),
                )
                .with_valid_duration(Duration::from_secs(ttl_seconds).min(MAX_VAPID_VALIDITY))
                .with_vapid(&self.vapid, &self.contact)
                .build(PUSH_BODY)?;
                let (parts, body) = built.into_parts();
                let mut headers = parts.headers;
                headers.remove("TTL");
                self.client
                    .post(subscription.endpoint.as_str())
                    .headers(headers)
                    .body(body)
            }
        };
        let response = request
            .header("TTL", ttl_seconds.to_string())
            .header("Topic", PUSH_TOPIC)
            .header("Urgency", "high")
            .send()
            .await?;
        Ok(response.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
