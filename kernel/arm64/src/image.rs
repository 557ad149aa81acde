//! The arm64 Linux boot Image header (Documentation/arch/arm64/booting.rst), which QEMU's
//! `-kernel`, U-Boot's `booti` and trapless itself use to load an image: the kernel Image and
//! every guest image built by this project carry one.

/// Load offset of the kernel Image from a 2 MiB-aligned base: 2 MiB, so that every loader puts
/// it at the same place (QEMU moves images with a smaller offset up by 2 MiB for its boot stub).
pub const KERNEL_TEXT_OFFSET: u64 = 2 << 20;
/// Load offset of guest images: the start of the partition's RAM.
pub const GUEST_TEXT_OFFSET: u64 = 0;
/// Little-endian, 4 KiB pages, may be placed anywhere in physical memory.
pub const FLAGS: u64 = 0b1010;
/// Bytes in the header.
pub const HEADER_SIZE: usize = 64;
/// `R_AARCH64_RELATIVE`: the only dynamic relocation a trapless image may hold. It applies
/// them itself at entry (`relocate_and_clear_bss`); the packer refuses images with any other kind.
pub const R_AARCH64_RELATIVE: u32 = 1027;
/// Where the base of an Image must be aligned.
pub const BASE_ALIGN: u64 = 2 << 20;

const TEXT_OFFSET_AT: usize = 8;
const IMAGE_SIZE_AT: usize = 16;
const FLAGS_AT: usize = 24;
const MAGIC_AT: usize = 56;
const MAGIC: [u8; 4] = *b"ARM\x64";

/// The fields of an Image header that a loader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Load offset from a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the image occupies once loaded, including its BSS (0 in very old kernels).
    pub image_size: u64,
    pub flags: u64,
}

fn field(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

impl ImageHeader {
    /// Reads the header at the start of `bytes`, or `None` if there is no arm64 Image header.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_SIZE || bytes[MAGIC_AT..MAGIC_AT + 4] != MAGIC {
            return None;
        }
        Some(Self {
            text_offset: field(bytes, TEXT_OFFSET_AT),
            image_size: field(bytes, IMAGE_SIZE_AT),
            flags: field(bytes, FLAGS_AT),
        })
    }

    /// Bytes the image needs in memory from its load address: the header's `image_size`, or the
    /// file size for an image whose header leaves it 0.
    pub fn footprint(&self, file_size: u64) -> u64 {
        if self.image_size == 0 { file_size } else { self.image_size.max(file_size) }
    }

    /// Whether the image is big-endian (trapless runs little-endian images only).
    pub fn big_endian(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Writes `image_size` into the header at the start of `bytes` (which must hold one).
pub fn set_image_size(bytes: &mut [u8], image_size: u64) {
    bytes[IMAGE_SIZE_AT..IMAGE_SIZE_AT + 8].copy_from_slice(&image_size.to_le_bytes());
}

/// Emits the 64-byte Image header into section `.head` of the calling crate, with its first
/// instruction branching to `$entry` and load offset `$text_offset`. `image_size` is left 0
/// for the packer to fill in.
#[macro_export]
macro_rules! image_header {
    ($entry:path, $text_offset:expr) => {
        ::core::arch::global_asm!(
            ".pushsection .head, \"ax\"",
            "b {entry}",
            ".long 0",
            ".quad {text_offset}",
            ".quad 0",
            ".quad {flags}",
            ".quad 0, 0, 0",
            ".byte 0x41, 0x52, 0x4d, 0x64",
            ".long 0",
            ".popsection",
            entry = sym $entry,
            text_offset = const $text_offset,
            flags = const $crate::image::FLAGS,
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64) -> Vec<u8> {
        let mut bytes = vec![0; 128];
        bytes[8..16].copy_from_slice(&text_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[24..32].copy_from_slice(&FLAGS.to_le_bytes());
        bytes[56..60].copy_from_slice(b"ARM\x64");
        bytes
    }

    #[test]
    fn parses_and_patches_the_header() {
        let mut bytes = header(0x8_0000, 0);
        let parsed = ImageHeader::parse(&bytes).unwrap();
        assert_eq!(parsed, ImageHeader { text_offset: 0x8_0000, image_size: 0, flags: FLAGS });
        assert_eq!(parsed.footprint(128), 128);
        set_image_size(&mut bytes, 0x20_0000);
        assert_eq!(ImageHeader::parse(&bytes).unwrap().footprint(128), 0x20_0000);
        assert!(!parsed.big_endian());
    }

    #[test]
    fn no_magic_no_header() {
        let mut bytes = header(0, 0);
        bytes[56] = b'X';
        assert_eq!(ImageHeader::parse(&bytes), None);
        assert_eq!(ImageHeader::parse(&bytes[..63]), None);
    }
}
