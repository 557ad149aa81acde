//! The driver side's guard against a hostile device: the driver's rings are kept in private
//! memory, and only checked copies cross the window.
//!
//! A stock virtio-drivers `VirtQueue` reads the used ring straight from memory, many times, and
//! trusts it: an out-of-range used id indexes its net driver's receive buffers, and a used length
//! beyond the buffer slices its net buffers and indexes its console buffer (both panic), as does a
//! console receive of 0 bytes (an `assert`). So, when a link is guarded, the `VirtQueue` is given
//! private pages for its descriptor table, available ring and used ring, and the guard moves
//! entries across:
//!
//! - [`GuardedQueue::publish`] (the transport's `notify`) copies the chains the driver made
//!   available, descriptors first, to the window, and notes each chain's head and how many bytes
//!   its device-writable buffers hold. The private used ring always asks to be notified, so
//!   the driver calls `notify` after every chain; the transport then rings the device only if
//!   the device's own suppression in the window asks for it.
//! - [`GuardedQueue::collect`] reads the window's used ring once per field and copies an element
//!   into the private ring only if it names a chain the device holds, reports no more bytes than
//!   that chain can take (and at least one if it is all receive buffers), and the used index
//!   runs no further than the chains in flight. Anything else fails the link.
//! - [`Guard::check_device`] reads the device's state line: a device that says `FAILED`, serves
//!   another generation or lets go on its own fails the link.
//!
//! After a failure nothing more crosses. A queue whose driver waits inside `notify`-and-spin
//! (every driver-to-device queue of the stock drivers) gets one *poison* element with an id no
//! chain has (`u16::MAX` as the driver reads it), so the waiting call returns `WrongToken` rather
//! than spin forever; a receive queue stays still, and the driver learns of the failure from
//! [`Guard::failure`] (`driver::sync`).

use crate::binding::{Kind, state};
use crate::layout::{DESCRIPTOR_SIZE, Layout, MAX_QUEUES, QueueLayout};
use crate::link::Peer;
use crate::queue::{DESC_F_NEXT, DESC_F_WRITE, USED_F_NO_NOTIFY, need_event};
use crate::pool::Written;
use crate::ring::{DevicePart, DriverPart, DriverView};
use crate::window::{Memory, Window};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};

/// The used id of the poison element (the driver reads ids as `u16`: `0xffff`, which no
/// queue of at most 32768 entries hands out).
pub const POISON_ID: u32 = u32::MAX;

/// What a device did that a device may not do, as the driver side saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The used index of `queue` moved from `seen` to `index`: further than the `in_flight`
    /// chains the driver had made available.
    UsedIndex { queue: u16, index: u16, seen: u16, in_flight: u16 },
    /// A used element of `queue` names `id`, which heads no chain the device holds (beyond the
    /// queue, never made available, or already used).
    UsedId { queue: u16, id: u32 },
    /// A used element of `queue` says `len` bytes were written into chain `id`, whose
    /// device-writable buffers hold `writable`.
    UsedLength { queue: u16, id: u16, len: u32, writable: u32 },
    /// Chain `id` of `queue`, all receive buffers, came back with no bytes (the stock console
    /// driver asserts this never happens).
    EmptyReceive { queue: u16, id: u16 },
    /// The device's state line says `FAILED`, with this error and generation.
    Failed { error: u32, generation: u32 },
    /// The device's state line says what a device serving this driver never says: another
    /// generation, generation 0 after serving (it let go on its own), or an unknown state.
    StateLine { state: u32, generation: u32, expected: u32 },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UsedIndex { queue, index, seen, in_flight } => write!(
                f,
                "queue {queue}: the used index jumped from {seen} to {index}, with {in_flight} chain(s) in flight"
            ),
            Self::UsedId { queue, id } => write!(f, "queue {queue}: a used element names descriptor {id}, which heads no chain in flight"),
            Self::UsedLength { queue, id, len, writable } => {
                write!(f, "queue {queue}: used length {len} for chain {id}, whose writable buffers hold {writable} bytes")
            }
            Self::EmptyReceive { queue, id } => write!(f, "queue {queue}: receive chain {id} came back with 0 bytes"),
            Self::Failed { error, generation } => {
                write!(f, "the device's state line says FAILED (error {error}, generation {generation})")
            }
            Self::StateLine { state, generation, expected } => write!(
                f,
                "the device's state line says state {state}, generation {generation} while serving generation {expected}"
            ),
        }
    }
}

/// What the guard knows of a chain the device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Posted {
    /// Bytes its device-writable buffers hold.
    writable: u32,
    /// It has no device-readable buffer (a receive buffer).
    write_only: bool,
    /// The address of its writable buffer, if it has exactly one.
    single_writable: Option<u64>,
}

/// The guard of one queue.
pub struct GuardedQueue<P: Memory> {
    /// Where the queue's parts lie in the window, and in the private areas (both at offset 0
    /// of their area), checked.
    shared: (DriverPart, DevicePart),
    private: (DriverPart, DevicePart),
    size: u16,
    /// The stock drivers wait for this queue's chains right after notifying (every queue but
    /// console's and net's receive queue 0).
    waits_in_notify: bool,
    /// The driver's private descriptor table and available ring (offset 0: the table), and its
    /// private used ring (offset 0: `flags`).
    driver_area: Option<Window<P>>,
    device_area: Option<Window<P>>,
    /// Chains the device holds, by head.
    in_flight: Vec<Option<Posted>>,
    in_flight_count: u16,
    /// Available entries copied to the window; used entries taken from it; used entries given
    /// to the driver (those, and the poison element).
    published: u16,
    seen: u16,
    given: u16,
    poisoned: bool,
    /// The driver reaps this queue when it next looks: it never waits in `notify`, and asks
    /// the device not to notify its used buffers.
    lazy: bool,
}

impl<P: Memory> GuardedQueue<P> {
    /// The guard of the queue at `layout` in the window, of `size` entries.
    pub fn new(layout: QueueLayout, size: u16, waits_in_notify: bool) -> Self {
        let parts = |driver: Option<DriverPart>, device: Option<DevicePart>| match (driver, device) {
            (Some(driver), Some(device)) => (driver, device),
            _ => (DriverPart::NONE, DevicePart::NONE),
        };
        let table = DESCRIPTOR_SIZE * usize::from(size);
        Self {
            shared: parts(DriverPart::of(&layout, size), DevicePart::of(&layout, size)),
            private: parts(DriverPart::new(0, table, size), DevicePart::new(0, size)),
            size,
            waits_in_notify,
            driver_area: None,
            device_area: None,
            in_flight: vec![None; usize::from(size)],
            in_flight_count: 0,
            published: 0,
            seen: 0,
            given: 0,
            poisoned: false,
            lazy: false,
        }
    }

    /// Makes the queue lazily reaped (see [`crate::driver::StaticTransport::lazy`]).
    pub fn set_lazy(&mut self) {
        self.lazy = true;
        self.waits_in_notify = false;
    }

    /// Forgets every chain: the driver starts again on fresh rings.
    fn reset(&mut self) {
        self.in_flight.iter_mut().for_each(|posted| *posted = None);
        self.in_flight_count = 0;
        self.published = 0;
        self.seen = 0;
        self.given = 0;
        self.poisoned = false;
    }

    /// Uses `area` (zeroed) as the driver's private descriptor table and available ring.
    pub fn set_driver_area(&mut self, area: Window<P>) {
        self.driver_area = Some(area);
    }

    /// Uses `area` (zeroed) as the driver's private used ring: it asks the driver to notify
    /// every chain (no `NO_NOTIFY`; `avail_event` 0xffff, which virtio-drivers' unwrapped
    /// comparison always passes), so that every chain goes through [`Self::publish`].
    pub fn set_device_area(&mut self, area: Window<P>) {
        if let Some(used) = self.private.1.view(&area) {
            used.set_flags(0);
            used.set_avail_event(u16::MAX);
        }
        self.device_area = Some(area);
    }

    /// Forgets the private areas (the driver freed them).
    pub fn clear_areas(&mut self) {
        self.driver_area = None;
        self.device_area = None;
    }

    /// Whether the driver waits for this queue's chains right after notifying.
    pub fn waits_in_notify(&self) -> bool {
        self.waits_in_notify
    }

    /// Used entries taken from the window so far.
    pub fn seen(&self) -> u16 {
        self.seen
    }

    /// Chains the device holds.
    pub fn in_flight(&self) -> u16 {
        self.in_flight_count
    }

    /// Copies the chains the driver made available since the last call to the window, their
    /// descriptors before the ring entries and the index; returns the old and new available
    /// index. The private rings are the driver's own, so they are trusted, but walked with the
    /// same bounds as ever.
    pub fn publish<M: Memory>(&mut self, window: &Window<M>) -> (u16, u16) {
        let old = self.published;
        let (Some(private), Some(shared)) = (self.driver_area.as_ref().and_then(|area| self.private.0.view(area)), self.shared.0.view(window)) else {
            return (old, old);
        };
        let new = private.index();
        let count = new.wrapping_sub(old).min(self.size);
        for step in 0..count {
            let position = old.wrapping_add(step);
            let head = private.entry(position);
            if let Some(posted) = mirror_chain(&private, &shared, self.size, head) {
                let entry = &mut self.in_flight[usize::from(head)];
                if entry.replace(posted).is_none() {
                    self.in_flight_count += 1;
                }
            }
            shared.set_entry(position, head);
        }
        self.mirror_driver_fields(&private, &shared);
        // The descriptors and ring entries before the index.
        fence(Ordering::Release);
        shared.set_index(new);
        self.published = new;
        (old, new)
    }

    /// Copies the driver's `flags` and `used_event` (what it wants to hear of) to the window.
    fn mirror_driver_fields<P2: Memory, M: Memory>(&self, private: &DriverView<'_, P2>, shared: &DriverView<'_, M>) {
        shared.set_flags(private.flags());
        // A lazily reaped queue asks for no notification: `used_event` just behind what has been
        // taken, which the device's used index, never more than a queue ahead, does not pass.
        shared.set_used_event(if self.lazy { self.seen.wrapping_sub(1) } else { private.used_event() });
    }

    /// Whether the device asked to be notified of the chains published from `old` to `new`:
    /// by its `avail_event` with EVENT_IDX, else unless it set `NO_NOTIFY`.
    pub fn device_wants_notification<M: Memory>(&self, window: &Window<M>, event_idx: bool, old: u16, new: u16) -> bool {
        if old == new {
            return false;
        }
        // Our index is visible before we read what the device wants.
        fence(Ordering::SeqCst);
        let Some(used) = self.shared.1.view(window) else { return false };
        if event_idx { need_event(used.avail_event(), new, old) } else { used.flags() & USED_F_NO_NOTIFY == 0 }
    }

    /// Takes what the device used since the last call from the window into the private used
    /// ring, each element checked; returns how many. On an error the elements before the bad
    /// one are still given to the driver.
    pub fn collect<M: Memory>(&mut self, queue: u16, window: &Window<M>, written: &mut Written) -> Result<u16, DeviceError> {
        if let (Some(private), Some(shared)) = (self.driver_area.as_ref().and_then(|area| self.private.0.view(area)), self.shared.0.view(window)) {
            self.mirror_driver_fields(&private, &shared);
        }
        let (Some(private), Some(shared)) = (self.device_area.as_ref().and_then(|area| self.private.1.view(area)), self.shared.1.view(window)) else {
            return Ok(0);
        };
        let index = shared.index();
        let pending = index.wrapping_sub(self.seen);
        if pending == 0 {
            return Ok(0);
        }
        if pending > self.in_flight_count {
            return Err(DeviceError::UsedIndex { queue, index, seen: self.seen, in_flight: self.in_flight_count });
        }
        // The elements were written before the index.
        fence(Ordering::Acquire);
        let mut outcome = Ok(0);
        for taken in 0..pending {
            let (id, len) = shared.element(self.seen);
            let Some(posted) = usize::try_from(id).ok().and_then(|at| self.in_flight.get(at).copied().flatten()) else {
                outcome = Err(DeviceError::UsedId { queue, id });
                break;
            };
            // `id` indexed `in_flight`, which has `size` entries: it fits a u16.
            let head = id as u16;
            if len > posted.writable {
                outcome = Err(DeviceError::UsedLength { queue, id: head, len, writable: posted.writable });
                break;
            }
            if posted.write_only && len == 0 {
                outcome = Err(DeviceError::EmptyReceive { queue, id: head });
                break;
            }
            if let Some(offset) = posted.single_writable.and_then(|address| address.checked_sub(window.base())) {
                written.set(offset as usize, len);
            }
            private.set_element(self.given, id, len);
            self.in_flight[usize::from(head)] = None;
            self.in_flight_count -= 1;
            self.seen = self.seen.wrapping_add(1);
            self.given = self.given.wrapping_add(1);
            outcome = Ok(taken + 1);
        }
        // The elements before the index.
        fence(Ordering::Release);
        private.set_index(self.given);
        outcome
    }

    /// After a failure: gives a driver that waits for this queue one element naming no chain,
    /// so that the wait ends (`WrongToken`). Receive queues are left still.
    pub fn poison(&mut self) {
        if self.poisoned || !self.waits_in_notify {
            return;
        }
        let Some(private) = self.device_area.as_ref().and_then(|area| self.private.1.view(area)) else { return };
        private.set_element(self.given, POISON_ID, 0);
        self.given = self.given.wrapping_add(1);
        self.poisoned = true;
        fence(Ordering::Release);
        private.set_index(self.given);
    }
}

/// Copies the chain at `head` from the private descriptor table to the window's, at most a
/// queue of descriptors; returns what the chain holds, or `None` if `head` is beyond the queue.
fn mirror_chain<P: Memory, M: Memory>(private: &DriverView<'_, P>, shared: &DriverView<'_, M>, size: u16, head: u16) -> Option<Posted> {
    if head >= size {
        return None;
    }
    let mut posted = Posted { writable: 0, write_only: true, single_writable: None };
    let mut writables = 0;
    let mut index = head;
    for _ in 0..size {
        let descriptor = private.descriptor(index);
        shared.set_descriptor(index, descriptor);
        let (len, flags, next) = (descriptor.len(), descriptor.flags(), descriptor.next());
        if flags & DESC_F_WRITE != 0 {
            posted.writable = posted.writable.saturating_add(len);
            writables += 1;
            posted.single_writable = (writables == 1).then_some(descriptor.address);
        } else {
            posted.write_only = false;
        }
        if flags & DESC_F_NEXT == 0 || next >= size {
            break;
        }
        index = next;
    }
    Some(posted)
}

/// Whether the stock drivers wait for `queue` of a `kind` link right after notifying: every
/// driver-to-device queue; not the receive queue (0) of console and net.
pub fn waits_in_notify(kind: Kind, queue: u16) -> bool {
    !(matches!(kind, Kind::Console | Kind::Net) && queue == 0)
}

/// What a `notify` of a guarded queue comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notified {
    /// Ring the device: it asked to hear of the chains just published.
    pub ring: bool,
    /// The driver waits for the queue's chains right after notifying.
    pub wait: bool,
}

/// The guard of one link.
pub struct Guard<P: Memory> {
    event_idx: bool,
    /// The link's queues (the first `queue_count`; the rest are `None`).
    queues: [Option<GuardedQueue<P>>; MAX_QUEUES],
    queue_count: usize,
    /// The driver generation started (0: not started), and whether the device has said it
    /// serves it.
    generation: u32,
    served: bool,
    failure: Option<DeviceError>,
    /// What the device wrote into each receive buffer, by its address in the pool.
    written: Written,
}

impl<P: Memory> Guard<P> {
    /// The guard of a `kind` link laid out as `layout`.
    pub fn new(kind: Kind, layout: &Layout, event_idx: bool) -> Self {
        let queues = core::array::from_fn(|index| {
            let queue = index as u16;
            (queue < layout.queue_count).then(|| GuardedQueue::new(layout.queues[index], layout.queue_size, waits_in_notify(kind, queue)))
        });
        let queue_count = usize::from(layout.queue_count).min(MAX_QUEUES);
        Self { event_idx, queues, queue_count, generation: 0, served: false, failure: None, written: Written::new(layout.pool.clone()) }
    }

    /// Bytes to copy back from the receive buffer at window offset `offset`, of `len` bytes:
    /// what the device said it wrote into it, if the guard took that from a checked used
    /// element (never more than the buffer holds), else all of it.
    pub fn written(&mut self, offset: usize, len: usize) -> usize {
        self.written.take(offset, len)
    }

    /// Queue `queue`'s guard.
    pub fn queue(&mut self, queue: u16) -> Option<&mut GuardedQueue<P>> {
        self.queues.get_mut(usize::from(queue))?.as_mut()
    }

    /// The driver resets: every queue starts again, and the failure is forgotten.
    pub fn reset(&mut self) {
        self.queues.iter_mut().flatten().for_each(GuardedQueue::reset);
        self.generation = 0;
        self.served = false;
        self.failure = None;
    }

    /// The driver has started generation `generation`.
    pub fn started(&mut self, generation: u32) {
        self.generation = generation;
        self.served = false;
    }

    /// Why the link failed, if the device made it fail.
    pub fn failure(&self) -> Option<DeviceError> {
        self.failure
    }

    /// Fails the link (once: the first error is kept) and poisons the queues that wait.
    pub fn fail(&mut self, error: DeviceError) {
        self.failure.get_or_insert(error);
        self.queues.iter_mut().flatten().for_each(GuardedQueue::poison);
    }

    /// Reads the device's state line: while the driver is started, the device must say `READY`
    /// with generation 0 (not yet serving it) or the driver's, and never 0 again once it has
    /// said the driver's.
    pub fn check_device<M: Memory>(&mut self, window: &Window<M>) -> Result<(), DeviceError> {
        if self.generation == 0 {
            return Ok(());
        }
        let device = Peer::read(window);
        match (device.state, device.generation) {
            (state::READY, generation) if generation == self.generation => {
                self.served = true;
                Ok(())
            }
            // Not serving this generation yet: it has not looked, or still says why the previous
            // generation failed.
            (state::READY, 0) if !self.served => Ok(()),
            (state::FAILED, 0) if !self.served && device.error == state::ERROR_RING => Ok(()),
            (state::FAILED, generation) => Err(DeviceError::Failed { error: device.error, generation }),
            (state, generation) => Err(DeviceError::StateLine { state, generation, expected: self.generation }),
        }
    }

    /// Copies queue `queue`'s new chains to the window; returns whether to ring the device.
    /// Nothing crosses once the link has failed.
    pub fn publish<M: Memory>(&mut self, queue: u16, window: &Window<M>) -> bool {
        self.notified(queue, window).ring
    }

    /// What the transport's `notify` of queue `queue` does, in one look at the queue:
    /// [`Self::publish`], and whether the driver then waits for the queue
    /// ([`GuardedQueue::waits_in_notify`]).
    pub fn notified<M: Memory>(&mut self, queue: u16, window: &Window<M>) -> Notified {
        let event_idx = self.event_idx;
        let failed = self.failure.is_some();
        let Some(guarded) = self.queue(queue) else { return Notified { ring: false, wait: false } };
        let wait = guarded.waits_in_notify;
        if failed {
            return Notified { ring: false, wait };
        }
        let (old, new) = guarded.publish(window);
        Notified { ring: guarded.device_wants_notification(window, event_idx, old, new), wait }
    }

    /// Checks the device's state line and takes what it used on every queue; returns the
    /// failure, if the link has failed (now or before).
    pub fn sync<M: Memory>(&mut self, window: &Window<M>) -> Option<DeviceError> {
        if self.sync_queues(window, true) { self.failure } else { None }
    }

    /// [`Self::sync`], leaving lazily reaped queues for later unless `lazy`; says only whether
    /// the link has failed ([`Self::failure`] says why), so that the common answer costs no
    /// copy.
    pub fn sync_queues<M: Memory>(&mut self, window: &Window<M>, lazy: bool) -> bool {
        if self.failure.is_none() {
            let outcome = self.check_device(window).and_then(|()| {
                for (index, guarded) in self.queues[..self.queue_count].iter_mut().enumerate() {
                    if let Some(guarded) = guarded.as_mut().filter(|guarded| lazy || !guarded.lazy) {
                        guarded.collect(index as u16, window, &mut self.written)?;
                    }
                }
                Ok(())
            });
            if let Err(error) = outcome {
                self.fail(error);
            }
        }
        self.failure.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::offset;
    use crate::layout;
    use crate::window::CellMemory;
    use std::cell::Cell;

    const BASE: u64 = 0x5000_0000;
    const WINDOW: usize = 256 * 1024;
    const SIZE: u16 = 8;

    fn cells(len: usize) -> Vec<Cell<u8>> {
        (0..len).map(|_| Cell::new(0)).collect()
    }

    /// A shared window, and the private pages a driver's `VirtQueue` would have.
    struct Rig {
        shared: Vec<Cell<u8>>,
        driver_area: Vec<Cell<u8>>,
        device_area: Vec<Cell<u8>>,
        layout: Layout,
    }

    impl Rig {
        fn new(kind: Kind) -> Self {
            let layout = layout::compute(kind.queue_count(), u32::from(SIZE), WINDOW).unwrap();
            Self { shared: cells(WINDOW), driver_area: cells(4096), device_area: cells(4096), layout }
        }

        fn window(&self) -> Window<CellMemory<'_>> {
            Window::new(CellMemory(&self.shared), BASE)
        }

        fn private_driver(&self) -> Window<CellMemory<'_>> {
            Window::new(CellMemory(&self.driver_area), 0)
        }

        fn private_device(&self) -> Window<CellMemory<'_>> {
            Window::new(CellMemory(&self.device_area), 0)
        }

        /// A guard of queue `queue`, on this rig's private pages.
        fn guard(&self, kind: Kind, event_idx: bool) -> Guard<CellMemory<'_>> {
            let mut guard = Guard::new(kind, &self.layout, event_idx);
            let queue = guard.queue(0).unwrap();
            queue.set_driver_area(self.private_driver());
            queue.set_device_area(self.private_device());
            guard
        }

        /// What the stock `VirtQueue` does in `add`: a chain of (address, len, writable) in its
        /// private table from descriptor `head`, the ring entry, the index.
        fn add(&self, head: u16, buffers: &[(u64, u32, bool)], avail_index: u16) {
            let private = self.private_driver();
            for (position, &(address, len, writable)) in buffers.iter().enumerate() {
                let index = head + position as u16;
                let at = DESCRIPTOR_SIZE * usize::from(index);
                let last = position + 1 == buffers.len();
                let flags = if writable { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
                private.write_u64(at, address).unwrap();
                private.write_u32(at + 8, len).unwrap();
                private.write_u16(at + 12, flags).unwrap();
                private.write_u16(at + 14, index + 1).unwrap();
            }
            let avail = DESCRIPTOR_SIZE * usize::from(SIZE);
            private.write_u16(avail + 4 + 2 * usize::from((avail_index - 1) % SIZE), head).unwrap();
            private.write_u16(avail + 2, avail_index).unwrap();
        }

        /// What a device does: a used element in the window, and the used index.
        fn used(&self, slot: u16, id: u32, len: u32, index: u16) {
            let window = self.window();
            let used = self.layout.queues[0].used;
            let element = used + 4 + 8 * usize::from(slot % SIZE);
            window.write_u32(element, id).unwrap();
            window.write_u32(element + 4, len).unwrap();
            window.write_u16(used + 2, index).unwrap();
        }

        /// The driver's view: (used index, [(id, len)]) of its private used ring.
        fn private_used(&self, count: usize) -> (u16, Vec<(u32, u32)>) {
            let private = self.private_device();
            let elements = (0..count).map(|slot| (private.read_u32(4 + 8 * slot).unwrap(), private.read_u32(8 + 8 * slot).unwrap())).collect();
            (private.read_u16(2).unwrap(), elements)
        }

        fn device_line(&self, value: u32, generation: u32, error: u32) {
            let window = self.window();
            window.write_u32(offset::DEVICE_STATE + state::ERROR, error).unwrap();
            window.write_u32(offset::DEVICE_STATE + state::GENERATION, generation).unwrap();
            window.write_u32(offset::DEVICE_STATE + state::STATE, value).unwrap();
        }
    }

    fn pool(rig: &Rig, offset: u64) -> u64 {
        BASE + rig.layout.pool.start as u64 + offset
    }

    #[test]
    fn the_private_used_ring_asks_for_every_notification() {
        let rig = Rig::new(Kind::Block);
        let _guard = rig.guard(Kind::Block, true);
        let private = rig.private_device();
        assert_eq!(private.read_u16(0), Ok(0), "no NO_NOTIFY");
        assert_eq!(private.read_u16(4 + 8 * usize::from(SIZE)), Ok(u16::MAX), "avail_event: virtio-drivers' `idx >= event + 1` always holds");
    }

    #[test]
    fn publishing_copies_the_chain_then_the_index_and_notes_what_it_can_take() {
        let rig = Rig::new(Kind::Block);
        let mut guard = rig.guard(Kind::Block, true);
        let window = rig.window();
        let queue = rig.layout.queues[0];
        // A block read: header, 512 bytes of data, status.
        rig.add(2, &[(pool(&rig, 0), 16, false), (pool(&rig, 0x100), 512, true), (pool(&rig, 0x400), 1, true)], 1);
        // The device asked to hear of the first chain.
        window.write_u16(queue.avail_event(SIZE), 0).unwrap();
        assert!(guard.publish(0, &window), "avail_event 0 is passed: ring");
        assert_eq!(window.read_u16(queue.avail + 2), Ok(1));
        assert_eq!(window.read_u16(queue.avail + 4), Ok(2), "the ring entry");
        for (index, (address, len, flags)) in [(pool(&rig, 0), 16, DESC_F_NEXT), (pool(&rig, 0x100), 512, DESC_F_NEXT | DESC_F_WRITE), (pool(&rig, 0x400), 1, DESC_F_WRITE)].into_iter().enumerate() {
            let at = queue.desc + 16 * (2 + index);
            assert_eq!((window.read_u64(at), window.read_u32(at + 8), window.read_u16(at + 12)), (Ok(address), Ok(len), Ok(flags)));
        }
        let guarded = guard.queue(0).unwrap();
        assert_eq!(guarded.in_flight(), 1);
        assert_eq!(guarded.in_flight[2], Some(Posted { writable: 513, write_only: false, single_writable: None }));
        // A second chain: the device's avail_event still says 0, which this one does not pass.
        rig.add(5, &[(pool(&rig, 0x800), 64, true)], 2);
        assert!(!guard.publish(0, &window), "the device did not ask about index 1");
        assert_eq!(guard.queue(0).unwrap().in_flight[5], Some(Posted { writable: 64, write_only: true, single_writable: Some(pool(&rig, 0x800)) }));
        // Without EVENT_IDX, the device's NO_NOTIFY decides.
        let mut plain = rig.guard(Kind::Block, false);
        window.write_u16(queue.used, USED_F_NO_NOTIFY).unwrap();
        assert!(!plain.publish(0, &window));
        rig.add(6, &[(pool(&rig, 0x900), 8, false)], 3);
        window.write_u16(queue.used, 0).unwrap();
        assert!(plain.publish(0, &window));
    }

    #[test]
    fn a_used_element_reaches_the_driver_only_if_it_is_right() {
        let rig = Rig::new(Kind::Block);
        let mut guard = rig.guard(Kind::Block, false);
        let window = rig.window();
        rig.add(0, &[(pool(&rig, 0), 16, false), (pool(&rig, 0x100), 512, true), (pool(&rig, 0x400), 1, true)], 1);
        guard.publish(0, &window);
        assert_eq!(guard.queue(0).unwrap().collect(0, &window, &mut Written::default()), Ok(0), "nothing used yet");
        rig.used(0, 0, 513, 1);
        assert_eq!(guard.queue(0).unwrap().collect(0, &window, &mut Written::default()), Ok(1));
        assert_eq!(rig.private_used(1), (1, vec![(0, 513)]));
        assert_eq!(guard.queue(0).unwrap().in_flight(), 0);
        // The same chain used again: it is no longer in flight.
        rig.used(1, 0, 1, 2);
        assert_eq!(guard.queue(0).unwrap().collect(0, &window, &mut Written::default()), Err(DeviceError::UsedIndex { queue: 0, index: 2, seen: 1, in_flight: 0 }));
        assert_eq!(rig.private_used(1).0, 1, "the driver saw nothing more");
    }

    #[test]
    fn the_bytes_a_device_wrote_into_a_receive_buffer_are_kept_for_the_copy_back() {
        let rig = Rig::new(Kind::Net);
        let mut guard = rig.guard(Kind::Net, true);
        let window = rig.window();
        rig.add(0, &[(pool(&rig, 0x800), 2048, true)], 1);
        guard.publish(0, &window);
        rig.used(0, 0, 76, 1);
        guard.started(1);
        rig.device_line(state::READY, 1, 0);
        assert_eq!(guard.sync(&window), None);
        let offset = rig.layout.pool.start + 0x800;
        assert_eq!(guard.written(offset, 2048), 76, "only what the device wrote");
        assert_eq!(guard.written(offset, 2048), 2048, "once");
    }

    #[test]
    fn a_lazy_queue_asks_the_device_for_no_notification() {
        let rig = Rig::new(Kind::Net);
        let mut guard = rig.guard(Kind::Net, true);
        let window = rig.window();
        let avail = DESCRIPTOR_SIZE * usize::from(SIZE);
        // The stock driver asks to hear of used index 3.
        rig.private_driver().write_u16(avail + 4 + 2 * usize::from(SIZE), 3).unwrap();
        guard.queue(0).unwrap().set_lazy();
        assert!(!guard.queue(0).unwrap().waits_in_notify());
        guard.sync(&window);
        let event = window.read_u16(rig.layout.queues[0].used_event(SIZE)).unwrap();
        assert_eq!(event, u16::MAX, "just behind the 0 taken: need_event never passes it");
        assert!(!need_event(event, 16, 0));
    }

    /// One chain of `buffers` in flight on queue 0 of a `kind` link; then the device's used
    /// element (id, len) at index 1: what does the guard say, and what does the driver see?
    fn verdict(kind: Kind, buffers: &[(u64, u32, bool)], id: u32, len: u32) -> (Result<u16, DeviceError>, u16) {
        let rig = Rig::new(kind);
        let mut guard = rig.guard(kind, false);
        let window = rig.window();
        rig.add(3, buffers, 1);
        guard.publish(0, &window);
        rig.used(0, id, len, 1);
        let outcome = guard.queue(0).unwrap().collect(0, &window, &mut Written::default());
        (outcome, rig.private_used(0).0)
    }

    #[test]
    fn each_hostile_used_element_is_named_and_kept_from_the_driver() {
        let receive = |rig_pool: u64| vec![(rig_pool, 2048u32, true)];
        let rig = Rig::new(Kind::Net);
        let buffer = receive(pool(&rig, 0));
        // Out of range (virtio-drivers' net driver indexes its receive buffers with it).
        assert_eq!(verdict(Kind::Net, &buffer, 200, 60), (Err(DeviceError::UsedId { queue: 0, id: 200 }), 0));
        assert_eq!(verdict(Kind::Net, &buffer, u32::MAX, 60), (Err(DeviceError::UsedId { queue: 0, id: u32::MAX }), 0));
        // In range, but not a chain in flight.
        assert_eq!(verdict(Kind::Net, &buffer, 4, 60), (Err(DeviceError::UsedId { queue: 0, id: 4 }), 0));
        // Longer than the buffer (virtio-drivers slices its net buffer, indexes its console's).
        assert_eq!(verdict(Kind::Net, &buffer, 3, 2049), (Err(DeviceError::UsedLength { queue: 0, id: 3, len: 2049, writable: 2048 }), 0));
        assert_eq!(verdict(Kind::Console, &buffer, 3, u32::MAX), (Err(DeviceError::UsedLength { queue: 0, id: 3, len: u32::MAX, writable: 2048 }), 0));
        // Nothing in a receive buffer (virtio-drivers' console asserts against it).
        assert_eq!(verdict(Kind::Console, &buffer, 3, 0), (Err(DeviceError::EmptyReceive { queue: 0, id: 3 }), 0));
        // A transmit chain has nothing to write into: 0 is right, 1 is not.
        let transmit = [(pool(&rig, 0), 60, false)];
        assert_eq!(verdict(Kind::Net, &transmit, 3, 0), (Ok(1), 1));
        assert_eq!(verdict(Kind::Net, &transmit, 3, 1), (Err(DeviceError::UsedLength { queue: 0, id: 3, len: 1, writable: 0 }), 0));
        // The whole buffer is fine.
        assert_eq!(verdict(Kind::Net, &buffer, 3, 2048), (Ok(1), 1));
    }

    #[test]
    fn a_used_index_that_runs_ahead_is_refused_and_good_elements_before_a_bad_one_get_through() {
        let rig = Rig::new(Kind::Block);
        let mut guard = rig.guard(Kind::Block, false);
        let window = rig.window();
        rig.add(0, &[(pool(&rig, 0), 8, true)], 1);
        rig.add(1, &[(pool(&rig, 8), 8, true)], 2);
        guard.publish(0, &window);
        // Two in flight; the index says 1000, or wraps back to 0xffff.
        for index in [3, 1000, 0xffff] {
            window.write_u16(rig.layout.queues[0].used + 2, index).unwrap();
            assert_eq!(guard.queue(0).unwrap().collect(0, &window, &mut Written::default()), Err(DeviceError::UsedIndex { queue: 0, index, seen: 0, in_flight: 2 }));
        }
        // Two elements: the first right, the second too long.
        rig.used(0, 1, 8, 1);
        rig.used(1, 0, 9, 2);
        assert_eq!(guard.queue(0).unwrap().collect(0, &window, &mut Written::default()), Err(DeviceError::UsedLength { queue: 0, id: 0, len: 9, writable: 8 }));
        assert_eq!(rig.private_used(1), (1, vec![(1, 8)]), "the first reached the driver");
    }

    #[test]
    fn after_a_failure_a_waiting_queue_gets_one_poison_element_and_a_receive_queue_nothing() {
        for (kind, waits) in [(Kind::Block, true), (Kind::Net, false), (Kind::Console, false)] {
            let rig = Rig::new(kind);
            let mut guard = rig.guard(kind, false);
            let window = rig.window();
            rig.add(0, &[(pool(&rig, 0), 8, true)], 1);
            guard.publish(0, &window);
            rig.used(0, 7, 8, 1);
            guard.started(1);
            rig.device_line(state::READY, 1, 0);
            assert_eq!(guard.sync(&window), Some(DeviceError::UsedId { queue: 0, id: 7 }), "{kind:?}");
            let expected = if waits { (1, vec![(POISON_ID, 0)]) } else { (0, vec![(0, 0)]) };
            assert_eq!(rig.private_used(1), expected, "{kind:?}");
            // Once failed, nothing crosses either way, and the first failure is kept.
            rig.add(1, &[(pool(&rig, 8), 8, true)], 2);
            assert!(!guard.publish(0, &window));
            assert_eq!(window.read_u16(rig.layout.queues[0].avail + 2), Ok(1));
            guard.fail(DeviceError::EmptyReceive { queue: 0, id: 1 });
            assert_eq!(guard.failure(), Some(DeviceError::UsedId { queue: 0, id: 7 }));
            assert_eq!(rig.private_used(2).0, expected.0, "poisoned once");
            // A reset forgets it all.
            guard.reset();
            assert_eq!(guard.failure(), None);
        }
    }

    #[test]
    fn the_device_line_must_say_it_serves_this_driver() {
        let rig = Rig::new(Kind::Block);
        let window = rig.window();
        let check = |line: (u32, u32, u32), served_before: bool| {
            let mut guard = rig.guard(Kind::Block, false);
            guard.started(5);
            if served_before {
                rig.device_line(state::READY, 5, 0);
                guard.check_device(&window).unwrap();
            }
            rig.device_line(line.0, line.1, line.2);
            guard.check_device(&window)
        };
        assert_eq!(check((state::READY, 5, 0), false), Ok(()));
        assert_eq!(check((state::READY, 0, 0), false), Ok(()), "it has not looked yet");
        assert_eq!(check((state::FAILED, 0, state::ERROR_RING), false), Ok(()), "it still says why generation 4 failed");
        assert_eq!(check((state::READY, 0, 0), true), Err(DeviceError::StateLine { state: state::READY, generation: 0, expected: 5 }), "it let go on its own");
        assert_eq!(check((state::FAILED, 5, 0x1234), true), Err(DeviceError::Failed { error: 0x1234, generation: 5 }));
        assert_eq!(check((state::FAILED, 0, state::ERROR_HEADER), false), Err(DeviceError::Failed { error: state::ERROR_HEADER, generation: 0 }));
        assert_eq!(check((state::READY, 6, 0), true), Err(DeviceError::StateLine { state: state::READY, generation: 6, expected: 5 }));
        assert_eq!(check((0xdead_beef, 5, 0), true), Err(DeviceError::StateLine { state: 0xdead_beef, generation: 5, expected: 5 }));
        assert_eq!(check((state::RESET, 5, 0), true), Err(DeviceError::StateLine { state: state::RESET, generation: 5, expected: 5 }));
        // Not started: nothing to check.
        let mut idle = rig.guard(Kind::Block, false);
        rig.device_line(0xdead_beef, 77, 0);
        assert_eq!(idle.check_device(&window), Ok(()));
    }

    #[test]
    fn the_drivers_used_event_and_flags_reach_the_window() {
        let rig = Rig::new(Kind::Block);
        let mut guard = rig.guard(Kind::Block, true);
        let window = rig.window();
        let avail = DESCRIPTOR_SIZE * usize::from(SIZE);
        rig.private_driver().write_u16(avail + 4 + 2 * usize::from(SIZE), 42).unwrap();
        rig.private_driver().write_u16(avail, 1).unwrap();
        guard.sync(&window);
        let queue = rig.layout.queues[0];
        assert_eq!(window.read_u16(queue.used_event(SIZE)), Ok(42));
        assert_eq!(window.read_u16(queue.avail), Ok(1));
    }

    #[test]
    fn only_console_and_net_receive_queues_are_left_to_sync() {
        assert!(!waits_in_notify(Kind::Console, 0));
        assert!(waits_in_notify(Kind::Console, 1));
        assert!(!waits_in_notify(Kind::Net, 0));
        assert!(waits_in_notify(Kind::Net, 1));
        assert!(waits_in_notify(Kind::Block, 0));
    }
}
