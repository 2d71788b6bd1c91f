//! Helpers shared by the relay's integration tests: keys, sealed messages,
//! an in-process router with a manual clock, a minimal HTTP/1.1 client for
//! real sockets, and the relay binary cargo built for these tests.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode};
use connectoid_protocol::seal::{open_question, seal_message};
use connectoid_protocol::{Answer, PublicKey, RelayUrl, SecretKey, b64};
use connectoid_relay::testing::RelayCommand;
pub use connectoid_relay::testing::RelayProcess;
use connectoid_relay::{Config, ManualClock, RedbStore, Relay, Server, StoreOptions};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

/// A fixed secret key (valid for every `n` in 1..=200).
pub fn secret(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 48]).unwrap()
}

/// A real sealed message to `key`.
pub fn sealed(key: &PublicKey, text: &str) -> Vec<u8> {
    seal_message(&mut rand::rng(), key, text.as_bytes()).unwrap()
}

/// The seed's send shape with a real key and message.
pub fn send_body(key: &PublicKey, data: &[u8]) -> String {
    format!(
        r#"{{"pub": "{key}", "ext": null, "action": "send", "data": "{}"}}"#,
        b64::encode(data)
    )
}

/// The seed's check shape.
pub fn check_body(key: &PublicKey, at: u64) -> String {
    format!(r#"{{"pub": "{key}", "ext": null, "action": "check", "at": {at}}}"#)
}

/// The seed's receive shape.
pub fn receive_body(key: &PublicKey, answer: &str, at: u64, limit: u32) -> String {
    format!(
        r#"{{"pub": "{key}", "ext": null, "answer": "{answer}", "action": "receive", "at": {at}, "limit": {limit}}}"#
    )
}

/// Opens a `check` answer's question with `secret`: the answer text for the
/// relay at `url`.
pub fn answer_of(secret: &SecretKey, check: &Value, url: &RelayUrl) -> String {
    let question = b64::decode(check["question"].as_str().expect("question")).unwrap();
    let opened = open_question(secret, &question).unwrap();
    b64::encode(&Answer::for_relay(&opened, url).0)
}

/// The URL the test relays are published under.
pub fn test_url() -> RelayUrl {
    RelayUrl::parse("http://relay.test/").unwrap()
}

/// A relay over a redb store in a temporary directory, with a manual clock.
pub struct TestRelay {
    pub relay: Arc<Relay>,
    pub router: connectoid_relay::RelayRouter,
    pub clock: Arc<ManualClock>,
    pub dir: TempDir,
}

impl TestRelay {
    /// `change` adjusts the test configuration (rate limits off, manual clock).
    pub fn new(change: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::at_test_start());
        let mut config = Config::for_tests(dir.path());
        config.clock = clock.clone();
        config.urls = vec![test_url()];
        change(&mut config);
        let store = RedbStore::open(dir.path(), StoreOptions::from_config(&config)).unwrap();
        let relay = Arc::new(Relay::new(&config, Arc::new(store), Some(7447)));
        let router = connectoid_relay::router(Arc::clone(&relay));
        Self {
            relay,
            router,
            clock,
            dir,
        }
    }

    /// `POST /` from `ip`, as a form post (like `curl -d`).
    pub async fn post_from(&self, ip: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let ip: IpAddr = ip.parse().unwrap();
        let mut request = HttpRequest::post("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.into())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40000)));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "every API answer is JSON"
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json["ok"].as_bool(),
            Some(status == StatusCode::OK),
            "ok matches the status: {json}"
        );
        (status, json)
    }

    /// `POST /` from 192.0.2.1.
    pub async fn post(&self, body: impl Into<Body>) -> (StatusCode, Value) {
        self.post_from("192.0.2.1", body).await
    }

    /// `GET path`: status, headers and body text.
    pub async fn get(&self, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = HttpRequest::get(path).body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    /// Checks and answers: the answer text for `secret`'s mailbox.
    pub async fn answer(&self, secret: &SecretKey) -> String {
        let (status, check) = self.post(check_body(&secret.public_key(), 0)).await;
        assert_eq!(status, StatusCode::OK, "{check}");
        self.answer_of(secret, &check)
    }

    /// The answer to a `check` answer's question, for this relay's URL.
    pub fn answer_of(&self, secret: &SecretKey, check: &Value) -> String {
        answer_of(secret, check, &self.relay.urls()[0])
    }
}

/// A running [`Server`] on free loopback ports (the test configuration,
/// changed by `change`) and its data directory.
pub async fn spawn_server(change: impl FnOnce(&mut Config)) -> (Server, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    change(&mut config);
    (Server::spawn(config).await.unwrap(), dir)
}

/// A minimal HTTP/1.1 GET of `path` over a fresh connection: the whole
/// answer, head and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// A minimal HTTP/1.1 POST over a fresh connection: status and JSON body.
pub async fn http_post(addr: SocketAddr, body: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let json =
        serde_json::from_str(body).map_err(|e| std::io::Error::other(format!("{e}: {body:?}")))?;
    Ok((status, json))
}

/// The relay binary cargo built for these tests.
pub const RELAY_BIN: &str = env!("CARGO_BIN_EXE_connectoid-relay");

/// A command running [`RELAY_BIN`], for tests of flags and exit codes.
pub fn relay_bin() -> std::process::Command {
    std::process::Command::new(RELAY_BIN)
}

/// The launcher of relay processes ([`RelayCommand`]), on [`RELAY_BIN`].
pub fn relay_command() -> RelayCommand {
    RelayCommand::new().binary(RELAY_BIN)
}
