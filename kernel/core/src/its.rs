//! The GICv3 ITS as values: its commands with their encodings, and the fields of the registers
//! that describe its tables and the LPI tables (GIC architecture specification, IHI 0069, §5.3
//! "ITS commands" and §12.19 "The ITS register descriptions", §12.11 for GICR_PROPBASER and
//! GICR_PENDBASER). The aarch64 driver (`kernel/src/arch/its.rs`) writes what this module
//! encodes; the tests here pin every field against the specification's layouts.

/// Offset of `GITS_TRANSLATER` from the ITS base (in the translation frame, 64 KiB in).
pub const TRANSLATER: u64 = 0x1_0040;

/// An ITS command: four 64-bit doublewords in the command queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `MAPD`: map a DeviceID to an interrupt translation table (ITT) of `2^event_bits` entries
    /// at `itt` (256-byte aligned), or unmap it (`valid` false).
    Mapd { device: u32, event_bits: u8, itt: u64, valid: bool },
    /// `MAPC`: map a collection to a redistributor (`target`, as [`RdBase`] says), or unmap it.
    Mapc { collection: u16, target: RdBase, valid: bool },
    /// `MAPTI`: translate (`device`, `event`) to physical LPI `intid` in `collection`.
    Mapti { device: u32, event: u32, intid: u32, collection: u16 },
    /// `INV`: make the redistributor reload the configuration of (`device`, `event`)'s LPI.
    Inv { device: u32, event: u32 },
    /// `SYNC`: wait until earlier commands' effects on `target` are visible.
    Sync { target: RdBase },
    /// `DISCARD`: remove the translation of (`device`, `event`) and its LPI's pending state.
    Discard { device: u32, event: u32 },
}

/// How a command names a redistributor (`GITS_TYPER.PTA` says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RdBase {
    /// PTA = 0: the processor number (`GICR_TYPER.Processor_Number`).
    Processor(u16),
    /// PTA = 1: the physical address of the redistributor (64 KiB aligned).
    Address(u64),
}

impl RdBase {
    /// The RDbase field value, bits 51:16 of DW2.
    fn field(self) -> u64 {
        match self {
            Self::Processor(number) => u64::from(number) << 16,
            Self::Address(address) => address & 0x000f_ffff_ffff_0000,
        }
    }
}

mod opcode {
    pub const SYNC: u64 = 0x05;
    pub const MAPD: u64 = 0x08;
    pub const MAPC: u64 = 0x09;
    pub const MAPTI: u64 = 0x0a;
    pub const INV: u64 = 0x0c;
    pub const DISCARD: u64 = 0x0f;
}

const VALID: u64 = 1 << 63;

impl Command {
    /// The command's four doublewords.
    pub fn encode(&self) -> [u64; 4] {
        let device_dw0 = |code: u64, device: u32| code | (u64::from(device) << 32);
        match *self {
            Self::Mapd { device, event_bits, itt, valid } => [
                device_dw0(opcode::MAPD, device),
                u64::from(event_bits.saturating_sub(1) & 0x1f),
                (itt & 0x000f_ffff_ffff_ff00) | if valid { VALID } else { 0 },
                0,
            ],
            Self::Mapc { collection, target, valid } => [
                opcode::MAPC,
                0,
                u64::from(collection) | target.field() | if valid { VALID } else { 0 },
                0,
            ],
            Self::Mapti { device, event, intid, collection } => [
                device_dw0(opcode::MAPTI, device),
                u64::from(event) | (u64::from(intid) << 32),
                u64::from(collection),
                0,
            ],
            Self::Inv { device, event } => [device_dw0(opcode::INV, device), u64::from(event), 0, 0],
            Self::Sync { target } => [opcode::SYNC, 0, target.field(), 0],
            Self::Discard { device, event } => [device_dw0(opcode::DISCARD, device), u64::from(event), 0, 0],
        }
    }
}

/// Bytes of one command.
pub const COMMAND_SIZE: usize = 32;

/// `GITS_TYPER`, as far as trapless uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsType {
    /// Bytes of an ITT entry.
    pub itt_entry_size: usize,
    /// EventID bits the ITS supports.
    pub event_bits: u8,
    /// DeviceID bits the ITS supports.
    pub device_bits: u8,
    /// Whether commands name redistributors by physical address (else by processor number).
    pub physical_target: bool,
}

impl ItsType {
    pub fn decode(typer: u64) -> Self {
        let field = |shift: u32, bits: u32| (typer >> shift) & ((1 << bits) - 1);
        Self {
            itt_entry_size: field(4, 4) as usize + 1,
            event_bits: field(8, 5) as u8 + 1,
            device_bits: field(13, 5) as u8 + 1,
            physical_target: field(19, 1) == 1,
        }
    }
}

/// What a `GITS_BASER<n>` table holds (its read-only `Type` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableType {
    Unimplemented,
    Devices,
    VirtualProcessors,
    Collections,
    Other(u8),
}

/// Memory attributes the GIC uses to reach a table: write-back cacheable and inner shareable
/// for a GIC that snoops, non-cacheable for one that reports it cannot share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableMemory {
    /// Inner shareable, inner write-back read/write-allocate (outer: same as inner).
    Cacheable,
    /// Non-shareable, non-cacheable: software cleans the table to memory after each change.
    NonCacheable,
}

impl TableMemory {
    /// (InnerCache, Shareability) field values.
    fn fields(self) -> (u64, u64) {
        match self {
            Self::Cacheable => (0b111, 0b01),
            Self::NonCacheable => (0b001, 0b00),
        }
    }

    /// What the GIC accepted, from a read-back register's Shareability field (bits 11:10): a
    /// GIC that cannot share a table reads it back as non-shareable, and then the table must
    /// not be cached either.
    pub fn accepted(register: u64) -> Self {
        if (register >> 10) & 0b11 == 0 { Self::NonCacheable } else { Self::Cacheable }
    }

    /// Programs a table register through `write` (which writes it for the given attributes and
    /// returns what it reads back) and returns the attributes in force. A GIC that snoops the
    /// CPUs' caches is offered write-back cacheable and shareable, and gets non-cacheable if it
    /// reads the shareability back as none. A GIC that does not (`gic_snoops` false: RK3588,
    /// erratum 3588001, which reads back shareable all the same) is only ever offered
    /// non-cacheable, non-shareable: Linux forces the same.
    pub fn negotiate(gic_snoops: bool, write: &mut dyn FnMut(Self) -> u64) -> Self {
        if !gic_snoops {
            write(Self::NonCacheable);
            return Self::NonCacheable;
        }
        match Self::accepted(write(Self::Cacheable)) {
            Self::Cacheable => Self::Cacheable,
            Self::NonCacheable => {
                write(Self::NonCacheable);
                Self::NonCacheable
            }
        }
    }
}

/// How a table register that was read back says the GIC reaches its table, for EL2's boot
/// report: from its Shareability (bits 11:10) and InnerCache (bits 9:7 of `GICR_PROPBASER`).
pub fn describe_propbaser(register: u64) -> &'static str {
    match ((register >> 10) & 0b11, (register >> 7) & 0b111) {
        (0, 0b001) => "non-shareable, non-cacheable, cleaned to memory",
        (0, _) => "non-shareable",
        (_, 0b111) => "inner shareable, write-back cacheable",
        _ => "shareable",
    }
}

/// A `GITS_BASER<n>` register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Baser(pub u64);

impl Baser {
    /// The table type this register describes.
    pub fn table_type(self) -> TableType {
        match (self.0 >> 56) & 0b111 {
            0 => TableType::Unimplemented,
            1 => TableType::Devices,
            2 => TableType::VirtualProcessors,
            4 => TableType::Collections,
            other => TableType::Other(other as u8),
        }
    }

    /// Bytes of one table entry.
    pub fn entry_size(self) -> usize {
        ((self.0 >> 48) & 0x1f) as usize + 1
    }

    /// The value that makes a flat table of `pages` (1 to [`MAX_TABLE_PAGES`]) 4 KiB pages at
    /// `address` valid, keeping the read-only fields of `self`.
    pub fn with_flat_table(self, address: u64, pages: usize, memory: TableMemory) -> Self {
        let (inner, shareability) = memory.fields();
        let keep = self.0 & ((0b111 << 56) | (0x1f << 48));
        let size = (pages.clamp(1, MAX_TABLE_PAGES) - 1) as u64;
        Self(VALID | (inner << 59) | keep | (address & 0x0000_ffff_ffff_f000) | (shareability << 10) | size)
    }
}

/// `GITS_CBASER` for a command queue of `pages` 4 KiB pages at `address`.
pub fn cbaser(address: u64, pages: usize, memory: TableMemory) -> u64 {
    let (inner, shareability) = memory.fields();
    VALID | (inner << 59) | (address & 0x000f_ffff_ffff_f000) | (shareability << 10) | (pages.clamp(1, 256) - 1) as u64
}

pub use trapless_plan::FIRST_LPI;

/// The EventID and LPI INTID of EL2's own doorbell probe, given the (EventID, LPI) of every
/// doorbell: the lowest EventID and the lowest LPI that none uses, so the probe raises nothing
/// a partition waits for.
pub fn probe_ids(doorbells: &[(u32, u32)]) -> (u32, u32) {
    let event = (0..).find(|event| doorbells.iter().all(|&(used, _)| used != *event)).unwrap_or(u32::MAX);
    let lpi = (FIRST_LPI..).find(|lpi| doorbells.iter().all(|&(_, used)| used != *lpi)).unwrap_or(u32::MAX);
    (event, lpi)
}

/// Bits needed to number `0..=highest` (at least 1).
pub fn bits_for(highest: u32) -> u8 {
    (32 - highest.leading_zeros()).max(1) as u8
}

/// INTID bits a property table must cover for LPIs up to `max_intid` (at least 14, as the
/// architecture requires of `GICR_PROPBASER.IDbits`).
pub fn lpi_id_bits(max_intid: u32) -> u8 {
    bits_for(max_intid).max(14)
}

/// Most 4 KiB pages a flat `GITS_BASER<n>` table can have (its Size field is 8 bits).
pub const MAX_TABLE_PAGES: usize = 256;

/// Bytes of the LPI configuration (property) table for `id_bits` INTID bits: one per LPI.
pub fn property_table_size(id_bits: u8) -> usize {
    (1usize << id_bits) - FIRST_LPI as usize
}

/// Bytes of a redistributor's LPI pending table for `id_bits` INTID bits: one bit per INTID,
/// the first 1 KiB (INTIDs below 8192) included.
pub fn pending_table_size(id_bits: u8) -> usize {
    (1usize << id_bits) / 8
}

/// A pending table's alignment.
pub const PENDING_TABLE_ALIGN: usize = 64 * 1024;

/// The configuration byte of an enabled LPI with `priority` (bits 7:2; bit 0 is Enable).
pub fn lpi_config(priority: u8) -> u8 {
    (priority & 0xfc) | 1
}

/// `GICR_PROPBASER` for a property table at `address` covering `id_bits` INTID bits.
pub fn propbaser(address: u64, id_bits: u8, memory: TableMemory) -> u64 {
    let (inner, shareability) = memory.fields();
    (address & 0x000f_ffff_ffff_f000) | (shareability << 10) | (inner << 7) | u64::from(id_bits - 1)
}

/// `GICR_PENDBASER` for a zeroed pending table at `address` (64 KiB aligned): `PTZ` tells the
/// redistributor it need not read it.
pub fn pendbaser(address: u64, memory: TableMemory) -> u64 {
    let (inner, shareability) = memory.fields();
    (1 << 62) | (address & 0x000f_ffff_ffff_0000) | (shareability << 10) | (inner << 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Field positions from the GIC architecture specification (IHI 0069H), §5.3: each test
    // reads every field of an encoded command back by its bit range, as the spec's tables list
    // them.

    /// Bits `high..=low` of `word`.
    fn bits(word: u64, high: u32, low: u32) -> u64 {
        (word >> low) & (u64::MAX >> (63 - (high - low)))
    }

    #[test]
    fn mapd_fields() {
        let [dw0, dw1, dw2, _] =
            Command::Mapd { device: 0x1234, event_bits: 4, itt: 0x4123_4500, valid: true }.encode();
        assert_eq!(bits(dw0, 7, 0), 0x08, "CommandID");
        assert_eq!(bits(dw0, 63, 32), 0x1234, "DeviceID");
        assert_eq!(bits(dw1, 4, 0), 3, "Size: EventID bits - 1");
        assert_eq!(bits(dw2, 51, 8) << 8, 0x4123_4500, "ITT_addr");
        assert_eq!(bits(dw2, 63, 63), 1, "V");
        let [_, _, unmap, _] = Command::Mapd { device: 7, event_bits: 1, itt: 0x4123_45ff, valid: false }.encode();
        assert_eq!((bits(unmap, 63, 63), bits(unmap, 7, 0)), (0, 0), "V clear; ITT_addr keeps bits 51:8 only");
    }

    #[test]
    fn mapc_fields() {
        let [dw0, dw1, dw2, dw3] = Command::Mapc { collection: 3, target: RdBase::Processor(2), valid: true }.encode();
        assert_eq!((bits(dw0, 7, 0), dw1, dw3), (0x09, 0, 0), "CommandID");
        assert_eq!(bits(dw2, 15, 0), 3, "ICID");
        assert_eq!(bits(dw2, 51, 16), 2, "RDbase: processor number when GITS_TYPER.PTA is 0");
        assert_eq!(bits(dw2, 63, 63), 1, "V");
        let [_, _, by_address, _] =
            Command::Mapc { collection: 1, target: RdBase::Address(0x080c_0000), valid: true }.encode();
        assert_eq!(bits(by_address, 51, 16) << 16, 0x080c_0000, "RDbase: address bits 51:16 when PTA is 1");
    }

    #[test]
    fn mapti_fields() {
        let [dw0, dw1, dw2, _] = Command::Mapti { device: 9, event: 5, intid: 8197, collection: 1 }.encode();
        assert_eq!((bits(dw0, 7, 0), bits(dw0, 63, 32)), (0x0a, 9), "CommandID, DeviceID");
        assert_eq!((bits(dw1, 31, 0), bits(dw1, 63, 32)), (5, 8197), "EventID, pINTID");
        assert_eq!(bits(dw2, 15, 0), 1, "ICID");
    }

    #[test]
    fn inv_and_sync_fields() {
        let [dw0, dw1, ..] = Command::Inv { device: 2, event: 9 }.encode();
        assert_eq!((bits(dw0, 7, 0), bits(dw0, 63, 32), bits(dw1, 31, 0)), (0x0c, 2, 9));
        let [dw0, _, dw2, _] = Command::Sync { target: RdBase::Processor(1) }.encode();
        assert_eq!((bits(dw0, 7, 0), bits(dw2, 51, 16)), (0x05, 1));
    }

    #[test]
    fn the_probe_takes_the_lowest_event_and_lpi_no_doorbell_uses() {
        assert_eq!(probe_ids(&[]), (0, 8192));
        assert_eq!(probe_ids(&[(0, 8192), (1, 8193)]), (2, 8194));
        assert_eq!(probe_ids(&[(1, 8200), (0, 8192), (3, 8193)]), (2, 8194));
    }

    #[test]
    fn discard_fields() {
        let [dw0, dw1, dw2, dw3] = Command::Discard { device: 0x7, event: 0x1_0002 }.encode();
        assert_eq!(bits(dw0, 7, 0), 0x0f, "CommandID");
        assert_eq!(bits(dw0, 63, 32), 0x7, "DeviceID");
        assert_eq!(bits(dw1, 31, 0), 0x1_0002, "EventID");
        assert_eq!((dw2, dw3), (0, 0));
    }

    #[test]
    fn typer_fields() {
        // QEMU 7.2's GITS_TYPER: Physical, ITT_entry_size 12 bytes, 16 EventID and DeviceID
        // bits, PTA = 0.
        let typer = 1 | (11 << 4) | (15 << 8) | (15 << 13);
        assert_eq!(
            ItsType::decode(typer),
            ItsType { itt_entry_size: 12, event_bits: 16, device_bits: 16, physical_target: false }
        );
        assert!(ItsType::decode(typer | (1 << 19)).physical_target);
    }

    #[test]
    fn baser_keeps_type_and_entry_size() {
        // Type[58:56] = 1 (Devices), Entry_Size[52:48] = 7 (8 bytes), read-only.
        let reset = Baser((1 << 56) | (7 << 48));
        assert_eq!(reset.table_type(), TableType::Devices);
        assert_eq!(reset.entry_size(), 8);
        let value = reset.with_flat_table(0x4010_0000, 2, TableMemory::Cacheable);
        // Valid, InnerCache[61:59] = 0b111, Type, Entry_Size, address[47:12], Shareability[11:10]
        // = inner, Page_Size[9:8] = 4 KiB, Size[7:0] = pages - 1.
        assert_eq!(value.0, (1 << 63) | (0b111 << 59) | (1 << 56) | (7 << 48) | 0x4010_0000 | (0b01 << 10) | 1);
        assert_eq!(Baser(4 << 56).table_type(), TableType::Collections);
        assert_eq!(Baser(0).table_type(), TableType::Unimplemented);
    }

    #[test]
    fn command_queue_and_lpi_table_registers() {
        assert_eq!(cbaser(0x4020_0000, 1, TableMemory::Cacheable), (1 << 63) | (0b111 << 59) | 0x4020_0000 | (0b01 << 10));
        // GICR_PROPBASER: address[51:12], Shareability[11:10], InnerCache[9:7], IDbits[4:0].
        assert_eq!(propbaser(0x4030_0000, 14, TableMemory::Cacheable), 0x4030_0000 | (0b01 << 10) | (0b111 << 7) | 13);
        assert_eq!(propbaser(0x4030_0000, 14, TableMemory::NonCacheable), 0x4030_0000 | (0b001 << 7) | 13);
        // GICR_PENDBASER: PTZ[62], address[51:16].
        assert_eq!(pendbaser(0x4040_0000, TableMemory::Cacheable), (1 << 62) | 0x4040_0000 | (0b01 << 10) | (0b111 << 7));
        assert_eq!(TableMemory::accepted(0b01 << 10), TableMemory::Cacheable);
        assert_eq!(TableMemory::accepted(0), TableMemory::NonCacheable);
    }

    /// A table register that keeps what is written, reading Shareability back as `shares` allows.
    fn negotiated(gic_snoops: bool, shares: bool) -> (TableMemory, Vec<u64>) {
        let mut written = Vec::new();
        let memory = TableMemory::negotiate(gic_snoops, &mut |memory| {
            let value = propbaser(0x4030_0000, 14, memory);
            written.push(value);
            if shares { value } else { value & !(0b11 << 10) }
        });
        (memory, written)
    }

    #[test]
    fn tables_are_cacheable_only_for_a_gic_that_snoops_and_shares() {
        let cacheable = propbaser(0x4030_0000, 14, TableMemory::Cacheable);
        let non_cacheable = propbaser(0x4030_0000, 14, TableMemory::NonCacheable);
        assert_eq!(negotiated(true, true), (TableMemory::Cacheable, vec![cacheable]));
        // The GIC reads the table back non-shareable: it gets it non-cacheable.
        assert_eq!(negotiated(true, false), (TableMemory::NonCacheable, vec![cacheable, non_cacheable]));
        // RK3588 erratum 3588001: the GIC reads shareable back but cannot snoop; it is never
        // offered a cacheable table.
        assert_eq!(negotiated(false, true), (TableMemory::NonCacheable, vec![non_cacheable]));
        assert_eq!((non_cacheable >> 10) & 0b11, 0, "non-shareable");
        assert_eq!((non_cacheable >> 7) & 0b111, 0b001, "inner non-cacheable");
    }

    #[test]
    fn the_boot_report_reads_the_attributes_back() {
        assert_eq!(describe_propbaser(propbaser(0x4030_0000, 14, TableMemory::Cacheable)), "inner shareable, write-back cacheable");
        assert_eq!(describe_propbaser(propbaser(0x4030_0000, 14, TableMemory::NonCacheable)), "non-shareable, non-cacheable, cleaned to memory");
        assert_eq!(describe_propbaser(0x4030_0000 | (0b111 << 7)), "non-shareable");
    }

    #[test]
    fn lpi_table_sizes() {
        assert_eq!(lpi_id_bits(8192), 14);
        assert_eq!(lpi_id_bits(16383), 14);
        assert_eq!(lpi_id_bits(16384), 15);
        assert_eq!((bits_for(0), bits_for(1), bits_for(2), bits_for(255), bits_for(256)), (1, 1, 2, 8, 9));
        assert_eq!(property_table_size(14), 8192);
        assert_eq!(pending_table_size(14), 2048);
        assert_eq!(lpi_config(0xa0), 0xa1);
    }
}
