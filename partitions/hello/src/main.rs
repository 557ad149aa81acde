//! The demo guest: prints what its device tree says about it, then powers off.

#![no_std]
#![no_main]

use trapless_guest::{Boot, ConsoleKind, println};

trapless_guest::entry!(main);

fn main(boot: &Boot) {
    let mib = (boot.memory.end - boot.memory.start) >> 20;
    println!(
        "hello from partition {}: memory {:#x}..{:#x} ({mib} MiB), {} CPU(s) {:x?}",
        boot.name,
        boot.memory.start,
        boot.memory.end,
        boot.cpu_count,
        boot.cpus()
    );
    match boot.console {
        ConsoleKind::Pl011(base) => println!("{}: console: own PL011 at {base:#x}", boot.name),
        ConsoleKind::Hypercall => println!("{}: console: trapless console hypercall", boot.name),
        ConsoleKind::None => {}
    }
    println!("{}: bootargs \"{}\"; done, powering off", boot.name, boot.bootargs);
}
