//! Turning the MMU on with a [`crate::blockmap::IdentityMap`], in EL2 (the kernel) or EL1 (the
//! guest runtime): the register values and the one routine, written once for both regimes.

use crate::blockmap::TCR_T0SZ;

/// Write-back read/write-allocate, inner-shareable table walks (`IRGN0`, `ORGN0`, `SH0`), 4 KiB
/// granule (`TG0` = 0), 39-bit addresses.
const TCR_WALKS: u64 = TCR_T0SZ | (0b01 << 8) | (0b01 << 10) | (0b11 << 12);

/// `TCR_EL2` (non-VHE) without `PS`: the walk attributes and the RES1 bits 31 and 23.
pub const TCR_EL2: u64 = TCR_WALKS | (1 << 23) | (1 << 31);
/// Where `TCR_EL2.PS` goes.
pub const TCR_EL2_PS_SHIFT: u64 = 16;
/// `TCR_EL1` without `IPS`: TTBR1 walks off (`EPD1`), with a valid granule in `TG1` all the same.
pub const TCR_EL1: u64 = TCR_WALKS | (1 << 23) | (0b10 << 30);
/// Where `TCR_EL1.IPS` goes.
pub const TCR_EL1_IPS_SHIFT: u64 = 32;

/// `SCTLR_ELx.M`, `C`, `SA` and `I`: MMU, data cache, SP alignment check, instruction cache.
const SCTLR_ON: u64 = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12);
/// The RES1 bits of `SCTLR_EL2` in the non-VHE layout.
pub const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// The RES1 bits of `SCTLR_EL1`, and its value at reset with the MMU off: what a partition's
/// CPU starts with.
pub const SCTLR_EL1_RES1: u64 = 0x30d0_0800;
/// `SCTLR_EL2` once the MMU is on.
pub const SCTLR_EL2_ON: u64 = SCTLR_EL2_RES1 | SCTLR_ON;
/// `SCTLR_EL1` once the MMU is on.
pub const SCTLR_EL1_ON: u64 = SCTLR_EL1_RES1 | SCTLR_ON;

/// Largest output size the tables need: 48 bits (`PS`/`IPS` = 5), or less if that is all the
/// CPU has (`ID_AA64MMFR0_EL1.PARange`).
#[cfg(target_arch = "aarch64")]
const MAX_PA_RANGE: u64 = 5;

#[cfg(target_arch = "aarch64")]
macro_rules! enable_mmu {
    ($(#[$doc:meta])* $name:ident, $el:literal, $tcr:expr, $ps_shift:expr, $sctlr:expr, $tlbi:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// `root` must be a complete identity map of everything the caller touches from now on
        /// (its code, its stack, its data), and the caller's cached data must not be newer than
        /// memory if it ran with the caches off.
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name(root: u64) {
            core::arch::naked_asm!(
                "ldr x1, ={mair}",
                concat!("msr mair_", $el, ", x1"),
                "mrs x2, id_aa64mmfr0_el1",
                "and x2, x2, #0xf",
                "mov x3, #{max_pa_range}",
                "cmp x2, x3",
                "csel x2, x2, x3, ls",
                "ldr x1, ={tcr}",
                "lsl x2, x2, #{ps_shift}",
                "orr x1, x1, x2",
                concat!("msr tcr_", $el, ", x1"),
                concat!("msr ttbr0_", $el, ", x0"),
                "isb",
                concat!("tlbi ", $tlbi),
                "dsb nsh",
                "isb",
                "ldr x1, ={sctlr}",
                concat!("msr sctlr_", $el, ", x1"),
                "isb",
                "ret",
                mair = const crate::blockmap::MAIR,
                max_pa_range = const MAX_PA_RANGE,
                tcr = const $tcr,
                ps_shift = const $ps_shift,
                sctlr = const $sctlr,
            )
        }
    };
}

#[cfg(target_arch = "aarch64")]
enable_mmu!(
    /// Turns the EL2 MMU on with the tables at `root` (`x0`). Uses no stack and `x0`..`x3` only.
    enable_el2, "el2", TCR_EL2, TCR_EL2_PS_SHIFT, SCTLR_EL2_ON, "alle2"
);

#[cfg(target_arch = "aarch64")]
enable_mmu!(
    /// Turns the EL1 MMU on with the tables at `root` (`x0`). Uses no stack and `x0`..`x3` only.
    enable_el1, "el1", TCR_EL1, TCR_EL1_IPS_SHIFT, SCTLR_EL1_ON, "vmalle1"
);
