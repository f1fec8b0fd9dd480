//! The resolver's supervisor: the process the plugin starts and the sandbox records. It holds
//! what must outlive a resolver (the two sockets bound on 127.0.0.11, so the redirect's ports
//! never change and queries sent meanwhile wait in their queues) and forks each resolver, the
//! first one and every one after a resolver that ended for any reason but its stop: a crash,
//! the OOM killer, an operator's `kill`.
//!
//! Why a fork and no exec: the child is the binary already in memory (an upgrade, a deleted
//! or broken binary on disk cannot stop a restart), it is running within a millisecond, and
//! the two processes share every page neither writes, so the supervisor's own private memory
//! is a few pages (`make bench`'s memory row).
//!
//! The supervisor is single-threaded and waits in one `poll` on a signalfd (SIGTERM/SIGINT:
//! stop the child and exit; SIGCHLD: a child ended), the child's ready pipe and a timer. It
//! lives in the container's netns (so the plugin's checks of "is it serving this netns" hold
//! of it) and keeps a handle on the netns it started in, which each child re-enters to make
//! its host-netns sockets (R18). It stays root: it only forks, waits, signals its own
//! children, writes `supervisor.json` and runs `iptables-restore` in the container's netns.
//!
//! Restarts back off (`restart_delay`). While no resolver has answered for
//! [`CLEAR_CATCH_AFTER`], R26's catch is taken away, so the container reaches the runtime's
//! nameservers directly (fail open); a resolver that answers again puts it back.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use embedns_conf::catch::{self, Catch};
use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::ready::Ready;
use embedns_conf::sandbox;
use embedns_conf::supervision::Supervision;

use crate::gone;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// A resolver that served this long ended "healthy": the next one starts at once and the
/// back-off starts over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(2);
/// How long the container may go without an answering resolver before R26's catch is taken
/// away.
pub const CLEAR_CATCH_AFTER: Duration = Duration::from_secs(1);
/// The longest pause between two starts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// How long a stopping child has before SIGKILL (the plugin's own stop waits 2 s).
const CHILD_STOP: Duration = Duration::from_millis(1500);
/// The supervisor's `argv[0]` once it runs: `ps` and `pgrep -f "embedns-resolverd --data-dir
/// …"` show one resolver per container (the serving child, which keeps the command line the
/// plugin gave), and the plugin's process scan tells the two apart.
pub use embedns_conf::commands::SUPERVISOR_ARGV0;
/// The longest ready line taken from a child.
const MAX_READY_LINE: usize = 4096;

/// The pause before the next start, after `failures` resolvers in a row ended before serving
/// [`HEALTHY_AFTER`]: the first two restarts at once (a single crash costs no more than the
/// fork), then 250 ms doubling up to [`MAX_DELAY`].
pub fn restart_delay(failures: u32) -> Duration {
    match failures {
        0..=2 => Duration::ZERO,
        n => Duration::from_millis(250)
            .saturating_mul(1 << (n - 3).min(16))
            .min(MAX_DELAY),
    }
}

/// How a child ended, as the log and `embedns status` say it.
pub fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {}", sig.as_str()),
        other => format!("{other:?}"),
    }
}

/// What a newly forked resolver is told of the ones before it.
pub struct Previous {
    pub restarts: u64,
    pub last_exit: String,
}

/// Who the supervisor serves: the sandbox, and where the plugin waits for the first ready line.
pub struct Setup {
    pub paths: StatePaths,
    pub container_id: String,
    /// The plugin's ready pipe: the first resolver's ready line is passed on to it.
    pub plugin_ready: Option<File>,
    /// The sockets bound on 127.0.0.11, which every resolver serves: their ports are R26's.
    pub udp_fd: i32,
    pub tcp_fd: i32,
}

/// Runs the supervisor until it is stopped, its container is gone, or the first resolver fails
/// to start; `serve` is what each forked child runs (given its ready pipe and, from the second
/// on, what ended the one before) and its exit code is the child's.
pub fn run(mut setup: Setup, serve: impl Fn(File, Option<Previous>) -> ExitCode) -> ExitCode {
    let mut sup = match Supervisor::new(&setup) {
        Ok(s) => s,
        Err(e) => {
            if let Some(mut r) = setup.plugin_ready.take() {
                let _ = Ready::Failed(format!("{e:#}")).write_to(&mut r);
            }
            return ExitCode::FAILURE;
        }
    };
    sup.supervise(setup, serve)
}

struct Child {
    pid: Pid,
    /// Its ready pipe, until it said its line or closed it.
    ready: Option<File>,
    line: Vec<u8>,
    serving_since: Option<Instant>,
}

/// The loop's own state: the child, whether it is the first, the plugin's pipe until the
/// first one's line went there.
struct Run {
    child: Option<Child>,
    first: bool,
    plugin_ready: Option<File>,
}

impl Run {
    /// Passes the first resolver's ready line (or why it failed) on to the plugin, once.
    fn tell_plugin(&mut self, line: Ready) {
        if let Some(mut r) = self.plugin_ready.take() {
            let _ = line.write_to(&mut r);
        }
    }
}

struct Supervisor {
    paths: StatePaths,
    container_id: String,
    signals: SignalFd,
    old_mask: SigSet,
    host_netns: OwnedFd,
    netns_inode: u64,
    /// The netns path the sandbox recorded at the start, and when it is next looked at.
    netns_path: String,
    next_gone_check: Instant,
    /// The command line the plugin gave, which each child shows again.
    title: Vec<u8>,
    ports: (u16, u16),
    state: Supervision,
    /// Since when no resolver has answered (none yet counts from the start).
    down_since: Option<Instant>,
    next_start: Option<Instant>,
}

impl Supervisor {
    fn new(setup: &Setup) -> anyhow::Result<Supervisor> {
        let sb = sandbox::load(&setup.paths, &setup.container_id)?
            .with_context(|| format!("no sandbox for {}", setup.container_id))?;
        let host_netns: OwnedFd = File::open("/proc/self/ns/net")
            .context("opening our netns")?
            .into();
        crate::confine::enter_netns(&sb.netns)?;
        let netns_inode = crate::liveness::Served::current_netns_inode()?;
        let title = crate::title::area().map(|(start, end)| {
            // SAFETY: this process's own argument area, readable.
            unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec()
        });
        crate::title::set(&[
            SUPERVISOR_ARGV0,
            "--data-dir",
            &setup.paths.root().to_string_lossy(),
            "--container-id",
            &setup.container_id,
        ]);
        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
            mask.add(s);
        }
        let mut old_mask = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        let port = |fd: i32| -> u16 {
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
                .ok()
                .and_then(|a| a.as_sockaddr_in().map(|a| a.port()))
                .unwrap_or(0)
        };
        Ok(Supervisor {
            paths: setup.paths.clone(),
            container_id: setup.container_id.clone(),
            signals,
            old_mask,
            host_netns,
            netns_inode,
            netns_path: sb.netns.clone(),
            next_gone_check: Instant::now() + gone::CHECK_EVERY,
            title: title.unwrap_or_default(),
            ports: (port(setup.udp_fd), port(setup.tcp_fd)),
            state: Supervision {
                pid: std::process::id(),
                ..Supervision::default()
            },
            down_since: Some(Instant::now()),
            next_start: Some(Instant::now()),
        })
    }

    fn supervise(
        &mut self,
        setup: Setup,
        serve: impl Fn(File, Option<Previous>) -> ExitCode,
    ) -> ExitCode {
        let mut run = Run {
            child: None,
            first: true,
            plugin_ready: setup.plugin_ready,
        };
        loop {
            if let Err(code) = self.start_if_due(&mut run, &serve) {
                return code;
            }
            let now = Instant::now();
            if !run.first
                && !self.state.catch_cleared
                && self
                    .down_since
                    .is_some_and(|t| now >= t + CLEAR_CATCH_AFTER)
            {
                self.set_catch(false);
            }
            let ready_event = match self.wait(&run, now) {
                Ok(readable) => readable,
                Err(()) => return ExitCode::FAILURE,
            };
            if ready_event {
                self.take_ready_line(&mut run);
            }
            let gone = self.container_gone(&run);
            if gone || self.stop_asked() {
                if let Some(c) = run.child.take() {
                    stop_child(c.pid);
                }
                let _ = std::fs::remove_file(self.paths.supervision(&self.container_id));
                if gone {
                    gone::release(&self.paths, &self.container_id, self.old_mask);
                }
                return ExitCode::SUCCESS;
            }
            if let Err(code) = self.reap(&mut run) {
                return code;
            }
        }
    }

    /// Forks a resolver if none runs and its time has come. `Err`: the first could not be
    /// forked, the supervisor exits with this code.
    fn start_if_due(
        &mut self,
        run: &mut Run,
        serve: &impl Fn(File, Option<Previous>) -> ExitCode,
    ) -> Result<(), ExitCode> {
        let now = Instant::now();
        if run.child.is_some() || self.next_start.is_none_or(|t| t > now) {
            return Ok(());
        }
        self.next_start = None;
        let plugin_fd = run.plugin_ready.as_ref().map(AsRawFd::as_raw_fd);
        match self.fork(serve, plugin_fd) {
            Ok(c) => {
                self.state.resolver_pid = c.pid.as_raw() as u32;
                self.state.next_start_in_ms = None;
                run.child = Some(c);
            }
            Err(e) if run.first => {
                run.tell_plugin(Ready::Failed(format!("{e:#}")));
                return Err(ExitCode::FAILURE);
            }
            Err(e) => {
                self.state.last_exit = Some(format!("could not fork: {e:#}"));
                self.schedule(now);
            }
        }
        self.save();
        Ok(())
    }

    /// Waits in `poll` for a signal, the child's ready pipe or the next deadline (a start,
    /// the catch's removal); returns whether the ready pipe is readable.
    fn wait(&self, run: &Run, now: Instant) -> Result<bool, ()> {
        let clear_at = self
            .down_since
            .filter(|_| !self.state.catch_cleared && !run.first)
            .map(|t| t + CLEAR_CATCH_AFTER);
        let deadline = [self.next_start, clear_at, Some(self.next_gone_check)]
            .into_iter()
            .flatten()
            .min();
        let timeout = match deadline {
            Some(t) => PollTimeout::try_from(
                t.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1,
            )
            .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(r) = run.child.as_ref().and_then(|c| c.ready.as_ref()) {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Err(()),
        }
        Ok(fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty()))
    }

    /// The child's ready line: a serving resolver puts R26's catch back if it was taken
    /// away; the first one's line goes on to the plugin.
    fn take_ready_line(&mut self, run: &mut Run) {
        let Some(said) = run.child.as_mut().and_then(read_ready) else {
            return;
        };
        if let (Ok(Ready::Serving { .. }), Some(c)) = (&said, run.child.as_mut()) {
            c.serving_since = Some(Instant::now());
            self.down_since = None;
            if self.state.catch_cleared {
                self.set_catch(true);
            }
            self.save();
        }
        if run.first {
            run.tell_plugin(said.unwrap_or_else(Ready::Failed));
        }
    }

    /// Whether SIGTERM or SIGINT came (SIGCHLD only wakes the loop).
    fn stop_asked(&self) -> bool {
        let mut stop = false;
        while let Ok(Some(sig)) = self.signals.read_signal() {
            let sig = Signal::try_from(sig.ssi_signo as i32);
            stop |= matches!(sig, Ok(Signal::SIGTERM | Signal::SIGINT));
        }
        stop
    }

    /// Reaps a child that ended and schedules the next. `Err`: the supervisor exits (the first
    /// resolver never served, the sandbox no longer wants one).
    fn reap(&mut self, run: &mut Run) -> Result<(), ExitCode> {
        let Some(c) = run.child.as_ref() else {
            return Ok(());
        };
        let status = match waitpid(c.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(()),
            Ok(status) => status,
            Err(_) => WaitStatus::Exited(c.pid, 255),
        };
        let c = run.child.take().expect("a child ended");
        let now = Instant::now();
        if run.first && c.serving_since.is_none() {
            // The first start failed: the plugin hears why (its ready line, else this) and
            // the ADD fails; nothing is restarted.
            run.tell_plugin(Ready::Failed(describe(status)));
            return Err(ExitCode::FAILURE);
        }
        run.first = false;
        if !self.still_serving() {
            let _ = std::fs::remove_file(self.paths.supervision(&self.container_id));
            return Err(ExitCode::SUCCESS);
        }
        let healthy = c
            .serving_since
            .is_some_and(|t| now.duration_since(t) >= HEALTHY_AFTER);
        self.state.failures_in_a_row = if healthy {
            1
        } else {
            self.state.failures_in_a_row.saturating_add(1)
        };
        self.state.restarts += 1;
        self.state.resolver_pid = 0;
        self.state.last_exit = Some(describe(status));
        self.state.last_exit_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        self.down_since.get_or_insert(now);
        self.schedule(now);
        self.save();
        Ok(())
    }

    fn schedule(&mut self, now: Instant) {
        let delay = restart_delay(self.state.failures_in_a_row);
        self.next_start = Some(now + delay);
        self.state.next_start_in_ms = Some(delay.as_millis() as u64);
    }

    /// Forks a resolver: back in the netns the supervisor started in, the signals it blocks
    /// unblocked, with a ready pipe of its own as fd 3.
    fn fork(
        &self,
        serve: &impl Fn(File, Option<Previous>) -> ExitCode,
        plugin_ready: Option<std::os::fd::RawFd>,
    ) -> anyhow::Result<Child> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("a ready pipe")?;
        let previous = self.state.last_exit.clone().map(|last_exit| Previous {
            restarts: self.state.restarts,
            last_exit,
        });
        // SAFETY: the supervisor is single-threaded, so the child may do anything after fork.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Parent { child } => {
                drop(w);
                nix::fcntl::fcntl(
                    &r,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )?;
                Ok(Child {
                    pid: child,
                    ready: Some(File::from(r)),
                    line: Vec::new(),
                    serving_since: None,
                })
            }
            ForkResult::Child => {
                drop(r);
                crate::title::restore(&self.title);
                // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
                unsafe { libc::prctl(libc::PR_SET_NAME, c"embedns-resolve".as_ptr()) };
                let _ = nix::sys::signal::sigprocmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&self.old_mask),
                    None,
                );
                // The signalfd and the netns handle are the supervisor's; the child closes its
                // copies (exit skips Drop, so the fds are closed by number).
                let _ = nix::unistd::close(self.signals.as_fd().as_raw_fd());
                if let Some(fd) = plugin_ready {
                    let _ = nix::unistd::close(fd);
                }
                let entered = setns(self.host_netns.as_fd(), CloneFlags::CLONE_NEWNET);
                let _ = nix::unistd::close(self.host_netns.as_raw_fd());
                let mut ready = File::from(w);
                if let Err(e) = entered {
                    let _ = Ready::Failed(format!("re-entering the host netns: {e}"))
                        .write_to(&mut ready);
                    std::process::exit(1);
                }
                let code = serve(ready, previous);
                // Flush nothing of the supervisor's: leave at once.
                std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
            }
        }
    }

    /// Whether the container is gone without a DEL (`crate::gone`), looked at every
    /// [`gone::CHECK_EVERY`] once the ADD has its answer.
    fn container_gone(&mut self, run: &Run) -> bool {
        let now = Instant::now();
        if now < self.next_gone_check || run.plugin_ready.is_some() {
            return false;
        }
        self.next_gone_check = now + gone::CHECK_EVERY;
        gone::netns_gone(&self.netns_path, self.netns_inode)
    }

    /// Whether a resolver should still run: the sandbox records this supervisor, and its netns
    /// path still names the namespace it lives in. A DEL (which removes the sandbox), a new
    /// resolver in its place, or a container gone all say no.
    fn still_serving(&self) -> bool {
        let Ok(Some(sb)) = sandbox::load(&self.paths, &self.container_id) else {
            return false;
        };
        let recorded = sb
            .resolver
            .as_ref()
            .is_some_and(|r| r.pid as u32 == self.state.pid);
        let same_ns = std::fs::metadata(&sb.netns)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == self.netns_inode)
            .unwrap_or(false);
        recorded && same_ns
    }

    /// Takes R26's catch away (`on` false) or puts it back, for the servers and the owner the
    /// sandbox records now, IPv6 ones included.
    fn set_catch(&mut self, on: bool) {
        let Ok(Some(sb)) = sandbox::load(&self.paths, &self.container_id) else {
            return;
        };
        // The IPv6 catch, where the plugin installed one, for the resolver's [::1] sockets.
        let ports6 = sb
            .resolver
            .as_ref()
            .and_then(|r| r.ports6())
            .filter(|_| sb.catch6);
        let batches = if on {
            let Some((uid, gid)) = sb.catch_owner else {
                return;
            };
            let catch = Catch {
                servers: sb.caught(),
                uid,
                gid,
            };
            let v6 = ports6.map(|(u, t)| catch.set_batch6(u, t, false));
            (catch.set_batch(self.ports.0, self.ports.1, false), v6)
        } else {
            (catch::clear_batch(), ports6.map(|_| catch::clear_batch()))
        };
        let done = crate::iptables::restore(&batches.0, false).and_then(|()| match &batches.1 {
            Some(v6) => crate::iptables::restore(v6, true),
            None => Ok(()),
        });
        match done {
            Ok(()) => {
                self.state.catch_cleared = !on;
                self.save();
            }
            Err(e) => {
                // Tried again at the next change (a resolver that answers, the next window).
                self.state.last_exit = Some(format!(
                    "{}; {} the catch failed: {e:#}",
                    self.state.last_exit.clone().unwrap_or_default(),
                    if on { "restoring" } else { "clearing" }
                ));
                if !on {
                    self.down_since = Some(Instant::now());
                }
            }
        }
    }

    fn save(&self) {
        if let Ok(body) = serde_json::to_vec(&self.state) {
            let _ = embedns_conf::fsutil::write_atomic(
                &self.paths.supervision(&self.container_id),
                &body,
            );
        }
    }
}

/// Reads what the child wrote on its ready pipe: `Some` once a line (or its end) is there.
fn read_ready(c: &mut Child) -> Option<Result<Ready, String>> {
    let pipe = c.ready.as_mut()?;
    let mut chunk = [0u8; 256];
    let done = match pipe.read(&mut chunk) {
        Ok(0) => Some(Err("the resolver exited before it was ready".to_string())),
        Ok(n) => {
            c.line.extend_from_slice(&chunk[..n]);
            if let Some(end) = c.line.iter().position(|b| *b == b'\n') {
                let text = String::from_utf8_lossy(&c.line[..end]).into_owned();
                Some(text.parse::<Ready>().map_err(|e| e.to_string()))
            } else if c.line.len() > MAX_READY_LINE {
                Some(Err("an over-long ready line".to_string()))
            } else {
                None
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(e.to_string())),
    };
    if done.is_some() {
        c.ready = None;
        c.line = Vec::new();
    }
    done
}

/// SIGTERM to the child, SIGKILL after [`CHILD_STOP`], and it is reaped.
fn stop_child(pid: Pid) {
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + CHILD_STOP;
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                // The signalfd wakes us on SIGCHLD; a short poll bounds the wait either way.
                let _ = poll(&mut [], PollTimeout::from(10u8));
            }
            _ => return,
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_two_restarts_are_immediate_then_the_pause_doubles_to_a_cap() {
        assert_eq!(restart_delay(1), Duration::ZERO);
        assert_eq!(restart_delay(2), Duration::ZERO);
        assert_eq!(restart_delay(3), Duration::from_millis(250));
        assert_eq!(restart_delay(4), Duration::from_millis(500));
        assert_eq!(restart_delay(7), Duration::from_secs(4));
        assert_eq!(restart_delay(9), Duration::from_secs(16));
        assert_eq!(restart_delay(10), MAX_DELAY);
        assert_eq!(restart_delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn an_end_is_described_as_status_shows_it() {
        let pid = Pid::from_raw(1);
        assert_eq!(
            describe(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by SIGKILL"
        );
        assert_eq!(describe(WaitStatus::Exited(pid, 1)), "exited with 1");
    }
}
