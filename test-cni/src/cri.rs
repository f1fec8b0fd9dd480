//! Real containerd (Debian's 1.6, or 2.x from Debian's newer suite: [`Version`]; its CRI
//! plugin, Debian's runc) for tests, driven over the CRI API as kubelet drives it. Each instance has a private root, state, socket, CNI conf dir and plugin
//! dir (the layout `make install-files` produces: embedns next to links to the reference
//! plugins), and a busybox-only image imported without a registry. Drop stops and removes the
//! pods it ran, stops containerd and its shims, and removes everything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, DnsConfig, ExecSyncRequest,
    ImageSpec, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    VersionRequest,
};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::bins;
use crate::host::must;
use crate::wait::wait_until;

use crate::image::IMAGE;

/// A pod run by [`Containerd::run_pod`]: its sandbox, one busybox container and its address.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub sandbox: String,
    pub container: String,
    pub ip: String,
    /// Its IPv6 address, on a dual-stack network.
    pub ip6: Option<String>,
}

/// Which containerd a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Debian 12's containerd 1.6, with Debian 12's CNI plugins 1.1.
    Debian,
    /// containerd 2.x with CNI plugins 1.9, from Debian's newer suite (`bins::newer`). It writes
    /// the sandbox's resolv.conf after the CNI ADD, copying the host's `/etc/resolv.conf`:
    /// it runs in a mount namespace of its own where that is the test's host resolv.conf, so
    /// the pods are given the nameserver embedns reads (never the machine's).
    V2,
}

/// A private containerd with its CRI client.
pub struct Containerd {
    pub dir: PathBuf,
    /// embedns's state dir (the conflist's `dataDir`).
    pub data_dir: PathBuf,
    /// containerd's root: CRI keeps `io.containerd.grpc.v1.cri/sandboxes/<id>/resolv.conf` here.
    pub root: PathBuf,
    /// The bridge's address (the pods' gateway).
    pub gateway: String,
    bridge: String,
    socket: PathBuf,
    daemon: Child,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    sandboxes: std::sync::Mutex<Vec<String>>,
    /// The network namespace containerd runs in (a test's host), `None`: the machine's.
    host_netns: Option<String>,
    pub version: Version,
    /// The lock that reserves this instance's `10.78.<n>.0/24` among the tests running now.
    subnet_claim: (PathBuf, nix::fcntl::Flock<std::fs::File>),
}

/// A `10.78.<n>.0/24` no other containerd of a test running now uses (its bridge, made at the
/// first pod, holds `.1`, where tests start fake upstreams): reserved by a flock on
/// `<tmp>/embedns-ctd-subnet-<n>`, released when the instance is dropped (its bridge gone
/// first, then the file) or its process ends.
fn claim_subnet() -> (u8, (PathBuf, nix::fcntl::Flock<std::fs::File>)) {
    for _ in 0..1000 {
        let n = rand::random::<u8>();
        let path = std::env::temp_dir().join(format!("embedns-ctd-subnet-{n}"));
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path);
        let Ok(file) = opened else { continue };
        let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock);
        // Still the file at that path (not one a dropped instance just unlinked).
        let current = |lock: &nix::fcntl::Flock<std::fs::File>| {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (std::fs::metadata(&path), lock.metadata());
            a.ok().zip(b.ok()).is_some_and(|(a, b)| a.ino() == b.ino())
        };
        if let Ok(lock) = locked
            .map_err(drop)
            .and_then(|l| if current(&l) { Ok(l) } else { Err(()) })
        {
            return (n, (path, lock));
        }
    }
    panic!("no free 10.78.<n>.0/24 for a test containerd");
}

impl Containerd {
    /// A private containerd whose CNI conf dir holds bridge + host-local + portmap + the
    /// embedns entry `embedns(root)` makes (given containerd's root, for `resolvConfPath`),
    /// with this instance's `dataDir` and a test `hostResolvConf`; fails
    /// the test when not root or when containerd, ctr, runc or podman is missing (`make test`
    /// installs them): a test that cannot run never passes.
    pub fn new(test: &str, version: Version, embedns: impl FnOnce(&Path) -> Value) -> Containerd {
        Containerd::new_in(test, None, version, false, embedns)
    }

    /// [`Containerd::new`] with the primary's conflist only (`<dir>/net.d/10-cri-net.conflist`:
    /// bridge + portmap), for `embedns chain` to chain into.
    pub fn without_embedns(test: &str, version: Version) -> Containerd {
        Containerd::new_in(test, None, version, false, |_| Value::Null)
    }

    /// [`Containerd::new`] running in the network namespace `netns` (a test's host: the
    /// pods' bridge is made there, and shared networks' sync processes reach etcd from there).
    pub fn in_netns(
        test: &str,
        netns: &str,
        version: Version,
        embedns: impl FnOnce(&Path) -> Value,
    ) -> Containerd {
        Containerd::new_in(test, Some(netns), version, false, embedns)
    }

    /// [`Containerd::in_netns`] with dual-stack pods: besides `10.78.<n>.0/24`, host-local
    /// gives each an address of `fd00:78:<n>::/64` (the bridge holds `::1`) and a default
    /// IPv6 route through the bridge.
    pub fn in_netns_dual_stack(
        test: &str,
        netns: &str,
        version: Version,
        embedns: impl FnOnce(&Path) -> Value,
    ) -> Containerd {
        Containerd::new_in(test, Some(netns), version, true, embedns)
    }

    fn new_in(
        test: &str,
        netns: Option<&str>,
        version: Version,
        dual_stack: bool,
        embedns: impl FnOnce(&Path) -> Value,
    ) -> Containerd {
        crate::host::require_root(test);
        let (tools, plugins) = match version {
            Version::Debian => (PathBuf::new(), bins::reference_plugins()),
            Version::V2 => (bins::newer_bin(), bins::newer().join("root/usr/lib/cni")),
        };
        for tool in ["containerd", "ctr", "runc", "podman"] {
            let program = Some(tools.join(tool)).filter(|p| p.is_file());
            let program = program.unwrap_or_else(|| PathBuf::from(tool));
            assert!(
                Command::new(program).arg("--version").output().is_ok(),
                "{test} cannot run: {tool} is not installed (make test installs it)"
            );
        }
        let dir = std::env::temp_dir().join(format!("embedns-ctd-{}", crate::host::unique("c")));
        let bin_dir = dir.join("opt/cni/bin");
        install(&dir, &bin_dir, &plugins);
        let root = dir.join("root");
        let mut embedns = embedns(&root);
        let socket = dir.join("containerd.sock");
        let data_dir = dir.join("data");
        let (net, subnet_claim) = claim_subnet();
        let gateway = format!("10.78.{net}.1");
        let bridge = format!("ecd{}", &crate::host::unique("")[..8]);
        if !embedns["type"].is_null() {
            embedns["dataDir"] = json!(data_dir);
            embedns["hostResolvConf"] = json!(dir.join("host-resolv.conf"));
        }
        let mut ipam = json!({"type": "host-local", "subnet": format!("10.78.{net}.0/24"),
                              "dataDir": dir.join("ipam")});
        if dual_stack {
            ipam = json!({"type": "host-local", "dataDir": dir.join("ipam"),
                          "ranges": [[{"subnet": format!("10.78.{net}.0/24")}],
                                     [{"subnet": format!("fd00:78:{net}::/64")}]],
                          "routes": [{"dst": "::/0"}]});
        }
        let mut list = json!({
            "cniVersion": "1.0.0",
            "name": "cri-net",
            "plugins": [
                {"type": "bridge", "bridge": bridge,
                 "isGateway": true, "ipMasq": false, "ipam": ipam},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        if !embedns["type"].is_null() {
            list["plugins"].as_array_mut().unwrap().push(embedns);
        }
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::write(
            dir.join("net.d/10-cri-net.conflist"),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        // The plugin's "host" upstream: the bridge's address, where a test may start a fake
        // upstream (never the machine's own nameserver).
        std::fs::write(
            dir.join("host-resolv.conf"),
            format!("nameserver {gateway}\nsearch corp.example\n"),
        )
        .unwrap();
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             [grpc]\n  address = {socket:?}\n[ttrpc]\n  address = {ttrpc:?}\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = {IMAGE:?}\n\
               restrict_oom_score_adj = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {bin:?}\n  conf_dir = {conf:?}\n",
            root = root.display().to_string(),
            state = dir.join("state").display().to_string(),
            socket = socket.display().to_string(),
            ttrpc = dir.join("containerd.sock.ttrpc").display().to_string(),
            bin = bin_dir.display().to_string(),
            conf = dir.join("net.d").display().to_string(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let mut daemon = match version {
            Version::Debian => crate::host::command_in(netns, "containerd"),
            Version::V2 => {
                let mut c = crate::host::command_in(netns, "unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
                    .arg(dir.join("host-resolv.conf"))
                    .arg(tools.join("containerd"));
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![tools.clone()];
                dirs.extend(std::env::split_paths(&path));
                c.env("PATH", std::env::join_paths(dirs).unwrap());
                c
            }
        };
        let daemon = daemon
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sock = socket.clone();
        let client = wait_until(
            Duration::from_secs(20),
            "containerd's CRI to answer",
            || {
                let sock = sock.clone();
                rt.block_on(async move {
                    let channel = Endpoint::try_from("http://[::]:0")
                        .ok()?
                        .connect_with_connector(tower::service_fn(move |_: Uri| {
                            let sock = sock.clone();
                            async move {
                                let s = tokio::net::UnixStream::connect(sock).await?;
                                Ok::<_, std::io::Error>(TokioIo::new(s))
                            }
                        }))
                        .await
                        .ok()?;
                    let mut client = RuntimeServiceClient::new(channel);
                    client.version(VersionRequest::default()).await.ok()?;
                    Some(client)
                })
            },
        );
        let c = Containerd {
            dir,
            data_dir,
            root,
            gateway,
            bridge,
            socket,
            daemon,
            rt,
            client,
            sandboxes: Default::default(),
            host_netns: netns.map(str::to_string),
            version,
            subnet_claim,
        };
        c.import_image();
        c
    }

    /// The busybox image ([`crate::image`]) imported into containerd's `k8s.io` namespace: no
    /// registry involved.
    fn import_image(&self) {
        let archive = crate::image::busybox_archive(&self.dir.join("image"));
        let ctr = match self.version {
            Version::Debian => PathBuf::from("ctr"),
            Version::V2 => bins::newer_bin().join("ctr"),
        };
        must(
            Command::new(ctr)
                .arg("-a")
                .arg(&self.socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(archive),
        );
    }

    /// embedns's state directory's layout (the conflist's `dataDir`).
    pub fn paths(&self) -> embedns_conf::paths::StatePaths {
        embedns_conf::paths::StatePaths::new(&self.data_dir)
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone()
    }

    /// RunPodSandbox (namespace `default`, with `dns` as kubelet's dns_config), then one
    /// busybox container in it, created and started.
    pub fn run_pod(&self, name: &str, dns: Option<DnsConfig>) -> Pod {
        self.run_pod_in(name, dns, None)
    }

    /// [`Containerd::run_pod`] with kubelet's cgroup parent for the pod (`linux.cgroup_parent`:
    /// a cgroupfs path, `/kubepods/burstable/pod<uid>`), which the CRI passes to CNI as the
    /// `cgroupPath` capability.
    pub fn run_pod_in(
        &self,
        name: &str,
        dns: Option<DnsConfig>,
        cgroup_parent: Option<&str>,
    ) -> Pod {
        self.start_pod(name, "default", dns, cgroup_parent)
    }

    /// [`Containerd::run_pod`] in Kubernetes namespace `namespace` (CRI passes it to CNI as
    /// `K8S_POD_NAMESPACE`), with the dns_config kubelet gives a ClusterFirst pod there: the
    /// cluster DNS at `cluster_dns`, searches `<namespace>.svc.cluster.local svc.cluster.local
    /// cluster.local`, ndots:5.
    pub fn run_pod_ns(&self, name: &str, namespace: &str, cluster_dns: &str) -> Pod {
        let dns = DnsConfig {
            servers: vec![cluster_dns.to_string()],
            searches: vec![
                format!("{namespace}.svc.cluster.local"),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        self.start_pod(name, namespace, Some(dns), None)
    }

    fn start_pod(
        &self,
        name: &str,
        namespace: &str,
        dns: Option<DnsConfig>,
        cgroup_parent: Option<&str>,
    ) -> Pod {
        let linux = cgroup_parent.map(|p| k8s_cri::v1::LinuxPodSandboxConfig {
            cgroup_parent: p.to_string(),
            ..Default::default()
        });
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: crate::host::unique("uid"),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            dns_config: dns,
            linux,
            ..Default::default()
        };
        let mut client = self.client();
        let sandbox = self
            .rt
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.log_tail()))
            .into_inner()
            .pod_sandbox_id;
        self.sandboxes.lock().unwrap().push(sandbox.clone());
        let container = self
            .rt
            .block_on(client.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "box".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    }),
                    command: vec!["/bin/sleep".into(), "3600".into()],
                    ..Default::default()
                }),
                sandbox_config: Some(config),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer in {name}: {e}\n{}", self.log_tail()))
            .into_inner()
            .container_id;
        self.rt
            .block_on(client.start_container(StartContainerRequest {
                container_id: container.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer in {name}: {e}\n{}", self.log_tail()));
        let status = self
            .rt
            .block_on(client.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.clone(),
                verbose: false,
            }))
            .expect("PodSandboxStatus")
            .into_inner();
        let network = status
            .status
            .and_then(|s| s.network)
            .expect("the pod has an address");
        let ip6 = (network.additional_ips.iter())
            .map(|a| a.ip.clone())
            .find(|a| a.contains(':'));
        Pod {
            name: name.to_string(),
            sandbox,
            container,
            ip: network.ip,
            ip6,
        }
    }

    /// ExecSync in the pod's container: (exit code, stdout + stderr).
    pub fn exec(&self, pod: &Pod, cmd: &[&str]) -> (i32, String) {
        let mut client = self.client();
        let out = self
            .rt
            .block_on(client.exec_sync(ExecSyncRequest {
                container_id: pod.container.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 20,
            }))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {}: {e}", pod.name))
            .into_inner();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.exit_code, text)
    }

    /// StopPodSandbox: CNI DEL, as kubelet's stop.
    pub fn stop_pod(&self, pod: &Pod) {
        self.stop(&pod.sandbox)
            .unwrap_or_else(|e| panic!("StopPodSandbox {}: {e}\n{}", pod.name, self.log_tail()));
    }

    /// RemovePodSandbox.
    pub fn remove_pod(&self, pod: &Pod) {
        self.remove(&pod.sandbox)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e}\n{}", pod.name, self.log_tail()));
        self.sandboxes.lock().unwrap().retain(|s| s != &pod.sandbox);
    }

    fn stop(&self, sandbox: &str) -> Result<(), tonic::Status> {
        let mut client = self.client();
        self.rt
            .block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.to_string(),
            }))
            .map(drop)
    }

    fn remove(&self, sandbox: &str) -> Result<(), tonic::Status> {
        let mut client = self.client();
        self.rt
            .block_on(client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.to_string(),
            }))
            .map(drop)
    }

    /// CRI's resolv.conf of a sandbox (what its containers get bind-mounted).
    pub fn sandbox_resolv_conf(&self, pod: &Pod) -> PathBuf {
        self.root
            .join("io.containerd.grpc.v1.cri/sandboxes")
            .join(&pod.sandbox)
            .join("resolv.conf")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!("containerd.log:\n{}", lines[from..].join("\n"))
    }
}

/// `make install-files` of the binaries under test into `<dir>/opt/cni/bin`: embedns and the
/// links to the reference plugins in `plugins`, one plugin dir as containerd's CRI takes it.
fn install(dir: &Path, bin_dir: &Path, plugins: &Path) {
    let out = Command::new("make")
        .arg("-C")
        .arg(bins::workspace())
        .arg("--no-print-directory")
        .arg("install-files")
        .arg(format!("BUILD={}", bins::bin_dir().display()))
        .arg(format!("DESTDIR={}", dir.display()))
        .arg("BINDIR=/opt/cni/bin")
        .arg("EXAMPLESDIR=/examples")
        .arg(format!("REFERENCE_PLUGINS={}", plugins.display()))
        .output()
        .expect("running make");
    assert!(
        out.status.success(),
        "make install-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bin_dir.join("embedns").is_file() && bin_dir.join("loopback").exists());
}

/// The embedns entry of the example for `version`, as a function of the containerd root:
/// conf/examples/containerd.conflist's for 1.6, its `resolvConfPath` pointed at that root (the
/// example names the default root); conf/examples/containerd2.conflist's for 2.x, which
/// writes no file (R26).
pub fn example_entry(version: Version) -> impl FnOnce(&Path) -> Value {
    move |ctd_root| match version {
        Version::Debian => {
            let mut p = crate::bins::example_entry("containerd.conflist");
            let template = p["resolvConfPath"]
                .as_str()
                .expect("the example has a resolvConfPath")
                .replace("/var/lib/containerd", &ctd_root.display().to_string());
            p["resolvConfPath"] = json!(template);
            p
        }
        Version::V2 => crate::bins::example_entry("containerd2.conflist"),
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let left = std::mem::take(&mut *self.sandboxes.lock().unwrap());
        for s in &left {
            let _ = self.stop(s);
            let _ = self.remove(s);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.daemon.wait();
        // The shims outlive containerd by design; these are this instance's.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(format!("-address {}", self.socket.display()))
            .status();
        crate::host::kill_resolvers(&self.data_dir);
        // Mounts left by a pod that could not be removed (rootfs, shm), deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let mut ip = Command::new("ip");
        if let Some(ns) = &self.host_netns {
            ip.args(["-n", ns]);
        }
        let _ = ip
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The subnet is free again: its claim goes (the lock is released with the field).
        let _ = std::fs::remove_file(&self.subnet_claim.0);
    }
}
