//! Allocator plumbing: the frames between the code that asked for memory and the allocator. A
//! block's allocation site is the innermost frame of its stack that is not plumbing, so that a
//! `strdup` called from `main` is `main`'s leak, and every leak does not share the site `malloc`.
//!
//! A logical frame is plumbing when
//! 1. it is in the recorder itself: a module whose file name is `libheapsnap_recorder.so`, or a
//!    function of the `heapsnap_recorder` crate linked into a Rust program (its `Recorder` front;
//!    the frame that records is never a return address, but a function of the crate that
//!    allocates on the program's behalf would be), or
//! 2. its function is a C allocation function: the malloc family (`malloc`, `calloc`, `realloc`,
//!    `reallocarray`, `free`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`)
//!    or a libc function that returns memory it allocated for its caller (`strdup`, `strndup`,
//!    `wcsdup`, `asprintf`, `vasprintf`, `getline`, `getdelim`), also under glibc's internal names
//!    (`__libc_malloc`, `__strdup`, `__GI___strdup`: leading underscores, `GI_` and `libc_` are
//!    ignored), or
//! 3. its function is C++'s `operator new` or `operator new[]` (any overload), or a function of a
//!    language's standard library, which allocates on behalf of its caller: a name that starts,
//!    after an optional `<`, with `std::`, `__gnu_cxx::`, `__cxxabiv1::` (C++'s `std::vector`,
//!    `std::allocator`, `std::make_shared`; Rust's `std`), `alloc::` or `core::` (Rust's `Box`,
//!    `Vec`, `String`, `Rc`, the global allocator's `alloc::alloc`), or `__rust_`, `__rdl_`, `__rg_`
//!    (Rust's allocator shims).
//!
//! 4. its source file is in a standard library's sources: under `/rustc/HASH/library/` (Rust's
//!    `core`, `alloc` and `std`, whose inlined frames DWARF names without their path, such as
//!    `black_box<u64>`) or in an `include/c++/` directory (libstdc++'s and libc++'s headers).
//!
//! Frames without a function name are not plumbing unless they are in the recorder. Only frames
//! recorded as return addresses and symbolized here are judged: a frame its producer wrote already
//! named (`FRMS` form 2: Python, V8) is never plumbing, since a Python function may be `getline`.

/// The C allocation functions, without leading underscores or `libc_`.
const C_ALLOCATORS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "strdup",
    "strndup",
    "wcsdup",
    "asprintf",
    "vasprintf",
    "getline",
    "getdelim",
];

/// Standard-library namespaces, as a qualified name starts.
const LIBRARY_PATHS: &[&str] = &["std::", "__gnu_cxx::", "__cxxabiv1::", "alloc::", "core::"];

/// Rust's allocator shims, by symbol prefix.
const RUST_SHIMS: &[&str] = &["__rust_", "__rdl_", "__rg_"];

/// The recorder crate's functions, as a qualified name starts, when a Rust program links it.
const RECORDER_CRATE: &str = "heapsnap_recorder::";

/// The recorder's file name.
pub const RECORDER: &str = crate::record::LIBRARY;

/// Whether a module path is the recorder's.
pub fn is_recorder(module_path: &str) -> bool {
    module_path.rsplit('/').next() == Some(RECORDER)
}

/// Whether a source file is in a standard library's sources.
pub fn is_library_file(file: &str) -> bool {
    let rust = file.starts_with("/rustc/") && file.contains("/library/");
    rust || file.contains("/include/c++/")
}

/// Whether a function (demangled, with or without its parameter list) is allocator plumbing.
pub fn is_plumbing_function(function: &str) -> bool {
    let name = function.trim();
    if RUST_SHIMS.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    let qualified = name.strip_prefix('<').unwrap_or(name);
    if LIBRARY_PATHS.iter().any(|p| qualified.starts_with(p)) || qualified.starts_with(RECORDER_CRATE) {
        return true;
    }
    if let Some(rest) = name.strip_prefix("operator new") {
        return rest.is_empty() || rest.starts_with('(') || rest.starts_with("[]");
    }
    C_ALLOCATORS.contains(&c_base_name(name))
}

/// A C function's name without glibc's internal decorations: leading underscores, `GI_` (its
/// hidden aliases, `__GI___strdup`) and `libc_` (`__libc_malloc`).
fn c_base_name(name: &str) -> &str {
    let mut bare = name.split('(').next().unwrap_or_default().trim_end();
    loop {
        let trimmed = bare.trim_start_matches('_');
        let trimmed = trimmed.strip_prefix("GI_").or_else(|| trimmed.strip_prefix("libc_")).unwrap_or(trimmed);
        if trimmed == bare {
            return bare;
        }
        bare = trimmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_functions_are_plumbing() {
        for f in [
            "malloc",
            "__libc_malloc",
            "__strdup",
            "__GI___strdup",
            "__GI___libc_malloc",
            "strdup",
            "posix_memalign",
            "operator new(unsigned long)",
            "operator new[](unsigned long)",
            "operator new(unsigned long, std::nothrow_t const&)",
            "operator new",
            "std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)",
            "__gnu_cxx::new_allocator<int>::allocate(unsigned long, void const*)",
            "alloc::alloc::alloc",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "__rust_alloc",
            "__rdl_alloc",
            "<heapsnap_recorder::global::Recorder as core::alloc::global::GlobalAlloc>::realloc",
            "heapsnap_recorder::global::snapshot_at_exit",
        ] {
            assert!(is_plumbing_function(f), "{f}");
        }
    }

    #[test]
    fn user_functions_are_not() {
        for f in [
            "main",
            "make_list",
            "mallocator",
            "my_malloc",
            "strdup_all",
            "operator newline",
            "shop::make_widget(int)",
            "standard::x",
            "heapsnap::graph::Graph::load",
            "heapsnap_recorderx::f",
            "my::heapsnap_recorder::f",
            "<shop::Widget as core::clone::Clone>::clone",
            "",
        ] {
            assert!(!is_plumbing_function(f), "{f}");
        }
    }

    #[test]
    fn standard_library_sources_are_known_by_their_paths() {
        assert!(is_library_file("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/hint.rs"));
        assert!(is_library_file("/usr/include/c++/12/bits/stl_vector.h"));
        assert!(!is_library_file("src/main.rs"));
        assert!(!is_library_file("/home/me/rustc/library.rs"));
    }

    #[test]
    fn the_recorder_is_known_by_its_file_name() {
        assert!(is_recorder("/x/target/release/libheapsnap_recorder.so"));
        assert!(is_recorder("libheapsnap_recorder.so"));
        assert!(!is_recorder("/lib/libc.so.6"));
        assert!(!is_recorder("/x/libheapsnap_recorder.so.old"));
    }
}
