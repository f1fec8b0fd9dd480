//! GC and STATUS (CNI 1.1): drop what the runtime no longer knows; say whether we can work.
//!
//! GC walks the network's records and every sandbox, continues past a failure (each one is
//! logged and listed in the error returned at the end) and removes:
//! - the network's attachments that are not in `cni.dev/valid-attachments`, as DEL does;
//! - index entries without a record (ghosts) and records without an entry: the index is
//!   rebuilt from the records; an empty network's directory goes;
//! - sandboxes with no attachment (an ADD killed before its first record was kept), and any
//!   sandbox whose attachments on this network are all stale;
//! - resolvers that no sandbox records (an ADD killed between starting one and recording it,
//!   a sandbox removed by hand), found by their command line;
//! - leftover redirects of earlier DELs: retried where the netns still exists, forgotten
//!   where it is gone.
//!
//! - on a shared network with records left, a sync process that is not running: started.
//!
//! Busy sandboxes (an ADD or DEL holds their lock) are passed over: that verb finishes them.

use std::collections::BTreeSet;

use embedns_conf::attachment::AttachmentId;
use embedns_conf::fsutil::{create_private_dir, remove_if_exists, write_atomic};
use embedns_conf::index::IndexWriter;
use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox;
use embedns_conf::store::NetworkStore;
use embedns_conf::ConfError;

use crate::error::{PluginError, GC_INCOMPLETE, NOT_AVAILABLE};
use crate::{cgroup, del, netns, redirect, resolver, sync_process};

/// GC (CNI 1.1): everything not in `cni.dev/valid-attachments`, and what faults left.
pub fn gc(conf: &NetConf) -> anyhow::Result<()> {
    let valid: BTreeSet<AttachmentId> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| ConfError::InvalidConfig("GC needs \"cni.dev/valid-attachments\"".into()))?
        .iter()
        .map(|a| AttachmentId::new(&a.container_id, &a.ifname))
        .collect();
    let paths = StatePaths::new(&conf.data_dir);
    let mut failures = Failures::default();
    let net = NetworkStore::new(&paths, &conf.name);
    match net.list() {
        Ok(listed) => {
            let keys = listed.into_iter().map(|(key, _)| key);
            for a in not_valid(keys, &valid) {
                let (cid, ifname) = (&a.container_id, &a.ifname);
                tracing::info!(container = cid, ifname, "GC: removing a stale attachment");
                let removed = del::detach(&paths, cid, &conf.name, ifname, del::Removal::Now);
                failures.note(|| format!("removing {a}"), removed);
            }
        }
        Err(e) => failures.note(|| format!("listing network {}", conf.name), Err(e.into())),
    }
    let reconciled = reconcile(&net);
    failures.note(
        || format!("reconciling the index of {}", conf.name),
        reconciled,
    );
    match sandbox::list(&paths) {
        Ok(ids) => {
            for cid in ids {
                let swept = sweep_sandbox(&paths, &conf.name, &valid, &cid);
                failures.note(|| format!("sandbox {cid}"), swept);
            }
        }
        Err(e) => failures.note(|| "listing sandboxes".into(), Err(e.into())),
    }
    for r in resolver::running(&paths) {
        let stopped = stop_if_orphan(&paths, &r);
        failures.note(|| format!("resolver pid {}", r.info.pid), stopped);
    }
    sweep_cgroups(&paths, conf);
    retry_leftovers(&paths, &mut failures);
    let kept = sync_process::keep_running(conf);
    failures.note(|| format!("the sync process of {}", conf.name), kept);
    failures.into_result()
}

/// GC's failures: each logged as it happens and listed in the error returned at the end.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    /// Notes `result`'s error, if any, as a failure of `what`.
    fn note(&mut self, what: impl FnOnce() -> String, result: anyhow::Result<()>) {
        if let Err(e) = result {
            let what = what();
            tracing::error!("GC: {what}: {e:#}");
            self.0.push(format!("{what}: {e:#}"));
        }
    }

    fn into_result(self) -> anyhow::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PluginError::new(GC_INCOMPLETE, self.0.join("; ")).into())
        }
    }
}

/// The attachments among the store's `keys` that are not in `valid`.
fn not_valid(
    keys: impl IntoIterator<Item = String>,
    valid: &BTreeSet<AttachmentId>,
) -> Vec<AttachmentId> {
    (keys.into_iter())
        .filter_map(|key| key.parse::<AttachmentId>().ok())
        .filter(|a| !valid.contains(a))
        .collect()
}

/// What becomes of a leftover redirect an earlier DEL noted.
#[derive(Debug, PartialEq, Eq)]
enum Leftover {
    /// Its netns is still the one it was noted in, and no live sandbox serves it: the
    /// removal is tried again.
    Retry,
    /// The rules went with the namespace, or belong to a live sandbox now (a later ADD into
    /// the same namespace, `podman network connect`): the note goes.
    Forget,
}

/// The leftover's fate: `inode`, what its netns path names now (`None`: nothing);
/// `noted_inode`, the namespace it was noted in (`None`: an earlier version's note);
/// `live`, the namespaces live sandboxes serve.
fn leftover(inode: Option<u64>, noted_inode: Option<u64>, live: &[u64]) -> Leftover {
    let same = inode.is_some() && noted_inode.is_none_or(|i| Some(i) == inode);
    if same && !inode.is_some_and(|i| live.contains(&i)) {
        Leftover::Retry
    } else {
        Leftover::Forget
    }
}

/// Leftover redirects of earlier DELs: retried where their netns still exists (and no live
/// sandbox owns its rules now), forgotten where it is gone.
fn retry_leftovers(paths: &StatePaths, failures: &mut Failures) {
    let live: Vec<u64> = (sandbox::list(paths).unwrap_or_default().iter())
        .filter_map(|cid| sandbox::load(paths, cid).ok().flatten())
        .filter_map(|sb| sb.netns_inode)
        .collect();
    for note in sandbox::leftovers(paths) {
        let retried = match leftover(netns::inode(&note.netns), note.netns_inode, &live) {
            Leftover::Retry => redirect::remove_now(&note.netns),
            Leftover::Forget => Ok(()),
        };
        let cleared =
            retried.and_then(|()| Ok(sandbox::clear_leftover(paths, &note.container_id)?));
        if cleared.is_ok() {
            tracing::info!(netns = %note.netns, "GC: leftover redirect gone");
        }
        failures.note(|| format!("leftover redirect in {}", note.netns), cleared);
    }
}

/// Rebuilds the network's index when it and the records disagree; removes the network's
/// directory when it has no record left.
fn reconcile(net: &NetworkStore) -> anyhow::Result<()> {
    if !net.dir().exists() {
        return Ok(());
    }
    let lock = net.lock()?;
    let (_, ghosts) = IndexWriter::open(&net.locked(&lock))?.reconcile()?;
    if !ghosts.is_empty() {
        tracing::warn!(?ghosts, "GC: index entries without a record removed");
    }
    net.remove_if_empty(lock)?;
    Ok(())
}

/// A sandbox with no attachment left, or whose attachments on this network are all stale
/// and that has no other, is torn down.
fn sweep_sandbox(
    paths: &StatePaths,
    network: &str,
    valid: &BTreeSet<AttachmentId>,
    cid: &str,
) -> anyhow::Result<()> {
    let Some(lock) = sandbox::try_lock(paths, cid)? else {
        return Ok(()); // busy, or removed meanwhile
    };
    let sb = match sandbox::load(paths, cid) {
        Ok(Some(sb)) => sb,
        Ok(None) | Err(_) => {
            tracing::info!(container = cid, "GC: removing a sandbox without state");
            del::stop_unrecorded(paths, cid);
            sandbox::remove(paths, lock, cid)?;
            return Ok(());
        }
    };
    if sb.attachments.is_empty() {
        tracing::info!(
            container = cid,
            "GC: removing a sandbox without attachments"
        );
        del::teardown(paths, lock, &sb, del::Removal::Now);
        return Ok(());
    }
    // Attachments on this network that the runtime no longer knows, and that have no record
    // (an ADD killed before its record was written): DEL's code removes them and, with the
    // last, everything the sandbox started.
    drop(lock);
    for a in sb.attachments.iter().filter(|a| a.network == network) {
        if !valid.contains(&AttachmentId::new(cid, &a.ifname)) {
            del::detach(paths, cid, &a.network, &a.ifname, del::Removal::Now)?;
        }
    }
    Ok(())
}

/// Removes the orphan leaves beneath the conf's `cgroupParent`: those of no sandbox.
fn sweep_cgroups(paths: &StatePaths, conf: &NetConf) {
    let live: Vec<std::path::PathBuf> = (sandbox::list(paths).unwrap_or_default().iter())
        .map(|cid| embedns_conf::cgroup::leaf(&conf.cgroup_parent, cid))
        .collect();
    cgroup::sweep(&conf.cgroup_parent, &live);
}

/// Stops a resolver that its container's sandbox does not record (under the sandbox's lock,
/// so an ADD between starting a resolver and recording it is never judged half-way).
fn stop_if_orphan(paths: &StatePaths, r: &resolver::Running) -> anyhow::Result<()> {
    let cid = &r.container_id;
    let lock = if paths.sandbox(cid).exists() {
        match sandbox::try_lock(paths, cid)? {
            Some(l) => Some(l),
            None if paths.sandbox(cid).exists() => return Ok(()), // busy
            None => None,
        }
    } else {
        None
    };
    let sb = match &lock {
        Some(_) => sandbox::load(paths, cid).ok().flatten(),
        None => None,
    };
    let recorded = sb.as_ref().and_then(|sb| sb.resolver.as_ref());
    let ours = recorded.is_some_and(|i| {
        (i.pid == r.info.pid && i.start_time == r.info.start_time)
            // A resolver whose supervisor was killed keeps serving its container until DEL.
            || (!resolver::alive(i) && sb.as_ref().is_some_and(|sb| resolver::serves(&r.info, &sb.netns)))
    });
    if !ours {
        tracing::warn!(pid = r.info.pid, container = %cid, "GC: stopping an orphan resolver");
        resolver::stop(&r.info);
    }
    drop(lock);
    Ok(())
}

/// Ready when the state directory can be written.
pub fn status(conf: &NetConf) -> anyhow::Result<()> {
    let paths = StatePaths::new(&conf.data_dir);
    let probe = paths.root().join(".status-probe");
    create_private_dir(paths.root())
        .and_then(|_| write_atomic(&probe, b"ok"))
        .and_then(|_| remove_if_exists(&probe))
        .map_err(|e| {
            PluginError::new(NOT_AVAILABLE, format!("state directory not writable: {e}"))
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cid: &str, ifname: &str) -> AttachmentId {
        AttachmentId::new(cid, ifname)
    }

    #[test]
    fn attachments_the_runtime_does_not_list_are_removed_and_others_kept() {
        let valid = BTreeSet::from([pair("a", "eth0"), pair("b", "eth1")]);
        let keys = ["a@eth0", "a@eth1", "b@eth1", "c@eth0", "no-at-sign"].map(String::from);
        assert_eq!(
            not_valid(keys, &valid),
            vec![pair("a", "eth1"), pair("c", "eth0")]
        );
    }

    #[test]
    fn a_container_id_may_hold_an_at_sign_the_ifname_may_not() {
        let valid = BTreeSet::from([pair("x@y", "eth0")]);
        assert!(not_valid(["x@y@eth0".to_string()], &valid).is_empty());
    }

    #[test]
    fn a_leftover_is_retried_only_in_the_namespace_it_was_noted_in_and_that_nobody_serves() {
        assert_eq!(leftover(Some(7), Some(7), &[]), Leftover::Retry);
        // An earlier version's note, without the inode: the path is trusted.
        assert_eq!(leftover(Some(7), None, &[]), Leftover::Retry);
        // The namespace is gone, or the path names another one now.
        assert_eq!(leftover(None, Some(7), &[]), Leftover::Forget);
        assert_eq!(leftover(Some(8), Some(7), &[]), Leftover::Forget);
        // A live sandbox serves that namespace: its rules are its own now.
        assert_eq!(leftover(Some(7), Some(7), &[3, 7]), Leftover::Forget);
    }
}
