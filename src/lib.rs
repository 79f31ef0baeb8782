//! heapsnap: loads `.hsnap` heap snapshots into a compact graph and finds what leaks and what
//! retains memory.

pub mod analysis;
pub mod graph;
