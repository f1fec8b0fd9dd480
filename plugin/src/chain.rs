//! `embedns chain` and `embedns unchain`: embedns's entry in the conf file a primary plugin
//! (flannel, Calico, kindnet, ...) owns and rewrites, as istio-cni's and Cilium's installers
//! do it.
//!
//! The file is the one the runtime uses: containerd's and CRI-O's rule, the lexically first
//! `.conf`, `.conflist` or `.json` of the conf dir, or the one `--file` names. The edit is
//! `embedns_conf::conflist`'s (only the entry's bytes change); the write is a temporary file
//! in the same directory with the file's mode and owner, flushed, then renamed over it.
//!
//! `--watch` keeps the entry: inotify on the conf dir wakes it on every write, rename or
//! removal there; once the directory has been quiet for [`SETTLE`] it chains again, which
//! changes nothing when the entry is there (so its own write ends the exchange). A writer
//! that removes the entry again and again gets it back at most [`BURST`] times per
//! [`BURST_WINDOW`], then once per window, with a warning. SIGTERM or SIGINT ends it (0).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use embedns_conf::conflist::{self, Edited, ENTRY_TYPE};
use embedns_conf::paths::StatePaths;
use embedns_conf::sandbox;
use embedns_conf::user::default_data_dir;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::{json, Map, Value};

/// Where runtimes read CNI network configurations by default.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// The extensions libcni (and so containerd and CRI-O) reads.
const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];
/// The largest conf file read.
const MAX_CONF: u64 = 1 << 20;
/// How long the conf dir stays quiet before `--watch` looks (a primary writing in steps).
pub const SETTLE: Duration = Duration::from_millis(100);
/// Rewrites allowed per [`BURST_WINDOW`] before `--watch` slows down.
pub const BURST: usize = 5;
pub const BURST_WINDOW: Duration = Duration::from_secs(10);

const USAGE: &str =
    "usage: embedns chain [--conf-dir DIR] [--file NAME] [--set KEY=VALUE]... [--watch]\n       \
                     embedns unchain [--conf-dir DIR] [--file NAME] [--data-dir DIR]";

struct Options {
    conf_dir: PathBuf,
    file: Option<String>,
    /// The entry's keys: `type`, the capabilities embedns uses, and `--set`'s.
    entry: Map<String, Value>,
    watch: bool,
    /// `--data-dir`; else the entry's `dataDir`, else the default.
    data_dir: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        conf_dir: DEFAULT_CONF_DIR.into(),
        file: None,
        entry: json!({"type": ENTRY_TYPE,
            "capabilities": {"aliases": true, "dns": true, "cgroupPath": true}})
        .as_object()
        .expect("an object")
        .clone(),
        watch: false,
        data_dir: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--conf-dir" => o.conf_dir = value("--conf-dir")?.into(),
            "--data-dir" => o.data_dir = Some(value("--data-dir")?.into()),
            "--file" => {
                let f = value("--file")?;
                if f.contains('/') || f.starts_with('.') {
                    bail!("--file {f:?}: a file name in the conf dir");
                }
                o.file = Some(f.clone());
            }
            "--set" => {
                let kv = value("--set")?;
                let (k, v) = kv.split_once('=').context("--set needs KEY=VALUE")?;
                if k.is_empty() || k == "type" {
                    bail!("--set {k:?}: not a key embedns's entry can take");
                }
                // A JSON value as it is (true, 30, {"..."}), anything else as a string.
                let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.into()));
                o.entry.insert(k.to_string(), v);
            }
            "--watch" => o.watch = true,
            s => bail!("unknown argument {s:?}"),
        }
    }
    Ok(o)
}

/// Runs `embedns chain` (`unchain` false) or `embedns unchain`; returns the exit code.
pub fn run(unchain: bool, args: &[String]) -> i32 {
    let verb = if unchain { "unchain" } else { "chain" };
    let o = match parse(args) {
        Ok(o) if !(unchain && o.watch) => o,
        Ok(_) => {
            eprintln!("embedns unchain: --watch is chain's\n{USAGE}");
            return 2;
        }
        Err(e) => {
            eprintln!("embedns {verb}: {e:#}\n{USAGE}");
            return 2;
        }
    };
    let done = if o.watch {
        watch(&o)
    } else if unchain {
        unchain_once(&o).map(|said| println!("{said}"))
    } else {
        chain_once(&o).map(|(_, said)| println!("{said}"))
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("embedns {verb}: {e:#}");
            1
        }
    }
}

/// The file the runtime uses: `--file`, else the lexically first conf file.
fn runtime_file(o: &Options) -> anyhow::Result<PathBuf> {
    if let Some(f) = &o.file {
        return Ok(o.conf_dir.join(f));
    }
    let entries = std::fs::read_dir(&o.conf_dir)
        .with_context(|| format!("reading the conf dir {}", o.conf_dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|x| EXTENSIONS.iter().any(|e| x == *e))
        })
        .collect();
    names.sort();
    let first = names.into_iter().next().with_context(|| {
        format!(
            "no network in {}: no .conf, .conflist or .json file (is the primary plugin installed?)",
            o.conf_dir.display()
        )
    })?;
    Ok(o.conf_dir.join(first))
}

/// Chains once: whether the file changed, and what was done, for a person.
fn chain_once(o: &Options) -> anyhow::Result<(bool, String)> {
    let path = runtime_file(o)?;
    let text = read(&path)?;
    let name = file_name(&path);
    let edited = conflist::chain(&text, &name, &o.entry)
        .with_context(|| format!("{} cannot take embedns", path.display()))?;
    match edited {
        Edited::Unchanged => Ok((
            false,
            format!("{}: embedns already chained", path.display()),
        )),
        Edited::List(new) if path.extension().is_some_and(|x| x == "conflist") => {
            write_like(&path, &path, &new)?;
            Ok((true, format!("{}: embedns chained", path.display())))
        }
        Edited::List(new) => {
            // A single plugin's file becomes a list; the `.conf` goes, or it would come first.
            let list = path.with_extension("conflist");
            write_like(&path, &list, &new)?;
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            Ok((
                true,
                format!(
                    "{}: embedns chained into a list made from {name}",
                    list.display()
                ),
            ))
        }
        Edited::Single { .. } => unreachable!("chain never gives a single plugin back"),
    }
}

/// Unchains once: what was done, and how many containers still need the binary.
fn unchain_once(o: &Options) -> anyhow::Result<String> {
    let path = runtime_file(o)?;
    let text = read(&path)?;
    let edited =
        conflist::unchain(&text).with_context(|| format!("{} left as it is", path.display()))?;
    // The state dir the entry named, unless one was given.
    let data_dir = o.data_dir.clone().unwrap_or_else(|| {
        conflist::entry_setting(&text, "dataDir")
            .and_then(|v| v.as_str().map(PathBuf::from))
            .unwrap_or_else(default_data_dir)
    });
    let said = match edited {
        Edited::Unchanged => format!("{}: embedns was not chained", path.display()),
        Edited::List(new) => {
            write_like(&path, &path, &new)?;
            format!("{}: embedns unchained", path.display())
        }
        Edited::Single { file, text } => {
            if file.contains('/') || file.starts_with('.') {
                bail!("{}: {file:?} is not a file name", path.display());
            }
            let single = o.conf_dir.join(&file);
            write_like(&path, &single, &text)?;
            if single != path {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            format!("{}: embedns unchained, {file} put back", path.display())
        }
    };
    let left = sandbox::list(&StatePaths::new(&data_dir))
        .map(|l| l.len())
        .unwrap_or(0);
    Ok(format!(
        "{said}\n{left} container(s) still have an embedns resolver ({}); keep the embedns \
         binaries installed until `embedns status --data-dir {}` lists none",
        data_dir.display(),
        data_dir.display()
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read(path: &Path) -> anyhow::Result<String> {
    embedns_conf::fsutil::read_bounded(path, MAX_CONF)
        .with_context(|| format!("reading {}", path.display()))
}

/// Writes `to` with `text` and the mode and owner of `like`: a temporary file of the same
/// directory (a name no runtime reads), flushed, renamed over `to`.
fn write_like(like: &Path, to: &Path, text: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(like).with_context(|| format!("reading {}", like.display()))?;
    let dir = to.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".embedns-chain-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    let f = tmp.as_file();
    f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .and_then(|()| std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid())))
        .and_then(|()| tmp.write_all(text.as_bytes()))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(to)
        .with_context(|| format!("renaming over {}", to.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `chain --watch`: chains, then again after every change of the conf dir, until a signal.
fn watch(o: &Options) -> anyhow::Result<()> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    let events = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB;
    inotify
        .add_watch(&o.conf_dir, events)
        .with_context(|| format!("watching {}", o.conf_dir.display()))?;
    let mut rewrites: VecDeque<Instant> = VecDeque::new();
    let mut due = Some(Instant::now());
    loop {
        let now = Instant::now();
        if due.is_some_and(|t| t <= now) {
            due = None;
            rewrites.retain(|t| now.duration_since(*t) < BURST_WINDOW);
            if rewrites.len() >= BURST {
                eprintln!(
                    "embedns chain: the entry was removed {BURST} times in {}s: another writer keeps removing it; trying again in {}s",
                    BURST_WINDOW.as_secs(),
                    BURST_WINDOW.as_secs()
                );
                due = Some(rewrites[0] + BURST_WINDOW);
            } else {
                match chain_once(o) {
                    Ok((changed, said)) => {
                        eprintln!("embedns chain: {said}");
                        if changed {
                            rewrites.push_back(now);
                        }
                    }
                    // A file written in steps, or a primary that has not written one yet:
                    // the next change wakes this again.
                    Err(e) => eprintln!("embedns chain: {e:#}"),
                }
            }
        }
        let timeout = match due {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(60),
        };
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
        ];
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the conf dir"),
        }
        if let Ok(Some(_)) = signals.read_signal() {
            return Ok(());
        }
        if inotify.read_events().is_ok_and(|ev| !ev.is_empty()) {
            // Settle: wait for the writer to finish before reading.
            due = Some(Instant::now() + SETTLE).max(due.filter(|d| *d > Instant::now()));
        }
    }
}
