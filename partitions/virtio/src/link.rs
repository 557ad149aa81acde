//! The start-up, reset and stop handshake of `docs/static-virtio.md`, both halves.
//!
//! The device's half is [`DeviceLink`], around a [`Device`] and its queues: a device partition
//! calls [`DeviceLink::step`] whenever it looks at the link (on a doorbell, or polling); the
//! step follows the driver's state line, serves a bounded amount of work, and says which queues
//! the driver wants to hear about and whether to look again before waiting.
//!
//! The driver's half is [`DriverSide`]: the driver transport uses it, and so does EL2 when it
//! plays the driver's part for an emulated (`mmio-trap`) link.

use crate::binding::{EVENT_IDX, offset, state};
use crate::device::{Device, QueueSet};
use crate::header::{Header, HeaderError};
use crate::layout::{self, LayoutError, MAX_QUEUES};
use crate::queue::{DeviceQueue, QueueError};
use crate::window::{Memory, Window};
use core::fmt;
use core::sync::atomic::{Ordering, fence};

/// Why a link cannot be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The device tree's own description does not lay out (the planner would not have made it).
    Layout(LayoutError),
    /// The window's header is not the one the device tree describes.
    Header(HeaderError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout(error) => write!(f, "the link does not lay out: {error}"),
            Self::Header(HeaderError::BadMagic) => f.write_str("the window holds no static virtio header"),
            Self::Header(HeaderError::Version(version)) => write!(f, "the window has layout version {version}"),
            Self::Header(HeaderError::Mismatch { window, expected }) => {
                write!(f, "the window's header {window:?} is not the device tree's {expected:?}")
            }
            Self::Header(HeaderError::OutOfWindow(error)) => error.fmt(f),
        }
    }
}

/// What one [`DeviceLink::step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Queues whose driver asked to be notified of what this step used.
    pub notify: QueueSet,
    /// Work is left (the budget ran out, or more arrived): step again before waiting.
    pub more: bool,
    /// The driver broke a ring rule in this step: the link is failed until it starts again.
    pub failed: Option<QueueError>,
    /// The driver says it has stopped (it is done with the link, and the device has let go).
    pub stopped: bool,
    /// Used-ring entries this step wrote, over all queues.
    pub used: u32,
}

/// The device side of one link.
pub struct DeviceLink<M: Memory> {
    window: Window<M>,
    queues: [DeviceQueue; MAX_QUEUES],
    queue_count: usize,
    /// The driver generation being served (0: none).
    serving: u32,
    /// Why the current generation failed.
    failure: Option<QueueError>,
    /// The device polls: it keeps the driver's notifications suppressed.
    polling: bool,
    /// A driver generation already started when this device opened the link (served by an
    /// earlier start of the device partition, so how far along its rings are is unknown): it
    /// is never served, and the driver must start a new one.
    stale: u32,
}

impl<M: Memory> DeviceLink<M> {
    /// Opens the link in `window` that the device tree describes as `expected`: checks the
    /// header and says `READY`. On a mismatch the device line says `FAILED` for good.
    pub fn open(window: Window<M>, expected: Header, polling: bool) -> Result<Self, OpenError> {
        let layout = layout::compute(expected.queue_count, u32::from(expected.queue_size), window.len())
            .map_err(OpenError::Layout)?;
        if let Err(error) = Header::check(&window, &expected) {
            let line = offset::DEVICE_STATE;
            let _ = window.write_u32(line + state::ERROR, state::ERROR_HEADER);
            let _ = window.write_u32(line + state::STATE, state::FAILED);
            return Err(OpenError::Header(error));
        }
        let event_idx = expected.features & (1 << EVENT_IDX.bit) != 0;
        let queues = core::array::from_fn(|index| {
            DeviceQueue::new(layout.queues[index], expected.queue_size, layout.pool.clone(), event_idx)
        });
        let queue_count = usize::from(expected.queue_count);
        let mut link = Self { window, queues, queue_count, serving: 0, failure: None, polling, stale: 0 };
        if let (state::READY, generation) = link.driver_line() {
            link.stale = generation;
        }
        link.write_line(state::READY, 0, 0);
        Ok(link)
    }

    /// The window.
    pub fn window(&self) -> &Window<M> {
        &self.window
    }

    /// The driver generation being served (0: none).
    pub fn serving(&self) -> u32 {
        self.serving
    }

    /// Why the current driver generation failed, if it did.
    pub fn failure(&self) -> Option<QueueError> {
        self.failure
    }

    /// Writes the device's state line after everything written before (the rings it served):
    /// error and generation first, the state last.
    fn write_line(&self, value: u32, generation: u32, error: u32) {
        let line = offset::DEVICE_STATE;
        fence(Ordering::Release);
        let _ = self.window.write_u32(line + state::ERROR, error);
        let _ = self.window.write_u32(line + state::GENERATION, generation);
        fence(Ordering::Release);
        let _ = self.window.write_u32(line + state::STATE, value);
    }

    /// The driver's state and generation, and whatever it wrote before them.
    fn driver_line(&self) -> (u32, u32) {
        let line = offset::DRIVER_STATE;
        let value = self.window.read_u32(line + state::STATE).unwrap_or(state::RESET);
        fence(Ordering::Acquire);
        let generation = self.window.read_u32(line + state::GENERATION).unwrap_or(0);
        fence(Ordering::Acquire);
        (value, generation)
    }

    /// Stops serving: forgets the rings, then tells the driver (generation 0), still saying
    /// why the generation failed if it did.
    fn let_go<D: Device>(&mut self, device: &mut D) {
        self.serving = 0;
        device.reset();
        match self.failure {
            Some(_) => self.write_line(state::FAILED, 0, state::ERROR_RING),
            None => self.write_line(state::READY, 0, 0),
        }
    }

    /// Follows the driver's state line, then serves `device` for at most `budget` chains.
    pub fn step<D: Device>(&mut self, device: &mut D, budget: usize) -> Step {
        let (driver_state, generation) = self.driver_line();
        let stopped = Step { stopped: driver_state == state::STOPPED, ..Step::default() };
        if driver_state != state::READY || generation == 0 || generation == self.stale {
            if self.serving != 0 {
                self.let_go(device);
            }
            return stopped;
        }
        if generation != self.serving {
            // A new start of the driver: fresh rings. Say so, then make sure the driver is
            // still at it: one that reset meanwhile may have missed our word and gone on, but
            // then (store, full barrier, load on both sides) we see its reset now.
            for queue in &mut self.queues {
                queue.reset();
            }
            device.reset();
            self.serving = generation;
            self.failure = None;
            self.write_line(state::READY, generation, 0);
            fence(Ordering::SeqCst);
            let (driver_state, now) = self.driver_line();
            if driver_state != state::READY || now != generation {
                self.let_go(device);
                return Step { stopped: driver_state == state::STOPPED, ..Step::default() };
            }
        }
        if self.failure.is_some() {
            return Step::default();
        }
        let mut step = Step::default();
        match self.serve(device, budget, &mut step) {
            Ok(()) => step,
            Err(error) => {
                self.failure = Some(error);
                self.write_line(state::FAILED, self.serving, state::ERROR_RING);
                Step { failed: Some(error), ..Step::default() }
            }
        }
    }

    /// Serves `device` for at most `budget` chains, saying what it did in `step` (filled in
    /// place: a step is large to move, for the error it may carry).
    fn serve<D: Device>(&mut self, device: &mut D, budget: usize, step: &mut Step) -> Result<(), QueueError> {
        let window = &self.window;
        let queues = &mut self.queues[..self.queue_count];
        let before: [u16; MAX_QUEUES] = core::array::from_fn(|index| queues.get(index).map_or(0, DeviceQueue::used_index));
        let used = device.service(window, queues, budget)?;
        let mut pending = false;
        let wanted = device.waits_for(queues.len());
        for (index, queue) in queues.iter().enumerate() {
            if used.has(index) {
                // A step writes at most two entries per chain of its budget: far fewer than
                // 65,536, so the wrapped difference is the count.
                step.used += u32::from(queue.used_index().wrapping_sub(before[index]));
                if queue.should_notify(window, before[index])? {
                    step.notify.mark(index);
                }
            }
            // A doorbell only where it may be needed: never when polling; else for the queues
            // the device takes work from now (it may sleep next), not for buffers it has no use
            // for yet (an echo's receive buffers while it holds nothing).
            if self.polling || !wanted.has(index) {
                queue.suppress(window)?;
                if wanted.has(index) {
                    pending |= queue.has_available(window)?;
                }
            } else {
                pending |= queue.arm(window)?;
            }
        }
        // Look again only if this step got somewhere: a device waiting for buffers on one
        // queue (an echo with nowhere to echo to) must not spin on the other's.
        step.more = pending && used != QueueSet::default();
        Ok(())
    }
}

/// What a device's state line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub state: u32,
    /// The driver generation it serves (0: none).
    pub generation: u32,
    /// Why it failed (`state::ERROR_*`), when it did.
    pub error: u32,
}

impl Peer {
    /// Reads the device line of `window`.
    pub fn read<M: Memory>(window: &Window<M>) -> Self {
        let line = offset::DEVICE_STATE;
        let value = window.read_u32(line + state::STATE).unwrap_or(state::RESET);
        fence(Ordering::Acquire);
        Self {
            state: value,
            generation: window.read_u32(line + state::GENERATION).unwrap_or(0),
            error: window.read_u32(line + state::ERROR).unwrap_or(0),
        }
    }
}

/// The driver's half of the handshake: its generation, kept in private memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverSide {
    /// Which start of the driver this is (0: not started).
    generation: u32,
    /// Whether the driver line says `READY`.
    started: bool,
}

impl DriverSide {
    /// Carries on from the generation the driver line of `window` holds, so that a driver that
    /// starts again after its partition did is a new generation to the device.
    pub fn new<M: Memory>(window: &Window<M>) -> Self {
        Self { generation: window.read_u32(offset::DRIVER_STATE + state::GENERATION).unwrap_or(0), started: false }
    }

    /// Whether the driver line says `READY`.
    pub fn started(&self) -> bool {
        self.started
    }

    fn write_state<M: Memory>(window: &Window<M>, value: u32) {
        let _ = window.write_u32(offset::DRIVER_STATE + state::STATE, value);
    }

    /// Says `value` (`RESET` to start over, `STOPPED` when done) and, if the device may be
    /// serving our rings, calls `ring` (to notify it) and waits until it has let go of them
    /// (`docs/static-virtio.md`, steps 3 and 5). The wait has no time limit: a side that must
    /// not wait on another partition uses [`DriverSide::begin_let_go`] and
    /// [`DriverSide::has_let_go`] instead.
    pub fn let_go<M: Memory>(&mut self, window: &Window<M>, value: u32, ring: impl FnOnce()) {
        self.begin_let_go(window, value, ring);
        while !self.has_let_go(window) {
            crate::relax();
        }
    }

    /// The first half of [`DriverSide::let_go`], which does not wait: says `value` and, if the
    /// device may be serving our rings, calls `ring`. EL2, playing the driver of an emulated
    /// link, then asks [`DriverSide::has_let_go`] when it likes, and never touches the rings.
    pub fn begin_let_go<M: Memory>(&mut self, window: &Window<M>, value: u32, ring: impl FnOnce()) {
        self.started = false;
        Self::write_state(window, value);
        if self.generation == 0 {
            return;
        }
        // Our word is visible before the device is told to look, and before we look for its
        // answer (the device stores its generation, then checks ours: one of us sees the other).
        fence(Ordering::SeqCst);
        ring();
    }

    /// Whether the device has let go of the rings of our generation, from one look at its line:
    /// it serves another generation or none, or it is not `READY`. Always true before the first
    /// start. Once it says true, what the caller does next is ordered after the device's last
    /// ring writes.
    pub fn has_let_go<M: Memory>(&self, window: &Window<M>) -> bool {
        if self.generation == 0 {
            return true;
        }
        let device = Peer::read(window);
        let gone = device.generation != self.generation || device.state != state::READY;
        if gone {
            // Nothing of ours is touched before the device's last ring writes are seen.
            fence(Ordering::Acquire);
        }
        gone
    }

    /// Says `READY` under a new generation, after everything written before (the rings).
    pub fn start<M: Memory>(&mut self, window: &Window<M>) {
        self.generation = self.generation.wrapping_add(1).max(1);
        fence(Ordering::Release);
        let _ = window.write_u32(offset::DRIVER_STATE + state::GENERATION, self.generation);
        fence(Ordering::Release);
        Self::write_state(window, state::READY);
        self.started = true;
    }

    /// Says `FAILED`: this driver cannot use the link as it is fixed.
    pub fn fail<M: Memory>(&mut self, window: &Window<M>) {
        self.started = false;
        Self::write_state(window, state::FAILED);
    }
}
