//! The device side of a static virtio link over a window a hostile driver wrote (src/ring.rs).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trapless_fuzz::ring::run(data));
