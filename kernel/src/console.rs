//! The EL2 console: EL2's own messages and the partitions' hypercall output, written whole
//! under one fair (ticket) lock so lines from different CPUs do not interleave and no CPU waits
//! forever for its turn. A UART that stops draining (a partition sharing it may disable it)
//! costs a bounded wait per character, then output is dropped.

use arm_pl011_uart::{PL011Registers, Uart};
use core::fmt::{self, Write};
use core::ptr::NonNull;
use safe_mmio::UniqueMmioPointer;
use spin::mutex::TicketMutex as Mutex;
use trapless_kernel_core::console::LineFramer;
use trapless_kernel_core::uart8250;
use trapless_plan::{ConsoleKind, MAX_PARTITIONS, PlatformRecord};

/// The UART, or `None` on a platform without an EL2 console (output is then dropped).
static CONSOLE: Mutex<Option<Writer>> = Mutex::new(None);
/// Where each partition's hypercall output stands (start of a line or not). Taken before
/// `CONSOLE` when both are needed.
static FRAMERS: Mutex<[LineFramer; MAX_PARTITIONS]> = Mutex::new([LineFramer::new(); MAX_PARTITIONS]);

enum Writer {
    Pl011(Uart<'static>),
    /// A DesignWare APB UART (an 8250): the base of its registers.
    Dw8250(usize),
}

/// How many times a character waits for room in the transmit FIFO before it is dropped.
const TX_PATIENCE: u32 = 1_000_000;

impl Writer {
    fn put(&mut self, byte: u8) {
        match self {
            Self::Pl011(uart) => {
                for _ in 0..TX_PATIENCE {
                    if !uart.is_tx_fifo_full() {
                        uart.write_word(byte);
                        return;
                    }
                    core::hint::spin_loop();
                }
            }
            &mut Self::Dw8250(base) => {
                // SAFETY (both): the plan names this UART as EL2's console and EL2 maps it as
                // Device memory; its registers are 32 bits wide at these offsets.
                let mut read = |offset: usize| unsafe { ((base + offset) as *const u32).read_volatile() };
                let mut write = |offset: usize, value: u32| unsafe { ((base + offset) as *mut u32).write_volatile(value) };
                uart8250::put(byte, TX_PATIENCE, &mut read, &mut write);
            }
        }
    }
}

impl Write for Writer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.put(b'\r');
            }
            self.put(byte);
        }
        Ok(())
    }
}

/// Takes the platform's console UART. Must run once, with the MMU on (the lock is an atomic).
pub fn init(platform: &PlatformRecord) {
    let writer = match platform.console_kind() {
        ConsoleKind::None => return,
        ConsoleKind::Pl011 => {
            let registers = NonNull::new(platform.console.base.0 as *mut PL011Registers).unwrap();
            // SAFETY: the plan names this PL011 as EL2's console; EL2 maps it as Device memory and
            // this is the only `Uart` EL2 makes for it. (A partition given the same UART may write
            // or disable it too: that garbles or drops output, and costs EL2 a bounded wait.)
            Writer::Pl011(Uart::new(unsafe { UniqueMmioPointer::new(registers) }))
        }
        ConsoleKind::Dw8250 => Writer::Dw8250(platform.console.base.0 as usize),
    };
    *CONSOLE.lock() = Some(writer);
}

/// Writes formatted text.
pub fn print(args: fmt::Arguments<'_>) {
    if let Some(writer) = CONSOLE.lock().as_mut() {
        let _ = writer.write_fmt(args);
    }
}

/// Writes `bytes` from partition number `partition`, called `name`, framed so that every line
/// starts with `[name] ` (see [`LineFramer`]), in one piece.
pub fn write_framed(partition: usize, name: &str, bytes: &[u8]) {
    let mut framers = FRAMERS.lock();
    let mut console = CONSOLE.lock();
    let Some(writer) = console.as_mut() else { return };
    framers[partition].frame(name, bytes, |piece| {
        // Framing leaves only printable ASCII, tabs and newlines.
        let _ = writer.write_str(core::str::from_utf8(piece).unwrap_or("?"));
    });
}

/// Writes a message even if the console lock is held (by a CPU that will never release it,
/// because it panicked); used only on the way down.
pub fn print_on_panic(args: fmt::Arguments<'_>) {
    for _ in 0..1_000_000 {
        if let Some(mut console) = CONSOLE.try_lock() {
            if let Some(writer) = console.as_mut() {
                let _ = writer.write_fmt(args);
            }
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder is stuck; interleaved output is better than none on the way down.
    unsafe { CONSOLE.force_unlock() };
    print(args);
}

/// Prints a line on the EL2 console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
