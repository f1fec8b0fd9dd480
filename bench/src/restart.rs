//! The "always answered" phase: how long a container's DNS is dark after its resolver is
//! SIGKILLed (the OOM killer, a crash, an operator's `kill`), from the kill to the first
//! correct answer through 127.0.0.11, over many kills; and what a container's DNS costs in
//! memory, its resolver and the supervisor that restarts it together.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_cni::World;

use crate::load;
use crate::procs::{self, Stats};
use crate::report::{Goal, Row};
use crate::settings::Settings;

/// Kills measured (the floor is 20).
const KILLS: usize = 20;
/// A resolver that served this long restarts at once after the next kill (the supervisor's
/// HEALTHY_AFTER, 2 s, and a margin).
const BETWEEN_KILLS: Duration = Duration::from_millis(2300);

pub fn restart(w: &World, _s: &Settings) -> (Vec<Row>, Value) {
    let net = w.network("restart", serde_json::json!({}));
    let (web, cli) = (w.container("rweb"), w.container("rcli"));
    let web_ip: IpAddr = test_cni::ip_of(&w.adding(&net, &web).name("rweb").ok())
        .parse()
        .unwrap();
    w.adding(&net, &cli).name("rcli").ok();

    // Idle memory of the pair, before any kill.
    let child = w.resolver_pid(&cli);
    let parent = parent_of(child);
    let unique = unique_kib(&[child, parent]);
    let private = procs::memory(&[child]).private_kib + procs::memory(&[parent]).private_kib;
    let supervisor_private = procs::memory(&[parent]).private_kib;
    println!(
        "  a container's DNS, idle: {unique:.0} KiB mapped by its resolver and supervisor alone \
         (smaps private: resolver {:.0} + supervisor {supervisor_private:.0} KiB)",
        private - supervisor_private
    );

    let netns = procs::netns_path(&cli.netns);
    let outages: Vec<Duration> = std::thread::spawn(move || {
        let f = File::open(&netns).expect("netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.connect("127.0.0.11:53").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let answered = |sock: &UdpSocket| load::ask_once(sock, "rweb.") == Some(vec![web_ip]);
        let mut out = Vec::new();
        for _ in 0..KILLS {
            let pid = resolver_in(&netns);
            let deadline = Instant::now() + Duration::from_secs(30);
            let killed = Instant::now();
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            // Asked only once it is gone, so no answer comes from the dying process.
            while running(pid) && Instant::now() < deadline {}
            while !answered(&sock) && Instant::now() < deadline {}
            out.push(killed.elapsed());
            // Past the supervisor's "healthy" mark, so every kill is a first one.
            std::thread::sleep(BETWEEN_KILLS);
        }
        out
    })
    .join()
    .expect("the kill thread");
    let st = Stats::of(&outages);
    println!(
        "  outage after SIGKILL ({} kills): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        outages.len(),
        st.median_ms,
        st.p99_ms,
        outages
            .iter()
            .max()
            .unwrap_or(&Duration::ZERO)
            .as_secs_f64()
            * 1e3
    );
    let (_, report) = w.status();
    let restarts = report
        .containers
        .iter()
        .find(|c| c.name.as_deref() == Some("rcli"))
        .and_then(|c| c.supervisor.as_ref())
        .map_or(0, |s| s.restarts);
    println!("  embedns status: {restarts} restarts");
    w.del(&net, &cli, &[]);
    w.del(&net, &web, &[]);
    let rows = vec![
        Row::value(
            "always answered: outage after SIGKILL, p50 (ms)",
            st.median_ms,
            Goal::None,
        ),
        Row::value(
            "always answered: outage after SIGKILL, p99 (ms)",
            st.p99_ms,
            Goal::AtMost(1000.0),
        ),
        Row::value(
            "always answered: a container's DNS idle, resolver + supervisor (KiB)",
            unique,
            Goal::AtMost(512.0),
        ),
    ];
    let d = json!({
        "kills": outages.len(),
        "outage": st.json(),
        "outageMs": outages.iter().map(|d| (d.as_secs_f64() * 1e5).round() / 100.0).collect::<Vec<_>>(),
        "restartsInStatus": restarts,
        "memory": {"uniqueKiB": unique, "smapsPrivateKiB": private, "supervisorPrivateKiB": supervisor_private},
    });
    (rows, d)
}

/// The serving resolver in the netns at `netns` (not its supervisor): the process there whose
/// parent is also there.
fn resolver_in(netns: &str) -> i32 {
    let target = std::fs::metadata(netns).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let ns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                cmd.starts_with(b"/")
                    && cmd.windows(17).any(|w| w == b"embedns-resolverd")
                    && ns.ok() == target.as_ref().ok().copied()
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no resolver in {netns}");
        std::thread::yield_now();
    }
}

/// Whether `pid` runs (not gone, not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')))
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("a parent pid")
}

/// KiB of the pages mapped by `pids` and by no other process: each present page's frame
/// (/proc/<pid>/pagemap) whose map count (/proc/kpagecount) is the number of times these
/// processes map it. What the host gets back once they exit.
pub fn unique_kib(pids: &[i32]) -> f64 {
    let mut frames: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for pid in pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let Ok(mut pagemap) = File::open(format!("/proc/{pid}/pagemap")) else {
            continue;
        };
        for line in maps.lines() {
            let Some((range, _)) = line.split_once(' ') else {
                continue;
            };
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
            else {
                continue;
            };
            if line.ends_with("[vsyscall]") {
                continue;
            }
            let pages = (end - start) / 4096;
            let mut buf = vec![0u8; pages as usize * 8];
            if pagemap.seek(SeekFrom::Start(start / 4096 * 8)).is_err()
                || pagemap.read_exact(&mut buf).is_err()
            {
                continue;
            }
            for entry in buf.chunks_exact(8) {
                let e = u64::from_le_bytes(entry.try_into().unwrap());
                let present = e >> 63 == 1;
                let pfn = e & ((1 << 55) - 1);
                if present && pfn != 0 {
                    *frames.entry(pfn).or_default() += 1;
                }
            }
        }
    }
    let Ok(mut counts) = File::open("/proc/kpagecount") else {
        return f64::NAN;
    };
    let mut unique = 0u64;
    for (pfn, ours) in frames {
        let mut c = [0u8; 8];
        if counts.seek(SeekFrom::Start(pfn * 8)).is_ok()
            && counts.read_exact(&mut c).is_ok()
            && u64::from_le_bytes(c) <= ours
        {
            unique += 1;
        }
    }
    unique as f64 * 4.0
}
