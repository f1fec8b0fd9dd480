//! embedns under a real containerd, driven over the CRI API as kubelet drives it:
//! RunPodSandbox, CreateContainer, StartContainer, ExecSync, StopPodSandbox, RemovePodSandbox.
//! Every test runs twice: on Debian 12's containerd 1.6 (`<test>::containerd_1_6`), which
//! writes the sandbox's resolv.conf before the CNI ADD (embedns replaces it through
//! `resolvConfPath`), and on containerd 2.x from Debian's newer suite (`<test>::containerd_2`),
//! which writes it after, with the host's nameservers or the pod's `dns_config`: there the
//! pods reach embedns through R26. The plugin dir is what `make install-files` produces.

use std::time::Duration;

use k8s_cri::v1::DnsConfig;
use serde_json::json;
use test_cni::cri::{Containerd, Pod, Version};
use test_cni::{nslookup_addresses, wait_until, FakeUpstream};

/// `on_both!(test)`: `test(Version)` as two tests, `test::containerd_1_6` and
/// `test::containerd_2`.
macro_rules! on_both {
    ($test:ident) => {
        mod $test {
            use test_cni::cri::Version;
            #[test]
            fn containerd_1_6() {
                super::$test(Version::Debian)
            }
            #[test]
            fn containerd_2() {
                super::$test(Version::V2)
            }
        }
    };
}

/// A containerd whose conflist carries the embedns entry of its version's example.
fn containerd(test: &str, version: Version) -> Containerd {
    Containerd::new(
        &format!("{test}_{version:?}"),
        version,
        test_cni::cri::example_entry(version),
    )
}

/// The nameserver lines of a pod's resolv.conf.
fn nameservers(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect()
}

fn nslookup(ctd: &Containerd, pod: &Pod, name: &str) -> String {
    ctd.exec(pod, &["nslookup", name]).1
}

fn records(ctd: &Containerd) -> usize {
    let dir = ctd.paths().networks();
    walk_json(&dir)
}

fn walk_json(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_json(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "json"))
            }
        })
        .sum()
}

on_both!(r1_r10_cri_pods_resolve_each_other_and_stop_and_remove_leave_nothing);
fn r1_r10_cri_pods_resolve_each_other_and_stop_and_remove_leave_nothing(v: Version) {
    let ctd = containerd(
        "r1_r10_cri_pods_resolve_each_other_and_stop_and_remove_leave_nothing",
        v,
    );
    let web = ctd.run_pod("web", None);
    let cli = ctd.run_pod("cli", None);
    let cri_original = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();

    // The pods' resolv.conf (CRI's sandbox file, bind-mounted): 1.6's names 127.0.0.11 alone,
    // embedns wrote it; 2.x's is its copy of the host's, and embedns answers its nameserver
    // (R26).
    let (code, rc) = ctd.exec(&cli, &["cat", "/etc/resolv.conf"]);
    assert_eq!(code, 0, "{rc}");
    let host_ns = format!("nameserver {}", ctd.gateway);
    let expected = match v {
        Version::Debian => "nameserver 127.0.0.11",
        Version::V2 => &host_ns,
    };
    assert_eq!(nameservers(&rc), vec![expected], "{rc}");

    // By pod name (K8S_POD_NAME), by the sandbox's short ID, and the PTR of its address.
    assert_eq!(
        nslookup_addresses(&nslookup(&ctd, &cli, "web")),
        vec![web.ip.clone()]
    );
    assert_eq!(
        nslookup_addresses(&nslookup(&ctd, &cli, &web.sandbox[..12])),
        vec![web.ip.clone()]
    );
    assert_eq!(
        nslookup_addresses(&nslookup(&ctd, &web, "cli")),
        vec![cli.ip.clone()]
    );
    let ptr = nslookup(&ctd, &cli, &web.ip);
    assert!(ptr.contains("name = web"), "PTR of {}: {ptr}", web.ip);

    // StopPodSandbox (CNI DEL): web's resolver and record go, CRI's file comes back (2.x's
    // was never touched).
    let web_rc = ctd.sandbox_resolv_conf(&web);
    let before = std::fs::read_to_string(&web_rc).unwrap();
    assert_eq!(nameservers(&before), vec![expected], "{before}");
    ctd.stop_pod(&web);
    let after = std::fs::read_to_string(&web_rc).unwrap();
    match v {
        Version::Debian => assert_eq!(after, cri_original),
        Version::V2 => assert_eq!(after, before),
    }
    let out = nslookup(&ctd, &cli, "web");
    assert!(
        nslookup_addresses(&out).is_empty(),
        "a stopped pod's name: {out}"
    );
    ctd.remove_pod(&web);

    ctd.stop_pod(&cli);
    ctd.remove_pod(&cli);
    wait_until(Duration::from_secs(5), "the resolvers to exit", || {
        test_cni::resolver_pids(&ctd.data_dir)
            .is_empty()
            .then_some(())
    });
    assert_eq!(records(&ctd), 0, "records left");
    let sandboxes = ctd.paths().sandboxes();
    let left = std::fs::read_dir(&sandboxes)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "sandbox state left in {}", sandboxes.display());
}

on_both!(r17_r18_r23_a_cri_pods_dns_config_gives_its_upstreams_search_list_and_ndots);
fn r17_r18_r23_a_cri_pods_dns_config_gives_its_upstreams_search_list_and_ndots(v: Version) {
    let ctd = containerd(
        "r17_r18_r23_a_cri_pods_dns_config_gives_its_upstreams_search_list_and_ndots",
        v,
    );
    // The first pod makes the bridge, where the "cluster DNS" then listens.
    let first = ctd.run_pod("first", None);
    let cluster_dns = FakeUpstream::start(
        None,
        &format!("{}:53", ctd.gateway),
        "cluster.local",
        &[("kubernetes.default.svc.cluster.local", "10.96.0.1")],
    );
    // What kubelet sends for a ClusterFirst pod.
    let dns = DnsConfig {
        servers: vec![ctd.gateway.clone()],
        searches: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        options: vec!["ndots:5".into()],
    };
    let pod = ctd.run_pod("pod", Some(dns));

    // Its servers are its upstreams, asked from the pod's netns; the search list works.
    let out = nslookup(&ctd, &pod, "kubernetes");
    assert_eq!(nslookup_addresses(&out), vec!["10.96.0.1"], "{out}");
    assert_eq!(
        cluster_dns.last_source().map(|s| s.ip().to_string()),
        Some(pod.ip.clone()),
        "the cluster DNS is asked from the pod's netns"
    );
    // Peers still resolve (through the cluster DNS's address on 2.x: R26, with R16a for
    // first.default.svc.cluster.local), and the pod's resolv.conf has its searches and
    // ndots: 1.6's is ours, 2.x's CRI's from the dns_config.
    let out = nslookup(&ctd, &pod, "first");
    assert_eq!(nslookup_addresses(&out), vec![first.ip.clone()], "{out}");
    let rc = ctd.exec(&pod, &["cat", "/etc/resolv.conf"]).1;
    let line = |k: &str| test_cni::line_starting(&rc, k);
    let nameserver = match v {
        Version::Debian => "127.0.0.11".to_string(),
        Version::V2 => ctd.gateway.clone(),
    };
    assert_eq!(
        line("nameserver"),
        format!("nameserver {nameserver}"),
        "{rc}"
    );
    assert_eq!(
        rc.lines().filter(|l| l.starts_with("nameserver")).count(),
        1,
        "{rc}"
    );
    assert!(
        line("search")
            .starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{rc}"
    );
    assert!(line("options").contains("ndots:5"), "{rc}");

    // DEL puts back what CRI wrote from the dns_config.
    ctd.stop_pod(&pod);
    let restored = std::fs::read_to_string(ctd.sandbox_resolv_conf(&pod)).unwrap();
    assert!(
        restored.contains(&format!("nameserver {}", ctd.gateway))
            && !restored.contains("127.0.0.11"),
        "{restored}"
    );
    ctd.remove_pod(&pod);
    ctd.stop_pod(&first);
    ctd.remove_pod(&first);
}

on_both!(r17_a_pod_dns_config_naming_127_0_0_11);
fn r17_a_pod_dns_config_naming_127_0_0_11(v: Version) {
    // A pod's own DNS config naming 127.0.0.11 (dnsPolicy None with dnsConfig.nameservers, or
    // kubelet's --cluster-dns), with a conflist without resolvConfPath: CRI writes the file
    // itself, and 127.0.0.11 is ours in any case.
    let ctd = Containerd::new(
        &format!("r17_a_pod_dns_config_naming_127_0_0_11_{v:?}"),
        v,
        |_| json!({"type": "embedns", "capabilities": {"aliases": true, "dns": true}}),
    );
    let dns = || DnsConfig {
        servers: vec!["127.0.0.11".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:2".into()],
    };
    let web = ctd.run_pod("web", Some(dns()));
    let upstream = FakeUpstream::start(
        None,
        &format!("{}:53", ctd.gateway),
        "example.org",
        &[("outside.example.org", "192.0.2.7")],
    );
    let cli = ctd.run_pod("cli", Some(dns()));
    let rc = ctd.exec(&cli, &["cat", "/etc/resolv.conf"]).1;
    assert!(rc.contains("nameserver 127.0.0.11"), "CRI's own file: {rc}");
    assert_eq!(
        nslookup_addresses(&nslookup(&ctd, &cli, "web")),
        vec![web.ip.clone()]
    );
    // 127.0.0.11 in the pod's servers is never an upstream (R17): the host's are asked.
    let out = nslookup(&ctd, &cli, "outside.example.org");
    assert_eq!(nslookup_addresses(&out), vec!["192.0.2.7"], "{out}");
    assert!(upstream.queries() > 0);
    for pod in [&web, &cli] {
        ctd.stop_pod(pod);
        let rc = std::fs::read_to_string(ctd.sandbox_resolv_conf(pod)).unwrap();
        assert!(
            rc.contains("nameserver 127.0.0.11"),
            "CRI's file untouched: {rc}"
        );
        ctd.remove_pod(pod);
    }
    assert!(test_cni::resolver_pids(&ctd.data_dir).is_empty());
}

on_both!(r25_a_cri_pods_resolver_lives_beneath_its_cgroup_parent_and_comes_back_after_a_kill);
fn r25_a_cri_pods_resolver_lives_beneath_its_cgroup_parent_and_comes_back_after_a_kill(v: Version) {
    // kubelet's cgroupfs layout, under a top of the test's own, removed (as kubelet removes
    // a pod's) after containerd is gone, also when the test fails.
    let top = format!("embedns-cri-{}", test_cni::host::unique(""));
    let _cleanup = CgroupTree(top.clone());
    let ctd = containerd(
        "r25_a_cri_pods_resolver_lives_beneath_its_cgroup_parent_and_comes_back_after_a_kill",
        v,
    );
    let parent = format!("/{top}/burstable/pod1");
    let web = ctd.run_pod_in("web", None, Some(&parent));
    let cli = ctd.run_pod("cli", None);
    let pids = test_cni::resolver_pids(&ctd.data_dir);
    let in_pod: Vec<i32> = pids
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains(&web.sandbox))
        })
        .collect();
    assert_eq!(in_pod.len(), 1, "web's resolver");
    // containerd 2.x passes the pod's cgroup parent as `cgroupPath`; 1.6 passes none, and the
    // resolver goes beneath embedns's own parent (never containerd's cgroup).
    let leaf = match v {
        Version::V2 => format!("{parent}/embedns-{}", web.sandbox),
        Version::Debian => format!("/embedns/embedns-{}", web.sandbox),
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", in_pod[0])).unwrap();
    for line in cgroups.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        assert_eq!(path, leaf, "{cgroups}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let pids_mount = mounts
        .lines()
        .find(|l| l.ends_with(" - cgroup cgroup rw,pids") || l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .expect("a pids or v2 hierarchy");
    assert!(
        std::path::Path::new(pids_mount)
            .join(leaf.trim_start_matches('/'))
            .is_dir(),
        "{pids_mount}{leaf}"
    );

    // SIGKILL: the pod answers again (through 127.0.0.11 on 1.6, through R26's catch of its
    // runtime-written nameserver on 2.x), from a new resolver in the same leaf.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(in_pod[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "web answering again", || {
        (nslookup_addresses(&nslookup(&ctd, &web, "cli")) == vec![cli.ip.clone()]).then_some(())
    });
    let again: Vec<i32> = test_cni::resolver_pids(&ctd.data_dir)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains(&web.sandbox))
        })
        .collect();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], in_pod[0]);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", again[0])).unwrap();
    assert!(cgroups.lines().all(|l| l.ends_with(&leaf)), "{cgroups}");

    // StopPodSandbox (DEL) removes the leaf.
    ctd.stop_pod(&web);
    ctd.remove_pod(&web);
    let leaf_dir = std::path::Path::new(pids_mount).join(leaf.trim_start_matches('/'));
    wait_until(Duration::from_secs(5), "the leaf removed", || {
        (!leaf_dir.exists()).then_some(())
    });
}

/// A cgroup tree `/<name>` in every hierarchy, removed deepest first on drop (a directory
/// that runc empties a moment later is waited for).
struct CgroupTree(String);

impl Drop for CgroupTree {
    fn drop(&mut self) {
        fn dirs(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs(&e.path(), out);
                }
            }
            out.push(d.to_path_buf());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().filter(|l| l.contains(" - cgroup")) {
            let root = std::path::Path::new(line.split(' ').nth(4).unwrap_or("/")).join(&self.0);
            let mut all = Vec::new();
            if root.exists() {
                dirs(&root, &mut all);
            }
            for d in all {
                test_cni::wait::poll_until(Duration::from_secs(5), || {
                    (std::fs::remove_dir(&d).is_ok() || !d.exists()).then_some(())
                });
            }
        }
    }
}
