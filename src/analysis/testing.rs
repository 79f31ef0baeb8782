//! Helpers for the analyses' tests: random graphs for the oracle tests, a small stack for the
//! long-chain ones.

use rand::Rng;
use rand_pcg::Pcg64Mcg;

/// A random graph as (node count, edges), with self loops, duplicate edges and chains (so that
/// cycles and dominator chains are long), from sparse to dense.
pub fn random_edges(rng: &mut Pcg64Mcg) -> (usize, Vec<(u32, u32)>) {
    let n = rng.random_range(1..60usize);
    let degree = [0.3, 0.8, 1.2, 2.0, 4.0][rng.random_range(0..5)];
    let m = (n as f64 * degree * rng.random_range(0.5..1.5)) as usize;
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(m);
    for _ in 0..m {
        let from = rng.random_range(0..n as u32);
        let edge = match rng.random_range(0..10) {
            0 => (from, from),
            1 if !edges.is_empty() => edges[rng.random_range(0..edges.len())],
            2..=4 => (from, (from + 1) % n as u32),
            _ => (from, rng.random_range(0..n as u32)),
        };
        edges.push(edge);
    }
    (n, edges)
}

/// Nodes in the long-chain tests: far more than a recursive traversal survives on a small stack.
pub const BIG: u32 = 2_000_000;

/// Runs `f` on a thread with a 64 KiB stack.
pub fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(64 * 1024).spawn(f).unwrap().join().unwrap();
}
