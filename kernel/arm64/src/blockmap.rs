//! A coarse stage-1 identity map for the first 512 GiB: RAM as Normal write-back memory, shared
//! memory (static virtio windows) as Normal write-back memory that is never executable, every
//! other address as Device-nGnRE and never executable. It is built from 1 GiB blocks, plus 2 MiB
//! blocks in gigabytes that mix kinds, in tables that live in the caller's BSS.
//! Building it needs no allocator and no atomics, so it can run before the MMU is on (when
//! exclusive accesses are not guaranteed to work).
//!
//! Both translation regimes that use it (EL2, and EL1&0 in partitions) read it with
//! [`TCR_T0SZ`] = 25 (39-bit addresses, lookup from level 1) and [`MAIR`].

use core::fmt;
use core::ops::Range;

/// `MAIR_ELx`: index 0 is Device-nGnRE, index 1 Normal write-back read/write-allocate.
pub const MAIR: u64 = 0x04 | (0xff << 8);
/// `TCR_ELx.T0SZ` for a 39-bit address space starting at level 1.
pub const TCR_T0SZ: u64 = 25;
/// Bytes a 1 GiB block maps.
pub const GIB: u64 = 1 << 30;
/// Bytes a 2 MiB block maps.
pub const BLOCK_2M: u64 = 2 << 20;
/// The top of the mapped space.
pub const SPAN: u64 = 512 * GIB;

const BLOCK: u64 = 0b01;
const TABLE: u64 = 0b11;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
/// `AP[1]`: RES1 in the EL2 regime (it grants EL0 access in EL1&0, which we do not want).
const AP_EL2_RES1: u64 = 1 << 6;
const PXN: u64 = 1 << 53;
const XN: u64 = 1 << 54;

/// Which stage-1 regime the tables are for: it decides the execute-never bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// EL2 (no EL0 part): `XN` only.
    El2,
    /// EL1&0: `PXN` and `UXN`.
    El1,
}

impl Regime {
    /// Bits every block descriptor of the regime carries.
    fn common(self) -> u64 {
        match self {
            Self::El2 => ACCESS_FLAG | AP_EL2_RES1,
            Self::El1 => ACCESS_FLAG,
        }
    }

    fn execute_never(self) -> u64 {
        match self {
            Self::El2 => XN,
            Self::El1 => PXN | XN,
        }
    }

    fn device(self) -> u64 {
        ATTR_DEVICE | self.common() | self.execute_never()
    }

    fn normal(self) -> u64 {
        ATTR_NORMAL | INNER_SHAREABLE | self.common()
    }
}

/// Why RAM cannot be mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// RAM does not start and end on 2 MiB boundaries, or shared memory does not start on one.
    Misaligned(Range<u64>),
    /// RAM or shared memory is empty or reaches past [`SPAN`].
    OutOfRange(Range<u64>),
    /// More gigabytes mix kinds of memory than there are level-2 tables.
    TooFragmented,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned(ram) => {
                write!(f, "RAM {:#x}..{:#x} is not 2 MiB aligned", ram.start, ram.end)
            }
            Self::OutOfRange(ram) => write!(f, "RAM {:#x}..{:#x} is empty or above 512 GiB", ram.start, ram.end),
            Self::TooFragmented => write!(f, "more than {LEVEL2_TABLES} gigabytes mix RAM, shared memory and devices"),
        }
    }
}

/// Level-2 tables an [`IdentityMap`] has: one per gigabyte that mixes kinds of memory.
pub const LEVEL2_TABLES: usize = 4;

/// The tables: one level-1 table and the level-2 tables of gigabytes that mix kinds.
#[derive(Clone)]
#[repr(C, align(4096))]
pub struct IdentityMap {
    level1: [u64; 512],
    level2: [[u64; 512]; LEVEL2_TABLES],
}

impl Default for IdentityMap {
    fn default() -> Self {
        Self::new()
    }
}

impl IdentityMap {
    pub const fn new() -> Self {
        Self { level1: [0; 512], level2: [[0; 512]; LEVEL2_TABLES] }
    }

    /// Fills the tables for `ram` (2 MiB aligned) and `shared` memory (each range starting on
    /// a 2 MiB boundary; its last block is mapped whole) in `regime`.
    pub fn build(&mut self, ram: Range<u64>, shared: &[Range<u64>], regime: Regime) -> Result<(), MapError> {
        if ram.start >= ram.end || ram.end > SPAN {
            return Err(MapError::OutOfRange(ram));
        }
        if !ram.start.is_multiple_of(BLOCK_2M) || !ram.end.is_multiple_of(BLOCK_2M) {
            return Err(MapError::Misaligned(ram));
        }
        for range in shared {
            if range.start >= range.end || range.end > SPAN {
                return Err(MapError::OutOfRange(range.clone()));
            }
            if !range.start.is_multiple_of(BLOCK_2M) {
                return Err(MapError::Misaligned(range.clone()));
            }
        }
        // The attributes of the 2 MiB block at `address`.
        let block = |address: u64| {
            if ram.contains(&address) {
                regime.normal()
            } else if shared.iter().any(|range| range.contains(&address)) {
                regime.normal() | regime.execute_never()
            } else {
                regime.device()
            }
        };
        let touches = |start: u64, end: u64| {
            let overlaps = |range: &Range<u64>| range.start < end && start < range.end;
            overlaps(&ram) || shared.iter().any(overlaps)
        };
        let mut next_level2 = 0;
        for gigabyte in 0..512u64 {
            let start = gigabyte * GIB;
            let first = block(start);
            let uniform = !touches(start, start + GIB) || (1..512).all(|index| block(start + index * BLOCK_2M) == first);
            let entry = if uniform {
                start | BLOCK | first
            } else {
                let table = self.level2.get_mut(next_level2).ok_or(MapError::TooFragmented)?;
                next_level2 += 1;
                for (index, entry) in table.iter_mut().enumerate() {
                    let address = start + index as u64 * BLOCK_2M;
                    *entry = address | BLOCK | block(address);
                }
                table.as_ptr() as u64 | TABLE
            };
            self.level1[gigabyte as usize] = entry;
        }
        Ok(())
    }

    /// The root table, for `TTBR0_ELx` (its address is its physical address: the caller runs
    /// identity-mapped or with the MMU off).
    pub fn root(&self) -> u64 {
        self.level1.as_ptr() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: u64 = 0xf_ffff_ffff_f000;

    #[test]
    fn whole_gigabytes_of_ram_are_normal_blocks() {
        let mut map = IdentityMap::new();
        map.build(GIB..3 * GIB, &[], Regime::El2).unwrap();
        assert_eq!(map.level1[0], BLOCK | ATTR_DEVICE | ACCESS_FLAG | AP_EL2_RES1 | XN);
        assert_eq!(map.level1[1], GIB | BLOCK | ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG | AP_EL2_RES1);
        assert_eq!(map.level1[2] & OUTPUT, 2 * GIB);
        assert_eq!(map.level1[3] & XN, XN);
        assert_eq!(map.level1[511] & OUTPUT, 511 * GIB);
    }

    #[test]
    fn partial_gigabytes_get_2mib_blocks() {
        let mut map = IdentityMap::new();
        let ram = GIB + 6 * BLOCK_2M..2 * GIB + 2 * BLOCK_2M;
        map.build(ram, &[], Regime::El1).unwrap();
        assert_eq!(map.level1[1] & 0b11, TABLE);
        assert_eq!(map.level1[1] & OUTPUT, map.level2[0].as_ptr() as u64);
        assert_eq!(map.level1[2] & OUTPUT, map.level2[1].as_ptr() as u64);
        let device = ATTR_DEVICE | ACCESS_FLAG | PXN | XN;
        let normal = ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG;
        assert_eq!(map.level2[0][5], (GIB + 5 * BLOCK_2M) | BLOCK | device);
        assert_eq!(map.level2[0][6], (GIB + 6 * BLOCK_2M) | BLOCK | normal);
        assert_eq!(map.level2[0][511] & !OUTPUT, BLOCK | normal);
        assert_eq!(map.level2[1][1], (2 * GIB + BLOCK_2M) | BLOCK | normal);
        assert_eq!(map.level2[1][2], (2 * GIB + 2 * BLOCK_2M) | BLOCK | device);
    }

    #[test]
    fn ram_inside_one_gigabyte_uses_one_table() {
        let mut map = IdentityMap::new();
        map.build(GIB + BLOCK_2M..GIB + 3 * BLOCK_2M, &[], Regime::El2).unwrap();
        assert_eq!(map.level1[1] & OUTPUT, map.level2[0].as_ptr() as u64);
        assert_eq!(map.level2[1], [0; 512]);
        assert_eq!(map.level2[0][0] & ATTR_NORMAL, 0);
        assert_eq!(map.level2[0][1] & ATTR_NORMAL, ATTR_NORMAL);
        assert_eq!(map.level2[0][3] & ATTR_NORMAL, 0);
    }

    #[test]
    fn rejects_misaligned_or_out_of_range_ram() {
        let mut map = IdentityMap::new();
        assert_eq!(map.build(GIB + 4096..2 * GIB, &[], Regime::El2), Err(MapError::Misaligned(GIB + 4096..2 * GIB)));
        assert_eq!(map.build(GIB..GIB, &[], Regime::El2), Err(MapError::OutOfRange(GIB..GIB)));
        assert_eq!(map.build(GIB..SPAN + GIB, &[], Regime::El2), Err(MapError::OutOfRange(GIB..SPAN + GIB)));
    }

    #[test]
    fn shared_memory_is_normal_and_never_executable_to_the_end_of_its_last_block() {
        let mut map = IdentityMap::new();
        let ram = GIB..GIB + 4 * BLOCK_2M;
        // A 1 MiB window at 1 GiB + 16 MiB, and one in another gigabyte.
        let shared = [GIB + 8 * BLOCK_2M..GIB + 8 * BLOCK_2M + (1 << 20), 3 * GIB..3 * GIB + BLOCK_2M];
        map.build(ram, &shared, Regime::El1).unwrap();
        let normal = ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG;
        assert_eq!(map.level2[0][3] & !OUTPUT, BLOCK | normal);
        assert_eq!(map.level2[0][8], (GIB + 8 * BLOCK_2M) | BLOCK | normal | PXN | XN);
        assert_eq!(map.level2[0][9] & ATTR_NORMAL, 0, "the block after the window is a device's");
        assert_eq!(map.level1[3] & 0b11, TABLE);
        assert_eq!(map.level2[1][0], (3 * GIB) | BLOCK | normal | PXN | XN);
        assert_eq!(map.level1[2] & 0b11, BLOCK, "a gigabyte of devices only is one block");
    }

    #[test]
    fn rejects_misaligned_shared_memory_and_too_many_mixed_gigabytes() {
        let mut map = IdentityMap::new();
        let ram = GIB..GIB + BLOCK_2M;
        let misaligned = GIB + 4096..GIB + BLOCK_2M + 4096;
        assert_eq!(map.build(ram.clone(), core::slice::from_ref(&misaligned), Regime::El2), Err(MapError::Misaligned(misaligned)));
        let scattered: [Range<u64>; 4] = core::array::from_fn(|index| (index as u64 + 2) * GIB..(index as u64 + 2) * GIB + BLOCK_2M);
        assert_eq!(map.build(ram, &scattered, Regime::El2), Err(MapError::TooFragmented));
    }
}
