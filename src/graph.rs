//! The heap as a compact graph.

pub mod csr;

pub use csr::{Adjacency, Csr};
