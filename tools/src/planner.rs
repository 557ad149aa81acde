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
    if let Some(page) = platform.gic.its.and_then(|its| its.doorbell_page()).filter(|_| rings_doorbells) {
        regions.push(Stage2Region { what: "doorbell page".into(), range: page, kind: RegionKind::Device });
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
mod tests;
