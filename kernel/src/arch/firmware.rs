//! PSCI calls from EL2 to the firmware (EL3, or QEMU's built-in PSCI). From EL2 the only
//! conduit is `SMC`: an `HVC` would come back to EL2 itself.

use smccc::Smc;
use smccc::psci;

/// Starts the CPU with affinity `mpidr` at `entry` (a physical address) with `x0` = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), psci::Error> {
    psci::cpu_on::<Smc>(mpidr, entry, context)
}

/// Turns the calling CPU off. Returns only if the firmware refuses.
pub fn cpu_off() {
    let _ = psci::cpu_off::<Smc>();
}

/// Powers the machine off. Returns only if the firmware refuses.
pub fn system_off() {
    let _ = psci::system_off::<Smc>();
}
