//! Phase 6, several hosts: a network shared by three hosts through etcd (the test harness's
//! `Cluster`: three host netns, one etcd member each), the plugin called directly with a
//! prevResult as in the scale phase. Figures: how soon a name added on one host answers on
//! another and a deleted one is gone there, ADD with etcd against without (alternating, same host), local q/s on a shared
//! network against a network of one host, etcd writes per ADD and DEL (the sync processes'
//! own count), the sync process's memory, and how soon a dead host's names are gone.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_cni::multihost::Cluster;

use crate::procs::{self, Prober, Stats};
use crate::report::{Goal, Row};
use crate::settings::Settings;
use crate::side::{ip, Side};

/// Phase 6.
pub fn multihost(s: &Settings) -> (Vec<Row>, Value) {
    let per_host = std::env::var("BENCH_MULTIHOST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if s.quick { 60 } else { 300 });
    let cluster = Cluster::new(test_cni::multihost::Etcd::Debian, "bench-multihost", 3, 6);
    let mut sides = Side::every(&cluster);
    let mut d = serde_json::Map::new();

    // A probe container on every host, on the shared network; on host 1 also one on a
    // network of that host only (the q/s comparison).
    let mut probers = Vec::new();
    for (h, side) in sides.iter_mut().enumerate() {
        let c = side.w.container("probe");
        let path = c.path.clone();
        side.add("mh", true, c, &format!("probe{h}"), ip(h, 0));
        probers.push(Prober::start(&path));
    }
    let solo_probe = sides[0].w.container("soloprobe");
    let solo_netns = solo_probe.netns.clone();
    sides[0].add(
        "solo",
        false,
        solo_probe,
        "soloprobe",
        IpAddr::from([10, 200, 0, 1]),
    );
    sides[0].added.pop(); // kept to the end (its netns goes with the world)

    // ADD with etcd against without, alternating on host 1, each with its DEL; the etcd
    // writes they caused.
    let pairs = if s.quick { 20 } else { 60 };
    let writes_before = sides[0].writes("mh");
    let (mut with, mut without, mut del_with) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let c = sides[0].w.container(&format!("pw{i}"));
        with.push(sides[0].add("mh", true, c, &format!("pw{i}"), ip(0, 1000 + i)));
        let c = sides[0].w.container(&format!("po{i}"));
        without.push(sides[0].add(
            "solo",
            false,
            c,
            &format!("po{i}"),
            IpAddr::from([10, 200, 1, i as u8 + 1]),
        ));
        sides[0].del("solo", false);
        del_with.push(sides[0].del("mh", true));
    }
    // The last DEL's write lands after it returns: wait for the count to settle.
    let expected = writes_before + 2 * pairs as u64;
    test_cni::wait::poll_until(Duration::from_secs(5), || {
        (sides[0].writes("mh") >= expected).then_some(())
    });
    let writes_per_op = (sides[0].writes("mh") - writes_before) as f64 / (2 * pairs) as f64;
    let (a_with, a_without, del) = (Stats::of(&with), Stats::of(&without), Stats::of(&del_with));
    println!(
        "  ADD median with etcd {:.2} ms, without {:.2} ms; DEL with etcd {:.2} ms; {writes_per_op:.2} etcd writes per ADD or DEL",
        a_with.median_ms, a_without.median_ms, del.median_ms
    );

    // Fill: per_host containers on each host, round robin; every 10th ADD, how soon the name
    // answers on the next host.
    let mut visible = Vec::new();
    for k in 1..=per_host {
        for h in 0..3 {
            let name = format!("c{h}x{k}");
            let c = sides[h].w.container(&name);
            sides[h].add("mh", true, c, &name, ip(h, k));
            if k % 10 == 0 {
                let written = sides[h].last_written("mh");
                assert!(
                    probers[(h + 1) % 3].wait_for(&format!("{name}."), ip(h, k)),
                    "{name} never answered on host {}",
                    (h + 1) % 3 + 1
                );
                visible.push(written.elapsed().unwrap_or_default());
            }
        }
        if k % 100 == 0 {
            println!("  … {} containers on 3 hosts", 3 * k);
        }
    }
    let vis = Stats::of(&visible);
    println!("  a name added on one host answers on another after p50 {:.2} ms p99 {:.2} ms from its record's write ({} samples)", vis.median_ms, vis.p99_ms, visible.len());

    // Local q/s on the shared network (3 × per_host records, sync running) against the
    // network of host 1 alone: dnsperf from the two probe containers, interleaved rounds.
    // Each asks its own name, as the local phase asks one name: the two differ only in the
    // network (3 × per_host records and a sync process, or one record).
    let qfile = sides[0].w.path("mh-queries");
    std::fs::write(&qfile, "probe0 A\n".repeat(1000)).unwrap();
    let solo_qfile = sides[0].w.path("solo-queries");
    std::fs::write(&solo_qfile, "soloprobe A\n".repeat(1000)).unwrap();
    let dns: SocketAddr = "127.0.0.11:53".parse().unwrap();
    let probe_netns = sides[0].added[0].0.netns.clone();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..s.perf_rounds {
        // Taking turns at going first, so that neither always runs on a warmer machine.
        let mut shared = || on.push(procs::dnsperf(&probe_netns, dns, &qfile, s.perf_secs).qps);
        if round % 2 == 0 {
            shared();
            off.push(procs::dnsperf(&solo_netns, dns, &solo_qfile, s.perf_secs).qps);
        } else {
            off.push(procs::dnsperf(&solo_netns, dns, &solo_qfile, s.perf_secs).qps);
            shared();
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (qps_on, qps_off) = (median(&mut on), median(&mut off));
    println!("  local q/s: shared network {qps_on:.0}, network of one host {qps_off:.0}");

    // A clean DEL on host 1: how soon its name is gone on host 2 (R8's bound across hosts).
    let mut gone_after_del = Vec::new();
    for j in 0..20.min(per_host) {
        let name = format!("c0x{}.", per_host - j);
        sides[0].del("mh", true);
        let returned = Instant::now();
        assert!(
            probers[1].wait_gone(&name),
            "{name} still answers on host 2"
        );
        gone_after_del.push(returned.elapsed());
    }
    let del_gone = Stats::of(&gone_after_del);
    println!(
        "  a name deleted on one host is gone on another after p50 {:.2} ms, max {:.2} ms ({} samples)",
        del_gone.median_ms, del_gone.p99_ms, gone_after_del.len()
    );

    // The sync processes' memory, holding 3 × per_host records each.
    // Each host's worker (the pid its status names) and its supervisor (the other one).
    let all: Vec<i32> = cluster
        .hosts
        .iter()
        .flat_map(|h| test_cni::sync_pids(&h.w.data_dir))
        .collect();
    let workers: Vec<i32> = (0..3)
        .filter_map(|i| Some(cluster.sync_status(i, "mh")?.pid as i32))
        .collect();
    let supervisors: Vec<i32> = all.into_iter().filter(|p| !workers.contains(p)).collect();
    let mem = procs::memory(&workers);
    let sup = procs::memory(&supervisors);
    println!(
        "  sync process: worker RSS {:.0} KiB, PSS {:.0} KiB ({} workers); supervisor RSS {:.0} KiB, PSS {:.0} KiB ({})",
        mem.rss_kib, mem.pss_kib, mem.count, sup.rss_kib, sup.pss_kib, sup.count
    );

    // The etcd leader's member dies (one of three): how soon a name added right after on a
    // host whose member lives answers on the third host, from its record's write. Goal: the
    // election (etcd's 1 s election timeout here) + 1 s.
    let mut after_leader_loss = Vec::new();
    let mut beyond_election = Vec::new();
    for run in 0..if s.quick { 3 } else { 7 } {
        let Some(leader) = cluster.leader(0) else {
            println!("  (no leader found: run {run} skipped)");
            continue;
        };
        let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
        let killed = Instant::now();
        cluster.kill_member(leader);
        // Meanwhile, how long the election takes, as host b's member sees it.
        let (took, elected) = std::thread::scope(|scope| {
            let election = scope.spawn(|| {
                let deadline = killed + Duration::from_secs(30);
                while Instant::now() < deadline && !cluster.knows_leader(b, leader) {}
                killed.elapsed()
            });
            let name = format!("ll{run}x{a}");
            let addr = ip(a, per_host + 1 + run);
            let c = sides[a].w.container(&name);
            sides[a].add("mh", true, c, &name, addr);
            let written = sides[a].last_written("mh");
            let seen = probers[b].wait_for(&format!("{name}."), addr);
            let took = written.elapsed().unwrap_or_default();
            let since_kill = killed.elapsed();
            let elected = election.join().unwrap();
            (
                if seen { took } else { Duration::from_secs(30) },
                since_kill.saturating_sub(elected),
            )
        });
        after_leader_loss.push(took);
        beyond_election.push(elected);
        cluster.restart_member(leader);
    }
    let leader_loss = Stats::of(&after_leader_loss);
    let past_election = Stats::of(&beyond_election);
    println!(
        "  the etcd leader killed: a name added right after answers on another host after p50 {:.0} ms, max {:.0} ms; past the new leader's election p50 {:.0} ms, max {:.0} ms ({} runs)",
        leader_loss.median_ms, leader_loss.p99_ms, past_election.median_ms, past_election.p99_ms, after_leader_loss.len()
    );

    // A network of 10,000 records over the three hosts.
    let (scale_rows, scale) = crate::multihost_scale::scale(&cluster, s);
    d.insert("scale".into(), scale);

    // Host 3 dies: how soon its names are gone on host 1.
    let victim = format!("c2x{per_host}.");
    let died = Instant::now();
    drop(sides);
    cluster.kill_host(2);
    let gone_ok = probers[0].wait_gone(&victim);
    let gone = died.elapsed();
    println!(
        "  host 3 SIGKILLed: its names gone on host 1 after {:.1} s (lease TTL 6 s)",
        gone.as_secs_f64()
    );

    d.insert("perHost".into(), json!(per_host));
    d.insert("addWithEtcd".into(), a_with.json());
    d.insert("addWithout".into(), a_without.json());
    d.insert("delWithEtcd".into(), del.json());
    d.insert("etcdWritesPerOp".into(), json!(writes_per_op));
    d.insert("remoteVisible".into(), vis.json());
    d.insert("remoteGoneAfterDel".into(), del_gone.json());
    d.insert("qpsShared".into(), json!(qps_on));
    d.insert("qpsSolo".into(), json!(qps_off));
    d.insert("syncMemory".into(), mem.json());
    d.insert("syncSupervisorMemory".into(), sup.json());
    d.insert("deadHostGoneSecs".into(), json!(gone.as_secs_f64()));
    d.insert("afterLeaderLoss".into(), leader_loss.json());
    d.insert("afterLeaderLossPastElection".into(), past_election.json());
    let mut rows = vec![
        Row::value(
            "multihost: remote name answers after its record is written, p99 (ms)",
            vis.p99_ms,
            Goal::AtMost(50.0),
        ),
        Row::value(
            "multihost: remote name gone after DEL returns, max (ms)",
            del_gone.p99_ms,
            Goal::AtMost(50.0),
        ),
        Row::value(
            "multihost: ADD median, with etcd minus without (ms)",
            a_with.median_ms - a_without.median_ms,
            Goal::AtMost(2.0),
        ),
        Row::ratio(
            "multihost: local q/s, shared network vs one host's",
            qps_on,
            Some(qps_off),
            Goal::AtLeast(0.95),
        ),
        Row::value(
            "multihost: etcd writes per ADD or DEL",
            writes_per_op,
            Goal::AtMost(1.0),
        ),
        Row::value(
            "multihost: dead host's names gone after (s; TTL 6)",
            if gone_ok {
                gone.as_secs_f64()
            } else {
                f64::NAN
            },
            Goal::AtMost(10.0),
        ),
        Row::value(
            "multihost: after the etcd leader's death, a new name answers elsewhere, max (s)",
            leader_loss.p99_ms / 1000.0,
            Goal::None,
        ),
        Row::value(
            "multihost: ... of which past the new leader's election, max (s)",
            past_election.p99_ms / 1000.0,
            Goal::AtMost(1.0),
        ),
        Row::value(
            "multihost: sync worker + supervisor RSS (MiB)",
            (mem.rss_kib + sup.rss_kib) / 1024.0,
            Goal::None,
        ),
    ];
    rows.extend(scale_rows);
    (rows, Value::Object(d))
}
