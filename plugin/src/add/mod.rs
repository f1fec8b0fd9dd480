//! ADD: record the container, write its resolv.conf, make sure its resolver serves this
//! network, and return `prevResult` with our `dns`. Anything that fails after the first write
//! is undone by the same code DEL runs, so a failed ADD leaves nothing behind. What ADD
//! decides is in `plan.rs` (pure, unit-tested), what it does for the attachment in
//! `attach.rs`.

mod attach;
mod plan;

use std::path::PathBuf;

use embedns_conf::cni;
use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::record::{Record, ResolverSettings, Upstreams};
use embedns_conf::resolv::ResolvConf;
use embedns_conf::sandbox;
use embedns_conf::store::{prepare_root, resolver_user_for, NetworkStore};
use embedns_conf::ConfError;
use serde_json::Value;

use self::attach::{Site, Spawn};
use crate::container_names::ContainerNames;
use crate::env::CniEnv;
use crate::error::{PluginError, RESOLVER_FAILED};
use crate::{del, files, netns, resolver, sync_process};

/// ADD: the record, the files, the resolver and its redirect; the CNI result once it answers.
pub fn add(env: &CniEnv, conf: &NetConf) -> anyhow::Result<Value> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        ConfError::InvalidConfig(
            "ADD needs a prevResult: embedns is a chained plugin, put it after an \
             IP-assigning plugin such as bridge + host-local"
                .into(),
        )
    })?;
    let ips = cni::container_ips(prev)?;
    let names = ContainerNames::new(env, conf)?;
    let host = files::host_resolv_conf(&conf.host_resolv_conf)?;
    let rc = files::container_resolv_conf(conf, &host);
    let caught = conf.runtime_nameservers(&host);
    let targets = files::targets(env, conf)?;
    let (binary, sync_binary) = binaries(env, conf)?;
    let record = record_of(env, conf, names, ips, &rc);

    let paths = StatePaths::new(&conf.data_dir);
    let user = resolver_user_for(paths.root(), conf.resolver_user, conf.resolver_user_set);
    prepare_root(paths.root(), user.uid, user.gid)?;
    let lock = sandbox::lock(&paths, &env.container_id)?;
    let spawn = Spawn {
        binary: &binary,
        user,
        cgroup: embedns_conf::cgroup::leaf(&conf.cgroup_parent, &env.container_id),
    };
    let site = Site {
        paths: &paths,
        lock: &lock,
        env,
        started: std::time::Instant::now(),
    };
    let attached = attach::attach(&site, (&record, caught), &targets, &rc.render(), &spawn)
        .and_then(|a| {
            if let Some(etcd) = &conf.etcd {
                if let Some(starting) =
                    sync_process::ensure(&paths, &conf.name, etcd, &sync_binary)?
                {
                    starting.wait();
                }
            }
            Ok(a)
        });
    let attachment = match attached {
        Ok(a) => a,
        Err(e) => {
            let undo = del::detach_locked(
                &paths,
                lock,
                &env.container_id,
                &conf.name,
                &env.ifname,
                del::Removal::Now,
            );
            if let Err(undo) = undo {
                tracing::error!("undoing the failed ADD: {undo:#}");
            }
            return Err(e);
        }
    };
    note_unknown_keys(&paths, conf);
    Ok(cni::add_result(
        Some(prev),
        &conf.cni_version,
        &files::result_dns(&rc, conf, attachment.nameserver),
    ))
}

/// The resolver's and the sync process's binaries, and the netns: each must be there before
/// anything is written.
fn binaries(env: &CniEnv, conf: &NetConf) -> anyhow::Result<(PathBuf, PathBuf)> {
    let binary = resolver::binary(conf.resolver_path.as_deref())?;
    if !binary.is_file() {
        return Err(PluginError::new(
            RESOLVER_FAILED,
            format!(
                "resolver binary {} not found (install embedns-resolverd next to embedns or set resolverPath)",
                binary.display()
            ),
        )
        .into());
    }
    let sync_binary = sync_process::binary(&binary);
    if conf.etcd.is_some() && !sync_binary.is_file() {
        return Err(ConfError::InvalidConfig(format!(
            "the network is shared through etcd but {} is not installed (it comes with embedns)",
            sync_binary.display()
        ))
        .into());
    }
    if !netns::exists(&env.netns) {
        return Err(ConfError::InvalidEnv {
            var: "CNI_NETNS",
            reason: format!("{} does not exist", env.netns),
        }
        .into());
    }
    Ok((binary, sync_binary))
}

/// The container's record on this network: its addresses and names, and the settings its
/// resolver takes from the conf.
fn record_of(
    env: &CniEnv,
    conf: &NetConf,
    names: ContainerNames,
    ips: Vec<std::net::IpAddr>,
    rc: &ResolvConf,
) -> Record {
    Record {
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        name: names.name,
        aliases: names.aliases,
        links: names.links,
        ips,
        netns: env.netns.clone(),
        domain_name: conf.domain_name.clone(),
        search: (rc.search.iter())
            .map(|s| embedns_conf::names::normalize(s))
            .collect(),
        ttl: conf.ttl,
        internal: conf.internal,
        namespace: names.namespace,
        resolver: ResolverSettings {
            upstreams: Upstreams {
                explicit: conf.explicit_upstreams.clone(),
                // R17/R21: the host's upstreams only when none are explicit and the network is
                // not internal.
                host_resolv_conf: (conf.explicit_upstreams.is_empty() && !conf.internal)
                    .then(|| conf.host_resolv_conf.clone()),
            },
            upstream_timeout_ms: conf.upstream_timeout_ms,
            max_inflight: conf.max_inflight,
            cache: conf.cache,
        },
    }
}

/// The conf's keys embedns does not know, noted for `embedns status` (a note only: never
/// fatal).
fn note_unknown_keys(paths: &StatePaths, conf: &NetConf) {
    let net = NetworkStore::new(paths, &conf.name);
    let noted = net
        .lock()
        .and_then(|l| net.note_unknown_keys(&l, &conf.unknown_keys));
    if let Err(e) = noted {
        tracing::warn!("noting the conf's unknown keys: {e}");
    }
}
