//! embedns under rootless podman: a new unprivileged user, its subordinate
//! ids, slirp4netns, the CNI backend; the embedns entry of conf/examples/podman.conflist with
//! no `dataDir`, as a user copies it.

use embedns_conf::paths::StatePaths;
use embedns_conf::protocol::report::Report;
use std::time::Duration;

use serde_json::json;
use test_cni::rootless::RootlessPodman;
use test_cni::{nslookup_addresses, wait_until};

/// A process's `Uid:` (real) and `CapEff:` lines from /proc.
fn uid_and_caps(pid: i32) -> (u32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (uid, field("CapEff:"))
}

#[test]
fn rootless_podman_names_status_warnings_and_errors() {
    let pm = RootlessPodman::new("rootless_podman_names_status_warnings_and_errors");
    // The host's resolv.conf names a loopback nameserver (systemd-resolved's), which in the
    // rootless netns (podman's "host" namespace here) does not exist.
    let host_rc = pm.dir.join("host-resolv.conf");
    std::fs::write(&host_rc, "nameserver 127.0.0.53\n").unwrap();
    let mut plugin = test_cni::example_entry("podman.conflist");
    plugin["hostResolvConf"] = json!(host_rc);
    plugin["upstreamTimeoutMs"] = json!(300);
    let net = pm.network(&test_cni::unique("rln"), plugin.clone());

    let web = pm.start("web", &["--network", &net, "--network-alias", "www"]);
    assert!(
        web.status.success(),
        "{}",
        String::from_utf8_lossy(&web.stderr)
    );
    let id = String::from_utf8_lossy(&web.stdout).trim().to_string();
    let cli = pm.start("cli", &["--network", &net]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let web_ip = pm
        .ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ])
        .trim()
        .to_string();
    for name in ["web", "www", &id[..12], "web.dns.podman"] {
        let out = pm.busybox("cli", &["nslookup", name, "127.0.0.11"]);
        assert_eq!(
            nslookup_addresses(&out),
            vec![web_ip.clone()],
            "{name}: {out}"
        );
    }

    // The default state dir is the user's runtime dir; the resolvers run as the user (the
    // rootless namespace's root), with no capabilities.
    let data = pm.data_dir();
    let pids = test_cni::resolver_pids(&data);
    assert_eq!(pids.len(), 2, "resolvers of {}", data.display());
    for pid in pids {
        let (uid, caps) = uid_and_caps(pid);
        assert_eq!(uid, pm.uid, "resolver {pid} runs as the user");
        assert_eq!(
            caps, "0000000000000000",
            "resolver {pid} has no capabilities"
        );
    }

    // `embedns status` from the user's shell finds the same state.
    let embedns = pm.dir.join("cni-bin/embedns").display().to_string();
    let out = pm.as_user(&embedns, &["status", "--json"]);
    let report: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report.data_dir, data, "{report:?}");
    let names: Vec<&str> = (report.containers.iter())
        .filter_map(|c| c.name.as_deref())
        .collect();
    assert!(
        names.contains(&"web") && names.contains(&"cli"),
        "{report:?}"
    );

    // The loopback upstream cannot be reached from where it is asked: said once, not per query.
    for _ in 0..3 {
        pm.busybox("cli", &["nslookup", "outside.example", "127.0.0.11"]);
    }
    let cli_id = pm
        .ok(&["inspect", "-f", "{{.Id}}", "cli"])
        .trim()
        .to_string();
    let log = StatePaths::new(&data).resolver_log(&cli_id);
    let said = wait_until(
        Duration::from_secs(5),
        "the warning in the resolver's log",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let n = text
                .matches("cannot be reached from the runtime's host network namespace")
                .count();
            (n > 0).then_some(n)
        },
    );
    assert_eq!(said, 1, "the warning is said once");

    // A dataDir the user cannot write: the run fails, saying why once.
    let mut bad = plugin;
    bad["dataDir"] = json!(format!("/var/lib/{}", test_cni::unique("embedns-rl")));
    let bad_net = pm.network(&test_cni::unique("rlb"), bad);
    let out = pm.start("bad", &["--network", &bad_net]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");

    // podman rm -f leaves no resolver and no container state.
    pm.ok(&["rm", "-f", "-t", "0", "web", "cli"]);
    wait_until(Duration::from_secs(5), "the resolvers to stop", || {
        test_cni::resolver_pids(&data).is_empty().then_some(())
    });
    let left = std::fs::read_dir(StatePaths::new(&data).sandboxes())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "sandboxes left");
}
