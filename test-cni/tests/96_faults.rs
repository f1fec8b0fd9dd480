//! Faults a real host produces: a plugin killed at any step of ADD, a netns deleted without
//! DEL, a container ID re-added in a new netns, concurrent verbs on one container, ghosts in
//! the index, GC past failures (the redirect's remover: `97_log_and_redirect.rs`). Each test injects its fault and checks
//! that a later DEL or GC leaves nothing behind and that nothing answers for a gone container.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use test_cni::calls::Direct;
use test_cni::{ip_of, wait_until, Container, Network, World};

/// Every crash point of ADD, in the order ADD reaches them.
const ADD_STEPS: [&str; 7] = [
    "add:recorded",
    "add:sandbox-saved",
    "add:resolver-forked",
    "add:resolver-recorded",
    "add:resolver-ready",
    "add:redirect-installed",
    "add:answered",
];

/// Whether cnitool reports its plugin killed: by a crash point (whose last words libcni
/// passes on) or by a signal from outside.
fn killed(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    !out.status.success()
        && (err.contains("test crash point reached") || err.contains("signal: killed"))
}

/// Whether a process runs (a zombie that its new parent has yet to reap does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| !s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// The container IDs that have a sandbox.
fn sandbox_ids(w: &World) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(w.paths().sandboxes())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Nothing of container `c` is left, and its name answers nothing on `asker`; the resolvers
/// running are exactly `expected`.
fn assert_gone(
    w: &World,
    net: &Network,
    c: &Container,
    name: &str,
    asker: &Container,
    expected: &[i32],
) {
    let mut want = expected.to_vec();
    want.sort();
    // A resolver killed at its start exits by itself: give it the time to.
    wait_until(
        Duration::from_secs(5),
        "only the expected resolvers",
        || {
            let mut pids = w.resolver_pids();
            pids.sort();
            (pids == want).then_some(())
        },
    );
    w.wait_redirect_gone(c, "after DEL or GC");
    assert!(
        !Path::new("/etc/netns").join(&c.netns).exists(),
        "/etc/netns/{} left",
        c.netns
    );
    assert!(
        w.resolve(asker, name, "A").is_empty(),
        "{name} still answers on {}",
        net.name
    );
}

#[test]
fn a_plugin_killed_at_every_step_of_add_leaves_nothing_after_del_or_gc() {
    let w = World::new("a_plugin_killed_at_every_step_of_add_leaves_nothing_after_del_or_gc");
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let cli_id = w.record_id("n1", &[]);
    let cli_pid = w.resolver_pid(&cli);
    for (i, step) in ADD_STEPS.iter().enumerate() {
        for by_gc in [false, true] {
            let c = w.container(&format!("k{i}{}", u8::from(by_gc)));
            let out = w
                .adding(&net, &c)
                .name("victim")
                .env(&[("EMBEDNS_TEST_CRASH_AT", step)])
                .run();
            assert!(
                killed(&out),
                "ADD was not killed at {step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                sandbox_ids(&w).len(),
                2,
                "the killed ADD's sandbox is there"
            );
            if by_gc {
                let out = w.gc("n1", &[(&cli_id, "eth0")]);
                assert!(out.success, "GC after a kill at {step}: {}", out.stdout);
            } else {
                w.del(&net, &c, &[]);
            }
            assert_eq!(
                sandbox_ids(&w),
                vec![cli_id.clone()],
                "after a kill at {step}"
            );
            assert_eq!(w.records("n1"), vec![format!("{cli_id}@eth0.json")]);
            assert_gone(&w, &net, &c, "victim", &cli, &[cli_pid]);
        }
    }
}

#[test]
fn a_plugin_killed_by_its_runtime_while_iptables_is_slow_leaves_no_resolver() {
    let w = World::new("a_plugin_killed_by_its_runtime_while_iptables_is_slow_leaves_no_resolver");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    let path = w.fake_tools(
        "slow",
        &[(
            "iptables-restore",
            "#!/bin/sh\nsleep 2\nexec /usr/sbin/iptables-restore \"$@\"\n",
        )],
    );
    // The runtime's timeout: ADD is SIGKILLed once its resolver runs, while the redirect's
    // iptables-restore is still sleeping.
    let adding = {
        let w = &w;
        let (net, c, path) = (&net, &c, &path);
        std::thread::scope(|s| {
            let add = s.spawn(move || w.adding(net, c).name("web").env(&[("PATH", path)]).run());
            wait_until(Duration::from_secs(5), "the resolver to start", || {
                (!w.resolver_pids().is_empty()).then_some(())
            });
            let plugin = w.bin_dir.join("embedns");
            let status = Command::new("pkill")
                .args(["-KILL", "-xf", &plugin.display().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "no plugin process to kill");
            add.join().unwrap()
        })
    };
    assert!(
        killed(&adding),
        "{}",
        String::from_utf8_lossy(&adding.stderr)
    );
    w.del(&net, &c, &[]);
    wait_until(Duration::from_secs(5), "DEL to stop the resolver", || {
        w.resolver_pids().is_empty().then_some(())
    });
    assert_eq!(w.sandboxes(), 0);
    assert!(w.records("n1").is_empty());
    // DEL waited for the killed ADD's iptables-restore; the rules then go.
    w.wait_redirect_gone(&c, "DEL after a killed ADD");
}

#[test]
fn a_netns_deleted_without_del_ends_its_resolver_and_gc_stops_orphans() {
    let w = World::new("a_netns_deleted_without_del_ends_its_resolver_and_gc_stops_orphans");
    let net = w.network("n1", json!({}));
    let quick = [("EMBEDNS_RESOLVER_CHECK_SECS", "1")];
    let slow = [("EMBEDNS_RESOLVER_CHECK_SECS", "3600")];
    let add = |c: &Container, name: &str, env: &[(&str, &str)]| {
        let out = w.adding(&net, c).name(name).env(env).run();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        w.resolver_pid(c)
    };
    let (a, b, c, d) = (
        w.container("a"),
        w.container("b"),
        w.container("c"),
        w.container("d"),
    );
    let pid_a = add(&a, "a", &quick);
    let pid_b = add(&b, "b", &[("EMBEDNS_RESOLVER_CHECK_SECS", "2")]);
    let pid_c = add(&c, "c", &quick);
    let pid_d = add(&d, "d", &slow);

    // a and b: the runtime deletes the netns and never calls DEL.
    for x in [&a, &b] {
        let out = Command::new("ip")
            .args(["netns", "del", &x.netns])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // c: its sandbox is removed by hand (a runtime restarted without its state dir).
    let sandbox_of = |pid: i32| -> String {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let i = args.iter().position(|a| a == "--container-id").unwrap();
        args[i + 1].clone()
    };
    let (sb_c, sb_d) = (sandbox_of(pid_c), sandbox_of(pid_d));
    w.remove_sandbox_by_hand(&sb_c);
    wait_until(
        Duration::from_secs(4),
        "a's resolver to exit (1 s period)",
        || (!alive(pid_a)).then_some(()),
    );
    wait_until(
        Duration::from_secs(4),
        "c's resolver to exit (1 s period)",
        || (!alive(pid_c)).then_some(()),
    );
    wait_until(
        Duration::from_secs(8),
        "b's resolver to exit (5 s period)",
        || (!alive(pid_b)).then_some(()),
    );

    // d: the same, but its resolver checks only hourly: GC finds the orphan.
    w.remove_sandbox_by_hand(&sb_d);
    assert!(alive(pid_d));
    let out = w.gc("n1", &[]);
    assert!(out.success, "GC: {}", out.stdout);
    assert!(!alive(pid_d), "GC left the orphan resolver running");
    assert!(w.resolver_pids().is_empty());
    assert!(w.records("n1").is_empty(), "{:?}", w.records("n1"));
    assert_eq!(w.sandboxes(), 0);
    assert!(
        !w.data_dir.join("networks/n1").exists(),
        "an empty network's state stays"
    );
}

#[test]
fn a_container_id_re_added_in_a_new_netns_gets_a_resolver_there() {
    let w = World::new("a_container_id_re_added_in_a_new_netns_gets_a_resolver_there");
    let ok = |verb: &str, c: &Container, id: &str, name: &str, ip: &str| {
        let out = w.direct(
            verb,
            Direct {
                net: "n1",
                container: c,
                id,
                name,
                ip,
                conf: json!({}),
            },
        );
        assert!(
            out.success,
            "{verb} in {}: {} {}",
            c.netns, out.stdout, out.stderr
        );
    };

    // Another path: podman keeping an ID across a restart after a failed DEL.
    let id = format!("re{}", test_cni::unique("id"));
    let (c1, c2) = (w.container("c1"), w.container("c2"));
    ok("ADD", &c1, &id, "web", "10.77.0.2");
    let old = w.resolver_pid(&c1);
    ok("ADD", &c2, &id, "web", "10.77.0.3");
    assert_eq!(w.resolve(&c2, "web", "A"), vec!["10.77.0.3"]);
    ok("CHECK", &c2, &id, "web", "10.77.0.3");
    assert!(!alive(old), "the old resolver runs on");
    assert!(
        !w.nat_rules(&c1).contains("EMBEDNS"),
        "{}",
        w.nat_rules(&c1)
    );
    assert_eq!(w.resolver_pids(), vec![w.resolver_pid(&c2)]);

    // The same path naming a new namespace: cnitool derives the ID from the path.
    let c3 = w.container("c3");
    let id3 = format!("re{}", test_cni::unique("id"));
    ok("ADD", &c3, &id3, "db", "10.77.0.4");
    w.recreate_netns(&c3);
    ok("ADD", &c3, &id3, "db", "10.77.0.5");
    assert_eq!(w.resolve(&c3, "db", "A"), vec!["10.77.0.5"]);
    ok("CHECK", &c3, &id3, "db", "10.77.0.5");
    assert_eq!(w.resolver_pids().len(), 2, "{:?}", w.resolver_pids());
    ok("DEL", &c2, &id, "web", "10.77.0.3");
    ok("DEL", &c3, &id3, "db", "10.77.0.5");
    assert!(w.resolver_pids().is_empty());
    assert_eq!(w.sandboxes(), 0);
}

#[test]
fn concurrent_add_del_check_of_one_container_id_never_leave_two_resolvers() {
    let w = World::new("concurrent_add_del_check_of_one_container_id_never_leave_two_resolvers");
    let c = w.container("c");
    let id = format!("cc{}", test_cni::unique("id"));
    let run = |verb: &str| {
        w.direct(
            verb,
            Direct {
                net: "n1",
                container: &c,
                id: &id,
                name: "solo",
                ip: "10.77.0.2",
                conf: json!({}),
            },
        )
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let most = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(w.resolver_pids().len());
            }
            most
        });
        let workers: Vec<_> = (0..6)
            .map(|t| {
                let run = &run;
                s.spawn(move || {
                    for i in 0..12 {
                        let verb = ["ADD", "DEL", "CHECK", "ADD"][(i + t) % 4];
                        let out = run(verb);
                        if verb != "CHECK" {
                            assert!(out.success, "{verb}: {} {}", out.stdout, out.stderr);
                        }
                    }
                })
            })
            .collect();
        // Every worker joined before the sampler stops, even when one failed.
        let failed: Vec<_> = workers.into_iter().filter_map(|h| h.join().err()).collect();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let most = sampler.join().unwrap();
        if let Some(panic) = failed.into_iter().next() {
            std::panic::resume_unwind(panic);
        }
        most
    });
    assert!(most <= 1, "{most} resolvers of one container at once");
    let out = run("ADD");
    assert!(out.success, "{}", out.stderr);
    assert_eq!(w.resolver_pids().len(), 1);
    assert!(run("CHECK").success);
    assert!(run("DEL").success);
    assert!(w.resolver_pids().is_empty(), "{:?}", w.resolver_pids());
    assert_eq!(w.sandboxes(), 0);
    assert!(w.records("n1").is_empty());
    w.wait_redirect_gone(&c, "DEL");
}

#[test]
fn no_ghost_when_del_dies_between_index_and_record_and_gc_removes_ghosts() {
    let w = World::new("no_ghost_when_del_dies_between_index_and_record_and_gc_removes_ghosts");
    let net = w.network("n1", json!({}));
    let (cli, web, db) = (w.container("cli"), w.container("web"), w.container("db"));
    w.adding(&net, &cli).name("cli").ok();
    let cli_id = w.record_id("n1", &[]);
    let web_ip = ip_of(&w.adding(&net, &web).name("web").ok());
    assert_eq!(w.resolve(&cli, "web", "A"), vec![web_ip]);

    // DEL killed between its two removals: the name must already be gone.
    let out = w.cnitool(
        "del",
        "n1",
        &web,
        &[("EMBEDNS_TEST_CRASH_AT", "remove:between-index-and-record")],
    );
    assert!(killed(&out), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        w.resolve(&cli, "web", "A").is_empty(),
        "web answers after its DEL died"
    );
    assert_eq!(
        w.records("n1").len(),
        2,
        "the record is what the crash left"
    );
    w.del(&net, &web, &[]);
    assert_eq!(w.records("n1"), vec![format!("{cli_id}@eth0.json")]);

    // A ghost made by hand (an index entry whose record is gone): GC removes it.
    let db_ip = ip_of(&w.adding(&net, &db).name("db").ok());
    let db_id = w.record_id("n1", &[&cli_id]);
    std::fs::remove_file(w.data_dir.join(format!("networks/n1/{db_id}@eth0.json"))).unwrap();
    assert_eq!(w.resolve(&cli, "db", "A"), vec![db_ip], "the ghost answers");
    let out = w.gc("n1", &[(&cli_id, "eth0"), (&db_id, "eth0")]);
    assert!(out.success, "GC: {}", out.stdout);
    assert!(w.resolve(&cli, "db", "A").is_empty(), "GC left the ghost");
    assert_eq!(w.resolve(&cli, "cli", "A").len(), 1);
}

#[test]
fn gc_goes_on_past_a_failure_and_the_last_del_removes_the_networks_state() {
    let w = World::new("gc_goes_on_past_a_failure_and_the_last_del_removes_the_networks_state");
    let net = w.network("n1", json!({}));
    let (a, b, c) = (w.container("a"), w.container("b"), w.container("c"));
    w.adding(&net, &a).name("a").ok();
    let id_a = w.record_id("n1", &[]);
    w.adding(&net, &b).name("b").ok();
    let id_b = w.record_id("n1", &[&id_a]);
    w.adding(&net, &c).name("c").ok();
    let id_c = w.record_id("n1", &[&id_a, &id_b]);
    let pid_c = w.resolver_pid(&c);
    // b's record cannot be removed (a directory where its file should be); c's sandbox is
    // gone, which leaves its resolver an orphan.
    let b_record = w.data_dir.join(format!("networks/n1/{id_b}@eth0.json"));
    std::fs::remove_file(&b_record).unwrap();
    std::fs::create_dir(&b_record).unwrap();
    std::fs::write(b_record.join("x"), b"").unwrap();
    w.remove_sandbox_by_hand(&id_c);

    let out = w.gc("n1", &[(&id_a, "eth0")]);
    assert!(!out.success, "GC hid a failure");
    let err = out.json();
    assert_eq!(err["code"], 105, "{err}");
    assert!(err["msg"].as_str().unwrap().contains(&id_b), "{err}");
    // Everything else was done.
    assert!(!alive(pid_c), "orphan resolver left");
    assert!(!w.records("n1").iter().any(|r| r.starts_with(&id_c)));
    assert_eq!(w.resolve(&a, "c", "A"), Vec::<String>::new());

    std::fs::remove_dir_all(&b_record).unwrap();
    let out = w.gc("n1", &[(&id_a, "eth0")]);
    assert!(out.success, "GC: {}", out.stdout);
    assert_eq!(w.records("n1"), vec![format!("{id_a}@eth0.json")]);
    assert_eq!(w.resolver_pids(), vec![w.resolver_pid(&a)]);
    w.del(&net, &a, &[]);
    assert!(
        !w.data_dir.join("networks/n1").exists(),
        "the last DEL left the network's state"
    );
    assert_eq!(w.sandboxes(), 0);
}

#[test]
fn a_panic_in_the_udp_task_ends_the_resolver_and_its_supervisor_starts_another() {
    let w =
        World::new("a_panic_in_the_udp_task_ends_the_resolver_and_its_supervisor_starts_another");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    let armed = [("EMBEDNS_TEST_CRASH_AT", "resolver:udp")];
    w.adding(&net, &c).name("c").env(&armed).ok();
    let pid = w.resolver_pid(&c);
    // The query that panics the UDP task (armed crash point): no answer comes, and the
    // resolver ends (never half-serving), then a new one serves.
    let d = w.dig(&c, &["+tries=1", "panic.embedns.test"]);
    assert!(d.status.is_empty(), "{d:?}");
    wait_until(Duration::from_secs(5), "the resolver to exit", || {
        (!alive(pid)).then_some(())
    });
    wait_until(Duration::from_secs(5), "a new resolver answering", || {
        (w.resolve(&c, "c", "A").len() == 1).then_some(())
    });
    assert_ne!(w.resolver_pid(&c), pid);
    let (code, report) = w.status();
    assert_eq!(code, 0, "{report:?}");
    let sup = report.containers[0]
        .supervisor
        .clone()
        .expect("its supervisor's account");
    assert_eq!(
        (sup.restarts, sup.last_exit.as_deref()),
        (1, Some("exited with 1"))
    );
    let check = w.cnitool("check", &net.name, &c, &[]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
