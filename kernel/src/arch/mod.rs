//! The aarch64 facade of the kernel: the only place with assembly, system registers and MMIO.

pub mod el2;
pub mod entry;
pub mod firmware;
pub mod gic;
pub mod its;
pub mod lpi;
pub mod probe;
pub mod stage2;
pub mod tables;
pub mod vectors;

/// Waits for an event forever (used where nothing is left to do and powering off failed).
pub fn halt() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}
