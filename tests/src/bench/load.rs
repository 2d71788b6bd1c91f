//! Load generators: a minimal HTTP/1.1 client on raw TCP (kept-alive or one
//! connection per request), a UDP request/response loop, and a [`Budget`]
//! that bounds every run in both time and count.
//!
//! The HTTP client is deliberately small (one request at a time per
//! connection, `Content-Length` bodies only) so that the load generator
//! costs little and the same for the relay and the baselines. It is not a
//! general HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

/// Bounds a run: it ends at `deadline` or after `max_ops` operations,
/// whichever comes first.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    max_ops: u64,
    taken: AtomicU64,
}

impl Budget {
    /// A budget of `duration` from now and at most `max_ops` operations.
    pub fn new(duration: Duration, max_ops: u64) -> Arc<Self> {
        Arc::new(Self {
            deadline: Instant::now() + duration,
            max_ops,
            taken: AtomicU64::new(0),
        })
    }

    /// Takes one operation; `false` when the budget is spent.
    pub fn take(&self) -> bool {
        Instant::now() < self.deadline && self.taken.fetch_add(1, Ordering::Relaxed) < self.max_ops
    }
}

/// What a run measured on the load side.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed (error answer, timeout, lost datagram).
    pub errors: u64,
    /// Wall time of the run.
    pub wall: Duration,
    /// Latency of every successful operation.
    pub latencies: Vec<Duration>,
}

impl Sample {
    /// Merges a worker's results.
    pub fn merge(&mut self, other: Sample) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }

    /// Successful operations per second of wall time.
    pub fn rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An HTTP answer: status and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpConn {
    /// Connects (with `TCP_NODELAY`).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Connects from `local` (a loopback address such as 127.0.0.2).
    pub async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(local, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// `POST /` with a JSON body; `close` asks the server to close after
    /// answering. Returns the status and body.
    pub async fn post(&mut self, body: &[u8], close: bool) -> anyhow::Result<HttpAnswer> {
        self.request("POST", "/", body, close).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<HttpAnswer> {
        self.request("GET", path, b"", false).await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        close: bool,
    ) -> anyhow::Result<HttpAnswer> {
        let connection = if close { "Connection: close\r\n" } else { "" };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{connection}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> anyhow::Result<HttpAnswer> {
        // Headers.
        let header_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..header_end]).context("header bytes")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("no status line"))?
            .parse()
            .context("status")?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?;
        while self.buf.len() < header_end + length {
            self.fill().await?;
        }
        let body = self.buf[header_end..header_end + length].to_vec();
        self.buf.drain(..header_end + length);
        Ok(HttpAnswer { status, body })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the answer was complete");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Whether an HTTP answer counts as a success.
pub type Accept = fn(&HttpAnswer) -> bool;

/// Status 200.
pub fn is_ok(answer: &HttpAnswer) -> bool {
    answer.status == 200
}

/// `concurrency` workers each `POST`ing `bodies[worker % len]` to `addr`
/// until the budget is spent, over one kept-alive connection per worker
/// (`new_connection: false`) or a new connection per request.
pub async fn http_load(
    addr: SocketAddr,
    bodies: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    new_connection: bool,
    budget: Arc<Budget>,
    accept: Accept,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let bodies = Arc::clone(&bodies);
        let budget = Arc::clone(&budget);
        workers.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            let body = &bodies[worker % bodies.len()];
            let mut conn: Option<HttpConn> = None;
            while budget.take() {
                let began = Instant::now();
                let result = async {
                    if new_connection || conn.is_none() {
                        conn = Some(HttpConn::connect(addr).await?);
                    }
                    let c = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
                    c.post(body, new_connection).await
                }
                .await;
                match result {
                    Ok(answer) if accept(&answer) => {
                        sample.ops += 1;
                        sample.latencies.push(began.elapsed());
                    }
                    _ => {
                        sample.errors += 1;
                        conn = None;
                    }
                }
                if new_connection {
                    conn = None;
                }
            }
            sample
        }));
    }
    gather(workers, start).await
}

/// `concurrency` kept-alive workers `POST`ing every body of `bodies` in
/// turn (worker `w` starts at `w * len / concurrency`) until the budget is
/// spent: checks spread over many mailboxes.
pub async fn http_load_spread(
    addr: SocketAddr,
    bodies: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    budget: Arc<Budget>,
    accept: Accept,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let bodies = Arc::clone(&bodies);
        let budget = Arc::clone(&budget);
        workers.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            let mut next = worker * bodies.len() / concurrency.max(1);
            let mut conn: Option<HttpConn> = None;
            while budget.take() {
                let body = &bodies[next % bodies.len()];
                next += 1;
                let began = Instant::now();
                let result = async {
                    if conn.is_none() {
                        conn = Some(HttpConn::connect(addr).await?);
                    }
                    let c = conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
                    c.post(body, false).await
                }
                .await;
                match result {
                    Ok(answer) if accept(&answer) => {
                        sample.ops += 1;
                        sample.latencies.push(began.elapsed());
                    }
                    _ => {
                        sample.errors += 1;
                        conn = None;
                    }
                }
            }
            sample
        }));
    }
    gather(workers, start).await
}

/// [`udp_load`] sending every datagram of `datagrams` in turn (worker `w`
/// starts at `w * len / concurrency`).
pub async fn udp_load_spread(
    addr: SocketAddr,
    datagrams: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    wait: Duration,
    budget: Arc<Budget>,
    accept: fn(&[u8]) -> bool,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let datagrams = Arc::clone(&datagrams);
        let budget = Arc::clone(&budget);
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(addr).await?;
        workers.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            let mut buf = vec![0u8; 2048];
            let mut next = worker * datagrams.len() / concurrency.max(1);
            while budget.take() {
                let datagram = &datagrams[next % datagrams.len()];
                next += 1;
                let began = Instant::now();
                if socket.send(datagram).await.is_err() {
                    sample.errors += 1;
                    continue;
                }
                match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
                    Ok(Ok(n)) if accept(&buf[..n]) => {
                        sample.ops += 1;
                        sample.latencies.push(began.elapsed());
                    }
                    _ => sample.errors += 1,
                }
            }
            sample
        }));
    }
    gather(workers, start).await
}

/// `concurrency` workers, each with its own socket, sending `datagram` to
/// `addr` and waiting for one answer (up to `wait`; silence counts as an
/// error) until the budget is spent. `accept` judges each answer.
pub async fn udp_load(
    addr: SocketAddr,
    datagram: Arc<Vec<u8>>,
    concurrency: usize,
    wait: Duration,
    budget: Arc<Budget>,
    accept: fn(&[u8]) -> bool,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let datagram = Arc::clone(&datagram);
        let budget = Arc::clone(&budget);
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(addr).await?;
        workers.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            let mut buf = vec![0u8; 2048];
            while budget.take() {
                let began = Instant::now();
                if socket.send(&datagram).await.is_err() {
                    sample.errors += 1;
                    continue;
                }
                match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
                    Ok(Ok(n)) if accept(&buf[..n]) => {
                        sample.ops += 1;
                        sample.latencies.push(began.elapsed());
                    }
                    _ => sample.errors += 1,
                }
            }
            sample
        }));
    }
    gather(workers, start).await
}

/// The workers' samples merged, with the wall time since `start`.
async fn gather(
    workers: Vec<tokio::task::JoinHandle<Sample>>,
    start: Instant,
) -> anyhow::Result<Sample> {
    let mut total = Sample::default();
    for worker in workers {
        total.merge(worker.await?);
    }
    total.wall = start.elapsed();
    Ok(total)
}
