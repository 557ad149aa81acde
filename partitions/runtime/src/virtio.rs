//! What a partition needs to be one side of a static virtio link (`docs/static-virtio.md`):
//! its window, the doorbells that ring the peer about each queue, and a handler for the LPIs the
//! peer's doorbells raise. The protocol itself is `trapless_virtio`'s.

use crate::doorbell::{Bell, DoorbellError};
use crate::facts::{Boot, Link, Transport};
use trapless_abi::hypercall::LINK_NOTIFY;
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

/// How this side of a link notifies the peer about a queue.
#[derive(Clone, Copy, Debug)]
enum Ring {
    /// A doorbell (trap-free).
    Doorbell(Bell),
    /// Hypercall `LINK_NOTIFY` with this link number: the device of a `mmio-trap` link.
    Hypercall(u32),
}

/// What rings a link's peer, one per queue (none where the peer polls).
#[derive(Clone, Copy, Debug)]
pub struct Bells {
    rings: [Option<Ring>; MAX_QUEUES],
    /// Times one was rung.
    pub rung: u64,
}

impl Bells {
    pub fn new(boot: &Boot, link: &Link) -> Result<Self, DoorbellError> {
        let mut rings = [None; MAX_QUEUES];
        for (queue, ring) in rings.iter_mut().enumerate().take(usize::from(link.queue_count)) {
            *ring = match (&link.transport, link.notify_events[queue]) {
                (Transport::Hypercall(number), _) => Some(Ring::Hypercall(*number)),
                (_, Some(event)) => Some(Ring::Doorbell(crate::doorbell::bell_for_event(boot, event)?)),
                (_, None) => None,
            };
        }
        Ok(Self { rings, rung: 0 })
    }

    /// Rings the peer about queue `queue`, if it listens for it.
    pub fn ring(&mut self, queue: usize) {
        match self.rings.get(queue).copied().flatten() {
            Some(Ring::Doorbell(bell)) => bell.ring(),
            Some(Ring::Hypercall(number)) => {
                // What the driver reads after the interrupt was written before it (EL2 raises
                // it on another CPU).
                // SAFETY: a barrier has no operands.
                unsafe { core::arch::asm!("dsb st", options(nostack, preserves_flags)) };
                let mut args = [0u64; 17];
                args[0] = u64::from(number);
                args[1] = queue as u64;
                let _ = smccc::hvc64(LINK_NOTIFY, args);
            }
            None => return,
        }
        self.rung += 1;
    }
}

/// Calls `handler(intid)` whenever the peer notifies this side of `link` about any queue: the
/// LPIs of its doorbells, or for the driver of a `mmio-trap` link the SPI EL2 raises. The CPU
/// that takes them (this side's first) must run [`irq::init_cpu`].
pub fn on_notify(link: &Link, handler: fn(u32)) -> Result<(), IrqError> {
    for (lpi, _) in link.notify_lpis.iter().flatten() {
        irq::register(*lpi, handler)?;
    }
    if let Transport::MmioTrap { intid, .. } = link.transport {
        irq::register(intid, handler)?;
    }
    Ok(())
}
