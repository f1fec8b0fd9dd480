//! The plugin's own error codes (100+) and the mapping of any error to a CNI code.

use embedns_conf::ConfError;

/// An error with the CNI code it must be reported with.
#[derive(Debug)]
pub struct PluginError {
    pub code: u32,
    pub msg: String,
}

/// The resolver did not start or does not answer.
pub const RESOLVER_FAILED: u32 = 101;
/// The redirect rules could not be installed.
pub const REDIRECT_FAILED: u32 = 102;
/// The container's netns could not be entered.
pub const NETNS_FAILED: u32 = 103;
/// CHECK found something missing or wrong.
pub const CHECK_FAILED: u32 = 104;
/// GC removed what it could but failed on some of it (the message lists each failure).
pub const GC_INCOMPLETE: u32 = 105;
/// STATUS: the plugin cannot work (CNI 1.1 code 50).
pub const NOT_AVAILABLE: u32 = 50;

impl PluginError {
    /// An error with the CNI code the runtime gets.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for PluginError {}

/// The CNI code and a one-line message for an error: the first typed error in its chain
/// decides the code; anything untyped is 100 (a generic embedns failure).
pub fn classify(e: &anyhow::Error) -> (u32, String) {
    let code = e
        .chain()
        .find_map(|c| {
            c.downcast_ref::<PluginError>()
                .map(|p| p.code)
                .or_else(|| c.downcast_ref::<ConfError>().map(ConfError::cni_code))
        })
        .unwrap_or(100);
    (code, e.to_string())
}

/// The error and its causes, `: `-joined, each said once: a cause whose text the message
/// before it already holds (an I/O error a typed error prints inside its own message) is
/// left out. Runtimes print `msg` and `details` together, so the cause once is enough.
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = anyhow::Error::new(embedns_conf::error::ConfError::Io {
            path: "/var/lib/x".into(),
            source: io,
        });
        assert_eq!(chain_text(&e), "/var/lib/x: permission denied");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_text(&e), "outer: inner");
    }
}
