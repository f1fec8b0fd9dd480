//! A shared network's sync process (`embedns-syncd`, next to the resolver's binary): ADD, CHECK
//! and GC start it when the network's config names an etcd cluster and it is not running.
//! The plugin itself never talks to etcd: ADD only writes its record, which the sync process
//! sees through inotify and publishes, so an unreachable etcd never fails an ADD.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use embedns_conf::fsutil::{try_lock_file, write_atomic};
use embedns_conf::paths::StatePaths;
use embedns_conf::shared::EtcdConf;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// How long the ADD that starts the sync process waits for its first listing of etcd (so the
/// first container on this host sees the other hosts' names at once). Past it, or when no
/// endpoint answers, ADD goes on: names on this host never depend on etcd.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The sync binary: `embedns-syncd` beside the resolver's.
pub fn binary(resolver: &Path) -> PathBuf {
    resolver.with_file_name("embedns-syncd")
}

/// CHECK and GC: a shared network with records on this host whose sync process is not
/// running (killed, or ended by a crash) gets one again.
pub fn keep_running(conf: &embedns_conf::netconf::NetConf) -> anyhow::Result<()> {
    let Some(etcd) = &conf.etcd else {
        return Ok(());
    };
    let paths = StatePaths::new(&conf.data_dir);
    if embedns_conf::store::NetworkStore::new(&paths, &conf.name).is_empty()? {
        return Ok(());
    }
    let resolver = crate::resolver::binary(conf.resolver_path.as_deref())?;
    if let Some(starting) = ensure(&paths, &conf.name, etcd, &binary(&resolver))? {
        tracing::warn!(network = %conf.name, "the network's sync process was not running; started it again");
        starting.wait();
    }
    Ok(())
}

/// A sync process just started: its ready pipe.
pub struct Starting {
    ready: OwnedFd,
    pid: u32,
}

/// Writes the config the network's sync process runs with and starts the process if none
/// runs. Call with a record of this host on the network (the process ends when there is
/// none).
pub fn ensure(
    paths: &StatePaths,
    network: &str,
    etcd: &EtcdConf,
    binary: &Path,
) -> anyhow::Result<Option<Starting>> {
    let conf = paths.etcd_conf(network);
    let body = serde_json::to_vec_pretty(etcd).expect("an etcd config serializes");
    if std::fs::read(&conf).ok().as_deref() != Some(&body[..]) {
        // A running process sees the file change and starts over with the new config.
        write_atomic(&conf, &body)?;
    }
    let Some(free) = try_lock_file(&paths.sync_lock(network), true)? else {
        return Ok(None); // running
    };
    drop(free);
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating the sync process's ready pipe")?;
    let mut cmd = Command::new(binary);
    cmd.arg("--data-dir")
        .arg(paths.root())
        .args(["--network", network, "--ready-fd", "3"])
        .current_dir("/")
        // The runtime reads our stdout until EOF: the process must hold none of it.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("CNI_COMMAND");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl, dup2,
    // close_range).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            // Above 3 first, so the dup2 always makes a new fd (without FD_CLOEXEC).
            let high = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 10);
            if high < 0 || libc::dup2(high, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the sync process {}", binary.display()))?;
    drop(ready_w);
    Ok(Some(Starting {
        ready: ready_r,
        pid: child.id(),
    }))
}

impl Starting {
    /// Waits (at most [`READY_TIMEOUT`]) for the process's first word: in step with etcd, or
    /// not reachable (logged; ADD goes on either way).
    pub fn wait(self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut said = Vec::new();
        let mut file = File::from(self.ready);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout =
                PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => {
                    tracing::warn!(pid = self.pid, "the sync process is not in step with etcd after {READY_TIMEOUT:?}; going on");
                    return;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waiting for the sync process: {e}");
                    return;
                }
            }
            let mut buf = [0u8; 512];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => said.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            if said.contains(&b'\n') {
                break;
            }
        }
        let said = String::from_utf8_lossy(&said);
        let said = said.trim();
        match said {
            "READY" | "RUNNING" => tracing::debug!(pid = self.pid, said, "sync process"),
            _ => tracing::warn!(
                pid = self.pid,
                "the sync process: {}",
                if said.is_empty() { "exited" } else { said }
            ),
        }
    }
}
