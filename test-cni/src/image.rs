//! The image the CRI tests run, as the sandbox ("pause") and the container: busybox, built
//! from /bin/busybox with podman (private storage, run and tmp dirs, vfs: no mounts, all
//! removed with the test's dir) and saved as an OCI archive. No registry involved.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::must;

/// The image's name.
pub const IMAGE: &str = "localhost/embedns-box:1";

/// Builds the image under `dir` and returns its OCI archive.
pub fn busybox_archive(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    crate::podman::busybox_rootfs(&rootfs, &["sh", "sleep", "cat", "nslookup"]);
    must(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(dir.join("rootfs.tar"))
            .arg("."),
    );
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        must(&mut cmd);
    };
    let tar = dir.join("rootfs.tar").display().to_string();
    let archive = dir.join("box.tar");
    let archive_text = archive.display().to_string();
    podman(&[
        "import",
        "--change",
        r#"CMD ["/bin/sleep","3600"]"#,
        &tar,
        IMAGE,
    ]);
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &archive_text,
        IMAGE,
    ]);
    archive
}
