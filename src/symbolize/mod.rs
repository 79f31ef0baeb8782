//! Offline symbolization: the raw return addresses a recorder writes (`FRMS` form 0, a module and
//! an offset) become functions, files and lines, from the module's binary on disk (checked by build
//! id) or a separate debug file, with inlined calls expanded into logical frames.
//!
//! Everything is lazy and done once: a module's binary is opened the first time a frame in it is
//! named, each frame is resolved once, each stack's site chosen once. Loading and analysing a
//! snapshot never opens a binary; only reports that print frame names do.

pub mod binary;
pub mod plumbing;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use hsnap::{Frame, Snapshot};

use binary::Binary;
pub use binary::{Location, SearchPath};

/// One logical frame of a stack, as reports and suppressions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalFrame {
    /// As reports print it: `function (file:line)`, `function+0x1a (libc.so.6)`,
    /// `module+0xoffset` or `0xaddress`.
    pub name: Arc<str>,
    /// The function, demangled; for an unresolved frame, `name`.
    pub function: Arc<str>,
    /// The source file; for an unresolved frame or one named from the symbol table only, the
    /// module's path; empty when unknown.
    pub file: Arc<str>,
    /// Allocator plumbing (see [`plumbing`]): skipped when choosing a site.
    pub plumbing: bool,
}

/// A snapshot's symbolizer. Shared by reference between reports: its caches sit behind a mutex.
#[derive(Debug)]
pub struct Symbolizer {
    search: SearchPath,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// By module id; absent until the module is first needed.
    binaries: HashMap<u32, Option<Binary>>,
    frames: HashMap<u32, Arc<[LogicalFrame]>>,
    sites: HashMap<u32, Arc<str>>,
    /// Names, functions and files, each stored once: many frames share a function and a file.
    strings: HashSet<Arc<str>>,
    /// What could not be used, once per module.
    notes: Vec<String>,
}

impl Symbolizer {
    pub fn new(search: SearchPath) -> Symbolizer {
        Symbolizer { search, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves caches that are still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The logical frames of one recorded frame, innermost first: several when the return address
    /// is inside inlined calls, one otherwise.
    pub fn frames(&self, snap: &Snapshot<'_>, frame: u32) -> Arc<[LogicalFrame]> {
        self.state().frames(&self.search, snap, frame)
    }

    /// A stack's allocation site: the name of its innermost logical frame that is not allocator
    /// plumbing, or of its innermost frame when all are; `(no stack)` for stack 0.
    pub fn site(&self, snap: &Snapshot<'_>, stack: u32) -> String {
        let mut state = self.state();
        if let Some(site) = state.sites.get(&stack) {
            return site.to_string();
        }
        let mut innermost = None;
        let mut site = None;
        'frames: for frame in snap.stack_frames(stack) {
            for logical in state.frames(&self.search, snap, frame).iter() {
                innermost.get_or_insert_with(|| logical.name.clone());
                if !logical.plumbing {
                    site = Some(logical.name.clone());
                    break 'frames;
                }
            }
        }
        let site = site.or(innermost).unwrap_or_else(|| Arc::from("(no stack)"));
        state.sites.insert(stack, site.clone());
        site.to_string()
    }

    /// Every logical frame of a stack, innermost first.
    pub fn stack(&self, snap: &Snapshot<'_>, stack: u32) -> Vec<LogicalFrame> {
        let mut state = self.state();
        snap.stack_frames(stack).flat_map(|f| state.frames(&self.search, snap, f).to_vec()).collect()
    }

    /// Why modules could not be symbolized, one line each.
    pub fn notes(&self) -> Vec<String> {
        self.state().notes.clone()
    }

    /// How many modules' binaries were opened (or tried): 0 until a frame in a module is named.
    pub fn modules_tried(&self) -> usize {
        self.state().binaries.len()
    }
}

impl State {
    fn frames(&mut self, search: &SearchPath, snap: &Snapshot<'_>, frame: u32) -> Arc<[LogicalFrame]> {
        if let Some(frames) = self.frames.get(&frame) {
            return frames.clone();
        }
        let frames: Arc<[LogicalFrame]> = match snap.frame(frame) {
            Some(Frame::Symbol { function, file, line, column }) => {
                let location = Location {
                    function: (function != 0).then(|| lossy(snap.string(function))),
                    offset: None,
                    file: (file != 0).then(|| lossy(snap.string(file))),
                    line,
                    column,
                };
                // Named by its producer (Python, V8, a synthetic heap): not ours to call plumbing,
                // as a Python function may well be called `getline`.
                Arc::new([LogicalFrame { plumbing: false, ..self.logical(&location, None) }])
            }
            Some(Frame::InModule { module, offset }) => self.in_module(search, snap, module, offset).into(),
            Some(Frame::Absolute(address)) => Arc::new([self.unresolved(format!("{address:#x}"), "", false)]),
            None => Arc::new([self.unresolved("??".to_string(), "", false)]),
        };
        self.frames.insert(frame, frames.clone());
        frames
    }

    fn in_module(&mut self, search: &SearchPath, snap: &Snapshot<'_>, module: u32, offset: u64) -> Vec<LogicalFrame> {
        let Some(m) = snap.modules().get(module as usize) else {
            return vec![self.unresolved(format!("??+{offset:#x}"), "", false)];
        };
        let path = snap.string(m.path);
        let path_text = if path.is_empty() { "(unnamed module)".to_string() } else { lossy(path) };
        let base = path_text.rsplit('/').next().unwrap_or_default().to_string();
        let recorder = plumbing::is_recorder(&path_text);
        let binary = self.binaries.entry(module).or_insert_with(|| {
            let file = Path::new(OsStr::from_bytes(path));
            match binary::open(file, m.build_id, search) {
                Ok(binary) => Some(binary),
                Err(why) => {
                    self.notes
                        .push(format!("cannot symbolize {path_text}: {why}; its frames are shown as {base}+0xOFFSET"));
                    None
                }
            }
        });
        let located = binary.as_ref().map(|b| b.locate(m.load_bias, offset)).unwrap_or_default();
        if located.is_empty() {
            return vec![self.unresolved(format!("{base}+{offset:#x}"), &path_text, recorder)];
        }
        located
            .iter()
            .map(|l| {
                let mut frame = self.logical(l, Some((&base, &path_text)));
                frame.plumbing |= recorder;
                frame
            })
            .collect()
    }

    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(s) = self.strings.get(text) {
            return s.clone();
        }
        let s: Arc<str> = Arc::from(text);
        self.strings.insert(s.clone());
        s
    }

    fn unresolved(&mut self, name: String, file: &str, plumbing: bool) -> LogicalFrame {
        let name = self.intern(&name);
        LogicalFrame { function: name.clone(), name, file: self.intern(file), plumbing }
    }

    /// A location as a logical frame; `module` (file name, path) is named when there is no source
    /// file.
    fn logical(&mut self, l: &Location, module: Option<(&str, &str)>) -> LogicalFrame {
        let function = l.function.as_deref().unwrap_or("??");
        let shown = match l.offset {
            Some(offset) => format!("{function}+{offset:#x}"),
            None => function.to_string(),
        };
        let (name, file) = match (&l.file, l.line, module) {
            (Some(file), 0, _) => (format!("{shown} ({file})"), file.as_str()),
            (Some(file), line, _) => (format!("{shown} ({file}:{line})"), file.as_str()),
            (None, _, Some((base, path))) => (format!("{shown} ({base})"), path),
            (None, _, None) => (shown, ""),
        };
        let plumbing = l.function.as_deref().is_some_and(plumbing::is_plumbing_function)
            || l.file.as_deref().is_some_and(plumbing::is_library_file);
        LogicalFrame { name: self.intern(&name), function: self.intern(function), file: self.intern(file), plumbing }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
