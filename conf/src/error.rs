//! The typed errors of the shared library, each mapped to the CNI error code a plugin reports.

use std::path::PathBuf;

/// An error from parsing, validating or storing embedns state.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The network configuration is not what embedns accepts (CNI code 7).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// stdin is not the JSON a CNI plugin expects (CNI code 6).
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A CNI_* environment variable is missing or malformed (CNI code 4).
    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    /// The requested CNI version is not one embedns speaks (CNI code 1).
    #[error("incompatible CNI version {0}")]
    IncompatibleVersion(String),
    /// A file of the state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored record or sandbox file does not parse (skipped by readers, reported by CHECK).
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ConfError {
    /// The CNI error code of this error (spec section "Error").
    pub fn cni_code(&self) -> u32 {
        match self {
            ConfError::IncompatibleVersion(_) => 1,
            ConfError::InvalidEnv { .. } => 4,
            ConfError::Decode { .. } => 6,
            ConfError::InvalidConfig(_) => 7,
            ConfError::Io { source, .. } if is_transient(source) => 11,
            ConfError::Io { .. } | ConfError::Corrupt { .. } => 100,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConfError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Errors a runtime may retry: a full disk or a busy resource can clear on their own. By
/// kind, not errno: wrappers such as tempfile's keep the kind but not the raw code.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::WouldBlock | ErrorKind::ResourceBusy
    )
}
