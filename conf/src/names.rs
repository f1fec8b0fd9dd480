//! Validation of every string from CNI input that becomes a file name or a DNS name.
//!
//! Network names and container IDs become path components of the store, so they must never
//! contain a separator or be `.`/`..`; container names, aliases and link aliases become DNS
//! names, so they follow the label rules (RFC 1123 with `_` allowed, as Docker allows it).

use crate::ConfError;

/// Checks a CNI network name (it names a directory of the store).
pub fn network(name: &str) -> Result<(), ConfError> {
    path_component("network name", name, 128)
}

/// Checks a CNI_CONTAINERID (it names a file and a directory of the store).
pub fn container_id(id: &str) -> Result<(), ConfError> {
    path_component("container ID", id, 256)
}

/// Checks a CNI_IFNAME (part of a record's file name; Linux caps names at 15 bytes).
pub fn ifname(name: &str) -> Result<(), ConfError> {
    if name.is_empty() || name.len() > 15 || name == "." || name == ".." {
        return Err(invalid(
            "interface name",
            name,
            "must be 1 to 15 characters",
        ));
    }
    if name.contains(['/', '@']) || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "interface name",
            name,
            "must not contain '/', '@' or spaces",
        ));
    }
    Ok(())
}

/// Checks a name a runtime gives a container to be served over DNS (a container or pod name,
/// a network alias, a link). Characters other than letters, digits, '-', '_' and '.' are an
/// error (no runtime gives them; they could reach a path). Otherwise `Ok(false)` when DNS
/// cannot carry the name (over 253 characters, an empty label or one over 63: Docker accepts
/// `a..b`, Kubernetes a pod name of one 70-character label): callers skip it with a warning,
/// and the container starts, as under Docker. A label may start or end with '-': Docker
/// accepts `web-`, and a query for it works.
pub fn served_name(what: &'static str, name: &str) -> Result<bool, ConfError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if name.is_empty() || !name.bytes().all(allowed) {
        return Err(invalid(
            what,
            name,
            "only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(dns_labels(what, name, true).is_ok())
}

/// Checks a DNS name of a configuration (a search domain, `domainName`, a conf's static
/// alias), host-name rules: as [`served_name`], and no label starts or ends with '-'.
pub fn dns_name(what: &'static str, name: &str) -> Result<(), ConfError> {
    dns_labels(what, name, false)
}

fn dns_labels(what: &'static str, name: &str, edge_hyphens: bool) -> Result<(), ConfError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(invalid(what, name, "must be 1 to 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(
                what,
                name,
                "each dot-separated label must be 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                what,
                name,
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        if !edge_hyphens && (label.starts_with('-') || label.ends_with('-')) {
            return Err(invalid(
                what,
                name,
                "a label must not start or end with '-'",
            ));
        }
    }
    Ok(())
}

/// Checks a host's name in the keys of a shared network (`etcd.host`, and the host segment of
/// every key another host wrote): letters, digits, '-', '_' and '.', 1–253 of them, not
/// starting with '.' (so never `.` or `..`: it becomes a directory name in the store).
pub fn host(name: &str) -> Result<(), ConfError> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if name.is_empty() || name.len() > 253 || name.starts_with('.') || !name.bytes().all(ok) {
        return Err(invalid(
            "host",
            name,
            "must be letters, digits, '-', '_' or '.' (1..253 of them), not starting with '.'",
        ));
    }
    Ok(())
}

/// Checks a resolv.conf option (`ndots:2`, `edns0`): one word of printable ASCII.
pub fn resolv_option(option: &str) -> Result<(), ConfError> {
    if option.is_empty() || option.len() > 64 || !option.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "resolv.conf option",
            option,
            "must be one printable word",
        ));
    }
    Ok(())
}

/// The form a DNS name is stored and compared in: lower case, no trailing dot (R6).
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn path_component(what: &'static str, value: &str, max: usize) -> Result<(), ConfError> {
    if value.is_empty() || value.len() > max {
        return Err(invalid(
            what,
            value,
            &format!("must be 1 to {max} characters"),
        ));
    }
    // The CNI spec allows alphanumerics, '_', '.' and '-' in both; '.' alone and '..' would
    // name the parent directory.
    if value == "." || value == ".." || value.starts_with('.') {
        return Err(invalid(what, value, "must not start with '.'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(invalid(
            what,
            value,
            "only letters, digits, '_', '.' and '-' are allowed",
        ));
    }
    Ok(())
}

fn invalid(what: &str, value: &str, why: &str) -> ConfError {
    ConfError::InvalidConfig(format!("{what} {value:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_traversal() {
        assert!(network("../x").is_err());
        assert!(network("..").is_err());
        assert!(network("a/b").is_err());
        assert!(network(".hidden").is_err());
        assert!(container_id("x/../../etc").is_err());
        assert!(network("my-net_1.2").is_ok());
        assert_eq!(network("../x").unwrap_err().cni_code(), 7);
    }

    #[test]
    fn dns_names_follow_label_rules() {
        assert!(dns_name("alias", "web").is_ok());
        assert!(dns_name("alias", "web.backend.").is_ok());
        assert!(dns_name("alias", "my_db").is_ok());
        assert!(dns_name("alias", "").is_err());
        assert!(dns_name("alias", "a..b").is_err());
        assert!(dns_name("alias", "-web").is_err());
        assert!(dns_name("alias", "we b").is_err());
        assert!(dns_name("alias", &"a".repeat(64)).is_err());
        // What a runtime names a container: Docker accepts `web-` and `a..b`.
        assert!(served_name("container name", "web-").unwrap());
        assert!(served_name("container name", "-web.x-").unwrap());
        assert!(!served_name("container name", &"a".repeat(70)).unwrap());
        assert!(!served_name("container name", "a..b").unwrap());
        assert!(served_name("container name", "we b").is_err());
        assert!(served_name("container name", "../x").is_err());
    }

    #[test]
    fn normalize_is_case_and_dot_insensitive() {
        assert_eq!(normalize("Web.MyNet."), "web.mynet");
    }
}
