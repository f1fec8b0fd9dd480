//! The embedns test harness: each test builds a [`World`], a host netns of its own in which
//! cnitool (built from Debian's libcni source) runs the reference `bridge` + `host-local`
//! plugins and embedns, container netns attached to it, and fake upstream DNS servers on the
//! host netns' loopback. Nothing touches the machine's own network or nameserver. A World
//! deletes everything it made when dropped, also when the test panics.

pub mod add;
pub mod bins;
pub mod calls;
pub mod certs;
pub mod cri;
pub mod dig;
pub mod multihost;
pub mod podman;
pub mod rootless;
pub mod runner;
pub mod upstream;
pub mod wait;
pub mod world;

pub use add::Add;
pub use dig::Dig;
pub use upstream::{FakeUpstream, Mode};
pub use wait::wait_until;
pub use world::{Container, Network, World};

/// The first address of a CNI result (`ips[0].address` without its prefix length).
pub fn ip_of(result: &serde_json::Value) -> String {
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"));
    addr.split('/').next().unwrap_or(addr).to_string()
}

/// The command-line pattern of the resolvers started for state dir `data_dir` (how the
/// plugin spawns them), for pgrep/pkill.
fn resolver_pattern(data_dir: &std::path::Path) -> String {
    format!("embedns-resolverd --data-dir {}", data_dir.display())
}

/// PIDs of the resolvers serving state dir `data_dir`.
pub fn resolver_pids(data_dir: &std::path::Path) -> Vec<i32> {
    pgrep(&resolver_pattern(data_dir))
}

/// PIDs of the processes whose command line matches the regular expression `pattern`.
pub fn pgrep(pattern: &str) -> Vec<i32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The first line of `text` that starts with `prefix` (a resolv.conf directive, a
/// /proc status field), or "" when none does.
pub fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
}

/// `program`, run in the network namespace `netns` (`/run/netns/<netns>`) when there is one.
/// Through nsenter, not `ip netns exec`: that remounts /sys, where runc finds the cgroups
/// (podman and containerd run in a test's host netns this way).
pub fn command_in(netns: Option<&str>, program: &str) -> std::process::Command {
    match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// Runs a set-up command that must succeed.
pub fn must(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("running a setup command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The embedns entry of the example conflist `conf/examples/<file>`, as a user copies it.
pub fn example_entry(file: &str) -> serde_json::Value {
    let path = bins::workspace().join("conf/examples").join(file);
    let list: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "embedns")
        .cloned()
        .expect("the example has an embedns entry")
}

/// The addresses busybox `nslookup` printed, sorted and each once (its server's own lines,
/// `Server:` and `Address: <server>:53` before the first `Name:`, left out; with a search
/// list it asks each search-qualified name, which R16a may answer as the local one).
pub fn nslookup_addresses(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// PIDs of the sync processes (shared networks) of state dir `data_dir`: two per network, a
/// supervisor and its worker.
pub fn sync_pids(data_dir: &std::path::Path) -> Vec<i32> {
    pgrep(&sync_pattern(data_dir))
}

fn sync_pattern(data_dir: &std::path::Path) -> String {
    format!("embedns-syncd --data-dir {}", data_dir.display())
}

/// SIGKILLs whatever resolvers and sync processes of `data_dir` a failed test left running.
pub fn kill_resolvers(data_dir: &std::path::Path) {
    for pattern in [resolver_pattern(data_dir), sync_pattern(data_dir)] {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &pattern])
            .status();
    }
}

/// Fails the test, naming what it needs, when it cannot run here: a test that did not run
/// must never be reported as passed.
pub fn require_root(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test} cannot run: it needs root (network namespaces, iptables); run `make test` as root"
    );
}

/// A name no other test run uses: prefix, pid, a counter and random bits (netns names are
/// global to the machine).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{:x}{:x}{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u16>()
    )
}

/// Context switches of every thread of a process so far: unchanged means not scheduled.
pub fn context_switches(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process is alive");
    tasks
        .filter_map(Result::ok)
        .map(|t| std::fs::read_to_string(t.path().join("status")).unwrap_or_default())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}
