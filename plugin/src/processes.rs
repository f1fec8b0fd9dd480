//! The host's processes as `/proc` shows them, to find what a killed plugin left running (a
//! resolver it started, an `iptables-restore` it forked), and to wait for one to exit.

use std::os::fd::{FromRawFd, OwnedFd};

/// Every process now: its pid and its command line (a process that exits while it is read
/// is skipped).
pub fn all() -> impl Iterator<Item = (i32, Vec<Vec<u8>>)> {
    pids().filter_map(|pid| Some((pid, cmdline(pid)?)))
}

/// Every pid in /proc now.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// Process `pid`'s command line, its arguments split at their NULs; `None` if it is gone.
pub fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
    Some(bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect())
}

/// A pidfd pinning process `pid`, `None` if it is gone.
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: raw is a fresh fd we own.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sends `sig` to the process a pidfd pins (never to a process that took over its pid).
pub fn signal(pidfd: &OwnedFd, sig: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal on a pidfd we own, without siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}
