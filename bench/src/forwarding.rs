//! Phase 2: forwarding and the cache (R34). One upstream (dnsmasq on the host netns'
//! 127.0.0.53, every name under `fwd.test` with TTL 60) asked directly, through embedns with
//! its cache off and on, and through the peers that forward: aardvark-dns, and dnsmasq with
//! no cache and with its default one.

use std::time::Duration;

use serde_json::{json, Value};
use test_cni::{Container, World};

use crate::load::{self, Ask};
use crate::peers::{Aardvark, DnsmasqForwarder, Upstream};
use crate::procs;
use crate::report::{Goal, Row};
use crate::settings::Settings;

/// Queries in flight while CPU per query is measured.
const CPU_CONCURRENCY: usize = 8;
/// Names asked to fill a cache of the default size (about 1,100 such answers fit).
const FILL_NAMES: usize = 1100;
/// Names the distinct-name CPU run takes turns over: with no cache anywhere and 8 in flight,
/// every query is forwarded, by embedns and by dnsmasq alike (neither meets the same question
/// in flight twice).
const DISTINCT_NAMES: usize = 20_000;

fn ask(name: &str) -> Vec<Ask> {
    vec![Ask {
        name: name.into(),
        expect: None,
    }]
}

fn netns(c: &Container) -> Option<&str> {
    Some(&c.path)
}

/// Phase 2.
pub fn forwarding(w: &World, s: &Settings) -> (Vec<Row>, Value) {
    let up = Upstream::start(w);
    let off = w.network("fwd", json!({"cacheSize": 0}));
    let cli = w.container("fwdcli");
    w.adding(&off, &cli).name("fwdcli").ok();
    let on = w.network("fwdc", json!({}));
    let (web, cc) = (w.container("fwdweb"), w.container("fwdcache"));
    w.adding(&on, &web).name("web").ok();
    w.adding(&on, &cc).name("cc").ok();
    let aardvark = Aardvark::start_forwarding(w, &crate::peers::Today::find());
    let plain = DnsmasqForwarder::start(w, "127.0.0.3:53", up.addr, false);
    let caching = DnsmasqForwarder::start(w, "127.0.0.4:53", up.addr, true);
    let dns = "127.0.0.11:53".parse().unwrap();
    let host = format!("/run/netns/{}", w.host);
    let secs = Duration::from_secs(if s.quick { 3 } else { 6 });

    // The resolver with a cache, idle: started, one local and one forwarded answer given.
    let cached_pid = w.resolver_pid(&cc);
    load::run(netns(&cc), dns, &ask("web."), 1, Duration::from_millis(200));
    load::run(
        netns(&cc),
        dns,
        &ask("x.fwd.test."),
        1,
        Duration::from_millis(200),
    );
    let idle = procs::memory(&[cached_pid]);

    // Latency, one query at a time: the added median with the cache off.
    let x = ask("x.fwd.test.");
    let direct = load::run(Some(&host), up.addr, &x, 1, secs);
    let ours = load::run(netns(&cli), dns, &x, 1, secs);
    let aard = aardvark
        .as_ref()
        .map(|a| load::run(Some(&host), a.addr, &x, 1, secs));
    for (label, r) in [
        ("direct", Some(&direct)),
        ("through embedns, cache off", Some(&ours)),
        ("through aardvark-dns", aard.as_ref()),
    ] {
        if let Some(r) = r {
            println!(
                "  {label:<28} p50 {:>5} µs  p99 {:>5} µs  lost {}",
                r.p50_us, r.p99_us, r.lost
            );
        }
    }
    let added = ours.p50_us - direct.p50_us;

    // A cached answer against a local one, from the same container, rounds interleaved.
    let rounds = s.perf_rounds.max(2);
    let (mut local_p50, mut cached_p50) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        local_p50.push(load::run(netns(&cc), dns, &ask("web."), 1, secs).p50_us);
        cached_p50.push(load::run(netns(&cc), dns, &x, 1, secs).p50_us);
    }
    let (local, cached) = (median(&mut local_p50), median(&mut cached_p50));
    println!(
        "  a local answer p50 {local} µs, a cached one p50 {cached} µs ({rounds} rounds each)"
    );

    // CPU per forwarded query, 8 in flight, no cache anywhere: distinct names (every query
    // forwarded by every server), then one name (dnsmasq and embedns forward a question in
    // flight once, R34a; aardvark-dns forwards each).
    let distinct: Vec<Ask> = (0..DISTINCT_NAMES)
        .map(|i| Ask {
            name: format!("d{i}.fwd.test."),
            expect: None,
        })
        .collect();
    let cpu_of = |pid: Option<i32>, ns: Option<&str>, addr, asks: &[Ask]| -> Option<f64> {
        let before = pid.and_then(procs::cpu_micros);
        let r = load::run(ns, addr, asks, CPU_CONCURRENCY, secs);
        let after = pid.and_then(procs::cpu_micros);
        match (before, after) {
            (Some(b), Some(a)) if r.answered > 0 => Some((a - b) as f64 / r.answered as f64),
            _ => None,
        }
    };
    let cli_pid = w.resolver_pid(&cli);
    let before_cpu_run = procs::memory(&[cli_pid]);
    let ours_cpu = cpu_of(Some(cli_pid), netns(&cli), dns, &distinct);
    let ours_same = cpu_of(Some(cli_pid), netns(&cli), dns, &x);
    // The same on the resolver's own port, as every peer is asked on its own address: without
    // the redirect's NAT (R24), which every query to 127.0.0.11 pays, local ones too.
    let port =
        std::net::SocketAddr::new([127, 0, 0, 11].into(), w.resolver_status("fwdcli").udp_port);
    let direct_cpu = cpu_of(Some(cli_pid), netns(&cli), port, &distinct);
    let after_cpu_run = procs::memory(&[cli_pid]);
    println!(
        "  the resolver without a cache: private {:.0} KiB before the CPU run, {:.0} KiB after",
        before_cpu_run.private_kib, after_cpu_run.private_kib
    );
    let aard_pid = aardvark
        .as_ref()
        .map(|a| procs::udp_owner(&w.host, a.addr.ip(), Some(a.addr.port())));
    let aard_cpu = match (&aardvark, aard_pid) {
        (Some(a), Some(pid)) => cpu_of(pid, Some(&host), a.addr, &distinct),
        _ => None,
    };
    let plain_cpu = cpu_of(plain.pid, Some(&host), plain.addr, &distinct);
    let plain_same = cpu_of(plain.pid, Some(&host), plain.addr, &x);
    let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
    println!(
        "  CPU per forwarded query ({CPU_CONCURRENCY} in flight, {DISTINCT_NAMES} names): embedns {} µs (on its own port {} µs), aardvark-dns {} µs, dnsmasq (no cache) {} µs",
        show(ours_cpu),
        show(direct_cpu),
        show(aard_cpu),
        show(plain_cpu)
    );
    println!(
        "  CPU per query, one name {CPU_CONCURRENCY} in flight (both coalesce): embedns {} µs, dnsmasq (no cache) {} µs",
        show(ours_same),
        show(plain_same)
    );

    // A full cache: more names than fit, then the resolver's memory.
    let names: Vec<Ask> = (0..FILL_NAMES)
        .flat_map(|i| ask(&format!("f{i}.fwd.test.")))
        .collect();

    load::run(netns(&cc), dns, &names, 8, Duration::from_secs(2));
    let status = w.resolver_status("cc");
    let full = procs::memory(&[cached_pid]);
    println!(
        "  resolver private memory: idle {:.0} KiB; with a full cache ({} answers, {} of {} bytes) {:.0} KiB",
        idle.private_kib,
        status.cache.entries,
        status.cache.bytes,
        status.cache.size,
        full.private_kib
    );

    // 90 % repeated names, 10 % new ones: q/s against dnsmasq with its cache.
    let qfile = w.path("mix-queries");
    std::fs::write(&qfile, mix(300_000)).unwrap();
    let (mut ours_qps, mut dnsmasq_qps) = (Vec::new(), Vec::new());
    for _ in 0..s.perf_rounds {
        ours_qps.push(procs::dnsperf(&cc.netns, dns, &qfile, s.perf_secs).qps);
        dnsmasq_qps.push(procs::dnsperf(&w.host, caching.addr, &qfile, s.perf_secs).qps);
    }
    let (mix_ours, mix_dnsmasq) = (median(&mut ours_qps), median(&mut dnsmasq_qps));
    println!(
        "  90% repeated, 10% new names: embedns {mix_ours:.0} q/s, dnsmasq (caching) {mix_dnsmasq:.0} q/s"
    );

    let rows = vec![
        Row::value(
            "forwarding: added median latency, cache off (µs)",
            added,
            Goal::AtMost(80.0),
        ),
        Row::ratio(
            "forwarding: added median vs aardvark-dns 1.17's",
            added.max(1.0),
            aard.as_ref().map(|a| (a.p50_us - direct.p50_us).max(1.0)),
            Goal::None,
        ),
        Row::ratio(
            "forwarding: cached answer p50 vs a local answer's",
            cached,
            Some(local),
            Goal::AtMost(1.1),
        ),
        Row::ratio(
            "forwarding: CPU per query, distinct names, vs aardvark-dns 1.17",
            ours_cpu.unwrap_or(f64::NAN),
            aard_cpu,
            Goal::AtMost(0.5),
        ),
        Row::ratio(
            "forwarding: CPU per query, distinct names, vs dnsmasq (no cache)",
            ours_cpu.unwrap_or(f64::NAN),
            plain_cpu,
            Goal::AtMost(1.0),
        ),
        Row::ratio(
            "forwarding: CPU per query, one name in flight (both coalesce), vs dnsmasq (no cache)",
            ours_same.unwrap_or(f64::NAN),
            plain_same,
            Goal::AtMost(1.0),
        ),
        Row::ratio(
            "forwarding: q/s, 90% repeated names, vs dnsmasq (caching)",
            mix_ours,
            Some(mix_dnsmasq),
            Goal::AtLeast(1.0),
        ),
        Row::value(
            "forwarding: resolver private memory, idle (KiB)",
            idle.private_kib,
            Goal::AtMost(512.0),
        ),
        Row::value(
            "forwarding: resolver private memory, full cache (KiB)",
            full.private_kib,
            Goal::None,
        ),
    ];
    let d = json!({
        "direct": direct.json(), "embedns": ours.json(), "aardvark": aard.map(|a| a.json()),
        "localP50Us": local_p50, "cachedP50Us": cached_p50,
        "cpuMicrosPerQuery": {"embedns": ours_cpu, "embedns_direct_port": direct_cpu, "aardvark": aard_cpu, "dnsmasqNoCache": plain_cpu,
                              "oneName": {"embedns": ours_same, "dnsmasqNoCache": plain_same}},
        "mixQps": {"embedns": ours_qps, "dnsmasq": dnsmasq_qps},
        "memory": {"idle": idle.json(), "fullCache": full.json(), "cache": status.cache},
    });
    (rows, d)
}

/// dnsperf's query file: `lines` lines, 9 in 10 one of 100 names, every 10th a name not seen
/// before.
fn mix(lines: usize) -> String {
    (0..lines)
        .map(|j| {
            if j % 10 == 9 {
                format!("n{j}.fwd.test A\n")
            } else {
                format!("p{}.fwd.test A\n", j * 7 % 100)
            }
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
