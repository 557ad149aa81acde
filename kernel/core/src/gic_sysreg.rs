//! The GIC CPU-interface registers EL2 traps (`ICH_HCR_EL2.TC`) and serves for a partition:
//! the SGI registers, so that a partition can interrupt only its own CPUs, and the other
//! registers that trap comes with (`PMR`, `CTLR`, `RPR`, `DIR`), which EL2 simply accesses on
//! the partition's behalf. Acknowledging and ending interrupts (`IAR1`, `EOIR1`) never traps.

use trapless_plan::MAX_CPUS;

/// A trapped GIC CPU-interface register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicRegister {
    /// `ICC_SGI1R_EL1`: Group 1 SGIs.
    Sgi1r,
    /// `ICC_ASGI1R_EL1`: Group 1 SGIs for the other Security state.
    Asgi1r,
    /// `ICC_SGI0R_EL1`: Group 0 SGIs.
    Sgi0r,
    Pmr,
    Ctlr,
    Rpr,
    Dir,
}

impl GicRegister {
    /// Whether the register generates SGIs (its targets must be restricted).
    pub fn is_sgi(self) -> bool {
        matches!(self, Self::Sgi1r | Self::Asgi1r | Self::Sgi0r)
    }
}

/// A trapped system register access: which register, whether it reads, and the general
/// register (`x0`..`x30`, or 31 for `xzr`) it reads into or writes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub register: GicRegister,
    pub read: bool,
    pub rt: usize,
}

/// Decodes the ISS of a trapped `MSR`/`MRS` (exception class 0x18) into a GIC register access,
/// or `None` for any other register.
pub fn decode(iss: u64) -> Option<Access> {
    let field = |shift: u32, bits: u32| ((iss >> shift) & ((1 << bits) - 1)) as u8;
    let (op0, op2, op1, crn, crm) = (field(20, 2), field(17, 3), field(14, 3), field(10, 4), field(1, 4));
    let register = match (op0, op1, crn, crm, op2) {
        (3, 0, 12, 11, 5) => GicRegister::Sgi1r,
        (3, 0, 12, 11, 6) => GicRegister::Asgi1r,
        (3, 0, 12, 11, 7) => GicRegister::Sgi0r,
        (3, 0, 12, 11, 1) => GicRegister::Dir,
        (3, 0, 12, 11, 3) => GicRegister::Rpr,
        (3, 0, 12, 12, 4) => GicRegister::Ctlr,
        (3, 0, 4, 6, 0) => GicRegister::Pmr,
        _ => return None,
    };
    Some(Access { register, read: iss & 1 != 0, rt: field(5, 5) as usize })
}

/// `ICC_SGI*R_EL1` fields.
const TARGET_LIST: u64 = 0xffff;
const AFF1_SHIFT: u32 = 16;
const INTID_SHIFT: u32 = 24;
const AFF2_SHIFT: u32 = 32;
const IRM: u64 = 1 << 40;
const RS_SHIFT: u32 = 44;
const AFF3_SHIFT: u32 = 48;

/// The SGI register writes that deliver what a partition asked for, to its own CPUs only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgiWrites {
    writes: [u64; MAX_CPUS],
    len: usize,
}

impl SgiWrites {
    /// The register values to write, one per target CPU at most.
    pub fn as_slice(&self) -> &[u64] {
        &self.writes[..self.len]
    }
}

/// The MPIDR affinity of target list bit `bit` of SGI register value `value`.
fn target_of(value: u64, bit: u64) -> u64 {
    let aff0 = ((value >> RS_SHIFT) & 0xf) * 16 + bit;
    (((value >> AFF3_SHIFT) & 0xff) << 32)
        | (((value >> AFF2_SHIFT) & 0xff) << 16)
        | (((value >> AFF1_SHIFT) & 0xff) << 8)
        | aff0
}

/// The SGI register value that sends INTID `intid` to the CPU with affinity `mpidr` alone.
fn to_one(intid: u64, mpidr: u64) -> u64 {
    let aff0 = mpidr & 0xff;
    ((mpidr >> 32 & 0xff) << AFF3_SHIFT)
        | ((mpidr >> 16 & 0xff) << AFF2_SHIFT)
        | ((mpidr >> 8 & 0xff) << AFF1_SHIFT)
        | ((aff0 / 16) << RS_SHIFT)
        | (intid << INTID_SHIFT)
        | (1 << (aff0 % 16))
}

/// Restricts the SGI register value `value`, written by the CPU with affinity `caller`, to the
/// partition's CPUs `own` (affinities): "all but self" (`IRM`) becomes the partition's other
/// CPUs, and target-list bits naming anyone else's CPU are dropped. Targets come out one per
/// write, in `own` order.
pub fn restrict(value: u64, own: &[u64], caller: u64) -> SgiWrites {
    let intid = (value >> INTID_SHIFT) & 0xf;
    let mut out = SgiWrites { writes: [0; MAX_CPUS], len: 0 };
    for &cpu in own.iter().take(MAX_CPUS) {
        let wanted = if value & IRM != 0 {
            cpu != caller
        } else {
            (0..16).any(|bit| value & TARGET_LIST & (1 << bit) != 0 && target_of(value, bit) == cpu)
        };
        if wanted {
            out.writes[out.len] = to_one(intid, cpu);
            out.len += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `MSR`/`MRS` ISS for op0=3, op1=0, the given CRn/CRm/op2, register `rt`.
    fn iss(crn: u64, crm: u64, op2: u64, rt: u64, read: bool) -> u64 {
        (3 << 20) | (op2 << 17) | (crn << 10) | (rt << 5) | (crm << 1) | u64::from(read)
    }

    #[test]
    fn decodes_the_trapped_registers() {
        assert_eq!(decode(iss(12, 11, 5, 3, false)), Some(Access { register: GicRegister::Sgi1r, read: false, rt: 3 }));
        assert_eq!(decode(iss(4, 6, 0, 31, true)), Some(Access { register: GicRegister::Pmr, read: true, rt: 31 }));
        assert_eq!(decode(iss(12, 12, 4, 0, true)).map(|a| a.register), Some(GicRegister::Ctlr));
        assert_eq!(decode(iss(12, 11, 7, 0, false)).map(|a| a.register), Some(GicRegister::Sgi0r));
        // ICC_IAR1_EL1 is not trapped by TC and not served here; nor is anything else.
        assert_eq!(decode(iss(12, 12, 0, 0, true)), None);
        assert_eq!(decode(iss(1, 0, 0, 0, false)), None);
    }

    fn sgi(targets: u64, intid: u64) -> u64 {
        (intid << INTID_SHIFT) | targets
    }

    #[test]
    fn targets_outside_the_partition_are_dropped() {
        // Own CPUs 0 and 1; the caller asks for CPUs 1, 2 and 3.
        let writes = restrict(sgi(0b1110, 3), &[0, 1], 0);
        assert_eq!(writes.as_slice(), [sgi(0b10, 3)]);
        assert_eq!(restrict(sgi(0b1100, 3), &[0, 1], 0).as_slice(), []);
    }

    #[test]
    fn all_but_self_means_the_partitions_other_cpus() {
        let writes = restrict(IRM | sgi(0, 5), &[0x0, 0x1, 0x100], 0x1);
        assert_eq!(writes.as_slice(), [sgi(0b1, 5), (1 << AFF1_SHIFT) | sgi(0b1, 5)]);
    }

    #[test]
    fn affinity_levels_and_range_selector_are_kept() {
        let far = (0x2 << AFF3_SHIFT) | (0x3 << AFF2_SHIFT) | (0x4 << AFF1_SHIFT) | (1 << RS_SHIFT);
        let own = [0x02_0003_0412, 0x02_0003_0400];
        // Bit 2 with RS 1 is Aff0 18 = 0x12.
        assert_eq!(restrict(far | sgi(0b101, 9), &own, 0).as_slice(), [far | sgi(0b100, 9)]);
    }
}
