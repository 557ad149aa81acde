//! The bodies of trapless's fuzz targets (`fuzz_targets/*.rs` are one line each), and the input
//! encoders that made the seed corpora. `docs/fuzzing.md` says what each target checks.
//!
//! A target panics (which libFuzzer reports as a crash) when the code under test panics, or
//! when one of the promises the target checks is broken.

pub mod planner;
pub mod platform;
pub mod ring;
pub mod system;

use std::path::PathBuf;

/// The path a fuzzed system description is checked as: beside the test systems, so that
/// relative `image` and `platform` paths reach the repository's files.
pub fn system_path() -> PathBuf {
    trapless_tools::root().join("tests/systems/fuzz.toml")
}

/// Reads an input a byte at a time; past its end, every byte is 0.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
