//! What is forwarded and how (docs/behaviour.md R15–R22). Upstreams are fake servers in
//! the test's host netns; the machine's nameserver is never asked.

use serde_json::json;
use test_cni::calls::Direct;
use test_cni::{ip_of, Mode, World};

#[test]
fn r15_forwarded_unchanged_and_relayed() {
    let w = World::new("r15_forwarded_unchanged_and_relayed");
    let big = "x".repeat(1500);
    let up = test_cni::FakeUpstream::start_with_txt(
        Some(&format!("/run/netns/{}", w.host)),
        "127.0.0.53:53",
        "up.test",
        &[("a.up.test", "10.9.9.9")],
        &[("big.up.test", &big)],
    );
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let d = w.dig(&cli, &["a.up.test"]);
    assert_eq!(d.data(), vec!["10.9.9.9"]);
    // The upstream's answer is relayed as it came: the fake upstream sets AA, local answers never do.
    assert!(d.has_flag("aa"), "upstream flags relayed: {:?}", d.flags);
    assert_eq!(w.dig(&cli, &["+tcp", "a.up.test"]).data(), vec!["10.9.9.9"]);
    // NXDOMAIN with its SOA.
    let nx = w.dig(&cli, &["missing.up.test"]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert_eq!(nx.authority.first().map(|r| r.rtype.as_str()), Some("SOA"));
    // Every type of an unknown name goes up; EDNS options are kept.
    let before = up.queries();
    w.dig(&cli, &["+nsid", "a.up.test", "MX"]);
    assert_eq!(up.queries(), before + 1);
    let q = up.last_query().unwrap();
    let edns = q.edns.expect("EDNS kept");
    assert!(
        edns.option(hickory_proto::rr::rdata::opt::EdnsCode::NSID)
            .is_some(),
        "NSID option kept"
    );
    // The upstream's TC is relayed; over TCP the whole answer comes through.
    let tc = w.dig(
        &cli,
        &["+noedns", "+ignore", "+notcp", "big.up.test", "TXT"],
    );
    assert!(tc.has_flag("tc"), "{:?}", tc.flags);
    let full = w.dig(&cli, &["+tcp", "big.up.test", "TXT"]);
    assert_eq!(full.answers.len(), 1);
}

#[test]
fn r16_single_label_unknown_is_not_forwarded() {
    let w = World::new("r16_single_label_unknown_is_not_forwarded");
    let up = w.upstream("127.0.0.53:53", "up.test", &[]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    for t in ["A", "AAAA"] {
        let d = w.dig(&cli, &["nosuchhost", t]);
        assert_eq!(d.status, "NOERROR");
        assert!(d.answers.is_empty());
    }
    assert_eq!(up.queries(), 0);
}

#[test]
fn r17_explicit_upstreams_first_and_never_self() {
    let w = World::new("r17_explicit_upstreams_first_and_never_self");
    w.set_host_resolv_conf("nameserver 127.0.0.11\nnameserver 127.0.0.53\n");
    let host_up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    // 127.0.0.11 in the host file is skipped; 127.0.0.53 answers.
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(host_up.queries(), 1);
}

#[test]
fn r18_host_upstreams_from_host_netns_explicit_from_container() {
    let w = World::new("r18_host_upstreams_from_host_netns_explicit_from_container");
    let _host_up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let via_host = w.network("n1", json!({}));
    let c1 = w.container("c1");
    w.adding(&via_host, &c1).name("c1").ok();
    // A loopback upstream of the host works: it is asked from the host netns.
    assert_eq!(w.resolve(&c1, "a.up.test", "A"), vec!["10.9.9.1"]);

    // Explicit upstreams are asked from the container: the bridge's address works...
    let n2_prefix = "10.88.2";
    let explicit = w.network(
        "n2",
        json!({"dns": {"nameservers": [format!("{n2_prefix}.1")]}}),
    );
    assert_eq!(explicit.prefix, n2_prefix);
    let c2 = w.container("c2");
    w.adding(&explicit, &c2).name("c2").ok(); // creates the bridge and its address
    let _gw_up = w.upstream(
        &format!("{n2_prefix}.1:53"),
        "up.test",
        &[("a.up.test", "10.9.9.2")],
    );
    assert_eq!(w.resolve(&c2, "a.up.test", "A"), vec!["10.9.9.2"]);
    // ...and an explicit loopback address is the container's own loopback, where nothing
    // listens: SERVFAIL, although the host's 127.0.0.53 would have answered.
    let n3 = w.network(
        "n3",
        json!({"dns": {"nameservers": ["127.0.0.53"]}, "upstreamTimeoutMs": 300}),
    );
    let c3 = w.container("c3");
    w.adding(&n3, &c3).name("c3").ok();
    assert_eq!(w.dig(&c3, &["a.up.test"]).status, "SERVFAIL");
}

#[test]
fn r18_a_non_loopback_host_upstream_is_asked_from_the_container() {
    let w = World::new("r18_a_non_loopback_host_upstream_is_asked_from_the_container");
    let net = w.network("n1", json!({}));
    // The host's nameserver is the bridge's address: reachable from the host netns and from
    // the container, with different source addresses.
    w.set_host_resolv_conf(&format!("nameserver {}\n", net.gateway()));
    let c = w.container("c");
    let ip = ip_of(&w.adding(&net, &c).name("c").ok());
    let up = w.upstream(
        &format!("{}:53", net.gateway()),
        "up.test",
        &[("a.up.test", "10.9.9.3")],
    );
    for transport in ["+notcp", "+tcp"] {
        assert_eq!(
            w.dig(&c, &["a.up.test", transport]).data(),
            vec!["10.9.9.3"]
        );
        assert_eq!(
            up.last_source().map(|s| s.ip().to_string()),
            Some(ip.clone()),
            "asked from the host netns over {transport}"
        );
    }
}

#[test]
fn r19_failover_and_dead_upstream_tried_last() {
    let w = World::new("r19_failover_and_dead_upstream_tried_last");
    w.set_host_resolv_conf("nameserver 127.0.0.60\nnameserver 127.0.0.53\n");
    let dead = w.upstream("127.0.0.60:53", "up.test", &[("a.up.test", "10.9.9.60")]);
    dead.set_mode(Mode::Silent);
    let good = w.upstream(
        "127.0.0.53:53",
        "up.test",
        &[("a.up.test", "10.9.9.1"), ("b.up.test", "10.9.9.2")],
    );
    // The same name asked again is to reach the upstreams each time: no cache (R34).
    let net = w.network("n1", json!({"upstreamTimeoutMs": 400, "cacheSize": 0}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    // Three queries in a row time out on the first upstream, the second answers each.
    for i in 1..=3 {
        assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
        assert_eq!(dead.queries(), i);
    }
    // ★ now it is tried last: the next query does not wait for it.
    assert_eq!(w.resolve(&cli, "b.up.test", "A"), vec!["10.9.9.2"]);
    assert_eq!(
        dead.queries(),
        3,
        "a demoted upstream was asked again within 30 s"
    );
    assert_eq!(good.queries(), 4);
    // Wrong IDs, garbage and SERVFAIL all fail over too; when every upstream fails: SERVFAIL.
    for mode in [Mode::WrongId, Mode::Garbage, Mode::ServFail] {
        good.set_mode(mode);
        dead.set_mode(mode);
        assert_eq!(w.dig(&cli, &["a.up.test"]).status, "SERVFAIL", "{mode:?}");
    }
    good.set_mode(Mode::Silent);
    dead.set_mode(Mode::Silent);
    assert_eq!(w.dig(&cli, &["+time=5", "a.up.test"]).status, "SERVFAIL");
}

#[test]
fn r19_one_lost_datagram_or_servfail_does_not_switch_a_split_horizon() {
    // A corporate resolver first (it knows the internal zone), a public one second (it says
    // NXDOMAIN for it). One unlucky query must not send internal names to the public one.
    let w = World::new("r19_one_lost_datagram_or_servfail_does_not_switch_a_split_horizon");
    w.set_host_resolv_conf("nameserver 127.0.0.60\nnameserver 127.0.0.53\n");
    let corp = w.upstream(
        "127.0.0.60:53",
        "corp.example",
        &[
            ("git.corp.example", "10.1.1.1"),
            ("wiki.corp.example", "10.1.1.2"),
        ],
    );
    let public = w.upstream("127.0.0.53:53", "corp.example", &[]);
    let net = w.network("n1", json!({"upstreamTimeoutMs": 400}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "git.corp.example", "A"), vec!["10.1.1.1"]);

    // One lost datagram: that query goes on to the public resolver...
    corp.set_mode(Mode::Silent);
    assert_eq!(w.dig(&cli, &["lost.corp.example"]).status, "NXDOMAIN");
    corp.set_mode(Mode::Answer);
    // ...and the next internal name is still asked of the corporate one first.
    assert_eq!(w.resolve(&cli, "wiki.corp.example", "A"), vec!["10.1.1.2"]);

    // A SERVFAIL for one broken domain: the same.
    corp.set_mode(Mode::ServFail);
    assert_eq!(w.dig(&cli, &["broken.corp.example"]).status, "NXDOMAIN");
    corp.set_mode(Mode::Answer);
    let before = public.queries();
    assert_eq!(w.resolve(&cli, "git.corp.example", "A"), vec!["10.1.1.1"]);
    assert_eq!(
        public.queries(),
        before,
        "the public resolver was asked first"
    );
}

#[test]
fn r19_every_upstream_dead_gets_servfail_within_5_s() {
    // Three dead upstreams at the default 2 s timeout each would take 6 s; the client (dig
    // told to wait 5 s, as glibc does) must have its SERVFAIL before it gives up.
    let w = World::new("r19_every_upstream_dead_gets_servfail_within_5_s");
    w.set_host_resolv_conf("nameserver 127.0.0.61\nnameserver 127.0.0.62\nnameserver 127.0.0.63\n");
    let dead: Vec<_> = (61..=63)
        .map(|i| {
            let up = w.upstream(&format!("127.0.0.{i}:53"), "up.test", &[]);
            up.set_mode(Mode::Silent);
            up
        })
        .collect();
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    let d = w.exec(
        &cli,
        &["dig", "@127.0.0.11", "+time=5", "+tries=1", "x.up.test"],
    );
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        dead.iter().all(|u| u.queries() == 1),
        "every upstream was tried"
    );
}

#[test]
fn r20_inflight_cap_refuses_at_once() {
    let w = World::new("r20_inflight_cap_refuses_at_once");
    let dead = w.upstream("127.0.0.53:53", "up.test", &[]);
    dead.set_mode(Mode::Silent);
    let net = w.network("n1", json!({"maxInflight": 2, "upstreamTimeoutMs": 1500}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    // Six forwarded queries at once, each for a name of its own; their statuses.
    let six_at_once = |prefix: &str| -> Vec<String> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|i| {
                    let (w, cli) = (&w, &cli);
                    let name = format!("{prefix}{i}.up.test");
                    s.spawn(move || w.dig(cli, &["+time=5", &name]).status)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let statuses = six_at_once("q");
    let refused = statuses.iter().filter(|s| *s == "REFUSED").count();
    assert!(refused >= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s == "REFUSED" || s == "SERVFAIL"),
        "{statuses:?}"
    );

    // The same container ADDed again with a larger cap (the runtime's conf changed): the
    // running resolver takes it on its reload.
    let id = w.record_id("n1", &[]);
    let ip = format!("{}.2", net.prefix);
    let out = w.direct(
        "ADD",
        Direct {
            net: "n1",
            container: &cli,
            id: &id,
            name: "cli",
            ip: &ip,
            conf: json!({"maxInflight": 64, "upstreamTimeoutMs": 1500}),
        },
    );
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let statuses = six_at_once("r");
    assert!(statuses.iter().all(|s| s == "SERVFAIL"), "{statuses:?}");
}

#[test]
fn r21_internal_networks_never_use_host_upstreams() {
    let w = World::new("r21_internal_networks_never_use_host_upstreams");
    let host_up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let net = w.network("n1", json!({"internal": true}));
    let (web, cli) = (w.container("web"), w.container("cli"));
    w.adding(&net, &web).name("web").ok();
    w.adding(&net, &cli).name("cli").ok();
    // ★ answered at once (Docker 20.10 sends nothing): SERVFAIL, and nothing went out.
    let d = w.dig(&cli, &["a.up.test"]);
    assert_eq!(d.status, "SERVFAIL");
    assert_eq!(host_up.queries(), 0);
    assert_eq!(
        w.resolve(&cli, "web", "A").len(),
        1,
        "local names still resolve"
    );
    // Explicit upstreams are still used, from the container's netns.
    let n2 = w.network(
        "n2",
        json!({"internal": true, "dns": {"nameservers": ["10.88.2.1"]}}),
    );
    let c2 = w.container("c2");
    w.adding(&n2, &c2).name("c2").ok();
    let gw = w.upstream("10.88.2.1:53", "up.test", &[("a.up.test", "10.9.9.2")]);
    assert_eq!(w.resolve(&c2, "a.up.test", "A"), vec!["10.9.9.2"]);
    assert_eq!(gw.queries(), 1);
    assert_eq!(host_up.queries(), 0);
}

#[test]
fn r22_host_resolv_conf_changes_are_picked_up() {
    let w = World::new("r22_host_resolv_conf_changes_are_picked_up");
    let _one = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let _two = w.upstream("127.0.0.54:53", "up.test", &[("a.up.test", "10.9.9.2")]);
    let net = w.network("n1", json!({}));
    let cli = w.container("cli");
    w.adding(&net, &cli).name("cli").ok();
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    let pids = w.resolver_pids();
    // The file's stamp is checked on every forwarded query: the next one uses the change.
    w.set_host_resolv_conf("nameserver 127.0.0.54\n");
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.2"]);
    // Edited in place (not replaced) works too.
    std::fs::write(&w.resolv_conf, "nameserver 127.0.0.53\n").unwrap();
    assert_eq!(w.resolve(&cli, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert_eq!(w.resolver_pids(), pids, "no restart");
}

#[test]
fn r17_r23_a_pods_dns_config_from_cri_with_capitalised_keys() {
    // containerd's CRI sends a pod's dns_config (kubelet's cluster DNS) as the `dns`
    // capability with go-cni's capitalised keys: its servers become the upstreams (asked from
    // the pod's netns), its searches and options go into the pod's resolv.conf, its ndots wins.
    let w = World::new("r17_r23_a_pods_dns_config_from_cri_with_capitalised_keys");
    w.set_host_resolv_conf("nameserver 127.0.0.53\nsearch corp.example\noptions ndots:1\n");
    let net = w.network("n1", json!({}));
    let first = w.container("first");
    w.adding(&net, &first).name("first").ok(); // creates the bridge and its address
    let cluster_dns = w.upstream(
        &format!("{}:53", net.gateway()),
        "cluster.local",
        &[("kubernetes.default.svc.cluster.local", "10.96.0.1")],
    );
    let pod = w.container("pod");
    let cap = json!({"dns": {
        "Servers": [net.gateway()],
        "Searches": ["default.svc.cluster.local", "svc.cluster.local"],
        "Options": ["ndots:5"],
    }});
    let ip = ip_of(&w.adding(&net, &pod).name("pod").cap(cap).ok());
    assert_eq!(
        w.resolve(&pod, "kubernetes.default.svc.cluster.local", "A"),
        vec!["10.96.0.1"]
    );
    assert_eq!(
        cluster_dns.last_source().map(|s| s.ip().to_string()),
        Some(ip),
        "asked from the pod's netns"
    );
    let rc = std::fs::read_to_string(
        std::path::Path::new("/etc/netns")
            .join(&pod.netns)
            .join("resolv.conf"),
    )
    .unwrap();
    let line = |k: &str| test_cni::line_starting(&rc, k);
    assert_eq!(line("nameserver"), "nameserver 127.0.0.11", "{rc}");
    assert_eq!(
        line("search"),
        "search default.svc.cluster.local svc.cluster.local corp.example",
        "{rc}"
    );
    assert!(line("options").contains("ndots:5"), "{rc}");
    assert!(!line("options").contains("ndots:1"), "{rc}");
}

#[test]
fn r17_a_pod_dns_server_our_redirect_takes_is_not_an_upstream() {
    // A runtime that copies our results' nameservers (127.0.0.12-15 for a container's further
    // networks) into a pod's DNS config must not make the resolver ask itself: those go, and
    // the host's upstream answers.
    let w = World::new("r17_a_pod_dns_server_our_redirect_takes_is_not_an_upstream");
    let net = w.network("n1", json!({}));
    let host_up = w.upstream("127.0.0.53:53", "up.test", &[("a.up.test", "10.9.9.1")]);
    let c = w.container("c");
    w.adding(&net, &c)
        .name("pod")
        .cap(json!({"dns": {"Servers": ["127.0.0.12"]}}))
        .ok();
    assert_eq!(w.resolve(&c, "a.up.test", "A"), vec!["10.9.9.1"]);
    assert!(host_up.queries() > 0);
}
