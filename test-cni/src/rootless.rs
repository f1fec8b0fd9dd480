//! Rootless podman (4.3, CNI backend, slirp4netns, runc) as a laptop user runs it: a new
//! unprivileged user made for the test, with subordinate id ranges, its own
//! `XDG_RUNTIME_DIR`, and `/dev/net/tun` usable by it (slirp4netns opens it; on a laptop it is
//! 0666, here it may be 0600). Drop removes the containers, the user, its id ranges and its
//! runtime dir, and puts back the mode of `/dev/net/tun`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::host::must;
use crate::podman::{busybox_rootfs, setup_podman_dir, Ours};

/// One test at a time changes `/dev/net/tun` and the id-range files.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A user made for the test and its rootless podman.
pub struct RootlessPodman {
    pub user: String,
    pub uid: u32,
    pub dir: PathBuf,
    /// `$XDG_RUNTIME_DIR` of the user (`/run/user/UID`): embedns's default state dir is in it.
    pub runtime_dir: PathBuf,
    tun_mode: u32,
    networks: std::sync::Mutex<Vec<String>>,
    _machine: std::sync::MutexGuard<'static, ()>,
}

const TUN: &str = "/dev/net/tun";

impl RootlessPodman {
    /// A new user and its podman; fails the test when not root or when a tool is missing
    /// (`make test` installs them): a test that cannot run never passes.
    pub fn new(test: &str) -> RootlessPodman {
        crate::host::require_root(test);
        for tool in [
            "podman",
            "runc",
            "slirp4netns",
            "newuidmap",
            "useradd",
            "runuser",
        ] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{test} cannot run: {tool} is not installed (make test installs it)"
            );
        }
        let machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
        let user = crate::host::unique("embrl");
        must(Command::new("useradd").args([
            "-M",
            "-d",
            "/nonexistent",
            "-s",
            "/usr/sbin/nologin",
            &user,
        ]));
        let uid = id_of(&user);
        let start = 1_000_000 + u32::from(rand::random::<u16>() % 8192) * 65536;
        for file in ["/etc/subuid", "/etc/subgid"] {
            let mut text = std::fs::read_to_string(file).unwrap_or_default();
            text.push_str(&format!("{user}:{start}:65536\n"));
            std::fs::write(file, text).unwrap();
        }
        let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
        std::fs::create_dir_all(&runtime_dir).unwrap();
        let tun_mode = std::fs::metadata(TUN)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let _ = std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(0o666));

        let dir = std::env::temp_dir().join(format!("embedns-rootless-{user}"));
        busybox_rootfs(&dir.join("rootfs"), &["sh"]);
        // The user may not reach the build tree (a checkout under /root): copies of ours.
        setup_podman_dir(&dir, Ours::Copied);
        must(
            Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&dir)
                .arg(&runtime_dir),
        );
        std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        RootlessPodman {
            user,
            uid,
            dir,
            runtime_dir,
            tun_mode,
            networks: Default::default(),
            _machine: machine,
        }
    }

    /// Runs `cmd ARGS` as the user, in a login-like environment (HOME, XDG_RUNTIME_DIR, PATH).
    pub fn as_user(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", &self.user, "--", "env", "-i"])
            .arg(format!("HOME={}", self.dir.display()))
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime_dir.display()))
            .arg(format!(
                "CONTAINERS_CONF={}",
                self.dir.join("containers.conf").display()
            ))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .arg(cmd)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("running runuser")
    }

    /// `podman ARGS` as the user.
    pub fn run(&self, args: &[&str]) -> Output {
        let root = self.dir.join("root").display().to_string();
        let runroot = self.dir.join("runroot").display().to_string();
        let mut all = vec![
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        self.as_user("podman", &all)
    }

    /// `podman ARGS` that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rootless podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman network create --disable-dns NAME`, then `plugin` appended to its conflist.
    pub fn network(&self, name: &str, plugin: Value) -> String {
        self.ok(&["network", "create", "--disable-dns", name]);
        self.networks.lock().unwrap().push(name.to_string());
        let path = self.dir.join("net.d").join(format!("{name}.conflist"));
        let mut list: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        list["plugins"].as_array_mut().unwrap().push(plugin);
        std::fs::write(&path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        name.to_string()
    }

    /// `podman run -d` of a busybox `sleep`.
    pub fn start(&self, name: &str, opts: &[&str]) -> Output {
        let rootfs = self.dir.join("rootfs").display().to_string();
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--rootfs", &rootfs, "/bin/busybox", "sleep", "600"]);
        self.run(&args)
    }

    /// `podman exec NAME busybox ARGS`: stdout.
    pub fn busybox(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["exec", name, "/bin/busybox"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&self.run(&all).stdout).into_owned()
    }

    /// embedns's default state dir for this user.
    pub fn data_dir(&self) -> PathBuf {
        self.runtime_dir.join("embedns")
    }
}

fn id_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}

/// Removes the lines of `user` from an id-range file.
fn drop_ranges(file: &Path, user: &str) {
    if let Ok(text) = std::fs::read_to_string(file) {
        let kept: String = text
            .lines()
            .filter(|l| l.split(':').next() != Some(user))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(file, kept);
    }
}

impl Drop for RootlessPodman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        for n in self.networks.lock().unwrap().iter() {
            let _ = self.run(&["network", "rm", "-f", n]);
        }
        let _ = self.run(&["system", "reset", "-f"]);
        // Whatever of the user still runs (a resolver, slirp4netns, a pause process).
        let _ = Command::new("pkill")
            .args(["-KILL", "-U", &self.uid.to_string()])
            .status();
        crate::host::kill_resolvers(&self.data_dir());
        let _ = Command::new("userdel").arg(&self.user).status();
        for file in ["/etc/subuid", "/etc/subgid"] {
            drop_ranges(Path::new(file), &self.user);
        }
        let _ = std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(self.tun_mode));
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
