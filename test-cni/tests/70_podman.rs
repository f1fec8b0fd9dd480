//! embedns as a drop-in for podman's dnsname, with real `podman run` (CNI backend, runc):
//! the conflist of `podman network create --disable-dns` plus the embedns entry of
//! conf/examples/podman.conflist.

use std::path::Path;

use test_cni::podman::Podman;
use test_cni::{nslookup_addresses, wait_until};

#[test]
fn podman_containers_resolve_each_other() {
    let pm = Podman::new("podman_containers_resolve_each_other");
    let net = pm.network(
        &test_cni::unique("pmn"),
        test_cni::example_entry("podman.conflist"),
    );
    let id = pm.start("web", &["--network", &net, "--network-alias", "www"]);
    pm.start("cli", &["--network", &net]);
    let web_ip = pm.ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "web",
    ]);
    let web_ip = web_ip.trim().to_string();
    for name in ["web", "www", &id[..12], "web.dns.podman"] {
        let out = pm.busybox("cli", &["nslookup", name, "127.0.0.11"]);
        assert_eq!(
            nslookup_addresses(&out),
            vec![web_ip.clone()],
            "{name}: {out}"
        );
    }
    // The container's resolv.conf names 127.0.0.11 first.
    let rc = pm.busybox("cli", &["cat", "/etc/resolv.conf"]);
    let first_ns = rc.lines().find(|l| l.starts_with("nameserver"));
    assert_eq!(first_ns, Some("nameserver 127.0.0.11"), "{rc}");
    assert!(
        rc.contains("dns.podman"),
        "domainName in the search list: {rc}"
    );

    // connect / disconnect a second network changes what resolves.
    let net2 = pm.network(
        &test_cni::unique("pmn"),
        test_cni::example_entry("podman.conflist"),
    );
    pm.start("db", &["--network", &net2]);
    assert!(nslookup_addresses(&pm.busybox("cli", &["nslookup", "db", "127.0.0.11"])).is_empty());
    pm.ok(&["network", "connect", &net2, "cli"]);
    assert_eq!(
        nslookup_addresses(&pm.busybox("cli", &["nslookup", "db", "127.0.0.11"])).len(),
        1
    );
    pm.ok(&["network", "disconnect", &net2, "cli"]);
    assert!(nslookup_addresses(&pm.busybox("cli", &["nslookup", "db", "127.0.0.11"])).is_empty());

    // podman rm -f leaves no resolver, record, sandbox or file.
    pm.ok(&["rm", "-f", "-t", "0", "web", "cli", "db"]);
    let data = pm.data_dir.clone();
    wait_until(
        std::time::Duration::from_secs(5),
        "resolvers to stop",
        || test_cni::resolver_pids(&data).is_empty().then_some(()),
    );
    let leftovers: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json") || p.ends_with("control.sock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn r23_podman_resolv_conf_with_one_two_and_three_networks_repeats_nothing() {
    // podman reads /etc/netns/<netns>/resolv.conf, when there is one, as the container's host
    // resolv.conf: when embedns wrote one there, podman dropped its 127.0.0.11 as a localhost
    // address, fell back to 8.8.8.8/8.8.4.4 and merged the search list once more.
    let pm =
        Podman::new("podman_resolv_conf_has_127_0_0_11_and_the_hosts_nameservers_never_googles");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_ns: Vec<&str> = host
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .filter(|a| !a.starts_with("127."))
        .collect();
    let nets: Vec<String> = (0..3)
        .map(|_| {
            pm.network(
                &test_cni::unique("pmn"),
                test_cni::example_entry("podman.conflist"),
            )
        })
        .collect();
    for n in 1..=3 {
        let name = format!("multi{n}");
        let mut opts = Vec::new();
        for net in &nets[..n] {
            opts.extend(["--network", net.as_str()]);
        }
        pm.start(&name, &opts);
        let rc = pm.busybox(&name, &["cat", "/etc/resolv.conf"]);
        let lines = |key: &str| -> Vec<String> {
            rc.lines()
                .filter_map(|l| l.strip_prefix(key))
                .flat_map(str::split_whitespace)
                .map(str::to_string)
                .collect()
        };
        let (ns, search) = (lines("nameserver"), lines("search"));
        for google in ["8.8.8.8", "8.8.4.4"] {
            assert!(
                host.contains(google) || !ns.iter().any(|a| a == google),
                "{n} network(s):\n{rc}"
            );
        }
        for h in &host_ns {
            assert!(
                ns.iter().any(|a| a == h),
                "the host's {h}, {n} network(s):\n{rc}"
            );
        }
        // Exactly what podman builds from our results plus the host's nameservers: one
        // address per network (127.0.0.11, 127.0.0.12, ...: podman runs the networks in no
        // fixed order), ours first, each once; each search domain once.
        let mut ours: Vec<String> = ns[..n.min(ns.len())].to_vec();
        ours.sort();
        let want: Vec<String> = (11..11 + n as u8).map(|i| format!("127.0.0.{i}")).collect();
        assert_eq!(ours, want, "{n} network(s):\n{rc}");
        let hosts: Vec<&str> = ns[n.min(ns.len())..].iter().map(String::as_str).collect();
        assert_eq!(hosts, host_ns, "{n} network(s):\n{rc}");
        assert_eq!(search, vec!["dns.podman"], "{n} network(s):\n{rc}");
        let out = pm.busybox(&name, &["nslookup", &name]);
        assert!(
            !nslookup_addresses(&out).is_empty(),
            "{n} network(s): {out}"
        );
        pm.ok(&["rm", "-f", "-t", "0", &name]);
    }
    let wrote = walk(Path::new("/etc/netns"))
        .into_iter()
        .any(|p| p.to_string_lossy().contains("/netns-"));
    assert!(!wrote, "embedns wrote into /etc/netns for podman");
}

#[test]
fn r23_podman_network_disconnect_of_either_network_leaves_a_working_nameserver() {
    // podman's `network disconnect` takes out of resolv.conf the nameservers that network's
    // result named; when every network named 127.0.0.11, leaving either one left none.
    let pm =
        Podman::new("r23_podman_network_disconnect_of_either_network_leaves_a_working_nameserver");
    let (n1, n2) = (
        pm.network(
            &test_cni::unique("pmn"),
            test_cni::example_entry("podman.conflist"),
        ),
        pm.network(
            &test_cni::unique("pmn"),
            test_cni::example_entry("podman.conflist"),
        ),
    );
    pm.start("peer", &["--network", &n1, "--network", &n2]);
    pm.start("c", &["--network", &n1, "--network", &n2]);
    // busybox nslookup without a server asks the first nameserver of resolv.conf.
    let works = |when: &str| {
        let rc = pm.busybox("c", &["cat", "/etc/resolv.conf"]);
        let first = rc
            .lines()
            .find(|l| l.starts_with("nameserver"))
            .unwrap_or("");
        assert!(first.starts_with("nameserver 127.0.0.1"), "{when}:\n{rc}");
        let out = pm.busybox("c", &["nslookup", "peer"]);
        assert!(!nslookup_addresses(&out).is_empty(), "{when}: {out}\n{rc}");
    };
    works("on both");
    pm.ok(&["network", "disconnect", &n2, "c"]);
    works("after disconnecting the second");
    pm.ok(&["network", "connect", &n2, "c"]);
    works("after connecting it again");
    pm.ok(&["network", "disconnect", &n1, "c"]);
    works("after disconnecting the first");
    pm.ok(&["rm", "-f", "-t", "0", "c", "peer"]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
