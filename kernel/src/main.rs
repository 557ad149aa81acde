//! trapless: a static partitioning kernel for Arm64 at EL2.
//!
//! The boot CPU reads the plan the build appended to this image, checks the machine against
//! it, loads each partition into its own memory with its own stage-2 map and starts it. From
//! then on EL2 only serves the control path: PSCI, the console hypercall, and faults, which
//! stop the faulting partition alone. Physical interrupts go straight to the partitions.

#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
mod console;
mod emulated;
mod exit;
mod firmware_dt;
mod gic_emulation;
mod heap;
mod state;

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

/// Set by the first panic: a second one (on another CPU, or while reporting) only stops.
static PANICKED: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKED.swap(true, Ordering::SeqCst) {
        arch::halt()
    }
    console::print_on_panic(format_args!("trapless: EL2 panic: {info}\n"));
    arch::firmware::system_off();
    arch::halt()
}
