//! Terminal and secret hygiene shared by every front end: step output and
//! names from plans made inert before they reach a terminal (`sanitize`),
//! and secret values masked out of everything plandeck keeps or shows
//! (`mask`).
//!
//! A bottom layer: pure text handling, no I/O, no terminal, no store; the
//! CLI, the TUI and the engine all use it, it uses none of them.

pub mod mask;
pub mod sanitize;
