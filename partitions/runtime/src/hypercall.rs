//! trapless's own hypercalls, beyond the console (`crate::console`) and link notifications
//! (`crate::virtio`).

use trapless_abi::hypercall::RESTARTS;

/// How many times trapless has restarted this partition (`on-stop = "restart"`): 0 on its first
/// start. Costs one exit.
pub fn restarts() -> u64 {
    let result = smccc::hvc64(RESTARTS, [0; 17])[0];
    // An error code (a kernel without the call) reads as a first start.
    if (result as i64) < 0 { 0 } else { result }
}
