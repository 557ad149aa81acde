//! The doorbell probe's CPU side: EL2, on the boot CPU and before any partition runs, stores an
//! EventID of its own the way a partition rings a doorbell, and looks at this CPU's interface
//! for the LPI the ITS should have raised. Interrupts stay masked at EL2 (`PSTATE.I`), so the
//! LPI is seen pending and acknowledged here, never taken.

use super::el2;
use super::lpi::store_event;
use arm_gic::gicv3::GicCpuInterface;
use arm_gic::InterruptGroup;

/// How long the LPI may take to become pending after the store.
const PROBE_WAIT_US: u64 = 10_000;
/// `ICC_HPPIR1_EL1.INTID`: bits 23:0.
const INTID_MASK: u64 = 0xff_ffff;

/// The INTID of this CPU's highest priority pending Group 1 interrupt (1023 if none).
fn highest_pending() -> u32 {
    let value: u64;
    // SAFETY: reading ICC_HPPIR1_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, icc_hppir1_el1", out(reg) value, options(nomem, nostack)) };
    (value & INTID_MASK) as u32
}

/// Stores `event` to the translater at `translater` and waits, a bounded time, for LPI `lpi`
/// (which the caller mapped to this CPU's redistributor at the highest priority) to be this
/// CPU's highest priority pending interrupt; acknowledges and ends it if it comes. Leaves the
/// CPU interface as it found it at boot: group 1 off, priority mask closed.
pub fn ring_and_see(translater: u64, event: u32, lpi: u32) -> bool {
    GicCpuInterface::enable_system_register_el2(true);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    GicCpuInterface::set_priority_mask(0xff);
    GicCpuInterface::enable_group1(true);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);

    store_event(translater, event);
    let deadline = el2::counter().saturating_add(el2::counter_frequency() * PROBE_WAIT_US / 1_000_000);
    let seen = loop {
        if highest_pending() == lpi {
            break true;
        }
        if el2::counter() > deadline {
            break false;
        }
        core::hint::spin_loop();
    };
    if seen && let Some(intid) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) {
        GicCpuInterface::end_interrupt(intid, InterruptGroup::Group1);
    }
    GicCpuInterface::enable_group1(false);
    GicCpuInterface::set_priority_mask(0);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    seen
}
