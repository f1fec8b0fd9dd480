//! One host's side of a multi-host run (phase 6 and its scale part): the plugin called
//! directly with a prevResult on that host, as in the scale phase.

use std::net::IpAddr;
use std::time::Duration;

use embedns_conf::multihost::shared::SyncStatus;
use serde_json::{json, Value};
use test_cni::multihost::Cluster;
use test_cni::{Container, World};

use crate::procs::{cni_env, timed};

/// One host's side of the run: its world, its shared network's conf, its containers.
pub struct Side<'a> {
    pub w: &'a World,
    etcd: Value,
    pub added: Vec<(Container, String)>,
}

impl<'a> Side<'a> {
    /// Every host of `cluster`, nothing added yet.
    pub fn every(cluster: &'a Cluster) -> Vec<Side<'a>> {
        cluster
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Side {
                w: &h.w,
                etcd: cluster.etcd_options(i)["etcd"].clone(),
                added: Vec::new(),
            })
            .collect()
    }

    /// ADD of container `c` as `name` with address `ip` to `net` (shared: with the etcd conf).
    pub fn add(
        &mut self,
        net: &str,
        shared: bool,
        c: Container,
        name: &str,
        ip: IpAddr,
    ) -> Duration {
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": c.path}],
            "ips": [{"address": format!("{ip}/8"), "interface": 0}]});
        let mut extra = json!({"prevResult": prev});
        if shared {
            extra["etcd"] = self.etcd.clone();
        }
        let conf = self.w.conf(net, "1.0.0", extra).to_string();
        let id = format!("{name}-{}", self.w.id);
        let args = format!("K8S_POD_NAME={name}");
        let took = timed(
            self.w,
            &self.embedns(),
            &cni_env("ADD", &id, &c.path, &args),
            &conf,
        );
        self.added.push((c, id));
        took
    }

    /// When the record of the container added last was written (its file's mtime): where a
    /// remote name's propagation is timed from (ADD writes the record before it starts the
    /// resolver, so by ADD's return the propagation is mostly over).
    pub fn last_written(&self, net: &str) -> std::time::SystemTime {
        let id = &self.added.last().expect("a container added").1;
        let record = self
            .w
            .data_dir
            .join(format!("networks/{net}/{id}@eth0.json"));
        std::fs::metadata(&record)
            .and_then(|m| m.modified())
            .expect("the record's mtime")
    }

    pub fn del(&mut self, net: &str, shared: bool) -> Duration {
        let (c, id) = self.added.pop().expect("something to delete");
        let mut extra = json!({});
        if shared {
            extra["etcd"] = self.etcd.clone();
        }
        let conf = self.w.conf(net, "1.0.0", extra).to_string();
        let took = timed(
            self.w,
            &self.embedns(),
            &cni_env("DEL", &id, &c.path, ""),
            &conf,
        );
        self.w.remove_netns(&c);
        took
    }

    fn embedns(&self) -> String {
        self.w.bin_dir.join("embedns").display().to_string()
    }

    pub fn writes(&self, net: &str) -> u64 {
        let path = self.w.paths().sync_status(net);
        let status: Option<SyncStatus> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        status.map_or(0, |s| s.writes)
    }
}

/// Host `h`'s `k`-th container's address: 10.<100+h>.<k/250>.<k%250+1>.
pub fn ip(h: usize, k: usize) -> IpAddr {
    IpAddr::from([10, 100 + h as u8, (k / 250) as u8, (k % 250 + 1) as u8])
}
