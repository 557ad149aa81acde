//! The EL2 exception vector table and the save/restore of a partition CPU's registers.
//!
//! Every exit from a partition saves `x0`..`x30`, `ELR_EL2` and `SPSR_EL2` in a [`GuestFrame`]
//! on this CPU's EL2 stack, calls [`crate::exit::handle_exit`] and returns with `eret`. EL2 is
//! built soft-float, so it never touches the partition's FP/SIMD/SVE registers and need not
//! save them. Exceptions taken from EL2 itself are kernel bugs and go to
//! [`crate::exit::handle_el2_exception`].

use core::arch::global_asm;

/// Registers of a partition CPU as saved at an exit.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub struct GuestFrame {
    /// `x0`..`x30`.
    pub x: [u64; 31],
    /// `ELR_EL2`: where the partition resumes.
    pub elr: u64,
    /// `SPSR_EL2`: its PSTATE.
    pub spsr: u64,
    padding: u64,
}

/// Bytes of a [`GuestFrame`] on the stack.
pub const FRAME_SIZE: usize = core::mem::size_of::<GuestFrame>();
const _: () = assert!(FRAME_SIZE == 272 && FRAME_SIZE.is_multiple_of(16));

/// What kind of exception reached a vector (the `x1` argument of the handlers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ExceptionKind {
    Sync = 0,
    Irq = 1,
    Fiq = 2,
    SError = 3,
}

impl ExceptionKind {
    pub fn from_raw(raw: u64) -> Self {
        match raw {
            0 => Self::Sync,
            1 => Self::Irq,
            2 => Self::Fiq,
            _ => Self::SError,
        }
    }
}

impl GuestFrame {
    /// A frame that enters EL1h at `entry` with `x0` = `x0` and every exception masked.
    pub fn entering(entry: u64, x0: u64) -> Self {
        /// SPSR: EL1h, with D, A, I and F masked.
        const EL1H_MASKED: u64 = 0b0101 | (0b1111 << 6);
        let mut frame = Self { elr: entry, spsr: EL1H_MASKED, ..Self::default() };
        frame.x[0] = x0;
        frame
    }
}

global_asm!(
    r#"
.macro lower_el_entry kind
    .balign 0x80
    sub sp, sp, #{frame_size}
    stp x0, x1, [sp, #0]
    mov x1, #\kind
    b {save}
.endm

.macro el2_entry kind
    .balign 0x80
    mov x0, #\kind
    mrs x1, esr_el2
    mrs x2, elr_el2
    mrs x3, far_el2
    b {el2_handler}
.endm

.pushsection .text.vectors, "ax"
.balign 0x800
.global __el2_vectors
__el2_vectors:
    // Current EL with SP_EL0: never used.
    el2_entry 0
    el2_entry 1
    el2_entry 2
    el2_entry 3
    // Current EL with SP_EL2: a kernel bug.
    el2_entry 0
    el2_entry 1
    el2_entry 2
    el2_entry 3
    // Lower EL, AArch64: partitions.
    lower_el_entry 0
    lower_el_entry 1
    lower_el_entry 2
    lower_el_entry 3
    // Lower EL, AArch32: trapless runs no AArch32 partitions (HCR_EL2.RW is set).
    lower_el_entry 0
    lower_el_entry 1
    lower_el_entry 2
    lower_el_entry 3
.popsection
"#,
    frame_size = const FRAME_SIZE,
    save = sym save_and_handle,
    el2_handler = sym crate::exit::handle_el2_exception,
);

/// The common tail of the lower-EL vectors: `x0`/`x1` are saved at `[sp]` and `x1` holds the
/// [`ExceptionKind`].
#[unsafe(naked)]
unsafe extern "C" fn save_and_handle() -> ! {
    core::arch::naked_asm!(
        "stp x2, x3, [sp, #16]",
        "stp x4, x5, [sp, #32]",
        "stp x6, x7, [sp, #48]",
        "stp x8, x9, [sp, #64]",
        "stp x10, x11, [sp, #80]",
        "stp x12, x13, [sp, #96]",
        "stp x14, x15, [sp, #112]",
        "stp x16, x17, [sp, #128]",
        "stp x18, x19, [sp, #144]",
        "stp x20, x21, [sp, #160]",
        "stp x22, x23, [sp, #176]",
        "stp x24, x25, [sp, #192]",
        "stp x26, x27, [sp, #208]",
        "stp x28, x29, [sp, #224]",
        "mrs x2, elr_el2",
        "stp x30, x2, [sp, #240]",
        "mrs x3, spsr_el2",
        "str x3, [sp, #256]",
        "mov x0, sp",
        "bl {handle}",
        "b {resume}",
        handle = sym crate::exit::handle_exit,
        resume = sym resume_guest,
    )
}

/// Restores the [`GuestFrame`] at `sp`, pops it and returns to the partition.
#[unsafe(naked)]
pub unsafe extern "C" fn resume_guest() -> ! {
    core::arch::naked_asm!(
        "ldp x30, x2, [sp, #240]",
        "ldr x3, [sp, #256]",
        "msr elr_el2, x2",
        "msr spsr_el2, x3",
        "ldp x0, x1, [sp, #0]",
        "ldp x2, x3, [sp, #16]",
        "ldp x4, x5, [sp, #32]",
        "ldp x6, x7, [sp, #48]",
        "ldp x8, x9, [sp, #64]",
        "ldp x10, x11, [sp, #80]",
        "ldp x12, x13, [sp, #96]",
        "ldp x14, x15, [sp, #112]",
        "ldp x16, x17, [sp, #128]",
        "ldp x18, x19, [sp, #144]",
        "ldp x20, x21, [sp, #160]",
        "ldp x22, x23, [sp, #176]",
        "ldp x24, x25, [sp, #192]",
        "ldp x26, x27, [sp, #208]",
        "ldp x28, x29, [sp, #224]",
        "add sp, sp, #{frame_size}",
        "eret",
        frame_size = const FRAME_SIZE,
    )
}

unsafe extern "C" {
    /// The vector table (in the assembly above), for `VBAR_EL2`.
    pub static __el2_vectors: u8;
}
