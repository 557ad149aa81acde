//! The PSCI server EL2 offers partitions, decided without touching hardware: a partition may
//! start, stop and query only its own CPUs, and `SYSTEM_OFF` / `SYSTEM_RESET` end only itself.

use crate::fault::StopReason;
use smccc::psci::{self, error};
use trapless_plan::{AddrRange, MPIDR_AFFINITY_MASK};

/// The PSCI version served: 1.0.
pub const VERSION: u64 = 0x1_0000;
/// `MIGRATE_INFO_TYPE`: no Trusted OS, so nothing ever needs migrating.
const MIGRATE_NOT_REQUIRED: u64 = 2;
/// `CPU_SUSPEND` power state (original format): bit 16 set asks for a power-down state.
const POWER_STATE_POWERDOWN: u64 = 1 << 16;

/// Power state of one CPU as PSCI `AFFINITY_INFO` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Off,
    OnPending,
    On,
}

impl Power {
    fn affinity_info(self) -> u64 {
        match self {
            Self::On => 0,
            Self::Off => 1,
            Self::OnPending => 2,
        }
    }
}

/// One CPU of the calling partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnCpu {
    /// Platform CPU index.
    pub index: usize,
    pub mpidr: u64,
    pub power: Power,
}

/// What the server knows about the caller.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The platform CPU index making the call.
    pub cpu: usize,
    /// Every CPU the partition owns, the caller included.
    pub cpus: &'a [OwnCpu],
    /// The partition's RAM: entry points must lie in it.
    pub memory: AddrRange,
}

/// What EL2 does with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Return this value in `x0` and resume the caller.
    Return(u64),
    /// Mark `cpu` on-pending and ask the firmware to start it; it enters the partition at
    /// `entry` with `x0` = `context`. The caller gets 0, or `INTERNAL_FAILURE` if the firmware
    /// refuses.
    StartCpu { cpu: usize, mpidr: u64, entry: u64, context: u64 },
    /// Turn the calling CPU off; the partition goes on on its other CPUs.
    TurnOff,
    /// Stop the whole partition.
    Stop(StopReason),
}

fn error(code: i32) -> Decision {
    Decision::Return(code as i64 as u64)
}

/// Serves PSCI function `function` with arguments `args` (`x1`..`x3`), or returns `None` if
/// `function` is not a PSCI function.
pub fn serve(function: u32, args: [u64; 3], caller: &Caller<'_>) -> Option<Decision> {
    let low = |value: u64| value & 0xffff_ffff;
    let decision = match function {
        psci::PSCI_VERSION => Decision::Return(VERSION),
        psci::PSCI_FEATURES => features(low(args[0]) as u32),
        psci::PSCI_CPU_SUSPEND_32 | psci::PSCI_CPU_SUSPEND_64 => cpu_suspend(low(args[0])),
        psci::PSCI_CPU_ON_64 => cpu_on(args[0], args[1], args[2], caller),
        psci::PSCI_CPU_ON_32 => cpu_on(low(args[0]), low(args[1]), low(args[2]), caller),
        psci::PSCI_CPU_OFF => cpu_off(caller),
        psci::PSCI_AFFINITY_INFO_64 => affinity_info(args[0], args[1], caller),
        psci::PSCI_AFFINITY_INFO_32 => affinity_info(low(args[0]), low(args[1]), caller),
        psci::PSCI_MIGRATE_INFO_TYPE => Decision::Return(MIGRATE_NOT_REQUIRED),
        psci::PSCI_SYSTEM_OFF => Decision::Stop(StopReason::SystemOff),
        psci::PSCI_SYSTEM_RESET => Decision::Stop(StopReason::SystemReset),
        _ if is_psci(function) => error(error::NOT_SUPPORTED),
        _ => return None,
    };
    Some(decision)
}

/// PSCI owns SMCCC standard-service function numbers 0x00..=0x1f, in both conventions.
fn is_psci(function: u32) -> bool {
    matches!(function & 0xbfff_ffe0, 0x8400_0000)
}

fn features(function: u32) -> Decision {
    const SERVED: [u32; 12] = [
        psci::PSCI_VERSION,
        psci::PSCI_FEATURES,
        psci::PSCI_CPU_SUSPEND_32,
        psci::PSCI_CPU_SUSPEND_64,
        psci::PSCI_CPU_ON_32,
        psci::PSCI_CPU_ON_64,
        psci::PSCI_CPU_OFF,
        psci::PSCI_AFFINITY_INFO_32,
        psci::PSCI_AFFINITY_INFO_64,
        psci::PSCI_MIGRATE_INFO_TYPE,
        psci::PSCI_SYSTEM_OFF,
        psci::PSCI_SYSTEM_RESET,
    ];
    // For CPU_SUSPEND, 0 also says: original power-state format, platform-coordinated.
    if SERVED.contains(&function) { Decision::Return(0) } else { error(error::NOT_SUPPORTED) }
}

/// Standby states are served by returning at once (PSCI allows any wake-up to end a standby
/// early); trapless offers no power-down state, so asking for one is an invalid parameter.
fn cpu_suspend(power_state: u64) -> Decision {
    if power_state & POWER_STATE_POWERDOWN != 0 { error(error::INVALID_PARAMETERS) } else { Decision::Return(0) }
}

/// The caller's CPU with this PSCI target affinity, if it owns one. Bits outside the affinity
/// fields make the target invalid, as PSCI says.
fn own_cpu(target: u64, caller: &Caller<'_>) -> Option<OwnCpu> {
    if target & !MPIDR_AFFINITY_MASK != 0 {
        return None;
    }
    caller.cpus.iter().copied().find(|cpu| cpu.mpidr & MPIDR_AFFINITY_MASK == target)
}

fn cpu_on(target: u64, entry: u64, context: u64, caller: &Caller<'_>) -> Decision {
    // A CPU of another partition looks exactly like one that does not exist.
    let Some(cpu) = own_cpu(target, caller) else {
        return error(error::INVALID_PARAMETERS);
    };
    match cpu.power {
        Power::On => error(error::ALREADY_ON),
        Power::OnPending => error(error::ON_PENDING),
        Power::Off if !caller.memory.contains_span(entry, 4) || !entry.is_multiple_of(4) => {
            error(error::INVALID_ADDRESS)
        }
        Power::Off => Decision::StartCpu { cpu: cpu.index, mpidr: cpu.mpidr, entry, context },
    }
}

fn cpu_off(caller: &Caller<'_>) -> Decision {
    let others_running = caller
        .cpus
        .iter()
        .any(|cpu| cpu.index != caller.cpu && cpu.power != Power::Off);
    if others_running { Decision::TurnOff } else { Decision::Stop(StopReason::AllCpusOff) }
}

fn affinity_info(target: u64, lowest_level: u64, caller: &Caller<'_>) -> Decision {
    match own_cpu(target, caller) {
        Some(cpu) if lowest_level == 0 => Decision::Return(cpu.power.affinity_info()),
        _ => error(error::INVALID_PARAMETERS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: AddrRange = AddrRange::new(0x4400_0000, 0x400_0000);

    fn cpus(powers: [Power; 2]) -> [OwnCpu; 2] {
        [
            OwnCpu { index: 1, mpidr: 0x8000_0001, power: powers[0] },
            OwnCpu { index: 2, mpidr: 0x8000_0002, power: powers[1] },
        ]
    }

    fn call(function: u32, args: [u64; 3], cpus: &[OwnCpu]) -> Decision {
        serve(function, args, &Caller { cpu: 1, cpus, memory: MEMORY }).unwrap()
    }

    fn err(code: i32) -> Decision {
        Decision::Return(code as i64 as u64)
    }

    #[test]
    fn version_features_and_migrate() {
        let own = cpus([Power::On, Power::Off]);
        assert_eq!(call(psci::PSCI_VERSION, [0; 3], &own), Decision::Return(0x1_0000));
        assert_eq!(call(psci::PSCI_FEATURES, [psci::PSCI_CPU_ON_64.into(), 0, 0], &own), Decision::Return(0));
        assert_eq!(call(psci::PSCI_FEATURES, [psci::PSCI_CPU_SUSPEND_64.into(), 0, 0], &own), Decision::Return(0));
        assert_eq!(call(psci::PSCI_FEATURES, [psci::PSCI_SYSTEM_SUSPEND_64.into(), 0, 0], &own), err(error::NOT_SUPPORTED));
        assert_eq!(call(psci::PSCI_MIGRATE_INFO_TYPE, [0; 3], &own), Decision::Return(2));
        assert_eq!(call(psci::PSCI_CPU_SUSPEND_64, [0x0, 0x4400_0000, 0], &own), Decision::Return(0));
        assert_eq!(call(psci::PSCI_CPU_SUSPEND_32, [1 << 16, 0x4400_0000, 0], &own), err(error::INVALID_PARAMETERS));
        assert_eq!(call(psci::PSCI_SYSTEM_RESET2_64, [0; 3], &own), err(error::NOT_SUPPORTED));
    }

    #[test]
    fn not_psci_is_not_served() {
        let own = cpus([Power::On, Power::Off]);
        assert_eq!(serve(0xC600_0001, [0; 3], &Caller { cpu: 1, cpus: &own, memory: MEMORY }), None);
        assert_eq!(serve(0x8000_0000, [0; 3], &Caller { cpu: 1, cpus: &own, memory: MEMORY }), None);
    }

    #[test]
    fn cpu_on_starts_only_own_cpus() {
        let own = cpus([Power::On, Power::Off]);
        assert_eq!(
            call(psci::PSCI_CPU_ON_64, [0x8000_0002 & MPIDR_AFFINITY_MASK, 0x4400_1000, 7], &own),
            Decision::StartCpu { cpu: 2, mpidr: 0x8000_0002, entry: 0x4400_1000, context: 7 }
        );
        // CPU 3 belongs to someone else: it does not exist for this partition.
        assert_eq!(call(psci::PSCI_CPU_ON_64, [3, 0x4400_1000, 0], &own), err(error::INVALID_PARAMETERS));
        // Bits outside the affinity fields.
        assert_eq!(call(psci::PSCI_CPU_ON_64, [1 << 24 | 2, 0x4400_1000, 0], &own), err(error::INVALID_PARAMETERS));
    }

    #[test]
    fn cpu_on_checks_state_and_entry() {
        assert_eq!(
            call(psci::PSCI_CPU_ON_64, [1, 0x4400_0000, 0], &cpus([Power::On, Power::Off])),
            err(error::ALREADY_ON)
        );
        assert_eq!(
            call(psci::PSCI_CPU_ON_64, [2, 0x4400_0000, 0], &cpus([Power::On, Power::OnPending])),
            err(error::ON_PENDING)
        );
        let own = cpus([Power::On, Power::Off]);
        for entry in [0x4000_0000, 0x4800_0000, 0x47ff_fffe, 0x4400_0002] {
            assert_eq!(call(psci::PSCI_CPU_ON_64, [2, entry, 0], &own), err(error::INVALID_ADDRESS), "{entry:#x}");
        }
        assert_eq!(
            call(psci::PSCI_CPU_ON_32, [0xffff_ffff_0000_0002, 0x4400_0000, 5], &own),
            Decision::StartCpu { cpu: 2, mpidr: 0x8000_0002, entry: 0x4400_0000, context: 5 }
        );
    }

    #[test]
    fn cpu_off_stops_the_partition_with_its_last_cpu() {
        assert_eq!(call(psci::PSCI_CPU_OFF, [0; 3], &cpus([Power::On, Power::On])), Decision::TurnOff);
        assert_eq!(call(psci::PSCI_CPU_OFF, [0; 3], &cpus([Power::On, Power::OnPending])), Decision::TurnOff);
        assert_eq!(
            call(psci::PSCI_CPU_OFF, [0; 3], &cpus([Power::On, Power::Off])),
            Decision::Stop(StopReason::AllCpusOff)
        );
    }

    #[test]
    fn affinity_info_reports_own_cpus_only() {
        let own = cpus([Power::On, Power::OnPending]);
        assert_eq!(call(psci::PSCI_AFFINITY_INFO_64, [1, 0, 0], &own), Decision::Return(0));
        assert_eq!(call(psci::PSCI_AFFINITY_INFO_64, [2, 0, 0], &own), Decision::Return(2));
        assert_eq!(call(psci::PSCI_AFFINITY_INFO_32, [2, 0, 0], &cpus([Power::On, Power::Off])), Decision::Return(1));
        assert_eq!(call(psci::PSCI_AFFINITY_INFO_64, [0, 0, 0], &own), err(error::INVALID_PARAMETERS));
        assert_eq!(call(psci::PSCI_AFFINITY_INFO_64, [1, 1, 0], &own), err(error::INVALID_PARAMETERS));
    }

    #[test]
    fn system_calls_stop_only_the_partition() {
        let own = cpus([Power::On, Power::On]);
        assert_eq!(call(psci::PSCI_SYSTEM_OFF, [0; 3], &own), Decision::Stop(StopReason::SystemOff));
        assert_eq!(call(psci::PSCI_SYSTEM_RESET, [0; 3], &own), Decision::Stop(StopReason::SystemReset));
    }
}
