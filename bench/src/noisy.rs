//! The noisy-neighbour phase: container B asks at a steady 500 q/s, first alone, then while
//! container A floods at full rate. embedns: A and B are two containers, each with its own
//! resolver, each resolver in its container's cgroup as a runtime sets pods up (A's given as
//! the `cgroupPath` of a pod whose CPU weight is a BestEffort-like 128 shares, where A's
//! flooding client runs too; B's at the default 1024), three rounds. aardvark-dns (one per
//! network) and Docker (dockerd for every container) serve both from one process, whatever
//! the cgroups. B's p99 and loss, quiet and flooded, are the figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// Runs the phase for embedns (two new containers on `net`, A and B) and `others`; `qfile` is
/// A's dnsperf input.
pub fn measure(w: &World, net: &Network, others: Peers, qfile: &Path, s: &Settings) -> Value {
    let Peers {
        peer,
        aardvark,
        docker,
    } = others;
    // Two pods side by side at the top of the hierarchy, as kubelet's sit side by side under
    // their QoS class: A (a BestEffort-like 128 shares) and B (1024), each with its resolver
    // (its `cgroupPath`) and its client (a leaf of the pod) inside.
    let id = std::process::id();
    let (pod_a, pod_b) = (
        PodCgroup::new(&format!("/embedns-bench-{id}-podA")),
        PodCgroup::new(&format!("/embedns-bench-{id}-podB")),
    );
    let (a, b) = (w.container("noisy"), w.container("quiet"));
    for (c, name, pod, weight) in [(&a, "noisy", &pod_a, 128), (&b, "quiet", &pod_b, 1024)] {
        w.adding(net, c)
            .name(name)
            .cap(json!({"cgroupPath": pod.path}))
            .ok();
        pod.set_weight(weight);
    }
    let dns: SocketAddr = "127.0.0.11:53".parse().unwrap();
    let mut neighbours = vec![
        Neighbour {
            label: "embedns",
            a_ns: a.netns.clone(),
            b_ns: b.netns.clone(),
            addr: dns,
            cgroups: Some((pod_a.client_procs(), pod_b.client_procs())),
        },
        Neighbour {
            label: peers::AARDVARK,
            a_ns: peer.netns.clone(),
            b_ns: peer.netns.clone(),
            addr: aardvark,
            cgroups: None,
        },
    ];
    if let Some(d) = docker {
        neighbours.push(Neighbour {
            label: peers::DOCKER,
            a_ns: d.netns_path.clone(),
            b_ns: d.netns_path.clone(),
            addr: dns,
            cgroups: None,
        });
    }
    let mut noisy_json = serde_json::Map::new();
    for n in &neighbours {
        noisy_json.insert(n.label.to_string(), n.measure(qfile, s.perf_secs.min(5)));
    }
    w.del(net, &a, &[]);
    w.del(net, &b, &[]);
    pod_a.remove();
    pod_b.remove();
    Value::Object(noisy_json)
}

/// One server's measure: A floods from `a_ns`, B asks from `b_ns`, both at `addr`; with
/// `cgroups` (A's and B's clients' `cgroup.procs`), each client in its pod.
struct Neighbour {
    label: &'static str,
    a_ns: String,
    b_ns: String,
    addr: SocketAddr,
    cgroups: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
}

impl Neighbour {
    /// Three rounds for embedns, one for a peer: B quiet, then B while A floods; the worst
    /// round's figures, with every round's.
    fn measure(&self, qfile: &Path, secs: u64) -> Value {
        let rounds = if self.cgroups.is_some() { ROUNDS } else { 1 };
        let (a_procs, b_procs) = self.cgroups.clone().unwrap_or_default();
        let b_ns = netns_path(&self.b_ns);
        let span = Duration::from_secs(secs);
        let mut all = Vec::new();
        for round in 1..=rounds {
            let quiet = load::run_paced_in(&b_procs, &b_ns, self.addr, "web.", 500, span);
            let flood = {
                let (a_ns, addr, qfile) = (self.a_ns.clone(), self.addr, qfile.to_path_buf());
                let a_procs = a_procs.clone();
                std::thread::spawn(move || {
                    procs::dnsperf_in(&a_ns, addr, &qfile, secs + 1, Some(&a_procs))
                })
            };
            let loud = load::run_paced_in(&b_procs, &b_ns, self.addr, "web.", 500, span);
            let a = flood.join().unwrap();
            println!(
                "  noisy neighbour, {:<26} round {round}: B quiet p99 {:>6} µs lost {:>3} | A at {:>7.0} q/s: B p99 {:>6} µs lost {:>3}",
                self.label, quiet.p99_us, quiet.lost, a.qps, loud.p99_us, loud.lost
            );
            all.push(
                json!({"quiet": quiet.json(), "flooded": loud.json(), "floodQps": a.qps.round()}),
            );
        }
        // The worst round's figures stand for the server (one round for the peers).
        let mut entry = all
            .iter()
            .max_by(|x, y| ratio(x).total_cmp(&ratio(y)))
            .cloned()
            .unwrap_or(Value::Null);
        entry["rounds"] = json!(all);
        entry
    }
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
