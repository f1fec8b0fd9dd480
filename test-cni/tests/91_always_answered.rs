//! Always answered (R25, R26): a resolver that dies for any reason but DEL is started again
//! by its supervisor, answering through 127.0.0.11 and through the runtime's nameservers;
//! while none can answer, R26's catch is taken away (the container asks those nameservers
//! directly) and it returns once one answers; a DEL during restarts leaves nothing. Each
//! resolver lives in a leaf cgroup beneath the `cgroupPath` the runtime gives, else beneath
//! embedns's own parent, never in the caller's. Real netns, iptables, cnitool and dig; the
//! "upstream" is a fake server in the test's host netns. containerd 2.x's pod cgroup is in
//! 75_containerd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use test_cni::{ip_of, wait_until, Container, FakeUpstream, Network, World};

/// What [`setup`] gives: the world, n1, the fake upstream, web's IP, cli, and the file whose
/// presence makes cli's restarted resolvers fail (when `failing` was asked for).
struct Setup {
    w: World,
    net: Network,
    _up: FakeUpstream,
    web_ip: String,
    cli: Container,
    flag: PathBuf,
}

/// A world whose host resolv.conf names the gateway of n1 (a fake upstream there), with web
/// and cli on n1; with `failing`, every resolver of cli after the first fails to start while
/// `flag` exists (a test crash point, armed through cli's ADD).
fn setup(test: &str, failing: bool) -> Setup {
    let w = World::new(test);
    let flag = w.path("failing");
    let armed = format!("resolver:restart@{}", flag.display());
    let env: &[(&str, &str)] = if failing {
        std::fs::write(&flag, "").unwrap();
        &[("EMBEDNS_TEST_CRASH_AT", &armed)]
    } else {
        &[]
    };
    let net = w.network("n1", json!({}));
    let gw = net.gateway();
    w.set_host_resolv_conf(&format!("nameserver {gw}\n"));
    let web = w.container("web");
    let web_ip = ip_of(&w.adding(&net, &web).name("web").ok());
    let up = w.upstream(&format!("{gw}:53"), "up.test", &[("a.up.test", "10.9.9.1")]);
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").env(env).ok();
    Setup {
        w,
        net,
        _up: up,
        web_ip,
        cli,
        flag,
    }
}

/// Whether `name` answers `ip` through `server` from inside `c`.
fn answers(w: &World, c: &Container, server: &str, name: &str, ip: &str) -> bool {
    w.dig_at(c, server, &["+time=1", "+tries=1", name]).data() == vec![ip.to_string()]
}

/// Whether nat/EMBEDNS_CATCH in `c` catches anything (R26).
fn catching(w: &World, c: &Container) -> bool {
    w.nat_rules(c)
        .lines()
        .any(|l| l.starts_with("-A EMBEDNS_CATCH") && l.contains("DNAT"))
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
}

#[test]
fn r25_a_killed_resolver_answers_again_through_127_0_0_11_and_the_runtimes_nameservers() {
    let Setup {
        w,
        net,
        _up: up,
        web_ip,
        cli,
        ..
    } = setup(
        "r25_a_killed_resolver_answers_again_through_127_0_0_11_and_the_runtimes_nameservers",
        false,
    );
    let gw = net.gateway();
    let before = w.resolver_pid(&cli);
    assert_eq!(w.resolver_status("cli").pid as i32, before);
    kill9(before);
    wait_until(
        Duration::from_secs(5),
        "answers through 127.0.0.11 again",
        || answers(&w, &cli, "127.0.0.11", "web", &web_ip).then_some(()),
    );
    assert!(
        answers(&w, &cli, &gw, "web", &web_ip),
        "R26's catch serves the new resolver"
    );
    // Forwarded queries of the new resolver leave the netns (the catch still exempts it).
    assert!(answers(&w, &cli, &gw, "a.up.test", "10.9.9.1"));
    assert_eq!(up.queries(), 1);
    let after = w.resolver_pid(&cli);
    assert_ne!(after, before, "a new resolver");

    let (_, report) = w.status();
    let c = report
        .containers
        .iter()
        .find(|c| c.name.as_deref() == Some("cli"))
        .expect("cli in the status");
    let sup = c.supervisor.as_ref().expect("the supervisor's account");
    assert_eq!(sup.restarts, 1, "{sup:?}");
    assert_eq!(sup.last_exit.as_deref(), Some("killed by SIGKILL"));
    assert!(!sup.catch_cleared);
    let (code, text) = w.status_text(&["cli"]);
    assert_eq!(code, 0, "healthy again: {text}");
    assert!(
        text.contains("restarted 1 times; the last resolver before this one killed by SIGKILL"),
        "{text}"
    );
    let log = std::fs::read_to_string(w.paths().resolver_log(&c.id)).unwrap();
    assert!(
        log.contains("restarting: the resolver before this one killed by SIGKILL"),
        "{log}"
    );
}

#[test]
fn r26_while_no_resolver_can_answer_the_runtimes_nameservers_are_asked_directly() {
    let Setup {
        w,
        net,
        _up: _upstream,
        web_ip,
        cli,
        flag,
    } = setup(
        "r26_while_no_resolver_can_answer_the_runtimes_nameservers_are_asked_directly",
        true,
    );
    let gw = net.gateway();
    assert!(catching(&w, &cli));
    kill9(w.resolver_pid(&cli));
    // Every restart fails: within a few seconds the catch is gone and the runtime's
    // nameserver answers itself (it knows a.up.test, not the peer web).
    wait_until(Duration::from_secs(10), "the catch taken away", || {
        (!catching(&w, &cli)).then_some(())
    });
    assert!(
        answers(&w, &cli, &gw, "a.up.test", "10.9.9.1"),
        "asked directly"
    );
    assert!(
        !answers(&w, &cli, &gw, "web", &web_ip),
        "no resolver answers the peer"
    );
    let (code, report) = w.status();
    assert_ne!(code, 0, "status reports the trouble");
    let sup = report
        .containers
        .iter()
        .find(|c| c.name.as_deref() == Some("cli"))
        .and_then(|c| c.supervisor.clone())
        .expect("the supervisor's account");
    assert!(sup.catch_cleared && sup.restarts >= 2, "{sup:?}");
    assert!(
        sup.last_exit
            .as_deref()
            .unwrap_or("")
            .contains("exited with 1"),
        "{sup:?}"
    );
    let (_, text) = w.status_text(&["cli"]);
    assert!(text.contains("R26 fails open"), "{text}");

    // The failure ends: the next restart answers, and the catch is back.
    std::fs::remove_file(&flag).unwrap();
    wait_until(
        Duration::from_secs(40),
        "a resolver answering again",
        || answers(&w, &cli, &gw, "web", &web_ip).then_some(()),
    );
    assert!(catching(&w, &cli));
    assert!(answers(&w, &cli, "127.0.0.11", "web", &web_ip));
}

#[test]
fn r25_a_del_during_restarts_leaves_nothing_behind() {
    let Setup { w, net, cli, .. } = setup("r25_a_del_during_restarts_leaves_nothing_behind", true);
    let cli_id = sandbox_of(&w, &cli);
    let leaves = leaves_of(&w, &cli_id);
    assert!(!leaves.is_empty(), "the resolver has cgroups of its own");
    kill9(w.resolver_pid(&cli));
    wait_until(Duration::from_secs(10), "restarts that fail", || {
        let (_, r) = w.status();
        r.containers
            .iter()
            .filter_map(|c| c.supervisor.as_ref())
            .any(|s| s.restarts >= 2)
            .then_some(())
    });
    w.del(&net, &cli, &[]);
    let supervisors = test_cni::host::supervisor_pids(&w.data_dir);
    assert_eq!(
        supervisors.len(),
        1,
        "only web's supervisor is left: {supervisors:?}"
    );
    assert_eq!(w.resolver_pids().len(), 1, "only web's resolver is left");
    assert_eq!(w.sandboxes(), 1);
    w.wait_redirect_gone(&cli, "DEL during restarts");
    for leaf in leaves {
        assert!(!leaf.exists(), "{} removed", leaf.display());
    }
}

#[test]
fn r25_a_container_whose_netns_goes_without_a_del_is_released() {
    // containerd and podman run DEL with the conf they hold now: after `embedns unchain`
    // (or a hand edit) the runtime removes a container's netns without calling embedns.
    let Setup { w, net, cli, .. } = setup(
        "r25_a_container_whose_netns_goes_without_a_del_is_released",
        false,
    );
    let cli_id = sandbox_of(&w, &cli);
    let leaves = leaves_of(&w, &cli_id);
    assert!(!leaves.is_empty(), "the resolver has cgroups of its own");
    let other = w.container("other");
    w.adding(&net, &other).name("other").ok();
    assert_eq!(w.resolve(&other, "cli", "A").len(), 1);
    w.remove_netns(&cli);
    wait_until(
        Duration::from_secs(10),
        "cli's resolver, sandbox and record gone",
        || {
            let gone = w.sandboxes() == 2
                && w.resolver_pids().len() == 2
                && !w.records("n1").iter().any(|r| r.starts_with(&cli_id));
            gone.then_some(())
        },
    );
    assert!(
        w.resolve(&other, "cli", "A").is_empty(),
        "a released name answers no more"
    );
    for leaf in leaves {
        assert!(!leaf.exists(), "{} removed", leaf.display());
    }
}

/// The ID of the container whose sandbox names `c`'s netns.
fn sandbox_of(w: &World, c: &Container) -> String {
    let dir = w.paths().sandboxes();
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|id| {
            std::fs::read_to_string(dir.join(id).join("sandbox.json"))
                .is_ok_and(|t| t.contains(&format!("\"{}\"", c.path)))
        })
        .expect("a sandbox for the container")
}

/// The leaf cgroups the sandbox of container `id` names.
fn leaves_of(w: &World, id: &str) -> Vec<PathBuf> {
    let text = std::fs::read(w.paths().sandbox_file(id)).unwrap();
    let sb: embedns_conf::sandbox::Sandbox = serde_json::from_slice(&text).unwrap();
    sb.cgroups
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("embedns-"))
        })
        .collect()
}

/// Every cgroup path of process `pid` (`/proc/<pid>/cgroup`: one line per hierarchy).
fn cgroups_of(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .map(|l| l.splitn(3, ':').nth(2).unwrap_or("").to_string())
        .collect()
}

/// The `oom_score_adj` a resolver gets here: -998, where root may lower it (CAP_SYS_RESOURCE;
/// a sandboxed root may lack it), else the caller's.
fn expected_adj() -> String {
    let lowered = std::process::Command::new("sh")
        .args(["-c", "echo -998 > /proc/self/oom_score_adj"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if lowered {
        "-998".into()
    } else {
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .to_string()
    }
}

/// The resolver of `c` and its supervisor lie in `expected` in every hierarchy, with the OOM
/// killer's adjustment below any container process's.
fn assert_placed(w: &World, c: &Container, expected: &str) {
    let child = w.resolver_pid(c);
    let parent = test_cni::host::supervisor_pids(&w.data_dir)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| {
                s[s.rfind(')').unwrap() + 2..].split(' ').nth(1) == Some(&p.to_string())
            })
        })
        .expect("the resolver's supervisor");
    for pid in [child, parent] {
        let paths = cgroups_of(pid);
        assert!(!paths.is_empty());
        for p in &paths {
            assert_eq!(p, expected, "pid {pid}: {paths:?}");
        }
        let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        assert_eq!(adj.trim(), expected_adj());
    }
}

#[test]
fn r25_the_resolver_lives_in_a_leaf_beneath_the_runtimes_cgroup_path_else_embedns_own() {
    let test = "r25_the_resolver_lives_in_a_leaf_beneath_the_runtimes_cgroup_path_else_embedns_own";
    let w = World::new(test);
    let net = w.network("n1", json!({}));
    let unique = format!("embedns-test-{}", std::process::id());
    // cgroupfs's form (`/kubepods/burstable/pod<uid>`).
    let pod = format!("/{unique}/pod1");
    let a = w.container("a");
    w.adding(&net, &a)
        .name("a")
        .cap(json!({"cgroupPath": pod}))
        .ok();
    let a_id = w.record_id("n1", &[]);
    assert_placed(&w, &a, &format!("{pod}/embedns-{a_id}"));
    // systemd's form: a slice name.
    let b = w.container("b");
    let slice = format!("{}-pod2.slice", unique.replace('-', "_"));
    w.adding(&net, &b)
        .name("b")
        .cap(json!({"cgroupPath": slice}))
        .ok();
    let b_id = w.record_id("n1", &[&a_id]);
    let top = format!("{}.slice", unique.replace('-', "_"));
    assert_placed(&w, &b, &format!("/{top}/{slice}/embedns-{b_id}"));
    // No capability: embedns's own parent, never the caller's cgroup.
    let c = w.container("c");
    w.adding(&net, &c).name("c").ok();
    let c_id = w.record_id("n1", &[&a_id, &b_id]);
    assert_placed(&w, &c, &format!("/embedns/embedns-{c_id}"));

    // DEL removes the leaves and the parents ADD made for them.
    let dirs: Vec<PathBuf> = [&a_id, &b_id, &c_id]
        .iter()
        .flat_map(|id| leaves_of(&w, id))
        .collect();
    assert!(dirs.len() >= 3, "{dirs:?}");
    for c in [&a, &b, &c] {
        w.del(&net, c, &[]);
    }
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mounts.lines().filter(|l| l.contains(" - cgroup")) {
        let mount = m.split(' ').nth(4).unwrap();
        for made in [unique.clone(), top.clone()] {
            assert!(
                !Path::new(mount).join(&made).exists(),
                "{mount}/{made} removed"
            );
        }
    }
}

#[test]
fn r25_gc_removes_old_empty_leaves_no_sandbox_names_and_keeps_the_others() {
    let w = World::new("r25_gc_removes_old_empty_leaves_no_sandbox_names_and_keeps_the_others");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("c").ok();
    let id = sandbox_of(&w, &c);
    let live = leaves_of(&w, &id);
    // A leaf whose sandbox went without DEL (a runtime restarted without its state dir), and a
    // fresh one (another state dir's ADD may have just made it).
    let unique = test_cni::host::unique("");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let hierarchy = |l: &&str| l.contains(" - cgroup");
    let dirs = |name: &str| -> Vec<PathBuf> {
        mounts
            .lines()
            .filter(hierarchy)
            .map(|l| {
                Path::new(l.split(' ').nth(4).unwrap())
                    .join("embedns")
                    .join(name)
            })
            .collect()
    };
    let (orphan, fresh) = (
        dirs(&format!("embedns-orphan{unique}")),
        dirs(&format!("embedns-fresh{unique}")),
    );
    for d in orphan.iter().chain(&fresh) {
        std::fs::create_dir_all(d).unwrap();
    }
    let two_minutes_ago = |d: &PathBuf| {
        let ok = std::process::Command::new("touch")
            .args(["-d", "2 minutes ago"])
            .arg(d)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    orphan.iter().chain(&live).for_each(two_minutes_ago);
    let out = w.gc("n1", &[(&id, "eth0")]);
    assert!(out.success, "{}", out.stdout);
    for d in &orphan {
        assert!(!d.exists(), "{} removed", d.display());
    }
    for d in fresh.iter().chain(&live) {
        assert!(d.exists(), "{} kept", d.display());
    }
    test_cni::host::remove_cgroups(&fresh);
}
