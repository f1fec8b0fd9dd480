//! A container gone without a DEL, as its resolver's supervisor sees it. containerd's CRI,
//! CRI-O and podman run DEL with the conf they hold now: after `embedns unchain` (or a hand
//! edit of the conflist) a container started before is torn down without embedns. Its netns
//! goes all the same, so the supervisor looks whether the netns path the sandbox recorded
//! still names the namespace it lives in; once it does not, it stops its resolver and runs
//! the plugin's `release-gone` (plugin/src/release_gone.rs), which does DEL's work.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use embedns_conf::paths::StatePaths;
use nix::sys::signal::{SigSet, SigmaskHow};

/// How often a supervisor looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The plugin's subcommand.
const RELEASE_GONE: &str = "release-gone";

/// Whether `path` no longer names the namespace of inode `inode`: removed, or another one.
pub fn netns_gone(path: &str, inode: u64) -> bool {
    match std::fs::metadata(path) {
        Ok(m) => std::os::unix::fs::MetadataExt::ino(&m) != inode,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Runs `embedns release-gone` for the container, detached, from the plugin binary beside
/// this one (the directory the resolver was started from, also after an upgrade replaced it),
/// with the signal mask the supervisor started with.
pub fn release(paths: &StatePaths, container_id: &str, mask: SigSet) {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let exe = exe.to_string_lossy();
    let plugin =
        Path::new(exe.strip_suffix(" (deleted)").unwrap_or(&exe)).with_file_name("embedns");
    let mut cmd = Command::new(&plugin);
    cmd.arg(RELEASE_GONE)
        .arg("--data-dir")
        .arg(paths.root())
        .args(["--container-id", container_id])
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: async-signal-safe calls only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let _ = nix::unistd::setsid();
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
            Ok(())
        });
    }
    if let Err(e) = cmd.spawn() {
        eprintln!(
            "embedns-resolverd: running {} {RELEASE_GONE}: {e}",
            plugin.display()
        );
    }
}
