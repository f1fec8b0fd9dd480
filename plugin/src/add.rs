//! ADD: record the container, write its resolv.conf, make sure its resolver serves this
//! network, and return `prevResult` with our `dns`. Anything that fails after the first write
//! is undone by the same code DEL runs, so a failed ADD leaves nothing behind.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use embedns_conf::cni;
use embedns_conf::control::{ReloadReply, Request, StatusReply};
use embedns_conf::crash;
use embedns_conf::netconf::NetConf;
use embedns_conf::paths::StatePaths;
use embedns_conf::record::{Record, ResolverSettings, Upstreams};
use embedns_conf::sandbox::{self, Attachment, Sandbox, SandboxLock};
use embedns_conf::store::{prepare_root, resolver_user_for, NetworkLock, NetworkStore};
use embedns_conf::user::ResolverUser;
use embedns_conf::ConfError;
use serde_json::Value;

use crate::container_names::ContainerNames;
use crate::env::CniEnv;
use crate::error::{PluginError, RESOLVER_FAILED};
use crate::{
    catch6, cgroup, del, files, netns, probe, redirect, redirect_remover, resolver, sync_process,
};

/// How long ADD waits for a new resolver to answer through the redirect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

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
    let record = Record {
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        name: names.name,
        aliases: names.aliases,
        links: names.links,
        ips,
        netns: env.netns.clone(),
        domain_name: conf.domain_name.clone(),
        search: rc
            .search
            .iter()
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
    };

    let paths = StatePaths::new(&conf.data_dir);
    let user = resolver_user_for(paths.root(), conf.resolver_user, conf.resolver_user_set);
    prepare_root(paths.root(), user.uid, user.gid)?;
    let lock = sandbox::lock(&paths, &env.container_id)?;
    let spawn = Spawn {
        binary: &binary,
        user,
        cgroup: embedns_conf::cgroup::leaf(&conf.cgroup_parent, &env.container_id),
    };
    let attached = attach(
        &paths,
        &lock,
        env,
        (&record, caught),
        &targets,
        &rc.render(),
        &spawn,
    )
    .and_then(|a| {
        if let Some(etcd) = &conf.etcd {
            if let Some(starting) = sync_process::ensure(&paths, &conf.name, etcd, &sync_binary)? {
                starting.wait();
            }
        }
        Ok(a)
    });
    let attachment = match attached {
        Ok(a) => a,
        Err(e) => {
            if let Err(undo) = del::detach_locked(
                &paths,
                lock,
                &env.container_id,
                &conf.name,
                &env.ifname,
                del::Removal::Now,
            ) {
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

/// How to start a resolver: its binary, the identity it runs as, its leaf cgroup (relative to
/// each hierarchy's root).
struct Spawn<'a> {
    binary: &'a std::path::Path,
    user: ResolverUser,
    cgroup: std::path::PathBuf,
}

/// `attaching`: the record, and the nameservers this attachment catches (R26).
fn attach(
    paths: &StatePaths,
    lock: &SandboxLock,
    env: &CniEnv,
    (record, caught): (&Record, Vec<std::net::IpAddr>),
    targets: &[std::path::PathBuf],
    resolv_conf: &str,
    spawn: &Spawn,
) -> anyhow::Result<Attachment> {
    let started = std::time::Instant::now();
    let net = NetworkStore::new(paths, &record.network);
    {
        let net_lock = net.lock()?;
        if let Some(name) = &record.name {
            evict_stale_claims(&net, &net_lock, name, &record.key())?;
        }
        net.put(&net_lock, record)?;
    }
    crash::point("add:recorded");
    tracing::debug!(elapsed = ?started.elapsed(), "recorded");

    let fresh = || Sandbox {
        container_id: env.container_id.clone(),
        ..Sandbox::default()
    };
    let mut sb = sandbox::load(paths, &env.container_id)?.unwrap_or_else(fresh);
    let inode = netns::inode(&env.netns);
    if is_stale(&sb, &env.netns, inode) {
        // The same container ID in a new netns (a restarted container, cnitool's path-derived
        // IDs): what the old sandbox started serves a namespace that is gone or another one.
        tracing::info!(old = %sb.netns, new = %env.netns, "replacing the sandbox of an earlier netns");
        del::stop_and_restore(paths, &sb, del::Removal::Now);
        for a in &sb.attachments {
            if (a.network.as_str(), a.ifname.as_str()) != (&record.network, &record.ifname) {
                del::remove_record(paths, &env.container_id, &a.network, &a.ifname)?;
            }
        }
        sb = fresh();
    }
    sb.netns = env.netns.clone();
    sb.netns_inode = inode;
    let caught_before = sb.caught();
    let same = |a: &&mut Attachment| a.network == record.network && a.ifname == record.ifname;
    let (v4, v6) = split_families(&caught);
    let attachment = match sb.attachments.iter_mut().find(same) {
        Some(a) => {
            (a.caught, a.caught6) = (v4, v6);
            a.clone()
        }
        None => {
            let a = Attachment {
                network: record.network.clone(),
                ifname: record.ifname.clone(),
                nameserver: sb.free_nameserver(),
                caught: v4,
                caught6: v6,
            };
            sb.attachments.push(a.clone());
            a
        }
    };
    let catch = redirect::Catch {
        servers: sb.caught(),
        uid: spawn.user.uid,
        gid: spawn.user.gid,
    };
    // A live resolver serving this netns is told to reload; otherwise one is started (and an
    // earlier one's rules, if any, replaced).
    let mut reuse = sb
        .resolver
        .as_ref()
        .is_some_and(|info| resolver::serves(info, &env.netns));
    // A resolver has a host-netns thread only if one of its networks took the host's
    // upstreams when it started (embedns-resolverd's hostns.rs): a network that needs them
    // joining one that has none gets a new resolver. Asked of the resolver only when no other
    // network of the container takes them.
    if reuse && record.resolver.upstreams.host_resolv_conf.is_some() {
        let others_need_host = (sb.attachments.iter())
            .filter(|a| {
                (a.network.as_str(), a.ifname.as_str()) != (&record.network, &record.ifname)
            })
            .filter_map(|a| {
                NetworkStore::new(paths, &a.network)
                    .get(&env.container_id, &a.ifname)
                    .ok()
                    .flatten()
            })
            .any(|r| r.resolver.upstreams.host_resolv_conf.is_some());
        let has_host = others_need_host
            || resolver::control::<StatusReply>(paths, &env.container_id, Request::Status)
                .is_ok_and(|s| s.host_netns);
        if !has_host {
            tracing::info!("restarting the resolver: this network asks the host's upstreams");
            if let Some(info) = &sb.resolver {
                resolver::stop(info);
            }
            reuse = false;
        }
    }
    let previous = sb.resolver.is_some();
    sb.redirect_settled = reuse;
    let placement = (!reuse).then(|| place(&mut sb, &spawn.cgroup));
    // The sandbox is saved before the files are written and before the resolver starts, so
    // that an undo after a failure knows what to restore and what to stop.
    files::write(&mut sb, targets, resolv_conf)?;
    sandbox::save(paths, lock, &sb)?;
    crash::point("add:sandbox-saved");
    tracing::debug!(elapsed = ?started.elapsed(), "files written");

    // A remover a DEL left for this netns would take the rules away: stop it first. (A DEL
    // killed after starting one may also have left the resolver running, and reused here.)
    let left = redirect_remover::cancel(paths, &env.netns);
    if reuse {
        resolver::control::<ReloadReply>(paths, &env.container_id, Request::Reload)
            .map_err(|e| PluginError::new(RESOLVER_FAILED, format!("{e:#}")))?;
        let info = sb.resolver.clone().expect("a reused resolver is recorded");
        // The running resolver's own identity is what its forwarded queries carry (one of an
        // earlier release may run as another than a new one would).
        let (uid, gid) = resolver::user_of(&info).unwrap_or(catch.owner());
        let catch = redirect::Catch { uid, gid, ..catch };
        if left {
            // Its remover may have run: the rules are put back whole.
            redirect::install(&env.netns, info.udp_port, info.tcp_port, true, &catch)?.wait()?;
            sb.catch_owner = Some(catch.owner());
            if let Some(ports6) = info.ports6() {
                catch6::remove(&env.netns);
                sb.catch6 = catch6::set_or_warn(&env.netns, ports6, &catch, false);
            }
            sandbox::save(paths, lock, &sb)?;
        } else if catch.servers != caught_before || sb.catch_owner != Some(catch.owner()) {
            let jump = sb.catch_owner.is_none();
            redirect::set_catch(&env.netns, info.udp_port, info.tcp_port, &catch, jump)?;
            sb.catch_owner = Some(catch.owner());
            if let Some(ports6) = info.ports6() {
                sb.catch6 = catch6::set_or_warn(&env.netns, ports6, &catch, sb.catch6);
            }
            sandbox::save(paths, lock, &sb)?;
        }
    } else {
        // Bind the resolver's sockets here, in the container's netns, so the redirect
        // (an iptables-restore exec) runs while the resolver starts.
        let (udp, tcp, v6) = {
            let _in = netns::enter(&env.netns)?;
            netns::loopback_up()?;
            let udp = UdpSocket::bind("127.0.0.11:0").context("binding UDP 127.0.0.11")?;
            let tcp = TcpListener::bind("127.0.0.11:0").context("binding TCP 127.0.0.11")?;
            // For the IPv6 nameservers caught (R26): none where the netns has no IPv6.
            let v6 = UdpSocket::bind("[::1]:0")
                .and_then(|u| Ok((u, TcpListener::bind("[::1]:0")?)))
                .ok();
            (udp, tcp, v6)
        };
        let (u, t) = (udp.local_addr()?.port(), tcp.local_addr()?.port());
        let redirect = redirect::install(&env.netns, u, t, previous || left, &catch)?;
        sb.catch_owner = Some(catch.owner());
        let starting = resolver::start(
            spawn.binary,
            spawn.user,
            paths,
            &env.container_id,
            [udp.into(), tcp.into()],
            v6.map(|(u, t)| [u.into(), t.into()]),
            placement.as_ref().map_or(&[], |p| &p.procs),
        );
        // Record the resolver before waiting for anything: a plugin killed from here on
        // leaves a resolver its sandbox names, which DEL stops. (Killed between the fork
        // and this save, the resolver's ready signal fails and it exits; DEL and GC also
        // find it by its command line.)
        let starting = match starting {
            Ok(s) => {
                crash::point("add:resolver-forked");
                sb.resolver = Some(s.info.clone());
                sandbox::save(paths, lock, &sb)?;
                crash::point("add:resolver-recorded");
                Ok(s)
            }
            Err(e) => Err(e),
        };
        let ready = starting.and_then(resolver::StartingResolver::ready);
        crash::point("add:resolver-ready");
        tracing::debug!(elapsed = ?started.elapsed(), "resolver ready");
        // Always reap the iptables-restore, so an undo after a failure sees its rules.
        let installed = redirect.wait();
        crash::point("add:redirect-installed");
        tracing::debug!(elapsed = ?started.elapsed(), "redirect installed");
        let info = ready?;
        installed?;
        if let Some(ports6) = info.ports6() {
            sb.catch6 = catch6::set_or_warn(&env.netns, ports6, &catch, false);
        }
        {
            let _in = netns::enter(&env.netns)?;
            probe::wait_answers(PROBE_TIMEOUT)
                .map_err(|e| PluginError::new(RESOLVER_FAILED, format!("{e:#}")))
                .with_context(|| format!("resolver pid {} in {}", info.pid, env.netns))?;
        }
        crash::point("add:answered");
        tracing::debug!(elapsed = ?started.elapsed(), "answered");
        sb.redirect_settled = true;
        sandbox::save(paths, lock, &sb)?;
    }
    Ok(attachment)
}

/// The nameservers caught, by family (the sandbox keeps them apart: `Attachment::caught6`).
fn split_families(
    caught: &[std::net::IpAddr],
) -> (Vec<std::net::Ipv4Addr>, Vec<std::net::Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in caught {
        match ip {
            std::net::IpAddr::V4(a) => v4.push(*a),
            std::net::IpAddr::V6(a) => v6.push(*a),
        }
    }
    (v4, v6)
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

/// A new resolver's cgroups, made and recorded in the sandbox (for DEL) before it starts.
fn place(sb: &mut Sandbox, leaf: &std::path::Path) -> cgroup::Placement {
    let placement = cgroup::prepare(leaf);
    for dir in &placement.made {
        if !sb.cgroups.contains(dir) {
            sb.cgroups.push(dir.clone());
        }
    }
    placement
}

/// Whether a sandbox belongs to an earlier netns of the container: another path, the same
/// path naming a new namespace, or a live resolver in another namespace.
fn is_stale(sb: &Sandbox, netns_path: &str, inode: Option<u64>) -> bool {
    if sb.netns.is_empty() {
        return false;
    }
    sb.netns != netns_path
        || (sb.netns_inode.is_some() && sb.netns_inode != inode)
        || sb
            .resolver
            .as_ref()
            .is_some_and(|i| resolver::alive(i) && !resolver::serves(i, netns_path))
}

/// A name held by an attachment whose netns is gone is released, so a restarted container
/// does not leave a stale address next to its new one.
fn evict_stale_claims(
    net: &NetworkStore,
    lock: &NetworkLock,
    name: &str,
    own_key: &str,
) -> anyhow::Result<()> {
    for key in net.claimants(name)? {
        if key == own_key {
            continue;
        }
        let Some((cid, ifname)) = key.rsplit_once('@') else {
            continue;
        };
        match net.get(cid, ifname) {
            Ok(Some(r)) if netns::exists(&r.netns) => {}
            Ok(Some(r)) => {
                tracing::info!(name, stale = %key, netns = %r.netns, "replacing a dead attachment's record");
                net.remove(lock, cid, ifname)?;
            }
            Ok(None) | Err(_) => net.drop_claim(lock, name, &key)?,
        }
    }
    Ok(())
}
