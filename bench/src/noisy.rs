//! The noisy-neighbour phase: container B asks at a steady 500 q/s, first alone, then while
//! container A floods at full rate. embedns: A and B are two containers, each with its own
//! resolver. aardvark-dns (one per network) and Docker (dockerd for every container) serve
//! both from one process. B's p99 and loss, quiet and flooded, are the figures.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use test_cni::{Container, Network, World};

use crate::procs::netns_path;
use crate::settings::Settings;
use crate::{load, peers, procs};

/// The servers of the phase besides embedns: aardvark-dns at `aardvark` asked from `peer`,
/// and Docker if it runs.
pub struct Peers<'a> {
    pub peer: &'a Container,
    pub aardvark: SocketAddr,
    pub docker: Option<&'a peers::Docker>,
}

/// Runs the phase for embedns (`cli` as B, a new container as A on `net`) and `others`;
/// `qfile` is A's dnsperf input.
pub fn measure(
    w: &World,
    net: &Network,
    cli: &Container,
    others: Peers,
    qfile: &Path,
    s: &Settings,
) -> Value {
    let Peers {
        peer,
        aardvark,
        docker,
    } = others;
    // Noisy neighbour: B asks at a steady 500 q/s, quiet and then while A floods at full
    // rate. embedns: A and B are two containers, each with its own resolver. aardvark-dns
    // (one per network) and Docker (dockerd for every container) serve both from one process.
    let noisy = w.container("noisy");
    w.adding(net, &noisy).name("noisy").ok();
    let mut neighbours: Vec<(&str, String, String, SocketAddr)> = vec![
        (
            "embedns",
            noisy.netns.clone(),
            cli.netns.clone(),
            "127.0.0.11:53".parse().unwrap(),
        ),
        (
            "aardvark-dns 1.4",
            peer.netns.clone(),
            peer.netns.clone(),
            aardvark,
        ),
    ];
    if let Some(d) = docker {
        neighbours.push((
            "Docker 20.10 embedded DNS",
            d.netns_path.clone(),
            d.netns_path.clone(),
            "127.0.0.11:53".parse().unwrap(),
        ));
    }
    let noisy_secs = s.perf_secs.min(5);
    let mut noisy_json = serde_json::Map::new();
    for (label, a_ns, b_ns, addr) in &neighbours {
        let span = Duration::from_secs(noisy_secs);
        let quiet = load::run_paced(Some(&netns_path(b_ns)), *addr, "web.", 500, span);
        let flood = {
            let (a_ns, addr, qfile) = (a_ns.clone(), *addr, qfile.to_path_buf());
            std::thread::spawn(move || procs::dnsperf(&a_ns, addr, &qfile, noisy_secs + 1))
        };
        let loud = load::run_paced(Some(&netns_path(b_ns)), *addr, "web.", 500, span);
        let a = flood.join().unwrap();
        println!(
            "  noisy neighbour, {label:<26} B quiet p99 {:>6} µs lost {:>3} | A at {:>7.0} q/s: B p99 {:>6} µs lost {:>3}",
            quiet.p99_us, quiet.lost, a.qps, loud.p99_us, loud.lost
        );
        noisy_json.insert(
            label.to_string(),
            json!({"quiet": quiet.json(), "flooded": loud.json(), "floodQps": a.qps.round()}),
        );
    }
    w.del(net, &noisy, &[]);
    Value::Object(noisy_json)
}
