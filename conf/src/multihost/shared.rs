//! A network shared across hosts through etcd: the `etcd` key of the plugin's config, and what
//! the per-host sync process (`embedns-syncd`) and the plugin tell each other through the
//! network's directory (the config it runs with, its status).
//!
//! The keys in etcd are `keys.rs`'s; the values, `peer.rs`'s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::multihost::keys::Layout;
use crate::ConfError;

/// Default key prefix in etcd.
pub const DEFAULT_PREFIX: &str = "/embedns";
/// Default lease TTL in seconds. A host that stops renewing its lease (power off, cut off
/// from etcd) has its names gone everywhere else within TTL + 1 s, or TTL + 4 s when its etcd
/// member was the cluster's leader (a new leader is elected in up to 2 election timeouts,
/// etcd's default 1 s, and extends every lease by one): 10 s with the default.
pub const DEFAULT_TTL_SECS: u64 = 6;
/// What the worst case adds to the TTL (see [`DEFAULT_TTL_SECS`]).
pub const EXPIRY_SLACK_SECS: u64 = 4;
/// The bounds of `etcd.ttl`: etcd's own minimum lease is 2 s (it raises shorter ones to its
/// election timeout anyway); longer than 5 minutes would keep a dead host's names too long.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 2..=300;

/// `etcd` in the plugin's config: where the network's records are shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdConf {
    /// Client URLs (`http://10.0.0.1:2379`, `https://…` with `tls`), tried in turn.
    pub endpoints: Vec<String>,
    /// Key prefix (default `/embedns`): networks of the same name under one prefix are one.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This host's name in the keys (default: the machine's hostname). Must be unique among
    /// the hosts sharing the network.
    #[serde(default)]
    pub host: Option<String>,
    /// Lease TTL in seconds (default 6, 2..=300).
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// TLS to etcd: a CA to trust and, optionally, a client certificate and key.
    #[serde(default)]
    pub tls: Option<EtcdTls>,
    /// An etcd user (`etcdctl auth enable`): with a role per host, each host may write only its
    /// own keys (docs/multihost.md's RBAC recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EtcdAuth>,
    /// R30's bounds on what this host takes in from the other hosts of the network (absent:
    /// the defaults, [`NetworkBounds::DEFAULT`]). Written only when set, so a sync process of
    /// an earlier release still reads the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<NetworkBounds>,
}

/// `etcd.bounds`: how much of the other hosts' records one host holds, in all, whatever
/// they write (R30). Past a bound, values are skipped and counted, and `embedns status` says
/// which bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkBounds {
    /// Records of all other hosts together.
    #[serde(default = "NetworkBounds::default_records")]
    pub records: usize,
    /// Bytes of their values together (each is at most 16 KiB: R31).
    #[serde(default = "NetworkBounds::default_bytes")]
    pub bytes: usize,
    /// Other hosts with records here, and host-name claims held (R32).
    #[serde(default = "NetworkBounds::default_hosts")]
    pub hosts: usize,
}

impl NetworkBounds {
    /// 65,536 records, 128 MiB, 1,024 hosts: past what a real network meets (a 1,000-host
    /// cluster of 60 pods each), within what /run and memory take on any host.
    pub const DEFAULT: NetworkBounds = NetworkBounds {
        records: 65_536,
        bytes: 128 << 20,
        hosts: 1024,
    };

    fn default_records() -> usize {
        Self::DEFAULT.records
    }

    fn default_bytes() -> usize {
        Self::DEFAULT.bytes
    }

    fn default_hosts() -> usize {
        Self::DEFAULT.hosts
    }
}

/// `etcd.auth`: an etcd user and the file holding its password (root's, 0600: a password in
/// the conflist would be readable by every user of the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdAuth {
    pub user: String,
    pub password_file: PathBuf,
}

/// `etcd.tls`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA certificate the servers' certificates are checked against.
    pub ca: PathBuf,
    /// The client certificate (with `key`) for etcd's `--client-cert-auth`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_SECS
}

impl EtcdConf {
    /// Validates the config and settles the host name (the machine's when unset).
    /// The bounds in force (R30).
    pub fn bounds(&self) -> NetworkBounds {
        self.bounds.unwrap_or(NetworkBounds::DEFAULT)
    }

    pub fn settle(mut self) -> Result<EtcdConf, ConfError> {
        let bad = |m: String| Err(ConfError::InvalidConfig(format!("etcd: {m}")));
        if let Some(b) = &self.bounds {
            if b.records == 0 || b.bytes == 0 || b.hosts == 0 {
                return bad("bounds.records, bounds.bytes and bounds.hosts must be over 0".into());
            }
        }
        if self.endpoints.is_empty() {
            return bad("endpoints must name at least one etcd client URL".into());
        }
        for e in &self.endpoints {
            let https = e.starts_with("https://");
            if !https && !e.starts_with("http://") {
                return bad(format!("endpoint {e:?} must be an http:// or https:// URL"));
            }
            if https && self.tls.is_none() {
                return bad(format!("endpoint {e:?} is https: set tls.ca"));
            }
        }
        if let Some(t) = &self.tls {
            if t.cert.is_some() != t.key.is_some() {
                return bad("tls.cert and tls.key go together".into());
            }
        }
        if let Some(a) = &self.auth {
            if a.user.is_empty() || a.user.contains(char::is_whitespace) {
                return bad(format!("auth.user {:?} must be one word", a.user));
            }
            if !a.password_file.is_absolute() {
                return bad(format!(
                    "auth.passwordFile {} must be an absolute path",
                    a.password_file.display()
                ));
            }
        }
        let prefix = self.prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.contains("//") {
            return bad(format!(
                "prefix {:?} must start with / (e.g. /embedns)",
                self.prefix
            ));
        }
        self.prefix = prefix.to_string();
        if !TTL_RANGE.contains(&self.ttl) {
            return bad(format!(
                "ttl {} is outside {}..={} seconds",
                self.ttl,
                TTL_RANGE.start(),
                TTL_RANGE.end()
            ));
        }
        let host = match self.host.take() {
            Some(h) => h,
            None => nix::unistd::gethostname()
                .map_err(|e| {
                    ConfError::InvalidConfig(format!("etcd.host unset and no hostname: {e}"))
                })?
                .to_string_lossy()
                .into_owned(),
        };
        crate::names::host(&host)?;
        self.host = Some(host);
        Ok(self)
    }

    /// The TCP ports of the endpoints (2379 where a URL names none): the only ones the sync
    /// process may connect to.
    pub fn endpoint_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = Vec::new();
        for e in &self.endpoints {
            let authority = e
                .split("://")
                .nth(1)
                .unwrap_or(e)
                .split('/')
                .next()
                .unwrap_or("");
            // `host:port` or `[v6]:port`; a bare `[v6]` leaves "…]" after its last ':'.
            let port = authority
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(2379);
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// The host name (set by [`EtcdConf::settle`]).
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or_default()
    }

    /// The keys of `network` under this config's prefix (`keys.rs`).
    pub fn keys<'a>(&'a self, network: &'a str) -> Layout<'a> {
        Layout::new(&self.prefix, network)
    }
}

/// What the sync process reports in `networks/<net>/.sync.json` (read by `embedns status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub pid: u32,
    pub host: String,
    /// The endpoint the process talks to now, `None` while it reaches none.
    pub endpoint: Option<String>,
    /// The etcd revision the local index reflects.
    pub revision: i64,
    /// Milliseconds since the Unix epoch when etcd last answered (a watch event, a write, a
    /// lease renewal). The file is rewritten at each, so while the process is in step it is
    /// at most one renewal period (TTL/3) old.
    pub heard_at_ms: u64,
    /// This host's records in etcd.
    pub published: usize,
    /// Other hosts' records held locally, and how many hosts they come from.
    pub remote_records: usize,
    pub remote_hosts: usize,
    /// Write transactions sent to etcd so far (puts, deletes, the host's claim, the lease's
    /// revocation).
    #[serde(default)]
    pub writes: u64,
    /// The lease this host's keys live by (kept across sessions while it is alive).
    #[serde(default)]
    pub lease: i64,
    /// Full listings of the network's prefix so far: one per session that could not resume
    /// the last one's watch (a new lease, a compacted revision).
    #[serde(default)]
    pub listings: u64,
    /// How long the last listing took, its pages and the renewals between them (ms).
    #[serde(default)]
    pub listing_ms: u64,
    /// The last error talking to etcd, cleared once it answers again.
    pub last_error: Option<String>,
    /// Other hosts' values skipped (not a record of the network under its key, names or
    /// addresses this host would not serve, over a cap: `embedns-syncd`'s log says which).
    #[serde(default)]
    pub skipped: u64,
    /// Who holds this host's name on the network, when its claim was refused (this host then
    /// publishes nothing).
    #[serde(default)]
    pub claim_refused: Option<String>,
    /// The network's bound (R30) that last made a value be skipped (`65536 records`, `…
    /// bytes`, `… hosts`); absent from earlier releases' status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_reached: Option<String>,
    /// Every other host seen on the network.
    #[serde(default)]
    pub hosts: Vec<RemoteHost>,
}

/// Another host of a shared network, as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteHost {
    pub name: String,
    /// Its records held here.
    pub records: usize,
    /// Whether it holds its name's claim (put with its lease: gone once the host is).
    pub claimed: bool,
    /// When a change of its records was last seen, ms since the epoch (0: none yet).
    pub changed_at_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: serde_json::Value) -> Result<EtcdConf, ConfError> {
        serde_json::from_value::<EtcdConf>(json)
            .map_err(|e| ConfError::InvalidConfig(e.to_string()))?
            .settle()
    }

    #[test]
    fn defaults_and_keys() {
        let c =
            conf(serde_json::json!({"endpoints": ["http://127.0.0.1:2379"], "host": "a"})).unwrap();
        assert_eq!((c.prefix.as_str(), c.ttl), ("/embedns", 6));
        assert_eq!(c.keys("n").network(), "/embedns/n/");
        assert_eq!(c.keys("n").host_records(c.host()), "/embedns/n/a/");
        assert_eq!(c.keys("n").claim(c.host()), "/embedns/n/a");
        let c = conf(serde_json::json!({"endpoints": ["http://e:1"], "prefix": "/x/"})).unwrap();
        assert_eq!(c.prefix, "/x");
        assert!(!c.host().is_empty(), "the machine's hostname");
    }

    #[test]
    fn endpoint_ports() {
        let c = conf(serde_json::json!({"endpoints": ["http://10.0.0.1:2379", "http://e:12379", "http://10.0.0.2", "http://[fd00::1]:2381", "http://[fd00::2]"]})).unwrap();
        assert_eq!(c.endpoint_ports(), vec![2379, 12379, 2381]);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (j, says) in [
            (serde_json::json!({"endpoints": []}), "at least one"),
            (
                serde_json::json!({"endpoints": ["10.0.0.1:2379"]}),
                "http://",
            ),
            (serde_json::json!({"endpoints": ["https://e:1"]}), "tls.ca"),
            (
                serde_json::json!({"endpoints": ["http://e:1"], "ttl": 1}),
                "outside",
            ),
            (
                serde_json::json!({"endpoints": ["http://e:1"], "prefix": "x"}),
                "start with /",
            ),
            (
                serde_json::json!({"endpoints": ["http://e:1"], "host": "a/b"}),
                "host",
            ),
            (
                serde_json::json!({"endpoints": ["http://e:1"], "tls": {"ca": "/c", "cert": "/x"}}),
                "go together",
            ),
            (
                serde_json::json!({"endpoints": ["http://e:1"], "ttls": 3}),
                "unknown field",
            ),
        ] {
            let e = conf(j.clone()).unwrap_err().to_string();
            assert!(e.contains(says), "{j}: {e}");
        }
    }
}
