//! Accepted systems planned, their device trees and plan read back as EL2 reads it (src/planner.rs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trapless_fuzz::planner::run(data));
