//! The driver side's allocator for a window's buffer pool: power-of-two blocks (64 bytes and
//! up), each aligned to its size from the pool's start, with a free list per size. Its
//! bookkeeping is private memory, never the window (a hostile device could otherwise steer it).
//!
//! Allocating and freeing a size the driver has used before is O(1): a pop or a push on that
//! size's list. A size with an empty list splits the smallest larger free block (at most one
//! split per size between them, found with one bit scan). Freed blocks are not merged at once;
//! only when nothing free is large enough are the lists merged back into the largest blocks
//! they make up (O(free blocks · log)), then the allocation is tried again. The driver's
//! allocations are its own (the device has no say in them), so that slow path is as rare as the
//! driver makes it.

use alloc::vec;
use alloc::vec::Vec;

/// The smallest block: a cache line.
pub const MIN_BLOCK: usize = 64;
const MIN_ORDER: u32 = MIN_BLOCK.trailing_zeros();
/// Sizes up to 2^MAX_ORDER bytes (1 GiB: any window).
const MAX_ORDER: u32 = 30;
const ORDERS: usize = (MAX_ORDER - MIN_ORDER + 1) as usize;

/// A pool of `len` bytes at `start`.
#[derive(Clone, Debug)]
pub struct Pool {
    start: usize,
    len: usize,
    /// Free blocks by order (offsets from `start`).
    free: [Vec<u32>; ORDERS],
    /// Bit `order`: that list is not empty.
    nonempty: u32,
}

/// The order of a block that holds `len` bytes.
#[inline]
fn order_for(len: usize) -> Option<usize> {
    let size = len.max(1).checked_next_power_of_two()?.max(MIN_BLOCK);
    let order = size.trailing_zeros();
    (order <= MAX_ORDER).then(|| (order - MIN_ORDER) as usize)
}

impl Pool {
    /// The pool of `len` bytes at address `start` (a whole number of [`MIN_BLOCK`]s is used).
    pub fn new(start: usize, len: usize) -> Self {
        let mut pool = Self { start, len: len.min(u32::MAX as usize), free: core::array::from_fn(|_| Vec::new()), nonempty: 0 };
        pool.carve();
        pool
    }

    /// Makes the whole pool free again, in the largest aligned blocks it holds.
    fn carve(&mut self) {
        self.free.iter_mut().for_each(Vec::clear);
        self.nonempty = 0;
        let mut offset = 0;
        let end = self.len / MIN_BLOCK * MIN_BLOCK;
        while offset < end {
            // The largest block aligned at `offset` that fits before `end`.
            let mut order = ORDERS - 1;
            while order > 0 && (offset % (MIN_BLOCK << order) != 0 || offset + (MIN_BLOCK << order) > end) {
                order -= 1;
            }
            self.push(order, offset);
            offset += MIN_BLOCK << order;
        }
    }

    #[inline]
    fn push(&mut self, order: usize, offset: usize) {
        self.free[order].push(offset as u32);
        self.nonempty |= 1 << order;
    }

    #[inline]
    fn pop(&mut self, order: usize) -> Option<usize> {
        let offset = self.free[order].pop()?;
        if self.free[order].is_empty() {
            self.nonempty &= !(1 << order);
        }
        Some(offset as usize)
    }

    /// `len` bytes at an address aligned to `align` (a power of two): a block of the smallest
    /// order that holds them. A block is aligned to its size from the pool's start, which is
    /// enough when the start is aligned to `align` and the block is no smaller than `align`;
    /// otherwise the free blocks are searched for an aligned one. A size freed before is a pop,
    /// inline; the rest (splitting, merging, searching) is out of line.
    #[inline]
    pub fn allocate(&mut self, len: usize, align: usize) -> Option<usize> {
        let order = order_for(len)?;
        if self.nonempty & (1 << order) != 0 && self.start.is_multiple_of(align) && (MIN_BLOCK << order) >= align {
            return self.pop(order).map(|offset| self.start + offset);
        }
        self.allocate_split(order, align)
    }

    /// [`Self::allocate`] with no free block of the order at hand.
    #[cold]
    #[inline(never)]
    fn allocate_split(&mut self, order: usize, align: usize) -> Option<usize> {
        if !self.start.is_multiple_of(align) || (MIN_BLOCK << order) < align {
            return self.allocate_slow(order, align);
        }
        match self.take(order) {
            Some(offset) => Some(self.start + offset),
            None => {
                self.merge();
                self.take(order).map(|offset| self.start + offset)
            }
        }
    }

    /// Takes a free block of `order`, splitting a larger one if need be.
    fn take(&mut self, order: usize) -> Option<usize> {
        if let Some(offset) = self.pop(order) {
            return Some(offset);
        }
        let larger = self.nonempty & !((1u32 << order) - 1);
        if larger == 0 {
            return None;
        }
        let mut from = larger.trailing_zeros() as usize;
        let offset = self.pop(from)?;
        // Keep the first half, free the second, down to `order`.
        while from > order {
            from -= 1;
            self.push(from, offset + (MIN_BLOCK << from));
        }
        Some(offset)
    }

    /// An allocation whose alignment the blocks' own does not give: takes the first free block
    /// of `order` or larger whose address is aligned (trapless's pools start on a page, and ask
    /// for no more alignment than their size, so only the tests come here).
    fn allocate_slow(&mut self, order: usize, align: usize) -> Option<usize> {
        for attempt in 0..2 {
            for from in order..ORDERS {
                if let Some(at) = self.free[from].iter().position(|&offset| (self.start + offset as usize).is_multiple_of(align)) {
                    let offset = self.free[from].swap_remove(at) as usize;
                    if self.free[from].is_empty() {
                        self.nonempty &= !(1 << from);
                    }
                    let mut split = from;
                    while split > order {
                        split -= 1;
                        self.push(split, offset + (MIN_BLOCK << split));
                    }
                    return Some(self.start + offset);
                }
            }
            if attempt == 0 {
                self.merge();
            }
        }
        None
    }

    /// Whether the `len` bytes at `address` lie in the pool.
    #[inline]
    pub fn contains(&self, address: usize, len: usize) -> bool {
        address.checked_sub(self.start).is_some_and(|offset| offset.checked_add(len).is_some_and(|end| end <= self.len))
    }

    /// Gives back the block at `address` that an allocation of `len` bytes returned.
    #[inline]
    pub fn free(&mut self, address: usize, len: usize) {
        let Some(order) = order_for(len) else { return };
        let Some(offset) = address.checked_sub(self.start) else { return };
        self.push(order, offset);
    }

    /// Merges free buddies into larger blocks, as far as they go.
    fn merge(&mut self) {
        for order in 0..ORDERS - 1 {
            let size = (MIN_BLOCK << order) as u32;
            let mut blocks = core::mem::take(&mut self.free[order]);
            blocks.sort_unstable();
            let mut kept = Vec::with_capacity(blocks.len());
            let mut index = 0;
            while index < blocks.len() {
                let offset = blocks[index];
                if offset.is_multiple_of(2 * size) && blocks.get(index + 1) == Some(&(offset + size)) {
                    self.free[order + 1].push(offset);
                    index += 2;
                } else {
                    kept.push(offset);
                    index += 1;
                }
            }
            self.free[order] = kept;
        }
        self.nonempty = 0;
        for (order, list) in self.free.iter().enumerate() {
            if !list.is_empty() {
                self.nonempty |= 1 << order;
            }
        }
    }

    /// Bytes free, for the tests.
    #[cfg(test)]
    fn free_bytes(&self) -> usize {
        self.free.iter().enumerate().map(|(order, list)| list.len() * (MIN_BLOCK << order)).sum()
    }
}

/// What the device wrote into each receive bounce block, by the block's window offset (in the
/// pool, over [`MIN_BLOCK`]): the driver side copies back only those bytes.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pool: core::ops::Range<usize>,
    bytes: Vec<u32>,
}

impl Written {
    /// A table for the pool at window offsets `pool`.
    pub fn new(pool: core::ops::Range<usize>) -> Self {
        let blocks = pool.len() / MIN_BLOCK;
        Self { pool, bytes: vec![u32::MAX; blocks] }
    }

    fn slot(&mut self, offset: usize) -> Option<&mut u32> {
        let index = offset.checked_sub(self.pool.start)? / MIN_BLOCK;
        self.bytes.get_mut(index)
    }

    /// The device wrote `len` bytes into the block at window offset `offset`.
    pub fn set(&mut self, offset: usize, len: u32) {
        if let Some(slot) = self.slot(offset) {
            *slot = len;
        }
    }

    /// Bytes to copy back from the block at window offset `offset`, at most `len`, and forgets
    /// them: all `len` unless the device's count was taken.
    pub fn take(&mut self, offset: usize, len: usize) -> usize {
        match self.slot(offset) {
            Some(slot) => (core::mem::replace(slot, u32::MAX) as usize).min(len),
            None => len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_disjoint_and_reused_at_once() {
        let mut pool = Pool::new(0x1000_0000, 0x1_0000);
        let a = pool.allocate(100, 16).unwrap();
        let b = pool.allocate(2048, 16).unwrap();
        let page = pool.allocate(4096, 4096).unwrap();
        assert_eq!(a % 128, 0);
        assert_eq!(b % 2048, 0);
        assert_eq!(page % 4096, 0);
        assert!(a + 128 <= b || b + 2048 <= a);
        pool.free(b, 2048);
        assert_eq!(pool.allocate(2000, 16), Some(b), "the freed block of that size comes back first");
        pool.free(a, 100);
        pool.free(b, 2000);
        pool.free(page, 4096);
        assert_eq!(pool.free_bytes(), 0x1_0000);
        assert_eq!(pool.allocate(0x1_0000, 16), Some(0x1000_0000), "merged back whole");
        assert_eq!(pool.allocate(64, 16), None, "nothing left");
    }

    #[test]
    fn a_pool_that_is_not_a_power_of_two_is_all_used() {
        // 3 pages and 64 bytes.
        let mut pool = Pool::new(0x2000_0000, 3 * 4096 + 64);
        assert_eq!(pool.free_bytes(), 3 * 4096 + 64);
        let mut got = Vec::new();
        while let Some(address) = pool.allocate(64, 16) {
            got.push(address);
        }
        assert_eq!(got.len(), (3 * 4096 + 64) / 64);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), (3 * 4096 + 64) / 64, "disjoint");
    }

    #[test]
    fn many_sizes_in_and_out_never_overlap_and_never_leak() {
        let start = 0x4000_0000;
        let len = 256 * 1024;
        let mut pool = Pool::new(start, len);
        let mut live: Vec<(usize, usize)> = Vec::new();
        let mut seed = 0x1234_5678u64;
        for step in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if !seed.is_multiple_of(3) || live.is_empty() {
                let size = 1 + (seed >> 8) as usize % 9000;
                let align = if seed & 0x10 != 0 { 4096 } else { 16 };
                if let Some(address) = pool.allocate(size, align) {
                    assert!(address.is_multiple_of(align) && address >= start && address + size <= start + len, "step {step}");
                    for &(other, other_len) in &live {
                        assert!(address + size <= other || other + other_len <= address, "step {step}: overlap");
                    }
                    live.push((address, size));
                }
            } else {
                let (address, size) = live.swap_remove((seed >> 20) as usize % live.len());
                pool.free(address, size);
            }
        }
        for (address, size) in live.drain(..) {
            pool.free(address, size);
        }
        pool.merge();
        assert_eq!(pool.free_bytes(), len);
        assert_eq!(pool.allocate(len, 4096), Some(start));
    }

    #[test]
    fn an_alignment_the_blocks_do_not_give_is_searched_for_and_never_faked() {
        // A pool that starts off a page boundary: its blocks are never page aligned.
        let mut pool = Pool::new(0x1000_0040, 256 * MIN_BLOCK);
        assert_eq!(pool.allocate(4096, 4096), None);
        // Its 64-byte blocks are 64-byte aligned.
        assert_eq!(pool.allocate(64, 64).map(|address| address % 64), Some(0));
    }

    #[test]
    fn only_what_the_device_wrote_is_copied_back() {
        let mut written = Written::new(0x4000..0x8000);
        assert_eq!(written.take(0x4080, 2048), 2048, "unknown: all of it");
        written.set(0x4080, 76);
        assert_eq!(written.take(0x4080, 2048), 76);
        assert_eq!(written.take(0x4080, 2048), 2048, "taken once");
        written.set(0x4000, 5000);
        assert_eq!(written.take(0x4000, 2048), 2048, "never more than the buffer");
        written.set(0x100, 1);
        assert_eq!(written.take(0x100, 10), 10, "outside the pool: unknown");
    }
}
