//! One session with etcd (R27-R33), over any [`Etcd`]: the lease (kept from the last session
//! if it is still alive), the claim, a listing or the resumed watch, publishing, and the loop
//! that renews the lease, applies the watch's events, puts back this host's keys deleted by
//! someone else, and publishes local changes. Any error ends the session (`Worker::run` starts
//! the next one).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;
use embedns_conf::protocol::ready::Ready;
use embedns_conf::store::read_record;

use super::{End, Resume, Worker, TXN_OPS};
use crate::claim::Claim;
use crate::etcd::{Etcd, EtcdError, Fence, Renew, Renewals, Watch, WatchBatch};
use crate::local::LocalWatch;
use crate::mirror::{read_key, Listing, Put};
use embedns_conf::attachment::{AttachmentId, RemoteKey};
use embedns_conf::multihost::keys::NetworkKey;

/// What the session does after a local change.
enum Next {
    Stay,
    /// The network's last local container left.
    Leave,
    /// The worker ends.
    End(End),
}

impl Worker {
    /// A session on `etcd`, connected to `endpoint`; `in_step` is set once it is in step
    /// (the backoff starts over after such a session).
    pub(super) async fn session<E: Etcd>(
        &mut self,
        etcd: &mut E,
        endpoint: &str,
        local: &mut LocalWatch,
        in_step: &mut bool,
    ) -> anyhow::Result<End> {
        let (lease, resumed) = self.lease(etcd).await?;
        let (mut renew, renewals) = etcd.keep_alive(lease).await?;
        // From here on a failed session leaves its lease to the next, to resume with.
        self.known.resume = Some(Resume {
            lease,
            revision: resumed,
        });
        let claim = Claim {
            key: self.keys().claim(self.conf.host()),
            claimant: self.claimant.as_str(),
            host: self.conf.host(),
            network: &self.network,
        };
        claim.take(etcd, lease, &mut self.status).await?;
        let prefix = self.keys().network();
        let revision = match resumed {
            Some(revision) => revision,
            None => match self.relist(etcd, &mut renew, &prefix).await? {
                Some(revision) => revision,
                None => return self.leave(etcd, lease).await,
            },
        };
        let watch = self
            .in_step(etcd, lease, &prefix, revision, endpoint)
            .await?;
        *in_step = true;
        let lease_streams = (renew, renewals);
        self.serve(etcd, lease, &prefix, lease_streams, watch, local)
            .await
    }

    /// The session's lease: the last session's, if it is still alive (an endpoint switch:
    /// kept, and with it this host's keys as they are, and the revision to resume the watch
    /// from), else a new one. A member that cannot tell (no leader yet) ends the session with
    /// it kept for the next.
    async fn lease(&mut self, etcd: &mut impl Etcd) -> anyhow::Result<(i64, Option<i64>)> {
        let resume = match self.known.resume {
            Some(r) if etcd.lease_alive(r.lease).await? => Some(r),
            _ => None,
        };
        let lease = match resume {
            Some(r) => r.lease,
            None => etcd.grant(self.conf.ttl).await?,
        };
        self.status.lease = lease;
        Ok((lease, resume.and_then(|r| r.revision)))
    }

    /// In step at `revision`: every local record published, the watch started after it, the
    /// status and the ready signal written.
    async fn in_step<E: Etcd>(
        &mut self,
        etcd: &mut E,
        lease: i64,
        prefix: &str,
        revision: i64,
        endpoint: &str,
    ) -> anyhow::Result<E::Watch> {
        self.set_seen(revision);
        let every = self.every_key()?;
        self.publish(etcd, lease, &every).await?;
        let watch = etcd.watch(prefix, revision + 1).await?;
        self.status.endpoint = Some(endpoint.to_string());
        self.status.revision = revision;
        self.status.last_error = None;
        self.status.claim_refused = None;
        self.heard();
        self.write_status();
        self.tell_ready(Ready::InStep);
        tracing::info!(
            endpoint,
            revision,
            lease,
            published = self.known.published.keys.len(),
            remote = self.known.remote.held.len(),
            "in step with etcd"
        );
        Ok(watch)
    }

    /// The session's loop: renews the lease, applies the watch's messages and publishes local
    /// changes until the network's last local container leaves (or an error ends it).
    async fn serve<E: Etcd>(
        &mut self,
        etcd: &mut E,
        lease: i64,
        prefix: &str,
        (mut renew, mut renewals): (E::Renew, E::Renewals),
        mut watch: E::Watch,
        local: &mut LocalWatch,
    ) -> anyhow::Result<End> {
        let period = Duration::from_millis(self.conf.ttl * 1000 / 3);
        let mut tick = tokio::time::interval(period);
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // A member cut off from the others' majority may keep the connection and
                    // the watch open and answer nothing: renewals unanswered for two periods
                    // end the session (before the lease itself can expire).
                    if renewed_at.elapsed() > period * 2 {
                        bail!("lease renewals unanswered for {:?}", renewed_at.elapsed());
                    }
                    renew.renew().await?
                }
                renewed = renewals.next() => match renewed? {
                    Some(ttl) if ttl > 0 => {
                        renewed_at = tokio::time::Instant::now();
                        self.heard();
                        // The status's "heard from" stays within one renewal period.
                        self.write_status();
                    }
                    Some(_) => bail!("lease {lease:x} expired"),
                    None => bail!("the lease's keep-alive stream ended"),
                },
                message = watch.next() => {
                    let too_large = |e: &anyhow::Error| {
                        matches!(EtcdError::of(e), Some(EtcdError::TooLarge(_)))
                    };
                    if message.as_ref().is_err_and(too_large) {
                        // A catch-up over many large values: the next session lists anew,
                        // in pages it can take, instead of resuming into the same message.
                        self.set_seen_lost();
                    }
                    let Some(batch) = message? else { bail!("the watch ended") };
                    if self.watched(etcd, lease, prefix, batch).await? {
                        return self.leave(etcd, lease).await;
                    }
                }
                changed = local.changed() => {
                    match self.local_change(etcd, lease, changed?).await? {
                        Next::Stay => {}
                        Next::Leave => return self.leave(etcd, lease).await,
                        Next::End(end) => return Ok(end),
                    }
                }
            }
        }
    }

    /// A change of the local store: published, unless it is the network's last local
    /// container leaving (the session leaves) or a new etcd config (which ends the session,
    /// to start over with it, or the worker, when its endpoints need another).
    async fn local_change(
        &mut self,
        etcd: &mut impl Etcd,
        lease: i64,
        changed: crate::local::Changed,
    ) -> anyhow::Result<Next> {
        if changed.gone || self.store.is_empty()? {
            return Ok(Next::Leave);
        }
        if let Some(new) = changed.config.then(|| self.changed_conf()).flatten() {
            // What this host published under the old config goes with its lease.
            let _ = etcd.revoke(lease).await;
            self.known.resume = None;
            if let Err(end) = self.adopt(new) {
                return Ok(Next::End(end));
            }
            bail!("the etcd config changed; starting over with the new one");
        }
        let keys = if changed.rescan {
            self.every_key()?
        } else {
            changed.keys
        };
        self.publish(etcd, lease, &keys).await?;
        self.write_status();
        Ok(Next::Stay)
    }

    /// Applies one message of the watch: the other hosts' records and claims, this host's
    /// keys deleted by someone else (put back), its own claim deleted or taken over (the
    /// session ends). `true` when the network's last local container has left.
    async fn watched(
        &mut self,
        etcd: &mut impl Etcd,
        lease: i64,
        prefix: &str,
        batch: WatchBatch,
    ) -> anyhow::Result<bool> {
        if let Some(c) = batch.cancelled {
            if c.compact_revision > 0 {
                // Events were compacted away: the next session lists again.
                self.set_seen_lost();
            }
            bail!(
                "the watch was cancelled ({}; compacted at {})",
                c.reason,
                c.compact_revision
            );
        }
        let me = self.conf.host().to_string();
        let mut changes = Vec::new();
        let mut lost = BTreeSet::new();
        for event in batch.events {
            let kv = event.kv;
            self.set_seen(kv.mod_revision);
            let (host, key) = match read_key(prefix, &kv.key) {
                Some(NetworkKey::Record { host, attachment }) => (host, attachment),
                Some(NetworkKey::Claim { host }) => {
                    self.claim_event(host, event.deleted, &kv.value)?;
                    continue;
                }
                None => continue,
            };
            if host == me {
                // Our key deleted by someone else (by hand, or a lease we no longer renew):
                // put it back if the record is still here.
                let key = key.to_string();
                let ours = (self.known.published.keys.get(&key))
                    .is_some_and(|p| p.mod_revision < kv.mod_revision);
                if event.deleted && ours {
                    self.known.published.keys.remove(&key);
                    lost.insert(key);
                }
            } else if event.deleted {
                changes.extend(self.known.remote.remove(&RemoteKey::new(host, key)));
            } else {
                let slot = RemoteKey::new(host, key);
                changes.extend(self.known.remote.put(&self.network, slot, kv.value));
            }
        }
        if batch.revision > 0 {
            self.status.revision = batch.revision;
        }
        self.heard();
        if !self.apply(&changes)? {
            return Ok(true);
        }
        if !lost.is_empty() {
            self.publish(etcd, lease, &lost).await?;
        }
        self.write_status();
        Ok(false)
    }

    /// A watch event of a host's claim (R32): this host's deleted or taken over ends the
    /// session; another host's is held (at most as many as R30's bound on hosts) or let go.
    fn claim_event(&mut self, host: &str, deleted: bool, value: &[u8]) -> anyhow::Result<()> {
        let me = self.conf.host();
        if host == me {
            if deleted || value != self.claimant.as_str().as_bytes() {
                bail!("the claim of host name {me:?} was deleted or taken over");
            }
            return Ok(());
        }
        if deleted {
            self.known.claims.remove(host);
        } else if self.known.claims.contains(host)
            || self.known.claims.len() < self.conf.bounds().hosts
        {
            self.known.claims.insert(host.to_string());
        } else {
            // R30: at most as many claims as hosts are held.
            self.known.remote.skipped += 1;
            self.known.remote.bound_reached = Some(format!("{} hosts", self.conf.bounds().hosts));
        }
        Ok(())
    }

    /// Lists the network's prefix, renewing the lease while the pages come: the other hosts'
    /// records replace the local copy, this host's keys in etcd are taken as published. The
    /// listing's revision, or `None` when the network's last local container has left.
    async fn relist(
        &mut self,
        etcd: &mut impl Etcd,
        renew: &mut impl Renew,
        prefix: &str,
    ) -> anyhow::Result<Option<i64>> {
        let mut tick = tokio::time::interval(Duration::from_millis(self.conf.ttl * 1000 / 3));
        let started = tokio::time::Instant::now();
        let listing = etcd.list(prefix);
        tokio::pin!(listing);
        let (revision, listing) = loop {
            tokio::select! {
                listed = &mut listing => break listed?,
                _ = tick.tick() => renew.renew().await?,
            }
        };
        self.status.listings += 1;
        self.status.listing_ms = started.elapsed().as_millis() as u64;
        let me = self.conf.host().to_string();
        let sorted = Listing::sort(prefix, &me, &listing);
        self.known.published.keys = sorted.published;
        self.known.claims = sorted.claims;
        let changes = self.known.remote.relist(&self.network, &me, sorted.others);
        Ok(self.apply(&changes)?.then_some(revision))
    }

    /// Puts this host's changed records as peer records (R27; one transaction for all of
    /// them) and deletes the removed ones (one transaction each: only if the key is still the
    /// one we put), each only while this host holds its name's claim (R32).
    pub(super) async fn publish(
        &mut self,
        etcd: &mut impl Etcd,
        lease: i64,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let store = &self.store;
        let local = |key: &str| -> Option<Vec<u8>> {
            let attachment: AttachmentId = key.parse().ok()?;
            let record = read_record(&store.record_path(key)).ok()??;
            (record.attachment() == attachment)
                .then(|| embedns_conf::multihost::peer::PeerRecord::encode(&record))
        };
        let plan = self.known.published.plan(keys, local, lease);
        if plan.is_empty() {
            return Ok(());
        }
        tracing::debug!(put = ?plan.put.iter().map(|p| &p.0).collect::<Vec<_>>(), delete = ?plan.delete, "publishing");
        let layout = self.conf.keys(&self.network);
        let me = self.conf.host();
        let claim = layout.claim(me);
        let fence = Fence {
            claim: &claim,
            claimant: self.claimant.as_str(),
        };
        for chunk in plan.put.chunks(TXN_OPS) {
            let puts: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|(key, body)| (layout.record(me, key), body.clone()))
                .collect();
            // A clone or a second host that took the claim over publishes, this one stops.
            let put = etcd.put_fenced(fence, &puts, lease).await?;
            self.status.writes += 1;
            let Some(mod_revision) = put else {
                bail!("this host no longer holds the claim of its name {me:?}");
            };
            for (key, body) in chunk {
                let put = Put {
                    body: body.clone(),
                    mod_revision,
                    lease,
                };
                self.known.published.keys.insert(key.clone(), put);
            }
        }
        for (key, mod_revision) in plan.delete {
            etcd.delete_fenced(fence, &layout.record(me, &key), mod_revision)
                .await?;
            self.status.writes += 1;
            // Not ours any more either way: deleted, or put since by a newer sync process.
            self.known.published.keys.remove(&key);
        }
        self.status.published = self.known.published.keys.len();
        self.heard();
        Ok(())
    }

    /// The network's last local container left: this host's keys go with the lease.
    async fn leave(&mut self, etcd: &mut impl Etcd, lease: i64) -> anyhow::Result<End> {
        tracing::info!(
            lease,
            keys = self.known.published.keys.len(),
            "the network's last local container left; revoking the lease"
        );
        etcd.revoke(lease).await?;
        self.status.writes += 1;
        Ok(End::LastLeft)
    }
}
