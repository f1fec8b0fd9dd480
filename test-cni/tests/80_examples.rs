//! The example conflists in conf/examples/ work as shipped (only state paths redirected).

use serde_json::{json, Value};
use test_cni::{bins, World};

fn example(name: &str) -> Value {
    let path = bins::workspace().join("conf/examples").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn cnitool_example() {
    let w = World::new("cnitool_example");
    let net = w.conflist(example("cnitool.conflist"));
    let (web, cli) = (w.container("web"), w.container("cli"));
    let r = w
        .adding(&net, &web)
        .name("web")
        .cap(json!({"aliases": ["www"]}))
        .ok();
    w.adding(&net, &cli)
        .name("cli")
        .args("EMBEDNS_LINKS=web:w")
        .ok();
    let ip = test_cni::ip_of(&r);
    for name in ["web", "www", "w"] {
        assert_eq!(w.resolve(&cli, name, "A"), vec![ip.clone()], "{name}");
    }
}

#[test]
fn containerd_example_writes_the_sandbox_resolv_conf() {
    let w = World::new("containerd_example_writes_the_sandbox_resolv_conf");
    let mut list = example("containerd.conflist");
    // containerd's sandbox root moved under the test's dir; the template is the example's.
    let root = w.path("containerd-sandboxes");
    for p in list["plugins"].as_array_mut().unwrap() {
        if p["type"] == "embedns" {
            let t = p["resolvConfPath"].as_str().unwrap().replace(
                "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes",
                &root.display().to_string(),
            );
            p["resolvConfPath"] = json!(t);
        }
    }
    let net = w.conflist(list);
    let pod = w.container("pod");
    let sandbox_id = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeed";
    std::fs::create_dir_all(root.join(sandbox_id)).unwrap();
    // What containerd's CRI sends: the sandbox ID as container ID, K8S_* args.
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx-7d4f;K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID=1234"
    );
    let env = [("CNI_CONTAINERID", sandbox_id), ("CNI_ARGS", args.as_str())];
    let out = w.cnitool("add", &net.name, &pod, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = root.join(sandbox_id).join("resolv.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("nameserver 127.0.0.11"), "{text}");
    // The pod resolves itself by pod name and short ID through the sandbox's resolver.
    assert_eq!(w.resolve(&pod, "nginx-7d4f", "A").len(), 1);
    assert_eq!(w.resolve(&pod, &sandbox_id[..12], "A").len(), 1);
    let out = w.cnitool("del", &net.name, &pod, &env);
    assert!(out.status.success());
    assert!(!file.exists());
}
