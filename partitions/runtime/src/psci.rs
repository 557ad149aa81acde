//! The PSCI client: calls to trapless's PSCI server over the conduit the device tree names.

use crate::facts::Conduit;
use core::sync::atomic::{AtomicBool, Ordering};
use smccc::psci;
use smccc::{Hvc, Smc};

pub use smccc::psci::{AffinityState, Error};

/// True once the device tree said SMC.
static USE_SMC: AtomicBool = AtomicBool::new(false);

pub(crate) fn init(conduit: Conduit) {
    USE_SMC.store(conduit == Conduit::Smc, Ordering::Relaxed);
}

fn conduit() -> Conduit {
    if USE_SMC.load(Ordering::Relaxed) { Conduit::Smc } else { Conduit::Hvc }
}

macro_rules! call {
    ($conduit:expr, $function:ident ( $($arg:expr),* )) => {
        match $conduit {
            Conduit::Hvc => psci::$function::<Hvc>($($arg),*),
            Conduit::Smc => psci::$function::<Smc>($($arg),*),
        }
    };
}

/// PSCI version as (major, minor).
pub fn version() -> Result<(u16, u16), Error> {
    call!(conduit(), version()).map(|version| (version.major, version.minor))
}

/// Starts the CPU with affinity `mpidr` at `entry` with `x0` = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), Error> {
    call!(conduit(), cpu_on(mpidr, entry, context))
}

/// Turns the calling CPU off.
pub fn cpu_off() -> ! {
    let _ = call!(conduit(), cpu_off());
    loop {
        crate::arch::wait_for_interrupt();
    }
}

/// Power state of the CPU with affinity `mpidr`.
pub fn affinity_info(mpidr: u64) -> Result<AffinityState, Error> {
    call!(conduit(), affinity_info(mpidr, psci::LowestAffinityLevel::All))
}

/// Powers the partition off: the clean end of a partition.
pub fn system_off() -> ! {
    let _ = call!(conduit(), system_off());
    loop {
        crate::arch::wait_for_interrupt();
    }
}

/// Resets the partition: trapless stops it and reports `system-reset` (a failure), or starts
/// it afresh if its `on-stop` policy is `restart`.
pub fn system_reset() -> ! {
    system_reset_with(conduit())
}

pub(crate) fn system_reset_with(conduit: Conduit) -> ! {
    let _ = call!(conduit, system_reset());
    loop {
        crate::arch::wait_for_interrupt();
    }
}
