//! Starting the partition's other CPUs through PSCI `CPU_ON`.

use crate::arch::{STACK_SIZE, Stack, secondary_start};
use crate::facts::{Boot, MAX_CPUS};
use crate::psci;
use core::sync::atomic::{AtomicBool, Ordering};
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
/// Set while a CPU's boot record is being written or read: from `start` until the started CPU
/// has copied its record, or `CPU_ON` has failed.
static STARTING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
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
    if STARTING[index].swap(true, Ordering::Acquire) {
        return Err(psci::Error::OnPending);
    }
    // SAFETY: `STARTING[index]` gives this call slot `index` alone: no other `start` writes it,
    // and the CPU it was for last time copied it out before the flag was cleared.
    let record = unsafe {
        let stack_top = (&raw const STACKS[index]) as u64 + STACK_SIZE as u64;
        let record = &mut RECORDS[index];
        *record = BootRecord { stack_top, entry, index };
        record
    };
    let address = record as *const BootRecord as usize;
    cache::clean_invalidate(address, core::mem::size_of::<BootRecord>());
    let result = psci::cpu_on(cpus[index], secondary_start as *const () as u64, address as u64);
    if result.is_err() {
        STARTING[index].store(false, Ordering::Release);
    }
    result
}

/// A secondary CPU in Rust, MMU on, with the address of its boot record.
pub(crate) extern "C" fn secondary_main(record: *const BootRecord) -> ! {
    // SAFETY: `start` wrote the record and holds it for us until we clear `STARTING`; we copy
    // what we need first and do not look at it again.
    let (entry, index) = unsafe { ((*record).entry, (*record).index) };
    STARTING[index].store(false, Ordering::Release);
    entry(index);
    psci::cpu_off()
}
