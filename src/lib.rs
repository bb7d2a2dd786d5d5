//! plandeck: review, approve, run and steer plans — DAGs of shell-command
//! steps — from the terminal, with every run recorded in SQLite.
//!
//! Layers point one way: `cli` → `tui` → `engine` → `plan`/`dag`; `store` → `plan`.
//! The TUI reaches the store and the engine only through `tui::backend::Backend`.
//! `plan`, `dag` and `remediation` are pure.

pub mod cli;
pub mod dag;
pub mod engine;
pub mod faults;
pub mod plan;
pub mod remediation;
pub mod store;
pub mod tui;
