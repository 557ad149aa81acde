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
    pending_table_size, pendbaser, property_table_size, propbaser,
};
use trapless_plan::{MAX_CPUS, Plan, PlatformRecord};

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
        tables::program(&|memory| {
            registers.propbaser.set(propbaser(self.properties as u64, self.id_bits, memory));
            registers.propbaser.get()
        });
        let memory = tables::program(&|memory| {
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

/// Sets up every doorbell of the plan. `gic_id_bits` is the GIC's INTID width
/// (`GICD_TYPER.IDbits` + 1). Every receiving CPU's redistributor gets its tables now, before
/// any partition runs, so that a doorbell rung before its receiver's CPU is up is kept pending.
pub fn init(plan: &Plan<'static>, gic_id_bits: u8) -> Result<(), Error> {
    let doorbells = plan.doorbells();
    let Some(max_lpi) = doorbells.iter().map(|doorbell| doorbell.intid).max() else {
        return Ok(());
    };
    let id_bits = lpi_id_bits(max_lpi);
    if id_bits > gic_id_bits {
        return Err(Error::IdBits { needed: id_bits, has: gic_id_bits });
    }
    let mut cpus: Vec<usize> = doorbells.iter().map(|doorbell| doorbell.cpu as usize).collect();
    cpus.sort_unstable();
    cpus.dedup();

    // One property table for every redistributor (some GICs require that).
    let properties = tables::allocate_zeroed(property_table_size(id_bits), 4096);
    for doorbell in doorbells {
        let offset = (doorbell.intid - FIRST_LPI) as usize;
        // SAFETY: the table has an entry for every LPI below 2^id_bits, and is ours alone.
        unsafe { ((properties + offset) as *mut u8).write_volatile(lpi_config(DOORBELL_PRIORITY)) };
    }
    // Cleaned whatever the GIC says of sharing: which redistributor it asks first is its own.
    tables::publish(properties, property_table_size(id_bits), TableMemory::NonCacheable);

    let mut lpi_tables = LpiTables { platform: plan.platform(), properties, id_bits, pending: [None; MAX_CPUS] };
    for &cpu in &cpus {
        if rd_frame(lpi_tables.platform, cpu).ctlr.get() & CTLR_ENABLE_LPIS != 0 {
            return Err(Error::AlreadyEnabled { cpu });
        }
        let pending = tables::allocate_zeroed(pending_table_size(id_bits), PENDING_TABLE_ALIGN);
        lpi_tables.enable(cpu, pending)?;
        lpi_tables.pending[cpu] = Some(pending);
    }
    TABLES.call_once(|| lpi_tables);

    // The ITS: one device (the DeviceID CPU stores carry), one collection per receiving CPU.
    let platform = plan.platform();
    let device = platform.doorbell_device;
    let event_bits = bits_for(doorbells.iter().map(|doorbell| doorbell.event).max().unwrap_or(0));
    let collections = cpus.iter().max().map_or(0, |&cpu| cpu + 1);
    // SAFETY: the platform's ITS control frame, mapped as Device memory at EL2 and driven only
    // here (partitions get its translation page alone).
    let mut its = unsafe { Its::new(platform.its.base.0 as usize, u64::from(device) + 1, collections, event_bits)? };
    let target = |cpu: usize| {
        if its.kind().physical_target {
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
    for doorbell in doorbells {
        let (event, collection) = (doorbell.event, doorbell.cpu as u16);
        its.send(Command::Mapti { device, event, intid: doorbell.intid, collection })?;
        // Make the redistributor load the LPI's configuration (enable, priority).
        its.send(Command::Inv { device, event })?;
    }
    for &target in &targets {
        its.send(Command::Sync { target })?;
    }
    its.wait()?;
    Ok(())
}

/// Rings doorbell `event` from EL2 (for an emulated link's `QueueNotify`): a store of the
/// EventID to `GITS_TRANSLATER`, after everything written before, as a partition rings one.
pub fn ring(event: u32) {
    let its = crate::state::kernel().plan.platform().its.base.0 + trapless_kernel_core::its::TRANSLATER;
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ST);
    // SAFETY: the plan's ITS (checked against the firmware's tree at boot) is mapped as Device
    // memory at EL2; a 32-bit store of an EventID to GITS_TRANSLATER is what it takes.
    unsafe { (its as *mut u32).write_volatile(event) };
}
