//! Guest images and the kernel image: ELF files and raw arm64 Images, turned into the bytes
//! that get copied and where they go.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{LittleEndian, Object, ObjectSection};
use std::path::Path;
use crate::system::MEMORY_ALIGN;
use trapless_arm64::image::{self as arm64_image, ImageHeader};

/// Where an image is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// An arm64 Image: loaded at a 2 MiB-aligned base plus `text_offset`, entered at its start.
    Image { text_offset: u64 },
    /// An ELF linked at fixed addresses: loaded at `load`, entered at `entry`.
    Fixed { load: u64, entry: u64 },
    /// A position-independent ELF linked at 0 without an Image header, that applies its own
    /// `R_AARCH64_RELATIVE` relocations (the shape bare-metal test suites ship): loaded at the
    /// start of the partition's RAM (2 MiB aligned), entered at `entry` from there.
    SelfRelocating { entry: u64 },
}

/// An image ready to be copied into a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImage {
    /// The bytes copied, starting at the load address.
    pub bytes: Vec<u8>,
    pub placement: Placement,
    /// Bytes the image occupies from its load address once running (BSS included).
    pub footprint: u64,
}

/// Loads an ELF or a raw arm64 Image from `path`.
pub fn load(path: &Path) -> Result<GuestImage, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    parse(&bytes).map_err(|error| format!("{}: {error}", path.display()))
}

/// Parses image bytes (see [`load`]).
pub fn parse(bytes: &[u8]) -> Result<GuestImage, String> {
    if bytes.starts_with(&elf::ELFMAG) {
        return parse_elf(bytes);
    }
    let header = ImageHeader::parse(bytes).ok_or("neither an ELF file nor an arm64 Image")?;
    if header.big_endian() {
        return Err("a big-endian arm64 Image; trapless runs little-endian partitions".into());
    }
    Ok(GuestImage {
        bytes: bytes.to_vec(),
        placement: Placement::Image { text_offset: header.text_offset },
        footprint: header.footprint(bytes.len() as u64),
    })
}

fn parse_elf(bytes: &[u8]) -> Result<GuestImage, String> {
    let file = ElfFile64::<LittleEndian>::parse(bytes).map_err(|error| format!("bad ELF file: {error}"))?;
    let header = file.elf_header();
    let endian = file.endian();
    if header.e_machine(endian) != elf::EM_AARCH64 {
        return Err("an ELF file for another architecture than AArch64".into());
    }
    if header.e_type(endian) == elf::ET_DYN {
        let (flat, footprint) = flatten_position_independent(bytes)?;
        let placement = match ImageHeader::parse(&flat) {
            Some(header) => Placement::Image { text_offset: header.text_offset },
            None => self_relocating(&file, footprint)?,
        };
        return Ok(GuestImage { bytes: flat, placement, footprint });
    }
    let segments = load_segments(&file)?;
    let load = segments.iter().map(|segment| segment.address).min().ok_or("an ELF file with nothing to load")?;
    let end = segments.iter().map(|segment| segment.address + segment.memory_size).max().unwrap_or(load);
    let mut flat = Vec::new();
    for segment in &segments {
        let at = (segment.address - load) as usize;
        let end = at + segment.data.len();
        if flat.len() < end {
            flat.resize(end, 0);
        }
        flat[at..end].copy_from_slice(segment.data);
    }
    let entry = header.e_entry(endian);
    Ok(GuestImage { bytes: flat, placement: Placement::Fixed { load, entry }, footprint: end - load })
}

/// How a position-independent ELF without an Image header is entered, if trapless can load it:
/// its entry point lies in what it loads, and no segment asks for a base aligned more than the
/// 2 MiB the start of a partition's RAM is.
fn self_relocating(file: &ElfFile64<'_, LittleEndian>, footprint: u64) -> Result<Placement, String> {
    let endian = file.endian();
    let entry = file.elf_header().e_entry(endian);
    if entry >= footprint {
        return Err(format!(
            "a position-independent ELF whose entry point {entry:#x} lies outside the {footprint:#x} bytes it loads"
        ));
    }
    let align = file
        .elf_program_headers()
        .iter()
        .filter(|program| program.p_type(endian) == elf::PT_LOAD)
        .map(|program| program.p_align(endian))
        .max()
        .unwrap_or(1);
    if align > MEMORY_ALIGN {
        return Err(format!(
            "a position-independent ELF whose segments ask for a base aligned to {align:#x}; trapless loads it at the start of the partition's RAM, aligned to {MEMORY_ALIGN:#x}"
        ));
    }
    Ok(Placement::SelfRelocating { entry })
}

struct Segment<'a> {
    /// Physical load address (`p_paddr`), or the link address for a position-independent file.
    address: u64,
    memory_size: u64,
    data: &'a [u8],
}

fn load_segments<'a>(file: &ElfFile64<'a, LittleEndian>) -> Result<Vec<Segment<'a>>, String> {
    let endian = file.endian();
    let data = file.data();
    let mut segments = Vec::new();
    for program in file.elf_program_headers() {
        if program.p_type(endian) != elf::PT_LOAD || program.p_memsz(endian) == 0 {
            continue;
        }
        let bytes = program.data(endian, data).map_err(|_| "an ELF segment lies outside the file")?;
        let address = if file.elf_header().e_type(endian) == elf::ET_DYN {
            program.p_vaddr(endian)
        } else {
            program.p_paddr(endian)
        };
        segments.push(Segment { address, memory_size: program.p_memsz(endian), data: bytes });
    }
    Ok(segments)
}

/// Lays a position-independent trapless binary (linked at 0 by `linker/image.ld`) out flat:
/// each loadable segment at its link offset, BSS beyond the file left out. Returns the bytes,
/// with the Image header's `image_size` set, and the footprint (4 KiB aligned). Refuses a file
/// with any dynamic relocation other than `R_AARCH64_RELATIVE`, the only kind it relocates.
pub fn flatten_position_independent(bytes: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let file = ElfFile64::<LittleEndian>::parse(bytes).map_err(|error| format!("bad ELF file: {error}"))?;
    if let Some(section) = file.section_by_name(".rela.dyn") {
        let data = section.data().map_err(|_| "unreadable .rela.dyn")?;
        for entry in data.chunks_exact(24) {
            let kind = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
            if kind != arm64_image::R_AARCH64_RELATIVE {
                return Err(format!("dynamic relocation of type {kind}; only R_AARCH64_RELATIVE is applied at boot"));
            }
        }
    }
    let segments = load_segments(&file)?;
    if segments.iter().map(|segment| segment.address).min() != Some(0) {
        return Err("a position-independent ELF not linked at 0".into());
    }
    let mut flat = Vec::new();
    let mut footprint = 0;
    for segment in &segments {
        let at = segment.address as usize;
        let end = at + segment.data.len();
        if flat.len() < end {
            flat.resize(end, 0);
        }
        flat[at..end].copy_from_slice(segment.data);
        footprint = footprint.max(segment.address + segment.memory_size);
    }
    let footprint = footprint.next_multiple_of(4096);
    if ImageHeader::parse(&flat).is_some() {
        arm64_image::set_image_size(&mut flat, footprint);
    }
    Ok((flat, footprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw arm64 Image header claiming `image_size` bytes.
    pub fn raw_image(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut bytes = vec![0; 4096];
        bytes[8..16].copy_from_slice(&text_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[24..32].copy_from_slice(&flags.to_le_bytes());
        bytes[56..60].copy_from_slice(b"ARM\x64");
        bytes
    }

    #[test]
    fn raw_images_keep_their_bytes_and_footprint() {
        let image = parse(&raw_image(0x8_0000, 0x20_0000, 0b1010)).unwrap();
        assert_eq!(image.placement, Placement::Image { text_offset: 0x8_0000 });
        assert_eq!(image.footprint, 0x20_0000);
        assert_eq!(image.bytes.len(), 4096);
    }

    #[test]
    fn rejects_big_endian_and_unknown_files() {
        assert!(parse(&raw_image(0, 0, 0b1011)).unwrap_err().contains("big-endian"));
        assert_eq!(parse(b"#!/bin/sh\n").unwrap_err(), "neither an ELF file nor an arm64 Image");
    }
}
