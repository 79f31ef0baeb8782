//! Analyses over a loaded heap graph.

pub mod dominators;
pub mod scc;
