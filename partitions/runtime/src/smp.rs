//! Starting the partition's other CPUs through PSCI `CPU_ON`.

use crate::arch::{STACK_SIZE, Stack, secondary_start};
use crate::facts::{Boot, MAX_CPUS};
use crate::psci;
use spin::Mutex;
use trapless_arm64::cache;

/// What a starting CPU reads with its MMU off: written and cleaned to memory before `CPU_ON`.
#[repr(C)]
pub(crate) struct BootRecord {
    /// Read by `secondary_start` before anything else.
    stack_top: u64,
    entry: fn(usize),
    index: usize,
}

static mut STACKS: [Stack; MAX_CPUS] = [const { Stack([0; STACK_SIZE]) }; MAX_CPUS];
static mut RECORDS: [BootRecord; MAX_CPUS] =
    [const { BootRecord { stack_top: 0, entry: idle, index: 0 } }; MAX_CPUS];
/// The partition's CPUs' MPIDRs, from the device tree.
static CPUS: Mutex<([u64; MAX_CPUS], usize)> = Mutex::new(([0; MAX_CPUS], 0));

fn idle(_: usize) {}

pub(crate) fn init(boot: &Boot) {
    *CPUS.lock() = (boot.cpus, boot.cpu_count);
}

/// Starts CPU number `index` of this partition (its position in the device tree) running
/// `entry(index)`; when `entry` returns, the CPU turns itself off.
pub fn start(index: usize, entry: fn(usize)) -> Result<(), psci::Error> {
    let (cpus, count) = *CPUS.lock();
    if index >= count {
        return Err(psci::Error::InvalidParameters);
    }
    // SAFETY: slot `index` belongs to CPU `index`, which is off (PSCI refuses to start a CPU
    // that is on or on-pending, and it only reads the slot after this call succeeds).
    let record = unsafe {
        let stack_top = (&raw const STACKS[index]) as u64 + STACK_SIZE as u64;
        let record = &mut *(&raw mut RECORDS[index]);
        *record = BootRecord { stack_top, entry, index };
        record
    };
    let address = record as *const BootRecord as usize;
    cache::clean_invalidate(address, core::mem::size_of::<BootRecord>());
    psci::cpu_on(cpus[index], secondary_start as *const () as u64, address as u64)
}

/// A secondary CPU in Rust, MMU on.
pub(crate) extern "C" fn secondary_main(record: &BootRecord) -> ! {
    (record.entry)(record.index);
    psci::cpu_off()
}
