//! The engine's public vocabulary, as front ends have always named it: the
//! run vocabulary of `crate::run` (commands, events, states), which lives
//! below the engine so that the store and the front ends share it without
//! importing the engine.

pub use crate::run::*;
