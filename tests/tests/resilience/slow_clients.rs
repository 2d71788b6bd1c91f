//! Slow and unfinished requests against a real relay process: headers
//! trickled a byte at a time, bodies that never finish, over-limit
//! `Content-Length` with `Expect: 100-continue`, and the connection cap
//! filled with such clients while a normal client keeps checking.
//!
//! Bounded in connections and rounds; the only waits are for the relay's
//! own timeouts, each guarded by a generous upper bound that fails the test
//! rather than hanging it (not a performance threshold).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use connectoid_tests::bench::load::HttpConn;
use connectoid_tests::bench::scenarios::{check_body, secret_key};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::relay;

/// How long a test waits for something the relay must do by itself (a
/// timeout of 1 s): far more than needed, so only a relay that never does
/// it fails.
const AT_MOST: Duration = Duration::from_secs(60);

async fn connect_from(local: IpAddr, addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    Ok(socket.connect(addr).await?)
}

/// Everything the relay sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(AT_MOST, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the relay kept the connection open"))?;
    Ok(out)
}

fn status_of(answer: &[u8]) -> Option<u16> {
    std::str::from_utf8(answer.get(..12)?)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_unfinished_requests_are_cut_off() -> anyhow::Result<()> {
    connectoid_tests::init_tracing();
    let data = tempfile::tempdir()?;
    let mut options = relay(data.path()).with(&["--header-timeout", "1", "--body-timeout", "1"]);
    options.udp = None;
    let process = options.start()?;
    let addr = process.http_addr()?;
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Headers a byte at a time, one byte every 100 ms: closed, never answered 200.
    let mut slow = connect_from(local, addr).await?;
    let request = b"POST / HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut closed_while_sending = false;
    for byte in request {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_while_sending = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = read_to_close(&mut slow).await?;
    assert!(
        closed_while_sending || status_of(&answer) != Some(200),
        "a trickled request was served: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // An idle kept-alive connection is closed too.
    let mut idle = HttpConn::connect(addr).await?;
    let key = secret_key(7001).public_key();
    assert_eq!(idle.post(&check_body(&key, 0), false).await?.status, 200);
    let mut raw = connect_from(local, addr).await?;
    let answer = read_to_close(&mut raw).await?;
    assert!(answer.is_empty(), "an idle connection got {answer:?}");

    // Content-Length of 10 GB with 1 KB sent: 413 at once, then closed.
    let mut huge = connect_from(local, addr).await?;
    huge.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        .await?;
    huge.write_all(&[b' '; 1024]).await?;
    let answer = read_to_close(&mut huge).await?;
    assert_eq!(
        status_of(&answer),
        Some(413),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(String::from_utf8_lossy(&answer).contains(r#""error":"Too big""#));

    // Expect: 100-continue with an over-limit length: 413, no 100.
    let mut expect = connect_from(local, addr).await?;
    expect
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n",
        )
        .await?;
    let answer = read_to_close(&mut expect).await?;
    assert_eq!(
        status_of(&answer),
        Some(413),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Chunked without its last chunk: answered with the JSON error once the
    // body timeout ends, then closed.
    let mut chunked = connect_from(local, addr).await?;
    chunked
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"pub\r\n",
        )
        .await?;
    let answer = read_to_close(&mut chunked).await?;
    assert_eq!(
        status_of(&answer),
        Some(400),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(String::from_utf8_lossy(&answer).contains(r#""error":"Malformed JSON""#));

    // Still serving; invalid UTF-8 inside a member the decoder skips is
    // refused like invalid UTF-8 anywhere else.
    let mut conn = HttpConn::connect(addr).await?;
    assert_eq!(conn.post(&check_body(&key, 0), false).await?.status, 200);
    let mut body = check_body(&key, 0);
    body.pop();
    body.extend_from_slice(b",\"unknown\":\"\xff\xfe\"}");
    let answer = conn.post(&body, false).await?;
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(String::from_utf8_lossy(&answer.body).contains("Malformed JSON"));
    Ok(())
}

/// The relay at its connection cap, every connection a client trickling its
/// headers from 127.0.0.2..=127.0.0.4 (and reconnecting when closed): a
/// normal client on 127.0.0.1 still gets every check answered, because the
/// oldest connection without a request under way makes room for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_client_is_served_at_the_connection_cap() -> anyhow::Result<()> {
    connectoid_tests::init_tracing();
    const CAP: usize = 60;
    let data = tempfile::tempdir()?;
    // The header timeout is far away: only the cap's policy can help.
    let mut options = relay(data.path()).with(&[
        "--header-timeout",
        "3600",
        "--max-connections",
        &CAP.to_string(),
    ]);
    options.udp = None;
    let process = options.start()?;
    let addr = process.http_addr()?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut slow = Vec::new();
    for n in 0..(CAP + 15) {
        let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 3) as u8));
        let stop = std::sync::Arc::clone(&stop);
        slow.push(tokio::spawn(async move {
            let mut reconnects = 0u32;
            // Bounded: at most 50 connections, 1000 bytes each.
            'connections: for _ in 0..50 {
                let Ok(mut stream) = connect_from(local, addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                for _ in 0..1000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break 'connections;
                    }
                    if stream.write_all(b"P").await.is_err() {
                        break;
                    }
                    let mut probe = [0u8; 1];
                    let probe =
                        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe));
                    // Closed (or answered with a refusal): reconnect.
                    if probe.await.is_ok() {
                        break;
                    }
                }
                reconnects += 1;
            }
            reconnects
        }));
    }
    // Let the slow clients fill the cap.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = HttpConn::connect(addr).await?.get("/metrics").await?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let open: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("connectoid_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    eprintln!("connections open with the slow clients: {open}");
    assert!(
        open >= CAP - 1,
        "the slow clients did not fill the cap: {open}"
    );

    let key = secret_key(7002).public_key();
    let (mut ok, total) = (0u32, 40u32);
    for i in 0..total {
        // A new connection each time, as a client after a network change.
        let answer = async {
            let mut conn = HttpConn::connect(addr).await?;
            conn.post(&check_body(&key, 0), i % 2 == 0).await
        }
        .await;
        match answer {
            Ok(answer) if answer.status == 200 => ok += 1,
            Ok(answer) => eprintln!("check {i}: {}", answer.status),
            Err(error) => eprintln!("check {i}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reconnects = 0;
    for task in slow {
        reconnects += task.await?;
    }
    let metrics = HttpConn::connect(addr).await?.get("/metrics").await?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    eprintln!(
        "normal client: {ok}/{total} checks answered; slow clients reconnected {reconnects} times; {}",
        text.lines()
            .filter(|l| l.starts_with("connectoid_connections"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert_eq!(ok, total, "the normal client was not served at the cap");
    assert!(
        text.contains("connectoid_connections_closed_total{reason=\"evicted\"}"),
        "nothing was evicted"
    );
    Ok(())
}
