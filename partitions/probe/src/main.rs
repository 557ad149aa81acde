//! The test guest: does one thing, chosen by `probe=<mode>` in its bootargs, and says what
//! happened, so QEMU tests can check trapless from inside a partition.
//!
//! - `probe=work [pattern=<address>]`: fills 1 MiB of its own RAM (at `pattern`, default the
//!   middle of its RAM) with a pattern, spins for a while, checks the pattern and reports.
//! - `probe=touch read=<address>` / `write=<address>`: accesses an address it does not own.
//!   trapless must stop it; if the access returns, it reports the breach and resets.
//! - `probe=smp [foreign=<mpidr>]`: starts each of its other CPUs with PSCI `CPU_ON`, waits for
//!   them to turn off again, then tries `CPU_ON` / `AFFINITY_INFO` on a CPU it does not own and
//!   on itself, printing each PSCI result.
//! - `probe=busy-touch write=<address>`: starts its second CPU spinning forever, then writes an
//!   address it does not own: trapless must stop the whole partition, the spinning CPU too.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicUsize, Ordering};
use trapless_guest::psci::{self, AffinityState};
use trapless_guest::{Boot, println, smp, time};

trapless_guest::entry!(main);

fn main(boot: &Boot) {
    match boot.arg("probe") {
        Some("work") => work(boot),
        Some("touch") => touch(boot),
        Some("smp") => start_cpus(boot),
        Some("busy-touch") => busy_touch(boot),
        other => {
            println!("probe: unknown mode {other:?} (bootargs \"{}\")", boot.bootargs);
            psci::system_reset();
        }
    }
}

fn address(boot: &Boot, key: &str) -> Option<u64> {
    let text = boot.arg(key)?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(value) => Some(value),
        Err(_) => {
            println!("probe: {key}={text} is not a number");
            psci::system_reset()
        }
    }
}

const PATTERN_BYTES: u64 = 1 << 20;

fn pattern_word(index: u64) -> u64 {
    index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7472_6170_6c65_7373
}

fn work(boot: &Boot) {
    let start = address(boot, "pattern").unwrap_or((boot.memory.start + boot.memory.end) / 2);
    if start < boot.memory.start || start + PATTERN_BYTES > boot.memory.end {
        println!("probe: pattern {start:#x} is outside my memory");
        psci::system_reset();
    }
    let words = (PATTERN_BYTES / 8) as usize;
    // SAFETY: [start, start + 1 MiB) is inside this partition's RAM and nothing else uses it.
    let area = unsafe { core::slice::from_raw_parts_mut(start as *mut u64, words) };
    for (index, word) in area.iter_mut().enumerate() {
        *word = pattern_word(index as u64);
    }
    println!("work: wrote 1 MiB pattern at {start:#x}");
    time::delay_us(300_000);
    let intact = area.iter().enumerate().all(|(index, &word)| word == pattern_word(index as u64));
    if intact {
        println!("work: pattern at {start:#x} intact; done");
    } else {
        println!("work: pattern at {start:#x} CORRUPTED");
        psci::system_reset();
    }
}

fn touch(boot: &Boot) {
    if let Some(target) = address(boot, "read") {
        println!("touch: reading {target:#x}");
        // SAFETY: deliberately unsound: this partition does not own `target` and expects
        // trapless to stop it here.
        let value = unsafe { (target as *const u64).read_volatile() };
        println!("touch: read {target:#x} returned {value:#x}: isolation is broken");
    } else if let Some(target) = address(boot, "write") {
        println!("touch: writing {target:#x}");
        // SAFETY: as above, for a write.
        unsafe { (target as *mut u64).write_volatile(0xdead_beef) };
        println!("touch: write to {target:#x} went through: isolation is broken");
    } else {
        println!("touch: give read=<address> or write=<address>");
    }
    psci::system_reset();
}

/// Secondary CPUs that have run.
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

fn secondary(index: usize) {
    println!("smp: CPU {index} is up");
    ARRIVED.fetch_add(1, Ordering::SeqCst);
}

fn result(outcome: Result<(), psci::Error>) -> &'static str {
    match outcome {
        Ok(()) => "SUCCESS",
        Err(psci::Error::InvalidParameters) => "INVALID_PARAMETERS",
        Err(psci::Error::AlreadyOn) => "ALREADY_ON",
        Err(psci::Error::Denied) => "DENIED",
        Err(_) => "other error",
    }
}

fn start_cpus(boot: &Boot) {
    let others = boot.cpu_count - 1;
    for index in 1..boot.cpu_count {
        let outcome = smp::start(index, secondary);
        println!("smp: CPU_ON of my CPU {index} (MPIDR {:#x}): {}", boot.cpus[index], result(outcome));
    }
    while ARRIVED.load(Ordering::SeqCst) < others {
        core::hint::spin_loop();
    }
    for index in 1..boot.cpu_count {
        while !matches!(psci::affinity_info(boot.cpus[index]), Ok(AffinityState::Off)) {
            time::delay_us(1000);
        }
    }
    println!("smp: all {others} other CPUs came up and turned off");
    let me = boot.cpus[0];
    println!("smp: CPU_ON of myself (MPIDR {me:#x}): {}", result(psci::cpu_on(me, boot.memory.start, 0)));
    if let Some(foreign) = address(boot, "foreign") {
        let entry = boot.memory.start;
        println!("smp: CPU_ON of foreign MPIDR {foreign:#x}: {}", result(psci::cpu_on(foreign, entry, 0)));
        let state = match psci::affinity_info(foreign) {
            Ok(state) => match state {
                AffinityState::On => "ON",
                AffinityState::Off => "OFF",
                AffinityState::OnPending => "ON_PENDING",
            },
            Err(error) => result(Err(error)),
        };
        println!("smp: AFFINITY_INFO of foreign MPIDR {foreign:#x}: {state}");
    }
    println!("smp: done");
}

/// Rounds the spinning CPU has made.
static SPINS: AtomicUsize = AtomicUsize::new(0);

fn spin_forever(_: usize) {
    loop {
        SPINS.fetch_add(1, Ordering::Relaxed);
    }
}

fn busy_touch(boot: &Boot) {
    if let Err(error) = smp::start(1, spin_forever) {
        println!("busy-touch: CPU_ON of my CPU 1 failed: {error}");
        psci::system_reset();
    }
    while SPINS.load(Ordering::Relaxed) < 1000 {
        core::hint::spin_loop();
    }
    println!("busy-touch: CPU 1 is spinning");
    touch(boot);
}
