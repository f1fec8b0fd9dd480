//! The CNI verbs through real libcni (cnitool) for every spec version, and the plugin's
//! answers to bad input, called directly as a runtime would.

use embedns_conf::attachment::AttachmentId;
use serde_json::{json, Value};
use test_cni::World;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn add_check_del_in_every_version() {
    let w = World::new("add_check_del_in_every_version");
    // Debian's bridge plugin (and libcni 1.1.2) stop at 1.0.0: 1.1.0 is tested directly below.
    for &v in &VERSIONS[..4] {
        let net = w.network(
            &format!("v{}", v.replace('.', "")),
            json!({"cniVersion": v}),
        );
        let c = w.container(&format!("c{}", v.replace('.', "")));
        let result = w.adding(&net, &c).name("web").ok();
        // R23: the result is in the requested version, with our dns.
        assert_eq!(result["cniVersion"], v, "{result}");
        assert_eq!(result["dns"]["nameservers"], json!(["127.0.0.11"]));
        let ip = &result["ips"][0];
        if v.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{v}: {result}");
        } else {
            assert!(ip.get("version").is_none(), "{v}: {result}");
        }
        assert_eq!(w.records(&net.name).len(), 1, "{v}");
        if v != "0.3.0" && v != "0.3.1" {
            let out = w.cnitool(
                "check",
                &net.name,
                &c,
                &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")],
            );
            assert!(
                out.status.success(),
                "{v} CHECK: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        w.del(&net, &c, &[]);
        assert!(
            w.records(&net.name).is_empty(),
            "{v}: record left after DEL"
        );
        assert!(w.resolver_pids().is_empty(), "{v}: resolver left after DEL");
    }
    // 1.1.0: ADD, CHECK, DEL called as a 1.1 runtime would, with bridge's prevResult.
    let net = w.network("v110", json!({}));
    let c = w.container("c110");
    let prev = w.adding(&net, &c).ok();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "direct110"),
            ("CNI_NETNS", c.path.as_str()),
            ("CNI_IFNAME", "eth1"),
            ("CNI_PATH", "/x"),
        ]
    };
    let conf = w
        .conf("v110", "1.1.0", json!({"prevResult": prev}))
        .to_string();
    let out = w.plugin(&env("ADD"), &conf);
    assert!(out.success, "1.1.0 ADD: {} {}", out.stdout, out.stderr);
    assert_eq!(out.json()["cniVersion"], "1.1.0");
    assert!(w.plugin(&env("CHECK"), &conf).success, "1.1.0 CHECK");
    assert!(w.plugin(&env("DEL"), &conf).success, "1.1.0 DEL");
    assert!(!w
        .records("v110")
        .iter()
        .any(|r| r.starts_with("direct110@")));
}

#[test]
fn version_verb_and_about() {
    let w = World::new("version_verb_and_about");
    let out = w.plugin(
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(out.success);
    let v = out.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["supportedVersions"], json!(VERSIONS));

    let help = std::process::Command::new(w.bin_dir.join("embedns"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("CNI protocol versions supported: 0.3.0")
    );
    let version = std::process::Command::new(w.bin_dir.join("embedns"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("embedns "));
}

/// Runs the plugin directly and returns its error object, checking the spec's shape.
fn error_of(w: &World, env: &[(&str, &str)], stdin: &str) -> Value {
    let out = w.plugin(env, stdin);
    assert!(!out.success, "expected failure, got {}", out.stdout);
    let e = out.json();
    assert!(e["cniVersion"].is_string(), "{e}");
    assert!(e["code"].is_u64(), "{e}");
    assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    e
}

#[test]
fn bad_input_gets_spec_errors() {
    let w = World::new("bad_input_gets_spec_errors");
    let c = w.container("c");
    let env = |cmd: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "c1".to_string()),
            ("CNI_NETNS", c.path.clone()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", w.bin_dir.display().to_string()),
        ]
    };
    let as_ref = |v: &Vec<(&'static str, String)>| -> Vec<(&str, String)> { v.clone() };
    let run = |vars: Vec<(&str, String)>, stdin: &str| -> Value {
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        error_of(&w, &pairs, stdin)
    };
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": c.path}],
                      "ips": [{"address": "10.1.0.2/24", "interface": 0}]});
    let good = w.conf("n1", "1.0.0", json!({"prevResult": prev}));

    assert_eq!(run(as_ref(&env("ADD")), "{not json")["code"], 6);
    let mut no_id = env("ADD");
    no_id.retain(|(k, _)| *k != "CNI_CONTAINERID");
    assert_eq!(run(no_id, &good.to_string())["code"], 4);
    let mut bad_id = env("ADD");
    bad_id[1].1 = "../../etc".into();
    assert_eq!(run(bad_id, &good.to_string())["code"], 4);
    let e = run(
        as_ref(&env("ADD")),
        &w.conf("n1", "9.9.9", json!({"prevResult": prev}))
            .to_string(),
    );
    assert_eq!(e["code"], 1);
    let e = run(
        as_ref(&env("ADD")),
        &w.conf("n1", "1.0.0", json!({})).to_string(),
    );
    assert_eq!(e["code"], 7, "missing prevResult: {e}");
    assert!(e["msg"].as_str().unwrap().contains("prevResult"));
    let e = run(
        as_ref(&env("ADD")),
        &w.conf("../x", "1.0.0", json!({"prevResult": prev}))
            .to_string(),
    );
    assert_eq!(e["code"], 7, "path traversal in the network name: {e}");
    let e = run(
        as_ref(&env("ADD")),
        &w.conf(
            "n1",
            "1.0.0",
            json!({"prevResult": prev, "aliases": ["bad/alias"]}),
        )
        .to_string(),
    );
    assert_eq!(e["code"], 7);
    let e = run(
        as_ref(&env("CHECK")),
        &w.conf("n1", "0.3.1", json!({"prevResult": prev}))
            .to_string(),
    );
    assert_eq!(e["code"], 1, "CHECK needs 0.4.0: {e}");
    // Nothing was half-written by any of the failures.
    assert!(w.records("n1").is_empty());
    assert!(w.records("..").is_empty());
    assert!(w.resolver_pids().is_empty());
    assert_eq!(w.sandboxes(), 0, "sandbox state left behind");
}

#[test]
fn del_is_forgiving() {
    let w = World::new("del_is_forgiving");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    // DEL of a container never seen.
    w.del(&net, &c, &[]);
    w.adding(&net, &c).name("web").ok();
    // DEL without prevResult (called directly), twice.
    let conf = w.conf("n1", "1.0.0", json!({})).to_string();
    let id = container_id_of(&w, &net);
    for _ in 0..2 {
        let out = w.plugin(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", &id),
                ("CNI_NETNS", &c.path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x"),
            ],
            &conf,
        );
        assert!(out.success, "DEL: {} {}", out.stdout, out.stderr);
        assert!(
            out.stdout.trim().is_empty(),
            "DEL prints nothing on success"
        );
    }
    assert!(w.records("n1").is_empty());
    assert!(w.resolver_pids().is_empty());
    w.del(&net, &c, &[]);
}

#[test]
fn del_after_netns_is_gone() {
    let w = World::new("del_after_netns_is_gone");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    let id = container_id_of(&w, &net);
    let out = w.exec_host(&["ip", "netns", "del", &c.netns]);
    assert!(out.status.success());
    let out = w.plugin(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &id),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ],
        &w.conf("n1", "1.0.0", json!({})).to_string(),
    );
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    assert!(w.records("n1").is_empty());
    assert!(
        w.resolver_pids().is_empty(),
        "resolver survived DEL of a deleted netns"
    );
}

#[test]
fn check_fails_when_the_network_index_lost_the_record() {
    let w = World::new("check_fails_when_the_network_index_lost_the_record");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    let check = || {
        w.cnitool(
            "check",
            &net.name,
            &c,
            &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")],
        )
    };
    assert!(check().status.success());
    // The network's index replaced by one that does not answer for it (zeros: unreadable).
    let dir = w.data_dir.join("networks/n1");
    let len = std::fs::metadata(dir.join(".index")).unwrap().len() as usize;
    std::fs::write(dir.join(".tmp-bad"), vec![0u8; len]).unwrap();
    std::fs::rename(dir.join(".tmp-bad"), dir.join(".index")).unwrap();
    let out = check();
    assert!(
        !out.status.success(),
        "CHECK passed with the record missing from the index"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("index"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.del(&net, &c, &[]);
    assert!(w.records("n1").is_empty());
}

#[test]
fn check_fails_when_resolver_is_dead() {
    let w = World::new("check_fails_when_resolver_is_dead");
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    let pids = w.resolver_pids();
    assert_eq!(pids.len(), 1);
    // The supervisor first: a resolver killed alone is started again (91_always_answered).
    let supervisors = test_cni::host::supervisor_pids(&w.data_dir);
    assert_eq!(supervisors.len(), 1);
    for pid in [supervisors[0], pids[0]] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
    test_cni::wait_until(
        std::time::Duration::from_secs(5),
        "the resolver to die",
        || w.resolver_pids().is_empty().then_some(()),
    );
    let out = w.cnitool(
        "check",
        &net.name,
        &c,
        &[("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web")],
    );
    assert!(!out.status.success(), "CHECK passed with a dead resolver");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.del(&net, &c, &[]);
    w.wait_redirect_gone(&c, "DEL of a dead resolver");
}

#[test]
fn gc_and_status() {
    let w = World::new("gc_and_status");
    let net = w.network("n1", json!({}));
    let (a, b) = (w.container("a"), w.container("b"));
    w.adding(&net, &a).name("a").cap(json!({})).ok();
    w.adding(&net, &b).name("b").ok();
    let ids: Vec<String> = w
        .records("n1")
        .iter()
        .map(|r| r.parse::<AttachmentId>().unwrap().container_id)
        .collect();
    assert_eq!(ids.len(), 2);
    let keep = &ids[0];
    let conf = w.conf(
        "n1",
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}]}),
    );
    let out = w.plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
        &conf.to_string(),
    );
    assert!(out.success, "GC: {} {}", out.stdout, out.stderr);
    assert_eq!(w.records("n1"), vec![format!("{keep}@eth0.json")]);
    assert_eq!(
        w.resolver_pids().len(),
        1,
        "GC stops the resolver of what it removed"
    );

    let out = w.plugin(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
        &w.conf("n1", "1.1.0", json!({})).to_string(),
    );
    assert!(out.success, "STATUS: {}", out.stdout);
    let ro = w.conf(
        "n1",
        "1.1.0",
        json!({"dataDir": "/proc/embedns-cannot-write"}),
    );
    let out = w.plugin(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
        &ro.to_string(),
    );
    assert!(!out.success);
    assert_eq!(out.json()["code"], 50);
    let old = w.plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
        &w.conf("n1", "1.0.0", json!({})).to_string(),
    );
    assert_eq!(old.json()["code"], 1, "GC needs 1.1.0");
}

/// The container ID cnitool derived for the only record of a network.
fn container_id_of(w: &World, net: &test_cni::Network) -> String {
    let recs = w.records(&net.name);
    assert_eq!(recs.len(), 1, "{recs:?}");
    recs[0].parse::<AttachmentId>().unwrap().container_id
}
