//! Exit accounting: every entry to EL2 from a partition, by exception class.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Exception classes (`ESR_EL2.EC`) of the exits trapless tells apart.
mod ec {
    pub const HVC32: u64 = 0x12;
    pub const SMC32: u64 = 0x13;
    pub const HVC64: u64 = 0x16;
    pub const SMC64: u64 = 0x17;
    pub const SYSREG: u64 = 0x18;
    pub const INSN_ABORT_LOWER: u64 = 0x20;
    pub const DATA_ABORT_LOWER: u64 = 0x24;
}

/// What brought a partition's CPU into EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// `HVC` (hypercalls and PSCI).
    Hvc,
    /// `SMC`, trapped by `HCR_EL2.TSC` (PSCI over SMC).
    Smc,
    /// A stage-2 data abort.
    DataAbort,
    /// A stage-2 instruction abort.
    InsnAbort,
    /// A trapped system register access (trapless sets no such trap).
    Sysreg,
    /// Anything else, including interrupts taken to EL2.
    Other,
}

impl ExitClass {
    const ALL: [Self; 6] =
        [Self::Hvc, Self::Smc, Self::DataAbort, Self::InsnAbort, Self::Sysreg, Self::Other];

    /// Classifies a synchronous exit by its syndrome (`ESR_EL2`).
    pub fn from_esr(esr: u64) -> Self {
        match exception_class(esr) {
            ec::HVC32 | ec::HVC64 => Self::Hvc,
            ec::SMC32 | ec::SMC64 => Self::Smc,
            ec::DATA_ABORT_LOWER => Self::DataAbort,
            ec::INSN_ABORT_LOWER => Self::InsnAbort,
            ec::SYSREG => Self::Sysreg,
            _ => Self::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `ESR_ELx.EC`.
pub const fn exception_class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// One partition's counters, updated by all of its CPUs at once.
#[derive(Debug, Default)]
pub struct ExitCounters {
    counts: [AtomicU64; 6],
    parked: AtomicU64,
}

impl ExitCounters {
    pub const fn new() -> Self {
        Self { counts: [const { AtomicU64::new(0) }; 6], parked: AtomicU64::new(0) }
    }

    /// Counts one exit the partition took while it ran.
    pub fn record(&self, class: ExitClass) {
        self.counts[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one entry of a CPU the partition left running when it stopped: it faulted on the
    /// revoked stage 2 and was parked. Not the partition's doing, so counted apart.
    pub fn record_parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as they are now.
    pub fn snapshot(&self) -> ExitCounts {
        let mut counts = [0; 6];
        for class in ExitClass::ALL {
            counts[class.index()] = self.counts[class.index()].load(Ordering::Relaxed);
        }
        ExitCounts { counts, parked: self.parked.load(Ordering::Relaxed) }
    }
}

/// A snapshot of [`ExitCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    counts: [u64; 6],
    parked: u64,
}

impl ExitCounts {
    /// Exits of one class.
    pub fn get(&self, class: ExitClass) -> u64 {
        self.counts[class.index()]
    }

    /// Exits of every class, while the partition ran.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Entries of CPUs parked after the partition stopped.
    pub fn parked(&self) -> u64 {
        self.parked
    }
}

/// The line EL2 prints for each partition when the machine powers off:
/// `trapless: exits partition=<name> total=<n> hvc=<n> smc=<n> data-abort=<n> insn-abort=<n> sysreg=<n> other=<n> parked=<n>`.
/// `total` is what the partition did while it ran; `parked` counts its CPUs' entries after it
/// stopped (every EL2 entry is one or the other, as QEMU's `-d int` log counts them).
pub struct ExitSummary<'a> {
    pub partition: &'a str,
    pub counts: ExitCounts,
}

impl fmt::Display for ExitSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "trapless: exits partition={} total={} hvc={} smc={} data-abort={} insn-abort={} sysreg={} other={} parked={}",
            self.partition,
            c.total(),
            c.get(ExitClass::Hvc),
            c.get(ExitClass::Smc),
            c.get(ExitClass::DataAbort),
            c.get(ExitClass::InsnAbort),
            c.get(ExitClass::Sysreg),
            c.get(ExitClass::Other),
            c.parked(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esr(ec: u64) -> u64 {
        (ec << 26) | (1 << 25)
    }

    #[test]
    fn classifies_by_exception_class() {
        assert_eq!(ExitClass::from_esr(esr(0x16)), ExitClass::Hvc);
        assert_eq!(ExitClass::from_esr(esr(0x12)), ExitClass::Hvc);
        assert_eq!(ExitClass::from_esr(esr(0x17)), ExitClass::Smc);
        assert_eq!(ExitClass::from_esr(esr(0x24)), ExitClass::DataAbort);
        assert_eq!(ExitClass::from_esr(esr(0x20)), ExitClass::InsnAbort);
        assert_eq!(ExitClass::from_esr(esr(0x18)), ExitClass::Sysreg);
        // A data abort taken from EL2 itself is not a partition's stage-2 abort.
        assert_eq!(ExitClass::from_esr(esr(0x25)), ExitClass::Other);
        assert_eq!(ExitClass::from_esr(esr(0x01)), ExitClass::Other);
    }

    #[test]
    fn summary_line_has_the_exact_form() {
        let counters = ExitCounters::new();
        for class in [ExitClass::Hvc, ExitClass::Hvc, ExitClass::Smc, ExitClass::DataAbort, ExitClass::Other] {
            counters.record(class);
        }
        let line = ExitSummary { partition: "alpha", counts: counters.snapshot() }.to_string();
        assert_eq!(
            line,
            "trapless: exits partition=alpha total=5 hvc=2 smc=1 data-abort=1 insn-abort=0 sysreg=0 other=1 parked=0"
        );
    }

    #[test]
    fn entries_after_the_stop_are_counted_apart_from_the_total() {
        let counters = ExitCounters::new();
        counters.record(ExitClass::Hvc);
        counters.record_parked();
        counters.record_parked();
        let counts = counters.snapshot();
        assert_eq!((counts.total(), counts.parked(), counts.get(ExitClass::InsnAbort)), (1, 2, 0));
        assert!(ExitSummary { partition: "p", counts }.to_string().ends_with(" total=1 hvc=1 smc=0 data-abort=0 insn-abort=0 sysreg=0 other=0 parked=2"));
    }
}
