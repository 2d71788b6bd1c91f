//! The HTTP front end: an axum [`Router`] over a [`Relay`].
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /` | the API: a JSON body (whatever its `Content-Type`, so `curl -d` works) |
//! | `GET /.well-known/connectoid` | the information document ([`RelayInfo`](connectoid_protocol::RelayInfo)) |
//! | `GET /healthz` | `{"ok":true}`, or 503 when the store is unusable |
//! | `GET /metrics` | Prometheus (OpenMetrics) text |
//!
//! Every error, including unknown paths, wrong methods and oversized bodies,
//! is the protocol's JSON error body with its status code; [`AppError`] is
//! the one place that makes them. CORS allows any origin. This module knows
//! nothing about storage or limits beyond the body size; see `service`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use connectoid_protocol::{ApiError, ErrorCode, Response, limits};
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::service::Relay;

/// The router of a relay: every route, the body limit, CORS and tracing.
pub fn router(relay: Arc<Relay>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .max_age(Duration::from_secs(86_400));
    Router::new()
        .route("/", post(api))
        .route("/.well-known/connectoid", get(info))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits::MAX_REQUEST_BODY))
        .layer(TraceLayer::new_for_http())
        .layer(cors)
        .with_state(relay)
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

/// The client's address: the socket peer, or with
/// [`Config::trust_forwarded_for`](crate::Config::trust_forwarded_for) and
/// a loopback peer, the last `X-Forwarded-For` entry. Without connection
/// information (a router called directly) it is `0.0.0.0`.
pub(crate) struct ClientIp(pub(crate) IpAddr);

impl FromRequestParts<Arc<Relay>> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        relay: &Arc<Relay>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| {
                info.0.ip().to_canonical()
            });
        if relay.trust_forwarded_for()
            && peer.is_loopback()
            && let Some(forwarded) = last_forwarded(&parts.headers)
        {
            return Ok(Self(forwarded.to_canonical()));
        }
        Ok(Self(peer))
    }
}

fn last_forwarded(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get_all("x-forwarded-for").iter().next_back()?;
    value.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

async fn api(
    State(relay): State<Arc<Relay>>,
    ClientIp(source): ClientIp,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let error = ApiError::new(
                ErrorCode::TooBig,
                format!(
                    "the request body is over {} bytes",
                    limits::MAX_REQUEST_BODY
                ),
            );
            relay.count_request("invalid", &Err(error.clone()));
            return AppError(error).into_response();
        }
        Err(rejection) => {
            let error = ApiError::new(ErrorCode::MalformedJson, rejection.body_text());
            relay.count_request("invalid", &Err(error.clone()));
            return AppError(error).into_response();
        }
    };
    let request = match relay.parse_request(&body) {
        Ok(request) => request,
        Err(error) => {
            relay.count_request("invalid", &Err(error.clone()));
            return AppError(error).into_response();
        }
    };
    let result = relay.handle(&request, source).await;
    relay.count_request(request.op.action().as_str(), &result);
    match result {
        Ok(response) => json(&response),
        Err(error) => AppError(error).into_response(),
    }
}

async fn info(State(relay): State<Arc<Relay>>) -> axum::response::Response {
    axum::Json(relay.info().clone()).into_response()
}

async fn healthz(State(relay): State<Arc<Relay>>) -> Result<axum::response::Response, AppError> {
    relay
        .store()
        .stats()
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "storage is unavailable"))?;
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
        "the API is POST /; see also GET /.well-known/connectoid",
    ))
}

async fn method_not_allowed() -> AppError {
    AppError(ErrorCode::MethodNotAllowed.into())
}
