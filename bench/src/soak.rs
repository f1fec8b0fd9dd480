//! `make soak`: one resolver at full dnsperf rate (UDP and TCP) with ADD/DEL churn around
//! it, then a flood of forwarded queries held in flight; memory must stay flat and bounded.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_cni::World;

use crate::procs;
use crate::report::progress;

/// A flood of forwarded queries to an upstream that never answers, so every query stays in
/// flight for the whole upstream timeout and the resolver holds `maxInflight` (1024) of them
/// at once: the resolver's peak RSS then is the bound on what a container can pin with
/// forwarded queries.
fn forward_flood(w: &World, ns: &str, pid: i32) -> Value {
    let silent = w.upstream("127.0.0.54:53", "flood.test", &[]);
    silent.set_mode(test_cni::Mode::Silent);
    let resolv_conf = std::fs::read_to_string(&w.resolv_conf).unwrap_or_default();
    w.set_host_resolv_conf("nameserver 127.0.0.54\n");
    let qfile = w.path("flood-queries");
    let names: String = (0..5000).map(|i| format!("q{i}.flood.test A\n")).collect();
    std::fs::write(&qfile, names).unwrap();
    let secs = 10;
    progress(&format!(
        "soak: {secs} s of forwarded queries to a silent upstream (every one held in flight)"
    ));
    let before = procs::memory(&[pid]);
    let perf = {
        let (ns, q) = (ns.to_string(), qfile.clone());
        std::thread::spawn(move || {
            procs::sh(&format!(
                "nsenter --net={ns} dnsperf -s 127.0.0.11 -d {} -l {secs} -c 4 -T 1 -q 4000 -t 1 2>&1",
                q.display()
            ))
        })
    };
    let mut peak = before.rss_kib;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        peak = peak.max(procs::memory(&[pid]).rss_kib);
        std::thread::sleep(Duration::from_millis(100)); // sampling period, not synchronisation
    }
    let out = perf.join().unwrap();
    let after = procs::memory(&[pid]);
    let sent = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries sent:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    println!(
        "  forwarded flood: {sent} queries sent, {} reached the upstream; resolver RSS {:.0} KiB -> peak {:.0} KiB -> {:.0} KiB",
        silent.queries(),
        before.rss_kib,
        peak,
        after.rss_kib
    );
    w.set_host_resolv_conf(&resolv_conf);
    json!({"sent": sent, "upstreamQueries": silent.queries(), "rssStartKiB": before.rss_kib,
        "rssPeakKiB": peak, "rssEndKiB": after.rss_kib})
}

/// `make soak`: one resolver under dnsperf at full rate over UDP and TCP at once for 60 s
/// (`SOAK_SECS`), while containers come and go at 20/s and a checking client asks too. Its
/// memory must stay flat.
pub fn soak(w: &World) {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut sc = procs::Scale::new(w, "soak");
    let first = sc.add_many(20);
    let pid = *w.resolver_pids().iter().min().expect("a resolver");
    let before = procs::memory(&[pid]);
    let qfile = w.path("soak-queries");
    let names: String = (1..20).map(|i| format!("s{i} A\n")).collect();
    std::fs::write(&qfile, names.repeat(50)).unwrap();
    let ns = first.clone();
    let run = |tcp: bool| {
        let (ns, q) = (ns.clone(), qfile.clone());
        std::thread::spawn(move || {
            let mode = if tcp { "-m tcp" } else { "" };
            procs::sh(&format!(
                "nsenter --net={ns} dnsperf {mode} -s 127.0.0.11 -d {} -l {secs} -c 4 -T 1 -q 100 2>&1",
                q.display()
            ))
        })
    };
    progress(&format!(
        "soak: {secs} s of dnsperf UDP + TCP on one resolver, churn at 20/s"
    ));
    let (udp, tcp) = (run(false), run(true));
    let churn = sc.churn_under_load(first, Duration::from_secs(secs));
    let (udp, tcp) = (udp.join().unwrap(), tcp.join().unwrap());
    let after = procs::memory(&[pid]);
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let qps = |out: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Queries per second:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    println!("  dnsperf UDP {} q/s, TCP {} q/s; checking client {:.0} q/s, {} wrong, {} lost; {} ADD/DEL",
        qps(&udp), qps(&tcp), churn.0.qps, churn.0.wrong, churn.0.lost, churn.1);
    println!("  resolver pid {pid} alive: {alive}; RSS {:.0} KiB -> {:.0} KiB, anon {:.0} KiB -> {:.0} KiB",
        before.rss_kib, after.rss_kib, before.anon_kib, after.anon_kib);
    let flood = forward_flood(w, &ns, pid);
    sc.del_all();
    let out = json!({"seconds": secs, "udpQps": qps(&udp), "tcpQps": qps(&tcp), "check": churn.0.json(),
        "churnOps": churn.1, "alive": alive, "rssStartKiB": before.rss_kib, "rssEndKiB": after.rss_kib,
        "anonStartKiB": before.anon_kib, "anonEndKiB": after.anon_kib, "forwardFlood": flood});
    let path = test_cni::bins::workspace().join("bench/results/soak.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    println!("JSON: {}", path.display());
}
