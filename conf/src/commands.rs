//! The daemons' command lines, in one place: the plugin builds them here, and reads them back
//! here from `/proc/<pid>/cmdline` (to find a resolver a killed ADD left, or to tell a sync
//! process from a process that took its pid); the daemons parse them with clap (their unit
//! tests parse what these build). Every release has started a resolver with the same leading
//! arguments, so one of an earlier release is found too.

use std::ffi::OsString;
use std::path::Path;

use crate::user::ResolverUser;

/// The `argv[0]` a resolver's supervisor retitles itself to (its child keeps the command
/// line it was started with).
pub const SUPERVISOR_ARGV0: &str = "embedns-resolverd:supervisor";

/// The descriptors a resolver is started with: its ready pipe, then its sockets on
/// 127.0.0.11 and, where the netns has IPv6, on [::1].
pub const READY_FD: i32 = 3;
pub const UDP_FD: i32 = 4;
pub const TCP_FD: i32 = 5;
pub const UDP6_FD: i32 = 6;
pub const TCP6_FD: i32 = 7;

/// A resolver's command line (after the binary).
pub struct ResolverCommand<'a> {
    pub data_dir: &'a Path,
    pub container_id: &'a str,
    pub user: ResolverUser,
    /// Whether it gets [`UDP6_FD`] and [`TCP6_FD`] too.
    pub v6: bool,
}

impl ResolverCommand<'_> {
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            self.data_dir.into(),
            "--container-id".into(),
            self.container_id.into(),
        ];
        let fd = |flag: &str, fd: i32| [OsString::from(flag), fd.to_string().into()];
        args.extend(fd("--ready-fd", READY_FD));
        args.extend(fd("--udp-fd", UDP_FD));
        args.extend(fd("--tcp-fd", TCP_FD));
        args.extend(["--user".into(), self.user.to_string().into()]);
        if self.v6 {
            args.extend(fd("--udp6-fd", UDP6_FD));
            args.extend(fd("--tcp6-fd", TCP6_FD));
        }
        args
    }

    /// The container a resolver (or its supervisor) of the state directory `data_dir`
    /// serves, read from its command line `argv` as `/proc` gives it; `None` for any other
    /// process.
    pub fn container_of<'a>(argv: &'a [Vec<u8>], data_dir: &Path) -> Option<&'a str> {
        let arg = |i: usize| argv.get(i).map(Vec::as_slice);
        let exe = arg(0)?;
        let ours = (exe.ends_with(b"embedns-resolverd") || exe == SUPERVISOR_ARGV0.as_bytes())
            && arg(1) == Some(b"--data-dir")
            && arg(2) == Some(data_dir.as_os_str().as_encoded_bytes())
            && arg(3) == Some(b"--container-id");
        ours.then(|| std::str::from_utf8(arg(4)?).ok()).flatten()
    }
}

/// A shared network's sync process's command line (after the binary).
pub struct SyncCommand<'a> {
    pub data_dir: &'a Path,
    pub network: &'a str,
}

impl SyncCommand<'_> {
    pub fn args(&self) -> Vec<OsString> {
        vec![
            "--data-dir".into(),
            self.data_dir.into(),
            "--network".into(),
            self.network.into(),
            "--ready-fd".into(),
            READY_FD.to_string().into(),
        ]
    }

    /// Whether the command line `argv` (as `/proc` gives it) is a sync process's.
    pub fn is_sync(argv: &[Vec<u8>]) -> bool {
        argv.first()
            .is_some_and(|exe| exe.ends_with(b"embedns-syncd"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_proc(exe: &str, args: &[OsString]) -> Vec<Vec<u8>> {
        std::iter::once(exe.as_bytes().to_vec())
            .chain(args.iter().map(|a| a.as_encoded_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_resolver_is_found_by_the_command_line_it_was_started_with() {
        let dir = Path::new("/run/embedns");
        let cmd = ResolverCommand {
            data_dir: dir,
            container_id: "c1",
            user: crate::user::DEFAULT_RESOLVER_USER,
            v6: true,
        };
        let argv = as_proc("/opt/cni/bin/embedns-resolverd", &cmd.args());
        assert_eq!(ResolverCommand::container_of(&argv, dir), Some("c1"));
        let supervisor = as_proc(SUPERVISOR_ARGV0, &cmd.args());
        assert_eq!(ResolverCommand::container_of(&supervisor, dir), Some("c1"));
        // Another state directory's, or another program.
        let other = Path::new("/run/other");
        assert_eq!(ResolverCommand::container_of(&argv, other), None);
        let sync = as_proc("/opt/cni/bin/embedns-syncd", &cmd.args());
        assert_eq!(ResolverCommand::container_of(&sync, dir), None);
        assert!(cmd.args().contains(&OsString::from("--udp6-fd")));
    }

    #[test]
    fn a_sync_process_is_told_by_its_program() {
        let cmd = SyncCommand {
            data_dir: Path::new("/run/embedns"),
            network: "n",
        };
        assert!(SyncCommand::is_sync(&as_proc(
            "/usr/bin/embedns-syncd",
            &cmd.args()
        )));
        assert!(!SyncCommand::is_sync(&as_proc("/bin/sleep", &cmd.args())));
    }
}
