//! A test's world: its own host netns (where cnitool, the bridge and fake upstreams live),
//! container netns, a conflist dir, a CNI bin dir, a state dir and a host resolv.conf, all
//! with unique names, all removed on drop. (Some 500 lines: set-up, cnitool, what tests
//! inspect and the cleanup belong together; ADD's builder is in add.rs, direct plugin calls in
//! calls.rs, the host-netns runner in runner.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::bins;
use crate::dig::Dig;
use crate::host::must;
use crate::runner::HostRunner;
use crate::upstream::FakeUpstream;

/// A container: a netns of its own.
#[derive(Debug, Clone)]
pub struct Container {
    /// The netns name (`ip netns exec NAME`).
    pub netns: String,
    /// `/run/netns/NAME`, what CNI_NETNS says.
    pub path: String,
}

/// A network made by [`World::network`].
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    /// e.g. `10.88.3`; the bridge (gateway) is `.1`.
    pub prefix: String,
}

impl Network {
    /// The bridge's address (`<prefix>.1`).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }
}

/// The output of one direct plugin call.
#[derive(Debug)]
pub struct PluginOut {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOut {
    /// Stdout as JSON; fails the test if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// A successful ADD not yet deleted: network, container, the env it was added with.
type Attached = (String, Container, Vec<(String, String)>);

#[derive(Default)]
struct Inner {
    containers: Vec<String>,
    /// (network, container, env) of every successful ADD not yet deleted.
    attached: Vec<Attached>,
    networks: u32,
    /// Cgroups of sandboxes a test removed by hand, removed at the end as a runtime would.
    cgroups: Vec<PathBuf>,
}

/// A test's world (see the module docs).
pub struct World {
    pub id: String,
    pub dir: PathBuf,
    /// The host netns name.
    pub host: String,
    pub data_dir: PathBuf,
    pub net_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The "host" resolv.conf the plugin reads (never the machine's).
    pub resolv_conf: PathBuf,
    inner: Mutex<Inner>,
    runner: std::sync::OnceLock<HostRunner>,
    /// Another cnitool than `bins::cnitool` ([`World::use_cnitool`]).
    cnitool: std::sync::OnceLock<PathBuf>,
}

/// The reference plugins a world's plugin dir links to.
const REFERENCE_PLUGINS: [&str; 6] = [
    "bridge",
    "host-local",
    "loopback",
    "portmap",
    "firewall",
    "tuning",
];

impl World {
    /// A new world; fails the test when not root (a test that cannot run never passes).
    pub fn new(test: &str) -> World {
        crate::host::require_root(test);
        let id = crate::host::unique("en");
        let dir = std::env::temp_dir().join(format!("embedns-test-{id}"));
        let w = World {
            host: format!("{id}-h"),
            data_dir: dir.join("data"),
            net_dir: dir.join("net.d"),
            bin_dir: dir.join("bin"),
            resolv_conf: dir.join("host-resolv.conf"),
            dir,
            id,
            inner: Mutex::new(Inner::default()),
            runner: std::sync::OnceLock::new(),
            cnitool: std::sync::OnceLock::new(),
        };
        for d in [
            &w.net_dir,
            &w.bin_dir,
            &w.dir.join("ipam"),
            &w.dir.join("cache"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let refs = bins::reference_plugins();
        for p in REFERENCE_PLUGINS {
            std::os::unix::fs::symlink(refs.join(p), w.bin_dir.join(p)).unwrap();
        }
        let ours = bins::bin_dir();
        for p in bins::OURS {
            std::os::unix::fs::symlink(ours.join(p), w.bin_dir.join(p)).unwrap();
        }
        w.set_host_resolv_conf("nameserver 127.0.0.53\nsearch corp.example\noptions edns0\n");
        must(Command::new("ip").args(["netns", "add", &w.host]));
        must(Command::new("ip").args(["netns", "exec", &w.host, "ip", "link", "set", "lo", "up"]));
        w
    }

    /// Writes a conflist `name`: bridge + host-local, then embedns with `opts` merged in
    /// (`opts.cniVersion` sets the list's version, default 1.0.0).
    pub fn network(&self, name: &str, opts: Value) -> Network {
        let n = self.inner.lock().unwrap().networks + 1;
        self.network_in(name, &format!("10.88.{n}"), opts)
    }

    /// [`World::network`] on the subnet `<prefix>.0/24` (a host's slice of a network that
    /// spans hosts).
    pub fn network_in(&self, name: &str, prefix: &str, opts: Value) -> Network {
        let n = {
            let mut inner = self.inner.lock().unwrap();
            inner.networks += 1;
            inner.networks
        };
        let prefix = prefix.to_string();
        let mut opts = opts.as_object().cloned().unwrap_or_default();
        let version = opts
            .remove("cniVersion")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "1.0.0".into());
        let mut embedns = json!({
            "type": "embedns",
            "dataDir": self.data_dir,
            "hostResolvConf": self.resolv_conf,
            // Tests run their clients with `ip netns exec`, as the cnitool example does.
            "etcNetns": true,
            "capabilities": {"aliases": true, "dns": true, "links": true, "name": true, "cgroupPath": true},
        });
        for (k, v) in opts {
            embedns[k] = v;
        }
        let list = json!({
            "cniVersion": version,
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": format!("ebr{n}"),
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "subnet": format!("{prefix}.0/24"),
                        "dataDir": self.dir.join("ipam"),
                    },
                },
                embedns,
            ],
        });
        std::fs::write(
            self.net_dir.join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        Network {
            name: name.to_string(),
            prefix,
        }
    }

    /// Writes a conflist given whole (an example's), with the test's state and resolv.conf
    /// put into its embedns entry and host-local's state into the world's dir.
    pub fn conflist(&self, mut list: Value) -> Network {
        let name = list["name"]
            .as_str()
            .expect("a conflist has a name")
            .to_string();
        let mut prefix = String::new();
        for p in list["plugins"].as_array_mut().expect("plugins") {
            if let Some(ipam) = p.get_mut("ipam") {
                ipam["dataDir"] = json!(self.dir.join("ipam"));
                let subnet = ipam["subnet"]
                    .as_str()
                    .or_else(|| ipam["ranges"][0][0]["subnet"].as_str())
                    .unwrap_or("")
                    .to_string();
                prefix = subnet
                    .rsplit_once('.')
                    .map(|x| x.0)
                    .unwrap_or("")
                    .to_string();
            }
            if p["type"] == "embedns" {
                p["dataDir"] = json!(self.data_dir);
                p["hostResolvConf"] = json!(self.resolv_conf);
            }
        }
        std::fs::write(
            self.net_dir.join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        Network { name, prefix }
    }

    /// A new container netns.
    pub fn container(&self, label: &str) -> Container {
        let netns = format!("{}-{label}", self.id);
        must(Command::new("ip").args(["netns", "add", &netns]));
        self.inner.lock().unwrap().containers.push(netns.clone());
        Container {
            path: format!("/run/netns/{netns}"),
            netns,
        }
    }

    /// Runs `cnitool VERB NET NETNS` in the host netns with `env` (CNI_ARGS defaults to
    /// `IgnoreUnknown=1`, as runtimes send). Through nsenter, not `ip netns exec`: a runtime
    /// runs plugins in the host's mount namespace, where /sys/fs/cgroup is mounted (`ip netns
    /// exec` mounts a fresh /sys over it).
    pub fn cnitool(&self, verb: &str, net: &str, c: &Container, env: &[(&str, &str)]) -> Output {
        let tool = self.cnitool.get().cloned().unwrap_or_else(bins::cnitool);
        let mut cmd = crate::host::command_in(Some(&self.host), &tool.to_string_lossy());
        cmd.args([verb, net, &c.path])
            .args([verb, net, &c.path])
            .env("NETCONFPATH", &self.net_dir)
            .env("CNI_PATH", &self.bin_dir)
            .env("CNI_CACHE_DIR", self.dir.join("cache"))
            .env("CNI_ARGS", "IgnoreUnknown=1")
            .env_remove("CAP_ARGS")
            .env_remove("CNI_CONTAINERID")
            .env_remove("CNI_IFNAME");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running cnitool");
        let owned: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut inner = self.inner.lock().unwrap();
        let same = |(n, cc, e): &Attached| {
            n == net
                && cc.path == c.path
                && id_of(e) == id_of(&owned)
                && ifname_of(e) == ifname_of(&owned)
        };
        if out.status.success() && verb == "add" && !inner.attached.iter().any(same) {
            inner.attached.push((net.to_string(), c.clone(), owned));
        } else if out.status.success() && verb == "del" {
            inner.attached.retain(|a| !same(a));
        }
        out
    }

    /// DEL that must succeed.
    pub fn del(&self, net: &Network, c: &Container, env: &[(&str, &str)]) {
        let out = self.cnitool("del", &net.name, c, env);
        assert!(
            out.status.success(),
            "cnitool del {} {} failed: {}",
            net.name,
            c.netns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a command inside a container's netns (with its /etc/netns files, as
    /// `ip netns exec` does).
    pub fn exec(&self, c: &Container, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &c.netns])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Runs a command in the host netns.
    pub fn exec_host(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.host])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// `dig @127.0.0.11 ARGS` from inside a container.
    pub fn dig(&self, c: &Container, args: &[&str]) -> Dig {
        self.dig_at(c, "127.0.0.11", args)
    }

    /// `dig @SERVER ARGS` from inside a container.
    pub fn dig_at(&self, c: &Container, server: &str, args: &[&str]) -> Dig {
        let at = format!("@{server}");
        let mut cmd = vec!["dig", &at, "+time=4", "+tries=1"];
        cmd.extend_from_slice(args);
        let out = self.exec(c, &cmd);
        Dig::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// The addresses `dig +short NAME TYPE` returns (sorted).
    pub fn resolve(&self, c: &Container, name: &str, rtype: &str) -> Vec<String> {
        self.dig(c, &[name, rtype]).data()
    }

    /// Runs the plugin directly in the host netns with `env` and `stdin`.
    pub fn plugin(&self, env: &[(&str, &str)], stdin: &str) -> PluginOut {
        let ran = self.runner().run(&self.bin_dir.join("embedns"), env, stdin);
        PluginOut {
            success: ran.success,
            stdout: ran.stdout,
            stderr: ran.stderr,
        }
    }

    /// The runner in this world's host netns (started at the first use).
    pub fn runner(&self) -> &HostRunner {
        self.runner
            .get_or_init(|| HostRunner::new(Path::new(&format!("/run/netns/{}", self.host))))
    }

    /// A plugin conf for direct calls on network `net` (as libcni would send it).
    pub fn conf(&self, net: &str, version: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": net,
            "type": "embedns",
            "dataDir": self.data_dir,
            "hostResolvConf": self.resolv_conf,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    }

    /// Replaces the host resolv.conf the plugin reads.
    pub fn set_host_resolv_conf(&self, text: &str) {
        let tmp = self.resolv_conf.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.resolv_conf).unwrap();
    }

    /// A fake upstream on `addr` in the host netns.
    pub fn upstream(&self, addr: &str, zone: &str, records: &[(&str, &str)]) -> FakeUpstream {
        FakeUpstream::start(
            Some(&format!("/run/netns/{}", self.host)),
            addr,
            zone,
            records,
        )
    }

    /// PIDs of the resolvers of this world.
    pub fn resolver_pids(&self) -> Vec<i32> {
        crate::host::resolver_pids(&self.data_dir)
    }

    /// The PID of the resolver serving a container (the resolver in its netns).
    pub fn resolver_pid(&self, c: &Container) -> i32 {
        let out = Command::new("ip")
            .args(["netns", "pids", &c.netns])
            .output()
            .expect("ip netns pids");
        let in_netns: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let ours: Vec<i32> = self
            .resolver_pids()
            .into_iter()
            .filter(|p| in_netns.contains(p))
            .collect();
        assert_eq!(ours.len(), 1, "resolvers in {}: {ours:?}", c.netns);
        ours[0]
    }

    /// Puts the `embedns`, `embedns-resolverd` and `embedns-syncd` of `dir` in this world's plugin dir in
    /// place of the ones there, as `make install` (or a package) upgrades a host.
    pub fn use_binaries(&self, dir: &Path) {
        for p in ["embedns", "embedns-resolverd", "embedns-syncd"] {
            if !dir.join(p).exists() {
                continue; // a release before the sync process
            }
            let tmp = self.bin_dir.join(format!(".{p}.new"));
            std::os::unix::fs::symlink(dir.join(p), &tmp).unwrap();
            std::fs::rename(&tmp, self.bin_dir.join(p)).unwrap();
        }
    }

    /// Drives this world with another cnitool (the libcni 1.3 one of `bins::newer`); once.
    pub fn use_cnitool(&self, tool: &Path) {
        self.cnitool
            .set(tool.to_path_buf())
            .expect("one cnitool per world");
    }

    /// Links the reference plugins of `dir` (CNI plugins 1.9 of `bins::newer`) into this
    /// world's plugin dir in place of Debian 12's.
    pub fn use_reference_plugins(&self, dir: &Path) {
        for p in REFERENCE_PLUGINS {
            let tmp = self.bin_dir.join(format!(".{p}.new"));
            std::os::unix::fs::symlink(dir.join(p), &tmp).unwrap();
            std::fs::rename(&tmp, self.bin_dir.join(p)).unwrap();
        }
    }

    /// Deletes a container's netns (as a runtime does after DEL).
    pub fn remove_netns(&self, c: &Container) {
        must(Command::new("ip").args(["netns", "del", &c.netns]));
    }

    /// Deletes a container's netns and makes a new one under the same name (and path).
    pub fn recreate_netns(&self, c: &Container) {
        must(Command::new("ip").args(["netns", "del", &c.netns]));
        must(Command::new("ip").args(["netns", "add", &c.netns]));
    }

    /// A directory of fake tools, each a shell script, and a PATH that puts it first.
    pub fn fake_tools(&self, label: &str, tools: &[(&str, &str)]) -> String {
        let dir = self.path(label);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, script) in tools {
            let path = dir.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The state directory's layout (`dataDir`).
    pub fn paths(&self) -> embedns_conf::paths::StatePaths {
        embedns_conf::paths::StatePaths::new(&self.data_dir)
    }

    /// Record files of a network in the store.
    pub fn records(&self, net: &str) -> Vec<String> {
        let dir = self.paths().network(net);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// How many sandboxes (per-container state dirs) the store holds.
    pub fn sandboxes(&self) -> usize {
        std::fs::read_dir(self.paths().sandboxes())
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Waits until a container's netns holds none of our rules: a DEL leaves their removal to
    /// a remover that acts when the netns outlives it by a second (`plugin/src/redirect_remover.rs`).
    pub fn wait_redirect_gone(&self, c: &Container, what: &str) {
        let mut rules = String::new();
        let gone = crate::wait::poll_until(std::time::Duration::from_secs(5), || {
            rules = self.nat_rules(c);
            (!rules.contains("EMBEDNS")).then_some(())
        });
        assert!(gone.is_some(), "{what}: rules left in {}: {rules}", c.netns);
    }

    /// `iptables -t nat -S` inside a container.
    pub fn nat_rules(&self, c: &Container) -> String {
        String::from_utf8_lossy(&self.exec(c, &["iptables", "-w", "-t", "nat", "-S"]).stdout)
            .into_owned()
    }

    /// Removes container `id`'s sandbox directory by hand (a runtime restarted without its
    /// state dir); the cgroups it named are removed when the world ends, as a runtime removes
    /// its pods' cgroups.
    pub fn remove_sandbox_by_hand(&self, id: &str) {
        let dir = self.paths().sandbox(id);
        let text = std::fs::read(self.paths().sandbox_file(id)).unwrap_or_default();
        if let Ok(sb) = serde_json::from_slice::<embedns_conf::sandbox::Sandbox>(&text) {
            self.inner.lock().unwrap().cgroups.extend(sb.cgroups);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A path in the world's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// The result of a `cnitool add` that must have succeeded.
pub(crate) fn added(net: &Network, c: &Container, out: Output) -> Value {
    assert!(
        out.status.success(),
        "cnitool add {} {} failed: {}{}",
        net.name,
        c.netns,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cnitool add prints the result")
}

fn id_of(env: &[(String, String)]) -> Option<&str> {
    env.iter()
        .find(|(k, _)| k == "CNI_CONTAINERID")
        .map(|(_, v)| v.as_str())
}

fn ifname_of(env: &[(String, String)]) -> Option<&str> {
    env.iter()
        .find(|(k, _)| k == "CNI_IFNAME")
        .map(|(_, v)| v.as_str())
}

impl Drop for World {
    fn drop(&mut self) {
        let inner = std::mem::take(&mut *self.inner.lock().unwrap());
        for (net, c, env) in inner.attached.iter().rev() {
            let env: Vec<(&str, &str)> = env
                .iter()
                .filter(|(k, _)| k != "CAP_ARGS")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let _ = self.cnitool("del", net, c, &env);
        }
        crate::host::kill_resolvers(&self.data_dir);
        crate::host::remove_cgroups(&inner.cgroups);
        // The cgroups a failed test's sandboxes still name (their processes are gone now).
        for sb in std::fs::read_dir(self.paths().sandboxes())
            .into_iter()
            .flatten()
        {
            let Ok(sb) = sb else { continue };
            let Ok(text) = std::fs::read(sb.path().join("sandbox.json")) else {
                continue;
            };
            if let Ok(sb) = serde_json::from_slice::<embedns_conf::sandbox::Sandbox>(&text) {
                crate::host::remove_cgroups(&sb.cgroups);
            }
        }
        for ns in &inner.containers {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            let etc = Path::new("/etc/netns").join(ns);
            if etc.exists() {
                let _ = std::fs::remove_dir_all(etc);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
