//! CHECK: the record matches prevResult and the network's index answers for it, the files
//! say `nameserver 127.0.0.11`, the resolver is our live process, and `127.0.0.11:53`
//! answers inside the container. On a shared network, a sync process that is not running is
//! started again.

use std::collections::BTreeSet;
use std::time::Duration;

use embedns_conf::cni;
use embedns_conf::index::IndexReader;
use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox;
use embedns_conf::store::NetworkStore;

use crate::env::CniEnv;
use crate::error::{PluginError, CHECK_FAILED};
use crate::{netns, probe, redirect, resolver, sync_process};

/// CHECK: the record, the index, the files, the rules and a live, answering resolver.
/// The largest resolv.conf CHECK reads (glibc reads a few KiB of one).
const MAX_RESOLV_CONF: u64 = 64 * 1024;

pub fn check(env: &CniEnv, conf: &NetConf) -> anyhow::Result<()> {
    let failed = |msg: String| -> anyhow::Error { PluginError::new(CHECK_FAILED, msg).into() };
    let paths = StatePaths::new(&conf.data_dir);
    let record = NetworkStore::new(&paths, &conf.name)
        .get(&env.container_id, &env.ifname)?
        .ok_or_else(|| {
            failed(format!(
                "no record of container {} ({}) on network {}",
                env.container_id, env.ifname, conf.name
            ))
        })?;
    if let Some(prev) = &conf.prev_result {
        let want: BTreeSet<_> = cni::container_ips(prev)?.into_iter().collect();
        let have: BTreeSet<_> = record.ips.iter().copied().collect();
        if want != have {
            return Err(failed(format!(
                "recorded addresses {have:?} differ from prevResult's {want:?}"
            )));
        }
    }
    // Peers read the network's shared index, not the record: it must answer for this one.
    if let Some(name) = &record.name {
        let store = NetworkStore::new(&paths, &conf.name);
        let indexed = IndexReader::new(store.dir())
            .addresses(name)
            .ok()
            .flatten()
            .unwrap_or_default();
        if !record.ips.iter().all(|ip| indexed.contains(ip)) {
            return Err(failed(format!(
                "network {}'s index does not answer {name} with {:?}",
                conf.name, record.ips
            )));
        }
    }
    let sb = sandbox::load(&paths, &env.container_id)?
        .ok_or_else(|| failed(format!("no sandbox for container {}", env.container_id)))?;
    for f in &sb.files {
        // The container may write (or replace) the file: read as data, bounded.
        let text = embedns_conf::fsutil::read_bounded(&f.path, MAX_RESOLV_CONF)
            .map_err(|e| failed(format!("reading {}: {e}", f.path.display())))?;
        if !text.lines().any(|l| l.trim() == "nameserver 127.0.0.11") {
            return Err(failed(format!(
                "{} does not name 127.0.0.11 as its nameserver",
                f.path.display()
            )));
        }
    }
    let info = sb
        .resolver
        .as_ref()
        .ok_or_else(|| failed("no resolver recorded".into()))?;
    if !resolver::alive(info) {
        return Err(failed(format!(
            "the resolver (pid {}) is not running",
            info.pid
        )));
    }
    if !resolver::serves(info, &env.netns) {
        return Err(failed(format!(
            "the resolver (pid {}) does not serve {}",
            info.pid, env.netns
        )));
    }
    if !redirect::present(&env.netns) {
        return Err(failed(format!(
            "the 127.0.0.11 redirect is missing in {}",
            env.netns
        )));
    }
    sync_process::keep_running(conf)?;
    let _in = netns::enter(&env.netns)?;
    probe::wait_answers(Duration::from_secs(1)).map_err(|e| failed(format!("{e:#}")))?;
    Ok(())
}
