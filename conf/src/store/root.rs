//! The state directory itself: which identity the resolvers run as, and its permissions
//! (root's, readable by the resolvers' group and no one else; user namespaces respected).

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use crate::fsutil::create_private_dir;
use crate::user::ResolverUser;
use crate::ConfError;

/// The identity resolvers of the state directory `root` run as when `resolverUser` is not set
/// (`set` false) and `user` is the default: a directory an earlier version made for
/// nobody/nogroup keeps that group, so the resolvers it runs keep reading the store through
/// an upgrade in place, while new resolvers take the default uid (nobody can no longer
/// signal them or write to their logs). The store lives in /run: made anew at the next boot,
/// it gets the default group.
pub fn resolver_user_for(root: &Path, user: ResolverUser, set: bool) -> ResolverUser {
    use crate::user::{DEFAULT_RESOLVER_USER, EARLIER_RESOLVER_USER};
    use std::os::unix::fs::MetadataExt;
    if set || user != DEFAULT_RESOLVER_USER {
        return user;
    }
    match fs::metadata(root) {
        Ok(m) if m.gid() == EARLIER_RESOLVER_USER.gid && m.mode() & 0o7777 == 0o2750 => {
            ResolverUser {
                uid: user.uid,
                gid: EARLIER_RESOLVER_USER.gid,
            }
        }
        _ => user,
    }
}

/// Makes the state directory `root` readable by the resolvers' group `gid` and by no one
/// else: owned by root, group `gid`, mode 2750, so every directory and file made below it
/// inherits the group (directories 2750, files 0640; nothing is group-writable). A directory
/// made by an earlier version (root:root 0700) is converted once, whole. A stat when done.
pub fn prepare_root(root: &Path, uid: u32, gid: u32) -> Result<(), ConfError> {
    use std::os::unix::fs::MetadataExt;
    create_private_dir(root)?;
    if !id_mapped(uid, "/proc/self/uid_map") || !id_mapped(gid, "/proc/self/gid_map") {
        // A user namespace (rootless podman) without that identity: the resolvers keep the
        // plugin's own, which owns the store; nothing to share with a group.
        return Ok(());
    }
    reachable_by(root, uid, gid)?;
    let meta = fs::metadata(root).map_err(|e| ConfError::io(root, e))?;
    if meta.gid() == gid && meta.mode() & 0o7777 == 0o2750 {
        return Ok(());
    }
    // Only root's own entries are converted, each through a descriptor opened without
    // following links: a resolver's log directory (its user's) is not entered, and nothing a
    // less-privileged user planted (a link, a hard link to a root file, a FIFO) is changed.
    let fix = |path: &Path, dir: bool| -> Result<bool, ConfError> {
        let io = |e: std::io::Error| ConfError::io(path, e);
        let file = match crate::fsutil::open_nofollow(path, dir) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        let ours = meta.uid() == 0 && (dir || (meta.is_file() && meta.nlink() == 1));
        if !ours || meta.is_dir() != dir {
            return Ok(false);
        }
        nix::unistd::fchown(&file, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io(std::io::Error::from(e)))?;
        let mode = meta.mode();
        let new = if dir {
            (mode & 0o700) | 0o2050
        } else {
            (mode & 0o700) | 0o040
        };
        file.set_permissions(fs::Permissions::from_mode(new))
            .map_err(io)?;
        Ok(true)
    };
    fn walk(
        dir: &Path,
        fix: &dyn Fn(&Path, bool) -> Result<bool, ConfError>,
    ) -> Result<(), ConfError> {
        for entry in fs::read_dir(dir)
            .map_err(|e| ConfError::io(dir, e))?
            .filter_map(Result::ok)
        {
            let Ok(t) = entry.file_type() else { continue };
            if t.is_symlink() || t.is_socket() {
                continue;
            }
            // A directory is entered only if it is root's (and was converted).
            if fix(&entry.path(), t.is_dir())? && t.is_dir() {
                walk(&entry.path(), fix)?;
            }
        }
        Ok(())
    }
    walk(root, &fix)?;
    fix(root, true)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o2750))
        .map_err(|e| ConfError::io(root, e))
}

/// Whether `id` exists in this process's user namespace (its `uid_map` or `gid_map` says so).
fn id_mapped(id: u32, map: &str) -> bool {
    let Ok(text) = fs::read_to_string(map) else {
        return true; // no /proc: assume the host's namespace
    };
    text.lines().any(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        matches!(v[..], [inside, _, len] if (inside..inside + len).contains(&u64::from(id)))
    })
}

/// Fails, naming the directory, when one above `root` cannot be searched by `uid`/`gid` (a
/// resolver running as them could then read nothing of the store).
fn reachable_by(root: &Path, uid: u32, gid: u32) -> Result<(), ConfError> {
    use std::os::unix::fs::MetadataExt;
    let root = fs::canonicalize(root).map_err(|e| ConfError::io(root, e))?;
    for dir in root.ancestors().skip(1) {
        let m = fs::metadata(dir).map_err(|e| ConfError::io(dir, e))?;
        let bit = if m.uid() == uid {
            0o100
        } else if m.gid() == gid {
            0o010
        } else {
            0o001
        };
        if m.mode() & bit == 0 {
            return Err(ConfError::InvalidConfig(format!(
                "the resolvers run as {uid}:{gid} (resolverUser) and cannot reach dataDir {}: {} \
                 is mode {:o}; make it searchable (chmod o+x) or choose another dataDir",
                root.display(),
                dir.display(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_this_user_namespace() {
        let tmp = tempfile::tempdir().unwrap();
        let map = tmp.path().join("uid_map");
        // Rootless podman's namespace: root is the user, 1..65536 its subordinate ids.
        fs::write(
            &map,
            "         0       1000          1\n         1     100000      65536\n",
        )
        .unwrap();
        let map = map.to_str().unwrap();
        assert!(id_mapped(0, map) && id_mapped(65534, map) && id_mapped(65536, map));
        assert!(!id_mapped(65537, map));
        fs::write(
            tmp.path().join("uid_map"),
            "         0       1000          1\n",
        )
        .unwrap();
        assert!(!id_mapped(65534, map));
    }
}
