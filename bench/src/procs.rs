//! Processes and measurements: shell helpers, dnsperf, timing statistics, plugins called
//! alone from the host netns, the scale/churn driver, memory and CPU of resolvers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_cni::{Container, World};

use crate::load::{self, Ask, LoadResult};

/// Runs a shell command; its stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command that must succeed.
pub fn must(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `perf stat` counted, where it works.
pub struct Perf {
    pub qps: f64,
    pub mean_ms: f64,
    pub lost: f64,
}

impl Perf {
    /// As JSON for the results file.
    pub fn json(&self) -> Value {
        json!({"qps": self.qps.round(), "meanMs": self.mean_ms, "lost": self.lost})
    }
}

/// dnsperf with the baselines' parameters (`-c 4 -T 1 -q 200`), from inside `netns`.
pub fn dnsperf(netns: &str, server: SocketAddr, qfile: &std::path::Path, secs: u64) -> Perf {
    dnsperf_in(netns, server, qfile, secs, None)
}

/// [`dnsperf`], moved first into the cgroups whose `cgroup.procs` are given.
pub fn dnsperf_in(
    netns: &str,
    server: SocketAddr,
    qfile: &std::path::Path,
    secs: u64,
    cgroups: Option<&[std::path::PathBuf]>,
) -> Perf {
    let mut enter = String::new();
    for procs in cgroups.unwrap_or_default() {
        enter += &format!("echo $$ > {} && ", procs.display());
    }
    // exec: dnsperf stays the shell's process, in its cgroups.
    enter += "exec ";
    enter += &if netns.starts_with('/') {
        format!("nsenter --net={netns}")
    } else {
        format!("ip netns exec {netns}")
    };
    let out = sh(&format!(
        "{enter} dnsperf -s {} -p {} -d {} -l {secs} -c 4 -T 1 -q 200 2>&1",
        server.ip(),
        server.port(),
        qfile.display()
    ));
    let field = |key: &str| -> f64 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Perf {
        qps: field("Queries per second:"),
        mean_ms: field("Average Latency (s):") * 1000.0,
        lost: field("Queries lost:"),
    }
}

/// Count, median, p95 and p99 of samples, in ms.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub n: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    /// The statistics of `samples`.
    pub fn of(samples: &[Duration]) -> Stats {
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        Stats {
            n: v.len(),
            median_ms: at(0.5),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
    }

    /// As JSON for the results file.
    pub fn json(&self) -> Value {
        json!({"n": self.n, "medianMs": self.median_ms, "p95Ms": self.p95_ms, "p99Ms": self.p99_ms})
    }
}

/// Runs `bin` through the world's host-netns runner (no `ip netns exec` in the timing); it
/// must succeed. How long it took.
pub fn timed(w: &World, bin: &str, env: &[(&str, &str)], stdin: &str) -> Duration {
    let ran = w.runner().run(std::path::Path::new(bin), env, stdin);
    assert!(ran.success, "{bin}: {}{}", ran.stdout, ran.stderr);
    ran.took
}

pub fn cni_env<'a>(
    cmd: &'a str,
    id: &'a str,
    netns: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_ARGS", args),
    ]
}

/// embedns and dnsname each alone, given the same prevResult, ADD then DEL `runs` times.
/// embedns gets a fresh netns per run (a new container); dnsname keeps one anchor container
/// attached so its per-network dnsmasq stays up, as the baseline measured its later ADDs.
pub fn plugin_alone(w: &World, prev: &Value, runs: usize) -> BTreeMap<String, (Stats, Stats)> {
    let mut out = BTreeMap::new();
    let embedns = w.bin_dir.join("embedns").display().to_string();
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let c = w.container(&format!("al{i}"));
        let mut p = prev.clone();
        p["interfaces"][2]["sandbox"] = json!(c.path);
        let conf = w
            .conf("alone", "0.4.0", json!({"prevResult": p}))
            .to_string();
        let id = format!("alone{i}");
        let args = format!("K8S_POD_NAME=t{i}");
        adds.push(timed(
            w,
            &embedns,
            &cni_env("ADD", &id, &c.path, &args),
            &conf,
        ));
        dels.push(timed(
            w,
            &embedns,
            &cni_env("DEL", &id, &c.path, &args),
            &conf,
        ));
    }
    out.insert("embedns".to_string(), (Stats::of(&adds), Stats::of(&dels)));
    if std::path::Path::new("/usr/lib/cni/dnsname").exists() {
        let c = w.container("dnsname-anchor");
        let conf = json!({"cniVersion": "0.4.0", "name": "alonedns", "type": "dnsname",
                          "domainName": "dns.podman", "prevResult": prev})
        .to_string();
        let bin = "/usr/lib/cni/dnsname";
        let anchor = "IgnoreUnknown=1;K8S_POD_NAME=anchor";
        timed(w, bin, &cni_env("ADD", "anchor", &c.path, anchor), &conf);
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let id = format!("alone{i}");
            let args = format!("IgnoreUnknown=1;K8S_POD_NAME=t{i}");
            adds.push(timed(w, bin, &cni_env("ADD", &id, &c.path, &args), &conf));
            dels.push(timed(w, bin, &cni_env("DEL", &id, &c.path, &args), &conf));
        }
        timed(w, bin, &cni_env("DEL", "anchor", &c.path, anchor), &conf);
        out.insert("dnsname".to_string(), (Stats::of(&adds), Stats::of(&dels)));
        stop_dnsname("alonedns");
    }
    out
}

/// dnsname leaves its per-network dnsmasq running after the last DEL: stop it.
pub fn stop_dnsname(net: &str) {
    let dir = format!("/run/containers/cni/dnsname/{net}");
    let _ = sh(&format!(
        "kill $(cat {dir}/pidfile) 2>/dev/null; rm -rf {dir}"
    ));
}

/// Many containers on one network, added by calling embedns alone (as after an IPAM
/// plugin), with a prober in the first container measuring when peers see new names.
pub struct Scale<'a> {
    w: &'a World,
    net: String,
    conts: Vec<(Container, String, IpAddr)>,
    pub add_times: Vec<Duration>,
    pub propagation: Vec<Duration>,
}

impl<'a> Scale<'a> {
    /// A scale run on network `net`.
    pub fn new(w: &'a World, net: &str) -> Scale<'a> {
        Scale {
            w,
            net: net.into(),
            conts: Vec::new(),
            add_times: Vec::new(),
            propagation: Vec::new(),
        }
    }

    fn ip(i: usize) -> IpAddr {
        IpAddr::from([10, 100, (i / 250) as u8, (i % 250 + 1) as u8])
    }

    fn add(&mut self, label: &str, i: usize) -> Duration {
        let c = self.w.container(label);
        self.add_in(c, label, i)
    }

    fn add_in(&mut self, c: Container, label: &str, i: usize) -> Duration {
        let ip = Self::ip(i);
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": c.path}],
            "ips": [{"address": format!("{ip}/16"), "interface": 0}]});
        let conf = self
            .w
            .conf(&self.net, "1.0.0", json!({"prevResult": prev}))
            .to_string();
        let id = format!("{label}-{}", self.w.id);
        let args = format!("K8S_POD_NAME={label}");
        let took = timed(
            self.w,
            self.embedns().as_str(),
            &cni_env("ADD", &id, &c.path, &args),
            &conf,
        );
        self.conts.push((c, id, ip));
        took
    }

    fn del(&self, c: &Container, id: &str) -> Duration {
        let conf = self.w.conf(&self.net, "1.0.0", json!({})).to_string();
        timed(
            self.w,
            self.embedns().as_str(),
            &cni_env("DEL", id, &c.path, ""),
            &conf,
        )
    }

    fn embedns(&self) -> String {
        self.w.bin_dir.join("embedns").display().to_string()
    }

    /// Adds `n` containers `s0..`; returns the first container's netns path (the prober's).
    /// The namespaces are made first: `ip netns add` slows as mounts accumulate (one per
    /// netns), and its kernel work would otherwise overlap the ADDs timed.
    pub fn add_many(&mut self, n: usize) -> String {
        let mut fresh: Vec<Container> =
            (0..n).map(|i| self.w.container(&format!("s{i}"))).collect();
        fresh.reverse();
        let took = self.add_in(fresh.pop().expect("n > 0"), "s0", 0);
        self.add_times.push(took);
        let first = self.conts[0].0.path.clone();
        let prober = Prober::start(&first);
        let every = (n / 100).max(1);
        for i in 1..n {
            let c = fresh.pop().expect("one netns per container");
            let took = self.add_in(c, &format!("s{i}"), i);
            self.add_times.push(took);
            if i % every == 0 {
                let returned = Instant::now();
                prober.wait_for(&format!("s{i}."), Self::ip(i));
                self.propagation.push(returned.elapsed());
            }
            if i % 200 == 0 {
                let last = Stats::of(&self.add_times[i - 100..]);
                println!(
                    "  … {i} containers (ADD median of the last 100: {:.2} ms)",
                    last.median_ms
                );
            }
        }
        first
    }

    /// Local queries from the first container (every answer checked) while containers are
    /// added and removed at 20/s; returns the load result and the number of ADD/DEL.
    pub fn churn_under_load(&mut self, first: String, dur: Duration) -> (LoadResult, usize) {
        let stable: Vec<Ask> = (1..=10.min(self.conts.len() - 1))
            .map(|i| Ask {
                name: format!("s{i}."),
                expect: Some(BTreeSet::from([Self::ip(i)])),
            })
            .collect();
        let load = std::thread::spawn(move || {
            load::run(
                Some(&first),
                "127.0.0.11:53".parse().unwrap(),
                &stable,
                8,
                dur,
            )
        });
        let start = Instant::now();
        let base = self.conts.len() + 10;
        let mut ops = 0;
        let mut live: Vec<usize> = Vec::new();
        let mut j = 0;
        while start.elapsed() < dur {
            let tick = start + Duration::from_millis(50 * ops as u64);
            if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait); // pacing the churn at 20 operations per second
            }
            if live.len() < 5 || j % 2 == 0 {
                self.add(&format!("x{j}"), base + j);
                live.push(self.conts.len() - 1);
            } else {
                let k = live.remove(0);
                let (c, id, _) = self.conts[k].clone();
                self.del(&c, &id);
            }
            j += 1;
            ops += 1;
        }
        for k in live {
            let (c, id, _) = self.conts[k].clone();
            self.del(&c, &id);
        }
        self.conts.retain(|(c, _, _)| !c.netns.contains("-x"));
        (load.join().unwrap(), ops)
    }

    /// Deletes every container; each DEL's time.
    pub fn del_all(&mut self) -> Vec<Duration> {
        let conts = std::mem::take(&mut self.conts);
        conts.iter().map(|(c, id, _)| self.del(c, id)).collect()
    }
}

/// A thread inside one container's netns that asks 127.0.0.11 until a name resolves.
/// Asks one container's resolver for a name until the answer is the one waited for; runs
/// in a thread of its own inside the container's netns.
pub struct Prober {
    tx: mpsc::Sender<(String, Option<IpAddr>, mpsc::Sender<bool>)>,
}

impl Prober {
    pub fn start(netns: &str) -> Prober {
        let (tx, rx) = mpsc::channel::<(String, Option<IpAddr>, mpsc::Sender<bool>)>();
        let netns = netns.to_string();
        std::thread::spawn(move || {
            let f = File::open(&netns).unwrap();
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.connect("127.0.0.11:53").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            for (name, ip, done) in rx {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut seen = false;
                while !seen && Instant::now() < deadline {
                    seen = match (load::ask_once(&sock, &name), ip) {
                        (Some(got), Some(ip)) => got.contains(&ip),
                        (Some(got), None) => got.is_empty(),
                        (None, _) => false,
                    };
                }
                let _ = done.send(seen);
            }
        });
        Prober { tx }
    }

    /// Until `name` answers with `ip` (at most 30 s; false if it never did).
    pub fn wait_for(&self, name: &str, ip: IpAddr) -> bool {
        self.wait(name, Some(ip))
    }

    /// Until `name` answers with no address (at most 30 s).
    pub fn wait_gone(&self, name: &str) -> bool {
        self.wait(name, None)
    }

    fn wait(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let (done, rx) = mpsc::channel();
        self.tx.send((name.to_string(), ip, done)).unwrap();
        rx.recv().unwrap()
    }
}

/// Memory of a set of processes: averages per process (RSS, PSS, private, anon) and total PSS, in KiB.
#[derive(Debug, Default)]
pub struct Mem {
    pub count: usize,
    pub rss_kib: f64,
    pub pss_kib: f64,
    pub private_kib: f64,
    pub anon_kib: f64,
    pub total_pss_kib: f64,
}

impl Mem {
    /// As JSON for the results file.
    pub fn json(&self) -> Value {
        json!({"resolvers": self.count, "rssKiB": self.rss_kib, "pssKiB": self.pss_kib,
               "privateKiB": self.private_kib, "anonKiB": self.anon_kib, "totalPssKiB": self.total_pss_kib})
    }
}

/// Mean per-process memory (smaps_rollup) of `pids`, and their total PSS.
pub fn memory(pids: &[i32]) -> Mem {
    let mut m = Mem::default();
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let get = |k: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        m.count += 1;
        m.rss_kib += get("Rss:");
        m.pss_kib += get("Pss:");
        m.private_kib += get("Private_Clean:") + get("Private_Dirty:");
        m.anon_kib += get("Anonymous:");
    }
    m.total_pss_kib = m.pss_kib;
    if m.count > 0 {
        let n = m.count as f64;
        m.rss_kib /= n;
        m.pss_kib /= n;
        m.private_kib /= n;
        m.anon_kib /= n;
    }
    m
}

fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// CPU time (ms) all `pids` used over `window`.
pub fn idle_cpu(pids: &[i32], window: Duration) -> f64 {
    let before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    std::thread::sleep(window); // the measurement window itself
    let after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (after.saturating_sub(before)) as f64 * 1000.0 / hz
}

/// User + system CPU time a process has used so far (all its threads), in microseconds.
pub fn cpu_micros(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, over the whole line).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000 / hz)
}

/// The pid of the process holding a UDP socket bound to `ip` (and `port`, if given) inside
/// `netns` (a name for `ip netns exec`, or a path for `nsenter`).
pub fn udp_owner(netns: &str, ip: std::net::IpAddr, port: Option<u16>) -> Option<i32> {
    let enter = if netns.starts_with('/') {
        format!("nsenter --net={netns}")
    } else {
        format!("ip netns exec {netns}")
    };
    let filter = match port {
        Some(p) => format!("src {ip}:{p}"),
        None => format!("src {ip}"),
    };
    let out = sh(&format!("{enter} ss -Hulnp '{filter}'"));
    out.split("pid=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The path of netns `ns` (a name under /run/netns, or a path already).
pub fn netns_path(ns: &str) -> String {
    if ns.starts_with('/') {
        ns.to_string()
    } else {
        format!("/run/netns/{ns}")
    }
}
