//! Round trips through the writer and the checks of the reader.

use super::*;
use alloc::vec;
use alloc::vec::Vec;

fn platform() -> PlatformRecord {
    PlatformRecord {
        name: Name::new("qemu-virt").unwrap(),
        ram: AddrRange::new(0x4000_0000, 0x4000_0000),
        kernel: AddrRange::new(0x4000_0000, 0x200_0000),
        gicd: AddrRange::new(0x0800_0000, 0x1_0000),
        gicr: AddrRange::new(0x080a_0000, 0xf6_0000),
        gicr_stride: 0x2_0000,
        console: AddrRange::new(0x0900_0000, 0x1000),
        its: AddrRange::new(0x0808_0000, 0x2_0000),
        console_kind: ConsoleKind::Pl011.code(),
        gic_version: 3,
        doorbell_translater: PhysAddr(0x0809_0040),
        doorbell_device: 0,
        flags: FLAG_DOORBELL_PATH,
    }
}

fn region(base: u64, size: u64, kind: RegionKind) -> RegionRecord {
    RegionRecord { ipa: Ipa(base), pa: PhysAddr(base), size, kind: kind.code(), reserved: 0 }
}

fn draft<'a>(name: &str, vmid: u16, boot_cpu: u32, base: u64, image: &'a [u8], dtb: &'a [u8]) -> PartitionDraft<'a> {
    PartitionDraft {
        name: Name::new(name).unwrap(),
        vmid,
        restart_limit: 0,
        boot_cpu,
        on_fault: OnFault::Stop,
        memory: AddrRange::new(base, 0x400_0000),
        entry: Ipa(base + 0x8_0000),
        image,
        image_load: PhysAddr(base + 0x8_0000),
        dtb,
        dtb_load: PhysAddr(base + 0x20_0000),
        initrd: &[],
        initrd_load: PhysAddr(0),
        regions: vec![
            region(base, 0x400_0000, RegionKind::Ram),
            region(0x0900_0000, 0x1000, RegionKind::Device),
        ],
    }
}

/// An 8-byte aligned copy, as the kernel sees the plan.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    words.as_mut_bytes()[..bytes.len()].copy_from_slice(bytes);
    words
}

fn two_partitions() -> Vec<u8> {
    static IMAGE: [u8; 100] = [0xaa; 100];
    PlanWriter {
        platform: platform(),
        cpus: vec![
            CpuRecord { mpidr: 0, partition: 0, reserved: 0 },
            CpuRecord { mpidr: 1, partition: 1, reserved: 0 },
            CpuRecord { mpidr: 2, partition: NO_PARTITION, reserved: 0 },
        ],
        partitions: vec![
            draft("alpha", 1, 0, 0x4200_0000, &IMAGE, b"dtb-alpha"),
            PartitionDraft {
                on_fault: OnFault::Abort,
                initrd: b"070701 beta's initrd",
                initrd_load: PhysAddr(0x4640_0000),
                ..draft("beta", 2, 1, 0x4600_0000, &IMAGE, b"dtb-beta!")
            },
        ],
        spi_routes: vec![SpiRoute { intid: 33, cpu: 0, edge: 0, reserved: 0 }],
        doorbells: vec![
            DoorbellRecord { event: 0, intid: 8192, cpu: 1, sender: 0, receiver: 1, reserved: 0 },
            DoorbellRecord { event: 1, intid: 8193, cpu: 0, sender: 1, receiver: 0, reserved: 0 },
        ],
        windows: vec![WindowDraft {
            range: AddrRange::new(0x4a00_0000, 0x10_0000),
            device: 1,
            driver: 0,
            init: b"tlvirtio header",
        }],
        emulated_links: vec![EmulatedLinkRecord {
            name: Name::new("net0").unwrap(),
            registers: Ipa(0x0b00_0000),
            window: 0,
            intid: 96,
            features: 1 << 32,
            device_id: 1,
            queue_count: 2,
            queue_size: 16,
            notify_events: [2, 3, 0, 0],
        }],
    }
    .to_bytes()
}

#[test]
fn round_trip_keeps_every_record() {
    let words = aligned(&two_partitions());
    let plan = Plan::parse(words.as_bytes()).unwrap();
    assert_eq!(plan.platform().name.as_str(), "qemu-virt");
    assert_eq!(plan.platform().redistributor(2), PhysAddr(0x080e_0000));
    assert_eq!(plan.cpus().len(), 3);
    assert_eq!(plan.cpus()[2].owner(), None);
    let names: Vec<&str> = plan.partitions().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let beta = &plan.partitions()[1];
    assert_eq!(beta.vmid, 2);
    assert_eq!(plan.cpus_of(1).collect::<Vec<_>>(), [1]);
    assert_eq!(plan.regions(beta)[0].pa, PhysAddr(0x4600_0000));
    assert_eq!(plan.regions(beta)[1].kind(), RegionKind::Device);
    assert_eq!(plan.blob(&beta.dtb), b"dtb-beta!");
    assert_eq!(plan.blob(&beta.image), &[0xaa; 100]);
    assert_eq!((plan.blob(&beta.initrd), beta.initrd.load), (&b"070701 beta's initrd"[..], PhysAddr(0x4640_0000)));
    assert_eq!(beta.on_fault(), OnFault::Abort);
    let alpha = &plan.partitions()[0];
    assert_eq!((alpha.initrd.size, alpha.on_fault()), (0, OnFault::Stop));
    assert_eq!(plan.spi_routes()[0].intid, 33);
    assert_eq!(plan.doorbells()[1], DoorbellRecord { event: 1, intid: 8193, cpu: 0, sender: 1, receiver: 0, reserved: 0 });
    let [window] = plan.windows() else { panic!("one window") };
    assert_eq!((window.range, window.device, window.driver), (AddrRange::new(0x4a00_0000, 0x10_0000), 1, 0));
    assert_eq!((plan.blob(&window.init), window.init.load), (&b"tlvirtio header"[..], PhysAddr(0x4a00_0000)));
    let [link] = plan.emulated_links() else { panic!("one emulated link") };
    assert_eq!((link.name.as_str(), link.registers, link.intid, link.notify_events), ("net0", Ipa(0x0b00_0000), 96, [2, 3, 0, 0]));
}

#[test]
fn identical_images_are_stored_once() {
    let words = aligned(&two_partitions());
    let plan = Plan::parse(words.as_bytes()).unwrap();
    let [alpha, beta] = plan.partitions() else { panic!("two partitions") };
    assert_eq!(alpha.image.offset, beta.image.offset);
    assert_ne!(alpha.dtb.offset, beta.dtb.offset);
    assert_eq!(alpha.image.offset as usize % BLOB_ALIGN, 0);
}

#[test]
fn claimed_size_is_the_whole_plan() {
    let bytes = two_partitions();
    let words = aligned(&bytes);
    assert_eq!(Plan::claimed_size(words.as_bytes()), Ok(bytes.len() as u64));
}

fn corrupt(edit: impl FnOnce(&mut Vec<u8>)) -> PlanError {
    let mut bytes = two_partitions();
    edit(&mut bytes);
    let words = aligned(&bytes);
    Plan::parse(&words.as_bytes()[..bytes.len()]).unwrap_err()
}

fn header_field(bytes: &mut [u8], offset: usize, value: &[u8]) {
    bytes[offset..offset + value.len()].copy_from_slice(value);
}

#[test]
fn rejects_bad_magic_and_versions() {
    assert_eq!(corrupt(|b| b[0] = b'X'), PlanError::BadMagic);
    assert_eq!(
        corrupt(|b| header_field(b, 8, &(FORMAT_VERSION + 1).to_le_bytes())),
        PlanError::UnsupportedVersion { found: FORMAT_VERSION + 1, header_size: size_of::<Header>() as u32 }
    );
}

#[test]
fn rejects_truncation() {
    let full = two_partitions().len() as u64;
    assert_eq!(corrupt(|b| b.truncate(b.len() - 1)), PlanError::Truncated { needed: full, have: full - 1 });
    assert!(matches!(corrupt(|b| b.truncate(10)), PlanError::Truncated { .. }));
}

#[test]
fn rejects_misaligned_bytes() {
    let bytes = two_partitions();
    let mut words = aligned(&[&[0u8][..], &bytes].concat());
    let shifted = &mut words.as_mut_bytes()[1..=bytes.len()];
    assert_eq!(Plan::parse(shifted).unwrap_err(), PlanError::Misaligned);
}

#[test]
fn rejects_tables_and_blobs_out_of_bounds() {
    let header = size_of::<Header>();
    // `partitions.count` lies after `cpus` in the header; make it far too large.
    let partitions_count = header - 6 * size_of::<TableRef>() + 4;
    assert_eq!(
        corrupt(|b| header_field(b, partitions_count, &1000u32.to_le_bytes())),
        PlanError::TableOutOfBounds { table: "partitions" }
    );
    let first_partition = header + 3 * size_of::<CpuRecord>();
    let image_offset = first_partition + 72;
    assert_eq!(
        corrupt(|b| header_field(b, image_offset, &u64::MAX.to_le_bytes())),
        PlanError::BlobOutOfBounds { partition: 0 }
    );
}

#[test]
fn rejects_inconsistent_records() {
    let header = size_of::<Header>();
    let first_partition = header + 3 * size_of::<CpuRecord>();
    // CPU 0 claims an owner that does not exist.
    assert_eq!(
        corrupt(|b| header_field(b, header + 8, &7u32.to_le_bytes())),
        PlanError::BadIndex { field: "cpu partition", index: 0 }
    );
    // Partition 0 boots on CPU 1, which belongs to partition 1.
    assert_eq!(
        corrupt(|b| header_field(b, first_partition + 36, &1u32.to_le_bytes())),
        PlanError::BadIndex { field: "boot cpu", index: 0 }
    );
    // An on-fault policy this version does not define.
    assert_eq!(
        corrupt(|b| header_field(b, first_partition + 40, &2u32.to_le_bytes())),
        PlanError::BadValue { field: "on-fault", index: 0, value: 2 }
    );
    // VMID 0 is the host's.
    assert_eq!(
        corrupt(|b| header_field(b, first_partition + 32, &0u16.to_le_bytes())),
        PlanError::BadValue { field: "vmid", index: 0, value: 0 }
    );
    // An MPIDR with more than its affinity fields (bit 31 of MPIDR_EL1 is RES1).
    assert_eq!(
        corrupt(|b| header_field(b, header, &0x8000_0000u64.to_le_bytes())),
        PlanError::BadValue { field: "cpu mpidr", index: 0, value: 0x8000_0000 }
    );
    // A name without its terminating NUL.
    assert_eq!(
        corrupt(|b| header_field(b, first_partition, &[b'x'; 32])),
        PlanError::BadName { what: "partition", index: 0 }
    );
    let first_region = first_partition + 2 * size_of::<PartitionRecord>();
    assert_eq!(
        corrupt(|b| header_field(b, first_region + 24, &9u32.to_le_bytes())),
        PlanError::BadValue { field: "region kind", index: 0, value: 9 }
    );
    let first_doorbell = first_region + 4 * size_of::<RegionRecord>() + size_of::<SpiRoute>();
    // An LPI below 8192, and a doorbell to a CPU its receiver does not own.
    assert_eq!(
        corrupt(|b| header_field(b, first_doorbell + 4, &8191u32.to_le_bytes())),
        PlanError::BadValue { field: "doorbell intid", index: 0, value: 8191 }
    );
    assert_eq!(
        corrupt(|b| header_field(b, first_doorbell + 8, &0u32.to_le_bytes())),
        PlanError::BadIndex { field: "doorbell", index: 0 }
    );
    // A window whose device is its driver, and one smaller than its contents.
    let window = first_doorbell + 2 * size_of::<DoorbellRecord>();
    assert_eq!(
        corrupt(|b| header_field(b, window + 40, &0u32.to_le_bytes())),
        PlanError::BadIndex { field: "window partitions", index: 0 }
    );
    assert_eq!(
        corrupt(|b| header_field(b, window + 8, &8u64.to_le_bytes())),
        PlanError::WindowOutOfBounds { window: 0 }
    );
    // An emulated link whose window does not exist, and one raising a PPI.
    let link = window + size_of::<WindowRecord>();
    assert_eq!(
        corrupt(|b| header_field(b, link + 40, &1u32.to_le_bytes())),
        PlanError::BadIndex { field: "emulated link window", index: 0 }
    );
    assert_eq!(
        corrupt(|b| header_field(b, link + 44, &27u32.to_le_bytes())),
        PlanError::BadValue { field: "emulated link intid", index: 0, value: 27 }
    );
    // A side of the emulated link that would restart under EL2's emulation.
    assert_eq!(
        corrupt(|b| header_field(b, first_partition + 34, &1u16.to_le_bytes())),
        PlanError::BadValue { field: "restart limit of a partition on emulated link", index: 0, value: 1 }
    );
}

/// Offset of a field of [`PlatformRecord`] in the plan: it is the header's.
fn platform_field(field: usize) -> usize {
    core::mem::offset_of!(Header, platform) + field
}

#[test]
fn rejects_platform_facts_it_does_not_know_or_that_contradict_the_doorbells() {
    let flags = platform_field(core::mem::offset_of!(PlatformRecord, flags));
    assert_eq!(
        corrupt(|b| header_field(b, flags, &(1u32 << 7).to_le_bytes())),
        PlanError::BadValue { field: "platform flags", index: 0, value: 1 << 7 }
    );
    // Doorbells on a platform whose CPU stores do not reach the ITS.
    assert_eq!(
        corrupt(|b| header_field(b, flags, &0u32.to_le_bytes())),
        PlanError::BadIndex { field: "doorbell without a doorbell path", index: 0 }
    );
    // A translater in RAM, or not 4-byte aligned.
    let translater = platform_field(core::mem::offset_of!(PlatformRecord, doorbell_translater));
    assert_eq!(
        corrupt(|b| header_field(b, translater, &0x4000_0040u64.to_le_bytes())),
        PlanError::BadValue { field: "doorbell translater", index: 0, value: 0x4000_0040 }
    );
    assert_eq!(
        corrupt(|b| header_field(b, translater, &0x0809_0042u64.to_le_bytes())),
        PlanError::BadValue { field: "doorbell translater", index: 0, value: 0x0809_0042 }
    );
    let console = platform_field(core::mem::offset_of!(PlatformRecord, console_kind));
    assert_eq!(
        corrupt(|b| header_field(b, console, &3u32.to_le_bytes())),
        PlanError::BadValue { field: "console-kind", index: 0, value: 3 }
    );
}

#[test]
fn platform_facts_read_back() {
    let mut record = platform();
    assert_eq!(record.doorbell_path(), Some(DoorbellPath { translater: PhysAddr(0x0809_0040), device: 0 }));
    assert!(record.gic_snoops());
    assert_eq!(record.firmware_ram(), FirmwareRam::Exact);
    record.flags = FLAG_GIC_NO_SNOOP | FLAG_FIRMWARE_RAM_AT_LEAST;
    assert_eq!(record.doorbell_path(), None);
    assert!(!record.gic_snoops());
    assert_eq!(record.firmware_ram(), FirmwareRam::AtLeast);
    record.console_kind = ConsoleKind::Dw8250.code();
    assert_eq!(record.console_kind(), ConsoleKind::Dw8250);
}

#[test]
fn names_are_bounded_and_displayed() {
    assert!(Name::new("").is_none());
    assert!(Name::new(&"x".repeat(NAME_CAPACITY + 1)).is_none());
    assert_eq!(Name::new(&"x".repeat(NAME_CAPACITY)).unwrap().as_str().len(), NAME_CAPACITY);
}

#[test]
fn addresses_print_grouped() {
    assert_eq!(alloc::format!("{}", PhysAddr(0x4000_0000)), "0x4000_0000");
    assert_eq!(alloc::format!("{}", Ipa(0x9)), "0x9");
    assert_eq!(alloc::format!("{}", PhysAddr(0x1_0000)), "0x1_0000");
    assert_eq!(alloc::format!("{}", AddrRange::new(0x5000_0000, 0x400_0000)), "[0x5000_0000..0x5400_0000)");
}

#[test]
fn ranges_overlap_and_contain() {
    let a = AddrRange::new(0x1000, 0x1000);
    assert!(a.overlaps(&AddrRange::new(0x1fff, 1)));
    assert!(!a.overlaps(&AddrRange::new(0x2000, 1)));
    assert!(!a.overlaps(&AddrRange::new(0x1000, 0)));
    assert!(a.contains_span(0x1800, 0x800));
    assert!(!a.contains_span(0x1800, 0x801));
    assert!(!a.contains_span(u64::MAX, 2));
}
