//! A network lab for tests: Linux network namespaces joined by veth pairs,
//! with routers that translate addresses the way real ones do.
//!
//! [`Lab::start`] makes a "public" network (a bridge in a namespace of its
//! own, 203.0.113.0/24) with one namespace for the relay on 203.0.113.1;
//! [`Lab::add_device`] adds a device behind a router of a [`RouterKind`]:
//!
//! ```text
//!   relay 203.0.113.1 ──┐
//!                       ├─ hub (bridge) ── router (wan 203.0.113.N, nft NAT) ── device 10.0.I.2
//!   device 203.0.113.M ─┘                  cgn (wan 203.0.113.N) ── home (wan 100.64.I.2) ── device
//! ```
//!
//! Namespaces are named `cnl<pid>-<lab>-<role>`, so labs of parallel tests
//! (threads or processes) never collide. Everything the lab makes is inside
//! its namespaces (interfaces, addresses, routes, the routers' forwarding
//! switch and nftables rules); nothing of the host is changed. Dropping the
//! [`Lab`] stops its relay and deletes its namespaces, also when a test
//! panics; namespaces left by a process that was killed are deleted by the
//! next lab made on the machine. It needs root, `ip` (iproute2) and `nft`
//! (nftables): [`Lab::start_or_skip`] turns their absence into a skip, or
//! into a failure under `CI=true`.
//!
//! It does not shape traffic beyond dropping packets at random (the kernel
//! here has no `tc netem`), does not do IPv6, and gives every home network
//! its own subnet (real ones all use the same few).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use connectoid::protocol::link::RelayUrl;

use crate::process::{RelayCommand, RelayProcess, url_of};

/// The relay's address on the public network.
pub const RELAY_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The relay's HTTP port.
pub const RELAY_HTTP_PORT: u16 = 80;
/// The relay's UDP port (check datagrams and STUN).
pub const RELAY_UDP_PORT: u16 = 3478;
/// How many devices one lab can hold (the public /24 less the relay's and
/// spare addresses).
pub const MAX_DEVICES: u32 = 200;
/// The share of packets the [`RouterKind::Lossy`] router drops, in percent,
/// in each direction.
pub const LOSS_PERCENT: u32 = 5;

/// Every namespace name starts with this, then the owning process id.
const NAME_PREFIX: &str = "cnl";

/// What stands between a device and the public network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RouterKind {
    /// No router: the device has a public address.
    None,
    /// A home router: nftables `masquerade`, which keeps a flow's source
    /// port when it is free, so one socket gets one public address and port
    /// for every destination (endpoint-independent mapping), and lets in
    /// only what belongs to a flow it has seen go out (connection tracking:
    /// address- and port-dependent filtering). Unsolicited packets to the
    /// router are dropped, not answered.
    Home,
    /// A symmetric NAT: `masquerade random`, a new public port for every
    /// destination address and port (address- and port-dependent mapping),
    /// filtering as [`RouterKind::Home`].
    Symmetric,
    /// A carrier-grade NAT (100.64.0.0/10 inside) in front of a home
    /// router, both [`RouterKind::Home`]-like.
    DoubleNat,
    /// A [`RouterKind::Home`] router that drops [`LOSS_PERCENT`] % of the
    /// packets it forwards, either way, at random (`numgen random`).
    Lossy,
}

impl RouterKind {
    /// Every kind, in the order tables list them.
    pub const ALL: [RouterKind; 5] = [
        RouterKind::None,
        RouterKind::Home,
        RouterKind::Symmetric,
        RouterKind::DoubleNat,
        RouterKind::Lossy,
    ];

    /// A short name for tables and namespace names.
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::None => "none",
            RouterKind::Home => "home",
            RouterKind::Symmetric => "symmetric",
            RouterKind::DoubleNat => "double-nat",
            RouterKind::Lossy => "lossy",
        }
    }

    /// Whether a socket behind this kind has one public address and port
    /// for every destination, the one the relay reports: true for all
    /// kinds but [`RouterKind::Symmetric`] (with no router, the address is
    /// the device's own).
    pub fn endpoint_independent(self) -> bool {
        !matches!(self, RouterKind::Symmetric)
    }

    /// Whether two devices behind `self` and `other` must connect directly:
    /// one of them has a public address (the other dials it), or both map
    /// endpoint-independently (each dials the other's reflexive address;
    /// the filters open for the flow each side sends out).
    pub fn direct_with(self, other: RouterKind) -> bool {
        self == RouterKind::None
            || other == RouterKind::None
            || (self.endpoint_independent() && other.endpoint_independent())
    }
}

impl std::fmt::Display for RouterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A device in the lab: a namespace with one address and a default route.
#[derive(Debug, Clone)]
pub struct Device {
    /// The namespace its processes run in ([`Device::command`]).
    pub namespace: String,
    /// The router in front of it.
    pub kind: RouterKind,
    /// Its own address.
    pub address: Ipv4Addr,
    /// The address the public network sees it from (its own for
    /// [`RouterKind::None`], else the outer router's).
    pub public_address: Ipv4Addr,
}

impl Device {
    /// `program` to be run inside the device's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns_command(&self.namespace, program)
    }
}

/// `ip netns exec NAMESPACE PROGRAM`.
pub fn netns_command(namespace: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace]).arg(program);
    command
}

/// A lab: its namespaces, the relay running in one of them, and the
/// devices added so far. See the module documentation.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    hub: String,
    relay_namespace: String,
    /// Every namespace made, deleted in reverse order on drop.
    namespaces: Mutex<Vec<String>>,
    next_device: AtomicU32,
    relay: Mutex<Option<RelayProcess>>,
}

impl Lab {
    /// Builds the public network with the relay's namespace (the relay is
    /// started by [`Lab::start_relay`]).
    pub fn start() -> anyhow::Result<Self> {
        static LABS: AtomicU32 = AtomicU32::new(0);
        preflight()?;
        delete_stale_namespaces();
        let number = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NAME_PREFIX}{}-{number}", std::process::id());
        let lab = Self {
            hub: format!("{prefix}-hub"),
            relay_namespace: format!("{prefix}-relay"),
            prefix,
            namespaces: Mutex::new(Vec::new()),
            next_device: AtomicU32::new(1),
            relay: Mutex::new(None),
        };
        lab.add_namespace(&lab.hub)?;
        ip(&["-n", &lab.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lab.hub, "link", "set", "br0", "up"])?;
        lab.add_namespace(&lab.relay_namespace)?;
        lab.attach_to_hub(&lab.relay_namespace, "relay", RELAY_ADDRESS)?;
        Ok(lab)
    }

    /// [`Lab::start`], or `None` with a message on stderr when the machine
    /// cannot build a lab (not root, no `ip` or `nft`); under `CI=true` that
    /// is a panic with the reason instead, so CI never skips the lab.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(lab) => Some(lab),
            Err(error) if is_ci() => {
                panic!("{test}: the network lab cannot be built under CI=true: {error:#}")
            }
            Err(error) => {
                eprintln!("SKIPPED {test}: the network lab cannot be built here: {error:#}");
                None
            }
        }
    }

    /// Starts the relay in its namespace: HTTP on
    /// [`RELAY_ADDRESS`]:[`RELAY_HTTP_PORT`], UDP (checks and STUN) on
    /// [`RELAY_UDP_PORT`], no rate limits, plus `args`. Returns its URL.
    pub fn start_relay(&self, args: &[&str]) -> anyhow::Result<RelayUrl> {
        let http = SocketAddr::from((RELAY_ADDRESS, RELAY_HTTP_PORT));
        let udp = SocketAddr::from((RELAY_ADDRESS, RELAY_UDP_PORT));
        let relay = RelayCommand::new()
            .netns(self.relay_namespace.clone())
            .http(http.to_string())
            .udp_on(udp.to_string())
            .no_rate_limits()
            .args(args.iter().copied())
            .start()
            .context("starting the relay in the lab")?;
        let url = url_of(relay.http_addr());
        *lock(&self.relay) = Some(relay);
        Ok(url)
    }

    /// The relay's UDP address (checks and STUN).
    pub fn relay_udp_addr(&self) -> SocketAddr {
        SocketAddr::from((RELAY_ADDRESS, RELAY_UDP_PORT))
    }

    /// The namespace the relay runs in.
    pub fn relay_namespace(&self) -> &str {
        &self.relay_namespace
    }

    /// Adds a device behind a new router of `kind`.
    pub fn add_device(&self, kind: RouterKind) -> anyhow::Result<Device> {
        let index = self.next_device.fetch_add(1, Ordering::Relaxed);
        if index > MAX_DEVICES {
            bail!("a lab holds at most {MAX_DEVICES} devices");
        }
        let public = Ipv4Addr::new(203, 0, 113, u8::try_from(10 + index)?);
        let octet = u8::try_from(index)?;
        let device = format!("{}-d{index}", self.prefix);
        self.add_namespace(&device)?;
        let lan_device = Ipv4Addr::new(10, 0, octet, 2);
        let lan_router = Ipv4Addr::new(10, 0, octet, 1);
        match kind {
            RouterKind::None => {
                self.attach_to_hub(&device, &format!("d{index}"), public)?;
                return Ok(Device {
                    namespace: device,
                    kind,
                    address: public,
                    public_address: public,
                });
            }
            RouterKind::Home | RouterKind::Symmetric | RouterKind::Lossy => {
                let router = format!("{}-r{index}", self.prefix);
                self.add_namespace(&router)?;
                self.attach_to_hub(&router, &format!("r{index}"), public)?;
                link_lan(&router, lan_router, &device, "eth0", lan_device)?;
                nat(&router, kind)?;
            }
            RouterKind::DoubleNat => {
                let cgn = format!("{}-c{index}", self.prefix);
                let home = format!("{}-r{index}", self.prefix);
                self.add_namespace(&cgn)?;
                self.add_namespace(&home)?;
                self.attach_to_hub(&cgn, &format!("c{index}"), public)?;
                link_lan(
                    &cgn,
                    Ipv4Addr::new(100, 64, octet, 1),
                    &home,
                    "wan",
                    Ipv4Addr::new(100, 64, octet, 2),
                )?;
                link_lan(&home, lan_router, &device, "eth0", lan_device)?;
                nat(&cgn, RouterKind::Home)?;
                nat(&home, RouterKind::Home)?;
            }
        }
        Ok(Device {
            namespace: device,
            kind,
            address: lan_device,
            public_address: public,
        })
    }

    /// Makes namespace `name` with its loopback up, and records it.
    fn add_namespace(&self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        lock(&self.namespaces).push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Joins `namespace` to the hub's bridge with a veth pair (`wan` on its
    /// side, `port` on the hub's) and gives it `address`/24.
    fn attach_to_hub(&self, namespace: &str, port: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        let hub = self.hub.as_str();
        ip(&[
            "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "wan", "netns",
            namespace,
        ])?;
        ip(&["-n", hub, "link", "set", port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "wan",
        ])?;
        ip(&["-n", namespace, "link", "set", "wan", "up"])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The relay first: a namespace with a process in it outlives its name.
        if let Some(mut relay) = lock(&self.relay).take() {
            relay.kill();
        }
        let namespaces = std::mem::take(&mut *lock(&self.namespaces));
        for name in namespaces.iter().rev() {
            if let Err(error) = ip(&["netns", "del", name]) {
                eprintln!("lab: deleting namespace {name}: {error:#}");
            }
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere (the lab must still clean up).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Fails with the reason when this machine cannot build a lab.
fn preflight() -> anyhow::Result<()> {
    let uid = run(Command::new("id").arg("-u")).context("running id -u")?;
    if uid.trim() != "0" {
        bail!(
            "the lab needs root (network namespaces and nftables); uid is {}",
            uid.trim()
        );
    }
    run(Command::new("ip").arg("-V"))
        .context("`ip` (iproute2) is needed: apt-get install iproute2")?;
    run(Command::new("nft").arg("--version"))
        .context("`nft` (nftables) is needed: apt-get install nftables")?;
    Ok(())
}

/// Deletes the namespaces of labs whose process is gone (killed before its
/// labs were dropped).
fn delete_stale_namespaces() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A veth pair `lan` (in `router`, `router_address`/24) to `inner_name`
/// (in `inner`, `inner_address`/24, default route via the router).
fn link_lan(
    router: &str,
    router_address: Ipv4Addr,
    inner: &str,
    inner_name: &str,
    inner_address: Ipv4Addr,
) -> anyhow::Result<()> {
    let (router_cidr, inner_cidr) = (
        format!("{router_address}/24"),
        format!("{inner_address}/24"),
    );
    let via = router_address.to_string();
    ip(&[
        "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", inner_name, "netns",
        inner,
    ])?;
    ip(&["-n", router, "addr", "add", &router_cidr, "dev", "lan"])?;
    ip(&["-n", router, "link", "set", "lan", "up"])?;
    ip(&["-n", inner, "addr", "add", &inner_cidr, "dev", inner_name])?;
    ip(&["-n", inner, "link", "set", inner_name, "up"])?;
    ip(&["-n", inner, "route", "add", "default", "via", &via])?;
    Ok(())
}

/// Turns on forwarding in `router` (its own namespace's switch) and loads
/// its nftables rules: NAT from `lan` out of `wan`, connection-tracking
/// filters, and for [`RouterKind::Lossy`] the random drop.
fn nat(router: &str, kind: RouterKind) -> anyhow::Result<()> {
    run(netns_command(router, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
    let masquerade = match kind {
        RouterKind::Symmetric => "masquerade random",
        _ => "masquerade",
    };
    let loss = match kind {
        RouterKind::Lossy => format!("numgen random mod 100 < {LOSS_PERCENT} drop"),
        _ => String::new(),
    };
    // The input chain drops what comes in on `wan` unasked for, so a peer's
    // early packet leaves no connection-tracking entry that would make the
    // NAT pick another port for the flow out (and no ICMP answer).
    let rules = format!(
        r#"
table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" {masquerade}
  }}
}}
table inet filter {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    {loss}
    iifname "lan" oifname "wan" accept
    iifname "wan" oifname "lan" ct state established,related accept
  }}
}}
"#
    );
    let mut command = netns_command(router, "nft");
    command.args(["-f", "-"]);
    run_with_stdin(command, rules.as_bytes())
}

/// Runs `ip ARGS`.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args)).map(drop)
}

/// Runs `command`; its stdout, or an error with its stderr.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    checked(command, output)
}

fn run_with_stdin(mut command: Command, stdin: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin)?;
    }
    let output = child.wait_with_output()?;
    checked(&command, output).map(drop)
}

fn checked(command: &Command, output: Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_pairs_must_connect_directly() {
        use RouterKind::*;
        let direct: Vec<_> = RouterKind::ALL
            .iter()
            .flat_map(|a| RouterKind::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.direct_with(*b))
            .collect();
        // Everything but symmetric with a NAT on the other side.
        assert!(direct.contains(&(Symmetric, None)));
        assert!(direct.contains(&(DoubleNat, Lossy)));
        for kind in [Home, Symmetric, DoubleNat, Lossy] {
            assert!(!Symmetric.direct_with(kind), "{kind}");
            assert!(!kind.direct_with(Symmetric), "{kind}");
        }
        // 25 ordered pairs less the 7 with symmetric and a NAT on the other side.
        assert_eq!(direct.len(), 18);
    }
}
