//! Any text as a board description, and a small system planned on each board it accepts (src/platform.rs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trapless_fuzz::platform::run(data));
