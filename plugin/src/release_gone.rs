//! `embedns release-gone --data-dir DIR --container-id ID`: what DEL does, for a container
//! its runtime removed without calling embedns. containerd's CRI, CRI-O and podman run DEL
//! with the conf they hold now, not the one of the ADD: after `embedns unchain` (or a hand
//! edit of the conflist) a pod started before is torn down without embedns, and its resolver,
//! records and cgroup would stay for good. Its supervisor watches the netns path the sandbox
//! records; once that path no longer names the namespace it serves (the runtime removed the
//! netns), it stops its resolver and runs this, detached, from the binary beside its own.
//!
//! Under the sandbox's lock the netns is checked again (an ADD may have taken the container
//! ID into a new namespace meanwhile: then nothing is done); then every attachment's record
//! goes and the sandbox is torn down as DEL's last attachment does it.

use std::path::PathBuf;

use anyhow::Context;
use embedns_conf::names;
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox;

use crate::{cgroup, del, netns};

/// The subcommand's name, as the supervisor runs it.
pub const SUBCOMMAND: &str = "release-gone";

/// Runs the subcommand; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
    let parsed = match args {
        [d, dir, c, cid] if d == "--data-dir" && c == "--container-id" => {
            names::container_id(cid).map(|()| (PathBuf::from(dir), cid.clone()))
        }
        _ => {
            eprintln!("usage: embedns {SUBCOMMAND} --data-dir DIR --container-id ID");
            return 2;
        }
    };
    let (dir, cid) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("embedns {SUBCOMMAND}: {e}");
            return 2;
        }
    };
    // Out of the resolver's leaf, which the teardown removes.
    cgroup::leave();
    match release(&StatePaths::new(&dir), &cid) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(container = %cid, "releasing a container gone without DEL: {e:#}");
            1
        }
    }
}

fn release(paths: &StatePaths, cid: &str) -> anyhow::Result<()> {
    if !paths.sandbox(cid).exists() {
        return Ok(()); // a DEL came first
    }
    let lock = sandbox::lock(paths, cid)?;
    let Some(sb) = sandbox::load(paths, cid)? else {
        return Ok(());
    };
    let inode = netns::inode(&sb.netns);
    if inode.is_some() && sb.netns_inode.is_none_or(|i| Some(i) == inode) {
        return Ok(()); // still there: a new ADD's namespace, or not gone after all
    }
    tracing::warn!(container = cid, netns = %sb.netns, "the container's netns is gone without a DEL: removing its resolver and records");
    for a in &sb.attachments {
        del::remove_record(paths, cid, &a.network, &a.ifname)
            .with_context(|| format!("removing the record on {}", a.network))?;
    }
    del::teardown(paths, lock, &sb, del::Removal::Now);
    Ok(())
}
