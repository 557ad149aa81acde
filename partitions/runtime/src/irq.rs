//! Interrupts at EL1: the GIC CPU interface, this CPU's redistributor, handlers by INTID, and
//! SGIs. trapless routes physical interrupts straight to EL1, so taking one involves no exit;
//! only `ICC_PMR_EL1` (once per CPU, in [`init_cpu`]) and SGI writes trap to EL2.

use crate::facts::Boot;
use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Most interrupts one exception entry handles before returning, so that a flood of them
/// cannot keep the interrupted code from running (it is taken again if more are pending).
pub const MAX_PER_ENTRY: usize = 64;
/// Handlers that can be registered at once.
const SLOTS: usize = 32;
/// The INTIDs that mean "nothing to acknowledge" (1020..=1023).
const SPECIAL: core::ops::RangeInclusive<u32> = 1020..=1023;

/// Redistributor frame layout (GICv3).
const FRAME: u64 = 0x1_0000;
const GICR_TYPER: u64 = 0x8;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_TYPER_LAST: u64 = 1 << 4;
/// In the SGI frame: set-enable for SGIs and PPIs.
const GICR_ISENABLER0: u64 = 0x100;

struct Slot {
    intid: AtomicU32,
    handler: AtomicUsize,
}

const EMPTY: u32 = u32::MAX;
static SLOTS_TABLE: [Slot; SLOTS] =
    [const { Slot { intid: AtomicU32::new(EMPTY), handler: AtomicUsize::new(0) } }; SLOTS];
/// Interrupts acknowledged with no handler registered: spurious, from the partition's view.
static UNHANDLED: AtomicU64 = AtomicU64::new(0);

/// Why an interrupt cannot be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// Every handler slot is taken.
    NoSlot,
    /// This CPU's redistributor is not in the device tree's GIC node.
    NoRedistributor,
    /// Not an SGI or PPI (enable those elsewhere: SPIs and LPIs are EL2's).
    NotPrivate,
}

/// Waits until an interrupt arrives (`WFI`).
pub fn wait() {
    crate::arch::wait_for_interrupt();
}

/// Waits, sleeping in `WFI`, until `done()` holds. IRQs are masked between the check and the
/// `WFI` (which still wakes on a pending interrupt), so an interrupt that makes `done()` true
/// right after the check cannot be missed. Woken, the CPU takes the interrupt that woke it in
/// line, IRQs still masked, as the IRQ vector would: a sleeping CPU has nothing of the
/// interrupted code's to save, so it skips the exception entry and return and the 60-odd
/// registers they save and restore.
pub fn wait_until(done: impl Fn() -> bool) {
    loop {
        // SAFETY: masking and unmasking IRQs on this CPU around the check. Not `nomem`: the
        // compiler must not move `done()`'s loads across the mask.
        unsafe { asm!("msr daifset, #2", options(nostack)) };
        if done() {
            // SAFETY: as above.
            unsafe { asm!("msr daifclr, #2", options(nostack)) };
            return;
        }
        crate::arch::wait_for_interrupt();
        handle_one();
        // SAFETY: as above; anything else pending, or pending since, is taken here.
        unsafe { asm!("msr daifclr, #2", options(nostack)) };
    }
}

/// A slot being filled: its handler is not stored yet.
const CLAIMED: u32 = u32::MAX - 1;

/// The slots `intid` may be in, in the order it is looked for: from its home slot (`intid`
/// modulo the table's size) on round the table, so an interrupt is found in its home slot
/// unless another took it first. Slots are never emptied, so a search may stop at the first
/// empty one.
fn probe(intid: u32) -> impl Iterator<Item = &'static Slot> {
    let home = intid as usize % SLOTS;
    (0..SLOTS).map(move |step| &SLOTS_TABLE[(home + step) % SLOTS])
}

/// Calls `handler(intid)` whenever `intid` is taken on any CPU of the partition (replacing the
/// handler it had, if any).
pub fn register(intid: u32, handler: fn(u32)) -> Result<(), IrqError> {
    for slot in probe(intid) {
        let held = match slot.intid.compare_exchange(EMPTY, CLAIMED, Ordering::AcqRel, Ordering::Acquire) {
            // Claimed: the handler first, then the INTID that makes the slot visible to
            // `handler_for`.
            Ok(_) => {
                slot.handler.store(handler as usize, Ordering::Release);
                slot.intid.store(intid, Ordering::Release);
                return Ok(());
            }
            Err(held) => held,
        };
        if held == intid {
            slot.handler.store(handler as usize, Ordering::Release);
            return Ok(());
        }
    }
    Err(IrqError::NoSlot)
}

fn handler_for(intid: u32) -> Option<fn(u32)> {
    for slot in probe(intid) {
        match slot.intid.load(Ordering::Acquire) {
            EMPTY => return None,
            held if held == intid => {
                let address = slot.handler.load(Ordering::Acquire);
                // SAFETY: only `register` stores here, always a `fn(u32)`.
                return (address != 0).then(|| unsafe { core::mem::transmute::<usize, fn(u32)>(address) });
            }
            _ => {}
        }
    }
    None
}

/// Interrupts taken that had no handler.
pub fn unhandled() -> u64 {
    UNHANDLED.load(Ordering::Relaxed)
}

/// Opens this CPU's GIC CPU interface for Group 1 interrupts of any priority and unmasks IRQs.
pub fn init_cpu() {
    // SAFETY: these configure this CPU's own interface; ICC_PMR_EL1 traps to EL2, which writes
    // it for us.
    unsafe {
        asm!(
            "mrs {tmp}, icc_sre_el1",
            "orr {tmp}, {tmp}, #1",
            "msr icc_sre_el1, {tmp}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            "msr daifclr, #2",
            tmp = out(reg) _,
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nostack),
        );
    }
}

fn read64(address: u64) -> u64 {
    // SAFETY: callers pass registers of a redistributor the device tree gives this partition,
    // which stage 2 maps for it (RD frames read-only).
    unsafe { (address as *const u64).read_volatile() }
}

/// This CPU's affinity as `GICR_TYPER.Affinity_Value` has it (Aff3.Aff2.Aff1.Aff0).
pub fn own_affinity() -> u32 {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    trapless_abi::dt::pack_affinity(mpidr)
}

/// The SGI frame of this CPU's redistributor, found by its `GICR_TYPER` affinity (each read
/// of an RD frame's first page is emulated by EL2, one exit each).
fn own_sgi_frame(boot: &Boot) -> Option<u64> {
    let affinity = own_affinity();
    for region in boot.redistributor_regions() {
        let mut frame = region.start;
        while frame + 2 * FRAME <= region.end {
            let typer = read64(frame + GICR_TYPER);
            if typer >> 32 == u64::from(affinity) {
                return Some(frame + FRAME);
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            frame += match boot.redistributor_stride {
                0 if typer & GICR_TYPER_VLPIS != 0 => 4 * FRAME,
                0 => 2 * FRAME,
                stride => stride,
            };
        }
    }
    None
}

/// Enables SGI or PPI `intid` on this CPU (in its redistributor's SGI frame).
pub fn enable_private(boot: &Boot, intid: u32) -> Result<(), IrqError> {
    if intid >= 32 {
        return Err(IrqError::NotPrivate);
    }
    let frame = own_sgi_frame(boot).ok_or(IrqError::NoRedistributor)?;
    // SAFETY: ISENABLER0 in this CPU's own SGI frame, which stage 2 maps read/write for us;
    // writing 1 only enables the one interrupt.
    unsafe { ((frame + GICR_ISENABLER0) as *mut u32).write_volatile(1 << intid) };
    Ok(())
}

/// Sends SGI `intid` to each CPU in `mpidrs` (trapless delivers it only to the partition's
/// own CPUs). One register write per group of CPUs that share Aff3.Aff2.Aff1.
pub fn send_sgi(intid: u8, mpidrs: &[u64]) {
    let mut done = 0u64;
    for (index, &mpidr) in mpidrs.iter().enumerate() {
        if done & (1 << index) != 0 {
            continue;
        }
        let group = mpidr & !0xf;
        let mut targets = 0u64;
        for (other, &cpu) in mpidrs.iter().enumerate().skip(index) {
            if cpu & !0xf == group {
                targets |= 1 << (cpu & 0xf);
                done |= 1 << other;
            }
        }
        let value = ((group >> 32 & 0xff) << 48)
            | ((group >> 16 & 0xff) << 32)
            | ((group >> 8 & 0xff) << 16)
            | ((group & 0xf0) >> 4 << 44)
            | (u64::from(intid & 0xf) << 24)
            | targets;
        write_sgi1r(value);
    }
}

/// Sends SGI `intid` to every CPU of the partition but this one.
pub fn send_sgi_to_others(intid: u8) {
    write_sgi1r((1 << 40) | (u64::from(intid & 0xf) << 24));
}

fn write_sgi1r(value: u64) {
    // SAFETY: an SGI request; EL2 traps it and delivers it to our own CPUs only.
    unsafe { asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
}

/// Called by the IRQ vector: acknowledges, dispatches and ends pending interrupts, at most
/// [`MAX_PER_ENTRY`] of them.
pub(crate) extern "C" fn handle_irq() {
    for _ in 0..MAX_PER_ENTRY {
        if !handle_one() {
            break;
        }
    }
}

/// Acknowledges, dispatches and ends one pending interrupt; says whether there was one. A CPU
/// woken in [`wait_until`] takes one this way, and any other as it unmasks IRQs.
#[inline(always)]
fn handle_one() -> bool {
    let intid: u64;
    // SAFETY: acknowledging is what the GIC expects of the CPU that took the interrupt. The
    // DSB makes the acknowledge complete before anything the handler does: an LPI has no
    // active state, so a late acknowledge could otherwise swallow the next ring.
    unsafe { asm!("mrs {}, icc_iar1_el1", "dsb sy", out(reg) intid, options(nostack)) };
    let intid = (intid & 0xff_ffff) as u32;
    if SPECIAL.contains(&intid) {
        return false;
    }
    match handler_for(intid) {
        Some(handler) => handler(intid),
        None => {
            UNHANDLED.fetch_add(1, Ordering::Relaxed);
        }
    }
    // SAFETY: ends the interrupt acknowledged above (priority drop and deactivation).
    unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nostack)) };
    true
}
