//! The GIC as each partition sees it: the distributor and the first page of each of its CPUs'
//! redistributor RD frames (on a GICv4, their ID pages too) are left out of its stage 2, so
//! every access traps here; EL2
//! decodes it and answers it through the models in `trapless_kernel_core`
//! (`gic_distributor`, `gic_redistributor`), which filter it to the partition's own SPIs and
//! CPUs, and carries out on the hardware what they allow. Also here: what a partition with
//! `on-fault = "abort"` gets instead of a stop, and the counts of both, printed at power-off.
//!
//! All of this is control path: a stock driver touches these registers while it sets up its
//! interrupts (Linux: about 120 accesses at boot), never to take or end one.

use crate::arch::gic::FrameBus;
use crate::arch::vectors::GuestFrame;
use crate::arch::el2;
use crate::{println, state};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, Once};
use trapless_kernel_core::abort::Refusal;
use trapless_kernel_core::fault::{Fault, Syndrome};
use trapless_kernel_core::gic_distributor::{self, Distributor, Hardware, SpiSet};
use trapless_kernel_core::gic_redistributor::{self, Frame};
use trapless_kernel_core::mmio::Access;
use trapless_plan::{MAX_CPUS, MAX_PARTITIONS, Plan};

/// What EL2 knows of one partition's interrupts.
struct PartitionGic {
    /// Its passthrough devices' SPIs and those of the emulated links it drives.
    spis: SpiSet,
    /// The affinities of its CPUs, boot CPU first.
    cpus: [u64; MAX_CPUS],
    cpu_count: usize,
}

struct Emulation {
    hardware: Hardware,
    partitions: Vec<PartitionGic>,
    /// Each partition's `GICD_CTLR`, under the lock that also serialises every emulated
    /// distributor access: a priority or trigger update reads, modifies and writes registers
    /// that other partitions' SPIs share.
    distributors: Mutex<[Distributor; MAX_PARTITIONS]>,
}

static EMULATION: Once<Emulation> = Once::new();

/// Accesses emulated and aborts injected, per partition.
#[derive(Default)]
struct Counters {
    distributor_reads: AtomicU64,
    distributor_writes: AtomicU64,
    redistributor_reads: AtomicU64,
    redistributor_writes: AtomicU64,
    injected_aborts: AtomicU64,
    /// Trapped writes to `ICC_SGI1R_EL1` and its kin: inter-processor interrupts.
    sgi_requests: AtomicU64,
    /// The other trapped CPU-interface registers (`PMR`, `CTLR`, `RPR`, `DIR`).
    cpu_interface: AtomicU64,
}

static COUNTERS: [Counters; MAX_PARTITIONS] = [const {
    Counters {
        distributor_reads: AtomicU64::new(0),
        distributor_writes: AtomicU64::new(0),
        redistributor_reads: AtomicU64::new(0),
        redistributor_writes: AtomicU64::new(0),
        injected_aborts: AtomicU64::new(0),
        sgi_requests: AtomicU64::new(0),
        cpu_interface: AtomicU64::new(0),
    }
}; MAX_PARTITIONS];

/// How many injected aborts of one partition are reported one by one; the rest are counted.
const REPORTED_ABORTS: u64 = 16;

/// Reads what the physical distributor says of itself and each partition's SPIs and CPUs from
/// the plan. Runs once on the boot CPU, after `gic::init`.
pub fn init(plan: &Plan<'_>) {
    let mut bus = distributor_bus(plan);
    let hardware = Hardware {
        typer: bus_read(&mut bus, gic_distributor::reg::TYPER),
        iidr: bus_read(&mut bus, gic_distributor::reg::IIDR),
        ctlr: bus_read(&mut bus, gic_distributor::reg::CTLR),
    };
    let mut partitions: Vec<PartitionGic> = plan
        .partitions()
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let mut cpus = [0; MAX_CPUS];
            let mut cpu_count = 0;
            let boot = record.boot_cpu as usize;
            for cpu in core::iter::once(boot).chain(plan.cpus_of(index).filter(|&cpu| cpu != boot)) {
                cpus[cpu_count] = plan.cpus()[cpu].mpidr;
                cpu_count += 1;
            }
            PartitionGic { spis: SpiSet::new(), cpus, cpu_count }
        })
        .collect();
    // Every SPI the plan routes is its CPU's partition's: passthrough devices and the SPI EL2
    // raises on the driver of an emulated link.
    for route in plan.spi_routes() {
        if let Some(owner) = plan.cpus()[route.cpu as usize].owner() {
            partitions[owner].spis.insert(route.intid);
        }
    }
    EMULATION.call_once(|| Emulation { hardware, partitions, distributors: Mutex::new([Distributor::new(); MAX_PARTITIONS]) });
}

fn distributor_bus(plan: &Plan<'_>) -> FrameBus {
    let gicd = plan.platform().gicd;
    let size = (gicd.size as usize).min(gic_distributor::reg::FRAME);
    // SAFETY: the platform's distributor, checked against the firmware's device tree, is EL2's
    // and mapped as Device memory; the models reach only registers of a GICv3 distributor.
    unsafe { FrameBus::new(gicd.base.0, size) }
}

fn bus_read(bus: &mut FrameBus, offset: usize) -> u32 {
    use trapless_kernel_core::gic_distributor::Bus;
    bus.read(offset, 4) as u32
}

/// Emulates the access that partition `partition`'s CPU `cpu` made at `ipa` (syndrome `iss`)
/// if it hit the distributor or the first page of one of its own CPUs' RD frames; returns
/// whether it did (the caller then steps over the instruction). An access EL2 cannot decode
/// (no valid syndrome: a pair, a writeback) is not emulated, and faults.
pub fn access(partition: usize, ipa: u64, iss: u64, frame: &mut GuestFrame) -> bool {
    let Some(emulation) = EMULATION.get() else { return false };
    let plan = &state::kernel().plan;
    let platform = plan.platform();
    let gicd = platform.gicd;
    let own = &emulation.partitions[partition];
    let target = if gicd.contains_span(ipa, 1) {
        Target::Distributor { offset: (ipa - gicd.base.0) as usize }
    } else {
        // The first page of an own CPU's RD frame, and on a GICv4 its ID page.
        let emulated = |offset: u64| {
            offset < gic_redistributor::reg::PAGE as u64
                || (platform.gic_version == 4 && (gic_redistributor::reg::ID_PAGE..gic_redistributor::reg::FRAME).contains(&(offset as usize)))
        };
        let Some(cpu) = plan.cpus_of(partition).find(|&cpu| {
            let rd = platform.redistributor(cpu).0;
            ipa >= rd && emulated(ipa - rd)
        }) else {
            return false;
        };
        let frame = Frame { last: gic_redistributor::ends_region(plan.cpus_of(partition), cpu) };
        Target::Redistributor { cpu, frame, offset: (ipa - platform.redistributor(cpu).0) as usize }
    };
    let Some(access) = Access::decode(iss) else { return false };
    let counters = &COUNTERS[partition];
    let view = gic_distributor::Partition { spis: &own.spis, cpus: &own.cpus[..own.cpu_count], hardware: emulation.hardware };
    let stored = if access.register < 31 { access.stored(frame.x[access.register]) } else { 0 };
    let loaded = match target {
        Target::Distributor { offset } => {
            let mut bus = distributor_bus(plan);
            let mut distributors = emulation.distributors.lock();
            if access.write {
                counters.distributor_writes.fetch_add(1, Ordering::Relaxed);
                distributors[partition].write(&view, &mut bus, offset, access.size, stored);
                None
            } else {
                counters.distributor_reads.fetch_add(1, Ordering::Relaxed);
                Some(distributors[partition].read(&view, &mut bus, offset, access.size))
            }
        }
        Target::Redistributor { cpu, frame: rd, offset } => {
            // SAFETY: this CPU's RD frame, the platform's, EL2's and mapped as Device memory; the
            // model only reads registers of its first and last pages.
            let mut bus = unsafe { FrameBus::new(platform.redistributor(cpu).0, gic_redistributor::reg::FRAME) };
            if access.write {
                counters.redistributor_writes.fetch_add(1, Ordering::Relaxed);
                rd.write(&mut bus, offset, access.size, stored);
                None
            } else {
                counters.redistributor_reads.fetch_add(1, Ordering::Relaxed);
                Some(rd.read(&mut bus, offset, access.size))
            }
        }
    };
    if let Some(value) = loaded
        && access.register < 31
    {
        frame.x[access.register] = access.loaded(value);
    }
    true
}

/// Which emulated block an access hit.
enum Target {
    Distributor { offset: usize },
    Redistributor { cpu: usize, frame: Frame, offset: usize },
}

/// Forgets what partition `partition` wrote to its distributor (before it starts again).
pub fn reset(partition: usize) {
    if let Some(emulation) = EMULATION.get() {
        emulation.distributors.lock()[partition] = Distributor::new();
    }
}

/// Makes the stage-2 fault the partition's CPU just took (syndrome `esr`) a synchronous
/// external abort at its EL1 vectors, and reports it. Fails, leaving `frame` as it was, when
/// the fault is not an abort or happened in the partition's own vectors.
pub fn inject_abort(partition: usize, esr: u64, frame: &mut GuestFrame) -> Result<(), Refusal> {
    let ipa = el2::fault_ipa(esr);
    let pc = frame.elr;
    el2::inject_external_abort(esr, frame)?;
    let count = COUNTERS[partition].injected_aborts.fetch_add(1, Ordering::Relaxed) + 1;
    if count <= REPORTED_ABORTS {
        let name = state::kernel().plan.partitions()[partition].name;
        let fault = Fault::from_syndrome(&Syndrome { esr, ipa, pc });
        let more = if count == REPORTED_ABORTS { " (further aborts are counted, not reported)" } else { "" };
        println!("trapless: partition {name} takes an external abort for: {fault}{more}");
    }
    Ok(())
}

/// Counts a trapped GIC CPU-interface register access of `partition`: an SGI request (an
/// inter-processor interrupt) or another register.
pub fn count_cpu_interface(partition: usize, sgi_request: bool) {
    let counters = &COUNTERS[partition];
    let counter = if sgi_request { &counters.sgi_requests } else { &counters.cpu_interface };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Prints, for each partition that touched the emulated GIC, its trapped CPU-interface
/// registers or took an injected abort, `trapless: gic-emulation partition=<name>
/// distributor-reads=<n> distributor-writes=<n> redistributor-reads=<n>
/// redistributor-writes=<n> injected-aborts=<n> sgi-requests=<n> cpu-interface=<n>`: its
/// data-abort exits are the first five summed (plus any `mmio-trap` link's), its
/// system-register exits the last two.
pub fn report() {
    let plan = &state::kernel().plan;
    for (partition, counters) in plan.partitions().iter().zip(&COUNTERS) {
        let counts = [
            &counters.distributor_reads,
            &counters.distributor_writes,
            &counters.redistributor_reads,
            &counters.redistributor_writes,
            &counters.injected_aborts,
            &counters.sgi_requests,
            &counters.cpu_interface,
        ]
        .map(|counter| counter.load(Ordering::Relaxed));
        if counts.iter().all(|&count| count == 0) {
            continue;
        }
        let [distributor_reads, distributor_writes, redistributor_reads, redistributor_writes, injected, sgis, cpu_interface] = counts;
        println!(
            "trapless: gic-emulation partition={} distributor-reads={distributor_reads} distributor-writes={distributor_writes} redistributor-reads={redistributor_reads} redistributor-writes={redistributor_writes} injected-aborts={injected} sgi-requests={sgis} cpu-interface={cpu_interface}",
            partition.name
        );
    }
}
