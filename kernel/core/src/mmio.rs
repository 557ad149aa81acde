//! A load or store of an emulated register that trapped to EL2 as a stage-2 data abort, as
//! its syndrome describes it: shared by every register block EL2 emulates (the GIC
//! distributor and redistributor pages, the virtio-mmio block of a `mmio-trap` link).

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

/// `ISS.DFSC` of a translation fault at level 0 to 3: what an access to an unmapped register
/// block takes.
const TRANSLATION_FAULTS: core::ops::RangeInclusive<u64> = 0b00_0100..=0b00_0111;

impl Access {
    /// Decodes the ISS of a data abort, or `None` when EL2 must not emulate it, and the
    /// partition faults instead: no valid syndrome (`ISV` clear: a load/store pair, writeback,
    /// SIMD, and so on), a fault on a stage-1 table walk (`S1PTW`), a cache maintenance
    /// instruction (`CM`), an external abort (`EA`), or any fault but a translation fault.
    pub fn decode(iss: u64) -> Option<Self> {
        let bit = |n: u32| iss & (1 << n) != 0;
        let emulable = bit(24) && !bit(7) && !bit(8) && !bit(9) && TRANSLATION_FAULTS.contains(&(iss & 0b11_1111));
        emulable.then(|| Self {
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
