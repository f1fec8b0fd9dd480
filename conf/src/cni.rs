//! CNI protocol types: spec versions, the error object, and the result embedns returns
//! (`prevResult` passed through in the requested version, with `dns` set).

use std::net::IpAddr;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::ConfError;

/// The spec versions embedns speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Checks that `version` is supported; CHECK needs 0.4.0+, GC and STATUS 1.1.0.
pub fn check_version(version: &str, command: &str) -> Result<(), ConfError> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ConfError::IncompatibleVersion(format!(
            "{version:?} (embedns supports {})",
            SUPPORTED_VERSIONS.join(", ")
        )));
    }
    let min = match command {
        "CHECK" => "0.4.0",
        "GC" | "STATUS" => "1.1.0",
        _ => return Ok(()),
    };
    if version_lt(version, min) {
        return Err(ConfError::IncompatibleVersion(format!(
            "{command} needs cniVersion {min} or later, the configuration says {version}"
        )));
    }
    Ok(())
}

fn version_lt(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

/// The spec's error object, printed on stdout with a non-zero exit.
#[derive(Debug, Serialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// The `dns` field of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResultDns {
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The container's addresses from a `prevResult`: IPs whose interface is in a sandbox (or
/// that name no interface), host-side interfaces skipped.
pub fn container_ips(prev: &Value) -> Result<Vec<IpAddr>, ConfError> {
    let interfaces = prev.get("interfaces").and_then(Value::as_array);
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid_prev("\"ips\" is not a list")),
    };
    let mut out = Vec::new();
    for ip in ips {
        let addr = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_prev("an entry of \"ips\" has no \"address\""))?;
        let host = addr.split('/').next().unwrap_or(addr);
        let parsed: IpAddr = host
            .parse()
            .map_err(|_| invalid_prev(&format!("{addr:?} is not an IP address")))?;
        if let (Some(idx), Some(ifaces)) = (ip.get("interface").and_then(Value::as_u64), interfaces)
        {
            let in_sandbox = ifaces
                .get(idx as usize)
                .and_then(|i| i.get("sandbox"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !in_sandbox {
                continue;
            }
        }
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

fn invalid_prev(why: &str) -> ConfError {
    ConfError::InvalidConfig(format!("prevResult: {why}"))
}

/// The ADD result: `prevResult` converted to `version` (0.3.x/0.4.0 carry `ips[].version`,
/// 1.x does not), with `dns` replaced by ours.
pub fn add_result(prev: Option<&Value>, version: &str, dns: &ResultDns) -> Value {
    let mut out = match prev {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    out.insert("cniVersion".into(), json!(version));
    let legacy = version_lt(version, "1.0.0");
    if let Some(Value::Array(ips)) = out.get_mut("ips") {
        for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
            if legacy {
                let v = match ip.get("address").and_then(Value::as_str) {
                    Some(a) if a.contains(':') => "6",
                    _ => "4",
                };
                ip.insert("version".into(), json!(v));
            } else {
                ip.remove("version");
            }
        }
    }
    out.insert(
        "dns".into(),
        serde_json::to_value(dns).unwrap_or(Value::Null),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev() -> Value {
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [
                {"address": "10.89.0.2/24", "interface": 1, "version": "4"},
                {"address": "fd00::2/64", "interface": 1, "version": "6"},
                {"address": "10.89.0.1/24", "interface": 0, "version": "4"}
            ]
        })
    }

    #[test]
    fn versions() {
        assert!(check_version("1.0.0", "ADD").is_ok());
        assert_eq!(check_version("9.9.9", "ADD").unwrap_err().cni_code(), 1);
        assert!(check_version("0.3.1", "CHECK").is_err());
        assert!(check_version("1.0.0", "GC").is_err());
        assert!(check_version("1.1.0", "STATUS").is_ok());
    }

    #[test]
    fn only_sandbox_ips() {
        let ips = container_ips(&prev()).unwrap();
        assert_eq!(ips.len(), 2);
        assert!(container_ips(&json!({"ips": [{"address": "x"}]})).is_err());
    }

    #[test]
    fn result_conversion() {
        // R23: dns set in the result; ips[].version follows the requested version.
        let dns = ResultDns {
            nameservers: vec!["127.0.0.11".into()],
            ..Default::default()
        };
        let v1 = add_result(Some(&prev()), "1.0.0", &dns);
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["dns"]["nameservers"][0], "127.0.0.11");
        let v03 = add_result(Some(&prev()), "0.3.1", &dns);
        assert_eq!(v03["ips"][1]["version"], "6");
    }
}
