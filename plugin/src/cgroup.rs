//! The resolver's leaf cgroup, made in every cgroup hierarchy this host mounts (cgroup v2; v1
//! with its controllers one hierarchy each; hybrid: both, the v2 one without controllers),
//! beneath the parent the conf settles on (`embedns_conf::cgroup`). The resolver's supervisor
//! is moved into each leaf between its fork and its exec (`child::detached` writes "0" into the
//! `cgroup.procs` opened here), so it and every resolver it forks are charged there from
//! their first instruction. DEL removes the leaves, and the parents ADD made for them.
//!
//! Where a hierarchy cannot be written (a rootless runtime outside its delegated subtree, a
//! read-only /sys/fs/cgroup), the resolver stays in that hierarchy's cgroup of its caller and
//! the log says so: that is all such a runtime allows.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    /// v1's cpuset: a new cgroup has no CPUs or memory nodes until given its parent's.
    cpuset: bool,
}

/// The leaves made for one resolver, and the `cgroup.procs` of each, open for the move.
pub struct Placement {
    /// What DEL removes, in order: the leaves, then the parents made for them, deepest first.
    pub made: Vec<PathBuf>,
    pub procs: Vec<File>,
}

/// Makes `leaf` (relative to each hierarchy's root) and the parents it lacks, in every
/// hierarchy this host mounts. Never fails: a hierarchy that refuses is logged and skipped.
pub fn prepare(leaf: &Path) -> Placement {
    let mut placement = Placement {
        made: Vec::new(),
        procs: Vec::new(),
    };
    let mut parents_made = Vec::new();
    let all = hierarchies();
    tracing::debug!(leaf = %leaf.display(), hierarchies = all.len(), "placing the resolver");
    for h in all {
        let target = h.mount.join(leaf);
        match make_dirs(&h, &target, &mut parents_made) {
            Ok(leaf_made) => {
                let procs = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(target.join("cgroup.procs"));
                match procs {
                    Ok(f) => placement.procs.push(f),
                    Err(e) => {
                        tracing::warn!(cgroup = %target.display(), "cannot move the resolver there: {e}")
                    }
                }
                if leaf_made {
                    placement.made.push(target);
                }
            }
            Err(e) => tracing::warn!(
                cgroup = %target.display(),
                "the resolver stays in its caller's cgroup of this hierarchy: {e}"
            ),
        }
    }
    parents_made.reverse();
    placement.made.extend(parents_made);
    placement
}

/// `mkdir -p`, noting each parent it made; v1 cpuset directories get their parent's CPUs and
/// memory nodes. Returns whether the leaf itself was made (an existing leaf is reused).
fn make_dirs(h: &Hierarchy, target: &Path, made: &mut Vec<PathBuf>) -> std::io::Result<bool> {
    let mut missing = Vec::new();
    let mut p = target;
    while !p.exists() {
        missing.push(p.to_path_buf());
        p = match p.parent() {
            Some(parent) if parent.starts_with(&h.mount) => parent,
            _ => break,
        };
    }
    let mut leaf_made = false;
    for dir in missing.iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                if dir == target {
                    leaf_made = true;
                } else {
                    made.push(dir.clone());
                }
                if h.cpuset {
                    inherit_cpuset(dir);
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(leaf_made)
}

fn inherit_cpuset(dir: &Path) {
    let Some(parent) = dir.parent() else { return };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if let Ok(v) = std::fs::read_to_string(parent.join(file)) {
            let _ = std::fs::write(dir.join(file), v.trim());
        }
    }
}

/// Removes what [`prepare`] made (a leaf still holding a process, or a parent that others use
/// now, stays: rmdir refuses both).
pub fn remove(made: &[PathBuf]) {
    for dir in made {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    || e.kind() == ErrorKind::DirectoryNotEmpty =>
            {
                tracing::debug!(cgroup = %dir.display(), "still in use: kept");
            }
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), "removing the resolver's cgroup: {e}")
            }
        }
    }
}

/// Moves this process to the root cgroup of every hierarchy (a process started from a
/// resolver's leaf that is to remove that leaf); a hierarchy that refuses is skipped.
pub fn leave() {
    for h in hierarchies() {
        if let Err(e) = std::fs::write(h.mount.join("cgroup.procs"), "0") {
            tracing::debug!(cgroup = %h.mount.display(), "staying in this hierarchy's cgroup: {e}");
        }
    }
}

/// How old an orphan leaf must be before GC removes it.
const SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// GC: removes the empty leaves, a minute old or more, beneath `parent` (conf's `cgroupParent`) whose names are in
/// none of `live` (the leaves of the sandboxes that exist): a sandbox removed by other means
/// than DEL (a runtime restarted without its state dir) leaves its leaf. A leaf beneath a
/// pod's cgroup goes with the pod's (runtimes remove a pod's cgroup tree).
pub fn sweep(parent: &Path, live: &[PathBuf]) {
    for h in hierarchies() {
        let dir = h.mount.join(parent);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let rel = parent.join(e.file_name());
            let ours = e.file_name().to_string_lossy().starts_with("embedns-");
            // A minute old at least: another state directory's ADD (sharing the parent) may
            // have just made it, its supervisor not yet moved in.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a >= SWEEP_AFTER));
            if ours && old && !live.contains(&rel) && e.file_type().is_ok_and(|t| t.is_dir()) {
                // A leaf still holding a process stays (rmdir refuses).
                if std::fs::remove_dir(e.path()).is_ok() {
                    tracing::info!(cgroup = %e.path().display(), "GC: an orphan resolver cgroup removed");
                }
            }
        }
    }
}

/// The cgroup hierarchies mounted here, each once, from /proc/self/mountinfo: the root of the
/// hierarchy mounted (not a subtree of it, as a container's cgroup namespace shows).
fn hierarchies() -> Vec<Hierarchy> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount), Some(fstype), Some(opts)) =
            (left.get(3), left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        if !matches!(*fstype, "cgroup" | "cgroup2") || *root != "/" {
            continue;
        }
        let key = (fstype.to_string(), opts.to_string());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(Hierarchy {
            mount: PathBuf::from(unescape(mount)),
            cpuset: *fstype == "cgroup" && opts.split(',').any(|o| o == "cpuset"),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo_gives_each_hierarchy_once_and_skips_subtrees() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset
37 30 0:31 / /mnt/again rw,nosuid - cgroup cgroup rw,cpu,cpuacct
38 30 0:33 /kubepods /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let h = parse_mountinfo(text);
        let mounts: Vec<_> = h.iter().map(|h| h.mount.to_str().unwrap()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpuset"
            ]
        );
        assert_eq!(h.iter().filter(|h| h.cpuset).count(), 1);
    }
}
