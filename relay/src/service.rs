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
//! The only asymmetric cryptography here is sealing a mailbox's question,
//! once per mailbox per question lifetime, on the blocking pool; a check that
//! finds nothing is one lookup in the store (in memory for redb, one script
//! call for Redis). A request's `pub` is validated once per key and then
//! taken from a cache as large as the mailbox cap. This module does not parse JSON (beyond
//! handing bodies to the protocol's decoder) or know about status codes (see
//! `http`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use connectoid_protocol::api::{InfoLimits, InfoRetention};
use connectoid_protocol::limits as protocol_limits;
use connectoid_protocol::seal::{QUESTION_SECRET_LEN, seal_question};
use connectoid_protocol::udp::{CheckRequest, CheckResponse, CheckStatus};
use connectoid_protocol::{
    Answer, ApiError, ErrorCode, Operation, PublicKey, RelayInfo, RelayUrl, Request, Response,
};

use crate::clock::Clock;
use crate::config::{Config, Limits, micros};
use crate::key_cache::KeyCache;
use crate::metrics::Metrics;
use crate::rate::{Limit, Limiters};
use crate::store::{Deleted, MailboxId, Question, SourcePrefix, Store, StoreError, SweepReport};
use crate::stun;

/// The protocol version this relay speaks (defined by the protocol crate).
pub use connectoid_protocol::api::PROTOCOL_VERSION;

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
    keys: KeyCache,
    connections: crate::config::ConnectionLimits,
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
        info.udp_port = udp_port;
        info.api_key_required = !config.api_keys.is_empty();
        info.contact = config.contact.clone();
        info.peers = config.peers.clone();
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
            keys: KeyCache::new(usize::try_from(config.limits.max_mailboxes).unwrap_or(usize::MAX)),
            connections: config.connections,
        }
    }

    /// The information document served at `GET /.well-known/connectoid`.
    pub fn info(&self) -> &RelayInfo {
        &self.info
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

    /// Decodes a request body ([`Request::from_json`]), validating its `pub`
    /// only the first time the relay sees that key. A body that is not
    /// UTF-8 anywhere, including inside members the decoder skips, is
    /// "Malformed JSON" (RFC 8259 §8.1).
    pub fn parse_request(&self, body: &[u8]) -> Result<Request, ApiError> {
        if let Err(error) = std::str::from_utf8(body) {
            return Err(ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not UTF-8 (at byte {})", error.valid_up_to()),
            ));
        }
        Request::from_json_with(body, |text| self.keys.parse(text))
    }

    /// Answers one API request from `source`.
    pub async fn handle(&self, request: &Request, source: IpAddr) -> Result<Response, ApiError> {
        if !self.authorized(request.ext.as_deref()) {
            let detail = match request.ext {
                None => "this relay requires an API key in ext",
                Some(_) => "the API key in ext is not accepted",
            };
            return Err(ApiError::new(ErrorCode::Forbidden, detail));
        }
        let now = self.clock.now_us();
        let mailbox = MailboxId::from(&request.key);
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
                tracing::debug!(?mailbox, %at, bytes = data.len(), "message stored");
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
            // An action a later protocol crate decodes that this relay does
            // not implement yet.
            _ => Err(ApiError::from(ErrorCode::UnknownAction)),
        }
    }

    /// The mailbox's live question, made (and sealed) only if there is none.
    async fn question(
        &self,
        mailbox: MailboxId,
        key: &PublicKey,
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
            seal_question(&mut rng, &key, &secret).map(|sealed| (secret, sealed))
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
            self.take(Limit::WrongAnswerPerSource(source), now_us)
                .await?;
            self.take(Limit::WrongAnswerPerMailbox(mailbox), now_us)
                .await?;
            Err(ApiError::new(
                ErrorCode::WrongAnswer,
                "the answer does not match this mailbox's question",
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
