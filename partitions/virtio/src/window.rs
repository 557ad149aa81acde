//! Access to a window that checks every offset: nothing built on [`Window`] can touch a byte
//! outside it, whatever the other side wrote. Fields are read and written whole (naturally
//! aligned, one access each), so a value the other side is changing is seen old or new, never
//! torn.

use core::cell::Cell;
use core::fmt;

/// Raw access to a window's bytes.
///
/// # Safety
///
/// Implementations must make every method access exactly the bytes it names, and nothing else,
/// for any `offset` that [`Window`] passes: in bounds (`offset + size <= len()`) and naturally
/// aligned for the typed methods.
pub unsafe trait Memory {
    /// Bytes in the window.
    fn len(&self) -> usize;
    /// Whether the window is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// # Safety
    /// `offset` is in bounds.
    unsafe fn read_u8(&self, offset: usize) -> u8;
    /// # Safety
    /// `offset` is in bounds and 2-byte aligned.
    unsafe fn read_u16(&self, offset: usize) -> u16;
    /// # Safety
    /// `offset` is in bounds and 4-byte aligned.
    unsafe fn read_u32(&self, offset: usize) -> u32;
    /// # Safety
    /// `offset` is in bounds and 8-byte aligned.
    unsafe fn read_u64(&self, offset: usize) -> u64;
    /// # Safety
    /// `offset` is in bounds.
    unsafe fn write_u8(&self, offset: usize, value: u8);
    /// # Safety
    /// `offset` is in bounds and 2-byte aligned.
    unsafe fn write_u16(&self, offset: usize, value: u16);
    /// # Safety
    /// `offset` is in bounds and 4-byte aligned.
    unsafe fn write_u32(&self, offset: usize, value: u32);
    /// # Safety
    /// `offset` is in bounds and 8-byte aligned.
    unsafe fn write_u64(&self, offset: usize, value: u64);
    /// Sixteen bytes, little-endian (an implementation may read them at once).
    ///
    /// # Safety
    /// `offset` is in bounds and 16-byte aligned.
    unsafe fn read_u128(&self, offset: usize) -> u128 {
        // SAFETY: our caller's promise.
        unsafe { u128::from(self.read_u64(offset)) | u128::from(self.read_u64(offset + 8)) << 64 }
    }
    /// Writes sixteen bytes, little-endian (an implementation may write them at once).
    ///
    /// # Safety
    /// `offset` is in bounds and 16-byte aligned.
    unsafe fn write_u128(&self, offset: usize, value: u128) {
        // SAFETY: our caller's promise.
        unsafe {
            self.write_u64(offset, value as u64);
            self.write_u64(offset + 8, (value >> 64) as u64);
        }
    }
}

/// An access that would have left the window (or was misaligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfWindow {
    pub offset: usize,
    pub len: usize,
}

impl fmt::Display for OutOfWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes at window offset {:#x} are outside the window or misaligned", self.len, self.offset)
    }
}

/// A window: its memory, and the address both sides use for its first byte (descriptors carry
/// addresses, which [`Window::offset_of`] turns back into offsets).
pub struct Window<M: Memory> {
    memory: M,
    base: u64,
}

macro_rules! typed {
    ($read:ident, $write:ident, $type:ty) => {
        /// Reads the field at `offset`.
        pub fn $read(&self, offset: usize) -> Result<$type, OutOfWindow> {
            self.check(offset, core::mem::size_of::<$type>())?;
            // SAFETY: `check` made sure the field is in bounds and aligned.
            Ok(unsafe { self.memory.$read(offset) })
        }

        /// Writes the field at `offset`.
        pub fn $write(&self, offset: usize, value: $type) -> Result<(), OutOfWindow> {
            self.check(offset, core::mem::size_of::<$type>())?;
            // SAFETY: `check` made sure the field is in bounds and aligned.
            unsafe { self.memory.$write(offset, value) };
            Ok(())
        }
    };
}

impl<M: Memory> Window<M> {
    pub fn new(memory: M, base: u64) -> Self {
        Self { memory, base }
    }

    /// The memory behind the window.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Bytes in the window.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }

    /// The address of the window's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The window offset of address `address`, if `len` bytes from it lie inside `within`
    /// (a range of offsets in the window).
    pub fn offset_of(&self, address: u64, len: u64, within: &core::ops::Range<usize>) -> Option<usize> {
        let offset = usize::try_from(address.checked_sub(self.base)?).ok()?;
        let end = offset.checked_add(usize::try_from(len).ok()?)?;
        (offset >= within.start && end <= within.end).then_some(offset)
    }

    fn check(&self, offset: usize, size: usize) -> Result<(), OutOfWindow> {
        let fits = offset.checked_add(size).is_some_and(|end| end <= self.len());
        if fits && offset.is_multiple_of(size) { Ok(()) } else { Err(OutOfWindow { offset, len: size }) }
    }

    typed!(read_u8, write_u8, u8);
    typed!(read_u16, write_u16, u16);
    typed!(read_u32, write_u32, u32);
    typed!(read_u64, write_u64, u64);

    /// Copies `buffer.len()` bytes from `offset` into `buffer`, eight at a time where it can.
    pub fn read_bytes(&self, offset: usize, buffer: &mut [u8]) -> Result<(), OutOfWindow> {
        let words = self.span(offset, buffer.len())?;
        let (head, rest) = buffer.split_at_mut(words.start - offset);
        let (middle, tail) = rest.split_at_mut(words.end - words.start);
        for (index, byte) in head.iter_mut().enumerate() {
            // SAFETY: `span` checked the range.
            *byte = unsafe { self.memory.read_u8(offset + index) };
        }
        for (index, chunk) in middle.chunks_exact_mut(8).enumerate() {
            // SAFETY: `span` checked the range; `words.start` is 8-byte aligned.
            chunk.copy_from_slice(&unsafe { self.memory.read_u64(words.start + 8 * index) }.to_le_bytes());
        }
        for (index, byte) in tail.iter_mut().enumerate() {
            // SAFETY: `span` checked the range.
            *byte = unsafe { self.memory.read_u8(words.end + index) };
        }
        Ok(())
    }

    /// Copies `data` to `offset`, eight bytes at a time where it can.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), OutOfWindow> {
        let words = self.span(offset, data.len())?;
        let (head, rest) = data.split_at(words.start - offset);
        let (middle, tail) = rest.split_at(words.end - words.start);
        for (index, &byte) in head.iter().enumerate() {
            // SAFETY: `span` checked the range.
            unsafe { self.memory.write_u8(offset + index, byte) };
        }
        for (index, chunk) in middle.chunks_exact(8).enumerate() {
            let word: [u8; 8] = chunk.try_into().unwrap_or_default();
            // SAFETY: `span` checked the range; `words.start` is 8-byte aligned.
            unsafe { self.memory.write_u64(words.start + 8 * index, u64::from_le_bytes(word)) };
        }
        for (index, &byte) in tail.iter().enumerate() {
            // SAFETY: `span` checked the range.
            unsafe { self.memory.write_u8(words.end + index, byte) };
        }
        Ok(())
    }

    /// Copies `len` bytes from offset `from` to offset `to`, and shows `visit` every byte copied,
    /// in order: whole 8-byte words as [`Visit::word`] (or four at a time, [`Visit::words`]),
    /// whole 4-byte fields as [`Visit::half`], the rest as [`Visit::byte`]. It moves eight bytes
    /// at a time where both offsets are equally aligned to 8, four where they are to 4, one
    /// otherwise. Both ranges are checked once, before anything is copied. (Ranges that
    /// overlap, which a peer may name, get bytes in an unspecified order, but every access stays
    /// in the window.) `visit` is taken and given back by value, so that it is kept in
    /// registers through the copy (pass `&mut visitor` to have it seen in place instead).
    #[inline]
    pub fn copy<V: Visit>(&self, from: usize, to: usize, len: usize, visit: V) -> Result<V, OutOfWindow> {
        self.span(from, len)?;
        self.span(to, len)?;
        // SAFETY: `span` found both ranges in the window.
        Ok(unsafe { self.copy_checked(from, to, len, visit) })
    }

    /// [`Self::copy`], the ranges checked. Never inlined: its loops want registers of their own
    /// (and a small visitor comes and goes in registers).
    ///
    /// # Safety
    ///
    /// `len` bytes from `from` and from `to` lie in the window.
    #[inline(never)]
    unsafe fn copy_checked<V: Visit>(&self, from: usize, to: usize, len: usize, mut visit: V) -> V {
        let memory = &self.memory;
        // Every access below is inside the ranges our caller promised, and aligned to its size
        // (words and fields only where `from` and `to` both are).
        let (mut from, mut to, mut left) = (from, to, len);
        let copy_byte = |from: usize, to: usize| {
            // SAFETY: see above.
            let value = unsafe { memory.read_u8(from) };
            // SAFETY: see above.
            unsafe { memory.write_u8(to, value) };
            value
        };
        if from % 4 != to % 4 {
            while left > 0 {
                visit.byte(copy_byte(from, to));
                (from, to, left) = (from + 1, to + 1, left - 1);
            }
            return visit;
        }
        while left > 0 && !from.is_multiple_of(4) {
            visit.byte(copy_byte(from, to));
            (from, to, left) = (from + 1, to + 1, left - 1);
        }
        // Both 4-byte aligned now: a field to reach 8-byte alignment if both can.
        if from % 8 == to % 8 {
            if left >= 4 && !from.is_multiple_of(8) {
                // SAFETY: see above.
                let value = unsafe { memory.read_u32(from) };
                // SAFETY: see above.
                unsafe { memory.write_u32(to, value) };
                visit.half(value);
                (from, to, left) = (from + 4, to + 4, left - 4);
            }
            // Both 16-byte aligned (a pool block's frame, past the first word): two fields of
            // 16 bytes a turn.
            if from % 16 == 0 && to % 16 == 0 {
                // One count for both ends.
                let turns = left / 32;
                visit.runs(turns, |turn| {
                    let at = 32 * turn;
                    // SAFETY: see above (`turn` is below `turns`); both are 16-byte aligned.
                    let (low, high) = unsafe { (memory.read_u128(from + at), memory.read_u128(from + at + 16)) };
                    // SAFETY: as above.
                    unsafe {
                        memory.write_u128(to + at, low);
                        memory.write_u128(to + at + 16, high);
                    }
                    [low as u64, (low >> 64) as u64, high as u64, (high >> 64) as u64]
                });
                (from, to, left) = (from + 32 * turns, to + 32 * turns, left - 32 * turns);
            }
            while left >= 32 {
                // SAFETY: see above.
                let words = unsafe { [memory.read_u64(from), memory.read_u64(from + 8), memory.read_u64(from + 16), memory.read_u64(from + 24)] };
                for (index, word) in words.into_iter().enumerate() {
                    // SAFETY: see above.
                    unsafe { memory.write_u64(to + 8 * index, word) };
                }
                visit.words(words);
                (from, to, left) = (from + 32, to + 32, left - 32);
            }
            while left >= 8 {
                // SAFETY: see above.
                let word = unsafe { memory.read_u64(from) };
                // SAFETY: see above.
                unsafe { memory.write_u64(to, word) };
                visit.word(word);
                (from, to, left) = (from + 8, to + 8, left - 8);
            }
        }
        while left >= 4 {
            // SAFETY: see above.
            let value = unsafe { memory.read_u32(from) };
            // SAFETY: see above.
            unsafe { memory.write_u32(to, value) };
            visit.half(value);
            (from, to, left) = (from + 4, to + 4, left - 4);
        }
        while left > 0 {
            visit.byte(copy_byte(from, to));
            (from, to, left) = (from + 1, to + 1, left - 1);
        }
        visit
    }

    /// Checks that `len` bytes from `offset` lie in the window, and returns the offsets among
    /// them that whole aligned 8-byte words cover.
    fn span(&self, offset: usize, len: usize) -> Result<core::ops::Range<usize>, OutOfWindow> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => {
                let start = offset.next_multiple_of(8).min(end);
                Ok(start..(end - end % 8).max(start))
            }
            _ => Err(OutOfWindow { offset, len }),
        }
    }
}

/// What sees the bytes [`Window::copy`] moves.
pub trait Visit {
    /// The next byte.
    fn byte(&mut self, value: u8);
    /// The next four bytes, little-endian (the first in the low bits).
    fn half(&mut self, value: u32) {
        for byte in value.to_le_bytes() {
            self.byte(byte);
        }
    }
    /// The next eight bytes, little-endian (the first in the low bits).
    fn word(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.byte(byte);
        }
    }
    /// The next 32 bytes, as four words.
    fn words(&mut self, values: [u64; 4]) {
        values.into_iter().for_each(|value| self.word(value));
    }
    /// The next `turns` times 32 bytes, turn `turn`'s four words from `next(turn)`, called in
    /// order: a visitor may look at its own state once for them all.
    fn runs(&mut self, turns: usize, mut next: impl FnMut(usize) -> [u64; 4]) {
        for turn in 0..turns {
            self.words(next(turn));
        }
    }
}

/// A visitor seen through a reference: it stays where it is.
impl<V: Visit + ?Sized> Visit for &mut V {
    #[inline(always)]
    fn byte(&mut self, value: u8) {
        (**self).byte(value);
    }
    #[inline(always)]
    fn half(&mut self, value: u32) {
        (**self).half(value);
    }
    #[inline(always)]
    fn word(&mut self, value: u64) {
        (**self).word(value);
    }
    #[inline(always)]
    fn words(&mut self, values: [u64; 4]) {
        (**self).words(values);
    }
    #[inline(always)]
    fn runs(&mut self, turns: usize, next: impl FnMut(usize) -> [u64; 4]) {
        (**self).runs(turns, next);
    }
}

/// Sees nothing.
impl Visit for () {
    fn byte(&mut self, _value: u8) {}
    fn half(&mut self, _value: u32) {}
    fn word(&mut self, _value: u64) {}
    fn words(&mut self, _values: [u64; 4]) {}
}

/// A window in ordinary memory, for host tests and the host tools: bytes behind [`Cell`]s, so
/// both sides of a test can share it.
pub struct CellMemory<'a>(pub &'a [Cell<u8>]);

// SAFETY: every method indexes the slice, which panics rather than leave it; `Window` never
// passes an offset out of bounds anyway.
unsafe impl Memory for CellMemory<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    unsafe fn read_u8(&self, offset: usize) -> u8 {
        self.0[offset].get()
    }
    unsafe fn read_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.0[offset].get(), self.0[offset + 1].get()])
    }
    unsafe fn read_u32(&self, offset: usize) -> u32 {
        let mut bytes = [0; 4];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = self.0[offset + index].get();
        }
        u32::from_le_bytes(bytes)
    }
    unsafe fn read_u64(&self, offset: usize) -> u64 {
        let mut bytes = [0; 8];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = self.0[offset + index].get();
        }
        u64::from_le_bytes(bytes)
    }
    unsafe fn write_u8(&self, offset: usize, value: u8) {
        self.0[offset].set(value);
    }
    unsafe fn write_u16(&self, offset: usize, value: u16) {
        for (index, byte) in value.to_le_bytes().into_iter().enumerate() {
            self.0[offset + index].set(byte);
        }
    }
    unsafe fn write_u32(&self, offset: usize, value: u32) {
        for (index, byte) in value.to_le_bytes().into_iter().enumerate() {
            self.0[offset + index].set(byte);
        }
    }
    unsafe fn write_u64(&self, offset: usize, value: u64) {
        for (index, byte) in value.to_le_bytes().into_iter().enumerate() {
            self.0[offset + index].set(byte);
        }
    }
}

/// A window reached through a pointer: how a partition sees its mapped window.
pub struct RawMemory {
    base: *mut u8,
    len: usize,
}

impl RawMemory {
    /// The `len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `[base..base + len)` must be mapped, readable and writable, 16-byte aligned at `base`
    /// (windows and private ring areas are page-aligned), and stay so while this lives. Others
    /// may write it concurrently (that is what a window is for): every access is volatile.
    pub unsafe fn new(base: *mut u8, len: usize) -> Self {
        Self { base, len }
    }
}

// SAFETY: the window is shared memory that both sides may access at any time: nothing here
// assumes exclusive access.
unsafe impl Send for RawMemory {}
// SAFETY: as above.
unsafe impl Sync for RawMemory {}

macro_rules! raw_access {
    ($read:ident, $write:ident, $type:ty) => {
        unsafe fn $read(&self, offset: usize) -> $type {
            // SAFETY: our caller keeps `offset` in bounds and aligned; `new`'s caller promised
            // the memory is mapped.
            unsafe { self.base.add(offset).cast::<$type>().read_volatile() }
        }
        unsafe fn $write(&self, offset: usize, value: $type) {
            // SAFETY: as above.
            unsafe { self.base.add(offset).cast::<$type>().write_volatile(value) }
        }
    };
}

// SAFETY: each method touches exactly the bytes at `base + offset`, which `Window` keeps in
// bounds and aligned.
unsafe impl Memory for RawMemory {
    fn len(&self) -> usize {
        self.len
    }
    raw_access!(read_u8, write_u8, u8);
    raw_access!(read_u16, write_u16, u16);
    raw_access!(read_u32, write_u32, u32);
    raw_access!(read_u64, write_u64, u64);
    raw_access!(read_u128, write_u128, u128);
}
