//! What the relay answers: the API actions and the UDP check, independent of
//! HTTP and sockets.
//!
//! [`Relay`] holds the store, the clock, the limits, the token buckets and
//! the metrics. [`Relay::handle`] turns a decoded [`Request`] from a source
//! address into a [`Response`] or an [`ApiError`]; [`Relay::answer_datagram`]
//! turns a UDP datagram into at most one response datagram. The order of
//! checks for a request is the one `spec/protocol.md` §7.3 gives: API key
//! ("Forbidden"), the source's bucket, then the mailbox's buckets ("Too
//! often"; for `receive` and `delete` after the answer is judged, so that
//! right and wrong answers spend different buckets, `spec/relay.md` §5.1),
//! the relay's own message size ("Too big"), then the store ("Mailbox
//! full", "Relay full", "Unavailable") and the question.
//!
//! A held check (`check` with `wait` or `also`, `spec/relay.md` §5.2)
//! registers in [`HeldChecks`] before it looks at the store, so that no
//! send is missed between "nothing found" and "start waiting"; every stored
//! `send` wakes the held checks naming its mailbox (and, on Redis, the
//! store's feed wakes them for sends through other nodes).
//!
//! The only asymmetric cryptography here is sealing a mailbox's question,
//! once per mailbox per question lifetime, on the blocking pool; a check that
//! finds nothing is one lookup in the store (in memory for redb, one script
//! call for Redis). A request's `pub` is checked to be a curve point (the
//! costliest step of decoding it) only when the store does not hold its
//! mailbox: a mailbox exists only because a send with a validated key made
//! it ([`Relay::parse_request`]). This module does not parse JSON (beyond
//! handing bodies to the protocol's decoder) or know about status codes (see
//! `http`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use connectoid_protocol::api::{
    FoundQuestion, InfoHeldCheck, InfoLimits, InfoPush, InfoRetention, PushRequest,
};
use connectoid_protocol::limits as protocol_limits;
use connectoid_protocol::push::{PushListing, check_endpoint};
use connectoid_protocol::seal::{QUESTION_SECRET_LEN, seal_question};
use connectoid_protocol::udp::{CheckRequest, CheckResponse, CheckStatus};
use connectoid_protocol::{
    Answer, ApiError, ErrorCode, Operation, PublicKey, RelayInfo, RelayUrl, Request, Response,
    UnvalidatedKey,
};

use crate::clock::Clock;
use crate::config::{Config, Limits, micros};
use crate::held::{HeldChecks, HoldRefused};
use crate::metrics::Metrics;
use crate::rate::{Limit, Limiters};
use crate::store::{
    Deleted, MailboxId, Question, SendListener, SourcePrefix, Store, StoreError, SweepReport,
};
use crate::stun;

/// The protocol version this relay speaks (defined by the protocol crate).
pub use connectoid_protocol::api::PROTOCOL_VERSION;

/// A decoded API request whose `pub` names a point on the curve: checked by
/// [`Relay::parse_request`], or the key of a mailbox the store holds (made
/// by a send whose key was checked). Made from a [`Request`] whose key is a
/// [`PublicKey`](connectoid_protocol::PublicKey) with `From`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest(Request<UnvalidatedKey>);

impl ValidRequest {
    /// The request (its key as received).
    pub fn request(&self) -> &Request<UnvalidatedKey> {
        &self.0
    }
}

impl From<Request> for ValidRequest {
    fn from(request: Request) -> Self {
        Self(Request {
            key: request.key.into(),
            ext: request.ext,
            op: request.op,
        })
    }
}

/// The relay's behaviour, shared by the HTTP and UDP front ends.
pub struct Relay {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    question_ttl_us: u64,
    api_keys: Vec<String>,
    urls: Vec<RelayUrl>,
    limiters: Limiters,
    metrics: Metrics,
    info: RelayInfo,
    trust_forwarded_for: bool,
    connections: crate::config::ConnectionLimits,
    unknown_url: UnknownUrlWarning,
    held: HeldChecks,
    max_held_wait: std::time::Duration,
    /// The push sender, when push is on ([`Relay::enable_push`]).
    pusher: Option<crate::push::Pusher>,
    /// How long a message lives: the `TTL` of the push it causes.
    message_ttl: std::time::Duration,
}

/// How often at most the relay logs that answers match none of its URLs.
const UNKNOWN_URL_WARNING_EVERY_US: u64 = 60_000_000;

/// The rate-limited warning that answers match none of the relay's URLs:
/// the sign of a relay reached under a name it was not told (`--url`).
#[derive(Default)]
struct UnknownUrlWarning {
    /// When it was last logged (clock µs); 0 = never.
    last_us: std::sync::atomic::AtomicU64,
    /// Wrong answers since then.
    since: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("store", &self.store)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Maps a store failure to the API's error, logging what clients must not see.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::MailboxFull => ApiError::new(
            ErrorCode::MailboxFull,
            "the mailbox holds the maximum number of messages; retry after some expire",
        ),
        StoreError::RelayFull(why) => ApiError::new(ErrorCode::RelayFull, why),
        StoreError::Closed => ApiError::new(ErrorCode::Unavailable, "the relay is shutting down"),
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "storage unavailable");
            ApiError::new(ErrorCode::Unavailable, "storage is unavailable")
        }
        other => {
            tracing::error!(error = %other, "storage failure");
            ErrorCode::Internal.into()
        }
    }
}

impl Relay {
    /// A relay over `store` configured by `config`. `udp_port` is the bound
    /// UDP check port to advertise, if any.
    pub fn new(config: &Config, store: Arc<dyn Store>, udp_port: Option<u16>) -> Self {
        let limits = config.limits.clone();
        let seconds = |d: std::time::Duration| d.as_secs();
        let mut info = RelayInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            InfoLimits::new(
                limits.max_message_bytes as u64,
                limits.max_receive_limit,
                limits.max_pending_per_mailbox,
                protocol_limits::MAX_CHECKS_PER_DATAGRAM as u32,
            ),
            InfoRetention::new(
                seconds(config.retention.message),
                seconds(config.retention.question),
                seconds(config.retention.mailbox_idle),
            ),
        );
        info.limits.max_connections_per_source =
            Some(u32::try_from(config.connections.max_per_source).unwrap_or(u32::MAX));
        info.limits.idle_timeout_seconds = Some(config.connections.header_timeout.as_secs());
        info.udp_port = udp_port;
        info.api_key_required = !config.api_keys.is_empty();
        info.contact = config.contact.clone();
        info.peers = config.peers.clone();
        if !config.held.max_wait.is_zero() {
            info.held_check = Some(InfoHeldCheck::new(
                config.held.max_wait.as_secs().max(1),
                protocol_limits::MAX_MAILBOXES_PER_HELD_CHECK as u32,
                config.held.max_per_source,
                config.held.max_total,
            ));
        }
        Self {
            store,
            clock: Arc::clone(&config.clock),
            limiters: Limiters::new(&limits.rate, &config.clock),
            limits,
            question_ttl_us: micros(config.retention.question),
            api_keys: config.api_keys.clone(),
            urls: if config.urls.is_empty() {
                crate::config::default_urls(config.http, config.tls.is_some())
            } else {
                config.urls.clone()
            },
            metrics: Metrics::new(),
            info,
            trust_forwarded_for: config.trust_forwarded_for,
            connections: config.connections,
            unknown_url: UnknownUrlWarning::default(),
            held: HeldChecks::new(config.held.max_per_source, config.held.max_total),
            max_held_wait: config.held.max_wait,
            pusher: None,
            message_ttl: config.retention.message,
        }
    }

    /// The relay's URLs as one line, for messages.
    fn url_list(&self) -> String {
        self.urls
            .iter()
            .map(RelayUrl::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Logs, at most once a minute, that an answer matched none of the URLs
    /// this relay answers for (with the number since the last warning).
    fn warn_unknown_url(&self, now_us: u64) {
        use std::sync::atomic::Ordering;
        let warning = &self.unknown_url;
        let since = warning.since.fetch_add(1, Ordering::Relaxed) + 1;
        let last = warning.last_us.load(Ordering::Relaxed);
        let due = last == 0 || now_us.saturating_sub(last) >= UNKNOWN_URL_WARNING_EVERY_US;
        if due
            && warning
                .last_us
                .compare_exchange(last, now_us.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warning.since.store(0, Ordering::Relaxed);
            tracing::warn!(
                "{since} answer(s) matched none of the URLs this relay answers for ({}); \
                 if clients reach it under another URL (a proxy, a DNS name, another port), \
                 add that URL with --url (said at most once a minute)",
                self.url_list()
            );
        }
    }

    /// Answers every held check now (`found: false` unless a message came)
    /// and holds none from now on: the first step of a shutdown, so that a
    /// graceful stop does not wait for their timeouts.
    pub fn release_held_checks(&self) {
        self.held.release_all();
    }

    /// How many held checks are waiting now.
    pub fn held_checks_waiting(&self) -> u32 {
        self.held.waiting()
    }

    /// Turns push on as [`Config::push`] says (nothing when it is off):
    /// reads or makes the VAPID key in [`Config::data_dir`], starts the
    /// sender (on the current Tokio runtime) and publishes the key in the
    /// information document.
    pub fn enable_push(&mut self, config: &Config) -> Result<(), crate::push::PushError> {
        if !config.push.enabled {
            return Ok(());
        }
        let vapid = crate::push::load_or_make_vapid(&config.data_dir)?;
        // RFC 8292 `sub`: the operator's contact when it is a mailto: or
        // https: URL, otherwise the relay's own URL.
        let contact = config
            .contact
            .clone()
            .filter(|c| c.starts_with("mailto:") || c.starts_with("https:"))
            .or_else(|| self.urls.first().map(|url| url.as_str().to_owned()))
            .unwrap_or_default();
        let pusher = crate::push::Pusher::start(
            &config.push,
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            vapid,
            contact,
            self.metrics.pushes(),
        )?;
        self.info.push = Some(InfoPush::new(
            pusher.vapid_public_key(),
            config.push.min_interval.as_secs(),
        ));
        self.pusher = Some(pusher);
        Ok(())
    }

    /// The information document served at `GET /.well-known/connectoid`.
    pub fn info(&self) -> &RelayInfo {
        &self.info
    }

    /// The `Retry-After` of an error answered with 429, in whole seconds
    /// (at least 1): for "Too often" the refused bucket's time to gain one
    /// token, for "Mailbox full" a minute (room comes back when the owner
    /// receives or messages expire, which the relay cannot foresee).
    pub fn retry_after_secs(&self, error: &ApiError) -> Option<u64> {
        match error.code {
            ErrorCode::TooOften => {
                let period = self
                    .limiters
                    .refill_period(error.detail.as_deref().unwrap_or(""))?;
                Some(period.as_secs_f64().ceil().max(1.0) as u64)
            }
            ErrorCode::MailboxFull => Some(60),
            _ => None,
        }
    }

    /// The URLs whose answers this relay accepts ([`Config::urls`], or the
    /// defaults for its HTTP address).
    pub fn urls(&self) -> &[RelayUrl] {
        &self.urls
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether `X-Forwarded-For` from loopback peers names the client.
    pub(crate) fn trust_forwarded_for(&self) -> bool {
        self.trust_forwarded_for
    }

    /// The connection timeouts and caps ([`Config::connections`]).
    pub(crate) fn connection_limits(&self) -> &crate::config::ConnectionLimits {
        &self.connections
    }

    /// The counters, for the front ends.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus (OpenMetrics) text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        let stats = self.store.stats().await.ok();
        self.metrics.held_waiting(self.held.waiting());
        self.metrics.encode(stats)
    }

    /// Counts a finished HTTP API request.
    pub(crate) fn count_request(&self, action: &'static str, result: &Result<Response, ApiError>) {
        let label = match result {
            Ok(_) => "ok",
            Err(error) => crate::metrics::error_label(error.code),
        };
        self.metrics.request(action, label);
    }

    /// Runs one sweep of the store now (the server also runs it periodically)
    /// and forgets idle rate-limit buckets.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        self.limiters.forget_idle();
        self.store.sweep(self.clock.now_us()).await
    }

    fn authorized(&self, ext: Option<&str>) -> bool {
        use subtle::ConstantTimeEq as _;
        if self.api_keys.is_empty() {
            return true;
        }
        let given = ext.unwrap_or("").as_bytes();
        let mut found = subtle::Choice::from(0);
        for key in &self.api_keys {
            found |= key.as_bytes().ct_eq(given);
        }
        found.into()
    }

    async fn take(&self, limit: Limit, now_us: u64) -> Result<(), ApiError> {
        let kind = limit.kind();
        if self
            .limiters
            .take(self.store.as_ref(), limit, now_us)
            .await
            .map_err(store_error)?
        {
            Ok(())
        } else {
            self.metrics.rate_limited(kind);
            Err(ApiError::new(ErrorCode::TooOften, kind))
        }
    }

    /// Decodes a request body, answering exactly what [`Request::from_json`]
    /// answers, but checks that its `pub` is a point on the curve only when
    /// the store does not hold that mailbox ([`Store::holds`]): only a send
    /// whose key was checked makes a mailbox, so a check, receive or send of
    /// a mailbox that exists needs no check, and its cost does not depend on
    /// how many mailboxes there are. A body that is not UTF-8 anywhere,
    /// including inside members the decoder skips, is "Malformed JSON" (RFC
    /// 8259 §8.1).
    pub fn parse_request(&self, body: &[u8]) -> Result<ValidRequest, ApiError> {
        if let Err(error) = std::str::from_utf8(body) {
            return Err(ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not UTF-8 (at byte {})", error.valid_up_to()),
            ));
        }
        let request = Request::from_json_unvalidated(body)?;
        if !self.store.holds(&MailboxId(*request.key.as_bytes())) {
            request.validated_key()?;
        }
        Ok(ValidRequest(request))
    }

    /// Answers one API request from `source`.
    pub async fn handle(
        &self,
        request: &ValidRequest,
        source: IpAddr,
    ) -> Result<Response, ApiError> {
        let request = &request.0;
        if !self.authorized(request.ext.as_deref()) {
            let detail = match request.ext {
                None => "this relay requires an API key in ext",
                Some(_) => "the API key in ext is not accepted",
            };
            return Err(ApiError::new(ErrorCode::Forbidden, detail));
        }
        let now = self.clock.now_us();
        let mailbox = MailboxId(*request.key.as_bytes());
        let source = SourcePrefix::from(source);
        match &request.op {
            Operation::Send { data } => {
                self.take(Limit::SendPerSource(source), now).await?;
                // The source's share first, so that a source past it does
                // not spend the mailbox's bucket that other senders share.
                self.take(Limit::SendPerMailboxSource(mailbox, source), now)
                    .await?;
                self.take(Limit::SendPerMailbox(mailbox), now).await?;
                if data.len() > self.limits.max_message_bytes {
                    return Err(ApiError::new(
                        ErrorCode::TooBig,
                        format!(
                            "data: {} bytes, the maximum is {}",
                            data.len(),
                            self.limits.max_message_bytes
                        ),
                    ));
                }
                let started = Instant::now();
                let at = self
                    .store
                    .send(mailbox, data.clone(), now)
                    .await
                    .map_err(store_error)?;
                self.metrics.store_commit(started.elapsed().as_secs_f64());
                self.held.wake(&mailbox);
                tracing::debug!(?mailbox, %at, bytes = data.len(), "message stored");
                if let Some(pusher) = &self.pusher {
                    pusher.notify(mailbox, self.message_ttl);
                }
                Ok(Response::Done)
            }
            Operation::Check { at } => {
                self.take(Limit::CheckPerSource(source), now).await?;
                self.take(Limit::CheckPerMailboxSource(mailbox, source), now)
                    .await?;
                let found = self
                    .store
                    .check(&[(mailbox, *at)], now)
                    .await
                    .map_err(store_error)?;
                if !found.first().copied().unwrap_or(false) {
                    return Ok(Response::NotFound);
                }
                let question = self.question(mailbox, &request.key, now).await?;
                Ok(Response::Found {
                    question: question.sealed,
                })
            }
            Operation::HeldCheck {
                at,
                also,
                wait_seconds,
            } => {
                self.take(Limit::CheckPerSource(source), now).await?;
                // Held checks wait seconds: checking the key costs nothing
                // that matters here, and the answer names it as a key.
                let keys: Vec<PublicKey> = std::iter::once(request.validated_key()?)
                    .chain(also.iter().map(|c| c.key))
                    .collect();
                let checks: Vec<(MailboxId, connectoid_protocol::At)> =
                    std::iter::once((mailbox, *at))
                        .chain(also.iter().map(|c| (MailboxId::from(&c.key), c.at)))
                        .collect();
                for (mailbox, _) in &checks {
                    self.take(Limit::CheckPerMailboxSource(*mailbox, source), now)
                        .await?;
                }
                let wait = std::time::Duration::from_secs(*wait_seconds).min(self.max_held_wait);
                self.held_check(&keys, &checks, wait, source).await
            }
            Operation::Receive { answer, at, limit } => {
                self.take(Limit::CheckPerSource(source), now).await?;
                self.verify(mailbox, source, answer, now).await?;
                // Only the owner gets here: the bucket is theirs.
                self.take(Limit::CheckPerMailboxSource(mailbox, source), now)
                    .await?;
                let capped = (*limit).clamp(1, self.limits.max_receive_limit.max(1));
                let messages = self
                    .store
                    .receive(mailbox, *at, capped, now)
                    .await
                    .map_err(store_error)?;
                if *limit == 1 {
                    Ok(messages
                        .into_iter()
                        .next()
                        .map_or(Response::NotFound, Response::One))
                } else {
                    Ok(Response::Many(messages))
                }
            }
            Operation::Delete { answer } => {
                // Not the mailbox's shared send bucket: senders need it.
                self.take(Limit::SendPerSource(source), now).await?;
                self.take(Limit::SendPerMailboxSource(mailbox, source), now)
                    .await?;
                if let Some(answer) = answer {
                    self.verify(mailbox, source, answer, now).await?;
                }
                let started = Instant::now();
                let deleted = self
                    .store
                    .delete(mailbox, answer.is_none(), now)
                    .await
                    .map_err(store_error)?;
                self.metrics.store_commit(started.elapsed().as_secs_f64());
                match deleted {
                    Deleted::NotEmpty => Err(ApiError::new(
                        ErrorCode::AnswerRequired,
                        "the mailbox holds messages: check, then delete with the answer",
                    )),
                    _ => {
                        tracing::debug!(?mailbox, "mailbox deleted");
                        Ok(Response::Done)
                    }
                }
            }
            Operation::Push { answer, request } => {
                self.take(Limit::CheckPerSource(source), now).await?;
                let Some(pusher) = &self.pusher else {
                    return Err(ApiError::new(
                        ErrorCode::PushDisabled,
                        "this relay sends no pushes",
                    ));
                };
                self.verify(mailbox, source, answer, now).await?;
                self.take(Limit::CheckPerMailboxSource(mailbox, source), now)
                    .await?;
                match request {
                    PushRequest::Register(subscription) => {
                        let url = check_endpoint(&subscription.endpoint)
                            .map_err(|detail| ApiError::new(ErrorCode::BadValue, detail))?;
                        pusher
                            .check_endpoint(&url)
                            .await
                            .map_err(|detail| ApiError::new(ErrorCode::EndpointRefused, detail))?;
                        if !self
                            .store
                            .set_push(mailbox, subscription, now)
                            .await
                            .map_err(store_error)?
                        {
                            return Err(ApiError::new(
                                ErrorCode::NoQuestion,
                                "the mailbox no longer exists; check again",
                            ));
                        }
                        tracing::debug!(?mailbox, kind = ?subscription.kind(), "push registered");
                        Ok(Response::Done)
                    }
                    PushRequest::Remove => {
                        self.store
                            .remove_push(mailbox, None, now)
                            .await
                            .map_err(store_error)?;
                        Ok(Response::Done)
                    }
                    PushRequest::List => {
                        let listed = self
                            .store
                            .push(mailbox, now)
                            .await
                            .map_err(store_error)?
                            .map(|subscription| PushListing {
                                kind: subscription.kind(),
                                endpoint: subscription.endpoint,
                            });
                        Ok(Response::Pushes(listed.into_iter().collect()))
                    }
                    _ => Err(ApiError::from(ErrorCode::UnknownAction)),
                }
            }
            // An action a later protocol crate decodes that this relay does
            // not implement yet.
            _ => Err(ApiError::from(ErrorCode::UnknownAction)),
        }
    }

    /// A held check of `checks` (the mailboxes of `keys`, in order): answers
    /// at once when one has a message after its cursor, otherwise waits up
    /// to `wait` for a send to one of them, looking again at each wake-up.
    async fn held_check(
        &self,
        keys: &[PublicKey],
        checks: &[(MailboxId, connectoid_protocol::At)],
        wait: std::time::Duration,
        source: SourcePrefix,
    ) -> Result<Response, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        // Registered before the first look at the store: a send between
        // that look and the wait leaves a wake-up behind.
        let hold = if wait.is_zero() {
            None
        } else {
            let mailboxes = checks.iter().map(|(mailbox, _)| *mailbox).collect();
            match self.held.hold(source, mailboxes) {
                Ok(hold) => hold,
                Err(refused) => {
                    let (limit, detail) = match refused {
                        HoldRefused::PerSource(max) => (
                            "per_source",
                            format!("held checks: {max} from this address are already waiting"),
                        ),
                        HoldRefused::Total(max) => (
                            "total",
                            format!("held checks: the relay already holds its maximum of {max}"),
                        ),
                    };
                    self.metrics.held_refused(limit);
                    return Err(ApiError::new(ErrorCode::TooOften, detail));
                }
            }
        };
        let mut waited = false;
        loop {
            let now = self.clock.now_us();
            let found = self.store.check(checks, now).await.map_err(store_error)?;
            if found.iter().any(|found| *found) {
                let mut questions = Vec::new();
                for ((mailbox, _), (key, _)) in checks
                    .iter()
                    .zip(keys.iter().zip(&found))
                    .filter(|(_, (_, found))| **found)
                {
                    let question = self.question(*mailbox, &(*key).into(), now).await?;
                    questions.push(FoundQuestion {
                        key: *key,
                        question: question.sealed,
                    });
                }
                if waited {
                    self.metrics.held_answered("found");
                }
                return Ok(Response::FoundMany(questions));
            }
            let Some(hold) = &hold else {
                return Ok(Response::NotFound);
            };
            if self.held.released() {
                self.metrics.held_answered("released");
                return Ok(Response::NotFound);
            }
            tokio::select! {
                () = hold.woken() => waited = true,
                () = tokio::time::sleep_until(deadline) => {
                    self.metrics.held_answered("timeout");
                    return Ok(Response::NotFound);
                }
            }
        }
    }

    /// The mailbox's live question, made (and sealed) only if there is none.
    async fn question(
        &self,
        mailbox: MailboxId,
        key: &UnvalidatedKey,
        now_us: u64,
    ) -> Result<Question, ApiError> {
        if let Some(question) = self
            .store
            .question(mailbox, now_us)
            .await
            .map_err(store_error)?
        {
            return Ok(question);
        }
        let key = *key;
        let (secret, sealed) = tokio::task::spawn_blocking(move || {
            use rand::Rng as _;
            let mut rng = rand::rng();
            let mut secret = [0u8; QUESTION_SECRET_LEN];
            rng.fill_bytes(&mut secret);
            // The key is valid (`ValidRequest`); checking it again costs
            // little next to sealing.
            let key = key.validate().map_err(|error| error.to_string())?;
            seal_question(&mut rng, &key, &secret)
                .map(|sealed| (secret, sealed))
                .map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "question task failed");
            ApiError::from(ErrorCode::Internal)
        })?
        .map_err(|error| {
            tracing::error!(%error, "sealing a question failed");
            ApiError::from(ErrorCode::Internal)
        })?;
        self.metrics.question_made();
        let question = Question {
            secret,
            sealed,
            expires_us: now_us.saturating_add(self.question_ttl_us),
        };
        self.store
            .offer_question(mailbox, question, now_us)
            .await
            .map_err(store_error)
    }

    /// Checks `answer` against the mailbox's live question. A wrong answer
    /// takes a token from the wrong-answer buckets of its source and of the
    /// mailbox ("Too often" when one is empty), never from a bucket a right
    /// answer uses.
    async fn verify(
        &self,
        mailbox: MailboxId,
        source: SourcePrefix,
        answer: &Answer,
        now_us: u64,
    ) -> Result<(), ApiError> {
        let question = self
            .store
            .question(mailbox, now_us)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NoQuestion,
                    "no live question for this mailbox; check first",
                )
            })?;
        // Every URL is tried (no early exit), each comparison in constant time.
        let matches = self.urls.iter().fold(false, |found, url| {
            found | (Answer::for_relay(&question.secret, url) == *answer)
        });
        if matches {
            Ok(())
        } else {
            self.warn_unknown_url(now_us);
            self.take(Limit::WrongAnswerPerSource(source), now_us)
                .await?;
            self.take(Limit::WrongAnswerPerMailbox(mailbox), now_us)
                .await?;
            Err(ApiError::new(
                ErrorCode::WrongAnswer,
                format!(
                    "the answer does not match this mailbox's question for any URL this relay \
                     answers for ({}); if you reach it under another URL, its operator must add \
                     that one with --url",
                    self.url_list()
                ),
            ))
        }
    }

    /// Answers one UDP check datagram from `source`: `None` means send
    /// nothing (malformed, rate limited, storage failure, or a response that
    /// would be larger than the request). A STUN message (magic cookie at
    /// bytes 4..8) is answered as a STUN server would, within the bound of
    /// `spec/protocol.md` §8.9.
    pub async fn answer_datagram(&self, datagram: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        if stun::is_stun(datagram) {
            return self.answer_stun(datagram, source).await;
        }
        let Ok(request) = CheckRequest::decode(datagram) else {
            self.metrics.udp_datagram("malformed");
            return None;
        };
        let now = self.clock.now_us();
        let prefix = SourcePrefix::from(source.ip());
        if let Err(result) = self.take_udp_token(prefix, now).await {
            self.metrics.udp_datagram(result);
            return None;
        }
        let statuses = if self.authorized(request.ext.as_deref()) {
            let mut statuses = vec![CheckStatus::NotFound; request.checks.len()];
            let mut asked = Vec::with_capacity(request.checks.len());
            let mut pairs = Vec::with_capacity(request.checks.len());
            for (i, check) in request.checks.iter().enumerate() {
                let mailbox = MailboxId(check.key);
                match self
                    .limiters
                    .take(
                        self.store.as_ref(),
                        Limit::UdpPerMailboxSource(mailbox, prefix),
                        now,
                    )
                    .await
                {
                    Ok(true) => {
                        asked.push(i);
                        pairs.push((mailbox, check.at));
                    }
                    Ok(false) => {
                        self.metrics.rate_limited("udp_per_mailbox");
                        statuses[i] = CheckStatus::TooOften;
                    }
                    Err(_) => {
                        self.metrics.udp_datagram("failed");
                        return None;
                    }
                }
            }
            let Ok(found) = self.store.check(&pairs, now).await else {
                self.metrics.udp_datagram("failed");
                return None;
            };
            for (i, found) in asked.into_iter().zip(found) {
                if found {
                    statuses[i] = CheckStatus::Found;
                }
            }
            statuses
        } else {
            vec![CheckStatus::Forbidden; request.checks.len()]
        };
        self.metrics.udp_checks(request.checks.len());
        let response = CheckResponse {
            nonce: request.nonce,
            statuses,
            observed: Some(source.into()),
        };
        match response.encode_within(datagram.len()) {
            Some(bytes) => {
                self.metrics.udp_datagram("answered");
                Some(bytes)
            }
            None => {
                self.metrics.udp_datagram("unanswerable");
                None
            }
        }
    }

    /// Takes one token from the UDP bucket of `prefix`, which check
    /// datagrams and STUN requests share. `Err` carries the `result` label
    /// of the datagram to drop: `rate_limited` or `failed` (the store).
    async fn take_udp_token(&self, prefix: SourcePrefix, now: u64) -> Result<(), &'static str> {
        match self
            .limiters
            .take(self.store.as_ref(), Limit::UdpPerSource(prefix), now)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.metrics.rate_limited("udp_per_ip");
                Err("rate_limited")
            }
            Err(_) => Err("failed"),
        }
    }

    /// Answers a STUN Binding request (`spec/relay.md` §7.1): one token from
    /// the source's UDP bucket, the same as a check datagram, then a success
    /// response with the source address, or nothing (`crate::stun`).
    async fn answer_stun(&self, datagram: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
        let prefix = SourcePrefix::from(source.ip());
        let now = self.clock.now_us();
        if let Err(result) = self.take_udp_token(prefix, now).await {
            self.metrics.stun_request(result);
            return None;
        }
        match stun::binding_response(datagram, source) {
            Ok(response) => {
                self.metrics.stun_request("answered");
                Some(response)
            }
            Err(stun::StunError::Malformed) => {
                self.metrics.stun_request("malformed");
                None
            }
            Err(error) => {
                tracing::debug!(%error, "STUN message not answered");
                self.metrics.stun_request("ignored");
                None
            }
        }
    }
}

/// Sends through other relay nodes sharing the store wake this node's held
/// checks ([`Store::listen_for_sends`]).
impl SendListener for Relay {
    fn message_stored(&self, mailbox: &MailboxId) {
        self.held.wake(mailbox);
    }

    fn feed_interrupted(&self) {
        self.held.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, StoreOptions};
    use connectoid_protocol::{At, SecretKey, b64};

    fn check_body(key_text: &str) -> Vec<u8> {
        format!(
            r#"{{"pub":"{key_text}","action":"check","at":{}}}"#,
            u64::MAX
        )
        .into_bytes()
    }

    /// A check of a mailbox the store holds takes its key as valid; one of
    /// a mailbox it does not hold is checked, as `Request::from_json` does.
    #[tokio::test]
    async fn only_keys_of_unknown_mailboxes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(dir.path());
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(dir.path(), StoreOptions::from_config(&config)).unwrap());
        let relay = Relay::new(&config, Arc::clone(&store), None);
        let source: IpAddr = [192, 0, 2, 1].into();
        let now = relay.clock.now_us();

        // Well-formed bytes that are not a curve point: no send through the
        // relay can make this mailbox.
        let mut off_curve = [0xffu8; 49];
        off_curve[0] = 0x02;
        let off_text = b64::encode(&off_curve);
        let refused = relay.parse_request(&check_body(&off_text)).unwrap_err();
        assert_eq!(
            refused,
            Request::from_json(&check_body(&off_text)).unwrap_err()
        );
        assert_eq!(refused.code, ErrorCode::BadPublicKey);
        // Made in the store directly, it is found without a check of its key.
        store
            .send(MailboxId(off_curve), vec![0; 113], now)
            .await
            .unwrap();
        let request = relay.parse_request(&check_body(&off_text)).unwrap();
        assert_eq!(relay.handle(&request, source).await, Ok(Response::NotFound));

        // A valid key of an unknown mailbox: checked, and answered.
        let key = SecretKey::from_bytes(&[9; 48]).unwrap().public_key();
        let request = relay.parse_request(&check_body(&key.to_string())).unwrap();
        assert_eq!(request.request().key.validate(), Ok(key));
        assert_eq!(relay.handle(&request, source).await, Ok(Response::NotFound));
        // Sends make mailboxes only for checked keys.
        let send = Request {
            key,
            ext: None,
            op: Operation::Send { data: vec![0; 113] },
        };
        let request = relay.parse_request(send.to_json().as_bytes()).unwrap();
        assert_eq!(relay.handle(&request, source).await, Ok(Response::Done));
        assert!(store.holds(&MailboxId(*key.as_bytes())));
        let found = store
            .check(&[(MailboxId(*key.as_bytes()), At::ZERO)], now)
            .await
            .unwrap();
        assert_eq!(found, [true]);
        store.close().await.unwrap();
    }
}
