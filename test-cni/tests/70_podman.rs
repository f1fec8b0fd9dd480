//! embedns as a drop-in for podman's dnsname, with real `podman run` (CNI backend, runc):
//! the conflist of `podman network create --disable-dns` plus the embedns entry of
//! conf/examples/podman.conflist.

use std::path::Path;

use serde_json::Value;
use test_cni::podman::Podman;
use test_cni::{bins, wait_until};

/// The embedns entry of the example conflist, as a user copies it.
fn example_plugin() -> Value {
    let path = bins::workspace().join("conf/examples/podman.conflist");
    let list: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "embedns")
        .cloned()
        .expect("the example has an embedns entry")
}

fn address(nslookup: &str) -> Vec<String> {
    // busybox prints the server first ("Address: 127.0.0.11:53"), then the answers.
    let mut v: Vec<String> = nslookup
        .lines()
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.starts_with("127.0.0.11"))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn podman_containers_resolve_each_other() {
    let pm = Podman::new("podman_containers_resolve_each_other");
    let net = pm.network(&test_cni::unique("pmn"), example_plugin());
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
        assert_eq!(address(&out), vec![web_ip.clone()], "{name}: {out}");
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
    let net2 = pm.network(&test_cni::unique("pmn"), example_plugin());
    pm.start("db", &["--network", &net2]);
    assert!(address(&pm.busybox("cli", &["nslookup", "db", "127.0.0.11"])).is_empty());
    pm.ok(&["network", "connect", &net2, "cli"]);
    assert_eq!(
        address(&pm.busybox("cli", &["nslookup", "db", "127.0.0.11"])).len(),
        1
    );
    pm.ok(&["network", "disconnect", &net2, "cli"]);
    assert!(address(&pm.busybox("cli", &["nslookup", "db", "127.0.0.11"])).is_empty());

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
fn podman_resolv_conf_has_127_0_0_11_and_the_hosts_nameservers_never_googles() {
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
        .map(|_| pm.network(&test_cni::unique("pmn"), example_plugin()))
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
        assert_eq!(ns.first().map(String::as_str), Some("127.0.0.11"), "{rc}");
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
        if n == 1 {
            // Exactly what podman builds from our result plus the host's nameservers.
            let mut want = vec!["127.0.0.11".to_string()];
            want.extend(host_ns.iter().map(|a| a.to_string()));
            assert_eq!(ns, want, "{rc}");
            assert_eq!(search, vec!["dns.podman"], "{rc}");
        }
        // podman concatenates the results of several networks: 127.0.0.11 and dns.podman
        // appear once per network (their de-duplication belongs with issue 11 item 2).
        assert_eq!(
            search.iter().filter(|d| *d == "dns.podman").count(),
            n,
            "{rc}"
        );
        let out = pm.busybox(&name, &["nslookup", &name]);
        assert!(!address(&out).is_empty(), "{n} network(s): {out}");
        pm.ok(&["rm", "-f", "-t", "0", &name]);
    }
    let wrote = walk(Path::new("/etc/netns"))
        .into_iter()
        .any(|p| p.to_string_lossy().contains("/netns-"));
    assert!(!wrote, "embedns wrote into /etc/netns for podman");
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
