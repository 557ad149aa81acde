//! What the EL2 kernel and the guest runtime share at the bottom of the stack: the arm64 Image
//! header, self-relocation of a position-independent image, the linker symbols of
//! `linker/image.ld`, a coarse identity map that is built before the MMU is on, and cache
//! maintenance by address. Everything but the assembly builds and is tested on the host.

#![cfg_attr(not(test), no_std)]

pub mod blockmap;
pub mod image;
pub mod mmu;

#[cfg(target_arch = "aarch64")]
pub mod cache;
#[cfg(target_arch = "aarch64")]
pub mod layout;
#[cfg(target_arch = "aarch64")]
mod relocate;

#[cfg(target_arch = "aarch64")]
pub use relocate::relocate_and_clear_bss;
