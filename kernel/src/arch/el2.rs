//! Per-CPU EL2 configuration: what a partition's CPU traps and what it sees (DESIGN.md §3).

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::arch::asm;

/// `HCR_EL2`: stage 2 on (`VM`), EL1 is AArch64 (`RW`), `SMC` traps to EL2 (`TSC`) so PSCI
/// over SMC reaches our server, and pointer authentication is not trapped (`API`, `APK`).
/// `IMO`/`FMO`/`AMO` stay clear: physical interrupts and SErrors go straight to EL1. No WFI/WFE,
/// ID register or other system register traps.
const HCR: u64 = (1 << 0) | (1 << 31) | (1 << 19) | (1 << 40) | (1 << 41);

/// `VTCR_EL2` without `PS`: 39-bit IPA (T0SZ 25) starting at level 1 (SL0 = 1), write-back
/// cacheable inner-shareable walks, 4 KiB granule, 8-bit VMID, RES1 bit 31.
const VTCR: u64 = 25 | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 31);

/// `SCTLR_EL1` as a partition first sees it: MMU and caches off, RES1 bits set.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// `CPTR_EL2` (non-VHE layout): RES1 bits 13, 9 and 7:0 set; FP/SIMD (`TFP`) and SVE (`TZ`) not
/// trapped, so partitions use them freely; SME (`TSM`) is untrapped only if implemented (below).
const CPTR_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
const CPTR_TSM: u64 = 1 << 12;

/// The `VTTBR_EL2` of a partition.
pub fn vttbr(vmid: u16, root: u64) -> u64 {
    (u64::from(vmid) << 48) | root
}

/// Sets up this CPU's EL2 for running the partition whose stage 2 is `vttbr`, and records the
/// CPU's platform index in `TPIDR_EL2`.
pub fn configure_cpu(cpu: usize, vttbr: u64, vectors: u64) {
    VBAR_EL2.set(vectors);
    TPIDR_EL2.set(cpu as u64);
    HCR_EL2.set(HCR);

    let pa_range = ID_AA64MMFR0_EL1.get() & 0xf;
    VTCR_EL2.set(VTCR | (pa_range.min(5) << 16));
    VTTBR_EL2.set(vttbr);

    // The partition sees the real MIDR and MPIDR: its DTB and PSCI use physical MPIDRs.
    VMPIDR_EL2.set(MPIDR_EL1.get());
    // SAFETY: VPIDR_EL2 only sets what EL1 reads as MIDR_EL1.
    unsafe { asm!("msr vpidr_el2, {}", in(reg) MIDR_EL1.get(), options(nostack)) };

    // EL1 gets the physical counter and timer; the virtual counter equals the physical one.
    CNTHCTL_EL2.set(0b11);
    CNTVOFF_EL2.set(0);

    // All performance counters to EL1, no debug or PMU traps.
    let pmcr: u64;
    // SAFETY: reading PMCR_EL0 at EL2 has no side effects.
    unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack)) };
    let counters = (pmcr >> 11) & 0x1f;
    MDCR_EL2.set(counters);

    let sve = (ID_AA64PFR0_EL1.get() >> 32) & 0xf != 0;
    let sme = (ID_AA64PFR1_EL1.get() >> 24) & 0xf != 0;
    let cptr = CPTR_RES1 | if sme { 0 } else { CPTR_TSM };
    CPTR_EL2.set(cptr);
    barrier::isb(barrier::SY);
    // SAFETY: writing the EL2 vector-length controls only caps what EL1 may use; the registers
    // exist because the ID registers say SVE / SME are implemented, and CPTR_EL2 no longer
    // traps them.
    unsafe {
        if sve {
            asm!("msr S3_4_C1_C2_0, {}", in(reg) 0x1ffu64, options(nostack));
        }
        if sme {
            asm!("msr S3_4_C1_C2_6, {}", in(reg) 0x1ffu64, options(nostack));
        }
        // No CP15 traps.
        asm!("msr hstr_el2, xzr", options(nostack));
    }
    // No virtual CPU interface, EL2 timer off, EL1 starts from its reset state.
    ICH_HCR_EL2.set(0);
    CNTHP_CTL_EL2.set(0);
    SCTLR_EL1.set(SCTLR_EL1_RESET);
    barrier::isb(barrier::SY);

    // Nothing this CPU cached for this VMID (or for EL1) earlier may leak into the partition.
    // SAFETY: TLB and instruction cache invalidation only drop cached state.
    unsafe {
        asm!(
            "tlbi vmalls12e1",
            "ic iallu",
            "dsb nsh",
            "isb",
            options(nostack),
        );
    }
}

/// Invalidates every stage-1 and stage-2 TLB entry of the current VMID on all CPUs in the inner
/// shareable domain: after a partition's stage 2 has been revoked, none of its CPUs can reach
/// its old mappings any more.
pub fn invalidate_current_vmid_everywhere() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe { asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
}

/// The syndrome registers of the exit being handled.
pub fn syndrome() -> (u64, u64, u64) {
    (ESR_EL2.get(), FAR_EL2.get(), HPFAR_EL2.get())
}

/// This CPU's platform index, as [`configure_cpu`] recorded it.
pub fn current_cpu() -> usize {
    TPIDR_EL2.get() as usize
}
