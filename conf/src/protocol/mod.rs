//! What the binaries say to each other: the plugin's control requests to a resolver and their
//! replies (`control.rs`), the line a daemon writes on its ready pipe (`ready.rs`), what
//! `embedns status --json` prints (`report.rs`), and what a daemon's confinement check
//! prints for the tests (`confinement.rs`).

pub mod confinement;
pub mod control;
pub mod ready;
pub mod report;
