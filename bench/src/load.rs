//! A closed-loop UDP DNS load client: keeps `concurrency` queries in flight for a while,
//! records every answer's latency, and (when asked) checks every answer's addresses.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// A question and, if it is to be checked, the exact set of addresses expected.
#[derive(Clone)]
pub struct Ask {
    pub name: String,
    pub expect: Option<BTreeSet<IpAddr>>,
}

/// One load run's rate, latency and losses.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub wrong: u64,
    pub qps: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl LoadResult {
    /// As JSON for the results file.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "sent": self.sent, "answered": self.answered, "lost": self.lost, "wrong": self.wrong,
            "qps": self.qps.round(), "meanUs": self.mean_us.round(), "p50Us": self.p50_us.round(),
            "p99Us": self.p99_us.round(),
        })
    }

    /// Back from [`LoadResult::json`] (a paced client run as a process of its own).
    fn from_json(v: &serde_json::Value) -> LoadResult {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        LoadResult {
            sent: n("sent"),
            answered: n("answered"),
            lost: n("lost"),
            wrong: n("wrong"),
            qps: f("qps"),
            mean_us: f("meanUs"),
            p50_us: f("p50Us"),
            p99_us: f("p99Us"),
        }
    }
}

const LOST_AFTER: Duration = Duration::from_secs(1);

/// Runs the load from inside the netns at `netns` (None: the current one).
pub fn run(
    netns: Option<&str>,
    server: SocketAddr,
    asks: &[Ask],
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let asks = asks.to_vec();
    in_netns(netns, move || drive(server, &asks, concurrency, duration))
}

/// Runs `f` on a thread of its own inside the netns at `netns` (None: the current one).
fn in_netns<T: Send + 'static>(netns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.map(str::to_string);
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            let file = File::open(&ns).expect("netns");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        f()
    })
    .join()
    .expect("load thread")
}

fn drive(server: SocketAddr, asks: &[Ask], concurrency: usize, duration: Duration) -> LoadResult {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap();
    let sock = UdpSocket::bind(bind).unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let templates: Vec<Vec<u8>> = asks
        .iter()
        .map(|a| {
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii(&a.name).unwrap(),
                RecordType::A,
            ));
            m.metadata.recursion_desired = true;
            m.to_vec().unwrap()
        })
        .collect();
    let mut slots: Vec<Option<(Instant, usize)>> = vec![None; 65536];
    let mut next_id: u16 = 0;
    let mut inflight = 0usize;
    let mut r = LoadResult::default();
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut turn = 0usize;
    let mut last_sweep = Instant::now();
    while start.elapsed() < duration || inflight > 0 {
        let sending = start.elapsed() < duration;
        while sending && inflight < concurrency {
            while slots[next_id as usize].is_some() {
                next_id = next_id.wrapping_add(1);
            }
            let which = turn % templates.len();
            turn += 1;
            let mut q = templates[which].clone();
            q[..2].copy_from_slice(&next_id.to_be_bytes());
            if sock.send(&q).is_ok() {
                slots[next_id as usize] = Some((Instant::now(), which));
                inflight += 1;
                r.sent += 1;
            }
            next_id = next_id.wrapping_add(1);
        }
        if let Ok(n) = sock.recv(&mut buf) {
            if n >= 12 {
                let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                if let Some((sent, which)) = slots[id].take() {
                    inflight -= 1;
                    r.answered += 1;
                    lat.push(sent.elapsed().as_micros() as u32);
                    if let Some(expect) = &asks[which].expect {
                        if !answer_is(&buf[..n], expect) {
                            r.wrong += 1;
                        }
                    }
                }
            }
        }
        if last_sweep.elapsed() > Duration::from_millis(100) || !sending {
            last_sweep = Instant::now();
            for s in slots.iter_mut() {
                if s.is_some_and(|(t, _)| t.elapsed() > LOST_AFTER) {
                    *s = None;
                    inflight -= 1;
                    r.lost += 1;
                }
            }
        }
    }
    let secs = duration.as_secs_f64();
    r.qps = r.answered as f64 / secs;
    lat.sort_unstable();
    if !lat.is_empty() {
        r.mean_us = lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64;
        r.p50_us = lat[lat.len() / 2] as f64;
        r.p99_us = lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64;
    }
    r
}

/// An open-loop client from inside the netns at `netns` (None: the current one): one query
/// for `name` every 1/`rate` s for `duration`, whatever the answers do, each timed; one not
/// answered within a second is lost. What a container asking at a steady pace sees.
pub fn run_paced(
    netns: Option<&str>,
    server: SocketAddr,
    name: &str,
    rate: u32,
    duration: Duration,
) -> LoadResult {
    let name = name.to_string();
    in_netns(netns, move || pace(server, &name, rate, duration))
}

/// [`run_paced`] as a process of its own (this binary's `paced` mode, [`paced_main`]) that
/// first enters the cgroups whose `cgroup.procs` files are `cgroups`: a container's client
/// where a runtime puts the container.
pub fn run_paced_in(
    cgroups: &[std::path::PathBuf],
    netns: &str,
    server: SocketAddr,
    name: &str,
    rate: u32,
    duration: Duration,
) -> LoadResult {
    let exe = std::env::current_exe().expect("the bench's path");
    let mut script = String::new();
    for procs in cgroups {
        script += &format!("echo $$ > {} && ", procs.display());
    }
    script += &format!(
        "exec {} paced {netns} {server} {name} {rate} {}",
        exe.display(),
        duration.as_millis()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("running the paced client");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "paced client: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    LoadResult::from_json(&v)
}

/// The `paced` mode's main: `paced NETNS ADDR NAME RATE MILLIS` prints [`run_paced`]'s
/// figures as JSON.
pub fn paced_main(args: &[String]) {
    let [netns, server, name, rate, ms] = args else {
        panic!("paced NETNS ADDR NAME RATE MILLIS, not {args:?}");
    };
    let r = run_paced(
        Some(netns),
        server.parse().expect("ADDR"),
        name,
        rate.parse().expect("RATE"),
        Duration::from_millis(ms.parse().expect("MILLIS")),
    );
    println!("{}", r.json());
}

fn pace(server: SocketAddr, name: &str, rate: u32, duration: Duration) -> LoadResult {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.connect(server).unwrap();
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.metadata.recursion_desired = true;
    let template = m.to_vec().unwrap();
    let every = Duration::from_secs(1) / rate.max(1);
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65536];
    let (mut r, mut lat) = (LoadResult::default(), Vec::new());
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut next = start;
    let mut id: u16 = 0;
    while start.elapsed() < duration + LOST_AFTER {
        let now = Instant::now();
        if now >= next && start.elapsed() < duration {
            let mut q = template.clone();
            q[..2].copy_from_slice(&id.to_be_bytes());
            if sock.send(&q).is_ok() {
                sent_at[id as usize] = Some(now);
                r.sent += 1;
            }
            id = id.wrapping_add(1);
            next += every;
            continue;
        }
        let wait = next
            .saturating_duration_since(now)
            .clamp(Duration::from_micros(50), Duration::from_millis(5));
        sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            if n >= 12 {
                let got = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                if let Some(t) = sent_at[got].take() {
                    let us = t.elapsed().as_micros() as u32;
                    if us as u128 <= LOST_AFTER.as_micros() {
                        r.answered += 1;
                        lat.push(us);
                    }
                }
            }
        }
    }
    r.lost = r.sent - r.answered;
    r.qps = r.answered as f64 / duration.as_secs_f64();
    lat.sort_unstable();
    if !lat.is_empty() {
        r.mean_us = lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64;
        r.p50_us = lat[lat.len() / 2] as f64;
        r.p99_us = lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64;
    }
    r
}

fn answer_is(bytes: &[u8], expect: &BTreeSet<IpAddr>) -> bool {
    let Ok(m) = Message::from_vec(bytes) else {
        return false;
    };
    let got: BTreeSet<IpAddr> = m
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    &got == expect
}

/// Asks once (from the current thread's netns) and returns the A addresses, or None on
/// timeout.
pub fn ask_once(sock: &UdpSocket, name: &str) -> Option<Vec<IpAddr>> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let id = m.metadata.id;
    sock.send(&m.to_vec().ok()?).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        if r.metadata.id == id {
            return Some(
                r.answers
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                    .collect(),
            );
        }
    }
}
