//! The heap (feature `alloc`): the partition's RAM after its device tree, for guests that
//! allocate (the virtio-drivers drivers do).

use crate::facts::Boot;
use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands the RAM from the end of the device tree to the end of memory to the allocator.
/// trapless puts the tree after the image (and its BSS and stacks), so nothing else is there.
pub(crate) fn init(boot: &Boot) {
    let start = (boot.dtb.as_ptr() as usize + boot.dtb.len()).next_multiple_of(4096);
    let end = boot.memory.end as usize;
    if start < end {
        // SAFETY: the range is this partition's RAM and holds nothing (see above); this runs
        // once, on the boot CPU, with the MMU on.
        unsafe { HEAP.lock().init(start, end - start) };
    }
}
