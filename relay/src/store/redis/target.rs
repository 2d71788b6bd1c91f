//! Parsing and showing the Redis store URL (`redis://`, `redis+cluster://`):
//! which servers, the key prefix and the bound on each call. It connects to
//! nothing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ::redis::IntoConnectionInfo as _;

/// The key prefix when the URL names none.
pub(super) const DEFAULT_PREFIX: &str = "cnid";
/// How long one Redis call may take when the URL names no `timeout_ms`.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A `--store` URL for Redis could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis store URL: {0}")]
pub struct RedisUrlError(String);

/// Where the Redis store is: one server (`redis://[USER:PASSWORD@]HOST[:PORT][/DB]`)
/// or a Redis Cluster (`redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`,
/// any reachable nodes; the others are discovered), with optional query
/// parameters `prefix` (of every key, default `cnid`; letters, digits and
/// `_-.:` only) and `timeout_ms` (for each Redis call, default 2000).
///
/// `Display` and `Debug` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub(super) nodes: Vec<String>,
    pub(super) cluster: bool,
    pub(super) prefix: String,
    pub(super) timeout: Duration,
    pub(super) shown: String,
}

impl RedisTarget {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bound on each Redis call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same servers with another key prefix (tests give each store its own).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, RedisUrlError> {
        check_prefix(prefix)?;
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// The same servers with another bound on each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

fn check_prefix(prefix: &str) -> Result<(), RedisUrlError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(allowed) {
        return Err(RedisUrlError(format!(
            "prefix {prefix:?}: 1 to 64 letters, digits or _-.:"
        )));
    }
    Ok(())
}

impl FromStr for RedisTarget {
    type Err = RedisUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| RedisUrlError(why.to_owned());
        let (cluster, scheme, rest) = if let Some(rest) = text.strip_prefix("redis+cluster://") {
            (true, "redis+cluster", rest)
        } else if let Some(rest) = text.strip_prefix("redis://") {
            (false, "redis", rest)
        } else {
            return Err(err(
                "expected redis://HOST:PORT or redis+cluster://HOST:PORT[,HOST:PORT...]",
            ));
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (userinfo, hosts_and_path) = match main.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, main),
        };
        let (hosts, path) = hosts_and_path
            .split_once('/')
            .unwrap_or((hosts_and_path, ""));
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(err("a host is empty"));
        }
        if !cluster && hosts.len() > 1 {
            return Err(err(
                "several hosts need redis+cluster://HOST:PORT,HOST:PORT (Redis Cluster)",
            ));
        }
        let db = match path {
            "" => None,
            _ if cluster => return Err(err("a Redis Cluster has no database number")),
            db => Some(
                db.parse::<u32>()
                    .map_err(|_| err(&format!("database {db:?} is not a number")))?,
            ),
        };
        let mut prefix = DEFAULT_PREFIX.to_owned();
        let mut timeout = DEFAULT_TIMEOUT;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", value)) => {
                    check_prefix(value)?;
                    prefix = value.to_owned();
                }
                Some(("timeout_ms", value)) => match value.parse::<u64>() {
                    Ok(ms) if ms > 0 => timeout = Duration::from_millis(ms),
                    _ => return Err(err(&format!("timeout_ms {value:?}: a positive integer"))),
                },
                _ => {
                    return Err(err(&format!(
                        "unknown parameter {pair:?} (known: prefix, timeout_ms)"
                    )));
                }
            }
        }
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let db_path = db.map(|d| format!("/{d}")).unwrap_or_default();
        let nodes: Vec<String> = hosts
            .iter()
            .map(|host| format!("redis://{auth}{host}{db_path}"))
            .collect();
        for node in &nodes {
            node.as_str().into_connection_info().map_err(|e| {
                // The redis crate's message does not repeat the password.
                RedisUrlError(format!("{}: {e}", hide_password(node)))
            })?;
        }
        let shown = format!(
            "{scheme}://{}{}{db_path}",
            if userinfo.is_some() { "***@" } else { "" },
            hosts.join(",")
        );
        Ok(Self {
            nodes,
            cluster,
            prefix,
            timeout,
            shown,
        })
    }
}

fn hide_password(url: &str) -> String {
    match url.split_once("://").and_then(|(s, rest)| {
        rest.rsplit_once('@')
            .map(|(_, host)| format!("{s}://***@{host}"))
    }) {
        Some(hidden) => hidden,
        None => url.to_owned(),
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)?;
        let mut sep = '?';
        if self.prefix != DEFAULT_PREFIX {
            write!(f, "{sep}prefix={}", self.prefix)?;
            sep = '&';
        }
        if self.timeout != DEFAULT_TIMEOUT {
            write!(f, "{sep}timeout_ms={}", self.timeout.as_millis())?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}
