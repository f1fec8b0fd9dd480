//! iptables as a resolver's supervisor runs it: R26's catch taken away and put back.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

/// One `iptables-restore --noflush` batch (`ip6tables-restore` with `v6`) in the caller's
/// netns (the supervisor's: the container's).
pub fn restore(batch: &str, v6: bool) -> anyhow::Result<()> {
    let name = if v6 {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    };
    let tool = ["/usr/sbin", "/sbin"]
        .into_iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_string());
    let tool = tool.as_str();
    let mut child = Command::new(tool)
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(batch.as_bytes());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
