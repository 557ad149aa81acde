//! Doorbells, as EL2 sets them up at boot: the LPI property table (which LPIs are enabled, at
//! what priority), a pending table and `EnableLPIs` for each CPU that receives doorbells, and
//! the ITS mappings from (DeviceID, EventID) to LPI and CPU. After boot EL2 only checks, each
//! time a receiving CPU comes up, that its redistributor still has that configuration (a GIC
//! that powers redistributors down with their CPU loses it) and restores it if not.

use crate::arch::its::{self, Its};
use crate::arch::tables::{self, TableMemory};
use alloc::vec::Vec;
use core::fmt;
use spin::Once;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};
use trapless_kernel_core::its::{
    Command, FIRST_LPI, PENDING_TABLE_ALIGN, RdBase, bits_for, lpi_config, lpi_id_bits,
    pending_table_size, pendbaser, probe_ids, describe_propbaser, property_table_size, propbaser,
};
use trapless_plan::{DoorbellPath, MAX_CPUS, Name, Plan, PlatformRecord};
use crate::println;

register_structs! {
    /// The LPI registers of a redistributor's RD frame (GIC architecture specification, §12.11).
    RdLpiRegisters {
        /// `GICR_CTLR`: EnableLPIs (bit 0).
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => _iidr),
        /// `GICR_TYPER`: PLPIS (bit 0), Processor_Number (bits 23:8).
        (0x08 => typer: ReadOnly<u64>),
        (0x10 => _reserved0),
        /// `GICR_PROPBASER`.
        (0x70 => propbaser: ReadWrite<u64>),
        /// `GICR_PENDBASER`.
        (0x78 => pendbaser: ReadWrite<u64>),
        (0x80 => @END),
    }
}

const CTLR_ENABLE_LPIS: u32 = 1 << 0;
const TYPER_PLPIS: u64 = 1 << 0;
/// Physical address bits of `GICR_PROPBASER` and of `GICR_PENDBASER`.
const PROPBASER_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
const PENDBASER_ADDRESS: u64 = 0x000f_ffff_ffff_0000;
/// The priority of every doorbell LPI: in the middle of the non-secure range, below the
/// default priority (0x80) EL2 gives SGIs, PPIs and SPIs.
pub const DOORBELL_PRIORITY: u8 = 0xa0;
/// The priority of EL2's probe LPI: the highest, for the moment it is pending.
const PROBE_PRIORITY: u8 = 0x00;

/// What stops doorbells from being set up.
#[derive(Debug)]
pub enum Error {
    /// A receiving CPU's redistributor cannot take physical LPIs.
    NoLpis { cpu: usize },
    /// The firmware left LPIs enabled on a redistributor: its tables cannot be changed.
    AlreadyEnabled { cpu: usize },
    /// A redistributor's LPI tables are not the ones EL2 gave it.
    Changed { cpu: usize },
    /// The GIC implements fewer INTID bits than the highest doorbell LPI needs.
    IdBits { needed: u8, has: u8 },
    /// The plan has doorbells but the platform has no doorbell path.
    NoPath,
    /// The boot CPU is not a platform CPU, or its redistributor would not wake: the probe has
    /// nowhere to raise its LPI.
    NoProbeCpu,
    /// EL2's probe event, stored as the platform says CPU stores reach the ITS, raised nothing.
    ProbeFailed { platform: Name, path: DoorbellPath, event: u32, lpi: u32, cpu: usize },
    Its(its::Error),
}

impl From<its::Error> for Error {
    fn from(error: its::Error) -> Self {
        Self::Its(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLpis { cpu } => write!(f, "the redistributor of CPU {cpu} does not support LPIs"),
            Self::AlreadyEnabled { cpu } => {
                write!(f, "LPIs are already enabled on the redistributor of CPU {cpu}, by the firmware")
            }
            Self::Changed { cpu } => {
                write!(f, "the redistributor of CPU {cpu} has LPI tables EL2 did not give it")
            }
            Self::IdBits { needed, has } => write!(f, "the GIC has {has} INTID bits, the doorbells need {needed}"),
            Self::NoPath => f.write_str("the plan has doorbells, and the platform no doorbell path"),
            Self::NoProbeCpu => f.write_str("the boot CPU's redistributor cannot take the doorbell probe's LPI"),
            Self::ProbeFailed { platform, path, event, lpi, cpu } => write!(
                f,
                "platform {platform} says a CPU's store to {} reaches the ITS with DeviceID {}, but EL2's probe (EventID {event}, LPI {lpi}) did not become pending on the redistributor of CPU {cpu}: CPU stores do not carry DeviceID {} to that ITS here (docs/boards.md)",
                path.translater, path.device, path.device
            ),
            Self::Its(error) => error.fmt(f),
        }
    }
}

/// The LPI tables, set once at boot.
struct LpiTables {
    platform: &'static PlatformRecord,
    properties: usize,
    id_bits: u8,
    /// Each receiving CPU's pending table.
    pending: [Option<usize>; MAX_CPUS],
}

static TABLES: Once<LpiTables> = Once::new();

/// The RD frame of platform CPU `cpu`.
fn rd_frame(platform: &PlatformRecord, cpu: usize) -> &'static RdLpiRegisters {
    // SAFETY: the plan's redistributor region holds a frame per platform CPU (checked against
    // the hardware by `gic::init`), mapped as Device memory at EL2. Only EL2 writes these
    // registers; partitions see their RD frames read-only.
    unsafe { &*(platform.redistributor(cpu).0 as *const RdLpiRegisters) }
}

impl LpiTables {
    /// Gives CPU `cpu`'s redistributor its LPI tables and enables LPIs on it.
    fn enable(&self, cpu: usize, pending: usize) -> Result<(), Error> {
        let registers = rd_frame(self.platform, cpu);
        if registers.typer.get() & TYPER_PLPIS == 0 {
            return Err(Error::NoLpis { cpu });
        }
        let snoops = self.platform.gic_snoops();
        tables::program(snoops, &|memory| {
            registers.propbaser.set(propbaser(self.properties as u64, self.id_bits, memory));
            registers.propbaser.get()
        });
        let memory = tables::program(snoops, &|memory| {
            registers.pendbaser.set(pendbaser(pending as u64, memory));
            registers.pendbaser.get()
        });
        tables::publish(pending, pending_table_size(self.id_bits), memory);
        registers.ctlr.set(registers.ctlr.get() | CTLR_ENABLE_LPIS);
        Ok(())
    }

    /// Whether CPU `cpu`'s redistributor has LPIs enabled with EL2's tables.
    fn holds(&self, cpu: usize, pending: usize) -> Result<bool, Error> {
        let registers = rd_frame(self.platform, cpu);
        if registers.ctlr.get() & CTLR_ENABLE_LPIS == 0 {
            return Ok(false);
        }
        let ours = registers.propbaser.get() & PROPBASER_ADDRESS == self.properties as u64
            && registers.pendbaser.get() & PENDBASER_ADDRESS == pending as u64;
        if ours { Ok(true) } else { Err(Error::Changed { cpu }) }
    }
}

/// Makes sure CPU `cpu`, as it comes up, still has the LPI configuration EL2 gave it at boot.
pub fn ensure_enabled(cpu: usize) -> Result<(), Error> {
    let Some(tables) = TABLES.get() else { return Ok(()) };
    let Some(pending) = tables.pending[cpu] else { return Ok(()) };
    if tables.holds(cpu, pending)? { Ok(()) } else { tables.enable(cpu, pending) }
}

/// Sets up every doorbell of the plan, then proves the platform's doorbell path: rings a probe
/// event of EL2's own from `probe_cpu` (the boot CPU, this one) and checks that its LPI became
/// pending on that CPU's redistributor. `gic_id_bits` is the GIC's INTID width
/// (`GICD_TYPER.IDbits` + 1). Every receiving CPU's redistributor gets its tables now, before any
/// partition runs, so that a doorbell rung before its receiver's CPU is up is kept pending.
pub fn init(plan: &Plan<'static>, gic_id_bits: u8, probe_cpu: Option<usize>) -> Result<(), Error> {
    let doorbells = plan.doorbells();
    if doorbells.is_empty() {
        return Ok(());
    }
    let platform = plan.platform();
    // `Plan::parse` refuses doorbells on a platform without a doorbell path.
    let Some(path) = platform.doorbell_path() else { return Err(Error::NoPath) };
    let Some(probe_cpu) = probe_cpu else { return Err(Error::NoProbeCpu) };
    let used: Vec<(u32, u32)> = doorbells.iter().map(|doorbell| (doorbell.event, doorbell.intid)).collect();
    let (probe_event, probe_lpi) = probe_ids(&used);
    let max_lpi = doorbells.iter().map(|doorbell| doorbell.intid).max().unwrap_or(FIRST_LPI).max(probe_lpi);
    let id_bits = lpi_id_bits(max_lpi);
    if id_bits > gic_id_bits {
        return Err(Error::IdBits { needed: id_bits, has: gic_id_bits });
    }
    let mut cpus: Vec<usize> = doorbells.iter().map(|doorbell| doorbell.cpu as usize).collect();
    cpus.push(probe_cpu);
    cpus.sort_unstable();
    cpus.dedup();

    // One property table for every redistributor (some GICs require that).
    let properties = tables::allocate_zeroed(property_table_size(id_bits), 4096);
    let configure = |intid: u32, priority: u8| {
        let offset = (intid - FIRST_LPI) as usize;
        // SAFETY: the table has an entry for every LPI below 2^id_bits, and is ours alone.
        unsafe { ((properties + offset) as *mut u8).write_volatile(lpi_config(priority)) };
    };
    for doorbell in doorbells {
        configure(doorbell.intid, DOORBELL_PRIORITY);
    }
    // The probe's LPI outranks anything else that may be pending on the boot CPU (a
    // passthrough SPI, at 0x80), so that it is the one the CPU interface reports.
    configure(probe_lpi, PROBE_PRIORITY);
    // Cleaned whatever the GIC says of sharing: which redistributor it asks first is its own.
    tables::publish(properties, property_table_size(id_bits), TableMemory::NonCacheable);

    let mut lpi_tables = LpiTables { platform, properties, id_bits, pending: [None; MAX_CPUS] };
    for &cpu in &cpus {
        if rd_frame(platform, cpu).ctlr.get() & CTLR_ENABLE_LPIS != 0 {
            return Err(Error::AlreadyEnabled { cpu });
        }
        let pending = tables::allocate_zeroed(pending_table_size(id_bits), PENDING_TABLE_ALIGN);
        lpi_tables.enable(cpu, pending)?;
        lpi_tables.pending[cpu] = Some(pending);
    }
    TABLES.call_once(|| lpi_tables);
    // What the GIC took, read back from its register (a GIC that cannot snoop gets non-cacheable
    // tables: the platform's `snoops = false`, or its own read-back).
    let readback = rd_frame(platform, probe_cpu).propbaser.get();
    println!("trapless: LPI tables {} (GICR_PROPBASER {readback:#x})", describe_propbaser(readback));

    // The ITS: one device (the DeviceID CPU stores carry), one collection per receiving CPU.
    let device = path.device;
    let highest_event = doorbells.iter().map(|doorbell| doorbell.event).max().unwrap_or(0).max(probe_event);
    let event_bits = bits_for(highest_event);
    let collections = cpus.iter().max().map_or(0, |&cpu| cpu + 1);
    // SAFETY: the platform's ITS control frame, mapped as Device memory at EL2 and driven only
    // here (partitions get its translation page alone).
    let mut its = unsafe {
        Its::new(platform.its.base.0 as usize, u64::from(device) + 1, collections, event_bits, platform.gic_snoops())?
    };
    let physical_target = its.kind().physical_target;
    let target = |cpu: usize| {
        if physical_target {
            RdBase::Address(platform.redistributor(cpu).0)
        } else {
            RdBase::Processor(((rd_frame(platform, cpu).typer.get() >> 8) & 0xffff) as u16)
        }
    };
    let targets: Vec<RdBase> = cpus.iter().map(|&cpu| target(cpu)).collect();
    let itt_bytes = (its.kind().itt_entry_size << event_bits).max(256).next_power_of_two();
    let itt = tables::allocate_zeroed(itt_bytes, 256);
    tables::publish(itt, itt_bytes, TableMemory::NonCacheable);

    for (&cpu, &target) in cpus.iter().zip(&targets) {
        its.send(Command::Mapc { collection: cpu as u16, target, valid: true })?;
    }
    its.send(Command::Mapd { device, event_bits, itt: itt as u64, valid: true })?;
    let mappings = doorbells.iter().map(|doorbell| (doorbell.event, doorbell.intid, doorbell.cpu as u16));
    for (event, intid, collection) in mappings.chain([(probe_event, probe_lpi, probe_cpu as u16)]) {
        its.send(Command::Mapti { device, event, intid, collection })?;
        // Make the redistributor load the LPI's configuration (enable, priority).
        its.send(Command::Inv { device, event })?;
    }
    for &target in &targets {
        its.send(Command::Sync { target })?;
    }
    its.wait()?;

    // The proof: EL2 rings its own event the way a partition rings a doorbell.
    super::gic::wake(probe_cpu).map_err(|_| Error::NoProbeCpu)?;
    let seen = super::probe::ring_and_see(path.translater.0, probe_event, probe_lpi);
    // Nothing may ring the probe's LPI again.
    its.send(Command::Discard { device, event: probe_event })?;
    let probe_target = targets[cpus.iter().position(|&cpu| cpu == probe_cpu).unwrap_or(0)];
    its.send(Command::Sync { target: probe_target })?;
    its.wait()?;
    if !seen {
        return Err(Error::ProbeFailed { platform: platform.name, path, event: probe_event, lpi: probe_lpi, cpu: probe_cpu });
    }
    println!(
        "trapless: doorbell path of platform {} proven: a CPU store of EventID {probe_event} to {} (DeviceID {device}) raised LPI {probe_lpi} on CPU {probe_cpu}",
        platform.name, path.translater
    );
    Ok(())
}

/// Rings doorbell `event` from EL2 (for an emulated link's `QueueNotify`): a store of the
/// EventID to `GITS_TRANSLATER`, after everything written before, as a partition rings one.
pub fn ring(event: u32) {
    // A plan with doorbells has a doorbell path (`Plan::parse` checked it).
    let Some(path) = crate::state::kernel().plan.platform().doorbell_path() else { return };
    store_event(path.translater.0, event);
}

/// A 32-bit store of `event` to the translater at `translater`, after everything written before.
pub(super) fn store_event(translater: u64, event: u32) {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ST);
    // SAFETY: the plan's doorbell translater lies in the ITS's translation frame (checked by
    // the platform checker, outside RAM as `Plan::parse` checked), which EL2 maps as Device
    // memory; a 32-bit store of an EventID is what it takes.
    unsafe { (translater as *mut u32).write_volatile(event) };
}
