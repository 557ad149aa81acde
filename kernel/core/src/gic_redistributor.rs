//! The first 4 KiB page of a redistributor's RD frame as a partition sees it: the page holds
//! `GICR_WAKER`, `GICR_CTLR` and the LPI table registers, so it is never mapped into a
//! partition (the rest of the frame is, read-only); each access traps and EL2 answers it here.
//!
//! - `GICR_TYPER` is the hardware's affinity, processor number and physical-LPI support, with
//!   `Last` set on the partition's last CPU of each run of consecutive CPUs (each run is one
//!   redistributor region in its device tree, and a driver walks a region's frames until it
//!   sees `Last`). Virtual LPIs, direct LPIs, `Dirty`, `DPGS` and extended PPIs read as absent.
//! - `GICR_CTLR`, `GICR_IIDR`, `GICR_PROPBASER` and `GICR_PENDBASER` read as the hardware has
//!   them; `GICR_WAKER` reads as awake.
//! - Every write is accepted and changes nothing: the redistributor's power state, its
//!   `EnableLPIs` and its LPI tables are EL2's (a partition that could point the tables
//!   elsewhere would have the GIC read and write memory for it, past stage 2).
//! - Everything else reads as zero.
//!
//! A partition sees a GICv3 (see `gic_distributor`). On a GICv4, whose redistributors say
//! architecture version 4 in `GICR_PIDR2`, the frame's last 4 KiB page (the ID registers) is
//! emulated too: `GICR_PIDR2` says 3, in agreement with the distributor and with a
//! `GICR_TYPER` that shows no virtual LPIs (a driver may refuse a version 4 without them); the
//! other ID registers read as the hardware has them.

use crate::gic_distributor::Bus;

/// Register offsets in the RD frame.
pub mod reg {
    pub const CTLR: usize = 0x0000;
    pub const IIDR: usize = 0x0004;
    pub const TYPER: usize = 0x0008;
    pub const WAKER: usize = 0x0014;
    pub const PROPBASER: usize = 0x0070;
    pub const PENDBASER: usize = 0x0078;
    /// Bytes of the emulated first page.
    pub const PAGE: usize = 0x1000;
    /// Where the ID page starts (emulated on a GICv4), and its registers.
    pub const ID_PAGE: usize = 0xf000;
    pub const ID_FIRST: usize = 0xffd0;
    pub const PIDR2: usize = 0xffe8;
    /// Bytes of the RD frame.
    pub const FRAME: usize = 0x1_0000;
}

/// `GICR_TYPER` bits a partition sees from the hardware: `PLPIS`, `Processor_Number`,
/// `CommonLPIAff` and the affinity.
const TYPER_KEPT: u64 = 1 | (0xffff << 8) | (0b11 << 24) | (0xffff_ffff << 32);
/// `GICR_TYPER.Last`.
pub const TYPER_LAST: u64 = 1 << 4;

/// What the model knows of the CPU whose frame was accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Whether this CPU is the last of its redistributor region in the partition's device tree.
    pub last: bool,
}

/// Whether platform CPU `cpu` ends a redistributor region of a partition that owns `cpus`:
/// regions are runs of consecutive platform CPUs, so it does unless it owns the next one too.
pub fn ends_region(cpus: impl IntoIterator<Item = usize>, cpu: usize) -> bool {
    !cpus.into_iter().any(|other| other == cpu + 1)
}

impl Frame {
    /// `GICR_TYPER` as the partition sees it, from the hardware's value `hardware`.
    pub fn typer(&self, hardware: u64) -> u64 {
        (hardware & TYPER_KEPT) | if self.last { TYPER_LAST } else { 0 }
    }

    /// What a `size`-byte read at `offset` of the frame's first page, or of its ID page, returns.
    pub fn read(&self, bus: &mut impl Bus, offset: usize, size: usize) -> u64 {
        if offset >= reg::FRAME || !offset.is_multiple_of(size) {
            return 0;
        }
        match (offset, size) {
            (reg::PIDR2, 4) => (bus.read(offset, 4) & !0xf0) | 0x30,
            (reg::ID_FIRST..reg::FRAME, 4) => bus.read(offset, 4),
            (reg::PAGE.., _) => 0,
            (reg::CTLR | reg::IIDR, 4) => bus.read(offset, 4),
            (reg::TYPER, 8) => self.typer(bus.read(reg::TYPER, 8)),
            (reg::TYPER, 4) => self.typer(bus.read(reg::TYPER, 8)) & 0xffff_ffff,
            (0x000c, 4) => self.typer(bus.read(reg::TYPER, 8)) >> 32,
            (reg::PROPBASER | reg::PENDBASER, 8) | (reg::PROPBASER..0x0080, 4) => bus.read(offset, size),
            // GICR_WAKER: awake (ProcessorSleep and ChildrenAsleep clear), whatever was written.
            _ => 0,
        }
    }

    /// A write to the emulated pages: accepted, and nothing reaches the hardware (`GICR_WAKER`,
    /// `GICR_CTLR`, `GICR_PROPBASER`, `GICR_PENDBASER`, the LPI commands and the ID registers
    /// alike).
    pub fn write(&self, _bus: &mut impl Bus, _offset: usize, _size: usize, _value: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// An RD frame page that panics on any write: none may ever reach the hardware.
    struct ReadOnlyBus {
        registers: [(usize, u64); 7],
        reads: Vec<(usize, usize)>,
    }

    impl ReadOnlyBus {
        /// QEMU's CPU 1 on a GICv4: VLPIS, DirectLPI, Dirty, Last, RVPEID and VSGI set.
        fn new() -> Self {
            let typer = (1 << 32) | (1 << 8) | 1 | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 7) | (1 << 26) | (0b11 << 24);
            let registers = [(reg::CTLR, 0x1), (reg::IIDR, 0x0300_043b), (reg::TYPER, typer), (reg::PROPBASER, 0x0040_1000_000f), (reg::PENDBASER, 0x4020_0000), (reg::PIDR2, 0x4b), (0xfff0, 0x0d)];
            Self { registers, reads: Vec::new() }
        }
    }

    impl Bus for ReadOnlyBus {
        fn read(&mut self, offset: usize, size: usize) -> u64 {
            self.reads.push((offset, size));
            let exact = self.registers.iter().find(|(base, _)| *base == offset);
            let upper_half = self.registers.iter().find(|(base, _)| *base + 4 == offset);
            let (base, value) = *exact.or(upper_half).unwrap_or(&(offset, 0));
            let value = value >> (8 * (offset - base));
            if size == 8 { value } else { value & 0xffff_ffff }
        }

        fn write(&mut self, offset: usize, size: usize, value: u64) {
            panic!("a write of {value:#x} ({size} bytes) at {offset:#x} reached the hardware");
        }
    }

    #[test]
    fn typer_keeps_affinity_processor_number_and_physical_lpis_and_says_last_as_told() {
        let mut bus = ReadOnlyBus::new();
        let hardware = bus.registers[2].1;
        let kept = (1 << 32) | (1 << 8) | 1 | (0b11 << 24);
        assert_eq!(Frame { last: false }.read(&mut bus, reg::TYPER, 8), kept, "no VLPIS, DirectLPI, Dirty, RVPEID, VSGI, and not Last");
        assert_eq!(Frame { last: true }.read(&mut bus, reg::TYPER, 8), kept | TYPER_LAST);
        assert_eq!(Frame { last: true }.typer(hardware), kept | TYPER_LAST);
    }

    #[test]
    fn typer_reads_in_halves_as_whole() {
        let mut bus = ReadOnlyBus::new();
        let frame = Frame { last: true };
        let whole = frame.read(&mut bus, reg::TYPER, 8);
        assert_eq!(frame.read(&mut bus, reg::TYPER, 4) | (frame.read(&mut bus, 0xc, 4) << 32), whole);
    }

    #[test]
    fn a_region_ends_where_the_partition_does_not_own_the_next_cpu() {
        let cpus = [0, 1, 3];
        assert_eq!([0, 1, 3].map(|cpu| ends_region(cpus, cpu)), [false, true, true]);
    }

    #[test]
    fn waker_reads_awake() {
        let mut bus = ReadOnlyBus::new();
        assert_eq!(Frame { last: false }.read(&mut bus, reg::WAKER, 4), 0);
        assert!(bus.reads.is_empty(), "not the hardware's power state");
    }

    #[test]
    fn no_write_reaches_the_hardware_not_even_to_the_lpi_tables() {
        let mut bus = ReadOnlyBus::new();
        let frame = Frame { last: true };
        // Linux's wake-up, EnableLPIs, tables of its choice, and the LPI commands.
        for (offset, size, value) in [(reg::WAKER, 4, 0), (reg::CTLR, 4, 1), (reg::PROPBASER, 8, 0x4800_0000), (reg::PENDBASER, 8, 0x4900_0000), (0x40, 8, 8192), (0xa0, 8, 8192), (0xb0, 8, 0)] {
            frame.write(&mut bus, offset, size, value);
        }
        assert_eq!(frame.read(&mut bus, reg::PROPBASER, 8), 0x0040_1000_000f);
        assert_eq!(frame.read(&mut bus, reg::CTLR, 4), 0x1);
    }

    #[test]
    fn ctlr_iidr_and_the_lpi_table_registers_read_as_the_hardware_has_them() {
        let mut bus = ReadOnlyBus::new();
        let frame = Frame { last: false };
        assert_eq!(frame.read(&mut bus, reg::CTLR, 4), 0x1);
        assert_eq!(frame.read(&mut bus, reg::IIDR, 4), 0x0300_043b);
        assert_eq!(frame.read(&mut bus, reg::PROPBASER, 8), 0x0040_1000_000f);
        assert_eq!(frame.read(&mut bus, reg::PROPBASER + 4, 4), 0x40);
        assert_eq!(frame.read(&mut bus, reg::PENDBASER, 8), 0x4020_0000);
    }

    #[test]
    fn the_id_page_says_gicv3_and_is_otherwise_the_hardwares() {
        let mut bus = ReadOnlyBus::new();
        let frame = Frame { last: false };
        assert_eq!(frame.read(&mut bus, reg::PIDR2, 4), 0x3b);
        assert_eq!(frame.read(&mut bus, 0xfff0, 4), 0x0d);
        // The rest of the ID page, and anything between the two emulated pages, reads 0.
        for offset in [reg::ID_PAGE, 0xffc0, reg::PAGE, 0x8000] {
            assert_eq!(frame.read(&mut bus, offset, 4), 0, "{offset:#x}");
        }
        frame.write(&mut bus, reg::PIDR2, 4, 0);
    }

    #[test]
    fn other_registers_and_odd_accesses_read_zero() {
        let mut bus = ReadOnlyBus::new();
        let frame = Frame { last: true };
        // STATUSR, SETLPIR, CLRLPIR, INVLPIR, INVALLR, SYNCR; 16-bit, misaligned, past the page.
        for (offset, size) in [(0x10, 4), (0x40, 8), (0x48, 8), (0xa0, 8), (0xb0, 8), (0xc0, 4), (reg::CTLR, 2), (reg::TYPER + 2, 4), (reg::PAGE, 4), (reg::FRAME, 4)] {
            assert_eq!(frame.read(&mut bus, offset, size), 0, "{offset:#x}/{size}");
        }
    }
}
