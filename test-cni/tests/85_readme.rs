//! The shell blocks of every page (README.md, then docs/*.md and bench/README.md in name
//! order), run as written: extracted at test time, so they cannot drift from what a user
//! types. The skipped blocks are printed with their reasons. A block preceded by
//! `<!-- readme-test: skip (REASON) -->` is not run (the reason is required). The blocks run
//! in order in one `bash -euo pipefail` from the repository root, inside a private mount and
//! network namespace where tmpfs covers every system directory they write (/opt/cni/bin, the
//! examples dir, /etc/cni/net.d, /etc/netns, /run/netns, /run/embedns, podman's and CNI's
//! state), so the machine is left as it was and two runs cannot collide.

use std::process::Command;

use test_cni::bins;

/// The README's `sh` blocks: (line of the fence, text, skip reason).
fn blocks(readme: &str) -> Vec<(usize, String, Option<String>)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = readme.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```sh" {
            let skip = i
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix("<!-- readme-test: skip"))
                .map(|r| r.trim_end_matches("-->").trim().to_string());
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "```" {
                end += 1;
            }
            out.push((i + 1, lines[start..end].join("\n"), skip));
            i = end;
        }
        i += 1;
    }
    out
}

/// System directories the blocks write, each covered by a tmpfs in the private namespace.
const PRIVATE: &[&str] = &[
    "/opt/cni/bin",
    "/usr/local/share/embedns",
    "/etc/cni/net.d",
    "/etc/netns",
    "/run/netns",
    "/run/embedns",
    "/var/lib/cni",
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
];

/// The pages whose blocks run: README.md first, then docs/ and bench/README.md.
fn pages(root: &std::path::Path) -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    docs.sort();
    let mut all = vec!["README.md".to_string()];
    all.extend(docs);
    all.push("bench/README.md".into());
    all
}

#[test]
fn every_readme_shell_block_runs_as_written() {
    test_cni::require_root("every_readme_shell_block_runs_as_written");
    let root = bins::workspace();
    let mut all = Vec::new();
    for page in pages(&root) {
        let text = std::fs::read_to_string(root.join(&page)).unwrap();
        all.extend(
            blocks(&text)
                .into_iter()
                .map(|(line, text, skip)| (page.clone(), line, text, skip)),
        );
    }
    assert!(
        all.len() >= 10,
        "the pages' sh blocks were found: {}",
        all.len()
    );
    let mut script = String::from("set -euo pipefail\n");
    for d in PRIVATE {
        script.push_str(&format!(
            "mkdir -p {d} && mount -t tmpfs embedns-readme {d}\n"
        ));
    }
    // podman's configuration, which a block changes: a copy on a tmpfs, bound over it.
    script.push_str(
        "copy=/var/lib/cni/.etc-containers && mkdir -p $copy && \
         cp -a /etc/containers/. $copy/ && mount --bind $copy /etc/containers\n",
    );
    let mut ran = 0;
    for (page, line, text, skip) in &all {
        match skip {
            Some(reason) => {
                assert!(
                    reason.starts_with('(') && reason.len() > 2,
                    "{page} line {line}: a skipped block says why"
                );
                eprintln!("skipped: {page} line {line} {reason}");
            }
            None => {
                script.push_str(&format!("echo '>>> {page} line {line}'\n{text}\n"));
                ran += 1;
            }
        }
    }
    assert!(ran >= 3, "{ran} blocks run");
    // What the podman block's comments promise.
    script.push_str("test -f /etc/cni/net.d/mynet.conflist && echo 'podman made a CNI network'\n");
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "bash", "-c"])
        .arg(&script)
        .current_dir(&root)
        // Cargo and Go must not try the network (there is none in the namespace).
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = |t: &str| {
        t.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.status.success(),
        "a README block failed ({}):\n{}\n--- stderr ---\n{}",
        out.status,
        tail(&stdout),
        tail(&stderr)
    );
    // The cnitool block's two lookups were answered from the network (www, then the link db).
    let answers = stdout
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tIN\tA\t10.89.42."))
        .count();
    assert_eq!(answers, 2, "dig's answers in:\n{stdout}");
    assert!(stdout.contains("web"), "embedns status web:\n{stdout}");
    assert!(stdout.contains("podman made a CNI network"), "{stdout}");
}
