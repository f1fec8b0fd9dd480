//! The noisy-neighbour phase: container B asks at a steady 500 q/s, first alone, then while
//! container A floods at full rate. embedns: A and B are two containers, each with its own
//! resolver, each resolver in its container's cgroup as a runtime sets pods up (A's given as
//! the `cgroupPath` of a pod whose CPU weight is a BestEffort-like 128 shares, where A's
//! flooding client runs too; B's at the default 1024), three rounds. aardvark-dns (one per
//! network) and Docker (dockerd for every container) serve both from one process, whatever
//! the cgroups. B's p99 and loss, quiet and flooded, are the figures.

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
    // A weight counts against the group's siblings: A's pod sits at the top, beside
    // /embedns, where B's resolver lives (no cgroupPath: the default parent, 1024), as kubelet's
    // pods sit side by side under their QoS class.
    let pod = PodCgroup::new(&format!("/embedns-bench-{}-podA", std::process::id()));
    w.adding(net, &noisy)
        .name("noisy")
        .cap(json!({"cgroupPath": pod.path}))
        .ok();
    pod.set_weight(128);
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
        let rounds = if *label == "embedns" { ROUNDS } else { 1 };
        let client = (*label == "embedns").then(|| pod.client_procs());
        let mut all = Vec::new();
        for round in 1..=rounds {
            let span = Duration::from_secs(noisy_secs);
            let quiet = load::run_paced(Some(&netns_path(b_ns)), *addr, "web.", 500, span);
            let flood = {
                let (a_ns, addr, qfile) = (a_ns.clone(), *addr, qfile.to_path_buf());
                let client = client.clone();
                std::thread::spawn(move || {
                    procs::dnsperf_in(&a_ns, addr, &qfile, noisy_secs + 1, client.as_deref())
                })
            };
            let loud = load::run_paced(Some(&netns_path(b_ns)), *addr, "web.", 500, span);
            let a = flood.join().unwrap();
            println!(
                "  noisy neighbour, {label:<26} round {round}: B quiet p99 {:>6} µs lost {:>3} | A at {:>7.0} q/s: B p99 {:>6} µs lost {:>3}",
                quiet.p99_us, quiet.lost, a.qps, loud.p99_us, loud.lost
            );
            all.push(
                json!({"quiet": quiet.json(), "flooded": loud.json(), "floodQps": a.qps.round()}),
            );
        }
        // The worst round's figures stand for the server (one round for the peers).
        let worst = all
            .iter()
            .max_by(|x, y| ratio(x).total_cmp(&ratio(y)))
            .cloned()
            .unwrap_or(Value::Null);
        let mut entry = worst;
        entry["rounds"] = json!(all);
        noisy_json.insert(label.to_string(), entry);
    }
    w.del(net, &noisy, &[]);
    pod.remove();
    Value::Object(noisy_json)
}

/// Rounds of the embedns measurement (every one must stay within the goal).
const ROUNDS: usize = 3;

/// B's p99 flooded over quiet, in one round's figures.
fn ratio(round: &Value) -> f64 {
    let p = |k: &str| round[k]["p99Us"].as_f64().unwrap_or(f64::NAN);
    p("flooded") / p("quiet").max(1.0)
}

/// A pod's cgroup as a runtime makes it (beneath each hierarchy's root; the plugin makes it
/// when it places A's resolver there), with a leaf for the pod's own processes (A's client).
struct PodCgroup {
    path: String,
}

impl PodCgroup {
    fn new(path: &str) -> PodCgroup {
        PodCgroup {
            path: path.to_string(),
        }
    }

    /// The mount points of the hierarchies: (v1 with the cpu controller, v2).
    fn mounts() -> Vec<(std::path::PathBuf, bool)> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mount = left.split(' ').nth(4)?;
                let mut r = right.split(' ');
                let (fstype, opts) = (r.next()?, r.nth(1)?);
                match fstype {
                    "cgroup2" => Some((mount.into(), true)),
                    "cgroup" if opts.split(',').any(|o| o == "cpu") => Some((mount.into(), false)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The pod's CPU weight, in cgroup v1 shares (v2: the same proportion of 1024 as a weight
    /// of 100, with the cpu controller enabled down to the pod).
    fn set_weight(&self, shares: u64) {
        let rel = self.path.trim_start_matches('/');
        for (mount, v2) in Self::mounts() {
            let pod = mount.join(rel);
            if !v2 {
                let _ = std::fs::write(pod.join("cpu.shares"), shares.to_string());
                continue;
            }
            let has_cpu = std::fs::read_to_string(mount.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"));
            if !has_cpu {
                continue;
            }
            let mut dir = mount.clone();
            for part in std::path::Path::new(rel).components() {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu");
                dir.push(part);
            }
            let _ = std::fs::write(
                pod.join("cpu.weight"),
                (shares * 100 / 1024).max(1).to_string(),
            );
        }
    }

    /// The `cgroup.procs` of a leaf for the pod's own processes, in each hierarchy that
    /// weighs CPU.
    fn client_procs(&self) -> Vec<std::path::PathBuf> {
        let rel = self.path.trim_start_matches('/');
        Self::mounts()
            .into_iter()
            .map(|(m, _)| m.join(rel).join("client"))
            .filter(|d| std::fs::create_dir_all(d).is_ok())
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Removes what the pod left: its client leaf and the pod (the plugin made it in every
    /// hierarchy, and left it on DEL: it held the client leaf).
    fn remove(&self) {
        let rel = self.path.trim_start_matches('/');
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" - cgroup")) {
            let Some(mount) = line.split(' ').nth(4) else {
                continue;
            };
            let pod = std::path::Path::new(mount).join(rel);
            let _ = std::fs::remove_dir(pod.join("client"));
            let _ = std::fs::remove_dir(&pod);
        }
    }
}
