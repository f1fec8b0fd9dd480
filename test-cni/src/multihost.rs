//! Several hosts on one machine, one etcd member each:
//! each host is a [`World`] (its own host netns, state dir, conflists), joined to the others by
//! an underlay netns with a bridge, `10.99.0.<i>/24` on each host's `u0`. Host `i`'s slice of
//! a shared network is `10.77.<i>.0/24`. Its etcd member listens on `10.99.0.<i>` and
//! `127.0.0.1` of its host netns; its sync process is configured with its own member first,
//! then the others'. Every address lives in netns the cluster made, so runs never collide;
//! names are the worlds' unique ones; everything is removed on drop (members SIGKILLed, the
//! worlds' containers deleted, the underlay netns deleted).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use embedns_conf::multihost::keys::Layout;
use embedns_conf::multihost::shared::SyncStatus;
use serde_json::{json, Value};

use crate::certs::make_certs;
use crate::host::{must, unique};
use crate::wait::{poll_until, wait_until};
use crate::world::{Network, World};

/// One host: its world, its name in etcd keys and its underlay address.
pub struct Host {
    pub w: World,
    pub name: String,
    pub ip: String,
}

/// Which etcd a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Etcd {
    /// Debian 12's etcd 3.4.
    Debian,
    /// etcd 3.5 from Debian's newer suite (`bins::newer`).
    V3_5,
}

impl Etcd {
    /// `etcd` or `etcdctl` of this version.
    fn program(self, name: &str) -> PathBuf {
        match self {
            Etcd::Debian => PathBuf::from(name),
            Etcd::V3_5 => crate::bins::newer_bin().join(name),
        }
    }
}

/// Hosts, their etcd members and the underlay between them.
pub struct Cluster {
    pub id: String,
    underlay: String,
    pub hosts: Vec<Host>,
    /// The etcd key prefix of this run.
    pub prefix: String,
    /// The lease TTL the shared networks are configured with.
    pub ttl: u64,
    /// With TLS: the directory of the CA, the members' and the client's certificates.
    pub certs: Option<PathBuf>,
    members: std::sync::Mutex<Vec<Option<Child>>>,
    pub etcd: Etcd,
    /// With etcd's RBAC on: root's password (the harness's `etcdctl` runs as root).
    root_password: Option<String>,
}

impl Cluster {
    /// `n` hosts with an etcd cluster of one member per host, healthy when this returns.
    pub fn new(etcd: Etcd, test: &str, n: usize, ttl: u64) -> Cluster {
        Cluster::build(etcd, test, n, ttl, false)
    }

    /// [`Cluster::new`] whose members serve clients over TLS and require a client
    /// certificate signed by the run's own CA (made with openssl).
    pub fn with_tls(etcd: Etcd, test: &str, n: usize, ttl: u64) -> Cluster {
        Cluster::build(etcd, test, n, ttl, true)
    }

    /// [`Cluster::new`] with etcd's authentication on and docs/multihost.md's RBAC recipe: host `i`
    /// is etcd user `host<i>` (password in its world's `etcd-password`), whose role may read
    /// the prefix `<prefix>/` and write only its claim `<prefix>/<net>/host<i>` and the prefix
    /// `<prefix>/<net>/host<i>/` of network `net`.
    pub fn with_rbac(etcd: Etcd, test: &str, n: usize, ttl: u64, net: &str) -> Cluster {
        let mut c = Cluster::build(etcd, test, n, ttl, false);
        let root = format!("root-{}", unique(""));
        let ok = |c: &Cluster, args: &[&str]| {
            let out = c.etcdctl(0, args);
            assert!(
                out.status.success(),
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(
            &c,
            &[
                "user",
                "add",
                "root",
                &format!("--new-user-password={root}"),
            ],
        );
        ok(&c, &["user", "grant-role", "root", "root"]);
        let prefix = c.prefix.clone();
        for h in &c.hosts {
            let (user, password) = (h.name.as_str(), format!("pw-{}", unique("")));
            let keys = Layout::new(&prefix, net);
            let own = keys.claim(user);
            ok(&c, &["role", "add", user]);
            // Read the whole prefix; write the claim (an exact key) and the records under
            // `<claim>/`, which host `<user>x`'s keys are not.
            let (read_all, records) = (format!("{prefix}/"), keys.host_records(user));
            let grants = [
                ("--prefix=true", "read", &read_all),
                ("--prefix=false", "readwrite", &own),
                ("--prefix=true", "readwrite", &records),
            ];
            for (prefix_flag, perm, key) in grants {
                ok(
                    &c,
                    &["role", "grant-permission", user, prefix_flag, perm, key],
                );
            }
            ok(
                &c,
                &[
                    "user",
                    "add",
                    user,
                    &format!("--new-user-password={password}"),
                ],
            );
            ok(&c, &["user", "grant-role", user, user]);
            std::fs::write(h.w.dir.join("etcd-password"), format!("{password}\n")).unwrap();
        }
        ok(&c, &["auth", "enable"]);
        c.root_password = Some(root);
        c
    }

    fn build(etcd: Etcd, test: &str, n: usize, ttl: u64, tls: bool) -> Cluster {
        let id = unique("mh");
        let worlds: Vec<World> = (0..n).map(|_| World::new(test)).collect();
        // Named after the first world, whose name prefix an interrupted bench cleans up.
        let underlay = format!("{}-u", worlds[0].id);
        must(Command::new("ip").args(["netns", "add", &underlay]));
        let mut c = Cluster {
            prefix: format!("/{id}"),
            id,
            underlay,
            hosts: Vec::new(),
            ttl,
            certs: tls.then(|| worlds[0].dir.join("certs")),
            members: std::sync::Mutex::new(Vec::new()),
            etcd,
            root_password: None,
        };
        if let Some(dir) = &c.certs {
            make_certs(dir, n);
        }
        let u = c.underlay.clone();
        must(Command::new("ip").args(["-n", &u, "link", "set", "lo", "up"]));
        must(Command::new("ip").args(["-n", &u, "link", "add", "br0", "type", "bridge"]));
        must(Command::new("ip").args(["-n", &u, "link", "set", "br0", "up"]));
        for (w, i) in worlds.into_iter().zip(1..) {
            let ip = format!("10.99.0.{i}");
            let port = format!("h{i}");
            must(Command::new("ip").args([
                "-n", &w.host, "link", "add", "u0", "type", "veth", "peer", "name", &port, "netns",
                &u,
            ]));
            must(Command::new("ip").args([
                "-n",
                &w.host,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "u0",
            ]));
            must(Command::new("ip").args(["-n", &w.host, "link", "set", "u0", "up"]));
            must(Command::new("ip").args(["-n", &u, "link", "set", &port, "master", "br0", "up"]));
            c.hosts.push(Host {
                w,
                name: format!("host{i}"),
                ip,
            });
        }
        for i in 0..n {
            let child = c.spawn_member(i, "new");
            c.members.lock().unwrap().push(Some(child));
        }
        wait_until(Duration::from_secs(30), "the etcd cluster to serve", || {
            c.etcdctl(0, &["put", &format!("{}/.ready", c.prefix), "1"])
                .status
                .success()
                .then_some(())
        });
        c
    }

    fn spawn_member(&self, i: usize, state: &str) -> Child {
        let h = &self.hosts[i];
        let cluster: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(j, o)| format!("m{j}=http://{}:2380", o.ip))
            .collect();
        let log = std::fs::File::create(h.w.dir.join(format!("etcd-{state}.log"))).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &h.w.host])
            .arg(self.etcd.program("etcd"))
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(h.w.dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!(
                    "{s}://{}:2379,{s}://127.0.0.1:2379",
                    h.ip,
                    s = self.scheme()
                ),
            ])
            .args([
                "--advertise-client-urls",
                &format!("{}://{}:2379", self.scheme(), h.ip),
            ])
            .args(self.certs.iter().flat_map(|d| {
                let f = |n: &str| d.join(n).display().to_string();
                [
                    "--cert-file".into(),
                    f("server.pem"),
                    "--key-file".into(),
                    f("server-key.pem"),
                    "--trusted-ca-file".into(),
                    f("ca.pem"),
                    "--client-cert-auth".into(),
                ]
            }))
            .args(["--listen-peer-urls", &format!("http://{}:2380", h.ip)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}:2380", h.ip),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", &self.id])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd (apt-get install etcd-server)")
    }

    /// `etcdctl ARGS` against host `i`'s member, from its host netns.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        self.etcdctl_command(i)
            .args(args)
            .output()
            .expect("etcdctl")
    }

    /// `etcdctl ARGS` against host `i`'s member with `input` on its stdin (`txn`).
    pub fn etcdctl_with_input(&self, i: usize, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .etcdctl_command(i)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("etcdctl")
    }

    fn etcdctl_command(&self, i: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].w.host])
            .arg(self.etcd.program("etcdctl"))
            .args([
                "--endpoints",
                &format!("{}://127.0.0.1:2379", self.scheme()),
                "--command-timeout=3s",
            ])
            .args(self.certs.iter().flat_map(|d| {
                let f = |n: &str| d.join(n).display().to_string();
                [
                    format!("--cacert={}", f("ca.pem")),
                    format!("--cert={}", f("client.pem")),
                    format!("--key={}", f("client-key.pem")),
                ]
            }))
            .args(
                self.root_password
                    .iter()
                    .map(|p| format!("--user=root:{p}")),
            )
            .env("ETCDCTL_API", "3");
        cmd
    }

    /// `etcdctl ARGS` against host `i`'s member as etcd user `user` (with RBAC on).
    pub fn etcdctl_as(&self, i: usize, user: &str, password: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].w.host])
            .arg(self.etcd.program("etcdctl"))
            .args([
                "--endpoints",
                "http://127.0.0.1:2379",
                "--command-timeout=3s",
            ])
            .arg(format!("--user={user}:{password}"))
            .args(args)
            .env("ETCDCTL_API", "3");
        cmd.output().expect("etcdctl")
    }

    /// The embedns options of host `i` on a shared network: its etcd endpoints (its own
    /// member first), its host name, this run's prefix and TTL.
    pub fn etcd_options(&self, i: usize) -> Value {
        let mut endpoints = vec![format!("{}://{}:2379", self.scheme(), self.hosts[i].ip)];
        for (j, h) in self.hosts.iter().enumerate() {
            if j != i {
                endpoints.push(format!("{}://{}:2379", self.scheme(), h.ip));
            }
        }
        let mut etcd = json!({
            "endpoints": endpoints,
            "prefix": self.prefix,
            "host": self.hosts[i].name,
            "ttl": self.ttl,
        });
        if self.root_password.is_some() {
            let h = &self.hosts[i];
            etcd["auth"] = json!({"user": h.name, "passwordFile": h.w.dir.join("etcd-password")});
        }
        if let Some(d) = &self.certs {
            etcd["tls"] = json!({
                "ca": d.join("ca.pem"), "cert": d.join("client.pem"), "key": d.join("client-key.pem"),
            });
        }
        json!({ "etcd": etcd })
    }

    fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The conflist of network `name` on every host (host `i`'s slice `10.77.<i+1>.0/24`).
    pub fn network(&self, name: &str) -> Vec<Network> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                h.w.network_in(name, &format!("10.77.{}", i + 1), self.etcd_options(i))
            })
            .collect()
    }

    /// SIGKILLs host `i`'s etcd member.
    pub fn kill_member(&self, i: usize) {
        let taken = self.members.lock().unwrap()[i].take();
        if let Some(mut m) = taken {
            let _ = m.kill();
            let _ = m.wait();
        }
    }

    /// The host whose member leads the etcd cluster now (asked of host `i`'s member).
    pub fn leader(&self, i: usize) -> Option<usize> {
        let out = self.etcdctl(i, &["endpoint", "status", "--cluster", "-w", "json"]);
        let all: Value = serde_json::from_slice(&out.stdout).ok()?;
        let leading = all.as_array()?.iter().find(|e| {
            let s = &e["Status"];
            s["leader"].as_u64().is_some() && s["leader"] == s["header"]["member_id"]
        })?;
        let endpoint = leading["Endpoint"].as_str()?;
        self.hosts
            .iter()
            .position(|h| endpoint.contains(&format!("//{}:", h.ip)))
    }

    /// Whether host `i`'s member knows a leader (other than the member of host `not`).
    pub fn knows_leader(&self, i: usize, not: usize) -> bool {
        let out = self.etcdctl(i, &["endpoint", "status", "-w", "json"]);
        let Ok(all) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        let leader = all[0]["Status"]["leader"].as_u64().unwrap_or(0);
        let gone = self.member_id(not);
        leader != 0 && Some(leader) != gone
    }

    /// The etcd member id of host `i`'s member, as the cluster lists it.
    fn member_id(&self, i: usize) -> Option<u64> {
        let others = (0..self.hosts.len()).filter(|j| *j != i);
        for j in others {
            let out = self.etcdctl(j, &["member", "list", "-w", "json"]);
            let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
                continue;
            };
            let name = format!("m{i}");
            let found = list["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == name.as_str());
            if let Some(m) = found {
                return m["ID"].as_u64();
            }
        }
        None
    }

    /// Starts host `i`'s member again on its data; returns once it serves writes again (it
    /// rejoined the cluster and caught up), so that a fault injected next is the only one.
    pub fn restart_member(&self, i: usize) {
        assert!(
            self.members.lock().unwrap()[i].is_none(),
            "member {i} still runs"
        );
        let member = self.spawn_member(i, "existing");
        self.members.lock().unwrap()[i] = Some(member);
        wait_until(
            Duration::from_secs(30),
            "the restarted member to serve",
            || {
                self.etcdctl(i, &["put", &format!("{}/.ready", self.prefix), "2"])
                    .status
                    .success()
                    .then_some(())
            },
        );
    }

    /// Host `i` dies: its sync process, resolvers and etcd member are SIGKILLed (nothing is
    /// withdrawn; its records must expire with its lease).
    pub fn kill_host(&self, i: usize) {
        crate::host::kill_resolvers(&self.hosts[i].w.data_dir);
        self.kill_member(i);
        let gone = poll_until(Duration::from_secs(5), || {
            (crate::host::sync_pids(&self.hosts[i].w.data_dir).is_empty()
                && crate::host::resolver_pids(&self.hosts[i].w.data_dir).is_empty())
            .then_some(())
        });
        assert!(gone.is_some(), "host {i}'s processes outlived SIGKILL");
    }

    /// Cuts host `i` off etcd: its host netns drops everything to and from the other hosts'
    /// underlay addresses (its member loses the majority, the others' members are out of
    /// reach).
    pub fn cut(&self, i: usize) {
        for (j, h) in self.hosts.iter().enumerate() {
            if j != i {
                self.firewall(i, "-I", &h.ip);
            }
        }
    }

    /// Undoes [`Cluster::cut`].
    pub fn heal(&self, i: usize) {
        for (j, h) in self.hosts.iter().enumerate() {
            if j != i {
                self.firewall(i, "-D", &h.ip);
            }
        }
    }

    fn firewall(&self, i: usize, op: &str, peer: &str) {
        let host = &self.hosts[i].w.host;
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            must(Command::new("ip").args([
                "netns", "exec", host, "iptables", "-w", op, chain, dir, peer, "-j", "DROP",
            ]));
        }
    }

    /// The keys of `host`'s records on `network` in etcd (through host `i`'s member).
    pub fn record_keys(&self, i: usize, network: &str, host: &str) -> Vec<String> {
        let prefix = Layout::new(&self.prefix, network).host_records(host);
        let out = self.etcdctl(i, &["get", "--prefix", "--keys-only", &prefix]);
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Compacts etcd's history up to its current revision (through host `i`'s member): a
    /// watch resuming from before it is refused, so a returning host must list again.
    pub fn compact(&self, i: usize) {
        let out = self.etcdctl(
            i,
            &["get", &format!("{}/.ready", self.prefix), "-w", "json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("etcdctl get -w json");
        let rev = v["header"]["revision"].as_i64().expect("a revision");
        let out = self.etcdctl(i, &["compact", &rev.to_string(), "--physical"]);
        assert!(
            out.status.success(),
            "compact: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The sync status of network `net` on host `i` (`.sync.json`), if written.
    pub fn sync_status(&self, i: usize, net: &str) -> Option<SyncStatus> {
        let path = self.hosts[i].w.paths().sync_status(net);
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the sync processes said, for the failure's report.
            for h in &self.hosts {
                let sandboxes = std::fs::read_dir(h.w.paths().sandboxes())
                    .into_iter()
                    .flatten()
                    .flatten();
                let resolver_logs = sandboxes.map(|d| d.path().join("log/resolver.log"));
                let sync_logs = std::fs::read_dir(h.w.data_dir.join("sync"))
                    .into_iter()
                    .flatten()
                    .flatten();
                for log in sync_logs.map(|e| e.path()).chain(resolver_logs) {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    eprintln!("--- {} {}:\n{text}", h.name, log.display());
                }
            }
            for i in 0..self.hosts.len() {
                if self.members.lock().unwrap()[i].is_some() {
                    let keys = self.etcdctl(i, &["get", "--prefix", "--keys-only", &self.prefix]);
                    let leases = self.etcdctl(i, &["lease", "list"]);
                    eprintln!(
                        "--- etcd as member {i} sees it:\n{}{}{}",
                        String::from_utf8_lossy(&keys.stdout),
                        String::from_utf8_lossy(&leases.stdout),
                        String::from_utf8_lossy(&leases.stderr)
                    );
                }
            }
        }
        for h in &self.hosts {
            crate::host::kill_resolvers(&h.w.data_dir);
        }
        let n = self.members.lock().unwrap().len();
        for i in 0..n {
            self.kill_member(i);
        }
        // The worlds go next (their containers, host netns and dirs), then the underlay.
        self.hosts.clear();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.underlay])
            .status();
    }
}
