//! Where everything lies in a window: both sides compute this from the queue count, queue size
//! and window size their device trees give, so nothing is read back from the other side.
//!
//! Each queue is a split virtqueue (virtio 1.x, §2.7): its descriptor table (16 bytes per
//! entry, 16-byte aligned), then straight after it the available ring (flags, idx, N entries,
//! `used_event`; 2-byte aligned), then on the next page the used ring (flags, idx, N
//! 8-byte elements, `avail_event`; 4-byte aligned). The next queue starts on the page after
//! that; the buffer pool takes the rest of the window.

use crate::binding::{MAX_QUEUE_SIZE, offset};
use core::fmt;
use core::ops::Range;

/// The page size of the layout: ring areas start on page boundaries.
pub const PAGE: usize = 4096;
/// Most queues a window holds.
pub const MAX_QUEUES: usize = 4;
/// The smallest buffer pool a link may have: room for a few pages of requests in flight.
pub const MIN_POOL: usize = 64 * 1024;

/// Bytes of one descriptor.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Bytes of one used-ring element.
pub const USED_ELEMENT_SIZE: usize = 8;

/// Where one queue's parts lie (offsets from the window's start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLayout {
    /// The descriptor table.
    pub desc: usize,
    /// The available ring (driver area).
    pub avail: usize,
    /// The used ring (device area).
    pub used: usize,
    /// One past the queue's last byte (page aligned).
    pub end: usize,
}

impl QueueLayout {
    /// Offset of the available ring's `used_event` field for a queue of `size`.
    pub fn used_event(&self, size: u16) -> usize {
        self.avail + 4 + 2 * usize::from(size)
    }

    /// Offset of the used ring's `avail_event` field for a queue of `size`.
    pub fn avail_event(&self, size: u16) -> usize {
        self.used + 4 + USED_ELEMENT_SIZE * usize::from(size)
    }
}

/// The whole window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub queue_count: u16,
    pub queue_size: u16,
    pub queues: [QueueLayout; MAX_QUEUES],
    /// The buffer pool.
    pub pool: Range<usize>,
    pub window_size: usize,
}

impl Layout {
    /// The queues in use.
    pub fn queues(&self) -> &[QueueLayout] {
        &self.queues[..usize::from(self.queue_count)]
    }
}

/// Why a window cannot hold a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The queue size is 0, not a power of two, or above 32768.
    QueueSize(u32),
    /// More queues than a window holds.
    QueueCount(u16),
    /// The window is not a whole number of pages, or not below 4 GiB.
    WindowSize(usize),
    /// The queues leave less than [`MIN_POOL`] for buffers.
    TooSmall { queues_end: usize, window_size: usize },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::QueueSize(size) => {
                write!(f, "queue size {size} is not a power of two from 1 to {MAX_QUEUE_SIZE}")
            }
            Self::QueueCount(count) => write!(f, "{count} queues are more than the {MAX_QUEUES} a window holds"),
            Self::WindowSize(size) => write!(f, "a window of {size:#x} bytes is not a whole number of 4 KiB pages"),
            Self::TooSmall { queues_end, window_size } => write!(
                f,
                "the header and queues take {queues_end:#x} bytes of the {window_size:#x}-byte window, leaving less than the {MIN_POOL:#x} bytes a buffer pool needs"
            ),
        }
    }
}

const fn align_up(value: usize, align: usize) -> usize {
    value.div_ceil(align) * align
}

/// Lays out a window of `window_size` bytes for `queue_count` queues of `queue_size` entries.
pub fn compute(queue_count: u16, queue_size: u32, window_size: usize) -> Result<Layout, LayoutError> {
    if queue_size == 0 || !queue_size.is_power_of_two() || queue_size > u32::from(MAX_QUEUE_SIZE) {
        return Err(LayoutError::QueueSize(queue_size));
    }
    if usize::from(queue_count) > MAX_QUEUES {
        return Err(LayoutError::QueueCount(queue_count));
    }
    // Offsets in a window fit 32 bits (the device side keeps its buffers' that way).
    if !window_size.is_multiple_of(PAGE) || window_size as u64 > u64::from(u32::MAX) {
        return Err(LayoutError::WindowSize(window_size));
    }
    let entries = queue_size as usize;
    let mut queues = [QueueLayout::default(); MAX_QUEUES];
    let mut next = offset::QUEUES;
    for queue in &mut queues[..usize::from(queue_count)] {
        let desc = next;
        let avail = desc + DESCRIPTOR_SIZE * entries;
        let used = align_up(avail + 6 + 2 * entries, PAGE);
        let end = align_up(used + 6 + USED_ELEMENT_SIZE * entries, PAGE);
        *queue = QueueLayout { desc, avail, used, end };
        next = end;
    }
    if next + MIN_POOL > window_size {
        return Err(LayoutError::TooSmall { queues_end: next, window_size });
    }
    Ok(Layout { queue_count, queue_size: queue_size as u16, queues, pool: next..window_size, window_size })
}
