//! `embedns status [--json] [--data-dir DIR] [CONTAINER]`: what embedns is doing, for a
//! person. Networks and their containers come from the store; each resolver is asked over
//! its control socket (a live pid is not enough to be healthy). Redirects a DEL could not
//! remove are listed as leftovers; a network shared through etcd shows its sync process's
//! status. Exits 1 when a listed resolver is unhealthy, something was left in place, or a
//! shared network is out of step: its sync process not running, cut off from etcd, or its
//! host name's claim refused.

use embedns_conf::attachment::RemoteKey;
use std::path::PathBuf;

use anyhow::Context;
use embedns_conf::multihost::shared::{now_ms, EtcdConf, SyncStatus};
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::control::{Request, StatusReply};
use embedns_conf::protocol::report::{
    Attachment, ContainerReport, LeftoverReport, Member, NetworkReport, Report, ResolverHealth,
    SharedReport,
};
use embedns_conf::record::Record;
use embedns_conf::sandbox::{self, Sandbox};
use embedns_conf::store::{self, NetworkStore};
use embedns_conf::supervision::Supervision;
use embedns_conf::user::default_data_dir;

use crate::resolver;

struct Options {
    json: bool,
    data_dir: PathBuf,
    container: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        json: false,
        data_dir: default_data_dir(),
        container: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--data-dir" => o.data_dir = it.next().context("--data-dir needs a value")?.into(),
            s if s.starts_with('-') => anyhow::bail!("unknown option {s}"),
            s => o.container = Some(s.to_string()),
        }
    }
    Ok(o)
}

/// Runs `embedns status`; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("embedns status: {e:#}\nusage: embedns status [--json] [--data-dir DIR] [CONTAINER]");
            return 2;
        }
    };
    let paths = StatePaths::new(&o.data_dir);
    let report = match collect(&paths, o.container.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("embedns status: {e:#}");
            return 2;
        }
    };
    if o.container.is_some() && report.containers.is_empty() {
        eprintln!(
            "embedns status: no container {:?}",
            o.container.unwrap_or_default()
        );
        return 1;
    }
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_text(&report);
        print_leftovers(&report);
    }
    i32::from(report.trouble())
}

fn collect(paths: &StatePaths, only: Option<&str>) -> anyhow::Result<Report> {
    let mut networks = Vec::new();
    let mut by_container: std::collections::BTreeMap<String, Vec<Record>> = Default::default();
    for net in store::networks(paths)? {
        let mut members = Vec::new();
        for (key, rec) in NetworkStore::new(paths, &net).list()? {
            match rec {
                Ok(r) => {
                    members.push(Member::Record {
                        container: r.container_id.clone(),
                        name: r.name.clone(),
                        ip: r.ips.clone(),
                    });
                    by_container
                        .entry(r.container_id.clone())
                        .or_default()
                        .push(r);
                }
                Err(e) => members.push(Member::Unreadable {
                    key,
                    error: e.to_string(),
                }),
            }
        }
        networks.push(network_report(paths, net, members));
    }
    let mut containers = Vec::new();
    for (id, records) in by_container {
        let matches = only.is_none_or(|q| {
            id.starts_with(q) || records.iter().any(|r| r.name.as_deref() == Some(q))
        });
        if !matches {
            continue;
        }
        let sb = sandbox::load(paths, &id).ok().flatten();
        let attachments = records
            .iter()
            .map(|r| Attachment {
                network: r.network.clone(),
                ifname: r.ifname.clone(),
                ips: r.ips.clone(),
                aliases: r.aliases.clone(),
                links: r
                    .links
                    .iter()
                    .map(|l| format!("{}:{}", l.name, l.alias))
                    .collect(),
            })
            .collect();
        containers.push(ContainerReport {
            resolver: resolver_health(paths, &id, sb.as_ref()),
            supervisor: supervision(paths, &id, sb.as_ref()),
            name: records.iter().find_map(|r| r.name.clone()),
            netns: records.first().map(|r| r.netns.clone()),
            id,
            attachments,
            // R26: the nameservers besides 127.0.0.11 whose queries the resolver answers.
            caught: sb.as_ref().map(Sandbox::caught).unwrap_or_default(),
        });
    }
    let leftovers = sandbox::leftovers(paths)
        .into_iter()
        .map(|l| LeftoverReport {
            container: l.container_id,
            netns: l.netns,
            error: l.error,
        })
        .collect();
    Ok(Report {
        data_dir: paths.root().to_path_buf(),
        networks,
        containers,
        leftovers,
        landlock_abi: landlock_abi(),
    })
}

/// The kernel's Landlock ABI version (0: none or disabled).
fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// A network, its attachments, its sync (shared) and its conf's unknown keys.
fn network_report(paths: &StatePaths, name: String, containers: Vec<Member>) -> NetworkReport {
    NetworkReport {
        shared: shared(paths, &name),
        unknown_keys: NetworkStore::new(paths, &name).unknown_keys(),
        name,
        containers,
    }
}

/// What the sandbox's live supervisor wrote of its restarts (its own file, root's, in the
/// sandbox directory; one of another pid is stale).
fn supervision(paths: &StatePaths, id: &str, sb: Option<&Sandbox>) -> Option<Supervision> {
    let info = sb?.resolver.as_ref().filter(|i| resolver::alive(i))?;
    let text = std::fs::read(paths.supervision(id)).ok()?;
    let s: Supervision = serde_json::from_slice(&text[..text.len().min(64 * 1024)]).ok()?;
    (s.pid == info.pid as u32).then_some(s)
}

/// A shared network's sync: its config and last status, whether its process runs; `None`
/// for a network of this host only.
fn shared(paths: &StatePaths, network: &str) -> Option<SharedReport> {
    let etcd: EtcdConf =
        serde_json::from_slice(&std::fs::read(paths.etcd_conf(network)).ok()?).ok()?;
    let status: Option<SyncStatus> = std::fs::read(paths.sync_status(network))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let running = status.as_ref().is_some_and(|s| {
        crate::processes::cmdline(s.pid as i32)
            .is_some_and(|argv| embedns_conf::commands::SyncCommand::is_sync(&argv))
    });
    let heard_ms_ago = status
        .as_ref()
        .filter(|s| s.heard_at_ms > 0)
        .map(|s| now_ms().saturating_sub(s.heard_at_ms));
    Some(SharedReport {
        etcd,
        running,
        status,
        heard_ms_ago,
        overlaps: overlaps(&NetworkStore::new(paths, network)),
    })
}

/// Addresses both a container of this host and another host's record hold on a shared
/// network (`<ip> (<host>)`): overlapping per-host subnets, a common misconfiguration. This
/// host's container keeps the PTR of its address.
fn overlaps(net: &NetworkStore) -> Vec<String> {
    let local: std::collections::BTreeSet<std::net::IpAddr> =
        (net.list().unwrap_or_default().into_iter())
            .filter_map(|(_, r)| r.ok())
            .flat_map(|r| r.ips)
            .collect();
    let mut out = Vec::new();
    for (key, r) in net.list_remote().unwrap_or_default() {
        let Ok(r) = r else { continue };
        let Ok(key) = key.parse::<RemoteKey>() else {
            continue;
        };
        let host = key.host;
        for ip in r.ips.iter().filter(|ip| local.contains(ip)) {
            out.push(format!("{ip} ({host})"));
        }
    }
    out
}

fn resolver_health(paths: &StatePaths, id: &str, sb: Option<&Sandbox>) -> ResolverHealth {
    let Some(info) = sb.and_then(|s| s.resolver.as_ref()) else {
        return ResolverHealth::failed(None, "no resolver recorded");
    };
    if !resolver::alive(info) {
        return ResolverHealth::failed(Some(info.pid as u32), "not running");
    }
    match resolver::control::<StatusReply>(paths, id, Request::Status) {
        Ok(status) => ResolverHealth::answered(status),
        Err(e) => ResolverHealth::failed(Some(info.pid as u32), format!("{e:#}")),
    }
}

fn print_text(r: &Report) {
    println!("state: {}", r.data_dir.display());
    let daemons = !r.containers.is_empty() || r.networks.iter().any(|n| n.shared.is_some());
    if let Some(w) = r.confinement_warning().filter(|_| daemons) {
        println!("WARNING: {w}");
    }
    for net in &r.networks {
        println!(
            "\nnetwork {} ({} attachments)",
            net.name,
            net.containers.len()
        );
        if !net.unknown_keys.is_empty() {
            println!(
                "  WARNING: its configuration has keys embedns does not know (ignored; a typo?): {}",
                net.unknown_keys.join(", ")
            );
        }
        for m in &net.containers {
            match m {
                Member::Record {
                    container,
                    name,
                    ip,
                } => println!(
                    "  {:<20} {:<28} {}",
                    name.as_deref().unwrap_or("-"),
                    join(ip),
                    short(container)
                ),
                Member::Unreadable { key, error } => {
                    println!("  UNREADABLE record {key}: {error}")
                }
            }
        }
        if let Some(shared) = &net.shared {
            print_shared(shared);
        }
    }
    for c in &r.containers {
        println!(
            "\ncontainer {} ({})  netns {}",
            c.name.as_deref().unwrap_or("-"),
            short(&c.id),
            c.netns.as_deref().unwrap_or("-")
        );
        for a in &c.attachments {
            println!(
                "  on {} ({}): {}  aliases [{}]  links [{}]",
                a.network,
                a.ifname,
                join(&a.ips),
                join(&a.aliases),
                join(&a.links)
            );
        }
        match &c.resolver {
            ResolverHealth::Healthy { status, .. } => print_resolver(status, &c.caught),
            ResolverHealth::Unhealthy { error, .. } => {
                println!("  resolver UNHEALTHY: {error}")
            }
        }
        if let Some(s) = &c.supervisor {
            print_supervisor(s);
        }
    }
}

fn print_supervisor(s: &Supervision) {
    if s.restarts > 0 {
        println!(
            "  restarted {} times; the last resolver before this one {}",
            s.restarts,
            s.last_exit.as_deref().unwrap_or("-")
        );
    }
    if let Some(ms) = s.next_start_in_ms.filter(|_| s.resolver_pid == 0) {
        println!(
            "  WARNING: no resolver runs ({} ended in a row); the next starts {ms} ms after the last end",
            s.failures_in_a_row
        );
    }
    if s.catch_cleared {
        println!(
            "  WARNING: no resolver answers: the runtime's nameservers are asked directly until one does (R26 fails open)"
        );
    }
}

fn print_resolver(s: &StatusReply, caught: &[std::net::IpAddr]) {
    let ups: Vec<String> = s
        .upstreams
        .iter()
        .map(|u| {
            let from = if u.from_host { "host" } else { "container" };
            format!("{} ({from})", u.address)
        })
        .collect();
    let k = &s.counters;
    println!(
        "  resolver pid {}  udp {} tcp {}  up {}s  healthy",
        s.pid, s.udp_port, s.tcp_port, s.uptime_seconds
    );
    println!(
        "  upstreams: {}",
        if ups.is_empty() {
            "none".into()
        } else {
            ups.join(", ")
        }
    );
    if s.seccomp_denied > 0 {
        println!(
            "  WARNING: its seccomp filter refused {} system calls (a resolver doing its job makes none)",
            s.seccomp_denied
        );
    }
    if !caught.is_empty() {
        println!("  also answers queries to: {}", join(caught));
    }
    println!(
        "  queries: {} local, {} from the cache, {} forwarded ({} more joined one in flight), {} failed, {} refused; upstream mean {} µs",
        k.local, k.cached, k.forwarded, k.coalesced, k.failed, k.refused, k.upstream_mean_micros
    );
    let cache = &s.cache;
    if cache.size == 0 {
        println!("  cache: off");
    } else {
        println!(
            "  cache: {} answers, {} of {} KiB",
            cache.entries,
            cache.bytes.div_ceil(1024),
            cache.size / 1024
        );
    }
}

fn print_shared(shared: &SharedReport) {
    let s = shared.status.clone().unwrap_or_default();
    let host = if s.host.is_empty() {
        shared.etcd.host().to_string()
    } else {
        s.host.clone()
    };
    println!(
        "  shared through etcd as {host} (prefix {}, lease TTL {} s); sync process {}",
        shared.etcd.prefix,
        shared.etcd.ttl,
        if shared.running {
            format!("pid {}", s.pid)
        } else {
            "NOT RUNNING (the next ADD, CHECK or GC starts it)".into()
        }
    );
    if let Some(holder) = s.claim_refused.as_deref().map(printable) {
        println!(
            "  CLAIM REFUSED: host name {host:?} on this network is held by {holder}; this host \
             publishes nothing until it is free (give each host its own etcd.host)"
        );
    }
    match &s.endpoint {
        Some(e) => println!(
            "  etcd {e}: revision {}, heard from {} ms ago; {} records published, {} held from {} other hosts",
            s.revision,
            shared.heard_ms_ago.map_or("?".into(), |ms| ms.to_string()),
            s.published,
            s.remote_records,
            s.remote_hosts
        ),
        None if s.claim_refused.is_some() => {}
        None => println!(
            "  etcd UNREACHABLE ({}); {} records of {} other hosts kept as last known",
            printable(s.last_error.as_deref().unwrap_or("not connected yet")),
            s.remote_records,
            s.remote_hosts
        ),
    }
    let now = now_ms();
    for h in &s.hosts {
        let changed = Some(h.changed_at_ms).filter(|t| *t > 0);
        println!(
            "    host {:<20} {} records, {}; last change seen {}",
            printable(&h.name),
            h.records,
            if h.claimed {
                "alive (holds its claim)"
            } else {
                "NO CLAIM (gone, or its lease expired)"
            },
            changed.map_or("never".to_string(), |t| format!(
                "{} s ago",
                now.saturating_sub(t) / 1000
            ))
        );
    }
    if s.skipped > 0 {
        println!(
            "  {} values from other hosts skipped (embedns-syncd's log says which and why)",
            s.skipped
        );
    }
    if let Some(bound) = &s.bound_reached {
        println!(
            "  WARNING: the network's bound of {bound} held from other hosts is reached: further              values are skipped (etcd.bounds)"
        );
    }
    if !shared.overlaps.is_empty() {
        println!(
            "  WARNING: addresses held here and by another host (overlapping subnets?): {}; \
             the container here keeps their PTR",
            join(&shared.overlaps)
        );
    }
}

fn print_leftovers(r: &Report) {
    for l in &r.leftovers {
        println!(
            "\nLEFT IN PLACE by the DEL of {}: the 127.0.0.11 redirect in {} ({}); GC retries it",
            short(&l.container),
            l.netns,
            l.error
        );
    }
}

/// What came from etcd or another host (a claim's value, an error quoting one), as text a
/// terminal shows and does not obey: control characters escaped (`\u{1b}`).
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(24)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_etcd_is_printed_with_its_control_characters_escaped() {
        assert_eq!(
            printable("host\u{1b}[2J\r\nEVIL é"),
            "host\\u{1b}[2J\\u{d}\\u{a}EVIL é"
        );
        assert_eq!(printable("claimant 3f/var/run"), "claimant 3f/var/run");
    }
}
