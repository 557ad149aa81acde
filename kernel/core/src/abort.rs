//! Turning a partition's stage-2 fault into an abort it can handle (`on-fault = "abort"`): EL2
//! enters the partition's own EL1 exception vector as if the access had taken a synchronous
//! external abort (an access that nothing backs, as on hardware), instead of stopping it.
//! This module decides the registers; EL2 writes them.

/// `ESR_ELx.EC` values.
mod ec {
    pub const INSN_ABORT_LOWER: u64 = 0x20;
    pub const INSN_ABORT_SAME: u64 = 0x21;
    pub const DATA_ABORT_LOWER: u64 = 0x24;
    pub const DATA_ABORT_SAME: u64 = 0x25;
}

/// `ESR_ELx.IL`: a 32-bit instruction.
const IL: u64 = 1 << 25;
/// `ESR_ELx.ISS.WnR` of a data abort.
const WNR: u64 = 1 << 6;
/// Fault status code: synchronous external abort, not on a translation table walk.
const SYNCHRONOUS_EXTERNAL_ABORT: u64 = 0x10;

/// `SPSR_ELx` / `PSTATE` fields.
mod pstate {
    pub const MODE: u64 = 0b1_1111;
    pub const EL1H: u64 = 0b0101;
    pub const EL1T: u64 = 0b0100;
    /// `M[4]`: AArch32.
    pub const AARCH32: u64 = 1 << 4;
    pub const DAIF: u64 = 0b1111 << 6;
    pub const NZCV: u64 = 0b1111 << 28;
    pub const SSBS: u64 = 1 << 12;
    pub const PAN: u64 = 1 << 22;
    pub const DIT: u64 = 1 << 24;
    pub const TCO: u64 = 1 << 25;
}

/// `SCTLR_EL1.SPAN`: PAN is left as it was on an exception to EL1 (else it is set).
const SCTLR_SPAN: u64 = 1 << 23;
/// `SCTLR_EL1.DSSBS`: `PSTATE.SSBS` on an exception to EL1.
const SCTLR_DSSBS: u64 = 1 << 44;

/// Bytes of an exception vector table.
const VECTOR_TABLE: u64 = 0x800;

/// The partition's state when it faulted, as EL2 sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faulted {
    /// `ESR_EL2` of the stage-2 abort.
    pub esr: u64,
    /// `ELR_EL2`: the instruction that faulted.
    pub pc: u64,
    /// `SPSR_EL2`: its `PSTATE`.
    pub pstate: u64,
    pub sctlr_el1: u64,
    pub vbar_el1: u64,
    /// Whether the CPU implements the Memory Tagging Extension (then an exception sets `TCO`).
    pub mte: bool,
}

/// What EL2 writes to deliver the abort: the partition's EL1 exception registers, and where
/// and in which state it resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub esr_el1: u64,
    /// `ELR_EL1`: the faulting instruction, which the handler may retry or skip.
    pub elr_el1: u64,
    /// `SPSR_EL1`: the `PSTATE` it faulted with.
    pub spsr_el1: u64,
    /// Where it resumes: its vector for a synchronous exception from where it was.
    pub pc: u64,
    /// The `PSTATE` it resumes with: EL1h, every exception masked.
    pub pstate: u64,
}

/// Why a fault cannot become an abort (the partition is then stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a data or instruction abort from EL0 or EL1.
    NotAnAbort,
    /// It faulted inside its own exception vectors: the abort would fault again, forever.
    InItsVectors,
}

/// The synchronous external abort a partition takes instead of the stage-2 fault `faulted`.
pub fn synchronous_external_abort(faulted: &Faulted) -> Result<Injection, Refusal> {
    let class = crate::exits::exception_class(faulted.esr);
    let data = match class {
        ec::DATA_ABORT_LOWER => true,
        ec::INSN_ABORT_LOWER => false,
        _ => return Err(Refusal::NotAnAbort),
    };
    let vbar = faulted.vbar_el1;
    if faulted.pc.wrapping_sub(vbar) < VECTOR_TABLE {
        return Err(Refusal::InItsVectors);
    }
    let mode = faulted.pstate & pstate::MODE;
    let (from_el1, offset) = match mode {
        pstate::EL1H => (true, 0x200),
        pstate::EL1T => (true, 0x000),
        mode if mode & pstate::AARCH32 != 0 => (false, 0x600),
        _ => (false, 0x400),
    };
    let class = match (data, from_el1) {
        (true, true) => ec::DATA_ABORT_SAME,
        (true, false) => ec::DATA_ABORT_LOWER,
        (false, true) => ec::INSN_ABORT_SAME,
        (false, false) => ec::INSN_ABORT_LOWER,
    };
    let write = if data { faulted.esr & WNR } else { 0 };
    let esr_el1 = (class << 26) | (faulted.esr & IL) | write | SYNCHRONOUS_EXTERNAL_ABORT;

    let old = faulted.pstate;
    let sctlr = faulted.sctlr_el1;
    let mut new = (old & (pstate::NZCV | pstate::DIT | pstate::PAN)) | pstate::DAIF | pstate::EL1H;
    if sctlr & SCTLR_SPAN == 0 {
        new |= pstate::PAN;
    }
    if sctlr & SCTLR_DSSBS != 0 {
        new |= pstate::SSBS;
    }
    if faulted.mte {
        new |= pstate::TCO;
    }
    Ok(Injection { esr_el1, elr_el1: faulted.pc, spsr_el1: old, pc: vbar + offset, pstate: new })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32-bit load at EL0 that took a stage-2 translation fault (level 3).
    const USER_LOAD: Faulted = Faulted {
        esr: (ec::DATA_ABORT_LOWER << 26) | IL | (1 << 24) | (2 << 22) | 0b111,
        pc: 0x40_1000,
        pstate: 0x6000_0000,
        sctlr_el1: SCTLR_SPAN,
        vbar_el1: 0xffff_8000_0801_0800,
        mte: false,
    };

    #[test]
    fn a_user_access_enters_the_lower_el_vector_as_a_lower_el_data_abort() {
        let injection = synchronous_external_abort(&USER_LOAD).unwrap();
        assert_eq!(injection.pc, USER_LOAD.vbar_el1 + 0x400);
        assert_eq!(injection.esr_el1, (0x24 << 26) | IL | 0x10, "a read: WnR clear; no ISV, no S1PTW");
        assert_eq!((injection.elr_el1, injection.spsr_el1), (0x40_1000, 0x6000_0000));
        assert_eq!(injection.pstate, 0x6000_0000 | (0b1111 << 6) | 0b0101, "EL1h, DAIF masked, flags kept");
    }

    #[test]
    fn a_kernel_access_enters_the_current_el_vector_with_its_stack_choice() {
        let handler = Faulted { pstate: 0x3c5, esr: USER_LOAD.esr | WNR, ..USER_LOAD };
        let injection = synchronous_external_abort(&handler).unwrap();
        assert_eq!((injection.pc, injection.esr_el1), (USER_LOAD.vbar_el1 + 0x200, (0x25 << 26) | IL | WNR | 0x10));
        let on_sp_el0 = Faulted { pstate: 0x3c4, ..USER_LOAD };
        assert_eq!(synchronous_external_abort(&on_sp_el0).unwrap().pc, USER_LOAD.vbar_el1);
        let aarch32_user = Faulted { pstate: 0x10, ..USER_LOAD };
        assert_eq!(synchronous_external_abort(&aarch32_user).unwrap().pc, USER_LOAD.vbar_el1 + 0x600);
    }

    #[test]
    fn an_instruction_fetch_becomes_an_instruction_abort() {
        let fetch = Faulted { esr: (ec::INSN_ABORT_LOWER << 26) | IL | 0b110 | WNR, pstate: 0x3c5, ..USER_LOAD };
        assert_eq!(synchronous_external_abort(&fetch).unwrap().esr_el1, (0x21 << 26) | IL | 0x10);
        let user_fetch = Faulted { pstate: 0, ..fetch };
        assert_eq!(synchronous_external_abort(&user_fetch).unwrap().esr_el1, (0x20 << 26) | IL | 0x10);
    }

    #[test]
    fn pan_ssbs_tco_and_dit_follow_the_architecture() {
        // SPAN clear: PAN is set on entry. DSSBS: SSBS set. MTE: TCO set. DIT kept.
        let faulted = Faulted { pstate: pstate::DIT | pstate::SSBS, sctlr_el1: SCTLR_DSSBS, mte: true, ..USER_LOAD };
        let pstate = synchronous_external_abort(&faulted).unwrap().pstate;
        assert_eq!(pstate & (pstate::PAN | pstate::SSBS | pstate::TCO | pstate::DIT), pstate::PAN | pstate::SSBS | pstate::TCO | pstate::DIT);
        // SPAN set: PAN as it was (clear); no DSSBS: SSBS clear.
        let faulted = Faulted { pstate: pstate::SSBS, ..USER_LOAD };
        assert_eq!(synchronous_external_abort(&faulted).unwrap().pstate & (pstate::PAN | pstate::SSBS), 0);
    }

    #[test]
    fn a_fault_in_its_own_vectors_or_of_another_kind_is_not_turned_into_an_abort() {
        let in_vectors = Faulted { pc: USER_LOAD.vbar_el1 + 0x204, pstate: 0x3c5, ..USER_LOAD };
        assert_eq!(synchronous_external_abort(&in_vectors), Err(Refusal::InItsVectors));
        let hvc = Faulted { esr: 0x16 << 26, ..USER_LOAD };
        assert_eq!(synchronous_external_abort(&hvc), Err(Refusal::NotAnAbort));
    }
}
