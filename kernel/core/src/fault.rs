//! Why a partition stopped, and the report EL2 prints about it.

use crate::exits::exception_class;
use core::fmt;
use trapless_plan::Ipa;

/// The registers EL2 reads when a partition's CPU exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// `ESR_EL2`.
    pub esr: u64,
    /// `FAR_EL2`: the faulting virtual address (stage-1 input).
    pub far: u64,
    /// `HPFAR_EL2`: the faulting IPA's page, for stage-2 faults.
    pub hpfar: u64,
    /// `ELR_EL2`: the PC of the exit.
    pub pc: u64,
}

/// A stage-2 fault or an exit trapless does not serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A data access to an IPA the partition does not own.
    DataAbort { write: bool, ipa: Option<Ipa>, status: FaultStatus, pc: u64, esr: u64 },
    /// An instruction fetch from an IPA the partition may not execute.
    InsnAbort { ipa: Option<Ipa>, status: FaultStatus, pc: u64, esr: u64 },
    /// An exception class EL2 does not serve.
    Unexpected { class: u64, pc: u64, esr: u64 },
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

    /// Whether `HPFAR_EL2` holds the faulting IPA for this status.
    fn has_ipa(self) -> bool {
        matches!(self, Self::Translation | Self::AccessFlag | Self::Permission)
    }
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
        let Syndrome { esr, far, hpfar, pc } = *syndrome;
        let iss = esr & 0x1ff_ffff;
        let status = FaultStatus::from_iss(iss);
        // HPFAR_EL2.FIPA (bits 43:4) holds IPA bits 51:12; the page offset comes from FAR_EL2.
        let ipa = status.has_ipa().then(|| Ipa((((hpfar >> 4) & 0xff_ffff_ffff) << 12) | (far & 0xfff)));
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
                write!(f, " ({status}), PC {}, ESR {esr:#x}", Ipa(pc))
            }
            Self::InsnAbort { ipa, status, pc, esr } => {
                f.write_str("stage-2 instruction abort: fetch ")?;
                match ipa {
                    Some(ipa) => write!(f, "at IPA {ipa}")?,
                    None => f.write_str("at an unknown IPA")?,
                }
                write!(f, " ({status}), PC {}, ESR {esr:#x}", Ipa(pc))
            }
            Self::Unexpected { class, pc, esr } => {
                write!(f, "unexpected exception class {class:#x}, PC {}, ESR {esr:#x}", Ipa(pc))
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

impl StopReason {
    /// Whether the partition finished as it meant to.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::SystemOff)
    }
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

    #[test]
    fn data_abort_report_names_ipa_access_and_pc() {
        // EC 0x24, IL, ISV clear, WnR set, DFSC = translation fault level 1.
        let esr = (0x24 << 26) | (1 << 25) | (1 << 6) | 0x05;
        let fault = Fault::from_syndrome(&Syndrome {
            esr,
            far: 0x4800_0123,
            hpfar: 0x4800_0 << 4,
            pc: 0x4208_0f3c,
        });
        assert_eq!(
            fault.to_string(),
            "stage-2 data abort: write at IPA 0x4800_0123 (translation fault), PC 0x4208_0f3c, ESR 0x92000045"
        );
    }

    #[test]
    fn read_abort_and_insn_abort() {
        let read = Fault::from_syndrome(&Syndrome {
            esr: (0x24 << 26) | 0x0f,
            far: 0x10,
            hpfar: 0x900_0 << 4,
            pc: 0x100,
        });
        assert_eq!(
            read,
            Fault::DataAbort {
                write: false,
                ipa: Some(Ipa(0x900_0010)),
                status: FaultStatus::Permission,
                pc: 0x100,
                esr: (0x24 << 26) | 0x0f,
            }
        );
        let fetch = Fault::from_syndrome(&Syndrome { esr: (0x20 << 26) | 0x06, far: 0, hpfar: 0x5 << 4, pc: 0x5000 });
        assert!(fetch.to_string().starts_with("stage-2 instruction abort: fetch at IPA 0x5000 (translation fault)"));
    }

    #[test]
    fn ipa_is_unknown_when_hpfar_is_not_valid() {
        let fault = Fault::from_syndrome(&Syndrome { esr: (0x24 << 26) | 0x10, far: 0x1234, hpfar: 0xdead0, pc: 0 });
        assert!(fault.to_string().contains("at an unknown IPA (external abort)"));
    }

    #[test]
    fn unexpected_classes_name_their_class() {
        let fault = Fault::from_syndrome(&Syndrome { esr: 0x18 << 26, far: 0, hpfar: 0, pc: 0x4000 });
        assert_eq!(fault.to_string(), "unexpected exception class 0x18, PC 0x4000, ESR 0x60000000");
    }

    #[test]
    fn only_system_off_is_clean() {
        assert!(StopReason::SystemOff.is_clean());
        assert!(!StopReason::SystemReset.is_clean());
        assert!(!StopReason::AllCpusOff.is_clean());
        assert_eq!(StopReason::AllCpusOff.to_string(), "all CPUs off");
    }
}
