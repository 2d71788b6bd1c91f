//! The HTTP front end: [`RelayRouter`], a tower service over a [`Relay`].
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /` | the API: a JSON body (whatever its `Content-Type`, so `curl -d` works) |
//! | `GET /` | what this server is: a small HTML page for a browser (`Accept: text/html`), JSON otherwise, linking the information document |
//! | `GET /.well-known/connectoid` | the information document ([`RelayInfo`](connectoid_protocol::RelayInfo)) |
//! | `GET /healthz` | `{"ok":true}`, or 503 while the store cannot read or write (a full disk) |
//! | `GET /metrics` | Prometheus (OpenMetrics) text |
//!
//! `POST /`, the one hot path, is answered directly: the body is read
//! within the size limit, handed to the relay, and the JSON answer goes
//! back with the CORS header. Every other request goes through an axum
//! [`Router`] with CORS (preflights included), tracing and the body limit.
//! Measured with the benchmark, axum's routing and tower's layers cost more
//! CPU than the whole protocol work of a check, so the API does not take
//! that way.
//!
//! Every error, including unknown paths, wrong methods and oversized bodies,
//! is the protocol's JSON error body with its status code; [`AppError`] is
//! the one place that makes them. CORS allows any origin. This module knows
//! nothing about storage or limits beyond the body size; see `service`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use connectoid_protocol::api::INFO_PATH;
use connectoid_protocol::{ApiError, ErrorCode, Response, limits};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::service::Relay;

/// The HTTP service of a relay (see the module documentation). Cheap to
/// clone; `oneshot` it in tests, or let [`Server`](crate::Server) serve it.
///
/// The client's address comes from the connection the server accepted, or,
/// for a request handed in directly, from a
/// [`ConnectInfo<SocketAddr>`](ConnectInfo) request extension.
#[derive(Clone, Debug)]
pub struct RelayRouter {
    relay: Arc<Relay>,
    rest: Router,
    peer: Option<SocketAddr>,
}

/// The service of a relay: `POST /` and every other route.
pub fn router(relay: Arc<Relay>) -> RelayRouter {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .max_age(Duration::from_secs(86_400));
    let rest = Router::new()
        // `POST /` never gets here; `GET /` says what this server is.
        .route("/", get(home).fallback(method_not_allowed))
        .route(INFO_PATH, get(info))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits::MAX_REQUEST_BODY))
        .layer(Extension(StorageHealth::default()))
        // A 5xx of these routes is a 503 from /healthz, logged once per
        // change by `healthz` itself, not an ERROR line per probe.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(cors)
        .with_state(Arc::clone(&relay));
    RelayRouter {
        relay,
        rest,
        peer: None,
    }
}

impl RelayRouter {
    /// This service for the connection from `peer`.
    pub(crate) fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for RelayRouter
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        self.respond(request)
    }
}

impl RelayRouter {
    /// Answers one request (what [`tower::Service::call`] does, without
    /// needing `&mut self`).
    pub(crate) fn respond<B>(
        &self,
        request: axum::http::Request<B>,
    ) -> Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if request.method() == Method::POST && request.uri().path() == "/" {
            let relay = Arc::clone(&self.relay);
            let peer = self.peer;
            Box::pin(async move { Ok(api(&relay, peer, request).await) })
        } else {
            Box::pin(self.rest.clone().oneshot(request))
        }
    }
}

/// An API error on its way to becoming an HTTP response.
#[derive(Debug)]
pub(crate) struct AppError(pub(crate) ApiError);

impl From<ApiError> for AppError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        json(&Response::Error(self.0))
    }
}

/// The protocol's JSON body with the status that goes with it.
fn json(response: &Response) -> axum::response::Response {
    let status =
        StatusCode::from_u16(response.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        response.to_json(),
    )
        .into_response()
}

/// The client's address: the connection's peer (or its [`ConnectInfo`]
/// extension), or with
/// [`Config::trust_forwarded_for`](crate::Config::trust_forwarded_for) and
/// a loopback peer, the last `X-Forwarded-For` entry. Without either it is
/// `0.0.0.0`.
fn client_ip(
    relay: &Relay,
    peer: Option<SocketAddr>,
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
) -> IpAddr {
    let peer = peer
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0)
        })
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| {
            addr.ip().to_canonical()
        });
    if relay.trust_forwarded_for()
        && peer.is_loopback()
        && let Some(forwarded) = last_forwarded(headers)
    {
        return forwarded.to_canonical();
    }
    peer
}

fn last_forwarded(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get_all("x-forwarded-for").iter().next_back()?;
    forwarded_ip(value.to_str().ok()?.rsplit(',').next()?.trim())
}

/// One `X-Forwarded-For` entry: `IP`, `IPv4:port`, `[IPv6]` or
/// `[IPv6]:port` (proxies write all four).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// `POST /`: the API.
async fn api<B>(
    relay: &Relay,
    peer: Option<SocketAddr>,
    request: axum::http::Request<B>,
) -> axum::response::Response
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    // Timed only for the debug line (off in production, and this is the hot path).
    let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
    let (parts, body) = request.into_parts();
    let source = client_ip(relay, peer, &parts.extensions, &parts.headers);
    // A body that was refused unread, or did not come in time, leaves the
    // connection in the middle of a request: it is closed after the answer.
    let mut unread = false;
    let (action, result) =
        match read_body(body, &parts.headers, relay.connection_limits().body_timeout).await {
            Ok(body) => match relay.parse_request(&body) {
                Ok(request) => {
                    let action = request.request().op.action().as_str();
                    (action, relay.handle(&request, source).await)
                }
                Err(error) => ("invalid", Err(error)),
            },
            Err(error) => {
                unread = true;
                ("invalid", Err(error))
            }
        };
    relay.count_request(action, &result);
    let mut response = match result {
        Ok(response) => json(&response),
        Err(error) => {
            let retry_after = relay.retry_after_secs(&error);
            let mut response = AppError(error).into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    };
    if unread {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // What the CORS layer adds to the other routes' answers.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    tracing::debug!(
        %source,
        action,
        status = response.status().as_u16(),
        latency_us = started.map(|t| t.elapsed().as_micros() as u64),
        "api request"
    );
    response
}

/// The request body, at most [`limits::MAX_REQUEST_BODY`] bytes, within
/// `timeout`. A `Content-Length` over the limit is refused before any of the
/// body is read (so `Expect: 100-continue` gets the 413 instead of a 100).
async fn read_body<B>(body: B, headers: &HeaderMap, timeout: Duration) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let too_big = || {
        ApiError::new(
            ErrorCode::TooBig,
            format!(
                "the request body is over {} bytes",
                limits::MAX_REQUEST_BODY
            ),
        )
    };
    if body.size_hint().lower() > limits::MAX_REQUEST_BODY as u64
        || content_length(headers).is_some_and(|n| n > limits::MAX_REQUEST_BODY as u64)
    {
        return Err(too_big());
    }
    let collected = tokio::time::timeout(
        timeout,
        http_body_util::Limited::new(body, limits::MAX_REQUEST_BODY).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )
    })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Err(error) => Err(ApiError::new(
            ErrorCode::MalformedJson,
            format!("reading the request body: {error}"),
        )),
    }
}

/// The request's `Content-Length`, when it has one that is a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn info(State(relay): State<Arc<Relay>>) -> axum::response::Response {
    axum::Json(relay.info().clone()).into_response()
}

/// `GET /`: what this server is, for whoever opens the relay's URL in a
/// browser (HTML) or with curl (JSON); the information document is linked
/// relative to the relay's URL, so it works behind a path prefix too.
async fn home(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> axum::response::Response {
    let info = relay.info();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        let info_href = INFO_PATH.trim_start_matches('/');
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Connectoid relay</title></head>\n\
             <body><h1>Connectoid relay</h1>\n\
             <p>This is a Connectoid relay ({software} {version}): a store-and-forward mailbox service \
             for end-to-end encrypted messages. It has no web pages; apps talk to it with \
             <code>POST</code> requests to this URL.</p>\n\
             <p>Its information document: <a href=\"{info_href}\">{INFO_PATH}</a>.</p>\n</body></html>\n",
            software = info.software,
            version = info.version,
        );
        return (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            page,
        )
            .into_response();
    }
    axum::Json(serde_json::json!({
        "service": "connectoid relay",
        "software": info.software,
        "version": info.version,
        "api": "POST /",
        "info": INFO_PATH,
    }))
    .into_response()
}

/// Whether the last `/healthz` found the storage available, so that a
/// change is logged once and not at every probe.
#[derive(Clone, Debug)]
struct StorageHealth(Arc<std::sync::atomic::AtomicBool>);

impl Default for StorageHealth {
    fn default() -> Self {
        Self(Arc::new(std::sync::atomic::AtomicBool::new(true)))
    }
}

async fn healthz(
    State(relay): State<Arc<Relay>>,
    Extension(health): Extension<StorageHealth>,
) -> Result<axum::response::Response, AppError> {
    use std::sync::atomic::Ordering;
    if let Err(error) = relay.store().health().await {
        if health.0.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "health check: storage is unavailable ({error}); /healthz answers 503 until it is back"
            );
        }
        return Err(ApiError::new(ErrorCode::Unavailable, "storage is unavailable").into());
    }
    if !health.0.swap(true, Ordering::Relaxed) {
        tracing::info!("health check: storage is available again");
    }
    Ok(json(&Response::Done))
}

async fn metrics(State(relay): State<Arc<Relay>>) -> axum::response::Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        relay.metrics_text().await,
    )
        .into_response()
}

async fn not_found() -> AppError {
    AppError(ApiError::new(
        ErrorCode::NotFound,
        format!("the API is POST /; see also GET {INFO_PATH}"),
    ))
}

async fn method_not_allowed() -> AppError {
    AppError(ErrorCode::MethodNotAllowed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_entries_with_ports() {
        let ip = |text: &str| forwarded_ip(text).map(|ip| ip.to_string());
        assert_eq!(ip("192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(ip("192.0.2.1:4711").as_deref(), Some("192.0.2.1"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]:4711").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("unknown"), None);
        assert_eq!(ip("[192.0.2.1]"), None);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 203.0.113.9:443"),
        );
        assert_eq!(
            last_forwarded(&headers).map(|ip| ip.to_string()).as_deref(),
            Some("203.0.113.9")
        );
    }
}
