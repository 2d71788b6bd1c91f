//! Redis servers for tests: `redis-server` processes on 127.0.0.1 with free
//! ports and temporary directories, killed when their handle is dropped,
//! and a three-master Redis Cluster made with `redis-cli --cluster create`.
//!
//! [`RedisServer::spawn`] returns an error when Redis cannot start. The
//! constructors named for tests, [`RedisServer::start`] and
//! [`RedisCluster::start`], return `None` when `redis-server` is not
//! installed (after printing a notice), so that the test can skip; under
//! `CI=true` they panic instead (`scripts/test` installs the Debian package
//! `redis-server`), and they panic when Redis is installed but fails, as a
//! test assertion does.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::LaunchError;

const SERVER: &str = "redis-server";
const CLI: &str = "redis-cli";
/// Polls of a starting server (25 ms apart) before giving up.
const READY_POLLS: usize = 800;

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Whether `redis-server` and `redis-cli` can run.
pub fn redis_installed() -> bool {
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    runs(SERVER) && runs(CLI)
}

/// Whether `redis-server` and `redis-cli` can run for `test`: when they
/// cannot, prints that `test` is skipped, and panics under `CI=true`.
pub fn redis_available(test: &str) -> bool {
    if redis_installed() {
        return true;
    }
    if is_ci() {
        panic!(
            "{test}: redis-server (or redis-cli) is not installed, and CI=true requires the Redis \
             tests to run: install the Debian package redis-server (scripts/test does)"
        );
    }
    // Straight to stderr, not through the test harness's capture, so that the
    // skip shows in a normal run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: redis-server is not installed (apt-get install redis-server, or run \
         scripts/test, which installs it)"
    );
    false
}

/// A port nobody listens on right now.
fn free_port() -> Result<u16, LaunchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(LaunchError::io("finding a free port"))
}

/// Whether a Redis answers PING with PONG on `port`.
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    let mut got = 0;
    while got < reply.len() {
        match stream.read(&mut reply[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    reply.starts_with(b"+PONG")
}

/// One `redis-server` process without persistence (unless its arguments
/// ask for it); killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
}

impl RedisServer {
    /// A server without persistence, for `test`. `None` when Redis is not
    /// installed (outside CI).
    ///
    /// # Panics
    ///
    /// When Redis is installed but does not start, or is missing under CI.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments (such as
    /// `--appendonly yes`).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(test: &str, extra: &[&str]) -> Option<Self> {
        if !redis_available(test) {
            return None;
        }
        match Self::spawn(extra) {
            Ok(server) => Some(server),
            Err(error) => panic!("{test}: {error}"),
        }
    }

    /// Starts a server with extra `redis-server` arguments on a free port
    /// and waits until it answers PING.
    pub fn spawn(extra: &[&str]) -> Result<Self, LaunchError> {
        let mut dir = tempfile::tempdir().map_err(LaunchError::io("making a Redis directory"))?;
        let mut last_error = String::new();
        // A port can be taken between choosing it and binding it: retry.
        for _ in 0..10 {
            let port = free_port()?;
            let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
            if extra.contains(&"--cluster-enabled") {
                args.extend(["--cluster-port".to_owned(), free_port()?.to_string()]);
            }
            let mut server = Self {
                child: None,
                port,
                dir,
                args,
            };
            match server.run() {
                Ok(()) => return Ok(server),
                Err(error) => {
                    last_error = error;
                    server.stop();
                    dir = std::mem::replace(
                        &mut server.dir,
                        tempfile::tempdir().map_err(LaunchError::io("making a Redis directory"))?,
                    );
                }
            }
        }
        Err(LaunchError::NotReady(format!(
            "redis-server did not start: {last_error}"
        )))
    }

    /// Starts the process and waits until it answers PING.
    fn run(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {SERVER}: {e}"))?;
        for _ in 0..READY_POLLS {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{SERVER} exited with {status}: {}", log_tail(&log)));
            }
            if pong(self.port) {
                // Ours, not another test's server that holds the port.
                let info = self.cli(&["info", "server"]).unwrap_or_default();
                if !info.contains(&format!("process_id:{}\r", child.id())) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("port {} is another server's", self.port));
                }
                self.child = Some(child);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("{SERVER} never answered PING: {}", log_tail(&log)))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL, as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, directory and arguments.
    ///
    /// # Panics
    ///
    /// When it does not start within about two seconds of tries.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The old socket may linger for a moment; redis-server then fails to bind.
        for _ in 0..40 {
            match self.run() {
                Ok(()) => return,
                Err(error) => last = error,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, LaunchError> {
        let output = Command::new(CLI)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(LaunchError::io("running redis-cli"))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A Redis Cluster of three masters without replicas, made with
/// `redis-cli --cluster create`; every node is killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// A cluster for `test`. `None` when Redis is not installed (outside CI).
    ///
    /// # Panics
    ///
    /// When Redis is installed but the cluster does not form, or is missing
    /// under CI.
    pub fn start(test: &str) -> Option<Self> {
        if !redis_available(test) {
            return None;
        }
        match Self::spawn() {
            Ok(cluster) => Some(cluster),
            Err(error) => panic!("{test}: {error}"),
        }
    }

    /// Starts three nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok` with every slot served.
    pub fn spawn() -> Result<Self, LaunchError> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::spawn(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new(CLI)
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(LaunchError::io("running redis-cli --cluster create"))?;
        if !output.status.success() {
            return Err(LaunchError::NotReady(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let cluster = Self { nodes };
        let mut info = String::new();
        for _ in 0..READY_POLLS {
            let mut ready = true;
            for node in &cluster.nodes {
                info = node.cli(&["cluster", "info"])?;
                ready &=
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384");
            }
            if ready {
                return Ok(cluster);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(LaunchError::NotReady(format!(
            "the cluster never reached cluster_state:ok: {info}"
        )))
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}
