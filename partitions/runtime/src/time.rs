//! The architected counter, which EL2 leaves to the partition.

use core::arch::asm;

/// Counter ticks since an arbitrary start (`CNTPCT_EL0`, ordered after earlier instructions).
pub fn now() -> u64 {
    let ticks: u64;
    // SAFETY: reading the counter has no side effects; EL2 does not trap it (CNTHCTL_EL2).
    unsafe { asm!("isb", "mrs {}, cntpct_el0", out(reg) ticks, options(nomem, nostack)) };
    ticks
}

/// Counter ticks per second (`CNTFRQ_EL0`).
pub fn frequency() -> u64 {
    let hz: u64;
    // SAFETY: reading the frequency register has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) hz, options(nomem, nostack)) };
    hz
}

/// Spins for `microseconds`.
pub fn delay_us(microseconds: u64) {
    let end = now() + frequency() * microseconds / 1_000_000;
    while now() < end {
        trapless_virtio::relax();
    }
}
