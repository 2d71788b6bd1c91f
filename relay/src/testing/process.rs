//! Relay processes for tests: [`RelayCommand`] starts the `connectoid-relay`
//! binary on 127.0.0.1 port 0 and reads the addresses it prints
//! (`listening http=ADDR`, `listening udp=ADDR`); [`RelayProcess`] can kill
//! it (SIGKILL) or stop it (SIGTERM). [`workspace_binary`] finds a binary of
//! this workspace next to the test executable (`target/<profile>/`) and
//! builds it once with cargo if it is missing or older than its sources.
//!
//! It does not talk to the relay: tests use HTTP or a client for that.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use connectoid_protocol::RelayUrl;
use tempfile::TempDir;

/// The longest wait for a process to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A test process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program could not be run, or a file it needs not be made.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Building a workspace binary with cargo failed.
    #[error(
        "{path} is missing and `cargo build -p {package} --bin {binary}` failed ({status}); run \
         `cargo build --workspace` first"
    )]
    Build {
        /// The binary's expected path.
        path: String,
        /// Its package.
        package: String,
        /// The binary.
        binary: String,
        /// Cargo's exit status.
        status: ExitStatus,
    },
    /// The process did not print the address lines in time (or exited).
    #[error("{command} printed no address (exit status {status:?})")]
    NoAddress {
        /// The command, as `Debug` shows it.
        command: String,
        /// Its exit status, once it was killed or had exited.
        status: Option<ExitStatus>,
    },
    /// An address line did not hold a socket address.
    #[error("not a socket address in {line:?}")]
    BadAddress {
        /// The line.
        line: String,
    },
    /// A process was not ready or did not behave as expected.
    #[error("{0}")]
    NotReady(String),
}

impl LaunchError {
    pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// `target/<profile>/`, the directory holding the test executable's `deps/`.
fn target_profile_dir() -> Result<PathBuf, LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::io("finding the test executable"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| LaunchError::NotReady("the test executable has no directory".into()))?
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The workspace this crate was built in: the relay crate's parent.
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

/// The path of the workspace binary `binary` of `package` (in the directory
/// `package_dir` of the workspace), built with cargo once per test process
/// if it is missing or older than its sources.
pub fn workspace_binary(
    package: &str,
    package_dir: &str,
    binary: &str,
) -> Result<PathBuf, LaunchError> {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let path = target_profile_dir()?.join(binary);
    if is_fresh(&path, package_dir) {
        return Ok(path);
    }
    let mut built = BUILT
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if built.iter().any(|b| b == binary) {
        return match path.is_file() {
            true => Ok(path),
            false => Err(LaunchError::NotReady(format!(
                "{} is missing after building it",
                path.display()
            ))),
        };
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
        .map_err(LaunchError::io(format!("running cargo build for {binary}")))?;
    built.push(binary.to_owned());
    if !status.success() || !path.is_file() {
        return Err(LaunchError::Build {
            path: path.display().to_string(),
            package: package.to_owned(),
            binary: binary.to_owned(),
            status,
        });
    }
    Ok(path)
}

/// The `connectoid-relay` binary of this workspace ([`workspace_binary`]).
pub fn relay_binary() -> Result<PathBuf, LaunchError> {
    workspace_binary("connectoid-relay", "relay", "connectoid-relay")
}

/// A process that printed where it listens.
#[derive(Debug)]
pub struct Listening {
    /// The process.
    pub child: Child,
    /// The address of its `listening http=` (or `https=`) line, when one
    /// was awaited.
    pub http: Option<SocketAddr>,
    /// The address of its `listening udp=` line, when one was awaited.
    pub udp: Option<SocketAddr>,
}

/// Spawns `command` (stdin null, stdout piped, stderr as the command set it)
/// and waits, at most 60 s, for it to print `listening http=ADDR` (when
/// `http`) and `listening udp=ADDR` (when `udp`), as the relay and the
/// benchmark's baselines do. The rest of its stdout is read to the end on a
/// thread, so the child never blocks on a full pipe nor fails on a closed
/// one. The child is killed when it prints no address in time.
pub fn spawn_listening(
    mut command: Command,
    http: bool,
    udp: bool,
) -> Result<Listening, LaunchError> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(LaunchError::io(format!("starting {command:?}")))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(LaunchError::NotReady("no stdout pipe".into()));
    };
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Keep reading after the receiver is gone, so the pipe never fills.
            let _ = lines_tx.send(line);
        }
    });
    let parse = |line: &str, addr: &str| {
        addr.trim().parse().map_err(|_| LaunchError::BadAddress {
            line: line.to_owned(),
        })
    };
    let mut listening = Listening {
        child,
        http: None,
        udp: None,
    };
    while (http && listening.http.is_none()) || (udp && listening.udp.is_none()) {
        let Ok(line) = lines_rx.recv_timeout(START_TIMEOUT) else {
            let _ = listening.child.kill();
            return Err(LaunchError::NoAddress {
                command: format!("{command:?}"),
                status: listening.child.wait().ok(),
            });
        };
        if let Some(addr) = line
            .strip_prefix("listening http=")
            .or_else(|| line.strip_prefix("listening https="))
        {
            listening.http = Some(parse(&line, addr)?);
        } else if let Some(addr) = line.strip_prefix("listening udp=") {
            listening.udp = Some(parse(&line, addr)?);
        }
    }
    Ok(listening)
}

/// How to start a `connectoid-relay` process: HTTP on `127.0.0.1:0`, a
/// temporary data directory of its own, no UDP, the relay's default rate
/// limits, stderr discarded; each method changes one of these.
#[derive(Debug, Clone)]
pub struct RelayCommand {
    binary: Option<PathBuf>,
    http: String,
    data: Option<PathBuf>,
    udp: Option<String>,
    args: Vec<OsString>,
    log: Option<String>,
    netns: Option<String>,
}

impl Default for RelayCommand {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayCommand {
    /// The defaults above.
    pub fn new() -> Self {
        Self {
            binary: None,
            http: "127.0.0.1:0".into(),
            data: None,
            udp: None,
            args: Vec::new(),
            log: None,
            netns: None,
        }
    }

    /// Runs the relay inside the network namespace `name` (made by the
    /// caller) with `ip netns exec`, which execs the relay in place: the
    /// process id is the relay's.
    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Runs this binary rather than [`relay_binary`]'s (the relay's own
    /// tests pass cargo's `CARGO_BIN_EXE_connectoid-relay`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Listens for HTTP on `addr` (`IP:PORT`) instead of `127.0.0.1:0`, to
    /// start a relay again on the port it had.
    pub fn http(mut self, addr: impl Into<String>) -> Self {
        self.http = addr.into();
        self
    }

    /// Keeps the data in `dir` (which outlives the process) instead of a
    /// temporary directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data = Some(dir.into());
        self
    }

    /// Enables the UDP check on `127.0.0.1:0`.
    pub fn udp(self) -> Self {
        self.udp_on("127.0.0.1:0")
    }

    /// Enables the UDP check on `addr` (`IP:PORT`).
    pub fn udp_on(mut self, addr: impl Into<String>) -> Self {
        self.udp = Some(addr.into());
        self
    }

    /// Turns all four token buckets off.
    pub fn no_rate_limits(self) -> Self {
        self.args([
            "--send-rate-ip",
            "off",
            "--send-rate-mailbox",
            "off",
            "--check-rate-ip",
            "off",
            "--check-rate-mailbox",
            "off",
        ])
    }

    /// Adds flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets `RUST_LOG` to `filter` and lets the relay's stderr through to the
    /// test's.
    pub fn log(mut self, filter: impl Into<String>) -> Self {
        self.log = Some(filter.into());
        self
    }

    /// The command this would run, for callers that start and watch the
    /// process themselves (the benchmark measures its CPU time). Needs
    /// [`RelayCommand::data_dir`]: a temporary directory would not outlive
    /// this call.
    pub fn command(&self) -> Result<Command, LaunchError> {
        let data = self.data.as_deref().ok_or_else(|| {
            LaunchError::NotReady("RelayCommand::command needs a data_dir".into())
        })?;
        self.command_on(data)
    }

    /// The command, with its data in `data`.
    fn command_on(&self, data: &Path) -> Result<Command, LaunchError> {
        let binary = match &self.binary {
            Some(binary) => binary.clone(),
            None => relay_binary()?,
        };
        let mut command = match &self.netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name]).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.args(["--http", &self.http]).arg("--data").arg(data);
        if let Some(udp) = &self.udp {
            command.args(["--udp", udp]);
        }
        command.args(&self.args);
        match &self.log {
            Some(filter) => command.env("RUST_LOG", filter).stderr(Stdio::inherit()),
            None => command.stderr(Stdio::null()),
        };
        Ok(command)
    }

    /// Starts the relay and waits for its addresses.
    pub fn start(&self) -> Result<RelayProcess, LaunchError> {
        let (temp, data) = match &self.data {
            Some(data) => (None, data.clone()),
            None => {
                let temp =
                    tempfile::tempdir().map_err(LaunchError::io("making a data directory"))?;
                let path = temp.path().to_owned();
                (Some(temp), path)
            }
        };
        let command = self.command_on(&data)?;
        let listening = spawn_listening(command, true, self.udp.is_some())?;
        let http = listening
            .http
            .ok_or_else(|| LaunchError::NotReady("no HTTP address".into()))?;
        Ok(RelayProcess {
            child: listening.child,
            http,
            udp: listening.udp,
            _data: temp,
        })
    }
}

/// A running `connectoid-relay` process on 127.0.0.1, made by
/// [`RelayCommand::start`]. Killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    http: SocketAddr,
    udp: Option<SocketAddr>,
    _data: Option<TempDir>,
}

impl RelayProcess {
    /// A relay with HTTP and UDP on free ports, its own data directory and
    /// the default rate limits.
    pub fn start() -> Result<Self, LaunchError> {
        RelayCommand::new().udp().start()
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process at once (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM, a graceful shutdown) and waits
    /// for it to exit.
    pub fn stop(&mut self) -> Result<ExitStatus, LaunchError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(LaunchError::io("running kill -TERM"))?;
        if !status.success() {
            return Err(LaunchError::NotReady(format!(
                "kill -TERM failed: {status}"
            )));
        }
        self.child
            .wait()
            .map_err(LaunchError::io("waiting for the relay to exit"))
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
