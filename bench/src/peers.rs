//! The peers, started for one phase and stopped on drop: aardvark-dns, dnsmasq and the
//! trivial responder inside a netns of the bench, Docker's own daemon with private roots,
//! the forwarding upstream, and the plugin chains compared in the ADD/DEL phase.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use test_cni::{wait_until, Container, World};

use crate::procs::{must, sh};

/// Kills a spawned peer (and anything left matching `pattern`) on drop.
pub struct Running {
    child: Option<Child>,
    pattern: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = &self.pattern {
            let _ = Command::new("pkill").args(["-KILL", "-f", p]).status();
        }
    }
}

fn spawn_in(netns: &str, args: &[&str], pattern: Option<String>) -> Running {
    let child = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
    Running {
        child: Some(child),
        pattern,
    }
}

/// Waits until something answers DNS on `addr` from inside `netns`.
fn wait_answering(netns: &str, addr: SocketAddr, name: &str) {
    wait_until(
        Duration::from_secs(10),
        &format!("{addr} to answer"),
        || {
            let out = sh(&format!(
            "ip netns exec {netns} dig @{} -p {} +time=1 +tries=1 {name} 2>/dev/null | grep -c 'status:'",
            addr.ip(),
            addr.port()
        ));
            (out.trim() == "1").then_some(())
        },
    );
}

/// The peers that answer `web` locally: aardvark-dns, dnsmasq, the trivial responder.
pub struct LocalPeers {
    pub aardvark: SocketAddr,
    pub dnsmasq: SocketAddr,
    pub trivial: SocketAddr,
    _running: Vec<Running>,
}

/// aardvark-dns, dnsmasq and the trivial responder in `peer`, each knowing `web`.
pub fn start_local(w: &World, today: &Today, peer: &Container, web_ip: IpAddr) -> LocalPeers {
    let dir = w.path("peers");
    std::fs::create_dir_all(dir.join("aardvark")).unwrap();
    // aardvark answers only askers it knows: register the client's 127.0.0.1.
    std::fs::write(
        dir.join("aardvark/bench"),
        format!("127.0.0.2\nc11e 127.0.0.1  cli\nbeef {web_ip}  web\n"),
    )
    .unwrap();
    std::fs::write(dir.join("hosts"), format!("{web_ip} web\n")).unwrap();
    let aardvark: SocketAddr = "127.0.0.2:5533".parse().unwrap();
    let dnsmasq: SocketAddr = "127.0.0.3:5534".parse().unwrap();
    let trivial: SocketAddr = "127.0.0.4:5535".parse().unwrap();
    let adir = dir.join("aardvark").display().to_string();
    let hosts = dir.join("hosts").display().to_string();
    let trivial_bin = std::env::current_exe()
        .unwrap()
        .with_file_name("trivial-responder");
    let aardvark_bin = today.aardvark();
    let running = vec![
        spawn_in(
            &peer.netns,
            &[
                aardvark_bin.to_str().unwrap(),
                "-c",
                &adir,
                "-p",
                "5533",
                "run",
            ],
            Some(format!("aardvark-dns -c {adir}")),
        ),
        spawn_in(
            &peer.netns,
            &[
                "dnsmasq",
                "-k",
                "--listen-address=127.0.0.3",
                "--port=5534",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--addn-hosts={hosts}"),
                "--user=root",
            ],
            None,
        ),
        spawn_in(
            &peer.netns,
            &[trivial_bin.to_str().unwrap(), "127.0.0.4:5535"],
            None,
        ),
    ];
    for a in [aardvark, dnsmasq, trivial] {
        wait_answering(&peer.netns, a, "web");
    }
    LocalPeers {
        aardvark,
        dnsmasq,
        trivial,
        _running: running,
    }
}

/// The peers' labels in rows and results: today's versions, which [`Today::find`] checks.
pub const AARDVARK: &str = "aardvark-dns 1.17";
pub const DOCKER: &str = "Docker 28.5 embedded DNS";

/// Today's peers, fetched by `test-cni/newer/fetch.sh peers` (bench.sh runs it) from Debian's
/// newer suites: Docker 28.5 (run with sid's containerd 2.x as its private containerd and
/// Debian 12's runc) and aardvark-dns 1.17.
#[derive(Clone)]
pub struct Today {
    /// The newer suites' cache (`peers/` and `root/` inside).
    dir: PathBuf,
}

impl Today {
    /// Finds the fetched peers and checks their versions against the labels.
    pub fn find() -> Today {
        let today = Today {
            dir: test_cni::bins::newer_peers(),
        };
        for (bin, want) in [
            (today.dockerd(), "version 28.5"),
            (today.aardvark(), "aardvark-dns 1.17"),
        ] {
            let out = Command::new(&bin).arg("--version").output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let text = text.unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
            assert!(
                text.contains(want),
                "{} says {text:?}, not {want}: run test-cni/newer/fetch.sh peers again",
                bin.display()
            );
        }
        today
    }

    pub fn aardvark(&self) -> PathBuf {
        self.dir.join("peers/usr/lib/podman/aardvark-dns")
    }

    fn dockerd(&self) -> PathBuf {
        self.dir.join("peers/usr/sbin/dockerd")
    }

    fn docker(&self) -> PathBuf {
        self.dir.join("peers/usr/bin/docker")
    }

    /// PATH for dockerd and its containerd: containerd 2.x and its shim, docker-init, then
    /// the host's (Debian 12's runc).
    fn path(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.dir.join("root/usr/bin").display(),
            self.dir.join("peers/usr/sbin").display(),
            self.dir.join("peers/usr/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// dockerd 28 with private roots, its own containerd, no host iptables and no default
/// bridge; one internal network with `web` and `cli` (bench/README.md says how).
pub struct Docker {
    dir: PathBuf,
    /// The docker CLI.
    cli: PathBuf,
    /// cli's netns, as a path (/proc/PID/ns/net).
    pub netns_path: String,
    _daemons: [Running; 2],
}

impl Docker {
    /// Starts containerd, dockerd and its two containers; `None` if Docker cannot run here.
    pub fn start(w: &World, today: &Today) -> Option<Docker> {
        let dir = w.path("docker");
        std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        let containerd = Self::containerd(&dir, today)?;
        let sock = format!("unix://{}/docker.sock", dir.display());
        let daemon = Command::new(today.dockerd())
            .env("PATH", today.path())
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg(format!("--containerd={}", dir.join("ctd.sock").display()))
            .args([
                "--containerd-namespace=embedns-bench",
                "-H",
                &sock,
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .ok()?;
        let running = Running {
            child: Some(daemon),
            pattern: None,
        };
        let cli = today.docker().display().to_string();
        let docker = |args: &str| sh(&format!("{cli} -H {sock} {args} 2>&1"));
        wait_until(Duration::from_secs(60), "dockerd to start", || {
            docker("info").contains("Server Version").then_some(())
        });
        std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox")).unwrap();
        let _ = std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin/sh"));
        must(&format!(
            "tar -C {}/rootfs -c . | {cli} -H {sock} import - local/busybox",
            dir.display()
        ));
        docker("network create --internal --subnet 10.231.21.0/24 refnet");
        docker("run -d --name web --network refnet --network-alias www local/busybox /bin/busybox sleep 3600");
        docker("run -d --name cli --network refnet local/busybox /bin/busybox sleep 3600");
        let pid = docker("inspect -f '{{.State.Pid}}' cli");
        let pid = pid.trim();
        if pid.parse::<u32>().is_err() {
            println!("  (Docker not measured: {pid})");
            return None;
        }
        Some(Docker {
            netns_path: format!("/proc/{pid}/ns/net"),
            _daemons: [running, containerd],
            cli: today.docker(),
            dir,
        })
    }

    /// containerd 2.x for dockerd alone: its own root, state and socket, the CRI and NRI
    /// plugins off. Its shims are killed with it (their command lines name `dir`).
    fn containerd(dir: &std::path::Path, today: &Today) -> Option<Running> {
        let d = dir.display();
        let config = format!(
            "version = 3\nroot = \"{d}/ctd/root\"\nstate = \"{d}/ctd/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.runtime\", \
             \"io.containerd.cri.v1.images\", \"io.containerd.nri.v1.nri\"]\n\
             [grpc]\n  address = \"{d}/ctd.sock\"\n[ttrpc]\n  address = \"{d}/ctd.sock.ttrpc\"\n\
             [debug]\n  address = \"{d}/ctd-debug.sock\"\n"
        );
        std::fs::write(dir.join("containerd.toml"), config).ok()?;
        let child = Command::new(today.dir.join("root/usr/bin/containerd"))
            .env("PATH", today.path())
            .arg("--config")
            .arg(dir.join("containerd.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).ok()?)
            .spawn()
            .ok()?;
        let sock = dir.join("ctd.sock");
        wait_until(Duration::from_secs(30), "containerd to start", || {
            sock.exists().then_some(())
        });
        Some(Running {
            child: Some(child),
            pattern: Some(format!("{d}/ctd")),
        })
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let sock = format!("unix://{}/docker.sock", self.dir.display());
        let cli = self.cli.display();
        let _ = sh(&format!(
            "{cli} -H {sock} rm -f web cli; {cli} -H {sock} network rm refnet"
        ));
        // The daemons are killed by `_daemons`; the mounts go with the exec and data roots.
        let _ = sh(&format!(
            "kill $(cat {0}/pid) 2>/dev/null; for i in $(seq 100); do [ -e {0}/pid ] || break; sleep 0.1; done; \
             umount -R {0}/exec {0}/data {0}/ctd 2>/dev/null; true",
            self.dir.display()
        ));
    }
}

/// The upstream of the forwarding phase: dnsmasq on the host netns' 127.0.0.53 (the
/// world's host resolv.conf names it), serving every name under `fwd.test` with TTL 60.
pub struct Upstream {
    pub addr: SocketAddr,
    _running: Running,
}

impl Upstream {
    /// Starts dnsmasq on the host netns' 127.0.0.53 as the forwarding upstream.
    pub fn start(w: &World) -> Upstream {
        let addr: SocketAddr = "127.0.0.53:53".parse().unwrap();
        let r = spawn_in(
            &w.host,
            &[
                "dnsmasq",
                "-k",
                "--listen-address=127.0.0.53",
                "--port=53",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--address=/fwd.test/10.9.9.9",
                "--local-ttl=60",
                "--user=root",
            ],
            None,
        );
        wait_answering(&w.host, addr, "x.fwd.test");
        Upstream { addr, _running: r }
    }
}

/// dnsmasq in the host netns forwarding to the upstream, as a peer of embedns's forwarding:
/// with its default cache (150 names) or none.
pub struct DnsmasqForwarder {
    pub addr: SocketAddr,
    pub pid: Option<i32>,
    _running: Running,
}

impl DnsmasqForwarder {
    /// Starts it on `addr` (a 127.0.0.x of the host netns, port 53).
    pub fn start(w: &World, addr: &str, upstream: SocketAddr, cache: bool) -> DnsmasqForwarder {
        let addr: SocketAddr = addr.parse().unwrap();
        let listen = format!("--listen-address={}", addr.ip());
        let server = format!("--server={}#{}", upstream.ip(), upstream.port());
        let mut args = vec![
            "dnsmasq",
            "-k",
            &listen,
            "--port=53",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            &server,
            "--user=root",
        ];
        if !cache {
            args.push("--cache-size=0");
        }
        let running = spawn_in(&w.host, &args, None);
        wait_answering(&w.host, addr, "x.fwd.test");
        let pid = crate::procs::udp_owner(&w.host, addr.ip(), Some(addr.port()));
        DnsmasqForwarder {
            addr,
            pid,
            _running: running,
        }
    }
}

/// aardvark-dns in the host netns forwarding to the same upstream (its resolv.conf is
/// /etc/netns/<host>/resolv.conf under `ip netns exec`).
pub struct Aardvark {
    pub addr: SocketAddr,
    etc: PathBuf,
    _running: Running,
}

impl Aardvark {
    /// Starts aardvark-dns forwarding to the same upstream; `None` if it cannot run.
    pub fn start_forwarding(w: &World, today: &Today) -> Option<Aardvark> {
        let dir = w.path("aardvark-fwd");
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("fwd"), "127.0.0.2\nc11e 127.0.0.1  cli\n").ok()?;
        let etc = PathBuf::from("/etc/netns").join(&w.host);
        std::fs::create_dir_all(&etc).ok()?;
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.53\n").ok()?;
        let d = dir.display().to_string();
        let bin = today.aardvark();
        let r = spawn_in(
            &w.host,
            &[bin.to_str().unwrap(), "-c", &d, "-p", "5533", "run"],
            Some(format!("aardvark-dns -c {d}")),
        );
        let addr: SocketAddr = "127.0.0.2:5533".parse().unwrap();
        wait_answering(&w.host, addr, "x.fwd.test");
        Some(Aardvark {
            addr,
            etc,
            _running: r,
        })
    }
}

impl Drop for Aardvark {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// The chains compared: bridge + host-local alone, + dnsname, + embedns.
pub fn chains(w: &World) -> Vec<(&'static str, String)> {
    let bridge = |n: u32| {
        json!({"type": "bridge", "bridge": format!("ebc{n}"), "isGateway": true, "ipMasq": false,
               "ipam": {"type": "host-local", "subnet": format!("10.99.{n}.0/24")}})
    };
    w.conflist(json!({"cniVersion": "0.4.0", "name": "plain", "plugins": [bridge(1)]}));
    let mut out = vec![("bridge + host-local", "plain".to_string())];
    if std::path::Path::new("/usr/lib/cni/dnsname").exists() {
        let _ = std::os::unix::fs::symlink("/usr/lib/cni/dnsname", w.bin_dir.join("dnsname"));
        w.conflist(
            json!({"cniVersion": "0.4.0", "name": "withdnsname", "plugins": [
                bridge(2),
                {"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": true}}
            ]}),
        );
        out.push(("+ dnsname", "withdnsname".to_string()));
    } else {
        println!("  (dnsname not measured: apt-get install golang-github-containernetworking-plugin-dnsname)");
    }
    w.conflist(
        json!({"cniVersion": "0.4.0", "name": "withembedns", "plugins": [
            bridge(3),
            {"type": "embedns", "capabilities": {"aliases": true, "dns": true}}
        ]}),
    );
    out.push(("+ embedns", "withembedns".to_string()));
    out
}
