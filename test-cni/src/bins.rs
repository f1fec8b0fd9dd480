//! Where the binaries under test are: `EMBEDNS_BIN_DIR` (the Makefile sets it) or the
//! workspace's `target/debug`; cnitool from `EMBEDNS_CNITOOL` or built here on first use
//! from Debian's libcni source (GOPATH mode, offline).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-cni lives in the workspace")
        .to_path_buf()
}

/// The directory holding `embedns` and `embedns-resolverd`.
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("EMBEDNS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug"));
    for b in ["embedns", "embedns-resolverd"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: run `cargo build` (or `make test`) first",
            dir.join(b).display()
        );
    }
    dir
}

/// The plugin under test.
pub fn embedns() -> PathBuf {
    bin_dir().join("embedns")
}

/// The reference plugins from Debian's containernetworking-plugins.
pub fn reference_plugins() -> PathBuf {
    let dir = PathBuf::from("/usr/lib/cni");
    assert!(
        dir.join("bridge").is_file(),
        "/usr/lib/cni/bridge missing: apt-get install containernetworking-plugins"
    );
    dir
}

/// cnitool, built once per test process if the Makefile did not build it.
pub fn cnitool() -> PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        if let Some(p) = std::env::var_os("EMBEDNS_CNITOOL") {
            return PathBuf::from(p);
        }
        let src = workspace().join("test-cni/cnitool");
        let out = src.join("bin/cnitool");
        if !out.is_file() {
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg("embedns.test/cnitool")
                .env("GO111MODULE", "off")
                .env("GOPATH", format!("{}:/usr/share/gocode", src.display()))
                .env("GOCACHE", std::env::temp_dir().join("embedns-gocache"))
                .status()
                .expect("running go (apt-get install golang-go golang-github-appc-cni-dev)");
            assert!(status.success(), "building cnitool failed");
        }
        out
    })
    .clone()
}
