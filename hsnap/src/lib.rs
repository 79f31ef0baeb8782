//! The `.hsnap` heap snapshot format: see `formats/hsnap.md`.
