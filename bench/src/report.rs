//! The bench's table: each figure, the peer it is compared with, the ratio, the goal, and
//! PASS/MISS.

use serde_json::{json, Value};

/// What a row must meet to PASS.
#[derive(Clone, Copy)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

/// One line of the results table.
pub struct Row {
    pub figure: String,
    pub ours: f64,
    pub peer: Option<f64>,
    /// The value the goal applies to: the ratio when there is a peer, else ours.
    pub judged: Option<f64>,
    pub goal: Goal,
}

impl Row {
    /// ours / peer, judged against the goal.
    pub fn ratio(figure: &str, ours: f64, peer: Option<f64>, goal: Goal) -> Row {
        let judged = peer.filter(|p| *p > 0.0).map(|p| ours / p);
        Row {
            figure: figure.into(),
            ours,
            peer,
            judged,
            goal,
        }
    }

    /// A figure of ours judged by itself.
    pub fn value(figure: &str, ours: f64, goal: Goal) -> Row {
        Row {
            figure: figure.into(),
            ours,
            peer: None,
            judged: Some(ours),
            goal,
        }
    }

    /// PASS, MISS, or `-` when there is no goal or nothing to judge.
    pub fn verdict(&self) -> &'static str {
        match (self.goal, self.judged) {
            (Goal::None, _) => "-",
            (_, None) => "n/a",
            (Goal::AtLeast(g), Some(v)) if v >= g => "PASS",
            (Goal::AtMost(g), Some(v)) if v <= g => "PASS",
            _ => "MISS",
        }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::AtLeast(g) => format!(">= {g}"),
            Goal::AtMost(g) => format!("<= {g}"),
            Goal::None => "-".into(),
        }
    }

    /// As JSON for the results file.
    pub fn json(&self) -> Value {
        json!({
            "figure": self.figure, "embedns": self.ours, "peer": self.peer,
            "ratioOrValue": self.judged, "goal": self.goal_text(), "verdict": self.verdict(),
        })
    }
}

/// Prints the table of rows.
pub fn print_table(rows: &[Row]) {
    println!(
        "\n{:<50} {:>12} {:>12} {:>9} {:>9} {:>6}",
        "figure", "embedns", "peer", "ratio", "goal", ""
    );
    println!("{}", "-".repeat(103));
    for r in rows {
        let peer = r
            .peer
            .map(|p| format!("{p:.1}"))
            .unwrap_or_else(|| "-".into());
        let ratio = match (r.peer, r.judged) {
            (Some(_), Some(x)) => format!("{x:.2}"),
            _ => "-".into(),
        };
        println!(
            "{:<50} {:>12.1} {:>12} {:>9} {:>9} {:>6}",
            r.figure,
            r.ours,
            peer,
            ratio,
            r.goal_text(),
            r.verdict()
        );
    }
}

/// A line of the run's progress.
pub fn progress(msg: &str) {
    println!("[bench] {msg}");
}
