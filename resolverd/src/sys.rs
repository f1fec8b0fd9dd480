//! The few system calls the resolver makes on itself: entering the container's netns and
//! bringing `lo` up there (cnitool and a bare bridge chain leave it down, R24).

use std::fs::File;
use std::os::fd::AsFd;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};

/// Moves the calling thread (the main thread, before the runtime starts) into `path`.
pub fn enter_netns(path: &str) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening netns {path}"))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {path}"))
}

/// Sets IFF_UP on `lo` in the current netns if it is down.
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
