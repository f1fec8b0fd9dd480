//! The CNI_* environment of one invocation, validated before any of it touches a path.

use std::collections::BTreeMap;

use embedns_conf::netconf::parse_cni_args;
use embedns_conf::{names, ConfError};

/// The longest file name Linux file systems take.
const MAX_FILE_NAME: usize = 255;

/// What the runtime passes in the environment (CNI_CONTAINERID, CNI_NETNS, ...).
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub container_id: String,
    /// Empty on DEL/GC when the runtime no longer has a netns.
    pub netns: String,
    pub ifname: String,
    pub args: BTreeMap<String, String>,
}

impl CniEnv {
    /// Reads and validates the CNI variables `command` needs.
    pub fn from_process(command: &str) -> Result<CniEnv, ConfError> {
        let get = |var: &'static str| std::env::var(var).unwrap_or_default();
        let container_id = get("CNI_CONTAINERID");
        let netns = get("CNI_NETNS");
        let ifname = get("CNI_IFNAME");
        let args = parse_cni_args(&get("CNI_ARGS"))?;
        // GC and STATUS are not about one container.
        if matches!(command, "GC" | "STATUS") {
            return Ok(CniEnv {
                container_id,
                netns,
                ifname,
                args,
            });
        }
        let required = |var: &'static str, value: &str| {
            if value.is_empty() {
                Err(ConfError::InvalidEnv {
                    var,
                    reason: format!("required for {command}"),
                })
            } else {
                Ok(())
            }
        };
        required("CNI_CONTAINERID", &container_id)?;
        required("CNI_IFNAME", &ifname)?;
        if command != "DEL" {
            required("CNI_NETNS", &netns)?;
        }
        names::container_id(&container_id).map_err(|e| ConfError::InvalidEnv {
            var: "CNI_CONTAINERID",
            reason: e.to_string(),
        })?;
        names::ifname(&ifname).map_err(|e| ConfError::InvalidEnv {
            var: "CNI_IFNAME",
            reason: e.to_string(),
        })?;
        // The record of an attachment is the file `<containerID>@<ifname>.json`: checked whole
        // here, before anything is written, not by the file system halfway through ADD.
        let record =
            container_id.len() + 1 + ifname.len() + embedns_conf::paths::RECORD_SUFFIX.len();
        if record > MAX_FILE_NAME {
            return Err(ConfError::InvalidEnv {
                var: "CNI_CONTAINERID",
                reason: format!(
                    "{} characters: with CNI_IFNAME {ifname:?} the record's file name would be {record} bytes, over the {MAX_FILE_NAME} a file name may have",
                    container_id.len()
                ),
            });
        }
        if !netns.is_empty() && !netns.starts_with('/') {
            return Err(ConfError::InvalidEnv {
                var: "CNI_NETNS",
                reason: format!("{netns:?} is not an absolute path"),
            });
        }
        Ok(CniEnv {
            container_id,
            netns,
            ifname,
            args,
        })
    }

    /// The netns name when CNI_NETNS is `/run/netns/<name>` (the `ip netns` flow).
    pub fn netns_name(&self) -> Option<&str> {
        let name = self
            .netns
            .strip_prefix("/run/netns/")
            .or_else(|| self.netns.strip_prefix("/var/run/netns/"))?;
        names::network(name).ok().map(|_| name)
    }
}
