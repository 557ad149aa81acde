//! Data cache maintenance by virtual address, to the point of coherency.

use core::arch::asm;

/// The smallest data cache line, from `CTR_EL0.DminLine`.
fn line_size() -> usize {
    let ctr: u64;
    // SAFETY: CTR_EL0 is readable at EL1 and above and reading it has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Runs `dc <op>` on every line of `[start..start + len)`, then `dsb sy`.
macro_rules! by_line {
    ($op:literal, $start:expr, $len:expr) => {{
        let (start, len): (usize, usize) = ($start, $len);
        let line = line_size();
        let mut address = start & !(line - 1);
        while address < start + len {
            // SAFETY: data cache maintenance by VA does not change memory as any program sees
            // it, only where it is held; what `ivac` drops, the callers of `invalidate` vouch for.
            unsafe { asm!(concat!("dc ", $op, ", {}"), in(reg) address, options(nostack, preserves_flags)) };
            address += line;
        }
        // SAFETY: a barrier has no effect on memory contents.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    }};
}

/// Writes dirty lines of `[start..start + len)` back to memory and drops them from the cache,
/// so that a reader with its MMU or caches off sees what was written.
pub fn clean_invalidate(start: usize, len: usize) {
    by_line!("civac", start, len);
}

/// Drops `[start..start + len)` from the data cache without writing it back, so that data
/// written with the MMU off is not shadowed by stale lines once it is on.
///
/// # Safety
///
/// Any dirty line in the range is lost: the caller must know the cached copy is not newer than
/// memory (for example because everything in the range was written with the cache off).
pub unsafe fn invalidate(start: usize, len: usize) {
    by_line!("ivac", start, len);
}
