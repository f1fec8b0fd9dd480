//! The plugin's channel to a running resolver, typed once for both sides: one JSON
//! [`Request`] per line on the resolver's control socket (root only, in its sandbox
//! directory), one JSON reply per line. The wire form is that of earlier versions
//! (`{"cmd":"reload"}`, `{"ok":true,...}`), so a new plugin still talks to the resolvers an
//! older one started.

use serde::{Deserialize, Serialize};

/// What the plugin asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Re-read the container's records (an attachment came or went).
    Reload,
    /// Report what the resolver serves and has done ([`StatusReply`]).
    Status,
}

/// The part of every reply that says whether the request was carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Ack {
    /// A refusal saying why.
    pub fn refused(error: String) -> Ack {
        Ack {
            ok: false,
            error: Some(error),
        }
    }
}

/// The reply to [`Request::Reload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    /// The networks the resolver serves now.
    #[serde(default)]
    pub networks: Vec<String>,
}

/// The reply to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReply {
    pub ok: bool,
    pub pid: u32,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub uptime_seconds: u64,
    pub networks: Vec<NetworkCount>,
    pub upstreams: Vec<UpstreamStatus>,
    pub counters: Counters,
    /// System calls its seccomp filter refused (none from a resolver doing its job; absent
    /// from earlier versions' replies).
    #[serde(default, rename = "seccompDenied")]
    pub seccomp_denied: u64,
    /// Whether it has a thread in the host's netns, for the host's loopback upstreams (R18;
    /// earlier versions always had one).
    #[serde(default = "always", rename = "hostNetns")]
    pub host_netns: bool,
    /// Its cache of forwarded answers (R34; absent from earlier versions' replies).
    #[serde(default)]
    pub cache: CacheUsage,
}

/// What a resolver's cache holds now, against its bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheUsage {
    pub entries: usize,
    pub bytes: usize,
    /// The bound (`cacheSize`); 0: off.
    pub size: usize,
}

fn always() -> bool {
    true
}

/// One network the resolver serves and how many peers its index holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCount {
    pub name: String,
    pub records: usize,
}

/// One upstream and where it is asked from (R18).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamStatus {
    pub address: String,
    /// Asked from the runtime's host netns (a loopback nameserver of the host's resolv.conf).
    pub from_host: bool,
}

/// Queries since the resolver started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub local: u64,
    pub forwarded: u64,
    pub failed: u64,
    pub refused: u64,
    pub upstream_mean_micros: u64,
    /// Queries answered from the cache (R34), not counted in `forwarded`.
    #[serde(default)]
    pub cached: u64,
    /// Queries that joined the same question in flight, to be answered with its reply (R34a),
    /// not counted in `forwarded`.
    #[serde(default)]
    pub coalesced: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_the_earlier_versions() {
        assert_eq!(
            serde_json::to_string(&Request::Reload).unwrap(),
            r#"{"cmd":"reload"}"#
        );
        let old = r#"{"ok":true,"pid":7,"udpPort":1,"tcpPort":2,"uptimeSeconds":3,
            "networks":[{"name":"n","records":2}],
            "upstreams":[{"address":"10.0.0.1:53","fromHost":false}],
            "counters":{"local":1,"forwarded":2,"failed":0,"refused":0,"upstreamMeanMicros":9}}"#;
        let s: StatusReply = serde_json::from_str(old).unwrap();
        assert_eq!(
            (s.pid, s.udp_port, s.counters.upstream_mean_micros),
            (7, 1, 9)
        );
        let r: ReloadReply = serde_json::from_str(r#"{"ok":true,"networks":["a"]}"#).unwrap();
        assert_eq!(r.networks, vec!["a"]);
        let a: Ack = serde_json::from_str(r#"{"ok":false,"error":"x"}"#).unwrap();
        assert_eq!(a, Ack::refused("x".into()));
    }
}
