//! Static virtio: a virtio 1.x device whose transport is fixed at build time. A driver
//! partition and a device partition share a *window* (a region of RAM both have in their stage
//! 2) holding a header, each side's state word, the device configuration, every queue's split
//! virtqueue at offsets both sides compute, and a buffer pool. Features are fixed; there are no
//! registers and no negotiation. Notifications are doorbells (`docs/doorbells.md`).
//!
//! This crate is what both sides and the host tools share: the binding ([`binding`]), the
//! window layout ([`layout`]) and header ([`header`]), bounds-checked access to a window
//! ([`window`]) and to a split ring's fields, checked once ([`ring`]); the device side: split
//! virtqueues that treat everything in the window as hostile ([`queue`]), the console, net and
//! block devices built on them ([`device`]) and the start-up and reset handshake around them
//! ([`link`]); and, with feature `driver`, a virtio-drivers transport, so the stock drivers run
//! on a link ([`driver`]), and a guard that keeps a hostile device from making them panic or
//! overrun a buffer ([`guard`]).
//! `docs/static-virtio.md` is the specification.

#![cfg_attr(not(test), no_std)]

#[cfg(feature = "driver")]
extern crate alloc;

pub mod binding;
pub mod device;
#[cfg(feature = "driver")]
pub mod driver;
#[cfg(feature = "driver")]
pub mod guard;
pub mod header;
pub mod layout;
pub mod link;
#[cfg(feature = "driver")]
pub mod pool;
pub mod queue;
pub mod ring;
pub mod window;

#[cfg(test)]
mod tests;

/// What a side does in each turn of a loop that waits for its peer: `yield` on aarch64 (as
/// Linux's `cpu_relax`), a hint that lets another hardware thread, or another vCPU of an
/// emulator that runs them in turn (QEMU in instruction-counting mode), go first; a spin-loop
/// hint elsewhere.
#[inline(always)]
pub fn relax() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `yield` is a hint with no effect on memory or registers.
    unsafe {
        core::arch::asm!("yield", options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::hint::spin_loop();
}

/// How one side of a link notifies the other about a queue (a doorbell, in a partition).
pub trait Notify {
    fn notify(&mut self, queue: u16);
}
