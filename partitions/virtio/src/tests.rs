//! Host tests: the layout against the split-ring rules, the devices against a mock driver, and
//! the device side against hostile and random ring contents.

use crate::binding::{Kind, offset, state};
use crate::link::{DeviceLink, DriverSide, OpenError, Step};
use crate::device::{AnyDevice, BlockDevice, Device, CHECKSUM_SEED, ConsoleEcho, NET_HEADER, NetEcho, blk, checksum};
use crate::header::{Header, HeaderError};
use crate::layout::{self, Layout, LayoutError, MIN_POOL, PAGE};
use crate::queue::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DeviceQueue, QueueError, need_event};
use crate::window::{CellMemory, Memory, Window};
use std::cell::Cell;

const BASE: u64 = 0x5000_0000;
const WINDOW: usize = 1 << 20;

fn cells(len: usize) -> Vec<Cell<u8>> {
    (0..len).map(|_| Cell::new(0)).collect()
}

#[test]
fn layout_follows_the_split_ring_rules() {
    for size in [1u32, 2, 16, 256, 1024] {
        let layout = layout::compute(2, size, 4 << 20).unwrap();
        let mut previous_end = offset::QUEUES;
        for queue in layout.queues() {
            let n = size as usize;
            assert_eq!(queue.desc, previous_end);
            assert_eq!(queue.desc % 16, 0, "descriptor table 16-byte aligned");
            assert_eq!(queue.avail, queue.desc + 16 * n, "available ring right after the table");
            assert_eq!(queue.avail % 2, 0);
            assert_eq!(queue.used % PAGE, 0, "used ring on its own page (4-byte aligned at least)");
            assert!(queue.used >= queue.avail + 6 + 2 * n, "available ring with used_event fits");
            assert!(queue.end >= queue.used + 6 + 8 * n, "used ring with avail_event fits");
            assert_eq!(queue.used_event(size as u16), queue.avail + 4 + 2 * n);
            assert_eq!(queue.avail_event(size as u16), queue.used + 4 + 8 * n);
            previous_end = queue.end;
        }
        assert_eq!(layout.pool.start, previous_end);
        assert_eq!(layout.pool.end, 4 << 20);
    }
    // Queue 0 of 256 entries: table 4 KiB, available ring 518 bytes, used ring 2054 bytes.
    let layout = layout::compute(1, 256, WINDOW).unwrap();
    assert_eq!(layout.queues[0], layout::QueueLayout { desc: 0x1000, avail: 0x2000, used: 0x3000, end: 0x4000 });
}

#[test]
fn layout_rejects_what_cannot_work() {
    assert_eq!(layout::compute(1, 0, WINDOW), Err(LayoutError::QueueSize(0)));
    assert_eq!(layout::compute(1, 24, WINDOW), Err(LayoutError::QueueSize(24)));
    assert_eq!(layout::compute(1, 65536, WINDOW), Err(LayoutError::QueueSize(65536)));
    assert_eq!(layout::compute(5, 16, WINDOW), Err(LayoutError::QueueCount(5)));
    assert_eq!(layout::compute(1, 16, WINDOW + 1), Err(LayoutError::WindowSize(WINDOW + 1)));
    // Header page, one queue of 128 (table and available ring in one page, used ring in the
    // next), then less than a minimal pool.
    let needed = offset::QUEUES + 2 * PAGE;
    assert_eq!(
        layout::compute(1, 128, needed + MIN_POOL - PAGE),
        Err(LayoutError::TooSmall { queues_end: needed, window_size: needed + MIN_POOL - PAGE })
    );
    assert!(layout::compute(1, 128, needed + MIN_POOL).is_ok());
}

#[test]
fn header_round_trip_and_mismatch() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let header = Header { device_id: 2, features: 1 << 32, queue_count: 1, queue_size: 16, config_size: 24, window_size: WINDOW as u32 };
    assert_eq!(Header::check(&window, &header), Err(HeaderError::BadMagic));
    window.write_bytes(0, &header.encode()).unwrap();
    assert_eq!(Header::check(&window, &header), Ok(()));
    let other = Header { queue_size: 32, ..header };
    assert_eq!(Header::check(&window, &other), Err(HeaderError::Mismatch { window: header, expected: other }));
}

/// A driver side written for the tests: it lays buffers out in the pool and chains them as a
/// virtio driver would, with free descriptors handed out in turn.
struct MockDriver<'a> {
    window: &'a Window<CellMemory<'a>>,
    layout: Layout,
    queue: usize,
    next_descriptor: u16,
    avail_index: u16,
    last_used: u16,
    next_pool: usize,
}

impl<'a> MockDriver<'a> {
    fn new(window: &'a Window<CellMemory<'a>>, layout: Layout, queue: usize) -> Self {
        let share = (layout.pool.end - layout.pool.start) / usize::from(layout.queue_count);
        let next_pool = layout.pool.start + queue * share;
        Self { window, layout, queue, next_descriptor: 0, avail_index: 0, last_used: 0, next_pool }
    }

    fn buffer(&mut self, data: &[u8], len: usize) -> usize {
        let at = self.next_pool;
        self.next_pool += len.next_multiple_of(16);
        self.window.write_bytes(at, &data[..data.len().min(len)]).unwrap();
        at
    }

    /// Makes a chain of (offset, len, writable) buffers available; returns its head.
    fn add(&mut self, buffers: &[(usize, usize, bool)]) -> u16 {
        let queue = self.layout.queues[self.queue];
        let size = self.layout.queue_size;
        let head = self.next_descriptor;
        for (position, &(offset, len, writable)) in buffers.iter().enumerate() {
            let index = self.next_descriptor;
            self.next_descriptor = (self.next_descriptor + 1) % size;
            let last = position + 1 == buffers.len();
            let flags = if writable { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            let descriptor = queue.desc + 16 * usize::from(index);
            self.window.write_u64(descriptor, BASE + offset as u64).unwrap();
            self.window.write_u32(descriptor + 8, len as u32).unwrap();
            self.window.write_u16(descriptor + 12, flags).unwrap();
            self.window.write_u16(descriptor + 14, self.next_descriptor).unwrap();
        }
        let slot = usize::from(self.avail_index % size);
        self.window.write_u16(queue.avail + 4 + 2 * slot, head).unwrap();
        self.avail_index = self.avail_index.wrapping_add(1);
        self.window.write_u16(queue.avail + 2, self.avail_index).unwrap();
        head
    }

    /// The next used element: (head, bytes written).
    /// Makes a block `FLUSH` request available: a 16-byte header and a status byte.
    fn add_flush(&mut self) -> u16 {
        let request = self.buffer(&block_request(blk::T_FLUSH, 0), 16);
        let status = self.buffer(&[0xff], 1);
        self.add(&[(request, 16, false), (status, 1, true)])
    }

    fn pop_used(&mut self) -> Option<(u16, u32)> {
        let queue = self.layout.queues[self.queue];
        if self.window.read_u16(queue.used + 2).unwrap() == self.last_used {
            return None;
        }
        let element = queue.used + 4 + 8 * usize::from(self.last_used % self.layout.queue_size);
        self.last_used = self.last_used.wrapping_add(1);
        Some((self.window.read_u32(element).unwrap() as u16, self.window.read_u32(element + 4).unwrap()))
    }

    fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.window.read_bytes(offset, &mut out).unwrap();
        out
    }
}

fn device_queues(layout: &Layout, event_idx: bool) -> Vec<DeviceQueue> {
    layout.queues().iter().map(|queue| DeviceQueue::new(*queue, layout.queue_size, layout.pool.clone(), event_idx)).collect()
}

fn block_request(kind: u32, sector: u64) -> Vec<u8> {
    let mut header = kind.to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(&sector.to_le_bytes());
    header
}

#[test]
fn block_device_writes_reads_and_refuses_past_the_end() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(Kind::Block.queue_count(), 16, WINDOW).unwrap();
    let mut queues = device_queues(&layout, true);
    let mut disk = vec![0u8; 64 * 1024];
    let mut device = BlockDevice::new(&mut disk[..], false);
    let mut driver = MockDriver::new(&window, layout.clone(), 0);

    // Write two sectors at sector 3: header, data, status.
    let data: Vec<u8> = (0..1024).map(|i| (i * 7 % 251) as u8).collect();
    let header = driver.buffer(&block_request(blk::T_OUT, 3), 16);
    let payload = driver.buffer(&data, 1024);
    let status = driver.buffer(&[0xff], 1);
    let head = driver.add(&[(header, 16, false), (payload, 1024, false), (status, 1, true)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(driver.pop_used(), Some((head, 1)));
    assert_eq!(driver.read(status, 1), [blk::S_OK]);

    // Read them back.
    let header = driver.buffer(&block_request(blk::T_IN, 3), 16);
    let back = driver.buffer(&[], 1024);
    let status = driver.buffer(&[0xff], 1);
    let head = driver.add(&[(header, 16, false), (back, 1024, true), (status, 1, true)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(driver.pop_used(), Some((head, 1025)));
    assert_eq!(driver.read(back, 1024), data);
    assert_eq!(driver.read(status, 1), [blk::S_OK]);

    // One sector past the end, and a read that starts inside but runs past it.
    for sector in [128, 127] {
        let header = driver.buffer(&block_request(blk::T_IN, sector), 16);
        let back = driver.buffer(&[], 1024);
        let status = driver.buffer(&[0xff], 1);
        driver.add(&[(header, 16, false), (back, 1024, true), (status, 1, true)]);
        device.service(&window, &mut queues, 8).unwrap();
        assert_eq!(driver.pop_used().map(|(_, len)| len), Some(1));
        assert_eq!(driver.read(status, 1), [blk::S_IOERR], "sector {sector}");
    }
    // Flush, an unknown request, and the ID.
    for (kind, expected) in [(blk::T_FLUSH, blk::S_OK), (99, blk::S_UNSUPP)] {
        let header = driver.buffer(&block_request(kind, 0), 16);
        let status = driver.buffer(&[0xff], 1);
        driver.add(&[(header, 16, false), (status, 1, true)]);
        device.service(&window, &mut queues, 8).unwrap();
        driver.pop_used();
        assert_eq!(driver.read(status, 1), [expected]);
    }
    let header = driver.buffer(&block_request(blk::T_GET_ID, 0), 16);
    let id = driver.buffer(&[], 20);
    let status = driver.buffer(&[0xff], 1);
    driver.add(&[(header, 16, false), (id, 20, true), (status, 1, true)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(&driver.read(id, 13), b"trapless-ram0");
    assert_eq!((device.requests, device.failed), (7, 3));
}

#[test]
fn a_read_only_disk_refuses_writes() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(1, 16, WINDOW).unwrap();
    let mut queues = device_queues(&layout, false);
    let mut disk = vec![7u8; 4096];
    let mut device = BlockDevice::new(&mut disk[..], true);
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    let header = driver.buffer(&block_request(blk::T_OUT, 0), 16);
    let payload = driver.buffer(&[1; 512], 512);
    let status = driver.buffer(&[0xff], 1);
    driver.add(&[(header, 16, false), (payload, 512, false), (status, 1, true)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(driver.read(status, 1), [blk::S_IOERR]);
    assert!(disk.iter().all(|&byte| byte == 7));
}

#[test]
fn console_echoes_bytes_in_order_across_buffers() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(2, 4, WINDOW).unwrap();
    let mut queues = device_queues(&layout, true);
    let mut device = ConsoleEcho::default();
    let mut receive = MockDriver::new(&window, layout.clone(), 0);
    let mut transmit = MockDriver::new(&window, layout.clone(), 1);

    let sent = b"hello, static virtio\n";
    let line = transmit.buffer(sent, sent.len());
    let head = transmit.add(&[(line, sent.len(), false)]);
    // No receive buffer yet: the device holds the line.
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(transmit.pop_used(), None);
    // Two small receive buffers take it in two pieces.
    let first = receive.buffer(&[], 8);
    let second = receive.buffer(&[], 64);
    receive.add(&[(first, 8, true)]);
    receive.add(&[(second, 64, true)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(receive.pop_used(), Some((0, 8)));
    assert_eq!(receive.pop_used(), Some((1, sent.len() as u32 - 8)));
    assert_eq!(transmit.pop_used(), Some((head, 0)));
    let mut echoed = receive.read(first, 8);
    echoed.extend(receive.read(second, sent.len() - 8));
    assert_eq!(echoed, sent);
    assert_eq!(device.echoed, sent.len() as u64);
}

#[test]
fn net_echoes_frames_with_a_plain_header_and_counts_them() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(2, 8, WINDOW).unwrap();
    let mut queues = device_queues(&layout, false);
    let mut device = NetEcho::new();
    let mut receive = MockDriver::new(&window, layout.clone(), 0);
    let mut transmit = MockDriver::new(&window, layout.clone(), 1);
    let mut expected = CHECKSUM_SEED;
    for (index, len) in [60usize, 1514, 333].into_iter().enumerate() {
        let mut frame = vec![0u8; NET_HEADER];
        frame.extend((0..len).map(|i| (i + index) as u8));
        expected = checksum(expected, &frame[NET_HEADER..]);
        let at = transmit.buffer(&frame, frame.len());
        transmit.add(&[(at, frame.len(), false)]);
        let into = receive.buffer(&[], 1526);
        receive.add(&[(into, 1526, true)]);
        device.service(&window, &mut queues, 8).unwrap();
        let (_, written) = receive.pop_used().unwrap();
        assert_eq!(written as usize, NET_HEADER + len);
        let back = receive.read(into, NET_HEADER + len);
        assert_eq!(back[10], 1, "num_buffers");
        assert_eq!(&back[NET_HEADER..], &frame[NET_HEADER..]);
    }
    // A frame too big for the receive buffer is dropped, as a network drops it: it is sent
    // (its transmit buffer comes back) and the receive buffer stays for the next frame.
    assert_eq!((0..3).filter_map(|_| transmit.pop_used()).count(), 3, "every frame so far was sent");
    let frame = vec![0u8; NET_HEADER + 100];
    let at = transmit.buffer(&frame, frame.len());
    let big = transmit.add(&[(at, frame.len(), false)]);
    let into = receive.buffer(&[], 64);
    receive.add(&[(into, 64, true)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(transmit.pop_used(), Some((big, 0)));
    assert_eq!(receive.pop_used(), None);
    let small = [&[0u8; NET_HEADER][..], b"tiny frame"].concat();
    let at = transmit.buffer(&small, small.len());
    transmit.add(&[(at, small.len(), false)]);
    device.service(&window, &mut queues, 8).unwrap();
    assert_eq!(receive.pop_used().map(|(_, len)| len as usize), Some(small.len()));
    assert_eq!(&receive.read(into + NET_HEADER, 10), b"tiny frame");
    expected = checksum(expected, b"tiny frame");
    assert_eq!((device.frames, device.checksum, device.dropped), (4, expected, 1));
}

#[test]
fn window_copies_are_exact_at_every_alignment() {
    let bytes = cells(256);
    let window = Window::new(CellMemory(&bytes), BASE);
    for offset in 0..17 {
        for len in 0..41 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + offset + 1) as u8).collect();
            bytes.iter().for_each(|byte| byte.set(0xee));
            window.write_bytes(offset, &data).unwrap();
            let mut back = vec![0u8; len];
            window.read_bytes(offset, &mut back).unwrap();
            assert_eq!(back, data, "offset {offset}, {len} bytes");
            let untouched = bytes[..offset].iter().chain(&bytes[offset + len..]);
            assert!(untouched.into_iter().all(|byte| byte.get() == 0xee), "offset {offset}, {len} bytes");
        }
    }
    assert_eq!(window.write_bytes(250, &[0; 7]), Err(crate::window::OutOfWindow { offset: 250, len: 7 }));
}

/// Sees every byte, in order.
struct Bytes(Vec<u8>);

impl crate::window::Visit for Bytes {
    fn byte(&mut self, value: u8) {
        self.0.push(value);
    }
}

#[test]
fn window_to_window_copies_are_exact_and_seen_in_order_at_every_alignment() {
    let bytes = cells(256);
    let window = Window::new(CellMemory(&bytes), BASE);
    // Every alignment to 16 at both ends (16-byte fields, and whole turns of 32 bytes with the
    // checksum at a word's start or not).
    for from in 0..17 {
        for to in 96..113 {
            for len in 0..73 {
                let data: Vec<u8> = (0..len).map(|i| (i * 13 + from + 5) as u8).collect();
                bytes.iter().for_each(|byte| byte.set(0xee));
                window.write_bytes(from, &data).unwrap();
                let mut seen = Bytes(Vec::new());
                window.copy(from, to, len, &mut seen).unwrap();
                let mut back = vec![0u8; len];
                window.read_bytes(to, &mut back).unwrap();
                assert_eq!((&back, &seen.0), (&data, &data), "from {from} to {to}, {len} bytes");
                assert!(bytes[to + len..].iter().all(|byte| byte.get() == 0xee), "from {from} to {to}, {len} bytes");
                // The checksum of the copy, seen in words, fields and bytes, is the frame's.
                let mut sum = crate::device::Checksum::new(CHECKSUM_SEED);
                window.copy(from, to, len, &mut sum).unwrap();
                assert_eq!(sum.finish(len), checksum(CHECKSUM_SEED, &data), "from {from} to {to}, {len} bytes");
            }
        }
    }
    assert_eq!(window.copy(250, 0, 7, &mut ()), Err(crate::window::OutOfWindow { offset: 250, len: 7 }));
}

#[test]
fn event_idx_suppresses_and_requests_notifications() {
    assert!(need_event(0, 1, 0));
    assert!(!need_event(5, 3, 1), "the driver asked to hear of index 5 only");
    assert!(need_event(5, 7, 4));
    assert!(need_event(65535, 0, 65534), "wraps");
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(1, 16, WINDOW).unwrap();
    let queue_layout = layout.queues[0];
    let mut queue = DeviceQueue::new(queue_layout, 16, layout.pool.clone(), true);
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    let at = driver.buffer(&[], 16);
    for _ in 0..3 {
        driver.add(&[(at, 16, true)]);
    }
    // used_event = 2: the driver wants a notification once the used index passes 2.
    window.write_u16(queue_layout.used_event(16), 2).unwrap();
    let before = queue.used_index();
    let chain = queue.pop(&window).unwrap().unwrap();
    queue.push(&window, chain.head, 0).unwrap();
    assert!(!queue.should_notify(&window, before).unwrap());
    for _ in 0..2 {
        let chain = queue.pop(&window).unwrap().unwrap();
        queue.push(&window, chain.head, 0).unwrap();
    }
    assert!(queue.should_notify(&window, before).unwrap());
    // Arming asks for the next index; nothing is pending, so the device may sleep.
    assert_eq!(queue.arm(&window), Ok(false));
    assert_eq!(window.read_u16(queue_layout.avail_event(16)).unwrap(), 3);
    driver.add(&[(at, 16, true)]);
    assert_eq!(queue.arm(&window), Ok(true), "a buffer came in: take it before sleeping");
}

/// One descriptor at `index` of queue 0, raw.
fn descriptor(window: &Window<CellMemory<'_>>, layout: &Layout, index: u16, address: u64, len: u32, flags: u16, next: u16) {
    let at = layout.queues[0].desc + 16 * usize::from(index);
    window.write_u64(at, address).unwrap();
    window.write_u32(at + 8, len).unwrap();
    window.write_u16(at + 12, flags).unwrap();
    window.write_u16(at + 14, next).unwrap();
}

fn make_available(window: &Window<CellMemory<'_>>, layout: &Layout, heads: &[u16], index: u16) {
    for (slot, &head) in heads.iter().enumerate() {
        window.write_u16(layout.queues[0].avail + 4 + 2 * slot, head).unwrap();
    }
    window.write_u16(layout.queues[0].avail + 2, index).unwrap();
}

#[test]
fn hostile_rings_are_refused_one_rule_at_a_time() {
    let pool_address = BASE + layout::compute(1, 8, WINDOW).unwrap().pool.start as u64;
    type SetUp<'a> = dyn Fn(&Window<CellMemory<'_>>, &Layout) + 'a;
    let cases: [(&str, &SetUp<'_>, QueueError); 9] = [
        ("available index runs away", &|w, l| make_available(w, l, &[0], 9), QueueError::AvailIndex { index: 9, next: 0 }),
        ("head beyond the queue", &|w, l| make_available(w, l, &[8], 1), QueueError::Head(8)),
        ("next beyond the queue", &|w, l| {
            descriptor(w, l, 0, pool_address, 16, DESC_F_NEXT, 200);
            make_available(w, l, &[0], 1);
        }, QueueError::Next(200)),
        ("a loop", &|w, l| {
            descriptor(w, l, 0, pool_address, 16, DESC_F_NEXT, 1);
            descriptor(w, l, 1, pool_address, 16, DESC_F_NEXT, 0);
            make_available(w, l, &[0], 1);
        }, QueueError::TooLong),
        ("indirect", &|w, l| {
            descriptor(w, l, 0, pool_address, 16, DESC_F_INDIRECT, 0);
            make_available(w, l, &[0], 1);
        }, QueueError::Indirect),
        ("a buffer over the header", &|w, l| {
            descriptor(w, l, 0, BASE, 64, DESC_F_WRITE, 0);
            make_available(w, l, &[0], 1);
        }, QueueError::Address { address: BASE, len: 64 }),
        ("a huge length", &|w, l| {
            descriptor(w, l, 0, pool_address, u32::MAX, 0, 0);
            make_available(w, l, &[0], 1);
        }, QueueError::Address { address: pool_address, len: u32::MAX }),
        ("the pool named twice over", &|w, l| {
            let pool = (l.pool.end - l.pool.start) as u32;
            descriptor(w, l, 0, pool_address, pool, DESC_F_NEXT, 1);
            descriptor(w, l, 1, pool_address, 1, 0, 0);
            make_available(w, l, &[0], 1);
        }, QueueError::TooLarge),
        ("readable after writable", &|w, l| {
            descriptor(w, l, 0, pool_address, 16, DESC_F_WRITE | DESC_F_NEXT, 1);
            descriptor(w, l, 1, pool_address, 16, 0, 0);
            make_available(w, l, &[0], 1);
        }, QueueError::ReadAfterWrite),
    ];
    for (what, set_up, expected) in cases {
        let bytes = cells(WINDOW);
        let window = Window::new(CellMemory(&bytes), BASE);
        let layout = layout::compute(1, 8, WINDOW).unwrap();
        set_up(&window, &layout);
        let mut queue = DeviceQueue::new(layout.queues[0], 8, layout.pool.clone(), false);
        assert_eq!(queue.pop(&window), Err(expected), "{what}");
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A window of `len` bytes inside a larger slice, so that an access `Window` failed to keep
/// inside would land on the guard bytes around it rather than panic.
struct Guarded<'a> {
    all: &'a [Cell<u8>],
    start: usize,
    len: usize,
}

macro_rules! guarded {
    ($read:ident, $write:ident, $type:ty) => {
        unsafe fn $read(&self, offset: usize) -> $type {
            // SAFETY: as for `CellMemory`, shifted past the guard.
            unsafe { CellMemory(self.all).$read(self.start + offset) }
        }
        unsafe fn $write(&self, offset: usize, value: $type) {
            // SAFETY: as above.
            unsafe { CellMemory(self.all).$write(self.start + offset, value) }
        }
    };
}

// SAFETY: every access goes to `CellMemory` over the whole slice.
unsafe impl Memory for Guarded<'_> {
    fn len(&self) -> usize {
        self.len
    }
    guarded!(read_u8, write_u8, u8);
    guarded!(read_u16, write_u16, u16);
    guarded!(read_u32, write_u32, u32);
    guarded!(read_u64, write_u64, u64);
}

#[test]
fn random_window_contents_never_panic_or_escape_the_window() {
    const GUARD: usize = 4096;
    const WINDOW_SIZE: usize = 128 * 1024;
    let mut random = Random(0x7472_6170_6c65_7373);
    let mut failures = 0;
    for round in 0..300 {
        let bytes: Vec<Cell<u8>> = (0..WINDOW_SIZE + 2 * GUARD).map(|_| Cell::new(0xa5)).collect();
        let window = Window::new(Guarded { all: &bytes, start: GUARD, len: WINDOW_SIZE }, BASE);
        let kind = Kind::ALL[round % 3];
        let features = 1 << 32 | if round % 2 == 0 { 1 << 29 } else { 0 };
        let header = Header::for_link(kind, features, 8, WINDOW_SIZE as u32);
        window.write_bytes(0, &header.encode()).unwrap();
        let layout = layout::compute(kind.queue_count(), 8, WINDOW_SIZE).unwrap();
        let mut link = DeviceLink::open(window, header, round % 5 == 0).unwrap();
        let mut disk = vec![0u8; 8192];
        // Kept across steps, so that chains it holds are carried into the next one.
        let mut device = match kind {
            Kind::Console => AnyDevice::Console(ConsoleEcho::default()),
            Kind::Net => AnyDevice::Net(NetEcho::new()),
            Kind::Block => AnyDevice::Block(BlockDevice::new(&mut disk[..], false)),
        };
        for _ in 0..6 {
            let window = link.window();
            // Random rings, with addresses into or near the pool now and then...
            for queue in layout.queues() {
                for at in (queue.desc..queue.end).step_by(8) {
                    let value = match random.next() % 4 {
                        0 => BASE + random.next() % (WINDOW_SIZE as u64 * 2),
                        1 => random.next() % 64,
                        _ => random.next(),
                    };
                    window.write_u64(at, value).unwrap();
                }
            }
            // ...and a driver line that is mostly READY, under one of a few generations.
            let value = [state::READY, state::READY, state::RESET, state::STOPPED, random.next() as u32][random.next() as usize % 5];
            window.write_u32(offset::DRIVER_STATE + state::GENERATION, (random.next() % 3) as u32).unwrap();
            window.write_u32(offset::DRIVER_STATE + state::STATE, value).unwrap();
            let step = link.step(&mut device, 32);
            if step.failed.is_some() {
                failures += 1;
                assert_eq!(link.window().read_u32(offset::DEVICE_STATE + state::STATE), Ok(state::FAILED));
            }
        }
        let guards = bytes[..GUARD].iter().chain(&bytes[GUARD + WINDOW_SIZE..]);
        assert!(guards.into_iter().all(|byte| byte.get() == 0xa5), "round {round} wrote outside the window");
    }
    assert!(failures > 100, "the garbage was caught as ring violations ({failures} times)");
}

#[test]
fn configuration_spaces_hold_the_virtio_fields() {
    use crate::binding::config;
    let (console, len) = config::encode(Kind::Console, 0, 0);
    assert_eq!(&console[..len], [80, 0, 25, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    let (net, len) = config::encode(Kind::Net, 3, 0);
    assert_eq!(&net[..len], [0x02, 0x74, 0x6c, 0x76, 0x00, 3, 1, 0, 1, 0, 0xdc, 0x05]);
    let (block, len) = config::encode(Kind::Block, 0, 4 << 20);
    assert_eq!(len, 24);
    assert_eq!(u64::from_le_bytes(block[..8].try_into().unwrap()), 8192, "capacity in sectors");
    assert_eq!(&block[12..16], 14u32.to_le_bytes(), "seg_max");
    assert_eq!(&block[20..24], 512u32.to_le_bytes(), "blk_size");
    assert_eq!(config::block_capacity(&block[..len]), Some(4 << 20));
}

fn driver_line(window: &Window<CellMemory<'_>>, value: u32, generation: u32) {
    window.write_u32(offset::DRIVER_STATE + state::GENERATION, generation).unwrap();
    window.write_u32(offset::DRIVER_STATE + state::STATE, value).unwrap();
}

/// The device line: (state, generation, error).
fn device_line(window: &Window<CellMemory<'_>>) -> (u32, u32, u32) {
    let at = |field| window.read_u32(offset::DEVICE_STATE + field).unwrap();
    (at(state::STATE), at(state::GENERATION), at(state::ERROR))
}

fn block_header(features: u64) -> Header {
    Header { device_id: 2, features, queue_count: 1, queue_size: 8, config_size: 24, window_size: WINDOW as u32 }
}

#[test]
fn the_device_follows_the_driver_through_start_failure_and_restart() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let header = block_header(1 << 32);
    window.write_bytes(0, &header.encode()).unwrap();
    let mut link = DeviceLink::open(Window::new(CellMemory(&bytes), BASE), header, false).unwrap();
    assert_eq!(device_line(&window), (state::READY, 0, 0));
    let layout = layout::compute(1, 8, WINDOW).unwrap();
    let mut disk = vec![0u8; 4096];
    let mut device = BlockDevice::new(&mut disk[..], false);

    // A request made available before the driver says READY waits for it.
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    driver.add_flush();
    assert_eq!(link.step(&mut device, 8), Step::default());
    assert_eq!(driver.pop_used(), None);
    driver_line(&window, state::READY, 1);
    link.step(&mut device, 8);
    assert_eq!(driver.pop_used(), Some((0, 1)));
    assert_eq!(device_line(&window), (state::READY, 1, 0));

    // A ring violation fails this generation only.
    make_available(&window, &layout, &[0, 0, 200], 3);
    let step = link.step(&mut device, 8);
    assert_eq!(step.failed, Some(QueueError::Head(200)));
    assert_eq!(device_line(&window), (state::FAILED, 1, state::ERROR_RING));
    assert_eq!(link.step(&mut device, 8), Step::default(), "a failed link is left alone");
    // The driver resets: the device lets go (generation 0), still saying why it failed.
    driver_line(&window, state::RESET, 1);
    link.step(&mut device, 8);
    assert_eq!(device_line(&window), (state::FAILED, 0, state::ERROR_RING));
    // It starts again on fresh rings: served from index 0.
    bytes[layout.queues[0].desc..layout.queues[0].end].iter().for_each(|byte| byte.set(0));
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    driver.next_pool += 4096;
    driver.add_flush();
    driver_line(&window, state::READY, 2);
    assert_eq!(link.step(&mut device, 8).failed, None);
    assert_eq!(device_line(&window), (state::READY, 2, 0));
    assert_eq!(driver.pop_used(), Some((0, 1)));
}

#[test]
fn a_header_that_is_not_the_device_trees_fails_the_link_for_good() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    window.write_bytes(0, &block_header(1 << 32).encode()).unwrap();
    let expected = block_header(1 << 32 | 1 << 29);
    let outcome = DeviceLink::open(Window::new(CellMemory(&bytes), BASE), expected, false);
    assert!(matches!(outcome, Err(OpenError::Header(HeaderError::Mismatch { .. }))));
    assert_eq!(device_line(&window), (state::FAILED, 0, state::ERROR_HEADER));
}

#[test]
fn with_event_idx_a_batch_costs_one_notification_each_way_and_the_budget_bounds_a_step() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let header = block_header(1 << 32 | 1 << 29);
    window.write_bytes(0, &header.encode()).unwrap();
    let mut link = DeviceLink::open(Window::new(CellMemory(&bytes), BASE), header, false).unwrap();
    let layout = layout::compute(1, 8, WINDOW).unwrap();
    let mut disk = vec![0u8; 4096];
    let mut device = BlockDevice::new(&mut disk[..], false);
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    driver_line(&window, state::READY, 1);
    let queue = layout.queues[0];
    // The device asks to hear of the first buffer only (avail_event = 0 after arming).
    assert_eq!(link.step(&mut device, 8), Step::default());
    assert_eq!(window.read_u16(queue.avail_event(8)), Ok(0));
    let mut rings = 0;
    for index in 0..8u16 {
        driver.add_flush();
        // The driver's rule: notify if the new index passes avail_event.
        rings += u32::from(need_event(window.read_u16(queue.avail_event(8)).unwrap(), index + 1, index));
    }
    assert_eq!(rings, 1, "eight buffers, one doorbell to the device");
    // used_event = 0: the driver wants to hear once anything is used. A budget of 5 leaves 3.
    let step = link.step(&mut device, 5);
    assert_eq!((step.notify.0, step.more, step.used), (1, true, 5));
    let step = link.step(&mut device, 5);
    assert_eq!((step.notify.0, step.more, step.used), (0, false, 3), "the driver has not caught up: no second doorbell");
    assert_eq!((0..8).filter_map(|_| driver.pop_used()).count(), 8);
}

/// Code the other side runs right after a given read: (the offset read, the code).
type Hook<'a> = (usize, Box<dyn FnOnce() + 'a>);

/// A window that logs every read and can run the other side's code right after a given read:
/// for the read-once rule and for interleavings of the handshake.
struct Recording<'a> {
    cells: &'a [Cell<u8>],
    reads: std::cell::RefCell<Vec<usize>>,
    hook: std::cell::RefCell<Option<Hook<'a>>>,
}

impl<'a> Recording<'a> {
    fn new(cells: &'a [Cell<u8>]) -> Self {
        Self { cells, reads: Default::default(), hook: Default::default() }
    }

    fn read(&self, offset: usize) {
        self.reads.borrow_mut().push(offset);
        let due = self.hook.borrow().as_ref().is_some_and(|(at, _)| *at == offset);
        if due {
            let (_, hook) = self.hook.borrow_mut().take().unwrap();
            hook();
        }
    }
}

macro_rules! recorded {
    ($read:ident, $write:ident, $type:ty) => {
        unsafe fn $read(&self, offset: usize) -> $type {
            // SAFETY: as for `CellMemory`.
            let value = unsafe { CellMemory(self.cells).$read(offset) };
            self.read(offset);
            value
        }
        unsafe fn $write(&self, offset: usize, value: $type) {
            // SAFETY: as for `CellMemory`.
            unsafe { CellMemory(self.cells).$write(offset, value) }
        }
    };
}

// SAFETY: every access goes to `CellMemory` over the same cells.
unsafe impl Memory for Recording<'_> {
    fn len(&self) -> usize {
        self.cells.len()
    }
    recorded!(read_u8, write_u8, u8);
    recorded!(read_u16, write_u16, u16);
    recorded!(read_u32, write_u32, u32);
    recorded!(read_u64, write_u64, u64);
}

#[test]
fn the_device_reads_each_ring_field_once() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(1, 8, WINDOW).unwrap();
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    let header = driver.buffer(&block_request(blk::T_IN, 0), 16);
    let data = driver.buffer(&[], 512);
    let status = driver.buffer(&[0xff], 1);
    driver.add(&[(header, 16, false), (data, 512, true), (status, 1, true)]);
    let recording = Window::new(Recording::new(&bytes), BASE);
    let mut queue = DeviceQueue::new(layout.queues[0], 8, layout.pool.clone(), false);
    queue.pop(&recording).unwrap().unwrap();
    let reads = recording_reads(&recording);
    let queue_layout = layout.queues[0];
    let ring: Vec<usize> = reads.iter().copied().filter(|&at| (queue_layout.desc..queue_layout.end).contains(&at)).collect();
    let mut unique = ring.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(ring.len(), unique.len(), "a ring field was read twice: {ring:x?}");
    // The index, the ring entry, and the two words of each of the three descriptors.
    assert_eq!(ring.len(), 2 + 3 * 2);
}

fn recording_reads(window: &Window<Recording<'_>>) -> Vec<usize> {
    window.memory().reads.borrow().clone()
}

#[test]
fn a_driver_that_resets_while_the_device_starts_serving_it_is_never_served() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let header = block_header(1 << 32);
    window.write_bytes(0, &header.encode()).unwrap();
    let layout = layout::compute(1, 8, WINDOW).unwrap();
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    driver.add_flush();
    driver_line(&window, state::READY, 1);

    let recording = Recording::new(&bytes);
    // Right after the device has read the driver's generation, the driver resets: it says
    // RESET, then looks whether the device serves its generation. It cannot yet (the device
    // has not said so), so the driver goes on and may free its rings.
    let went_on = Cell::new(false);
    let peer = Window::new(CellMemory(&bytes), BASE);
    *recording.hook.borrow_mut() = Some((
        offset::DRIVER_STATE + state::GENERATION,
        Box::new(|| {
            peer.write_u32(offset::DRIVER_STATE + state::STATE, state::RESET).unwrap();
            went_on.set(peer.read_u32(offset::DEVICE_STATE + state::GENERATION).unwrap() != 1);
        }),
    ));
    let mut link = DeviceLink::open(Window::new(recording, BASE), header, false).unwrap();
    let mut disk = vec![0u8; 4096];
    let mut device = BlockDevice::new(&mut disk[..], false);
    link.step(&mut device, 8);
    assert!(went_on.get(), "the interleaving under test happened");
    assert_eq!(driver.pop_used(), None, "the device touched the rings of a driver that had gone on");
    assert_eq!(device_line(&window), (state::READY, 0, 0));
    assert_eq!(link.serving(), 0);
}

#[test]
fn a_polling_device_keeps_notifications_suppressed_and_says_when_work_is_left() {
    for event_idx in [false, true] {
        let bytes = cells(WINDOW);
        let window = Window::new(CellMemory(&bytes), BASE);
        let features = 1 << 32 | if event_idx { 1 << 29 } else { 0 };
        let header = block_header(features);
        window.write_bytes(0, &header.encode()).unwrap();
        let mut link = DeviceLink::open(Window::new(CellMemory(&bytes), BASE), header, true).unwrap();
        let layout = layout::compute(1, 8, WINDOW).unwrap();
        let queue = layout.queues[0];
        let mut disk = vec![0u8; 4096];
        let mut device = BlockDevice::new(&mut disk[..], false);
        let mut driver = MockDriver::new(&window, layout.clone(), 0);
        driver_line(&window, state::READY, 1);
        for _ in 0..3 {
            driver.add_flush();
        }
        let step = link.step(&mut device, 2);
        assert!(step.more, "one request is left");
        let step = link.step(&mut device, 2);
        assert!(!step.more);
        assert_eq!((0..3).filter_map(|_| driver.pop_used()).count(), 3);
        // What the driver reads before it notifies says: do not.
        if event_idx {
            let avail_event = window.read_u16(queue.avail_event(8)).unwrap();
            assert!(!need_event(avail_event, 4, 3), "the next buffer would ring the device");
        } else {
            assert_eq!(window.read_u16(queue.used), Ok(crate::queue::USED_F_NO_NOTIFY));
        }
    }
}

#[test]
fn ring_indices_wrap_at_65536() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let layout = layout::compute(1, 2, WINDOW).unwrap();
    let mut queue = DeviceQueue::new(layout.queues[0], 2, layout.pool.clone(), true);
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    let buffer = driver.buffer(&[], 16);
    for round in 0..70_000u32 {
        let head = driver.add(&[(buffer, 16, true)]);
        let chain = queue.pop(&window).unwrap().unwrap_or_else(|| panic!("round {round}: nothing to pop"));
        assert_eq!(chain.head, head);
        queue.push(&window, chain.head, round as usize % 17).unwrap();
        assert_eq!(driver.pop_used(), Some((head, round % 17)), "round {round}");
    }
    assert_eq!(queue.used_index(), (70_000u32 % 65_536) as u16);
}

/// The driver line's state.
fn driver_state(window: &Window<CellMemory<'_>>) -> u32 {
    window.read_u32(offset::DRIVER_STATE + state::STATE).unwrap()
}

#[test]
fn a_driver_side_that_must_not_wait_learns_of_the_let_go_by_looking() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let header = block_header(1 << 32);
    window.write_bytes(0, &header.encode()).unwrap();
    let layout = layout::compute(1, 8, WINDOW).unwrap();
    let mut link = DeviceLink::open(Window::new(CellMemory(&bytes), BASE), header, false).unwrap();
    let mut disk = vec![0u8; 4096];
    let mut device = BlockDevice::new(&mut disk[..], false);
    let mut side = DriverSide::new(&window);
    let rings = Cell::new(0);
    let ring = || rings.set(rings.get() + 1);

    // Never started: nothing to let go of, and the device is not rung.
    side.begin_let_go(&window, state::RESET, ring);
    assert!(side.has_let_go(&window));
    assert_eq!((driver_state(&window), rings.get()), (state::RESET, 0));

    // Generation 1, served: the device holds the rings until it looks again, and a side that
    // looks meanwhile is told so every time, without waiting.
    side.start(&window);
    link.step(&mut device, 8);
    assert_eq!(device_line(&window), (state::READY, 1, 0));
    assert!(!side.has_let_go(&window));
    side.begin_let_go(&window, state::STOPPED, ring);
    assert_eq!((driver_state(&window), rings.get()), (state::STOPPED, 1));
    assert!((0..1000).all(|_| !side.has_let_go(&window)), "a device that has not looked still holds the rings");
    assert!(link.step(&mut device, 8).stopped);
    assert_eq!(device_line(&window), (state::READY, 0, 0));
    assert!(side.has_let_go(&window));

    // Generation 2: a driver that writes its own line back to READY (a partition can; EL2
    // cannot stop it) keeps the device on its rings. The side sees no let-go, and has not
    // waited for one.
    side.start(&window);
    link.step(&mut device, 8);
    side.begin_let_go(&window, state::RESET, ring);
    driver_line(&window, state::READY, 2);
    link.step(&mut device, 8);
    assert_eq!((link.serving(), side.has_let_go(&window)), (2, false));
    // A device that failed the generation is off the rings too.
    make_available(&window, &layout, &[200], 1);
    assert_eq!(link.step(&mut device, 8).failed, Some(QueueError::Head(200)));
    assert_eq!(device_line(&window), (state::FAILED, 2, state::ERROR_RING));
    assert!(side.has_let_go(&window));
    // The waiting half says the same: a let-go the device has already made returns at once.
    side.let_go(&window, state::RESET, ring);
    assert_eq!(rings.get(), 3, "one ring per let-go of a started side");
}

#[test]
fn a_device_that_starts_again_never_serves_the_driver_generation_it_found_started() {
    let bytes = cells(WINDOW);
    let window = Window::new(CellMemory(&bytes), BASE);
    let header = block_header(1 << 32);
    window.write_bytes(0, &header.encode()).unwrap();
    let layout = layout::compute(1, 8, WINDOW).unwrap();
    let mut disk = vec![0u8; 4096];
    let mut device = BlockDevice::new(&mut disk[..], false);
    // A driver in generation 5, with a request the device's earlier start may or may not have
    // served: the new start cannot know, so it must not serve it again.
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    driver.add_flush();
    driver_line(&window, state::READY, 5);
    let mut link = DeviceLink::open(Window::new(CellMemory(&bytes), BASE), header, false).unwrap();
    assert_eq!(link.step(&mut device, 8), Step::default());
    assert_eq!(driver.pop_used(), None, "the old generation's request is not served again");
    assert_eq!(device_line(&window), (state::READY, 0, 0), "the device serves no generation");
    assert_eq!(link.serving(), 0);
    // The driver sees that, resets and starts generation 6 on fresh rings: served.
    driver_line(&window, state::RESET, 5);
    link.step(&mut device, 8);
    bytes[layout.queues[0].desc..layout.queues[0].end].iter().for_each(|byte| byte.set(0));
    let mut driver = MockDriver::new(&window, layout.clone(), 0);
    driver.next_pool += 4096;
    driver.add_flush();
    driver_line(&window, state::READY, 6);
    assert_eq!(link.step(&mut device, 8).failed, None);
    assert_eq!(device_line(&window), (state::READY, 6, 0));
    assert_eq!(driver.pop_used(), Some((0, 1)));
}
