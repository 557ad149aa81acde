//! The EL2 kernel's logic that needs no hardware, built and tested on the host: how exits are
//! classified and counted, what the PSCI server answers, how faults and stops are reported,
//! which trapped GIC registers it serves and how, the GIC distributor and redistributor pages it
//! emulates for each partition, how it turns a partition's fault into an abort, how partition
//! console output is framed, the virtio-mmio register block it emulates for the
//! trap-and-emulate baseline, and the check of the firmware's device tree against the platform.
//! The aarch64 half (`trapless-kernel`) carries out what these modules decide.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abort;
pub mod console;
pub mod exits;
pub mod fault;
pub mod firmware_dt;
pub mod gic_distributor;
pub mod gic_redistributor;
pub mod gic_sysreg;
pub mod hypercall;
pub mod its;
pub mod mmio;
pub mod psci;
pub mod uart8250;
pub mod virtio_mmio;
