//! Several hosts: what an etcd session error costs a host (docs/behaviour.md R28). Every test
//! runs on etcd 3.4 and 3.5, with real hosts (netns), members, sync processes and dig.

use serde_json::Value;
use test_cni::ip_of;
use test_cni::multihost::{Cluster, Etcd};
use test_cni::wait::wait_until;

#[macro_use]
mod common;
use common::{web_and_cli, WebAndCli, SPREAD};

on_both!(a_members_death_costs_a_host_no_new_lease_no_listing_and_no_event);
fn a_members_death_costs_a_host_no_new_lease_no_listing_and_no_event(etcd: Etcd) {
    let c = Cluster::new(etcd, "resume", 3, 6);
    let nets = c.network("mh");
    let WebAndCli { cli, .. } = web_and_cli(&c, &nets[0], &nets[1]);
    let status = |i: usize| c.sync_status(i, "mh").expect("a sync status");
    let before = status(1);
    // Host2's record as etcd holds it: its revision and lease.
    let key = c.record_keys(0, "mh", "host2").remove(0);
    let held = || -> (Value, Value) {
        let out = c.etcdctl(0, &["get", &key, "-w", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("etcdctl get -w json");
        (
            v["kvs"][0]["mod_revision"].clone(),
            v["kvs"][0]["lease"].clone(),
        )
    };
    let record = held();
    assert!(record.0.is_number(), "{record:?}");
    let lease = record.1.as_i64().expect("the record's lease");

    // Host2's own member dies: host2 moves to another member.
    c.kill_member(1);
    // A name added on host1 meanwhile reaches host2 (the watch resumes where it stopped).
    let h1 = &c.hosts[0].w;
    let late = h1.container("late");
    let late_ip = ip_of(&h1.adding(&nets[0], &late).name("late").ok());
    let h2 = &c.hosts[1].w;
    wait_until(SPREAD * 2, "late on host2", || {
        (h2.resolve(&cli, "late", "A") == vec![late_ip.clone()]).then_some(())
    });
    let after = wait_until(SPREAD * 2, "host2 on another member", || {
        let s = status(1);
        (s.endpoint.is_some() && s.endpoint != before.endpoint).then_some(s)
    });
    assert_eq!(
        held(),
        record,
        "host2's record not put again, nor under another lease"
    );
    assert_eq!(after.lease, lease, "the status names the lease: {after:?}");
    assert_eq!(after.listings, 1, "no new listing: {after:?}");
    c.restart_member(1);
}
