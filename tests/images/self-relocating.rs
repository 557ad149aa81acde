//! A bare-metal test image of the shape test suites commonly ship, built by `tests/images.rs`
//! with no linker script of its own: a position-independent ELF linked at 0, with only
//! `R_AARCH64_RELATIVE` relocations and no arm64 Image header. It applies its relocations
//! itself (found through its `_DYNAMIC` array), takes its device tree in `x0`, and runs with
//! the MMU off. It reports through trapless's console hypercall and powers off with PSCI.

#![no_std]
#![no_main]

use core::fmt::Write;
use core::ptr::{addr_of, addr_of_mut};

core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "    mov x19, x0",
    // Where the image was loaded: its ELF header is linked at 0.
    "    adrp x20, __ehdr_start",
    "    add x20, x20, :lo12:__ehdr_start",
    "    adrp x0, {stack}",
    "    add x0, x0, :lo12:{stack}",
    "    add x0, x0, #{stack_size}",
    "    mov sp, x0",
    "    mov x0, x20",
    "    adrp x1, _DYNAMIC",
    "    add x1, x1, :lo12:_DYNAMIC",
    "    bl {relocate}",
    "    mov x0, x19",
    "    mov x1, x20",
    "    b {main}",
    relocate = sym relocate,
    main = sym main,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
);

const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const R_AARCH64_RELATIVE: u64 = 1027;

/// Bytes of stack: an `add` immediate.
const STACK_SIZE: usize = 4080;

/// The stack, in BSS.
#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);
static mut STACK: Stack = Stack([0; STACK_SIZE]);

/// Three MiB of BSS, so that the bytes the image needs run past a 2 MiB boundary its file does not.
static mut SCRATCH: [u8; 3 << 20] = [0; 3 << 20];

/// Read through a pointer the loader's relocation must have fixed up.
static GREETING: &str = "self-relocating: a relocated pointer reads right";

/// Applies the image's `R_AARCH64_RELATIVE` relocations for load address `base`, given where
/// its `_DYNAMIC` array is (symbols are found in assembly: before this, a pointer read from the
/// image, the global offset table's included, still holds its link-time value).
extern "C" fn relocate(base: u64, dynamic: *const [u64; 2]) {
    let (mut rela, mut size) = (0, 0);
    let mut index = 0;
    loop {
        // SAFETY: the linker ends the dynamic array with DT_NULL.
        let [tag, value] = unsafe { dynamic.add(index).read() };
        match tag {
            DT_NULL => break,
            DT_RELA => rela = value,
            DT_RELASZ => size = value,
            _ => {}
        }
        index += 1;
    }
    let entries = (base + rela) as *const [u64; 3];
    for index in 0..(size / 24) as usize {
        // SAFETY: DT_RELA and DT_RELASZ bound the relocation table in the loaded image.
        let [offset, info, addend] = unsafe { entries.add(index).read() };
        if info & 0xffff_ffff != R_AARCH64_RELATIVE {
            power(PSCI_SYSTEM_RESET);
        }
        // SAFETY: the relocation names a word of this image.
        unsafe { ((base + offset) as *mut u64).write(base + addend) };
    }
}

const CONSOLE_WRITE: u64 = 0xC600_0001;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

fn hvc(function: u64, first: u64, second: u64) -> u64 {
    let result;
    // SAFETY: a hypercall to trapless; it reads at most `second` bytes at `first`.
    unsafe { core::arch::asm!("hvc #0", inout("x0") function => result, in("x1") first, in("x2") second) };
    result
}

fn power(function: u64) -> ! {
    loop {
        hvc(function, 0, 0);
    }
}

/// One console line, sent whole, newline included.
struct Line {
    bytes: [u8; 200],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let end = self.len + text.len();
        self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn say(args: core::fmt::Arguments<'_>) {
    let mut line = Line { bytes: [0; 200], len: 0 };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    hvc(CONSOLE_WRITE, line.bytes.as_ptr() as u64, line.len as u64);
}

extern "C" fn main(dtb: u64, base: u64) -> ! {
    // SAFETY: x0 points at the device tree trapless wrote into this partition's RAM.
    let magic = u32::from_be(unsafe { (dtb as *const u32).read_volatile() });
    let end = addr_of_mut!(SCRATCH) as u64 + (3 << 20);
    let last = (end - 1) as *mut u8;
    // SAFETY: the last byte of this image's BSS, which trapless cleared with the partition's
    // RAM; nothing else refers to it.
    let cleared = unsafe {
        let cleared = last.read_volatile() == 0;
        last.write_volatile(0xa5);
        cleared
    };
    say(format_args!("self-relocating: loaded at {base:#x}, x0 {dtb:#x} holds a device tree: {}", magic == 0xd00d_feed));
    say(format_args!("self-relocating: BSS ends at {end:#x}, cleared: {cleared}"));
    // SAFETY: a plain read of an immutable static, through memory so that the pointer it holds
    // is the one the relocation wrote.
    say(format_args!("{}", unsafe { addr_of!(GREETING).read_volatile() }));
    power(PSCI_SYSTEM_OFF);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    power(PSCI_SYSTEM_RESET);
}
