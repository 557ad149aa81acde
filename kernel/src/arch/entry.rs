//! Entry points: the Image header, the boot CPU's and the secondary CPUs' first instructions,
//! their stacks and translation tables, and the first `eret` into a partition.

use crate::arch::vectors::GuestFrame;
use core::arch::naked_asm;
use trapless_arm64::blockmap::IdentityMap;
use trapless_arm64::mmu;
use trapless_plan::MAX_CPUS;

trapless_arm64::image_header!(primary_entry, trapless_arm64::image::KERNEL_TEXT_OFFSET);

/// Bytes of EL2 stack per CPU.
pub const STACK_SIZE: usize = 16 * 1024;

/// An EL2 stack.
#[repr(C, align(16))]
pub struct Stack([u8; STACK_SIZE]);

/// One EL2 stack per platform CPU, which it uses whenever it runs its partition's exits.
pub static mut STACKS: [Stack; MAX_CPUS] = [const { Stack([0; STACK_SIZE]) }; MAX_CPUS];

/// The boot CPU's stack until it enters its partition (on its own [`STACKS`] entry) or turns
/// off: which platform CPU boots is the firmware's choice, so it cannot borrow one of those.
static mut BOOT_STACK: Stack = Stack([0; STACK_SIZE]);

/// The EL2 translation tables: RAM as Normal memory, everything else as Device. Written by the
/// boot CPU before any CPU turns its MMU on, read only by the table walkers afterwards.
pub static mut EL2_MAP: IdentityMap = IdentityMap::new();

/// The boot CPU's entry: `x0` holds the firmware DTB. Makes sure EL2 is in its non-VHE form,
/// relocates the image, clears BSS, takes the boot stack and calls [`crate::boot::primary_main`]
/// with the MMU still off.
#[unsafe(naked)]
#[unsafe(link_section = ".text.entry")]
unsafe extern "C" fn primary_entry() -> ! {
    naked_asm!(
        "mov x19, x0",
        "msr hcr_el2, xzr",
        "isb",
        "bl {relocate}",
        "adrp x0, {vectors}",
        "add x0, x0, :lo12:{vectors}",
        "msr vbar_el2, x0",
        "adrp x0, {stack}",
        "add x0, x0, :lo12:{stack}",
        "mov x1, #{stack_size}",
        "add sp, x0, x1",
        "mov x0, x19",
        "bl {main}",
        "b .",
        relocate = sym trapless_arm64::relocate_and_clear_bss,
        vectors = sym crate::arch::vectors::__el2_vectors,
        stack = sym BOOT_STACK,
        stack_size = const STACK_SIZE,
        main = sym crate::boot::primary_main,
    )
}

/// Where the firmware starts a secondary CPU (PSCI `CPU_ON` context = its platform index):
/// takes that CPU's stack, turns the MMU on with the boot CPU's tables and calls
/// [`crate::boot::secondary_main`].
///
/// # Safety
///
/// Only the firmware's `CPU_ON` enters here, with `x0` = the index of the CPU it starts.
#[unsafe(naked)]
pub unsafe extern "C" fn secondary_entry() -> ! {
    naked_asm!(
        "mov x19, x0",
        "msr hcr_el2, xzr",
        "isb",
        "adrp x0, {vectors}",
        "add x0, x0, :lo12:{vectors}",
        "msr vbar_el2, x0",
        "adrp x0, {map}",
        "add x0, x0, :lo12:{map}",
        "bl {enable_mmu}",
        "adrp x0, {stacks}",
        "add x0, x0, :lo12:{stacks}",
        "mov x1, #{stack_size}",
        "madd x0, x19, x1, x0",
        "add sp, x0, x1",
        "mov x0, x19",
        "bl {main}",
        "b .",
        vectors = sym crate::arch::vectors::__el2_vectors,
        map = sym EL2_MAP,
        enable_mmu = sym mmu::enable_el2,
        stacks = sym STACKS,
        stack_size = const STACK_SIZE,
        main = sym crate::boot::secondary_main,
    )
}

/// The top of the EL2 stack of platform CPU `cpu`.
pub fn stack_top(cpu: usize) -> usize {
    (&raw const STACKS as usize) + (cpu + 1) * STACK_SIZE
}

/// Enters a partition for the first time on this CPU: loads `frame`, resets the EL2 stack to
/// `stack_top` (so exits start from an empty stack) and returns to EL1.
///
/// # Safety
///
/// The per-CPU EL2 state (stage 2, `HCR_EL2`, vectors) must be set up for the partition
/// `frame` belongs to, and `stack_top` must be this CPU's stack.
#[unsafe(naked)]
pub unsafe extern "C" fn enter_guest(frame: &GuestFrame, stack_top: usize) -> ! {
    naked_asm!(
        "mov sp, x1",
        "ldp x2, x3, [x0, #248]",
        "msr elr_el2, x2",
        "msr spsr_el2, x3",
        "ldr x30, [x0, #240]",
        "ldp x28, x29, [x0, #224]",
        "ldp x26, x27, [x0, #208]",
        "ldp x24, x25, [x0, #192]",
        "ldp x22, x23, [x0, #176]",
        "ldp x20, x21, [x0, #160]",
        "ldp x18, x19, [x0, #144]",
        "ldp x16, x17, [x0, #128]",
        "ldp x14, x15, [x0, #112]",
        "ldp x12, x13, [x0, #96]",
        "ldp x10, x11, [x0, #80]",
        "ldp x8, x9, [x0, #64]",
        "ldp x6, x7, [x0, #48]",
        "ldp x4, x5, [x0, #32]",
        "ldp x2, x3, [x0, #16]",
        "ldp x0, x1, [x0]",
        "eret",
    )
}
