//! The stock virtio-drivers console, block and net drivers, unchanged, on a static virtio link:
//! the driver side is this crate's `StaticTransport` and `WindowHal`, the device side its
//! `DeviceLink` and devices, running on another thread over the same window, woken by a
//! "doorbell" flag that stays set until taken, as an LPI's pending bit does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use trapless_virtio::binding::{EVENT_IDX, Kind, VERSION_1, config, offset, state};
use trapless_virtio::device::{BlockDevice, CHECKSUM_SEED, ConsoleEcho, Device, NetEcho, checksum};
use trapless_virtio::Notify;
use trapless_virtio::driver::{self, LinkConfig, StaticTransport, WindowHal};
use trapless_virtio::link::DeviceLink;
use trapless_virtio::window::{RawMemory, Window};
use virtio_drivers::Error;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::device::net::VirtIONet;

const WINDOW: usize = 1 << 20;
/// The address both sides use for the window: not where the host put it.
const WINDOW_IPA: u64 = 0x7000_0000;
const BUDGET: usize = 8;

/// A page-aligned window, zeroed and given its header and configuration, as EL2 does at boot.
struct Memory {
    base: *mut u8,
}

// SAFETY: the window is plain memory, shared on purpose.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl Memory {
    fn new(config: &LinkConfig, capacity: u64) -> Self {
        let layout = std::alloc::Layout::from_size_align(WINDOW, 4096).unwrap();
        // SAFETY: a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let memory = Self { base };
        let window = memory.window();
        window.write_bytes(offset::HEADER, &config.header().encode()).unwrap();
        let (bytes, len) = config::encode(config.kind, 0, capacity);
        window.write_bytes(offset::CONFIG, &bytes[..len]).unwrap();
        memory
    }

    fn window(&self) -> Window<RawMemory> {
        // SAFETY: the allocation lives as long as the test (it is leaked).
        Window::new(unsafe { RawMemory::new(self.base, WINDOW) }, WINDOW_IPA)
    }
}

fn link(kind: Kind, queue_size: u16, features: u64, memory_base: *mut u8) -> LinkConfig {
    LinkConfig { kind, features, queue_size, window: memory_base as usize, window_ipa: WINDOW_IPA, window_size: WINDOW }
}

fn fixed(extra: u64) -> u64 {
    1 << VERSION_1.bit | 1 << EVENT_IDX.bit | extra
}

/// The device partition, on its own thread.
struct Backend {
    kick: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Notifications the driver sent, and those the device sent back.
    to_device: Arc<AtomicU64>,
    to_driver: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// The driver's doorbell: sets the device's flag.
struct Ring {
    kick: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
}

impl Notify for Ring {
    fn notify(&mut self, _queue: u16) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.kick.store(true, Ordering::SeqCst);
    }
}

impl Backend {
    fn start<D: Device + Send + 'static>(memory: &Memory, config: &LinkConfig, mut device: D) -> Self {
        let kick = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let to_driver = Arc::new(AtomicU64::new(0));
        let mut link = DeviceLink::open(memory.window(), config.header(), false).unwrap();
        let thread = {
            let (kick, stop, to_driver) = (kick.clone(), stop.clone(), to_driver.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let step = link.step(&mut device, BUDGET);
                    to_driver.fetch_add(u64::from(step.notify.0.count_ones()), Ordering::Relaxed);
                    if !step.more {
                        while !kick.swap(false, Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                }
            })
        };
        Self { kick, stop, to_device: Arc::new(AtomicU64::new(0)), to_driver, thread: Some(thread) }
    }

    fn ring(&self) -> Ring {
        Ring { kick: self.kick.clone(), count: self.to_device.clone() }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

fn open<const SLOT: usize>(config: LinkConfig, backend: &Backend) -> StaticTransport<Ring> {
    // SAFETY: the window is the test's, mapped, and used by nothing else on this side.
    unsafe { driver::open(SLOT, config, backend.ring()) }.unwrap()
}

#[test]
fn the_stock_console_driver_gets_every_line_back_byte_exact() {
    let memory = Memory::new(&link(Kind::Console, 2, fixed(0), std::ptr::null_mut()), 0);
    let config = link(Kind::Console, 2, fixed(0), memory.base);
    let backend = Backend::start(&memory, &config, ConsoleEcho::default());
    let mut console = VirtIOConsole::<WindowHal<0>, _>::new(open::<0>(config, &backend)).unwrap();
    for line in ["hello, static virtio\n", "a second, longer line that goes through in one buffer\n", "\n"] {
        console.send_bytes(line.as_bytes()).unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < line.len() {
            if let Some(byte) = console.recv(true).unwrap() {
                echoed.push(byte);
            }
        }
        assert_eq!(String::from_utf8(echoed).unwrap(), line);
    }
    assert!(backend.to_device.load(Ordering::Relaxed) > 0, "the driver rang the device");
}

/// The block test, on a link that fixes `features`, in driver slot `SLOT`.
fn block_round_trip<const SLOT: usize>(features: u64) {
    const CAPACITY: u64 = 64 * 1024;
    let memory = Memory::new(&link(Kind::Block, 16, features, std::ptr::null_mut()), CAPACITY);
    let config = link(Kind::Block, 16, features, memory.base);
    let disk: &'static mut [u8] = vec![0u8; CAPACITY as usize].leak();
    let backend = Backend::start(&memory, &config, BlockDevice::new(disk, false));
    let mut block = VirtIOBlk::<WindowHal<SLOT>, _>::new(open::<SLOT>(config, &backend)).unwrap();
    assert_eq!(block.capacity(), CAPACITY / SECTOR_SIZE as u64);
    let sectors = (CAPACITY / SECTOR_SIZE as u64) as usize;
    let pattern = |sector: usize| -> Vec<u8> { (0..SECTOR_SIZE).map(|i| (sector * 31 + i * 7) as u8).collect() };
    for sector in (0..sectors).step_by(4) {
        let data: Vec<u8> = (sector..sector + 4).flat_map(pattern).collect();
        block.write_blocks(sector, &data).unwrap();
    }
    for sector in 0..sectors {
        let mut back = vec![0u8; SECTOR_SIZE];
        block.read_blocks(sector, &mut back).unwrap();
        assert_eq!(back, pattern(sector), "sector {sector}");
    }
    let mut past = vec![0u8; SECTOR_SIZE];
    assert_eq!(block.read_blocks(sectors, &mut past), Err(Error::IoError));
    let mut straddling = vec![0u8; 2 * SECTOR_SIZE];
    assert_eq!(block.read_blocks(sectors - 1, &mut straddling), Err(Error::IoError));
    // Still serving after the refusals.
    block.read_blocks(0, &mut past).unwrap();
    assert_eq!(past, pattern(0));
}

#[test]
fn the_stock_block_driver_writes_reads_back_and_is_refused_past_the_end() {
    block_round_trip::<1>(fixed(0));
}

#[test]
fn the_stock_block_driver_works_without_event_idx_too() {
    block_round_trip::<5>(1 << VERSION_1.bit);
}

#[test]
fn the_stock_net_driver_sends_mixed_frames_and_gets_each_back() {
    const QUEUE: usize = 16;
    let memory = Memory::new(&link(Kind::Net, QUEUE as u16, fixed(0), std::ptr::null_mut()), 0);
    let config = link(Kind::Net, QUEUE as u16, fixed(0), memory.base);
    let backend = Backend::start(&memory, &config, NetEcho::new());
    let mut net = VirtIONet::<WindowHal<2>, _, QUEUE>::new(open::<2>(config, &backend), 2048).unwrap();
    assert_eq!(net.mac_address(), [0x02, 0x74, 0x6c, 0x76, 0x00, 0x00]);
    let (mut sent, mut received) = (CHECKSUM_SEED, CHECKSUM_SEED);
    for (index, len) in [60usize, 1514, 333, 64, 1000, 1514, 42].into_iter().cycle().take(50).enumerate() {
        let mut frame = net.new_tx_buffer(len);
        for (at, byte) in frame.packet_mut().iter_mut().enumerate() {
            *byte = (at * 13 + index) as u8;
        }
        sent = checksum(sent, frame.packet());
        net.send(frame).unwrap();
        let back = loop {
            match net.receive() {
                Ok(back) => break back,
                Err(Error::NotReady) => std::thread::yield_now(),
                Err(error) => panic!("frame {index}: {error:?}"),
            }
        };
        assert_eq!(back.packet().len(), len, "frame {index}");
        received = checksum(received, back.packet());
        net.recycle_rx_buffer(back).unwrap();
    }
    assert_eq!(sent, received);
    assert!(backend.to_driver.load(Ordering::Relaxed) > 0, "the device rang the driver");
}

#[test]
fn a_driver_that_starts_again_is_served_again_on_fresh_rings() {
    const CAPACITY: u64 = 16 * 1024;
    let memory = Memory::new(&link(Kind::Block, 16, fixed(0), std::ptr::null_mut()), CAPACITY);
    let config = link(Kind::Block, 16, fixed(0), memory.base);
    let disk: &'static mut [u8] = vec![0u8; CAPACITY as usize].leak();
    let backend = Backend::start(&memory, &config, BlockDevice::new(disk, false));
    let data = vec![0x5a; SECTOR_SIZE];
    {
        let mut block = VirtIOBlk::<WindowHal<3>, _>::new(open::<3>(config, &backend)).unwrap();
        block.write_blocks(5, &data).unwrap();
    }
    // The first driver is gone (it said RESET); a second one starts on the same window.
    let window = memory.window();
    let transport = open::<3>(config, &backend);
    let mut block = VirtIOBlk::<WindowHal<3>, _>::new(transport).unwrap();
    let mut back = vec![0u8; SECTOR_SIZE];
    block.read_blocks(5, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(window.read_u32(offset::DRIVER_STATE + state::GENERATION), Ok(2));
    assert_eq!(window.read_u32(offset::DEVICE_STATE + state::GENERATION), Ok(2), "the device serves the second start");
}

#[test]
fn a_driver_that_does_not_accept_every_fixed_feature_refuses_the_link() {
    // BLK_SIZE (bit 6) is a feature trapless devices implement, but virtio-drivers does not
    // accept it.
    let features = fixed(1 << 6);
    let memory = Memory::new(&link(Kind::Block, 16, features, std::ptr::null_mut()), 4096);
    let config = link(Kind::Block, 16, features, memory.base);
    let backend = Backend::start(&memory, &config, BlockDevice::new(vec![0u8; 4096].leak(), false));
    let outcome = VirtIOBlk::<WindowHal<4>, _>::new(open::<4>(config, &backend));
    assert!(outcome.is_err());
    assert_eq!(memory.window().read_u32(offset::DRIVER_STATE + state::STATE), Ok(state::FAILED));
}

#[test]
fn buffers_a_driver_keeps_in_the_window_are_shared_in_place_and_given_back_to_their_own_pool() {
    use trapless_virtio::driver::WindowBuffer;
    use virtio_drivers::device::net::VirtIONetRaw;
    const QUEUE: usize = 16;
    const SLOT: usize = 6;
    let memory = Memory::new(&link(Kind::Net, QUEUE as u16, fixed(0), std::ptr::null_mut()), 0);
    let config = link(Kind::Net, QUEUE as u16, fixed(0), memory.base);
    let backend = Backend::start(&memory, &config, NetEcho::new());
    let transport = open::<SLOT>(config, &backend).guarded(&config::encode(Kind::Net, 0, 0).0[..12]).lazy(1);
    let mut net = VirtIONetRaw::<WindowHal<SLOT>, _, QUEUE>::new(transport).unwrap();
    let window_range = memory.base as usize..memory.base as usize + WINDOW;
    let mut receive = WindowBuffer::<SLOT>::new(2048).unwrap();
    assert!(window_range.contains(&(receive.as_ptr() as usize)));
    // SAFETY: `receive` lives until its token completes below.
    let receive_token = unsafe { net.receive_begin(&mut receive) }.unwrap();
    let mut frame = WindowBuffer::<SLOT>::new(12 + 100).unwrap();
    let header = net.fill_buffer_header(&mut frame).unwrap();
    frame[header..].iter_mut().enumerate().for_each(|(at, byte)| *byte = at as u8 ^ 0x5a);
    // SAFETY: `frame` lives until its transmission completes below.
    let send_token = unsafe { net.transmit_begin(&frame) }.unwrap();
    // In place: the window's descriptor for the frame holds the frame's own address.
    let window = memory.window();
    let table = trapless_virtio::layout::compute(2, QUEUE as u32, WINDOW).unwrap().queues[1].desc;
    let address = window.read_u64(table + 16 * usize::from(send_token)).unwrap();
    assert_eq!(address, WINDOW_IPA + (frame.as_ptr() as usize - memory.base as usize) as u64);
    let token = loop {
        assert_eq!(driver::sync(SLOT), None);
        if let Some(token) = net.poll_receive() {
            break token;
        }
        std::thread::yield_now();
    };
    assert_eq!(token, receive_token);
    // SAFETY: the buffer posted under `token`.
    let (start, len) = unsafe { net.receive_complete(token, &mut receive) }.unwrap();
    assert_eq!(&receive[start..start + len], &frame[header..], "the echo, read where the device wrote it");
    // The transmit queue is reaped lazily: `sync` leaves it, `reap` takes it.
    while net.poll_transmit() != Some(send_token) {
        assert_eq!(driver::reap(SLOT), None);
        std::thread::yield_now();
    }
    // SAFETY: the frame sent under `send_token`.
    unsafe { net.transmit_complete(send_token, &frame) }.unwrap();
    let stale = WindowBuffer::<SLOT>::new(64).unwrap();
    let stale_address = stale.as_ptr() as usize;
    // The driver goes, and its link with it; a buffer that outlives its link is not given to
    // the next link's pool.
    drop(net);
    drop(receive);
    drop(frame);
    assert!(WindowBuffer::<SLOT>::new(64).is_none(), "no link in the slot");
    let _next = open::<SLOT>(config, &backend);
    drop(stale);
    let fresh: Vec<WindowBuffer<SLOT>> = std::iter::from_fn(|| WindowBuffer::<SLOT>::new(64)).collect();
    assert!(fresh.len() > 1000);
    assert_eq!(fresh.iter().filter(|buffer| buffer.as_ptr() as usize == stale_address).count(), 1, "the block once, from the new pool's own carving");
}
