//! Runs binaries from a world's host netns, from one thread that entered it once: no
//! `ip netns exec` (a fork, a mount namespace, a remount of /sys) in the way of what is run.
//! The harness's direct plugin calls and the bench's timed ADD/DEL both go through it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What one run gave.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    /// From the fork to the exit.
    pub took: Duration,
    pub stdout: String,
    pub stderr: String,
}

/// A run to make: binary, environment, stdin, and where the result goes.
type Job = (PathBuf, Vec<(String, String)>, String, mpsc::Sender<Ran>);

/// A thread in one netns that runs what it is given, one at a time.
pub struct HostRunner {
    tx: mpsc::Sender<Job>,
}

impl HostRunner {
    /// A runner in the netns at `netns` (a `/run/netns/NAME` path).
    pub fn new(netns: &Path) -> HostRunner {
        let (tx, rx) = mpsc::channel::<Job>();
        let netns = netns.to_path_buf();
        std::thread::spawn(move || {
            let f = File::open(&netns).expect("the host netns");
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering the host netns");
            for (bin, env, stdin, reply) in rx {
                let _ = reply.send(run_here(&bin, &env, &stdin));
            }
        });
        HostRunner { tx }
    }

    /// Runs `bin` with a clean environment (a short PATH, then `env`) and `stdin`.
    pub fn run(&self, bin: &Path, env: &[(&str, &str)], stdin: &str) -> Ran {
        let (reply, rx) = mpsc::channel();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.tx
            .send((bin.to_path_buf(), env, stdin.to_string(), reply))
            .expect("the runner thread");
        rx.recv().expect("the runner thread")
    }
}

fn run_here(bin: &Path, env: &[(String, String)], stdin: &str) -> Ran {
    let t = Instant::now();
    let child = Command::new(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                success: false,
                took: t.elapsed(),
                stdout: String::new(),
                stderr: format!("running {}: {e}", bin.display()),
            }
        }
    };
    let _ = child
        .stdin
        .take()
        .map(|mut s| s.write_all(stdin.as_bytes()));
    let out = child.wait_with_output().expect("waiting for the child");
    Ran {
        success: out.status.success(),
        took: t.elapsed(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
