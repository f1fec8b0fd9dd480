//! What the binaries say to each other: the plugin's control requests to a resolver and their
//! replies (`control.rs`), the line a daemon writes on its ready pipe (`ready.rs`), and what
//! `embedns status --json` prints (`report.rs`).

pub mod control;
pub mod ready;
pub mod report;
