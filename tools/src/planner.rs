//! The planner: from a checked [`System`] to everything the kernel needs: where each
//! partition's RAM is, its stage-2 map, where its image and device tree go, and its VMID.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::doorbell::{self, DoorbellPlan};
use crate::dtb;
use crate::image::{GuestImage, Placement};
use crate::platform::Platform;
use crate::size::describe;
use crate::system::{MEMORY_ALIGN, System};
use std::collections::BTreeMap;
use trapless_arm64::image::BASE_ALIGN;
use trapless_plan::{AddrRange, PhysAddr, RegionKind};

/// One stage-2 mapping of a partition, with what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage2Region {
    pub what: String,
    pub range: AddrRange,
    pub kind: RegionKind,
}

/// A partition, placed.
#[derive(Clone, Debug)]
pub struct PartitionPlan {
    pub name: String,
    /// Stage-2 VMID: partition index + 1.
    pub vmid: u16,
    /// Platform CPU indexes; the first is the boot CPU.
    pub cpus: Vec<usize>,
    pub memory: AddrRange,
    /// Platform device indexes.
    pub devices: Vec<usize>,
    pub bootargs: String,
    pub image: GuestImage,
    pub image_load: u64,
    pub entry: u64,
    pub dtb: Vec<u8>,
    pub dtb_load: u64,
    pub stage2: Vec<Stage2Region>,
}

/// A whole system, placed.
#[derive(Clone, Debug)]
pub struct SystemPlan {
    pub name: String,
    pub platform: Platform,
    pub partitions: Vec<PartitionPlan>,
    pub doorbells: Vec<DoorbellPlan>,
}

/// Places RAM for every partition: explicit bases are kept (the checker made sure they fit),
/// the others get the lowest free 2 MiB-aligned range of platform RAM outside the kernel's
/// region, in the order they are listed. Returns the index of a partition that does not fit.
pub fn place_memory(platform: &Platform, requests: &[(u64, Option<u64>)]) -> Result<Vec<AddrRange>, usize> {
    let mut taken: Vec<AddrRange> = vec![platform.kernel];
    taken.extend(requests.iter().filter_map(|&(size, base)| base.map(|base| AddrRange::new(base, size))));
    let mut placed = Vec::new();
    for (index, &(size, base)) in requests.iter().enumerate() {
        if let Some(base) = base {
            placed.push(AddrRange::new(base, size));
            continue;
        }
        let mut candidate = platform.ram.base.0.next_multiple_of(MEMORY_ALIGN);
        let range = loop {
            let range = AddrRange::new(candidate, size);
            if !platform.ram.contains_range(&range) {
                return Err(index);
            }
            match taken.iter().filter(|other| other.overlaps(&range)).map(AddrRange::end).max() {
                Some(end) => candidate = end.next_multiple_of(MEMORY_ALIGN),
                None => break range,
            }
        };
        taken.push(range);
        placed.push(range);
    }
    Ok(placed)
}

/// The stage-2 map of a partition: its RAM, its devices, and its CPUs' redistributors: the SGI
/// frame read/write (SGI and PPI configuration), the RD frame read-only (it holds the LPI table
/// registers: a partition that could point them elsewhere would have the GIC read and write
/// memory for it, past stage 2). If it rings doorbells, the one page of the ITS that holds
/// `GITS_TRANSLATER`. Nothing else: no GIC distributor, no ITS control frame, no other
/// partition's memory.
pub fn stage2_map(
    platform: &Platform,
    memory: AddrRange,
    cpus: &[usize],
    devices: &[usize],
    rings_doorbells: bool,
) -> Vec<Stage2Region> {
    let mut regions = vec![Stage2Region { what: "RAM".into(), range: memory, kind: RegionKind::Ram }];
    for &device in devices {
        let device = &platform.devices[device];
        regions.push(Stage2Region { what: format!("device {}", device.name), range: device.reg, kind: RegionKind::Device });
    }
    for &cpu in cpus {
        regions.push(Stage2Region {
            what: format!("redistributor RD frame of CPU {cpu}"),
            range: platform.gic.rd_frame(cpu),
            kind: RegionKind::DeviceReadOnly,
        });
        regions.push(Stage2Region {
            what: format!("redistributor SGI frame of CPU {cpu}"),
            range: platform.gic.sgi_frame(cpu),
            kind: RegionKind::Device,
        });
    }
    if let Some(its) = platform.gic.its.filter(|_| rings_doorbells) {
        regions.push(Stage2Region { what: "doorbell page".into(), range: its.doorbell_page(), kind: RegionKind::Device });
    }
    regions.sort_by_key(|region| region.range.base);
    regions
}

/// Where an image goes in `memory`, where it is entered, and where its footprint ends.
fn image_layout(image: &GuestImage, memory: AddrRange) -> Result<(u64, u64, u64), String> {
    match image.placement {
        Placement::Image { text_offset } => {
            let load = memory.base.0 + text_offset;
            Ok((load, load, load + image.footprint))
        }
        Placement::Fixed { load, entry } => {
            if !memory.contains_span(load, image.footprint) || !memory.contains_span(entry, 4) {
                return Err(format!(
                    "its ELF image loads at {} (entry {}), outside its memory {memory}",
                    AddrRange::new(load, image.footprint),
                    PhysAddr(entry)
                ));
            }
            Ok((load, entry, load + image.footprint))
        }
    }
}

/// Plans `system`, given each partition's loaded image (by partition index).
pub fn plan(system: &System, images: Vec<GuestImage>) -> Result<SystemPlan, Diagnostics> {
    let platform = &system.platform;
    let requests: Vec<(u64, Option<u64>)> =
        system.partitions.iter().map(|partition| (partition.memory.size, partition.memory.base)).collect();
    let memories = place_memory(platform, &requests).map_err(|index| {
        let partition = &system.partitions[index];
        // What was taken before it was placed: every explicit base, and the partitions before it.
        let others: u64 = requests
            .iter()
            .enumerate()
            .filter(|&(other, &(_, base))| other != index && (base.is_some() || other < index))
            .map(|(_, &(size, _))| size)
            .sum();
        let others = if others == 0 { String::new() } else { format!(", other partitions {}", describe(others)) };
        system.error(
            index,
            format!(
                "not enough free RAM for partition '{}' ({}): platform '{}' has {} of RAM, the kernel takes {}{others}",
                partition.name,
                describe(partition.memory.size),
                platform.name,
                describe(platform.ram.size),
                describe(platform.kernel.size)
            ),
        )
    })?;

    let doorbells = match platform.gic.its {
        Some(its) => doorbell::assign(&system.doorbells, its.event_bits, its.lpi_id_bits).map_err(|index| {
            let doorbell = &system.doorbells[index];
            Diagnostic {
                path: system.path.clone(),
                line: Some(doorbell.line),
                message: format!(
                    "no EventID or LPI left for doorbell '{}': platform '{}' has {} EventID bits and LPIs up to {}",
                    doorbell.name,
                    platform.name,
                    its.event_bits,
                    (1u64 << its.lpi_id_bits) - 1
                ),
            }
        })?,
        None => Vec::new(),
    };

    let mut problems = Vec::new();
    let mut partitions = Vec::new();
    for (index, ((partition, memory), image)) in system.partitions.iter().zip(memories).zip(images).enumerate() {
        let (image_load, entry, image_end) = match image_layout(&image, memory) {
            Ok(layout) => layout,
            Err(problem) => {
                problems.push(system.error(index, format!("partition '{}': {problem}", partition.name)));
                continue;
            }
        };
        let mut plan = PartitionPlan {
            name: partition.name.clone(),
            vmid: index as u16 + 1,
            cpus: partition.cpus.clone(),
            memory,
            devices: partition.devices.clone(),
            bootargs: partition.bootargs.clone(),
            image,
            image_load,
            entry,
            dtb: Vec::new(),
            dtb_load: image_end.next_multiple_of(BASE_ALIGN),
            stage2: stage2_map(
                platform,
                memory,
                &partition.cpus,
                &partition.devices,
                doorbells.iter().any(|doorbell| doorbell.from == index),
            ),
        };
        plan.dtb = dtb::generate(platform, &plan, index, &doorbells);
        let needed = plan.dtb_load + plan.dtb.len() as u64 - memory.base.0;
        if needed > memory.size {
            problems.push(system.error(
                index,
                format!(
                    "partition '{}' needs {:#x} bytes for its image ({:#x} bytes in memory) and device tree ({:#x} bytes at the next 2 MiB boundary), more than its memory ({})",
                    partition.name,
                    needed,
                    plan.image.footprint,
                    plan.dtb.len(),
                    describe(memory.size)
                ),
            ));
        }
        partitions.push(plan);
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    Ok(SystemPlan { name: system.name(), platform: platform.clone(), partitions, doorbells })
}

/// Loads every partition's image, building guest crates through `guest_path`.
pub fn load_images(
    system: &System,
    guest_paths: &BTreeMap<String, std::path::PathBuf>,
) -> Result<Vec<GuestImage>, Diagnostics> {
    let mut images = Vec::new();
    let mut problems = Vec::new();
    for (index, partition) in system.partitions.iter().enumerate() {
        let path = match &partition.image {
            crate::system::ImageRef::Guest(name) => guest_paths.get(name).cloned().ok_or(name),
            crate::system::ImageRef::File(path) => Ok(path.clone()),
        };
        let loaded = path
            .map_err(|guest| format!("guest '{guest}' was not built"))
            .and_then(|path| crate::image::load(&path));
        match loaded {
            Ok(image) => images.push(image),
            Err(problem) => problems.push(system.error(index, format!("image of partition '{}': {problem}", partition.name))),
        }
    }
    if problems.is_empty() { Ok(images) } else { Err(Diagnostics(problems)) }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(problems: Vec<Diagnostic>) -> Self {
        Self(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform;

    fn qemu_virt() -> Platform {
        platform::load(&crate::root().join("platform/qemu-virt/platform.toml")).unwrap()
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn explicit_bases_stay_and_the_rest_fill_the_lowest_free_ram() {
        let platform = qemu_virt();
        let placed = place_memory(&platform, &[(64 * MIB, None), (64 * MIB, Some(0x4800_0000)), (128 * MIB, None)]);
        assert_eq!(
            placed,
            Ok(vec![
                // Right after the kernel's 32 MiB region.
                AddrRange::new(0x4200_0000, 64 * MIB),
                AddrRange::new(0x4800_0000, 64 * MIB),
                // 0x4600_0000 would run into the explicit range: next free is after it.
                AddrRange::new(0x4c00_0000, 128 * MIB),
            ])
        );
    }

    #[test]
    fn placement_fails_on_the_partition_that_does_not_fit() {
        let platform = qemu_virt();
        assert_eq!(place_memory(&platform, &[(512 * MIB, None), (512 * MIB, None)]), Err(1));
        assert_eq!(place_memory(&platform, &[(992 * MIB, None)]).map(|placed| placed[0].end()), Ok(0x8000_0000));
    }

    #[test]
    fn stage2_holds_ram_devices_and_own_redistributors_only_with_rd_frames_read_only() {
        let platform = qemu_virt();
        let uart = platform.device("uart0").unwrap();
        let memory = AddrRange::new(0x4200_0000, 64 * MIB);
        let regions = stage2_map(&platform, memory, &[2, 1], &[uart], false);
        let summary: Vec<(u64, u64, RegionKind)> =
            regions.iter().map(|region| (region.range.base.0, region.range.size, region.kind)).collect();
        assert_eq!(
            summary,
            [
                (0x080c_0000, 0x1_0000, RegionKind::DeviceReadOnly),
                (0x080d_0000, 0x1_0000, RegionKind::Device),
                (0x080e_0000, 0x1_0000, RegionKind::DeviceReadOnly),
                (0x080f_0000, 0x1_0000, RegionKind::Device),
                (0x0900_0000, 0x1000, RegionKind::Device),
                (0x4200_0000, 64 * MIB, RegionKind::Ram),
            ]
        );
        let cpu0 = AddrRange::new(platform.gic.redistributors.base.0, platform.gic.redistributor_stride);
        for forbidden in [platform.gic.distributor, platform.gic.its.unwrap().range, cpu0] {
            assert!(regions.iter().all(|region| !region.range.overlaps(&forbidden)), "{forbidden} is mapped");
        }
    }

    #[test]
    fn a_partition_that_rings_doorbells_gets_the_translater_page_only() {
        let platform = qemu_virt();
        let memory = AddrRange::new(0x4200_0000, 64 * MIB);
        let regions = stage2_map(&platform, memory, &[0], &[], true);
        let its: Vec<&Stage2Region> =
            regions.iter().filter(|region| region.range.overlaps(&platform.gic.its.unwrap().range)).collect();
        assert_eq!(its.len(), 1);
        // GITS_TRANSLATER is at ITS base + 0x1_0040: its page, as Device memory.
        assert_eq!((its[0].range, its[0].kind), (AddrRange::new(0x0809_0000, 0x1000), RegionKind::Device));
    }

    #[test]
    fn images_load_at_the_ram_base_and_the_tree_at_the_next_2mib_boundary() {
        let memory = AddrRange::new(0x4200_0000, 64 * MIB);
        let image = GuestImage { bytes: vec![0; 4096], placement: Placement::Image { text_offset: 0 }, footprint: 0x20_1000 };
        assert_eq!(image_layout(&image, memory), Ok((0x4200_0000, 0x4200_0000, 0x4220_1000)));
        let fixed = GuestImage { placement: Placement::Fixed { load: 0x4300_0000, entry: 0x4300_0040 }, ..image };
        assert_eq!(image_layout(&fixed, memory), Ok((0x4300_0000, 0x4300_0040, 0x4320_1000)));
        let outside = GuestImage { placement: Placement::Fixed { load: 0x1000, entry: 0x1000 }, ..fixed };
        assert!(image_layout(&outside, memory).is_err());
    }
}
