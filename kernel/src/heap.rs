//! The EL2 heap (buddy_system_allocator): the rest of the kernel region after the image and
//! its payload. It holds the stage-2 tables and the boot-time bookkeeping.

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands `[start..end)` to the allocator. Must run once, with the MMU on.
///
/// # Safety
///
/// The range must be RAM that nothing else uses, for the rest of the kernel's life.
pub unsafe fn init(start: usize, end: usize) {
    // SAFETY: our caller promised the range is ours alone.
    unsafe { HEAP.lock().init(start, end - start) };
}
