//! `embedns chain`, `chain --watch` and `unchain` against conf dirs holding what real primary
//! plugins write (`test-cni/fixtures/primaries`: flannel, Calico, kindnet, a single `.conf`),
//! run as the binary an operator or the install container runs; and under a real containerd
//! 2.x CRI reading the conf dir as it reads a node's.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use test_cni::wait_until;

const PRIMARIES: &[&str] = &[
    "10-flannel.conflist",
    "10-calico.conflist",
    "10-kindnet.conflist",
    "10-containerd-net.conf",
];

fn fixture(name: &str) -> PathBuf {
    test_cni::bins::workspace()
        .join("test-cni/fixtures/primaries")
        .join(name)
}

/// A conf dir of the test's own, removed when dropped.
struct ConfDir(PathBuf);

impl ConfDir {
    fn new(files: &[&str]) -> ConfDir {
        let dir = std::env::temp_dir().join(test_cni::host::unique("embedns-netd-"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(fixture(f), dir.join(f)).unwrap();
        }
        ConfDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The conf files in it, sorted.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for ConfDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `embedns <args>`: (exit code, stdout, stderr).
fn embedns(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(test_cni::bins::embedns())
        .args(args)
        .output()
        .expect("running embedns");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plugins(path: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["plugins"].as_array().unwrap().clone()
}

/// A primary's restart: its file written again whole, as it writes it (a temporary file
/// renamed over it).
fn primary_rewrites(dir: &ConfDir, name: &str) {
    primary_rewrites_in(&dir.0, name)
}

#[test]
fn chain_and_unchain_give_every_primarys_file_back_byte_for_byte() {
    for name in PRIMARIES {
        let dir = ConfDir::new(&[name]);
        let file = dir.path(name);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&file, Some(4321), Some(4322)).unwrap();
        let original = std::fs::read(&file).unwrap();
        let original_plugins: Vec<Value> = match serde_json::from_slice::<Value>(&original) {
            Ok(v) if v.get("plugins").is_some() => v["plugins"].as_array().unwrap().clone(),
            Ok(v) => vec![v],
            Err(e) => panic!("{name}: {e}"),
        };

        let (code, out, err) = embedns(&["chain", "--conf-dir", dir.0.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        // A single `.conf` becomes a list (which the runtime then reads first).
        let list = if name.ends_with(".conf") {
            assert_eq!(dir.files(), vec![name.replace(".conf", ".conflist")]);
            dir.path(&name.replace(".conf", ".conflist"))
        } else {
            assert_eq!(dir.files(), vec![name.to_string()]);
            file.clone()
        };
        let chained = plugins(&list);
        assert_eq!(chained[..chained.len() - 1], original_plugins[..], "{name}");
        let entry = chained.last().unwrap();
        assert_eq!(entry["type"], "embedns", "{name}");
        for cap in ["aliases", "dns", "cgroupPath"] {
            assert_eq!(entry["capabilities"][cap], true, "{name}: {cap}");
        }
        let meta = std::fs::metadata(&list).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o640, 4321, 4322),
            "{name}: mode and owner kept"
        );

        // Twice changes nothing.
        let once = std::fs::read(&list).unwrap();
        let (code, out, _) = embedns(&["chain", "--conf-dir", dir.0.to_str().unwrap()]);
        assert_eq!((code, std::fs::read(&list).unwrap()), (0, once), "{name}");
        assert!(out.contains("already chained"), "{out}");

        let (code, out, err) = embedns(&[
            "unchain",
            "--conf-dir",
            dir.0.to_str().unwrap(),
            "--data-dir",
            dir.0.join("no-state").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("0 container(s)"), "{out}");
        assert_eq!(dir.files(), vec![name.to_string()], "{name}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            original,
            "{name}: not byte-identical after chain + unchain"
        );
    }
}

#[test]
fn chain_takes_the_file_the_runtime_uses_and_keeps_settings_given() {
    // containerd's and CRI-O's rule: the lexically first conf file; or the one named.
    let dir = ConfDir::new(&["10-flannel.conflist", "10-kindnet.conflist"]);
    let d = dir.0.to_str().unwrap();
    let (code, out, err) = embedns(&[
        "chain",
        "--conf-dir",
        d,
        "--set",
        "ttl=30",
        "--set",
        "dataDir=/run/x",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let entry = plugins(&dir.path("10-flannel.conflist")).pop().unwrap();
    assert_eq!(
        (entry["ttl"].as_u64(), entry["dataDir"].as_str()),
        (Some(30), Some("/run/x"))
    );
    assert_eq!(
        std::fs::read(dir.path("10-kindnet.conflist")).unwrap(),
        std::fs::read(fixture("10-kindnet.conflist")).unwrap()
    );
    // A changed setting is put back in the same entry, not a second one.
    let (code, _, _) = embedns(&["chain", "--conf-dir", d, "--set", "ttl=60"]);
    assert_eq!(code, 0);
    let chained = plugins(&dir.path("10-flannel.conflist"));
    assert_eq!(chained.iter().filter(|p| p["type"] == "embedns").count(), 1);
    assert_eq!(chained.last().unwrap()["ttl"], 60);
    let (code, out, err) = embedns(&["chain", "--conf-dir", d, "--file", "10-kindnet.conflist"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        plugins(&dir.path("10-kindnet.conflist")).last().unwrap()["type"],
        "embedns"
    );
}

#[test]
fn chain_refuses_bad_input_with_a_clear_error_and_loses_nothing() {
    let empty = ConfDir::new(&[]);
    let (code, _, err) = embedns(&["chain", "--conf-dir", empty.0.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no network in"), "{err}");

    let bad = [
        ("10-a.conflist", "{\"plugins\": [", "not a JSON object"),
        (
            "10-a.conflist",
            "{\"cniVersion\": \"9.9.9\", \"name\": \"n\", \"plugins\": [{\"type\": \"ptp\"}]}",
            "cniVersion \"9.9.9\"",
        ),
        (
            "10-a.conflist",
            "{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"plugins\": []}",
            "empty",
        ),
        (
            "10-a.conf",
            "{\"cniVersion\": \"1.0.0\", \"name\": \"n\"}",
            "not a CNI network",
        ),
    ];
    for (name, text, says) in bad {
        let dir = ConfDir::new(&[]);
        std::fs::write(dir.path(name), text).unwrap();
        let (code, _, err) = embedns(&["chain", "--conf-dir", dir.0.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}");
        assert!(err.contains(says), "{text}: {err}");
        assert_eq!(std::fs::read_to_string(dir.path(name)).unwrap(), text);
        assert_eq!(
            dir.files(),
            vec![name.to_string()],
            "nothing left beside it"
        );
    }

    // A read-only conf dir (a read-only bind mount: root passes permission bits).
    test_cni::host::require_root("chain_refuses_bad_input_with_a_clear_error_and_loses_nothing");
    let dir = ConfDir::new(&["10-flannel.conflist"]);
    let d = dir.0.to_str().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind -o ro "$1" "$1" && exec "$0" chain --conf-dir "$1""#)
        .arg(test_cni::bins::embedns())
        .arg(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        std::fs::read(dir.path("10-flannel.conflist")).unwrap(),
        std::fs::read(fixture("10-flannel.conflist")).unwrap()
    );
}

/// A running `embedns chain --watch` and the lines it wrote to stderr.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(dir: &Path, extra: &[&str]) -> Watcher {
        let mut child = Command::new(test_cni::bins::embedns())
            .args(["chain", "--watch", "--conf-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Watcher { child, lines }
    }

    /// Waits until the `n`th line saying `what` has been written; returns all lines so far.
    fn wait_for(&self, what: &str, n: usize) -> Vec<String> {
        wait_until(Duration::from_secs(10), what, || {
            let lines = self.lines.lock().unwrap().clone();
            (lines.iter().filter(|l| l.contains(what)).count() >= n).then_some(lines)
        })
    }

    /// SIGTERM: the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status.code()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn chain_watch_puts_the_entry_back_after_each_rewrite_and_ends_its_own_exchange() {
    let dir = ConfDir::new(&["10-calico.conflist"]);
    let file = dir.path("10-calico.conflist");
    let watcher = Watcher::start(&dir.0, &[]);
    // Its first look chains; its own write wakes it once more, and that look changes nothing.
    watcher.wait_for("embedns already chained", 1);
    for round in 1..=3 {
        primary_rewrites(&dir, "10-calico.conflist");
        let started = std::time::Instant::now();
        wait_until(Duration::from_secs(5), "the entry back", || {
            let text = std::fs::read_to_string(&file).ok()?;
            embedns_conf::conflist::has_entry(&text).then_some(())
        });
        eprintln!(
            "round {round}: the entry was back after {:?}",
            started.elapsed()
        );
        // The exchange ends: the look after its own write finds the entry and writes nothing.
        watcher.wait_for("embedns already chained", round + 1);
    }
    // Another file's change wakes it, and nothing is written.
    std::fs::write(dir.path("notes.txt"), "x").unwrap();
    let lines = watcher.wait_for("embedns already chained", 5);
    assert_eq!(watcher.stop(), Some(0), "SIGTERM ends it with 0");
    let writes = lines
        .iter()
        .filter(|l| l.ends_with(": embedns chained"))
        .count();
    assert_eq!(
        writes, 4,
        "one write at start and one per rewrite: {lines:#?}"
    );
    assert_eq!(plugins(&file).last().unwrap()["type"], "embedns");
}

/// A pod run after a change of the conf dir, once containerd has read it: pods are run (and
/// removed again) until one has an embedns resolver (`chained`) or has none.
fn pod_once_read(ctd: &test_cni::cri::Containerd, name: &str, chained: bool) -> test_cni::cri::Pod {
    let mut attempt = 0;
    wait_until(
        Duration::from_secs(20),
        "containerd to read the conf dir",
        || {
            attempt += 1;
            let pod = ctd.run_pod(&format!("{name}{attempt}"), None);
            let has = ctd.paths().sandbox(&pod.sandbox).exists();
            if has == chained {
                return Some(pod);
            }
            ctd.stop_pod(&pod);
            ctd.remove_pod(&pod);
            None
        },
    )
}

#[test]
fn chain_under_containerd_2_cri_survives_the_primarys_rewrite_and_unchain_leaves_it_clean() {
    use test_cni::cri::{Containerd, Version};
    let test =
        "chain_under_containerd_2_cri_survives_the_primarys_rewrite_and_unchain_leaves_it_clean";
    let ctd = Containerd::without_embedns(test, Version::V2);
    let netd = ctd.dir.join("net.d");
    let file = netd.join("10-cri-net.conflist");
    let primary = std::fs::read(&file).unwrap();
    let data_dir = format!("dataDir={}", ctd.data_dir.display());
    let host_rc = format!(
        "hostResolvConf={}",
        ctd.dir.join("host-resolv.conf").display()
    );
    let watcher = Watcher::start(&netd, &["--set", &data_dir, "--set", &host_rc]);
    watcher.wait_for("embedns already chained", 1);

    // Pods created after the chain resolve each other.
    let web = pod_once_read(&ctd, "web", true);
    let cli = ctd.run_pod("cli", None);
    let ask = |pod, name: &str| test_cni::nslookup_addresses(&ctd.exec(pod, &["nslookup", name]).1);
    assert_eq!(ask(&cli, &web.name), vec![web.ip.clone()]);

    // The primary writes its file again, as at its restart: the entry is back, and a pod
    // created after that resolves too.
    let tmp = netd.join(".primary-tmp");
    std::fs::write(&tmp, &primary).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_until(Duration::from_secs(5), "the entry back", || {
        let text = std::fs::read_to_string(&file).ok()?;
        embedns_conf::conflist::has_entry(&text).then_some(())
    });
    let api = pod_once_read(&ctd, "api", true);
    assert_eq!(ask(&cli, &api.name), vec![api.ip.clone()]);

    // The DaemonSet's end: the watch stops, unchain takes the entry out, the file is the
    // primary's again.
    assert_eq!(watcher.stop(), Some(0));
    let d = netd.to_str().unwrap();
    // The entry named its dataDir: unchain counts the containers there.
    let (code, out, err) = embedns(&["unchain", "--conf-dir", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 container(s) still have an embedns resolver"),
        "{out}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), primary);
    // A new pod's DNS is the runtime's own: no resolver, CRI's nameserver.
    let plain = pod_once_read(&ctd, "plain", false);
    let rc = ctd.exec(&plain, &["cat", "/etc/resolv.conf"]).1;
    assert!(rc.contains(&format!("nameserver {}", ctd.gateway)), "{rc}");

    // Pods started before keep their DNS, and their removal still cleans up after them.
    assert_eq!(ask(&cli, &api.name), vec![api.ip.clone()]);
    for pod in [&web, &api, &cli] {
        ctd.stop_pod(pod);
        ctd.remove_pod(pod);
    }
    let count = |dir: &str| {
        let entries = std::fs::read_dir(ctd.data_dir.join(dir));
        let named = |e: &std::fs::DirEntry| !e.file_name().to_string_lossy().starts_with('.');
        entries
            .map(|d| d.filter_map(Result::ok).filter(named).count())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(10),
        "every resolver, sandbox and record gone",
        || {
            let resolvers = test_cni::resolver_pids(&ctd.data_dir);
            (resolvers.is_empty() && count("sandboxes") == 0 && count("networks") == 0)
                .then_some(())
        },
    );
}

#[test]
fn the_install_containers_steps_on_a_directory_standing_in_for_the_node() {
    // deploy/install.sh as the DaemonSet runs it, against a node's /opt/cni/bin,
    // /etc/cni/net.d and /run/embedns made here.
    let node = ConfDir::new(&[]);
    let (bin, netd, state) = (
        node.path("opt/cni/bin"),
        node.path("etc/cni/net.d"),
        node.path("run/embedns"),
    );
    for d in [&bin, &netd, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(
        fixture("10-flannel.conflist"),
        netd.join("10-flannel.conflist"),
    )
    .unwrap();
    // An older embedns already installed: replaced.
    std::fs::write(bin.join("embedns"), "old").unwrap();
    let script = test_cni::bins::workspace().join("deploy/install.sh");
    let child = Command::new("sh")
        .arg(&script)
        .env("HOST_CNI_BIN", &bin)
        .env("HOST_CNI_NETD", &netd)
        .env("HOST_DATA_DIR", &state)
        .env("EMBEDNS_SRC", test_cni::bins::bin_dir())
        .env("EMBEDNS_CHAIN_ARGS", "--set ttl=30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let file = netd.join("10-flannel.conflist");
    wait_until(
        Duration::from_secs(10),
        "the entry chained by the install container",
        || {
            let text = std::fs::read_to_string(&file).ok()?;
            embedns_conf::conflist::has_entry(&text).then_some(())
        },
    );
    for b in ["embedns", "embedns-resolverd", "embedns-syncd"] {
        let installed = std::fs::read(bin.join(b)).unwrap();
        assert!(
            installed == std::fs::read(test_cni::bins::bin_dir().join(b)).unwrap(),
            "{b} installed"
        );
        let mode = std::fs::metadata(bin.join(b)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "{b}");
    }
    assert_eq!(plugins(&file).last().unwrap()["ttl"], 30);
    // The primary restarts: the entry comes back.
    primary_rewrites_in(&netd, "10-flannel.conflist");
    wait_until(Duration::from_secs(5), "the entry back", || {
        let text = std::fs::read_to_string(&file).ok()?;
        embedns_conf::conflist::has_entry(&text).then_some(())
    });
    // The pod ends: unchained, the primary's file as it wrote it, the binaries kept.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("embedns unchained"), "{said}");
    assert!(said.contains("0 container(s)"), "{said}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(fixture("10-flannel.conflist")).unwrap()
    );
    assert!(
        bin.join("embedns-resolverd").is_file(),
        "binaries stay for the pods started before"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&bin)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "no temporary file left: {leftovers:?}");
}

fn primary_rewrites_in(dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.primary-tmp"));
    std::fs::copy(fixture(name), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}
