//! One test per rule of the distributor a partition sees, against a fake distributor.

use super::*;
use std::collections::BTreeMap;
use std::vec::Vec;

/// A distributor as plain memory that remembers every access made to it.
#[derive(Default)]
struct FakeBus {
    /// Bytes written so far (or preset), by offset; absent bytes read as 0.
    bytes: BTreeMap<usize, u8>,
    writes: Vec<(usize, usize, u64)>,
    reads: Vec<(usize, usize)>,
}

impl FakeBus {
    fn preset(&mut self, offset: usize, size: usize, value: u64) {
        for byte in 0..size {
            self.bytes.insert(offset + byte, (value >> (8 * byte)) as u8);
        }
    }

    fn value(&self, offset: usize, size: usize) -> u64 {
        (0..size).fold(0, |value, byte| value | u64::from(*self.bytes.get(&(offset + byte)).unwrap_or(&0)) << (8 * byte))
    }
}

impl Bus for FakeBus {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        self.reads.push((offset, size));
        self.value(offset, size)
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        self.writes.push((offset, size, value));
        self.preset(offset, size, value);
    }
}

/// QEMU virt's distributor: 288 INTIDs (ITLinesNumber 8), 16 ID bits, LPIs, MBIS, DS set.
const HARDWARE: Hardware = Hardware { typer: 0x0078_0008 | (1 << 17) | (1 << 16) | (1 << 25), iidr: 0x0300_043b, ctlr: 0x53 };

/// A partition with SPIs 33 and 34 (INTIDs) on CPUs 0x2 and 0x1_0000_0003.
const CPUS: [u64; 2] = [0x2, 0x1_0000_0003];

fn own_spis() -> SpiSet {
    let mut spis = SpiSet::new();
    spis.insert(33);
    spis.insert(34);
    spis
}

/// Reads `offset` as the partition with [`own_spis`] on [`CPUS`].
fn read(bus: &mut FakeBus, offset: usize, size: usize) -> u64 {
    let spis = own_spis();
    Distributor::new().read(&Partition { spis: &spis, cpus: &CPUS, hardware: HARDWARE }, bus, offset, size)
}

fn write(distributor: &mut Distributor, bus: &mut FakeBus, offset: usize, size: usize, value: u64) {
    let spis = own_spis();
    distributor.write(&Partition { spis: &spis, cpus: &CPUS, hardware: HARDWARE }, bus, offset, size, value);
}

#[test]
fn spi_sets_hold_spis_only_and_know_their_highest() {
    let mut spis = SpiSet::new();
    for intid in [0, 31, 1020, 5000] {
        spis.insert(intid);
    }
    assert_eq!((spis, spis.highest()), (SpiSet::new(), None));
    spis.insert(32);
    spis.insert(1019);
    assert!(spis.contains(32) && spis.contains(1019) && !spis.contains(33));
    assert_eq!(spis.highest(), Some(1019));
    assert_eq!((spis.word(1), spis.word(31), spis.word(40)), (1, 1 << 27, 0));
}

#[test]
fn ctlr_is_a_shadow_of_the_group_enables_that_never_reaches_the_hardware() {
    let spis = own_spis();
    let partition = Partition { spis: &spis, cpus: &CPUS, hardware: HARDWARE };
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    // At reset both groups are off; ARE reads 1, DS as the hardware, RWP 0.
    assert_eq!(distributor.read(&partition, &mut bus, reg::CTLR, 4), 0x50);
    // Linux turns it off, waits for RWP, then on with ARE_NS | EnableGrp1A | EnableGrp1.
    distributor.write(&partition, &mut bus, reg::CTLR, 4, 0);
    distributor.write(&partition, &mut bus, reg::CTLR, 4, 0x13);
    assert_eq!(distributor.read(&partition, &mut bus, reg::CTLR, 4), 0x53);
    // RWP, E1NWF and anything else it writes is not kept.
    distributor.write(&partition, &mut bus, reg::CTLR, 4, 0xffff_ffff);
    assert_eq!(distributor.read(&partition, &mut bus, reg::CTLR, 4), 0x53);
    distributor.write(&partition, &mut bus, reg::CTLR, 4, 0);
    assert_eq!(distributor.read(&partition, &mut bus, reg::CTLR, 4), 0x50);
    assert!(bus.writes.is_empty() && bus.reads.is_empty(), "the hardware's GICD_CTLR is EL2's alone");
    // Another partition's view is its own.
    assert_eq!(Distributor::new().read(&partition, &mut bus, reg::CTLR, 4), 0x50);
}

#[test]
fn typer_shows_lpis_without_mbis_espis_or_lpi_count_and_lines_up_to_the_highest_own_spi() {
    let mut bus = FakeBus::default();
    // SPI 34 is in the second group of 32 INTIDs: ITLinesNumber 1 (64 INTIDs).
    let typer = read(&mut bus, reg::TYPER, 4) as u32;
    assert_eq!(typer & 0x1f, 1);
    assert_eq!(typer & (1 << 17), 1 << 17, "LPIS");
    assert_eq!(typer & (1 << 16 | 1 << 8 | 0x1f << 11 | 0x1f << 27), 0, "no MBIS, ESPI, num_LPIs, ESPI_range");
    assert_eq!(typer & !(1 << 17 | 0x1f), HARDWARE.typer & !(1 << 16 | 1 << 17 | 0x1f), "IDbits and No1N kept");
    let mut spis = SpiSet::new();
    spis.insert(1019);
    let partition = Partition { spis: &spis, cpus: &CPUS, hardware: HARDWARE };
    assert_eq!(partition.typer() & 0x1f, 31, "1024 INTIDs");
}

#[test]
fn a_partition_without_spis_sees_no_spi_lines() {
    let spis = SpiSet::new();
    let partition = Partition { spis: &spis, cpus: &CPUS, hardware: HARDWARE };
    assert_eq!(partition.typer() & 0x1f, 0);
    let mut bus = FakeBus::default();
    bus.preset(reg::ISENABLER + 4, 4, u64::MAX);
    assert_eq!(Distributor::new().read(&partition, &mut bus, reg::ISENABLER + 4, 4), 0);
}

#[test]
fn iidr_is_the_hardwares_and_typer2_reads_zero() {
    let mut bus = FakeBus::default();
    bus.preset(reg::TYPER2, 4, 0xffff);
    assert_eq!(read(&mut bus, reg::IIDR, 4), u64::from(HARDWARE.iidr));
    assert_eq!(read(&mut bus, reg::TYPER2, 4), 0);
}

#[test]
fn pidr2_says_gicv3_and_the_other_id_registers_are_the_hardwares() {
    let mut bus = FakeBus::default();
    // A GICv4 (ArchRev 4): a partition cannot use its virtual LPIs.
    bus.preset(reg::PIDR2, 4, 0x4b);
    bus.preset(0xfff0, 4, 0x0d);
    assert_eq!(read(&mut bus, reg::PIDR2, 4), 0x3b);
    assert_eq!(read(&mut bus, 0xfff0, 4), 0x0d);
    let mut distributor = Distributor::new();
    write(&mut distributor, &mut bus, reg::PIDR2, 4, 0);
    assert!(bus.writes.is_empty());
}

#[test]
fn igroupr_reads_own_spis_as_group_1_and_ignores_writes() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    assert_eq!(read(&mut bus, reg::IGROUPR + 4, 4), 0b110);
    assert_eq!(read(&mut bus, reg::IGROUPR + 8, 4), 0);
    write(&mut distributor, &mut bus, reg::IGROUPR + 4, 4, 0);
    assert!(bus.writes.is_empty() && bus.reads.is_empty());
}

#[test]
fn set_and_clear_registers_reach_only_own_spis() {
    for base in [reg::ISENABLER, reg::ICENABLER, reg::ISPENDR, reg::ICPENDR, reg::ISACTIVER, reg::ICACTIVER] {
        let mut bus = FakeBus::default();
        let mut distributor = Distributor::new();
        // INTIDs 32..63: ours are 33 and 34.
        bus.preset(base + 4, 4, 0xffff_ffff);
        assert_eq!(read(&mut bus, base + 4, 4), 0b110, "{base:#x}");
        write(&mut distributor, &mut bus, base + 4, 4, 0xffff_ffff);
        assert_eq!(bus.writes, [(base + 4, 4, 0b110)], "{base:#x}");
        // Another partition's SPI alone: nothing reaches the hardware.
        write(&mut distributor, &mut bus, base + 4, 4, 1 << 5);
        assert_eq!(bus.writes.len(), 1, "{base:#x}");
        // Registers with no own SPI are not even read.
        bus.reads.clear();
        assert_eq!(read(&mut bus, base + 8, 4), 0);
        assert!(bus.reads.is_empty());
    }
}

#[test]
fn sgis_and_ppis_are_the_redistributors_and_read_zero_here() {
    for base in [reg::IGROUPR, reg::ISENABLER, reg::ICENABLER, reg::ISPENDR, reg::ICPENDR, reg::ISACTIVER, reg::ICACTIVER] {
        let mut bus = FakeBus::default();
        bus.preset(base, 4, 0xffff_ffff);
        assert_eq!(read(&mut bus, base, 4), 0);
        write(&mut Distributor::new(), &mut bus, base, 4, 0xffff_ffff);
        assert!(bus.writes.is_empty());
    }
    let mut bus = FakeBus::default();
    bus.preset(reg::IPRIORITYR, 4, 0xa0a0_a0a0);
    assert_eq!(read(&mut bus, reg::IPRIORITYR + 27, 1), 0);
    write(&mut Distributor::new(), &mut bus, reg::IPRIORITYR + 28, 4, 0);
    write(&mut Distributor::new(), &mut bus, reg::ICFGR + 4, 4, 0xffff_ffff);
    assert!(bus.writes.is_empty());
}

#[test]
fn priorities_of_own_spis_are_read_and_written_byte_by_byte() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    // INTIDs 32..35 share a word: 33 and 34 are ours.
    bus.preset(reg::IPRIORITYR + 32, 4, 0x4030_2010);
    assert_eq!(read(&mut bus, reg::IPRIORITYR + 32, 4), 0x0030_2000);
    assert_eq!(read(&mut bus, reg::IPRIORITYR + 34, 1), 0x30);
    assert_eq!(read(&mut bus, reg::IPRIORITYR + 35, 1), 0);
    write(&mut distributor, &mut bus, reg::IPRIORITYR + 32, 4, 0xa0a0_a0a0);
    assert_eq!(bus.writes, [(reg::IPRIORITYR + 33, 1, 0xa0), (reg::IPRIORITYR + 34, 1, 0xa0)]);
    assert_eq!(bus.value(reg::IPRIORITYR + 32, 4), 0x40a0_a010, "the neighbours keep theirs");
    write(&mut distributor, &mut bus, reg::IPRIORITYR + 35, 1, 0);
    write(&mut distributor, &mut bus, reg::IPRIORITYR + 33, 1, 0x80);
    assert_eq!(bus.value(reg::IPRIORITYR + 32, 4), 0x40a0_8010);
}

#[test]
fn trigger_configuration_changes_only_own_edge_bits() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    // ICFGR2 covers INTIDs 32..47: fields 1 and 2 are ours. Others are edge-triggered.
    bus.preset(reg::ICFGR + 8, 4, 0xaaaa_aaaa);
    assert_eq!(read(&mut bus, reg::ICFGR + 8, 4), 0b10_1000);
    // Linux sets every SPI level-triggered, then reads the value back.
    write(&mut distributor, &mut bus, reg::ICFGR + 8, 4, 0);
    assert_eq!(bus.value(reg::ICFGR + 8, 4), 0xaaaa_aa82);
    assert_eq!(read(&mut bus, reg::ICFGR + 8, 4), 0);
    // Only the edge bit of a field is writable.
    write(&mut distributor, &mut bus, reg::ICFGR + 8, 4, 0b01_1100);
    assert_eq!(bus.value(reg::ICFGR + 8, 4), 0xaaaa_aa8a);
}

#[test]
fn an_own_spi_routed_to_an_own_cpu_goes_there() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    let router = reg::IROUTER + 8 * 34;
    write(&mut distributor, &mut bus, router, 8, 0x1_0000_0003);
    assert_eq!(bus.writes, [(router, 8, 0x1_0000_0003)]);
    assert_eq!(read(&mut bus, router, 8), 0x1_0000_0003);
}

#[test]
fn routing_to_another_cpu_or_to_any_cpu_is_clamped_to_the_first_own_cpu() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    let router = reg::IROUTER + 8 * 33;
    // Another partition's CPU; the same Aff0 in another Aff3; 1-of-N; junk outside affinity.
    for value in [0x1, 0x3, 1 << 31, 0xff00_0000_0000_0002 | (1 << 31)] {
        write(&mut distributor, &mut bus, router, 8, value);
        assert_eq!(bus.value(router, 8), 0x2, "{value:#x}");
    }
    // Junk outside the affinity fields is dropped from an own CPU too.
    write(&mut distributor, &mut bus, router, 8, 0xff00_0000_0000_0002 | (1 << 30));
    assert_eq!(bus.value(router, 8), 0x2);
}

#[test]
fn routing_halves_are_merged_with_the_other_half_before_the_clamp() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    let router = reg::IROUTER + 8 * 34;
    bus.preset(router, 8, 0x1_0000_0003);
    assert_eq!((read(&mut bus, router, 4), read(&mut bus, router + 4, 4)), (0x3, 0x1));
    // Aff3 = 0 with Aff0 = 3 names CPU 0x3, another partition's: clamped.
    write(&mut distributor, &mut bus, router + 4, 4, 0);
    assert_eq!(bus.value(router, 8), 0x2);
    // A low half that keeps Aff3 and names an own CPU is taken.
    let cpus = [0x2, 0x5];
    let spis = own_spis();
    let partition = Partition { spis: &spis, cpus: &cpus, hardware: HARDWARE };
    distributor.write(&partition, &mut bus, router, 4, 0x5);
    assert_eq!(bus.value(router, 8), 0x5);
    // A route whose halves both change passes through a CPU of someone else's one half at a
    // time, and is clamped on the way: it takes one 64-bit write.
    write(&mut distributor, &mut bus, router, 4, 0x3);
    write(&mut distributor, &mut bus, router + 4, 4, 1);
    assert_eq!(bus.value(router, 8), 0x2);
    write(&mut distributor, &mut bus, router, 8, 0x1_0000_0003);
    assert_eq!(bus.value(router, 8), 0x1_0000_0003);
}

#[test]
fn the_routing_of_another_partitions_spi_reads_zero_and_stays() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    let router = reg::IROUTER + 8 * 40;
    bus.preset(router, 8, 0x1);
    assert_eq!(read(&mut bus, router, 8), 0);
    write(&mut distributor, &mut bus, router, 8, 0x2);
    write(&mut distributor, &mut bus, router, 4, 0x2);
    assert!(bus.writes.is_empty() && bus.value(router, 8) == 0x1);
    // INTIDs 0-31 and 1020-1023 have no IROUTER.
    write(&mut distributor, &mut bus, reg::IROUTER, 8, 0x2);
    write(&mut distributor, &mut bus, reg::IROUTER + 8 * 1020, 8, 0x2);
    assert!(bus.writes.is_empty());
}

#[test]
fn every_other_register_reads_zero_and_ignores_writes() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    // STATUSR, SETSPI_NSR, CLRSPI_NSR, targets, group modifiers, NSACR, SGIR, the SGI
    // pending registers, the extended SPI ranges, IROUTER_E, implementation defined space.
    let others = [0x10, reg::SETSPI_NSR, 0x48, reg::ITARGETSR + 32, reg::IGRPMODR + 4, 0xe08, reg::SGIR, 0xf10, 0xf20, 0x1000, 0x2000, 0x8000, 0xc000];
    for offset in others {
        bus.preset(offset, 4, 0xffff_ffff);
        assert_eq!(read(&mut bus, offset, 4), 0, "{offset:#x}");
        write(&mut distributor, &mut bus, offset, 4, u64::from(u32::MAX));
    }
    assert_eq!(bus.writes, []);
}

#[test]
fn accesses_of_the_wrong_width_or_alignment_read_zero_and_change_nothing() {
    let mut bus = FakeBus::default();
    let mut distributor = Distributor::new();
    bus.preset(reg::ISENABLER + 4, 4, 0xffff_ffff);
    // 16-bit, 8-bit outside the priorities, 64-bit on a 32-bit register, misaligned.
    for (offset, size) in [(reg::ISENABLER + 4, 2), (reg::ISENABLER + 4, 1), (reg::ISENABLER + 4, 8), (reg::ISENABLER + 6, 4), (reg::IROUTER + 8 * 34 + 4, 8), (reg::CTLR, 8)] {
        assert_eq!(read(&mut bus, offset, size), 0, "{offset:#x}/{size}");
        write(&mut distributor, &mut bus, offset, size, u64::MAX);
    }
    assert_eq!(bus.writes, []);
    assert_eq!(distributor, Distributor::new(), "not even the shadow changed");
    // Past the frame.
    assert_eq!(read(&mut bus, reg::FRAME, 4), 0);
}
