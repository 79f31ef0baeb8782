use std::fmt;

/// Damage in a snapshot: where it is and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FormatError {
    /// Byte offset from the start of the file.
    pub offset: u64,
    pub what: String,
}

impl FormatError {
    pub fn new(offset: u64, what: impl Into<String>) -> FormatError {
        FormatError { offset, what: what.into() }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.what)
    }
}
