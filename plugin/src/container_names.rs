//! Who the container is on a network: its name (R2), aliases (R3) and links (R4), from the
//! runtime's inputs in their documented order of precedence.

use embedns_conf::netconf::{links_from_args, NetConf};
use embedns_conf::record::Link;
use embedns_conf::{names, ConfError};

use crate::env::CniEnv;

/// Who the container is on this network: name, aliases, links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNames {
    pub name: Option<String>,
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    /// The pod namespace its names are scoped to (R35), normalized.
    pub namespace: Option<String>,
}

impl ContainerNames {
    /// The names from CNI_ARGS, capabilities and the conf (R2-R4), validated.
    pub fn new(env: &CniEnv, conf: &NetConf) -> Result<ContainerNames, ConfError> {
        // R2: K8S_POD_NAME (podman, CRI), then runtimeConfig.name, then CNI_ARGS name.
        let name = env
            .args
            .get("K8S_POD_NAME")
            .cloned()
            .or_else(|| conf.runtime_name.clone())
            .or_else(|| env.args.get("name").cloned())
            .filter(|n| !n.is_empty());
        // A name DNS cannot carry (a Kubernetes pod name of one 70-character label) is not
        // served; the container starts all the same, as under Docker.
        if let Some(n) = name.as_ref() {
            if !names::served_name("container name", n)? {
                tracing::warn!(name = %n, "DNS cannot carry this container name: the container starts without it");
            }
        }
        let name = name.filter(|n| names::served_name("container name", n).unwrap_or(false));
        let mut aliases = conf.aliases.clone();
        // Docker resolves the 12-character short ID of every container (podman sends it as
        // an alias too; dedup keeps one).
        if env.container_id.len() >= 12 && env.container_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let short = env.container_id[..12].to_ascii_lowercase();
            if !aliases.contains(&short) {
                aliases.push(short);
            }
        }
        let mut links = conf.links.clone();
        if let Some(l) = env.args.get("EMBEDNS_LINKS") {
            links.extend(links_from_args(l)?);
        }
        // R35: a pod's peers are the pods of its namespace (CRI passes K8S_POD_NAMESPACE;
        // podman and cnitool do not). A Kubernetes namespace is one DNS label.
        let namespace = match env.args.get("K8S_POD_NAMESPACE") {
            Some(ns) if conf.scope_by_namespace && !ns.is_empty() => {
                if ns.contains('.') || !names::served_name("pod namespace", ns)? {
                    return Err(ConfError::InvalidEnv {
                        var: "CNI_ARGS",
                        reason: format!(
                            "K8S_POD_NAMESPACE {ns:?} is not a DNS label (set \"scopeByNamespace\": false to ignore it)"
                        ),
                    });
                }
                Some(names::normalize(ns))
            }
            _ => None,
        };
        Ok(ContainerNames {
            name: name.map(|n| names::normalize(&n)),
            aliases,
            links,
            namespace,
        })
    }
}
