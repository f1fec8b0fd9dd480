//! The resolver's file descriptors: it raises the runtime's soft limit (often 1024) to what
//! `maxInflight` forwarded queries and its TCP clients need, and when even the hard limit is
//! too low, a failed `accept` does not make it spin. One test, alone in its binary: it sets
//! this process's limits, which cnitool, the plugin and so the resolver inherit.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use nix::sys::resource::{setrlimit, Resource};
use serde_json::json;
use test_cni::{Container, Mode, World};

/// The resolver's soft limit on open files (/proc/PID/limits).
fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f[11] + f[12]
}

/// A DNS query for `name`, type A.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Runs `f` on a thread inside `c`'s netns (its sockets stay there).
fn in_netns<T: Send>(c: &Container, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&c.path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn the_resolver_raises_its_open_files_limit_and_does_not_spin_when_out_of_them() {
    let w =
        World::new("the_resolver_raises_its_open_files_limit_and_does_not_spin_when_out_of_them");
    let up = w.upstream("127.0.0.53:53", "up.test", &[]);
    up.set_mode(Mode::Silent);
    let net = w.network("n1", json!({"upstreamTimeoutMs": 4000}));

    // A runtime's usual 1024 soft limit: raised to what 1024 forwarded queries, 128 TCP
    // clients and their upstream connections need.
    // cnitool (Go) raises its own soft limit to the hard one and passes that on; containerd
    // and podman give their plugins the soft limit they started with: the plugin is run
    // through a wrapper that sets 1024, as they would.
    setrlimit(Resource::RLIMIT_NOFILE, 1024, 20000).unwrap();
    let plugin = w.bin_dir.join("embedns");
    let real = std::fs::read_link(&plugin).unwrap();
    std::fs::remove_file(&plugin).unwrap();
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nulimit -Sn 1024\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let a = w.container("first");
    w.adding(&net, &a).name("first").ok();
    let need = 1024 + 2 * 128 + 64;
    assert!(
        soft_nofile(w.resolver_pid(&a)) >= need,
        "{}",
        soft_nofile(w.resolver_pid(&a))
    );

    // A hard limit of 256: the soft one stays there, and running out of descriptors (queries
    // forwarded to an upstream that never answers hold one each) does not make the TCP
    // accept loop spin on the connections it cannot take.
    setrlimit(Resource::RLIMIT_NOFILE, 256, 256).unwrap();
    std::fs::remove_file(&plugin).unwrap();
    std::os::unix::fs::symlink(&real, &plugin).unwrap();
    let b = w.container("second");
    w.adding(&net, &b).name("second").ok();
    let pid = w.resolver_pid(&b);
    assert_eq!(soft_nofile(pid), 256);
    let _held = in_netns(&b, || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..400u16 {
            udp.send_to(&query(i, &format!("q{i}.up.test")), "127.0.0.11:53")
                .unwrap();
        }
        let tcp: Vec<TcpStream> = (0..3)
            .filter_map(|_| TcpStream::connect("127.0.0.11:53").ok())
            .collect();
        for mut t in &tcp {
            let q = query(9, "t.up.test");
            let _ = t.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat());
        }
        (udp, tcp)
    });
    let before = cpu_ticks(pid);
    // A spinning loop takes a whole core: 50 ticks (0.5 s of CPU) within 2 s.
    let spun = test_cni::wait::poll_until(Duration::from_secs(2), || {
        (cpu_ticks(pid) >= before + 50).then_some(())
    });
    assert!(
        spun.is_none(),
        "the resolver burns CPU while out of descriptors"
    );
    // Local names still answer.
    let d = w.dig(&b, &["first"]);
    assert_eq!(d.data().len(), 1, "{d:?}");
}
