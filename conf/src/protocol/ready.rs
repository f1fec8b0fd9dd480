//! The ready protocol: the one line a child of the plugin (the resolver, a shared network's
//! sync process) writes on its ready pipe, fd 3, once it knows how its start went. The
//! children write it and the plugin reads it with this one type.

use std::fmt;
use std::str::FromStr;

/// What a child says on its ready pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A resolver serving on these ports of 127.0.0.11: `READY <udp> <tcp>`.
    Serving { udp: u16, tcp: u16 },
    /// A sync process in step with etcd: `READY`.
    InStep,
    /// A sync process that found its network's sync process already running: `RUNNING`.
    AlreadyRunning,
    /// A sync process that reached no etcd endpoint (it keeps trying): `UNREACHABLE <why>`.
    Unreachable(String),
    /// A child that could not start: `ERROR <why>`.
    Failed(String),
}

/// A line that is none of [`Ready`]'s.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a ready line: {0:?}")]
pub struct NotReadyLine(pub String);

impl Ready {
    /// Writes the line (with its newline) to `pipe`.
    pub fn write_to(&self, pipe: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(pipe, "{self}")
    }
}

/// A reason on one line: the protocol is line-based.
fn one_line(why: &str) -> String {
    why.replace(['\n', '\r'], " ")
}

impl fmt::Display for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ready::Serving { udp, tcp } => write!(f, "READY {udp} {tcp}"),
            Ready::InStep => f.write_str("READY"),
            Ready::AlreadyRunning => f.write_str("RUNNING"),
            Ready::Unreachable(why) => write!(f, "UNREACHABLE {}", one_line(why)),
            Ready::Failed(why) => write!(f, "ERROR {}", one_line(why)),
        }
    }
}

impl FromStr for Ready {
    type Err = NotReadyLine;

    fn from_str(line: &str) -> Result<Ready, NotReadyLine> {
        let line = line.trim_end_matches(['\n', '\r']);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || NotReadyLine(line.to_string());
        match word {
            "READY" if rest.is_empty() => Ok(Ready::InStep),
            "READY" => {
                let (udp, tcp) = rest.split_once(' ').ok_or_else(bad)?;
                Ok(Ready::Serving {
                    udp: udp.parse().map_err(|_| bad())?,
                    tcp: tcp.parse().map_err(|_| bad())?,
                })
            }
            "RUNNING" if rest.is_empty() => Ok(Ready::AlreadyRunning),
            "UNREACHABLE" => Ok(Ready::Unreachable(rest.to_string())),
            "ERROR" => Ok(Ready::Failed(rest.to_string())),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_reads_back_as_written() {
        for r in [
            Ready::Serving {
                udp: 53001,
                tcp: 41002,
            },
            Ready::InStep,
            Ready::AlreadyRunning,
            Ready::Unreachable("http://10.0.0.1:2379: connection refused".into()),
            Ready::Failed("binding 127.0.0.11: address in use".into()),
        ] {
            let mut line = Vec::new();
            r.write_to(&mut line).unwrap();
            let line = String::from_utf8(line).unwrap();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(line.parse::<Ready>(), Ok(r));
        }
    }

    #[test]
    fn a_reason_stays_on_its_line() {
        let r = Ready::Failed("one\ntwo\r\nthree".into());
        assert_eq!(r.to_string(), "ERROR one two  three");
    }

    #[test]
    fn anything_else_is_refused() {
        for line in [
            "",
            "READY 1",
            "READY 1 2 3",
            "READY x 2",
            "READY 70000 2",
            "RUNNING now",
            "ready 1 2",
            "OK",
        ] {
            assert!(line.parse::<Ready>().is_err(), "{line:?}");
        }
    }
}
