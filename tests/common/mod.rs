//! Running the `heapsnap` binary from integration tests.
#![allow(dead_code)] // each test crate uses part of this

use std::process::{Command, Output};

pub fn heapsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heapsnap")).args(args).output().unwrap()
}

/// The JSON a successful command prints.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = heapsnap(args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
