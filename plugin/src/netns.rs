//! Entering a network namespace and coming back, for the current thread.

use std::fs::File;
use std::os::fd::AsFd;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};

use crate::error::{PluginError, NETNS_FAILED};

/// While alive, the thread is in another netns; dropped, it is back where it was.
pub struct InNetns {
    original: File,
}

/// Moves the current thread into the netns at `path`.
pub fn enter(path: &str) -> anyhow::Result<InNetns> {
    let original = File::open("/proc/thread-self/ns/net").context("opening the current netns")?;
    let target = File::open(path)
        .map_err(|e| PluginError::new(NETNS_FAILED, format!("cannot open netns {path}: {e}")))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| PluginError::new(NETNS_FAILED, format!("cannot enter netns {path}: {e}")))?;
    Ok(InNetns { original })
}

impl Drop for InNetns {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Staying in the container's netns would make every later step wrong.
            tracing::error!("cannot return to the original netns: {e}");
            std::process::abort();
        }
    }
}

/// Whether a netns path still names a namespace (DEL may come after it was deleted).
pub fn exists(path: &str) -> bool {
    !path.is_empty() && std::path::Path::new(path).exists()
}

/// The inode of the namespace a path names now (`None` if it names none).
pub fn inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Sets IFF_UP on `lo` in the current netns if it is down (cnitool and a bare bridge chain
/// leave it down; 127.0.0.11 is only local once it is up, R24).
pub fn loopback_up() -> anyhow::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo"; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFFLAGS");
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            result = Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        } else if req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) < 0 {
                result = Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo up");
            }
        }
        libc::close(fd);
        result
    }
}
