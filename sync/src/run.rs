//! The sync process's loop: one session per connection to an etcd endpoint.
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
//! the lease kept) when the watch's revision was compacted away. Meanwhile the local copy keeps its last known records, so DNS is served
//! through a control-plane outage; if the outage outlasts the lease, this host's records expire
//! elsewhere (it cannot be told from a dead host) and the next session puts them back. A new
//! etcd config left by the plugin ends the session too (its lease revoked: what was published
//! under the old config goes), and the next one runs with it.

use std::collections::BTreeSet;
use std::fs::File;
use std::time::{Duration, Instant};

use anyhow::bail;
use embedns_conf::fsutil::write_atomic;
use embedns_conf::keys::Layout;
use embedns_conf::paths::StatePaths;
use embedns_conf::ready::Ready;
use embedns_conf::shared::{now_ms, EtcdConf, SyncStatus};
use embedns_conf::store::{read_record, NetworkStore, RemoteChange};
use etcd_client::{
    Client, Compare, CompareOp, EventType, LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions,
};

use crate::backoff::{jittered, Backoff};
use crate::claim::{claim_of, host_id, Claim};
use crate::client::{connect, lease_alive, list, read_conf, timed, Leader};
use crate::local::LocalWatch;
use crate::mirror::{split_key, Listing, Published, Put, Remote};

/// etcd's default `--max-txn-ops` is 128.
const TXN_OPS: usize = 128;

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The network's last local container left: this host's keys were withdrawn.
    LastLeft,
}

/// One network's sync: its config, the local store and what is known of etcd.
pub struct Sync {
    network: String,
    conf: EtcdConf,
    store: NetworkStore,
    status_path: std::path::PathBuf,
    conf_path: std::path::PathBuf,
    published: Published,
    remote: Remote,
    status: SyncStatus,
    next_endpoint: usize,
    /// A new config: the next session starts with its first endpoint.
    from_first_endpoint: bool,
    ready: Option<File>,
    /// What this host's claim of its name says: `<machine id> <state directory>`.
    claimant: String,
    /// The other hosts holding their name's claim on the network (alive, as far as etcd knows).
    claims: BTreeSet<String>,
    /// The TCP ports this worker may connect to (Landlock, set at its start: `main.rs`); a
    /// config naming another ends the worker, and its supervisor starts one that may.
    tcp_ports: Option<Vec<u16>>,
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

impl Sync {
    /// The sync of `network` under `paths`, telling `ready` (the plugin's pipe) once the
    /// first session is in step, or that no endpoint answered.
    pub fn new(paths: &StatePaths, network: &str, conf: EtcdConf, ready: Option<File>) -> Sync {
        Sync {
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
            published: Published::default(),
            remote: Remote::default(),
            claims: BTreeSet::new(),
            tcp_ports: None,
            resume: None,
            next_endpoint: 0,
            from_first_endpoint: false,
            ready,
            claimant: format!("{} {}", host_id(paths), paths.root().display()),
        }
    }

    /// Runs sessions until the network's last local container leaves.
    pub async fn run(mut self, mut local: LocalWatch) -> End {
        match self.store.list_remote() {
            Ok(listed) => self.remote = Remote::held_in_store(listed),
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
            let retry = match self.session(&endpoint, &mut local, &mut in_step).await {
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
                            self.adopt(new);
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn session(
        &mut self,
        endpoint: &str,
        local: &mut LocalWatch,
        in_step: &mut bool,
    ) -> anyhow::Result<End> {
        tracing::debug!(endpoint, "connecting");
        let mut client = timed(connect(&self.conf, endpoint)).await?;
        let leader = Leader::of(&client, &self.keys().claim(self.conf.host())).await?;
        // The last session's lease, if it is still alive (an endpoint switch): kept, and with
        // it this host's keys as they are.
        // A member that cannot tell (no leader yet) ends the session with it kept for the next.
        let resume = match self.resume {
            Some(r) if lease_alive(&mut client, &leader, r.lease).await? => Some(r),
            _ => None,
        };
        let lease = match resume {
            Some(r) => r.lease,
            None => leader
                .quick(client.lease_grant(self.conf.ttl as i64, None))
                .await?
                .id(),
        };
        self.status.lease = lease;
        let (mut keeper, mut renewals) = timed(client.lease_keep_alive(lease)).await?;
        // From here on a failed session leaves its lease to the next, to resume with.
        self.resume = Some(Resume {
            lease,
            revision: resume.and_then(|r| r.revision),
        });
        let claim = Claim {
            key: self.keys().claim(self.conf.host()),
            claimant: &self.claimant,
            host: self.conf.host(),
            network: &self.network,
        };
        claim
            .take(&mut client, &leader, lease, &mut self.status)
            .await?;
        let prefix = self.keys().network();
        let me = self.conf.host().to_string();
        let revision = match resume.and_then(|r| r.revision) {
            Some(revision) => revision,
            None => match self.relist(&mut client, &mut keeper, &prefix).await? {
                Some(revision) => revision,
                None => return self.leave(&mut client, lease).await,
            },
        };
        self.set_seen(revision);
        let every = self.every_key()?;
        self.publish(&mut client, &leader, lease, &every).await?;
        let watching = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = timed(client.watch(prefix.as_str(), Some(watching))).await?;
        self.status.endpoint = Some(endpoint.to_string());
        self.status.revision = revision;
        self.status.last_error = None;
        self.status.claim_refused = None;
        self.heard();
        self.write_status();
        *in_step = true;
        self.tell_ready(Ready::InStep);
        tracing::info!(
            endpoint,
            revision,
            lease,
            published = self.published.keys.len(),
            remote = self.remote.held.len(),
            "in step with etcd"
        );

        let period = Duration::from_millis(self.conf.ttl * 1000 / 3);
        let mut renew = tokio::time::interval(period);
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    // A member cut off from the others' majority may keep the connection and
                    // the watch open and answer nothing: renewals unanswered for two periods
                    // end the session (before the lease itself can expire).
                    if renewed_at.elapsed() > period * 2 {
                        bail!("lease renewals unanswered for {:?}", renewed_at.elapsed());
                    }
                    timed(keeper.keep_alive()).await?
                }
                renewed = renewals.message() => match renewed? {
                    Some(r) if r.ttl() > 0 => {
                        renewed_at = tokio::time::Instant::now();
                        self.heard();
                        // The status's "heard from" stays within one renewal period.
                        self.write_status();
                    }
                    Some(_) => bail!("lease {lease:x} expired"),
                    None => bail!("the lease's keep-alive stream ended"),
                },
                message = watch.message() => {
                    let Some(resp) = message? else { bail!("the watch ended") };
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            // Events were compacted away: the next session lists again.
                            self.set_seen_lost();
                        }
                        bail!("the watch was cancelled ({}; compacted at {})", resp.cancel_reason(), resp.compact_revision());
                    }
                    let mut changes = Vec::new();
                    let mut lost = BTreeSet::new();
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        self.set_seen(kv.mod_revision());
                        if let Some(host) = kv.key_str().ok().and_then(|k| claim_of(&prefix, k)) {
                            let deleted = event.event_type() == EventType::Delete;
                            if host == me && (deleted || kv.value() != self.claimant.as_bytes()) {
                                bail!("the claim of host name {me:?} was deleted or taken over");
                            }
                            if host != me {
                                if event.event_type() == EventType::Delete {
                                    self.claims.remove(host);
                                } else {
                                    self.claims.insert(host.to_string());
                                }
                            }
                            continue;
                        }
                        let Some((host, key)) = kv.key_str().ok().and_then(|k| split_key(&prefix, k)) else {
                            continue;
                        };
                        let deleted = event.event_type() == EventType::Delete;
                        if host == me {
                            // Our key deleted by someone else (by hand, or a lease we no longer
                            // renew): put it back if the record is still here.
                            let ours = self.published.keys.get(key).is_some_and(|p| p.mod_revision < kv.mod_revision());
                            if deleted && ours {
                                self.published.keys.remove(key);
                                lost.insert(key.to_string());
                            }
                        } else if deleted {
                            changes.extend(self.remote.remove(host, key));
                        } else {
                            changes.extend(self.remote.put(&self.network, host, key, kv.value().to_vec()));
                        }
                    }
                    if let Some(h) = resp.header() {
                        self.status.revision = h.revision();
                    }
                    self.heard();
                    if !self.apply(&changes)? {
                        return self.leave(&mut client, lease).await;
                    }
                    if !lost.is_empty() {
                        self.publish(&mut client, &leader, lease, &lost).await?;
                    }
                    self.write_status();
                }
                changed = local.changed() => {
                    let changed = changed?;
                    if changed.gone || self.store.is_empty()? {
                        return self.leave(&mut client, lease).await;
                    }
                    if let Some(new) = changed.config.then(|| self.changed_conf()).flatten() {
                        // What this host published under the old config goes with its lease.
                        let _ = timed(client.lease_revoke(lease)).await;
                        self.resume = None;
                        self.adopt(new);
                        bail!("the etcd config changed; starting over with the new one");
                    }
                    let keys = if changed.rescan { self.every_key()? } else { changed.keys };
                    self.publish(&mut client, &leader, lease, &keys).await?;
                    self.write_status();
                }
            }
        }
    }

    /// Lists the network's prefix, renewing the lease while the pages come: the other hosts'
    /// records replace the local copy, this host's keys in etcd are taken as published. The
    /// listing's revision, or `None` when the network's last local container has left.
    async fn relist(
        &mut self,
        client: &mut Client,
        keeper: &mut LeaseKeeper,
        prefix: &str,
    ) -> anyhow::Result<Option<i64>> {
        let mut renew = tokio::time::interval(Duration::from_millis(self.conf.ttl * 1000 / 3));
        let started = tokio::time::Instant::now();
        let listing = list(client, prefix);
        tokio::pin!(listing);
        let (revision, listing) = loop {
            tokio::select! {
                listed = &mut listing => break listed?,
                _ = renew.tick() => timed(keeper.keep_alive()).await?,
            }
        };
        self.status.listings += 1;
        self.status.listing_ms = started.elapsed().as_millis() as u64;
        let me = self.conf.host().to_string();
        let sorted = Listing::sort(prefix, &me, &listing);
        self.published.keys = sorted.published;
        self.claims = sorted.claims;
        let others = sorted.others;
        let changes = self.remote.relist(&self.network, &me, others);
        Ok(self.apply(&changes)?.then_some(revision))
    }

    /// The watch applied events up to `revision`: a next session resumes after it.
    fn set_seen(&mut self, revision: i64) {
        if let Some(r) = &mut self.resume {
            r.revision = Some(r.revision.map_or(revision, |seen| seen.max(revision)));
        }
    }

    /// The watch cannot be resumed (compacted): a next session lists again.
    fn set_seen_lost(&mut self) {
        if let Some(r) = &mut self.resume {
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
    pub fn with_tcp_ports(mut self, ports: Vec<u16>) -> Sync {
        self.tcp_ports = Some(ports);
        self
    }

    /// Runs with `new` from the next session on, starting with its first endpoint.
    fn adopt(&mut self, new: EtcdConf) {
        let allowed = self.tcp_ports.as_ref();
        if allowed.is_some_and(|a| new.endpoint_ports().iter().any(|p| !a.contains(p))) {
            // Landlock cannot be widened: a new worker, restricted to the new ports, takes over.
            tracing::warn!(endpoints = ?new.endpoints, "the new config names other endpoint ports: a new worker takes over");
            std::process::exit(3);
        }
        tracing::info!(host = new.host(), endpoints = ?new.endpoints, prefix = %new.prefix, "the etcd config changed");
        self.status.host = new.host().to_string();
        self.from_first_endpoint = true;
        self.conf = new;
    }

    /// Every attachment key this host has on disk or in etcd: what a full comparison covers.
    fn every_key(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut keys: BTreeSet<String> = self.published.keys.keys().cloned().collect();
        keys.extend(self.store.list()?.into_iter().map(|(k, _)| k));
        Ok(keys)
    }

    /// Puts this host's changed records as peer records (R27; one transaction for all of them) and deletes the
    /// removed ones (one transaction each: only if the key is still the one we put).
    async fn publish(
        &mut self,
        client: &mut Client,
        leader: &Leader,
        lease: i64,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let store = &self.store;
        let local = |key: &str| -> Option<Vec<u8>> {
            let (cid, ifname) = key.rsplit_once('@')?;
            let record = read_record(&store.record_path(key)).ok()??;
            (record.container_id == cid && record.ifname == ifname)
                .then(|| embedns_conf::peer::PeerRecord::encode(&record))
        };
        let plan = self.published.plan(keys, local, lease);
        if plan.is_empty() {
            return Ok(());
        }
        tracing::debug!(put = ?plan.put.iter().map(|p| &p.0).collect::<Vec<_>>(), delete = ?plan.delete, "publishing");
        let keys = self.conf.keys(&self.network);
        let me = self.conf.host();
        for chunk in plan.put.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(key, body)| {
                    TxnOp::put(
                        keys.record(me, key),
                        body.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                })
                .collect();
            // Only while this host holds its name's claim (R32): a clone or a second host that
            // took it over publishes, this one stops.
            let fenced = Txn::new().when([self.holding_claim()]).and_then(ops);
            let resp = leader.quick(client.txn(fenced)).await?;
            self.status.writes += 1;
            if !resp.succeeded() {
                bail!(
                    "this host no longer holds the claim of its name {:?}",
                    self.conf.host()
                );
            }
            let mod_revision = resp.header().map_or(0, |h| h.revision());
            for (key, body) in chunk {
                let put = Put {
                    body: body.clone(),
                    mod_revision,
                    lease,
                };
                self.published.keys.insert(key.clone(), put);
            }
        }
        for (key, mod_revision) in plan.delete {
            let full = keys.record(me, &key);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(full.as_str(), CompareOp::Equal, mod_revision),
                    self.holding_claim(),
                ])
                .and_then([TxnOp::delete(full.as_str(), None)]);
            leader.quick(client.txn(txn)).await?;
            self.status.writes += 1;
            // Not ours any more either way: deleted, or put since by a newer sync process.
            self.published.keys.remove(&key);
        }
        self.status.published = self.published.keys.len();
        self.heard();
        Ok(())
    }

    /// The network's keys in etcd.
    fn keys(&self) -> Layout<'_> {
        self.conf.keys(&self.network)
    }

    /// The condition of every write: this host's name's claim still says this host.
    fn holding_claim(&self) -> Compare {
        let claim = self.keys().claim(self.conf.host());
        Compare::value(claim.as_str(), CompareOp::Equal, self.claimant.as_str())
    }

    /// The network's last local container left: this host's keys go with the lease.
    async fn leave(&mut self, client: &mut Client, lease: i64) -> anyhow::Result<End> {
        tracing::info!(
            lease,
            keys = self.published.keys.len(),
            "the network's last local container left; revoking the lease"
        );
        timed(client.lease_revoke(lease)).await?;
        self.status.writes += 1;
        Ok(End::LastLeft)
    }

    /// Applies changes to the other hosts' records under the network's lock. `false` when the
    /// network has no local record any more (its directory is then removed, not re-made).
    fn apply(&mut self, changes: &[RemoteChange]) -> anyhow::Result<bool> {
        self.status.remote_records = self.remote.held.len();
        self.status.skipped = self.remote.skipped;
        self.status.remote_hosts = self.remote.hosts();
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
        for change in changes {
            match change {
                RemoteChange::Put { host, record }
                    if failed.contains(&(host.clone(), record.key())) =>
                {
                    self.remote.held.remove(&(host.clone(), record.key()));
                }
                RemoteChange::Remove { host, key }
                    if failed.contains(&(host.clone(), key.clone())) =>
                {
                    self.remote
                        .held
                        .insert((host.clone(), key.clone()), Vec::new());
                }
                _ => {}
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
        self.status.hosts = self.remote.hosts_seen(&self.claims);
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
