//! Who runs, and where the state lives: the resolvers' identity (`resolverUser`) and the
//! defaults that differ when the plugin runs unprivileged (rootless podman runs it as the
//! root of a user namespace that maps the user and their subordinate ids).

use std::path::PathBuf;

use crate::ConfError;

/// The state dir of a privileged plugin; see [`default_data_dir`].
pub const DEFAULT_DATA_DIR: &str = "/run/embedns";

/// The default `dataDir`: [`DEFAULT_DATA_DIR`], or `$XDG_RUNTIME_DIR/embedns` when running
/// unprivileged (not root, or root of a user namespace that maps less than every id, as
/// rootless podman runs its plugins), as dnsname chooses; `embedns status` takes the same,
/// so the user's shell finds what the plugin wrote in rootless podman's namespace.
pub fn default_data_dir() -> PathBuf {
    default_data_dir_for(
        nix::unistd::geteuid().is_root(),
        &own_uid_map(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn default_data_dir_for(root: bool, uid_map: &str, xdg: Option<std::ffi::OsString>) -> PathBuf {
    let unprivileged = !root || in_user_namespace(uid_map);
    match xdg.map(PathBuf::from).filter(|x| x.is_absolute()) {
        Some(dir) if unprivileged => dir.join("embedns"),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// The default `resolverUser`: [`DEFAULT_RESOLVER_USER`] on a host; inside a user namespace
/// (rootless podman) the namespace's root, which is the unprivileged user on the host (the
/// resolver still drops every capability): the user's runtime dir, where the store lives, is
/// theirs alone (mode 0700, as XDG asks), so no other identity could read it. dnsname's
/// dnsmasq runs as that user too.
pub fn default_resolver_user() -> ResolverUser {
    default_resolver_user_for(&own_uid_map())
}

fn default_resolver_user_for(uid_map: &str) -> ResolverUser {
    if in_user_namespace(uid_map) {
        ResolverUser { uid: 0, gid: 0 }
    } else {
        DEFAULT_RESOLVER_USER
    }
}

fn own_uid_map() -> String {
    std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default()
}

/// Whether a `uid_map` is a user namespace's (anything but the host's identity map).
fn in_user_namespace(uid_map: &str) -> bool {
    let whole_range = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    !uid_map.trim().is_empty() && !whole_range
}

/// The unprivileged identity resolvers run as by default: 65530:65530, an identity of their
/// own. Not nobody/nogroup (65534), which other host software runs as (NFS squashing, daemons
/// dropping privileges), and every such process could read the store, signal the resolvers
/// and plant links in their log directories. 65530 lies in 65520–65533, which systemd's
/// "Users, Groups, UIDs and GIDs" leaves unused (below it, 61184–65519, are its dynamic
/// service users) and Debian policy reserves (65000–65533: no package allocates it).
pub const DEFAULT_RESOLVER_USER: ResolverUser = ResolverUser {
    uid: 65530,
    gid: 65530,
};

/// The resolvers' identity of versions before 65530:65530 (nobody/nogroup): a state directory
/// such a version made keeps its group (see `store::resolver_group`).
pub const EARLIER_RESOLVER_USER: ResolverUser = ResolverUser {
    uid: 65534,
    gid: 65534,
};

/// The uid and gid a resolver runs as once its sockets exist. The state directory is
/// readable by the gid (and writable by no one but root); each resolver writes only its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverUser {
    pub uid: u32,
    pub gid: u32,
}

impl ResolverUser {
    /// Parses `UID:GID` (numbers, neither 0).
    pub fn parse(s: &str) -> Result<ResolverUser, ConfError> {
        let bad = || {
            ConfError::InvalidConfig(format!(
                "resolverUser {s:?} must be UID:GID, two numbers other than 0 (e.g. 65534:65534)"
            ))
        };
        let (u, g) = s.split_once(':').ok_or_else(bad)?;
        let (uid, gid): (u32, u32) = (u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?);
        if uid == 0 || gid == 0 {
            return Err(bad());
        }
        Ok(ResolverUser { uid, gid })
    }

    /// What the resolver accepts from the plugin: [`ResolverUser::parse`], or `0:0` inside a
    /// user namespace, where [`default_resolver_user`] names the namespace's root (the
    /// unprivileged user on the host); never root on a host.
    pub fn parse_from_plugin(s: &str) -> Result<ResolverUser, ConfError> {
        let namespace_root = ResolverUser { uid: 0, gid: 0 };
        if s == "0:0" && default_resolver_user() == namespace_root {
            return Ok(namespace_root);
        }
        ResolverUser::parse(s)
    }
}

impl std::fmt::Display for ResolverUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_data_dir_is_the_users_runtime_dir_when_unprivileged() {
        let xdg = || Some(std::ffi::OsString::from("/run/user/1000"));
        let host = "         0          0 4294967295\n";
        let rootless = "         0       1000          1\n         1     100000      65536\n";
        let user = PathBuf::from("/run/user/1000/embedns");
        assert_eq!(
            default_data_dir_for(true, host, xdg()),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(default_data_dir_for(true, rootless, xdg()), user);
        assert_eq!(default_data_dir_for(false, host, xdg()), user);
        // Without a usable XDG_RUNTIME_DIR: the default, which ADD then reports if unwritable.
        assert_eq!(
            default_data_dir_for(true, rootless, None),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(
            default_data_dir_for(false, host, Some("relative".into())),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        // The resolvers: nobody on a host, the namespace's root (the user) when rootless.
        assert_eq!(default_resolver_user_for(host), DEFAULT_RESOLVER_USER);
        assert_eq!(
            default_resolver_user_for(rootless),
            ResolverUser { uid: 0, gid: 0 }
        );
    }
}
