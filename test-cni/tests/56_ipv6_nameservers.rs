//! R26 for IPv6 nameservers: a host whose resolv.conf names IPv6 servers (or a kubelet's IPv6
//! cluster DNS in the `dns` capability) gives the container IPv6 nameservers, and their
//! queries are answered by its resolver through ip6tables, on an IPv6-only network and on a
//! dual-stack one; a netns with IPv6 disabled gets what it got before. cnitool, real netns,
//! ip6tables and dig; each "upstream" is a fake server on the bridge in the test's host netns.
//! Last, a containerd 2.x CRI pod whose dns_config names an IPv6 cluster DNS.

use std::time::Duration;

use k8s_cri::v1::DnsConfig;
use serde_json::{json, Value};
use test_cni::cri::{example_entry, Containerd, Version};
use test_cni::{line_starting, nslookup_addresses, wait_until, Container, World};

/// A conflist of network `name`: bridge + host-local over `ranges`, then embedns.
fn conflist(w: &World, name: &str, ranges: Value) -> Value {
    let n = name.len() + w.id.len() % 7;
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": format!("e6b{}{n}", &w.id[w.id.len() - 4..]),
             "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": ranges}},
            {"type": "embedns", "etcNetns": true,
             "capabilities": {"aliases": true, "dns": true, "cgroupPath": true}},
        ],
    })
}

/// No duplicate address detection in the world's host netns and in `c`: a new address is
/// usable at once (a fake upstream binds the bridge's as soon as it exists).
fn no_dad(w: &World, c: Option<&Container>) {
    for key in [
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ] {
        match c {
            Some(c) => assert!(w.exec(c, &["sysctl", "-qw", key]).status.success()),
            None => assert!(w.exec_host(&["sysctl", "-qw", key]).status.success()),
        }
    }
}

/// The container's address of the family `v6` in an ADD result.
fn address(result: &Value, v6: bool) -> String {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap().to_string())
        .find(|a| a.contains(':') == v6)
        .unwrap_or_else(|| panic!("no address of that family in {result}"))
}

fn container(w: &World, label: &str) -> Container {
    let c = w.container(label);
    no_dad(w, Some(&c));
    c
}

#[test]
fn r26_an_ipv6_only_network_answers_through_its_ipv6_nameserver() {
    let w = World::new("r26_an_ipv6_only_network_answers_through_its_ipv6_nameserver");
    no_dad(&w, None);
    let net = w.conflist(conflist(
        &w,
        "v6only",
        json!([[{"subnet": "fd00:56:1::/64"}]]),
    ));
    let gw = "fd00:56:1::1";
    w.set_host_resolv_conf(&format!("nameserver {gw}\n"));
    let web = container(&w, "web");
    let web_ip = address(&w.adding(&net, &web).name("web").ok(), true);
    let up = w.upstream(
        &format!("[{gw}]:53"),
        "up.test",
        &[("a.up.test", "10.9.9.1")],
    );
    let cli = container(&w, "cli");
    let cli_ip = address(&w.adding(&net, &cli).name("cli").ok(), true);

    // A peer through the IPv6 nameserver, UDP and TCP: answered by the resolver.
    for args in [&["web", "AAAA"][..], &["+tcp", "web", "AAAA"]] {
        let d = wait_until(
            Duration::from_secs(10),
            "an answer through the IPv6 server",
            || {
                let d = w.dig_at(&cli, gw, args);
                (d.status == "NOERROR").then_some(d)
            },
        );
        assert_eq!(d.data(), vec![web_ip.clone()], "dig @{gw} {args:?}: {d:?}");
    }
    assert_eq!(up.queries(), 0, "peers are not the upstream's");
    // An outside name through it: forwarded to that server, from the container (R18).
    let d = w.dig_at(&cli, gw, &["a.up.test"]);
    assert_eq!(d.data(), vec!["10.9.9.1"], "{d:?}");
    assert_eq!(up.queries(), 1);
    assert_eq!(
        up.last_source().map(|s| s.ip().to_string()),
        Some(cli_ip),
        "asked from the container's netns"
    );
    let (_, report) = w.status();
    let c = report.container("cli").unwrap();
    assert_eq!(
        c.caught.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        vec![gw.to_string()]
    );
}

#[test]
fn r26_a_dual_stack_container_is_answered_through_both_nameservers() {
    let w = World::new("r26_a_dual_stack_container_is_answered_through_both_nameservers");
    no_dad(&w, None);
    let ranges = json!([[{"subnet": "10.56.2.0/24"}], [{"subnet": "fd00:56:2::/64"}]]);
    let net = w.conflist(conflist(&w, "dual", ranges));
    let (gw4, gw6) = ("10.56.2.1", "fd00:56:2::1");
    w.set_host_resolv_conf(&format!("nameserver {gw4}\nnameserver {gw6}\n"));
    let web = container(&w, "web");
    let added = w.adding(&net, &web).name("web").ok();
    let (web4, web6) = (address(&added, false), address(&added, true));
    let cli = container(&w, "cli");
    w.adding(&net, &cli).name("cli").ok();
    let d = w.dig_at(&cli, gw4, &["web"]);
    assert_eq!(d.data(), vec![web4.clone()], "through {gw4}: {d:?}");
    let d = wait_until(
        Duration::from_secs(10),
        "an answer through the IPv6 server",
        || {
            let d = w.dig_at(&cli, gw6, &["web", "AAAA"]);
            (d.status == "NOERROR").then_some(d)
        },
    );
    assert_eq!(d.data(), vec![web6], "through {gw6}: {d:?}");
    // Both families' names through either server.
    assert_eq!(w.dig_at(&cli, gw6, &["web", "A"]).data(), vec![web4]);
    // DEL takes the IPv6 catch out of a netns that stays.
    w.del(&net, &cli, &[]);
    let six = |c: &Container| {
        let out = w.exec(c, &["ip6tables", "-w", "-t", "nat", "-S"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(Duration::from_secs(10), "the IPv6 catch gone", || {
        (!six(&cli).contains("EMBEDNS")).then_some(())
    });
}

#[test]
fn r26_a_netns_without_ipv6_gets_what_it_got_before() {
    let w = World::new("r26_a_netns_without_ipv6_gets_what_it_got_before");
    let net = w.network("n1", json!({}));
    let gw = net.gateway();
    // The host names an IPv6 server too, which this container cannot reach.
    w.set_host_resolv_conf(&format!("nameserver {gw}\nnameserver fd00:56:3::53\n"));
    let web = w.container("web");
    let web_ip = test_cni::ip_of(&w.adding(&net, &web).name("web").ok());
    let cli = w.container("cli");
    for key in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        assert!(w.exec(&cli, &["sysctl", "-qw", key]).status.success());
    }
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.dig_at(&cli, &gw, &["web"]).data(), vec![web_ip]);
    let (_, report) = w.status();
    let r = report.container("cli").unwrap();
    assert!(r.resolver.status().is_some(), "a healthy resolver: {r:?}");
}

/// A containerd 2.x CRI pod on a dual-stack network whose dns_config names an IPv6 cluster DNS
/// (what kubelet sends in an IPv6 single-stack cluster): containerd writes that server into the
/// pod's resolv.conf after the ADD, and the pod's queries to it reach its resolver (R26 through
/// ip6tables): a peer pod's name is answered, the rest forwarded to that server from the pod's
/// netns (R18).
#[test]
fn r26_a_cri_pods_ipv6_cluster_dns_is_caught() {
    let test = "r26_a_cri_pods_ipv6_cluster_dns_is_caught";
    let w = World::new(test);
    no_dad(&w, None);
    let cluster_dns = "fd00:10:96::a";
    let lo = [
        "ip",
        "addr",
        "add",
        &format!("{cluster_dns}/128"),
        "dev",
        "lo",
    ];
    assert!(w.exec_host(&lo).status.success());
    let v = Version::V2;
    let ctd = Containerd::in_netns_dual_stack(test, &w.host, v, example_entry(v));
    let up = w.upstream(
        &format!("[{cluster_dns}]:53"),
        "cluster.local",
        &[("kubernetes.default.svc.cluster.local", "10.96.0.1")],
    );
    let dns = DnsConfig {
        servers: vec![cluster_dns.into()],
        searches: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        options: vec!["ndots:5".into()],
    };
    let web = ctd.run_pod("web", Some(dns.clone()));
    let pod = ctd.run_pod("pod", Some(dns));
    let rc = ctd.exec(&pod, &["cat", "/etc/resolv.conf"]).1;
    assert_eq!(
        line_starting(&rc, "nameserver"),
        format!("nameserver {cluster_dns}"),
        "{rc}"
    );

    // A peer through the IPv6 cluster DNS's address: the resolver answers it (R16a after the
    // cluster DNS's NXDOMAIN for the search-qualified names busybox asks first).
    let out = wait_until(
        Duration::from_secs(10),
        "web through the IPv6 server",
        || {
            let out = ctd.exec(&pod, &["nslookup", "web"]).1;
            nslookup_addresses(&out).contains(&web.ip).then_some(out)
        },
    );
    let web6 = web.ip6.clone().expect("web has an IPv6 address");
    assert!(nslookup_addresses(&out).contains(&web6), "{out}");
    // An outside name: forwarded to the cluster DNS, asked from the pod's netns over IPv6.
    let out = ctd.exec(&pod, &["nslookup", "kubernetes"]).1;
    assert_eq!(nslookup_addresses(&out), vec!["10.96.0.1"], "{out}");
    assert_eq!(
        up.last_source().map(|s| s.ip().to_string()),
        pod.ip6.clone(),
        "the cluster DNS is asked from the pod's netns"
    );
    ctd.stop_pod(&pod);
    ctd.remove_pod(&pod);
    ctd.stop_pod(&web);
    ctd.remove_pod(&web);
}
