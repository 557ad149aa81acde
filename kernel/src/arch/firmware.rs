//! PSCI calls from EL2 to the firmware (EL3, or QEMU's built-in PSCI), over the platform's
//! conduit.

use smccc::psci;
use smccc::{Hvc, Smc};
use trapless_plan::Conduit;

/// Starts the CPU with affinity `mpidr` at `entry` (a physical address) with `x0` = `context`.
pub fn cpu_on(conduit: Conduit, mpidr: u64, entry: u64, context: u64) -> Result<(), psci::Error> {
    match conduit {
        Conduit::Smc => psci::cpu_on::<Smc>(mpidr, entry, context),
        Conduit::Hvc => psci::cpu_on::<Hvc>(mpidr, entry, context),
    }
}

/// Turns the calling CPU off. Returns only if the firmware refuses.
pub fn cpu_off(conduit: Conduit) {
    let _ = match conduit {
        Conduit::Smc => psci::cpu_off::<Smc>(),
        Conduit::Hvc => psci::cpu_off::<Hvc>(),
    };
}

/// Powers the machine off. Returns only if the firmware refuses.
pub fn system_off(conduit: Conduit) {
    let _ = match conduit {
        Conduit::Smc => psci::system_off::<Smc>(),
        Conduit::Hvc => psci::system_off::<Hvc>(),
    };
}
