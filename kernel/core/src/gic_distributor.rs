//! The GIC distributor as a partition sees it. The physical `GICD` is never mapped into a
//! partition: each access traps, and EL2 answers it through this model for that partition
//! alone, so that a stock GICv3 driver (Linux's, arm-gic's) can set up the interrupts it owns
//! and nothing else.
//!
//! - ID registers and `GICD_TYPER` describe a GICv3 with the partition's SPIs:
//!   `ITLinesNumber` covers its highest SPI, `LPIS` is set (a partition takes LPIs that EL2
//!   set up), `MBIS`, `ESPI` and `num_LPIs` are clear. `GICD_PIDR2` says architecture version 3
//!   even on a GICv4, whose virtual LPIs a partition cannot use.
//! - `GICD_CTLR` is a shadow of the partition's own: its group enables are kept, `ARE` reads
//!   as 1, `DS` as the hardware has it, `RWP` as 0; nothing written reaches the hardware.
//! - The enable, pending and active registers, the priorities, the trigger configuration and
//!   the routing are filtered to the partition's own SPIs and then applied to the physical
//!   distributor; routing to anything but one of its own CPUs (another CPU, or 1-of-N) is
//!   clamped to its first CPU. `GICD_IGROUPR` reads its SPIs as Group 1 and ignores writes.
//! - Every other register, every SGI and PPI (banked in the redistributors with affinity
//!   routing), and every access of a width the register does not take, reads as zero and
//!   ignores writes.
//!
//! The model reaches the hardware through a [`Bus`], which EL2 implements over the real
//! distributor (under one lock, since priority and trigger updates read, modify and write
//! registers shared with other partitions' SPIs) and the tests over a fake.

use trapless_plan::MPIDR_AFFINITY_MASK;

/// The registers of a GIC frame, at byte offsets from its base, as EL2 drives them.
pub trait Bus {
    /// Reads the `size`-byte register (1, 4 or 8) at `offset`.
    fn read(&mut self, offset: usize, size: usize) -> u64;
    /// Writes the `size`-byte register (1, 4 or 8) at `offset`.
    fn write(&mut self, offset: usize, size: usize, value: u64);
}

/// Register offsets.
pub mod reg {
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0004;
    pub const IIDR: usize = 0x0008;
    pub const TYPER2: usize = 0x000c;
    pub const SETSPI_NSR: usize = 0x0040;
    pub const IGROUPR: usize = 0x0080;
    pub const ISENABLER: usize = 0x0100;
    pub const ICENABLER: usize = 0x0180;
    pub const ISPENDR: usize = 0x0200;
    pub const ICPENDR: usize = 0x0280;
    pub const ISACTIVER: usize = 0x0300;
    pub const ICACTIVER: usize = 0x0380;
    pub const IPRIORITYR: usize = 0x0400;
    pub const ITARGETSR: usize = 0x0800;
    pub const ICFGR: usize = 0x0c00;
    pub const IGRPMODR: usize = 0x0d00;
    pub const SGIR: usize = 0x0f00;
    pub const IROUTER: usize = 0x6000;
    /// The first identification register (`GICD_PIDR4`); they run to the end of the frame.
    pub const ID_FIRST: usize = 0xffd0;
    pub const PIDR2: usize = 0xffe8;
    /// Bytes of the frame.
    pub const FRAME: usize = 0x1_0000;
}

/// `GICD_CTLR` bits.
mod ctlr {
    /// `EnableGrp0` and `EnableGrp1` (with `DS` set; `EnableGrp1NS` and `EnableGrp1A` in the
    /// Non-secure view): all a partition may set.
    pub const GROUP_ENABLES: u32 = 0b11;
    /// Affinity routing (`ARE`, `ARE_NS` in the Non-secure view): always on.
    pub const ARE: u32 = 1 << 4;
    /// Security disabled: as the hardware says.
    pub const DS: u32 = 1 << 6;
}

/// `GICD_TYPER` fields.
mod typer {
    /// What the partition sees of the hardware's: `IDbits`, `A3V`, `No1N`, `RSS`,
    /// `SecurityExtn`, `CPUNumber`.
    pub const KEPT: u32 = (0x1f << 19) | (1 << 24) | (1 << 25) | (1 << 26) | (1 << 10) | (0b111 << 5);
    pub const LPIS: u32 = 1 << 17;
    pub const IT_LINES_MASK: u32 = 0x1f;
}

/// `GICD_IROUTER.Interrupt_Routing_Mode`: 1-of-N delivery.
const IRM: u64 = 1 << 31;
/// The INTIDs that are SPIs.
pub const SPIS: core::ops::Range<u32> = 32..1020;

/// A set of SPIs, by INTID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpiSet([u32; 32]);

impl SpiSet {
    /// No SPI.
    pub const fn new() -> Self {
        Self([0; 32])
    }

    /// Adds SPI `intid`; anything that is not an SPI is left out.
    pub fn insert(&mut self, intid: u32) {
        if SPIS.contains(&intid) {
            self.0[(intid / 32) as usize] |= 1 << (intid % 32);
        }
    }

    /// Whether `intid` is in the set.
    pub fn contains(&self, intid: u32) -> bool {
        SPIS.contains(&intid) && self.0[(intid / 32) as usize] & (1 << (intid % 32)) != 0
    }

    /// The bits of INTIDs `32 * n .. 32 * n + 32`, as a one-bit-per-interrupt register has them.
    pub fn word(&self, n: usize) -> u32 {
        self.0.get(n).copied().unwrap_or(0)
    }

    /// The highest SPI in the set.
    pub fn highest(&self) -> Option<u32> {
        (0..32).rev().find(|&n| self.0[n] != 0).map(|n| 32 * n as u32 + 31 - self.0[n].leading_zeros())
    }
}

/// What the physical distributor says of itself, read once at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hardware {
    pub typer: u32,
    pub iidr: u32,
    pub ctlr: u32,
}

/// What the model knows of the partition whose access it answers.
#[derive(Clone, Copy, Debug)]
pub struct Partition<'a> {
    /// Its SPIs: those of its passthrough devices and emulated links.
    pub spis: &'a SpiSet,
    /// The affinities (MPIDR affinity fields) of its CPUs; routing falls back to the first.
    pub cpus: &'a [u64],
    pub hardware: Hardware,
}

impl Partition<'_> {
    /// `GICD_TYPER`: the hardware's identity, LPIs, and lines up to the highest own SPI.
    pub fn typer(&self) -> u32 {
        let lines = self.spis.highest().map_or(0, |highest| highest / 32) & typer::IT_LINES_MASK;
        (self.hardware.typer & typer::KEPT) | typer::LPIS | lines
    }

    /// Where a write of `value` to the `GICD_IROUTER` of an own SPI routes it: to the CPU it
    /// names if that is one of the partition's, else (another partition's CPU, or 1-of-N) to
    /// the partition's first CPU.
    pub fn route(&self, value: u64) -> u64 {
        let affinity = value & MPIDR_AFFINITY_MASK;
        if value & IRM == 0 && self.cpus.contains(&affinity) {
            affinity
        } else {
            self.cpus.first().copied().unwrap_or(0)
        }
    }
}

/// A register of one bit per interrupt, and which INTIDs a 32-bit access at `offset` covers.
fn bit_register(offset: usize) -> Option<usize> {
    let bases = [reg::IGROUPR, reg::ISENABLER, reg::ICENABLER, reg::ISPENDR, reg::ICPENDR, reg::ISACTIVER, reg::ICACTIVER];
    bases.iter().find(|&&base| (base..base + 0x80).contains(&offset)).map(|&base| (offset - base) / 4)
}

/// The partition's view of one distributor: its `GICD_CTLR`, the only state EL2 keeps for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Distributor {
    /// The group enables the partition last wrote.
    enables: u32,
}

impl Distributor {
    /// As after a reset: both groups disabled.
    pub const fn new() -> Self {
        Self { enables: 0 }
    }

    /// What a `size`-byte read at `offset` returns to `partition`.
    pub fn read(&self, partition: &Partition<'_>, bus: &mut impl Bus, offset: usize, size: usize) -> u64 {
        if offset >= reg::FRAME || !offset.is_multiple_of(size) {
            return 0;
        }
        let spis = partition.spis;
        match (offset, size) {
            (reg::CTLR, 4) => u64::from(self.enables | ctlr::ARE | (partition.hardware.ctlr & ctlr::DS)),
            (reg::TYPER, 4) => u64::from(partition.typer()),
            (reg::IIDR, 4) => u64::from(partition.hardware.iidr),
            (reg::PIDR2, 4) => (bus.read(offset, 4) & !0xf0) | 0x30,
            (reg::ID_FIRST..reg::FRAME, 4) => bus.read(offset, 4),
            (reg::IGROUPR..0x100, 4) => u64::from(spis.word(bit_register(offset).unwrap_or(0))),
            (reg::ISENABLER..0x400, 4) => {
                let mask = spis.word(bit_register(offset).unwrap_or(0));
                if mask == 0 { 0 } else { bus.read(offset, 4) & u64::from(mask) }
            }
            (reg::IPRIORITYR..reg::ITARGETSR, 1 | 4) => {
                let mask = byte_mask(spis, (offset - reg::IPRIORITYR) as u32, size);
                if mask == 0 { 0 } else { bus.read(offset, size) & mask }
            }
            (reg::ICFGR..reg::IGRPMODR, 4) => {
                let mask = config_mask(spis, (offset - reg::ICFGR) as u32 * 4);
                if mask == 0 { 0 } else { bus.read(offset, 4) & u64::from(mask) }
            }
            (reg::IROUTER..0x8000, 4 | 8) => match irouter_spi(offset) {
                Some(intid) if spis.contains(intid) => bus.read(offset, size),
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Carries out a `size`-byte write of `value` at `offset` by `partition`, as far as it
    /// concerns the partition's own SPIs and nothing else.
    pub fn write(&mut self, partition: &Partition<'_>, bus: &mut impl Bus, offset: usize, size: usize, value: u64) {
        if offset >= reg::FRAME || !offset.is_multiple_of(size) {
            return;
        }
        let spis = partition.spis;
        match (offset, size) {
            (reg::CTLR, 4) => self.enables = value as u32 & ctlr::GROUP_ENABLES,
            (reg::ISENABLER..0x400, 4) => {
                let own = value as u32 & spis.word(bit_register(offset).unwrap_or(0));
                // Set and clear registers: a 0 bit changes nothing, so the hardware needs only ours.
                if own != 0 {
                    bus.write(offset, 4, u64::from(own));
                }
            }
            (reg::IPRIORITYR..reg::ITARGETSR, 1 | 4) => {
                // Byte by byte: no other partition's priority is ever read back and rewritten.
                let first = (offset - reg::IPRIORITYR) as u32;
                for byte in 0..size as u32 {
                    if spis.contains(first + byte) {
                        bus.write(offset + byte as usize, 1, (value >> (8 * byte)) & 0xff);
                    }
                }
            }
            (reg::ICFGR..reg::IGRPMODR, 4) => {
                // Only the edge/level bit of each own SPI's field; the word is shared.
                let mask = config_mask(spis, (offset - reg::ICFGR) as u32 * 4) & EDGE_BITS;
                if mask != 0 {
                    let old = bus.read(offset, 4) as u32;
                    bus.write(offset, 4, u64::from((old & !mask) | (value as u32 & mask)));
                }
            }
            (reg::IROUTER..0x8000, 4 | 8) => {
                let Some(intid) = irouter_spi(offset) else { return };
                if !spis.contains(intid) {
                    return;
                }
                let register = reg::IROUTER + 8 * intid as usize;
                let wanted = match (size, offset == register) {
                    (8, _) => value,
                    (_, true) => (bus.read(register, 8) & !0xffff_ffff) | (value & 0xffff_ffff),
                    (_, false) => (bus.read(register, 8) & 0xffff_ffff) | (value << 32),
                };
                bus.write(register, 8, partition.route(wanted));
            }
            // Group, group modifier, targets, SGIs, message-based SPIs, extended ranges, IDs.
            _ => {}
        }
    }
}

/// The `GICD_ICFGR<n>` bits that say edge (1) or level (0), one per interrupt.
const EDGE_BITS: u32 = 0xaaaa_aaaa;

/// The bytes of a `size`-byte priority access at INTID `first` that belong to own SPIs.
fn byte_mask(spis: &SpiSet, first: u32, size: usize) -> u64 {
    (0..size as u32).filter(|&byte| spis.contains(first + byte)).fold(0, |mask, byte| mask | (0xff << (8 * byte)))
}

/// The two-bit fields of a `GICD_ICFGR` register (INTIDs `first..first + 16`) of own SPIs.
fn config_mask(spis: &SpiSet, first: u32) -> u32 {
    (0..16).filter(|&field| spis.contains(first + field)).fold(0, |mask, field| mask | (0b11 << (2 * field)))
}

/// The SPI whose `GICD_IROUTER` (or one of its 32-bit halves) is at `offset`.
fn irouter_spi(offset: usize) -> Option<u32> {
    let intid = ((offset - reg::IROUTER) / 8) as u32;
    SPIS.contains(&intid).then_some(intid)
}

#[cfg(test)]
mod tests;
