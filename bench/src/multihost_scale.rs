//! Phase 6's scale part: a network of `BENCH_MULTIHOST_SCALE` records (default 10,000; quick
//! 3,000) over the three hosts. Each host has one real container on it (which starts its
//! sync process) and the rest of its third put straight into its store, as the plugin's ADD
//! writes a record (no resolver: 10,000 network namespaces would measure `ip netns`). Figures:
//! how soon every record is held on host 1, how long host 1's sync worker, killed and
//! restarted by its supervisor, takes to list them and to be in step again, its memory, the
//! index's size, and how soon a name added on host 2 answers on host 1.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use embedns_conf::paths::StatePaths;
use embedns_conf::record::Record;
use embedns_conf::store::NetworkStore;
use serde_json::{json, Value};
use test_cni::multihost::Cluster;
use test_cni::wait::poll_until;

use crate::procs::{self, Prober, Stats};
use crate::report::{Goal, Row};
use crate::settings::Settings;
use crate::side::Side;

const NET: &str = "big";

/// Host `h`'s `k`-th record's address: 10.<110+h>.<k/250>.<k%250+1> (phase 6's own network
/// uses 10.<100+h>).
fn ip(h: usize, k: usize) -> IpAddr {
    IpAddr::from([10, 110 + h as u8, (k / 250) as u8, (k % 250 + 1) as u8])
}

/// The scale part of phase 6, on `cluster`'s three hosts.
pub fn scale(cluster: &Cluster, s: &Settings) -> (Vec<Row>, Value) {
    let total: usize = std::env::var("BENCH_MULTIHOST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if s.quick { 3000 } else { 10_000 });
    let per_host = total / 3;
    let mut sides = Side::every(cluster);
    let mut probe_path = String::new();
    for (h, side) in sides.iter_mut().enumerate() {
        let c = side.w.container(&format!("bigprobe{h}"));
        if h == 0 {
            probe_path = c.path.clone();
        }
        side.add(NET, true, c, &format!("bigprobe{h}"), ip(h, 0));
    }
    let prober = Prober::start(&probe_path);

    // Each host's third, straight into its store.
    let started = Instant::now();
    for (h, side) in sides.iter().enumerate() {
        let store = NetworkStore::new(&StatePaths::new(&side.w.data_dir), NET);
        let lock = store.lock().expect("the network's lock");
        for k in 1..=per_host {
            let cid = format!("{:064x}", (h << 32) | k);
            let name = format!("b{h}x{k}");
            let r = Record::with_defaults(NET, &cid, Some(&name), &[], vec![ip(h, k)]);
            store.put(&lock, &r).expect("a record");
        }
    }
    let written = started.elapsed();
    // Host 1 holds the other two hosts' records (and their probes).
    let others = 2 * per_host + 2;
    let held = |i: usize| -> u64 {
        cluster
            .sync_status(i, NET)
            .map_or(0, |s| s.remote_records as u64)
    };
    let spread = poll_until(Duration::from_secs(300), || {
        (held(0) >= others as u64).then(|| started.elapsed())
    });
    println!(
        "  {total} records on 3 hosts: written in {:.1} s, all held on host 1 after {}",
        written.as_secs_f64(),
        spread.map_or("(not within 300 s)".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );

    // Host 1's worker killed: its successor lists the network and is in step again.
    let status = |i: usize| cluster.sync_status(i, NET).unwrap_or_default();
    let before = status(0);
    let old = before.pid as i32;
    let killed = Instant::now();
    // SAFETY: kill(2) with a pid read from the worker's own status file.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let back = poll_until(Duration::from_secs(120), || {
        let s = status(0);
        let new = s.pid as i32;
        (new != old && new != 0 && s.endpoint.is_some() && s.last_error.is_none())
            .then(|| (killed.elapsed(), s))
    });
    let listing_ms = back.as_ref().map_or(f64::NAN, |(_, s)| s.listing_ms as f64);
    let (in_step, after) = back.unwrap_or_default();
    let worker = after.pid as i32;
    let mem = procs::memory(&[worker]);
    let index = std::fs::metadata(sides[0].w.data_dir.join(format!("networks/{NET}/.index")))
        .map_or(0, |m| m.len());
    println!(
        "  host 1's worker killed: its successor in step after {:.2} s (listing {listing_ms:.0} ms, {} records held); worker RSS {:.0} KiB, PSS {:.0} KiB; index {} KiB",
        in_step.as_secs_f64(),
        after.remote_records,
        mem.rss_kib,
        mem.pss_kib,
        index / 1024
    );

    // A name added on host 2 answers on host 1, from its record's write.
    let mut visible = Vec::new();
    for k in 0..5 {
        let name = format!("late{k}");
        let c = sides[1].w.container(&name);
        let addr = ip(1, per_host + 1 + k);
        sides[1].add(NET, true, c, &name, addr);
        let written = sides[1].last_written(NET);
        if prober.wait_for(&format!("{name}."), addr) {
            visible.push(written.elapsed().unwrap_or_default());
        }
    }
    let vis = Stats::of(&visible);
    println!(
        "  in it, a name added on host 2 answers on host 1 after p50 {:.2} ms, max {:.2} ms ({} of 5)",
        vis.median_ms,
        vis.p99_ms,
        visible.len()
    );
    let rows = vec![
        Row::value(
            &format!("multihost {total}: a restarted sync worker in step (s)"),
            in_step.as_secs_f64(),
            Goal::None,
        ),
        Row::value(
            &format!("multihost {total}: its listing (ms)"),
            listing_ms,
            Goal::None,
        ),
        Row::value(
            &format!("multihost {total}: sync worker RSS (MiB)"),
            mem.rss_kib / 1024.0,
            Goal::None,
        ),
        Row::value(
            &format!("multihost {total}: index size (KiB)"),
            (index / 1024) as f64,
            Goal::None,
        ),
        Row::value(
            &format!("multihost {total}: remote name answers after its write, max (ms)"),
            if visible.len() == 5 {
                vis.p99_ms
            } else {
                f64::NAN
            },
            Goal::AtMost(50.0),
        ),
    ];
    let d = json!({
        "records": total, "writtenSecs": written.as_secs_f64(),
        "allHeldSecs": spread.map(|d| d.as_secs_f64()), "restartInStepSecs": in_step.as_secs_f64(),
        "listingMs": listing_ms, "workerMemory": mem.json(), "indexBytes": index,
        "remoteVisible": vis.json(),
    });
    (rows, d)
}
