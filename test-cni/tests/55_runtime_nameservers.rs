//! R26 (ours): the nameservers a runtime writes into the container's resolv.conf itself
//! (containerd 2.x, nerdctl, CRI-O, `podman --dns`) are answered by the container's resolver,
//! as 127.0.0.11 is. Here with cnitool and the container's own `dig @server`; the containerd
//! 2.x case is in 75_containerd. Every "upstream" is a fake server in the test's host netns.

use serde_json::json;
use test_cni::{ip_of, World};

/// The search domain of the test's host resolv.conf.
const SEARCH: &str = "corp.example";

/// A world whose host resolv.conf names `gateway` of network `n1`, a fake upstream there,
/// and web + cli on n1. Returns (world, network, upstream, web's IP, cli, cli's IP).
fn setup(
    test: &str,
    opts: serde_json::Value,
) -> (
    World,
    test_cni::Network,
    test_cni::FakeUpstream,
    String,
    test_cni::Container,
    String,
) {
    let w = World::new(test);
    let net = w.network("n1", opts);
    let gw = net.gateway();
    w.set_host_resolv_conf(&format!("nameserver {gw}\nsearch {SEARCH}\n"));
    let web = w.container("web");
    let web_ip = ip_of(
        &w.adding(&net, &web)
            .name("web")
            .cap(json!({"aliases": ["www"]}))
            .ok(),
    );
    // The bridge exists from the first ADD on; its address is the host's nameserver.
    let up = w.upstream(&format!("{gw}:53"), "up.test", &[("a.up.test", "10.9.9.1")]);
    let cli = w.container("cli");
    let cli_ip = ip_of(&w.adding(&net, &cli).name("cli").ok());
    (w, net, up, web_ip, cli, cli_ip)
}

#[test]
fn r26_queries_to_the_hosts_nameserver_are_answered_by_the_resolver() {
    let (w, net, up, web_ip, cli, cli_ip) = setup(
        "r26_queries_to_the_hosts_nameserver_are_answered_by_the_resolver",
        json!({}),
    );
    let gw = net.gateway();
    // Peers by name and alias, over UDP and TCP, and their PTR: answered locally (the fake
    // upstream knows none of them, and is not asked).
    for args in [&["web"][..], &["+tcp", "web"], &["www"]] {
        let d = w.dig_at(&cli, &gw, args);
        assert_eq!(d.data(), vec![web_ip.clone()], "dig @{gw} {args:?}: {d:?}");
        assert!(
            !d.has_flag("aa"),
            "a local answer, not the upstream's: {d:?}"
        );
    }
    let ptr = w.dig_at(&cli, &gw, &["-x", &web_ip]);
    assert_eq!(ptr.data(), vec!["web.n1.".to_string()], "{ptr:?}");
    assert_eq!(up.queries(), 0, "peers never reach the upstream");
    // R16a: a search-qualified name is asked upstream first, then answered as the local web.
    let d = w.dig_at(&cli, &gw, &[&format!("web.{SEARCH}")]);
    assert_eq!(d.data(), vec![web_ip.clone()], "{d:?}");
    assert_eq!(up.queries(), 1);

    // Everything else is forwarded to the upstream list, which is that same server, from the
    // container's netns (R18) and by the resolver: it reaches the real server, no loop. The
    // second is answered from the resolver's cache (R34), the upstream's bytes as they came.
    for args in [&["+tcp", "a.up.test"][..], &["a.up.test"]] {
        let d = w.dig_at(&cli, &gw, args);
        assert_eq!(d.data(), vec!["10.9.9.1"], "{d:?}");
        assert!(d.has_flag("aa"), "the upstream's answer, relayed: {d:?}");
    }
    assert_eq!(up.queries(), 2);
    assert_eq!(
        up.last_source().map(|s| s.ip().to_string()),
        Some(cli_ip.clone())
    );
    // 127.0.0.11 still answers.
    assert_eq!(w.resolve(&cli, "web", "A"), vec![web_ip.clone()]);
    // `embedns status` says which servers are answered.
    let (code, out) = w.status_text(&["cli"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("also answers queries to: {gw}")),
        "{out}"
    );

    // A server the container was not given is left alone: its own answer comes back.
    let other = format!("{}.250", net.prefix);
    let bridge = w.exec_host(&["ip", "-o", "-4", "addr", "show", "to", &format!("{gw}/32")]);
    let bridge = String::from_utf8_lossy(&bridge.stdout);
    let dev = bridge
        .split_whitespace()
        .nth(1)
        .expect("the bridge holding the gateway");
    let added = w.exec_host(&["ip", "addr", "add", &format!("{other}/24"), "dev", dev]);
    assert!(added.status.success(), "{added:?}");
    let stranger = w.upstream(&format!("{other}:53"), "web", &[("web", "192.0.2.99")]);
    let d = w.dig_at(&cli, &other, &["web"]);
    assert_eq!(d.data(), vec!["192.0.2.99"], "{d:?}");
    assert_eq!(stranger.queries(), 1);
}

#[test]
fn r26_catch_nameservers_false_leaves_the_hosts_nameserver_alone() {
    let (w, net, up, _web_ip, cli, _) = setup(
        "r26_catch_nameservers_false_leaves_the_hosts_nameserver_alone",
        json!({"catchNameservers": false}),
    );
    let d = w.dig_at(&cli, &net.gateway(), &["web"]);
    assert!(d.data().is_empty(), "the upstream's own answer: {d:?}");
    assert_eq!(up.queries(), 1);
    assert_eq!(w.resolve(&cli, "web", "A").len(), 1, "127.0.0.11 answers");
    let rules = w.nat_rules(&cli);
    assert!(!rules.contains(&format!("{}/32", net.gateway())), "{rules}");
}

#[test]
fn r26_the_dns_capabilitys_servers_are_caught_per_network_and_released_by_del() {
    let w =
        World::new("r26_the_dns_capabilitys_servers_are_caught_per_network_and_released_by_del");
    let n1 = w.network("n1", json!({}));
    let n2 = w.network("n2", json!({}));
    // The host's nameserver is a loopback one; a pod's dns_config names the cluster DNS.
    w.set_host_resolv_conf("nameserver 127.0.0.53\n");
    let web = w.container("web");
    let web_ip = ip_of(&w.adding(&n1, &web).name("web").ok());
    let cluster = n1.gateway();
    let cluster_dns = w.upstream(
        &format!("{cluster}:53"),
        "cluster.local",
        &[("kubernetes.default.svc.cluster.local", "10.96.0.1")],
    );
    let pod = w.container("pod");
    let kubelet = json!({"dns": {"servers": [cluster], "searches": ["default.svc.cluster.local"], "options": ["ndots:5"]}});
    w.adding(&n1, &pod).name("pod").cap(kubelet).ok();
    // Its second network names another server, caught from its ADD on.
    let n2_gw = n2.gateway();
    let other = w.container("other");
    w.adding(&n2, &other).name("other").ok(); // makes n2's bridge
    let second_dns = w.upstream(&format!("{n2_gw}:53"), "second.test", &[]);
    let eth1 = [("CNI_IFNAME", "eth1")];
    (w.adding(&n2, &pod).name("pod").env(&eth1))
        .cap(json!({"dns": {"servers": [n2_gw]}}))
        .ok();

    // R16a through the pod's search list: web.default.svc.cluster.local is web.
    let d = w.dig_at(&pod, &cluster, &["web.default.svc.cluster.local"]);
    assert_eq!(d.data(), vec![web_ip.clone()], "{d:?}");
    assert_eq!(
        w.dig_at(&pod, &n2_gw, &["web"]).data(),
        vec![web_ip.clone()]
    );
    // The cluster's names go to the cluster DNS.
    let d = w.dig_at(&pod, &cluster, &["kubernetes.default.svc.cluster.local"]);
    assert_eq!(d.data(), vec!["10.96.0.1"], "{d:?}");
    assert_eq!(second_dns.queries(), 0);
    let before = cluster_dns.queries();

    // n2 leaves: its server is no longer caught, n1's still is.
    w.del(&n2, &pod, &eth1);
    // n2's bridge address stays reachable, through n1's.
    let via = w.exec(
        &pod,
        &[
            "ip",
            "route",
            "add",
            &format!("{}.0/24", n2.prefix),
            "via",
            &cluster,
        ],
    );
    assert!(via.status.success(), "{via:?}");
    let d = w.dig_at(&pod, &n2_gw, &["web"]);
    assert!(d.data().is_empty(), "n2's server itself answers: {d:?}");
    assert_eq!(second_dns.queries(), 1);
    assert_eq!(w.dig_at(&pod, &cluster, &["web"]).data(), vec![web_ip]);
    assert_eq!(cluster_dns.queries(), before, "web answered locally");
}
