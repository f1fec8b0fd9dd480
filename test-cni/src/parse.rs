//! Reading what the tools print: a CNI result's address, a line of a file, busybox
//! `nslookup`'s answers.

/// The first address of a CNI result (`ips[0].address` without its prefix length).
pub fn ip_of(result: &serde_json::Value) -> String {
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"));
    addr.split('/').next().unwrap_or(addr).to_string()
}

/// The first line of `text` that starts with `prefix` (a resolv.conf directive, a
/// /proc status field), or "" when none does.
pub fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
}

/// The addresses busybox `nslookup` printed, sorted and each once (its server's own lines,
/// `Server:` and `Address: <server>:53` before the first `Name:`, left out; with a search
/// list it asks each search-qualified name, which R16a may answer as the local one).
pub fn nslookup_addresses(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}
