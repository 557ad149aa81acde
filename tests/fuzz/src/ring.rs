//! Target `ring`: the device side of a static virtio link ([`DeviceLink::step`] with the
//! console, net and block devices of `trapless-virtio`) over a window whose driver-written
//! bytes all come from the input, as a hostile driver partition could write them.
//!
//! Input: [`PARAMS`] bytes ([`Params`]: the kind of device, its queue size and features, how
//! many steps with which budgets, whether the driver writes again or starts again between
//! steps), then the window *image*: the bytes of every part of the window a driver writes, in
//! order: its state line, then per queue its descriptor table, available ring and used ring,
//! then the buffer pool. Missing bytes are zero.
//!
//! Beyond "never panics": no access leaves the window or is misaligned; the device writes only
//! its own state line, the used rings, and in the pool the buffers a descriptor gives it to
//! write (never the header, the driver's line, descriptors or available rings); each step's work is bounded by its budget (bytes touched,
//! and at most two used entries per unit of budget); a step that reports a ring violation
//! leaves the device's line saying `FAILED`; the device serves the generation the driver's line
//! shows or none, and never one the driver had started before the device opened the link.

use crate::Bytes;
use std::cell::{Cell, RefCell};
use std::ops::Range;
use trapless_virtio::binding::{EVENT_IDX, Kind, VERSION_1, offset, state};
use trapless_virtio::device::{AnyDevice, BlockDevice, ConsoleEcho, NetEcho};
use trapless_virtio::header::Header;
use trapless_virtio::layout::{self, Layout, MIN_POOL};
use trapless_virtio::link::DeviceLink;
use trapless_virtio::queue::{DESC_F_NEXT, DESC_F_WRITE};
use trapless_virtio::window::{Memory, Window};

/// Where the window is in both sides' address spaces: descriptors carry addresses from here.
pub const BASE: u64 = 0x4420_0000;
/// Bytes of the block device's disk (32 sectors).
pub const DISK: usize = 16 * 1024;
/// Bytes of the input that are [`Params`].
pub const PARAMS: usize = 7;
/// The largest queue the target uses (its rings stay small enough for inputs to reach).
const MAX_QUEUE_LOG2: u8 = 8;
/// Bytes of a state line (state, generation, error).
const STATE_LINE: usize = 12;

/// What the input's first [`PARAMS`] bytes choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub kind: Kind,
    /// Block only: the disk refuses writes.
    pub read_only: bool,
    pub event_idx: bool,
    /// The device polls (it keeps the driver's notifications suppressed).
    pub polling: bool,
    /// The driver writes its image again before every step after the first.
    pub rewrite: bool,
    /// The driver starts a new generation before every step after the first.
    pub restart: bool,
    /// The driver's line says started before the device opens the link (as after the device
    /// partition restarts): that generation must never be served.
    pub early: bool,
    /// 1 to 256.
    pub queue_size: u16,
    /// 1 to 8.
    pub steps: usize,
    /// Step `n` serves at most `budgets[n % 4]` chains (0 to 64 each).
    pub budgets: [usize; 4],
}

impl Params {
    pub fn decode(bytes: &mut Bytes) -> Self {
        let flags = bytes.u8();
        let (kind, read_only) = match flags & 3 {
            0 => (Kind::Console, false),
            1 => (Kind::Net, false),
            2 => (Kind::Block, false),
            _ => (Kind::Block, true),
        };
        let queue_size = 1 << (bytes.u8() % (MAX_QUEUE_LOG2 + 1));
        let steps = 1 + usize::from(bytes.u8() % 8);
        let budgets = [0; 4].map(|_: usize| usize::from(bytes.u8() % 65));
        Self {
            kind,
            read_only,
            event_idx: flags & 4 != 0,
            polling: flags & 8 != 0,
            rewrite: flags & 16 != 0,
            restart: flags & 32 != 0,
            early: flags & 64 != 0,
            queue_size,
            steps,
            budgets,
        }
    }

    pub fn encode(&self) -> [u8; PARAMS] {
        let kind = match (self.kind, self.read_only) {
            (Kind::Console, _) => 0,
            (Kind::Net, _) => 1,
            (Kind::Block, false) => 2,
            (Kind::Block, true) => 3,
        };
        let flags = kind
            | u8::from(self.event_idx) << 2
            | u8::from(self.polling) << 3
            | u8::from(self.rewrite) << 4
            | u8::from(self.restart) << 5
            | u8::from(self.early) << 6;
        let budgets = self.budgets.map(|budget| budget as u8);
        [flags, self.queue_size.trailing_zeros() as u8, (self.steps - 1) as u8, budgets[0], budgets[1], budgets[2], budgets[3]]
    }

    /// The header EL2 writes and the device's device tree describes.
    pub fn header(&self, window_size: usize) -> Header {
        let features = 1 << VERSION_1.bit | if self.event_idx { 1 << EVENT_IDX.bit } else { 0 };
        Header::for_link(self.kind, features, self.queue_size, window_size as u32)
    }

    /// The smallest window the link lays out in (a buffer pool of [`MIN_POOL`]), and its layout.
    pub fn layout(&self) -> Layout {
        // Where the queues end does not depend on the window's size: find it in a roomy window.
        let (queues, size) = (self.kind.queue_count(), self.queue_size.into());
        let queues_end = layout::compute(queues, size, 16 << 20).expect("queues of up to 256 entries lay out").pool.start;
        layout::compute(queues, size, queues_end + MIN_POOL).expect("the smallest window lays out")
    }
}

/// The parts of the window a driver writes, in image order.
pub fn driver_parts(layout: &Layout) -> Vec<Range<usize>> {
    let size = usize::from(layout.queue_size);
    let mut parts = Vec::new();
    parts.push(offset::DRIVER_STATE..offset::DRIVER_STATE + STATE_LINE);
    for queue in layout.queues() {
        parts.push(queue.desc..queue.desc + 16 * size);
        parts.push(queue.avail..queue.avail + 6 + 2 * size);
        parts.push(queue.used..queue.used + 6 + 8 * size);
    }
    parts.push(layout.pool.clone());
    parts
}

/// The parts the device may write: its state line, the used rings, the buffer pool.
fn device_parts(layout: &Layout) -> Vec<Range<usize>> {
    let size = usize::from(layout.queue_size);
    let mut parts = Vec::new();
    parts.push(offset::DEVICE_STATE..offset::DEVICE_STATE + STATE_LINE);
    parts.extend(layout.queues().iter().map(|queue| queue.used..queue.used + 6 + 8 * size));
    parts.push(layout.pool.clone());
    parts
}

/// Copies `image` into the driver's parts of `cells`, in order, as far as it goes.
fn scatter(cells: &[Cell<u8>], parts: &[Range<usize>], image: &[u8]) {
    let targets = parts.iter().flat_map(|part| part.clone());
    for (at, &byte) in targets.zip(image) {
        cells[at].set(byte);
    }
}

fn read_u32(cells: &[Cell<u8>], at: usize) -> u32 {
    u32::from_le_bytes([0, 1, 2, 3].map(|index| cells[at + index].get()))
}

fn write_u32(cells: &[Cell<u8>], at: usize, value: u32) {
    for (index, byte) in value.to_le_bytes().into_iter().enumerate() {
        cells[at + index].set(byte);
    }
}

/// The window's memory, checking each access the way the `Memory` contract asks of `Window`:
/// in bounds, naturally aligned, and (while the device runs) writes only where the device may
/// write. It counts bytes touched and used-index updates, for the work bounds.
struct Checked<'a> {
    cells: &'a [Cell<u8>],
    device_parts: &'a [Range<usize>],
    used_indexes: Vec<usize>,
    pool: Range<usize>,
    touched: Cell<usize>,
    pushes: Cell<usize>,
    /// Bytes written into the buffer pool since the last [`Checked::take_pool_writes`].
    pool_writes: RefCell<Vec<Range<usize>>>,
}

impl Checked<'_> {
    fn access(&self, offset: usize, size: usize, write: bool) -> usize {
        let inside = offset.checked_add(size).is_some_and(|end| end <= self.cells.len());
        assert!(inside, "an access of {size} bytes at window offset {offset:#x} leaves the {:#x}-byte window", self.cells.len());
        assert!(offset.is_multiple_of(size), "a misaligned {size}-byte access at window offset {offset:#x}");
        if write {
            let allowed = self.device_parts.iter().any(|part| part.start <= offset && offset + size <= part.end);
            assert!(allowed, "the device wrote {size} bytes at window offset {offset:#x}, which only the driver or EL2 writes");
            if size == 2 && self.used_indexes.contains(&offset) {
                self.pushes.set(self.pushes.get() + 1);
            }
            if self.pool.contains(&offset) {
                self.pool_writes.borrow_mut().push(offset..offset + size);
            }
        }
        self.touched.set(self.touched.get() + size);
        offset
    }

    fn read<const N: usize>(&self, offset: usize) -> [u8; N] {
        let at = self.access(offset, N, false);
        core::array::from_fn(|index| self.cells[at + index].get())
    }

    fn write<const N: usize>(&self, offset: usize, bytes: [u8; N]) {
        let at = self.access(offset, N, true);
        for (index, byte) in bytes.into_iter().enumerate() {
            self.cells[at + index].set(byte);
        }
    }
}

// SAFETY: every method checks its offset and indexes the slice (which would panic rather than
// leave it): no access touches anything but the bytes it names.
unsafe impl Memory for Checked<'_> {
    fn len(&self) -> usize {
        self.cells.len()
    }
    unsafe fn read_u8(&self, offset: usize) -> u8 {
        u8::from_le_bytes(self.read(offset))
    }
    unsafe fn read_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.read(offset))
    }
    unsafe fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.read(offset))
    }
    unsafe fn read_u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.read(offset))
    }
    unsafe fn write_u8(&self, offset: usize, value: u8) {
        self.write(offset, value.to_le_bytes());
    }
    unsafe fn write_u16(&self, offset: usize, value: u16) {
        self.write(offset, value.to_le_bytes());
    }
    unsafe fn write_u32(&self, offset: usize, value: u32) {
        self.write(offset, value.to_le_bytes());
    }
    unsafe fn write_u64(&self, offset: usize, value: u64) {
        self.write(offset, value.to_le_bytes());
    }
}

pub fn run(data: &[u8]) {
    let mut input = Bytes(data);
    let params = Params::decode(&mut input);
    let image = input.0;
    let layout = params.layout();
    let header = params.header(layout.window_size);
    let driver_parts = driver_parts(&layout);
    let device_parts = device_parts(&layout);

    let cells: Vec<Cell<u8>> = (0..layout.window_size).map(|_| Cell::new(0)).collect();
    // What EL2 writes at boot; what the driver wrote, if it was there before the device.
    for (at, byte) in header.encode().into_iter().enumerate() {
        cells[offset::HEADER + at].set(byte);
    }
    if params.early {
        scatter(&cells, &driver_parts, image);
    }

    let memory = Checked {
        cells: &cells,
        device_parts: &device_parts,
        used_indexes: layout.queues().iter().map(|queue| queue.used + 2).collect(),
        pool: layout.pool.clone(),
        touched: Cell::new(0),
        pushes: Cell::new(0),
        pool_writes: RefCell::new(Vec::new()),
    };
    // A generation the driver had started before the device opened is never served.
    let driver_line = offset::DRIVER_STATE;
    let stale = (params.early && read_u32(&cells, driver_line + state::STATE) == state::READY)
        .then(|| read_u32(&cells, driver_line + state::GENERATION))
        .filter(|&generation| generation != 0);
    let mut link = DeviceLink::open(Window::new(memory, BASE), header, params.polling).expect("the header EL2 wrote matches");
    // A driver waits for the device's READY before it starts.
    scatter(&cells, &driver_parts, image);
    let mut disk = vec![0u8; DISK];
    let mut device = match params.kind {
        Kind::Console => AnyDevice::Console(ConsoleEcho::default()),
        Kind::Net => AnyDevice::Net(NetEcho::new()),
        Kind::Block => AnyDevice::Block(BlockDevice::new(&mut disk[..], params.read_only)),
    };

    let pool = layout.pool.len();
    for step in 0..params.steps {
        if step > 0 && params.rewrite {
            scatter(&cells, &driver_parts, image);
        }
        if step > 0 && params.restart {
            let at = offset::DRIVER_STATE + state::GENERATION;
            write_u32(&cells, at, read_u32(&cells, at).wrapping_add(1));
        }
        let budget = params.budgets[step % 4];
        let memory = link.window().memory();
        let (touched, pushes) = (memory.touched.get(), memory.pushes.get());
        let outcome = link.step(&mut device, budget);
        let memory = link.window().memory();
        let (touched, pushes) = (memory.touched.get() - touched, memory.pushes.get() - pushes);

        // A chain holds at most the pool's bytes: a unit of budget reads one chain and writes
        // another, besides walking two chains of at most 16 descriptors and two used entries.
        let bound = 1024 + budget * (2 * pool + 2048);
        assert!(touched <= bound, "step {step} with budget {budget} touched {touched} bytes (bound {bound})");
        assert!(pushes <= 2 * budget, "step {step} with budget {budget} used {pushes} chains");
        assert!(u32::from(outcome.notify.0) >> layout.queue_count == 0, "notify {:?} names a queue the link lacks", outcome.notify);
        // Buffers are the driver's: the device writes only those it was given to write.
        let writable = writable_buffers(&cells, &layout);
        for write in memory.pool_writes.take() {
            let given = writable.iter().any(|buffer| buffer.start <= write.start && write.end <= buffer.end);
            assert!(given, "step {step} wrote pool bytes {write:#x?}, in no device-writable buffer");
        }
        if outcome.failed.is_some() {
            assert_eq!(read_u32(&cells, offset::DEVICE_STATE + state::STATE), state::FAILED, "a failed step says FAILED");
            assert_eq!(read_u32(&cells, offset::DEVICE_STATE + state::ERROR), state::ERROR_RING);
        }
        // The device serves the generation the driver's line shows, or none.
        let serving = link.serving();
        assert!(serving == 0 || serving == read_u32(&cells, driver_line + state::GENERATION), "serves generation {serving}");
        assert!(stale.is_none_or(|stale| serving != stale), "step {step} serves generation {serving}, started before the device opened");
    }
}

/// The window offsets of every buffer a descriptor of `layout`'s queues now gives the device
/// to write.
fn writable_buffers(cells: &[Cell<u8>], layout: &Layout) -> Vec<Range<usize>> {
    let mut buffers = Vec::new();
    for queue in layout.queues() {
        for index in 0..usize::from(layout.queue_size) {
            let at = queue.desc + 16 * index;
            let bytes: [u8; 16] = core::array::from_fn(|byte| cells[at + byte].get());
            let address = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
            let len = u64::from(u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()));
            let flags = u16::from_le_bytes([bytes[12], bytes[13]]);
            let start = address.wrapping_sub(BASE);
            if flags & DESC_F_WRITE != 0 && start < cells.len() as u64 {
                let start = start as usize;
                buffers.push(start..start.saturating_add(len as usize));
            }
        }
    }
    buffers
}

/// A driver that fills a window properly, to make seed inputs: what a real link carries.
pub struct SeedDriver {
    pub params: Params,
    layout: Layout,
    window: Vec<u8>,
    next_descriptor: Vec<u16>,
    avail_index: Vec<u16>,
    next_pool: usize,
}

impl SeedDriver {
    /// A started driver (state `READY`, generation 1) with empty rings.
    pub fn new(params: Params) -> Self {
        let layout = params.layout();
        let queues = layout.queues().len();
        let mut driver = Self {
            params,
            window: vec![0; layout.window_size],
            next_pool: layout.pool.start,
            layout,
            next_descriptor: vec![0; queues],
            avail_index: vec![0; queues],
        };
        driver.put(offset::DRIVER_STATE + state::STATE, &state::READY.to_le_bytes());
        driver.put(offset::DRIVER_STATE + state::GENERATION, &1u32.to_le_bytes());
        driver
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.window[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Makes a chain available on `queue`: per buffer, its bytes (a readable buffer) or the
    /// length of a writable one.
    pub fn chain(&mut self, queue: usize, buffers: &[Result<&[u8], usize>]) {
        let layout = self.layout.queues[queue];
        let size = self.layout.queue_size;
        let head = self.next_descriptor[queue];
        for (position, buffer) in buffers.iter().enumerate() {
            let (len, writable) = match buffer {
                Ok(bytes) => (bytes.len(), false),
                Err(len) => (*len, true),
            };
            let at = self.next_pool;
            if let Ok(bytes) = buffer {
                self.put(at, bytes);
            }
            self.next_pool += len.next_multiple_of(16);
            let index = self.next_descriptor[queue];
            self.next_descriptor[queue] = (index + 1) % size;
            let last = position + 1 == buffers.len();
            let flags = if writable { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            let descriptor = layout.desc + 16 * usize::from(index);
            self.put(descriptor, &(BASE + at as u64).to_le_bytes());
            self.put(descriptor + 8, &(len as u32).to_le_bytes());
            self.put(descriptor + 12, &flags.to_le_bytes());
            self.put(descriptor + 14, &self.next_descriptor[queue].to_le_bytes());
        }
        let slot = usize::from(self.avail_index[queue] % size);
        self.put(layout.avail + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_index[queue] = self.avail_index[queue].wrapping_add(1);
        let index = self.avail_index[queue];
        self.put(layout.avail + 2, &index.to_le_bytes());
    }

    /// The input: parameters, then the image of the driver's parts, without trailing zeros.
    pub fn input(&self) -> Vec<u8> {
        let mut input = self.params.encode().to_vec();
        input.extend(driver_parts(&self.layout).into_iter().flat_map(|part| self.window[part].iter().copied()));
        let end = input.iter().rposition(|&byte| byte != 0).map_or(PARAMS, |last| (last + 1).max(PARAMS));
        input.truncate(end);
        input
    }
}
