//! The partition's console: its own PL011, or the trapless console hypercall (one exit per
//! line). Output is buffered per line, so a line from one CPU is never split by another's.

use crate::facts::ConsoleKind;
use arm_pl011_uart::{PL011Registers, Uart};
use core::fmt::{self, Write};
use core::ptr::NonNull;
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;
use trapless_abi::hypercall::{CONSOLE_WRITE, CONSOLE_WRITE_MAX};

enum Sink {
    Pl011(Uart<'static>),
    Hypercall,
    None,
}

struct Console {
    sink: Sink,
    line: [u8; CONSOLE_WRITE_MAX as usize],
    len: usize,
}

static CONSOLE: Mutex<Console> =
    Mutex::new(Console { sink: Sink::None, line: [0; CONSOLE_WRITE_MAX as usize], len: 0 });

/// Selects where output goes. Runs once, on the boot CPU, with the MMU on.
pub fn init(kind: ConsoleKind) {
    let sink = match kind {
        ConsoleKind::Pl011(base) => {
            let registers = NonNull::new(base as *mut PL011Registers).expect("PL011 at address 0");
            // SAFETY: the device tree gives this partition the PL011 at `base` (stage 2 maps it
            // to us as Device memory, our stage 1 too); this is its only driver here.
            Sink::Pl011(Uart::new(unsafe { UniqueMmioPointer::new(registers) }))
        }
        ConsoleKind::Hypercall => Sink::Hypercall,
        ConsoleKind::None => Sink::None,
    };
    CONSOLE.lock().sink = sink;
}

impl Console {
    fn flush(&mut self) {
        let line = &self.line[..self.len];
        match &mut self.sink {
            Sink::Pl011(uart) => {
                for &byte in line {
                    if byte == b'\n' {
                        let _ = uart.write_char('\r');
                    }
                    let _ = uart.write_char(byte as char);
                }
            }
            Sink::Hypercall => {
                let _ = smccc::hvc64(CONSOLE_WRITE, [line.as_ptr() as u64, line.len() as u64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            Sink::None => {}
        }
        self.len = 0;
    }
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            self.line[self.len] = byte;
            self.len += 1;
            if byte == b'\n' || self.len == self.line.len() {
                self.flush();
            }
        }
        Ok(())
    }
}

/// Writes formatted text; a line reaches the console when it ends (or fills the buffer).
pub fn print(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Prints a line on the partition's console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
