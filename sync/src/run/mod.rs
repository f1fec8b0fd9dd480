//! The sync process's loop: one session (`session.rs`) per connection to an etcd endpoint
//! (`etcd::Connect`), and the local store's side of it.
//!
//! A session grants a lease, lists the network's prefix (the other hosts' records replace the
//! local copy; this host's keys are compared with its records and put again with the new
//! lease; the lease is renewed while the listing's pages come), then watches from the
//! listing's revision while it renews the lease every third of its TTL and publishes each
//! local change (a batch of inotify events: its puts in one transaction, each delete in its
//! own, made only if the key is still the one put). Any error ends the session: the next
//! endpoint is tried after a pause (`backoff.rs`: 100 ms doubling to 2 s, 100 ms during an
//! election, the same member again once it follows a new leader). The next session
//! keeps the lease if it is still alive (an endpoint switch, a member's death) and resumes
//! the watch after the last event seen, publishing only what changed meanwhile; it grants a
//! new lease and starts over from a listing when the lease is gone, and lists again (with
//! the lease kept) when the watch's revision was compacted away. Meanwhile the local copy
//! keeps its last known records, so DNS is served through a control-plane outage; if the outage outlasts the lease, this host's records expire
//! elsewhere (it cannot be told from a dead host) and the next session puts them back. A new
//! etcd config left by the plugin ends the session too (its lease revoked: what was published
//! under the old config goes), and the next one runs with it.

use std::collections::BTreeSet;
use std::fs::File;
use std::time::Instant;

use anyhow::bail;
use embedns_conf::fsutil::write_atomic;
use embedns_conf::multihost::keys::Layout;
use embedns_conf::multihost::shared::{now_ms, EtcdConf, SyncStatus};
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::ready::Ready;
use embedns_conf::store::{NetworkStore, RemoteChange};

use crate::backoff::{jittered, Backoff};
use crate::claim::Claimant;
use crate::client::read_conf;
use crate::etcd::Connect;
use crate::local::LocalWatch;
use crate::mirror::{Published, Remote};

mod session;
#[cfg(test)]
mod tests;

/// etcd's default `--max-txn-ops` is 128.
const TXN_OPS: usize = 128;

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The network's last local container left: this host's keys were withdrawn.
    LastLeft,
    /// A new config names endpoint ports this worker may not connect to (Landlock cannot be
    /// widened): a new worker, restricted to them, must take over.
    NewPorts,
}

impl End {
    /// The worker's exit code: 0 ends the sync process, another makes its supervisor start
    /// a new worker.
    pub fn exit_code(&self) -> u8 {
        match self {
            End::LastLeft => 0,
            End::NewPorts => 3,
        }
    }
}

/// One network's sync worker: its config, the local store and what is known of etcd.
pub struct Worker {
    network: String,
    conf: EtcdConf,
    store: NetworkStore,
    status_path: std::path::PathBuf,
    conf_path: std::path::PathBuf,
    status: SyncStatus,
    next_endpoint: usize,
    /// A new config: the next session starts with its first endpoint.
    from_first_endpoint: bool,
    ready: Option<File>,
    /// What this host's claim of its name says: `<machine id> <state directory>`.
    claimant: Claimant,

    /// The TCP ports this worker may connect to (Landlock, set at its start: `main.rs`); a
    /// config naming another ends the worker, and its supervisor starts one that may.
    tcp_ports: Option<Vec<u16>>,
    /// What is known of etcd, kept from one session to the next.
    known: Known,
}

/// What a worker knows of etcd, kept across its sessions: this host's keys as published, the
/// other hosts' records and claims, and where the last session stood.
struct Known {
    published: Published,
    remote: Remote,
    /// The other hosts holding their name's claim on the network (alive, as far as etcd knows).
    claims: BTreeSet<String>,
    /// Where the last session stood, for the next to resume from.
    resume: Option<Resume>,
}

/// What a session leaves the next: its lease, and the last revision whose events it applied
/// (`None`: the watch's revision was compacted, list again).
#[derive(Debug, Clone, Copy)]
struct Resume {
    lease: i64,
    revision: Option<i64>,
}

impl Worker {
    /// The sync of `network` under `paths`, telling `ready` (the plugin's pipe) once the
    /// first session is in step, or that no endpoint answered.
    pub fn new(paths: &StatePaths, network: &str, conf: EtcdConf, ready: Option<File>) -> Worker {
        let bounds = conf.bounds();
        Worker {
            network: network.to_string(),
            status: SyncStatus {
                pid: std::process::id(),
                host: conf.host().to_string(),
                ..SyncStatus::default()
            },
            conf,
            store: NetworkStore::new(paths, network),
            status_path: paths.sync_status(network),
            conf_path: paths.etcd_conf(network),
            known: Known {
                published: Published::default(),
                remote: Remote::default().with_bounds(bounds),
                claims: BTreeSet::new(),
                resume: None,
            },
            tcp_ports: None,
            next_endpoint: 0,
            from_first_endpoint: false,
            ready,
            claimant: Claimant::of(paths),
        }
    }

    /// Runs sessions (each on an etcd `connect` opens) until the network's last local
    /// container leaves.
    pub async fn run(mut self, connect: &impl Connect, mut local: LocalWatch) -> End {
        match self.store.list_remote() {
            Ok(listed) => {
                self.known.remote = Remote::held_in_store(listed).with_bounds(self.conf.bounds())
            }
            Err(e) => tracing::warn!("reading the other hosts' records left here: {e}"),
        }
        let mut backoff = Backoff::default();
        loop {
            if std::mem::take(&mut self.from_first_endpoint) {
                self.next_endpoint = 0;
            }
            let endpoint =
                self.conf.endpoints[self.next_endpoint % self.conf.endpoints.len()].clone();
            let mut in_step = false;
            let session = async {
                tracing::debug!(endpoint, "connecting");
                let claim = self.keys().claim(self.conf.host());
                let mut etcd = connect.connect(&self.conf, &endpoint, &claim).await?;
                self.session(&mut etcd, &endpoint, &mut local, &mut in_step)
                    .await
            };
            let retry = match session.await {
                Ok(end) => return end,
                Err(e) => {
                    let retry = backoff.failed(&e, in_step, Instant::now());
                    let e = format!("{endpoint}: {e:#}");
                    self.status.endpoint = None;
                    self.status.last_error = Some(e.clone());
                    self.write_status();
                    let tries = retry.failed_in_a_row;
                    let endpoints = self.conf.endpoints.len() as u32;
                    // Each endpoint's first failure, then one line a minute or so (30 tries at
                    // the longest backoff) while etcd stays out of reach: an outage of a day
                    // does not fill the log.
                    if tries <= endpoints || tries % 30 == 0 {
                        tracing::warn!(tries, "etcd session ended: {e}");
                    }
                    if tries == endpoints {
                        self.tell_ready(Ready::Unreachable(e.clone()));
                    }
                    retry
                }
            };
            if !retry.same_endpoint {
                self.next_endpoint += 1;
            }
            if self.store.is_empty().unwrap_or(true) {
                tracing::info!(
                    "the network's last local container left while etcd was unreachable"
                );
                return End::LastLeft;
            }
            // Local changes wait for the next session (it compares everything), but the last
            // container leaving ends the process even while etcd cannot be reached (its keys
            // then expire with the lease).
            let pause = tokio::time::sleep(jittered(retry.pause));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    changed = local.changed() => {
                        let (gone, config) = changed.map(|c| (c.gone, c.config)).unwrap_or((true, false));
                        if gone || self.store.is_empty().unwrap_or(true) {
                            tracing::info!("the network's last local container left while etcd was unreachable");
                            return End::LastLeft;
                        }
                        if let Some(new) = config.then(|| self.changed_conf()).flatten() {
                            if let Err(end) = self.adopt(new) {
                                return end;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The watch applied events up to `revision`: a next session resumes after it.
    fn set_seen(&mut self, revision: i64) {
        if let Some(r) = &mut self.known.resume {
            r.revision = Some(r.revision.map_or(revision, |seen| seen.max(revision)));
        }
    }

    /// The watch cannot be resumed (compacted): a next session lists again.
    fn set_seen_lost(&mut self) {
        if let Some(r) = &mut self.known.resume {
            r.revision = None;
        }
    }

    /// The config the plugin left in the network's directory, when it differs from the one
    /// this process runs with (an unreadable one is logged and ignored).
    fn changed_conf(&self) -> Option<EtcdConf> {
        match read_conf(&self.conf_path) {
            Ok(new) if new != self.conf => Some(new),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("the etcd config was rewritten but cannot be used: {e:#}");
                None
            }
        }
    }

    /// The TCP ports this worker was restricted to.
    pub fn with_tcp_ports(mut self, ports: Vec<u16>) -> Worker {
        self.tcp_ports = Some(ports);
        self
    }

    /// Runs with `new` from the next session on, starting with its first endpoint; or
    /// `Err(End::NewPorts)` when it names ports this worker may not connect to.
    fn adopt(&mut self, new: EtcdConf) -> Result<(), End> {
        let allowed = self.tcp_ports.as_ref();
        if allowed.is_some_and(|a| new.endpoint_ports().iter().any(|p| !a.contains(p))) {
            // Landlock cannot be widened: a new worker, restricted to the new ports, takes over.
            tracing::warn!(endpoints = ?new.endpoints, "the new config names other endpoint ports: a new worker takes over");
            return Err(End::NewPorts);
        }
        tracing::info!(host = new.host(), endpoints = ?new.endpoints, prefix = %new.prefix, "the etcd config changed");
        self.status.host = new.host().to_string();
        self.known.remote.bounds = Some(new.bounds());
        self.from_first_endpoint = true;
        self.conf = new;
        Ok(())
    }

    /// Every attachment key this host has on disk or in etcd: what a full comparison covers.
    fn every_key(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut keys: BTreeSet<String> = self.known.published.keys.keys().cloned().collect();
        keys.extend(self.store.list()?.into_iter().map(|(k, _)| k));
        Ok(keys)
    }

    /// The network's keys in etcd.
    fn keys(&self) -> Layout<'_> {
        self.conf.keys(&self.network)
    }

    /// Applies changes to the other hosts' records under the network's lock. `false` when the
    /// network has no local record any more (its directory is then removed, not re-made).
    fn apply(&mut self, changes: &[RemoteChange]) -> anyhow::Result<bool> {
        self.status.remote_records = self.known.remote.held.len();
        self.status.skipped = self.known.remote.skipped;
        self.status.bound_reached = self.known.remote.bound_reached.clone();
        self.status.remote_hosts = self.known.remote.hosts();
        if !self.store.dir().exists() {
            return Ok(false);
        }
        if changes.is_empty() {
            return Ok(true);
        }
        let lock = self.store.lock()?;
        if self.store.is_empty()? {
            self.store.remove_if_empty(lock)?;
            return Ok(false);
        }
        let failed = self.store.apply_remote(&lock, changes)?;
        tracing::debug!(?changes, "applied the other hosts' changes");
        if failed.is_empty() {
            return Ok(true);
        }
        // Not applied, so not held as applied: the relist that follows the session's end
        // compares etcd with what is held and makes each again (a put held no more is put
        // again; a removal held again is removed again).
        for change in changes.iter().filter(|c| failed.contains(&c.key())) {
            match change {
                RemoteChange::Put { .. } => {
                    self.known.remote.held.remove(&change.key());
                }
                RemoteChange::Remove(key) => {
                    self.known.remote.held.insert(key.clone(), Vec::new());
                }
            }
        }
        // The next session lists again (with the lease kept), rather than resume after them.
        self.set_seen_lost();
        bail!(
            "{} of the other hosts' changes could not be applied; relisting",
            failed.len()
        )
    }

    fn heard(&mut self) {
        self.status.heard_at_ms = now_ms();
    }

    fn write_status(&mut self) {
        self.status.hosts = self.known.remote.hosts_seen(&self.known.claims);
        let body = serde_json::to_vec_pretty(&self.status).expect("the status always serializes");
        if self.store.dir().exists() {
            if let Err(e) = write_atomic(&self.status_path, &body) {
                tracing::debug!("writing the status: {e}");
            }
        }
    }

    fn tell_ready(&mut self, said: Ready) {
        if let Some(mut pipe) = self.ready.take() {
            let _ = said.write_to(&mut pipe);
        }
    }
}
