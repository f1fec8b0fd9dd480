//! The redirect's removal after a DEL, off the runtime's path.
//!
//! Deleting netfilter rules costs the kernel two RCU grace periods, and whoever next unregisters
//! a network device waits for them: in a chained DEL that is the `bridge` plugin deleting the
//! container's veth right after embedns, which measured ~10 ms slower for it (issue 11, item 8;
//! `make bench`'s chained DEL row). After a DEL the container's netns is nearly always
//! destroyed at once (podman rm, CRI's StopPodSandbox, `ip netns del`), and the rules go with
//! it for free. So DEL stops the resolver and leaves the rules to a detached
//! `embedns remove-redirect-later` process, which removes them only if the netns is still there
//! [`WINDOW`] later (podman network disconnect, a cnitool user keeping the netns). Until then the
//! rules point at ports nobody listens on, as good as no rules: a query to 127.0.0.11 is refused
//! either way. An ADD into that netns first stops such a process and replaces the rules
//! ([`cancel`]); a removal that fails is noted as a leftover, as DEL's own would be.
//!
//! A remover is found by a marker, `<dataDir>/removers/<netns inode>`, holding its pid: one
//! `stat` per ADD, not a scan of every process (with a thousand resolvers running, the scan
//! cost each ADD ~8 ms; `make bench`'s scale phase showed it).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use embedns_conf::fsutil::{create_private_dir, remove_if_exists, write_atomic};
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox::{self, Leftover};

use crate::{processes, redirect, resolver};

/// How long the netns must outlive the DEL before its rules are removed.
pub const WINDOW: Duration = Duration::from_secs(1);
/// How often the netns path is looked at meanwhile.
const POLL: Duration = Duration::from_millis(20);
/// The subcommand (not for users: DEL starts it).
pub const SUBCOMMAND: &str = "remove-redirect-later";

/// Starts the detached remover for the netns at `netns_path` (inode `inode`).
pub fn spawn(
    paths: &StatePaths,
    container_id: &str,
    netns_path: &str,
    inode: u64,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the embedns binary")?;
    let child = Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(paths.root())
        .arg(container_id)
        .arg(netns_path)
        .arg(inode.to_string())
        .env_remove("CNI_COMMAND")
        // The runtime reads our stdout until EOF: the remover must hold none of it.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the redirect's remover")?;
    let marker = marker(paths, inode);
    let noted = marker
        .parent()
        .map_or(Ok(()), create_private_dir)
        .and_then(|()| write_atomic(&marker, child.id().to_string().as_bytes()));
    if let Err(e) = noted {
        tracing::warn!("noting the remover: {e}");
    }
    Ok(())
}

/// Where the remover of the netns with inode `inode` notes its pid.
fn marker(paths: &StatePaths, inode: u64) -> PathBuf {
    paths.root().join("removers").join(inode.to_string())
}

/// `embedns remove-redirect-later DATA_DIR CONTAINER_ID NETNS_PATH INODE`: waits up to
/// [`WINDOW`] for the netns to go; removes the rules if it stays. Exit status 0 unless the
/// removal failed (then noted as a leftover) or the arguments are wrong (2).
pub fn run(args: &[String]) -> i32 {
    let [data_dir, container_id, netns_path, inode] = args else {
        return 2;
    };
    let Ok(inode) = inode.parse::<u64>() else {
        return 2;
    };
    let paths = StatePaths::new(std::path::Path::new(data_dir));
    let code = wait_then_remove(&paths, container_id, netns_path, inode);
    // The marker goes with this remover (unless a newer one wrote its own meanwhile).
    let marker = marker(&paths, inode);
    let mine = std::fs::read_to_string(&marker)
        .is_ok_and(|pid| pid.trim() == std::process::id().to_string());
    if mine {
        let _ = remove_if_exists(&marker);
    }
    code
}

fn wait_then_remove(paths: &StatePaths, container_id: &str, netns_path: &str, inode: u64) -> i32 {
    let same_netns = || std::fs::metadata(netns_path).is_ok_and(|m| m.ino() == inode);
    let deadline = Instant::now() + WINDOW;
    while Instant::now() < deadline {
        if !same_netns() {
            return 0; // gone (or another netns now): its rules went with it
        }
        std::thread::sleep(POLL);
    }
    if !same_netns() {
        return 0;
    }
    let Err(e) = redirect::remove_start(netns_path).and_then(redirect::Pending::wait) else {
        return 0;
    };
    let note = Leftover {
        container_id: container_id.to_string(),
        netns: netns_path.to_string(),
        error: format!("{e:#}"),
    };
    let _ = sandbox::save_leftover(paths, &note);
    1
}

/// Stops the remover a DEL left for the netns at `netns_path`, if its marker says there is
/// one (an ADD is about to put rules there), and waits for whatever `iptables-restore` it
/// started. True if there was a marker: the old rules may then still be in place (also when
/// its remover died without removing them) and must be replaced.
pub fn cancel(paths: &StatePaths, netns_path: &str) -> bool {
    let Some(inode) = std::fs::metadata(netns_path).ok().map(|m| m.ino()) else {
        return false;
    };
    let marker = marker(paths, inode);
    let Ok(pid) = std::fs::read_to_string(&marker) else {
        return false;
    };
    // Pinned first, then recognised by its command line: never a process that took the pid.
    let pinned = pid.trim().parse::<i32>().ok().and_then(|pid| {
        let pidfd = processes::pidfd(pid)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.get(1) == Some(&SUBCOMMAND.as_bytes())
            && args.get(5) == Some(&inode.to_string().as_bytes());
        ours.then_some(pidfd)
    });
    if let Some(pidfd) = pinned {
        processes::signal(&pidfd, libc::SIGKILL);
        resolver::wait_exit(&pidfd, Duration::from_secs(2));
    }
    let _ = remove_if_exists(&marker);
    redirect::wait_installers(netns_path);
    true
}
