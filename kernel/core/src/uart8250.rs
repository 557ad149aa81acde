//! Output on an 8250-style UART as the DesignWare APB UART (`snps,dw-apb-uart`, the RK3588's)
//! lays it out: 32-bit registers 4 bytes apart, already set up by the firmware (baud rate,
//! pins, clock). EL2 only writes characters: wait, a bounded number of looks, for the transmit
//! holding register to be empty, then write the byte. The registers are reached through the
//! closures the caller gives (MMIO at EL2, a fake in the tests).

/// Byte offset of the transmit holding register (`THR`, register 0).
pub const THR: usize = 0;
/// Byte offset of the line status register (`LSR`, register 5, 4 bytes apart).
pub const LSR: usize = 5 * 4;
/// `LSR.THRE`: the transmit holding register (or FIFO) has room.
pub const LSR_THRE: u32 = 1 << 5;

/// Writes `byte` once the UART has room, looking at `LSR` through `read` at most `patience`
/// times; returns whether it was written (a UART that never drains drops the byte).
pub fn put(byte: u8, patience: u32, read: &mut dyn FnMut(usize) -> u32, write: &mut dyn FnMut(usize, u32)) -> bool {
    for _ in 0..patience {
        if read(LSR) & LSR_THRE != 0 {
            write(THR, u32::from(byte));
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_room_then_writes_the_holding_register() {
        let mut looks = 0;
        let mut written = Vec::new();
        // Full for three looks, then room.
        let mut read = |offset: usize| {
            assert_eq!(offset, 0x14, "LSR is register 5, 4 bytes apart");
            looks += 1;
            if looks > 3 { LSR_THRE } else { 0 }
        };
        assert!(put(b'A', 10, &mut read, &mut |offset, value| written.push((offset, value))));
        assert_eq!(written, [(0, 0x41)]);
        assert_eq!(looks, 4);
    }

    #[test]
    fn a_uart_that_never_drains_drops_the_byte_after_its_patience() {
        let mut looks = 0;
        let mut written = 0;
        assert!(!put(b'A', 5, &mut |_| { looks += 1; 0 }, &mut |_, _| written += 1));
        assert_eq!((looks, written), (5, 0));
    }
}
