//! What changes while the system runs: which CPUs are on, which partitions have stopped and
//! why, the exit counters, and each partition's stage-2 map. Also the transitions between those
//! states: entering a partition, starting and parking CPUs, stopping a partition, powering off.

use crate::arch::{self, el2, entry, firmware, stage2::Stage2Map, vectors::GuestFrame};
use crate::println;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::{Mutex, Once};
use trapless_kernel_core::exits::{ExitCounters, ExitSummary};
use trapless_kernel_core::fault::StopReason;
use trapless_kernel_core::psci::{self, Caller, Decision, OwnCpu, Power};
use trapless_plan::{MAX_CPUS, MAX_PARTITIONS, Plan};

/// What the boot CPU set up, read by every CPU afterwards.
pub struct Kernel {
    pub plan: Plan<'static>,
    /// Each partition's stage-2 map, by partition index.
    stage2: Vec<Mutex<SharedStage2>>,
    /// Each partition's `VTTBR_EL2`, by partition index.
    vttbr: Vec<u64>,
    /// Each partition's CPUs' affinities (MPIDRs), by partition index: what its SGIs may reach.
    affinities: Vec<Vec<u64>>,
}

/// A stage-2 map, reached only through its mutex.
struct SharedStage2(Stage2Map);

// SAFETY: the tables are plain memory in EL2's identity map, the same on every CPU; they are
// only changed through the mutex that wraps this.
unsafe impl Send for SharedStage2 {}

static KERNEL: Once<Kernel> = Once::new();

#[derive(Clone, Copy)]
struct CpuSlot {
    power: Power,
    /// Where the CPU enters its partition, and its `x0`, once it is on-pending.
    entry: u64,
    context: u64,
}

struct State {
    cpus: [CpuSlot; MAX_CPUS],
    /// Why each partition stopped, once it has for good.
    stopped: [Option<StopReason>; MAX_PARTITIONS],
    /// Each partition being restarted (it is stopped, but not for good).
    restarting: [bool; MAX_PARTITIONS],
    /// How many times each partition has been restarted.
    restarts: [u16; MAX_PARTITIONS],
    /// A CPU has seen every partition stopped for good and is powering off.
    powering_off: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    cpus: [CpuSlot { power: Power::Off, entry: 0, context: 0 }; MAX_CPUS],
    stopped: [None; MAX_PARTITIONS],
    restarting: [false; MAX_PARTITIONS],
    restarts: [0; MAX_PARTITIONS],
    powering_off: false,
});

/// Set once a partition has stopped, so its CPUs' exits can tell without taking the lock.
static STOPPED: [AtomicBool; MAX_PARTITIONS] = [const { AtomicBool::new(false) }; MAX_PARTITIONS];

/// Every entry to EL2, per partition and exception class.
pub static EXITS: [ExitCounters; MAX_PARTITIONS] = [const { ExitCounters::new() }; MAX_PARTITIONS];

/// Records what the boot CPU built. Must run once, before any partition starts.
pub fn publish(plan: Plan<'static>, maps: Vec<Stage2Map>) {
    let vttbr = plan
        .partitions()
        .iter()
        .zip(&maps)
        .map(|(partition, map)| el2::vttbr(partition.vmid, map.root()))
        .collect();
    let stage2 = maps.into_iter().map(|map| Mutex::new(SharedStage2(map))).collect();
    let affinities = (0..plan.partitions().len()).map(|partition| plan.cpus_of(partition).map(|cpu| plan.cpus()[cpu].mpidr).collect()).collect();
    KERNEL.call_once(|| Kernel { plan, stage2, vttbr, affinities });
}

impl Kernel {
    /// The affinities (MPIDRs) of partition `partition`'s CPUs.
    pub fn affinities(&self, partition: usize) -> &[u64] {
        self.affinities.get(partition).map_or(&[], Vec::as_slice)
    }
}

/// The state the boot CPU published.
pub fn kernel() -> &'static Kernel {
    KERNEL.get().expect("the boot CPU publishes the kernel state before starting any CPU")
}

/// The partition that owns platform CPU `cpu`. Only CPUs that run partitions enter EL2 after
/// boot, so every caller has one.
pub fn partition_of(cpu: usize) -> usize {
    kernel().plan.cpus()[cpu].owner().expect("only partition CPUs run after boot")
}

/// Whether partition `partition` has stopped.
pub fn is_stopped(partition: usize) -> bool {
    STOPPED[partition].load(Ordering::Acquire)
}

/// Marks `cpu` to enter its partition at `entry` with `x0` = `context` (the boot CPU does this
/// for each partition's first CPU).
pub fn prepare_start(cpu: usize, entry: u64, context: u64) {
    STATE.lock().cpus[cpu] = CpuSlot { power: Power::OnPending, entry, context };
}

/// Runs on a CPU that has just come up (with its MMU on): sets up its EL2 state and GIC
/// interface for its partition and enters it, or parks the CPU if it has nothing to run.
pub fn run_cpu(cpu: usize) -> ! {
    let Some(partition) = kernel().plan.cpus()[cpu].owner() else {
        park();
    };
    el2::configure_cpu(cpu, kernel().vttbr[partition]);
    if let Err(error) = arch::gic::init_cpu(cpu) {
        panic!("GIC of CPU {cpu}: {error}");
    }
    let frame = {
        let mut state = STATE.lock();
        let slot = &mut state.cpus[cpu];
        if slot.power != Power::OnPending || is_stopped(partition) {
            slot.power = Power::Off;
            drop(state);
            park();
        }
        slot.power = Power::On;
        GuestFrame::entering(slot.entry, slot.context)
    };
    // SAFETY: this CPU's EL2 state was configured for `partition` above, and the stack is this
    // CPU's own.
    unsafe { entry::enter_guest(&frame, entry::stack_top(cpu)) }
}

/// Serves a PSCI call from `cpu` of `partition`, applying the state change it decides under
/// the state lock. Returns `None` if `function` is not PSCI.
pub fn serve_psci(cpu: usize, partition: usize, function: u32, args: [u64; 3]) -> Option<Decision> {
    let kernel = kernel();
    let mut state = STATE.lock();
    let mut own = [OwnCpu { index: 0, mpidr: 0, power: Power::Off }; MAX_CPUS];
    let mut count = 0;
    for index in kernel.plan.cpus_of(partition) {
        own[count] = OwnCpu { index, mpidr: kernel.plan.cpus()[index].mpidr, power: state.cpus[index].power };
        count += 1;
    }
    let memory = kernel.plan.partitions()[partition].memory;
    let decision = psci::serve(function, args, &Caller { cpu, cpus: &own[..count], memory })?;
    match decision {
        Decision::StartCpu { cpu: target, entry, context, .. } => {
            state.cpus[target] = CpuSlot { power: Power::OnPending, entry, context };
        }
        Decision::TurnOff => state.cpus[cpu].power = Power::Off,
        Decision::Return(_) | Decision::Stop(_) => {}
    }
    Some(decision)
}

/// How long a CPU that our state already shows off may take to reach the firmware's `CPU_OFF`
/// (a partition may see it off through `AFFINITY_INFO` and start it again at once).
const TURNING_OFF_GRACE_MS: u64 = 10;

/// Asks the firmware to start `cpu` (already marked on-pending). If the firmware refuses, the
/// CPU is marked off again and the caller's `CPU_ON` fails.
pub fn start_cpu(cpu: usize, mpidr: u64) -> Result<(), ()> {
    let entry = entry::secondary_entry as *const () as u64;
    let deadline = el2::counter() + el2::counter_frequency() * TURNING_OFF_GRACE_MS / 1000;
    loop {
        match firmware::cpu_on(mpidr, entry, cpu as u64) {
            Ok(()) => return Ok(()),
            Err(smccc::psci::Error::AlreadyOn) if el2::counter() < deadline => trapless_virtio::relax(),
            Err(_) => {
                STATE.lock().cpus[cpu].power = Power::Off;
                return Err(());
            }
        }
    }
}

/// Stops `partition` for `reason` (the first reason wins), from one of its CPUs: its stage 2
/// is revoked so its other CPUs fault into EL2 and park. Then, if its `on-stop` policy and
/// what is left of its restart limit say so, this CPU restarts it; otherwise this CPU parks,
/// and the machine powers off if it was the last partition running.
pub fn stop_partition(partition: usize, reason: StopReason) -> ! {
    let cpu = el2::current_cpu();
    let limit = kernel().plan.partitions()[partition].restart_limit;
    let (first, restart) = {
        let mut state = STATE.lock();
        let first = state.stopped[partition].is_none() && !state.restarting[partition];
        let restart = first && restarts_after(reason) && state.restarts[partition] < limit;
        if first {
            STOPPED[partition].store(true, Ordering::Release);
            if restart {
                state.restarting[partition] = true;
            } else {
                state.stopped[partition] = Some(reason);
            }
        }
        state.cpus[cpu].power = Power::Off;
        (first, restart)
    };
    if first {
        // Unmap first: the report goes to a console a partition may share, and may be slow.
        revoke(partition);
        if let StopReason::Fault(fault) = reason {
            let name = kernel().plan.partitions()[partition].name;
            println!("trapless: partition {name} faulted and is stopped: {fault}");
        }
    }
    if restart {
        restart_partition(partition, cpu, reason);
    }
    if first && last_to_stop() {
        power_off();
    }
    park();
}

/// Whether a stop for `reason` is one the `on-stop = "restart"` policy covers: a fault or a
/// `SYSTEM_RESET`. `SYSTEM_OFF` (and the last CPU turning off) is a finish.
fn restarts_after(reason: StopReason) -> bool {
    matches!(reason, StopReason::Fault(_) | StopReason::SystemReset)
}

/// Whether every partition has now stopped for good and the caller is the first to see it (it
/// then powers the machine off, once).
fn last_to_stop() -> bool {
    let count = kernel().plan.partitions().len();
    let mut state = STATE.lock();
    let last = !state.powering_off && state.stopped[..count].iter().all(Option::is_some);
    state.powering_off |= last;
    last
}

/// How long the CPUs of a stopped partition may take to fault in and park before its restart
/// is given up (or, at power-off, its counts are printed without them). A running CPU faults
/// in at once on hardware; under QEMU TCG on a host whose cores are all busy, a vCPU thread
/// can wait past 100 ms to be scheduled.
const PARK_TIMEOUT_MS: u64 = 1_000;

/// Starts stopped `partition` again, from `cpu` (one of its CPUs, already marked off): waits
/// for its other CPUs to park, loads its RAM afresh, maps its stage 2 again and starts its
/// boot CPU. Its windows are left as they are: its peers see it come back through the link
/// handshake. Gives up (the partition stays stopped) if one of its CPUs does not park.
fn restart_partition(partition: usize, cpu: usize, reason: StopReason) -> ! {
    let kernel = kernel();
    let record = &kernel.plan.partitions()[partition];
    let name = record.name;
    let count = STATE.lock().restarts[partition] + 1;
    match reason {
        // The fault was reported as it was taken.
        StopReason::Fault(_) => println!("trapless: partition {name} restarting ({count} of {})", record.restart_limit),
        _ => println!("trapless: partition {name} restarting ({count} of {}) after {reason}", record.restart_limit),
    }
    if let Err(stuck) = wait_until_parked(partition, cpu) {
        println!("trapless: partition {name} cannot restart: its CPU {stuck} did not stop within {PARK_TIMEOUT_MS} ms");
        give_up_restart(partition, reason);
    }
    // SAFETY: the boot CPU checked this partition's RAM and blobs when it first loaded it, and
    // every CPU of the partition is parked.
    unsafe { crate::boot::fill_memory(&kernel.plan, record) };
    crate::gic_emulation::reset(partition);
    let restored = kernel.stage2[partition].lock().0.restore(kernel.plan.regions(record));
    if let Err(error) = restored {
        println!("trapless: partition {name} cannot restart: stage 2: {error}");
        give_up_restart(partition, reason);
    }
    let boot = record.boot_cpu as usize;
    {
        let mut state = STATE.lock();
        state.restarts[partition] = count;
        state.restarting[partition] = false;
        state.cpus[boot] = CpuSlot { power: Power::OnPending, entry: record.entry.0, context: record.dtb.load.0 };
        STOPPED[partition].store(false, Ordering::Release);
    }
    if boot == cpu {
        run_cpu(cpu);
    }
    if start_cpu(boot, kernel.plan.cpus()[boot].mpidr).is_err() {
        println!("trapless: partition {name} cannot restart: its boot CPU {boot} did not start");
        STOPPED[partition].store(true, Ordering::Release);
        give_up_restart(partition, reason);
    }
    park();
}

/// Waits until every CPU of stopped `partition` but `cpu` is off, waking any that sleeps.
/// Returns the first that is still on after [`PARK_TIMEOUT_MS`].
fn wait_until_parked(partition: usize, cpu: usize) -> Result<(), usize> {
    let plan = &kernel().plan;
    let deadline = el2::counter() + el2::counter_frequency() * PARK_TIMEOUT_MS / 1000;
    for other in plan.cpus_of(partition).filter(|&other| other != cpu) {
        let mut kicked = false;
        while STATE.lock().cpus[other].power != Power::Off {
            if el2::counter() > deadline {
                return Err(other);
            }
            if !kicked {
                arch::gic::kick(other, plan.cpus()[other].mpidr);
                kicked = true;
            }
            // `yield`: the CPUs waited for must run (see `emulated::let_go`).
            trapless_virtio::relax();
        }
    }
    Ok(())
}

/// Records that restarting `partition` failed: it has stopped for good, for `reason`.
fn give_up_restart(partition: usize, reason: StopReason) -> ! {
    {
        let mut state = STATE.lock();
        state.restarting[partition] = false;
        state.stopped[partition] = Some(reason);
    }
    if last_to_stop() {
        power_off();
    }
    park();
}

/// How many times `partition` has been restarted (the `RESTARTS` hypercall).
pub fn restarts(partition: usize) -> u16 {
    STATE.lock().restarts[partition]
}

/// Parks a CPU of a stopped partition that has just exited (on its revoked stage 2), marking
/// it off so that a restart knows it is out of the way.
pub fn park_stopped(cpu: usize) -> ! {
    STATE.lock().cpus[cpu].power = Power::Off;
    park();
}

/// Takes every mapping from `partition` and flushes its translations from every CPU. Runs on
/// one of its CPUs, so `VTTBR_EL2` already holds its VMID.
fn revoke(partition: usize) {
    if let Err(error) = kernel().stage2[partition].lock().0.revoke() {
        println!("trapless: revoking stage 2 of partition #{partition} failed: {error}");
    }
    el2::invalidate_current_vmid_everywhere();
}

/// Turns the calling CPU off for good (until a `CPU_ON` brings it back).
pub fn park() -> ! {
    firmware::cpu_off();
    arch::halt()
}

/// Prints why each partition stopped and its exit counts, then powers the machine off. First
/// gives the CPUs that stopped partitions left running (a second CPU spinning while the first
/// called `SYSTEM_OFF`) the time to fault in and park, so that the counts printed are final.
fn power_off() -> ! {
    let kernel = kernel();
    let cpu = el2::current_cpu();
    for partition in 0..kernel.plan.partitions().len() {
        // A CPU that will not park (it sleeps with every interrupt masked) is left as it is:
        // the machine is going off.
        let _ = wait_until_parked(partition, cpu);
    }
    let (reasons, restarts) = {
        let state = STATE.lock();
        (state.stopped, state.restarts)
    };
    for (index, (partition, reason)) in kernel.plan.partitions().iter().zip(reasons).enumerate() {
        let name = partition.name.as_str();
        if let Some(reason) = reason {
            println!("trapless: partition {name} stopped: {reason}");
        }
        if restarts[index] != 0 {
            println!("trapless: partition {name} was restarted {} time(s)", restarts[index]);
        }
        println!("{}", ExitSummary { partition: name, counts: EXITS[index].snapshot() });
    }
    crate::emulated::report();
    crate::gic_emulation::report();
    println!("trapless: every partition has stopped; powering off");
    firmware::system_off();
    arch::halt()
}
