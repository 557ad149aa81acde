//! The symbols `linker/image.ld` defines, mirrored once for Rust. (`__rela_start`,
//! `__rela_end`, `__bss_start` and `__bss_end` are used only by the assembly in
//! `relocate.rs`.)

unsafe extern "C" {
    static __image_start: u8;
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
