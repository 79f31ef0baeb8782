//! One module's binary, found on disk and opened for symbolization: its DWARF (from the binary or
//! from a separate debug file found by build id) and its ELF symbol table.
//!
//! A snapshot names each module by the path it was loaded from and the GNU build id it had. A file
//! at that path with another build id is a different build (the program was rebuilt since): its
//! names would be wrong, so it is refused, and the caller says so once.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, SymbolKind};

/// DWARF sections, copied out of the mapped file (and decompressed) so that nothing borrows it.
pub type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// Where separate debug files and moved binaries are looked for.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    /// Directories given by the user (`--debug-dir`, `HEAPSNAP_DEBUG_PATH`): each is searched for
    /// `.build-id/xx/rest.debug` and for a binary of the module's file name.
    pub user: Vec<PathBuf>,
    /// Directories searched only for `.build-id/xx/rest.debug`: the system's `/usr/lib/debug`.
    pub system: Vec<PathBuf>,
}

impl SearchPath {
    /// `dirs`, then the directories of `HEAPSNAP_DEBUG_PATH` (separated by `:`), then
    /// `/usr/lib/debug`.
    pub fn from_env(dirs: &[PathBuf]) -> SearchPath {
        let mut user = dirs.to_vec();
        if let Some(path) = std::env::var_os("HEAPSNAP_DEBUG_PATH") {
            user.extend(std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()));
        }
        SearchPath { user, system: vec![PathBuf::from("/usr/lib/debug")] }
    }

    fn build_id_files(&self, build_id: &[u8]) -> Vec<PathBuf> {
        if build_id.len() < 2 {
            return Vec::new();
        }
        let hex = hex(build_id);
        let relative = Path::new(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
        self.user.iter().chain(&self.system).map(|dir| dir.join(&relative)).collect()
    }
}

/// A function symbol: where it starts, how long it is (0: unknown), its name as the file has it.
#[derive(Debug, Clone)]
struct Symbol {
    address: u64,
    size: u64,
    name: Box<str>,
}

/// One resolved location: a logical frame. Several come from one return address inside inlined
/// calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Demangled.
    pub function: Option<String>,
    /// Set when the name came from the symbol table only: the return address's offset from the
    /// symbol, shown as `function+0x1a`.
    pub offset: Option<u64>,
    /// As the compiler recorded it, relative to the compilation directory when it is inside it.
    pub file: Option<String>,
    /// 0 when unknown, as `column`.
    pub line: u32,
    pub column: u32,
}

/// A module's binary, ready for lookups.
pub struct Binary {
    /// `ET_EXEC`: the file's addresses are the process's, whatever the recorded load bias.
    fixed: bool,
    dwarf: Option<addr2line::Context<Reader>>,
    /// Function symbols by address.
    symbols: Vec<Symbol>,
}

impl std::fmt::Debug for Binary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binary")
            .field("fixed", &self.fixed)
            .field("dwarf", &self.dwarf.is_some())
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

/// A file mapped and parsed, with the build id it carries.
struct Mapped {
    map: Mmap,
}

impl Mapped {
    fn open(path: &Path) -> Result<Mapped, String> {
        // The path comes from the snapshot: a FIFO or a device there must not block or flood us.
        let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if !metadata.is_file() {
            return Err("not a regular file".to_string());
        }
        let file = File::open(path).map_err(|e| e.to_string())?;
        // SAFETY: the map is read-only and private; a binary rewritten while we read it can fault
        // (SIGBUS), which every tool that maps binaries (gdb, addr2line) accepts.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| e.to_string())?;
        object::File::parse(&*map).map_err(|e| format!("not an object file we can read ({e})"))?;
        Ok(Mapped { map })
    }

    fn object(&self) -> object::File<'_> {
        object::File::parse(&*self.map).expect("parsed when opened")
    }

    fn build_id(&self) -> Vec<u8> {
        self.object().build_id().ok().flatten().map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn has_dwarf(&self) -> bool {
        self.object().section_by_name(".debug_info").is_some_and(|s| s.size() > 0)
    }
}

/// The GNU build id in hex, as `.build-id` directories and messages spell it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Finds and opens the binary of a module recorded at `path` with `build_id` (empty: unknown, so
/// any file at the path is taken). The error says why there is nothing to symbolize with.
pub fn open(path: &Path, build_id: &[u8], search: &SearchPath) -> Result<Binary, String> {
    let (binary, refusal) = find_binary(path, build_id, search);
    let debug = find_debug_file(build_id, search);
    let dwarf_file = match (&debug, &binary) {
        (Some(d), _) if d.has_dwarf() => Some(d),
        (_, Some(b)) if b.has_dwarf() => Some(b),
        _ => None,
    };
    let Some(primary) = binary.as_ref().or(debug.as_ref()) else {
        return Err(refusal);
    };
    let fixed = primary.object().kind() == ObjectKind::Executable;
    let dwarf = dwarf_file.and_then(|f| load_dwarf(&f.object()));
    let mut symbols = Vec::new();
    for file in binary.iter().chain(&debug) {
        function_symbols(&file.object(), &mut symbols);
    }
    Ok(Binary { fixed, dwarf, symbols: sorted(symbols) })
}

/// The binary at the recorded path when its build id matches, else a binary of the same file name
/// with that build id in a user directory. Also the message to give when there is none.
fn find_binary(path: &Path, build_id: &[u8], search: &SearchPath) -> (Option<Mapped>, String) {
    let mut refusal = match Mapped::open(path) {
        Ok(file) => match file.build_id() {
            found if build_id.is_empty() || found == build_id => return (Some(file), String::new()),
            found => format!(
                "the file there has build id {}, the snapshot {}: another build, not used",
                if found.is_empty() { "(none)".to_string() } else { hex(&found) },
                hex(build_id)
            ),
        },
        Err(e) => e,
    };
    if let Some(name) = path.file_name() {
        for dir in &search.user {
            if let Ok(file) = Mapped::open(&dir.join(name)) {
                if !build_id.is_empty() && file.build_id() == build_id {
                    return (Some(file), String::new());
                }
            }
        }
    }
    if !build_id.is_empty() {
        refusal += &format!(", and no debug file has its build id {}", hex(build_id));
    }
    (None, refusal)
}

/// A separate debug file, `DIR/.build-id/xx/rest.debug`, whose build id matches.
fn find_debug_file(build_id: &[u8], search: &SearchPath) -> Option<Mapped> {
    search
        .build_id_files(build_id)
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| Mapped::open(p).ok())
        .find(|f| f.build_id() == build_id)
}

fn load_dwarf(file: &object::File<'_>) -> Option<addr2line::Context<Reader>> {
    let endian = if file.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
    let load = |id: gimli::SectionId| -> Result<Reader, object::Error> {
        let data = match file.section_by_name(id.name()) {
            Some(section) => section.uncompressed_data()?,
            None => Cow::Borrowed(&[][..]),
        };
        Ok(Reader::new(Arc::from(&*data), endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

fn function_symbols(file: &object::File<'_>, out: &mut Vec<Symbol>) {
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        if let Ok(name) = symbol.name() {
            if !name.is_empty() {
                out.push(Symbol { address: symbol.address(), size: symbol.size(), name: name.into() });
            }
        }
    }
}

/// By address; of several names at one address the plainest (fewest leading underscores, then
/// shortest): `malloc` over `__libc_malloc`, `strdup` over `__strdup`.
fn sorted(mut symbols: Vec<Symbol>) -> Vec<Symbol> {
    let plainness = |s: &Symbol| (s.name.len() - s.name.trim_start_matches('_').len(), s.name.len());
    symbols.sort_by(|a, b| a.address.cmp(&b.address).then(plainness(a).cmp(&plainness(b))).then(a.name.cmp(&b.name)));
    symbols.dedup_by_key(|s| s.address);
    symbols
}

impl Binary {
    /// The logical frames of the return address `offset` recorded in a module loaded at
    /// `load_bias`, innermost first; empty when neither DWARF nor a symbol covers it.
    pub fn locate(&self, load_bias: u64, offset: u64) -> Vec<Location> {
        // A position-dependent executable runs at its link-time addresses, so bias + offset is
        // already one of them; any other object's addresses are relative to its load bias.
        let address = if self.fixed { load_bias.wrapping_add(offset) } else { offset };
        if address == 0 {
            return Vec::new();
        }
        // A return address follows the call: the call itself is one byte back.
        let probe = address.wrapping_sub(1);
        let mut frames = self.dwarf_frames(probe);
        let symbol = self.symbol(probe);
        match frames.last_mut() {
            Some(outer) => {
                // The physical function: DWARF without linkage names (Rust's line-tables-only
                // builds) names it without its path, `load` for `heapsnap::graph::Graph::load`,
                // which the symbol table has.
                let qualified = symbol.map(|s| demangle(&s.name, None));
                match (&outer.function, qualified) {
                    (None, qualified) => outer.function = qualified,
                    (Some(short), Some(full)) if full.ends_with(&format!("::{short}")) => outer.function = Some(full),
                    _ => {}
                }
            }
            None => frames.extend(symbol.map(|s| Location {
                function: Some(demangle(&s.name, None)),
                offset: Some(address - s.address),
                file: None,
                line: 0,
                column: 0,
            })),
        }
        frames
    }

    fn dwarf_frames(&self, probe: u64) -> Vec<Location> {
        let Some(context) = &self.dwarf else { return Vec::new() };
        let comp_dir = context.find_dwarf_and_unit(probe).skip_all_loads().and_then(|unit| {
            unit.comp_dir.as_ref().and_then(|d| gimli::Reader::to_string_lossy(d).ok().map(Cow::into_owned))
        });
        let Ok(mut iter) = context.find_frames(probe).skip_all_loads() else { return Vec::new() };
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let function = frame.function.as_ref().and_then(|f| {
                let raw = f.raw_name().ok()?;
                Some(demangle(&raw, f.language))
            });
            let location = frame.location.as_ref();
            frames.push(Location {
                function,
                offset: None,
                file: location.and_then(|l| l.file).map(|f| relative_to(f, comp_dir.as_deref())),
                line: location.and_then(|l| l.line).unwrap_or(0),
                column: location.and_then(|l| l.column).unwrap_or(0),
            });
        }
        frames
    }

    /// The nearest symbol at or before `probe`, unless `probe` is past its end.
    fn symbol(&self, probe: u64) -> Option<&Symbol> {
        let after = self.symbols.partition_point(|s| s.address <= probe);
        let symbol = self.symbols.get(after.checked_sub(1)?)?;
        (symbol.size == 0 || probe < symbol.address + symbol.size).then_some(symbol)
    }
}

/// `file` without the compilation directory it starts with: `prog.c`, `src/util.c`; the same in
/// every checkout, so site keys do not depend on where the program was built.
fn relative_to(file: &str, comp_dir: Option<&str>) -> String {
    comp_dir
        .map(|d| d.trim_end_matches('/'))
        .filter(|d| !d.is_empty())
        .and_then(|d| file.strip_prefix(d))
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(file)
        .to_string()
}

/// A symbol's name for people: C++ and Rust names demangled, by the unit's language when DWARF
/// knows it, else by the name's shape; anything else as it is.
pub fn demangle(name: &str, language: Option<gimli::DwLang>) -> String {
    let by_language = addr2line::demangle_auto(Cow::Borrowed(name), language);
    if by_language != name || language.is_none() {
        return by_language.into_owned();
    }
    addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_lose_their_compilation_directory() {
        assert_eq!(relative_to("/build/x/prog.c", Some("/build/x")), "prog.c");
        assert_eq!(relative_to("/build/x/src/a.c", Some("/build/x/")), "src/a.c");
        assert_eq!(relative_to("/usr/include/stdio.h", Some("/build/x")), "/usr/include/stdio.h");
        assert_eq!(relative_to("/build/xy/a.c", Some("/build/x")), "/build/xy/a.c");
        assert_eq!(relative_to("a.c", None), "a.c");
    }

    #[test]
    fn demangles_cpp_and_rust_and_keeps_c() {
        assert_eq!(demangle("_Znwm", None), "operator new(unsigned long)");
        assert_eq!(demangle("_ZN4shop11make_widgetEi", Some(gimli::DW_LANG_C_plus_plus_14)), "shop::make_widget(int)");
        assert_eq!(demangle("_ZN4shop11make_widgetEi", Some(gimli::DW_LANG_C11)), "shop::make_widget(int)");
        assert_eq!(demangle("_ZN5alloc5alloc5alloc17h0123456789abcdefE", None), "alloc::alloc::alloc");
        assert_eq!(demangle("main", Some(gimli::DW_LANG_C11)), "main");
    }

    #[test]
    fn plainest_name_wins_at_one_address() {
        let s = |address, name: &str| Symbol { address, size: 8, name: name.into() };
        let symbols = sorted(vec![s(16, "__libc_malloc"), s(16, "malloc"), s(0x20, "__strdup"), s(0x20, "strdup")]);
        let names: Vec<&str> = symbols.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["malloc", "strdup"]);
    }

    #[test]
    fn build_id_paths_split_the_first_byte() {
        let search = SearchPath { user: vec!["/d".into()], system: vec!["/usr/lib/debug".into()] };
        assert_eq!(
            search.build_id_files(&[0xab, 0xcd, 0xef]),
            [PathBuf::from("/d/.build-id/ab/cdef.debug"), PathBuf::from("/usr/lib/debug/.build-id/ab/cdef.debug")]
        );
        assert!(search.build_id_files(&[1]).is_empty());
    }
}
