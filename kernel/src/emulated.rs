//! The trap-and-emulate baseline: links whose driver reaches them through a virtio-mmio
//! register block that EL2 emulates (`transport = "mmio-trap"`, `docs/static-virtio.md`).
//!
//! Every access the driver makes to its register block is a stage-2 data abort; EL2 decodes it,
//! runs it through the register model (`trapless_kernel_core::virtio_mmio`) and carries out
//! what the model asks: the driver's half of the window handshake (`DriverSide`, the same code
//! the trap-free transport uses), ringing the device's doorbell for `QueueNotify`. The device
//! notifies the driver with hypercall `LINK_NOTIFY`: EL2 sets `InterruptStatus` and makes the
//! link's SPI pending. Nothing here is on the trap-free path.
//!
//! EL2 never waits on the device partition without bound: when the driver resets or stops the
//! link, EL2 gives the device [`LET_GO_GRACE_US`] to let go of the rings, then returns to the
//! driver with the let-go pending (`Status` non-zero, `QueueReady` 1, `DRIVER_OK` refused) and
//! looks at the device line again on each of the driver's later accesses.

use crate::arch::{el2, gic, lpi, vectors::GuestFrame};
use crate::println;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, Once};
use trapless_abi::hypercall::{INVALID_PARAMETERS, SUCCESS};
use trapless_kernel_core::virtio_mmio::{self, Access, Device, Effect, InterruptStatus, QueueAddresses, Registers};
use trapless_plan::{EMULATED_REGISTERS_SIZE, EmulatedLinkRecord, Plan};
use trapless_virtio::binding::{offset, state};
use trapless_virtio::layout;
use trapless_virtio::link::DriverSide;
use trapless_virtio::window::{RawMemory, Window};

/// Times each kind of event happened on a link.
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    /// `QueueNotify` writes that rang the device.
    notifies: AtomicU64,
    /// `LINK_NOTIFY` hypercalls that raised the interrupt.
    interrupts: AtomicU64,
    /// Resets and stops the device had not let go of within [`LET_GO_GRACE_US`].
    late_let_gos: AtomicU64,
}

/// How long EL2 waits, in microseconds, for the device to let go of the rings when the driver
/// resets or stops the link, before it returns to the driver with the let-go pending. A device
/// partition that is running lets go at its next look at the link: microseconds on hardware;
/// under QEMU TCG, where waking a sleeping vCPU takes a host thread wake-up, about 3 ms on a
/// 2-core host, and past 10 ms when every host core is busy with other work (seen as the
/// bench's idle boots polling). Past the grace the driver polls instead, and each poll is an
/// exit, which would blur the bench's exit counts; so the grace is generous, and still bounded.
const LET_GO_GRACE_US: u64 = 50_000;

/// The driver's half of the handshake and the registers it wrote, under one lock: each access
/// is applied and carried out whole (its window handshake included) before the next, from
/// whichever of the driver's CPUs, begins.
struct Emulation {
    side: DriverSide,
    registers: Registers,
}

/// One emulated link.
struct Link {
    record: &'static EmulatedLinkRecord,
    /// Partition indexes.
    driver: usize,
    device: usize,
    device_model: Device<'static>,
    window: Window<RawMemory>,
    emulation: Mutex<Emulation>,
    /// Apart from the lock: the device's `LINK_NOTIFY` sets it without waiting for the driver's
    /// accesses, and cannot hold them up.
    interrupt: InterruptStatus,
    counters: Counters,
}

// SAFETY: the window is plain RAM in EL2's identity map, the same on every CPU, and shared with
// partitions on purpose (`RawMemory` accesses are volatile); the rest is immutable or locked.
unsafe impl Sync for Link {}
// SAFETY: as above.
unsafe impl Send for Link {}

static LINKS: Once<Vec<Link>> = Once::new();

fn links() -> &'static [Link] {
    LINKS.get().map_or(&[], Vec::as_slice)
}

/// Builds each emulated link's model from the plan: its fixed device, where its rings must be,
/// and its window. Runs once on the boot CPU, after the windows are written.
pub fn init(plan: &Plan<'static>) -> Result<(), alloc::string::String> {
    let mut built = Vec::new();
    for record in plan.emulated_links() {
        let window = &plan.windows()[record.window as usize];
        let size = window.range.size as usize;
        let layout = layout::compute(record.queue_count, u32::from(record.queue_size), size)
            .map_err(|error| alloc::format!("emulated link {}: {error}", record.name))?;
        let base = window.range.base.0;
        let mut queues = [QueueAddresses::default(); virtio_mmio::MAX_QUEUES];
        for (addresses, queue) in queues.iter_mut().zip(layout.queues()) {
            *addresses = QueueAddresses {
                desc: base + queue.desc as u64,
                driver: base + queue.avail as u64,
                device: base + queue.used as u64,
            };
        }
        // The configuration space is the plan's, not the window's: the driver can write those.
        let init = plan.blob(&window.init);
        let config = init.get(offset::CONFIG..).unwrap_or(&[]);
        let device_model = Device {
            device_id: record.device_id,
            features: record.features,
            queue_count: record.queue_count,
            queue_size: record.queue_size,
            queues,
            config,
        };
        // SAFETY: the window is RAM no partition owns alone and not the kernel's (checked by
        // `boot::load_windows`), mapped Normal in EL2's identity map.
        let memory = unsafe { RawMemory::new(base as *mut u8, size) };
        let window_memory = Window::new(memory, base);
        let side = DriverSide::new(&window_memory);
        built.push(Link {
            record,
            driver: window.driver as usize,
            device: window.device as usize,
            device_model,
            window: window_memory,
            emulation: Mutex::new(Emulation { side, registers: Registers::new() }),
            interrupt: InterruptStatus::new(),
            counters: Counters::default(),
        });
    }
    LINKS.call_once(|| built);
    Ok(())
}

/// Emulates the access partition `partition` made at `ipa` (syndrome `iss`) if it hit the
/// register block of a link it drives; returns whether it did. The caller steps over the
/// instruction.
pub fn access(partition: usize, ipa: u64, iss: u64, frame: &mut GuestFrame) -> bool {
    let Some(link) = links().iter().find(|link| {
        let registers = link.record.registers.0;
        link.driver == partition && ipa >= registers && ipa - registers < EMULATED_REGISTERS_SIZE
    }) else {
        return false;
    };
    // A pair, a writeback, a SIMD access, a cache maintenance instruction or any abort but a
    // translation fault is not emulated: the driver faults.
    let Some(access) = Access::decode(iss) else { return false };
    let offset = (ipa - link.record.registers.0) as usize;
    let mut emulation = link.emulation.lock();
    let Emulation { side, registers } = &mut *emulation;
    // A pending let-go ends at the first access after the device line shows it.
    if registers.letting_go() && side.has_let_go(&link.window) {
        registers.let_go_done();
    }
    let effect = if access.write {
        link.counters.writes.fetch_add(1, Ordering::Relaxed);
        let value = if access.register < 31 { frame.x[access.register] } else { 0 };
        registers.write(&link.device_model, &link.interrupt, offset, access.size, access.stored(value))
    } else {
        link.counters.reads.fetch_add(1, Ordering::Relaxed);
        let value = registers.read(&link.device_model, &link.interrupt, offset, access.size);
        if access.register < 31 {
            frame.x[access.register] = access.loaded(value);
        }
        Effect::None
    };
    carry_out(link, side, registers, effect);
    true
}

/// Does what a register write asked for, under the lock the write took.
fn carry_out(link: &Link, side: &mut DriverSide, registers: &mut Registers, effect: Effect) {
    let ring = |queue: u16| lpi::ring(link.record.notify_events[usize::from(queue)]);
    match effect {
        Effect::None => {}
        Effect::Notify(queue) => {
            link.counters.notifies.fetch_add(1, Ordering::Relaxed);
            ring(queue);
        }
        Effect::Reset => let_go(link, side, registers, state::RESET),
        Effect::Stop => let_go(link, side, registers, state::STOPPED),
        Effect::Start => side.start(&link.window),
        Effect::Refuse => side.fail(&link.window),
    }
}

/// Says `value` on the driver line, rings the device if it may be serving the rings, and waits
/// at most [`LET_GO_GRACE_US`] for it to let go; the registers show the let-go pending until it
/// has.
fn let_go(link: &Link, side: &mut DriverSide, registers: &mut Registers, value: u32) {
    side.begin_let_go(&link.window, value, || lpi::ring(link.record.notify_events[0]));
    let deadline = el2::counter().saturating_add(el2::counter_frequency() * LET_GO_GRACE_US / 1_000_000);
    let mut looks = 0u32;
    while !side.has_let_go(&link.window) {
        // The counter only every 1024th look: to an emulator it is an I/O register (QEMU takes
        // its global lock to read it), and a loop of reads holds up the device partition's CPU,
        // which needs that lock to take the doorbell and let go.
        looks = looks.wrapping_add(1);
        if looks.is_multiple_of(1024) && el2::counter() >= deadline {
            link.counters.late_let_gos.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // `yield`, not `isb` (`spin_loop` on aarch64): an emulator that runs vCPUs in turn
        // (QEMU counting instructions) lets the device partition's CPU run, which it must, to
        // let go; on hardware a hint.
        trapless_virtio::relax();
    }
    registers.let_go_done();
}

/// Serves `LINK_NOTIFY` from `partition`: the device of emulated link `index` used buffers of
/// queue `queue`.
pub fn notify(partition: usize, index: u64, queue: u64) -> i64 {
    let Some(link) = usize::try_from(index).ok().and_then(|index| links().get(index)) else {
        return INVALID_PARAMETERS;
    };
    if link.device != partition || queue >= u64::from(link.record.queue_count) {
        return INVALID_PARAMETERS;
    }
    link.interrupt.raise();
    link.counters.interrupts.fetch_add(1, Ordering::Relaxed);
    gic::raise_spi(link.record.intid);
    SUCCESS
}

/// Prints each emulated link's counters (at power-off).
pub fn report() {
    for link in links() {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &link.counters;
        println!(
            "trapless: link {} transport=mmio-trap reads={} writes={} notifies={} interrupts={} late-let-gos={}",
            link.record.name,
            count(&counters.reads),
            count(&counters.writes),
            count(&counters.notifies),
            count(&counters.interrupts),
            count(&counters.late_let_gos)
        );
    }
}
