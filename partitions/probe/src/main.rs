//! The test guest: does one thing, chosen by `probe=<mode>` in its bootargs, and says what
//! happened, so QEMU tests can check trapless from inside a partition.
//!
//! - `probe=work [pattern=<address>] [hold-ms=<n>]`: fills 1 MiB of its own RAM (at `pattern`,
//!   default the middle of its RAM) with a pattern, spins for `n` ms (default 300), checks the
//!   pattern and reports.
//! - `probe=touch read=<address>` / `write=<address>`: accesses an address it does not own.
//!   trapless must stop it; if the access returns, it reports the breach and resets.
//! - `probe=smp [foreign=<mpidr>] [cycles=<n>]`: starts each of its other CPUs with PSCI
//!   `CPU_ON`, waits for them to turn off again, then tries `CPU_ON` / `AFFINITY_INFO` on a CPU
//!   it does not own and on itself, printing each PSCI result; then turns its second CPU on and
//!   off `n` times, starting it again as soon as `AFFINITY_INFO` says it is off.
//! - `probe=busy-touch write=<address>`: starts its second CPU spinning forever, then writes an
//!   address it does not own: trapless must stop the whole partition, the spinning CPU too.
//! - `probe=busy-off`: starts its second CPU spinning forever, then powers off (`SYSTEM_OFF`):
//!   the spinning CPU's entry after the stop is not among the partition's exits.
//! - `probe=sleep-touch write=<address>`: starts its second CPU sleeping in `WFI` with no
//!   interrupt of its own enabled, then writes an address it does not own: trapless must wake
//!   that CPU to stop (and, by its `on-stop` policy, restart) the whole partition.
//! - `probe=sgi foreign=<mpidr>`: sends SGIs to its second CPU and, in the same register write,
//!   to a CPU it does not own, then one to "all but self"; reports what its second CPU got.
//! - `probe=sgi-listen`: enables SGIs on its CPU, listens for a while and reports how many
//!   arrived (a partition that owns no sender must get none).
//! - `probe=ipi iterations=<n> receiver=spin|wfi [gap-us=<n>]`: measures, with the architected
//!   counter, `n` `hvc` exits (PSCI `VERSION`, from the call to its return) and `n` IPIs to its
//!   second CPU
//!   (from just before the trapped `ICC_SGI1R_EL1` write to the receiver's handler, the
//!   receiver spinning with interrupts on, or asleep in `WFI`; `gap-us` apart, by default 20
//!   or, for a receiver that must fall asleep again, 200), and prints the samples (`cargo
//!   xtask bench --ipi`, `docs/performance.md`).
//! - `probe=ping-pong role=initiator|responder rounds=<n> ring=<doorbell> wait=<doorbell>
//!   [late-cpu=<index>]`: the initiator rings `ring` and waits for `wait`, `n` times; the
//!   responder rings `ring` each time `wait` rings it. Both report what they counted; nothing
//!   enters EL2 in between. With `late-cpu`, the responder answers on that CPU of its own,
//!   started only after the first ring has certainly arrived.
//! - `probe=doorbell-work wait=<doorbell>`: counts the rings of `wait` while it does the `work`
//!   mode's job, and reports both.
//! - `probe=storm event=<n> count=<m>`: stores EventID `n` to its doorbell page `m` times, as a
//!   partition that rings one doorbell can for any other.
//! - `probe=disk-restart`: drives its block link across its own restarts (`on-stop =
//!   "restart"`). Start `n` first reads the whole disk back and checks it holds what start
//!   `n - 1` wrote and saw completed, then writes its own pattern over it and reads that back.
//!   Start 0 then resets the partition (`SYSTEM_RESET`), start 1 faults, start 2 stops the link
//!   and powers off: the device partition must serve each new start of the driver.
//! - `probe=matrix probes=<name>/<op>/<value>,...`: the isolation matrix, one probe per start of
//!   the partition (it runs with `on-stop = "restart"`, and probe `n` runs on restart `n`).
//!   `op` is `r` or `w` (read or write the address), `x` (jump to it with the stage-1 MMU
//!   off, so only stage 2 can refuse the fetch), `ew` (a GIC register EL2 emulates: read it,
//!   write all ones, read it again), `cpu-on` / `affinity` (PSCI on that MPIDR) or `console`
//!   (the console hypercall with a buffer at that address). A probe trapless should
//!   stop says so and, if it returns, reports the breach and resets to go on; a call trapless
//!   should refuse prints its result. After the last probe it stops each link it drives, so
//!   its device partition can finish, and powers off.

#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use trapless_guest::psci::{self, AffinityState};
use core::sync::atomic::AtomicBool;
use trapless_guest::doorbell::{self, Bell};
use trapless_guest::facts::Incoming;
use trapless_guest::{Boot, irq, println, smp, time};

trapless_guest::entry!(main);

fn main(boot: &Boot) {
    match boot.arg("probe") {
        Some("work") => work(boot),
        Some("touch") => touch(boot),
        Some("smp") => start_cpus(boot),
        Some("busy-touch") => busy_touch(boot),
        Some("busy-off") => busy_off(),
        Some("sleep-touch") => sleep_touch(boot),
        Some("sgi") => sgi(boot),
        Some("sgi-listen") => sgi_listen(boot),
        Some("ipi") => ipi(boot),
        Some("ping-pong") => ping_pong(boot),
        Some("doorbell-work") => doorbell_work(boot),
        Some("storm") => storm(boot),
        Some("matrix") => matrix(boot),
        Some("disk-restart") => disk_restart(boot),
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
    let hold_ms = address(boot, "hold-ms").unwrap_or(300);
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
    time::delay_us(hold_ms * 1000);
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
    if let Some(cycles) = address(boot, "cycles") {
        let mut failures = 0;
        for _ in 0..cycles {
            if smp::start(1, |_| {}).is_err() {
                failures += 1;
            }
            while !matches!(psci::affinity_info(boot.cpus[1]), Ok(AffinityState::Off)) {
                core::hint::spin_loop();
            }
        }
        println!("smp: {cycles} on/off cycles of CPU 1, {failures} failed");
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

/// Starts the second CPU spinning and waits until it is (`mode` names the caller in reports).
fn start_spinner(mode: &str) {
    if let Err(error) = smp::start(1, spin_forever) {
        println!("{mode}: CPU_ON of my CPU 1 failed: {error}");
        psci::system_reset();
    }
    while SPINS.load(Ordering::Relaxed) < 1000 {
        core::hint::spin_loop();
    }
}

fn busy_touch(boot: &Boot) {
    start_spinner("busy-touch");
    println!("busy-touch: CPU 1 is spinning");
    touch(boot);
}

fn busy_off() {
    start_spinner("busy-off");
    println!("busy-off: CPU 1 is spinning; powering off");
    psci::system_off();
}

/// The second CPU of `sleep-touch` is about to sleep.
static SLEEPING: AtomicBool = AtomicBool::new(false);

fn sleep_forever(_: usize) {
    irq::init_cpu();
    SLEEPING.store(true, Ordering::SeqCst);
    loop {
        irq::wait();
    }
}

fn sleep_touch(boot: &Boot) {
    println!("sleep-touch: start {}", trapless_guest::hypercall::restarts());
    if let Err(error) = smp::start(1, sleep_forever) {
        println!("sleep-touch: CPU_ON of my CPU 1 failed: {error}");
        psci::system_off();
    }
    wait_until("CPU 1 to sleep", || SLEEPING.load(Ordering::SeqCst));
    // Long enough for it to be in WFI.
    time::delay_us(20_000);
    println!("sleep-touch: CPU 1 is asleep");
    touch(boot);
}

/// SGIs the probe sends: to one CPU, to "all but self", and to wake the listener up.
const SGI_ONE: u32 = 1;
const SGI_OTHERS: u32 = 2;
const SGI_WAKE: u32 = 3;

/// SGIs received on this partition's CPUs, by INTID.
static RECEIVED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
static LISTENING: AtomicBool = AtomicBool::new(false);
static FINISHED: AtomicBool = AtomicBool::new(false);

fn count_sgi(intid: u32) {
    RECEIVED[intid as usize].fetch_add(1, Ordering::SeqCst);
}

/// Registers the counting handler for our SGIs, enables them on this CPU and unmasks IRQs.
fn listen(boot: &Boot) {
    for intid in [SGI_ONE, SGI_OTHERS, SGI_WAKE] {
        let enabled = irq::register(intid, count_sgi).and_then(|()| irq::enable_private(boot, intid));
        if let Err(error) = enabled {
            println!("sgi: cannot listen for SGI {intid}: {error:?}");
            psci::system_reset();
        }
    }
    irq::init_cpu();
}

/// The boot information the second CPU needs, set once before it starts.
static BOOT: spin::Once<Boot> = spin::Once::new();

fn sgi_receiver(_: usize) {
    let Some(boot) = BOOT.get() else { return };
    listen(boot);
    LISTENING.store(true, Ordering::SeqCst);
    while !FINISHED.load(Ordering::SeqCst) {
        irq::wait();
    }
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = time::now() + time::frequency();
    while !condition() {
        if time::now() > deadline {
            println!("sgi: gave up waiting for {what}");
            psci::system_reset();
        }
        // `yield`: lets the CPU waited for run where vCPUs take turns (QEMU counting
        // instructions).
        trapless_virtio::relax();
    }
}

fn sgi(boot: &Boot) {
    let Some(foreign) = address(boot, "foreign") else {
        println!("sgi: give foreign=<mpidr>");
        psci::system_reset();
    };
    BOOT.call_once(|| boot.clone());
    if let Err(error) = smp::start(1, sgi_receiver) {
        println!("sgi: CPU_ON of my CPU 1 failed: {error}");
        psci::system_reset();
    }
    wait_until("CPU 1 to listen", || LISTENING.load(Ordering::SeqCst));
    irq::send_sgi(SGI_ONE as u8, &[boot.cpus[1], foreign]);
    irq::send_sgi_to_others(SGI_OTHERS as u8);
    wait_until("CPU 1's SGIs", || {
        RECEIVED[SGI_ONE as usize].load(Ordering::SeqCst) >= 1 && RECEIVED[SGI_OTHERS as usize].load(Ordering::SeqCst) >= 1
    });
    // Anything more would have arrived by now.
    time::delay_us(50_000);
    println!(
        "sgi: my CPU 1 received SGI {SGI_ONE} x{} and SGI {SGI_OTHERS} x{}",
        RECEIVED[SGI_ONE as usize].load(Ordering::SeqCst),
        RECEIVED[SGI_OTHERS as usize].load(Ordering::SeqCst)
    );
    FINISHED.store(true, Ordering::SeqCst);
    irq::send_sgi(SGI_WAKE as u8, &[boot.cpus[1]]);
    while !matches!(psci::affinity_info(boot.cpus[1]), Ok(AffinityState::Off)) {
        time::delay_us(1000);
    }
    println!("sgi: done");
}

fn sgi_listen(boot: &Boot) {
    listen(boot);
    time::delay_us(400_000);
    let received: usize = RECEIVED.iter().map(|count| count.load(Ordering::SeqCst)).sum();
    println!("sgi-listen: received {received} SGIs, {} unhandled interrupts", irq::unhandled());
}

/// The SGI the IPI measurement sends to the second CPU.
const SGI_PING: u32 = 4;
/// The counter when the receiver's handler ran (0: not yet).
static PINGED_AT: AtomicU64 = AtomicU64::new(0);
/// The IPI receiver sleeps in `WFI` between IPIs (else it spins with interrupts on).
static RECEIVER_SLEEPS: AtomicBool = AtomicBool::new(false);

fn pinged(_: u32) {
    PINGED_AT.store(time::now(), Ordering::SeqCst);
}

fn ipi_receiver(_: usize) {
    let Some(boot) = BOOT.get() else { return };
    if let Err(error) = irq::register(SGI_PING, pinged).and_then(|()| irq::enable_private(boot, SGI_PING)) {
        println!("ipi: cannot listen for SGI {SGI_PING}: {error:?}");
        psci::system_reset();
    }
    irq::init_cpu();
    LISTENING.store(true, Ordering::SeqCst);
    while !FINISHED.load(Ordering::SeqCst) {
        if RECEIVER_SLEEPS.load(Ordering::Relaxed) {
            irq::wait();
        } else {
            core::hint::spin_loop();
        }
    }
}

/// Prints `samples` (counter ticks) as `ipi: <what> samples ...` lines.
fn print_samples(what: &str, samples: &[u64]) {
    for chunk in samples.chunks(24) {
        let mut line = alloc::string::String::new();
        for sample in chunk {
            let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {sample}"));
        }
        println!("ipi: {what} samples{line}");
    }
}

fn ipi(boot: &Boot) {
    let iterations = address(boot, "iterations").unwrap_or(1000) as usize;
    let sleeps = match boot.arg("receiver") {
        None | Some("spin") => false,
        Some("wfi") => true,
        Some(other) => {
            println!("ipi: receiver={other}: the receiver spins (spin) or sleeps (wfi)");
            psci::system_reset();
        }
    };
    let gap_us = address(boot, "gap-us").unwrap_or(if sleeps { 200 } else { 20 });
    if boot.cpus.len() < 2 {
        println!("ipi: give me two CPUs");
        psci::system_reset();
    }
    RECEIVER_SLEEPS.store(sleeps, Ordering::Relaxed);
    BOOT.call_once(|| boot.clone());
    if let Err(error) = smp::start(1, ipi_receiver) {
        println!("ipi: CPU_ON of my CPU 1 failed: {error}");
        psci::system_reset();
    }
    wait_until("CPU 1 to listen", || LISTENING.load(Ordering::SeqCst));
    // Long enough for a sleeping receiver to be in WFI.
    time::delay_us(1000);
    let mut hvc = alloc::vec::Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = time::now();
        let _ = psci::version();
        hvc.push(time::now() - start);
    }
    let mut sgi = alloc::vec::Vec::with_capacity(iterations);
    let receiver = [boot.cpus[1]];
    for _ in 0..iterations {
        PINGED_AT.store(0, Ordering::SeqCst);
        let start = time::now();
        irq::send_sgi(SGI_PING as u8, &receiver);
        let mut at = PINGED_AT.load(Ordering::SeqCst);
        while at == 0 {
            trapless_virtio::relax();
            at = PINGED_AT.load(Ordering::SeqCst);
        }
        sgi.push(at.saturating_sub(start));
        // A sleeping receiver is back in WFI before the next.
        time::delay_us(gap_us);
    }
    println!("ipi: iterations={iterations} receiver={} frequency={}", if sleeps { "wfi" } else { "spin" }, time::frequency());
    print_samples("hvc", &hvc);
    print_samples("sgi", &sgi);
    FINISHED.store(true, Ordering::SeqCst);
    irq::send_sgi(SGI_PING as u8, &receiver);
    while !matches!(psci::affinity_info(boot.cpus[1]), Ok(AffinityState::Off)) {
        time::delay_us(1000);
    }
    println!("ipi: done");
}

/// Doorbell rings this partition has taken.
static RINGS: AtomicUsize = AtomicUsize::new(0);
/// The doorbell the responder rings back with.
static REPLY: spin::Once<Bell> = spin::Once::new();

fn count_ring(_: u32) {
    RINGS.fetch_add(1, Ordering::SeqCst);
}

fn count_and_reply(_: u32) {
    RINGS.fetch_add(1, Ordering::SeqCst);
    if let Some(bell) = REPLY.get() {
        bell.ring();
    }
}

fn ping_pong(boot: &Boot) {
    let (Some(role), Some(rounds), Some(ring), Some(wait)) =
        (boot.arg("role"), address(boot, "rounds"), boot.arg("ring"), boot.arg("wait"))
    else {
        println!("ping-pong: give role=, rounds=, ring= and wait=");
        psci::system_reset();
    };
    let bell = doorbell::bell(boot, ring).unwrap_or_else(|error| {
        println!("ping-pong: no doorbell '{ring}' to ring: {error:?}");
        psci::system_reset()
    });
    REPLY.call_once(|| bell);
    BOOT.call_once(|| boot.clone());
    match (role, address(boot, "late-cpu")) {
        ("initiator", _) => initiator(boot, bell, rounds as usize, ring, wait),
        ("responder", None) => responder(boot, rounds as usize, ring, wait),
        ("responder", Some(cpu)) => {
            // Long enough for the first ring to have arrived while the CPU that takes it is off.
            time::delay_us(200_000);
            ROUNDS.store(rounds as usize, Ordering::SeqCst);
            if let Err(error) = smp::start(cpu as usize, late_responder) {
                println!("ping-pong: CPU_ON of my CPU {cpu} failed: {error}");
                psci::system_reset();
            }
            wait_until("the late responder", || FINISHED.load(Ordering::SeqCst));
            while !matches!(psci::affinity_info(boot.cpus[cpu as usize]), Ok(AffinityState::Off)) {
                time::delay_us(1000);
            }
        }
        (other, _) => {
            println!("ping-pong: role must be initiator or responder, not {other}");
            psci::system_reset();
        }
    }
    println!("ping-pong: {} spurious interrupts", irq::unhandled());
}

/// Rounds the late responder answers.
static ROUNDS: AtomicUsize = AtomicUsize::new(0);

fn late_responder(_: usize) {
    let Some(boot) = BOOT.get() else { return };
    let (ring, wait) = (boot.arg("ring").unwrap_or(""), boot.arg("wait").unwrap_or(""));
    responder(boot, ROUNDS.load(Ordering::SeqCst), ring, wait);
    FINISHED.store(true, Ordering::SeqCst);
}

fn listen_for(boot: &Boot, wait: &str, handler: fn(u32)) -> Incoming {
    let incoming = doorbell::on(boot, wait, handler).unwrap_or_else(|error| {
        println!("ping-pong: no doorbell '{wait}' ringing me: {error:?}");
        psci::system_reset()
    });
    if incoming.affinity != irq::own_affinity() {
        println!("ping-pong: doorbell '{wait}' rings CPU {:#x}, not this one", incoming.affinity);
        psci::system_reset();
    }
    irq::init_cpu();
    incoming
}

fn initiator(boot: &Boot, bell: Bell, rounds: usize, ring: &str, wait: &str) {
    let incoming = listen_for(boot, wait, count_ring);
    let start = time::now();
    for round in 1..=rounds {
        bell.ring();
        irq::wait_until(|| RINGS.load(Ordering::SeqCst) >= round);
    }
    let ticks = (time::now() - start) / rounds.max(1) as u64;
    println!(
        "ping-pong: initiator rang '{ring}' {rounds} times and was rung by '{wait}' (LPI {}) {} times",
        incoming.lpi,
        RINGS.load(Ordering::SeqCst)
    );
    println!("ping-pong: {ticks} counter ticks per round trip at {} Hz", time::frequency());
}

fn responder(boot: &Boot, rounds: usize, ring: &str, wait: &str) {
    let incoming = listen_for(boot, wait, count_and_reply);
    irq::wait_until(|| RINGS.load(Ordering::SeqCst) >= rounds);
    println!(
        "ping-pong: responder was rung by '{wait}' (LPI {}) {} times and rang '{ring}' as many",
        incoming.lpi,
        RINGS.load(Ordering::SeqCst)
    );
}

fn doorbell_work(boot: &Boot) {
    let wait = boot.arg("wait").unwrap_or("");
    listen_for(boot, wait, count_ring);
    work(boot);
    println!(
        "doorbell-work: '{wait}' rang {} times, {} spurious interrupts",
        RINGS.load(Ordering::SeqCst),
        irq::unhandled()
    );
}

fn storm(boot: &Boot) {
    let (Some(event), Some(count), Some(translater)) = (address(boot, "event"), address(boot, "count"), boot.doorbells.translater)
    else {
        println!("storm: give event= and count=, and ring some doorbell");
        psci::system_reset();
    };
    for _ in 0..count {
        // SAFETY: this partition's doorbell page, mapped for it; any EventID may be stored.
        unsafe { (translater as *mut u32).write_volatile(event as u32) };
    }
    println!("storm: stored EventID {event} {count} times");
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn matrix(boot: &Boot) {
    let probes = boot.arg("probes").unwrap_or("");
    let count = probes.split(',').filter(|probe| !probe.is_empty()).count();
    let start = trapless_guest::hypercall::restarts() as usize;
    let Some(probe) = probes.split(',').filter(|probe| !probe.is_empty()).nth(start) else {
        println!("matrix: all {count} probes tried");
        stop_links(boot);
        return;
    };
    let mut fields = probe.split('/');
    let (Some(name), Some(op), Some(value), None) = (fields.next(), fields.next(), fields.next().and_then(number), fields.next())
    else {
        println!("matrix: probe {start}: '{probe}' is not <name>/<op>/<value>");
        psci::system_off();
    };
    println!("matrix: probe {name}: {op} {value:#x}");
    match op {
        "r" => {
            // SAFETY: deliberately unsound: this partition does not own `value` and expects
            // trapless to stop it here.
            let read = unsafe { (value as *const u64).read_volatile() };
            println!("matrix: probe {name}: NOT STOPPED: read {read:#x}");
        }
        "w" => {
            // SAFETY: as above, for a write.
            unsafe { (value as *mut u64).write_volatile(0x7472_6170_6c65_7373) };
            println!("matrix: probe {name}: NOT STOPPED: the write went through");
        }
        "ew" => {
            // SAFETY: a GIC register EL2 emulates for this partition: it answers for this
            // partition alone, and must let the write change nothing that is not its own.
            let (before, after) = unsafe {
                let register = value as *mut u32;
                let before = register.read_volatile();
                register.write_volatile(u32::MAX);
                (before, register.read_volatile())
            };
            println!("matrix: probe {name}: emulated: read {before:#x}, wrote 0xffffffff, read {after:#x}");
        }
        // SAFETY: as above, for a fetch: with the stage-1 MMU off no stage-1 attribute can refuse
        // it, so only stage 2's execute-never stands between the branch and `value`.
        "x" => unsafe { execute_with_mmu_off(value) },
        "cpu-on" => println!("matrix: probe {name}: CPU_ON says {}", result(psci::cpu_on(value, boot.memory.start, 0))),
        "affinity" => {
            let state = match psci::affinity_info(value) {
                Ok(AffinityState::On) => "ON",
                Ok(AffinityState::Off) => "OFF",
                Ok(AffinityState::OnPending) => "ON_PENDING",
                Err(error) => result(Err(error)),
            };
            println!("matrix: probe {name}: AFFINITY_INFO says {state}");
        }
        "console" => {
            let code = smccc::hvc64(trapless_abi::hypercall::CONSOLE_WRITE, {
                let mut args = [0; 17];
                args[0] = value;
                args[1] = 16;
                args
            })[0] as i64;
            println!("matrix: probe {name}: CONSOLE_WRITE says {code}");
        }
        other => println!("matrix: probe {name}: unknown op '{other}'"),
    }
    // On to the next probe: a restart, as if trapless had stopped this one.
    psci::system_reset();
}

/// Turns the stage-1 MMU (and the caches) off and branches to `target`.
///
/// # Safety
///
/// Never returns if `target` holds no code that returns; meant for addresses trapless must
/// refuse to fetch from.
unsafe fn execute_with_mmu_off(target: u64) -> ! {
    let sctlr: u64;
    // SAFETY: reading SCTLR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, sctlr_el1", out(reg) sctlr, options(nomem, nostack)) };
    // SAFETY: the code runs from RAM mapped at its own address, so turning the MMU off does
    // not move it; what follows the branch is the caller's promise.
    unsafe {
        core::arch::asm!(
            "msr sctlr_el1, {sctlr}",
            "isb",
            "br {target}",
            sctlr = in(reg) sctlr & !1,
            target = in(reg) target,
            options(noreturn),
        )
    }
}

/// Says `STOPPED` on each link this partition drives, so its device partition can finish.
fn stop_links(boot: &Boot) {
    use trapless_guest::facts::Role;
    use trapless_guest::virtio::{self, Bells};
    use trapless_virtio::binding::state;
    use trapless_virtio::link::DriverSide;
    for link in boot.links().filter(|link| link.role == Role::Driver) {
        let window = virtio::window(link);
        let mut side = DriverSide::new(&window);
        // A driver that never started does not ring in `let_go`: ring anyway, so the device
        // looks and sees the link is done.
        side.let_go(&window, state::STOPPED, || {});
        if let Ok(mut bells) = Bells::new(boot, link) {
            bells.ring(0);
        }
        println!("matrix: link {} stopped", link.name);
    }
}

/// The byte at `offset` of sector `sector` as start `start` of `disk-restart` writes it.
fn disk_byte(start: u64, sector: usize, offset: usize) -> u8 {
    (sector as u64 * 131 + offset as u64 * 7 + start * 29 + 1) as u8
}

/// RAM of QEMU virt's that `tests/systems/restart-link.toml` gives nobody.
const UNOWNED: u64 = 0x6000_0000;

fn disk_restart(boot: &Boot) {
    use trapless_guest::facts::Role;
    use trapless_guest::virtio::{self, Bells};
    use trapless_virtio::driver::WindowHal;
    use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};

    let start = trapless_guest::hypercall::restarts();
    let Some(link) = boot.links().find(|link| link.role == Role::Driver) else {
        println!("disk-restart: I drive no link");
        psci::system_off();
    };
    let fail = |what: &str| -> ! {
        println!("disk-restart: start {start}: {what}");
        psci::system_off()
    };
    if let Err(error) = virtio::on_notify(link, |_| {}) {
        fail(&alloc::format!("its LPIs: {error:?}"));
    }
    irq::init_cpu();
    let opened = virtio::open_driver(link, 0, 10).unwrap_or_else(|error| fail(&error));
    let bells = Bells::new(boot, link).unwrap_or_else(|error| fail(&alloc::format!("its doorbells: {error:?}")));
    let mut disk = VirtIOBlk::<WindowHal<0>, _>::new(opened.transport(bells))
        .unwrap_or_else(|error| fail(&alloc::format!("starting the block driver: {error}")));
    let sectors = disk.capacity() as usize;
    let mut sector = [0u8; SECTOR_SIZE];
    if start > 0 {
        for index in 0..sectors {
            if let Err(error) = disk.read_blocks(index, &mut sector) {
                fail(&alloc::format!("reading sector {index}: {error}"));
            }
            if sector.iter().enumerate().any(|(offset, &byte)| byte != disk_byte(start - 1, index, offset)) {
                fail(&alloc::format!("sector {index} lost what start {} wrote", start - 1));
            }
        }
        println!("disk-restart: start {start}: all {sectors} sectors start {} wrote are intact", start - 1);
    }
    for index in 0..sectors {
        for (offset, byte) in sector.iter_mut().enumerate() {
            *byte = disk_byte(start, index, offset);
        }
        if let Err(error) = disk.write_blocks(index, &sector) {
            fail(&alloc::format!("writing sector {index}: {error}"));
        }
    }
    println!("disk-restart: start {start}: wrote {sectors} sectors, each completed");
    match start {
        // The link is still started: the next start must take it over.
        0 => psci::system_reset(),
        // SAFETY: deliberately unsound: no partition owns this RAM, and the prober expects
        // trapless to stop it here (and restart it).
        1 => unsafe { (UNOWNED as *mut u64).write_volatile(1) },
        _ => {
            drop(disk);
            println!("disk-restart: start {start}: link {} stopped; done", link.name);
        }
    }
}
