//! The record store under concurrency, stale names, and the files ADD writes (R23).

use serde_json::json;
use test_cni::{ip_of, World};

#[test]
fn sixty_four_parallel_adds_and_dels_lose_nothing() {
    let w = World::new("sixty_four_parallel_adds_and_dels_lose_nothing");
    let net = w.network("par", json!({}));
    let containers: Vec<_> = (0..64).map(|i| w.container(&format!("p{i}"))).collect();
    std::thread::scope(|s| {
        for (i, c) in containers.iter().enumerate() {
            let (w, net) = (&w, &net);
            s.spawn(move || w.adding(net, c).name(&format!("c{i}")).ok());
        }
    });
    let records = w.records("par");
    println!(
        "64 parallel ADD: {} records expected, {} found",
        64,
        records.len()
    );
    assert_eq!(records.len(), 64);
    assert_eq!(w.resolver_pids().len(), 64);
    // Every name resolves from a peer (the index of a running resolver is complete).
    for i in (0..64).step_by(9) {
        let got = w.resolve(&containers[0], &format!("c{i}"), "A");
        assert_eq!(got.len(), 1, "c{i} from c0: {got:?}");
    }
    std::thread::scope(|s| {
        for c in &containers {
            let (w, net) = (&w, &net);
            s.spawn(move || w.del(net, c, &[]));
        }
    });
    let left = w.records("par");
    println!("64 parallel DEL: 0 records expected, {} found", left.len());
    assert!(left.is_empty(), "{left:?}");
    assert!(w.resolver_pids().is_empty());
}

#[test]
fn a_dead_attachments_name_is_replaced() {
    let w = World::new("a_dead_attachments_name_is_replaced");
    let net = w.network("n1", json!({}));
    let (old, new, cli) = (w.container("old"), w.container("new"), w.container("cli"));
    w.adding(&net, &cli).name("cli").ok();
    let first = w.adding(&net, &old).name("web").ok();
    // The runtime loses the container without a DEL: its netns disappears.
    assert!(w
        .exec_host(&["ip", "netns", "del", &old.netns])
        .status
        .success());
    let second = w.adding(&net, &new).name("web").ok();
    assert_ne!(ip_of(&first), ip_of(&second));
    assert_eq!(
        w.resolve(&cli, "web", "A"),
        vec![ip_of(&second)],
        "no stale duplicate"
    );
    assert_eq!(w.records("n1").len(), 2);
}

#[test]
fn resolv_conf_is_written_and_restored() {
    let w = World::new("resolv_conf_is_written_and_restored");
    w.set_host_resolv_conf("nameserver 127.0.0.53\nnameserver 127.0.0.11\nsearch corp.example lab.example\noptions edns0 timeout:2\n");
    let net = w.network(
        "n1",
        json!({"dns": {"search": ["extra.example"], "options": ["attempts:3"]}}),
    );
    let c = w.container("c");
    let etc = std::path::Path::new("/etc/netns").join(&c.netns);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
    let result = w
        .adding(&net, &c)
        .name("web")
        .cap(json!({"dns": {"searches": ["cap.example"]}}))
        .ok();
    // R23: only 127.0.0.11; search and options kept, ndots:0 added.
    let text = std::fs::read_to_string(etc.join("resolv.conf")).unwrap();
    let ns: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(ns, vec!["nameserver 127.0.0.11"], "{text}");
    assert!(
        text.contains("search extra.example cap.example corp.example lab.example"),
        "{text}"
    );
    assert!(
        text.contains("options edns0 timeout:2 attempts:3 ndots:0"),
        "{text}"
    );
    assert_eq!(
        result["dns"]["search"],
        json!([
            "extra.example",
            "cap.example",
            "corp.example",
            "lab.example"
        ])
    );
    // The container sees it (ip netns exec binds it over /etc/resolv.conf).
    let inside = w.exec(&c, &["cat", "/etc/resolv.conf"]);
    assert!(String::from_utf8_lossy(&inside.stdout).contains("nameserver 127.0.0.11"));
    w.del(&net, &c, &[]);
    assert_eq!(
        std::fs::read_to_string(etc.join("resolv.conf")).unwrap(),
        "nameserver 192.0.2.1\n"
    );
}

#[test]
fn resolv_conf_path_template_for_containerd() {
    let w = World::new("resolv_conf_path_template_for_containerd");
    let sandbox_dir = w.path("sandboxes/pod-infra-1");
    std::fs::create_dir_all(&sandbox_dir).unwrap();
    let template = format!(
        "{}/sandboxes/{{podInfraContainerId}}/resolv.conf",
        w.dir.display()
    );
    let net = w.network("n1", json!({"resolvConfPath": template}));
    let c = w.container("c");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_INFRA_CONTAINER_ID=pod-infra-1";
    w.adding(&net, &c).name("web").args(args).ok();
    let file = sandbox_dir.join("resolv.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("nameserver 127.0.0.11"), "{text}");
    w.del(
        &net,
        &c,
        &[(
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAME=web;{args}"),
        )],
    );
    assert!(!file.exists(), "a file embedns created is removed on DEL");
}

#[test]
fn a_resolv_conf_path_whose_directory_comes_later_is_left_to_the_runtime() {
    // containerd 2.x: CNI ADD runs before CRI makes sandboxes/<id>/ and writes resolv.conf.
    let w = World::new("a_resolv_conf_path_whose_directory_comes_later_is_left_to_the_runtime");
    let template = format!(
        "{}/sandboxes/{{podInfraContainerId}}/resolv.conf",
        w.dir.display()
    );
    let net = w.network("n1", json!({"resolvConfPath": template}));
    let c = w.container("c");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_INFRA_CONTAINER_ID=pod-infra-2";
    w.adding(&net, &c).name("web").args(args).ok();
    let sandbox_dir = w.path("sandboxes/pod-infra-2");
    assert!(!sandbox_dir.exists(), "ADD made the runtime's directory");
    assert_eq!(w.resolve(&c, "web", "A").len(), 1, "ADD went on");
    // The runtime now writes its own file; DEL leaves it alone.
    std::fs::create_dir_all(&sandbox_dir).unwrap();
    std::fs::write(sandbox_dir.join("resolv.conf"), "nameserver 127.0.0.11\n").unwrap();
    let env = format!("IgnoreUnknown=1;K8S_POD_NAME=web;{args}");
    assert!(w
        .cnitool("check", &net.name, &c, &[("CNI_ARGS", &env)])
        .status
        .success());
    w.del(&net, &c, &[("CNI_ARGS", &env)]);
    assert_eq!(
        std::fs::read_to_string(sandbox_dir.join("resolv.conf")).unwrap(),
        "nameserver 127.0.0.11\n"
    );
}

#[test]
fn failed_add_leaves_nothing_behind() {
    let w = World::new("failed_add_leaves_nothing_behind");
    // The resolver binary is missing.
    let net = w.network(
        "n1",
        json!({"resolverPath": "/nonexistent/embedns-resolverd"}),
    );
    let c = w.container("c");
    let out = w.adding(&net, &c).name("web").run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resolver binary"));
    // The resolver starts but dies at once (a binary that is not a resolver).
    let net2 = w.network("n2", json!({"resolverPath": "/bin/false"}));
    let c2 = w.container("c2");
    let out = w.adding(&net2, &c2).name("web").run();
    assert!(!out.status.success());
    for n in ["n1", "n2"] {
        assert!(w.records(n).is_empty(), "record left on {n}");
    }
    assert!(w.resolver_pids().is_empty());
    assert!(!w.nat_rules(&c2).contains("EMBEDNS"));
    assert!(!std::path::Path::new("/etc/netns").join(&c2.netns).exists());
    assert_eq!(w.sandboxes(), 0, "sandbox state left behind");
    // A netns path that does not exist is a clear error.
    let ghost = test_cni::Container {
        netns: "ghost".into(),
        path: "/run/netns/embedns-no-such-netns".into(),
    };
    let out = w
        .adding(&w.network("n3", json!({})), &ghost)
        .name("x")
        .run();
    assert!(!out.status.success());
    assert!(w.records("n3").is_empty(), "a failed ADD leaves no record");
}

#[test]
fn store_is_private() {
    // Root's, readable by the resolvers' group (65530, theirs alone, by default), by no one else;
    // writable by root only, but for each resolver's own log directory.
    let w = World::new("store_is_private");
    use std::os::unix::fs::MetadataExt;
    let net = w.network("n1", json!({}));
    let c = w.container("c");
    w.adding(&net, &c).name("web").ok();
    let meta = |p: &std::path::Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(meta(&w.data_dir), (0o2750, 0, 65530));
    assert_eq!(meta(&w.data_dir.join("networks/n1")), (0o2750, 0, 65530));
    let rec = w.data_dir.join("networks/n1").join(&w.records("n1")[0]);
    assert_eq!(meta(&rec), (0o640, 0, 65530));
    assert_eq!(
        meta(&w.data_dir.join("networks/n1/.index")),
        (0o640, 0, 65530)
    );
    let sb = std::fs::read_dir(w.paths().sandboxes())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(meta(&sb), (0o2750, 0, 65530));
    assert_eq!(meta(&sb.join("sandbox.json")), (0o640, 0, 65530));
    assert_eq!(meta(&sb.join("control.sock")).0, 0o600);
    assert_eq!(meta(&sb.join("log")), (0o2700, 65530, 65530));
    for f in ["resolver.log", "resolver.log.1"] {
        assert_eq!(meta(&sb.join("log").join(f)), (0o600, 65530, 65530), "{f}");
    }
}
