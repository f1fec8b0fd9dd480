//! R35 under a real containerd 2.x CRI, as kubelet drives it: pods of two Kubernetes
//! namespaces on one node share the primary's network, and each resolves the pods of its own
//! namespace only, by name, through R16a's search-qualified forms and by PTR.

use test_cni::cri::{Containerd, Version};
use test_cni::{nslookup_addresses, FakeUpstream};

#[test]
fn r35_a_pod_resolves_the_pods_of_its_own_namespace_only() {
    let test = "r35_a_pod_resolves_the_pods_of_its_own_namespace_only";
    let ctd = Containerd::new(test, Version::V2, test_cni::cri::example_entry(Version::V2));
    // The first pod makes the bridge, where the cluster DNS (which knows no Service) listens.
    let web_a = ctd.run_pod_ns("web", "a", &ctd.gateway);
    let _cluster_dns =
        FakeUpstream::start(None, &format!("{}:53", ctd.gateway), "cluster.local", &[]);
    let web_b = ctd.run_pod_ns("web", "b", &ctd.gateway);
    let api_a = ctd.run_pod_ns("api", "a", &ctd.gateway);
    let cli_a = ctd.run_pod_ns("cli", "a", &ctd.gateway);
    let cli_b = ctd.run_pod_ns("cli", "b", &ctd.gateway);
    let ask = |pod, name: &str| {
        let out = ctd.exec(pod, &["nslookup", name]).1;
        (nslookup_addresses(&out), out)
    };

    // The same pod name in two namespaces: each asker gets its own namespace's.
    let (ips, out) = ask(&cli_a, "web");
    assert_eq!(ips, vec![web_a.ip.clone()], "{out}");
    let (ips, out) = ask(&cli_b, "web");
    assert_eq!(ips, vec![web_b.ip.clone()], "{out}");
    // A pod of another namespace is no answer, plain or search-qualified (R16a): b has no
    // `api`, and the cluster DNS says so.
    let (ips, out) = ask(&cli_b, "api");
    assert!(ips.is_empty(), "a's api answered b's pod: {out}");
    let (ips, out) = ask(&cli_b, "api.b.svc.cluster.local");
    assert!(ips.is_empty(), "a's api answered as b's Service: {out}");
    let (ips, out) = ask(&cli_a, "web.b.svc.cluster.local");
    assert!(!ips.contains(&web_a.ip), "a's web answered as b's: {out}");
    // Within the namespace, R16a still answers.
    let (ips, out) = ask(&cli_a, "api.a.svc.cluster.local");
    assert_eq!(ips, vec![api_a.ip.clone()], "{out}");
    // PTR follows the scope.
    let (_, out) = ask(&cli_a, &web_a.ip);
    assert!(out.contains("name = web"), "PTR of a's web: {out}");
    let (_, out) = ask(&cli_a, &web_b.ip);
    assert!(
        !out.contains("name = web"),
        "PTR of b's web for a's pod: {out}"
    );
}
