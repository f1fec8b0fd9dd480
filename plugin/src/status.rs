//! `embedns status [--json] [--data-dir DIR] [CONTAINER]`: what embedns is doing, for a
//! person. Networks and their containers come from the store; each resolver is asked over
//! its control socket (a live pid is not enough to be healthy). Redirects a DEL could not
//! remove are listed as leftovers; a network shared through etcd shows its sync process's
//! status. Exits 1 when a listed resolver is unhealthy, something was left in place, or a
//! shared network is out of step: its sync process not running, cut off from etcd, or its
//! host name's claim refused.

use std::path::PathBuf;

use anyhow::Context;
use embedns_conf::control::{Request, StatusReply};
use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::sandbox::{self, Sandbox};
use embedns_conf::shared::{now_ms, SyncStatus};
use embedns_conf::store::{self, NetworkStore};
use embedns_conf::user::default_data_dir;
use serde_json::{json, Value};

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
    if o.container.is_some() && report["containers"].as_array().is_none_or(|c| c.is_empty()) {
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
    let unhealthy = report["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["resolver"]["healthy"] == Value::Bool(false));
    let left = report["leftovers"]
        .as_array()
        .is_some_and(|l| !l.is_empty());
    // A shared network is out of step when its sync process does not run, reaches no etcd
    // endpoint (cut off), or may not publish (its host name's claim refused).
    let unsynced = report["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| !n["shared"].is_null())
        .any(|n| {
            let (shared, s) = (&n["shared"], &n["shared"]["status"]);
            shared["running"] != Value::Bool(true)
                || s["endpoint"].is_null()
                || !s["claim_refused"].is_null()
        });
    i32::from(unhealthy || left || unsynced)
}

fn collect(paths: &StatePaths, only: Option<&str>) -> anyhow::Result<Value> {
    let mut networks = Vec::new();
    let mut by_container: std::collections::BTreeMap<String, Vec<Record>> = Default::default();
    for net in store::networks(paths)? {
        let mut members = Vec::new();
        for (key, rec) in NetworkStore::new(paths, &net).list()? {
            match rec {
                Ok(r) => {
                    members.push(json!({"container": r.container_id, "name": r.name, "ip": r.ips}));
                    by_container
                        .entry(r.container_id.clone())
                        .or_default()
                        .push(r);
                }
                Err(e) => members.push(json!({"key": key, "error": e.to_string()})),
            }
        }
        let mut shared = shared(paths, &net);
        if !shared.is_null() {
            shared["overlaps"] = json!(overlaps(&NetworkStore::new(paths, &net)));
        }
        networks.push(json!({"name": net, "containers": members, "shared": shared}));
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
        containers.push(json!({
            "id": id,
            "name": records.iter().find_map(|r| r.name.clone()),
            "netns": records.first().map(|r| r.netns.clone()),
            "attachments": records.iter().map(|r| json!({
                "network": r.network, "ifname": r.ifname, "ips": r.ips,
                "aliases": r.aliases, "links": r.links.iter().map(|l| format!("{}:{}", l.name, l.alias)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "resolver": resolver_health(paths, &id, sb.as_ref()),
            // R26: the nameservers besides 127.0.0.11 whose queries the resolver answers.
            "caught": sb.as_ref().map(Sandbox::caught).unwrap_or_default(),
        }));
    }
    let leftovers: Vec<Value> = sandbox::leftovers(paths)
        .into_iter()
        .map(|l| json!({"container": l.container_id, "netns": l.netns, "error": l.error}))
        .collect();
    Ok(json!({
        "dataDir": paths.root(), "networks": networks, "containers": containers,
        "leftovers": leftovers,
    }))
}

/// A shared network's sync: its config and last status, whether its process runs; `null`
/// for a network of this host only.
fn shared(paths: &StatePaths, network: &str) -> Value {
    let read =
        |p: PathBuf| -> Option<Value> { serde_json::from_slice(&std::fs::read(p).ok()?).ok() };
    let Some(conf) = read(paths.etcd_conf(network)) else {
        return Value::Null;
    };
    let status =
        read(paths.sync_status(network)).and_then(|v| serde_json::from_value::<SyncStatus>(v).ok());
    let running = status.as_ref().is_some_and(|s| {
        std::fs::read(format!("/proc/{}/cmdline", s.pid))
            .is_ok_and(|c| c.windows(13).any(|w| w == b"embedns-syncd"))
    });
    let lag_ms = status
        .as_ref()
        .filter(|s| s.heard_at_ms > 0)
        .map(|s| now_ms().saturating_sub(s.heard_at_ms));
    json!({"etcd": conf, "running": running, "status": status, "heard_ms_ago": lag_ms})
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
        let host = key.split('/').next().unwrap_or_default().to_string();
        for ip in r.ips.iter().filter(|ip| local.contains(ip)) {
            out.push(format!("{ip} ({host})"));
        }
    }
    out
}

fn resolver_health(paths: &StatePaths, id: &str, sb: Option<&Sandbox>) -> Value {
    let Some(info) = sb.and_then(|s| s.resolver.as_ref()) else {
        return json!({"healthy": false, "error": "no resolver recorded"});
    };
    if !resolver::alive(info) {
        return json!({"healthy": false, "pid": info.pid, "error": "not running"});
    }
    match resolver::control::<StatusReply>(paths, id, Request::Status) {
        Ok(status) => {
            let mut v = serde_json::to_value(&status).expect("a status serializes");
            if let Some(o) = v.as_object_mut() {
                o.remove("ok");
                o.insert("healthy".into(), Value::Bool(true));
            }
            v
        }
        Err(e) => json!({"healthy": false, "pid": info.pid, "error": format!("{e:#}")}),
    }
}

fn print_text(r: &Value) {
    let empty = Vec::new();
    println!("state: {}", r["dataDir"].as_str().unwrap_or(""));
    for net in r["networks"].as_array().unwrap_or(&empty) {
        let members = net["containers"].as_array().unwrap_or(&empty);
        println!(
            "\nnetwork {} ({} attachments)",
            net["name"].as_str().unwrap_or(""),
            members.len()
        );
        for m in members {
            println!(
                "  {:<20} {:<28} {}",
                m["name"].as_str().unwrap_or("-"),
                join(&m["ip"]),
                short(m["container"].as_str().unwrap_or(""))
            );
        }
        print_shared(&net["shared"]);
    }
    for c in r["containers"].as_array().unwrap_or(&empty) {
        let res = &c["resolver"];
        println!(
            "\ncontainer {} ({})  netns {}",
            c["name"].as_str().unwrap_or("-"),
            short(c["id"].as_str().unwrap_or("")),
            c["netns"].as_str().unwrap_or("-")
        );
        for a in c["attachments"].as_array().unwrap_or(&empty) {
            println!(
                "  on {} ({}): {}  aliases [{}]  links [{}]",
                a["network"].as_str().unwrap_or(""),
                a["ifname"].as_str().unwrap_or(""),
                join(&a["ips"]),
                join(&a["aliases"]),
                join(&a["links"])
            );
        }
        let healthy = res["healthy"] == Value::Bool(true);
        let status = healthy
            .then(|| {
                let mut v = res.clone();
                v["ok"] = Value::Bool(true);
                serde_json::from_value::<StatusReply>(v).ok()
            })
            .flatten();
        if let Some(s) = status {
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
            if c["caught"].as_array().is_some_and(|a| !a.is_empty()) {
                println!("  also answers queries to: {}", join(&c["caught"]));
            }
            println!(
                "  queries: {} local, {} from the cache, {} forwarded, {} failed, {} refused; upstream mean {} µs",
                k.local, k.cached, k.forwarded, k.failed, k.refused, k.upstream_mean_micros
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
        } else {
            println!(
                "  resolver UNHEALTHY: {}",
                res["error"].as_str().unwrap_or("?")
            );
        }
    }
}

fn print_shared(shared: &Value) {
    if shared.is_null() {
        return;
    }
    let s = &shared["status"];
    println!(
        "  shared through etcd as {} (prefix {}, lease TTL {} s); sync process {}",
        s["host"]
            .as_str()
            .or(shared["etcd"]["host"].as_str())
            .unwrap_or("?"),
        shared["etcd"]["prefix"].as_str().unwrap_or("?"),
        shared["etcd"]["ttl"],
        if shared["running"] == Value::Bool(true) {
            format!("pid {}", s["pid"])
        } else {
            "NOT RUNNING (the next ADD, CHECK or GC starts it)".into()
        }
    );
    if let Some(holder) = s["claim_refused"].as_str() {
        println!(
            "  CLAIM REFUSED: host name {} on this network is held by {holder}; this host \
             publishes nothing until it is free (give each host its own etcd.host)",
            s["host"]
        );
    }
    match s["endpoint"].as_str() {
        Some(e) => println!(
            "  etcd {e}: revision {}, heard from {} ms ago; {} records published, {} held from {} other hosts",
            s["revision"], shared["heard_ms_ago"], s["published"], s["remote_records"], s["remote_hosts"]
        ),
        None if !s["claim_refused"].is_null() => {}
        None => println!(
            "  etcd UNREACHABLE ({}); {} records of {} other hosts kept as last known",
            s["last_error"].as_str().unwrap_or("not connected yet"),
            s["remote_records"],
            s["remote_hosts"]
        ),
    }
    let now = now_ms();
    for h in s["hosts"].as_array().into_iter().flatten() {
        let changed = h["changed_at_ms"].as_u64().filter(|t| *t > 0);
        println!(
            "    host {:<20} {} records, {}; last change seen {}",
            h["name"].as_str().unwrap_or("?"),
            h["records"],
            if h["claimed"] == Value::Bool(true) {
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
    if s["skipped"].as_u64().is_some_and(|n| n > 0) {
        println!(
            "  {} values from other hosts skipped (embedns-syncd's log says which and why)",
            s["skipped"]
        );
    }
    let empty = Vec::new();
    let overlaps = shared["overlaps"].as_array().unwrap_or(&empty);
    if !overlaps.is_empty() {
        println!(
            "  WARNING: addresses held here and by another host (overlapping subnets?): {}; \
             the container here keeps their PTR",
            join(&shared["overlaps"])
        );
    }
}

fn print_leftovers(r: &Value) {
    let empty = Vec::new();
    for l in r["leftovers"].as_array().unwrap_or(&empty) {
        println!(
            "\nLEFT IN PLACE by the DEL of {}: the 127.0.0.11 redirect in {} ({}); GC retries it",
            short(l["container"].as_str().unwrap_or("")),
            l["netns"].as_str().unwrap_or("-"),
            l["error"].as_str().unwrap_or("?")
        );
    }
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(24)]
}
