//! Misbehaving relays for resilience tests, all on 127.0.0.1 port 0:
//!
//! - [`Blackhole`]: accepts TCP connections, reads, and never answers;
//! - [`FakeRelay`] with [`Behavior::Garbage`]: answers every request with
//!   bytes that are not the API;
//! - [`FakeRelay`] with [`Behavior::Forger`]: speaks the API correctly, says
//!   "ok" to sends and drops them, and serves forged messages (undecryptable,
//!   wrong sender, bad link proof, wrong recipient, expired) to every mailbox;
//! - [`RelayProxy`]: forwards HTTP to a real relay; can be switched down,
//!   and can advertise a UDP port where a socket swallows every datagram, as
//!   a firewall would.
//!
//! Each owns its tasks; dropping it stops them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response as HttpResponse};
use connectoid_protocol::api::{
    InfoLimits, InfoRetention, Message, Operation, RelayInfo, Request, Response,
};
use connectoid_protocol::envelope::{Envelope, Kind, LinkProof};
use connectoid_protocol::link::{Link, LinkSecret, RelayEntry, RelayUrl};
use connectoid_protocol::{At, PublicKey, SecretKey, limits, seal};
use getrandom::SysRng;
use rand_core::UnwrapErr;
use tokio::io::AsyncReadExt as _;
use tokio::task::JoinHandle;

use crate::process::url_of;

fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A TCP listener that accepts, reads and never answers.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Blackhole {
    /// Starts listening.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(tokio::spawn(async move {
                    let mut socket = socket;
                    let mut buf = [0u8; 4096];
                    // Read until the client gives up; never write.
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                }));
            }
        });
        Ok(Self { addr, task })
    }

    /// The relay URL.
    pub fn url(&self) -> RelayUrl {
        url_of(self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`FakeRelay`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Every answer is HTML, not JSON.
    Garbage,
    /// Valid API answers carrying forged messages.
    Forger,
}

/// Per mailbox: the question secret and the forged messages served.
type ForgedMailboxes = Arc<Mutex<HashMap<PublicKey, ([u8; 32], Vec<Message>)>>>;

#[derive(Clone)]
struct FakeState {
    behavior: Behavior,
    mailboxes: ForgedMailboxes,
    /// Requests answered.
    requests: Arc<Mutex<u64>>,
}

/// An HTTP server that answers like a relay but cannot be trusted.
#[derive(Debug)]
pub struct FakeRelay {
    addr: SocketAddr,
    requests: Arc<Mutex<u64>>,
    task: JoinHandle<()>,
}

impl FakeRelay {
    /// Starts a fake relay with `behavior`.
    pub async fn start(behavior: Behavior) -> anyhow::Result<Self> {
        let state = FakeState {
            behavior,
            mailboxes: Arc::default(),
            requests: Arc::default(),
        };
        let requests = state.requests.clone();
        let app = axum::Router::new()
            .route(
                connectoid_protocol::api::INFO_PATH,
                axum::routing::get(fake_info),
            )
            .route("/", axum::routing::post(fake_api))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            requests,
            task,
        })
    }

    /// The relay URL.
    pub fn url(&self) -> RelayUrl {
        url_of(self.addr)
    }

    /// API requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.lock().map_or(0, |r| *r)
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plausible information document without UDP.
pub fn info_document(udp_port: Option<u16>) -> RelayInfo {
    let mut info = RelayInfo::new(
        "fake",
        "0",
        InfoLimits::new(
            limits::MAX_MESSAGE_BYTES as u64,
            limits::MAX_RECEIVE_LIMIT,
            100,
            limits::MAX_CHECKS_PER_DATAGRAM as u32,
        ),
        InfoRetention::new(3600, 60, 30 * 86400),
    );
    info.udp_port = udp_port;
    info
}

async fn fake_info(State(state): State<FakeState>) -> HttpResponse {
    match state.behavior {
        Behavior::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        Behavior::Forger => axum::Json(info_document(None)).into_response(),
    }
}

async fn fake_api(State(state): State<FakeState>, body: Bytes) -> HttpResponse {
    if let Ok(mut requests) = state.requests.lock() {
        *requests += 1;
    }
    if state.behavior == Behavior::Garbage {
        return (StatusCode::OK, "<html>garbage</html>").into_response();
    }
    let response = match Request::from_json(&body) {
        Err(e) => Response::Error(e),
        Ok(request) => forge(&state, request),
    };
    (
        StatusCode::from_u16(response.http_status()).unwrap_or(StatusCode::OK),
        response.to_json(),
    )
        .into_response()
}

fn forge(state: &FakeState, request: Request) -> Response {
    let Ok(mut mailboxes) = state.mailboxes.lock() else {
        return Response::Error(connectoid_protocol::ErrorCode::Internal.into());
    };
    let (secret, messages) = mailboxes
        .entry(request.key)
        .or_insert_with(|| (rand_bytes(), forged_messages(&request.key)));
    match request.op {
        Operation::Send { .. } | Operation::Delete { .. } | Operation::Push { .. } => {
            Response::Done
        }
        Operation::Check { at } => {
            if messages.iter().any(|m| m.at > at) {
                match seal::seal_question(&mut rng(), &request.key, secret) {
                    Ok(question) => Response::Found { question },
                    Err(_) => Response::NotFound,
                }
            } else {
                Response::NotFound
            }
        }
        Operation::Receive { at, limit, .. } => Response::Many(
            messages
                .iter()
                .filter(|m| m.at > at)
                .take(limit as usize)
                .cloned()
                .collect(),
        ),
        _ => Response::Error(connectoid_protocol::ErrorCode::UnknownAction.into()),
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut rng(), &mut bytes);
    bytes
}

/// Forged messages for `mailbox`, each of which a correct client must refuse.
fn forged_messages(mailbox: &PublicKey) -> Vec<Message> {
    let mallory = SecretKey::generate(&mut rng());
    let reply = Link {
        key: mallory.public_key(),
        relays: vec![RelayEntry::new(url_of(SocketAddr::from((
            [127, 0, 0, 1],
            9,
        ))))],
        ext: None,
        secret: None,
    };
    let envelope = |kind: Kind, to: PublicKey, ts: u64, proof: Option<LinkProof>| Envelope {
        kind,
        to,
        from: reply.clone(),
        ts,
        proof,
        body: serde_json::json!({ "forged": true }),
    };
    let sealed_to = |recipient: &PublicKey, envelope: &Envelope| -> Vec<u8> {
        let Ok(jws) = envelope.sign(&mallory) else {
            return Vec::new();
        };
        seal::seal_message(&mut rng(), recipient, jws.as_bytes()).unwrap_or_default()
    };
    let now = now_ms();
    let wrong_proof = LinkProof::compute(
        &LinkSecret::generate(&mut rng()),
        mailbox,
        &mallory.public_key(),
    );
    let other = SecretKey::generate(&mut rng()).public_key();
    let mut undecryptable = vec![0u8; 400];
    rand_core::Rng::fill_bytes(&mut rng(), &mut undecryptable);
    let messages = [
        undecryptable,
        // Sealed to another key.
        sealed_to(&other, &envelope(Kind::Answer, other, now, None)),
        // A hello with a proof made without the link secret.
        sealed_to(
            mailbox,
            &envelope(Kind::Hello, *mailbox, now, Some(wrong_proof)),
        ),
        // A hello without a proof.
        sealed_to(mailbox, &envelope(Kind::Hello, *mailbox, now, None)),
        // An answer from someone who is not the peer.
        sealed_to(mailbox, &envelope(Kind::Answer, *mailbox, now, None)),
        // Addressed to another mailbox, sealed to this one.
        sealed_to(mailbox, &envelope(Kind::Answer, other, now, None)),
        // Two hours old.
        sealed_to(
            mailbox,
            &envelope(Kind::Answer, *mailbox, now - 2 * 3_600_000, None),
        ),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, data)| Message {
            at: At(i as u64 + 1),
            data,
        })
        .collect()
}

#[derive(Clone)]
struct ProxyState {
    /// The relay's URL without the trailing slash, once set.
    upstream: Arc<Mutex<Option<String>>>,
    /// The UDP port to advertise instead of the relay's, if any.
    udp_port: Option<u16>,
    up: Arc<AtomicBool>,
    http: reqwest::Client,
}

/// A reverse proxy to a real relay that can be switched "down" (answers
/// 503 "Unavailable" to everything) and can advertise a UDP port where a
/// socket swallows every datagram, as a firewall would.
///
/// Answers to relay questions are bound to the URL the client names
/// (`spec/protocol.md` 7.6), so the relay behind the proxy must list the
/// proxy's URL among its own: start the proxy first, start the relay with
/// [`RelayProxy::url`] in its URLs, then [`RelayProxy::set_upstream`].
#[derive(Debug)]
pub struct RelayProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    upstream: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
    _sink: Option<tokio::net::UdpSocket>,
}

impl RelayProxy {
    /// Starts a proxy (forwarding nowhere until [`RelayProxy::set_upstream`]);
    /// with `block_udp` its information document advertises a UDP port that
    /// never answers.
    pub async fn start(block_udp: bool) -> anyhow::Result<Self> {
        let sink = if block_udp {
            Some(tokio::net::UdpSocket::bind("127.0.0.1:0").await?)
        } else {
            None
        };
        let udp_port = match &sink {
            Some(sink) => Some(sink.local_addr()?.port()),
            None => None,
        };
        Self::launch(udp_port, sink).await
    }

    /// Starts a proxy whose information document advertises UDP `port` (a
    /// socket of the test's, such as a UDP forwarder standing for a NAT).
    pub async fn start_advertising_udp(port: u16) -> anyhow::Result<Self> {
        Self::launch(Some(port), None).await
    }

    async fn launch(
        udp_port: Option<u16>,
        sink: Option<tokio::net::UdpSocket>,
    ) -> anyhow::Result<Self> {
        let up = Arc::new(AtomicBool::new(true));
        let upstream: Arc<Mutex<Option<String>>> = Arc::default();
        let state = ProxyState {
            upstream: upstream.clone(),
            udp_port,
            up: up.clone(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(proxy).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            up,
            upstream,
            task,
            _sink: sink,
        })
    }

    /// Forwards to the relay at `relay` from now on.
    pub fn set_upstream(&self, relay: &RelayUrl) {
        if let Ok(mut upstream) = self.upstream.lock() {
            *upstream = Some(relay.as_str().trim_end_matches('/').to_owned());
        }
    }

    /// The proxy's relay URL.
    pub fn url(&self) -> RelayUrl {
        url_of(self.addr)
    }

    /// Switches the proxy up (forwarding) or down (503 to everything).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for RelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> HttpResponse {
    if !state.up.load(Ordering::SeqCst) {
        let down = Response::Error(connectoid_protocol::ErrorCode::Unavailable.into());
        return (StatusCode::SERVICE_UNAVAILABLE, down.to_json()).into_response();
    }
    let upstream = state.upstream.lock().ok().and_then(|u| u.clone());
    let Some(upstream) = upstream else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{upstream}{path}");
    let request = if method == Method::GET {
        state.http.get(&url)
    } else {
        state
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    let Ok(response) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::OK);
    let Ok(bytes) = response.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    if uri.path() == connectoid_protocol::api::INFO_PATH
        && let Ok(mut info) = serde_json::from_slice::<RelayInfo>(&bytes)
    {
        // The proxy and the relay share 127.0.0.1, so the relay's own UDP
        // port stays right unless UDP is to look blocked.
        if let Some(port) = state.udp_port {
            info.udp_port = Some(port);
        }
        return axum::Json(info).into_response();
    }
    (status, bytes).into_response()
}
