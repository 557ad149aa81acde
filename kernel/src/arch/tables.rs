//! Memory the GIC reads and writes by itself (LPI tables, ITS tables, the command queue): how
//! it is allocated, which attributes the GIC is told to use, and how software's writes reach it.

use alloc::alloc::{Layout, alloc_zeroed};
use trapless_arm64::cache;

pub use trapless_kernel_core::its::TableMemory;

/// Zeroed memory for a GIC table, for good (the GIC uses it until the machine powers off).
pub fn allocate_zeroed(bytes: usize, align: usize) -> usize {
    let layout = Layout::from_size_align(bytes, align).expect("GIC table sizes are powers of two");
    // SAFETY: the layout has a non-zero size.
    let table = unsafe { alloc_zeroed(layout) };
    assert!(!table.is_null(), "the EL2 heap has no room for a {bytes}-byte GIC table");
    table as usize
}

/// Programs a table register through `write` (which writes it for the given attributes and
/// returns what it reads back), as [`TableMemory::negotiate`] decides for a GIC that does or
/// does not snoop the CPUs' caches. Returns the attributes in force.
pub fn program(gic_snoops: bool, write: &dyn Fn(TableMemory) -> u64) -> TableMemory {
    TableMemory::negotiate(gic_snoops, &mut |memory| write(memory))
}

/// Makes software's writes to `[start..start + len)` visible to the GIC: a barrier for a GIC
/// that shares the caches, a clean to the point of coherency as well for one that does not.
pub fn publish(start: usize, len: usize, memory: TableMemory) {
    if memory == TableMemory::NonCacheable {
        cache::clean_invalidate(start, len);
    }
    barrier();
}

/// Completes earlier memory writes before later GIC register writes.
pub fn barrier() {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}
