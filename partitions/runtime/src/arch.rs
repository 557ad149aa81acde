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

/// The boot CPU's stack.
static mut BOOT_STACK: Stack = Stack([0; STACK_SIZE]);

/// The EL1 identity map: the partition's RAM as Normal memory, everything else as Device.
static mut MAP: IdentityMap = IdentityMap::new();

/// `CPACR_EL1.FPEN`: FP/SIMD on at EL1 and EL0 (the runtime is hard-float Rust).
const CPACR_FPEN: u64 = 0b11 << 20;
/// The boot CPU's first instruction after the header: `x0` holds the device tree.
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
        stack_size = const STACK_SIZE,
        vectors = sym __guest_vectors,
        main = sym boot_main,
    )
}

/// Where a secondary CPU starts (PSCI `CPU_ON` context = its [`crate::smp`] boot record):
/// FP on, its stack, the boot CPU's tables and vectors, then [`crate::smp::secondary_main`].
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
    let map = unsafe { &mut *(&raw mut MAP) };
    if map.build(boot.memory.clone(), Regime::El1).is_err() {
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
    crate::smp::init(&boot);
    unsafe extern "Rust" {
        safe fn trapless_guest_main(boot: &Boot);
    }
    trapless_guest_main(&boot);
    psci::system_off()
}

/// Any exception: trapless guests built on this runtime take none yet, so report and reset.
extern "C" fn exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    crate::println!("guest: unexpected exception {kind} at PC {elr:#x}: ESR {esr:#x}, FAR {far:#x}");
    psci::system_reset()
}

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

.pushsection .text.vectors, "ax"
.balign 0x800
.global __guest_vectors
__guest_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    guest_vector \kind
    .endr
.popsection
"#,
    exception = sym exception,
);

unsafe extern "C" {
    static __guest_vectors: u8;
}

/// Stops this CPU until an interrupt (or forever, with interrupts masked).
pub fn wait_for_interrupt() {
    // SAFETY: WFI only waits.
    unsafe { asm!("wfi", options(nomem, nostack)) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("guest panic: {info}");
    psci::system_reset()
}
