//! The device side of a split virtqueue (virtio 1.x §2.7), over a window it does not trust.
//!
//! Every index, length, address and chain the driver wrote is checked before use and read
//! once (into a local copy that is then used): the available index may run at most a queue
//! ahead, heads and `next` links must name descriptors, a chain may not be longer than
//! [`MAX_CHAIN`] (which also ends loops) nor hold more bytes than the buffer pool, indirect
//! descriptors are refused (no link offers them), device-writable buffers must follow the
//! readable ones, and every buffer must lie in the window's buffer pool. Any violation is a [`QueueError`]: the device stops serving that
//! link, and nothing outside the window is ever touched ([`Window`] checks every access).

use crate::layout::QueueLayout;
use crate::ring::{DevicePart, DeviceView, DriverPart, DriverView};
use crate::window::{Memory, OutOfWindow, Window};
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{Ordering, fence};

/// `VIRTQ_DESC_F_NEXT`, `WRITE`, `INDIRECT`.
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver asks not to be notified (without EVENT_IDX).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device asks not to be notified (without EVENT_IDX).
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Most descriptors in one chain.
pub const MAX_CHAIN: usize = 16;

/// One buffer of a chain, checked: it lies in the buffer pool (window offsets and lengths
/// fit 32 bits: windows lie below 4 GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffer {
    /// Window offset.
    pub offset: u32,
    pub len: u32,
}

/// A descriptor chain the driver made available, checked: its readable buffers, then its
/// writable ones. Small (it is moved by value through the device's loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The head descriptor's index: what goes back in the used ring.
    pub head: u16,
    count: u8,
    /// How many of the first buffers are readable.
    readable: u8,
    /// Bytes its readable buffers hold, and its writable ones.
    readable_bytes: u32,
    writable_bytes: u32,
    buffers: [Buffer; MAX_CHAIN],
}

impl Chain {
    /// No chain: a slot for [`DeviceQueue::pop_into`].
    pub const EMPTY: Self =
        Self { head: 0, count: 0, readable: 0, readable_bytes: 0, writable_bytes: 0, buffers: [Buffer { offset: 0, len: 0 }; MAX_CHAIN] };

    /// Its device-readable buffers.
    pub fn readable(&self) -> &[Buffer] {
        &self.buffers[..usize::from(self.readable)]
    }

    /// Its device-writable buffers.
    pub fn writable(&self) -> &[Buffer] {
        &self.buffers[usize::from(self.readable)..usize::from(self.count)]
    }

    /// Bytes its readable buffers hold.
    pub fn readable_bytes(&self) -> usize {
        self.readable_bytes as usize
    }

    /// Bytes its writable buffers hold.
    pub fn writable_bytes(&self) -> usize {
        self.writable_bytes as usize
    }

    /// A cursor over the concatenation of its readable buffers.
    pub fn reader(&self) -> Cursor<'_> {
        Cursor::new(self.readable(), self.readable_bytes as usize)
    }

    /// A cursor over the concatenation of its writable buffers.
    pub fn writer(&self) -> Cursor<'_> {
        Cursor::new(self.writable(), self.writable_bytes as usize)
    }
}

/// A position in the readable (or the writable) bytes of a chain.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    buffers: &'a [Buffer],
    /// Index into the buffers, and offset into that buffer.
    buffer: usize,
    at: usize,
    /// Bytes left.
    left: usize,
    /// Bytes read or written so far (not skipped).
    pub done: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buffers`, which hold `bytes` in all.
    fn new(buffers: &'a [Buffer], bytes: usize) -> Self {
        let mut cursor = Self { buffers, buffer: 0, at: 0, left: bytes, done: 0 };
        cursor.settle();
        cursor
    }

    /// Moves to the next buffer with bytes left.
    fn settle(&mut self) {
        while self.buffer < self.buffers.len() && self.at == self.buffers[self.buffer].len as usize {
            self.buffer += 1;
            self.at = 0;
        }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The window offset and length of the next contiguous piece, at most `len` bytes (none
    /// when the cursor is at its end).
    pub fn piece(&self, len: usize) -> Option<(usize, usize)> {
        let buffer = self.buffers.get(self.buffer)?;
        Some((buffer.offset as usize + self.at, (buffer.len as usize - self.at).min(len)))
    }

    /// Moves past `len` bytes of the current piece (at most what [`Self::piece`] gave), counted
    /// as done.
    pub fn advance(&mut self, len: usize) {
        self.at += len;
        self.left -= len;
        self.done += len;
        self.settle();
    }

    /// Copies up to `out.len()` bytes out of the chain; returns how many.
    pub fn read<M: Memory>(&mut self, window: &Window<M>, out: &mut [u8]) -> Result<usize, OutOfWindow> {
        let moved = self.transfer(out.len(), |buffer_offset, start, len| {
            window.read_bytes(buffer_offset, &mut out[start..start + len])
        })?;
        self.done += moved;
        Ok(moved)
    }

    /// Copies up to `data.len()` bytes into the chain; returns how many.
    pub fn write<M: Memory>(&mut self, window: &Window<M>, data: &[u8]) -> Result<usize, OutOfWindow> {
        let moved = self.transfer(data.len(), |buffer_offset, start, len| {
            window.write_bytes(buffer_offset, &data[start..start + len])
        })?;
        self.done += moved;
        Ok(moved)
    }

    /// Skips up to `len` bytes without touching them (they do not count in `done`); returns
    /// how many.
    pub fn skip(&mut self, len: usize) -> usize {
        self.transfer(len, |_, _, _| Ok(())).unwrap_or(0)
    }

    fn transfer(
        &mut self,
        len: usize,
        mut copy: impl FnMut(usize, usize, usize) -> Result<(), OutOfWindow>,
    ) -> Result<usize, OutOfWindow> {
        let mut moved = 0;
        while moved < len && self.buffer < self.buffers.len() {
            let buffer = self.buffers[self.buffer];
            let step = (buffer.len as usize - self.at).min(len - moved);
            copy(buffer.offset as usize + self.at, moved, step)?;
            moved += step;
            self.at += step;
            self.left -= step;
            self.settle();
        }
        Ok(moved)
    }
}

/// What a driver did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The available index ran more than a queue ahead of what the device took.
    AvailIndex { index: u16, next: u16 },
    /// A ring entry names a descriptor beyond the queue.
    Head(u16),
    /// A descriptor's `next` names a descriptor beyond the queue.
    Next(u16),
    /// A chain longer than [`MAX_CHAIN`] descriptors (or a loop).
    TooLong,
    /// A chain whose buffers add up to more bytes than the buffer pool holds.
    TooLarge,
    /// An indirect descriptor (no static virtio link offers them).
    Indirect,
    /// A readable buffer after a writable one.
    ReadAfterWrite,
    /// A buffer outside the window's buffer pool.
    Address { address: u64, len: u32 },
    OutOfWindow(OutOfWindow),
}

impl From<OutOfWindow> for QueueError {
    fn from(error: OutOfWindow) -> Self {
        Self::OutOfWindow(error)
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AvailIndex { index, next } => {
                write!(f, "available index {index} is more than a queue ahead of {next}")
            }
            Self::Head(index) => write!(f, "ring entry names descriptor {index}, beyond the queue"),
            Self::Next(index) => write!(f, "a descriptor links to {index}, beyond the queue"),
            Self::TooLong => write!(f, "a chain is longer than {MAX_CHAIN} descriptors, or loops"),
            Self::TooLarge => f.write_str("a chain's buffers add up to more than the buffer pool"),
            Self::Indirect => f.write_str("an indirect descriptor"),
            Self::ReadAfterWrite => f.write_str("a readable buffer after a writable one"),
            Self::Address { address, len } => {
                write!(f, "a {len}-byte buffer at {address:#x} is outside the buffer pool")
            }
            Self::OutOfWindow(error) => error.fmt(f),
        }
    }
}

/// `vring_need_event`: whether moving an index from `old` to `new` passes `event`.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The device's side of one queue.
#[derive(Clone, Debug)]
pub struct DeviceQueue {
    /// The queue's two parts, checked ([`DriverPart::NONE`] and [`DevicePart::NONE`] if its
    /// layout is no split ring of its size: then every access fails).
    driver_part: DriverPart,
    device_part: DevicePart,
    size: u16,
    pool: Range<usize>,
    event_idx: bool,
    /// The next available-ring entry to take.
    next_avail: u16,
    /// The next used-ring entry to fill.
    next_used: u16,
}

impl DeviceQueue {
    /// The device side of the queue at `layout` with `size` entries, whose buffers must lie in
    /// `pool`; `event_idx` says whether the link fixed `VIRTIO_F_EVENT_IDX`.
    pub fn new(layout: QueueLayout, size: u16, pool: Range<usize>, event_idx: bool) -> Self {
        let (driver_part, device_part) = match (DriverPart::of(&layout, size), DevicePart::of(&layout, size)) {
            (Some(driver), Some(device)) => (driver, device),
            _ => (DriverPart::NONE, DevicePart::NONE),
        };
        Self { driver_part, device_part, size, pool, event_idx, next_avail: 0, next_used: 0 }
    }

    /// The queue's descriptor table and available ring in `window`.
    fn driver<'a, M: Memory>(&self, window: &'a Window<M>) -> Result<DriverView<'a, M>, QueueError> {
        let part = &self.driver_part;
        part.view(window).ok_or_else(|| QueueError::OutOfWindow(OutOfWindow { offset: part.end(), len: 0 }))
    }

    /// The queue's used ring in `window`.
    fn device<'a, M: Memory>(&self, window: &'a Window<M>) -> Result<DeviceView<'a, M>, QueueError> {
        let part = &self.device_part;
        part.view(window).ok_or_else(|| QueueError::OutOfWindow(OutOfWindow { offset: part.end(), len: 0 }))
    }

    /// Forgets every position: the driver has started again with fresh rings.
    pub fn reset(&mut self) {
        self.next_avail = 0;
        self.next_used = 0;
    }

    /// Whether the driver has made chains available that the device has not taken.
    pub fn has_available<M: Memory>(&self, window: &Window<M>) -> Result<bool, QueueError> {
        Ok(self.driver(window)?.index() != self.next_avail)
    }

    /// Leaves the chain [`Self::pop`] last took for a later `pop` (which reads and checks it
    /// again).
    pub fn put_back(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    /// Takes the next chain the driver made available, if any.
    pub fn pop<M: Memory>(&mut self, window: &Window<M>) -> Result<Option<Chain>, QueueError> {
        let mut chain = Chain::EMPTY;
        Ok(self.pop_into(window, &mut chain)?.then_some(chain))
    }

    /// Takes the next chain the driver made available into `chain` (the device's own slot, so
    /// that nothing is moved), and says whether there was one; `chain` is left as it was if
    /// not.
    pub fn pop_into<M: Memory>(&mut self, window: &Window<M>, chain: &mut Chain) -> Result<bool, QueueError> {
        let ring = self.driver(window)?;
        let index = ring.index();
        let pending = index.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(false);
        }
        if pending > self.size {
            return Err(QueueError::AvailIndex { index, next: self.next_avail });
        }
        // The ring entries and descriptors were written before the index.
        fence(Ordering::Acquire);
        let head = ring.entry(self.next_avail);
        self.walk(window, &ring, head, chain)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(true)
    }

    fn walk<M: Memory>(&self, window: &Window<M>, ring: &DriverView<'_, M>, head: u16, chain: &mut Chain) -> Result<(), QueueError> {
        if head >= self.size {
            return Err(QueueError::Head(head));
        }
        (chain.head, chain.count, chain.readable, chain.readable_bytes, chain.writable_bytes) = (head, 0, 0, 0, 0);
        let mut index = head;
        let mut seen_writable = false;
        let mut total = 0usize;
        for slot in &mut chain.buffers {
            // Each of the descriptor's two words is read once.
            let descriptor = ring.descriptor(index);
            let (address, len, flags, next) = (descriptor.address, descriptor.len(), descriptor.flags(), descriptor.next());
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect);
            }
            let offset = window
                .offset_of(address, u64::from(len), &self.pool)
                .ok_or(QueueError::Address { address, len })?;
            // Buffers may overlap, so a chain could name the pool many times over: its bytes are
            // capped, which bounds the work one chain costs.
            total += len as usize;
            if total > self.pool.len() {
                return Err(QueueError::TooLarge);
            }
            let writable = flags & DESC_F_WRITE != 0;
            if seen_writable && !writable {
                return Err(QueueError::ReadAfterWrite);
            }
            seen_writable |= writable;
            // The pool lies in the window, below 4 GiB.
            *slot = Buffer { offset: offset as u32, len };
            chain.count += 1;
            // Both sums are at most `total`, which the pool's size bounds.
            if writable {
                chain.writable_bytes += len;
            } else {
                chain.readable += 1;
                chain.readable_bytes += len;
            }
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if next >= self.size {
                return Err(QueueError::Next(next));
            }
            index = next;
        }
        Err(QueueError::TooLong)
    }

    /// Gives chain `head` back to the driver, with `written` bytes written into its writable
    /// buffers.
    pub fn push<M: Memory>(&mut self, window: &Window<M>, head: u16, written: usize) -> Result<(), QueueError> {
        let ring = self.device(window)?;
        ring.set_element(self.next_used, u32::from(head), written as u32);
        self.next_used = self.next_used.wrapping_add(1);
        // The element before the index.
        fence(Ordering::Release);
        ring.set_index(self.next_used);
        Ok(())
    }

    /// The used index now: pass it to [`Self::should_notify`] after pushing more.
    pub fn used_index(&self) -> u16 {
        self.next_used
    }

    /// Whether the driver wants a notification for the buffers used since the used index was
    /// `before`: by its `used_event` with EVENT_IDX, else unless it set `NO_INTERRUPT`.
    pub fn should_notify<M: Memory>(&self, window: &Window<M>, before: u16) -> Result<bool, QueueError> {
        if before == self.next_used {
            return Ok(false);
        }
        // Our used index is visible before we read what the driver wants.
        fence(Ordering::SeqCst);
        let ring = self.driver(window)?;
        if self.event_idx {
            Ok(need_event(ring.used_event(), self.next_used, before))
        } else {
            Ok(ring.flags() & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Asks the driver to notify the next buffer it makes available (by `avail_event` with
    /// EVENT_IDX, else by clearing `NO_NOTIFY`). Returns whether buffers are already available:
    /// then take them before waiting, or that notification may never come.
    pub fn arm<M: Memory>(&self, window: &Window<M>) -> Result<bool, QueueError> {
        let ring = self.device(window)?;
        if self.event_idx {
            ring.set_avail_event(self.next_avail);
        } else {
            ring.set_flags(0);
        }
        fence(Ordering::SeqCst);
        self.has_available(window)
    }

    /// Asks the driver not to notify the buffers it makes available (the device polls, or has
    /// no use for them yet): with EVENT_IDX by setting `avail_event` a whole queue ahead of what
    /// the device has taken, which the driver's index, never more than a queue ahead, does not
    /// pass (a driver that compares without wrapping, as virtio-drivers does, is also quiet
    /// but for a queue's worth of indices every 65,536); else by setting `NO_NOTIFY`.
    pub fn suppress<M: Memory>(&self, window: &Window<M>) -> Result<(), QueueError> {
        let ring = self.device(window)?;
        if self.event_idx {
            ring.set_avail_event(self.next_avail.wrapping_add(self.size));
        } else {
            ring.set_flags(USED_F_NO_NOTIFY);
        }
        Ok(())
    }
}
