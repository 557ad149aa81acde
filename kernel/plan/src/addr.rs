//! Address newtypes and ranges, shown the same way by the host tools and the kernel.

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Writes `value` as hex with an underscore every four digits (`0x4000_0000`).
fn write_grouped_hex(f: &mut fmt::Formatter<'_>, value: u64) -> fmt::Result {
    let digits = if value == 0 { 1 } else { (64 - value.leading_zeros()).div_ceil(4) };
    f.write_str("0x")?;
    for position in (0..digits).rev() {
        let digit = (value >> (position * 4)) & 0xf;
        write!(f, "{digit:x}")?;
        if position != 0 && position % 4 == 0 {
            f.write_str("_")?;
        }
    }
    Ok(())
}

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            FromBytes, IntoBytes, KnownLayout, Immutable,
        )]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_grouped_hex(f, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    };
}

address!(
    /// A physical address.
    PhysAddr
);
address!(
    /// An intermediate physical address: what a partition sees as physical (stage-2 input).
    Ipa
);
address!(
    /// A virtual address (stage-1 input), such as a partition's PC.
    VirtAddr
);

/// A half-open range of physical addresses, `[base..base + size)`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AddrRange {
    pub base: PhysAddr,
    pub size: u64,
}

impl AddrRange {
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base: PhysAddr(base), size }
    }

    /// One past the last byte (saturating, so a range at the top of the space stays ordered).
    pub const fn end(&self) -> u64 {
        self.base.0.saturating_add(self.size)
    }

    /// Whether `other` lies entirely inside this range.
    pub const fn contains_range(&self, other: &AddrRange) -> bool {
        other.base.0 >= self.base.0 && other.end() <= self.end()
    }

    /// Whether `[address..address + len)` lies entirely inside this range.
    pub const fn contains_span(&self, address: u64, len: u64) -> bool {
        match address.checked_add(len) {
            Some(end) => address >= self.base.0 && end <= self.end(),
            None => false,
        }
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &AddrRange) -> bool {
        self.size != 0 && other.size != 0 && self.base.0 < other.end() && other.base.0 < self.end()
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}..{})", self.base, PhysAddr(self.end()))
    }
}

impl fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
