//! What a partition needs to be one side of a static virtio link (`docs/static-virtio.md`):
//! its window, the doorbells that ring the peer about each queue, and a handler for the LPIs the
//! peer's doorbells raise. The protocol itself is `trapless_virtio`'s.

use crate::doorbell::{Bell, DoorbellError};
use crate::facts::{Boot, Link};
use crate::irq::{self, IrqError};
use trapless_virtio::layout::MAX_QUEUES;
use trapless_virtio::window::{RawMemory, Window};

/// The link's window, as this partition sees it.
pub fn window(link: &Link) -> Window<RawMemory> {
    let size = (link.window.end - link.window.start) as usize;
    // SAFETY: the device tree gives this partition the window, and the runtime mapped it as
    // Normal memory at boot (trapless mapped it at stage 2). Others write it concurrently,
    // which `RawMemory` allows.
    let memory = unsafe { RawMemory::new(link.window.start as *mut u8, size) };
    Window::new(memory, link.window.start)
}

/// The doorbells that ring a link's peer, one per queue (none where the peer polls).
#[derive(Clone, Copy, Debug)]
pub struct Bells {
    bells: [Option<Bell>; MAX_QUEUES],
    /// Times one was rung.
    pub rung: u64,
}

impl Bells {
    pub fn new(boot: &Boot, link: &Link) -> Result<Self, DoorbellError> {
        let mut bells = [None; MAX_QUEUES];
        for (bell, event) in bells.iter_mut().zip(link.notify_events) {
            if let Some(event) = event {
                *bell = Some(crate::doorbell::bell_for_event(boot, event)?);
            }
        }
        Ok(Self { bells, rung: 0 })
    }

    /// Rings the peer about queue `queue`, if it listens for it.
    pub fn ring(&mut self, queue: usize) {
        if let Some(bell) = self.bells.get(queue).copied().flatten() {
            bell.ring();
            self.rung += 1;
        }
    }
}

/// Calls `handler(lpi)` whenever the peer rings this side of `link` about any queue. The CPU
/// that takes them (this side's first) must run [`irq::init_cpu`].
pub fn on_notify(link: &Link, handler: fn(u32)) -> Result<(), IrqError> {
    for (lpi, _) in link.notify_lpis.iter().flatten() {
        irq::register(*lpi, handler)?;
    }
    Ok(())
}
