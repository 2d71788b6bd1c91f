//! Server processes the benchmark and the resilience suite measure: a relay
//! (or a baseline) as a child process whose CPU time and memory are read
//! from `/proc/<pid>/stat` and `/proc/<pid>/status`.
//!
//! [`ServerProcess`] reads the `listening http=ADDR` / `listening udp=ADDR`
//! lines every server here prints, and is killed (SIGKILL) when dropped.
//! [`RelayOptions`] starts `connectoid-relay` on a given data directory and
//! address, so a test can kill it and start it again on the same data and
//! port; its command comes from the relay crate's launcher
//! (`connectoid_relay::testing::RelayCommand`). This module measures
//! nothing by itself and asserts nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use connectoid_relay::testing::RelayCommand;

/// A server child process. Killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    http: Option<SocketAddr>,
    udp: Option<SocketAddr>,
}

impl ServerProcess {
    /// Spawns `command` (stdout piped, stdin null) and waits for it to
    /// print `listening http=ADDR` (when `http`) and `listening udp=ADDR`
    /// (when `udp`).
    pub fn spawn(command: Command, http: bool, udp: bool) -> anyhow::Result<Self> {
        let listening = crate::process::spawn_listening(command, http, udp)?;
        Ok(Self {
            child: listening.child,
            http: listening.http,
            udp: listening.udp,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The HTTP address it printed.
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.ok_or_else(|| anyhow!("no HTTP address"))
    }

    /// The UDP address it printed.
    pub fn udp_addr(&self) -> anyhow::Result<SocketAddr> {
        self.udp.ok_or_else(|| anyhow!("no UDP address"))
    }

    /// CPU time the process used so far (user + system, all threads,
    /// including exited ones), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid())
    }

    /// Resident memory (`VmRSS`) in bytes, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of `pid` (all its threads, also exited ones).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<u64>()
            .context("CPU ticks")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_nanos(
        total.saturating_mul(1_000_000_000) / clock_ticks(),
    ))
}

/// `VmRSS` of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed VmRSS line"))?
        .parse()
        .context("VmRSS")?;
    Ok(kib * 1024)
}

/// How to start a `connectoid-relay` process: on `data`, HTTP on `http`
/// (`127.0.0.1:0` by default), optionally UDP, no rate limits unless
/// `extra` sets them, quiet logs.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The relay binary.
    pub binary: PathBuf,
    /// Its data directory (kept across restarts).
    pub data: PathBuf,
    /// The HTTP listen address.
    pub http: String,
    /// The UDP listen address, if any.
    pub udp: Option<String>,
    /// Turn all four token buckets off (default true).
    pub no_rate_limits: bool,
    /// More flags.
    pub extra: Vec<String>,
}

impl RelayOptions {
    /// A relay on `data`, HTTP and UDP on free loopback ports, no rate limits.
    pub fn new(binary: &Path, data: &Path) -> Self {
        Self {
            binary: binary.to_owned(),
            data: data.to_owned(),
            http: "127.0.0.1:0".into(),
            udp: Some("127.0.0.1:0".into()),
            no_rate_limits: true,
            extra: Vec::new(),
        }
    }

    /// Adds flags.
    pub fn with(mut self, flags: &[&str]) -> Self {
        self.extra.extend(flags.iter().map(|f| (*f).to_owned()));
        self
    }

    /// Starts the relay and waits for its addresses.
    pub fn start(&self) -> anyhow::Result<ServerProcess> {
        let mut relay = RelayCommand::new()
            .binary(&self.binary)
            .http(&self.http)
            .data_dir(&self.data)
            .args(&self.extra);
        if let Some(udp) = &self.udp {
            relay = relay.udp_on(udp);
        }
        if self.no_rate_limits {
            relay = relay.no_rate_limits();
        }
        let mut command = relay.command()?;
        command.env("RUST_LOG", "error");
        ServerProcess::spawn(command, true, self.udp.is_some())
    }

    /// Starts the relay again on the same data directory and the same
    /// ports as `previous` had (after it was killed).
    pub fn restart(&mut self, previous: &ServerProcess) -> anyhow::Result<ServerProcess> {
        self.http = previous.http_addr()?.to_string();
        if self.udp.is_some() {
            self.udp = Some(previous.udp_addr()?.to_string());
        }
        // The port was just released by a killed process; binding may need a
        // moment on a busy machine. Bounded retries, not a time assertion.
        let mut last = None;
        for _ in 0..50 {
            match self.start() {
                Ok(process) => return Ok(process),
                Err(error) => {
                    last = Some(error);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("relay did not restart")))
    }
}
