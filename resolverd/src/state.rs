//! The resolver's shared state and the locking story: one current-thread runtime, so the
//! locks below are never contended; they exist because tasks and the control channel share
//! the state. The hot path takes `networks` for reading only; `reload` writes. Peers are not
//! held here: each network's shared index is read at query time (`network_index.rs`), so a peer's
//! change reaches this resolver without waking it.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use embedns_conf::paths::StatePaths;
use embedns_conf::record::{CacheSettings, Record};
use embedns_conf::resolv::ResolvConf;
use embedns_conf::sandbox;
use embedns_conf::store::NetworkStore;

use crate::cache::Cache;
use crate::network_index::NetworkIndex;

/// One upstream nameserver and where it is reached from (R18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// A loopback address from the host's resolv.conf: queried from the host netns (R18).
    pub from_host: bool,
}

/// Forwarding settings, derived from the container's own records.
#[derive(Debug, Clone)]
pub struct UpstreamSet {
    pub list: Vec<Upstream>,
    pub timeout: Duration,
    pub max_inflight: usize,
    /// The cache of forwarded answers (R34), from the first of the container's records.
    pub cache: CacheSettings,
    /// Which set this is: every recomputation makes a new one, which empties the cache.
    pub generation: u64,
    /// Host resolv.conf files the list was read from (R22), and their stamps then.
    pub host_files: Vec<PathBuf>,
    host_stamps: Vec<Stamp>,
}

impl Default for UpstreamSet {
    fn default() -> Self {
        UpstreamSet {
            list: Vec::new(),
            timeout: Duration::from_millis(embedns_conf::defaults::UPSTREAM_TIMEOUT_MS),
            max_inflight: embedns_conf::defaults::MAX_INFLIGHT,
            cache: CacheSettings::default(),
            generation: 0,
            host_files: Vec::new(),
            host_stamps: Vec::new(),
        }
    }
}

/// Per-resolver counters, read by `embedns status`.
#[derive(Debug, Default)]
pub struct QueryCounters {
    pub local: AtomicU64,
    pub forwarded: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    /// Forwarded queries answered from the cache (R34); not counted in `forwarded`.
    pub cached: AtomicU64,
    /// Queries that joined the same question in flight, to be answered with its reply
    /// (R34a); not counted in `forwarded`.
    pub coalesced: AtomicU64,
    pub upstream_micros: AtomicU64,
}

impl QueryCounters {
    /// Adds one.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One resolver's state: its container, networks, upstreams, counters and ports.
pub struct Resolver {
    pub container_id: String,
    pub paths: StatePaths,
    pub networks: RwLock<Vec<NetworkIndex>>,
    upstreams: RwLock<UpstreamSet>,
    pub counters: QueryCounters,
    /// Forwarded answers kept (R34), per resolver so one container's never reach another.
    pub cache: Mutex<Cache>,
    pub started: Instant,
    pub ports: OnceLock<(u16, u16)>,
    /// When the host resolv.conf files were last stat'ed, in µs since `started` (0: never).
    stamps_checked: AtomicU64,
    /// Whether it has a host-netns thread (`hostns.rs`), reported to the plugin.
    pub host_netns: OnceLock<bool>,
}

impl Resolver {
    /// The resolver of `container_id`, before its first reload.
    pub fn new(container_id: &str, paths: StatePaths) -> Self {
        Resolver {
            container_id: container_id.to_string(),
            paths,
            networks: RwLock::new(Vec::new()),
            upstreams: RwLock::new(UpstreamSet::default()),
            counters: QueryCounters::default(),
            cache: Mutex::new(Cache::new()),
            started: Instant::now(),
            ports: OnceLock::new(),
            stamps_checked: AtomicU64::new(0),
            host_netns: OnceLock::new(),
        }
    }

    /// Re-reads the sandbox and the container's own records (the plugin asks after every
    /// ADD and DEL of this container): joins and leaves networks, refreshes links, TTL,
    /// search list, and recomputes the upstreams. Returns the networks now served.
    pub fn reload(&self) -> anyhow::Result<Vec<String>> {
        let sb = sandbox::load(&self.paths, &self.container_id)?
            .ok_or_else(|| anyhow::anyhow!("sandbox of {} is gone", self.container_id))?;
        let mut wanted: Vec<(String, Vec<Record>)> = Vec::new();
        for a in &sb.attachments {
            let store = NetworkStore::new(&self.paths, &a.network);
            let own = store
                .get(&self.container_id, &a.ifname)
                .unwrap_or_else(|e| {
                    tracing::error!("skipping own record: {e}");
                    None
                });
            match wanted.iter_mut().find(|(n, _)| *n == a.network) {
                Some((_, recs)) => recs.extend(own),
                None => wanted.push((a.network.clone(), own.into_iter().collect())),
            }
        }
        let names = wanted.iter().map(|(n, _)| n.clone()).collect();
        {
            let mut nets = self.networks.write().unwrap();
            let mut old: Vec<NetworkIndex> = std::mem::take(&mut *nets);
            for (name, own) in wanted {
                let net = match old.iter().position(|n| n.network == name) {
                    Some(pos) => old.swap_remove(pos).with_own(own),
                    None => NetworkIndex::new(&self.paths, &name, own),
                };
                nets.push(net);
            }
        }
        self.refresh_upstreams();
        Ok(names)
    }

    /// The names of the networks it serves.
    pub fn network_names(&self) -> Vec<String> {
        self.networks
            .read()
            .unwrap()
            .iter()
            .map(|n| n.network.clone())
            .collect()
    }

    /// The upstreams to use now (R22): when a host resolv.conf they came from changed since
    /// (checked by a stat per file, on the forwarding path only, so an idle resolver does
    /// nothing and is woken by nothing; at most once a millisecond, as the path's walk was a
    /// tenth of a forwarded query's CPU under load), they are recomputed first.
    pub fn upstreams(&self) -> RwLockReadGuard<'_, UpstreamSet> {
        let now = self.started.elapsed().as_micros() as u64;
        let last = self.stamps_checked.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= STAMP_CHECK_EVERY_MICROS || last == 0;
        let changed = due && {
            self.stamps_checked.store(now.max(1), Ordering::Relaxed);
            let set = self.upstreams.read().unwrap();
            set.host_files
                .iter()
                .zip(&set.host_stamps)
                .any(|(f, seen)| stamp(f) != *seen)
        };
        if changed {
            self.refresh_upstreams();
        }
        self.upstreams.read().unwrap()
    }

    /// Recomputes the upstreams from the container's own records (attach order) and the host
    /// resolv.conf they name.
    pub fn refresh_upstreams(&self) {
        let own: Vec<Record> = {
            let nets = self.networks.read().unwrap();
            nets.iter().flat_map(|n| n.own().iter().cloned()).collect()
        };
        let mut set = compute_upstreams(&own);
        set.generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(upstreams = ?set.list, "upstreams");
        *self.upstreams.write().unwrap() = set;
    }
}

/// The host resolv.conf files are looked at no more often than this (R22).
const STAMP_CHECK_EVERY_MICROS: u64 = 1000;

/// The last upstream set's generation.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// What identifies a version of a file: device, inode (a replacement by rename, a symlink
/// pointed elsewhere), size and modification time (an edit in place).
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// R17/R18/R21: explicit upstreams (container netns) and host resolv.conf ones (host netns),
/// merged over the container's networks in attach order, at most 3.
pub fn compute_upstreams(own: &[Record]) -> UpstreamSet {
    let mut set = UpstreamSet::default();
    if let Some(first) = own.first() {
        set.timeout = Duration::from_millis(first.resolver.upstream_timeout_ms);
        set.max_inflight = first.resolver.max_inflight;
        set.cache = first.resolver.cache;
    }
    let push = |u: Upstream, list: &mut Vec<Upstream>| {
        if !list.iter().any(|x| x.addr == u.addr) {
            list.push(u);
        }
    };
    for r in own {
        for addr in &r.resolver.upstreams.explicit {
            push(
                Upstream {
                    addr: *addr,
                    from_host: false,
                },
                &mut set.list,
            );
        }
        if let Some(path) = &r.resolver.upstreams.host_resolv_conf {
            if !set.host_files.contains(path) {
                // Stamped before reading: an edit in between is seen at the next check.
                set.host_stamps.push(stamp(path));
                set.host_files.push(path.clone());
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // R18: only a loopback address of the host (systemd-resolved, a local dnsmasq)
            // must be asked from the host's netns; any other is asked from the container's,
            // so the network's egress policy and source address apply to its DNS too.
            for addr in ResolvConf::parse(&text).upstreams() {
                push(
                    Upstream {
                        addr,
                        from_host: addr.ip().is_loopback(),
                    },
                    &mut set.list,
                );
            }
        }
    }
    set.list.truncate(3);
    set
}
