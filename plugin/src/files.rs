//! The container's resolv.conf (R23): computed from the host's file and the conf, returned in
//! the result's `dns`, and written where the runtime reads it: `/etc/netns/<name>/resolv.conf`
//! for the `ip netns exec` flow and the conf's `resolvConfPath` template. Every file written is
//! remembered in the sandbox with what it replaced, so DEL puts the original back.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use embedns_conf::cni::ResultDns;
use embedns_conf::fsutil::{remove_if_exists, write_atomic_mode};
use embedns_conf::netconf::NetConf;
use embedns_conf::resolv::{container_options, ResolvConf};
use embedns_conf::sandbox::{Sandbox, WrittenFile, EMBEDDED_RESOLVER};
use embedns_conf::{names, ConfError};

use crate::env::CniEnv;

/// Where `ip netns exec` looks for per-netns files.
const ETC_NETNS: &str = "/etc/netns";

/// The host's resolv.conf; a missing file means no upstreams, not an error.
pub fn host_resolv_conf(path: &Path) -> Result<ResolvConf, ConfError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(ResolvConf::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "host resolv.conf missing: no host upstreams");
            Ok(ResolvConf::default())
        }
        Err(e) => Err(ConfError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The container's resolv.conf: 127.0.0.11 only; the conf's, the capability's and the host's
/// search domains (`domainName` first); their options plus `ndots:0` unless one sets ndots.
pub fn container_resolv_conf(conf: &NetConf, host: &ResolvConf) -> ResolvConf {
    let mut search: Vec<String> = Vec::new();
    let sources = conf
        .domain_name
        .iter()
        .chain(conf.dns.domain.iter())
        .chain(&conf.dns.search)
        .chain(&conf.dns_capability.searches)
        .chain(&host.search);
    for s in sources {
        if !search.contains(s) {
            search.push(s.clone());
        }
    }
    let options: Vec<String> = host
        .options
        .iter()
        .chain(&conf.dns.options)
        .chain(&conf.dns_capability.options)
        .cloned()
        .collect();
    ResolvConf {
        nameservers: vec![embedns_conf::sandbox::EMBEDDED_RESOLVER.into()],
        search,
        options: container_options(&options),
    }
}

/// The result's `dns` for one attachment: its own nameserver address (R23: podman joins the
/// results of a container's networks, and takes a network's nameservers out on its
/// disconnect), and the search list and options only with the first (127.0.0.11), so that
/// they appear once. The written files keep `nameserver 127.0.0.11` alone.
pub fn result_dns(rc: &ResolvConf, conf: &NetConf, nameserver: Ipv4Addr) -> ResultDns {
    let first = nameserver == EMBEDDED_RESOLVER;
    ResultDns {
        nameservers: vec![nameserver.to_string()],
        domain: conf.domain_name.clone().or_else(|| conf.dns.domain.clone()),
        search: if first { rc.search.clone() } else { Vec::new() },
        options: if first {
            rc.options.clone()
        } else {
            Vec::new()
        },
    }
}

/// The files this ADD writes for the container.
pub fn targets(env: &CniEnv, conf: &NetConf) -> Result<Vec<PathBuf>, ConfError> {
    let mut out = Vec::new();
    if let Some(name) = env.netns_name().filter(|_| conf.etc_netns) {
        out.push(Path::new(ETC_NETNS).join(name).join("resolv.conf"));
    }
    if let Some(template) = &conf.resolv_conf_path {
        out.push(expand_template(template, env)?);
    }
    Ok(out)
}

/// `resolvConfPath` placeholders: `{containerId}`, `{netnsName}`, `{podNamespace}`,
/// `{podName}`, `{podInfraContainerId}` (the last three from CRI's CNI_ARGS). Every value is
/// validated as a single path component.
pub fn expand_template(template: &str, env: &CniEnv) -> Result<PathBuf, ConfError> {
    let netns_base = Path::new(&env.netns)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let arg = |k: &str| env.args.get(k).cloned().unwrap_or_default();
    let values = [
        ("{containerId}", env.container_id.clone()),
        ("{netnsName}", netns_base),
        ("{podNamespace}", arg("K8S_POD_NAMESPACE")),
        ("{podName}", arg("K8S_POD_NAME")),
        ("{podInfraContainerId}", arg("K8S_POD_INFRA_CONTAINER_ID")),
    ];
    let mut out = template.to_string();
    for (key, value) in values {
        if out.contains(key) {
            names::network(&value).map_err(|_| {
                ConfError::InvalidConfig(format!(
                    "resolvConfPath: {key} has no usable value ({value:?}) for this container"
                ))
            })?;
            out = out.replace(key, &value);
        }
    }
    if out.contains('{') {
        return Err(ConfError::InvalidConfig(format!(
            "resolvConfPath {template:?} has an unknown placeholder"
        )));
    }
    Ok(PathBuf::from(out))
}

/// Writes `text` to every target, remembering originals in the sandbox (a file already
/// written for this sandbox keeps its first original). A `resolvConfPath` whose directory
/// does not exist is skipped with a warning (containerd 2.x makes it after ADD).
pub fn write(sb: &mut Sandbox, targets: &[PathBuf], text: &str) -> Result<(), ConfError> {
    for path in targets {
        if !sb.files.iter().any(|f| &f.path == path) {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let created_dir = if dir.exists() {
                None
            } else if dir.parent() == Some(Path::new(ETC_NETNS)) {
                std::fs::create_dir_all(dir).map_err(|e| ConfError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?;
                Some(dir.to_path_buf())
            } else {
                // containerd 2.x sets up the pod network before it creates the sandbox
                // directory and writes its resolv.conf there itself: a file written now would be
                // overwritten, and one restored at DEL would remove CRI's. Leave it to the
                // runtime (the route there is the pod's own DNS config naming 127.0.0.11).
                tracing::warn!(
                    "resolvConfPath {}: directory {} does not exist (yet); not written",
                    path.display(),
                    dir.display()
                );
                continue;
            };
            let original = match std::fs::read_to_string(path) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(ConfError::Io {
                        path: path.clone(),
                        source: e,
                    })
                }
            };
            sb.files.push(WrittenFile {
                path: path.clone(),
                original,
                created_dir,
            });
        }
        write_atomic_mode(path, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Puts back what the sandbox's files replaced; missing files are fine.
pub fn restore(sb: &Sandbox) {
    for f in &sb.files {
        let result = match &f.original {
            Some(text) => write_atomic_mode(&f.path, text.as_bytes(), 0o644),
            None => remove_if_exists(&f.path),
        };
        if let Err(e) = result {
            tracing::warn!("restoring {}: {e}", f.path.display());
        }
        if let Some(dir) = &f.created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> CniEnv {
        CniEnv {
            container_id: "abc".into(),
            netns: "/run/netns/ns1".into(),
            ifname: "eth0".into(),
            args: [("K8S_POD_NAMESPACE".to_string(), "default".to_string())].into(),
        }
    }

    #[test]
    fn template_expansion_validates_values() {
        let p = expand_template(
            "/var/lib/x/{podNamespace}/{containerId}/resolv.conf",
            &env(),
        )
        .unwrap();
        assert_eq!(p, PathBuf::from("/var/lib/x/default/abc/resolv.conf"));
        assert!(expand_template("/x/{podName}/resolv.conf", &env()).is_err());
        assert!(expand_template("/x/{nope}", &env()).is_err());
    }

    #[test]
    fn search_order_and_ndots() {
        // R23
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"embedns","domainName":"dns.podman",
                "dns":{"search":["a.example"],"options":["edns0"]}}"#,
        )
        .unwrap();
        let host =
            ResolvConf::parse("nameserver 10.0.0.1\nsearch corp.example\noptions timeout:1\n");
        let rc = container_resolv_conf(&conf, &host);
        assert_eq!(rc.search, vec!["dns.podman", "a.example", "corp.example"]);
        assert_eq!(rc.options, vec!["timeout:1", "edns0", "ndots:0"]);
        assert_eq!(rc.nameservers.len(), 1);
    }
}
