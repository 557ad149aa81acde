//! The stock virtio-drivers drivers against a hostile device, on another thread over the same
//! window: without the guard, the values a device writes make them panic (those are the exact
//! panics `docs/static-virtio.md` lists); with `StaticTransport::guarded`, the same values fail
//! the link with a named reason, nothing panics, and an honest device is served as before.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use trapless_virtio::Notify;
use trapless_virtio::binding::{EVENT_IDX, Kind, VERSION_1, config, offset, state};
use trapless_virtio::device::{BlockDevice, ConsoleEcho, Device, NetEcho, QueueSet};
use trapless_virtio::driver::{self, Failure, LinkConfig, StaticTransport, WindowHal};
use trapless_virtio::guard::DeviceError;
use trapless_virtio::link::DeviceLink;
use trapless_virtio::queue::{DeviceQueue, QueueError};
use trapless_virtio::window::{Memory as WindowMemory, RawMemory, Window};
use virtio_drivers::Error;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::device::net::VirtIONet;

const WINDOW: usize = 1 << 20;
const WINDOW_IPA: u64 = 0x7000_0000;
const NET_QUEUE: usize = 16;

/// A page-aligned window with its header and configuration, as EL2 leaves it.
struct Memory {
    base: *mut u8,
}

// SAFETY: plain memory, shared on purpose.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl Memory {
    fn new(kind: Kind, queue_size: u16, capacity: u64) -> (Self, LinkConfig) {
        let layout = std::alloc::Layout::from_size_align(WINDOW, 4096).unwrap();
        // SAFETY: a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let features = 1 << VERSION_1.bit | 1 << EVENT_IDX.bit;
        let config = LinkConfig { kind, features, queue_size, window: base as usize, window_ipa: WINDOW_IPA, window_size: WINDOW };
        let memory = Self { base };
        let window = memory.window();
        window.write_bytes(offset::HEADER, &config.header().encode()).unwrap();
        window.write_bytes(offset::CONFIG, &dt_config(kind, capacity)).unwrap();
        (memory, config)
    }

    fn window(&self) -> Window<RawMemory> {
        // SAFETY: the allocation lives as long as the test (it is leaked).
        Window::new(unsafe { RawMemory::new(self.base, WINDOW) }, WINDOW_IPA)
    }
}

/// The configuration space as the driver's device tree states it.
fn dt_config(kind: Kind, capacity: u64) -> Vec<u8> {
    let (bytes, len) = config::encode(kind, 0, capacity);
    bytes[..len].to_vec()
}

/// The device partition, on its own thread, stepping until stopped.
struct Backend {
    kick: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Ring(Arc<AtomicBool>);

impl Notify for Ring {
    fn notify(&mut self, _queue: u16) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Backend {
    fn start<D: Device + Send + 'static>(memory: &Memory, config: &LinkConfig, mut device: D) -> Self {
        let kick = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut link = DeviceLink::open(memory.window(), config.header(), false).unwrap();
        let thread = {
            let (kick, stop) = (kick.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if !link.step(&mut device, 8).more {
                        while !kick.swap(false, Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                }
            })
        };
        Self { kick, stop, thread: Some(thread) }
    }

    fn open<const SLOT: usize>(&self, config: LinkConfig) -> StaticTransport<Ring> {
        // SAFETY: the window is the test's, mapped, and used by nothing else on this side.
        unsafe { driver::open(SLOT, config, Ring(self.kick.clone())) }.unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// What a hostile device reports for a receive chain instead of the truth.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// This id instead of the chain's head.
    Id(u16),
    /// This length instead of the bytes written.
    Length(u32),
}

/// A console or net device that echoes honestly, but reports each receive chain with `lie`.
struct Liar {
    lie: Lie,
    net: bool,
}

impl Device for Liar {
    fn service<M: WindowMemory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        let mut used = QueueSet::default();
        for _ in 0..budget {
            let Some(transmit) = queues[1].pop(window)? else { break };
            let Some(receive) = queues[0].pop(window)? else {
                queues[1].put_back();
                break;
            };
            let mut data = vec![0u8; transmit.reader().remaining()];
            transmit.reader().read(window, &mut data)?;
            if self.net {
                data[10] = 1;
            }
            let written = receive.writer().write(window, &data)?;
            let (head, len) = match self.lie {
                Lie::Id(id) => (id, written),
                Lie::Length(len) => (receive.head, len as usize),
            };
            queues[0].push(window, head, len)?;
            queues[1].push(window, transmit.head, 0)?;
            used.mark(0);
            used.mark(1);
        }
        Ok(used)
    }

    fn reset(&mut self) {}
}

/// A block device that serves `honest` requests, then writes `FAILED` into its state line.
struct Quitter {
    disk: BlockDevice<&'static mut [u8]>,
    honest: u64,
}

impl Device for Quitter {
    fn service<M: WindowMemory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        if self.disk.requests >= self.honest {
            let _ = window.write_u32(offset::DEVICE_STATE + state::ERROR, 0x1234);
            let _ = window.write_u32(offset::DEVICE_STATE + state::STATE, state::FAILED);
            return Ok(QueueSet::default());
        }
        self.disk.service(window, queues, budget.min(1))
    }

    fn reset(&mut self) {}
}

/// Runs `body`; returns its panic message if it panicked.
fn panics(body: impl FnOnce()) -> Option<String> {
    let outcome = catch_unwind(AssertUnwindSafe(body)).err()?;
    Some(outcome.downcast_ref::<String>().cloned().or_else(|| outcome.downcast_ref::<&str>().map(|text| text.to_string())).unwrap_or_default())
}

/// Sends one frame on a net link whose device answers with `lie`, and tries to receive it;
/// returns what the driver got and the failure the guard recorded meanwhile.
fn net_against<const SLOT: usize>(lie: Lie, guarded: bool) -> (Result<(), Error>, Option<Failure>) {
    let (memory, config) = Memory::new(Kind::Net, NET_QUEUE as u16, 0);
    let backend = Backend::start(&memory, &config, Liar { lie, net: true });
    let mut transport = backend.open::<SLOT>(config);
    if guarded {
        transport = transport.guarded(&dt_config(Kind::Net, 0));
    }
    let mut net = VirtIONet::<WindowHal<SLOT>, _, NET_QUEUE>::new(transport, 2048).unwrap();
    let outcome = (|| {
        net.send(net.new_tx_buffer(60))?;
        loop {
            if guarded && driver::sync(SLOT).is_some() {
                return Err(Error::IoError);
            }
            match net.receive() {
                // Reading the frame is where a length the device made up would bite.
                Ok(back) => assert_eq!(back.packet().len(), 60),
                Err(Error::NotReady) => continue,
                Err(error) => return Err(error),
            }
            return Ok(());
        }
    })();
    (outcome, driver::failure(SLOT))
}

/// Sends a line on a console link whose device answers with `lie`, and reads 5000 bytes back;
/// returns what the driver got and the failure the guard recorded meanwhile.
fn console_against<const SLOT: usize>(lie: Lie, guarded: bool) -> (Result<(), Error>, Option<Failure>) {
    let (memory, config) = Memory::new(Kind::Console, 2, 0);
    let backend = Backend::start(&memory, &config, Liar { lie, net: false });
    let mut transport = backend.open::<SLOT>(config);
    if guarded {
        transport = transport.guarded(&dt_config(Kind::Console, 0));
    }
    let mut console = VirtIOConsole::<WindowHal<SLOT>, _>::new(transport).unwrap();
    let outcome = (|| {
        console.send_bytes(b"hello\n")?;
        for _ in 0..5000 {
            if guarded && driver::sync(SLOT).is_some() {
                return Err(Error::IoError);
            }
            console.recv(true)?;
        }
        Ok(())
    })();
    (outcome, driver::failure(SLOT))
}

#[test]
fn without_the_guard_a_used_id_beyond_the_queue_panics_the_stock_net_driver() {
    let panic = panics(|| {
        let _ = net_against::<0>(Lie::Id(200), false);
    });
    assert!(panic.as_deref().is_some_and(|text| text.contains("index out of bounds: the len is 16 but the index is 200")), "{panic:?}");
}

#[test]
fn with_the_guard_a_used_id_beyond_the_queue_fails_the_link() {
    let mut outcome = None;
    assert_eq!(panics(|| outcome = Some(net_against::<1>(Lie::Id(200), true))), None);
    let (outcome, failure) = outcome.unwrap();
    assert_eq!(failure, Some(Failure::Device(DeviceError::UsedId { queue: 0, id: 200 })));
    assert!(matches!(outcome, Err(Error::WrongToken | Error::IoError)), "{outcome:?}");
    assert_eq!(driver::failure(1), None, "the slot is free again once the driver is gone");
}

#[test]
fn without_the_guard_a_used_length_beyond_the_buffer_panics_the_stock_drivers() {
    let net = panics(|| {
        let _ = net_against::<2>(Lie::Length(1 << 20), false);
    });
    assert!(net.as_deref().is_some_and(|text| text.contains("out of range for slice of length 2048")), "{net:?}");
    let console = panics(|| {
        let _ = console_against::<2>(Lie::Length(1 << 20), false);
    });
    assert!(console.as_deref().is_some_and(|text| text.contains("index out of bounds: the len is 4096 but the index is 4096")), "{console:?}");
    let empty = panics(|| {
        let _ = console_against::<2>(Lie::Length(0), false);
    });
    assert!(empty.as_deref().is_some_and(|text| text.contains("assertion `left != right` failed")), "{empty:?}");
}

#[test]
fn with_the_guard_lengths_beyond_the_buffer_or_empty_receives_fail_the_link() {
    for (outcome, expected) in [
        (console_against::<3>(Lie::Length(1 << 20), true), DeviceError::UsedLength { queue: 0, id: 0, len: 1 << 20, writable: 4096 }),
        (console_against::<3>(Lie::Length(0), true), DeviceError::EmptyReceive { queue: 0, id: 0 }),
        (net_against::<3>(Lie::Length(1 << 20), true), DeviceError::UsedLength { queue: 0, id: 0, len: 1 << 20, writable: 2048 }),
    ] {
        // Nothing reached the driver. The echo uses the receive chain (bad) before the transmit
        // chain: if the guard saw the bad one first, the transmit queue's wait ended on the
        // poison element (`WrongToken`); if not, the send went through and the receive loop
        // learnt of the failure from `sync`.
        assert_eq!(outcome.1, Some(Failure::Device(expected)));
        assert!(matches!(outcome.0, Err(Error::WrongToken | Error::IoError)), "{outcome:?}");
    }
    // Shorter than the net header is within the buffer: the stock driver refuses it itself.
    assert_eq!(net_against::<3>(Lie::Length(11), true), (Err(Error::IoError), None));
}

#[test]
fn with_the_guard_the_configuration_is_the_device_trees_whatever_the_window_says() {
    const CAPACITY: u64 = 16 * 1024;
    let (memory, config) = Memory::new(Kind::Block, 16, CAPACITY);
    // The device scribbles a capacity of 2^60 sectors and keeps changing the generation.
    memory.window().write_u64(offset::CONFIG, 1 << 60).unwrap();
    memory.window().write_u32(offset::CONFIG_GENERATION, 7).unwrap();
    let disk: &'static mut [u8] = vec![0u8; CAPACITY as usize].leak();
    let backend = Backend::start(&memory, &config, BlockDevice::new(disk, false));
    let unguarded = VirtIOBlk::<WindowHal<4>, _>::new(backend.open::<4>(config)).unwrap();
    assert_eq!(unguarded.capacity(), 1 << 60, "the stock transport reads the window");
    drop(unguarded);
    let transport = backend.open::<4>(config).guarded(&dt_config(Kind::Block, CAPACITY));
    let mut block = VirtIOBlk::<WindowHal<4>, _>::new(transport).unwrap();
    assert_eq!(block.capacity(), CAPACITY / SECTOR_SIZE as u64);
    let data = vec![0xa5; 2 * SECTOR_SIZE];
    block.write_blocks(3, &data).unwrap();
    let mut back = vec![0; 2 * SECTOR_SIZE];
    block.read_blocks(3, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn with_the_guard_a_device_that_says_failed_fails_the_link_and_the_waiting_request_returns() {
    const CAPACITY: u64 = 16 * 1024;
    let (memory, config) = Memory::new(Kind::Block, 16, CAPACITY);
    let disk: &'static mut [u8] = vec![0u8; CAPACITY as usize].leak();
    let backend = Backend::start(&memory, &config, Quitter { disk: BlockDevice::new(disk, false), honest: 2 });
    let transport = backend.open::<5>(config).guarded(&dt_config(Kind::Block, CAPACITY));
    let mut block = VirtIOBlk::<WindowHal<5>, _>::new(transport).unwrap();
    let mut sector = vec![0; SECTOR_SIZE];
    block.read_blocks(0, &mut sector).unwrap();
    block.read_blocks(1, &mut sector).unwrap();
    assert_eq!(block.read_blocks(2, &mut sector), Err(Error::WrongToken));
    assert_eq!(driver::failure(5), Some(Failure::Device(DeviceError::Failed { error: 0x1234, generation: 1 })));
}

#[test]
fn with_the_guard_honest_devices_serve_the_stock_drivers_as_before() {
    // Console.
    let (memory, config) = Memory::new(Kind::Console, 2, 0);
    let backend = Backend::start(&memory, &config, ConsoleEcho::default());
    let transport = backend.open::<6>(config).guarded(&dt_config(Kind::Console, 0));
    let mut console = VirtIOConsole::<WindowHal<6>, _>::new(transport).unwrap();
    for line in ["hello, guarded link\n", "a second line\n"] {
        console.send_bytes(line.as_bytes()).unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < line.len() {
            assert_eq!(driver::sync(6), None);
            if let Some(byte) = console.recv(true).unwrap() {
                echoed.push(byte);
            }
        }
        assert_eq!(echoed, line.as_bytes());
    }
    drop(console);
    drop(backend);
    // Net, eight frames in flight at a time.
    let (memory, config) = Memory::new(Kind::Net, NET_QUEUE as u16, 0);
    let backend = Backend::start(&memory, &config, NetEcho::new());
    let transport = backend.open::<6>(config).guarded(&dt_config(Kind::Net, 0));
    let mut net = VirtIONet::<WindowHal<6>, _, NET_QUEUE>::new(transport, 2048).unwrap();
    for round in 0..4 {
        for index in 0..8 {
            let mut frame = net.new_tx_buffer(60 + 100 * index);
            frame.packet_mut().iter_mut().for_each(|byte| *byte = (round * 8 + index) as u8);
            net.send(frame).unwrap();
        }
        for index in 0..8 {
            let back = loop {
                assert_eq!(driver::sync(6), None);
                match net.receive() {
                    Ok(back) => break back,
                    Err(Error::NotReady) => std::thread::yield_now(),
                    Err(error) => panic!("{error:?}"),
                }
            };
            assert_eq!(back.packet().len(), 60 + 100 * index);
            assert!(back.packet().iter().all(|&byte| byte == (round * 8 + index) as u8));
            net.recycle_rx_buffer(back).unwrap();
        }
    }
}
