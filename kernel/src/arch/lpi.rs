//! Doorbells, as EL2 sets them up at boot and never touches again: the LPI property table
//! (which LPIs are enabled, at what priority), a pending table and `EnableLPIs` for each CPU
//! that receives doorbells, and the ITS mappings from (DeviceID, EventID) to LPI and CPU.

use crate::arch::its::{self, Its};
use crate::arch::tables::{self, TableMemory};
use alloc::vec::Vec;
use core::fmt;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};
use trapless_kernel_core::its::{
    Command, FIRST_LPI, PENDING_TABLE_ALIGN, RdBase, lpi_config, lpi_id_bits, pending_table_size,
    pendbaser, property_table_size, propbaser,
};
use trapless_plan::Plan;

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
/// The priority of every doorbell LPI: in the middle of the non-secure range, below the
/// default priority (0x80) of everything else, so that `gic::init_cpu` can drain leftovers
/// without taking a doorbell that is already ringing for the partition.
pub const DOORBELL_PRIORITY: u8 = 0xa0;

/// What stops doorbells from being set up.
#[derive(Debug)]
pub enum Error {
    /// A receiving CPU's redistributor cannot take physical LPIs.
    NoLpis { cpu: usize },
    /// The firmware left LPIs enabled on a redistributor: its tables cannot be changed.
    AlreadyEnabled { cpu: usize },
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
            Self::IdBits { needed, has } => write!(f, "the GIC has {has} INTID bits, the doorbells need {needed}"),
            Self::Its(error) => error.fmt(f),
        }
    }
}

/// The RD frame of platform CPU `cpu`.
fn rd_frame(plan: &Plan<'_>, cpu: usize) -> &'static RdLpiRegisters {
    // SAFETY: the plan's redistributor region holds a frame per platform CPU (checked against
    // the hardware by `gic::init`), mapped as Device memory at EL2. Only EL2 writes these
    // registers; partitions see their RD frames read-only.
    unsafe { &*(plan.platform().redistributor(cpu).0 as *const RdLpiRegisters) }
}

/// Sets up every doorbell of the plan. `gic_id_bits` is the GIC's INTID width
/// (`GICD_TYPER.IDbits` + 1). Does nothing for a plan without doorbells.
pub fn init(plan: &Plan<'_>, gic_id_bits: u8) -> Result<(), Error> {
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
    for &cpu in &cpus {
        let registers = rd_frame(plan, cpu);
        if registers.typer.get() & TYPER_PLPIS == 0 {
            return Err(Error::NoLpis { cpu });
        }
        if registers.ctlr.get() & CTLR_ENABLE_LPIS != 0 {
            return Err(Error::AlreadyEnabled { cpu });
        }
        let memory = tables::program(&|memory| {
            registers.propbaser.set(propbaser(properties as u64, id_bits, memory));
            registers.propbaser.get()
        });
        tables::publish(properties, property_table_size(id_bits), memory);
        let pending = tables::allocate_zeroed(pending_table_size(id_bits), PENDING_TABLE_ALIGN);
        let memory = tables::program(&|memory| {
            registers.pendbaser.set(pendbaser(pending as u64, memory));
            registers.pendbaser.get()
        });
        tables::publish(pending, pending_table_size(id_bits), memory);
        registers.ctlr.set(registers.ctlr.get() | CTLR_ENABLE_LPIS);
    }

    // The ITS: one device (the DeviceID CPU stores carry), one collection per receiving CPU.
    let device = plan.platform().doorbell_device;
    let max_event = doorbells.iter().map(|doorbell| doorbell.event).max().unwrap_or(0);
    let event_bits = (32 - max_event.leading_zeros()).max(1) as u8;
    let collections = cpus.iter().max().map_or(0, |&cpu| cpu as u16 + 1);
    // SAFETY: the platform's ITS control frame, mapped as Device memory at EL2 and driven only
    // here (partitions get its translation page alone).
    let mut its = unsafe { Its::new(plan.platform().its.base.0 as usize, device + 1, collections, event_bits)? };
    let target = |cpu: usize| {
        if its.kind().physical_target {
            RdBase::Address(plan.platform().redistributor(cpu).0)
        } else {
            RdBase::Processor(((rd_frame(plan, cpu).typer.get() >> 8) & 0xffff) as u16)
        }
    };
    let targets: Vec<RdBase> = cpus.iter().map(|&cpu| target(cpu)).collect();
    let itt_bytes = (its.kind().itt_entry_size << event_bits).max(256);
    let itt = tables::allocate_zeroed(itt_bytes.next_power_of_two(), 256);
    tables::publish(itt, itt_bytes, TableMemory::NonCacheable);

    for (&cpu, &target) in cpus.iter().zip(&targets) {
        its.send(Command::Mapc { collection: cpu as u16, target, valid: true })?;
    }
    its.send(Command::Mapd { device, event_bits, itt: itt as u64, valid: true })?;
    for doorbell in doorbells {
        let mapti = Command::Mapti { device, event: doorbell.event, intid: doorbell.intid, collection: doorbell.cpu as u16 };
        its.send(mapti)?;
    }
    let mut last = Command::Invall { collection: 0 };
    for (&cpu, &target) in cpus.iter().zip(&targets) {
        its.send(Command::Invall { collection: cpu as u16 })?;
        last = Command::Sync { target };
        its.send(last)?;
    }
    its.wait(last)?;
    Ok(())
}
