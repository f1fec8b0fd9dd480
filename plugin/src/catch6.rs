//! R26's catch of IPv6 nameservers (a kubelet's IPv6 cluster DNS, a host whose resolv.conf
//! names only IPv6 servers): `ip6tables` nat in the container's netns, DNAT of
//! `[<server>]:53` to the resolver's sockets on `[::1]`, with the same owner exemption as the
//! IPv4 catch (`embedns_conf::catch`). Kept apart from the IPv4 redirect: one
//! `ip6tables-restore` exec, made only for a container that has IPv6 nameservers caught and a
//! resolver with IPv6 sockets (a netns with IPv6 disabled has neither, and gets what it got
//! before).

use std::process::{Command, Stdio};

use anyhow::Context;
use embedns_conf::catch::{Catch, CATCH_CHAIN};

use crate::netns;
use crate::redirect::{restore_start_with, tool};

/// Sets the IPv6 catch in the netns to `catch`'s IPv6 servers, for a resolver on `[::1]`
/// `ports`; `installed`: the chain and its jump are there already. Returns whether they are
/// there now (none without IPv6 servers).
pub fn set(
    netns_path: &str,
    ports: (u16, u16),
    catch: &Catch,
    installed: bool,
) -> anyhow::Result<bool> {
    if !catch.has_v6() {
        if installed {
            remove(netns_path);
        }
        return Ok(false);
    }
    let batch = catch.set_batch6(ports.0, ports.1, !installed);
    let out = restore_start_with("ip6tables-restore", netns_path, &batch)?
        .wait_with_output()
        .context("waiting for ip6tables-restore")?;
    if !out.status.success() {
        anyhow::bail!(
            "ip6tables-restore failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(true)
}

/// [`set`] that never fails an ADD: a host without ip6tables' nat table keeps its IPv4
/// catch, and the log says why the IPv6 servers are not answered.
pub fn set_or_warn(netns_path: &str, ports: (u16, u16), catch: &Catch, installed: bool) -> bool {
    set(netns_path, ports, catch, installed).unwrap_or_else(|e| {
        tracing::warn!(netns = %netns_path, "the IPv6 nameservers are not caught: {e:#}");
        false
    })
}

/// Takes the IPv6 catch out of the netns, piece by piece (what is already gone is no error).
pub fn remove(netns_path: &str) {
    let Ok(_in) = netns::enter(netns_path) else {
        return;
    };
    for step in [
        &["-D", "OUTPUT", "-j", CATCH_CHAIN][..],
        &["-F", CATCH_CHAIN],
        &["-X", CATCH_CHAIN],
    ] {
        let _ = Command::new(tool("ip6tables"))
            .args(["-w", "-t", "nat"])
            .args(step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
