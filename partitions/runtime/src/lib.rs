//! A small no_std runtime for trapless partitions at EL1.
//!
//! It provides what a guest image needs to start and to talk to trapless: the arm64 Image
//! header and entry (self-relocation, BSS, stack, FP/SIMD on, exception vectors, an identity
//! map with the MMU on), a console (its own PL011 if the DTB gives it one, else the console
//! hypercall), a PSCI client, secondary CPU start-up, and [`Boot`]: the facts the partition's
//! device tree states. A guest is a binary with `trapless_guest::entry!(main)`; when `main`
//! returns, the partition powers off through PSCI `SYSTEM_OFF`.

#![cfg_attr(target_os = "none", no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod facts;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod doorbell;
#[cfg(all(target_os = "none", feature = "alloc"))]
mod heap;
#[cfg(target_os = "none")]
pub mod hypercall;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(target_os = "none")]
pub mod psci;
#[cfg(target_os = "none")]
pub mod smp;
#[cfg(target_os = "none")]
pub mod time;
#[cfg(target_os = "none")]
pub mod virtio;

pub use facts::{Boot, ConsoleKind};

#[doc(hidden)]
pub use trapless_arm64::image::GUEST_TEXT_OFFSET as __GUEST_TEXT_OFFSET;
#[doc(hidden)]
pub use trapless_arm64::image_header as __image_header;

/// Declares the guest's `main(&Boot)`: emits the Image header and hands control to `main` once
/// the runtime is up. Returning from `main` powers the partition off.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::__image_header!($crate::__start, $crate::__GUEST_TEXT_OFFSET);

        #[unsafe(export_name = "trapless_guest_main")]
        fn __trapless_guest_main(boot: &$crate::Boot) {
            let main: fn(&$crate::Boot) = $main;
            main(boot)
        }
    };
}

#[cfg(target_os = "none")]
#[doc(hidden)]
pub use arch::start as __start;
