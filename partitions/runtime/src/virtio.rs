//! What a partition needs to be one side of a static virtio link (`docs/static-virtio.md`):
//! its window, the doorbells that ring the peer about each queue, and a handler for the LPIs the
//! peer's doorbells raise. The protocol itself is `trapless_virtio`'s.

use crate::doorbell::{Bell, DoorbellError};
use crate::facts::{Boot, Link, Transport};
use trapless_abi::hypercall::LINK_NOTIFY;
use crate::irq::{self, IrqError};
use core::sync::atomic::{AtomicU64, Ordering};
use trapless_virtio::Notify;
use trapless_virtio::binding::state;
use trapless_virtio::layout::MAX_QUEUES;
use trapless_virtio::link::Peer;
use trapless_virtio::window::{Memory, RawMemory, Window};

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

/// Times this partition rang a link's peer, over every [`Bells`].
static RUNG: AtomicU64 = AtomicU64::new(0);

/// Times this partition rang a link's peer (doorbells, or `LINK_NOTIFY` hypercalls).
pub fn rung() -> u64 {
    RUNG.load(Ordering::Relaxed)
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
        RUNG.fetch_add(1, Ordering::Relaxed);
    }
}

impl Notify for Bells {
    #[inline(always)]
    fn notify(&mut self, queue: u16) {
        self.ring(usize::from(queue));
    }
}

/// Waits up to `seconds` for the device side of the link in `window` to open it (the device
/// partition boots beside this one), and says whether it did: its state line either way.
pub fn wait_for_device<M: Memory>(window: &Window<M>, seconds: u64) -> Result<Peer, Peer> {
    let deadline = crate::time::now() + seconds * crate::time::frequency();
    while Peer::read(window).state == state::RESET && crate::time::now() < deadline {
        trapless_virtio::relax();
    }
    let device = Peer::read(window);
    if device.state == state::READY { Ok(device) } else { Err(device) }
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

/// The driver side of a link, ready for a virtio-drivers driver (feature `driver`): with
/// [`open_driver`], the link's window is attached in a slot of `trapless_virtio::driver` and
/// the device side has opened it; [`Opened::mmio`] gives the register block of a `mmio-trap`
/// link, [`Opened::transport`] trapless's transport otherwise.
#[cfg(feature = "driver")]
pub struct Opened {
    slot: usize,
    config: trapless_virtio::driver::LinkConfig,
    window: Window<RawMemory>,
}

/// Attaches `link` (this partition is its driver) in slot `slot` of `trapless_virtio::driver`
/// and waits up to `seconds` for its device side to open it.
#[cfg(feature = "driver")]
pub fn open_driver(link: &Link, slot: usize, seconds: u64) -> Result<Opened, alloc::string::String> {
    use alloc::format;
    let config = trapless_virtio::driver::LinkConfig {
        kind: link.kind,
        features: link.features,
        queue_size: link.queue_size,
        window: link.window.start as usize,
        window_ipa: link.window.start,
        window_size: (link.window.end - link.window.start) as usize,
    };
    // SAFETY: the device tree gives this partition the window, the runtime mapped it (see
    // `window`), and the slot keeps anything else here from using it.
    let window = unsafe { trapless_virtio::driver::attach(slot, config) }.map_err(|error| format!("{error:?}"))?;
    if let Err(device) = wait_for_device(&window, seconds) {
        trapless_virtio::driver::detach(slot);
        return Err(format!("the device side is not ready (state {}, error {})", device.state, device.error));
    }
    Ok(Opened { slot, config, window })
}

#[cfg(feature = "driver")]
impl Opened {
    /// The register block EL2 emulates for a `mmio-trap` link, as virtio-drivers'
    /// `MmioTransport` (wrapped so that the slot's `Hal` puts its rings in place); `None` for a
    /// trap-free link.
    pub fn mmio(&self, link: &Link) -> Option<Result<trapless_virtio::driver::Placed<virtio_drivers::transport::mmio::MmioTransport<'static>>, alloc::string::String>> {
        use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
        let Transport::MmioTrap { registers, .. } = &link.transport else { return None };
        let header = core::ptr::NonNull::new(registers.start as *mut VirtIOHeader)?;
        // SAFETY: the device tree gives this partition the register block (EL2 emulates it:
        // every access traps), and nothing else here uses it.
        let mmio = unsafe { MmioTransport::new(header, (registers.end - registers.start) as usize) };
        Some(mmio.map(|mmio| trapless_virtio::driver::Placed::new(self.slot, mmio)).map_err(|error| alloc::format!("the register block: {error}")))
    }

    /// trapless's trap-free transport, ringing the device through `bells`.
    pub fn transport(self, bells: Bells) -> trapless_virtio::driver::StaticTransport<Bells> {
        trapless_virtio::driver::StaticTransport::new(self.slot, self.config, self.window, bells)
    }
}
