//! The fields of a split virtqueue (virtio 1.x §2.7) at fixed offsets, checked once instead of at
//! every access.
//!
//! A queue's two parts are its *driver part* (the descriptor table and the available ring, which
//! the driver writes) and its *device part* (the used ring, which the device writes). A
//! [`DriverPart`] or [`DevicePart`] is an offset and a queue size checked, when it is made, to be
//! aligned as the split ring needs and to end where [`DriverPart::end`] says; a view of it over a
//! window is only given when the window holds it whole ([`DriverPart::view`]). Every field a view
//! reads or writes then lies inside the window by construction: ring positions and descriptor
//! indices are taken modulo the queue size (a power of two), so no value a peer writes moves an
//! access, and a view costs one comparison to make rather than one per access.
//!
//! Views only move fields; what the values mean, and whether a peer's values are allowed, is for
//! the device side ([`crate::queue`]) and the driver side's guard ([`crate::guard`]) to check.

use crate::layout::{DESCRIPTOR_SIZE, QueueLayout, USED_ELEMENT_SIZE};
use crate::window::{Memory, Window};

/// A descriptor as it lies in a table: its address, then its length, flags and next index as one
/// little-endian word (`len | flags << 32 | next << 48`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDescriptor {
    pub address: u64,
    pub rest: u64,
}

impl RawDescriptor {
    /// The descriptor of these fields.
    pub fn new(address: u64, len: u32, flags: u16, next: u16) -> Self {
        Self { address, rest: u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48 }
    }

    pub fn len(&self) -> u32 {
        self.rest as u32
    }

    /// Whether it describes no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn flags(&self) -> u16 {
        (self.rest >> 32) as u16
    }

    pub fn next(&self) -> u16 {
        (self.rest >> 48) as u16
    }
}

/// Where a queue's descriptor table and available ring lie, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverPart {
    desc: usize,
    avail: usize,
    /// The queue size minus one (the size is a power of two).
    mask: u16,
    end: usize,
}

/// Where a queue's used ring lies, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePart {
    used: usize,
    mask: u16,
    end: usize,
}

impl DriverPart {
    /// No part: no window holds it, so it has no view.
    pub const NONE: Self = Self { desc: 0, avail: 0, mask: 0, end: usize::MAX };

    /// The descriptor table at `desc` and the available ring at `avail` of a queue of `size`
    /// entries, if `size` is a power of two, the table 16-byte aligned and the ring 2-byte
    /// aligned, and neither reaches past the end of the address space.
    pub fn new(desc: usize, avail: usize, size: u16) -> Option<Self> {
        let entries = usize::from(size);
        if !size.is_power_of_two() || !desc.is_multiple_of(DESCRIPTOR_SIZE) || !avail.is_multiple_of(2) {
            return None;
        }
        let table_end = desc.checked_add(DESCRIPTOR_SIZE * entries)?;
        let ring_end = avail.checked_add(6 + 2 * entries)?;
        Some(Self { desc, avail, mask: size - 1, end: table_end.max(ring_end) })
    }

    /// The driver part of the queue laid out as `layout`.
    pub fn of(layout: &QueueLayout, size: u16) -> Option<Self> {
        Self::new(layout.desc, layout.avail, size)
    }

    /// One past its last byte.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Its fields in `window`, if the window holds them.
    pub fn view<'a, M: Memory>(&self, window: &'a Window<M>) -> Option<DriverView<'a, M>> {
        (self.end <= window.len()).then_some(DriverView { memory: window.memory(), part: *self })
    }
}

impl DevicePart {
    /// No part: no window holds it, so it has no view.
    pub const NONE: Self = Self { used: 0, mask: 0, end: usize::MAX };

    /// The used ring at `used` of a queue of `size` entries, if `size` is a power of two, the ring
    /// 4-byte aligned, and it does not reach past the end of the address space.
    pub fn new(used: usize, size: u16) -> Option<Self> {
        if !size.is_power_of_two() || !used.is_multiple_of(4) {
            return None;
        }
        let end = used.checked_add(6 + USED_ELEMENT_SIZE * usize::from(size))?;
        Some(Self { used, mask: size - 1, end })
    }

    /// The device part of the queue laid out as `layout`.
    pub fn of(layout: &QueueLayout, size: u16) -> Option<Self> {
        Self::new(layout.used, size)
    }

    /// One past its last byte.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Its fields in `window`, if the window holds them.
    pub fn view<'a, M: Memory>(&self, window: &'a Window<M>) -> Option<DeviceView<'a, M>> {
        (self.end <= window.len()).then_some(DeviceView { memory: window.memory(), part: *self })
    }
}

/// A queue's descriptor table and available ring in a window that holds them.
pub struct DriverView<'a, M: Memory> {
    memory: &'a M,
    part: DriverPart,
}

/// A queue's used ring in a window that holds it.
pub struct DeviceView<'a, M: Memory> {
    memory: &'a M,
    part: DevicePart,
}

// Every offset below lies inside the part (an index or position is masked to the queue size) at
// the alignment `new` checked the part's start for, and `view` made sure the window holds the
// whole part: each access is in bounds and naturally aligned, as `Memory` requires.
impl<M: Memory> DriverView<'_, M> {
    /// Descriptor `index` (modulo the queue size), each of its two words read once.
    pub fn descriptor(&self, index: u16) -> RawDescriptor {
        let at = self.part.desc + DESCRIPTOR_SIZE * usize::from(index & self.part.mask);
        // SAFETY: see above; `at` is 16-byte aligned.
        unsafe { RawDescriptor { address: self.memory.read_u64(at), rest: self.memory.read_u64(at + 8) } }
    }

    /// Writes descriptor `index` (modulo the queue size).
    pub fn set_descriptor(&self, index: u16, descriptor: RawDescriptor) {
        let at = self.part.desc + DESCRIPTOR_SIZE * usize::from(index & self.part.mask);
        // SAFETY: see above; `at` is 16-byte aligned.
        unsafe {
            self.memory.write_u64(at, descriptor.address);
            self.memory.write_u64(at + 8, descriptor.rest);
        }
    }

    /// The available ring's `flags`.
    pub fn flags(&self) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.avail) }
    }

    pub fn set_flags(&self, flags: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.avail, flags) }
    }

    /// The available index.
    pub fn index(&self) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.avail + 2) }
    }

    pub fn set_index(&self, index: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.avail + 2, index) }
    }

    /// The ring entry at position `position` (modulo the queue size): a chain's head.
    pub fn entry(&self, position: u16) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.avail + 4 + 2 * usize::from(position & self.part.mask)) }
    }

    pub fn set_entry(&self, position: u16, head: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.avail + 4 + 2 * usize::from(position & self.part.mask), head) }
    }

    /// `used_event`: the used index the driver wants a notification for.
    pub fn used_event(&self) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.avail + 4 + 2 * (usize::from(self.part.mask) + 1)) }
    }

    pub fn set_used_event(&self, event: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.avail + 4 + 2 * (usize::from(self.part.mask) + 1), event) }
    }
}

impl<M: Memory> DeviceView<'_, M> {
    /// The used ring's `flags`.
    pub fn flags(&self) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.used) }
    }

    pub fn set_flags(&self, flags: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.used, flags) }
    }

    /// The used index.
    pub fn index(&self) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.used + 2) }
    }

    pub fn set_index(&self, index: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.used + 2, index) }
    }

    /// The used element at position `position` (modulo the queue size): its id and length, each
    /// read once.
    pub fn element(&self, position: u16) -> (u32, u32) {
        let at = self.part.used + 4 + USED_ELEMENT_SIZE * usize::from(position & self.part.mask);
        // SAFETY: see above; `at` is 4-byte aligned.
        unsafe { (self.memory.read_u32(at), self.memory.read_u32(at + 4)) }
    }

    pub fn set_element(&self, position: u16, id: u32, len: u32) {
        let at = self.part.used + 4 + USED_ELEMENT_SIZE * usize::from(position & self.part.mask);
        // SAFETY: see above; `at` is 4-byte aligned.
        unsafe {
            self.memory.write_u32(at, id);
            self.memory.write_u32(at + 4, len);
        }
    }

    /// `avail_event`: the available index the device wants a notification for.
    pub fn avail_event(&self) -> u16 {
        // SAFETY: see above.
        unsafe { self.memory.read_u16(self.part.used + 4 + USED_ELEMENT_SIZE * (usize::from(self.part.mask) + 1)) }
    }

    pub fn set_avail_event(&self, event: u16) {
        // SAFETY: see above.
        unsafe { self.memory.write_u16(self.part.used + 4 + USED_ELEMENT_SIZE * (usize::from(self.part.mask) + 1), event) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::CellMemory;
    use std::cell::Cell;

    #[test]
    fn a_part_is_made_only_aligned_and_a_view_only_where_the_window_holds_it() {
        assert_eq!(DriverPart::new(0x1000, 0x1100, 16).map(|part| part.end()), Some(0x1100 + 6 + 32));
        assert_eq!(DriverPart::new(0x1008, 0x1100, 16), None, "a table off 16 bytes");
        assert_eq!(DriverPart::new(0x1000, 0x1101, 16), None, "a ring off 2 bytes");
        assert_eq!(DriverPart::new(0x1000, 0x1100, 12), None, "not a power of two");
        assert_eq!(DriverPart::new(usize::MAX - 15, 0, 16), None, "past the address space");
        assert_eq!(DevicePart::new(0x2000, 16).map(|part| part.end()), Some(0x2000 + 6 + 128));
        assert_eq!(DevicePart::new(0x2002, 16), None);
        let cells: Vec<Cell<u8>> = (0..0x2000 + 6 + 128).map(|_| Cell::new(0)).collect();
        let window = Window::new(CellMemory(&cells), 0);
        assert!(DevicePart::new(0x2000, 16).unwrap().view(&window).is_some());
        assert!(DevicePart::new(0x2000, 32).unwrap().view(&window).is_none(), "one element short");
    }

    #[test]
    fn fields_land_where_the_split_ring_puts_them_and_positions_wrap() {
        let cells: Vec<Cell<u8>> = (0..0x3000).map(|_| Cell::new(0)).collect();
        let window = Window::new(CellMemory(&cells), 0);
        let layout = QueueLayout { desc: 0x1000, avail: 0x1080, used: 0x2000, end: 0x3000 };
        let (driver, device) = (DriverPart::of(&layout, 8).unwrap(), DevicePart::of(&layout, 8).unwrap());
        let (driver, device) = (driver.view(&window).unwrap(), device.view(&window).unwrap());
        driver.set_descriptor(9, RawDescriptor::new(0xdead_beef, 512, 3, 7));
        assert_eq!(window.read_u64(0x1010), Ok(0xdead_beef), "index 9 is index 1");
        assert_eq!((window.read_u32(0x1018), window.read_u16(0x101c), window.read_u16(0x101e)), (Ok(512), Ok(3), Ok(7)));
        let descriptor = driver.descriptor(1);
        assert_eq!((descriptor.address, descriptor.len(), descriptor.flags(), descriptor.next()), (0xdead_beef, 512, 3, 7));
        driver.set_entry(10, 5);
        driver.set_index(11);
        driver.set_used_event(4);
        assert_eq!((window.read_u16(0x1080 + 4 + 4), window.read_u16(0x1082), window.read_u16(0x1080 + 4 + 16)), (Ok(5), Ok(11), Ok(4)));
        device.set_element(65535, 2, 76);
        device.set_avail_event(3);
        assert_eq!((window.read_u32(0x2004 + 56), window.read_u32(0x2008 + 56)), (Ok(2), Ok(76)), "position 65535 is 7");
        assert_eq!(window.read_u16(0x2004 + 64), Ok(3));
        assert_eq!((device.element(7), device.avail_event()), ((2, 76), 3));
    }
}
