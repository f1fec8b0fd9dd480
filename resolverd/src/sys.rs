//! The system call the resolver makes on itself: entering the container's netns (its
//! listening sockets come from the plugin, already bound there).

use std::fs::File;
use std::os::fd::AsFd;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};

/// Moves the calling thread (the main thread, before the runtime starts) into `path`.
pub fn enter_netns(path: &str) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening netns {path}"))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {path}"))
}

/// The kernel's `cap_user_header_t`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// The kernel's `cap_user_data_t` (two of them for 64 capabilities).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Least privilege for the calling thread, once its sockets and control
/// socket exist: no capability in any set (bounding and ambient included, so no exec can
/// regain one), and no_new_privs. The resolver still runs as uid 0, which owns the 0700 store
/// it reads; it needs no capability for that. Capabilities are per thread: every thread that
/// exists calls this for itself, threads created later inherit the empty sets.
pub fn drop_privileges() -> anyhow::Result<()> {
    // SAFETY: prctl and capset with valid arguments; failures are checked where they matter.
    unsafe {
        for cap in 0..64 {
            // EINVAL past the kernel's last capability; that is the end of the list.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
            {
                break;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error()).context("capset");
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error()).context("PR_SET_NO_NEW_PRIVS");
        }
    }
    Ok(())
}
