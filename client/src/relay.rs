//! Talking to relays over HTTP: one request to one relay, with a timeout,
//! and the fan-out of one operation to many relays at once.
//!
//! Every request is bounded by the client's per-relay timeout (connect,
//! send and reading the answer together) and by a cap on the answer's
//! size, so a relay that accepts connections and never answers, or answers
//! without end, costs at most that timeout. [`fan_out`] runs one future per
//! relay concurrently and waits for all of them, so a slow relay never
//! delays the others beyond its own timeout.
//!
//! It also keeps the relay information documents it read (for ten
//! minutes; "none served" for one), and deletes a mailbox at its relays.
//!
//! This module knows the API's shapes but not what messages mean: it does
//! not open, check or deduplicate anything.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connectoid_protocol::At;
use connectoid_protocol::api::{
    ApiError, ErrorCode, INFO_PATH, Operation, RelayInfo, Request, Response,
};
use connectoid_protocol::link::{RelayEntry, RelayUrl};

/// The largest answer body the client reads, in bytes: a full `receive` of
/// 100 largest messages fits.
pub(crate) const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How long a relay information document is reused, once read.
const INFO_TTL: Duration = Duration::from_secs(600);
/// How long "this relay serves no information document" is remembered.
const NO_INFO_TTL: Duration = Duration::from_secs(60);

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

/// What went wrong with one relay. Each relay of a fan-out gets its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The relay did not answer within the per-relay timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No connection could be made, or it broke before an answer came.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The relay's TLS certificate does not chain to a trusted root: it is
    /// self-signed, or signed by a private CA this client was not given
    /// (`ClientBuilder::add_root_certificates_pem`, the CLI's
    /// `--root-cert`). The text is rustls' reason.
    #[error("the relay's certificate is not trusted (self-signed?): pass --root-cert FILE ({0})")]
    UntrustedCertificate(String),
    /// The relay's TLS certificate is trusted but not valid for the relay
    /// URL's host name (or has expired). The text is rustls' reason.
    #[error("the relay's certificate does not fit its URL ({0})")]
    InvalidCertificate(String),
    /// The relay answered with a protocol error (such as "Too often").
    #[error("relay refused: {0}")]
    Api(ApiError),
    /// The relay answered something that is not a valid answer.
    #[error("malformed answer (HTTP {status}): {reason}")]
    Malformed {
        /// The HTTP status code.
        status: u16,
        /// What is wrong with it.
        reason: String,
    },
    /// The relay's question could not be opened with the mailbox key (the
    /// relay is broken or not honest).
    #[error("the relay's question does not open with the mailbox key")]
    BadQuestion,
    /// The send returned before this relay answered (see
    /// [`SendWait::FirstAcceptance`]); the request goes on in the
    /// background until the per-relay timeout.
    #[error("no answer yet; the request goes on in the background")]
    InFlight,
}

impl RelayError {
    /// Whether the relay looks unreachable (timeout or connection failure),
    /// rather than reachable but unhappy.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_)
                | Self::Connect(_)
                | Self::UntrustedCertificate(_)
                | Self::InvalidCertificate(_)
        )
    }

    /// Whether the relay refused one mailbox rather than failing as a
    /// whole: "Forbidden" (no or a wrong API key for this mailbox), "Wrong
    /// answer", "No question", "Answer required", "Mailbox full", "Too
    /// often" for the mailbox's own rate limit (a `detail` naming a
    /// `per_mailbox` bucket), and a question that does not open with the
    /// mailbox key. The relay's other mailboxes can still be served.
    pub fn is_mailbox_refusal(&self) -> bool {
        match self {
            // A question that does not open with the mailbox key is the
            // relay's fault (§7 of the spec), not the mailbox's.
            Self::BadQuestion => false,
            Self::Api(error) => match error.code {
                ErrorCode::Forbidden
                | ErrorCode::WrongAnswer
                | ErrorCode::NoQuestion
                | ErrorCode::AnswerRequired
                | ErrorCode::MailboxFull => true,
                ErrorCode::TooOften => error
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("per_mailbox")),
                _ => false,
            },
            _ => false,
        }
    }

    /// The API error code, when the relay answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api(error) => Some(error.code),
            _ => None,
        }
    }
}

/// What happened at one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// The relay.
    pub relay: RelayUrl,
    /// `Ok` when it accepted (a send) or did what was asked (a delete).
    pub result: Result<(), RelayError>,
}

/// Relay information documents read: `None` = the relay serves none.
type InfoCache = HashMap<RelayUrl, (Option<RelayInfo>, Instant)>;

/// The HTTP side of the client: a connection pool, a timeout and the
/// information documents read. Clones share all three.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    timeout: Duration,
    infos: Arc<Mutex<InfoCache>>,
}

impl Transport {
    pub(crate) fn new(http: reqwest::Client, timeout: Duration) -> Self {
        Self {
            http,
            timeout,
            infos: Arc::default(),
        }
    }

    /// Reads `relay`'s information document (and keeps it), timing it.
    pub(crate) async fn probe(
        &self,
        relay: &RelayUrl,
    ) -> Result<(RelayInfo, Duration), RelayError> {
        let result = self.info(relay).await;
        if let Ok((info, _)) = &result {
            self.remember_info(relay, Some(info.clone()));
        }
        result
    }

    fn remember_info(&self, relay: &RelayUrl, info: Option<RelayInfo>) {
        if let Ok(mut infos) = self.infos.lock() {
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
        if let Ok(infos) = self.infos.lock()
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
        match self.info(relay).await {
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

    /// Sends one API request and decodes the answer. A protocol error answer
    /// becomes [`RelayError::Api`].
    pub(crate) async fn call(
        &self,
        relay: &RelayUrl,
        request: &Request,
    ) -> Result<Response, RelayError> {
        self.call_within(relay, request, self.timeout).await
    }

    /// [`Transport::call`] of a held check that the relay may hold for
    /// `wait`: bounded by the wait plus the per-relay timeout.
    pub(crate) async fn call_held(
        &self,
        relay: &RelayUrl,
        request: &Request,
        wait: Duration,
    ) -> Result<Response, RelayError> {
        self.call_within(relay, request, self.timeout.saturating_add(wait))
            .await
    }

    async fn call_within(
        &self,
        relay: &RelayUrl,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, RelayError> {
        let action = request.op.action();
        let body = request.to_json();
        let (status, bytes) = self
            .bounded_by(timeout, async {
                let response = self
                    .http
                    .post(relay.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(connect_error)?;
                read_body(response).await
            })
            .await?;
        tracing::debug!(
            "{relay}: {action} answered HTTP {status}, {} bytes",
            bytes.len()
        );
        match Response::from_json(action, &bytes) {
            Ok(Response::Error(error)) => Err(RelayError::Api(error)),
            Ok(response) if status == 200 => Ok(response),
            Ok(_) => Err(RelayError::Malformed {
                status,
                reason: "a success body with a non-200 status".to_owned(),
            }),
            Err(e) => Err(RelayError::Malformed {
                status,
                reason: e.0,
            }),
        }
    }

    /// Fetches the relay information document and measures how long it took.
    pub(crate) async fn info(&self, relay: &RelayUrl) -> Result<(RelayInfo, Duration), RelayError> {
        let url = reqwest::Url::parse(relay.as_str())
            .and_then(|base| base.join(INFO_PATH.trim_start_matches('/')))
            .map_err(|e| RelayError::Connect(format!("bad relay URL: {e}")))?;
        let started = Instant::now();
        let (status, bytes) = self
            .bounded(async {
                let response = self.http.get(url).send().await.map_err(connect_error)?;
                read_body(response).await
            })
            .await?;
        let latency = started.elapsed();
        if status != 200 {
            return Err(RelayError::Malformed {
                status,
                reason: "no information document".to_owned(),
            });
        }
        let info = serde_json::from_slice(&bytes).map_err(|e| RelayError::Malformed {
            status,
            reason: format!("information document: {e}"),
        })?;
        Ok((info, latency))
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, RelayError>>,
    ) -> Result<T, RelayError> {
        self.bounded_by(self.timeout, work).await
    }

    async fn bounded_by<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, RelayError>>,
    ) -> Result<T, RelayError> {
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| RelayError::Timeout(timeout))?
    }

    /// `send` of one sealed message to one relay.
    pub(crate) async fn send(
        &self,
        entry: &RelayEntry,
        ext: Option<String>,
        request_key: connectoid_protocol::PublicKey,
        data: Vec<u8>,
    ) -> Result<(), RelayError> {
        let request = Request {
            key: request_key,
            ext,
            op: Operation::Send { data },
        };
        match self.call(&entry.url, &request).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// The answer to `relay`'s `question` about the mailbox of `mailbox`.
pub(crate) fn answer_question(
    mailbox: &connectoid_protocol::SecretKey,
    question: &[u8],
    relay: &RelayUrl,
) -> Result<connectoid_protocol::Answer, RelayError> {
    let secret = connectoid_protocol::seal::open_question(mailbox, question)
        .map_err(|_| RelayError::BadQuestion)?;
    // Bound to the relay it is sent to (spec/protocol.md 7.6), so a relay
    // that passes on another relay's question learns nothing usable there.
    Ok(connectoid_protocol::Answer::for_relay(&secret, relay))
}

/// A `push` request (`spec/protocol.md` §7.11) for the mailbox of
/// `mailbox` at `relay`: `check` for a question, then `push` with the
/// answer. The registrations a `list` found (empty for `register` and
/// `remove`).
pub(crate) async fn push_mailbox(
    transport: &Transport,
    mailbox: &connectoid_protocol::SecretKey,
    ext: Option<String>,
    relay: &RelayUrl,
    request: connectoid_protocol::api::PushRequest,
) -> Result<Vec<connectoid_protocol::api::PushListing>, RelayError> {
    let key = mailbox.public_key();
    let check = Request {
        key,
        ext: ext.clone(),
        op: Operation::Check { at: At::ZERO },
    };
    let question = match transport.call(relay, &check).await? {
        Response::Found { question } => question,
        Response::NotFound => {
            return Err(RelayError::Api(ApiError::new(
                ErrorCode::NoQuestion,
                "the mailbox holds no message at this relay, so there is no question to prove \
                 ownership with; try again when a message is waiting",
            )));
        }
        other => return Err(unexpected(&other)),
    };
    let answer = answer_question(mailbox, &question, relay)?;
    let push = Request {
        key,
        ext,
        op: Operation::Push { answer, request },
    };
    match transport.call(relay, &push).await? {
        Response::Done => Ok(Vec::new()),
        Response::Pushes(listed) => Ok(listed),
        other => Err(unexpected(&other)),
    }
}

/// Deletes the mailbox of `mailbox` at each of `relays` (each with the ext
/// to send it): `check` for a question, then `delete` with the answer (or
/// without, when the mailbox is empty).
pub(crate) async fn delete_mailbox(
    transport: &Transport,
    mailbox: &connectoid_protocol::SecretKey,
    relays: &[(RelayEntry, Option<String>)],
) -> Vec<RelayOutcome> {
    let entries: Vec<RelayEntry> = relays.iter().map(|(entry, _)| entry.clone()).collect();
    let results = fan_out(&entries, |entry| async move {
        let ext = relays
            .iter()
            .find(|(e, _)| e.url == entry.url)
            .and_then(|(_, ext)| ext.clone());
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
                    Some(answer_question(mailbox, &question, &entry.url)?)
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
                Err(RelayError::Api(error))
                    if matches!(
                        error.code,
                        ErrorCode::AnswerRequired | ErrorCode::NoQuestion
                    ) =>
                {
                    last = error.detail;
                }
                Err(e) => return Err(e),
            }
        }
        Err(RelayError::Api(match last {
            Some(detail) => ApiError::new(ErrorCode::AnswerRequired, detail),
            None => ApiError::from(ErrorCode::AnswerRequired),
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

/// A response of the wrong shape for the request.
pub(crate) fn unexpected(response: &Response) -> RelayError {
    RelayError::Malformed {
        status: 200,
        reason: format!("unexpected answer {response:?}"),
    }
}

fn connect_error(error: reqwest::Error) -> RelayError {
    // The error's source chain says why (refused, reset, TLS); keep it whole.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(certificate) = certificate_error(cause) {
            return certificate;
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    RelayError::Connect(text)
}

/// A rustls certificate error in `cause` (itself, or inside the
/// `io::Error`s the TLS stream wraps it in), as the error a user can act on.
fn certificate_error(cause: &(dyn std::error::Error + 'static)) -> Option<RelayError> {
    // io::Error hides its inner error from `source()`: look inside, through
    // io::Errors wrapping io::Errors.
    let mut inner: &(dyn std::error::Error + 'static) = cause;
    while let Some(io) = inner.downcast_ref::<std::io::Error>() {
        inner = io.get_ref()?;
    }
    let tls = inner.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(reason) = tls else {
        return None;
    };
    Some(match reason {
        rustls::CertificateError::NotValidForName
        | rustls::CertificateError::NotValidForNameContext { .. }
        | rustls::CertificateError::Expired
        | rustls::CertificateError::ExpiredContext { .. }
        | rustls::CertificateError::NotValidYet
        | rustls::CertificateError::NotValidYetContext { .. } => {
            RelayError::InvalidCertificate(reason.to_string())
        }
        _ => RelayError::UntrustedCertificate(reason.to_string()),
    })
}

async fn read_body(mut response: reqwest::Response) -> Result<(u16, Vec<u8>), RelayError> {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(connect_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(RelayError::Malformed {
                status,
                reason: format!("answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// Runs `work` for every relay concurrently and returns each relay's result
/// in the order of `relays`. Each `work` future bounds itself (every request
/// has the per-relay timeout), so this returns when the slowest relay has
/// answered or timed out.
pub(crate) async fn fan_out<T, F, Fut>(
    relays: &[RelayEntry],
    work: F,
) -> Vec<(RelayEntry, Result<T, RelayError>)>
where
    F: Fn(RelayEntry) -> Fut,
    Fut: Future<Output = Result<T, RelayError>>,
{
    futures::future::join_all(relays.iter().map(|entry| {
        let future = work(entry.clone());
        async move { (entry.clone(), future.await) }
    }))
    .await
}

/// After the first relay accepts a [`SendWait::FirstAcceptance`] send, the
/// others get this fraction of the time that took.
const FIRST_ACCEPTANCE_GRACE_DIVISOR: u32 = 5;

/// tokio's timers tick in milliseconds and round every deadline (even one
/// already past) up to a tick, so a grace shorter than this would cost up
/// to a whole millisecond more than asked (on a fast network, as much as
/// the send itself). Such a grace is skipped: only answers that are already
/// in are collected.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// What [`send_fan_out`] still waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grace {
    /// Every relay (no acceptance yet, or [`SendWait::AllRelays`]).
    Waiting,
    /// Nothing more: only the answers already in are taken.
    AnswersIn,
    /// The other relays until then.
    Until(tokio::time::Instant),
}

/// [`fan_out`] for sends: each relay's request runs as its own task, so that
/// with [`SendWait::FirstAcceptance`] this can return shortly after the first
/// acceptance while the requests still under way finish in the background
/// (each is bounded by the per-relay timeout). Relays that have not answered
/// when it returns are reported as [`RelayError::InFlight`].
pub(crate) async fn send_fan_out<F, Fut>(
    relays: &[RelayEntry],
    wait: SendWait,
    work: F,
) -> Vec<(RelayEntry, Result<(), RelayError>)>
where
    F: Fn(RelayEntry) -> Fut,
    Fut: Future<Output = Result<(), RelayError>> + Send + 'static,
{
    use futures::StreamExt as _;

    let started = tokio::time::Instant::now();
    let mut pending: futures::stream::FuturesUnordered<_> = relays
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let task = tokio::spawn(work(entry.clone()));
            async move { (index, task.await) }
        })
        .collect();
    let mut results: Vec<Option<Result<(), RelayError>>> = vec![None; relays.len()];
    let mut grace = Grace::Waiting;
    loop {
        let next = match grace {
            Grace::Waiting => pending.next().await,
            Grace::AnswersIn => match futures::FutureExt::now_or_never(pending.next()) {
                Some(next) => next,
                None => break,
            },
            Grace::Until(deadline) => match tokio::time::timeout_at(deadline, pending.next()).await
            {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some((index, joined)) = next else {
            break;
        };
        let result = joined
            .unwrap_or_else(|e| Err(RelayError::Connect(format!("the send task failed: {e}"))));
        if wait == SendWait::FirstAcceptance && grace == Grace::Waiting && result.is_ok() {
            let time = started.elapsed() / FIRST_ACCEPTANCE_GRACE_DIVISOR;
            // Even a deadline already past waits for the timer's next tick.
            grace = if time < TIMER_RESOLUTION {
                Grace::AnswersIn
            } else {
                Grace::Until(tokio::time::Instant::now() + time)
            };
        }
        results[index] = Some(result);
    }
    relays
        .iter()
        .cloned()
        .zip(results)
        .map(|(entry, result)| (entry, result.unwrap_or(Err(RelayError::InFlight))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn transport(timeout_ms: u64) -> Transport {
        Transport::new(reqwest::Client::new(), Duration::from_millis(timeout_ms))
    }

    fn key() -> connectoid_protocol::PublicKey {
        connectoid_protocol::SecretKey::generate(&mut crate::rng::system_rng()).public_key()
    }

    fn entries(n: u16) -> Vec<RelayEntry> {
        (1..=n)
            .map(|i| RelayEntry::new(RelayUrl::parse(&format!("http://127.0.0.1:{i}/")).unwrap()))
            .collect()
    }

    /// The first relay accepts at once, the second answers (with a timeout)
    /// only after 50 ms, the third never within the test.
    async fn staggered(entry: RelayEntry) -> Result<(), RelayError> {
        match entry.url.as_str() {
            "http://127.0.0.1:1/" => Ok(()),
            "http://127.0.0.1:2/" => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(RelayError::Timeout(Duration::from_millis(50)))
            }
            _ => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_first_acceptance_send_does_not_wait_for_slow_relays() {
        let relays = entries(3);
        let results = send_fan_out(&relays, SendWait::FirstAcceptance, staggered).await;
        let results: Vec<_> = results.into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            results,
            vec![Ok(()), Err(RelayError::InFlight), Err(RelayError::InFlight)]
        );
    }

    /// Relays answering at the given offsets (ms) after the send starts.
    fn answering_after(
        offsets_ms: &'static [u64],
    ) -> impl Fn(RelayEntry) -> std::pin::Pin<Box<dyn Future<Output = Result<(), RelayError>> + Send>>
    {
        move |entry: RelayEntry| {
            let port = entry.url.as_str().trim_end_matches('/').rsplit(':').next();
            let index: usize = port.unwrap().parse::<usize>().unwrap() - 1;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(offsets_ms[index])).await;
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_acceptance_send_waits_a_fifth_for_the_others() {
        // The first accepts after 20 ms: the others get 4 ms more.
        let relays = entries(3);
        let results = send_fan_out(
            &relays,
            SendWait::FirstAcceptance,
            answering_after(&[20, 23, 30]),
        )
        .await;
        let results: Vec<_> = results.into_iter().map(|(_, r)| r).collect();
        assert_eq!(results, vec![Ok(()), Ok(()), Err(RelayError::InFlight)]);
    }

    #[tokio::test]
    async fn a_first_acceptance_grace_under_the_timer_tick_takes_only_answers_already_in() {
        // All answer at once: the grace (a fifth of almost nothing) is below
        // the timer's millisecond, so no timer is armed, yet the answers
        // already in are reported rather than called in flight.
        let relays = entries(3);
        let at_once = |_: RelayEntry| async { Ok(()) };
        let results = send_fan_out(&relays, SendWait::FirstAcceptance, at_once).await;
        assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    }

    #[tokio::test]
    async fn an_all_relays_send_reports_every_relay() {
        let relays = entries(2);
        let results = send_fan_out(&relays, SendWait::AllRelays, staggered).await;
        let results: Vec<_> = results.into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            results,
            vec![Ok(()), Err(RelayError::Timeout(Duration::from_millis(50)))]
        );
    }

    #[tokio::test]
    async fn a_first_acceptance_send_with_no_acceptance_waits_for_all() {
        let relays = entries(2);
        let refused = |_: RelayEntry| async { Err(RelayError::Connect("refused".to_owned())) };
        let results = send_fan_out(&relays, SendWait::FirstAcceptance, refused).await;
        assert!(
            results
                .iter()
                .all(|(_, r)| r == &Err(RelayError::Connect("refused".to_owned())))
        );
    }

    /// A TCP server that accepts and reads but never answers.
    async fn blackhole() -> (RelayUrl, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = RelayUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                held.push(socket);
            }
        });
        (url, task)
    }

    /// An HTTP server that answers every request with `status` and `body`.
    async fn canned(status: u16, body: &'static str) -> RelayUrl {
        let app = axum::Router::new().fallback(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                body.to_owned(),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = RelayUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn blackholed_relay_times_out_and_does_not_block_the_others() {
        let (dead, _task) = blackhole().await;
        let ok = canned(200, r#"{"ok":true}"#).await;
        let relays = vec![RelayEntry::new(dead.clone()), RelayEntry::new(ok.clone())];
        let t = transport(300);
        let target = key();
        let results = fan_out(&relays, |entry| {
            let t = t.clone();
            async move { t.send(&entry, None, target, vec![0; 200]).await }
        })
        .await;
        assert_eq!(results[0].0.url, dead);
        assert_eq!(
            results[0].1,
            Err(RelayError::Timeout(Duration::from_millis(300)))
        );
        assert_eq!(results[1].1, Ok(()));
    }

    #[test]
    fn refusals_of_one_mailbox_are_told_apart_from_relay_failures() {
        let api = |code, detail: Option<&str>| {
            RelayError::Api(match detail {
                Some(detail) => ApiError::new(code, detail),
                None => ApiError::from(code),
            })
        };
        for refusal in [
            api(
                ErrorCode::Forbidden,
                Some("this relay requires an API key in ext"),
            ),
            api(ErrorCode::WrongAnswer, None),
            api(ErrorCode::NoQuestion, None),
            api(ErrorCode::MailboxFull, None),
            api(ErrorCode::TooOften, Some("check_per_mailbox")),
        ] {
            assert!(refusal.is_mailbox_refusal(), "{refusal}");
        }
        for failure in [
            api(ErrorCode::TooOften, Some("check_per_ip")),
            api(ErrorCode::TooOften, None),
            RelayError::BadQuestion,
            api(ErrorCode::Unavailable, None),
            api(ErrorCode::Internal, None),
            RelayError::Timeout(Duration::from_secs(1)),
            RelayError::Connect("refused".to_owned()),
            RelayError::Malformed {
                status: 200,
                reason: "garbage".to_owned(),
            },
        ] {
            assert!(!failure.is_mailbox_refusal(), "{failure}");
        }
    }

    #[tokio::test]
    async fn garbage_and_errors_are_typed() {
        let t = transport(2000);
        let target = key();
        let garbage = RelayEntry::new(canned(200, "<html>hello</html>").await);
        assert!(matches!(
            t.send(&garbage, None, target, vec![0; 200]).await,
            Err(RelayError::Malformed { status: 200, .. })
        ));
        let busy = RelayEntry::new(canned(429, r#"{"ok":false,"error":"Too often"}"#).await);
        let err = t.send(&busy, None, target, vec![0; 200]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TooOften));
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            RelayEntry::new(RelayUrl::parse(&format!("http://{addr}/")).unwrap())
        };
        let err = t
            .send(&closed, None, target, vec![0; 200])
            .await
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }
}
