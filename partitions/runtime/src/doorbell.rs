//! Doorbells: ringing another partition with one store, and handlers for the LPIs that ring
//! this one. Neither side enters EL2: the store goes to the GIC ITS's `GITS_TRANSLATER` (the
//! one ITS page this partition may touch), and the LPI is taken at EL1 like any interrupt.

use crate::facts::{Boot, Incoming};
use crate::irq;
use core::arch::asm;

/// Why a doorbell cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorbellError {
    /// The device tree gives this partition no doorbell of that name (that way round).
    Unknown,
    /// Every interrupt handler slot is taken.
    NoHandlerSlot,
}

/// A doorbell this partition rings.
#[derive(Clone, Copy, Debug)]
pub struct Bell {
    translater: usize,
    event: u32,
}

impl Bell {
    /// Rings it: first makes this CPU's earlier writes (to a shared ring, say) complete, so
    /// that the receiver sees them when it takes the LPI, then stores the EventID.
    pub fn ring(&self) {
        // SAFETY: `translater` is GITS_TRANSLATER in the doorbell page the device tree gives
        // this partition (mapped as Device memory at both stages); a 32-bit store of an
        // EventID is what it takes.
        unsafe {
            asm!("dsb st", options(nostack, preserves_flags));
            (self.translater as *mut u32).write_volatile(self.event);
        }
    }

    /// Its EventID.
    pub fn event(&self) -> u32 {
        self.event
    }
}

/// The doorbell called `name` that this partition rings.
pub fn bell(boot: &Boot, name: &str) -> Result<Bell, DoorbellError> {
    let outgoing = boot.doorbells.outgoing(name).ok_or(DoorbellError::Unknown)?;
    bell_for_event(boot, outgoing.event)
}

/// The doorbell this partition rings by storing `event` (a static virtio link's, which has no
/// name of its own).
pub fn bell_for_event(boot: &Boot, event: u32) -> Result<Bell, DoorbellError> {
    let translater = boot.doorbells.translater.ok_or(DoorbellError::Unknown)?;
    Ok(Bell { translater: translater as usize, event })
}

/// Calls `handler(lpi)` whenever the doorbell called `name` rings this partition, and says
/// which LPI it is and which CPU takes it (that CPU must have run [`irq::init_cpu`]).
/// A doorbell is one pending bit: rings that come before the handler runs are taken once.
pub fn on(boot: &Boot, name: &str, handler: fn(u32)) -> Result<Incoming, DoorbellError> {
    let incoming = boot.doorbells.incoming(name).ok_or(DoorbellError::Unknown)?;
    irq::register(incoming.lpi, handler).map_err(|_| DoorbellError::NoHandlerSlot)?;
    Ok(incoming)
}
