//! embedns: Docker's embedded DNS for CNI networks, as a chained CNI plugin.
//!
//! It runs after an IP-assigning plugin (e.g. `bridge` + `host-local`) and takes the
//! container's addresses from `prevResult`. ADD records the container's name (CNI_ARGS
//! `K8S_POD_NAME`, `runtimeConfig.name` or CNI_ARGS `name`), aliases (`aliases` capability,
//! map or list, and the conf's static list) and links (`runtimeConfig.links`, CNI_ARGS
//! `EMBEDNS_LINKS`) in the record store, writes the container's resolv.conf (`127.0.0.11` only),
//! and starts `embedns-resolverd` in the container's netns behind `127.0.0.11:53`, returning
//! once it answers. DEL undoes all of it and succeeds when there is nothing left to undo.
//! CHECK, VERSION, GC and STATUS follow CNI 1.1.
//!
//! Limits: one resolver per container (per CNI_CONTAINERID), shared by all its networks; the
//! redirect needs `iptables-restore` (nft or legacy) on PATH or in /usr/sbin.

mod add;
mod catch6;
mod cgroup;
mod chain;
mod check;
mod child;
mod container_names;
mod del;
mod env;
mod error;
mod files;
mod gc;
mod logging;
mod netns;
mod probe;
mod processes;
mod redirect;
mod redirect_remover;
mod release_gone;
mod resolver;
mod status;
mod sync_process;

use std::io::{Read, Write};
use std::process::ExitCode;

use embedns_conf::cni::{self, CniError};
use embedns_conf::netconf::NetConf;
use serde_json::Value;

use crate::env::CniEnv;

fn main() -> ExitCode {
    let Ok(command) = std::env::var("CNI_COMMAND") else {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().map(String::as_str) == Some("status") {
            return ExitCode::from(status::run(&args[1..]) as u8);
        }
        if let Some(verb @ ("chain" | "unchain")) = args.first().map(String::as_str) {
            return ExitCode::from(chain::run(verb == "unchain", &args[1..]) as u8);
        }
        if args.first().map(String::as_str) == Some(release_gone::SUBCOMMAND) {
            return ExitCode::from(release_gone::run(&args[1..]) as u8);
        }
        if args.first().map(String::as_str) == Some(redirect_remover::SUBCOMMAND) {
            return ExitCode::from(redirect_remover::run(&args[1..]) as u8);
        }
        return about(args.first().map(String::as_str));
    };
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return fail(
            &requested_version(&stdin),
            &anyhow::Error::from(e).context("reading stdin"),
        );
    }
    let version = requested_version(&stdin);
    match run(&command, &stdin) {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut stdout, &out);
            let _ = stdout.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&version, &e),
    }
}

/// Runs one CNI verb; `Some` is the JSON to print on stdout.
fn run(command: &str, stdin: &[u8]) -> anyhow::Result<Option<Value>> {
    if command == "VERSION" {
        return Ok(Some(version_result(&requested_version(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    cni::check_version(&conf.cni_version, command)?;
    logging::init(&conf);
    let env = CniEnv::from_process(command)?;
    tracing::debug!(command, network = %conf.name, container = %env.container_id, "invoked");
    for key in &conf.unknown_keys {
        tracing::warn!(network = %conf.name, key, "a key of the network configuration embedns does not know (a typo?): ignored");
    }
    match command {
        "ADD" => add::add(&env, &conf).map(Some),
        "DEL" => del::del(&env, &conf).map(|()| None),
        "CHECK" => check::check(&env, &conf).map(|()| None),
        "GC" => gc::gc(&conf).map(|()| None),
        "STATUS" => gc::status(&conf).map(|()| None),
        other => Err(error::PluginError::new(
            4,
            format!(
                "unknown CNI_COMMAND {other:?} (expected ADD, DEL, CHECK, GC, STATUS or VERSION)"
            ),
        )
        .into()),
    }
}

/// The cniVersion stdin asks for, or the newest we speak when it names none we know.
fn requested_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| cni::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| latest_version().to_string())
}

fn latest_version() -> &'static str {
    cni::SUPPORTED_VERSIONS[cni::SUPPORTED_VERSIONS.len() - 1]
}

fn version_result(requested: &str) -> Value {
    serde_json::json!({
        "cniVersion": requested,
        "supportedVersions": cni::SUPPORTED_VERSIONS,
    })
}

/// Prints the spec's error object on stdout and exits non-zero.
fn fail(version: &str, e: &anyhow::Error) -> ExitCode {
    let (code, msg) = error::classify(e);
    let details = error::chain_text(e);
    tracing::error!(code, "{details}");
    let err = CniError {
        cni_version: version.to_string(),
        code,
        details: if details == msg {
            String::new()
        } else {
            details
        },
        msg,
    };
    let _ = serde_json::to_writer(std::io::stdout().lock(), &err);
    println!();
    ExitCode::FAILURE
}

/// Run outside a runtime: `--help` or `version`, like the reference plugins' About line.
fn about(arg: Option<&str>) -> ExitCode {
    let about = format!(
        "CNI embedns plugin v{}: Docker's embedded DNS (127.0.0.11) for CNI networks\n\
         CNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        cni::SUPPORTED_VERSIONS.join(", ")
    );
    match arg {
        Some("version") | Some("--version") => println!("embedns {}", env!("CARGO_PKG_VERSION")),
        Some("--help") | Some("-h") | Some("help") => println!(
            "{about}\n\nUsage: add {{\"type\": \"embedns\", \"capabilities\": {{\"aliases\": true, \"dns\": true}}}}\n\
             to a conflist after an IP-assigning plugin; the runtime runs it with CNI_COMMAND set.\n\
             See docs/configuration.md for every configuration key.\n\n\
             embedns status [--json] [--data-dir DIR] [CONTAINER]: networks, containers, resolvers\n\
             embedns chain [--conf-dir DIR] [--file NAME] [--set KEY=VALUE]... [--watch]: add embedns to\n\
             \x20 the conf file the runtime uses (another plugin's), and keep it there with --watch\n\
             embedns unchain [--conf-dir DIR] [--file NAME] [--data-dir DIR]: take it out again"
        ),
        None => eprintln!("{about}"),
        Some(other) => {
            eprintln!("embedns: unknown argument {other:?}; try --help");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
