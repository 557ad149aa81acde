//! The window header: what the link is, written into the window by EL2 at boot (the planner
//! builds it) and checked by both sides against their own device trees before they use the
//! window. A mismatch means the two sides were not built for the same link: neither may start.

use crate::binding::{Kind, offset};
use crate::window::{Memory, OutOfWindow, Window};

/// The header's first eight bytes.
pub const MAGIC: u64 = u64::from_le_bytes(*b"tlvirtio");
/// The layout version this crate implements.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes of the header.
pub const SIZE: usize = 64;

mod field {
    pub const MAGIC: usize = 0x00;
    pub const VERSION: usize = 0x08;
    pub const DEVICE_ID: usize = 0x0c;
    pub const FEATURES: usize = 0x10;
    pub const QUEUE_COUNT: usize = 0x18;
    pub const QUEUE_SIZE: usize = 0x1a;
    pub const CONFIG_SIZE: usize = 0x1c;
    pub const WINDOW_SIZE: usize = 0x20;
}

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub device_id: u32,
    pub features: u64,
    pub queue_count: u16,
    pub queue_size: u16,
    pub config_size: u16,
    pub window_size: u32,
}

/// Why a window's header cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// No static virtio header: the window was not set up.
    BadMagic,
    /// Another layout version.
    Version(u32),
    /// The header describes another link than this side's device tree.
    Mismatch { window: Header, expected: Header },
    OutOfWindow(OutOfWindow),
}

impl From<OutOfWindow> for HeaderError {
    fn from(error: OutOfWindow) -> Self {
        Self::OutOfWindow(error)
    }
}

impl Header {
    /// The header of a link of `kind` with these fixed parameters.
    pub fn for_link(kind: Kind, features: u64, queue_size: u16, window_size: u32) -> Self {
        Self {
            device_id: kind.device_id(),
            features,
            queue_count: kind.queue_count(),
            queue_size,
            config_size: kind.config_size() as u16,
            window_size,
        }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; SIZE] {
        let mut bytes = [0; SIZE];
        let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
        put(field::MAGIC, &MAGIC.to_le_bytes());
        put(field::VERSION, &LAYOUT_VERSION.to_le_bytes());
        put(field::DEVICE_ID, &self.device_id.to_le_bytes());
        put(field::FEATURES, &self.features.to_le_bytes());
        put(field::QUEUE_COUNT, &self.queue_count.to_le_bytes());
        put(field::QUEUE_SIZE, &self.queue_size.to_le_bytes());
        put(field::CONFIG_SIZE, &self.config_size.to_le_bytes());
        put(field::WINDOW_SIZE, &self.window_size.to_le_bytes());
        bytes
    }

    /// Reads the header of `window` and checks it is the `expected` one.
    pub fn check<M: Memory>(window: &Window<M>, expected: &Header) -> Result<(), HeaderError> {
        let at = |field: usize| offset::HEADER + field;
        if window.read_u64(at(field::MAGIC))? != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = window.read_u32(at(field::VERSION))?;
        if version != LAYOUT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let found = Header {
            device_id: window.read_u32(at(field::DEVICE_ID))?,
            features: window.read_u64(at(field::FEATURES))?,
            queue_count: window.read_u16(at(field::QUEUE_COUNT))?,
            queue_size: window.read_u16(at(field::QUEUE_SIZE))?,
            config_size: window.read_u16(at(field::CONFIG_SIZE))?,
            window_size: window.read_u32(at(field::WINDOW_SIZE))?,
        };
        if found != *expected {
            return Err(HeaderError::Mismatch { window: found, expected: *expected });
        }
        Ok(())
    }
}
