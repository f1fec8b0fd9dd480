//! The CNI 1.1 verbs through a real libcni 1.3 (a cnitool built against Debian sid's libcni
//! source, `test-cni/newer/fetch.sh`) and a `cniVersion: 1.1.0` chain of CNI plugins 1.9:
//! ADD, CHECK, STATUS, GC (`GCNetworkList`: libcni DELs the cached attachments GC does not keep,
//! then sends GC with `cni.dev/valid-attachments`) and DEL.

use serde_json::json;
use test_cni::{bins, ip_of, World};

#[test]
fn libcni_1_3_drives_add_check_status_gc_and_del_through_a_1_1_0_chain() {
    let w = World::new("libcni_1_3_drives_add_check_status_gc_and_del_through_a_1_1_0_chain");
    w.use_reference_plugins(&bins::newer().join("root/usr/lib/cni"));
    w.use_cnitool(&bins::newer().join("cnitool-libcni13"));
    let net = w.network("n1", json!({"cniVersion": "1.1.0"}));
    let names = ["keep1", "keep2", "gone"];
    let cs: Vec<_> = names.iter().map(|n| w.container(n)).collect();
    let ips: Vec<String> = names
        .iter()
        .zip(&cs)
        .map(|(n, c)| ip_of(&w.adding(&net, c).name(n).id(&format!("{}-{n}", w.id)).ok()))
        .collect();
    for (n, c) in names.iter().zip(&cs) {
        let id = format!("{}-{n}", w.id);
        let check = w.cnitool("check", &net.name, c, &[("CNI_CONTAINERID", &id)]);
        assert!(check.status.success(), "CHECK {n}: {check:?}");
    }
    let status = w.cnitool("status", &net.name, &cs[0], &[]);
    assert!(status.status.success(), "STATUS: {status:?}");
    assert_eq!(w.resolve(&cs[0], "gone", "A"), vec![ips[2].clone()]);
    assert_eq!(w.resolver_pids().len(), 3);

    // GC keeping keep1 and keep2: gone's resolver, record and sandbox go.
    let valid = format!("{id}-keep1/eth0,{id}-keep2/eth0", id = w.id);
    let gc = w.cnitool(
        "gc",
        &net.name,
        &cs[0],
        &[("CNI_VALID_ATTACHMENTS", &valid)],
    );
    assert!(gc.status.success(), "GC: {gc:?}");
    assert_eq!(w.records("n1").len(), 2, "{:?}", w.records("n1"));
    assert_eq!(w.sandboxes(), 2);
    test_cni::wait_until(
        std::time::Duration::from_secs(5),
        "gone's resolver to exit",
        || (w.resolver_pids().len() == 2).then_some(()),
    );
    // The kept ones still answer, each other and no longer gone.
    assert_eq!(w.resolve(&cs[0], "keep2", "A"), vec![ips[1].clone()]);
    assert_eq!(w.resolve(&cs[1], "keep1", "A"), vec![ips[0].clone()]);
    assert!(w.resolve(&cs[0], "gone", "A").is_empty());

    for (n, c) in names.iter().zip(&cs).take(2) {
        w.del(&net, c, &[("CNI_CONTAINERID", &format!("{}-{n}", w.id))]);
    }
    assert!(w.records("n1").is_empty());
    assert_eq!(w.sandboxes(), 0);
}
