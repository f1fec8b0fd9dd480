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
use embedns_conf::control::{Ack, Request};
use embedns_conf::paths::StatePaths;
use embedns_conf::ready::Ready;
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
/// listening sockets (bound on 127.0.0.11 in the container's netns) as fds 4 and 5. It runs in
/// its own session with stdio on /dev/null, so it outlives the runtime process that called the
/// plugin (R25). [`StartingResolver::ready`] waits until it serves.
pub fn start(
    binary: &Path,
    user: ResolverUser,
    paths: &StatePaths,
    container_id: &str,
    udp: OwnedFd,
    tcp: OwnedFd,
) -> anyhow::Result<StartingResolver> {
    let udp_port = local_port(&udp)?;
    let tcp_port = local_port(&tcp)?;
    let mut cmd = Command::new(binary);
    cmd.arg("--data-dir")
        .arg(paths.root())
        .args(["--container-id", container_id])
        .args(["--ready-fd", "3", "--udp-fd", "4", "--tcp-fd", "5"])
        .args(["--user", &user.to_string()])
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
    let Spawned { child, ready } = child::detached(&mut cmd, &[udp.as_raw_fd(), tcp.as_raw_fd()])
        .map_err(|e| {
        PluginError::new(
            RESOLVER_FAILED,
            format!("cannot start the resolver {}: {e:#}", binary.display()),
        )
    })?;
    drop((udp, tcp));
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
        .context("the resolver's socket is not IPv4")
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

/// Start time of a process (/proc/PID/stat field 22), `None` if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')' : parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The file-system `(uid, gid)` a resolver runs as (/proc/PID/status), which its sockets carry:
/// what R26's catch must exempt. A resolver of an earlier release runs as its identity, not
/// necessarily the one a new resolver would take.
pub fn user_of(info: &ResolverInfo) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).ok()?;
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
    start_time(info.pid) == Some(info.start_time) && !is_zombie(info.pid)
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
/// `embedns-resolverd --data-dir <root> --container-id <id> ...`.
pub fn running(paths: &StatePaths) -> Vec<Running> {
    let root = paths.root().as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for (pid, args) in processes::all() {
        let arg = |i: usize| args.get(i).map(Vec::as_slice);
        let ours = arg(0).is_some_and(|a| a.ends_with(b"embedns-resolverd"))
            && arg(1) == Some(b"--data-dir")
            && arg(2) == Some(root)
            && arg(3) == Some(b"--container-id");
        let Some(container_id) = arg(4)
            .filter(|_| ours)
            .and_then(|a| std::str::from_utf8(a).ok())
        else {
            continue;
        };
        let Some(start_time) = start_time(pid).filter(|_| !is_zombie(pid)) else {
            continue;
        };
        found.push(Running {
            container_id: container_id.to_string(),
            info: ResolverInfo {
                pid,
                start_time,
                udp_port: 0,
                tcp_port: 0,
            },
        });
    }
    found
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
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
    let signal = |sig: i32| processes::signal(&pidfd, sig);
    if !signal(libc::SIGTERM) {
        return;
    }
    if !wait_exit(&pidfd, STOP_TIMEOUT) {
        tracing::warn!(pid = info.pid, "resolver ignored SIGTERM; sending SIGKILL");
        signal(libc::SIGKILL);
        wait_exit(&pidfd, STOP_TIMEOUT);
    }
}

/// Waits until process `pid` exits or `deadline` passes.
pub fn wait_pid(pid: i32, deadline: Instant) {
    if let Some(pidfd) = processes::pidfd(pid) {
        wait_exit(&pidfd, deadline.saturating_duration_since(Instant::now()));
    }
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
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

/// How long a control exchange may take in all.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request on the resolver's control socket and returns its reply, typed as `R`
/// (the types of `embedns_conf::control`); a refusal is an error saying why.
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
