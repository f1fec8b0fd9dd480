//! The redirect's removal after a DEL, off the runtime's path.
//!
//! Deleting netfilter rules costs the kernel two RCU grace periods, and whoever next unregisters
//! a network device waits for them: in a chained DEL that is the `bridge` plugin deleting the
//! container's veth right after embedns, which measured ~10 ms slower for it (`make bench`'s
//! chained DEL row). After a DEL the container's netns is nearly always
//! destroyed at once (podman rm, CRI's StopPodSandbox, `ip netns del`), and the rules go with
//! it for free. So DEL stops the resolver and leaves the rules to a detached
//! `embedns remove-redirect-later` process, which removes them only if the netns is still there
//! [`WINDOW`] later (podman network disconnect, a cnitool user keeping the netns). Until then the
//! rules point at ports nobody listens on, as good as no rules: a query to 127.0.0.11 is refused
//! either way. An ADD into that netns first stops such a process and replaces the rules
//! ([`cancel`]); a removal that fails is noted as a leftover, as DEL's own would be.
//!
//! A remover is found by a marker, `<dataDir>/removers/<netns inode>` (the dataDir and the
//! namespace's inode: a path names another namespace once the first is gone), written before
//! the remover starts and holding a token the remover is given, then its pid: one `stat` per
//! ADD, not a scan of every process (with a thousand resolvers running, the scan cost each
//! ADD ~8 ms; `make bench`'s scale phase showed it). The marker is also the lock between the
//! two: the remover removes the rules only while holding its flock and finding its own token
//! there, and [`cancel`] takes the same flock and unlinks it. So once an ADD has cancelled,
//! no remover touches the netns, whether or not its pid was ever noted (a DEL killed right
//! after the spawn) and whether or not it could be killed.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use embedns_conf::fsutil::{create_private_dir, remove_if_exists, write_atomic};
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox::{self, Leftover};
use nix::fcntl::{Flock, FlockArg};

use crate::{processes, redirect, resolver};

/// How long the netns must outlive the DEL before its rules are removed.
pub const WINDOW: Duration = Duration::from_secs(1);
/// How often the netns path is looked at meanwhile.
const POLL: Duration = Duration::from_millis(20);
/// The subcommand (not for users: DEL starts it).
pub const SUBCOMMAND: &str = "remove-redirect-later";

/// Starts the detached remover for the netns at `netns_path` (inode `inode`). An error (the
/// marker could not be written, the remover could not start) leaves nothing running: the
/// caller removes the rules itself.
pub fn spawn(
    paths: &StatePaths,
    container_id: &str,
    netns_path: &str,
    inode: u64,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the embedns binary")?;
    let marker = marker(paths, inode);
    let token = format!("{:016x}", rand::random::<u64>());
    marker
        .parent()
        .map_or(Ok(()), create_private_dir)
        .and_then(|()| write_atomic(&marker, token.as_bytes()))
        .context("noting the redirect's remover")?;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg(paths.root())
        .arg(container_id)
        .arg(netns_path)
        .arg(inode.to_string())
        .arg(&token)
        .env_remove("CNI_COMMAND")
        .current_dir("/");
    let child = match crate::child::detached_alone(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            let _ = remove_if_exists(&marker);
            return Err(e).context("starting the redirect's remover");
        }
    };
    embedns_conf::crash::point("del:remover-started");
    // Its pid lets an ADD stop it at once; without it (this plugin killed here) the token
    // still keeps it from touching rules an ADD put back.
    // Under the marker's lock, and only if it is still this remover's (one done already
    // took it away).
    if let Some((mut lock, _)) = lock_marker(&marker).filter(|(_, t)| t.trim() == token) {
        let noted = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{token} {}", child.id()));
        if let Err(e) = noted {
            tracing::warn!("noting the remover's pid: {e}");
        }
    }
    Ok(())
}

/// Where the remover of the netns with inode `inode` is noted.
fn marker(paths: &StatePaths, inode: u64) -> PathBuf {
    paths.root().join("removers").join(inode.to_string())
}

/// The marker at `path`, locked, if it is still there (the path names the file locked) and
/// its content; `None` if it is gone.
fn lock_marker(path: &Path) -> Option<(Flock<std::fs::File>, String)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut locked = Flock::lock(file, FlockArg::LockExclusive).ok()?;
    let same = std::fs::symlink_metadata(path)
        .ok()
        .zip(locked.metadata().ok())
        .is_some_and(|(p, f)| p.ino() == f.ino() && p.dev() == f.dev());
    if !same {
        return None;
    }
    let mut text = String::new();
    locked.rewind().ok()?;
    locked.read_to_string(&mut text).ok()?;
    Some((locked, text))
}

/// `embedns remove-redirect-later DATA_DIR CONTAINER_ID NETNS_PATH INODE TOKEN`: waits up to
/// [`WINDOW`] for the netns to go; removes the rules if it stays and its marker still holds
/// `TOKEN`. Exit status 0 unless the removal failed (then noted as a leftover) or the
/// arguments are wrong (2).
pub fn run(args: &[String]) -> i32 {
    let [data_dir, container_id, netns_path, inode, token] = args else {
        return 2;
    };
    let Ok(inode) = inode.parse::<u64>() else {
        return 2;
    };
    let paths = StatePaths::new(std::path::Path::new(data_dir));
    wait_then_remove(&paths, container_id, netns_path, inode, token)
}

fn wait_then_remove(
    paths: &StatePaths,
    container_id: &str,
    netns_path: &str,
    inode: u64,
    token: &str,
) -> i32 {
    let same_netns = || std::fs::metadata(netns_path).is_ok_and(|m| m.ino() == inode);
    let deadline = Instant::now() + WINDOW;
    let marker = marker(paths, inode);
    while Instant::now() < deadline {
        if !same_netns() {
            break; // gone (or another netns now): its rules went with it
        }
        std::thread::sleep(POLL);
    }
    let Some((lock, text)) = lock_marker(&marker) else {
        return 0; // cancelled by an ADD
    };
    if text.split_whitespace().next() != Some(token) {
        return 0; // a newer DEL's remover owns the netns now
    }
    let removed = if same_netns() {
        // The IPv6 catch (R26), if the container had one: what is not there is no error.
        crate::catch6::remove(netns_path);
        redirect::remove_start(netns_path).and_then(redirect::Pending::wait)
    } else {
        Ok(())
    };
    let _ = remove_if_exists(&marker);
    drop(lock);
    let Err(e) = removed else {
        return 0;
    };
    let note = Leftover {
        container_id: container_id.to_string(),
        netns: netns_path.to_string(),
        netns_inode: Some(inode),
        error: format!("{e:#}"),
    };
    let _ = sandbox::save_leftover(paths, &note);
    1
}

/// Stops the remover a DEL left for the netns at `netns_path`, if its marker says there is
/// one (an ADD is about to put rules there), and waits for whatever `iptables-restore` it
/// started. True if there was a marker: the old rules may then still be in place (also when
/// its remover died without removing them) and must be replaced. Once this returns, no
/// remover of this dataDir touches the netns.
pub fn cancel(paths: &StatePaths, netns_path: &str) -> bool {
    let Some(inode) = std::fs::metadata(netns_path).ok().map(|m| m.ino()) else {
        return false;
    };
    let marker = marker(paths, inode);
    let Some((lock, text)) = lock_marker(&marker) else {
        return false;
    };
    // Pinned first, then recognised by its command line (this dataDir, this inode): never a
    // process that took the pid. The marker says `<token> <pid>`; an earlier version's just
    // `<pid>` (its remover knows no token, so it must be killed).
    let pids = text
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok());
    let pinned = pids.filter_map(|pid| {
        let pidfd = processes::pidfd(pid)?;
        let args = processes::cmdline(pid)?;
        let arg = |i: usize| args.get(i).map(Vec::as_slice);
        let root = paths.root().as_os_str().as_encoded_bytes();
        let ours = arg(1) == Some(SUBCOMMAND.as_bytes())
            && arg(2) == Some(root)
            && arg(5) == Some(inode.to_string().as_bytes());
        ours.then_some(pidfd)
    });
    for pidfd in pinned {
        processes::signal(&pidfd, libc::SIGKILL);
        resolver::wait_exit(&pidfd, Duration::from_secs(2));
    }
    let _ = remove_if_exists(&marker);
    drop(lock);
    redirect::wait_installers(netns_path);
    true
}
