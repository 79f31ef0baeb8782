//! Suppressions: known leaks that `heapsnap check` does not count, as valgrind's and
//! LeakSanitizer's suppression files list them. The format is in `formats/suppressions.md`.
//!
//! A leak group is suppressed when its leader's type, or the function or file of any frame of its
//! leader's allocation stack, matches a pattern of the right kind.

use std::path::Path;

use crate::error::{Error, Result};
use crate::heap::Heap;

/// What a pattern is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The leader's type name.
    Type,
    /// The function of any logical frame of the leader's allocation stack (symbolized offline when
    /// it was recorded as a module offset; for a frame that cannot be, the way reports name it:
    /// `module+0xoffset` or `0xaddress`).
    Function,
    /// The source file of any logical frame (for a frame named from a symbol table only or not at
    /// all, the module's path).
    File,
    /// Any of the three.
    Any,
}

/// One line of a suppression file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    pub kind: Kind,
    pub pattern: String,
    /// 1-based line in the file.
    pub line: usize,
    /// The line as written.
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suppressions {
    pub rules: Vec<Rule>,
}

impl Suppressions {
    pub fn load(path: &Path) -> Result<Suppressions> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        Suppressions::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
    }

    /// Parses the text of a suppression file; the error names the line.
    pub fn parse(text: &str) -> Result<Suppressions, String> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(rest) = line.strip_prefix("leak:") else {
                return Err(format!(
                    "line {}: expected `leak:type:PATTERN`, `leak:function:PATTERN`, `leak:file:PATTERN` or `leak:PATTERN`, found {line:?}",
                    i + 1
                ));
            };
            let (kind, pattern) = if let Some(p) = rest.strip_prefix("type:") {
                (Kind::Type, p)
            } else if let Some(p) = rest.strip_prefix("function:") {
                (Kind::Function, p)
            } else if let Some(p) = rest.strip_prefix("file:") {
                (Kind::File, p)
            } else {
                (Kind::Any, rest)
            };
            let pattern = pattern.trim();
            if pattern.is_empty() {
                return Err(format!("line {}: empty pattern", i + 1));
            }
            rules.push(Rule { kind, pattern: pattern.to_string(), line: i + 1, text: line.to_string() });
        }
        Ok(Suppressions { rules })
    }

    /// The first rule that suppresses a leak group led by `leader`, if any.
    pub fn matching(&self, heap: &Heap<'_>, leader: u32) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let type_name = heap.type_name(leader);
        let frames: Vec<(String, String)> = heap
            .snap
            .stack_frames(heap.graph.stack[leader as usize])
            .flat_map(|f| {
                heap.logical_frames(f).iter().map(|l| (l.function.to_string(), l.file.to_string())).collect::<Vec<_>>()
            })
            .collect();
        self.rules.iter().position(|rule| {
            let on_type = || glob(&rule.pattern, &type_name);
            let on_function = || frames.iter().any(|(function, _)| glob(&rule.pattern, function));
            let on_file = || frames.iter().any(|(_, file)| !file.is_empty() && glob(&rule.pattern, file));
            match rule.kind {
                Kind::Type => on_type(),
                Kind::Function => on_function(),
                Kind::File => on_file(),
                Kind::Any => on_type() || on_function() || on_file(),
            }
        })
    }
}

/// Whether `text` matches `pattern` as a whole, where `*` matches any run of characters
/// (`/` included) and `?` any one character. Linear backtracking on the last star: at most
/// `pattern × text` steps, never recursion.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("init_*", "init_globals"));
        assert!(glob("init_*", "init_"));
        assert!(!glob("init_*", "xinit_a"));
        assert!(glob("vendor/*", "vendor/zlib/inflate.c"));
        assert!(glob("*/vendor/*.c", "/src/vendor/a.c"));
        assert!(glob("struct ?oo", "struct foo"));
        assert!(!glob("struct ?oo", "struct fooo"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn parses_kinds_comments_and_errors() {
        let s = Suppressions::parse(
            "# known\n\nleak:type:struct foo\n  leak:function:init_*\nleak:file:vendor/*\nleak:std::vec\n",
        )
        .unwrap();
        let kinds: Vec<(Kind, &str, usize)> = s.rules.iter().map(|r| (r.kind, r.pattern.as_str(), r.line)).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Type, "struct foo", 3),
                (Kind::Function, "init_*", 4),
                (Kind::File, "vendor/*", 5),
                (Kind::Any, "std::vec", 6)
            ]
        );
        assert!(Suppressions::parse("fun:malloc\n").unwrap_err().starts_with("line 1:"));
        assert!(Suppressions::parse("leak:type:\n").unwrap_err().contains("empty pattern"));
    }
}
