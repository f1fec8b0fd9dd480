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

/// Our binaries: the plugin, the resolver, the sync process of shared networks.
pub const OURS: [&str; 3] = ["embedns", "embedns-resolverd", "embedns-syncd"];

/// The directory holding [`OURS`].
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("EMBEDNS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug"));
    for b in OURS {
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

/// What `test-cni/newer/fetch.sh` fetched (`make test` runs it): the runtimes users run now,
/// from Debian's newer suites (containerd 2.x, etcd 3.5, CNI plugins 1.9, a libcni 1.3
/// cnitool). `EMBEDNS_NEWER`, default `${XDG_CACHE_HOME:-$HOME/.cache}/embedns-newer`; a test
/// needing them fails when they are missing.
pub fn newer() -> PathBuf {
    let dir = newer_cache();
    assert!(
        dir.join("root/.done").is_file() && dir.join("cnitool-libcni13").is_file(),
        "{} lacks the newer runtimes: run test-cni/newer/fetch.sh (make test does)",
        dir.display()
    );
    dir
}

/// Today's peers that `test-cni/newer/fetch.sh peers` fetched (`make bench` runs it) beside
/// the newer runtimes: `peers/` holds Docker 28 and aardvark-dns 1.17, `root/` containerd 2.x.
pub fn newer_peers() -> PathBuf {
    let dir = newer_cache();
    assert!(
        dir.join("root/.done").is_file() && dir.join("peers/.done").is_file(),
        "{} lacks today's peers: run test-cni/newer/fetch.sh peers (make bench does)",
        dir.display()
    );
    dir
}

/// The newer suites' cache: `EMBEDNS_NEWER`, default
/// `${XDG_CACHE_HOME:-$HOME/.cache}/embedns-newer`.
fn newer_cache() -> PathBuf {
    std::env::var_os("EMBEDNS_NEWER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("embedns-newer")
        })
}

/// The binaries of Debian's newer suites ([`newer`]): containerd 2.x, ctr, its shim, etcd 3.5.
pub fn newer_bin() -> PathBuf {
    newer().join("root/usr/bin")
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

/// The archive of the previous release's source (70572b0, the last before the record store
/// and the index were redesigned), kept in the repository so the upgrade test needs no git
/// history.
const PREVIOUS: &str = "test-cni/upgrade/previous-70572b0.tar.gz";

/// The archive of the last release before the peer record (R27), with its sync process: the
/// multi-host upgrade test runs one host on it.
const PREVIOUS_SHARED: &str = "test-cni/upgrade/previous-9271b48.tar.gz";

/// The directory holding the previous release's `embedns` and `embedns-resolverd`, built
/// once per test process from [`PREVIOUS`] (its own lock file; crates from the registry's
/// cache or the registry) into `target/previous-release`, which later runs reuse.
pub fn previous_release() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_release(
            PREVIOUS,
            "previous-release",
            (
                r#"members = ["conf", "plugin", "resolverd", "test-cni", "bench"]"#,
                r#"members = ["conf", "plugin", "resolverd"]"#,
            ),
        )
    })
    .clone()
}

/// [`previous_release`] of [`PREVIOUS_SHARED`]: `embedns`, `embedns-resolverd` and
/// `embedns-syncd` of the release before the peer record, in `target/previous-shared-release`.
pub fn previous_shared_release() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_release(
            PREVIOUS_SHARED,
            "previous-shared-release",
            (
                r#"members = ["conf", "plugin", "resolverd", "sync", "test-cni", "bench"]"#,
                r#"members = ["conf", "plugin", "resolverd", "sync"]"#,
            ),
        )
    })
    .clone()
}

/// Extracts `archive` (a `previous/` tree) under `target/<name>/src`, takes the harness and
/// the bench out of its workspace (`members`: that line, and what it becomes), builds its
/// binaries into `target/<name>/build` and returns their directory.
fn build_release(archive: &str, name: &str, members: (&str, &str)) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join(name);
    let src = target.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(workspace().join(archive))
        .arg("-C")
        .arg(&src)
        .status()
        .expect("running tar");
    assert!(untar.success(), "extracting {archive}");
    let root = src.join("previous");
    let manifest = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(members.0, members.1);
    std::fs::write(&manifest, text).unwrap();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--bins", "-q"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", target.join("build"))
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building {archive} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("build/debug")
}

/// The embedns entry of the example conflist `conf/examples/<file>`, as a user copies it.
pub fn example_entry(file: &str) -> serde_json::Value {
    let path = workspace().join("conf/examples").join(file);
    let list: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "embedns")
        .cloned()
        .expect("the example has an embedns entry")
}
