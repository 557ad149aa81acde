//! The aarch64 half of the runtime: entry, exception vectors and the EL1 MMU.

use crate::facts::{self, Boot};
use crate::{console, psci};
use core::arch::{asm, global_asm, naked_asm};
use trapless_arm64::blockmap::{IdentityMap, Regime};
use trapless_arm64::{cache, layout, mmu};

/// Bytes of stack for each CPU.
pub const STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
pub struct Stack(pub [u8; STACK_SIZE]);

/// Bytes of the boot CPU's stack: more than the others', for drivers whose queues are large
/// values (virtio-drivers' `VirtQueue` of 256 entries holds 8 KiB and is returned by value).
pub const BOOT_STACK_SIZE: usize = 128 * 1024;

#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);

/// The boot CPU's stack.
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

/// The EL1 identity map: the partition's RAM as Normal memory, its static virtio windows as
/// Normal memory it never executes, everything else as Device.
static mut MAP: IdentityMap = IdentityMap::new();

/// `CPACR_EL1.FPEN`: FP/SIMD on at EL1 and EL0 (the runtime is hard-float Rust).
const CPACR_FPEN: u64 = 0b11 << 20;
/// The boot CPU's first instruction after the header: `x0` holds the device tree.
///
/// # Safety
///
/// Only the loader enters here, once, as the arm64 boot protocol says.
#[unsafe(naked)]
pub unsafe extern "C" fn start() -> ! {
    naked_asm!(
        "mov x19, x0",
        "bl {relocate}",
        "mov x1, #{fpen}",
        "msr cpacr_el1, x1",
        "isb",
        "adrp x0, {stack}",
        "add x0, x0, :lo12:{stack}",
        "mov x1, #{stack_size}",
        "add sp, x0, x1",
        "adrp x0, {vectors}",
        "add x0, x0, :lo12:{vectors}",
        "msr vbar_el1, x0",
        "mov x0, x19",
        "bl {main}",
        "b .",
        relocate = sym trapless_arm64::relocate_and_clear_bss,
        fpen = const CPACR_FPEN,
        stack = sym BOOT_STACK,
        stack_size = const BOOT_STACK_SIZE,
        vectors = sym __guest_vectors,
        main = sym boot_main,
    )
}

/// Where a secondary CPU starts (PSCI `CPU_ON` context = its [`crate::smp`] boot record):
/// FP on, its stack, the boot CPU's tables and vectors, then [`crate::smp::secondary_main`].
///
/// # Safety
///
/// Only PSCI `CPU_ON` enters here, with `x0` = a boot record that [`crate::smp::start`] wrote.
#[unsafe(naked)]
pub unsafe extern "C" fn secondary_start() -> ! {
    naked_asm!(
        "mov x19, x0",
        "mov x1, #{fpen}",
        "msr cpacr_el1, x1",
        "isb",
        "ldr x1, [x19]",
        "mov sp, x1",
        "adrp x0, {map}",
        "add x0, x0, :lo12:{map}",
        "bl {enable_mmu}",
        "adrp x0, {vectors}",
        "add x0, x0, :lo12:{vectors}",
        "msr vbar_el1, x0",
        "mov x0, x19",
        "bl {main}",
        "b .",
        fpen = const CPACR_FPEN,
        map = sym MAP,
        enable_mmu = sym mmu::enable_el1,
        vectors = sym __guest_vectors,
        main = sym crate::smp::secondary_main,
    )
}

/// The boot CPU in Rust, MMU still off: no atomics until it is on.
extern "C" fn boot_main(dtb: usize) -> ! {
    // The tree's header gives its size; trapless placed it in our RAM, 8-byte aligned.
    // SAFETY: x0 points at our device tree (the boot protocol); it stays untouched for good.
    let size = u32::from_be(unsafe { ((dtb + 4) as *const u32).read_volatile() }) as usize;
    // SAFETY: as above, `size` bytes from its header.
    let tree = unsafe { core::slice::from_raw_parts(dtb as *const u8, size) };
    let Ok(boot) = facts::read(tree) else {
        // Without a tree we know no console and no PSCI conduit: HVC is trapless's.
        psci::system_reset_with(facts::Conduit::Hvc)
    };
    // SAFETY: only this CPU runs, and no CPU uses the tables yet.
    #[allow(clippy::deref_addrof, reason = "a reference to a static mut must come from a raw pointer")]
    let map = unsafe { &mut *(&raw mut MAP) };
    let mut windows = [const { 0..0 }; facts::MAX_LINKS];
    for (slot, link) in windows.iter_mut().zip(boot.links()) {
        *slot = link.window.clone();
    }
    if map.build(boot.memory.clone(), &windows[..boot.links().count()], Regime::El1).is_err() {
        psci::system_reset_with(boot.psci)
    }
    let (start, end) = (layout::image_start(), layout::image_end());
    // SAFETY: the image, BSS, stack and tables were written with the MMU (and the data cache)
    // off, so no cached line of them is newer than memory.
    unsafe { cache::invalidate(start, end - start) };
    // SAFETY: the map covers our RAM, where this code, its stack and its tables lie.
    unsafe { mmu::enable_el1(map.root()) };

    console::init(boot.console);
    psci::init(boot.psci);
    #[cfg(feature = "alloc")]
    crate::heap::init(&boot);
    crate::smp::init(&boot);
    unsafe extern "Rust" {
        safe fn trapless_guest_main(boot: &Boot);
    }
    trapless_guest_main(&boot);
    psci::system_off()
}

/// Any exception but an IRQ at EL1: a bug in the guest, reported before the partition resets.
extern "C" fn exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    crate::println!("guest: unexpected exception {kind} at PC {elr:#x}: ESR {esr:#x}, FAR {far:#x}");
    psci::system_reset()
}

/// Bytes an IRQ entry saves: `x0`..`x18`, `x29`, `x30` (0..168), `ELR_EL1`, `SPSR_EL1`
/// (168), `FPCR`, `FPSR` (184), then `q0`..`q31` (208..720). The interrupted code may be anywhere, so every register the
/// Rust handler may change is saved, FP/SIMD included.
const IRQ_FRAME: usize = 720;

global_asm!(
    r#"
.macro guest_vector kind
    .balign 0x80
    mov x0, #\kind
    mrs x1, esr_el1
    mrs x2, elr_el1
    mrs x3, far_el1
    b {exception}
.endm

.macro irq_vector
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp, #0]
    b {irq_entry}
.endm

.pushsection .text.vectors, "ax"
.balign 0x800
.global __guest_vectors
__guest_vectors:
    // Current EL with SP_EL0.
    guest_vector 0
    guest_vector 1
    guest_vector 2
    guest_vector 3
    // Current EL with SP_EL1: the runtime's own code.
    guest_vector 4
    irq_vector
    guest_vector 6
    guest_vector 7
    // Lower EL: the runtime runs nothing at EL0.
    .irp kind, 8, 9, 10, 11, 12, 13, 14, 15
    guest_vector \kind
    .endr
.popsection
"#,
    exception = sym exception,
    frame = const IRQ_FRAME,
    irq_entry = sym irq_entry,
);

/// The rest of the IRQ vector: `x0`/`x1` are saved at `[sp]`.
#[unsafe(naked)]
unsafe extern "C" fn irq_entry() {
    naked_asm!(
        "stp x2, x3, [sp, #16]",
        "stp x4, x5, [sp, #32]",
        "stp x6, x7, [sp, #48]",
        "stp x8, x9, [sp, #64]",
        "stp x10, x11, [sp, #80]",
        "stp x12, x13, [sp, #96]",
        "stp x14, x15, [sp, #112]",
        "stp x16, x17, [sp, #128]",
        "str x18, [sp, #144]",
        "stp x29, x30, [sp, #152]",
        "mrs x0, elr_el1",
        "mrs x1, spsr_el1",
        "stp x0, x1, [sp, #168]",
        "mrs x0, fpcr",
        "mrs x1, fpsr",
        "stp x0, x1, [sp, #184]",
        "add x0, sp, #208",
        "stp q0, q1, [x0, #0]",
        "stp q2, q3, [x0, #32]",
        "stp q4, q5, [x0, #64]",
        "stp q6, q7, [x0, #96]",
        "stp q8, q9, [x0, #128]",
        "stp q10, q11, [x0, #160]",
        "stp q12, q13, [x0, #192]",
        "stp q14, q15, [x0, #224]",
        "stp q16, q17, [x0, #256]",
        "stp q18, q19, [x0, #288]",
        "stp q20, q21, [x0, #320]",
        "stp q22, q23, [x0, #352]",
        "stp q24, q25, [x0, #384]",
        "stp q26, q27, [x0, #416]",
        "stp q28, q29, [x0, #448]",
        "stp q30, q31, [x0, #480]",
        "bl {handle}",
        "add x0, sp, #208",
        "ldp q0, q1, [x0, #0]",
        "ldp q2, q3, [x0, #32]",
        "ldp q4, q5, [x0, #64]",
        "ldp q6, q7, [x0, #96]",
        "ldp q8, q9, [x0, #128]",
        "ldp q10, q11, [x0, #160]",
        "ldp q12, q13, [x0, #192]",
        "ldp q14, q15, [x0, #224]",
        "ldp q16, q17, [x0, #256]",
        "ldp q18, q19, [x0, #288]",
        "ldp q20, q21, [x0, #320]",
        "ldp q22, q23, [x0, #352]",
        "ldp q24, q25, [x0, #384]",
        "ldp q26, q27, [x0, #416]",
        "ldp q28, q29, [x0, #448]",
        "ldp q30, q31, [x0, #480]",
        "ldp x0, x1, [sp, #184]",
        "msr fpcr, x0",
        "msr fpsr, x1",
        "ldp x0, x1, [sp, #168]",
        "msr elr_el1, x0",
        "msr spsr_el1, x1",
        "ldp x29, x30, [sp, #152]",
        "ldr x18, [sp, #144]",
        "ldp x16, x17, [sp, #128]",
        "ldp x14, x15, [sp, #112]",
        "ldp x12, x13, [sp, #96]",
        "ldp x10, x11, [sp, #80]",
        "ldp x8, x9, [sp, #64]",
        "ldp x6, x7, [sp, #48]",
        "ldp x4, x5, [sp, #32]",
        "ldp x2, x3, [sp, #16]",
        "ldp x0, x1, [sp, #0]",
        "add sp, sp, #{frame}",
        "eret",
        handle = sym crate::irq::handle_irq,
        frame = const IRQ_FRAME,
    )
}

unsafe extern "C" {
    static __guest_vectors: u8;
}

/// Stops this CPU until an interrupt arrives (it wakes even if IRQs are masked, without
/// taking it).
pub fn wait_for_interrupt() {
    // SAFETY: WFI only waits.
    unsafe { asm!("wfi", options(nostack)) };
}


#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("guest panic: {info}");
    psci::system_reset()
}
