//! The resolver process of a sandbox: starting it detached, telling it to reload, and stopping
//! exactly our process.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use embedns_conf::commands::ResolverCommand;
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::control::{Ack, Request};
use embedns_conf::protocol::ready::Ready;
use embedns_conf::sandbox::ResolverInfo;
use embedns_conf::user::ResolverUser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::de::DeserializeOwned;

use crate::child::{self, read_line_until, ReadyPipe, Spawned};
use crate::error::{PluginError, RESOLVER_FAILED};
use crate::processes;

/// How long a resolver may take to bind and report its ports.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it may take to exit on SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// The resolver's (and its supervisor's) `oom_score_adj`: below every container process's
/// (kubelet gives a Guaranteed pod's -997, podman and Docker 0), so within its cgroup and on
/// the host the OOM killer takes those first; the node's own daemons (kubelet, containerd:
/// -999) still rank below it.
pub const OOM_SCORE_ADJ: i32 = -998;

/// `embedns-resolverd`: the conf's `resolverPath`, else next to this executable.
pub fn binary(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the embedns executable")?;
    Ok(exe.with_file_name("embedns-resolverd"))
}

/// A resolver forked and exec'd but not yet known to serve: its identity is known at once, so
/// the caller records it before waiting (a plugin killed while it waits leaves a resolver
/// that the sandbox names, which DEL then stops).
pub struct StartingResolver {
    pub info: ResolverInfo,
    ready: ReadyPipe,
    log: PathBuf,
}

/// Starts the resolver of a sandbox whose `sandbox.json` is written, handing it its two
/// listening sockets (UDP and TCP, bound on 127.0.0.11 in the container's netns) as fds 4 and
/// 5, and those on `[::1]` for the IPv6 nameservers caught (R26), if any, as 6 and 7. It runs
/// in its own session with stdio on /dev/null, so it outlives the runtime process that called
/// the plugin (R25). [`StartingResolver::ready`] waits until it serves.
pub fn start(
    binary: &Path,
    user: ResolverUser,
    paths: &StatePaths,
    container_id: &str,
    [udp, tcp]: [OwnedFd; 2],
    v6: Option<[OwnedFd; 2]>,
    cgroup_procs: &[File],
) -> anyhow::Result<StartingResolver> {
    let udp_port = local_port(&udp)?;
    let tcp_port = local_port(&tcp)?;
    let ports6 = match &v6 {
        Some([u, t]) => Some((local_port(u)?, local_port(t)?)),
        None => None,
    };
    let args = ResolverCommand {
        data_dir: paths.root(),
        container_id,
        user,
        v6: v6.is_some(),
    };
    let mut cmd = Command::new(binary);
    cmd.args(args.args())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for var in [
        "EMBEDNS_RESOLVER_LOG",
        "EMBEDNS_RESOLVER_CHECK_SECS",
        embedns_conf::crash::CRASH_ENV,
    ] {
        if let Ok(value) = std::env::var(var) {
            cmd.env(var, value);
        }
    }
    let mut fds = vec![udp.as_raw_fd(), tcp.as_raw_fd()];
    fds.extend(v6.iter().flatten().map(AsRawFd::as_raw_fd));
    let Spawned { child, ready } = child::detached(
        &mut cmd,
        &fds,
        &child::Placement {
            cgroup_procs,
            oom_score_adj: Some(OOM_SCORE_ADJ),
        },
    )
    .map_err(|e| {
        PluginError::new(
            RESOLVER_FAILED,
            format!("cannot start the resolver {}: {e:#}", binary.display()),
        )
    })?;
    drop((udp, tcp, v6));
    let pid = child.id() as i32;
    // The start time is set by fork and kept by exec: readable at once, until it is reaped.
    let Some(start_time) = start_time(pid) else {
        kill_pid(pid);
        let why = "the resolver exited at once".to_string();
        return Err(PluginError::new(RESOLVER_FAILED, why).into());
    };
    Ok(StartingResolver {
        info: ResolverInfo {
            pid,
            start_time,
            udp_port,
            tcp_port,
            udp6_port: ports6.map(|p| p.0),
            tcp6_port: ports6.map(|p| p.1),
        },
        ready,
        log: paths.resolver_log(container_id),
    })
}

impl StartingResolver {
    /// Waits for the resolver's `READY` line; on failure it is killed and its log's last
    /// lines explain why.
    pub fn ready(self) -> anyhow::Result<ResolverInfo> {
        let StartingResolver { info, ready, log } = self;
        let fail = |why: String| -> anyhow::Error {
            kill_pid(info.pid);
            PluginError::new(
                RESOLVER_FAILED,
                format!("the resolver did not start: {why}{}", tail(&log)),
            )
            .into()
        };
        let said = ready
            .read(Instant::now() + READY_TIMEOUT)
            .map_err(|e| fail(format!("{e:#}")))?;
        let want = Ready::Serving {
            udp: info.udp_port,
            tcp: info.tcp_port,
        };
        if said != want {
            return Err(fail(said.to_string()));
        }
        Ok(info)
    }
}

fn local_port(fd: &OwnedFd) -> anyhow::Result<u16> {
    let addr: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getsockname(fd.as_raw_fd()).context("getsockname")?;
    addr.as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| addr.as_sockaddr_in6().map(|a| a.port()))
        .context("the resolver's socket is not an IP socket")
}

/// The last lines of the resolver's log, to explain a failure.
fn tail(log: &Path) -> String {
    // The log directory is the resolvers' user's: a link, a FIFO or a huge file there is
    // theirs to plant. Only a regular file is read, without following a link or blocking,
    // and only its last KiB.
    const TAIL_BYTES: u64 = 1024;
    let read = || -> std::io::Result<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = embedns_conf::fsutil::open_nofollow(log, false)?;
        let len = file.metadata()?.len();
        if !file.metadata()?.is_file() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let Ok(text) = read() else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut out = format!(" (log {}: ", log.display());
    out.push_str(&lines.into_iter().rev().collect::<Vec<_>>().join(" | "));
    out.push(')');
    out
}

/// What `/proc/<pid>/stat` says of a process that embedns acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    pub zombie: bool,
    /// Start time in clock ticks since boot (field 22).
    pub start_time: u64,
}

/// `/proc/<pid>/stat`, `None` if the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')' : parse after the last ')'.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(Stat {
        zombie: *rest.first()? == "Z",
        ppid: rest.get(1)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Start time of a process (/proc/PID/stat field 22), `None` if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// The children of process `pid` (a supervisor's resolver), each pinned by a pidfd.
fn children(pid: i32) -> Vec<(i32, OwnedFd)> {
    let list =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter_map(|c| Some((c, processes::pidfd(c)?)))
        // Still a child of `pid` once pinned: not a pid reused meanwhile.
        .filter(|(c, _)| stat(*c).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// The file-system `(uid, gid)` a resolver runs as (/proc/PID/status), which its sockets carry:
/// what R26's catch must exempt. A resolver of an earlier release runs as its identity, not
/// necessarily the one a new resolver would take.
pub fn user_of(info: &ResolverInfo) -> Option<(u32, u32)> {
    // A supervisor (root) serves through its child: the child's identity is the resolver's.
    let serving = children(info.pid)
        .first()
        .map(|(c, _)| *c)
        .unwrap_or(info.pid);
    let status = std::fs::read_to_string(format!("/proc/{serving}/status")).ok()?;
    let fs_id = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(4)?.parse().ok()
    };
    let id = (fs_id("Uid:")?, fs_id("Gid:")?);
    // Still that process once its status was read.
    alive(info).then_some(id)
}

/// Whether the recorded resolver is still that process and not a zombie.
pub fn alive(info: &ResolverInfo) -> bool {
    stat(info.pid).is_some_and(|s| s.start_time == info.start_time && !s.zombie)
}

/// Whether the recorded resolver is alive and inside the namespace that `netns_path` names
/// now (a container re-added under the same ID in a new netns has a resolver serving the
/// old one).
pub fn serves(info: &ResolverInfo, netns_path: &str) -> bool {
    let inode = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let Some(target) = inode(netns_path) else {
        return false;
    };
    alive(info)
        && inode(&format!("/proc/{}/ns/net", info.pid)) == Some(target)
        // Still that process once its netns was read: the pid was not recycled meanwhile.
        && start_time(info.pid) == Some(info.start_time)
}

/// A resolver process of a state directory, found by its command line.
#[derive(Debug, Clone)]
pub struct Running {
    pub container_id: String,
    pub info: ResolverInfo,
}

/// Every running resolver started for the state directory `paths` (GC, and DEL when the
/// sandbox does not name one): the processes whose command line is
/// `embedns-resolverd --data-dir <root> --container-id <id> ...`, but the serving children of
/// a supervisor that is itself listed (they share its command line; stopping it stops them).
pub fn running(paths: &StatePaths) -> Vec<Running> {
    let mut found: Vec<(Running, i32)> = Vec::new();
    for pid in processes::pids() {
        // Pinned first: its command line and start time are then of one process, never of
        // one that took over the pid between the two reads.
        let Some(pinned) = processes::pidfd(pid) else {
            continue;
        };
        let Some(args) = processes::cmdline(pid) else {
            continue;
        };
        let Some(container_id) = ResolverCommand::container_of(&args, paths.root()) else {
            continue;
        };
        let Some(st) = stat(pid).filter(|s| !s.zombie) else {
            continue;
        };
        if exited(&pinned) {
            continue; // it exited while it was read
        }
        let running = Running {
            container_id: container_id.to_string(),
            info: ResolverInfo {
                pid,
                start_time: st.start_time,
                udp_port: 0,
                tcp_port: 0,
                udp6_port: None,
                tcp6_port: None,
            },
        };
        found.push((running, st.ppid));
    }
    let supervised = |r: &Running, ppid: i32| {
        found
            .iter()
            .any(|(p, _)| p.info.pid == ppid && p.container_id == r.container_id)
    };
    found
        .iter()
        .filter(|(r, ppid)| !supervised(r, *ppid))
        .map(|(r, _)| r.clone())
        .collect()
}

/// Stops the recorded resolver if it is still ours: a pidfd pins the process, its start time
/// proves it is the one we started, then SIGTERM, and SIGKILL if it lingers.
pub fn stop(info: &ResolverInfo) {
    let Some(pidfd) = processes::pidfd(info.pid) else {
        return; // gone already
    };
    if start_time(info.pid) != Some(info.start_time) {
        tracing::warn!(
            pid = info.pid,
            "pid now belongs to another process; not signalling"
        );
        return;
    }
    // A supervisor stops its resolver itself; pinned now, they are killed if it could not.
    let children = children(info.pid);
    let signal = |sig: i32| processes::signal(&pidfd, sig);
    if !signal(libc::SIGTERM) {
        return;
    }
    if !wait_exit(&pidfd, STOP_TIMEOUT) {
        tracing::warn!(pid = info.pid, "resolver ignored SIGTERM; sending SIGKILL");
        signal(libc::SIGKILL);
        wait_exit(&pidfd, STOP_TIMEOUT);
    }
    kill_left(children);
}

/// SIGKILL to each pinned process still alive, and a short wait for it.
fn kill_left(pinned: Vec<(i32, OwnedFd)>) {
    for (pid, fd) in pinned {
        if processes::signal(&fd, libc::SIGKILL) {
            tracing::warn!(pid, "a resolver outlived its supervisor: killed");
            wait_exit(&fd, STOP_TIMEOUT);
        }
    }
}

/// Waits until process `pid` exits or `deadline` passes.
pub fn wait_pid(pid: i32, deadline: Instant) {
    if let Some(pidfd) = processes::pidfd(pid) {
        wait_exit(&pidfd, deadline.saturating_duration_since(Instant::now()));
    }
}

/// Whether the process a pidfd pins has exited (its pidfd is readable), now.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(pidfd),
        PollFlags::POLLIN,
    )];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// A pidfd becomes readable when its process exits.
pub fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = PollTimeout::try_from(left.as_millis() as i32 + 1).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(pidfd),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn kill_pid(pid: i32) {
    let children = children(pid);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    kill_left(children);
}

/// How long a control exchange may take in all.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request on the resolver's control socket and returns its reply, typed as `R`
/// (the types of `embedns_conf::protocol::control`); a refusal is an error saying why.
pub fn control<R: DeserializeOwned>(
    paths: &StatePaths,
    container_id: &str,
    request: Request,
) -> anyhow::Result<R> {
    let path = paths.control_socket(container_id);
    let dir = File::open(paths.sandbox(container_id))
        .with_context(|| format!("opening {}", paths.sandbox(container_id).display()))?;
    let mut stream = UnixStream::connect(StatePaths::control_socket_via(&dir))
        .with_context(|| format!("connecting to the resolver at {}", path.display()))?;
    stream.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    writeln!(stream, "{}", serde_json::to_string(&request)?)?;
    stream.set_nonblocking(true)?;
    let line = read_line_until(&stream, deadline)
        .with_context(|| format!("reading the resolver's reply to {request:?}"))?;
    let ack: Ack = serde_json::from_str(&line).with_context(|| format!("bad reply {line:?}"))?;
    if !ack.ok {
        anyhow::bail!(
            "resolver refused {request:?}: {}",
            ack.error.unwrap_or_default()
        );
    }
    serde_json::from_str(&line).with_context(|| format!("bad reply to {request:?}: {line:?}"))
}
