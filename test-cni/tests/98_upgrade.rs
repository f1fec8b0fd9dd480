//! An upgrade in place: containers started by the previous release keep
//! their resolvers while the binaries are replaced, and those resolvers, the new plugin and
//! the new resolvers work together: every container resolves every other, the new plugin
//! checks, reports and deletes the old containers. (Docs: docs/operations.md, "Upgrades".)

use serde_json::json;
use test_cni::{bins, ip_of, World};

#[test]
fn r25_an_upgrade_in_place_keeps_every_container_answering() {
    let previous = bins::previous_release();
    let w = World::new("r25_an_upgrade_in_place_keeps_every_container_answering");
    w.use_binaries(&previous);
    let net = w.network("n1", json!({}));
    let (a, b) = (w.container("a"), w.container("b"));
    let mut named = vec![
        ("old1", ip_of(&w.adding(&net, &a).name("old1").ok()), a),
        ("old2", ip_of(&w.adding(&net, &b).name("old2").ok()), b),
    ];
    let mut old_pids = w.resolver_pids();
    old_pids.sort();
    assert_eq!(old_pids.len(), 2);

    // The upgrade: the binaries are replaced while the containers run.
    w.use_binaries(&bins::bin_dir());
    let (c, d) = (w.container("c"), w.container("d"));
    named.push(("new1", ip_of(&w.adding(&net, &c).name("new1").ok()), c));
    named.push(("new2", ip_of(&w.adding(&net, &d).name("new2").ok()), d));

    // The old resolvers run on, untouched, next to the new ones.
    let pids = w.resolver_pids();
    assert_eq!(pids.len(), 4);
    assert!(
        old_pids.iter().all(|p| pids.contains(p)),
        "{old_pids:?} in {pids:?}"
    );
    // Every container resolves every other, old and new, both ways, and the addresses back.
    for (_, _, from) in &named {
        for (name, ip, _) in &named {
            assert_eq!(
                w.resolve(from, name, "A"),
                vec![ip.clone()],
                "{name} from {}",
                from.netns
            );
            let ptr = w.dig(from, &["-x", ip]).data();
            assert_eq!(
                ptr,
                vec![format!("{name}.n1.")],
                "PTR of {ip} from {}",
                from.netns
            );
        }
    }
    // The new plugin checks an old container and reports its old resolver healthy.
    let (old_name, _, old_c) = &named[0];
    let args = format!("IgnoreUnknown=1;K8S_POD_NAME={old_name}");
    let out = w.cnitool("check", &net.name, old_c, &[("CNI_ARGS", &args)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, report) = w.status();
    assert_eq!(code, 0, "{report:?}");
    let healthy = (report.containers.iter())
        .filter(|c| c.resolver.status().is_some())
        .count();
    assert_eq!(healthy, 4, "{report:?}");
    // And deletes it: its resolver stops and its name is gone for old and new alike.
    let its_resolver = w.resolver_pid(old_c);
    assert!(old_pids.contains(&its_resolver));
    w.del(&net, old_c, &[("CNI_ARGS", &args)]);
    let left = w.resolver_pids();
    assert!(!left.contains(&its_resolver), "{left:?}");
    assert_eq!(left.len(), 3);
    for (_, _, from) in &named[1..] {
        assert!(
            w.resolve(from, old_name, "A").is_empty(),
            "{old_name} from {}",
            from.netns
        );
    }
}

#[test]
fn r26_an_old_resolver_that_gets_a_new_network_still_reaches_its_upstream() {
    // A container of the previous release (its resolver runs as nobody/nogroup) gets a second
    // network from the new plugin, which adds the catch of R26: its resolver's own queries to
    // the caught nameserver must still reach it, not loop back into the resolver.
    let previous = bins::previous_release();
    let w = World::new("r26_an_old_resolver_that_gets_a_new_network_still_reaches_its_upstream");
    w.use_binaries(&previous);
    let n1 = w.network("n1", json!({}));
    let gw = n1.gateway();
    w.set_host_resolv_conf(&format!("nameserver {gw}\n"));
    let old = w.container("old");
    w.adding(&n1, &old).name("old").ok();
    let up = w.upstream(&format!("{gw}:53"), "up.test", &[("a.up.test", "10.9.9.1")]);
    assert_eq!(w.resolve(&old, "a.up.test", "A"), vec!["10.9.9.1"]);
    let old_pid = w.resolver_pid(&old);

    w.use_binaries(&bins::bin_dir());
    let n2 = w.network("n2", json!({}));
    w.adding(&n2, &old)
        .name("old")
        .env(&[("CNI_IFNAME", "eth1")])
        .ok();
    assert_eq!(w.resolver_pid(&old), old_pid, "the old resolver serves on");
    assert_eq!(
        w.resolve(&old, "a.up.test", "A"),
        vec!["10.9.9.1"],
        "forwarded, no loop"
    );
    // And the host's nameserver is answered by it (R26), peers included.
    assert_eq!(w.dig_at(&old, &gw, &["old"]).data().len(), 1);
    assert!(up.queries() >= 2);
}
