//! Redis servers for tests: each test starts its own `redis-server`
//! processes on 127.0.0.1 with free ports and temporary directories, and
//! kills them when the guard is dropped.
//!
//! When `redis-server` is not installed the constructors return `None`
//! after printing a notice, so that the test can skip; under `CI=true` they
//! panic instead (`scripts/test` installs the Debian package `redis-server`).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

const SERVER: &str = "redis-server";
const CLI: &str = "redis-cli";
/// Polls of a starting server (25 ms apart) before giving up.
const READY_POLLS: usize = 800;

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Whether `redis-server` and `redis-cli` can run; panics under CI when not.
pub fn redis_available(test: &str) -> bool {
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if runs(SERVER) && runs(CLI) {
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
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
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

/// One `redis-server` process; killed (SIGKILL) on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
}

impl RedisServer {
    /// A server without persistence. `None` when Redis is not installed
    /// (outside CI).
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[])
    }

    /// A server with extra `redis-server` arguments (such as
    /// `--appendonly yes`).
    pub fn start_with(test: &str, extra: &[&str]) -> Option<Self> {
        if !redis_available(test) {
            return None;
        }
        let mut dir = tempfile::tempdir().expect("tempdir");
        let mut last_error = String::new();
        // A port can be taken between choosing it and binding it: retry.
        for _ in 0..10 {
            let port = free_port();
            let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
            if extra.contains(&"--cluster-enabled") {
                args.extend(["--cluster-port".to_owned(), free_port().to_string()]);
            }
            let mut server = Self {
                child: None,
                port,
                dir,
                args,
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(error) => {
                    last_error = error;
                    dir = server.take_dir();
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn take_dir(mut self) -> TempDir {
        self.stop();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Starts the process and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
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
                let info = self.cli(&["info", "server"]);
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
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The old socket may linger for a moment; redis-server then fails to bind.
        for _ in 0..40 {
            match self.spawn() {
                Ok(()) => return,
                Err(error) => last = error,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(CLI)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A Redis Cluster of three masters without replicas, made with
/// `redis-cli --cluster create`; every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok`. `None` when Redis is not installed
    /// (outside CI).
    pub fn start(test: &str) -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_with(
                test,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )?);
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
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        for _ in 0..READY_POLLS {
            if cluster.nodes.iter().all(|node| {
                let info = node.cli(&["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            }) {
                return Some(cluster);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "the cluster never reached cluster_state:ok: {}",
            cluster.nodes[0].cli(&["cluster", "info"])
        );
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
