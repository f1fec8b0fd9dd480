//! What ADD does for one attachment, once decided (`plan.rs`): the record, the sandbox and
//! its files, then the container's resolver reloaded or started, with its rules. The
//! sandbox is saved at each step a later DEL must know of (7 crash points test that).

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use embedns_conf::attachment::AttachmentId;
use embedns_conf::crash;
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::control::{ReloadReply, Request, StatusReply};
use embedns_conf::record::Record;
use embedns_conf::sandbox::{
    self, Attachment, ResolverInfo, Sandbox, SandboxLock, EMBEDDED_RESOLVER,
};
use embedns_conf::store::{NetworkLock, NetworkStore};
use embedns_conf::user::ResolverUser;

use super::plan::{self, ResolverPlan, Rules};
use crate::env::CniEnv;
use crate::error::{PluginError, RESOLVER_FAILED};
use crate::{catch6, cgroup, del, files, netns, probe, redirect, redirect_remover, resolver};

/// How long ADD waits for a new resolver to answer through the redirect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How to start a resolver: its binary, the identity it runs as, its leaf cgroup (relative to
/// each hierarchy's root).
pub struct Spawn<'a> {
    pub binary: &'a Path,
    pub user: ResolverUser,
    pub cgroup: PathBuf,
}

/// Where an ADD works: its state, the container's sandbox lock, the CNI environment, and
/// when it started (for the debug log's timings).
pub struct Site<'a> {
    pub paths: &'a StatePaths,
    pub lock: &'a SandboxLock,
    pub env: &'a CniEnv,
    pub started: Instant,
}

impl Site<'_> {
    fn save(&self, sb: &Sandbox) -> anyhow::Result<()> {
        Ok(sandbox::save(self.paths, self.lock, sb)?)
    }

    fn step(&self, what: &str) {
        tracing::debug!(elapsed = ?self.started.elapsed(), "{what}");
    }
}

/// Attaches `record` (catching `caught`, R26): writes `resolv_conf` to `targets` and makes the
/// container's resolver serve it. Returns the sandbox's attachment.
pub fn attach(
    site: &Site,
    (record, caught): (&Record, Vec<std::net::IpAddr>),
    targets: &[PathBuf],
    resolv_conf: &str,
    spawn: &Spawn,
) -> anyhow::Result<Attachment> {
    put_record(site.paths, record)?;
    crash::point("add:recorded");
    site.step("recorded");

    let mut sb = current_sandbox(site, record)?;
    let caught_before = sb.caught();
    let attachment = plan::slot(&mut sb, &record.network, &record.ifname, &caught);
    let catch = redirect::Catch {
        servers: sb.caught(),
        uid: spawn.user.uid,
        gid: spawn.user.gid,
    };
    let serves = (sb.resolver.as_ref()).is_some_and(|i| resolver::serves(i, &site.env.netns));
    let wants_host = record.resolver.upstreams.host_resolv_conf.is_some();
    let decided = plan::resolver(serves, wants_host, || has_host_thread(site, &sb, record));
    if decided == ResolverPlan::Restart {
        tracing::info!("restarting the resolver: this network asks the host's upstreams");
        if let Some(info) = &sb.resolver {
            resolver::stop(info);
        }
    }
    let reuse = decided == ResolverPlan::Reload;
    let previous = sb.resolver.is_some();
    sb.redirect_settled = reuse;
    let placement = (!reuse).then(|| place(&mut sb, &spawn.cgroup));
    // The sandbox is saved before the files are written and before the resolver starts, so
    // that an undo after a failure knows what to restore and what to stop.
    files::write(&mut sb, targets, resolv_conf)?;
    site.save(&sb)?;
    crash::point("add:sandbox-saved");
    site.step("files written");

    // A remover a DEL left for this netns would take the rules away: stop it first. (A DEL
    // killed after starting one may also have left the resolver running, and reused here.)
    let left = redirect_remover::cancel(site.paths, &site.env.netns);
    if reuse {
        reload(site, &mut sb, catch, &caught_before, left)?;
    } else {
        let procs = placement.as_ref().map_or(&[][..], |p| &p.procs[..]);
        start(site, &mut sb, &catch, spawn, procs, previous || left)?;
    }
    Ok(attachment)
}

/// The record, put under the network's lock after releasing its name from attachments whose
/// netns is gone.
fn put_record(paths: &StatePaths, record: &Record) -> anyhow::Result<()> {
    let net = NetworkStore::new(paths, &record.network);
    let net_lock = net.lock()?;
    if let Some(name) = &record.name {
        release_stale_holders(&net, &net_lock, name, &record.key())?;
    }
    net.put(&net_lock, record)?;
    Ok(())
}

/// The container's sandbox for this netns: the one recorded, or a new one where there is
/// none or the recorded one belongs to an earlier netns (whose resolver, rules and other
/// attachments' records go first).
fn current_sandbox(site: &Site, record: &Record) -> anyhow::Result<Sandbox> {
    let (paths, env) = (site.paths, site.env);
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
    Ok(sb)
}

/// Whether the running resolver can ask the host's upstreams: it has a host-netns thread only
/// if one of its networks took them when it started (embedns-resolverd's hostns.rs). Another
/// network of the container that takes them answers that; else the resolver is asked.
fn has_host_thread(site: &Site, sb: &Sandbox, record: &Record) -> bool {
    let others_need_host = (sb.attachments.iter())
        .filter(|a| (a.network.as_str(), a.ifname.as_str()) != (&record.network, &record.ifname))
        .filter_map(|a| {
            NetworkStore::new(site.paths, &a.network)
                .get(&site.env.container_id, &a.ifname)
                .ok()
                .flatten()
        })
        .any(|r| r.resolver.upstreams.host_resolv_conf.is_some());
    others_need_host
        || resolver::control::<StatusReply>(site.paths, &site.env.container_id, Request::Status)
            .is_ok_and(|s| s.host_netns)
}

/// A resolver that serves this netns already: told to reload, and its rules put in step
/// (`left`: a DEL's remover was cancelled, and may have run).
fn reload(
    site: &Site,
    sb: &mut Sandbox,
    catch: redirect::Catch,
    caught_before: &[std::net::IpAddr],
    left: bool,
) -> anyhow::Result<()> {
    let (paths, netns) = (site.paths, &site.env.netns);
    resolver::control::<ReloadReply>(paths, &site.env.container_id, Request::Reload)
        .map_err(|e| PluginError::new(RESOLVER_FAILED, format!("{e:#}")))?;
    let info = sb.resolver.clone().expect("a reused resolver is recorded");
    // The running resolver's own identity is what its forwarded queries carry (one of an
    // earlier release may run as another than a new one would).
    let (uid, gid) = resolver::user_of(&info).unwrap_or(catch.owner());
    let catch = redirect::Catch { uid, gid, ..catch };
    let changed = catch.servers != caught_before || sb.catch_owner != Some(catch.owner());
    match plan::rules(left, changed, sb.catch_owner.is_some()) {
        Rules::Keep => return Ok(()),
        Rules::Reinstall => {
            redirect::install(netns, info.udp_port, info.tcp_port, true, &catch)?.wait()?;
            if let Some(ports6) = info.ports6() {
                catch6::remove(netns);
                sb.catch6 = catch6::set_or_warn(netns, ports6, &catch, false);
            }
        }
        Rules::Catch { jump } => {
            redirect::set_catch(netns, info.udp_port, info.tcp_port, &catch, jump)?;
            if let Some(ports6) = info.ports6() {
                sb.catch6 = catch6::set_or_warn(netns, ports6, &catch, sb.catch6);
            }
        }
    }
    sb.catch_owner = Some(catch.owner());
    site.save(sb)
}

/// A new resolver: its sockets bound in the netns, the redirect installed while it starts
/// (`replace`: an earlier one's rules replaced), recorded in the sandbox as soon as it is
/// forked, then waited for until it answers through the redirect.
fn start(
    site: &Site,
    sb: &mut Sandbox,
    catch: &redirect::Catch,
    spawn: &Spawn,
    procs: &[std::fs::File],
    replace: bool,
) -> anyhow::Result<()> {
    let netns = &site.env.netns;
    let Sockets { udp, tcp, v6 } = bind_sockets(netns)?;
    let (u, t) = (udp.local_addr()?.port(), tcp.local_addr()?.port());
    let redirect = redirect::install(netns, u, t, replace, catch)?;
    sb.catch_owner = Some(catch.owner());
    let starting = resolver::start(
        spawn.binary,
        spawn.user,
        site.paths,
        &site.env.container_id,
        [udp.into(), tcp.into()],
        v6.map(|(u, t)| [u.into(), t.into()]),
        procs,
    );
    // Record the resolver before waiting for anything: a plugin killed from here on leaves a
    // resolver its sandbox names, which DEL stops. (Killed between the fork and this save,
    // the resolver's ready signal fails and it exits; DEL and GC also find it by its command
    // line.)
    let starting = starting.and_then(|s| {
        crash::point("add:resolver-forked");
        sb.resolver = Some(s.info.clone());
        site.save(sb)?;
        crash::point("add:resolver-recorded");
        Ok(s)
    });
    let ready = starting.and_then(resolver::StartingResolver::ready);
    crash::point("add:resolver-ready");
    site.step("resolver ready");
    // Always reap the iptables-restore, so an undo after a failure sees its rules.
    let installed = redirect.wait();
    crash::point("add:redirect-installed");
    site.step("redirect installed");
    let info = ready?;
    installed?;
    if let Some(ports6) = info.ports6() {
        sb.catch6 = catch6::set_or_warn(netns, ports6, catch, false);
    }
    wait_answers(netns, &info)?;
    crash::point("add:answered");
    site.step("answered");
    sb.redirect_settled = true;
    site.save(sb)
}

/// The resolver's sockets, bound in the container's netns: UDP and TCP on 127.0.0.11, and on
/// [::1] for the IPv6 nameservers caught (R26) where the netns has IPv6.
struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
    v6: Option<(UdpSocket, TcpListener)>,
}

/// Binds the resolver's [`Sockets`] in `netns` (its loopback up first).
fn bind_sockets(netns: &str) -> anyhow::Result<Sockets> {
    let _in = netns::enter(netns)?;
    netns::loopback_up()?;
    let udp = UdpSocket::bind((EMBEDDED_RESOLVER, 0)).context("binding UDP 127.0.0.11")?;
    let tcp = TcpListener::bind((EMBEDDED_RESOLVER, 0)).context("binding TCP 127.0.0.11")?;
    let v6 = UdpSocket::bind("[::1]:0")
        .and_then(|u| Ok((u, TcpListener::bind("[::1]:0")?)))
        .ok();
    Ok(Sockets { udp, tcp, v6 })
}

/// Waits, inside the netns, until the resolver answers through the redirect.
fn wait_answers(netns: &str, info: &ResolverInfo) -> anyhow::Result<()> {
    let _in = netns::enter(netns)?;
    probe::wait_answers(PROBE_TIMEOUT)
        .map_err(|e| PluginError::new(RESOLVER_FAILED, format!("{e:#}")))
        .with_context(|| format!("resolver pid {} in {netns}", info.pid))?;
    Ok(())
}

/// A new resolver's cgroups, made and recorded in the sandbox (for DEL) before it starts.
fn place(sb: &mut Sandbox, leaf: &Path) -> cgroup::Placement {
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
fn release_stale_holders(
    net: &NetworkStore,
    lock: &NetworkLock,
    name: &str,
    own_key: &str,
) -> anyhow::Result<()> {
    for key in net.holders(name)? {
        if key == own_key {
            continue;
        }
        let Ok(AttachmentId {
            container_id,
            ifname,
        }) = key.parse()
        else {
            continue;
        };
        match net.get(&container_id, &ifname) {
            Ok(Some(r)) if netns::exists(&r.netns) => {}
            Ok(Some(r)) => {
                tracing::info!(name, stale = %key, netns = %r.netns, "replacing a dead attachment's record");
                net.remove(lock, &container_id, &ifname)?;
            }
            Ok(None) | Err(_) => net.drop_holder(lock, name, &key)?,
        }
    }
    Ok(())
}
