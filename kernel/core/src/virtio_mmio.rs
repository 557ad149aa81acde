//! The virtio-mmio version 2 register block EL2 emulates for a `mmio-trap` link (virtio 1.x
//! §4.2.2): what each register reads, and what each write changes and asks EL2 to do. The
//! device behind it is fixed at build time ([`Device`]); the state is what the driver has
//! written ([`Registers`]). Nothing here touches memory: EL2 carries out the [`Effect`]s (the
//! window handshake, ringing the device, raising the interrupt).
//!
//! Registers are 32 bits wide and read or written whole; any other access to them reads 0 and
//! writes nothing, as does any offset the version-2 layout does not define. The configuration
//! space takes 1-, 2-, 4- and 8-byte accesses and is read-only.

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
    ready: bool,
    at: QueueAddresses,
}

/// What a write asks EL2 to do beyond updating the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// `Status` 0: reset the link (the driver line says `RESET`; wait for the device).
    Reset,
    /// `DRIVER_OK` with every queue where it must be: start a new driver generation.
    Start,
    /// `DRIVER_OK` with a queue missing or wrong: the driver line says `FAILED`.
    Refuse,
    /// The last ready queue was unset while running: the driver has stopped.
    Stop,
    /// `QueueNotify`: ring the device about this queue.
    Notify(u16),
}

/// What the driver has written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: [Queue; MAX_QUEUES],
    status: u32,
    interrupt_status: u32,
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
        Self {
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: [Queue { num: 0, ready: false, at: QueueAddresses { desc: 0, driver: 0, device: 0 } }; MAX_QUEUES],
            status: 0,
            interrupt_status: 0,
        }
    }

    /// The selected queue, if the device has it.
    fn selected(&self, device: &Device<'_>) -> Option<usize> {
        let index = self.queue_sel as usize;
        (index < usize::from(device.queue_count)).then_some(index)
    }

    /// Reads `size` bytes (1, 2, 4 or 8) at `offset`.
    pub fn read(&self, device: &Device<'_>, offset: usize, size: usize) -> u64 {
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
            reg::QUEUE_READY => selected.map_or(0, |queue| u32::from(queue.ready)),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // No shared memory regions: their length and base read as all ones.
            reg::SHM_LEN_LOW..=reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        u64::from(value)
    }

    /// Writes `size` bytes (1, 2, 4 or 8) of `value` at `offset`, and says what EL2 must do.
    pub fn write(&mut self, device: &Device<'_>, offset: usize, size: usize, value: u64) -> Effect {
        if offset >= reg::CONFIG || size != 4 || !offset.is_multiple_of(4) {
            return Effect::None;
        }
        let value = value as u32;
        let selected = self.selected(device);
        let running = self.status & status::DRIVER_OK != 0;
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
                let was_ready = self.queues[index].ready;
                self.queues[index].ready = value & 1 != 0;
                let none_ready = self.queues.iter().all(|queue| !queue.ready);
                if was_ready && none_ready && running {
                    return Effect::Stop;
                }
            }
            reg::QUEUE_NOTIFY => {
                // With VIRTIO_F_NOTIFICATION_DATA (never offered) the high bits would be data.
                let queue = value & 0xffff;
                if running && queue < u32::from(device.queue_count) {
                    return Effect::Notify(queue as u16);
                }
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => return self.write_status(device, value),
            _ => {}
        }
        Effect::None
    }

    fn write_status(&mut self, device: &Device<'_>, value: u32) -> Effect {
        if value == 0 {
            *self = Self::new();
            return Effect::Reset;
        }
        let mut value = value;
        // A driver that does not accept exactly the fixed features cannot have them.
        if value & status::FEATURES_OK != 0 && self.driver_features != device.features {
            value &= !status::FEATURES_OK;
        }
        let starting = value & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0;
        self.status = value;
        if !starting {
            return Effect::None;
        }
        let queues = &self.queues[..usize::from(device.queue_count)];
        let in_place = queues
            .iter()
            .zip(&device.queues)
            .all(|(queue, expected)| queue.ready && queue.num == u32::from(device.queue_size) && queue.at == *expected);
        if value & status::FEATURES_OK != 0 && in_place {
            Effect::Start
        } else {
            // Not running: the driver must reset and try again.
            self.status = (value & !status::DRIVER_OK) | status::DEVICE_NEEDS_RESET;
            Effect::Refuse
        }
    }

    /// The device used buffers: `InterruptStatus` says so until the driver acknowledges it.
    pub fn raise(&mut self) {
        self.interrupt_status |= INTERRUPT_USED_BUFFER;
    }
}

/// A load or store that trapped on a stage-2 data abort, as its syndrome describes it
/// (`ESR_EL2.ISS` with `ISV` set: one general-purpose register, no writeback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// 1, 2, 4 or 8 bytes.
    pub size: usize,
    /// The register loaded or stored (31: the zero register).
    pub register: usize,
    /// A load that sign-extends its value.
    pub sign_extend: bool,
    /// The register is 64 bits wide (else 32, its top half zeroed by a load).
    pub wide: bool,
}

impl Access {
    /// Decodes the ISS of a data abort, or `None` when it does not describe the access (`ISV`
    /// clear: a load/store pair, writeback, SIMD, and so on), which EL2 does not emulate.
    pub fn decode(iss: u64) -> Option<Self> {
        let bit = |n: u32| iss & (1 << n) != 0;
        bit(24).then(|| Self {
            write: bit(6),
            size: 1 << ((iss >> 22) & 0b11),
            register: ((iss >> 16) & 0b1_1111) as usize,
            sign_extend: bit(21),
            wide: bit(15),
        })
    }

    /// What the register receives when the access loads `value`.
    pub fn loaded(&self, value: u64) -> u64 {
        let bits = 8 * self.size as u32;
        let value = if bits < 64 { value & ((1 << bits) - 1) } else { value };
        let value = if self.sign_extend && bits < 64 && value >> (bits - 1) & 1 != 0 { value | !((1 << bits) - 1) } else { value };
        if self.wide { value } else { value & 0xffff_ffff }
    }

    /// The bytes a store of register value `value` writes.
    pub fn stored(&self, value: u64) -> u64 {
        if self.size == 8 { value } else { value & ((1 << (8 * self.size)) - 1) }
    }
}

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

    /// Writes a 32-bit register.
    fn put(registers: &mut Registers, offset: usize, value: u32) -> Effect {
        registers.write(&net(), offset, 4, u64::from(value))
    }

    fn get(registers: &Registers, offset: usize) -> u32 {
        registers.read(&net(), offset, 4) as u32
    }

    /// What virtio-drivers' `MmioTransport` does up to `DRIVER_OK`, with `accepted` features and
    /// the rings at `queues`.
    fn initialise(registers: &mut Registers, accepted: u64, queues: [QueueAddresses; 2]) -> Effect {
        assert_eq!(put(registers, reg::STATUS, 0), Effect::Reset);
        put(registers, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        for select in 0..2 {
            put(registers, reg::DRIVER_FEATURES_SEL, select);
            put(registers, reg::DRIVER_FEATURES, half(accepted, select));
        }
        put(registers, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        for (index, queue) in queues.iter().enumerate() {
            put(registers, reg::QUEUE_SEL, index as u32);
            put(registers, reg::QUEUE_NUM, 16);
            for (low, address) in [(reg::QUEUE_DESC_LOW, queue.desc), (reg::QUEUE_DRIVER_LOW, queue.driver), (reg::QUEUE_DEVICE_LOW, queue.device)] {
                put(registers, low, address as u32);
                put(registers, low + 4, (address >> 32) as u32);
            }
            put(registers, reg::QUEUE_READY, 1);
        }
        put(registers, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK)
    }

    #[test]
    fn identification_and_features_read_as_virtio_mmio_version_2_says() {
        let mut registers = Registers::new();
        assert_eq!([reg::MAGIC, reg::VERSION, reg::DEVICE_ID].map(|offset| get(&registers, offset)), [0x7472_6976, 2, 1]);
        assert_eq!(get(&registers, reg::VENDOR_ID).to_le_bytes(), *b"trpl");
        assert_eq!(get(&registers, reg::DEVICE_FEATURES), 1 << 29 | 1 << 5);
        put(&mut registers, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(get(&registers, reg::DEVICE_FEATURES), 1);
        put(&mut registers, reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(get(&registers, reg::DEVICE_FEATURES), 0);
        put(&mut registers, reg::QUEUE_SEL, 1);
        assert_eq!(get(&registers, reg::QUEUE_NUM_MAX), 16);
        put(&mut registers, reg::QUEUE_SEL, 2);
        assert_eq!(get(&registers, reg::QUEUE_NUM_MAX), 0, "the device has two queues");
        assert_eq!(get(&registers, reg::SHM_LEN_LOW), u32::MAX, "no shared memory regions");
        assert_eq!(get(&registers, reg::CONFIG_GENERATION), 0);
        // Not 32-bit: nothing. Undefined: 0.
        assert_eq!(registers.read(&net(), reg::MAGIC, 2), 0);
        assert_eq!(get(&registers, 0x0f0), 0);
    }

    #[test]
    fn the_configuration_space_reads_little_endian_at_any_width_and_ignores_writes() {
        let mut registers = Registers::new();
        assert_eq!(registers.read(&net(), reg::CONFIG + 5, 1), 7);
        assert_eq!(registers.read(&net(), reg::CONFIG + 6, 2), 1, "status: link up");
        assert_eq!(registers.read(&net(), reg::CONFIG, 4), 0x766c_7402);
        assert_eq!(registers.read(&net(), reg::CONFIG + 4, 8), 0x05dc_0001_0001_0700);
        assert_eq!(registers.read(&net(), reg::CONFIG + 10, 4), 0, "past the end");
        assert_eq!(registers.write(&net(), reg::CONFIG, 1, 0xff), Effect::None);
        assert_eq!(registers.read(&net(), reg::CONFIG, 1), 2);
    }

    #[test]
    fn a_driver_that_accepts_the_fixed_features_and_puts_the_rings_in_place_starts() {
        let mut registers = Registers::new();
        let device = net();
        assert_eq!(initialise(&mut registers, device.features, [device.queues[0], device.queues[1]]), Effect::Start);
        assert_eq!(get(&registers, reg::STATUS), 0xf);
        assert_eq!(put(&mut registers, reg::QUEUE_NOTIFY, 1), Effect::Notify(1));
        assert_eq!(put(&mut registers, reg::QUEUE_NOTIFY, 2), Effect::None, "no queue 2");
        // Queue registers are frozen while the queue is ready.
        put(&mut registers, reg::QUEUE_SEL, 0);
        put(&mut registers, reg::QUEUE_NUM, 4);
        put(&mut registers, reg::STATUS, 0xf);
        // Interrupts: raised by the device, read and acknowledged by the driver.
        registers.raise();
        assert_eq!(get(&registers, reg::INTERRUPT_STATUS), INTERRUPT_USED_BUFFER);
        put(&mut registers, reg::INTERRUPT_ACK, INTERRUPT_USED_BUFFER);
        assert_eq!(get(&registers, reg::INTERRUPT_STATUS), 0);
        // Unsetting the queues stops the link when the last one goes.
        put(&mut registers, reg::QUEUE_SEL, 0);
        assert_eq!(put(&mut registers, reg::QUEUE_READY, 0), Effect::None);
        assert_eq!(get(&registers, reg::QUEUE_READY), 0);
        put(&mut registers, reg::QUEUE_SEL, 1);
        assert_eq!(put(&mut registers, reg::QUEUE_READY, 0), Effect::Stop);
        // And a reset forgets everything.
        assert_eq!(put(&mut registers, reg::STATUS, 0), Effect::Reset);
        assert_eq!(registers, Registers::new());
    }

    #[test]
    fn a_driver_that_wants_other_features_or_rings_elsewhere_is_refused() {
        let device = net();
        let mut registers = Registers::new();
        // Without EVENT_IDX: FEATURES_OK does not stick, and DRIVER_OK fails.
        assert_eq!(initialise(&mut registers, 1 << 32 | 1 << 5, [device.queues[0], device.queues[1]]), Effect::Refuse);
        let value = get(&registers, reg::STATUS);
        assert_eq!(value & status::FEATURES_OK, 0);
        assert_eq!(value & (status::DEVICE_NEEDS_RESET | status::DRIVER_OK), status::DEVICE_NEEDS_RESET);
        assert_eq!(put(&mut registers, reg::QUEUE_NOTIFY, 0), Effect::None, "not running");
        // Rings outside the layout.
        let moved = QueueAddresses { desc: 0x4400_8000, ..device.queues[1] };
        let mut registers = Registers::new();
        assert_eq!(initialise(&mut registers, device.features, [device.queues[0], moved]), Effect::Refuse);
    }

    #[test]
    fn data_abort_syndromes_decode_to_the_access() {
        // ISV, SAS = 2 (word), SRT = 3, WnR: `str w3, [x0]`.
        let store = Access::decode(1 << 24 | 2 << 22 | 3 << 16 | 1 << 6).unwrap();
        assert_eq!(store, Access { write: true, size: 4, register: 3, sign_extend: false, wide: false });
        assert_eq!(store.stored(0xdead_beef_1234_5678), 0x1234_5678);
        // `ldrsh x5, [x0]`: halfword, sign-extended into a 64-bit register.
        let load = Access::decode(1 << 24 | 1 << 22 | 1 << 21 | 5 << 16 | 1 << 15).unwrap();
        assert_eq!((load.size, load.register, load.write), (2, 5, false));
        assert_eq!(load.loaded(0x8001), 0xffff_ffff_ffff_8001);
        assert_eq!(load.loaded(0x7001), 0x7001);
        // `ldrsb w1`: sign-extended, then the top half cleared.
        let byte = Access::decode(1 << 24 | 1 << 21 | 1 << 16).unwrap();
        assert_eq!(byte.loaded(0xff), 0xffff_ffff);
        // `ldr x2`: doubleword.
        assert_eq!(Access::decode(1 << 24 | 3 << 22 | 2 << 16 | 1 << 15).unwrap().loaded(u64::MAX), u64::MAX);
        // No valid syndrome: not emulated.
        assert_eq!(Access::decode(2 << 22 | 3 << 16), None);
    }
}
