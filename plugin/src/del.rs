//! DEL: remove the attachment's record; with the sandbox's last attachment, stop the resolver,
//! remove the redirect and put back the files. Whatever is already gone is skipped, so DEL
//! succeeds without prevResult, without a netns, twice, or for a container it never saw.

use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox::{self, Sandbox, SandboxLock};
use embedns_conf::store::NetworkStore;

use crate::env::CniEnv;
use crate::{files, netns, redirect, resolver};

pub fn del(env: &CniEnv, conf: &NetConf) -> anyhow::Result<()> {
    let paths = StatePaths::new(&conf.data_dir);
    detach(&paths, &env.container_id, &conf.name, &env.ifname)
}

/// Removes one attachment, taking the sandbox lock if the sandbox exists.
pub fn detach(
    paths: &StatePaths,
    container_id: &str,
    network: &str,
    ifname: &str,
) -> anyhow::Result<()> {
    if !paths.sandbox(container_id).exists() {
        // No sandbox (never added, or already deleted): only a stray record can be left.
        remove_record(paths, container_id, network, ifname)?;
        return Ok(());
    }
    let lock = sandbox::lock(paths, container_id)?;
    detach_locked(paths, &lock, container_id, network, ifname)
}

/// [`detach`] for a caller that holds the sandbox lock (ADD undoing itself).
pub fn detach_locked(
    paths: &StatePaths,
    lock: &SandboxLock,
    container_id: &str,
    network: &str,
    ifname: &str,
) -> anyhow::Result<()> {
    remove_record(paths, container_id, network, ifname)?;
    let sb = match sandbox::load(paths, container_id) {
        Ok(Some(sb)) => sb,
        Ok(None) => {
            sandbox::remove(paths, lock, container_id)?;
            return Ok(());
        }
        Err(e) => {
            tracing::error!("{e}; removing the sandbox without stopping its resolver");
            sandbox::remove(paths, lock, container_id)?;
            return Ok(());
        }
    };
    let mut sb = sb;
    sb.attachments
        .retain(|a| !(a.network == network && a.ifname == ifname));
    if sb.attachments.is_empty() {
        teardown(paths, lock, &sb)
    } else {
        sandbox::save(paths, lock, &sb)?;
        if let Some(info) = sb.resolver.as_ref().filter(|i| resolver::alive(i)) {
            if let Err(e) = resolver::control(paths, container_id, "reload") {
                tracing::warn!(pid = info.pid, "resolver did not reload: {e:#}");
            }
        }
        Ok(())
    }
}

fn remove_record(
    paths: &StatePaths,
    container_id: &str,
    network: &str,
    ifname: &str,
) -> anyhow::Result<()> {
    let net = NetworkStore::new(paths, network);
    if net.dir().exists() {
        let lock = net.lock()?;
        net.remove(&lock, container_id, ifname)?;
    }
    Ok(())
}

/// The sandbox's last attachment is gone: stop its resolver, remove the redirect, restore the
/// files, drop the sandbox.
fn teardown(paths: &StatePaths, lock: &SandboxLock, sb: &Sandbox) -> anyhow::Result<()> {
    // The rules' removal (an exec) runs while the resolver stops. Whatever fails, the
    // resolver is stopped and the files restored before the error is reported.
    let started = std::time::Instant::now();
    let removal = if netns::exists(&sb.netns) {
        redirect::remove_start(&sb.netns)
    } else {
        Err(anyhow::anyhow!("netns {} is gone", sb.netns))
    };
    if let Some(info) = &sb.resolver {
        resolver::stop(info);
    }
    tracing::debug!(elapsed = ?started.elapsed(), "resolver stopped");
    let removed = match removal {
        Ok(pending) => pending.wait_gone(),
        Err(e) => {
            tracing::info!("no redirect to remove: {e:#}");
            Ok(())
        }
    };
    tracing::debug!(elapsed = ?started.elapsed(), "redirect removed");
    files::restore(sb);
    sandbox::remove(paths, lock, &sb.container_id)?;
    tracing::debug!(elapsed = ?started.elapsed(), "files restored");
    removed
}
