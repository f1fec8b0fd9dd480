//! The plugin's children, the resolver and a shared network's sync process: each started
//! detached (its own session, stdio on /dev/null, no fd of the runtime's), so it outlives the
//! runtime process that called the plugin (R25), with a ready pipe as fd 3 on which it says
//! how its start went (`embedns_conf::protocol::ready`). Also the one reader of a line from a
//! less-privileged party (the ready pipe, a resolver's control socket): bounded in time and
//! size.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use embedns_conf::protocol::ready::Ready;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The longest line taken from a child (its ready signal, a control reply): what a resolver
/// says is data to root, and one taken over must not exhaust the plugin's memory.
const MAX_LINE: usize = 64 * 1024;

/// Fds a child is given besides its ready pipe.
const MAX_FDS: usize = 7;

/// A child just started, and the read end of its ready pipe.
pub struct Spawned {
    pub child: Child,
    pub ready: ReadyPipe,
}

/// The read end of a child's ready pipe.
pub struct ReadyPipe(OwnedFd);

/// Where a child is charged and how the OOM killer ranks it, set between its fork and its
/// exec, so it runs not one instruction of its own elsewhere.
#[derive(Default)]
pub struct Placement<'a> {
    /// `cgroup.procs` files, open for writing: the child writes "0" (itself) into each.
    pub cgroup_procs: &'a [File],
    /// Its `oom_score_adj` (lowering it takes CAP_SYS_RESOURCE: without, it keeps the caller's).
    pub oom_score_adj: Option<i32>,
}

/// Starts `cmd` detached, with the write end of a new ready pipe as its fd 3 and `fds` as
/// its fds 4, 5, …; every other fd is closed in it. `placement` moves it first.
pub fn detached(
    cmd: &mut Command,
    fds: &[RawFd],
    placement: &Placement,
) -> anyhow::Result<Spawned> {
    if fds.len() > MAX_FDS {
        anyhow::bail!("a child is given at most {MAX_FDS} fds besides its ready pipe");
    }
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a ready pipe")?;
    let mut given = vec![ready_w.as_raw_fd()];
    given.extend_from_slice(fds);
    let first_closed = 3 + given.len() as u32;
    let procs: Vec<RawFd> = placement
        .cgroup_procs
        .iter()
        .map(AsRawFd::as_raw_fd)
        .collect();
    let adj = placement.oom_score_adj.map(|a| a.to_string().into_bytes());
    // The runtime reads our stdout until EOF: a child must hold none of it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, write, open, fcntl,
    // dup2, close_range), on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            // Best effort: a hierarchy that refuses leaves it where it was (the caller checks).
            for fd in &procs {
                libc::write(*fd, b"0".as_ptr().cast(), 1);
            }
            if let Some(adj) = &adj {
                let f = libc::open(
                    c"/proc/self/oom_score_adj".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if f >= 0 {
                    libc::write(f, adj.as_ptr().cast(), adj.len());
                    libc::close(f);
                }
            }
            // Every fd moved above the targets first, so no dup2 overwrites a later source.
            let mut high = [0; MAX_FDS + 1];
            for (i, fd) in given.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high[..given.len()].iter().enumerate() {
                // dup2 clears FD_CLOEXEC on the new fd: these survive exec.
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Nothing else the runtime left open reaches the child.
            libc::syscall(libc::SYS_close_range, first_closed, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(ready_w);
    Ok(Spawned {
        child,
        ready: ReadyPipe(ready_r),
    })
}

/// Starts `cmd` detached as [`detached`] does (its own session, no stdio, nothing the
/// runtime left open), for a child no one waits for: no ready pipe, no fds given.
pub fn detached_alone(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    // The runtime reads our stdout until EOF: a child must hold none of it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, close_range).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd.spawn()
}

impl ReadyPipe {
    /// The child's ready line, by `deadline`.
    pub fn read(self, deadline: Instant) -> anyhow::Result<Ready> {
        let line = read_line_until(File::from(self.0), deadline)?;
        Ok(line.parse()?)
    }
}

/// Reads one line from a less-privileged party (a ready pipe, a control socket), or fails at
/// the deadline (for the whole exchange, however slowly bytes trickle in), past [`MAX_LINE`]
/// bytes, or on EOF.
pub fn read_line_until(mut file: impl Read + AsFd, deadline: Instant) -> anyhow::Result<String> {
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("no whole line in time");
        }
        if got.len() > MAX_LINE {
            anyhow::bail!("over {MAX_LINE} bytes without a line end");
        }
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, ms).context("waiting for a line")?;
        let mut chunk = [0u8; 256];
        let n = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            anyhow::bail!("it closed its end before a whole line (exited?)");
        }
        got.extend_from_slice(&chunk[..n]);
        if got.contains(&b'\n') {
            return Ok(String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_string());
        }
    }
}
