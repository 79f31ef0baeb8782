//! The analysis cache: results saved beside the snapshot (`SNAP.hscache`), so a second command on
//! the same big snapshot does not build the dominator tree again.
//!
//! The cache is keyed by the snapshot's checksum (a digest of every chunk's CRC) and by this
//! program's version; a cache that does not match, does not decode, or does not fit the graph is
//! ignored and rewritten. Writing it is best effort: a read-only directory only costs the speed-up.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::analysis::Analysis;
use crate::graph::Graph;

const MAGIC: &[u8; 8] = b"HSCACHE1";

#[derive(bincode::Encode, bincode::Decode)]
struct Cached {
    program: String,
    checksum: u64,
    nodes: u64,
    analysis: Analysis,
}

/// Fixed-width integers decode fastest. The limit bounds what a damaged length field can make the
/// decoder reserve; a real cache of a 2^32-node snapshot stays well under it.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_fixed_int_encoding().with_limit::<{ 1 << 36 }>()
}

pub fn path_for(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".hscache");
    PathBuf::from(name)
}

/// The cached analysis of a snapshot with this checksum, if there is a valid one.
pub fn load(snapshot: &Path, checksum: u64, graph: &Graph) -> Option<Analysis> {
    let file = File::open(path_for(snapshot)).ok()?;
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 8];
    std::io::Read::read_exact(&mut reader, &mut magic).ok()?;
    if &magic != MAGIC {
        return None;
    }
    let cached: Cached = bincode::decode_from_std_read(&mut reader, config()).ok()?;
    let fits = cached.program == env!("CARGO_PKG_VERSION")
        && cached.checksum == checksum
        && cached.nodes == graph.node_count() as u64
        && cached.analysis.fits(graph);
    fits.then_some(cached.analysis)
}

/// Saves an analysis beside the snapshot: to a temporary file, renamed when complete.
pub fn store(snapshot: &Path, checksum: u64, graph: &Graph, analysis: &Analysis) -> std::io::Result<()> {
    let target = path_for(snapshot);
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let mut out = BufWriter::new(temp);
    out.write_all(MAGIC)?;
    let cached = Cached {
        program: env!("CARGO_PKG_VERSION").to_string(),
        checksum,
        nodes: graph.node_count() as u64,
        analysis: analysis.clone(),
    };
    bincode::encode_into_std_write(&cached, &mut out, config()).map_err(std::io::Error::other)?;
    let temp = out.into_inner().map_err(|e| e.into_error())?;
    temp.persist(&target)?;
    Ok(())
}

/// Snapshots with fewer nodes are analysed afresh each time: it is faster than reading a cache,
/// and it keeps small snapshots (fixtures, examples) from growing files beside them.
pub const MIN_NODES: usize = 1_000_000;

/// The analysis of `heap`: from the cache when `use_cache` and a valid one exists, else computed
/// (and then cached when the snapshot has at least `min_nodes` nodes).
pub fn analyze(
    heap: &crate::heap::Heap<'_>,
    progress: &crate::progress::Progress,
    use_cache: bool,
    min_nodes: usize,
) -> Analysis {
    let checksum = heap.snap.checksum();
    let use_cache = use_cache && heap.graph.node_count() >= min_nodes;
    if use_cache {
        if let Some(analysis) = load(&heap.path, checksum, &heap.graph) {
            return analysis;
        }
    }
    let analysis = Analysis::of(&heap.graph, progress);
    if use_cache {
        // Best effort: without a cache the next command is only slower.
        let _ = store(&heap.path, checksum, &heap.graph, &analysis);
    }
    analysis
}
