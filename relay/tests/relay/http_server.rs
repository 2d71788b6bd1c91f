//! The HTTP API as a running [`Server`] serves it, through real TCP sockets:
//! `POST /` is answered directly (not through the axum router the other
//! routes take), so what the router tests check for the router is checked
//! here for the sockets: the client address comes from the connection, the
//! answer carries the CORS header, the size limit holds, a connection is
//! kept alive across requests, and the other routes still answer.

use std::net::SocketAddr;

use crate::common::*;
use connectoid_protocol::limits;
use connectoid_relay::Rate;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `server` from the loopback address `ip`.
async fn connect_from(ip: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// One answer read from a kept-alive connection: status, head (lowercase)
/// and JSON body (null when empty), read up to its `content-length`.
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Answer {
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed early: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&bytes).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        if body.len() < length {
            continue;
        }
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        return Answer {
            status,
            body: if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(body).unwrap()
            },
            head,
        };
    }
}

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: relay\r\nOrigin: https://app.example\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn the_api_over_a_kept_alive_connection_with_cors() {
    let (server, _dir) = spawn_server(|_| {}).await;
    let key = secret(1).public_key();
    let mut stream = connect_from("127.0.0.1", server.http_addr()).await;
    let sent = exchange(&mut stream, &post(&send_body(&key, &[7; 120]))).await;
    assert_eq!(
        (sent.status, &sent.body),
        (200, &serde_json::json!({"ok": true}))
    );
    assert!(
        sent.head.contains("access-control-allow-origin: *"),
        "{}",
        sent.head
    );
    assert!(
        sent.head.contains("content-type: application/json"),
        "{}",
        sent.head
    );
    // The same connection, a second request.
    let checked = exchange(&mut stream, &post(&check_body(&key, 0))).await;
    assert_eq!(checked.status, 200);
    assert_eq!(checked.body["found"], true);
    // Malformed JSON, then the next request on the same connection still works.
    let bad = exchange(&mut stream, &post("{not json")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["ok"], false);
    let again = exchange(&mut stream, &post(&check_body(&key, u64::MAX))).await;
    assert_eq!(again.body, serde_json::json!({"ok": true, "found": false}));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_limit_is_too_big() {
    let (server, _dir) = spawn_server(|_| {}).await;
    let mut stream = connect_from("127.0.0.1", server.http_addr()).await;
    let huge = " ".repeat(limits::MAX_REQUEST_BODY + 1);
    let answer = exchange(&mut stream, &post(&huge)).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body["error"], "Too big");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_source_address_is_the_connections() {
    let (server, _dir) = spawn_server(|config| {
        config.limits.rate.check_per_ip = Some(Rate::new(1, 2));
    })
    .await;
    let key = secret(2).public_key();
    let mut flooder = connect_from("127.0.0.1", server.http_addr()).await;
    for _ in 0..2 {
        let answer = exchange(&mut flooder, &post(&check_body(&key, 0))).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let refused = exchange(&mut flooder, &post(&check_body(&key, 0))).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (429, Some("Too often"))
    );
    // 127.0.0.2 is another source on Linux loopback.
    let mut other = connect_from("127.0.0.2", server.http_addr()).await;
    let answer = exchange(&mut other, &post(&check_body(&key, 0))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_other_routes_and_methods() {
    let (server, _dir) = spawn_server(|_| {}).await;
    let mut stream = connect_from("127.0.0.1", server.http_addr()).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").into_bytes();
    // `GET /` says what the server is (issue 15); other methods are 405.
    let root = exchange(&mut stream, &get("/")).await;
    assert_eq!(
        (root.status, root.body["info"].as_str()),
        (200, Some("/.well-known/connectoid"))
    );
    let put = exchange(
        &mut stream,
        b"PUT / HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        (put.status, put.body["error"].as_str()),
        (405, Some("Method not allowed"))
    );
    let health = exchange(&mut stream, &get("/healthz")).await;
    assert_eq!(
        (health.status, &health.body),
        (200, &serde_json::json!({"ok": true}))
    );
    let info = exchange(&mut stream, &get("/.well-known/connectoid")).await;
    assert_eq!(info.status, 200);
    assert!(info.body.is_object());
    let missing = exchange(&mut stream, &get("/nowhere")).await;
    assert_eq!(missing.status, 404);
    let preflight = exchange(
        &mut stream,
        b"OPTIONS / HTTP/1.1\r\nHost: relay\r\nOrigin: https://app.example\r\n\
          Access-Control-Request-Method: POST\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert!(
        preflight.head.contains("access-control-allow-origin: *"),
        "{}",
        preflight.head
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_kept_alive_connections_and_stops_accepting() {
    let (server, _dir) = spawn_server(|config| {
        config.shutdown_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    let addr = server.http_addr();
    let key = secret(3).public_key();
    let mut idle = connect_from("127.0.0.1", addr).await;
    let answer = exchange(&mut idle, &post(&check_body(&key, 0))).await;
    assert_eq!(answer.status, 200);
    // An idle kept-alive connection does not hold the shutdown for the
    // whole grace period: it is closed at once.
    tokio::time::timeout(std::time::Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown well within the grace period")
        .unwrap();
    let mut buffer = [0u8; 16];
    assert_eq!(idle.read(&mut buffer).await.unwrap_or(0), 0, "closed");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
