//! Packing: the kernel Image with the plan, the guest images and their device trees appended,
//! as one bootable arm64 Image.

use crate::image::flatten_position_independent;
use crate::planner::SystemPlan;
use crate::size::describe;
use trapless_arm64::image;
use trapless_plan::{
    ConsoleKind, CpuRecord, DoorbellRecord, FLAG_DOORBELL_PATH, FLAG_FIRMWARE_RAM_AT_LEAST, FLAG_GIC_NO_SNOOP,
    FirmwareRam, Ipa, MIN_KERNEL_HEAP, Name, NO_PARTITION, PartitionDraft, PhysAddr, PlanWriter, PlatformRecord,
    RegionRecord, SpiRoute, WindowDraft,
};

/// The plan's bytes for `plan`.
pub fn plan_bytes(plan: &SystemPlan) -> Vec<u8> {
    let platform = &plan.platform;
    let console = platform.console.map(|device| platform.devices[device].reg);
    let console_kind = platform.console.and_then(|device| crate::platform::console_kind(&platform.devices[device]));
    let path = platform.gic.doorbell_path();
    let flags = [
        (path.is_some(), FLAG_DOORBELL_PATH),
        (!platform.gic.snoops, FLAG_GIC_NO_SNOOP),
        (platform.firmware_ram == FirmwareRam::AtLeast, FLAG_FIRMWARE_RAM_AT_LEAST),
    ];
    let record = PlatformRecord {
        name: Name::new(&platform.name).expect("platform names are checked"),
        ram: platform.ram,
        kernel: platform.kernel,
        gicd: platform.gic.distributor,
        gicr: platform.gic.redistributors,
        gicr_stride: platform.gic.redistributor_stride,
        console: console.unwrap_or_default(),
        its: platform.gic.its.map(|its| its.range).unwrap_or_default(),
        doorbell_translater: PhysAddr(path.map_or(0, |path| path.translater)),
        console_kind: console_kind.unwrap_or(ConsoleKind::None).code(),
        gic_version: platform.gic.version,
        doorbell_device: path.map_or(0, |path| path.device),
        flags: flags.iter().filter(|(set, _)| *set).fold(0, |flags, (_, flag)| flags | flag),
    };
    let cpus = platform
        .cpus
        .iter()
        .enumerate()
        .map(|(index, &mpidr)| {
            let owner = plan.partitions.iter().position(|partition| partition.cpus.contains(&index));
            CpuRecord { mpidr, partition: owner.map_or(NO_PARTITION, |owner| owner as u32), reserved: 0 }
        })
        .collect();
    let mut spi_routes = Vec::new();
    for partition in &plan.partitions {
        for &device in &partition.devices {
            for interrupt in &platform.devices[device].interrupts {
                spi_routes.push(SpiRoute {
                    intid: interrupt.spi + 32,
                    cpu: partition.cpus[0] as u32,
                    edge: u32::from(interrupt.trigger == crate::platform::Trigger::EdgeRising),
                    reserved: 0,
                });
            }
        }
    }
    // The SPI EL2 raises on the driver of each emulated link, an edge as virtio-mmio's is.
    for link in &plan.links {
        if let Some(emulated) = link.emulated {
            spi_routes.push(SpiRoute { intid: emulated.spi + 32, cpu: plan.partitions[link.driver].cpus[0] as u32, edge: 1, reserved: 0 });
        }
    }
    let partitions = plan
        .partitions
        .iter()
        .map(|partition| PartitionDraft {
            name: Name::new(&partition.name).expect("partition names are checked"),
            vmid: partition.vmid,
            restart_limit: partition.restart_limit,
            boot_cpu: partition.cpus[0] as u32,
            on_fault: partition.on_fault.plan(),
            memory: partition.memory,
            entry: Ipa(partition.entry),
            image: &partition.image.bytes,
            image_load: PhysAddr(partition.image_load),
            dtb: &partition.dtb,
            dtb_load: PhysAddr(partition.dtb_load),
            initrd: &partition.initrd,
            initrd_load: PhysAddr(partition.initrd_load),
            regions: partition
                .stage2
                .iter()
                .map(|region| RegionRecord {
                    ipa: Ipa(region.range.base.0),
                    pa: region.range.base,
                    size: region.range.size,
                    kind: region.kind.code(),
                    reserved: 0,
                })
                .collect(),
        })
        .collect();
    let doorbells = plan
        .doorbells
        .iter()
        .map(|doorbell| DoorbellRecord {
            event: doorbell.event,
            intid: doorbell.lpi,
            cpu: doorbell.cpu as u32,
            sender: doorbell.from as u32,
            receiver: doorbell.to as u32,
            reserved: 0,
        })
        .collect();
    // EL2 zeroes each window and writes these first bytes: its header and configuration space.
    let inits: Vec<Vec<u8>> = plan.links.iter().map(|link| link.window_init()).collect();
    let windows = plan
        .links
        .iter()
        .zip(&inits)
        .map(|(link, init)| WindowDraft {
            range: link.window,
            device: link.device as u32,
            driver: link.driver as u32,
            init,
        })
        .collect();
    // Window `n` is link `n`'s.
    let emulated_links = plan.links.iter().enumerate().filter_map(|(index, link)| link.emulated_record(index)).collect();
    PlanWriter { platform: record, cpus, partitions, spi_routes, doorbells, windows, emulated_links }.to_bytes()
}

/// The bootable Image: the kernel laid out flat with its BSS, then the plan (page aligned),
/// with the header's `image_size` covering the whole kernel region.
pub fn pack(plan: &SystemPlan, kernel_elf: &[u8]) -> Result<Vec<u8>, String> {
    let (mut bytes, footprint) = flatten_position_independent(kernel_elf).map_err(|error| format!("kernel: {error}"))?;
    bytes.resize(footprint as usize, 0);
    bytes.extend_from_slice(&plan_bytes(plan));
    let region = plan.platform.kernel;
    let load_offset = image::ImageHeader::parse(&bytes).ok_or("the kernel has no Image header")?.text_offset;
    let needed = load_offset + bytes.len() as u64 + MIN_KERNEL_HEAP;
    if needed > region.size {
        return Err(format!(
            "the kernel region {} of platform '{}' ({}) is too small: the kernel ({}), its plan and images ({}) and a {} heap need {:#x} bytes",
            region,
            plan.platform.name,
            describe(region.size),
            describe(footprint),
            describe(bytes.len() as u64 - footprint),
            describe(MIN_KERNEL_HEAP),
            needed
        ));
    }
    image::set_image_size(&mut bytes, region.size - load_offset);
    Ok(bytes)
}

