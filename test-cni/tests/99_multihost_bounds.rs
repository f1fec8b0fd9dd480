//! Several hosts, one of them hostile within what etcd accepts (R30, R31): values as large as
//! etcd takes never stop another host's listing; they are skipped and counted. Every test runs on etcd 3.4 and 3.5, with real hosts
//! (netns), members, sync processes and dig.

use test_cni::ip_of;
use test_cni::multihost::{Cluster, Etcd};
use test_cni::wait::wait_until;

#[macro_use]
mod common;
use common::{web_and_cli, WebAndCli, SPREAD};

/// A value of `n` bytes etcd accepts (under its 1.5 MiB request limit).
fn big(n: usize) -> String {
    "x".repeat(n)
}

on_both!(r31_values_as_large_as_etcd_takes_never_stop_a_listing);
fn r31_values_as_large_as_etcd_takes_never_stop_a_listing(etcd: Etcd) {
    let c = Cluster::new(etcd, "large_listing", 2, 6);
    let nets = c.network("mh");
    let (h1, h2) = (&c.hosts[0].w, &c.hosts[1].w);
    let WebAndCli { web, cli, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    // Thirteen ~1.4 MB values under a third host's prefix: one listing page of them is over
    // gRPC's default 4 MiB, and over the 16 MiB a sync worker takes in one message.
    for k in 0..13 {
        let key = format!("{}/mh/host9/big{k}@eth0", c.prefix);
        let out = c.etcdctl_with_input(0, &["put", &key], &big(1_400_000));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // host2's worker dies; its successor lists the network anew.
    let worker = c.sync_status(1, "mh").unwrap().pid as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_until(SPREAD * 3, "host2's new worker in step", || {
        let s = c.sync_status(1, "mh")?;
        (s.pid as i32 != worker && s.endpoint.is_some()).then_some(())
    });
    // A name added on host1 reaches host2, and host2's names stay on host1.
    let late = h1.container("late");
    let late_ip = ip_of(&h1.adding(&nets[0], &late).name("late").ok());
    wait_until(SPREAD * 2, "host1's new name on host2", || {
        (h2.resolve(&cli, "late", "A") == vec![late_ip.clone()]).then_some(())
    });
    wait_until(SPREAD * 2, "the large values skipped and counted", || {
        (c.sync_status(1, "mh")?.skipped >= 13).then_some(())
    });
    assert_eq!(
        h1.resolve(&web, "cli", "A").len(),
        1,
        "host2's name on host1"
    );
}

on_both!(r30_past_the_networks_bounds_values_are_skipped_and_status_says_so);
fn r30_past_the_networks_bounds_values_are_skipped_and_status_says_so(etcd: Etcd) {
    let c = Cluster::new(etcd, "network_bounds", 2, 6);
    // host1 holds at most 3 records and 2 hosts of the others'.
    let nets: Vec<_> = (0..2)
        .map(|i| {
            let mut o = c.etcd_options(i);
            o["etcd"]["bounds"] = serde_json::json!({"records": 3, "hosts": 2});
            c.hosts[i]
                .w
                .network_in("mh", &format!("10.77.{}", i + 1), o)
        })
        .collect();
    let h1 = &c.hosts[0].w;
    let WebAndCli { web, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    // host2's cli is one; a writer of the prefix adds forty under host9 and two more hosts.
    let template_key = c.record_keys(1, "mh", "host2").remove(0);
    let template = common::etcd_value(&c, 1, &template_key);
    let cid = template_key
        .rsplit('/')
        .next()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    for (host, n) in [("host9", 40), ("host8", 1), ("host7", 1)] {
        for k in 0..n {
            let forged = format!("{cid}{host}x{k}");
            let value = template
                .replace(&cid, &forged)
                .replace("\"name\":\"cli\"", &format!("\"name\":\"{host}x{k}\""));
            let key = format!("{}/mh/{host}/{forged}@eth0", c.prefix);
            let out = c.etcdctl_with_input(0, &["put", &key], &value);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    wait_until(SPREAD * 2, "host1 to skip past its bounds", || {
        let s = c.sync_status(0, "mh")?;
        (s.skipped >= 40 && s.remote_records == 3).then_some(())
    });
    let s = c.sync_status(0, "mh").unwrap();
    assert!(s.bound_reached.is_some(), "{s:?}");
    assert!(s.remote_hosts <= 2, "{s:?}");
    let (_, text) = h1.status_text(&[]);
    assert!(
        text.contains("bound of") && text.contains("is reached"),
        "{text}"
    );
    // The records held answer; host2's own stay answered whatever came after them.
    assert_eq!(h1.resolve(&web, "cli", "A").len(), 1);
}
