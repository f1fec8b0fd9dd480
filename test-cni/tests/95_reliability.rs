//! Reliability and security: concurrency, faults, hostile input, least privilege. (Over 500
//! lines: one scenario per test, each needing its own set-up; the fault scenarios
//! are in 96_faults.rs, the log and the redirect in 97_log_and_redirect.rs.)

use embedns_conf::protocol::confinement::{ResolverConfinement, SyncConfinement};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde_json::json;
use test_cni::calls::Direct;
use test_cni::{ip_of, wait_until, Mode, World};

#[test]
fn stress_64_concurrent_add_del_with_queries() {
    let w = World::new("stress_64_concurrent_add_del_with_queries");
    let net = w.network("st", json!({}));
    let stable: Vec<_> = (0..4).map(|i| w.container(&format!("s{i}"))).collect();
    let mut stable_ips = BTreeMap::new();
    for (i, c) in stable.iter().enumerate() {
        stable_ips.insert(
            format!("s{i}"),
            ip_of(&w.adding(&net, c).name(&format!("s{i}")).ok()),
        );
    }
    let workers: Vec<_> = (0..64).map(|i| w.container(&format!("w{i}"))).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ops, bad_answers, queries) = std::thread::scope(|s| {
        // Live containers ask for the stable names all along: every answer must be right.
        let asker = s.spawn(|| {
            let (mut bad, mut n) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (name, ip) in &stable_ips {
                    n += 1;
                    if w.resolve(&stable[n % stable.len()], name, "A") != vec![ip.clone()] {
                        bad += 1;
                    }
                }
            }
            (bad, n)
        });
        // 64 workers: ADD, DEL, ADD, DEL, ... 8 operations each (512 in all); the odd ones
        // end with one more ADD, so a known half stays.
        let handles: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (w, net) = (&w, &net);
                s.spawn(move || {
                    let name = format!("w{i}");
                    for _ in 0..4 {
                        w.adding(net, c).name(&name).ok();
                        w.del(net, c, &[("CNI_ARGS", "IgnoreUnknown=1")]);
                    }
                    if i % 2 == 1 {
                        w.adding(net, c).name(&name).ok();
                        9
                    } else {
                        8
                    }
                })
            })
            .collect();
        let ops: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (bad, n) = asker.join().unwrap();
        (ops, bad, n)
    });
    println!("stress: {ops} ADD/DEL by 64 workers, {queries} queries during, {bad_answers} wrong");
    assert!(ops >= 500);
    assert_eq!(bad_answers, 0);
    // The store is exactly the containers alive: 4 stable + 32 odd workers.
    assert_eq!(w.records("st").len(), 4 + 32, "{:?}", w.records("st"));
    assert_eq!(w.resolver_pids().len(), 4 + 32);
    for (i, _) in workers.iter().enumerate() {
        let got = w.resolve(&stable[i % 4], &format!("w{i}"), "A");
        if i % 2 == 1 {
            assert_eq!(got.len(), 1, "live w{i} resolves");
        } else {
            assert!(got.is_empty(), "deleted w{i} still resolves: {got:?}");
        }
    }
    // Every live container resolves every stable name.
    for (i, c) in workers
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .take(6)
    {
        for (name, ip) in &stable_ips {
            assert_eq!(w.resolve(c, name, "A"), vec![ip.clone()], "from w{i}");
        }
    }
}

#[test]
fn iptables_failing_add_leaves_nothing() {
    let w = World::new("iptables_failing_add_leaves_nothing");
    let fake = w.path("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let tool = fake.join("iptables-restore");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho 'iptables-restore: simulated failure' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = w.adding(&net, &c).name("web").env(&[("PATH", &path)]).run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("simulated failure"), "{err}");
    assert!(w.records("n1").is_empty());
    assert!(w.resolver_pids().is_empty());
    assert!(!std::path::Path::new("/etc/netns").join(&c.netns).exists());
    assert_eq!(w.sandboxes(), 0, "sandbox state left behind");

    // DEL with iptables-restore failing: the resolver still stops, the rules still go
    // (piece by piece with iptables), and DEL succeeds.
    let c2 = w.container("c2");
    w.adding(&net, &c2).name("web2").ok();
    assert_eq!(w.resolver_pids().len(), 1);
    assert!(w.nat_rules(&c2).contains("EMBEDNS_OUTPUT"));
    w.del(&net, &c2, &[("PATH", &path)]);
    assert!(
        w.resolver_pids().is_empty(),
        "DEL left the resolver running"
    );
    w.wait_redirect_gone(&c2, "DEL with iptables-restore failing");
    assert!(w.records("n1").is_empty());
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_records_skipping_corrupt_ones() {
    let w = World::new("a_damaged_index_is_rebuilt_from_the_records_skipping_corrupt_ones");
    let net = w.network("n1", json!({}));
    let (a, b, cli) = (w.container("a"), w.container("b"), w.container("cli"));
    let ip_a = ip_of(&w.adding(&net, &a).name("alpha").ok());
    w.adding(&net, &b).name("beta").ok();
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "alpha", "A"), vec![ip_a.clone()]);
    let dir = w.data_dir.join("networks/n1");
    // A garbage record, beta's record cut in half, and the shared index replaced by garbage
    // (each renamed in, as the store writes).
    std::fs::write(dir.join(".tmp-x"), b"\x00\xffnot json").unwrap();
    std::fs::rename(dir.join(".tmp-x"), dir.join("garbage@eth0.json")).unwrap();
    let beta = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"beta\"")))
        .expect("beta's record");
    let text = std::fs::read_to_string(&beta).unwrap();
    std::fs::write(dir.join(".tmp-y"), &text[..text.len() / 2]).unwrap();
    std::fs::rename(dir.join(".tmp-y"), &beta).unwrap();
    std::fs::write(dir.join(".tmp-z"), vec![0xa5u8; 4096]).unwrap();
    std::fs::rename(dir.join(".tmp-z"), dir.join(".index")).unwrap();
    // The resolver notices the replaced index and answers from the records it can read
    // until a writer rebuilds the index.
    wait_until(Duration::from_secs(5), "beta to be dropped", || {
        w.resolve(&cli, "beta", "A").is_empty().then_some(())
    });
    assert_eq!(
        w.resolve(&cli, "alpha", "A"),
        vec![ip_a],
        "the rest is still served"
    );
    let log: String = std::fs::read_dir(w.paths().sandboxes())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path().join("log/resolver.log")).unwrap_or_default())
        .collect();
    assert!(
        log.contains("not indexed") && log.contains("corrupt"),
        "{log}"
    );
    // DEL still cleans up everything, the garbage of a container it never saw aside.
    for c in [&a, &b, &cli] {
        w.del(&net, c, &[]);
    }
    assert!(w.resolver_pids().is_empty());
}

#[test]
fn a_peers_add_and_del_wake_no_resolver() {
    let w = World::new("a_peers_add_and_del_wake_no_resolver");
    let net = w.network("n1", json!({}));
    let (a, b, c) = (w.container("a"), w.container("b"), w.container("c"));
    // a's liveness check (every 5 s by default) is pushed out of the measured window.
    let out = w
        .adding(&net, &a)
        .name("alpha")
        .env(&[("EMBEDNS_RESOLVER_CHECK_SECS", "3600")])
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.adding(&net, &b).name("beta").ok();
    let pid_a = w.resolver_pid(&a);
    let before = test_cni::context_switches(pid_a);
    let ip_c = ip_of(&w.adding(&net, &c).name("gamma").ok());
    w.del(&net, &b, &[]);
    // The shared index changed twice; a's resolver was not scheduled for either.
    assert_eq!(
        test_cni::context_switches(pid_a),
        before,
        "a's resolver woke up"
    );
    // Yet it answers the new peer at once, and no longer the removed one.
    assert_eq!(w.resolve(&a, "gamma", "A"), vec![ip_c]);
    assert!(w.resolve(&a, "beta", "A").is_empty());
    for x in [&a, &c] {
        w.del(&net, x, &[]);
    }
}

#[test]
fn read_only_and_full_state_dirs_give_clear_errors() {
    let w = World::new("read_only_and_full_state_dirs_give_clear_errors");
    let ro = w.path("ro");
    let full = w.path("full");
    for (dir, opts) in [(&ro, "ro,size=1m"), (&full, "size=64k")] {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
    }
    struct Unmount(Vec<std::path::PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = std::process::Command::new("umount").arg(d).status();
            }
        }
    }
    let _unmount = Unmount(vec![ro.clone(), full.clone()]);
    // Fill the small one.
    let mut f = std::fs::File::create(full.join("filler")).unwrap();
    let _ = f.write_all(&vec![0u8; 128 * 1024]);
    drop(f);
    let c = w.container("c");
    // ADD of c with `state` as the network's dataDir.
    let add = |state: serde_json::Value| {
        w.direct(
            "ADD",
            Direct {
                net: "n1",
                container: &c,
                id: "c1",
                name: "c",
                ip: "10.5.0.2",
                conf: json!({ "dataDir": state }),
            },
        )
    };
    for (dir, want_code, what) in [(&ro, 100, "Read-only"), (&full, 11, "No space")] {
        let out = add(json!(dir.join("state")));
        assert!(!out.success);
        let e = out.json();
        assert_eq!(e["code"], want_code, "{e}");
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(
            text.contains(what) && text.contains(&dir.display().to_string()),
            "{text}"
        );
    }
    assert!(w.resolver_pids().is_empty());

    // A dataDir the resolvers' user cannot reach (a 0700 directory above it): a clear error,
    // not resolvers that answer "no such name" for want of reading the store.
    let closed = w.path("closed");
    std::fs::create_dir_all(&closed).unwrap();
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = add(json!(closed.join("state")));
    assert!(!out.success);
    let e = out.json();
    assert_eq!(e["code"], 7, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&closed.display().to_string()) && msg.contains("700"),
        "{msg}"
    );
    assert!(w.resolver_pids().is_empty());
}

#[test]
fn hostile_upstreams_and_tcp_clients_do_not_stop_service() {
    let w = World::new("hostile_upstreams_and_tcp_clients_do_not_stop_service");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.9")]);
    let net = w.network("n1", json!({"upstreamTimeoutMs": 500}));
    let (web, cli) = (w.container("web"), w.container("cli"));
    let ip = ip_of(&w.adding(&net, &web).name("web").ok());
    w.adding(&net, &cli).name("cli").ok();
    let pid = w.resolver_pids();
    // Oversized replies over UDP and TCP: relayed or refused, never a crash.
    up.set_mode(Mode::Oversized);
    w.dig(&cli, &["a.up.test"]);
    w.dig(&cli, &["+tcp", "a.up.test"]);
    up.set_mode(Mode::Answer);
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.9"]);

    // 100 TCP clients that connect and send nothing, 20 that send half a message.
    let conns: Vec<TcpStream> = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&cli.path).unwrap();
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut v = Vec::new();
            for i in 0..120 {
                let mut c = TcpStream::connect("127.0.0.11:53").expect("connect");
                if i >= 100 {
                    let _ = c.write_all(&[0, 40, 0x12, 0x34, 1]);
                }
                v.push(c);
            }
            v
        })
        .join()
        .unwrap()
    });
    // Others are still served, over UDP and TCP.
    assert_eq!(w.resolve(&cli, "web", "A"), vec![ip.clone()]);
    assert_eq!(w.dig(&cli, &["+tcp", "web"]).data(), vec![ip.clone()]);
    // The server closes the silent and the half-sent connections after its deadlines.
    let start = Instant::now();
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        let n = std::io::Read::read(&mut c, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server closes, it never answers half a message");
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(w.resolver_pids(), pid, "the resolver never restarted");
}

#[test]
fn resolver_runs_without_capabilities_or_stray_fds() {
    let w = World::new("resolver_runs_without_capabilities_or_stray_fds");
    let _up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.9")]);
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    // It still forwards from the host netns with no capabilities.
    assert_eq!(w.resolve(&c, "a.up.test", "A"), vec!["10.9.9.9"]);
    let pid = w.resolver_pids()[0];
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let field = |k: &str| {
            test_cni::line_starting(&status, k)
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(
            field("CapEff:"),
            "0000000000000000",
            "thread {:?}",
            task.file_name()
        );
        assert_eq!(field("CapPrm:"), "0000000000000000");
        assert_eq!(field("CapBnd:"), "0000000000000000");
        assert_eq!(field("NoNewPrivs:"), "1");
        // An unprivileged identity and the seccomp filter, in every thread.
        // An identity of their own: not nobody/nogroup (65534), which other software runs as.
        assert_eq!(field("Uid:"), "65530");
        assert_eq!(field("Gid:"), "65530");
        assert_eq!(field("Seccomp:"), "2", "mode 2: a filter");
    }
    // What a resolver taken over could try, confined the same way: write a root-owned file
    // (the plugin, which runs as root later), create a file, open a netlink socket, exec.
    let plugin = w.bin_dir.join("embedns").canonicalize().unwrap();
    let plugin = plugin.display().to_string();
    let r: ResolverConfinement = confinement_report(
        &w.bin_dir.join("embedns-resolverd"),
        &["65530:65530", &plugin],
    );
    assert_eq!(r.uid, 65530, "{r:?}");
    refused(&[("writeAsUser", &r.write_as_user)], "Permission denied");
    let blocked = [
        ("write", &r.write),
        ("create", &r.create),
        ("netlink", &r.netlink),
        ("exec", &r.exec),
        ("renameOver", &r.rename_over),
        ("setown", &r.setown),
    ];
    refused(&blocked, "Operation not permitted");
    // Landlock (kernel 6.7+): a TCP connect to a port no upstream uses, etcd's on loopback.
    refused(&[("connectTcp", &r.connect_tcp)], "Permission denied");
    // Each refusal is counted (the serving resolver reports its count in `embedns status`).
    assert!(r.denied >= 6, "{r:?}");
    // Its fds: stdio on /dev/null, sockets, its log; nothing else (the indexes are mapped,
    // their files closed).
    let sandbox = w.paths().sandboxes();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
    {
        let target = std::fs::read_link(fd.path()).unwrap().display().to_string();
        let ok = target == "/dev/null"
            || target.starts_with("socket:")
            || target.starts_with("anon_inode:")
            || target.starts_with(&sandbox.display().to_string())
                && (target.ends_with("/log/resolver.log")
                    || target.ends_with("/log/resolver.log.1"));
        assert!(ok, "unexpected fd {:?} -> {target}", fd.file_name());
    }
}

#[test]
fn links_never_leak_and_internal_never_forwards() {
    let w = World::new("links_never_leak_and_internal_never_forwards");
    let up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.9")]);
    let net = w.network("n1", json!({"internal": true}));
    let (web, owner, other) = (
        w.container("web"),
        w.container("owner"),
        w.container("other"),
    );
    let ip = ip_of(&w.adding(&net, &web).name("web").ok());
    w.adding(&net, &owner)
        .name("owner")
        .args("EMBEDNS_LINKS=web:secret")
        .ok();
    w.adding(&net, &other).name("other").ok();
    assert_eq!(w.resolve(&owner, "secret", "A"), vec![ip.clone()]);
    // R4: the link alias in every spelling, over UDP and TCP, from another container.
    for q in [
        "secret",
        "SECRET",
        "secret.",
        "secret.n1",
        "Secret.N1.",
        "secret.corp.example",
    ] {
        for tcp in [false, true] {
            let args: Vec<&str> = if tcp {
                vec!["+tcp", q, "A"]
            } else {
                vec![q, "A"]
            };
            assert!(
                w.dig(&other, &args).answers.is_empty(),
                "{q} leaked (tcp {tcp})"
            );
        }
    }
    let ptr = w.dig(&other, &["-x", &ip]);
    assert!(
        !ptr.data().iter().any(|d| d.contains("secret")),
        "{:?}",
        ptr.data()
    );
    // R21: nothing of any kind reaches the host's upstream.
    for args in [
        vec!["a.up.test"],
        vec!["+tcp", "a.up.test"],
        vec!["a.up.test", "MX"],
        vec!["a.up.test", "TXT"],
        vec!["a.up.test", "ANY"],
        vec!["-x", "192.0.2.1"],
        vec!["nosuchname", "MX"],
        vec!["secret.up.test"],
    ] {
        let d = w.dig(&other, &args);
        assert!(
            d.status == "SERVFAIL" || d.status == "NOERROR",
            "{args:?}: {}",
            d.status
        );
    }
    assert_eq!(
        up.queries(),
        0,
        "an internal network forwarded to the host's upstream"
    );
}

#[test]
fn names_from_cni_input_are_validated() {
    let w = World::new("names_from_cni_input_are_validated");
    let net = w.network("n1", json!({}));
    for (i, (args, cap)) in [
        ("K8S_POD_NAME=../../etc", None),
        ("K8S_POD_NAME=a b", None),
        ("EMBEDNS_LINKS=web:../x", None),
        ("", Some(json!({"aliases": ["ok", "bad/alias"]}))),
        ("", Some(json!({"links": [{"name": "x", "alias": "b@d"}]}))),
    ]
    .into_iter()
    .enumerate()
    {
        // libcni does not DEL after a failed ADD: each try gets a fresh netns.
        let c = w.container(&format!("c{i}"));
        let out = w.adding(&net, &c).args(args).cap_opt(cap.clone()).run();
        assert!(!out.status.success(), "{args} {cap:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid network configuration"), "{err}");
    }
    assert!(w.records("n1").is_empty());
    assert!(w.resolver_pids().is_empty());
}

#[test]
fn a_sync_process_may_write_only_its_networks_state_and_connect_only_to_its_endpoints() {
    let w = World::new(
        "a_sync_process_may_write_only_its_networks_state_and_connect_only_to_its_endpoints",
    );
    // What a worker of network n1 has: its directory and the sync log directory.
    std::fs::create_dir_all(w.data_dir.join("networks/n1")).unwrap();
    std::fs::create_dir_all(w.data_dir.join("sync")).unwrap();
    let root_file = w.path("root-file");
    std::fs::write(&root_file, "root's\n").unwrap();
    let data_dir = w.data_dir.display().to_string();
    let file = root_file.display().to_string();
    // A root UNIX socket (a container runtime's API is one) and another root process.
    let socket = w.path("root.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let syncd = test_cni::bins::bin_dir().join("embedns-syncd");
    let r: SyncConfinement = confinement_report(
        &syncd,
        &[
            &data_dir,
            "n1",
            &file,
            &socket.display().to_string(),
            &other.id().to_string(),
        ],
    );
    let _ = other.kill();
    let _ = other.wait();
    // What uid 0 may do without any capability, refused by the worker's seccomp filter.
    let seccomp = [
        ("connectUnix", &r.connect_unix),
        ("signal", &r.signal),
        ("exec", &r.exec),
    ];
    refused(&seccomp, "Operation not permitted");
    assert_eq!(r.tcp_socket, "ok", "{r:?}");
    // uid 0 without capabilities, yet Landlock refuses writes outside its state and TCP to a
    // port that is no endpoint's (etcd's own 2379 stays reachable).
    let landlock = [
        ("write", &r.write),
        ("createTmp", &r.create_tmp),
        ("connectTcp", &r.connect_tcp),
    ];
    refused(&landlock, "Permission denied");
    assert_eq!(r.create_own, "ok", "{r:?}");
    assert_eq!(std::fs::read_to_string(&root_file).unwrap(), "root's\n");
}

/// Each of `outcomes` (a confinement report's, by its name) failed with `error`.
fn refused(outcomes: &[(&str, &String)], error: &str) {
    for (name, outcome) in outcomes {
        assert!(outcome.contains(error), "{name}: {outcome}");
    }
}

/// `PROGRAM --confinement-check ARGS`: the report of what it could do once confined.
fn confinement_report<T: serde::de::DeserializeOwned>(
    program: &std::path::Path,
    args: &[&str],
) -> T {
    let out = std::process::Command::new(program)
        .arg("--confinement-check")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
