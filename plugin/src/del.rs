//! DEL: remove the attachment's record; with the sandbox's last attachment, stop the resolver,
//! put back the files, and leave the redirect to go with the netns (or to a remover a second
//! later if the netns stays: `redirect_remover.rs`). Whatever is already gone is skipped, so DEL succeeds
//! without prevResult, without a netns, twice, or for a container it never saw. A redirect
//! that cannot be removed from a netns that still exists is logged and noted as a leftover
//! (`embedns status` shows it, GC retries it); DEL still succeeds, as the spec asks.

use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::control::{ReloadReply, Request};
use embedns_conf::sandbox::{self, Leftover, Sandbox, SandboxLock};
use embedns_conf::store::NetworkStore;

use crate::env::CniEnv;
use crate::{cgroup, files, netns, redirect, redirect_remover, resolver};

/// DEL: the attachment goes; with the last one the resolver stops (the rules: see `redirect_remover`).
pub fn del(env: &CniEnv, conf: &NetConf) -> anyhow::Result<()> {
    let paths = StatePaths::new(&conf.data_dir);
    detach(
        &paths,
        &env.container_id,
        &conf.name,
        &env.ifname,
        Removal::AfterNetnsGone,
    )
}

/// When the last attachment's redirect is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Before returning (ADD undoing itself, GC).
    Now,
    /// By a detached remover, if the netns outlives the DEL by `redirect_remover::WINDOW` (the DEL verb:
    /// see `redirect_remover.rs` for why).
    AfterNetnsGone,
}

/// Removes one attachment, taking the sandbox lock if the sandbox exists.
pub fn detach(
    paths: &StatePaths,
    container_id: &str,
    network: &str,
    ifname: &str,
    removal: Removal,
) -> anyhow::Result<()> {
    if !paths.sandbox(container_id).exists() {
        // No sandbox (never added, or already deleted): only a stray record can be left.
        remove_record(paths, container_id, network, ifname)?;
        return Ok(());
    }
    let lock = sandbox::lock(paths, container_id)?;
    detach_locked(paths, lock, container_id, network, ifname, removal)
}

/// [`detach`] for a caller that holds the sandbox lock (ADD undoing itself, GC).
pub fn detach_locked(
    paths: &StatePaths,
    lock: SandboxLock,
    container_id: &str,
    network: &str,
    ifname: &str,
    removal: Removal,
) -> anyhow::Result<()> {
    remove_record(paths, container_id, network, ifname)?;
    let mut sb = match sandbox::load(paths, container_id) {
        Ok(Some(sb)) => sb,
        Ok(None) => {
            // An ADD killed before it saved the sandbox: nothing was started from it.
            sandbox::remove(paths, lock, container_id)?;
            return Ok(());
        }
        Err(e) => {
            tracing::error!("{e}; removing the sandbox and any resolver of the container");
            stop_unrecorded(paths, container_id);
            sandbox::remove(paths, lock, container_id)?;
            return Ok(());
        }
    };
    let caught_before = sb.caught();
    sb.attachments
        .retain(|a| !(a.network == network && a.ifname == ifname));
    if sb.attachments.is_empty() {
        teardown(paths, lock, &sb, removal);
        Ok(())
    } else {
        sandbox::save(paths, &lock, &sb)?;
        if let Some(info) = sb.resolver.as_ref().filter(|i| resolver::alive(i)) {
            if let Err(e) = resolver::control::<ReloadReply>(paths, container_id, Request::Reload) {
                tracing::warn!(pid = info.pid, "resolver did not reload: {e:#}");
            }
            // R26: the servers only the leaving network gave are no longer caught.
            if let Some((uid, gid)) = sb.catch_owner.filter(|_| sb.caught() != caught_before) {
                let catch = redirect::Catch {
                    servers: sb.caught(),
                    uid,
                    gid,
                };
                let set =
                    redirect::set_catch(&sb.netns, info.udp_port, info.tcp_port, &catch, false);
                if let Err(e) = set {
                    tracing::warn!(netns = %sb.netns, "the nameservers caught are unchanged: {e:#}");
                }
                if let Some(ports6) = info.ports6() {
                    let now = crate::catch6::set_or_warn(&sb.netns, ports6, &catch, sb.catch6);
                    if now != sb.catch6 {
                        sb.catch6 = now;
                        sandbox::save(paths, &lock, &sb)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Removes an attachment's record; the network's directory goes with its last record.
pub fn remove_record(
    paths: &StatePaths,
    container_id: &str,
    network: &str,
    ifname: &str,
) -> anyhow::Result<()> {
    let net = NetworkStore::new(paths, network);
    if net.dir().exists() {
        let lock = net.lock()?;
        net.remove(&lock, container_id, ifname)?;
        net.remove_if_empty(lock)?;
    }
    Ok(())
}

/// The sandbox's last attachment is gone: stop its resolver, remove the redirect, restore the
/// files, drop the sandbox. Every step runs whatever the others gave; what could not be
/// removed is logged and noted as a leftover.
pub fn teardown(paths: &StatePaths, lock: SandboxLock, sb: &Sandbox, removal: Removal) {
    stop_and_restore(paths, sb, removal);
    if let Err(e) = sandbox::remove(paths, lock, &sb.container_id) {
        tracing::error!("removing the sandbox of {}: {e}", sb.container_id);
    }
}

/// Stops the sandbox's resolver (and any other of the container's: an ADD killed between
/// starting one and recording it), removes the redirect from its netns, restores the files.
/// The sandbox itself stays.
pub fn stop_and_restore(paths: &StatePaths, sb: &Sandbox, when: Removal) {
    // The rules' removal (an exec) runs while the resolver stops.
    let started = std::time::Instant::now();
    if !sb.redirect_settled && netns::exists(&sb.netns) {
        redirect::wait_installers(&sb.netns);
    }
    let inode = sb.netns_inode.filter(|_| netns::exists(&sb.netns));
    if let (Removal::AfterNetnsGone, Some(inode)) = (when, inode) {
        match redirect_remover::spawn(paths, &sb.container_id, &sb.netns, inode) {
            Ok(()) => {
                stop_resolver(paths, sb);
                cgroup::remove(&sb.cgroups);
                tracing::debug!(elapsed = ?started.elapsed(), "resolver stopped, redirect left to the remover");
                files::restore(sb);
                return;
            }
            Err(e) => tracing::warn!("{e:#}; removing the redirect now"),
        }
    }
    if sb.catch6 && netns::exists(&sb.netns) {
        crate::catch6::remove(&sb.netns);
    }
    let removal = netns::exists(&sb.netns).then(|| {
        redirect::remove_start(&sb.netns).map_err(|e| {
            tracing::warn!(netns = %sb.netns, "{e:#}; removing the redirect piece by piece");
        })
    });
    stop_resolver(paths, sb);
    cgroup::remove(&sb.cgroups);
    tracing::debug!(elapsed = ?started.elapsed(), "resolver stopped");
    match removal {
        Some(pending) => {
            let removed = match pending {
                Ok(pending) => pending.wait_gone(),
                Err(()) => redirect::remove_now(&sb.netns),
            };
            if let Err(e) = removed {
                tracing::error!(netns = %sb.netns, "the 127.0.0.11 redirect is left in place: {e:#}");
                let note = Leftover {
                    container_id: sb.container_id.clone(),
                    netns: sb.netns.clone(),
                    netns_inode: sb.netns_inode,
                    error: format!("{e:#}"),
                };
                if let Err(e) = sandbox::save_leftover(paths, &note) {
                    tracing::error!("noting the leftover: {e}");
                }
            }
        }
        None => tracing::info!(netns = %sb.netns, "netns gone: no redirect to remove"),
    }
    tracing::debug!(elapsed = ?started.elapsed(), "redirect removed");
    files::restore(sb);
}

/// Stops the sandbox's resolver, or any of the container's found by command line.
fn stop_resolver(paths: &StatePaths, sb: &Sandbox) {
    let recorded = sb.resolver.as_ref().filter(|i| resolver::alive(i));
    if let Some(info) = recorded {
        resolver::stop(info);
    } else {
        stop_unrecorded(paths, &sb.container_id);
    }
}

/// Stops every resolver of the container found by its command line (the caller knows the
/// sandbox records none of them alive).
pub fn stop_unrecorded(paths: &StatePaths, container_id: &str) {
    for r in resolver::running(paths) {
        if r.container_id == container_id {
            tracing::warn!(
                pid = r.info.pid,
                container = container_id,
                "stopping a resolver the sandbox does not record"
            );
            resolver::stop(&r.info);
        }
    }
}
