//! The planner's tests: placement, stage-2 maps, doorbells, links, images and initrds, the
//! kernel region.

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
