//! The symbols `linker/image.ld` defines, mirrored once for Rust.

unsafe extern "C" {
    static __image_start: u8;
    static __rela_start: u8;
    static __rela_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
    static __image_end: u8;
}

/// Where the image was loaded (its header's first byte).
pub fn image_start() -> usize {
    &raw const __image_start as usize
}

/// One past the last byte of the loaded image, BSS included (page aligned).
pub fn image_end() -> usize {
    &raw const __image_end as usize
}

/// The dynamic relocations, `[start..end)`.
pub fn rela() -> (usize, usize) {
    (&raw const __rela_start as usize, &raw const __rela_end as usize)
}

/// The BSS, `[start..end)` (16-byte aligned).
pub fn bss() -> (usize, usize) {
    (&raw const __bss_start as usize, &raw const __bss_end as usize)
}
