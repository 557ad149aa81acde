//! The first thing every trapless binary does: relocate itself where it was loaded and clear
//! its BSS, before anything reads a pointer or a static.

use crate::image::R_AARCH64_RELATIVE;
use core::arch::naked_asm;

/// Applies the image's `R_AARCH64_RELATIVE` relocations (`.rela.dyn`, 24 bytes each) for the
/// address it runs at (it is linked at 0), then zeroes its BSS. Needs no stack and touches only
/// `x0`..`x5`, so it runs first, with the MMU off, before the stack exists.
///
/// # Safety
///
/// Call it once, first, from the image's entry point: nothing may have read a relocated pointer
/// or a BSS variable yet.
#[unsafe(naked)]
pub unsafe extern "C" fn relocate_and_clear_bss() {
    naked_asm!(
        "adrp x0, __image_start",
        "add x0, x0, :lo12:__image_start",
        "adrp x1, __rela_start",
        "add x1, x1, :lo12:__rela_start",
        "adrp x2, __rela_end",
        "add x2, x2, :lo12:__rela_end",
        "1:",
        "cmp x1, x2",
        "b.hs 2f",
        "ldp x3, x4, [x1], #16",
        "ldr x5, [x1], #8",
        "cmp x4, #{relative}",
        "b.ne 1b",
        "add x5, x5, x0",
        "str x5, [x0, x3]",
        "b 1b",
        "2:",
        "adrp x0, __bss_start",
        "add x0, x0, :lo12:__bss_start",
        "adrp x1, __bss_end",
        "add x1, x1, :lo12:__bss_end",
        "3:",
        "cmp x0, x1",
        "b.hs 4f",
        "stp xzr, xzr, [x0], #16",
        "b 3b",
        "4:",
        "ret",
        relative = const R_AARCH64_RELATIVE,
    );
}
