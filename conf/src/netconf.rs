//! The plugin's network configuration: stdin of a CNI call, parsed and validated in one place.
//!
//! Keys (all optional but `cniVersion`, `name`, `type`): `dataDir`, `hostResolvConf`, `dns`
//! (`nameservers`, `search`, `options`), `aliases`, `ttl`, `internal`, `resolvConfPath`,
//! `domainName`, `etcNetns`, `logFile`, `logLevel`, `resolverPath`, `resolverUser`,
//! `upstreamTimeoutMs`, `maxInflight`, `cacheSize`, `cacheMaxTtl`, `cacheMaxNegativeTtl`, `etcd` (a network shared across hosts: `shared.rs`).
//! Runtime inputs: `runtimeConfig.aliases` (map or list), `runtimeConfig.dns`,
//! `runtimeConfig.links`, `runtimeConfig.name`, and `prevResult`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::multihost::shared::EtcdConf;
use crate::record::{CacheSettings, Link};
use crate::user::{default_data_dir, default_resolver_user, ResolverUser};
use crate::ConfError;
use crate::{defaults, names};

/// The host's resolv.conf, whose search list, options and nameservers a container inherits.
pub const DEFAULT_HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The largest `cacheSize` a conf may ask for.
const MAX_CACHE_SIZE: usize = 64 << 20;
/// The longest TTL cap a conf may set (a day).
const MAX_CACHE_TTL: u32 = 86_400;

/// `dns` in the plugin's own config (same field names as a CNI result's `dns`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConf {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

/// `runtimeConfig.dns` (the `dns` capability of the CNI conventions). containerd's CRI
/// (go-cni) sends it with capitalised keys (`Servers`, `Searches`, `Options`): a pod's DNS
/// config, kubelet's cluster DNS among it; both spellings are read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DnsCapability {
    #[serde(default, alias = "Servers")]
    pub servers: Vec<String>,
    #[serde(default, alias = "Searches")]
    pub searches: Vec<String>,
    #[serde(default, alias = "Options")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawRuntimeConfig {
    #[serde(default)]
    aliases: Option<Value>,
    #[serde(default)]
    dns: Option<DnsCapability>,
    #[serde(default)]
    links: Option<Vec<Value>>,
    #[serde(default)]
    name: Option<String>,
    /// The `cgroupPath` capability: the pod's cgroup parent (containerd's CRI).
    #[serde(default, rename = "cgroupPath")]
    cgroup_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    host_resolv_conf: Option<PathBuf>,
    #[serde(default)]
    dns: Option<DnsConf>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    resolv_conf_path: Option<String>,
    #[serde(default)]
    etc_netns: bool,
    #[serde(default)]
    catch_nameservers: Option<bool>,
    #[serde(default)]
    scope_by_namespace: Option<bool>,
    #[serde(default)]
    domain_name: Option<String>,
    #[serde(default)]
    log_file: Option<PathBuf>,
    #[serde(default)]
    log_level: Option<String>,
    #[serde(default)]
    resolver_path: Option<PathBuf>,
    #[serde(default)]
    resolver_user: Option<String>,
    #[serde(default)]
    cgroup_parent: Option<String>,
    #[serde(default)]
    upstream_timeout_ms: Option<u64>,
    #[serde(default)]
    max_inflight: Option<usize>,
    #[serde(default)]
    cache_size: Option<usize>,
    #[serde(default)]
    cache_max_ttl: Option<u32>,
    #[serde(default)]
    cache_max_negative_ttl: Option<u32>,
    #[serde(default)]
    etcd: Option<EtcdConf>,
    #[serde(default)]
    runtime_config: Option<RawRuntimeConfig>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

/// An entry of GC's `cni.dev/valid-attachments` (CNI 1.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A validated network configuration with the runtime's inputs folded in.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub data_dir: PathBuf,
    pub host_resolv_conf: PathBuf,
    pub dns: DnsConf,
    pub dns_capability: DnsCapability,
    /// Explicit upstreams in priority order (R17): conf `dns.nameservers`, then capability.
    pub explicit_upstreams: Vec<SocketAddr>,
    /// Aliases from the conf and the `aliases` capability for this network, validated.
    pub aliases: Vec<String>,
    pub links: Vec<Link>,
    /// `runtimeConfig.name`, one of the container name's sources (R2).
    pub runtime_name: Option<String>,
    pub ttl: u32,
    pub internal: bool,
    pub resolv_conf_path: Option<String>,
    /// Write `/etc/netns/<name>/resolv.conf` for a netns under /run/netns, which
    /// `ip netns exec` bind-mounts over /etc/resolv.conf (the cnitool flow). Off by default:
    /// podman reads that file as the container's *host* resolv.conf.
    pub etc_netns: bool,
    /// Answer the queries sent to the nameservers a runtime writes itself (R26); on unless
    /// `catchNameservers` is false.
    pub catch_nameservers: bool,
    /// Scope a pod's names to its namespace (R35): on unless `scopeByNamespace` is false.
    pub scope_by_namespace: bool,
    pub domain_name: Option<String>,
    pub log_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub resolver_path: Option<PathBuf>,
    /// The cgroup beneath which the resolver's leaf lies, relative to a hierarchy's root: the
    /// `cgroupPath` capability's (the pod's), else `cgroupParent`, else `/embedns`
    /// (`crate::cgroup`).
    pub cgroup_parent: PathBuf,
    /// Whether `cgroup_parent` is the runtime's `cgroupPath`.
    pub cgroup_from_runtime: bool,
    /// Top-level keys of the conf that embedns does not know and that no CNI convention
    /// names (`catchNameServers` for `catchNameservers`): ignored, as the conventions let
    /// other tools add keys, but warned about in the log and `embedns status`.
    pub unknown_keys: Vec<String>,
    pub resolver_user: ResolverUser,
    /// Whether `resolverUser` was set (else the default: `user::default_resolver_user`).
    pub resolver_user_set: bool,
    pub upstream_timeout_ms: u64,
    pub max_inflight: usize,
    /// The resolver's cache of forwarded answers (R34).
    pub cache: CacheSettings,
    /// Where the network's records are shared with other hosts; `None`: this host only.
    pub etcd: Option<EtcdConf>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// Top-level keys the CNI spec and conventions give a plugin's conf that embedns reads no
/// field of (other plugins' keys, as libcni and runtimes pass them on).
const CNI_KEYS: &[&str] = &[
    "args",
    "capabilities",
    "ipMasq",
    "ipam",
    "cni.dev/attachments",
];

/// Of the paths serde ignored, the top-level keys no CNI convention names.
fn unknown_keys(ignored: Vec<String>) -> Vec<String> {
    let mut keys: Vec<String> = ignored
        .into_iter()
        .filter(|p| !p.contains('.') || p.starts_with("cni.dev/"))
        .filter(|p| !CNI_KEYS.contains(&p.as_str()))
        .collect();
    keys.dedup();
    keys
}

impl NetConf {
    /// Parses and validates stdin. Errors are CNI code 6 (not JSON) or 7 (invalid values).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, ConfError> {
        let (mut raw, unknown_keys) = decode(stdin)?;
        names::network(&raw.name)?;
        let rc = raw.runtime_config.take().unwrap_or_default();
        let dns = raw.dns.take().unwrap_or_default();
        let dns_capability = rc.dns.clone().unwrap_or_default();
        let explicit_upstreams = explicit_upstreams(&dns, &dns_capability)?;
        let aliases = aliases(&raw, &rc)?;
        let links = (rc.links.iter().flatten())
            .map(Link::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        check_resolv_conf_lines(&raw, &dns, &dns_capability)?;
        let cache = check_numbers(&raw)?;
        check_shapes(&raw)?;
        Ok(NetConf {
            cni_version: raw.cni_version,
            name: raw.name,
            plugin_type: raw.plugin_type,
            data_dir: raw.data_dir.unwrap_or_else(default_data_dir),
            host_resolv_conf: raw
                .host_resolv_conf
                .unwrap_or_else(|| DEFAULT_HOST_RESOLV_CONF.into()),
            dns,
            dns_capability,
            explicit_upstreams,
            aliases,
            links,
            runtime_name: rc.name,
            ttl: raw.ttl.unwrap_or(defaults::TTL),
            internal: raw.internal,
            resolv_conf_path: raw.resolv_conf_path,
            etc_netns: raw.etc_netns,
            catch_nameservers: raw.catch_nameservers.unwrap_or(true),
            scope_by_namespace: raw.scope_by_namespace.unwrap_or(true),
            domain_name: raw.domain_name.map(|d| names::normalize(&d)),
            log_file: raw.log_file,
            log_level: raw.log_level,
            resolver_path: raw.resolver_path,
            cgroup_parent: match (&rc.cgroup_path, &raw.cgroup_parent) {
                (Some(p), _) if !p.is_empty() => crate::cgroup::parent(p)?,
                (_, Some(p)) => crate::cgroup::parent(p)?,
                _ => crate::cgroup::parent(crate::cgroup::DEFAULT_PARENT)?,
            },
            cgroup_from_runtime: rc.cgroup_path.as_ref().is_some_and(|p| !p.is_empty()),
            resolver_user_set: raw.resolver_user.is_some(),
            resolver_user: match &raw.resolver_user {
                Some(u) => ResolverUser::parse(u)?,
                None => default_resolver_user(),
            },
            upstream_timeout_ms: raw
                .upstream_timeout_ms
                .unwrap_or(defaults::UPSTREAM_TIMEOUT_MS),
            max_inflight: raw.max_inflight.unwrap_or(defaults::MAX_INFLIGHT),
            cache,
            etcd: raw.etcd.map(EtcdConf::settle).transpose()?,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments,
            unknown_keys,
        })
    }

    /// R26 (ours): the nameservers a runtime that writes the container's resolv.conf itself
    /// puts there, whose queries the resolver answers: the `dns` capability's servers when it
    /// has any (a pod's `dns_config`, `podman --dns`), else the nameservers of `host` (the
    /// host resolv.conf, which containerd and nerdctl copy). IPv4 and IPv6 (caught by
    /// iptables and ip6tables), never 127.0.0.8/29 (redirected anyway), an unspecified,
    /// multicast or broadcast address, nor an IPv6 link-local one (it needs a zone); none when
    /// `catchNameservers` is false. A conf's `dns.nameservers` are ours to ask, not the
    /// runtime's to write.
    pub fn runtime_nameservers(&self, host: &crate::resolv::ResolvConf) -> Vec<IpAddr> {
        if !self.catch_nameservers {
            return Vec::new();
        }
        let given: Vec<IpAddr> = if self.dns_capability.servers.is_empty() {
            host.nameservers.clone()
        } else {
            let port_53 = |a: SocketAddr| (a.port() == 53).then_some(a.ip());
            (self.dns_capability.servers.iter())
                .filter_map(|s| parse_upstream(s).ok().and_then(port_53))
                .collect()
        };
        let mut out = Vec::new();
        for ip in given {
            let caught = !redirected_in_container(SocketAddr::new(ip, 53))
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && match ip {
                    IpAddr::V4(v4) => !v4.is_broadcast(),
                    IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                };
            if caught && !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    }
}

/// Whether the redirect in a container's netns takes `addr` to the resolver (port 53 of
/// 127.0.0.8/29, which holds every address our results name, R23): an explicit upstream,
/// asked from the container's netns, must not be one, or the resolver would ask itself.
pub fn redirected_in_container(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => {
            addr.port() == 53 && ip.octets()[..3] == [127, 0, 0] && ip.octets()[3] & !7 == 8
        }
        IpAddr::V6(_) => false,
    }
}

/// An upstream as written in a conf: `IP`, `IP:port` or `[IPv6]:port`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, ConfError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        ConfError::InvalidConfig(format!("nameserver {s:?} is not an IP address or IP:port"))
    })
}

/// The conf as JSON, and the top-level keys in it that no CNI convention and no key of ours
/// names (noted, never refused).
fn decode(stdin: &[u8]) -> Result<(RawNetConf, Vec<String>), ConfError> {
    let mut ignored = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let raw: RawNetConf = serde_ignored::deserialize(&mut de, |path| {
        ignored.push(path.to_string());
    })
    .and_then(|raw| de.end().map(|()| raw))
    .map_err(|source| {
        if source.is_data() {
            ConfError::InvalidConfig(source.to_string())
        } else {
            ConfError::Decode {
                what: "network configuration",
                source,
            }
        }
    })?;
    Ok((raw, unknown_keys(ignored)))
}

/// R17: the conf's `dns.nameservers`, then the capability's servers, each once, none the
/// redirect takes in the container, at most 3.
fn explicit_upstreams(
    dns: &DnsConf,
    capability: &DnsCapability,
) -> Result<Vec<SocketAddr>, ConfError> {
    let mut explicit = Vec::new();
    for s in dns.nameservers.iter().chain(&capability.servers) {
        let addr = parse_upstream(s)?;
        if !redirected_in_container(addr) && !explicit.contains(&addr) {
            explicit.push(addr);
        }
    }
    explicit.truncate(3);
    Ok(explicit)
}

/// R3: the conf's aliases (a bad one fails), then the runtime's (`--network-alias`: one DNS
/// cannot carry is skipped with a warning, never a reason to fail the container's start),
/// normalized, each once.
fn aliases(raw: &RawNetConf, rc: &RawRuntimeConfig) -> Result<Vec<String>, ConfError> {
    let mut aliases = Vec::new();
    for a in &raw.aliases {
        names::dns_name("alias", a)?;
        let a = names::normalize(a);
        if !aliases.contains(&a) {
            aliases.push(a);
        }
    }
    for a in capability_aliases(&raw.name, rc.aliases.as_ref())? {
        if !names::served_name("alias", &a)? {
            tracing::warn!(alias = %a, "DNS cannot carry this alias: not served");
            continue;
        }
        let a = names::normalize(&a);
        if !aliases.contains(&a) {
            aliases.push(a);
        }
    }
    Ok(aliases)
}

/// The domain name, search domains and options, which become lines of the container's
/// resolv.conf: a newline would inject one.
fn check_resolv_conf_lines(
    raw: &RawNetConf,
    dns: &DnsConf,
    capability: &DnsCapability,
) -> Result<(), ConfError> {
    if let Some(d) = &raw.domain_name {
        names::dns_name("domainName", d)?;
    }
    for d in (dns.search.iter())
        .chain(&capability.searches)
        .chain(&dns.domain)
    {
        names::dns_name("search domain", d)?;
    }
    for o in dns.options.iter().chain(&capability.options) {
        names::resolv_option(o)?;
    }
    Ok(())
}

/// The numbers' bounds: TTL, timeout and in-flight cap at least 1, the cache's size and
/// TTLs (R34) within theirs; the cache settings, defaults filled in.
fn check_numbers(raw: &RawNetConf) -> Result<CacheSettings, ConfError> {
    if raw.ttl == Some(0) {
        return Err(ConfError::InvalidConfig("ttl must be at least 1".into()));
    }
    if raw.upstream_timeout_ms == Some(0) || raw.max_inflight == Some(0) {
        return Err(ConfError::InvalidConfig(
            "upstreamTimeoutMs and maxInflight must be at least 1".into(),
        ));
    }
    let cache = CacheSettings {
        size: raw.cache_size.unwrap_or(defaults::CACHE_SIZE),
        max_ttl: raw.cache_max_ttl.unwrap_or(defaults::CACHE_MAX_TTL),
        max_negative_ttl: raw
            .cache_max_negative_ttl
            .unwrap_or(defaults::CACHE_MAX_NEGATIVE_TTL),
    };
    if cache.size > MAX_CACHE_SIZE {
        return Err(ConfError::InvalidConfig(format!(
            "cacheSize is at most {MAX_CACHE_SIZE} bytes (64 MiB)"
        )));
    }
    if !(1..=MAX_CACHE_TTL).contains(&cache.max_ttl) || cache.max_negative_ttl > MAX_CACHE_TTL {
        return Err(ConfError::InvalidConfig(format!(
            "cacheMaxTtl must be 1 to {MAX_CACHE_TTL} seconds, cacheMaxNegativeTtl 0 to {MAX_CACHE_TTL}"
        )));
    }
    Ok(cache)
}

/// `resolvConfPath` absolute, `prevResult` an object.
fn check_shapes(raw: &RawNetConf) -> Result<(), ConfError> {
    if let Some(t) = &raw.resolv_conf_path {
        if !t.starts_with('/') {
            return Err(ConfError::InvalidConfig(format!(
                "resolvConfPath {t:?} must be an absolute path"
            )));
        }
    }
    if raw.prev_result.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(ConfError::InvalidConfig(
            "prevResult must be an object".into(),
        ));
    }
    Ok(())
}

/// The `aliases` capability: podman sends `{"<network>": [...]}`, the CNI conventions a list.
fn capability_aliases(network: &str, value: Option<&Value>) -> Result<Vec<String>, ConfError> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(m)) => match m.get(network) {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(ConfError::InvalidConfig(format!(
                    "runtimeConfig.aliases.{network} must be a list of names"
                )))
            }
        },
        Some(_) => {
            return Err(ConfError::InvalidConfig(
                "runtimeConfig.aliases must be a list or a map of network to list".into(),
            ))
        }
    };
    list.into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(ConfError::InvalidConfig(format!(
                "runtimeConfig.aliases: {other} is not a string"
            ))),
        })
        .collect()
}

/// CNI_ARGS as a map (`K1=V1;K2=V2`). Malformed pairs are an env error (code 4).
pub fn parse_cni_args(args: &str) -> Result<BTreeMap<String, String>, ConfError> {
    let mut out = BTreeMap::new();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| ConfError::InvalidEnv {
            var: "CNI_ARGS",
            reason: format!("{pair:?} is not KEY=VALUE"),
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Links from CNI_ARGS `EMBEDNS_LINKS=target:alias,target2:alias2` (R4).
pub fn links_from_args(value: &str) -> Result<Vec<Link>, ConfError> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(Link::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<NetConf, ConfError> {
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"net1","type":"embedns"{extra}}}"#).as_bytes(),
        )
    }

    #[test]
    fn defaults() {
        let c = conf("").unwrap();
        assert_eq!(c.ttl, 600);
        assert_eq!(c.data_dir, PathBuf::from("/run/embedns"));
        assert!(c.explicit_upstreams.is_empty());
    }

    #[test]
    fn r34_cache_keys_their_defaults_and_bounds() {
        let c = conf("").unwrap().cache;
        assert_eq!((c.size, c.max_ttl, c.max_negative_ttl), (256 * 1024, 30, 5));
        let c = conf(r#","cacheSize":0,"cacheMaxTtl":5,"cacheMaxNegativeTtl":0"#)
            .unwrap()
            .cache;
        assert_eq!((c.size, c.max_ttl, c.max_negative_ttl), (0, 5, 0));
        for bad in [
            r#","cacheSize":67108865"#,
            r#","cacheMaxTtl":0"#,
            r#","cacheMaxTtl":86401"#,
            r#","cacheMaxNegativeTtl":86401"#,
            r#","cacheSize":-1"#,
        ] {
            assert!(
                matches!(conf(bad), Err(ConfError::InvalidConfig(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn r26_runtime_nameservers_are_the_capabilitys_else_the_hosts() {
        let host = crate::resolv::ResolvConf::parse(
            "nameserver 10.255.255.53\nnameserver 127.0.0.11\nnameserver fd00::1\nnameserver fe80::1\nnameserver 127.0.0.53\n",
        );
        let hosts: Vec<IpAddr> = vec![
            "10.255.255.53".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            "127.0.0.53".parse().unwrap(),
        ];
        assert_eq!(conf("").unwrap().runtime_nameservers(&host), hosts);
        let pod = conf(
            r#","runtimeConfig":{"dns":{"servers":["10.96.0.10","127.0.0.11","10.96.0.10","10.0.0.2:5353"]}}"#,
        );
        assert_eq!(
            pod.unwrap().runtime_nameservers(&host),
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        // Explicit conf upstreams are ours to ask, not the runtime's to write.
        let explicit = conf(r#","dns":{"nameservers":["10.0.0.1"]}"#).unwrap();
        assert_eq!(explicit.runtime_nameservers(&host), hosts);
        let off = conf(r#","catchNameservers":false"#).unwrap();
        assert!(off.runtime_nameservers(&host).is_empty());
    }

    #[test]
    fn unknown_top_level_keys_are_named_and_cni_ones_are_not() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"embedns","catchNameServers":false,
                "ipMasq":true,"capabilities":{"dns":true},"args":{"x":1},
                "runtimeConfig":{"portMappings":[],"dns":{"servers":["10.0.0.1"]}},
                "dns":{"nameservers":["10.0.0.2"]},"cacheSize":0}"#,
        )
        .unwrap();
        assert_eq!(c.unknown_keys, vec!["catchNameServers"]);
        // Still a warning only: the key is ignored, the known ones apply.
        assert!(c.catch_nameservers);
        assert_eq!(c.cache.size, 0);
    }

    #[test]
    fn cri_dns_capability_with_capitalised_keys() {
        // What containerd's CRI sends for a pod's dns_config (go-cni's field names).
        let c = conf(
            r#","runtimeConfig":{"dns":{"Servers":["10.96.0.10"],"Searches":["default.svc.cluster.local","svc.cluster.local"],"Options":["ndots:5"]}}"#,
        )
        .unwrap();
        assert_eq!(c.explicit_upstreams, vec!["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(
            c.dns_capability.searches,
            vec!["default.svc.cluster.local", "svc.cluster.local"]
        );
        assert_eq!(c.dns_capability.options, vec!["ndots:5"]);
        // The conventions' lower-case keys, as ever.
        let l = conf(r#","runtimeConfig":{"dns":{"servers":["10.0.0.1"]}}"#).unwrap();
        assert_eq!(l.explicit_upstreams, vec!["10.0.0.1:53".parse().unwrap()]);
    }

    #[test]
    fn resolver_user() {
        assert_eq!(
            conf("").unwrap().resolver_user,
            crate::user::DEFAULT_RESOLVER_USER
        );
        let c = conf(r#","resolverUser":"1001:1002""#).unwrap();
        assert_eq!((c.resolver_user.uid, c.resolver_user.gid), (1001, 1002));
        for bad in ["0:0", "root", "1:", ":1", "65534"] {
            assert!(
                conf(&format!(r#","resolverUser":"{bad}""#)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn aliases_map_and_list_forms() {
        // R3: podman's map form and the conventions' list form, plus the static list.
        let m = conf(r#","aliases":["static"],"runtimeConfig":{"aliases":{"net1":["WWW","2ff3fb1478a2"],"other":["no"]}}"#).unwrap();
        assert_eq!(m.aliases, vec!["static", "www", "2ff3fb1478a2"]);
        let l = conf(r#","runtimeConfig":{"aliases":["api"]}"#).unwrap();
        assert_eq!(l.aliases, vec!["api"]);
        assert!(conf(r#","runtimeConfig":{"aliases":{"net1":"x"}}"#).is_err());
    }

    #[test]
    fn upstreams_in_order_capped_without_self() {
        // R17
        let c = conf(r#","dns":{"nameservers":["10.0.0.1","127.0.0.11","10.0.0.2:5353"]},"runtimeConfig":{"dns":{"servers":["10.0.0.3","10.0.0.4"]}}"#).unwrap();
        let got: Vec<String> = c.explicit_upstreams.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, vec!["10.0.0.1:53", "10.0.0.2:5353", "10.0.0.3:53"]);
    }

    #[test]
    fn no_upstream_the_container_redirect_would_send_back_to_itself() {
        // R17/R23: our results name 127.0.0.11-15, all redirected to the resolver in the
        // container's netns, where explicit upstreams are asked: a pod whose dns servers copy
        // one of them must not make the resolver ask itself.
        let c = conf(r#","runtimeConfig":{"dns":{"servers":["127.0.0.12","127.0.0.15","127.0.0.12:5353","10.0.0.3"]}}"#).unwrap();
        let got: Vec<String> = c.explicit_upstreams.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, vec!["127.0.0.12:5353", "10.0.0.3:53"]);
    }

    #[test]
    fn bad_input_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().cni_code(), 6);
        assert_eq!(conf(r#","ttl":"x""#).unwrap_err().cni_code(), 7);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"../x","type":"embedns"}"#)
                .unwrap_err()
                .cni_code(),
            7
        );
        assert_eq!(
            conf(r#","dns":{"nameservers":["nope"]}"#)
                .unwrap_err()
                .cni_code(),
            7
        );
    }

    #[test]
    fn cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web").unwrap();
        assert_eq!(a["K8S_POD_NAME"], "web");
        assert_eq!(parse_cni_args("novalue").unwrap_err().cni_code(), 4);
    }
}
