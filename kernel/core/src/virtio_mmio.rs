//! The virtio-mmio version 2 register block EL2 emulates for a `mmio-trap` link (virtio 1.x
//! §4.2.2): what each register reads, and what each write changes and asks EL2 to do. The
//! device behind it is fixed at build time ([`Device`]); the state is what the driver has
//! written ([`Registers`]) and the interrupt the device raised ([`InterruptStatus`]). Nothing
//! here touches memory: EL2 carries out the [`Effect`]s (the window handshake, ringing the
//! device, raising the interrupt).
//!
//! A reset or stop is complete only once the device has let go of the rings, which EL2 learns
//! from the window and never waits for without bound: until then `Status` reads non-zero,
//! every queue the device may still serve reads `QueueReady` 1, and `DRIVER_OK` is refused.
//! Only a reset clears a status bit; once `FAILED` or `DEVICE_NEEDS_RESET` is set only a reset
//! brings the device back.
//!
//! Registers are 32 bits wide and read or written whole; any other access to them reads 0 and
//! writes nothing, as does any offset the version-2 layout does not define. The configuration
//! space takes 1-, 2-, 4- and 8-byte accesses and is read-only.

use core::sync::atomic::{AtomicU32, Ordering};

/// `MagicValue`: "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// `Version`: the non-legacy register layout.
pub const VERSION: u32 = 2;
/// `VendorID`: "trpl".
pub const VENDOR: u32 = u32::from_le_bytes(*b"trpl");

/// Register offsets.
pub mod reg {
    pub const MAGIC: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const VENDOR_ID: usize = 0x00c;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
    pub const SHM_SEL: usize = 0x0ac;
    pub const SHM_LEN_LOW: usize = 0x0b0;
    pub const SHM_BASE_HIGH: usize = 0x0bc;
    pub const CONFIG_GENERATION: usize = 0x0fc;
    pub const CONFIG: usize = 0x100;
}

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// `InterruptStatus`: the device used buffers.
pub const INTERRUPT_USED_BUFFER: u32 = 1;

/// Most queues a device has.
pub const MAX_QUEUES: usize = 4;

/// Where one queue's parts must be (guest-physical addresses in the window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueAddresses {
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// The device behind the register block, fixed at build time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device<'a> {
    pub device_id: u32,
    pub features: u64,
    pub queue_count: u16,
    pub queue_size: u16,
    /// Where each queue's rings must be: the window's fixed layout.
    pub queues: [QueueAddresses; MAX_QUEUES],
    /// The configuration space.
    pub config: &'a [u8],
}

/// One queue as the driver set it up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Queue {
    num: u32,
    /// `QueueReady` as the driver last wrote it.
    ready: bool,
    /// The device may still be serving this queue: it was ready when the link started, and
    /// the device has not yet let go since. `QueueReady` reads 1 while it is.
    live: bool,
    at: QueueAddresses,
}

/// What a write asks EL2 to do beyond updating the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// `Status` 0: reset the link. The driver line says `RESET`; the reset is complete once the
    /// device has let go of the rings ([`Registers::let_go_done`]).
    Reset,
    /// `DRIVER_OK` with every queue where it must be: start a new driver generation.
    Start,
    /// `DRIVER_OK` with a queue missing or wrong, the features not accepted, or the device not
    /// yet let go: the driver line says `FAILED`.
    Refuse,
    /// The driver stopped a running link (`QueueReady` 0 on any queue, or `FAILED`): the driver
    /// line says `STOPPED`, and the device must let go as for [`Effect::Reset`].
    Stop,
    /// `QueueNotify`: ring the device about this queue.
    Notify(u16),
}

/// `InterruptStatus`, kept apart from [`Registers`]: the device's `LINK_NOTIFY` raises it
/// without taking the lock that serialises the driver's accesses, so a device making that
/// hypercall in a loop cannot hold them up.
#[derive(Debug, Default)]
pub struct InterruptStatus(AtomicU32);

impl InterruptStatus {
    /// No interrupt pending.
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// The device used buffers: `InterruptStatus` says so until the driver acknowledges it.
    pub fn raise(&self) {
        self.0.fetch_or(INTERRUPT_USED_BUFFER, Ordering::AcqRel);
    }

    /// The register's value.
    pub fn read(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// `InterruptACK`: clears the bits set in `bits`.
    fn acknowledge(&self, bits: u32) {
        self.0.fetch_and(!bits, Ordering::AcqRel);
    }

    /// A reset clears every bit (virtio 1.x §4.2.2.1).
    fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// What the driver has written, and where the link stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: [Queue; MAX_QUEUES],
    status: u32,
    /// The link started ([`Effect::Start`]) and has not stopped or reset since: the device
    /// serves the rings, and `QueueNotify` rings it.
    serving: bool,
    /// A reset or stop waits for the device to let go of the rings.
    letting_go: bool,
    /// The driver stopped the link and has not started it since: the driver line says
    /// `STOPPED`, which the device takes as the driver's goodbye. A reset does not take that
    /// back (every virtio driver resets after it stops its queues): were the line to say
    /// `RESET`, a device that had not looked yet would wait for a driver that is gone.
    stopped: bool,
    /// What `Status` reads while a reset waits for the device and the driver has written no
    /// other status since: the value before the reset (never 0: the reset is not complete).
    resetting_from: u32,
}

/// The 32-bit half `select` of `value`, or 0.
fn half(value: u64, select: u32) -> u32 {
    match select {
        0 => value as u32,
        1 => (value >> 32) as u32,
        _ => 0,
    }
}

/// `value` with its 32-bit half `select` replaced by `word`.
fn with_half(value: u64, select: u32, word: u32) -> u64 {
    match select {
        0 => (value & !0xffff_ffff) | u64::from(word),
        1 => (value & 0xffff_ffff) | (u64::from(word) << 32),
        _ => value,
    }
}

impl Registers {
    /// Registers as at reset.
    pub const fn new() -> Self {
        const QUEUE: Queue = Queue { num: 0, ready: false, live: false, at: QueueAddresses { desc: 0, driver: 0, device: 0 } };
        Self {
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: [QUEUE; MAX_QUEUES],
            status: 0,
            serving: false,
            letting_go: false,
            stopped: false,
            resetting_from: 0,
        }
    }

    /// The selected queue, if the device has it.
    fn selected(&self, device: &Device<'_>) -> Option<usize> {
        let index = self.queue_sel as usize;
        (index < usize::from(device.queue_count)).then_some(index)
    }

    /// Whether a reset or stop waits for the device to let go of the rings: EL2 looks at the
    /// device line and calls [`Registers::let_go_done`] once it has.
    pub fn letting_go(&self) -> bool {
        self.letting_go
    }

    /// The device has let go of the rings: a pending reset is complete (`Status` reads what the
    /// driver wrote since, 0 if nothing), and every `QueueReady` reads what the driver wrote.
    pub fn let_go_done(&mut self) {
        self.letting_go = false;
        self.resetting_from = 0;
        for queue in &mut self.queues {
            queue.live = false;
        }
    }

    /// What `Status` reads.
    fn status(&self) -> u32 {
        if self.letting_go && self.status == 0 { self.resetting_from } else { self.status }
    }

    /// Reads `size` bytes (1, 2, 4 or 8) at `offset`.
    pub fn read(&self, device: &Device<'_>, interrupt: &InterruptStatus, offset: usize, size: usize) -> u64 {
        if offset >= reg::CONFIG {
            let start = offset - reg::CONFIG;
            let Some(bytes) = device.config.get(start..start + size) else { return 0 };
            return bytes.iter().rev().fold(0, |value, &byte| (value << 8) | u64::from(byte));
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        let selected = self.selected(device).map(|index| self.queues[index]);
        let value = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => device.device_id,
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => half(device.features, self.device_features_sel),
            reg::QUEUE_NUM_MAX => selected.map_or(0, |_| u32::from(device.queue_size)),
            reg::QUEUE_READY => selected.map_or(0, |queue| u32::from(queue.ready || queue.live)),
            reg::INTERRUPT_STATUS => interrupt.read(),
            reg::STATUS => self.status(),
            // No shared memory regions: their length and base read as all ones.
            reg::SHM_LEN_LOW..=reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        u64::from(value)
    }

    /// Writes `size` bytes (1, 2, 4 or 8) of `value` at `offset`, and says what EL2 must do.
    pub fn write(&mut self, device: &Device<'_>, interrupt: &InterruptStatus, offset: usize, size: usize, value: u64) -> Effect {
        if offset >= reg::CONFIG || size != 4 || !offset.is_multiple_of(4) {
            return Effect::None;
        }
        let value = value as u32;
        let selected = self.selected(device);
        // Queue registers change only while the queue is not in use.
        let mut set_queue = |change: &mut dyn FnMut(&mut Queue)| {
            if let Some(index) = selected
                && !self.queues[index].ready
            {
                change(&mut self.queues[index]);
            }
        };
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                self.driver_features = with_half(self.driver_features, self.driver_features_sel, value);
            }
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => set_queue(&mut |queue| queue.num = value),
            reg::QUEUE_DESC_LOW => set_queue(&mut |queue| queue.at.desc = with_half(queue.at.desc, 0, value)),
            reg::QUEUE_DESC_HIGH => set_queue(&mut |queue| queue.at.desc = with_half(queue.at.desc, 1, value)),
            reg::QUEUE_DRIVER_LOW => set_queue(&mut |queue| queue.at.driver = with_half(queue.at.driver, 0, value)),
            reg::QUEUE_DRIVER_HIGH => set_queue(&mut |queue| queue.at.driver = with_half(queue.at.driver, 1, value)),
            reg::QUEUE_DEVICE_LOW => set_queue(&mut |queue| queue.at.device = with_half(queue.at.device, 0, value)),
            reg::QUEUE_DEVICE_HIGH => set_queue(&mut |queue| queue.at.device = with_half(queue.at.device, 1, value)),
            reg::QUEUE_READY => {
                let Some(index) = selected else { return Effect::None };
                let queue = &mut self.queues[index];
                let unset = queue.ready && value & 1 == 0;
                queue.ready = value & 1 != 0;
                // The device serves all its queues or none: unsetting any stops the link.
                if unset && self.serving {
                    return self.stop();
                }
            }
            reg::QUEUE_NOTIFY => {
                // With VIRTIO_F_NOTIFICATION_DATA (never offered) the high bits would be data.
                let queue = value & 0xffff;
                if self.serving && queue < u32::from(device.queue_count) {
                    return Effect::Notify(queue as u16);
                }
            }
            reg::INTERRUPT_ACK => interrupt.acknowledge(value),
            reg::STATUS => return self.write_status(device, interrupt, value),
            _ => {}
        }
        Effect::None
    }

    /// The link stops being served; the device must let go.
    fn stop(&mut self) -> Effect {
        self.serving = false;
        self.letting_go = true;
        self.stopped = true;
        Effect::Stop
    }

    fn write_status(&mut self, device: &Device<'_>, interrupt: &InterruptStatus, value: u32) -> Effect {
        if value == 0 {
            let shown = self.status();
            let live = self.queues.map(|queue| queue.live);
            let stopped = self.stopped;
            *self = Self::new();
            for (queue, live) in self.queues.iter_mut().zip(live) {
                queue.live = live;
            }
            interrupt.clear();
            self.letting_go = true;
            // 0 only if the device serves a generation EL2 never started (a driver rewrote its
            // own line): it needs a reset it cannot get from here.
            self.resetting_from = if shown != 0 { shown } else { status::DEVICE_NEEDS_RESET };
            // After a stop, the reset says the stop again: the line stays `STOPPED`, and EL2
            // waits for the device to let go as for any reset.
            self.stopped = stopped;
            return if stopped { Effect::Stop } else { Effect::Reset };
        }
        // Only a reset clears a status bit (virtio 1.x §2.1.2: the driver must not).
        if value & self.status != self.status {
            return Effect::None;
        }
        let added = value & !self.status;
        if self.status & (status::FAILED | status::DEVICE_NEEDS_RESET) != 0 {
            // Only a reset brings the device back; the driver may still say it gave up.
            self.status |= added & status::FAILED;
            return Effect::None;
        }
        if added & status::FAILED != 0 {
            // The driver gave up: a running link stops, and DRIVER_OK does not start one.
            self.status = value & !(added & status::DRIVER_OK);
            return if self.serving { self.stop() } else { Effect::None };
        }
        let mut value = value;
        // A driver that does not accept exactly the fixed features cannot have them.
        if added & status::FEATURES_OK != 0 && self.driver_features != device.features {
            value &= !status::FEATURES_OK;
        }
        self.status = value;
        if added & status::DRIVER_OK == 0 {
            return Effect::None;
        }
        let count = usize::from(device.queue_count);
        let in_place = self.queues[..count]
            .iter()
            .zip(&device.queues)
            .all(|(queue, expected)| queue.ready && queue.num == u32::from(device.queue_size) && queue.at == *expected);
        if value & status::FEATURES_OK != 0 && in_place && !self.letting_go {
            self.serving = true;
            self.stopped = false;
            for queue in &mut self.queues[..count] {
                queue.live = true;
            }
            Effect::Start
        } else {
            // Not running: the driver must reset (and wait for the reset) and try again.
            self.status = (value & !status::DRIVER_OK) | status::DEVICE_NEEDS_RESET;
            Effect::Refuse
        }
    }
}

pub use crate::mmio::Access;

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: [u8; 12] = [0x02, 0x74, 0x6c, 0x76, 0x00, 0x07, 1, 0, 1, 0, 0xdc, 0x05];

    fn net() -> Device<'static> {
        let queue = |base: u64| QueueAddresses { desc: base, driver: base + 0x100, device: base + 0x1000 };
        Device {
            device_id: 1,
            features: 1 << 32 | 1 << 29 | 1 << 5,
            queue_count: 2,
            queue_size: 16,
            queues: [queue(0x4400_1000), queue(0x4400_3000), QueueAddresses::default(), QueueAddresses::default()],
            config: &CONFIG,
        }
    }

    /// The register block and its interrupt status, as EL2 keeps them.
    #[derive(Default)]
    struct Block {
        registers: Registers,
        interrupt: InterruptStatus,
    }

    impl Block {
        /// Writes a 32-bit register.
        fn put(&mut self, offset: usize, value: u32) -> Effect {
            self.registers.write(&net(), &self.interrupt, offset, 4, u64::from(value))
        }

        fn get(&self, offset: usize) -> u32 {
            self.registers.read(&net(), &self.interrupt, offset, 4) as u32
        }

        /// `QueueReady` of queue `queue`.
        fn ready(&mut self, queue: u32) -> u32 {
            self.put(reg::QUEUE_SEL, queue);
            self.get(reg::QUEUE_READY)
        }

        /// What virtio-drivers' `MmioTransport` does up to `DRIVER_OK`, with `accepted`
        /// features and the rings at `queues`; the device has let go by the time it resets.
        fn initialise(&mut self, accepted: u64, queues: [QueueAddresses; 2]) -> Effect {
            assert_eq!(self.put(reg::STATUS, 0), Effect::Reset);
            self.registers.let_go_done();
            assert_eq!(self.get(reg::STATUS), 0, "the reset is complete");
            self.set_up(accepted, queues)
        }

        /// The same after the reset.
        fn set_up(&mut self, accepted: u64, queues: [QueueAddresses; 2]) -> Effect {
            self.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
            for select in 0..2 {
                self.put(reg::DRIVER_FEATURES_SEL, select);
                self.put(reg::DRIVER_FEATURES, half(accepted, select));
            }
            self.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
            for (index, queue) in queues.iter().enumerate() {
                self.put(reg::QUEUE_SEL, index as u32);
                self.put(reg::QUEUE_NUM, 16);
                for (low, address) in [(reg::QUEUE_DESC_LOW, queue.desc), (reg::QUEUE_DRIVER_LOW, queue.driver), (reg::QUEUE_DEVICE_LOW, queue.device)] {
                    self.put(low, address as u32);
                    self.put(low + 4, (address >> 32) as u32);
                }
                self.put(reg::QUEUE_READY, 1);
            }
            self.put(reg::STATUS, RUNNING)
        }

        /// A link started with the rings in place.
        fn running() -> Self {
            let mut block = Self::default();
            let device = net();
            assert_eq!(block.initialise(device.features, [device.queues[0], device.queues[1]]), Effect::Start);
            block
        }
    }

    /// `ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK`.
    const RUNNING: u32 = 0xf;

    #[test]
    fn identification_and_features_read_as_virtio_mmio_version_2_says() {
        let mut block = Block::default();
        assert_eq!([reg::MAGIC, reg::VERSION, reg::DEVICE_ID].map(|offset| block.get(offset)), [0x7472_6976, 2, 1]);
        assert_eq!(block.get(reg::VENDOR_ID).to_le_bytes(), *b"trpl");
        assert_eq!(block.get(reg::DEVICE_FEATURES), 1 << 29 | 1 << 5);
        block.put(reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(block.get(reg::DEVICE_FEATURES), 1);
        block.put(reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(block.get(reg::DEVICE_FEATURES), 0);
        block.put(reg::QUEUE_SEL, 1);
        assert_eq!(block.get(reg::QUEUE_NUM_MAX), 16);
        block.put(reg::QUEUE_SEL, 2);
        assert_eq!(block.get(reg::QUEUE_NUM_MAX), 0, "the device has two queues");
        assert_eq!(block.get(reg::SHM_LEN_LOW), u32::MAX, "no shared memory regions");
        assert_eq!(block.get(reg::CONFIG_GENERATION), 0);
        // Not 32-bit: nothing. Undefined: 0.
        assert_eq!(block.registers.read(&net(), &block.interrupt, reg::MAGIC, 2), 0);
        assert_eq!(block.get(0x0f0), 0);
    }

    #[test]
    fn the_configuration_space_reads_little_endian_at_any_width_and_ignores_writes() {
        let mut block = Block::default();
        let Block { registers, interrupt } = &mut block;
        assert_eq!(registers.read(&net(), interrupt, reg::CONFIG + 5, 1), 7);
        assert_eq!(registers.read(&net(), interrupt, reg::CONFIG + 6, 2), 1, "status: link up");
        assert_eq!(registers.read(&net(), interrupt, reg::CONFIG, 4), 0x766c_7402);
        assert_eq!(registers.read(&net(), interrupt, reg::CONFIG + 4, 8), 0x05dc_0001_0001_0700);
        assert_eq!(registers.read(&net(), interrupt, reg::CONFIG + 10, 4), 0, "past the end");
        assert_eq!(registers.write(&net(), interrupt, reg::CONFIG, 1, 0xff), Effect::None);
        assert_eq!(registers.read(&net(), interrupt, reg::CONFIG, 1), 2);
    }

    #[test]
    fn a_driver_that_accepts_the_fixed_features_and_puts_the_rings_in_place_starts() {
        let mut block = Block::running();
        assert_eq!(block.get(reg::STATUS), RUNNING);
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 1), Effect::Notify(1));
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 2), Effect::None, "no queue 2");
        // Interrupts: raised by the device, read and acknowledged by the driver.
        block.interrupt.raise();
        assert_eq!(block.get(reg::INTERRUPT_STATUS), INTERRUPT_USED_BUFFER);
        assert_eq!(block.put(reg::INTERRUPT_ACK, 0b10), Effect::None);
        assert_eq!(block.get(reg::INTERRUPT_STATUS), INTERRUPT_USED_BUFFER, "only the bits acknowledged clear");
        block.put(reg::INTERRUPT_ACK, INTERRUPT_USED_BUFFER);
        assert_eq!(block.get(reg::INTERRUPT_STATUS), 0);
        // A reset forgets everything, the interrupt included, once the device has let go.
        block.interrupt.raise();
        assert_eq!(block.put(reg::STATUS, 0), Effect::Reset);
        assert_eq!(block.get(reg::INTERRUPT_STATUS), 0);
        block.registers.let_go_done();
        assert_eq!(block.registers, Registers::new());
    }

    #[test]
    fn queue_registers_are_frozen_while_the_queue_is_ready() {
        let mut block = Block::running();
        block.put(reg::QUEUE_SEL, 0);
        let before = block.registers;
        for offset in [reg::QUEUE_NUM, reg::QUEUE_DESC_LOW, reg::QUEUE_DRIVER_HIGH, reg::QUEUE_DEVICE_LOW] {
            assert_eq!(block.put(offset, 4), Effect::None);
        }
        assert_eq!(block.registers, before, "writes to a ready queue's registers change nothing");
        assert_eq!(block.put(reg::STATUS, RUNNING), Effect::None, "DRIVER_OK again is no second start");
        assert_eq!(block.registers, before);
    }

    #[test]
    fn a_driver_that_wants_other_features_or_rings_elsewhere_is_refused() {
        let device = net();
        let mut block = Block::default();
        // Without EVENT_IDX: FEATURES_OK does not stick, and DRIVER_OK fails.
        assert_eq!(block.initialise(1 << 32 | 1 << 5, [device.queues[0], device.queues[1]]), Effect::Refuse);
        assert_eq!(block.get(reg::STATUS), status::DEVICE_NEEDS_RESET | status::ACKNOWLEDGE | status::DRIVER);
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 0), Effect::None, "not running");
        // Rings outside the layout.
        let moved = QueueAddresses { desc: 0x4400_8000, ..device.queues[1] };
        let mut block = Block::default();
        assert_eq!(block.initialise(device.features, [device.queues[0], moved]), Effect::Refuse);
        assert_eq!(block.get(reg::STATUS), 0x4b, "DEVICE_NEEDS_RESET, DRIVER_OK taken back");
        // A queue of another size.
        let mut block = Block::default();
        assert_eq!(block.put(reg::STATUS, 0), Effect::Reset);
        block.registers.let_go_done();
        block.put(reg::QUEUE_SEL, 0);
        block.put(reg::QUEUE_NUM, 8);
        block.put(reg::QUEUE_READY, 1);
        block.put(reg::QUEUE_SEL, 1);
        block.put(reg::QUEUE_READY, 1);
        assert_eq!(block.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK), Effect::None);
        assert_eq!(block.put(reg::STATUS, RUNNING), Effect::Refuse);
    }

    #[test]
    fn after_a_refusal_only_a_reset_brings_the_device_back() {
        let device = net();
        let queues = [device.queues[0], device.queues[1]];
        let mut block = Block::default();
        assert_eq!(block.initialise(1 << 32, queues), Effect::Refuse);
        assert_eq!(block.get(reg::STATUS), 0x43);
        // Features and DRIVER_OK again, now right: still refused, nothing changes.
        for select in 0..2 {
            block.put(reg::DRIVER_FEATURES_SEL, select);
            block.put(reg::DRIVER_FEATURES, half(device.features, select));
        }
        assert_eq!(block.put(reg::STATUS, RUNNING | status::DEVICE_NEEDS_RESET), Effect::None);
        assert_eq!(block.get(reg::STATUS), 0x43);
        // Bits cleared: ignored. FAILED added: kept.
        assert_eq!(block.put(reg::STATUS, status::ACKNOWLEDGE), Effect::None);
        assert_eq!(block.get(reg::STATUS), 0x43);
        assert_eq!(block.put(reg::STATUS, 0x43 | status::FAILED), Effect::None);
        assert_eq!(block.get(reg::STATUS), 0xc3);
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 0), Effect::None);
        // A reset, and the same driver starts.
        assert_eq!(block.initialise(device.features, queues), Effect::Start);
        assert_eq!(block.get(reg::STATUS), RUNNING);
    }

    #[test]
    fn a_status_write_that_clears_bits_is_ignored() {
        let mut block = Block::running();
        for value in [status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK, status::FEATURES_OK, 0x30 | status::DRIVER_OK] {
            assert_eq!(block.put(reg::STATUS, value), Effect::None, "{value:#x}");
            assert_eq!(block.get(reg::STATUS), RUNNING, "{value:#x}");
        }
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 0), Effect::Notify(0), "still running");
        // Before DRIVER_OK too: FEATURES_OK cannot be taken back to change the features.
        let mut block = Block::default();
        block.put(reg::STATUS, 0);
        block.registers.let_go_done();
        block.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        for select in 0..2 {
            block.put(reg::DRIVER_FEATURES_SEL, select);
            block.put(reg::DRIVER_FEATURES, half(net().features, select));
        }
        block.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_eq!(block.get(reg::STATUS), 0xb);
        assert_eq!(block.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER), Effect::None);
        let before = block.registers;
        block.put(reg::DRIVER_FEATURES, 0);
        assert_eq!(block.registers, before, "the features are fixed once FEATURES_OK is set");
        assert_eq!(block.get(reg::STATUS), 0xb);
    }

    #[test]
    fn failed_while_running_stops_the_link() {
        let mut block = Block::running();
        assert_eq!(block.put(reg::STATUS, RUNNING | status::FAILED), Effect::Stop);
        assert_eq!(block.get(reg::STATUS), 0x8f);
        assert!(block.registers.letting_go());
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 0), Effect::None, "nothing is served");
        assert_eq!(block.put(reg::STATUS, RUNNING), Effect::None, "FAILED stays");
        assert_eq!(block.put(reg::STATUS, RUNNING | status::FAILED), Effect::None, "no second stop");
        block.registers.let_go_done();
        assert_eq!(block.get(reg::STATUS), 0x8f);
        // FAILED before DRIVER_OK: no stop, and DRIVER_OK with it does not start.
        let mut block = Block::default();
        block.put(reg::STATUS, 0);
        block.registers.let_go_done();
        block.put(reg::STATUS, status::ACKNOWLEDGE);
        assert_eq!(block.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER_OK | status::FAILED), Effect::None);
        assert_eq!(block.get(reg::STATUS), status::ACKNOWLEDGE | status::FAILED);
    }

    #[test]
    fn unsetting_any_queue_stops_the_link_and_queue_ready_reads_1_until_the_device_lets_go() {
        let mut block = Block::running();
        // Queue 0 first (virtio-drivers' net driver does so): the device serves all or none.
        block.put(reg::QUEUE_SEL, 0);
        assert_eq!(block.put(reg::QUEUE_READY, 0), Effect::Stop);
        assert_eq!([block.ready(0), block.ready(1)], [1, 1], "the device may still be on queue 0");
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 1), Effect::None, "nothing is served");
        // Queue 1: the link has already stopped.
        assert_eq!(block.put(reg::QUEUE_READY, 0), Effect::None);
        assert_eq!(block.ready(1), 1);
        // Its registers are no longer frozen; the device is not reading them.
        block.put(reg::QUEUE_NUM, 0);
        block.registers.let_go_done();
        assert_eq!([block.ready(0), block.ready(1)], [0, 0]);
        // Ready again after a stop: no start without a reset.
        assert_eq!(block.put(reg::QUEUE_READY, 1), Effect::None);
        assert_eq!(block.put(reg::STATUS, RUNNING), Effect::None);
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 1), Effect::None);
        assert_eq!(block.get(reg::STATUS), RUNNING);
    }

    #[test]
    fn a_reset_after_a_stop_says_stop_again_until_the_driver_starts_the_link() {
        let device = net();
        let mut block = Block::running();
        block.put(reg::QUEUE_SEL, 0);
        assert_eq!(block.put(reg::QUEUE_READY, 0), Effect::Stop);
        // The reset says the stop again, and is complete once the device has let go.
        assert_eq!(block.put(reg::STATUS, 0), Effect::Stop);
        assert_eq!(block.get(reg::STATUS), RUNNING);
        block.registers.let_go_done();
        assert_eq!(block.get(reg::STATUS), 0);
        assert_eq!(block.put(reg::STATUS, 0), Effect::Stop);
        block.registers.let_go_done();
        // Started again, the link is served, and a reset then is a reset.
        assert_eq!(block.set_up(device.features, [device.queues[0], device.queues[1]]), Effect::Start);
        assert_eq!(block.put(reg::STATUS, 0), Effect::Reset);
    }

    #[test]
    fn a_reset_is_complete_only_once_the_device_lets_go_and_nothing_starts_before() {
        let device = net();
        let queues = [device.queues[0], device.queues[1]];
        let mut block = Block::running();
        assert_eq!(block.put(reg::STATUS, 0), Effect::Reset);
        // Not complete: Status reads what it did, both queues read ready.
        assert_eq!(block.get(reg::STATUS), RUNNING);
        assert_eq!([block.ready(0), block.ready(1)], [1, 1]);
        assert_eq!(block.put(reg::QUEUE_NOTIFY, 0), Effect::None);
        // A driver that does not wait: its set-up is taken, but DRIVER_OK is refused.
        assert_eq!(block.set_up(device.features, queues), Effect::Refuse);
        assert_eq!(block.get(reg::STATUS), 0x4b);
        // Resetting again while the first waits keeps Status non-zero.
        assert_eq!(block.put(reg::STATUS, 0), Effect::Reset);
        assert_eq!(block.get(reg::STATUS), 0x4b);
        block.registers.let_go_done();
        assert_eq!(block.get(reg::STATUS), 0);
        assert_eq!([block.ready(0), block.ready(1)], [0, 0]);
        assert_eq!(block.set_up(device.features, queues), Effect::Start);
        // A driver that does not wait, on a device that lets go before DRIVER_OK: it starts.
        assert_eq!(block.put(reg::STATUS, 0), Effect::Reset);
        block.put(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        assert_eq!(block.get(reg::STATUS), status::ACKNOWLEDGE | status::DRIVER, "what the driver wrote since");
        block.registers.let_go_done();
        assert_eq!(block.set_up(device.features, queues), Effect::Start);
    }

    #[test]
    fn data_abort_syndromes_decode_to_the_access() {
        // A stage-2 translation fault at level 3.
        const FAULT: u64 = 0b00_0111;
        // ISV, SAS = 2 (word), SRT = 3, WnR: `str w3, [x0]`.
        let store = Access::decode(1 << 24 | 2 << 22 | 3 << 16 | 1 << 6 | FAULT).unwrap();
        assert_eq!(store, Access { write: true, size: 4, register: 3, sign_extend: false, wide: false });
        assert_eq!(store.stored(0xdead_beef_1234_5678), 0x1234_5678);
        // `ldrsh x5, [x0]`: halfword, sign-extended into a 64-bit register.
        let load = Access::decode(1 << 24 | 1 << 22 | 1 << 21 | 5 << 16 | 1 << 15 | FAULT).unwrap();
        assert_eq!((load.size, load.register, load.write), (2, 5, false));
        assert_eq!(load.loaded(0x8001), 0xffff_ffff_ffff_8001);
        assert_eq!(load.loaded(0x7001), 0x7001);
        // `ldrsb w1`: sign-extended, then the top half cleared.
        let byte = Access::decode(1 << 24 | 1 << 21 | 1 << 16 | FAULT).unwrap();
        assert_eq!(byte.loaded(0xff), 0xffff_ffff);
        // `ldr x2`: doubleword, at any translation level.
        for level in 0..4 {
            assert_eq!(Access::decode(1 << 24 | 3 << 22 | 2 << 16 | 1 << 15 | 0b100 | level).unwrap().loaded(u64::MAX), u64::MAX);
        }
    }

    #[test]
    fn data_aborts_that_are_not_a_plain_load_or_store_to_an_unmapped_page_are_not_emulated() {
        let word_load = 1 << 24 | 2 << 22 | 3 << 16 | 0b00_0111;
        assert!(Access::decode(word_load).is_some());
        // No valid syndrome.
        assert_eq!(Access::decode(word_load & !(1 << 24)), None);
        // S1PTW, CM, EA.
        for bit in [7, 8, 9] {
            assert_eq!(Access::decode(word_load | 1 << bit), None, "bit {bit}");
        }
        // Access flag, permission, synchronous external abort, alignment, TLB conflict faults.
        for status in [0b00_1011, 0b00_1111, 0b01_0000, 0b10_0001, 0b11_0000] {
            assert_eq!(Access::decode(word_load & !0b11_1111 | status), None, "DFSC {status:#x}");
        }
    }
}
