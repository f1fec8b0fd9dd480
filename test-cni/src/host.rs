//! The machine a test runs on: set-up commands, names no other run uses, the processes the
//! plugin started (found by their command lines), and the test's own right to run.

use std::path::Path;
use std::process::Command;

/// `program`, run in the network namespace `netns` (`/run/netns/<netns>`) when there is one.
/// Through nsenter, not `ip netns exec`: that remounts /sys, where runc finds the cgroups
/// (podman and containerd run in a test's host netns this way).
pub fn command_in(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Runs a set-up command that must succeed.
pub fn must(cmd: &mut Command) {
    let out = cmd.output().expect("running a setup command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command-line pattern of the resolvers started for state dir `data_dir` (how the
/// plugin spawns them), for pgrep/pkill.
fn resolver_pattern(data_dir: &Path) -> String {
    format!("embedns-resolverd --data-dir {}", data_dir.display())
}

/// The command-line pattern of the resolvers' supervisors (each retitles itself so; its
/// serving child shows the command line the plugin gave).
fn supervisor_pattern(data_dir: &Path) -> String {
    format!(
        "embedns-resolverd:supervisor --data-dir {}",
        data_dir.display()
    )
}

/// PIDs of the resolvers' supervisors of state dir `data_dir` (one per container).
pub fn supervisor_pids(data_dir: &Path) -> Vec<i32> {
    pgrep(&supervisor_pattern(data_dir))
}

/// PIDs of the resolvers serving state dir `data_dir` (one per container, a supervisor's child).
pub fn resolver_pids(data_dir: &Path) -> Vec<i32> {
    pgrep(&resolver_pattern(data_dir))
}

/// PIDs of the processes whose command line matches the regular expression `pattern`.
pub fn pgrep(pattern: &str) -> Vec<i32> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// PIDs of the sync processes (shared networks) of state dir `data_dir`: two per network, a
/// supervisor and its worker.
pub fn sync_pids(data_dir: &Path) -> Vec<i32> {
    pgrep(&sync_pattern(data_dir))
}

fn sync_pattern(data_dir: &Path) -> String {
    format!("embedns-syncd --data-dir {}", data_dir.display())
}

/// SIGKILLs whatever resolvers and sync processes of `data_dir` a failed test left running.
pub fn kill_resolvers(data_dir: &Path) {
    // Supervisors first: one left would start its resolver again.
    let patterns = [
        supervisor_pattern(data_dir),
        resolver_pattern(data_dir),
        sync_pattern(data_dir),
    ];
    for pattern in patterns {
        let _ = Command::new("pkill")
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

/// Removes cgroup directories (a leaf, then its parents), each once its processes are gone:
/// a killed process leaves its cgroup a moment after the kill.
pub fn remove_cgroups(dirs: &[std::path::PathBuf]) {
    for dir in dirs {
        crate::wait::poll_until(
            std::time::Duration::from_secs(2),
            || match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => None,
                _ => Some(()),
            },
        );
    }
}
