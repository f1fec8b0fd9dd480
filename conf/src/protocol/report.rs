//! What `embedns status --json` prints: every network of a state directory with its
//! attachments and, for a network shared through etcd, its sync process; every container
//! with its resolver's health; the redirects a DEL left in place. The plugin writes it and
//! the tests and the bench read it, with these types.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::multihost::shared::{EtcdConf, SyncStatus};
use crate::protocol::control::StatusReply;

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(rename = "dataDir")]
    pub data_dir: PathBuf,
    pub networks: Vec<NetworkReport>,
    pub containers: Vec<ContainerReport>,
    pub leftovers: Vec<LeftoverReport>,
    /// This kernel's Landlock ABI (0: none), which decides what the resolvers' and sync
    /// workers' confinement holds: TCP rules need ABI 4 (Linux 6.7).
    #[serde(default, rename = "landlockAbi")]
    pub landlock_abi: u32,
}

/// The first Landlock ABI with TCP rules (Linux 6.7).
pub const LANDLOCK_TCP_ABI: u32 = 4;

impl Report {
    /// What the kernel's Landlock leaves out of the daemons' confinement, if anything.
    pub fn confinement_warning(&self) -> Option<String> {
        (self.landlock_abi < LANDLOCK_TCP_ABI).then(|| {
            format!(
                "this kernel's Landlock (ABI {}) has no TCP rules (Linux 6.7+): resolvers and \
                 sync workers may connect TCP to any port their netns reaches",
                self.landlock_abi
            )
        })
    }
}

/// A network and what the store holds of it on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkReport {
    pub name: String,
    pub containers: Vec<Member>,
    /// Its sync, for a network shared through etcd.
    pub shared: Option<SharedReport>,
    /// Keys of its conf embedns does not know, as the last ADD saw them (ignored).
    #[serde(default, rename = "unknownKeys", skip_serializing_if = "Vec::is_empty")]
    pub unknown_keys: Vec<String>,
}

/// One attachment's record on a network, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Member {
    Record {
        container: String,
        name: Option<String>,
        ip: Vec<IpAddr>,
    },
    Unreadable {
        key: String,
        error: String,
    },
}

/// A shared network's sync: its config, its process's last status, and whether it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedReport {
    pub etcd: EtcdConf,
    pub running: bool,
    pub status: Option<SyncStatus>,
    /// Since etcd last answered the process.
    pub heard_ms_ago: Option<u64>,
    /// Addresses a container here and another host's record both hold (`<ip> (<host>)`).
    pub overlaps: Vec<String>,
}

impl SharedReport {
    /// Out of step: the process does not run, reaches no etcd endpoint (cut off), or may not
    /// publish (its host name's claim refused).
    pub fn out_of_step(&self) -> bool {
        let status = self.status.as_ref();
        !self.running || status.is_none_or(|s| s.endpoint.is_none() || s.claim_refused.is_some())
    }
}

/// A container with records on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerReport {
    pub id: String,
    pub name: Option<String>,
    pub netns: Option<String>,
    pub attachments: Vec<Attachment>,
    pub resolver: ResolverHealth,
    /// R26: the nameservers besides 127.0.0.11 whose queries its resolver answers.
    pub caught: Vec<IpAddr>,
    /// What the resolver's supervisor says of restarts (absent for a resolver of an earlier
    /// release, which has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<crate::supervision::Supervision>,
}

/// One of a container's attachments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub ifname: String,
    pub ips: Vec<IpAddr>,
    pub aliases: Vec<String>,
    /// `<name>:<alias>`.
    pub links: Vec<String>,
}

/// A container's resolver: its status when it answered its control socket, else why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResolverHealth {
    Healthy {
        /// Always true.
        healthy: bool,
        #[serde(flatten)]
        status: Box<StatusReply>,
    },
    Unhealthy {
        /// Always false.
        healthy: bool,
        pid: Option<u32>,
        error: String,
    },
}

impl ResolverHealth {
    /// A resolver that answered with `status`.
    pub fn answered(status: StatusReply) -> ResolverHealth {
        ResolverHealth::Healthy {
            healthy: true,
            status: Box::new(status),
        }
    }

    /// A resolver that is not there or did not answer.
    pub fn failed(pid: Option<u32>, error: impl Into<String>) -> ResolverHealth {
        ResolverHealth::Unhealthy {
            healthy: false,
            pid,
            error: error.into(),
        }
    }

    /// Its status, if it answered.
    pub fn status(&self) -> Option<&StatusReply> {
        match self {
            ResolverHealth::Healthy { status, .. } => Some(status),
            ResolverHealth::Unhealthy { .. } => None,
        }
    }
}

/// A redirect a DEL could not remove (GC retries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftoverReport {
    pub container: String,
    pub netns: String,
    pub error: String,
}

impl Report {
    /// What makes `embedns status` exit 1: an unhealthy resolver, something left in place, a
    /// shared network out of step.
    pub fn trouble(&self) -> bool {
        self.containers
            .iter()
            .any(|c| c.resolver.status().is_none())
            || !self.leftovers.is_empty()
            || self
                .networks
                .iter()
                .filter_map(|n| n.shared.as_ref())
                .any(SharedReport::out_of_step)
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkReport> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The container whose name is `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerReport> {
        self.containers
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_and_an_unhealthy_resolver_read_back_as_written() {
        let status: StatusReply = serde_json::from_value(serde_json::json!({
            "ok": true, "pid": 7, "udpPort": 1, "tcpPort": 2, "uptimeSeconds": 3,
            "networks": [], "upstreams": [],
            "counters": {"local": 1, "forwarded": 0, "failed": 0, "refused": 0, "upstreamMeanMicros": 0},
        }))
        .unwrap();
        for health in [
            ResolverHealth::answered(status),
            ResolverHealth::failed(Some(9), "not running"),
            ResolverHealth::failed(None, "no resolver recorded"),
        ] {
            let json = serde_json::to_value(&health).unwrap();
            assert_eq!(json["healthy"], health.status().is_some());
            let back: ResolverHealth = serde_json::from_value(json).unwrap();
            assert_eq!(back, health);
        }
    }

    #[test]
    fn a_kernel_without_landlocks_tcp_rules_is_warned_about() {
        let mut r = Report {
            data_dir: PathBuf::new(),
            networks: vec![],
            containers: vec![],
            leftovers: vec![],
            landlock_abi: 3,
        };
        assert!(r.confinement_warning().unwrap().contains("Linux 6.7+"));
        r.landlock_abi = 0;
        assert!(r.confinement_warning().is_some());
        r.landlock_abi = LANDLOCK_TCP_ABI;
        assert_eq!(r.confinement_warning(), None);
        // Earlier releases' reports have no field: read as none.
        let old: Report = serde_json::from_str(
            r#"{"dataDir":"/x","networks":[],"containers":[],"leftovers":[]}"#,
        )
        .unwrap();
        assert_eq!(old.landlock_abi, 0);
    }
}
