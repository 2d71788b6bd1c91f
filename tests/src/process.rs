//! Real relay processes and the workspace's binaries, for end-to-end tests.
//!
//! [`RelayProcess::start`] runs the `connectoid-relay` binary on
//! 127.0.0.1 port 0 (HTTP and UDP), reads the addresses it prints
//! (`listening http=ADDR`, `listening udp=ADDR`), and can kill it (SIGKILL)
//! or stop it (SIGTERM). The binaries are found next to the test
//! executable (`target/<profile>/`) and built once with cargo if missing or
//! older than their sources.
//!
//! Nothing here asserts on time: waits are bounded loops that fail with a
//! clear message.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use connectoid_protocol::link::RelayUrl;

/// The longest wait for a relay process to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `target/<profile>/`, the directory holding the test executable's `deps/`.
fn target_profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable has no directory"))?
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// The newest modification time of the files under `dirs` (recursively).
fn newest_source(dirs: &[PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if let Ok(modified) = meta.modified() {
            newest = newest.max(Some(modified));
        }
    }
    newest
}

/// Whether the binary at `path` exists and is newer than the sources of
/// `package_dir` and of the protocol crate (so a test never runs a stale
/// binary when only one package was rebuilt).
fn is_fresh(path: &Path, package_dir: &str) -> bool {
    let Some(built) = std::fs::metadata(path).and_then(|m| m.modified()).ok() else {
        return false;
    };
    let root = workspace_root();
    let sources = [
        root.join(package_dir).join("src"),
        root.join(package_dir).join("Cargo.toml"),
        root.join("protocol").join("src"),
    ];
    newest_source(&sources).is_none_or(|newest| newest <= built)
}

/// The path of a workspace binary, built with cargo once per test process
/// if it is missing or older than its sources.
fn workspace_binary(package: &str, package_dir: &str, binary: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let path = target_profile_dir()?.join(binary);
    if is_fresh(&path, package_dir) {
        return Ok(path);
    }
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built
        .lock()
        .map_err(|_| anyhow!("a build of {binary} panicked"))?;
    if built.iter().any(|b| b == binary) {
        return path
            .is_file()
            .then_some(path.clone())
            .ok_or_else(|| anyhow!("{} is missing after building it", path.display()));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "-p", package, "--bin", binary]);
    if target_profile_dir()?.ends_with("release") {
        command.arg("--release");
    }
    eprintln!(
        "building {binary} ({} is missing or older than its sources)",
        path.display()
    );
    let status = command
        .status()
        .with_context(|| format!("running cargo build for {binary}"))?;
    built.push(binary.to_owned());
    if !status.success() || !path.is_file() {
        bail!(
            "{} is missing and `cargo build -p {package} --bin {binary}` failed ({status}); \
             run `cargo build --workspace` first",
            path.display()
        );
    }
    Ok(path)
}

/// The `connectoid-relay` binary.
pub fn relay_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("connectoid-relay", "relay", "connectoid-relay")
}

/// The `connectoid` CLI binary.
pub fn cli_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("connectoid", "client", "connectoid")
}

/// Spawns `command` (stdin null, stdout piped, stderr as the command set it)
/// and waits, at most [`START_TIMEOUT`], for it to print `listening
/// http=ADDR` (when `http`) and `listening udp=ADDR` (when `udp`), as the
/// relay and the benchmark's baselines do. The rest of its stdout is read to
/// the end on a thread, so the child never blocks on a full pipe. The child
/// is killed when it prints no address in time.
pub fn spawn_listening(
    mut command: Command,
    http: bool,
    udp: bool,
) -> anyhow::Result<(Child, Option<SocketAddr>, Option<SocketAddr>)> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Keep reading after the receiver is gone, so the pipe never fills.
            let _ = lines_tx.send(line);
        }
    });
    let (mut http_addr, mut udp_addr) = (None, None);
    while (http && http_addr.is_none()) || (udp && udp_addr.is_none()) {
        let Ok(line) = lines_rx.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            let status = child.wait().ok();
            bail!("{command:?} printed no address (exit status {status:?})");
        };
        if let Some(addr) = line.strip_prefix("listening http=") {
            http_addr = Some(addr.trim().parse().context("http address")?);
        } else if let Some(addr) = line.strip_prefix("listening udp=") {
            udp_addr = Some(addr.trim().parse().context("udp address")?);
        }
    }
    Ok((child, http_addr, udp_addr))
}

/// A `connectoid-relay` process on 127.0.0.1. Killed when dropped.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    http: SocketAddr,
    udp: Option<SocketAddr>,
    _data: tempfile::TempDir,
}

impl RelayProcess {
    /// Starts a relay with HTTP and UDP on free ports and its own data directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(true, &[])
    }

    /// Starts a relay; `udp` enables the UDP check; `extra` are more flags.
    pub fn start_with(udp: bool, extra: &[&str]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut command = Command::new(relay_binary()?);
        command
            .args(["--http", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(extra)
            .stderr(Stdio::null());
        if udp {
            command.args(["--udp", "127.0.0.1:0"]);
        }
        let (child, http, udp_addr) = spawn_listening(command, true, udp)?;
        Ok(Self {
            child,
            http: http.ok_or_else(|| anyhow!("no http address"))?,
            udp: udp_addr,
            _data: data,
        })
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The UDP check address, if enabled.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// The relay URL, `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> RelayUrl {
        url_of(self.http)
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM failed: {status}");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `http://ADDR/` as a relay URL.
pub fn url_of(addr: SocketAddr) -> RelayUrl {
    // Invariant: an http URL of a socket address is always a valid relay URL.
    #[allow(clippy::expect_used)]
    RelayUrl::parse(&format!("http://{addr}/")).expect("valid relay URL")
}
