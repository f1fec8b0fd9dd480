//! Phase 3, ADD/DEL latency: cnitool with the bare chain, with dnsname and with embedns,
//! taking turns run by run, each run a new container in a new netns; then each DNS plugin
//! alone, given the same prevResult.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_cni::World;

use crate::report::{Goal, Row};
use crate::settings::Settings;
use crate::{peers, procs};

/// Phase 3.
pub fn add_del(w: &World, s: &Settings) -> (Vec<Row>, Value) {
    let nets = peers::chains(w);
    let c = w.container("addel"); // for the prevResult of the plugins alone
    let mut d = serde_json::Map::new();
    let mut medians = std::collections::BTreeMap::new();
    // The chains take turns, run by run, so that a drift of the machine (the kernel's RCU
    // work, another tenant) weighs on each the same; the order rotates, so no chain always
    // follows the same one. Each run is a new container in a new netns, deleted after its DEL
    // as a runtime does (outside the timing; the kernel destroys it while the next runs).
    let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); nets.len()];
    // Four times the other phases' runs: the DEL figures sit on a noisy ~40 ms (the kernel
    // destroying the previous run's netns meanwhile), and the paired difference needs many.
    for i in 0..4 * s.runs {
        let args = format!("IgnoreUnknown=1;K8S_POD_NAME=t{i}");
        let mut turn: Vec<_> = nets.iter().zip(&mut times).collect();
        turn.rotate_left(i % nets.len());
        for ((label, net), (adds, dels)) in turn {
            let c = w.container(&format!("addel{i}"));
            let t = Instant::now();
            let out = w.cnitool("add", net, &c, &[("CNI_ARGS", &args)]);
            adds.push(t.elapsed());
            assert!(
                out.status.success(),
                "{label} add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let t = Instant::now();
            let out = w.cnitool("del", net, &c, &[("CNI_ARGS", &args)]);
            dels.push(t.elapsed());
            assert!(out.status.success(), "{label} del");
            w.remove_netns(&c);
        }
    }
    for ((label, _), (adds, dels)) in nets.iter().zip(&times) {
        let (a, dl) = (procs::Stats::of(adds), procs::Stats::of(dels));
        println!("  cnitool, {label:<28} ADD median {:>6.1} ms p95 {:>6.1} | DEL median {:>6.1} ms p95 {:>6.1}", a.median_ms, a.p95_ms, dl.median_ms, dl.p95_ms);
        medians.insert(label.to_string(), (a.median_ms, dl.median_ms));
        d.insert(
            format!("cnitool {label}"),
            json!({"add": a.json(), "del": dl.json()}),
        );
    }
    procs::stop_dnsname("withdnsname");
    // Each DNS plugin alone, given the same prevResult, run from the host netns directly.
    let prev = {
        let out = w.cnitool("add", "plain", &c, &[]);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let _ = w.cnitool("del", "plain", &c, &[]);
        v
    };
    let alone = procs::plugin_alone(w, &prev, s.runs);
    for (label, (a, dl)) in &alone {
        println!("  alone, {label:<30} ADD median {:>6.2} ms p95 {:>6.2} | DEL median {:>6.2} ms p95 {:>6.2}", a.median_ms, a.p95_ms, dl.median_ms, dl.p95_ms);
        d.insert(
            format!("alone {label}"),
            json!({"add": a.json(), "del": dl.json()}),
        );
    }
    let ours = &alone["embedns"];
    let dnsname = alone.get("dnsname");
    let rows = vec![
        Row::value(
            "embedns alone: ADD median (ms), until it answers",
            ours.0.median_ms,
            Goal::AtMost(10.0),
        ),
        Row::value(
            "embedns alone: DEL median (ms)",
            ours.1.median_ms,
            Goal::AtMost(10.0),
        ),
        Row::ratio(
            "embedns alone ADD vs dnsname alone ADD",
            ours.0.median_ms,
            dnsname.map(|x| x.0.median_ms),
            Goal::None,
        ),
        Row::ratio(
            "chain+embedns ADD vs bare chain ADD",
            medians.get("+ embedns").map(|x| x.0).unwrap_or(0.0),
            medians.get("bridge + host-local").map(|x| x.0),
            Goal::None,
        ),
        // What a chained DEL with embedns costs beyond one with dnsname (the same bare chain
        // under both): the median of the runs' paired differences, which a drift of the
        // machine between runs does not move.
        Row::value(
            "chained DEL: ms embedns adds beyond dnsname (median of pairs)",
            paired_del_difference(&nets, &times, "+ embedns", "+ dnsname").unwrap_or(f64::NAN),
            Goal::AtMost(1.0),
        ),
    ];
    (rows, Value::Object(d))
}

/// The median over runs of (DEL of chain `a`) - (DEL of chain `b`) in the same run, in ms.
fn paired_del_difference(
    nets: &[(&'static str, String)],
    times: &[(Vec<Duration>, Vec<Duration>)],
    a: &str,
    b: &str,
) -> Option<f64> {
    let dels = |label: &str| {
        let i = nets.iter().position(|(l, _)| *l == label)?;
        Some(&times[i].1)
    };
    let (a, b) = (dels(a)?, dels(b)?);
    let mut d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.as_secs_f64() * 1e3 - y.as_secs_f64() * 1e3)
        .collect();
    d.sort_by(f64::total_cmp);
    d.get(d.len() / 2).copied()
}
