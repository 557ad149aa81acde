//! Any text as a system description, checked as `cargo xtask check` checks one (src/system.rs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trapless_fuzz::system::run(data));
