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
