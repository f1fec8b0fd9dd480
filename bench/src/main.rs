//! `make bench`: embedns measured against Docker's embedded DNS, aardvark-dns, dnsmasq (what
//! dnsname runs) and a trivial responder, all in the same run on this machine, printed as
//! ratios. Everything runs in namespaces made here (through the test harness's `World`);
//! Docker runs with its own roots and no host iptables. `BENCH_QUICK=1` shortens every phase,
//! `BENCH_SCALE` sets the container count of the scale phase (default 1000),
//! `BENCH_MULTIHOST` the containers per host of the multi-host phase (default 300), `BENCH_ONLY`
//! (`local,restart,forwarding,adddel,scale,multihost`) runs only the phases named.

mod adddel;
mod forwarding;
mod load;
mod multihost;
mod multihost_scale;
mod noisy;
mod peers;
mod procs;
mod report;
mod restart;
mod settings;
mod side;
mod soak;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_cni::World;

use crate::load::Ask;
use crate::procs::netns_path;
use crate::report::{progress, Goal, Row};
use crate::settings::Settings;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "paced") {
        load::paced_main(&args[1..]);
        return;
    }
    let s = Settings::from_env();
    let w = World::new("bench");
    if std::env::var("BENCH_SOAK").is_ok_and(|v| v == "1") {
        soak::soak(&w);
        return;
    }
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut data = serde_json::Map::new();
    // BENCH_ONLY=local,restart,forwarding,adddel,scale,multihost runs some phases (for work on one of them).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |phase: &str| only.is_empty() || only.split(',').any(|p| p.trim() == phase);

    if run("local") {
        progress("1/6 local-name throughput and latency (dnsperf + latency client)");
        let (r, d) = local_names(&w, &s);
        rows.extend(r);
        data.insert("localNames".into(), d);
    }
    if run("restart") {
        progress("always answered: SIGKILLed resolvers, and a container's DNS memory");
        let (r, d) = restart::restart(&w, &s);
        rows.extend(r);
        data.insert("restart".into(), d);
    }
    if run("forwarding") {
        progress("2/6 forwarding and the cache");
        let (r, d) = forwarding::forwarding(&w, &s);
        rows.extend(r);
        data.insert("forwarding".into(), d);
    }
    if run("adddel") {
        progress("3/6 ADD/DEL latency");
        let (r, d) = adddel::add_del(&w, &s);
        rows.extend(r);
        data.insert("addDel".into(), d);
    }
    if run("scale") {
        progress(&format!("4/6 scale: {} containers on one network", s.scale));
        progress("5/6 under load: local QPS while containers come and go at 20/s");
        let (r, d) = scale_and_churn(&w, &s);
        rows.extend(r);
        data.insert("scale".into(), d);
    }

    if run("multihost") {
        progress("6/6 several hosts: a network shared by 3 hosts through etcd");
        let (r, d) = multihost::multihost(&s);
        rows.extend(r);
        data.insert("multihost".into(), d);
    }

    let out = json!({
        "date": procs::sh("date -u +%Y-%m-%dT%H:%M:%SZ").trim(),
        "quick": s.quick,
        "scale": s.scale,
        "only": only,
        "seconds": started.elapsed().as_secs(),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "data": Value::Object(data),
    });
    report::print_table(&rows);
    let dir = test_cni::bins::workspace().join("bench/results");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    println!(
        "\nJSON: {}   ({} s in all)",
        path.display(),
        started.elapsed().as_secs()
    );
}

fn ip_of(result: &Value) -> IpAddr {
    test_cni::ip_of(result).parse().expect("an IP address")
}

/// Phase 1.
fn local_names(w: &World, s: &Settings) -> (Vec<Row>, Value) {
    let net = w.network("bench", json!({}));
    let (web, cli, peer) = (w.container("web"), w.container("cli"), w.container("peer"));
    let web_ip = ip_of(&w.adding(&net, &web).name("web").ok());
    w.adding(&net, &cli).name("cli").ok();
    procs::must(&format!("ip netns exec {} ip link set lo up", peer.netns));
    let direct = w.resolver_status("cli").udp_port;
    let today = peers::Today::find();
    let peers = peers::start_local(w, &today, &peer, web_ip);
    let docker = peers::Docker::start(w, &today);

    let qfile = w.path("queries");
    std::fs::write(&qfile, "web A\n".repeat(1000)).unwrap();
    let mut targets: Vec<(&str, String, SocketAddr)> = vec![
        (
            "embedns (127.0.0.11:53, DNAT)",
            cli.netns.clone(),
            "127.0.0.11:53".parse().unwrap(),
        ),
        (
            "embedns (direct port)",
            cli.netns.clone(),
            SocketAddr::new([127, 0, 0, 11].into(), direct),
        ),
        (peers::AARDVARK, peer.netns.clone(), peers.aardvark),
        ("dnsmasq", peer.netns.clone(), peers.dnsmasq),
        ("trivial responder", peer.netns.clone(), peers.trivial),
    ];
    if let Some(d) = &docker {
        targets.push((
            peers::DOCKER,
            d.netns_path.clone(),
            "127.0.0.11:53".parse().unwrap(),
        ));
    }
    // The process that answers for each server, whose CPU time a round costs: on 2 cores the
    // dnsperf client, not the server, caps q/s, so CPU per answered query is the figure that
    // compares servers (the embedded DNS of Docker is dockerd itself).
    let resolver = w.resolver_pid(&cli);
    let pids: Vec<Option<i32>> = targets
        .iter()
        .map(|(label, ns, addr)| {
            if label.starts_with("embedns") {
                Some(resolver)
            } else if label.starts_with("Docker") {
                procs::udp_owner(ns, addr.ip(), None)
            } else {
                procs::udp_owner(ns, addr.ip(), Some(addr.port()))
            }
        })
        .collect();
    // Rounds interleaved (every server once, then again): a slow spell of this shared
    // machine hits every server alike, and the median round of each is its figure. One run
    // per server moved a peer's rate by 25% between two runs of the same binaries.
    let mut rounds: Vec<Vec<(procs::Perf, Option<f64>)>> =
        targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=s.perf_rounds {
        if s.perf_rounds > 1 {
            println!("  round {round} of {}", s.perf_rounds);
        }
        for (((_, ns, addr), runs), pid) in targets.iter().zip(&mut rounds).zip(&pids) {
            let before = pid.and_then(procs::cpu_micros);
            let perf = procs::dnsperf(ns, *addr, &qfile, s.perf_secs);
            let after = pid.and_then(procs::cpu_micros);
            let answered = perf.qps * s.perf_secs as f64;
            let cpu = match (before, after) {
                (Some(b), Some(a)) if answered > 0.0 => Some((a - b) as f64 / answered),
                _ => None,
            };
            runs.push((perf, cpu));
        }
    }
    let mut results = serde_json::Map::new();
    for ((label, ns, addr), mut runs) in targets.iter().zip(rounds) {
        let all: Vec<f64> = runs.iter().map(|(p, _)| p.qps.round()).collect();
        let cpus: Vec<Option<f64>> = runs.iter().map(|(_, c)| *c).collect();
        runs.sort_by(|a, b| a.0.qps.total_cmp(&b.0.qps));
        let (perf, cpu) = runs.swap_remove(runs.len() / 2);
        let asks = [Ask {
            name: "web.".into(),
            expect: None,
        }];
        let lat = load::run(
            Some(&netns_path(ns)),
            *addr,
            &asks,
            16,
            Duration::from_secs(s.perf_secs.min(4)),
        );
        println!(
            "  {label:<32} {:>9.0} q/s  mean {:>5.2} ms  lost {:>5}  CPU {:>5.2} µs/q | 16 in flight: p50 {:>4} µs p99 {:>5} µs lost {}",
            perf.qps, perf.mean_ms, perf.lost, cpu.unwrap_or(f64::NAN), lat.p50_us, lat.p99_us, lat.lost
        );
        let mut perf_json = perf.json();
        perf_json["rounds"] = json!(all);
        perf_json["cpuMicrosPerQuery"] = json!(cpu);
        perf_json["cpuMicrosPerQueryRounds"] = json!(cpus);
        results.insert(
            label.to_string(),
            json!({"dnsperf": perf_json, "latency16": lat.json()}),
        );
    }
    let others = noisy::Peers {
        peer: &peer,
        aardvark: peers.aardvark,
        docker: docker.as_ref(),
    };
    let noisy = noisy::measure(w, &net, others, &qfile, s);
    results.insert("noisyNeighbour".into(), noisy);
    drop(peers);
    drop(docker);
    let q = |k: &str| {
        results
            .get(k)
            .map(|v| v["dnsperf"]["qps"].as_f64().unwrap_or(0.0))
    };
    let p99 = |k: &str| {
        results
            .get(k)
            .map(|v| v["latency16"]["p99Us"].as_f64().unwrap_or(0.0))
    };
    let noisy = |k: &str, what: &str| {
        results["noisyNeighbour"]
            .get(k)
            .and_then(|v| v[what]["p99Us"].as_f64())
    };
    let slowdown = |k: &str| Some(noisy(k, "flooded")? / noisy(k, "quiet")?.max(1.0));
    let noisy_lost = results["noisyNeighbour"]["embedns"]["flooded"]["lost"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let cpu = |k: &str| {
        results
            .get(k)
            .and_then(|v| v["dnsperf"]["cpuMicrosPerQuery"].as_f64())
    };
    let ours_cpu = cpu("embedns (127.0.0.11:53, DNAT)").unwrap_or(f64::NAN);
    let ours = q("embedns (127.0.0.11:53, DNAT)").unwrap_or(0.0);
    let direct = q("embedns (direct port)").unwrap_or(0.0);
    let mut rows = vec![
        Row::ratio(
            "local q/s vs Docker 28.5",
            ours,
            q(peers::DOCKER),
            Goal::AtLeast(2.0),
        ),
        Row::ratio(
            "local q/s vs aardvark-dns 1.17",
            ours,
            q(peers::AARDVARK),
            Goal::AtLeast(2.0),
        ),
        Row::ratio("local q/s vs dnsmasq", ours, q("dnsmasq"), Goal::None),
        Row::ratio(
            "local q/s vs trivial responder",
            ours,
            q("trivial responder"),
            Goal::AtLeast(0.8),
        ),
        // Like for like: aardvark-dns, dnsmasq and the trivial responder are asked on their
        // own address, without a DNAT; so is embedns's direct port.
        Row::ratio(
            "direct-port q/s vs aardvark-dns 1.17 (no DNAT)",
            direct,
            q(peers::AARDVARK),
            Goal::AtLeast(2.0),
        ),
        Row::ratio(
            "direct-port q/s vs trivial responder (no DNAT)",
            direct,
            q("trivial responder"),
            Goal::AtLeast(0.8),
        ),
        Row::value("local CPU per answered query (µs)", ours_cpu, Goal::None),
        Row::ratio(
            "local CPU per query vs Docker 28.5 (lower is better)",
            ours_cpu,
            cpu(peers::DOCKER),
            Goal::AtMost(0.5),
        ),
        Row::ratio(
            "local CPU per query vs aardvark-dns 1.17 (lower is better)",
            ours_cpu,
            cpu(peers::AARDVARK),
            Goal::AtMost(0.5),
        ),
        Row::ratio(
            "local CPU per query vs dnsmasq (lower is better)",
            ours_cpu,
            cpu("dnsmasq"),
            Goal::AtMost(1.0),
        ),
        Row::ratio(
            "local CPU per query vs trivial responder (lower is better)",
            ours_cpu,
            cpu("trivial responder"),
            Goal::None,
        ),
        Row::value(
            "noisy neighbour: B's p99 flooded / quiet, embedns (pods' cgroups, worst of 3 rounds)",
            slowdown("embedns").unwrap_or(f64::NAN),
            Goal::AtMost(2.0),
        ),
        Row::value(
            "noisy neighbour: B's queries lost under A's flood, embedns (worst round)",
            noisy_lost,
            Goal::AtMost(0.0),
        ),
        Row::value(
            "noisy neighbour: B's p99 flooded / quiet, aardvark-dns 1.17",
            slowdown(peers::AARDVARK).unwrap_or(f64::NAN),
            Goal::None,
        ),
        Row::value(
            "noisy neighbour: B's p99 flooded / quiet, Docker 28.5",
            slowdown(peers::DOCKER).unwrap_or(f64::NAN),
            Goal::None,
        ),
        Row::value(
            "local p99, 16 in flight (µs)",
            p99("embedns (127.0.0.11:53, DNAT)").unwrap_or(0.0),
            Goal::AtMost(1000.0),
        ),
    ];
    // dnsperf counts what is in flight when -l ends as lost, for every server alike (the
    // trivial responder too); the latency client waits for every answer, so it judges loss.
    let lost = results["embedns (127.0.0.11:53, DNAT)"]["latency16"]["lost"]
        .as_f64()
        .unwrap_or(0.0);
    rows.push(Row::value(
        "local queries lost (latency client)",
        lost,
        Goal::AtMost(0.0),
    ));
    (rows, Value::Object(results))
}

/// Phases 4 and 5.
fn scale_and_churn(w: &World, s: &Settings) -> (Vec<Row>, Value) {
    let mut sc = procs::Scale::new(w, "scale");
    let first = sc.add_many(s.scale);
    let adds = &sc.add_times;
    let head = procs::Stats::of(&adds[..10.min(adds.len())]);
    let tail = procs::Stats::of(&adds[adds.len().saturating_sub(10)..]);
    let prop = procs::Stats::of(&sc.propagation);
    println!(
        "  ADD first 10 median {:.2} ms, last 10 median {:.2} ms; peer sees a new name after p50 {:.2} ms p99 {:.2} ms ({} samples)",
        head.median_ms, tail.median_ms, prop.median_ms, prop.p99_ms, sc.propagation.len()
    );
    let mem = procs::memory(&w.resolver_pids());
    println!(
        "  {} resolvers: per resolver anon {:.0} KiB, private {:.0} KiB, PSS {:.0} KiB, RSS {:.0} KiB; total PSS {:.1} MiB",
        mem.count, mem.anon_kib, mem.private_kib, mem.pss_kib, mem.rss_kib, mem.total_pss_kib / 1024.0
    );
    let idle_secs = if s.quick { 3 } else { 10 };
    let cpu = procs::idle_cpu(&w.resolver_pids(), Duration::from_secs(idle_secs));
    println!("  idle CPU of all resolvers over {idle_secs} s: {cpu:.1} ms");

    let churn = sc.churn_under_load(first, Duration::from_secs(if s.quick { 4 } else { 10 }));
    println!(
        "  under churn ({} ADD/DEL at 20/s): {:.0} q/s, {} answers checked, {} wrong, {} lost",
        churn.1, churn.0.qps, churn.0.answered, churn.0.wrong, churn.0.lost
    );
    let dels = sc.del_all();
    let del = procs::Stats::of(&dels);
    println!(
        "  DEL of {} containers: median {:.2} ms",
        dels.len(),
        del.median_ms
    );
    let rows = vec![
        Row::ratio(
            "scale: ADD last 10 vs first 10 (median)",
            tail.median_ms,
            Some(head.median_ms),
            Goal::AtMost(1.2),
        ),
        Row::value(
            "scale: new name seen by a peer, p99 (ms)",
            prop.p99_ms,
            Goal::AtMost(50.0),
        ),
        Row::value(
            "scale: private memory per resolver (KiB)",
            mem.private_kib,
            Goal::AtMost(1024.0),
        ),
        Row::value(
            "scale: idle CPU, all resolvers, 10 s (ms)",
            cpu,
            Goal::AtMost(50.0),
        ),
        Row::value(
            "churn: wrong answers",
            churn.0.wrong as f64,
            Goal::AtMost(0.0),
        ),
        Row::value(
            "churn: lost answers",
            churn.0.lost as f64,
            Goal::AtMost(0.0),
        ),
    ];
    let d = json!({
        "containers": s.scale,
        "addFirst10": head.json(), "addLast10": tail.json(), "propagation": prop.json(),
        "addMs": sc.add_times.iter().map(|d| (d.as_secs_f64() * 1e5).round() / 100.0).collect::<Vec<_>>(),
        "memory": mem.json(), "idleCpuMs": cpu, "idleSeconds": idle_secs,
        "churn": {"ops": churn.1, "load": churn.0.json()}, "del": del.json(),
    });
    (rows, d)
}
