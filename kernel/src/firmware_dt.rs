//! Finds the device tree the firmware passed in `x0` and checks it against the plan's platform
//! with `trapless_kernel_core::firmware_dt::check` (host-tested, and run by `tests/boards.rs`
//! on boards' own trees): trapless refuses to start on a machine that is not the one it was
//! built for.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use trapless_plan::Plan;

/// FDT header magic, big-endian at offset 0.
const FDT_MAGIC: u32 = 0xd00d_feed;

fn be32(address: usize) -> u32 {
    // SAFETY: the caller checked `address` lies in RAM, which EL2 maps; the header fields are
    // 4-byte aligned as the FDT format requires.
    u32::from_be(unsafe { (address as *const u32).read_volatile() })
}

/// The bytes of the device tree the firmware passed in `x0`, if there is one in RAM.
fn firmware_tree(address: usize, plan: &Plan<'_>) -> Result<&'static [u8], String> {
    let ram = plan.platform().ram;
    if !address.is_multiple_of(8) || !ram.contains_span(address as u64, 8) || be32(address) != FDT_MAGIC {
        return Err(format!("the firmware passed no device tree (x0 = {address:#x})"));
    }
    let size = be32(address + 4) as usize;
    if !ram.contains_span(address as u64, size as u64) {
        return Err(format!("the firmware's device tree at {address:#x} runs out of RAM"));
    }
    // SAFETY: the tree lies in RAM (checked above) and nothing writes it while we read it.
    Ok(unsafe { core::slice::from_raw_parts(address as *const u8, size) })
}

/// Every way the firmware's tree at `address` disagrees with the plan's platform.
pub fn check(address: usize, plan: &Plan<'_>) -> Result<(), Vec<String>> {
    let tree = firmware_tree(address, plan).map_err(|problem| alloc::vec![problem])?;
    trapless_kernel_core::firmware_dt::check(tree, plan)
}
