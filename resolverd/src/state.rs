//! The resolver's shared state and the locking story: one current-thread runtime, so the
//! locks below are never contended; they exist because tasks and the control channel share
//! the state. The hot path takes `networks` for reading only; the watcher and `reload` write.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::resolv::ResolvConf;
use embedns_conf::sandbox;
use embedns_conf::store::{read_record, record_key, NetworkStore};
use inotify::{EventMask, WatchDescriptor, WatchMask, Watches};

use crate::index::NetworkIndex;

/// One upstream nameserver and where it is reached from (R18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Taken from the host's resolv.conf: queried from the host netns.
    pub from_host: bool,
}

/// Forwarding settings, derived from the container's own records.
#[derive(Debug, Clone)]
pub struct UpstreamSet {
    pub list: Vec<Upstream>,
    pub timeout: Duration,
    pub max_inflight: usize,
    /// Host resolv.conf files the list was read from (watched, R22).
    pub host_files: Vec<PathBuf>,
}

impl Default for UpstreamSet {
    fn default() -> Self {
        UpstreamSet {
            list: Vec::new(),
            timeout: Duration::from_millis(embedns_conf::netconf::DEFAULT_UPSTREAM_TIMEOUT_MS),
            max_inflight: embedns_conf::netconf::DEFAULT_MAX_INFLIGHT,
            host_files: Vec::new(),
        }
    }
}

/// Per-resolver counters, read by `embedns status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub local: AtomicU64,
    pub forwarded: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    pub upstream_micros: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What an inotify watch descriptor stands for.
#[derive(Debug, Clone)]
enum Target {
    Network(String),
    /// A directory holding a host resolv.conf, and the file names in it we care about.
    HostDir(Vec<String>),
}

pub struct Resolver {
    pub container_id: String,
    pub paths: StatePaths,
    pub networks: RwLock<Vec<NetworkIndex>>,
    pub upstreams: RwLock<UpstreamSet>,
    pub counters: Counters,
    pub started: Instant,
    pub ports: OnceLock<(u16, u16)>,
    watches: Mutex<Option<(Watches, HashMap<WatchDescriptor, Target>)>>,
}

/// Records only arrive by rename and leave by unlink (store.rs), so these are the only
/// events that change a network; every resolver on the network wakes for each, once.
const NETWORK_EVENTS: WatchMask = WatchMask::MOVED_TO
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE);

impl Resolver {
    pub fn new(container_id: &str, paths: StatePaths) -> Self {
        Resolver {
            container_id: container_id.to_string(),
            paths,
            networks: RwLock::new(Vec::new()),
            upstreams: RwLock::new(UpstreamSet::default()),
            counters: Counters::default(),
            started: Instant::now(),
            ports: OnceLock::new(),
            watches: Mutex::new(None),
        }
    }

    pub fn set_watches(&self, w: Watches) {
        *self.watches.lock().unwrap() = Some((w, HashMap::new()));
    }

    /// Re-reads the sandbox: loads networks the container joined, drops those it left, and
    /// recomputes the upstreams. Returns the networks now served.
    pub fn reload(&self) -> anyhow::Result<Vec<String>> {
        let sb = sandbox::load(&self.paths, &self.container_id)?
            .ok_or_else(|| anyhow::anyhow!("sandbox of {} is gone", self.container_id))?;
        let mut wanted: Vec<String> = Vec::new();
        for a in &sb.attachments {
            if !wanted.contains(&a.network) {
                wanted.push(a.network.clone());
            }
        }
        let current: Vec<String> = self.network_names();
        for gone in current.iter().filter(|n| !wanted.contains(n)) {
            self.unwatch(|t| matches!(t, Target::Network(n) if n == gone));
        }
        let mut fresh = Vec::new();
        for name in wanted.iter().filter(|n| !current.contains(n)) {
            let store = NetworkStore::new(&self.paths, name);
            // Watch first, then read: a change in between is seen twice, never missed.
            self.watch(store.dir(), NETWORK_EVENTS, Target::Network(name.clone()));
            fresh.push(load_network(name, &self.container_id, &store));
        }
        let loaded_any = !fresh.is_empty();
        {
            let mut nets = self.networks.write().unwrap();
            let mut old: Vec<NetworkIndex> = std::mem::take(&mut *nets);
            for name in &wanted {
                if let Some(pos) = old.iter().position(|n| &n.network == name) {
                    nets.push(old.swap_remove(pos));
                } else if let Some(pos) = fresh.iter().position(|n| &n.network == name) {
                    nets.push(fresh.swap_remove(pos));
                }
            }
        }
        self.refresh_upstreams();
        if loaded_any {
            release_freed_memory();
        }
        Ok(wanted)
    }

    pub fn network_names(&self) -> Vec<String> {
        self.networks
            .read()
            .unwrap()
            .iter()
            .map(|n| n.network.clone())
            .collect()
    }

    /// Recomputes the upstreams from the container's own records (attach order) and the host
    /// resolv.conf they name, and watches those files.
    pub fn refresh_upstreams(&self) {
        let own: Vec<Record> = {
            let nets = self.networks.read().unwrap();
            nets.iter()
                .flat_map(|n| n.own().cloned().collect::<Vec<_>>())
                .collect()
        };
        let set = compute_upstreams(&own);
        self.unwatch(|t| matches!(t, Target::HostDir(_)));
        let mut by_dir: HashMap<PathBuf, Vec<String>> = HashMap::new();
        for f in &set.host_files {
            // /etc/resolv.conf is often a symlink that is replaced: watch both ends.
            let real = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
            for p in [f.clone(), real] {
                if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
                    let names = by_dir.entry(dir.to_path_buf()).or_default();
                    let name = name.to_string_lossy().into_owned();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        for (dir, names) in by_dir {
            self.watch(
                &dir,
                WatchMask::MOVED_TO
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::CREATE
                    | WatchMask::DELETE,
                Target::HostDir(names),
            );
        }
        tracing::info!(upstreams = ?set.list, "upstreams");
        *self.upstreams.write().unwrap() = set;
    }

    /// Applies one inotify event: one record file re-read, or the upstreams recomputed.
    pub fn apply_event(&self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsStr>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; re-reading every network");
            self.reread_all();
            return;
        }
        let target = {
            let w = self.watches.lock().unwrap();
            w.as_ref().and_then(|(_, m)| m.get(wd).cloned())
        };
        let (Some(target), Some(name)) = (target, name) else {
            return;
        };
        let name = name.to_string_lossy();
        match target {
            Target::HostDir(names) => {
                if names.iter().any(|n| *n == name) {
                    self.refresh_upstreams();
                }
            }
            Target::Network(network) => {
                let Some(key) = record_key(&name) else {
                    return;
                };
                let store = NetworkStore::new(&self.paths, &network);
                let update = read_record(&store.record_path(key));
                let mut nets = self.networks.write().unwrap();
                let Some(index) = nets.iter_mut().find(|n| n.network == network) else {
                    return;
                };
                match update {
                    Ok(Some(r)) => index.upsert(key, r),
                    Ok(None) => {
                        index.remove(key);
                    }
                    Err(e) => {
                        tracing::error!("skipping record: {e}");
                        index.remove(key);
                    }
                }
                let own = key.starts_with(&format!("{}@", self.container_id));
                drop(nets);
                if own {
                    self.refresh_upstreams();
                }
            }
        }
    }

    fn reread_all(&self) {
        let names = self.network_names();
        let fresh: Vec<NetworkIndex> = names
            .iter()
            .map(|n| load_network(n, &self.container_id, &NetworkStore::new(&self.paths, n)))
            .collect();
        *self.networks.write().unwrap() = fresh;
        self.refresh_upstreams();
        release_freed_memory();
    }

    fn watch(&self, dir: &Path, mask: WatchMask, target: Target) {
        let mut w = self.watches.lock().unwrap();
        let Some((watches, map)) = w.as_mut() else {
            return;
        };
        let mut added = watches.add(dir, mask);
        if matches!(&added, Err(e) if e.raw_os_error() == Some(libc::ENOSPC))
            && crate::watch::raise_limit(crate::watch::WATCHES).is_ok()
        {
            added = watches.add(dir, mask);
        }
        match added {
            Ok(wd) => {
                map.insert(wd, target);
            }
            Err(e) => tracing::error!(
                "cannot watch {}: {e}: its changes will be missed",
                dir.display()
            ),
        }
    }

    fn unwatch(&self, which: impl Fn(&Target) -> bool) {
        let mut w = self.watches.lock().unwrap();
        let Some((watches, map)) = w.as_mut() else {
            return;
        };
        let gone: Vec<WatchDescriptor> = map
            .iter()
            .filter(|(_, t)| which(t))
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in gone {
            map.remove(&wd);
            let _ = watches.remove(wd);
        }
    }
}

/// A full load parses every record of a network once and keeps a fraction of it: hand the
/// freed heap back to the kernel (glibc keeps it otherwise). Not done per event: a change is
/// O(1) garbage that the allocator reuses, and every resolver of the network sees each one.
fn release_freed_memory() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads every record of a network; a corrupt file is logged and skipped.
fn load_network(name: &str, own_id: &str, store: &NetworkStore) -> NetworkIndex {
    let mut index = NetworkIndex::new(name, own_id);
    match store.list() {
        Ok(list) => {
            for (key, rec) in list {
                match rec {
                    Ok(r) => index.upsert(&key, r),
                    Err(e) => tracing::error!("skipping record: {e}"),
                }
            }
        }
        Err(e) => tracing::error!("reading network {name}: {e}"),
    }
    index
}

/// R17/R18/R21: explicit upstreams (container netns) and host resolv.conf ones (host netns),
/// merged over the container's networks in attach order, at most 3.
pub fn compute_upstreams(own: &[Record]) -> UpstreamSet {
    let mut set = UpstreamSet::default();
    if let Some(first) = own.first() {
        if first.upstream_timeout_ms > 0 {
            set.timeout = Duration::from_millis(first.upstream_timeout_ms);
        }
        if first.max_inflight > 0 {
            set.max_inflight = first.max_inflight;
        }
    }
    let push = |u: Upstream, list: &mut Vec<Upstream>| {
        if !list.iter().any(|x| x.addr == u.addr) {
            list.push(u);
        }
    };
    for r in own {
        for addr in &r.upstreams.explicit {
            push(
                Upstream {
                    addr: *addr,
                    from_host: false,
                },
                &mut set.list,
            );
        }
        if let Some(path) = &r.upstreams.host_resolv_conf {
            if !set.host_files.contains(path) {
                set.host_files.push(path.clone());
            }
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for addr in ResolvConf::parse(&text).upstreams() {
                push(
                    Upstream {
                        addr,
                        from_host: true,
                    },
                    &mut set.list,
                );
            }
        }
    }
    set.list.truncate(3);
    set
}
