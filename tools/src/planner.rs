//! The planner: from a checked [`System`] to everything the kernel needs: where each
//! partition's RAM and each link's window are, every doorbell's EventID and LPI, the register
//! block and SPI of each emulated link, each partition's stage-2 map, where its image and
//! device tree go, and its VMID.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::doorbell::{self, Doorbell, DoorbellPlan};
use crate::dtb;
use crate::image::{GuestImage, Placement};
use crate::link::{self, Emulated, LinkPlan, Transport};
use crate::platform::Platform;
use crate::size::describe;
use crate::system::{MEMORY_ALIGN, OnFault, System};
use std::collections::BTreeMap;
use trapless_arm64::blockmap::{IdentityMap, Regime};
use trapless_arm64::image::BASE_ALIGN;
use trapless_virtio::binding::MAX_LINKS_PER_PARTITION;
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
    /// Restarts after a fault or `SYSTEM_RESET` (0: it halts).
    pub restart_limit: u16,
    pub on_fault: OnFault,
    pub image: GuestImage,
    pub image_load: u64,
    pub entry: u64,
    /// Its initial RAM disk (empty: none), at the next 2 MiB boundary after the image.
    pub initrd: Vec<u8>,
    pub initrd_load: u64,
    pub dtb: Vec<u8>,
    pub dtb_load: u64,
    pub stage2: Vec<Stage2Region>,
}

impl PartitionPlan {
    /// Where its initial RAM disk is, if it has one.
    pub fn initrd_range(&self) -> Option<AddrRange> {
        (!self.initrd.is_empty()).then(|| AddrRange::new(self.initrd_load, self.initrd.len() as u64))
    }
}

/// What a partition boots: its image and, if it has one, its initial RAM disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    pub image: GuestImage,
    /// Empty: none.
    pub initrd: Vec<u8>,
}

impl From<GuestImage> for BootFiles {
    fn from(image: GuestImage) -> Self {
        Self { image, initrd: Vec::new() }
    }
}

/// Room the kernel region keeps for the kernel itself beside the guest payload (the images,
/// initial RAM disks and device trees the plan carries): the 2 MiB below the Image's load
/// address, the kernel with its stacks and tables, and its heap. A platform's region that
/// leaves less than this beside the payload grows (see [`kernel_region`]).
pub const KERNEL_ROOM: u64 = 16 << 20;

/// Bytes the plan's blobs take at most besides the images and RAM disks: a device tree, a
/// window's first bytes, and the tables, with room to spare.
const BLOB_ALLOWANCE: u64 = 64 << 10;

/// The kernel region a system needs: the platform's, or, when the guest payload (each distinct
/// image and RAM disk stored once, device trees and tables) does not leave [`KERNEL_ROOM`] in
/// it, one that starts at the same place and holds the payload plus [`KERNEL_ROOM`], in whole
/// 2 MiB blocks. The packer checks the result against the kernel it packs.
pub fn kernel_region(platform: &Platform, files: &[BootFiles], windows: usize) -> AddrRange {
    let mut blobs: Vec<&[u8]> = Vec::new();
    for file in files {
        for blob in [file.image.bytes.as_slice(), file.initrd.as_slice()] {
            if !blob.is_empty() && !blobs.contains(&blob) {
                blobs.push(blob);
            }
        }
    }
    let payload = blobs.iter().map(|blob| (blob.len() as u64).next_multiple_of(16)).sum::<u64>()
        + (files.len() + windows + 1) as u64 * BLOB_ALLOWANCE;
    let kernel = platform.kernel;
    if payload + KERNEL_ROOM <= kernel.size {
        kernel
    } else {
        AddrRange::new(kernel.base.0, (payload + KERNEL_ROOM).next_multiple_of(MEMORY_ALIGN))
    }
}

/// A whole system, placed.
#[derive(Clone, Debug)]
pub struct SystemPlan {
    pub name: String,
    pub platform: Platform,
    pub partitions: Vec<PartitionPlan>,
    /// The `[[doorbell]]`s, then the doorbells the links need (marked with their link).
    pub doorbells: Vec<DoorbellPlan>,
    pub links: Vec<LinkPlan>,
}

/// Places `requests` (size, explicit base) in platform RAM: explicit bases are kept (the
/// checker made sure they fit), the others get the lowest free 2 MiB-aligned range outside the
/// kernel's region, `taken` and every other request, in the order they are listed. Returns
/// the index of a request that does not fit.
pub fn place_memory(
    platform: &Platform,
    taken: &[AddrRange],
    requests: &[(u64, Option<u64>)],
) -> Result<Vec<AddrRange>, usize> {
    let mut taken: Vec<AddrRange> = [platform.kernel].into_iter().chain(taken.iter().copied()).collect();
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

/// Bytes at the start of each redistributor's RD frame that EL2 emulates (left out of every
/// stage-2 map), and, on a GICv4, at its end (the ID registers, whose `GICR_PIDR2` must say
/// version 3 as the rest of the GIC a partition sees does).
pub const RD_EMULATED_PAGE: u64 = 0x1000;

/// The stage-2 map of a partition: its RAM, its devices, and its CPUs' redistributors: the SGI
/// frame read/write (SGI and PPI configuration), the RD frame read-only past its first page
/// (the first page holds the LPI table registers and `GICR_WAKER`/`GICR_CTLR`: EL2 emulates it,
/// since a partition that could point the tables elsewhere would have the GIC read and write
/// memory for it, past stage 2). If it rings doorbells, the one page of the ITS that holds
/// `GITS_TRANSLATER`. The `windows` of its links (link name, window), never executable.
/// Nothing else: no GIC distributor (EL2 emulates it), no ITS control frame, no other
/// partition's memory.
pub fn stage2_map(
    platform: &Platform,
    memory: AddrRange,
    cpus: &[usize],
    devices: &[usize],
    rings_doorbells: bool,
    windows: &[(&str, AddrRange)],
) -> Vec<Stage2Region> {
    let mut regions = vec![Stage2Region { what: "RAM".into(), range: memory, kind: RegionKind::Ram }];
    for &(link, window) in windows {
        regions.push(Stage2Region { what: format!("window of link {link}"), range: window, kind: RegionKind::SharedRam });
    }
    for &device in devices {
        let device = &platform.devices[device];
        regions.push(Stage2Region { what: format!("device {}", device.name), range: device.reg, kind: RegionKind::Device });
    }
    for &cpu in cpus {
        let rd = platform.gic.rd_frame(cpu);
        let (what, id_page) = match platform.gic.version {
            4 => ("between its first and last pages", RD_EMULATED_PAGE),
            _ => ("past its first page", 0),
        };
        regions.push(Stage2Region {
            what: format!("redistributor RD frame of CPU {cpu} {what}"),
            range: AddrRange::new(rd.base.0 + RD_EMULATED_PAGE, rd.size - RD_EMULATED_PAGE - id_page),
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
        Placement::SelfRelocating { entry } => Ok((memory.base.0, memory.base.0 + entry, memory.base.0 + image.footprint)),
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

/// Plans `system`, given each partition's loaded image and initial RAM disk (by partition
/// index).
pub fn plan<F: Into<BootFiles>>(system: &System, files: Vec<F>) -> Result<SystemPlan, Diagnostics> {
    let files: Vec<BootFiles> = files.into_iter().map(Into::into).collect();
    let mut platform = system.platform.clone();
    platform.kernel = kernel_region(&system.platform, &files, system.links.len());
    let platform = &platform;
    if platform.kernel != system.platform.kernel {
        check_grown_kernel(system, platform.kernel)?;
    }
    // A window takes whole 2 MiB blocks, so that no partition or other window shares one with
    // it (both sides map it with 2 MiB blocks). Fixed windows are placed first: partitions
    // without a base must stay clear of them.
    let window_requests: Vec<(u64, Option<u64>)> =
        system.links.iter().map(|link| (link.window.size.next_multiple_of(MEMORY_ALIGN), link.window.base)).collect();
    let fixed_windows: Vec<AddrRange> =
        window_requests.iter().filter_map(|&(size, base)| Some(AddrRange::new(base?, size))).collect();

    let requests: Vec<(u64, Option<u64>)> =
        system.partitions.iter().map(|partition| (partition.memory.size, partition.memory.base)).collect();
    let memories = place_memory(platform, &fixed_windows, &requests).map_err(|index| {
        let partition = &system.partitions[index];
        let others = taken_before(&requests, index);
        let others = if others == 0 { String::new() } else { format!(", other partitions {}", describe(others)) };
        let windows: u64 = fixed_windows.iter().map(|window| window.size).sum();
        let windows = if windows == 0 { String::new() } else { format!(", fixed windows {}", describe(windows)) };
        system.error(
            index,
            format!(
                "not enough free RAM for partition '{}' ({}): platform '{}' has {} of RAM, the kernel takes {}{}{others}{windows}",
                partition.name,
                describe(partition.memory.size),
                platform.name,
                describe(platform.ram.size),
                describe(platform.kernel.size),
                grown(&system.platform, platform),
            ),
        )
    })?;
    let blocks = place_memory(platform, &memories, &window_requests).map_err(|index| {
        let link = &system.links[index];
        let others = taken_before(&window_requests, index);
        let others = if others == 0 { String::new() } else { format!(", other windows {}", describe(others)) };
        Diagnostic {
            path: system.path.clone(),
            line: Some(link.line),
            message: format!(
                "not enough free RAM for the window of link '{}' ({}; windows take whole 2 MiB blocks): platform '{}' has {} of RAM, the kernel takes {}{}, partitions {}{others}",
                link.name,
                describe(link.window.size),
                platform.name,
                describe(platform.ram.size),
                describe(platform.kernel.size),
                grown(&system.platform, platform),
                describe(memories.iter().map(|memory| memory.size).sum())
            ),
        }
    })?;
    let windows: Vec<AddrRange> =
        blocks.iter().zip(&system.links).map(|(block, link)| AddrRange::new(block.base.0, link.window.size)).collect();

    // The named doorbells first, then the links': explicit EventIDs and LPIs are taken before
    // any is chosen, so a link never takes one a `[[doorbell]]` names.
    let wanted: Vec<Doorbell> =
        system.doorbells.iter().cloned().chain(link::doorbells(&system.links, &system.partitions)).collect();
    let doorbells = match platform.gic.its {
        Some(its) => doorbell::assign(&wanted, its.event_bits, its.lpi_id_bits).map_err(|index| {
            let doorbell = &wanted[index];
            Diagnostic {
                path: system.path.clone(),
                line: Some(doorbell.line),
                message: format!(
                    "no EventID or LPI left for {}: platform '{}' has {} EventID bits and LPIs up to {}",
                    doorbell.describe(),
                    platform.name,
                    its.event_bits,
                    (1u64 << its.lpi_id_bits) - 1
                ),
            }
        })?,
        None => Vec::new(),
    };
    let emulated = emulate(system)?;
    let links: Vec<LinkPlan> = system
        .links
        .iter()
        .zip(&windows)
        .zip(emulated)
        .enumerate()
        .map(|(index, ((link, &window), emulated))| link.plan(index, window, &doorbells, emulated))
        .collect();

    let mut problems = Vec::new();
    let mut partitions = Vec::new();
    for (index, ((partition, memory), files)) in system.partitions.iter().zip(memories).zip(files).enumerate() {
        let BootFiles { image, initrd } = files;
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
            restart_limit: partition.restart_limit,
            on_fault: partition.on_fault,
            image,
            image_load,
            entry,
            initrd_load: image_end.next_multiple_of(BASE_ALIGN),
            dtb_load: (image_end.next_multiple_of(BASE_ALIGN) + initrd.len() as u64).next_multiple_of(BASE_ALIGN),
            initrd,
            dtb: Vec::new(),
            stage2: stage2_map(
                platform,
                memory,
                &partition.cpus,
                &partition.devices,
                doorbells.iter().any(|doorbell| doorbell.sent_by(index)),
                &links
                    .iter()
                    .filter(|link| link.role_of(index).is_some())
                    .map(|link| (link.name.as_str(), link.window))
                    .collect::<Vec<_>>(),
            ),
        };
        plan.dtb = dtb::generate(platform, &plan, index, &doorbells, &links);
        if let Err(problem) = check_windows(&partition.name, memory, &links, index) {
            problems.push(system.error(index, problem));
        }
        let needed = plan.dtb_load + plan.dtb.len() as u64 - memory.base.0;
        if needed > memory.size {
            let initrd = match plan.initrd.len() {
                0 => String::new(),
                size => format!(", initrd ({size:#x} bytes at the next 2 MiB boundary)"),
            };
            problems.push(system.error(
                index,
                format!(
                    "partition '{}' needs {:#x} bytes for its image ({:#x} bytes in memory){initrd} and device tree ({:#x} bytes at the next 2 MiB boundary), more than its memory ({})",
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
    Ok(SystemPlan { name: system.name(), platform: platform.clone(), partitions, doorbells, links })
}

/// `", grown to fit the guest images"` when the kernel region `used` is bigger than the
/// `platform`'s, else nothing.
fn grown(platform: &Platform, used: &Platform) -> String {
    if used.kernel == platform.kernel {
        String::new()
    } else {
        format!(" (its region {} grown from {} to hold the guest images)", used.kernel, describe(platform.kernel.size))
    }
}

/// Checks that the kernel region, grown to `kernel` to hold the guest payload, meets no
/// partition or window placed at a fixed base.
fn check_grown_kernel(system: &System, kernel: AddrRange) -> Result<(), Diagnostics> {
    let describe_growth =
        || format!("the kernel region {kernel}, grown from {} to hold the guest images", describe(system.platform.kernel.size));
    let mut problems = Vec::new();
    for (index, partition) in system.partitions.iter().enumerate() {
        let Some(base) = partition.memory.base else { continue };
        let range = AddrRange::new(base, partition.memory.size);
        if range.overlaps(&kernel) {
            problems.push(system.error(
                index,
                format!("memory of partition '{}' {range} overlaps {}: place it higher", partition.name, describe_growth()),
            ));
        }
    }
    for link in &system.links {
        let Some(base) = link.window.base else { continue };
        let range = AddrRange::new(base, link.window.size);
        if range.overlaps(&kernel) {
            problems.push(Diagnostic {
                path: system.path.clone(),
                line: Some(link.line),
                message: format!("the window of link '{}' {range} overlaps {}: place it higher", link.name, describe_growth()),
            });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Diagnostics(problems)) }
}

/// Gives each `mmio-trap` link of `system`, in the order they are listed, the next register
/// block and SPI of the platform's `[emulation]`; `None` for the other links.
fn emulate(system: &System) -> Result<Vec<Option<Emulated>>, Diagnostic> {
    let platform = &system.platform;
    let mut count = 0;
    let mut emulated = Vec::new();
    for link in &system.links {
        if link.transport != Transport::MmioTrap {
            emulated.push(None);
            continue;
        }
        let emulation = platform.emulation.expect("the checker refuses mmio-trap links without [emulation]");
        let Some((registers, spi)) = emulation.slot(count) else {
            return Err(Diagnostic {
                path: system.path.clone(),
                line: Some(link.line),
                message: format!(
                    "no emulated register block or SPI left for link '{}': the [emulation] of platform '{}' has room for {count} mmio-trap {} (a 4 KiB page of {} and an SPI of {} from SPI {} each), taken by the links listed before it",
                    link.name,
                    platform.name,
                    if count == 1 { "link" } else { "links" },
                    emulation.mmio,
                    emulation.spi_count,
                    emulation.first_spi,
                ),
            });
        };
        emulated.push(Some(Emulated { index: count, registers, spi }));
        count += 1;
    }
    Ok(emulated)
}

/// Checks that partition `index`, named `name`, with RAM `memory`, can take the windows of its
/// links: it is on no more links than a partition may be, and its runtime's stage-1 block map
/// can map them beside its RAM.
fn check_windows(name: &str, memory: AddrRange, links: &[LinkPlan], index: usize) -> Result<(), String> {
    let on: Vec<&LinkPlan> = links.iter().filter(|link| link.role_of(index).is_some()).collect();
    let windows: Vec<std::ops::Range<u64>> = on.iter().map(|link| link.window.base.0..link.window.end()).collect();
    if windows.len() > MAX_LINKS_PER_PARTITION {
        return Err(format!(
            "partition '{name}' is on {} links, more than the {MAX_LINKS_PER_PARTITION} a partition may be on",
            windows.len()
        ));
    }
    let mut map = Box::new(IdentityMap::new());
    map.build(memory.base.0..memory.end(), &windows, Regime::El1)
        .map_err(|error| {
            let windows: Vec<String> = on.iter().map(|link| format!("link '{}' {}", link.name, link.window)).collect();
            format!("partition '{name}' cannot map its RAM {memory} and the windows of {}: {error}", windows.join(", "))
        })
}

/// Bytes `requests` took before request `index` was placed: every explicit base, and the
/// requests listed before it.
fn taken_before(requests: &[(u64, Option<u64>)], index: usize) -> u64 {
    requests
        .iter()
        .enumerate()
        .filter(|&(other, &(_, base))| other != index && (base.is_some() || other < index))
        .map(|(_, &(size, _))| size)
        .sum()
}

/// Loads every partition's image (building guest crates through `guest_path`) and initial RAM
/// disk.
pub fn load_images(
    system: &System,
    guest_paths: &BTreeMap<String, std::path::PathBuf>,
) -> Result<Vec<BootFiles>, Diagnostics> {
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
        let initrd = match &partition.initrd {
            None => Ok(Vec::new()),
            Some(path) => std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display())),
        };
        match (loaded, initrd) {
            (Ok(image), Ok(initrd)) => images.push(BootFiles { image, initrd }),
            (Err(problem), _) => problems.push(system.error(index, format!("image of partition '{}': {problem}", partition.name))),
            (_, Err(problem)) => problems.push(system.error(index, format!("initrd of partition '{}': {problem}", partition.name))),
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
    use crate::link::{Link, LinkQueue, Role};
    use crate::platform;
    use crate::system::{ImageRef, MemoryToml, OnFault, Partition};
    use trapless_plan::{EmulatedLinkRecord, Ipa, Name, Plan, SpiRoute};
    use trapless_virtio::binding::{EVENT_IDX, Kind, VERSION_1};
    use zerocopy::IntoBytes;

    fn qemu_virt() -> Platform {
        platform::load(&crate::root().join("platform/qemu-virt/platform.toml")).unwrap()
    }

    const MIB: u64 = 1 << 20;

    fn partition(name: &str, cpus: &[usize], size: u64) -> Partition {
        Partition {
            name: name.into(),
            line: 1,
            cpus: cpus.to_vec(),
            memory: MemoryToml { size, base: None },
            image: ImageRef::Guest("hello".into()),
            devices: Vec::new(),
            bootargs: String::new(),
            restart_limit: 0,
            initrd: None,
            on_fault: OnFault::Stop,
        }
    }

    /// A console link from partition 0 (the device) to partition 1, at `line`.
    fn console(name: &str, line: usize, size: u64, base: Option<u64>) -> Link {
        Link {
            name: name.into(),
            line,
            kind: Kind::Console,
            device: 0,
            driver: 1,
            queue_size: 2,
            features: 1 << VERSION_1.bit,
            device_polls: false,
            driver_polls: false,
            window: MemoryToml { size, base },
            capacity: 0,
            transport: Transport::Doorbell,
        }
    }

    /// Plans a system of `partitions`, `doorbells` and `links` on qemu-virt, each partition
    /// running a 4 KiB image.
    fn plan_of(partitions: Vec<Partition>, doorbells: Vec<Doorbell>, links: Vec<Link>) -> Result<SystemPlan, Diagnostics> {
        let image = GuestImage { bytes: vec![0; 4096], placement: Placement::Image { text_offset: 0 }, footprint: 4096 };
        let images = vec![image; partitions.len()];
        let system = System { path: "test.toml".into(), platform: qemu_virt(), partitions, doorbells, links };
        plan(&system, images)
    }

    #[test]
    fn fixed_windows_stay_and_the_rest_take_the_lowest_free_2mib_blocks() {
        let partitions = vec![partition("alpha", &[0], 16 * MIB), partition("beta", &[1], 16 * MIB)];
        let links = vec![
            console("a", 1, MIB, None),
            console("b", 2, 3 * MIB, Some(0x4200_0000)),
            console("c", 3, MIB, None),
        ];
        let plan = plan_of(partitions, Vec::new(), links).unwrap();
        // The fixed window takes [0x4200_0000..0x4240_0000), whole 2 MiB blocks: the partitions
        // go after it, then the other windows, one 2 MiB block each.
        let memories: Vec<AddrRange> = plan.partitions.iter().map(|partition| partition.memory).collect();
        assert_eq!(memories, [AddrRange::new(0x4240_0000, 16 * MIB), AddrRange::new(0x4340_0000, 16 * MIB)]);
        let windows: Vec<AddrRange> = plan.links.iter().map(|link| link.window).collect();
        assert_eq!(
            windows,
            [AddrRange::new(0x4440_0000, MIB), AddrRange::new(0x4200_0000, 3 * MIB), AddrRange::new(0x4460_0000, MIB)]
        );
    }

    #[test]
    fn a_window_without_room_names_its_link() {
        // 992 MiB are free besides the kernel: the partitions leave one 2 MiB block.
        let partitions = vec![partition("alpha", &[0], 974 * MIB), partition("beta", &[1], 16 * MIB)];
        let links = vec![console("first", 20, MIB, None), console("second", 30, MIB, None)];
        let Err(Diagnostics(problems)) = plan_of(partitions, Vec::new(), links) else { panic!("two windows cannot share a block") };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(30));
        assert!(problems[0].message.starts_with("not enough free RAM for the window of link 'second' (1 MiB;"), "{}", problems[0].message);
    }

    #[test]
    fn link_doorbells_follow_the_named_ones_by_link_queue_and_direction_without_polling_sides() {
        let partitions = vec![partition("backend", &[1, 2], 16 * MIB), partition("frontend", &[0], 16 * MIB)];
        let kick = Doorbell {
            name: "kick".into(),
            line: 1,
            from: 1,
            to: 0,
            cpu: 2,
            event: Some(1),
            lpi: Some(8193),
            link: None,
        };
        let net = Link { kind: Kind::Net, device_polls: true, ..console("net0", 2, MIB, None) };
        let disk = Link { kind: Kind::Block, driver_polls: true, capacity: MIB, ..console("disk0", 3, MIB, None) };
        let plan = plan_of(partitions, vec![kick], vec![console("console0", 1, MIB, None), net, disk]).unwrap();

        let to_device = |link, queue| Some(LinkQueue { link, queue, to: Role::Device, el2_rings: false });
        let to_driver = |link, queue| Some(LinkQueue { link, queue, to: Role::Driver, el2_rings: false });
        // (link queue, from, to, CPU, EventID, LPI): the receiver's first CPU; the named
        // doorbell's explicit EventID 1 and LPI 8193 are skipped.
        let summary: Vec<_> =
            plan.doorbells.iter().map(|d| (d.link, d.from, d.to, d.cpu, d.event, d.lpi)).collect();
        assert_eq!(
            summary,
            [
                (None, 1, 0, 2, 1, 8193),
                (to_device(0, 0), 1, 0, 1, 0, 8192),
                (to_driver(0, 0), 0, 1, 0, 2, 8194),
                (to_device(0, 1), 1, 0, 1, 3, 8195),
                (to_driver(0, 1), 0, 1, 0, 4, 8196),
                // net0: the device polls.
                (to_driver(1, 0), 0, 1, 0, 5, 8197),
                (to_driver(1, 1), 0, 1, 0, 6, 8198),
                // disk0: the driver polls; one queue.
                (to_device(2, 0), 1, 0, 1, 7, 8199),
            ]
        );
        let counts: Vec<(usize, usize)> = plan.links.iter().map(|link| (link.to_device.len(), link.to_driver.len())).collect();
        assert_eq!(counts, [(2, 2), (0, 2), (1, 0)]);
        assert_eq!(plan.links[0].to_driver[1].event, 4);
    }

    #[test]
    fn both_partitions_of_a_link_map_its_window_and_no_other_does() {
        let partitions =
            vec![partition("device", &[0], 16 * MIB), partition("driver", &[1], 16 * MIB), partition("other", &[2], 16 * MIB)];
        // The driver polls: only the driver rings (the device, about available buffers).
        let link = Link { driver_polls: true, ..console("console0", 1, MIB, None) };
        let plan = plan_of(partitions, Vec::new(), vec![link]).unwrap();
        let window = plan.links[0].window;
        for (index, partition) in plan.partitions.iter().enumerate() {
            let shared: Vec<&Stage2Region> =
                partition.stage2.iter().filter(|region| region.range.overlaps(&window)).collect();
            let doorbell_page = partition.stage2.iter().any(|region| region.what == "doorbell page");
            if index == 2 {
                assert!(shared.is_empty() && !doorbell_page, "{} maps {shared:?}", partition.name);
            } else {
                let expected = Stage2Region { what: "window of link console0".into(), range: window, kind: RegionKind::SharedRam };
                assert_eq!(shared, [&expected], "{}", partition.name);
                assert_eq!(doorbell_page, index == 1, "{}: the doorbell page only for the side that rings", partition.name);
            }
        }
    }

    /// A `mmio-trap` net link from partition 0 (the device) to partition 1, at `line`.
    fn trapped(name: &str, line: usize) -> Link {
        Link { kind: Kind::Net, queue_size: 16, transport: Transport::MmioTrap, ..console(name, line, MIB, None) }
    }

    #[test]
    fn mmio_trap_links_take_the_next_register_page_and_spi_in_link_order() {
        let partitions = vec![partition("device", &[0], 16 * MIB), partition("driver", &[1, 2], 16 * MIB)];
        let links = vec![trapped("trap0", 1), console("console0", 2, MIB, None), trapped("trap1", 3)];
        let plan = plan_of(partitions, Vec::new(), links).unwrap();
        let emulated: Vec<Option<Emulated>> = plan.links.iter().map(|link| link.emulated).collect();
        // qemu-virt's [emulation]: pages from 0x0b00_0000, SPIs from 48.
        assert_eq!(
            emulated,
            [
                Some(Emulated { index: 0, registers: AddrRange::new(0x0b00_0000, 0x1000), spi: 48 }),
                None,
                Some(Emulated { index: 1, registers: AddrRange::new(0x0b00_1000, 0x1000), spi: 49 }),
            ]
        );
        let transports: Vec<Transport> = plan.links.iter().map(LinkPlan::transport).collect();
        assert_eq!(transports, [Transport::MmioTrap, Transport::Doorbell, Transport::MmioTrap]);
    }

    #[test]
    fn running_out_of_emulated_pages_or_spis_names_the_link() {
        let partitions = vec![partition("device", &[0], 16 * MIB), partition("driver", &[1], 16 * MIB)];
        let links = vec![trapped("trap0", 10), trapped("trap1", 20), trapped("trap2", 30)];
        let image = GuestImage { bytes: vec![0; 4096], placement: Placement::Image { text_offset: 0 }, footprint: 4096 };
        let mut platform = qemu_virt();
        // Two pages but a single SPI: the second link already finds none.
        platform.emulation =
            Some(platform::Emulation { mmio: AddrRange::new(0x0b00_0000, 0x2000), first_spi: 48, spi_count: 1 });
        let system = System { path: "test.toml".into(), platform, partitions, doorbells: Vec::new(), links };
        let Err(Diagnostics(problems)) = plan(&system, vec![image; 2]) else { panic!("one SPI for three links") };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(20));
        assert!(problems[0].message.starts_with("no emulated register block or SPI left for link 'trap1':"), "{}", problems[0].message);
    }

    #[test]
    fn el2_rings_the_device_for_a_trapped_driver_which_gets_no_doorbell_page_and_no_registers() {
        let partitions = vec![partition("device", &[0], 16 * MIB), partition("driver", &[1, 2], 16 * MIB)];
        let plan = plan_of(partitions, Vec::new(), vec![trapped("trap0", 1)]).unwrap();
        // One doorbell per queue, to the device's first CPU, from the driver but rung by EL2;
        // none to the driver, which EL2 notifies with an SPI.
        let summary: Vec<_> = plan.doorbells.iter().map(|d| (d.link, d.from, d.to, d.cpu, d.sent_by(1))).collect();
        let by_el2 = |queue| Some(LinkQueue { link: 0, queue, to: Role::Device, el2_rings: true });
        assert_eq!(summary, [(by_el2(0), 1, 0, 0, false), (by_el2(1), 1, 0, 0, false)]);
        let link = &plan.links[0];
        assert_eq!((link.to_device.len(), link.to_driver.len()), (2, 0));

        let registers = link.emulated.unwrap().registers;
        for partition in &plan.partitions {
            let mapped = |range: AddrRange| partition.stage2.iter().any(|region| region.range.overlaps(&range));
            // The driver's rings and buffers are in the window: both sides map it.
            assert!(mapped(link.window), "{} maps the window", partition.name);
            // Every access to the registers must trap, and nobody else has any business there.
            assert!(!mapped(registers), "{} maps the register block", partition.name);
            // Neither rings a doorbell itself: no doorbell page, and no doorbells node.
            let doorbell_page = partition.stage2.iter().any(|region| region.what == "doorbell page");
            assert!(!doorbell_page, "{} has the doorbell page", partition.name);
            let doorbells_node = partition.dtb.windows(18).any(|bytes| bytes == b"trapless,doorbells");
            assert!(!doorbells_node, "{} has a doorbells node", partition.name);
        }
    }

    #[test]
    fn a_trapped_driver_that_rings_another_doorbell_keeps_the_doorbell_page() {
        let partitions = vec![partition("device", &[0], 16 * MIB), partition("driver", &[1], 16 * MIB)];
        let links = vec![trapped("trap0", 1), console("console0", 2, MIB, None)];
        let plan = plan_of(partitions, Vec::new(), links).unwrap();
        for partition in &plan.partitions {
            let doorbell_page = partition.stage2.iter().filter(|region| region.what == "doorbell page").count();
            assert_eq!(doorbell_page, 1, "{} rings console0's doorbells", partition.name);
        }
    }

    #[test]
    fn the_plan_routes_each_emulated_spi_to_the_driver_and_describes_the_link_to_el2() {
        let partitions = vec![partition("device", &[0], 16 * MIB), partition("driver", &[2, 1], 16 * MIB)];
        let features = 1 << VERSION_1.bit | 1 << EVENT_IDX.bit;
        let links = vec![console("console0", 1, MIB, None), Link { features, ..trapped("trap0", 2) }];
        let plan = plan_of(partitions, Vec::new(), links).unwrap();
        let bytes = crate::pack::plan_bytes(&plan);
        // As the kernel reads it: 8-byte aligned.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        words.as_mut_bytes()[..bytes.len()].copy_from_slice(&bytes);
        let parsed = Plan::parse(words.as_bytes()).unwrap();

        // The driver's first CPU takes the SPI, on an edge.
        assert_eq!(parsed.spi_routes(), [SpiRoute { intid: 32 + 48, cpu: 2, edge: 1, reserved: 0 }]);
        let [record] = parsed.emulated_links() else { panic!("one emulated link") };
        let trap0 = &plan.links[1];
        // console0's doorbells take EventIDs 0 to 3, then trap0's driver-to-device ones 4 and 5.
        assert_eq!(trap0.to_device.iter().map(|doorbell| doorbell.event).collect::<Vec<_>>(), [4, 5]);
        let expected = EmulatedLinkRecord {
            name: Name::new("trap0").unwrap(),
            registers: Ipa(0x0b00_0000),
            window: 1,
            intid: 80,
            features,
            device_id: 1,
            queue_count: 2,
            queue_size: 16,
            notify_events: [4, 5, 0, 0],
        };
        assert_eq!(*record, expected);
        assert_eq!(parsed.windows()[record.window as usize].range, trap0.window);
    }

    #[test]
    fn explicit_bases_stay_and_the_rest_fill_the_lowest_free_ram() {
        let platform = qemu_virt();
        let placed = place_memory(&platform, &[], &[(64 * MIB, None), (64 * MIB, Some(0x4800_0000)), (128 * MIB, None)]);
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
        assert_eq!(place_memory(&platform, &[], &[(512 * MIB, None), (512 * MIB, None)]), Err(1));
        assert_eq!(place_memory(&platform, &[], &[(992 * MIB, None)]).map(|placed| placed[0].end()), Ok(0x8000_0000));
    }

    #[test]
    fn stage2_holds_ram_devices_and_own_redistributors_only_with_rd_frames_read_only_past_their_first_page() {
        let platform = qemu_virt();
        let uart = platform.device("uart0").unwrap();
        let memory = AddrRange::new(0x4200_0000, 64 * MIB);
        let regions = stage2_map(&platform, memory, &[2, 1], &[uart], false, &[]);
        let summary: Vec<(u64, u64, RegionKind)> =
            regions.iter().map(|region| (region.range.base.0, region.range.size, region.kind)).collect();
        assert_eq!(
            summary,
            [
                (0x080c_1000, 0xf000, RegionKind::DeviceReadOnly),
                (0x080d_0000, 0x1_0000, RegionKind::Device),
                (0x080e_1000, 0xf000, RegionKind::DeviceReadOnly),
                (0x080f_0000, 0x1_0000, RegionKind::Device),
                (0x0900_0000, 0x1000, RegionKind::Device),
                (0x4200_0000, 64 * MIB, RegionKind::Ram),
            ]
        );
        let cpu0 = AddrRange::new(platform.gic.redistributors.base.0, platform.gic.redistributor_stride);
        // The first page of each own RD frame, which EL2 emulates, is never mapped.
        let pages = [1, 2].map(|cpu| AddrRange::new(platform.gic.rd_frame(cpu).base.0, RD_EMULATED_PAGE));
        for forbidden in [platform.gic.distributor, platform.gic.its.unwrap().range, cpu0, pages[0], pages[1]] {
            assert!(regions.iter().all(|region| !region.range.overlaps(&forbidden)), "{forbidden} is mapped");
        }
        // On a GICv4 the ID page at the end of the frame is EL2's too.
        let gicv4 = platform::load(&crate::root().join("platform/qemu-virt-gicv4/platform.toml")).unwrap();
        let regions = stage2_map(&gicv4, memory, &[1], &[], false, &[]);
        let rd = gicv4.gic.rd_frame(1);
        let read_only: Vec<AddrRange> = regions.iter().filter(|region| region.kind == RegionKind::DeviceReadOnly).map(|region| region.range).collect();
        assert_eq!(read_only, [AddrRange::new(rd.base.0 + 0x1000, 0xe000)]);
    }

    #[test]
    fn a_partition_that_rings_doorbells_gets_the_translater_page_only() {
        let platform = qemu_virt();
        let memory = AddrRange::new(0x4200_0000, 64 * MIB);
        let regions = stage2_map(&platform, memory, &[0], &[], true, &[]);
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

    /// An arm64 Image of `size` bytes (footprint the same), and an initrd of `initrd` bytes.
    fn big_files(size: usize, initrd: usize) -> BootFiles {
        let mut bytes = vec![0; size];
        bytes[0] = 1;
        let image = GuestImage { bytes, placement: Placement::Image { text_offset: 0 }, footprint: size as u64 };
        BootFiles { image, initrd: vec![7; initrd] }
    }

    fn system_of(partitions: Vec<Partition>) -> System {
        System { path: "test.toml".into(), platform: qemu_virt(), partitions, doorbells: Vec::new(), links: Vec::new() }
    }

    #[test]
    fn an_initrd_goes_after_the_image_and_the_device_tree_after_it_and_names_it() {
        let system = system_of(vec![partition("linux", &[0, 1], 256 * MIB)]);
        let planned = plan(&system, vec![big_files(0x20_1000, 0x1c_0000)]).unwrap();
        let linux = &planned.partitions[0];
        // The payload leaves 16 MiB of the platform's region: it stays 32 MiB.
        assert_eq!(planned.platform.kernel, AddrRange::new(0x4000_0000, 32 * MIB));
        assert_eq!(linux.memory.base.0, 0x4200_0000);
        assert_eq!(linux.initrd_range(), Some(AddrRange::new(0x4240_0000, 0x1c_0000)));
        assert_eq!(linux.dtb_load, 0x4260_0000);
        let tree = fdt::Fdt::new(&linux.dtb).unwrap();
        let chosen = tree.find_node("/chosen").unwrap();
        let cell = |name: &str| chosen.property(name).and_then(|property| property.as_usize());
        assert_eq!((cell("linux,initrd-start"), cell("linux,initrd-end")), (Some(0x4240_0000), Some(0x425c_0000)));
        // Without one, /chosen says nothing of it and the tree goes right after the image.
        let plain = plan_of(vec![partition("bare", &[0], 16 * MIB)], Vec::new(), Vec::new()).unwrap();
        assert_eq!(plain.partitions[0].initrd_range(), None);
        let tree = fdt::Fdt::new(&plain.partitions[0].dtb).unwrap();
        assert!(tree.find_node("/chosen").unwrap().property("linux,initrd-start").is_none());
    }

    #[test]
    fn the_kernel_region_grows_to_hold_a_large_image_and_partitions_move_past_it() {
        // A 31 MiB Image and a 2 MiB initrd, as Debian's kernel and a busybox initramfs.
        let system = system_of(vec![partition("linux", &[0, 1], 256 * MIB), partition("bare", &[2], 16 * MIB)]);
        let files = vec![big_files(31 * MIB as usize, 2 * MIB as usize), big_files(4096, 0)];
        let planned = plan(&system, files).unwrap();
        // 33 MiB of payload, two trees and tables, plus 16 MiB, in 2 MiB blocks.
        assert_eq!(planned.platform.kernel, AddrRange::new(0x4000_0000, 50 * MIB));
        assert_eq!(planned.partitions[0].memory, AddrRange::new(0x4320_0000, 256 * MIB));
        assert_eq!(planned.partitions[1].memory.base.0, 0x5320_0000);
        // Identical images count once.
        let same = vec![big_files(20 * MIB as usize, 0), big_files(20 * MIB as usize, 0)];
        let system = system_of(vec![partition("a", &[0], 64 * MIB), partition("b", &[1], 64 * MIB)]);
        assert_eq!(plan(&system, same).unwrap().platform.kernel.size, 38 * MIB);
    }

    #[test]
    fn a_grown_kernel_region_names_what_it_meets_and_ram_that_is_too_small_names_the_sizes() {
        let mut fixed = partition("fixed", &[1], 16 * MIB);
        fixed.memory.base = Some(0x4200_0000);
        let system = system_of(vec![partition("linux", &[0], 64 * MIB), fixed]);
        let Err(Diagnostics(problems)) = plan(&system, vec![big_files(31 * MIB as usize, 0), big_files(4096, 0)]) else {
            panic!("the grown region meets the fixed partition")
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].message,
            "memory of partition 'fixed' [0x4200_0000..0x4300_0000) overlaps the kernel region [0x4000_0000..0x4300_0000), grown from 32 MiB to hold the guest images: place it higher"
        );
        let system = system_of(vec![partition("linux", &[0], 980 * MIB)]);
        let Err(Diagnostics(problems)) = plan(&system, vec![big_files(31 * MIB as usize, 0)]) else { panic!("no room") };
        assert_eq!(
            problems[0].message,
            "not enough free RAM for partition 'linux' (980 MiB): platform 'qemu-virt' has 1 GiB of RAM, the kernel takes 48 MiB (its region [0x4000_0000..0x4300_0000) grown from 32 MiB to hold the guest images)"
        );
    }

    #[test]
    fn a_partition_too_small_for_its_image_initrd_and_tree_says_each_size() {
        let system = system_of(vec![partition("linux", &[0], 8 * MIB)]);
        let Err(Diagnostics(problems)) = plan(&system, vec![big_files(0x30_0000, 0x40_0000)]) else { panic!("8 MiB is too small") };
        assert!(
            problems[0].message.starts_with("partition 'linux' needs 0x80"),
            "{}",
            problems[0].message
        );
        assert!(problems[0].message.contains("for its image (0x300000 bytes in memory), initrd (0x400000 bytes at the next 2 MiB boundary) and device tree ("), "{}", problems[0].message);
    }
}
