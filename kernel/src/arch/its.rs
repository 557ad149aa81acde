//! The GIC ITS driver: its control-frame registers (tock-registers), its tables and its command
//! queue. What the commands and table registers hold is encoded, and tested, in
//! `trapless_kernel_core::its`; this module puts those values where the hardware reads them,
//! with the barriers and cache maintenance a real GIC needs (QEMU checks neither).

use crate::arch::tables::{self, TableMemory};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};
use trapless_kernel_core::its::{Baser, COMMAND_SIZE, Command, ItsType, MAX_TABLE_PAGES, TableType, bits_for, cbaser};

register_structs! {
    /// The ITS control frame (GIC architecture specification, §12.19).
    pub ItsRegisters {
        /// `GITS_CTLR`: Enabled (bit 0), Quiescent (bit 31).
        (0x0000 => ctlr: ReadWrite<u32>),
        (0x0004 => _iidr),
        /// `GITS_TYPER`.
        (0x0008 => typer: ReadOnly<u64>),
        (0x0010 => _reserved0),
        /// `GITS_CBASER`: the command queue.
        (0x0080 => cbaser: ReadWrite<u64>),
        /// `GITS_CWRITER`: offset of the next command software writes.
        (0x0088 => cwriter: ReadWrite<u64>),
        /// `GITS_CREADR`: offset of the next command the ITS reads; Stalled (bit 0).
        (0x0090 => creadr: ReadOnly<u64>),
        (0x0098 => _reserved1),
        /// `GITS_BASER<n>`: the ITS's own tables.
        (0x0100 => baser: [ReadWrite<u64>; 8]),
        (0x0140 => @END),
    }
}

const CTLR_ENABLED: u32 = 1 << 0;
const CTLR_QUIESCENT: u32 = 1 << 31;
const CREADR_STALLED: u64 = 1 << 0;
/// `GITS_BASER.Page_Size`: 0 is 4 KiB, the only granule trapless uses.
const PAGE_SIZE_FIELD: u64 = 0b11 << 8;
/// One page of command queue: 128 commands.
const QUEUE_BYTES: usize = 4096;
/// How many times to look at a register before giving up on the ITS.
const PATIENCE: u32 = 10_000_000;

/// What went wrong with the ITS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// It never became quiescent after being disabled.
    NotQuiescent,
    /// It cannot translate to physical LPIs.
    NoPhysicalLpis,
    /// A table needs a page size other than 4 KiB.
    PageSize { table: usize },
    /// A table would need more pages than a flat table can have.
    TableTooLarge { table: usize, pages: usize },
    /// A command stalled it (`GITS_CREADR.Stalled`): real hardware stops on a bad command.
    Stalled { command: Command },
    /// It stopped reading commands.
    Timeout,
    /// It supports fewer DeviceID or EventID bits than the plan needs.
    TooSmall { what: &'static str, needed: u8, has: u8 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotQuiescent => f.write_str("the ITS did not become quiescent"),
            Self::NoPhysicalLpis => f.write_str("the ITS does not support physical LPIs"),
            Self::PageSize { table } => write!(f, "ITS table {table} does not take 4 KiB pages"),
            Self::TableTooLarge { table, pages } => {
                write!(f, "ITS table {table} would need {pages} pages, more than the {MAX_TABLE_PAGES} of a flat table")
            }
            Self::Stalled { command } => write!(f, "the ITS stalled on {command:?}"),
            Self::Timeout => f.write_str("the ITS stopped reading commands"),
            Self::TooSmall { what, needed, has } => {
                write!(f, "the ITS has {has} {what} bits, the plan needs {needed}")
            }
        }
    }
}

/// A running ITS.
pub struct Its {
    registers: &'static ItsRegisters,
    kind: ItsType,
    /// The command queue, one command per entry.
    queue: &'static mut [[u64; 4]],
    queue_memory: TableMemory,
    /// Index of the next command to write.
    next: usize,
    /// What each queue entry holds, to say which command a stall stopped at.
    sent: Vec<Option<Command>>,
}

impl Its {
    /// Takes the ITS whose control frame is at `base`, disables it, and gives it its device and
    /// collection tables (flat tables for DeviceIDs below `devices` and for `collections`
    /// collections, with the entry size each `GITS_BASER<n>` states) and a command queue, then
    /// enables it. `GITS_TYPER` must allow the DeviceIDs and `event_bits` EventID bits. A GIC
    /// that does not snoop the CPUs' caches (`gic_snoops` false) gets every table
    /// non-shareable and non-cacheable, cleaned to memory after each write.
    ///
    /// # Safety
    ///
    /// `base` must be the ITS's control frame, mapped as Device memory, and nothing else may
    /// drive the ITS.
    pub unsafe fn new(base: usize, devices: u64, collections: usize, event_bits: u8, gic_snoops: bool) -> Result<Self, Error> {
        // SAFETY: our caller promised `base` is the ITS control frame and ours alone.
        let registers = unsafe { &*(base as *const ItsRegisters) };
        registers.ctlr.set(registers.ctlr.get() & !CTLR_ENABLED);
        wait_for(|| registers.ctlr.get() & CTLR_QUIESCENT != 0).map_err(|_| Error::NotQuiescent)?;

        let typer = registers.typer.get();
        if typer & 1 == 0 {
            return Err(Error::NoPhysicalLpis);
        }
        let kind = ItsType::decode(typer);
        let device_bits = bits_for(u32::try_from(devices - 1).unwrap_or(u32::MAX));
        if device_bits > kind.device_bits {
            return Err(Error::TooSmall { what: "DeviceID", needed: device_bits, has: kind.device_bits });
        }
        if event_bits > kind.event_bits {
            return Err(Error::TooSmall { what: "EventID", needed: event_bits, has: kind.event_bits });
        }

        for (index, register) in registers.baser.iter().enumerate() {
            let baser = Baser(register.get());
            let entries = match baser.table_type() {
                TableType::Devices => devices as usize,
                TableType::Collections => collections,
                _ => continue,
            };
            let pages = (entries * baser.entry_size()).div_ceil(4096).max(1);
            if pages > MAX_TABLE_PAGES {
                return Err(Error::TableTooLarge { table: index, pages });
            }
            let table = tables::allocate_zeroed(pages * 4096, 64 * 1024);
            let memory = tables::program(gic_snoops, &|memory| {
                register.set(baser.with_flat_table(table as u64, pages, memory).0);
                register.get()
            });
            if register.get() & PAGE_SIZE_FIELD != 0 {
                return Err(Error::PageSize { table: index });
            }
            tables::publish(table, pages * 4096, memory);
        }

        let queue = tables::allocate_zeroed(QUEUE_BYTES, 64 * 1024);
        let queue_memory = tables::program(gic_snoops, &|memory| {
            registers.cbaser.set(cbaser(queue as u64, QUEUE_BYTES / 4096, memory));
            registers.cbaser.get()
        });
        registers.cwriter.set(0);
        tables::barrier();
        registers.ctlr.set(registers.ctlr.get() | CTLR_ENABLED);
        // SAFETY: the queue was just allocated for the ITS alone, suitably aligned and zeroed.
        let queue = unsafe { core::slice::from_raw_parts_mut(queue as *mut [u64; 4], QUEUE_BYTES / COMMAND_SIZE) };
        let sent = vec![None; queue.len()];
        Ok(Self { registers, kind, queue, queue_memory, next: 0, sent })
    }

    /// What `GITS_TYPER` says.
    pub fn kind(&self) -> ItsType {
        self.kind
    }

    /// Queues `command` and tells the ITS, waiting for room if the queue is full.
    pub fn send(&mut self, command: Command) -> Result<(), Error> {
        let following = (self.next + 1) % self.queue.len();
        let registers = self.registers;
        wait_for(|| self.stalled() || (registers.creadr.get() as usize & 0xf_ffe0) / COMMAND_SIZE != following)?;
        self.check_stall()?;
        self.queue[self.next] = command.encode();
        let entry = &self.queue[self.next] as *const [u64; 4] as usize;
        tables::publish(entry, COMMAND_SIZE, self.queue_memory);
        self.sent[self.next] = Some(command);
        self.next = following;
        self.registers.cwriter.set((self.next * COMMAND_SIZE) as u64);
        Ok(())
    }

    /// Waits until the ITS has carried out every queued command.
    pub fn wait(&mut self) -> Result<(), Error> {
        let registers = self.registers;
        let done = (self.next * COMMAND_SIZE) as u64;
        wait_for(|| self.stalled() || registers.creadr.get() == done)?;
        self.check_stall()
    }

    fn stalled(&self) -> bool {
        self.registers.creadr.get() & CREADR_STALLED != 0
    }

    /// A stall stops the ITS at the command it could not carry out, which `GITS_CREADR` points at.
    fn check_stall(&self) -> Result<(), Error> {
        if !self.stalled() {
            return Ok(());
        }
        let at = (self.registers.creadr.get() as usize & 0xf_ffe0) / COMMAND_SIZE;
        Err(self.sent[at].map_or(Error::Timeout, |command| Error::Stalled { command }))
    }
}

/// Polls `condition` a bounded number of times.
fn wait_for(condition: impl Fn() -> bool) -> Result<(), Error> {
    for _ in 0..PATIENCE {
        if condition() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(Error::Timeout)
}
