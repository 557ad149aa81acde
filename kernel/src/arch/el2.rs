//! Per-CPU EL2 configuration: what a partition's CPU traps and what it sees (docs/design.md),
//! and the system registers EL2 reads when a partition exits.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::arch::asm;
use trapless_arm64::mmu::SCTLR_EL1_RES1;
use super::vectors::GuestFrame;
use trapless_kernel_core::abort::{self, Faulted, Refusal};
use trapless_kernel_core::fault::{IpaSource, ipa_from_hpfar, needs_ipa_lookup};
use trapless_plan::Ipa;

/// `HCR_EL2`:
/// - `VM`: stage 2 on; `RW`: EL1 is AArch64;
/// - `SWIO`: a partition's data cache invalidate by set/way cleans as well, so it cannot
///   discard dirty lines of other partitions or of EL2 in a shared cache;
/// - `TSC`: `SMC` traps to EL2, so PSCI over SMC reaches our server;
/// - `TIDCP`: IMPLEMENTATION DEFINED system registers trap (they may control shared caches);
/// - `APK`, `API`: pointer authentication is not trapped.
///
/// `IMO`/`FMO`/`AMO` stay clear: physical interrupts and SErrors go straight to EL1. No WFI/WFE
/// or ID register traps.
const HCR: u64 = (1 << 0) | (1 << 1) | (1 << 19) | (1 << 20) | (1 << 31) | (1 << 40) | (1 << 41);

/// `ICH_HCR_EL2.TC`: the GIC CPU-interface registers common to both groups trap, among them the
/// SGI registers, so a partition can interrupt only its own CPUs (see
/// `trapless_kernel_core::gic_sysreg`). Acknowledge and end (`IAR1`, `EOIR1`) do not trap.
const ICH_HCR_TC: u64 = 1 << 10;

/// `VTCR_EL2` without `PS`: 39-bit IPA (T0SZ 25) starting at level 1 (SL0 = 1), write-back
/// cacheable inner-shareable walks, 4 KiB granule, 8-bit VMID, RES1 bit 31.
const VTCR: u64 = 25 | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 31);

/// `CPTR_EL2` (non-VHE layout): RES1 bits 13, 9 and 7:0; FP/SIMD (`TFP`, bit 10) never trapped.
/// `TZ` (SVE) and `TSM` (SME) are clear where the feature exists, so partitions use them
/// freely (EL2, being soft-float, never touches their registers), and set where it does not.
const CPTR_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
const CPTR_TZ: u64 = 1 << 8;
const CPTR_TSM: u64 = 1 << 12;

/// The `VTTBR_EL2` of a partition.
pub fn vttbr(vmid: u16, root: u64) -> u64 {
    (u64::from(vmid) << 48) | root
}

/// Sets up this CPU's EL2 for running the partition whose stage 2 is `vttbr`, and records the
/// CPU's platform index in `TPIDR_EL2`.
pub fn configure_cpu(cpu: usize, vttbr: u64) {
    TPIDR_EL2.set(cpu as u64);
    HCR_EL2.set(HCR);
    // No EL1 access to IMPLEMENTATION DEFINED control registers (ACTLR_EL2 enables them).
    ACTLR_EL2.set(0);

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
    // Both EL1 timers off, as after a reset: a partition started again on this CPU must not
    // take a timer its previous run armed.
    CNTP_CTL_EL0.set(0);
    CNTV_CTL_EL0.set(0);

    // All performance counters to EL1 (if there is a PMU), no debug or PMU traps.
    let pmu_version = (ID_AA64DFR0_EL1.get() >> 8) & 0xf;
    let counters = if pmu_version == 0 || pmu_version == 0xf {
        0
    } else {
        let pmcr: u64;
        // SAFETY: reading PMCR_EL0 at EL2 has no side effects, and a PMU exists.
        unsafe { asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack)) };
        (pmcr >> 11) & 0x1f
    };
    MDCR_EL2.set(counters);

    let sve = (ID_AA64PFR0_EL1.get() >> 32) & 0xf != 0;
    let sme = (ID_AA64PFR1_EL1.get() >> 24) & 0xf != 0;
    CPTR_EL2.set(CPTR_RES1 | if sve { 0 } else { CPTR_TZ } | if sme { 0 } else { CPTR_TSM });
    barrier::isb(barrier::SY);
    // SAFETY: writing the EL2 vector-length controls only caps what EL1 may use; each register
    // exists because its feature does, and CPTR_EL2 no longer traps it.
    unsafe {
        if sve {
            asm!("msr S3_4_C1_C2_0, {}", in(reg) 0x1ffu64, options(nostack)); // ZCR_EL2
        }
        if sme {
            asm!("msr S3_4_C1_C2_6, {}", in(reg) 0x1ffu64, options(nostack)); // SMCR_EL2
        }
        // No CP15 traps.
        asm!("msr hstr_el2, xzr", options(nostack));
    }
    ICH_HCR_EL2.set(ICH_HCR_TC);
    CNTHP_CTL_EL2.set(0);
    SCTLR_EL1.set(SCTLR_EL1_RES1);
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

/// `ESR_EL2` of the exit being handled.
pub fn esr() -> u64 {
    ESR_EL2.get()
}

/// The IPA of the stage-2 abort being handled (syndrome `esr`), if the hardware gives one: from
/// `HPFAR_EL2`, or by translating `FAR_EL2` through the partition's stage 1 where `HPFAR_EL2`
/// may be UNKNOWN (permission faults).
pub fn fault_ipa(esr: u64) -> Option<Ipa> {
    let far = FAR_EL2.get();
    match needs_ipa_lookup(esr) {
        IpaSource::Hpfar => Some(ipa_from_hpfar(HPFAR_EL2.get(), far)),
        IpaSource::TranslateFar => translate_stage1(far),
        IpaSource::None => None,
    }
}

/// The IPA that virtual address `va` of the partition running on this CPU maps to, by its
/// current stage-1 tables (`AT S1E1R`), or `None` if it does not map it.
fn translate_stage1(va: u64) -> Option<Ipa> {
    let par: u64;
    // SAFETY: AT only fills PAR_EL1, which belongs to the partition and is restored before
    // returning to it.
    unsafe {
        asm!(
            "mrs {saved}, par_el1",
            "at s1e1r, {va}",
            "isb",
            "mrs {par}, par_el1",
            "msr par_el1, {saved}",
            va = in(reg) va,
            saved = out(reg) _,
            par = out(reg) par,
            options(nostack),
        );
    }
    // PAR_EL1.F (bit 0) set means the translation failed; else PA bits 47:12.
    (par & 1 == 0).then_some(Ipa((par & 0xffff_ffff_f000) | (va & 0xfff)))
}

/// Delivers a synchronous external abort to the partition on this CPU instead of the stage-2
/// fault (syndrome `esr`) it just took at `frame.elr`: fills its EL1 exception registers and
/// makes `frame` resume at its vector (see `trapless_kernel_core::abort`).
pub fn inject_external_abort(esr: u64, frame: &mut GuestFrame) -> Result<(), Refusal> {
    let faulted = Faulted {
        esr,
        pc: frame.elr,
        pstate: frame.spsr,
        sctlr_el1: SCTLR_EL1.get(),
        vbar_el1: VBAR_EL1.get(),
        // FEAT_MTE2 and later: an exception sets PSTATE.TCO.
        mte: (ID_AA64PFR1_EL1.get() >> 8) & 0xf >= 2,
    };
    let injection = abort::synchronous_external_abort(&faulted)?;
    ESR_EL1.set(injection.esr_el1);
    FAR_EL1.set(FAR_EL2.get());
    ELR_EL1.set(injection.elr_el1);
    SPSR_EL1.set(injection.spsr_el1);
    frame.elr = injection.pc;
    frame.spsr = injection.pstate;
    Ok(())
}

/// This CPU's platform index, as [`configure_cpu`] recorded it.
pub fn current_cpu() -> usize {
    TPIDR_EL2.get() as usize
}

/// The system counter (`CNTPCT_EL0`).
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// Counter ticks per second (`CNTFRQ_EL0`).
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Reads or writes the GIC CPU-interface register a partition's access trapped on, on its
/// behalf: at EL2 these reach the same physical interface the partition's CPU would have.
pub mod gic_cpu_interface {
    use core::arch::asm;
    use trapless_kernel_core::gic_sysreg::GicRegister;

    /// The value of `register` (for registers that can be read; others read as 0).
    pub fn read(register: GicRegister) -> u64 {
        let value: u64;
        // SAFETY: reading these registers has no side effects.
        unsafe {
            match register {
                GicRegister::Pmr => asm!("mrs {}, icc_pmr_el1", out(reg) value, options(nostack)),
                GicRegister::Ctlr => asm!("mrs {}, icc_ctlr_el1", out(reg) value, options(nostack)),
                GicRegister::Rpr => asm!("mrs {}, icc_rpr_el1", out(reg) value, options(nostack)),
                _ => value = 0,
            }
        }
        value
    }

    /// Writes `value` to `register`. SGI registers must hold targets already restricted to
    /// the partition's own CPUs.
    pub fn write(register: GicRegister, value: u64) {
        // SAFETY: each write does on this CPU what the partition asked for itself, and the SGI
        // values were restricted to its own CPUs by the caller.
        unsafe {
            match register {
                GicRegister::Pmr => asm!("msr icc_pmr_el1, {}", in(reg) value, options(nostack)),
                GicRegister::Ctlr => asm!("msr icc_ctlr_el1, {}", in(reg) value, options(nostack)),
                GicRegister::Dir => asm!("msr icc_dir_el1, {}", in(reg) value, options(nostack)),
                GicRegister::Sgi1r => asm!("msr icc_sgi1r_el1, {}", in(reg) value, options(nostack)),
                GicRegister::Asgi1r => asm!("msr icc_asgi1r_el1, {}", in(reg) value, options(nostack)),
                GicRegister::Sgi0r => asm!("msr icc_sgi0r_el1, {}", in(reg) value, options(nostack)),
                GicRegister::Rpr => {}
            }
            asm!("isb", options(nostack));
        }
    }
}
