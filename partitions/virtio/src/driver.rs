//! The driver side: a `virtio_drivers` [`Transport`] and [`Hal`] over a window, so the stock
//! virtio-drivers console, net and block drivers run unchanged on a static virtio link.
//!
//! - Features are the link's fixed ones; a driver that does not accept every one of them
//!   refuses the link ([`Failure::Features`]), as does one whose queues are not the link's.
//! - Each queue's rings go where the layout puts them: when a driver sets a queue up, the
//!   [`WindowHal`] hands it exactly those pages, and `queue_set` checks that it used them.
//! - Buffers are bounced through the window's pool: the peer cannot see the rest of this
//!   partition's memory. The pool's bookkeeping is kept in private memory, never in the window
//!   (a hostile device could otherwise steer the driver's allocator). A driver that keeps its
//!   buffers in the pool itself ([`WindowBuffer`], as a driver keeps DMA buffers in memory its
//!   device can reach) has them shared in place, with no copy.
//! - `notify` rings the queue's doorbell through the link's [`Notify`].
//! - Configuration space is read from the window, read-only; there are no registers.
//! - [`StaticTransport::guarded`] also keeps the driver's rings in private memory and moves
//!   only checked copies across the window ([`crate::guard`]), and takes the configuration
//!   space from this side's device tree: a hostile device then cannot make a stock driver panic
//!   or read past a buffer, and the link fails instead ([`Failure::Device`]).

use crate::Notify;
use crate::binding::{EVENT_IDX, Kind, MAX_LINKS_PER_PARTITION, offset, state};
use crate::guard::{DeviceError, Guard};
use crate::header::{Header, HeaderError};
use crate::layout::{self, Layout, LayoutError, PAGE};
use crate::link::{DriverSide, Peer};
use crate::pool::Pool;
use crate::window::{RawMemory, Window};
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Error, Hal, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// What a link is, from this side's device tree.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    pub kind: Kind,
    pub features: u64,
    pub queue_size: u16,
    /// Where this partition sees the window, and the address both sides use for it.
    pub window: usize,
    pub window_ipa: u64,
    pub window_size: usize,
}

impl LinkConfig {
    /// The header the window must hold for this link.
    pub fn header(&self) -> Header {
        Header::for_link(self.kind, self.features, self.queue_size, self.window_size as u32)
    }
}

/// Why a link cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Another link already uses this slot, or the slot is out of range.
    Slot(usize),
    Layout(LayoutError),
    Header(HeaderError),
    /// The driver does not accept every fixed feature: it wanted `accepted` of `fixed`.
    Features { fixed: u64, accepted: u64 },
    /// The driver set a queue up with another size or elsewhere than the layout says.
    Queue(u16),
    /// A guarded link: no memory for the driver's private rings.
    Memory,
    /// A guarded link: the device broke a rule ([`crate::guard`]).
    Device(DeviceError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Slot(slot) => write!(f, "driver slot {slot} is taken or out of range"),
            Self::Layout(error) => write!(f, "the link does not lay out: {error}"),
            Self::Header(error) => write!(f, "the window's header is wrong: {error:?}"),
            Self::Features { fixed, accepted } => {
                write!(f, "the driver accepts features {accepted:#x}, the link fixes {fixed:#x}")
            }
            Self::Queue(queue) => write!(f, "the driver set queue {queue} up other than the layout says"),
            Self::Memory => f.write_str("no memory for the driver's private rings"),
            Self::Device(error) => write!(f, "the device broke a rule: {error}"),
        }
    }
}

/// Private pages a guarded link's driver uses for a queue's rings.
struct Private {
    queue: u16,
    address: usize,
    layout: core::alloc::Layout,
}

struct LinkState {
    config: LinkConfig,
    layout: Layout,
    pool: Pool,
    /// The queue a driver is setting up (from `max_queue_size` until its used ring is
    /// allocated): its rings are the next [`Hal::dma_alloc`]s.
    setting_up: Option<u16>,
    failure: Option<Failure>,
    /// The window, for the guard.
    window: Window<RawMemory>,
    /// A guarded link's guard, and the private ring pages it gave the driver.
    guard: Option<Guard<RawMemory>>,
    private: Vec<Private>,
    /// Which attachment this is (see [`ATTACHMENTS`]).
    attachment: u64,
}

/// Attachments of links to slots so far: a [`WindowBuffer`] gives its block back only to the
/// attachment it came from (a slot's next link has a pool of its own).
static ATTACHMENTS: AtomicU64 = AtomicU64::new(0);

/// Where each slot's buffer pool lies (`[start..end)`, empty while the slot has no link), and
/// what to add to an address in it for the address both sides use: so that sharing and
/// unsharing a buffer the driver keeps in the pool, which involves nothing else of the link's,
/// takes no lock.
struct InPlace {
    start: AtomicUsize,
    end: AtomicUsize,
    to_ipa: AtomicU64,
}

static IN_PLACE: [InPlace; MAX_LINKS_PER_PARTITION] =
    [const { InPlace { start: AtomicUsize::new(0), end: AtomicUsize::new(0), to_ipa: AtomicU64::new(0) } }; MAX_LINKS_PER_PARTITION];

impl InPlace {
    /// The address both sides use for the `len` bytes at `address`, if they lie in the pool.
    #[inline]
    fn ipa(&self, address: usize, len: usize) -> Option<PhysAddr> {
        let inside = address >= self.start.load(Ordering::Relaxed) && address.checked_add(len).is_some_and(|end| end <= self.end.load(Ordering::Relaxed));
        inside.then(|| (address as u64).wrapping_add(self.to_ipa.load(Ordering::Relaxed)))
    }
}

impl Drop for LinkState {
    /// Frees the private rings. The driver is gone (its transport is dropped first, and a
    /// dropped `VirtQueue` only hands its pages back).
    fn drop(&mut self) {
        for private in self.private.drain(..) {
            // SAFETY: allocated in `private_ring` with this layout, and freed once (it left the list).
            unsafe { alloc::alloc::dealloc(private.address as *mut u8, private.layout) };
        }
    }
}

impl LinkState {
    /// Private pages for queue `queue`'s rings in `direction` (descriptor table and available
    /// ring, or used ring), handed to the guard; `None` if there is no memory.
    fn private_ring(&mut self, queue: u16, direction: BufferDirection, pages: usize) -> Option<NonNull<u8>> {
        let layout = core::alloc::Layout::from_size_align(pages.max(1) * PAGE, PAGE).ok()?;
        let guarded = self.guard.as_mut()?.queue(queue)?;
        // SAFETY: the layout's size is not zero.
        let pointer = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
        // SAFETY: the allocation is ours, mapped and 4 KiB aligned, until `Drop` or
        // `free_private` frees it, after the guard forgot it.
        let area = Window::new(unsafe { RawMemory::new(pointer.as_ptr(), layout.size()) }, 0);
        match direction {
            BufferDirection::DeviceToDriver => guarded.set_device_area(area),
            _ => guarded.set_driver_area(area),
        }
        self.private.push(Private { queue, address: pointer.as_ptr() as usize, layout });
        Some(pointer)
    }

    /// Frees the private pages at `address`, if they are some; says whether they were.
    fn free_private(&mut self, address: usize) -> bool {
        let Some(at) = self.private.iter().position(|private| private.address == address) else { return false };
        let private = self.private.swap_remove(at);
        if let Some(guarded) = self.guard.as_mut().and_then(|guard| guard.queue(private.queue)) {
            guarded.clear_areas();
        }
        // SAFETY: allocated in `private_ring` with this layout; the guard no longer uses it.
        unsafe { alloc::alloc::dealloc(private.address as *mut u8, private.layout) };
        true
    }

    fn ipa(&self, address: usize) -> PhysAddr {
        self.config.window_ipa + (address - self.config.window) as u64
    }

    fn address(&self, ipa: PhysAddr) -> usize {
        self.config.window + (ipa - self.config.window_ipa) as usize
    }
}

static LINKS: [Mutex<Option<LinkState>>; MAX_LINKS_PER_PARTITION] = [const { Mutex::new(None) }; MAX_LINKS_PER_PARTITION];

/// Why link `slot` failed, if it did.
pub fn failure(slot: usize) -> Option<Failure> {
    LINKS.get(slot)?.lock().as_ref()?.failure
}

/// For a guarded link ([`StaticTransport::guarded`]): checks the device's state line and takes
/// what the device used into the driver's private rings, checked, on every queue but those the
/// driver reaps lazily ([`StaticTransport::lazy`], which [`reap`] takes). A driver polling for
/// receive buffers must call it as it polls: nothing else brings them in (driver-to-device
/// queues are brought in by `notify`, which waits for them). Returns why the link failed, if it
/// has.
pub fn sync(slot: usize) -> Option<Failure> {
    sync_queues(slot, false)
}

/// [`sync`], lazily reaped queues included: what a driver calls before it polls them.
pub fn reap(slot: usize) -> Option<Failure> {
    sync_queues(slot, true)
}

#[inline(always)]
fn sync_queues(slot: usize, lazy: bool) -> Option<Failure> {
    let mut link = LINKS.get(slot)?.lock();
    let link = link.as_mut()?;
    if let Some(guard) = link.guard.as_mut()
        && guard.sync_queues(&link.window, lazy)
        && let Some(error) = guard.failure()
    {
        link.failure.get_or_insert(Failure::Device(error));
    }
    // Only a failure is copied out (a `Failure` is large, and the common answer is none).
    link.failure.as_ref()?;
    link.failure
}

fn fail(slot: usize, failure: Failure) {
    if let Some(link) = LINKS[slot].lock().as_mut() {
        link.failure.get_or_insert(failure);
    }
}

/// The transport of one link.
pub struct StaticTransport<N: Notify> {
    slot: usize,
    config: LinkConfig,
    window: Window<RawMemory>,
    notify: N,
    status: DeviceStatus,
    queues_set: u8,
    side: DriverSide,
    /// A guarded link's configuration space, from this side's device tree.
    fixed_config: Option<[u8; crate::binding::config::MAX]>,
}

/// Lays link `config` out in slot `slot`, for the slot's [`WindowHal<SLOT>`]: checks the
/// window's header against the device tree and returns the window. A driver on another
/// transport (`MmioTransport` on a `mmio-trap` link) needs only this; [`open`] does it too.
///
/// # Safety
///
/// `[config.window..config.window + config.window_size)` must be the link's window, mapped
/// read/write, and used by nothing else in this partition.
pub unsafe fn attach(slot: usize, config: LinkConfig) -> Result<Window<RawMemory>, Failure> {
    let mut link = LINKS.get(slot).ok_or(Failure::Slot(slot))?.lock();
    if link.is_some() {
        return Err(Failure::Slot(slot));
    }
    // SAFETY: our caller promised the window is mapped and ours.
    let memory = unsafe { RawMemory::new(config.window as *mut u8, config.window_size) };
    let window = Window::new(memory, config.window_ipa);
    Header::check(&window, &config.header()).map_err(Failure::Header)?;
    let layout = layout::compute(config.kind.queue_count(), u32::from(config.queue_size), config.window_size)
        .map_err(Failure::Layout)?;
    let pool = Pool::new(config.window + layout.pool.start, layout.pool.len());
    // SAFETY: as above.
    let own = Window::new(unsafe { RawMemory::new(config.window as *mut u8, config.window_size) }, config.window_ipa);
    let attachment = ATTACHMENTS.fetch_add(1, Ordering::Relaxed) + 1;
    let place = &IN_PLACE[slot];
    place.to_ipa.store(config.window_ipa.wrapping_sub(config.window as u64), Ordering::Relaxed);
    place.start.store(config.window + layout.pool.start, Ordering::Relaxed);
    place.end.store(config.window + layout.pool.end, Ordering::Relaxed);
    *link = Some(LinkState { config, layout, pool, setting_up: None, failure: None, window: own, guard: None, private: Vec::new(), attachment });
    Ok(window)
}

/// Frees slot `slot` (its driver is gone).
pub fn detach(slot: usize) {
    if let Some(link) = LINKS.get(slot) {
        let mut link = link.lock();
        IN_PLACE[slot].end.store(0, Ordering::Relaxed);
        IN_PLACE[slot].start.store(0, Ordering::Relaxed);
        *link = None;
    }
}

/// Opens link `config` in slot `slot` (its [`WindowHal<SLOT>`] is the driver's `Hal`): the
/// trap-free transport over the window, which rings the device through `notify`.
///
/// # Safety
///
/// As for [`attach`].
pub unsafe fn open<N: Notify>(slot: usize, config: LinkConfig, notify: N) -> Result<StaticTransport<N>, Failure> {
    // SAFETY: our caller's promise.
    let window = unsafe { attach(slot, config) }?;
    Ok(StaticTransport::new(slot, config, window, notify))
}

impl<N: Notify> StaticTransport<N> {
    /// The trap-free transport of the link [`attach`]ed in slot `slot` as `config`, whose window
    /// `attach` returned; it rings the device through `notify`.
    pub fn new(slot: usize, config: LinkConfig, window: Window<RawMemory>, notify: N) -> Self {
        let side = DriverSide::new(&window);
        Self { slot, config, window, notify, status: DeviceStatus::empty(), queues_set: 0, side, fixed_config: None }
    }

    /// Guards the link against a hostile device ([`crate::guard`]): the driver's rings go in
    /// private memory and only checked copies cross the window, a request queue's `notify`
    /// waits until the device has used something on it (or the link failed), and the
    /// configuration space is `config`, this side's device-tree copy (`trapless,config`), never
    /// the window's. Call it before making the driver; the driver must call [`sync`] while it
    /// polls for receive buffers.
    pub fn guarded(mut self, config: &[u8]) -> Self {
        let mut fixed = [0; crate::binding::config::MAX];
        let len = config.len().min(fixed.len());
        fixed[..len].copy_from_slice(&config[..len]);
        self.fixed_config = Some(fixed);
        let event_idx = self.config.features & (1 << EVENT_IDX.bit) != 0;
        if let Some(link) = LINKS[self.slot].lock().as_mut() {
            link.guard = Some(Guard::new(self.config.kind, &link.layout, event_idx));
        }
        self
    }

    /// A guarded link: the driver reaps `queue`'s used buffers when it likes (it calls [`reap`]
    /// before it polls them; [`sync`] leaves them), never waiting for them: `notify` on it does
    /// not wait for the device, and the device is asked not to notify them (`used_event` kept
    /// out of its reach). A transmit queue whose completions are reaped after the receive that
    /// matters, say.
    pub fn lazy(self, queue: u16) -> Self {
        if let Some(guarded) = LINKS[self.slot].lock().as_mut().and_then(|link| link.guard.as_mut()).and_then(|guard| guard.queue(queue)) {
            guarded.set_lazy();
        }
        self
    }

    /// A guarded link: waits until the device has used something on `queue`, if the stock
    /// drivers wait for that queue right after notifying, or until the link has failed. The
    /// wait has no time limit, as the stock driver's own would not.
    fn wait_for_device(&mut self, queue: u16) {
        loop {
            let mut link = LINKS[self.slot].lock();
            let Some(LinkState { guard: Some(guard), window, failure, .. }) = link.as_mut() else { return };
            let Some(guarded) = guard.queue(queue) else { return };
            if !guarded.waits_in_notify() || guarded.in_flight() == 0 {
                return;
            }
            let seen = guarded.seen();
            if let Some(error) = guard.sync(window) {
                failure.get_or_insert(Failure::Device(error));
                return;
            }
            if guard.queue(queue).is_none_or(|guarded| guarded.seen() != seen) {
                return;
            }
            drop(link);
            crate::relax();
        }
    }

    /// The device's state line.
    pub fn device(&self) -> Peer {
        Peer::read(&self.window)
    }

    /// Says `value` (`RESET` or `STOPPED`), ringing the device and waiting for it if it may
    /// be serving our rings.
    fn let_go(&mut self, value: u32) {
        let notify = &mut self.notify;
        self.side.let_go(&self.window, value, || notify.notify(0));
    }
}

impl<N: Notify> Drop for StaticTransport<N> {
    /// A driver that goes away stops the link first, so the device lets go of its rings.
    fn drop(&mut self) {
        if self.side.started() {
            self.let_go(state::STOPPED);
        }
        detach(self.slot);
    }
}

impl<N: Notify> Transport for StaticTransport<N> {
    fn device_type(&self) -> DeviceType {
        match self.config.kind {
            Kind::Console => DeviceType::Console,
            Kind::Net => DeviceType::Network,
            Kind::Block => DeviceType::Block,
        }
    }

    fn read_device_features(&mut self) -> u64 {
        self.config.features
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        if driver_features != self.config.features {
            fail(self.slot, Failure::Features { fixed: self.config.features, accepted: driver_features });
        }
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        let mut link = LINKS[self.slot].lock();
        let Some(link) = link.as_mut() else { return 0 };
        if link.failure.is_some() || queue >= self.config.kind.queue_count() {
            return 0;
        }
        link.setting_up = Some(queue);
        u32::from(self.config.queue_size)
    }

    fn notify(&mut self, queue: u16) {
        // Unguarded: ring. Guarded: publish, ring if the device asked, and wait if the driver
        // waits for this queue (one look at the link decides all three).
        let (ring, wait) = match LINKS[self.slot].lock().as_mut() {
            Some(LinkState { guard: Some(guard), window, .. }) => {
                let notified = guard.notified(queue, window);
                (notified.ring, notified.wait)
            }
            _ => (true, false),
        };
        if ring {
            self.notify.notify(queue);
        }
        if wait {
            self.wait_for_device(queue);
        }
    }

    fn get_status(&self) -> DeviceStatus {
        self.status
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.status = status;
        if status.is_empty() {
            self.let_go(state::RESET);
            if let Some(link) = LINKS[self.slot].lock().as_mut()
                && let Some(guard) = link.guard.as_mut()
            {
                guard.reset();
                if matches!(link.failure, Some(Failure::Device(_))) {
                    link.failure = None;
                }
            }
        } else if failure(self.slot).is_some() {
            self.side.fail(&self.window);
        } else if status.contains(DeviceStatus::DRIVER_OK) {
            self.side.start(&self.window);
            // The generation just written: the one the device must serve.
            let generation = self.window.read_u32(offset::DRIVER_STATE + state::GENERATION).unwrap_or(0);
            if let Some(guard) = LINKS[self.slot].lock().as_mut().and_then(|link| link.guard.as_mut()) {
                guard.started(generation);
            }
        }
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        let mut link = LINKS[self.slot].lock();
        let Some(link) = link.as_mut() else { return };
        let expected = link.layout.queues.get(usize::from(queue)).map(|layout| {
            let ipa = |offset: usize| self.config.window_ipa + offset as u64;
            (ipa(layout.desc), ipa(layout.avail), ipa(layout.used))
        });
        if size != u32::from(self.config.queue_size) || expected != Some((descriptors, driver_area, device_area)) {
            link.failure.get_or_insert(Failure::Queue(queue));
            return;
        }
        self.queues_set |= 1 << queue;
    }

    fn queue_unset(&mut self, queue: u16) {
        self.queues_set &= !(1 << queue);
        // The stock drivers unset their queues when they are dropped, just before they free the
        // rings: the device must have let go of them by then.
        if self.queues_set == 0 && self.side.started() {
            self.let_go(state::STOPPED);
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.queues_set & (1 << queue) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        // Nothing to acknowledge: a doorbell is an LPI the runtime has already ended. Tell the
        // driver to look at its queues.
        InterruptStatus::QUEUE_INTERRUPT
    }

    fn read_config_generation(&self) -> u32 {
        // A guarded link's configuration is the device tree's, which never changes.
        if self.fixed_config.is_some() {
            return 0;
        }
        self.window.read_u32(offset::CONFIG_GENERATION).unwrap_or(0)
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<T> {
        let size = core::mem::size_of::<T>();
        if offset.checked_add(size).is_none_or(|end| end > self.config.kind.config_size()) {
            return Err(Error::ConfigSpaceTooSmall);
        }
        let mut value = T::new_zeroed();
        if let Some(fixed) = &self.fixed_config {
            value.as_mut_bytes().copy_from_slice(&fixed[offset..offset + size]);
            return Ok(value);
        }
        self.window
            .read_bytes(offset::CONFIG + offset, value.as_mut_bytes())
            .map_err(|_| Error::ConfigSpaceTooSmall)?;
        Ok(value)
    }

    fn write_config_space<T: IntoBytes + Immutable>(&mut self, _offset: usize, _value: T) -> virtio_drivers::Result<()> {
        // A static link's configuration is fixed at build time.
        Err(Error::Unsupported)
    }
}

/// A buffer in the window's pool of the link in slot `SLOT`, which the driver owns (until it is
/// dropped): handed to the link's driver as a buffer to send or receive into, it is shared with
/// the device in place, with no bounce copy either way, as a driver shares a DMA buffer.
///
/// The buffer lies in the window, so the device can read and write it at any time, not only
/// while it holds it: what a driver reads from it is as untrusted as anything else in the
/// window (the guard still checks the used length against the buffer's), and what it writes
/// there is the device's to see.
pub struct WindowBuffer<const SLOT: usize> {
    address: usize,
    len: usize,
    attachment: u64,
}

impl<const SLOT: usize> WindowBuffer<SLOT> {
    /// `len` bytes (not zeroed) from the pool of the link attached in slot `SLOT`; `None` if
    /// the slot has no link or its pool has no room.
    pub fn new(len: usize) -> Option<Self> {
        let mut link = LINKS.get(SLOT)?.lock();
        let link = link.as_mut()?;
        let address = link.pool.allocate(len.max(1), 16)?;
        Some(Self { address, len, attachment: link.attachment })
    }
}

impl<const SLOT: usize> core::ops::Deref for WindowBuffer<SLOT> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the block is ours in the window (allocated from the pool for us alone, mapped
        // while the partition runs); see the type's description for what the device may do.
        unsafe { core::slice::from_raw_parts(self.address as *const u8, self.len) }
    }
}

impl<const SLOT: usize> core::ops::DerefMut for WindowBuffer<SLOT> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference of ours.
        unsafe { core::slice::from_raw_parts_mut(self.address as *mut u8, self.len) }
    }
}

impl<const SLOT: usize> Drop for WindowBuffer<SLOT> {
    /// Gives the block back to the pool it came from, if that link is still attached.
    fn drop(&mut self) {
        let Some(slot) = LINKS.get(SLOT) else { return };
        if let Some(link) = slot.lock().as_mut().filter(|link| link.attachment == self.attachment) {
            link.pool.free(self.address, self.len.max(1));
        }
    }
}

/// Another transport (virtio-drivers' `MmioTransport`, for a `mmio-trap` link) that tells the
/// slot's [`WindowHal`] which queue its driver is setting up, so that the queue's rings go
/// where the layout puts them; every call passes through unchanged.
pub struct Placed<T: Transport> {
    slot: usize,
    inner: T,
}

impl<T: Transport> Placed<T> {
    /// `inner`, for the link [`attach`]ed in slot `slot`.
    pub fn new(slot: usize, inner: T) -> Self {
        Self { slot, inner }
    }
}

impl<T: Transport> Drop for Placed<T> {
    fn drop(&mut self) {
        detach(self.slot);
    }
}

impl<T: Transport> Transport for Placed<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        if let Some(link) = LINKS[self.slot].lock().as_mut() {
            link.setting_up = Some(queue).filter(|&queue| queue < link.layout.queue_count);
        }
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        self.inner.queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<T2: FromBytes + IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<T2> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<T2: IntoBytes + Immutable>(&mut self, offset: usize, value: T2) -> virtio_drivers::Result<()> {
        self.inner.write_config_space(offset, value)
    }
}

/// Copies `len` bytes from `from` to `to`, a buffer and its bounce block (one of them in the
/// window): eight bytes at a time when both are 8-byte aligned, as the pool's blocks are and a
/// driver's buffers usually are (the partitions' target forbids unaligned accesses, so
/// `memcpy` moves misaligned words in pieces), then the last bytes; `memcpy` otherwise. Every
/// store is volatile, which also keeps the compiler from turning the loop back into `memcpy`.
///
/// # Safety
///
/// `from` must be valid for reading and `to` for writing `len` bytes, and the two must not
/// overlap.
unsafe fn bounce_copy(from: *const u8, to: *mut u8, len: usize) {
    if !(from as usize | to as usize).is_multiple_of(8) {
        // SAFETY: our caller's promise.
        unsafe { core::ptr::copy_nonoverlapping(from, to, len) };
        return;
    }
    let (from_words, to_words) = (from.cast::<u64>(), to.cast::<u64>());
    let words = len / 8;
    for pair in 0..words / 2 {
        // SAFETY: both are 8-byte aligned, and words `2 * pair` and the next lie in the `len`
        // bytes.
        unsafe {
            let (first, second) = (from_words.add(2 * pair).read(), from_words.add(2 * pair + 1).read());
            to_words.add(2 * pair).write_volatile(first);
            to_words.add(2 * pair + 1).write_volatile(second);
        }
    }
    if words % 2 == 1 {
        // SAFETY: as above, for the last word.
        unsafe { to_words.add(words - 1).write_volatile(from_words.add(words - 1).read()) };
    }
    for index in 8 * words..len {
        // SAFETY: inside the `len` bytes.
        unsafe { to.add(index).write_volatile(from.add(index).read()) };
    }
}

/// The `Hal` of the link in slot `SLOT`: rings in their fixed places, buffers bounced through
/// the window's pool.
pub struct WindowHal<const SLOT: usize>;

impl<const SLOT: usize> WindowHal<SLOT> {
    fn with<R>(f: impl FnOnce(&mut LinkState) -> R) -> R {
        let mut link = LINKS[SLOT].lock();
        f(link.as_mut().expect("the link is opened before its driver is made"))
    }
}

// SAFETY: every pointer handed out lies in the link's window, which `open`'s caller promised is
// mapped and ours; ring pages are the layout's, which nothing else in the window overlaps, and
// pool allocations never overlap one another.
unsafe impl<const SLOT: usize> Hal for WindowHal<SLOT> {
    fn dma_alloc(pages: usize, direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        Self::with(|link| {
            // While a queue is being set up, its rings: the descriptor table and available ring
            // (driver to device), then the used ring (device to driver), exactly as laid out.
            let ring = link.setting_up.and_then(|queue| {
                let layout = link.layout.queues[usize::from(queue)];
                let (start, end) = match direction {
                    BufferDirection::DriverToDevice => (layout.desc, layout.used),
                    BufferDirection::DeviceToDriver => (layout.used, layout.end),
                    BufferDirection::Both => return None,
                };
                if direction == BufferDirection::DeviceToDriver {
                    link.setting_up = None;
                }
                Some(if (end - start) / PAGE == pages { Ok((queue, start)) } else { Err(queue) })
            });
            let (address, ring) = match ring {
                Some(Ok((queue, offset))) => (link.config.window + offset, Some(queue)),
                Some(Err(queue)) => {
                    link.failure.get_or_insert(Failure::Queue(queue));
                    return (0, NonNull::dangling());
                }
                None => match link.pool.allocate(pages * PAGE, PAGE) {
                    Some(address) => (address, None),
                    None => return (0, NonNull::dangling()),
                },
            };
            // SAFETY: the pages lie in the window (see the impl's safety comment).
            unsafe { core::ptr::write_bytes(address as *mut u8, 0, pages * PAGE) };
            // A guarded link's driver works on private copies of its rings (the device sees
            // the window's): it is told the window's address, and given private pages.
            if let Some(queue) = ring.filter(|_| link.guard.is_some()) {
                return match link.private_ring(queue, direction, pages) {
                    Some(private) => (link.ipa(address), private),
                    None => {
                        link.failure.get_or_insert(Failure::Memory);
                        (0, NonNull::dangling())
                    }
                };
            }
            (link.ipa(address), NonNull::new(address as *mut u8).expect("windows are not at 0"))
        })
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // A driver drops its transport before its queues: by then there is nothing to free.
        if let Some(link) = LINKS[SLOT].lock().as_mut() {
            if link.free_private(vaddr.as_ptr() as usize) {
                return 0;
            }
            let address = link.address(paddr);
            if address >= link.config.window + link.layout.pool.start {
                link.pool.free(address, pages * PAGE);
            }
        }
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        unreachable!("static virtio has no MMIO registers")
    }

    #[inline(always)]
    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        // A buffer the driver keeps in the pool (a `WindowBuffer`) is shared in place.
        if let Some(ipa) = IN_PLACE[SLOT].ipa(buffer.as_ptr().cast::<u8>() as usize, buffer.len()) {
            return ipa;
        }
        // SAFETY: our caller's promise.
        unsafe { Self::share_bounced(buffer, direction) }
    }

    #[inline(always)]
    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        // Shared in place: nothing to copy or free.
        if IN_PLACE[SLOT].ipa(buffer.as_ptr().cast::<u8>() as usize, buffer.len()) == Some(paddr) {
            return;
        }
        // SAFETY: our caller's promise.
        unsafe { Self::unshare_bounced(paddr, buffer, direction) }
    }
}

impl<const SLOT: usize> WindowHal<SLOT> {
    /// [`Hal::share`] through a bounce block in the pool (the in-place test is made in line,
    /// this out of it).
    ///
    /// # Safety
    ///
    /// As for [`Hal::share`].
    #[inline(never)]
    unsafe fn share_bounced(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        Self::with(|link| {
            let len = buffer.len();
            // `share` cannot fail: a link's pool must hold every buffer its driver has in flight.
            let bounce = link.pool.allocate(len, 16).expect("the window's buffer pool is exhausted");
            // Whatever the device once wrote into this block while it was someone's buffer
            // shared in place is not what it will write now.
            if let Some(guard) = link.guard.as_mut() {
                guard.written(bounce - link.config.window, 0);
            }
            if direction != BufferDirection::DeviceToDriver {
                // SAFETY: the caller promised `buffer` is valid for the call; the bounce buffer
                // is ours in the window.
                unsafe { bounce_copy(buffer.as_ptr().cast::<u8>(), bounce as *mut u8, len) };
            }
            link.ipa(bounce)
        })
    }

    /// [`Hal::unshare`] of a buffer bounced by [`Self::share_bounced`].
    ///
    /// # Safety
    ///
    /// As for [`Hal::unshare`].
    #[inline(never)]
    unsafe fn unshare_bounced(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        Self::with(|link| {
            let bounce = link.address(paddr);
            let len = buffer.len();
            if direction != BufferDirection::DriverToDevice {
                // Only the bytes the device wrote, when the guard saw how many (never more than
                // the buffer holds): the rest of the driver's buffer is not the device's to fill.
                let written = match link.guard.as_mut() {
                    Some(guard) => guard.written((paddr - link.config.window_ipa) as usize, len),
                    None => len,
                };
                // SAFETY: as in `share`; the device has finished with the bounce buffer, and
                // `written` is at most `len`.
                unsafe { bounce_copy(bounce as *const u8, buffer.as_ptr().cast::<u8>(), written) };
            }
            link.pool.free(bounce, len);
        })
    }
}
