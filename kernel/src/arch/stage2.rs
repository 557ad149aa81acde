//! Stage-2 translation tables (aarch64-paging), one set per partition with its own VMID.
//!
//! The tables are built once at boot from the plan's region list and never change, except when
//! a partition stops: then every mapping is removed, so any of its CPUs still running faults
//! into EL2 at its next access and is parked there; a partition that restarts gets the same
//! regions mapped again once all its CPUs are parked.

use aarch64_paging::descriptor::Stage2Attributes as Attributes;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{MemoryRegion, Stage2};
use aarch64_paging::MapError;
use trapless_arm64::blockmap::SPAN;
use trapless_plan::{RegionKind, RegionRecord};

/// A partition's stage-2 tables.
pub struct Stage2Map {
    tables: IdMap<Stage2>,
}

fn attributes(kind: RegionKind) -> Attributes {
    let common = Attributes::VALID | Attributes::ACCESS_FLAG | Attributes::S2AP_ACCESS_RW;
    match kind {
        RegionKind::Ram => {
            common
                | Attributes::MEMATTR_NORMAL_INNER_WB
                | Attributes::MEMATTR_NORMAL_OUTER_WB
                | Attributes::SH_INNER
        }
        RegionKind::SharedRam => {
            common
                | Attributes::MEMATTR_NORMAL_INNER_WB
                | Attributes::MEMATTR_NORMAL_OUTER_WB
                | Attributes::SH_INNER
                | Attributes::XN
        }
        RegionKind::Device => common | Attributes::MEMATTR_DEVICE_nGnRE | Attributes::XN,
        RegionKind::DeviceReadOnly => {
            (common - Attributes::S2AP_ACCESS_RW)
                | Attributes::S2AP_ACCESS_RO
                | Attributes::MEMATTR_DEVICE_nGnRE
                | Attributes::XN
        }
    }
}

impl Stage2Map {
    /// Builds the tables for `regions` (identity: each region's IPA equals its PA, which the
    /// caller has checked). The root is level 1, for the 39-bit IPA space `VTCR_EL2` sets.
    pub fn new(regions: &[RegionRecord]) -> Result<Self, MapError> {
        let mut tables = IdMap::new(1, Stage2);
        for region in regions {
            let start = region.ipa.0 as usize;
            let range = MemoryRegion::new(start, start + region.size as usize);
            tables.map_range(&range, attributes(region.kind()))?;
        }
        // From now on CPUs may walk the tables: changes must do break-before-make and TLB
        // maintenance, which aarch64-paging does for a mapping it knows is active. (EL2 loads
        // VTTBR_EL2 itself; the mapping is never activated through the library or dropped.)
        tables.mark_active();
        Ok(Self { tables })
    }

    /// The root table's physical address, for `VTTBR_EL2`.
    pub fn root(&self) -> u64 {
        self.tables.root_address().0 as u64
    }

    /// Maps `regions` again after a [`revoke`](Self::revoke), in the same tables (the root,
    /// and so `VTTBR_EL2`, stay the same), for a partition that restarts.
    pub fn restore(&mut self, regions: &[RegionRecord]) -> Result<(), MapError> {
        for region in regions {
            let start = region.ipa.0 as usize;
            self.tables.map_range(&MemoryRegion::new(start, start + region.size as usize), attributes(region.kind()))?;
        }
        Ok(())
    }

    /// Removes every mapping, invalidating each removed one's TLB entries for the VMID in
    /// `VTTBR_EL2` (the caller runs on one of the partition's CPUs) before freeing its tables.
    pub fn revoke(&mut self) -> Result<(), MapError> {
        self.tables.map_range(&MemoryRegion::new(0, SPAN as usize), Attributes::empty())
    }
}
