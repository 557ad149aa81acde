//! Static virtio: a virtio 1.x device whose transport is fixed at build time. A driver
//! partition and a device partition share a *window* (a region of RAM both have in their stage
//! 2) holding a header, each side's state word, the device configuration, every queue's split
//! virtqueue at offsets both sides compute, and a buffer pool. Features are fixed; there are no
//! registers and no negotiation. Notifications are doorbells (`docs/doorbells.md`).
//!
//! This crate is what both sides and the host tools share: the binding ([`binding`]), the
//! window layout ([`layout`]) and header ([`header`]), bounds-checked access to a window
//! ([`window`]), and the device side: split virtqueues that treat everything in the window as
//! hostile ([`queue`]) and the console, net and block devices built on them ([`device`]).
//! `docs/static-virtio.md` is the specification.

#![cfg_attr(not(test), no_std)]

pub mod binding;
pub mod device;
pub mod header;
pub mod layout;
pub mod queue;
pub mod window;

#[cfg(test)]
mod tests;
