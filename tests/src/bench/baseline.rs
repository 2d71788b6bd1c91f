//! The baselines the relay is measured against, each run as its own process
//! (the bench binary re-executes itself with `--baseline-http` or
//! `--baseline-udp`) so that `/proc` CPU time is the baseline's alone:
//!
//! - a minimal hyper 1.x HTTP/1.1 server that reads the `POST` body and
//!   answers a fixed small JSON body (`{"ok":true,"found":false}`, what the
//!   relay answers to a check that finds nothing);
//! - a minimal tokio UDP server that answers every datagram with one fixed
//!   datagram (a one-mailbox check response).
//!
//! Both print `listening http=ADDR` / `listening udp=ADDR` and run until
//! killed. Neither parses anything, stores anything or limits anything.

use std::convert::Infallible;
use std::io::Write as _;

use connectoid_protocol::udp::{CheckResponse, CheckStatus};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The fixed JSON body of the HTTP baseline.
pub const HTTP_BODY: &[u8] = br#"{"ok":true,"found":false}"#;

/// The fixed datagram of the UDP baseline: a one-mailbox "nothing new" check response.
pub fn udp_answer() -> Vec<u8> {
    CheckResponse {
        nonce: [0; 16],
        statuses: vec![CheckStatus::NotFound],
        observed: None,
    }
    .encode()
}

/// Runs the HTTP baseline on 127.0.0.1 (free port) until the process is killed.
pub async fn run_http() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening http={}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                // Read the whole body, as the relay does, then answer.
                let _ = request.into_body().collect().await;
                let mut response = Response::new(Full::new(Bytes::from_static(HTTP_BODY)));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Runs the UDP baseline on 127.0.0.1 (free port) until the process is killed.
pub async fn run_udp() -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    println!("listening udp={}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let answer = udp_answer();
    let mut buf = vec![0u8; 2048];
    loop {
        let (_, from) = socket.recv_from(&mut buf).await?;
        let _ = socket.send_to(&answer, from).await;
    }
}
