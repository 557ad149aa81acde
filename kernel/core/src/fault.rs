//! Why a partition stopped, and the report EL2 prints about it.

use crate::exits::exception_class;
use core::fmt;
use trapless_plan::{Ipa, VirtAddr};

/// What EL2 knows about a partition's CPU's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// `ESR_EL2`.
    pub esr: u64,
    /// The IPA an abort was for, where the hardware says it (see [`needs_ipa_lookup`]).
    pub ipa: Option<Ipa>,
    /// `ELR_EL2`: the PC of the exit.
    pub pc: u64,
}

/// A stage-2 fault or an exit trapless does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A data access to an IPA the partition does not own.
    DataAbort { write: bool, ipa: Option<Ipa>, status: FaultStatus, pc: VirtAddr, esr: u64 },
    /// An instruction fetch from an IPA the partition may not execute.
    InsnAbort { ipa: Option<Ipa>, status: FaultStatus, pc: VirtAddr, esr: u64 },
    /// An exception class EL2 does not serve, or a system register it does not emulate.
    Unexpected { class: u64, pc: VirtAddr, esr: u64 },
}

/// The fault status code of an abort (`ESR_EL2.ISS.xFSC`), as far as a report needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    Translation,
    AccessFlag,
    Permission,
    Alignment,
    ExternalAbort,
    Other(u8),
}

impl FaultStatus {
    fn from_iss(iss: u64) -> Self {
        let code = (iss & 0x3f) as u8;
        match code {
            0x04..=0x07 => Self::Translation,
            0x08..=0x0b => Self::AccessFlag,
            0x0c..=0x0f => Self::Permission,
            0x21 => Self::Alignment,
            0x10 => Self::ExternalAbort,
            _ => Self::Other(code),
        }
    }

}

/// Where EL2 finds the IPA of a stage-2 abort with syndrome `esr`: `HPFAR_EL2` holds it for
/// translation and access-flag faults and for any fault on a stage-1 table walk (`S1PTW`);
/// for a permission fault it may be UNKNOWN, so EL2 translates `FAR_EL2` itself. Other
/// aborts carry no IPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpaSource {
    Hpfar,
    TranslateFar,
    None,
}

/// See [`IpaSource`].
pub fn needs_ipa_lookup(esr: u64) -> IpaSource {
    let s1ptw = esr & (1 << 7) != 0;
    match FaultStatus::from_iss(esr) {
        FaultStatus::Translation | FaultStatus::AccessFlag => IpaSource::Hpfar,
        FaultStatus::Permission if s1ptw => IpaSource::Hpfar,
        FaultStatus::Permission => IpaSource::TranslateFar,
        _ if s1ptw => IpaSource::Hpfar,
        _ => IpaSource::None,
    }
}

/// The IPA in `HPFAR_EL2` (IPA bits 51:12 in its bits 43:4) plus the page offset from `FAR_EL2`.
pub fn ipa_from_hpfar(hpfar: u64, far: u64) -> Ipa {
    Ipa((((hpfar >> 4) & 0xff_ffff_ffff) << 12) | (far & 0xfff))
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Translation => f.write_str("translation fault"),
            Self::AccessFlag => f.write_str("access flag fault"),
            Self::Permission => f.write_str("permission fault"),
            Self::Alignment => f.write_str("alignment fault"),
            Self::ExternalAbort => f.write_str("external abort"),
            Self::Other(code) => write!(f, "fault status {code:#x}"),
        }
    }
}

const EC_INSN_ABORT_LOWER: u64 = 0x20;
const EC_DATA_ABORT_LOWER: u64 = 0x24;

impl Fault {
    /// Decodes the exit that stops a partition.
    pub fn from_syndrome(syndrome: &Syndrome) -> Self {
        let Syndrome { esr, ipa, pc } = *syndrome;
        let pc = VirtAddr(pc);
        let iss = esr & 0x1ff_ffff;
        let status = FaultStatus::from_iss(iss);
        match exception_class(esr) {
            EC_DATA_ABORT_LOWER => {
                Self::DataAbort { write: iss & (1 << 6) != 0, ipa, status, pc, esr }
            }
            EC_INSN_ABORT_LOWER => Self::InsnAbort { ipa, status, pc, esr },
            class => Self::Unexpected { class, pc, esr },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::DataAbort { write, ipa, status, pc, esr } => {
                let access = if write { "write" } else { "read" };
                write!(f, "stage-2 data abort: {access} ")?;
                match ipa {
                    Some(ipa) => write!(f, "at IPA {ipa}")?,
                    None => f.write_str("at an unknown IPA")?,
                }
                write!(f, " ({status}), PC {pc}, ESR {esr:#x}")
            }
            Self::InsnAbort { ipa, status, pc, esr } => {
                f.write_str("stage-2 instruction abort: fetch ")?;
                match ipa {
                    Some(ipa) => write!(f, "at IPA {ipa}")?,
                    None => f.write_str("at an unknown IPA")?,
                }
                write!(f, " ({status}), PC {pc}, ESR {esr:#x}")
            }
            Self::Unexpected { class, pc, esr } => {
                write!(f, "unexpected exception class {class:#x}, PC {pc}, ESR {esr:#x}")
            }
        }
    }
}

/// Why a partition stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It called PSCI `SYSTEM_OFF`: a clean finish.
    SystemOff,
    /// It called PSCI `SYSTEM_RESET`.
    SystemReset,
    /// Its last running CPU called PSCI `CPU_OFF`.
    AllCpusOff,
    /// EL2 stopped it.
    Fault(Fault),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemOff => f.write_str("system-off"),
            Self::SystemReset => f.write_str("system-reset"),
            Self::AllCpusOff => f.write_str("all CPUs off"),
            Self::Fault(fault) => fault.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA_ABORT: u64 = 0x24 << 26;
    const INSN_ABORT: u64 = 0x20 << 26;

    fn fault(esr: u64, ipa: Option<u64>, pc: u64) -> Fault {
        Fault::from_syndrome(&Syndrome { esr, ipa: ipa.map(Ipa), pc })
    }

    #[test]
    fn data_abort_report_names_ipa_access_and_pc() {
        // IL, WnR, DFSC = translation fault level 1.
        let esr = DATA_ABORT | (1 << 25) | (1 << 6) | 0x05;
        assert_eq!(
            fault(esr, Some(0x4800_0123), 0x4208_0f3c).to_string(),
            "stage-2 data abort: write at IPA 0x4800_0123 (translation fault), PC 0x4208_0f3c, ESR 0x92000045"
        );
    }

    #[test]
    fn read_abort_and_insn_abort() {
        let esr = DATA_ABORT | 0x0f;
        assert_eq!(
            fault(esr, Some(0x900_0010), 0x100),
            Fault::DataAbort { write: false, ipa: Some(Ipa(0x900_0010)), status: FaultStatus::Permission, pc: VirtAddr(0x100), esr }
        );
        let fetch = fault(INSN_ABORT | 0x06, Some(0x5000), 0x5000);
        assert!(fetch.to_string().starts_with("stage-2 instruction abort: fetch at IPA 0x5000 (translation fault)"));
    }

    #[test]
    fn an_abort_without_an_ipa_says_so() {
        let report = fault(DATA_ABORT | 0x10, None, 0).to_string();
        assert!(report.contains("at an unknown IPA (external abort)"), "{report}");
    }

    #[test]
    fn the_ipa_comes_from_hpfar_or_a_lookup() {
        assert_eq!(needs_ipa_lookup(DATA_ABORT | 0x07), IpaSource::Hpfar);
        assert_eq!(needs_ipa_lookup(DATA_ABORT | 0x09), IpaSource::Hpfar);
        assert_eq!(needs_ipa_lookup(DATA_ABORT | 0x0f), IpaSource::TranslateFar);
        assert_eq!(needs_ipa_lookup(DATA_ABORT | (1 << 7) | 0x0f), IpaSource::Hpfar);
        assert_eq!(needs_ipa_lookup(DATA_ABORT | 0x10), IpaSource::None);
        assert_eq!(needs_ipa_lookup(DATA_ABORT | (1 << 7) | 0x10), IpaSource::Hpfar);
        assert_eq!(ipa_from_hpfar(0x4_8000 << 4, 0x1234_5abc), Ipa(0x4800_0abc));
    }

    #[test]
    fn unexpected_classes_name_their_class() {
        assert_eq!(fault(0x18 << 26, None, 0x4000).to_string(), "unexpected exception class 0x18, PC 0x4000, ESR 0x60000000");
    }

    #[test]
    fn stop_reasons_read_as_the_runner_expects() {
        assert_eq!(StopReason::SystemOff.to_string(), "system-off");
        assert_eq!(StopReason::SystemReset.to_string(), "system-reset");
        assert_eq!(StopReason::AllCpusOff.to_string(), "all CPUs off");
    }
}
