//! Self-relocation of a position-independent image, run before anything else touches memory.

use core::arch::naked_asm;

use crate::image::R_AARCH64_RELATIVE;

/// Applies the `R_AARCH64_RELATIVE` entries of `.rela.dyn` (`[start..end)`, 24 bytes each) for
/// an image linked at 0 and loaded at `base`. Needs no stack and touches only `x0`..`x5`, so it
/// can run with the MMU off before the stack exists.
///
/// # Safety
///
/// `base` must be where the image is loaded, `[start..end)` its own relocation table, and no
/// code may have read a relocated pointer yet.
#[unsafe(naked)]
pub unsafe extern "C" fn relocate(base: usize, start: usize, end: usize) {
    naked_asm!(
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
        "ret",
        relative = const R_AARCH64_RELATIVE,
    );
}
