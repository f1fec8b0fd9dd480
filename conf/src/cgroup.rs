//! Where a resolver's CPU, memory and pids are charged, as a path beneath a cgroup
//! hierarchy's root (pure; `plugin/src/cgroup.rs` makes the directories and moves the
//! resolver there). With the `cgroupPath` capability (containerd's CRI passes the pod's cgroup
//! parent in it), the resolver's leaf lies beneath the pod's cgroup, so the pod's limits bound
//! its DNS too; without it, beneath embedns's own parent (`cgroupParent`), never in the
//! cgroup of whoever ran the plugin.

use std::path::{Component, Path, PathBuf};

use crate::ConfError;

/// The parent of resolvers' leaves when the runtime gives no `cgroupPath`.
pub const DEFAULT_PARENT: &str = "/embedns";

/// The parent cgroup, relative to a hierarchy's root: a cgroupfs path as it is
/// (`/kubepods/burstable/pod<uid>`), a systemd slice expanded as systemd lays it out
/// (`kubepods-burstable-pod<uid>.slice` is `kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice`).
pub fn parent(path: &str) -> Result<PathBuf, ConfError> {
    let bad = |why: &str| ConfError::InvalidConfig(format!("cgroup path {path:?}: {why}"));
    if path.contains('\0') || path.len() > 4096 {
        return Err(bad("not a path"));
    }
    let rel = if is_slice(path) {
        expand_slice(path).ok_or_else(|| bad("not a systemd slice name"))?
    } else {
        PathBuf::from(path.trim_start_matches('/'))
    };
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad("only plain names, no '..' or '.'"));
    }
    Ok(rel)
}

/// A systemd slice unit name rather than a path: `name.slice`, no '/'.
fn is_slice(path: &str) -> bool {
    !path.contains('/') && path.ends_with(".slice")
}

/// `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` (the root slice) → empty.
fn expand_slice(name: &str) -> Option<PathBuf> {
    let stem = name.strip_suffix(".slice")?;
    if stem == "-" {
        return Some(PathBuf::new());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return None;
    }
    let mut out = PathBuf::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    Some(out)
}

/// The leaf of one container's resolver (and its supervisor) beneath `parent`.
pub fn leaf(parent: &Path, container_id: &str) -> PathBuf {
    // Container IDs are the runtime's (letters, digits, '-', '_', '.'); a long one is cut.
    let id: String = container_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    parent.join(format!("embedns-{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_paths_are_taken_as_they_are_and_slices_expanded_as_systemd_does() {
        assert_eq!(
            parent("/kubepods/burstable/pod1234").unwrap(),
            PathBuf::from("kubepods/burstable/pod1234")
        );
        assert_eq!(
            parent("kubepods-burstable-pod12_34.slice").unwrap(),
            PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
            )
        );
        assert_eq!(
            parent("machine.slice").unwrap(),
            PathBuf::from("machine.slice")
        );
        assert_eq!(parent("-.slice").unwrap(), PathBuf::new());
        assert_eq!(parent(DEFAULT_PARENT).unwrap(), PathBuf::from("embedns"));
    }

    #[test]
    fn a_path_that_leaves_the_hierarchy_is_refused() {
        for bad in [
            "/kubepods/../../etc",
            "..",
            "x\0y",
            "a--b.slice",
            "-a.slice",
        ] {
            assert!(parent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_leaf_is_named_for_the_container() {
        assert_eq!(
            leaf(Path::new("kubepods"), "abc/..x"),
            PathBuf::from("kubepods/embedns-abc___x")
        );
        assert_eq!(
            leaf(Path::new(""), &"a".repeat(100))
                .to_str()
                .unwrap()
                .len(),
            8 + 64
        );
    }
}
