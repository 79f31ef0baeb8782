//! heapsnap: loads `.hsnap` heap snapshots into a compact graph and finds what leaks and what
//! retains memory.
//!
//! Data flows one way: [`heap`] opens and parses a file into a [`graph::Graph`], [`analysis`] finds
//! leaks and retained sizes, [`report`] turns results into text, Markdown, JSON or Graphviz, and
//! the `heapsnap` binary only parses arguments and prints what these return.

pub mod analysis;
pub mod atomic;
pub mod bench;
pub mod cache;
pub mod capture_bench;
pub mod diff;
pub mod error;
pub mod graph;
pub mod heap;
pub mod import;
pub mod progress;
pub mod record;
pub mod report;
pub mod suppress;
pub mod symbolize;
pub mod synth;

pub use error::{Error, Result};
