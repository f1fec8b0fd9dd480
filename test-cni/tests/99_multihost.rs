//! A network shared by three hosts through etcd: three host netns on an underlay,
//! one etcd member each, the real plugin, sync process and resolvers on each, real dig. The
//! naming rules hold across hosts, a dead host's names expire with its lease, a killed member
//! fails nothing, a host cut off etcd keeps serving and converges once healed. Every test runs
//! on etcd 3.4 and on 3.5. The rules are docs/behaviour.md's R27-R33 (several hosts) on top
//! of R1-R26.

use std::time::{Duration, Instant};

use serde_json::json;
use test_cni::multihost::{Cluster, Etcd};
use test_cni::wait::{poll_until, wait_until};
use test_cni::{ip_of, sync_pids};

#[macro_use]
mod common;
use common::{absent, web_and_cli, WebAndCli, EXPIRY_SLACK_SECS, SPREAD};

on_both!(r2_r3_r4_r5_r7_r10_r29_names_aliases_links_and_ptr_across_three_hosts);
fn r2_r3_r4_r5_r7_r10_r29_names_aliases_links_and_ptr_across_three_hosts(etcd: Etcd) {
    let c = Cluster::new(etcd, "names_across_three_hosts", 3, 10);
    let nets = c.network("mh");
    let (h1, h2, h3) = (&c.hosts[0].w, &c.hosts[1].w, &c.hosts[2].w);
    let (web, db, cli) = (h1.container("web"), h2.container("db"), h3.container("cli"));
    let web_ip = ip_of(
        &h1.adding(&nets[0], &web)
            .name("web")
            .cap(json!({"aliases": ["shared"]}))
            .ok(),
    );
    let db_ip = ip_of(
        &h2.adding(&nets[1], &db)
            .name("db")
            .cap(json!({"aliases": ["shared"]}))
            .ok(),
    );
    let cli_ip = ip_of(
        &h3.adding(&nets[2], &cli)
            .name("cli")
            // Host3's sync process lists etcd one key per page (web and db, then its own).
            .env(&[("EMBEDNS_SYNC_PAGE", "1")])
            .cap(json!({"links": ["web:frontend"]}))
            .ok(),
    );
    assert!(
        web_ip.starts_with("10.77.1.")
            && db_ip.starts_with("10.77.2.")
            && cli_ip.starts_with("10.77.3.")
    );

    // R2: each host resolves the others' containers by name.
    wait_until(SPREAD, "web and db on host3", || {
        (h3.resolve(&cli, "web", "A") == vec![web_ip.clone()]
            && h3.resolve(&cli, "db", "A") == vec![db_ip.clone()])
        .then_some(())
    });
    wait_until(SPREAD, "cli on host1", || {
        (h1.resolve(&web, "cli", "A") == vec![cli_ip.clone()]).then_some(())
    });
    assert_eq!(h2.resolve(&db, "web", "A"), vec![web_ip.clone()]);
    // R3 + R5: an alias carried on two hosts answers both addresses.
    let mut both = vec![web_ip.clone(), db_ip.clone()];
    both.sort();
    assert_eq!(h3.resolve(&cli, "shared", "A"), both);
    // R4: cli's link to web (another host) resolves for cli only.
    assert_eq!(h3.resolve(&cli, "frontend", "A"), vec![web_ip.clone()]);
    assert!(absent(h1, &web, "frontend"));
    // R7: name.network.
    assert_eq!(h3.resolve(&cli, "db.mh", "A"), vec![db_ip.clone()]);
    // R10: PTR of a remote address names the container on the network.
    assert_eq!(h3.resolve(&cli, "-x", &web_ip)[..], ["web.mh."]);

    // R29: the same container name on two hosts is one name with both addresses (as a shared
    // alias; R5), and each address's PTR names it.
    let web2 = h2.container("web2");
    let web2_ip = ip_of(&h2.adding(&nets[1], &web2).name("web").ok());
    let mut webs = vec![web_ip.clone(), web2_ip.clone()];
    webs.sort();
    wait_until(SPREAD, "both webs on host3", || {
        (h3.resolve(&cli, "web", "A") == webs).then_some(())
    });
    assert_eq!(h3.resolve(&cli, "-x", &web2_ip)[..], ["web.mh."]);

    // R8 across hosts: a DEL on host2 removes db everywhere; a new container shows everywhere.
    h2.del(&nets[1], &db, &[]);
    wait_until(SPREAD, "db gone on host1 and host3", || {
        (absent(h1, &web, "db") && absent(h3, &cli, "db")).then_some(())
    });
    assert_eq!(h3.resolve(&cli, "shared", "A"), vec![web_ip.clone()]);
    let late = h1.container("late");
    let late_ip = ip_of(&h1.adding(&nets[0], &late).name("late").ok());
    wait_until(SPREAD, "late on host2", || {
        (h2.resolve(&web2, "late", "A") == vec![late_ip.clone()]).then_some(())
    });

    // Status: shared, the endpoint in use, the revision, counts.
    let s = c.sync_status(2, "mh").expect("host3's sync status");
    assert_eq!(s.host, "host3");
    assert_eq!(s.endpoint.as_deref(), Some("http://10.99.0.3:2379"));
    assert!(s.revision > 0);
    assert_eq!(s.published, 1);
    let (code, text) = h3.status_text(&[]);
    assert!(text.contains("shared through etcd as host3"), "{text}");
    assert_eq!(code, 0, "{text}");

    // A sync worker killed (the OOM killer, a crash): its supervisor starts another, which
    // catches up with what changed meanwhile.
    let worker = c.sync_status(0, "mh").unwrap().pid as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let while_down = h2.container("whiledown");
    let while_down_ip = ip_of(&h2.adding(&nets[1], &while_down).name("whiledown").ok());
    wait_until(SPREAD * 2, "a new worker on host1 to catch up", || {
        (h1.resolve(&web, "whiledown", "A") == vec![while_down_ip.clone()]).then_some(())
    });
    // Its status is written once it is in step, just after the catch-up it applied.
    wait_until(SPREAD, "the new worker's status", || {
        let restarted = c.sync_status(0, "mh")?.pid as i32;
        (restarted != worker).then_some(())
    });
    assert_eq!(
        sync_pids(&h1.data_dir).len(),
        2,
        "the supervisor and its new worker"
    );

    // The sync process killed, supervisor and all: status says so (exit 1), CHECK starts it
    // again, and it republishes (its lease is new) and catches up with what changed meanwhile.
    test_cni::must(std::process::Command::new("pkill").args([
        "-KILL",
        "-f",
        &format!("embedns-syncd --data-dir {}", h1.data_dir.display()),
    ]));
    wait_until(SPREAD, "host1's sync process to die", || {
        sync_pids(&h1.data_dir).is_empty().then_some(())
    });
    let (code, text) = h1.status_text(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NOT RUNNING"), "{text}");
    let meanwhile = h2.container("meanwhile");
    let meanwhile_ip = ip_of(&h2.adding(&nets[1], &meanwhile).name("meanwhile").ok());
    h2.del(&nets[1], &web2, &[]); // host2's "web" leaves while host1 is not listening
    let check = h1.cnitool(
        "check",
        &nets[0].name,
        &web,
        &[("CAP_ARGS", r#"{"aliases": ["shared"]}"#)],
    );
    assert!(
        check.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert_eq!(
        sync_pids(&h1.data_dir).len(),
        2,
        "CHECK started host1's sync process (a supervisor and its worker)"
    );
    assert_eq!(
        h1.resolve(&web, "meanwhile", "A"),
        vec![meanwhile_ip.clone()]
    );
    assert_eq!(
        h1.resolve(&web, "web", "A"),
        vec![web_ip.clone()],
        "host2's web, deleted meanwhile, is gone from host1's copy"
    );

    // The sync process keeps no capability and may gain none.
    let pid = sync_pids(&h3.data_dir)[0];
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for (field, want) in [
        ("CapEff:", "0000000000000000"),
        ("CapBnd:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
    ] {
        assert_eq!(
            test_cni::line_starting(&proc_status, field)
                .split_whitespace()
                .nth(1),
            Some(want),
            "{field}"
        );
    }

    // The last local container leaving ends the host's sync process and withdraws its keys.
    let sync = sync_pids(&h3.data_dir);
    assert_eq!(
        sync.len(),
        2,
        "one sync process on host3: a supervisor and its worker"
    );
    h3.del(&nets[2], &cli, &[]);
    wait_until(SPREAD, "host3's sync process to end", || {
        sync_pids(&h3.data_dir).is_empty().then_some(())
    });
    let keys = c.record_keys(0, "mh", "host3");
    assert!(keys.is_empty(), "host3's keys are gone: {keys:?}");
}

on_both!(a_dead_host_s_names_vanish_within_the_lease_ttl_and_a_killed_member_fails_nothing);
fn a_dead_host_s_names_vanish_within_the_lease_ttl_and_a_killed_member_fails_nothing(etcd: Etcd) {
    let ttl = 4;
    let c = Cluster::new(etcd, "dead_host", 3, ttl);
    let nets = c.network("mh");
    let (a, b, d) = (
        c.hosts[0].w.container("ann"),
        c.hosts[1].w.container("bob"),
        c.hosts[2].w.container("dan"),
    );
    c.hosts[0].w.adding(&nets[0], &a).name("ann").ok();
    let b_ip = ip_of(&c.hosts[1].w.adding(&nets[1], &b).name("bob").ok());
    let d_ip = ip_of(&c.hosts[2].w.adding(&nets[2], &d).name("dan").ok());
    let h1 = &c.hosts[0].w;
    wait_until(SPREAD, "b and d on host1", || {
        (h1.resolve(&a, "bob", "A") == vec![b_ip.clone()]
            && h1.resolve(&a, "dan", "A") == vec![d_ip.clone()])
        .then_some(())
    });

    // One member of three killed (host1's own): ADDs on every host succeed, nothing is lost.
    c.kill_member(0);
    let mut added = Vec::new();
    for (i, label) in [(0, "ann2"), (1, "bob2"), (2, "dan2")] {
        let w = &c.hosts[i].w;
        let x = w.container(label);
        added.push((label, ip_of(&w.adding(&nets[i], &x).name(label).ok())));
    }
    for (i, probe) in [(0, &a), (1, &b), (2, &d)] {
        let w = &c.hosts[i].w;
        for (name, ip) in &added {
            wait_until(SPREAD * 2, &format!("{name} on host{}", i + 1), || {
                (w.resolve(probe, name, "A") == vec![ip.clone()]).then_some(())
            });
        }
    }
    let s = c.sync_status(0, "mh").unwrap();
    assert_ne!(
        s.endpoint.as_deref(),
        Some("http://10.99.0.1:2379"),
        "host1 moved to another member"
    );
    c.restart_member(0);

    // Host3 dies (sync process, resolvers and member SIGKILLed): its names vanish on the
    // others within the stated bound (TTL + 4 s: its member may have been etcd's leader,
    // whose successor extends every lease), the rest stays.
    c.kill_host(2);
    let died = Instant::now();
    let bound = Duration::from_secs(ttl + EXPIRY_SLACK_SECS);
    let h1 = &c.hosts[0].w;
    let gone = poll_until(bound * 2, || {
        (absent(h1, &a, "dan") && absent(h1, &a, "dan2")).then(|| died.elapsed())
    })
    .expect("host3's names vanish");
    assert!(
        gone <= bound,
        "host3's names went after {gone:?}, over the {bound:?} bound"
    );
    assert_eq!(h1.resolve(&a, "bob", "A"), vec![b_ip.clone()]);
    assert_eq!(c.hosts[1].w.resolve(&b, "ann2", "A").len(), 1);
}

on_both!(a_host_cut_off_etcd_keeps_serving_and_converges_once_healed);
fn a_host_cut_off_etcd_keeps_serving_and_converges_once_healed(etcd: Etcd) {
    let ttl = 4;
    let c = Cluster::new(etcd, "cut_off", 3, ttl);
    let nets = c.network("mh");
    let (h1, h2, h3) = (&c.hosts[0].w, &c.hosts[1].w, &c.hosts[2].w);
    let (a, b, d) = (
        h1.container("ann"),
        h2.container("bob"),
        h3.container("dan"),
    );
    let a_ip = ip_of(&h1.adding(&nets[0], &a).name("ann").ok());
    let b_ip = ip_of(&h2.adding(&nets[1], &b).name("bob").ok());
    h3.adding(&nets[2], &d).name("dan").ok();
    wait_until(SPREAD, "b and d on host1", || {
        (h1.resolve(&a, "bob", "A") == vec![b_ip.clone()] && h1.resolve(&a, "dan", "A").len() == 1)
            .then_some(())
    });

    c.cut(0);
    // Host1, cut off: ADD succeeds, local names resolve, remote names keep their last answers.
    let a2 = h1.container("ann2");
    let a2_ip = ip_of(&h1.adding(&nets[0], &a2).name("ann2").ok());
    assert_eq!(h1.resolve(&a, "ann2", "A"), vec![a2_ip.clone()]);
    assert_eq!(h1.resolve(&a, "bob", "A"), vec![b_ip.clone()]);
    // Elsewhere: a new container on host2, d deleted on host3; host1's records expire there
    // (a cut host cannot be told from a dead one).
    let b2 = h2.container("bob2");
    let b2_ip = ip_of(&h2.adding(&nets[1], &b2).name("bob2").ok());
    h3.del(&nets[2], &d, &[]);
    let cut = Instant::now();
    wait_until(
        Duration::from_secs(ttl + 10),
        "host1's names to expire on host2",
        || absent(h2, &b, "ann").then_some(()),
    );
    assert!(
        cut.elapsed() <= Duration::from_secs(ttl + EXPIRY_SLACK_SECS),
        "expired after {:?}",
        cut.elapsed()
    );
    wait_until(
        Duration::from_secs(ttl + 5),
        "host1's sync to notice the cut",
        || {
            c.sync_status(0, "mh")
                .filter(|s| s.endpoint.is_none() && s.last_error.is_some())
                .map(|_| ())
        },
    );
    assert_eq!(
        h1.resolve(&a, "bob", "A"),
        vec![b_ip.clone()],
        "the last known answer, still"
    );
    // Host1's status fails while it is cut off; host2's holds nothing of host1 any more.
    let (code, text) = h1.status_text(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("etcd UNREACHABLE"), "{text}");
    let (code, text) = h2.status_text(&[]);
    assert_eq!(code, 0, "{text}");
    let s2 = c.sync_status(1, "mh").unwrap();
    let host1 = s2.hosts.iter().find(|h| h.name == "host1");
    assert!(host1.is_none_or(|h| !h.claimed && h.records == 0), "{s2:?}");
    // The history host1 missed is compacted away: it must list again, not resume a watch.
    c.compact(1);

    c.heal(0);
    // Converged: host1 has b2 and no d; host2 and host3 have a and a2 again.
    wait_until(Duration::from_secs(10), "host1 to converge", || {
        (h1.resolve(&a, "bob2", "A") == vec![b2_ip.clone()] && absent(h1, &a, "dan")).then_some(())
    });
    wait_until(SPREAD, "host1's names back on host2", || {
        (h2.resolve(&b, "ann", "A") == vec![a_ip.clone()]
            && h2.resolve(&b, "ann2", "A") == vec![a2_ip.clone()])
        .then_some(())
    });
    // Nothing duplicated: host1's keys in etcd are its two records.
    let keys = c.record_keys(1, "mh", "host1");
    assert_eq!(keys.len(), 2, "{keys:?}");
}

on_both!(the_shared_example_works_on_two_hosts_with_their_own_subnets_and_names);
fn the_shared_example_works_on_two_hosts_with_their_own_subnets_and_names(etcd: Etcd) {
    let c = Cluster::new(etcd, "shared_example", 2, 6);
    let mut nets = Vec::new();
    for (i, h) in c.hosts.iter().enumerate() {
        // As a user installs conf/examples/shared.conflist on each host: a subnet of its own,
        // its name (these hosts share the machine's hostname), the example's endpoint (the
        // host's own member on 127.0.0.1:2379) and prefix (this run's).
        let mut list: serde_json::Value = serde_json::from_slice(
            &std::fs::read(test_cni::bins::workspace().join("conf/examples/shared.conflist"))
                .unwrap(),
        )
        .unwrap();
        for p in list["plugins"].as_array_mut().unwrap() {
            if p["type"] == "bridge" {
                p["ipam"]["subnet"] = json!(format!("10.90.{}.0/24", i + 1));
            }
            if p["type"] == "embedns" {
                assert_eq!(p["etcd"]["endpoints"], json!(["http://127.0.0.1:2379"]));
                p["etcd"]["host"] = json!(h.name);
                p["etcd"]["prefix"] = json!(c.prefix);
            }
        }
        nets.push(h.w.conflist(list));
    }
    let WebAndCli { cli, web_ip, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    assert_eq!(c.hosts[1].w.resolve(&cli, "web", "A"), vec![web_ip]);
}

on_both!(tls_with_client_certificates_and_a_wrong_ca_said_in_status);
fn tls_with_client_certificates_and_a_wrong_ca_said_in_status(etcd: Etcd) {
    let c = Cluster::with_tls(etcd, "tls", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli { cli, web_ip, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    assert_eq!(h2.resolve(&cli, "web", "A"), vec![web_ip]);
    let s = c.sync_status(1, "mh").expect("host2's sync status");
    assert_eq!(s.endpoint.as_deref(), Some("https://10.99.0.2:2379"));

    // A network whose conf trusts another CA: ADD succeeds (names on this host never wait
    // for etcd), and the status says why nothing is shared.
    let other_ca = h1.dir.join("other-ca.pem");
    let key = h1.dir.join("other-ca-key.pem");
    test_cni::must(std::process::Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=not the CA",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        other_ca.to_str().unwrap(),
    ]));
    let mut opts = c.etcd_options(0);
    opts["etcd"]["tls"]["ca"] = json!(other_ca);
    let wrong = h1.network_in("wrongca", "10.78.1", opts);
    let x = h1.container("x");
    let x_ip = ip_of(&h1.adding(&wrong, &x).name("x").ok());
    assert_eq!(h1.resolve(&x, "x", "A"), vec![x_ip]);
    let s = c
        .sync_status(0, "wrongca")
        .expect("the wrong-CA network's sync status");
    assert!(s.endpoint.is_none());
    let error = s.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{s:?}"
    );
}

on_both!(a_podman_host_and_a_cnitool_host_share_a_network);
fn a_podman_host_and_a_cnitool_host_share_a_network(etcd: Etcd) {
    let c = Cluster::new(etcd, "podman_host", 2, 6);
    // Host1 runs real podman (CNI backend) in its netns, on a network it made, with the
    // embedns entry a user appends; host2 runs cnitool.
    let pm = test_cni::podman::Podman::in_netns("podman_host", &c.hosts[0].w.host);
    let mut entry = test_cni::example_entry("podman.conflist");
    entry["etcd"] = c.etcd_options(0)["etcd"].clone();
    pm.network_with("mh", &["--subnet", "10.77.1.0/24"], entry);
    pm.start("web", &["--network", "mh", "--network-alias", "www"]);
    let h2 = &c.hosts[1].w;
    let nets = h2.network_in("mh", "10.77.2", c.etcd_options(1));
    let cli = h2.container("cli");
    let cli_ip = ip_of(&h2.adding(&nets, &cli).name("cli").ok());

    let web_ip = h2.resolve(&cli, "web", "A");
    assert_eq!(web_ip.len(), 1, "host2 resolves podman's web");
    assert!(web_ip[0].starts_with("10.77.1."), "{web_ip:?}");
    assert_eq!(h2.resolve(&cli, "www", "A"), web_ip, "and its alias");
    let out = pm.busybox("web", &["nslookup", "cli"]);
    assert_eq!(test_cni::nslookup_addresses(&out), vec![cli_ip], "{out}");
}

on_both!(a_host_whose_last_container_leaves_as_another_arrives_keeps_the_new_one_shared);
fn a_host_whose_last_container_leaves_as_another_arrives_keeps_the_new_one_shared(etcd: Etcd) {
    let c = Cluster::new(etcd, "leave_and_arrive", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let probe = h2.container("probe");
    h2.adding(&nets[1], &probe).name("probe").ok();
    let mut last = h1.container("gen0");
    h1.adding(&nets[0], &last).name("gen0").ok();
    for i in 1..=5 {
        // The last local container leaves (the sync process starts withdrawing this host's
        // keys and ending) while a new one arrives (a new sync process starts).
        h1.del(&nets[0], &last, &[]);
        let next = h1.container(&format!("gen{i}"));
        let ip = ip_of(&h1.adding(&nets[0], &next).name(&format!("gen{i}")).ok());
        wait_until(SPREAD, &format!("gen{i} on host2"), || {
            (h2.resolve(&probe, &format!("gen{i}"), "A") == vec![ip.clone()]).then_some(())
        });
        assert!(absent(h2, &probe, &format!("gen{}", i - 1)));
        last = next;
    }
    // Whatever the ended processes did last, the newest name stays, and one process runs.
    wait_until(SPREAD, "one sync process on host1", || {
        (sync_pids(&h1.data_dir).len() == 2).then_some(()) // a supervisor and its worker
    });
    let keys = c.record_keys(1, "mh", "host1");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(h2.resolve(&probe, "gen5", "A").len(), 1);
}

on_both!(two_hosts_configured_with_one_name_do_not_fight_and_the_second_says_why);
fn two_hosts_configured_with_one_name_do_not_fight_and_the_second_says_why(etcd: Etcd) {
    let c = Cluster::new(etcd, "same_host_name", 2, 6);
    let mut opts = c.etcd_options(1);
    opts["etcd"]["host"] = json!("host1"); // host2 misconfigured with host1's name
    let n1 = c.hosts[0].w.network_in("mh", "10.77.1", c.etcd_options(0));
    let n2 = c.hosts[1].w.network_in("mh", "10.77.2", opts);
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    // Host2's ADD succeeds and its own names answer; its sync process publishes nothing.
    let WebAndCli {
        web,
        cli,
        web_ip,
        cli_ip,
    } = web_and_cli(&c, &n1, &n2);
    assert_eq!(h2.resolve(&cli, "cli", "A"), vec![cli_ip]);
    let s = c.sync_status(1, "mh").expect("host2's sync status");
    let error = s.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("host name \"host1\" is in use on network mh by"),
        "{s:?}"
    );
    // Its status says so, and fails: it is out of step.
    let (code, text) = h2.status_text(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CLAIM REFUSED: host name \"host1\""),
        "{text}"
    );
    assert!(!text.contains("UNREACHABLE"), "{text}");
    // Host1's record stays, alone under the name, and answers on host1.
    let keys = c.record_keys(0, "mh", "host1");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(absent(h1, &web, "cli"));
    assert_eq!(h1.resolve(&web, "web", "A"), vec![web_ip]);
}

on_both!(a_containerd_host_and_a_cnitool_host_share_a_network);
fn a_containerd_host_and_a_cnitool_host_share_a_network(etcd: Etcd) {
    let c = Cluster::new(etcd, "containerd_host", 2, 6);
    // Host1 runs a real containerd (CRI) in its netns, with the containerd example's entry and
    // the cluster's etcd key; host2 runs cnitool.
    // containerd 1.6 next to etcd 3.4, containerd 2.x next to etcd 3.5.
    let version = match etcd {
        Etcd::Debian => test_cni::cri::Version::Debian,
        Etcd::V3_5 => test_cni::cri::Version::V2,
    };
    let etcd = c.etcd_options(0)["etcd"].clone();
    let ctd = test_cni::cri::Containerd::in_netns(
        "containerd_host",
        &c.hosts[0].w.host,
        version,
        |root| {
            let mut entry = test_cni::cri::example_entry(version)(root);
            entry["etcd"] = etcd;
            entry
        },
    );
    let web = ctd.run_pod("web", None);
    let h2 = &c.hosts[1].w;
    let net = h2.network_in("cri-net", "10.77.2", c.etcd_options(1)); // containerd's network
    let cli = h2.container("cli");
    let cli_ip = ip_of(&h2.adding(&net, &cli).name("cli").ok());
    assert_eq!(
        h2.resolve(&cli, "web", "A"),
        vec![web.ip.clone()],
        "host2 resolves the pod"
    );
    let (code, out) = ctd.exec(&web, &["nslookup", "cli"]);
    assert_eq!(
        test_cni::nslookup_addresses(&out),
        vec![cli_ip],
        "{code}: {out}"
    );
}

on_both!(a_changed_etcd_config_applies_to_the_running_sync_process);
fn a_changed_etcd_config_applies_to_the_running_sync_process(etcd: Etcd) {
    let c = Cluster::new(etcd, "changed_config", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli {
        web, cli, web_ip, ..
    } = web_and_cli(&c, &nets[0], &nets[1]);
    assert_eq!(c.record_keys(0, "mh", "host2").len(), 1);
    // Host2's conflist now names it "node2" (and lists its endpoints the other way round);
    // its next ADD leaves that config for the running sync process, which takes it up.
    let mut opts = c.etcd_options(1);
    opts["etcd"]["host"] = json!("node2");
    opts["etcd"]["endpoints"].as_array_mut().unwrap().reverse();
    let renamed = h2.network_in("mh", "10.77.2", opts);
    let late = h2.container("late");
    let late_ip = ip_of(&h2.adding(&renamed, &late).name("late").ok());
    wait_until(SPREAD, "host2's records under its new name", || {
        (c.record_keys(0, "mh", "node2").len() == 2 && c.record_keys(0, "mh", "host2").is_empty())
            .then_some(())
    });
    assert_eq!(h1.resolve(&web, "late", "A"), vec![late_ip]);
    assert_eq!(h2.resolve(&cli, "web", "A"), vec![web_ip]);
    let s = c.sync_status(1, "mh").unwrap();
    assert_eq!(s.host, "node2");
    assert_eq!(
        s.endpoint.as_deref(),
        Some("http://10.99.0.1:2379"),
        "the new list's first endpoint"
    );
}
