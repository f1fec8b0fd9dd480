//! iptables as a resolver's supervisor runs it: R26's catch taken away and put back.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

/// One `iptables-restore --noflush` batch in the caller's netns (the supervisor's: the
/// container's).
pub fn restore(batch: &str) -> anyhow::Result<()> {
    let tool = ["/usr/sbin/iptables-restore", "/sbin/iptables-restore"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("iptables-restore");
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
            "iptables-restore failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
