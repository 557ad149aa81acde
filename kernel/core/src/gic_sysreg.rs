//! The GIC CPU-interface registers EL2 traps (`ICH_HCR_EL2.TC`) and serves for a partition:
//! the SGI registers, so that a partition can interrupt only its own CPUs, and the other
//! registers that trap comes with (`PMR`, `CTLR`, `RPR`, `DIR`), which EL2 simply accesses on
//! the partition's behalf. Acknowledging and ending interrupts (`IAR1`, `EOIR1`) never traps.


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

/// The SGI register writes that deliver what a partition asked for, to its own CPUs only: one
/// write per group of the targets that share Aff3.Aff2.Aff1 and range selector (one target
/// list), in the order of the partition's CPUs. An iterator, so that nothing is built to be
/// walked once.
#[derive(Clone, Debug)]
pub struct SgiWrites<'a> {
    own: &'a [u64],
    intid: u64,
    /// The partition's CPUs (by index in `own`) still to write for.
    pending: u32,
}

impl Iterator for SgiWrites<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.pending == 0 {
            return None;
        }
        let first = self.own[self.pending.trailing_zeros() as usize];
        let group = first & !0xf;
        let mut targets = 0u64;
        for (index, &cpu) in self.own.iter().enumerate() {
            if self.pending & (1 << index) != 0 && cpu & !0xf == group {
                targets |= 1 << (cpu & 0xf);
                self.pending &= !(1 << index);
            }
        }
        Some(to_group(self.intid, group) | targets)
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

/// The SGI register value, without its target list, that sends INTID `intid` to CPUs whose
/// affinities share `group` (`mpidr & !0xf`: Aff3.Aff2.Aff1 and the top of Aff0, the range
/// selector).
fn to_group(intid: u64, group: u64) -> u64 {
    ((group >> 32 & 0xff) << AFF3_SHIFT)
        | ((group >> 16 & 0xff) << AFF2_SHIFT)
        | ((group >> 8 & 0xff) << AFF1_SHIFT)
        | (((group & 0xff) / 16) << RS_SHIFT)
        | (intid << INTID_SHIFT)
}

/// Restricts the SGI register value `value`, written by the CPU with affinity `caller`, to the
/// partition's CPUs `own` (affinities, at most 32): "all but self" (`IRM`) becomes the
/// partition's other CPUs, and target-list bits naming anyone else's CPU are dropped. Each of
/// the partition's CPUs is looked at once: a target-list request names the 16 CPUs from
/// [`target_of`] bit 0 on, so an own CPU is wanted if it lies among them and its bit is set.
pub fn restrict<'a>(value: u64, own: &'a [u64], caller: u64) -> SgiWrites<'a> {
    let own = &own[..own.len().min(32)];
    let intid = (value >> INTID_SHIFT) & 0xf;
    let first = target_of(value, 0);
    let mut pending = 0u32;
    for (index, &cpu) in own.iter().enumerate() {
        let wanted = if value & IRM != 0 {
            cpu != caller
        } else {
            let bit = cpu.wrapping_sub(first);
            bit < 16 && value & TARGET_LIST & (1 << bit) != 0
        };
        pending |= u32::from(wanted) << index;
    }
    SgiWrites { own, intid, pending }
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

    fn writes(value: u64, own: &[u64], caller: u64) -> Vec<u64> {
        restrict(value, own, caller).collect()
    }

    #[test]
    fn targets_outside_the_partition_are_dropped() {
        // Own CPUs 0 and 1; the caller asks for CPUs 1, 2 and 3.
        assert_eq!(writes(sgi(0b1110, 3), &[0, 1], 0), [sgi(0b10, 3)]);
        assert_eq!(writes(sgi(0b1100, 3), &[0, 1], 0), []);
        // Another cluster's CPU 1 is not ours, whatever its Aff0.
        assert_eq!(writes((1 << AFF1_SHIFT) | sgi(0b11, 3), &[0, 1], 0), []);
    }

    #[test]
    fn all_but_self_means_the_partitions_other_cpus() {
        assert_eq!(writes(IRM | sgi(0, 5), &[0x0, 0x1, 0x100], 0x1), [sgi(0b1, 5), (1 << AFF1_SHIFT) | sgi(0b1, 5)]);
    }

    #[test]
    fn targets_that_share_a_target_list_go_in_one_write() {
        // Own CPUs 0, 1, 2 and 0x100: all but CPU 2 is one write for cluster 0, one for 0x100.
        assert_eq!(writes(IRM | sgi(0, 7), &[0x0, 0x1, 0x2, 0x100], 0x2), [sgi(0b11, 7), (1 << AFF1_SHIFT) | sgi(0b1, 7)]);
        assert_eq!(writes(sgi(0b111, 7), &[0x0, 0x1, 0x2], 0x0), [sgi(0b111, 7)]);
    }

    #[test]
    fn affinity_levels_and_range_selector_are_kept() {
        let far = (0x2 << AFF3_SHIFT) | (0x3 << AFF2_SHIFT) | (0x4 << AFF1_SHIFT) | (1 << RS_SHIFT);
        let own = [0x02_0003_0412, 0x02_0003_0400];
        // Bit 2 with RS 1 is Aff0 18 = 0x12; 0x400 (Aff0 0) is in range 0, not 1.
        assert_eq!(writes(far | sgi(0b101, 9), &own, 0), [far | sgi(0b100, 9)]);
        assert_eq!(writes(far | sgi(0xffff, 9), &own, 0), [far | sgi(0b100, 9)]);
    }

    #[test]
    fn every_request_reaches_exactly_the_own_cpus_it_names() {
        // Against the definition, bit by bit, over many values and partitions.
        let cpus = [0x0, 0x1, 0x2, 0xf, 0x10, 0x11, 0x100, 0x1_0000, 0x1_0000_0003];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let own: Vec<u64> = cpus.iter().copied().filter(|cpu| seed.rotate_left(*cpu as u32 % 64) & 1 != 0).collect();
            let caller = cpus[(seed >> 50) as usize % cpus.len()];
            let value = seed & (IRM | (0xff << AFF3_SHIFT) | (0xff << AFF2_SHIFT) | (0xff << AFF1_SHIFT) | (0xf << RS_SHIFT) | (0xf << INTID_SHIFT) | TARGET_LIST) & !(0xfe << AFF3_SHIFT) & !(0xfe << AFF2_SHIFT) & !(0xfe << AFF1_SHIFT) & !(0xe << RS_SHIFT);
            let wanted: Vec<u64> = own
                .iter()
                .copied()
                .filter(|&cpu| if value & IRM != 0 { cpu != caller } else { (0..16).any(|bit| value & (1 << bit) != 0 && target_of(value, bit) == cpu) })
                .collect();
            let mut reached: Vec<u64> = Vec::new();
            for write in restrict(value, &own, caller) {
                assert_eq!(write & IRM, 0);
                assert_eq!((write >> INTID_SHIFT) & 0xf, (value >> INTID_SHIFT) & 0xf);
                reached.extend((0..16).filter(|bit| write & (1 << bit) != 0).map(|bit| target_of(write, bit)));
            }
            reached.sort_unstable();
            let mut expected = wanted.clone();
            expected.sort_unstable();
            assert_eq!(reached, expected, "value {value:#x}, own {own:x?}, caller {caller:#x}");
        }
    }
}
