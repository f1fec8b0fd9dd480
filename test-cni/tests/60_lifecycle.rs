//! The redirect and the resolver's life (docs/behaviour.md R24, R25), and one resolver per
//! container across networks.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use test_cni::{bins, ip_of, wait_until, World};

#[test]
fn r24_redirect_rules_in_the_container_only() {
    let w = World::new("r24_redirect_rules_in_the_container_only");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    let host_nat = |w: &World| {
        String::from_utf8_lossy(&w.exec_host(&["iptables", "-w", "-t", "nat", "-S"]).stdout)
            .into_owned()
    };
    let before = host_nat(&w);
    // cnitool and a bare bridge chain leave lo down.
    assert!(
        !String::from_utf8_lossy(&w.exec(&c, &["ip", "link", "show", "lo"]).stdout).contains(",UP")
    );
    w.adding(&net, &c).name("web").ok();
    let rules = w.nat_rules(&c);
    // 127.0.0.11, and 127.0.0.12-15 that a container's further networks name (R23).
    assert!(
        rules.contains("-A OUTPUT -d 127.0.0.8/29 -j EMBEDNS_OUTPUT"),
        "{rules}"
    );
    assert!(
        rules.contains("-A POSTROUTING -d 127.0.0.11/32 -j EMBEDNS_POSTROUTING"),
        "{rules}"
    );
    for proto in ["udp", "tcp"] {
        let dnat = rules
            .lines()
            .find(|l| {
                l.contains("EMBEDNS_OUTPUT")
                    && l.contains(&format!("-p {proto}"))
                    && l.contains("DNAT")
            })
            .unwrap_or_else(|| panic!("no {proto} DNAT: {rules}"));
        let port: u16 = dnat.rsplit(':').next().unwrap().parse().unwrap();
        assert_ne!(port, 53, "a kernel-chosen port");
        assert!(
            rules.contains(&format!(
                "-p {proto} -m {proto} --sport {port} -j SNAT --to-source :53"
            )),
            "{rules}"
        );
    }
    assert!(
        String::from_utf8_lossy(&w.exec(&c, &["ip", "link", "show", "lo"]).stdout).contains(",UP"),
        "lo up"
    );
    assert_eq!(
        host_nat(&w),
        before,
        "nothing changed in the host's namespace"
    );
    w.del(&net, &c, &[]);
    w.wait_redirect_gone(&c, "DEL");
}

#[test]
fn r24_probes_leave_no_conntrack_flow_a_client_could_reuse() {
    // ADD's and DEL's probes of 127.0.0.11:53 are conntrack flows that outlive them; from
    // 127.0.0.1 a client reusing the port would inherit their NAT decision (none after DEL).
    let w = World::new("r24_probes_leave_no_conntrack_flow_a_client_could_reuse");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    w.del(&net, &c, &[]);
    let table = String::from_utf8_lossy(&w.exec(&c, &["cat", "/proc/net/nf_conntrack"]).stdout)
        .into_owned();
    assert!(
        table.contains("src=127.255.0.11 dst=127.0.0.11"),
        "the probes' flows are where the test looks: {table}"
    );
    assert!(
        !table.contains("src=127.0.0.1 dst=127.0.0.11"),
        "a probe used a client's source address: {table}"
    );
}

#[test]
fn r24_del_then_add_again_in_the_same_netns_at_once() {
    // podman network disconnect + connect: DEL leaves the rules' removal to a remover that
    // waits for the netns to go; the next ADD stops it and replaces the rules, so the new
    // resolver's redirect is the only one and stays.
    let w = World::new("r24_del_then_add_again_in_the_same_netns_at_once");
    let net = w.network("n1", json!({}));
    let (web, c) = (w.container("web"), w.container("c"));
    let web_ip = ip_of(&w.adding(&net, &web).name("web").ok());
    for round in 0..10 {
        w.adding(&net, &c).name("cli").ok();
        assert!(
            removers(&c).is_empty(),
            "round {round}: a remover outlived the ADD"
        );
        let rules = w.nat_rules(&c);
        assert_eq!(
            rules.matches("-j EMBEDNS_OUTPUT").count(),
            1,
            "round {round}: {rules}"
        );
        assert_eq!(
            w.resolve(&c, "web", "A"),
            vec![web_ip.clone()],
            "round {round}"
        );
        w.del(&net, &c, &[]);
    }
    w.wait_redirect_gone(&c, "the last DEL, the netns kept");
    w.del(&net, &web, &[]);
}

/// PIDs of the `embedns remove-redirect-later` processes waiting on a container's netns.
fn removers(c: &test_cni::Container) -> Vec<i32> {
    test_cni::pgrep(&format!("remove-redirect-later .* {} ", c.path))
}

#[test]
fn r24_a_del_leaves_the_rules_to_go_with_the_netns_and_removes_them_if_it_stays() {
    // Deleting netfilter rules makes the next network-device removal wait for the kernel's
    // RCU grace periods: the bridge plugin's veth removal right after embedns in a chained
    // DEL. After a DEL the netns is nearly always destroyed, taking the rules with it, so DEL
    // leaves them to a remover that acts only if the netns is still there a second later.
    let w =
        World::new("r24_a_del_leaves_the_rules_to_go_with_the_netns_and_removes_them_if_it_stays");
    let net = w.network("n1", json!({}));
    let (gone, kept) = (w.container("gone"), w.container("kept"));
    w.adding(&net, &gone).name("gone").ok();
    w.adding(&net, &kept).name("kept").ok();
    w.del(&net, &gone, &[]);
    w.del(&net, &kept, &[]);
    assert!(
        w.resolver_pids().is_empty(),
        "DEL stops the resolvers at once"
    );
    assert_eq!(removers(&gone).len(), 1);
    assert_eq!(removers(&kept).len(), 1);
    // The runtime deletes the netns: its remover has nothing to do and exits.
    let out = Command::new("ip")
        .args(["netns", "del", &gone.netns])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until(
        Duration::from_secs(2),
        "the remover of a deleted netns to exit",
        || removers(&gone).is_empty().then_some(()),
    );
    // The netns stays: the remover removes the rules, then exits.
    w.wait_redirect_gone(&kept, "the netns kept after DEL");
    wait_until(Duration::from_secs(2), "the remover to exit", || {
        removers(&kept).is_empty().then_some(())
    });
    let (code, report) = w.status();
    assert_eq!(code, 0, "nothing left over: {report:?}");
}

#[test]
fn r25_add_returns_when_it_answers_and_resolver_outlives_its_caller() {
    let w = World::new("r25_add_returns_when_it_answers_and_resolver_outlives_its_caller");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    // ADD from a shell in its own process group, which then kills its whole group.
    let script = format!(
        "{} add n1 {} >/dev/null && kill -KILL 0",
        bins::cnitool().display(),
        c.path
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &w.host, "sh", "-c", &script])
        .env("NETCONFPATH", &w.net_dir)
        .env("CNI_PATH", &w.bin_dir)
        .env("CNI_CACHE_DIR", w.path("cache"))
        .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")
        .process_group(0)
        .status()
        .unwrap();
    assert!(!status.success(), "the shell killed itself");
    let pids = w.resolver_pids();
    assert_eq!(
        pids.len(),
        1,
        "the resolver survived its caller's process group"
    );
    // The resolver is in its supervisor's session (the supervisor leads it), not in its
    // caller's group.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pids[0]))).unwrap();
    let supervisors = test_cni::host::supervisor_pids(&w.data_dir);
    assert_eq!(supervisors, vec![sid.as_raw()]);
    // A single try, no retry: it answers right away.
    let d = w.dig(&c, &["+tries=1", "web"]);
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answers.len(), 1);
    w.del(&net, &c, &[]);
    wait_until(Duration::from_secs(1), "no resolver", || {
        w.resolver_pids().is_empty().then_some(())
    });
}

#[test]
fn one_resolver_serves_every_network_of_a_container() {
    let w = World::new("one_resolver_serves_every_network_of_a_container");
    let (n1, n2) = (w.network("n1", json!({})), w.network("n2", json!({})));
    let (multi, a, b) = (w.container("multi"), w.container("a"), w.container("b"));
    let ip_a = ip_of(&w.adding(&n1, &a).name("alpha").ok());
    let ip_b = ip_of(&w.adding(&n2, &b).name("beta").ok());
    w.adding(&n1, &multi).name("multi").ok();
    let before = w.resolver_pids();
    let eth1 = [
        ("CNI_IFNAME", "eth1"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=multi"),
    ];
    let out = w.cnitool("add", "n2", &multi, &eth1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.resolver_pids().len(),
        before.len(),
        "no second resolver for the second network"
    );
    assert_eq!(w.resolve(&multi, "alpha", "A"), vec![ip_a.clone()]);
    assert_eq!(w.resolve(&multi, "beta", "A"), vec![ip_b]);
    assert_eq!(w.resolve(&multi, "beta.n2", "A").len(), 1);
    // Leaving n2: its names go, n1's stay, same resolver.
    w.del(&n2, &multi, &eth1);
    assert!(w.resolve(&multi, "beta", "A").is_empty());
    assert_eq!(w.resolve(&multi, "alpha", "A"), vec![ip_a]);
    assert_eq!(w.resolver_pids(), before);
    w.del(&n1, &multi, &[]);
    assert_eq!(
        w.resolver_pids().len(),
        before.len() - 1,
        "the resolver stops with the last network"
    );
}
