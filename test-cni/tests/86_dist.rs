//! `make dist`, `make install` from it and `make uninstall`, as a user runs them: the tarball
//! holds the three binaries, the examples and checksums that verify; the binaries run from it
//! and need no glibc symbol newer than the README's claim (2.34: the dynamic loader refuses a
//! binary only for a symbol version it lacks, so the versions the binaries ask for are the
//! claim); install builds nothing and uninstall refuses while a conf names embedns.

use std::path::{Path, PathBuf};
use std::process::Command;

use test_cni::bins;

/// The oldest glibc the README says the binaries run on.
const OLDEST_GLIBC: (u32, u32) = (2, 34);

fn make(args: &[&str]) -> std::process::Output {
    Command::new("make")
        .arg("-C")
        .arg(bins::workspace())
        .arg("--no-print-directory")
        .args(args)
        .output()
        .expect("running make")
}

/// A directory of the test's own, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The highest `GLIBC_x.y` version `binary` needs, from its dynamic symbols.
fn newest_glibc(binary: &Path) -> (u32, u32) {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .expect("objdump (binutils; make test installs it)");
    assert!(out.status.success(), "objdump -T {}", binary.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("the binary links glibc")
}

#[test]
fn make_dist_then_install_and_uninstall() {
    make_dist_gives_a_tarball_that_verifies_and_runs_on_glibc_2_34();
    make_install_builds_nothing_and_uninstall_refuses_while_a_conf_names_embedns();
}

fn make_dist_gives_a_tarball_that_verifies_and_runs_on_glibc_2_34() {
    let out = make(&["dist"]);
    assert!(
        out.status.success(),
        "make dist: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let tarball = PathBuf::from(said.lines().last().unwrap().trim());
    let tarball = bins::workspace().join(tarball);
    assert!(tarball.is_file(), "{}", tarball.display());
    let dir = Scratch(std::env::temp_dir().join(test_cni::host::unique("embedns-dist-")));
    std::fs::create_dir_all(&dir.0).unwrap();
    // The tarball's own checksum, then its contents', as a user checks them.
    let sum = Command::new("sha256sum")
        .args(["-c", "--quiet"])
        .arg(tarball.with_extension("gz.sha256").file_name().unwrap())
        .current_dir(tarball.parent().unwrap())
        .status()
        .unwrap();
    assert!(sum.success(), "the tarball's checksum");
    let untar = Command::new("tar")
        .arg("-C")
        .arg(&dir.0)
        .arg("-xzf")
        .arg(&tarball)
        .status()
        .unwrap();
    assert!(untar.success());
    let top = std::fs::read_dir(&dir.0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&top)
        .status()
        .unwrap();
    assert!(sums.success(), "SHA256SUMS of the contents");
    for example in [
        "containerd2.conflist",
        "podman.conflist",
        "cnitool.conflist",
    ] {
        let text = std::fs::read(top.join("examples").join(example)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&text).expect("an example parses");
    }
    for b in ["embedns", "embedns-resolverd", "embedns-syncd"] {
        let binary = top.join(b);
        let v = Command::new(&binary).arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && text.contains("0."),
            "{b} --version: {text}"
        );
        let needs = newest_glibc(&binary);
        assert!(
            needs <= OLDEST_GLIBC,
            "{b} needs GLIBC_{}.{}, newer than the README's {}.{}",
            needs.0,
            needs.1,
            OLDEST_GLIBC.0,
            OLDEST_GLIBC.1
        );
    }
}

/// After [`make_dist_gives_a_tarball_that_verifies_and_runs_on_glibc_2_34`] (one test: two
/// `make dist` at once would remove each other's directory).
fn make_install_builds_nothing_and_uninstall_refuses_while_a_conf_names_embedns() {
    test_cni::require_root(
        "make_install_builds_nothing_and_uninstall_refuses_while_a_conf_names_embedns",
    );
    let root = Scratch(std::env::temp_dir().join(test_cni::host::unique("embedns-root-")));
    let dest = format!("DESTDIR={}", root.0.display());
    let netd = root.0.join("netd");
    std::fs::create_dir_all(&netd).unwrap();
    let confs = format!("CNI_CONF_DIR={}", netd.display());
    let state = format!("DATA_DIR={}", root.0.join("state").display());
    // `make -n install` runs no cargo: what a root without a toolchain runs.
    let dry = make(&["-n", "install", &dest]);
    assert!(
        !String::from_utf8_lossy(&dry.stdout).contains("cargo build"),
        "install would build"
    );
    let out = make(&["install", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.0.join("opt/cni/bin");
    for b in ["embedns", "embedns-resolverd", "embedns-syncd"] {
        assert!(bin.join(b).is_file(), "{b} installed");
    }
    // A conf still naming embedns: uninstall refuses, and removes nothing.
    std::fs::write(
        netd.join("10-n.conflist"),
        r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type": "embedns"}]}"#,
    )
    .unwrap();
    let refused = make(&["uninstall", &dest, &confs, &state]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("still name embedns"));
    assert!(bin.join("embedns").is_file());
    std::fs::remove_file(netd.join("10-n.conflist")).unwrap();
    // A container that still has a resolver: refused too.
    std::fs::create_dir_all(root.0.join("state/sandboxes/c1")).unwrap();
    let refused = make(&["uninstall", &dest, &confs, &state]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("1 container(s)"));
    std::fs::remove_dir_all(root.0.join("state/sandboxes/c1")).unwrap();
    let out = make(&["uninstall", &dest, &confs, &state]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the bin dir: {left:?}");
}
