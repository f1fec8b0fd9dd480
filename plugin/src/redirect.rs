//! The redirect of `127.0.0.11:53` to the resolver's real ports inside the container's netns
//! (R24), as Docker's `setup-resolver` does: DNAT in nat/OUTPUT, SNAT of the replies' source
//! port back to 53 in nat/POSTROUTING, in chains of our own. One `iptables-restore --noflush`
//! batch per change: one exec instead of eight.
//!
//! Callers must already be in the container's netns (`netns::enter`): iptables runs in the
//! netns of the thread that forks it.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::error::{PluginError, REDIRECT_FAILED};

const OUTPUT_CHAIN: &str = "EMBEDNS_OUTPUT";
const POSTROUTING_CHAIN: &str = "EMBEDNS_POSTROUTING";
const RESOLVER_IP: &str = "127.0.0.11";

/// Installs the rules for a resolver listening on `udp`/`tcp`, replacing any earlier ones.
pub fn install(udp: u16, tcp: u16) -> anyhow::Result<()> {
    // A leftover jump (a resolver restarted in the same netns) would duplicate; drop it first.
    let _ = remove();
    let batch = format!(
        "*nat\n\
         :{OUTPUT_CHAIN} - [0:0]\n\
         :{POSTROUTING_CHAIN} - [0:0]\n\
         -A OUTPUT -d {RESOLVER_IP}/32 -j {OUTPUT_CHAIN}\n\
         -A POSTROUTING -d {RESOLVER_IP}/32 -j {POSTROUTING_CHAIN}\n\
         -A {OUTPUT_CHAIN} -d {RESOLVER_IP}/32 -p udp -m udp --dport 53 -j DNAT --to-destination {RESOLVER_IP}:{udp}\n\
         -A {OUTPUT_CHAIN} -d {RESOLVER_IP}/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination {RESOLVER_IP}:{tcp}\n\
         -A {POSTROUTING_CHAIN} -s {RESOLVER_IP}/32 -p udp -m udp --sport {udp} -j SNAT --to-source :53\n\
         -A {POSTROUTING_CHAIN} -s {RESOLVER_IP}/32 -p tcp -m tcp --sport {tcp} -j SNAT --to-source :53\n\
         COMMIT\n"
    );
    restore(&batch).map_err(|e| {
        PluginError::new(
            REDIRECT_FAILED,
            format!("installing the 127.0.0.11 redirect: {e:#}"),
        )
        .into()
    })
}

/// Removes our rules and chains; what is already gone is not an error.
pub fn remove() -> anyhow::Result<()> {
    let batch = format!(
        "*nat\n\
         -D OUTPUT -d {RESOLVER_IP}/32 -j {OUTPUT_CHAIN}\n\
         -D POSTROUTING -d {RESOLVER_IP}/32 -j {POSTROUTING_CHAIN}\n\
         -F {OUTPUT_CHAIN}\n-X {OUTPUT_CHAIN}\n\
         -F {POSTROUTING_CHAIN}\n-X {POSTROUTING_CHAIN}\n\
         COMMIT\n"
    );
    if restore(&batch).is_ok() {
        return Ok(());
    }
    // Part of it is gone: a batch is all or nothing, so remove piece by piece.
    let steps: [&[&str]; 6] = [
        &["-D", "OUTPUT", "-d", "127.0.0.11/32", "-j", OUTPUT_CHAIN],
        &[
            "-D",
            "POSTROUTING",
            "-d",
            "127.0.0.11/32",
            "-j",
            POSTROUTING_CHAIN,
        ],
        &["-F", OUTPUT_CHAIN],
        &["-X", OUTPUT_CHAIN],
        &["-F", POSTROUTING_CHAIN],
        &["-X", POSTROUTING_CHAIN],
    ];
    for step in steps {
        let _ = Command::new(tool("iptables"))
            .args(["-w", "-t", "nat"])
            .args(step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

/// Whether our DNAT rules are present (CHECK).
pub fn present() -> bool {
    Command::new(tool("iptables"))
        .args(["-w", "-t", "nat", "-S", OUTPUT_CHAIN])
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("DNAT"))
        .unwrap_or(false)
}

fn restore(batch: &str) -> anyhow::Result<()> {
    let mut child = Command::new(tool("iptables-restore"))
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running iptables-restore (is the iptables package installed?)")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(batch.as_bytes())
        .context("writing to iptables-restore")?;
    let out = child
        .wait_with_output()
        .context("waiting for iptables-restore")?;
    if !out.status.success() {
        anyhow::bail!(
            "iptables-restore failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// iptables tools from PATH, falling back to /usr/sbin (runtimes may pass a short PATH).
fn tool(name: &str) -> String {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false);
    if on_path {
        name.to_string()
    } else {
        format!("/usr/sbin/{name}")
    }
}
