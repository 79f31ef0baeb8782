//! Benchmark of offline symbolization: writes a snapshot whose frames are return addresses spread
//! over the functions of the C library and of this program (both with DWARF on a machine with
//! libc's debug file; this program has line tables in release builds), then times loading it (which
//! must open no binary), naming every frame once (opening the modules, reading DWARF), and naming
//! them again (from the cache).
//!
//! ```sh
//! cargo run --release --example symbolize_bench -- 100000
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::progress::Progress;
use hsnap::{Node, Writer};
use object::{Object, ObjectSymbol, SymbolKind};

/// Return addresses inside the functions of `path`: `count` of them, a few bytes into each
/// function in turn.
fn return_addresses(path: &Path, count: usize) -> (Vec<u8>, Vec<u64>) {
    let data = std::fs::read(path).expect("readable binary");
    let file = object::File::parse(&*data).expect("an object file");
    let build_id = file.build_id().ok().flatten().unwrap_or_default().to_vec();
    let functions: Vec<(u64, u64)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0 && s.size() > 8)
        .map(|s| (s.address(), s.size()))
        .collect();
    let addresses = (0..count)
        .map(|i| {
            let (address, size) = functions[i % functions.len()];
            address + 1 + (i / functions.len()) as u64 % (size - 1)
        })
        .collect();
    (build_id, addresses)
}

fn libc() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with("libc.so")))
        .map(PathBuf::from)
        .expect("libc mapped")
}

fn main() {
    let frames: usize = std::env::args().nth(1).map_or(100_000, |a| a.parse().expect("a frame count"));
    let modules = [libc(), std::env::current_exe().expect("own path")];
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("frames.hsnap");
    let mut buf = vec![0u8; 1 << 20];
    let mut w = Writer::new(Vec::new(), &mut buf).expect("writer");
    let type_name = w.string(b"block").unwrap();
    let type_id = w.type_(type_name).unwrap();
    let mut stacks = Vec::new();
    for (m, module) in modules.iter().enumerate() {
        let (build_id, addresses) = return_addresses(module, frames / modules.len());
        let name = w.string(module.to_str().expect("UTF-8 path").as_bytes()).unwrap();
        w.module(name, &build_id, 0x7f00_0000_0000 + ((m as u64) << 32), &[]).unwrap();
        for offset in addresses {
            let frame = w.frame_in_module(m as u32, offset).unwrap();
            stacks.push(w.stack(0, frame).unwrap());
        }
    }
    for (i, &stack) in stacks.iter().enumerate() {
        let node = Node { identity: i as u64 + 1, address: 0x1000 + 32 * i as u64, size: 32, type_id, stack, flags: 0 };
        w.node(&node).unwrap();
    }
    std::fs::write(&path, w.finish().unwrap()).expect("snapshot written");

    let start = Instant::now();
    let file = SnapshotFile::open(&path).expect("snapshot opens");
    let heap = Heap::load(&file, &Progress::hidden()).expect("snapshot loads");
    let load = start.elapsed().as_secs_f64();
    assert_eq!(heap.symbols().modules_tried(), 0);

    let start = Instant::now();
    for module_first in [1, stacks.len() as u32 / 2 + 1] {
        heap.stack_names(module_first);
    }
    let open = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let named: usize = (1..=stacks.len() as u32).map(|s| heap.stack_names(s).len()).sum();
    let first = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let sites: usize = (1..=stacks.len() as u32).map(|s| heap.site_name(s).len()).sum();
    let cached = start.elapsed().as_secs_f64();
    let unresolved = (1..=stacks.len() as u32).filter(|&s| heap.site_name(s).contains("+0x")).count();
    println!("frames            {}", stacks.len());
    for m in &modules {
        println!("module            {}", m.display());
    }
    println!("load snapshot     {:.3} s (no binary opened)", load);
    println!("open 2 modules    {:.3} s (DWARF and symbol tables)", open);
    println!(
        "name every frame  {:.3} s ({:.1} µs a frame, {named} logical frames)",
        first,
        first * 1e6 / stacks.len() as f64
    );
    println!("sites, cached     {:.3} s ({sites} bytes of names)", cached);
    println!("named from a symbol table only or not at all: {unresolved}");
    for note in heap.symbols().notes() {
        println!("note: {note}");
    }
}
