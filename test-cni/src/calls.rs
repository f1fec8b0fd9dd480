//! Calls of the plugin that no runtime flow through cnitool covers: a verb run alone with a
//! made-up prevResult, GC with its valid attachments, and `embedns status`.

use embedns_conf::attachment::AttachmentId;
use std::process::Command;

use embedns_conf::protocol::control::StatusReply;
use embedns_conf::protocol::report::Report;
use serde_json::{json, Value};

use crate::world::{Container, PluginOut, World};

/// An attachment the plugin is called for alone ([`World::direct`]): container `container`
/// with ID `id`, named `name`, on network `net` with address `ip`; `conf` keys are merged into
/// the network's conf.
pub struct Direct<'a> {
    pub net: &'a str,
    pub container: &'a Container,
    pub id: &'a str,
    pub name: &'a str,
    pub ip: &'a str,
    pub conf: Value,
}

impl World {
    /// Runs the plugin alone (`verb`: ADD, DEL, CHECK) for the attachment `d`, as a runtime
    /// would: no IPAM, its address comes from a made-up prevResult.
    pub fn direct(&self, verb: &str, d: Direct<'_>) -> PluginOut {
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": d.container.path}],
                          "ips": [{"address": format!("{}/24", d.ip), "interface": 0}]});
        let mut keys = json!({"prevResult": prev});
        for (k, v) in d.conf.as_object().cloned().unwrap_or_default() {
            keys[k] = v;
        }
        let conf = self.conf(d.net, "1.0.0", keys);
        self.plugin(
            &[
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", d.id),
                ("CNI_NETNS", &d.container.path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x"),
                ("CNI_ARGS", &format!("K8S_POD_NAME={}", d.name)),
            ],
            &conf.to_string(),
        )
    }

    /// The container ID of the only record of `net` whose ID is not in `others`.
    pub fn record_id(&self, net: &str, others: &[&str]) -> String {
        let ids: Vec<String> = self
            .records(net)
            .iter()
            .map(|r| r.parse::<AttachmentId>().unwrap().container_id)
            .filter(|id| !others.contains(&id.as_str()))
            .collect();
        assert_eq!(ids.len(), 1, "records of {net}: {:?}", self.records(net));
        ids[0].clone()
    }

    /// GC (CNI 1.1) of network `net` with these valid `(containerID, ifname)` attachments.
    pub fn gc(&self, net: &str, valid: &[(&str, &str)]) -> PluginOut {
        let valid: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let conf = self.conf(net, "1.1.0", json!({"cni.dev/valid-attachments": valid}));
        self.plugin(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            &conf.to_string(),
        )
    }

    /// `embedns status --json` of this world's state dir: its exit code and report.
    pub fn status(&self) -> (i32, Report) {
        let (code, out) = self.status_text(&["--json"]);
        let report = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"));
        (code, report)
    }

    /// The status of the resolver of the container called `name`, as `embedns status`
    /// reports it; panics unless it is healthy.
    pub fn resolver_status(&self, name: &str) -> StatusReply {
        let (_, out) = self.status_text(&["--json", name]);
        let report: Report = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"));
        let container = report.containers.into_iter().next();
        let health = container
            .unwrap_or_else(|| panic!("no container {name}"))
            .resolver;
        health
            .status()
            .cloned()
            .unwrap_or_else(|| panic!("the resolver of {name}: {health:?}"))
    }

    /// `embedns status --data-dir <this world's> ARGS`: its exit code and stdout.
    pub fn status_text(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(self.bin_dir.join("embedns"))
            .arg("status")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("embedns status");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}
