//! Real podman (4.3, CNI backend, runc) for tests: its own containers.conf, network config
//! dir, plugin dir, storage and run roots under a temp dir, and a busybox-only root
//! filesystem (no image, no registry). Drop removes the containers and networks it made.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::bins;

/// A private rootful podman: its dirs, embedns's state dir and the host resolv.conf.
pub struct Podman {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub resolv_conf: PathBuf,
    networks: std::sync::Mutex<Vec<String>>,
    /// The network namespace podman runs in (a test's host), `None`: the machine's.
    host_netns: Option<String>,
}

impl Podman {
    /// A private podman; fails the test when not root or when podman or runc is missing
    /// (`make test` installs them): a test that cannot run never passes.
    pub fn new(test: &str) -> Podman {
        crate::host::require_root(test);
        for tool in ["podman", "runc"] {
            assert!(
                Command::new(tool).arg("--version").output().is_ok(),
                "{test} cannot run: {tool} is not installed (make test installs it)"
            );
        }
        let dir = std::env::temp_dir().join(format!("embedns-podman-{}", crate::host::unique("p")));
        busybox_rootfs(&dir.join("rootfs"), &["sh"]);
        setup_podman_dir(&dir, Ours::Linked);
        let resolv_conf = dir.join("host-resolv.conf");
        std::fs::write(&resolv_conf, "nameserver 127.0.0.53\n").unwrap();
        Podman {
            data_dir: dir.join("data"),
            resolv_conf,
            dir,
            networks: Default::default(),
            host_netns: None,
        }
    }

    /// [`Podman::new`] run inside the network namespace `netns` (a test's host: its bridges
    /// and containers' veths are made there, and its sync processes reach etcd from there).
    pub fn in_netns(test: &str, netns: &str) -> Podman {
        let mut p = Podman::new(test);
        p.host_netns = Some(netns.to_string());
        p
    }

    /// Runs `podman ARGS` with this instance's configuration.
    pub fn run(&self, args: &[&str]) -> Output {
        crate::host::command_in(self.host_netns.as_deref(), "podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            // Not the shared /run/libpod: two podmans at once race on its `alive` file.
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("running podman")
    }

    /// `podman ARGS` that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman network create --disable-dns NAME`, then `plugin` (the embedns entry of a
    /// conflist) appended to the generated conflist, as a user would.
    pub fn network(&self, name: &str, plugin: Value) -> String {
        self.network_with(name, &[], plugin)
    }

    /// [`Podman::network`] with more `podman network create` options (`--subnet ...`).
    pub fn network_with(&self, name: &str, create: &[&str], mut plugin: Value) -> String {
        let mut args = vec!["network", "create", "--disable-dns"];
        args.extend_from_slice(create);
        args.push(name);
        self.ok(&args);
        self.networks.lock().unwrap().push(name.to_string());
        plugin["dataDir"] = Value::from(self.data_dir.display().to_string());
        plugin["hostResolvConf"] = Value::from(self.resolv_conf.display().to_string());
        let path = self.dir.join("net.d").join(format!("{name}.conflist"));
        let mut list: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        list["plugins"].as_array_mut().unwrap().push(plugin);
        std::fs::write(&path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        name.to_string()
    }

    /// `podman run -d` of a busybox `sleep`, with more `podman run` options.
    pub fn start(&self, name: &str, opts: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--ulimit", "host", "--name", name];
        args.extend_from_slice(opts);
        let rootfs = self.dir.join("rootfs").display().to_string();
        args.extend_from_slice(&["--rootfs", &rootfs, "/bin/busybox", "sleep", "600"]);
        self.ok(&args).trim().to_string()
    }

    /// `podman exec NAME busybox ARGS`.
    pub fn busybox(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["exec", name, "/bin/busybox"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        for n in self.networks.lock().unwrap().iter() {
            let _ = self.run(&["network", "rm", "-f", n]);
        }
        crate::host::kill_resolvers(&self.data_dir);
        // podman's storage may hold overlay mounts; unmount them before removing.
        let _ = self.run(&["system", "reset", "-f"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A root filesystem of busybox alone at `rootfs`, with `links` (`sh`, `sleep`, ...) to it.
pub(crate) fn busybox_rootfs(rootfs: &Path, links: &[&str]) {
    for d in ["bin", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    for l in links {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).unwrap();
    }
}

/// How embedns's binaries get into a podman's plugin dir.
pub(crate) enum Ours {
    /// Symlinks to the build (root's podman).
    Linked,
    /// Copies (a user who may not reach the build tree, under /root say).
    Copied,
}

/// `dir/cni-bin` (the reference plugins podman's networks use, and ours), `dir/net.d` and a
/// `dir/containers.conf` for the CNI backend, runc and cgroupfs.
pub(crate) fn setup_podman_dir(dir: &Path, ours: Ours) {
    let plugins = dir.join("cni-bin");
    std::fs::create_dir_all(&plugins).unwrap();
    for p in [
        "bridge",
        "host-local",
        "portmap",
        "firewall",
        "tuning",
        "loopback",
    ] {
        std::os::unix::fs::symlink(bins::reference_plugins().join(p), plugins.join(p)).unwrap();
    }
    for p in bins::OURS {
        let (from, to) = (bins::bin_dir().join(p), plugins.join(p));
        match ours {
            Ours::Linked => std::os::unix::fs::symlink(from, to).unwrap(),
            Ours::Copied => drop(std::fs::copy(from, to).unwrap()),
        }
    }
    std::fs::create_dir_all(dir.join("net.d")).unwrap();
    let conf = format!(
        "[containers]\ndefault_ulimits = []\n[network]\nnetwork_backend = \"cni\"\n\
         network_config_dir = \"{}\"\ncni_plugin_dirs = [\"{}\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        dir.join("net.d").display(),
        plugins.display()
    );
    std::fs::write(dir.join("containers.conf"), conf).unwrap();
}
