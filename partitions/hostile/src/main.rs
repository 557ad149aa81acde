//! A hostile peer on a static virtio link, for the tests of what the other side withstands
//! (`docs/static-virtio.md`, "What a hostile peer can and cannot do"):
//!
//! - `hostile=driver`: on the link it drives (a block link), one case at a time, it writes what
//!   a driver must not (garbage descriptors, loops, chains longer than the ring, buffers outside
//!   the pool or wrapping the address space, huge lengths, runaway and wrapped indices, indirect
//!   and unknown flags, garbage in the header and state lines), then legal requests under a
//!   doorbell storm and a full queue. Between cases it starts the link again (a new
//!   generation). It prints one line per case, `hostile: case <name>: device <outcome>; <checks>`,
//!   where the checks are that the device wrote nothing but its used ring (a canary fills the
//!   buffer pool) and never reported more bytes than a buffer holds. `storm=<n>` rings per storm,
//!   `flood=<n>` requests through the full queue.
//! - `hostile=device`: it is the device of its links and lies to each driver in the way
//!   `<link>=<case>` names: `used-len`, `used-empty`, `used-id`, `used-idx`, `config`, `failed`,
//!   or `storm` (honest, but rings the driver `storm=<n>` times).

#![no_std]
#![no_main]

extern crate alloc;

mod device;
mod driver;

use trapless_guest::{Boot, println, psci};

trapless_guest::entry!(main);

fn main(boot: &Boot) {
    match boot.arg("hostile") {
        Some("driver") => driver::run(boot),
        Some("device") => device::run(boot),
        other => fail(&alloc::format!("unknown mode {other:?}: give hostile=driver or hostile=device")),
    }
}

/// A bootarg count, or its default.
fn count(boot: &Boot, key: &str, default: u64) -> u64 {
    match boot.arg(key).map(str::parse) {
        None => default,
        Some(Ok(value)) => value,
        Some(Err(_)) => fail(&alloc::format!("{key}= takes a number")),
    }
}

fn fail(problem: &str) -> ! {
    println!("hostile: {problem}");
    psci::system_reset()
}
