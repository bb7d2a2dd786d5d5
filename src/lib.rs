//! plandeck: review, approve, run and steer plans — DAGs of shell-command
//! steps — from the terminal, with every run recorded in SQLite.
//!
//! Layers point one way: `cli` → `tui` → `engine` → `dag` → `plan` → `graph`;
//! `store` → `plan`; the engine, the store and the front ends all use the
//! run vocabulary in `run`, which imports none of them (`store` never
//! imports `engine`).
//! The TUI reaches the store and the engine only through `tui::backend::Backend`.
//! `graph`, `plan`, `dag` and `remediation` are pure.

pub mod cli;
pub mod control;
pub mod dag;
pub mod engine;
pub mod faults;
pub mod graph;
pub mod hygiene;
pub mod plan;
pub mod remediation;
pub mod run;
pub mod store;
pub mod tui;
