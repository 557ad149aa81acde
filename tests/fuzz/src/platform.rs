//! Target `platform`: any text as a board description (`platform/<board>/platform.toml`, or the
//! file a system names with `platform = "board.toml"`), checked as `cargo xtask check` checks
//! it; a board the checker accepts then gets a small system planned on it (a partition on each
//! of its first two CPUs, the first with every device, and static virtio links between them),
//! whose plan is checked and read back as the planner target does.
//!
//! Beyond "never panics": a rejected board gets diagnostics naming lines of the text; an
//! accepted one keeps the promises the planner, the device trees and EL2 rely on.

use crate::Bytes;
use std::collections::BTreeSet;
use trapless_plan::{AddrRange, MAX_CPUS, MPIDR_AFFINITY_MASK};
use trapless_tools::image::{GuestImage, Placement};
use trapless_tools::link::{Link, Transport};
use trapless_tools::platform::{self, Platform};
use trapless_tools::system::{ImageRef, MEMORY_ALIGN, MemoryToml, OnFault, Partition, System};
use trapless_virtio::binding::{Kind, VERSION_1};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = trapless_tools::root().join("platform/fuzz/platform.toml");
    let platform = match platform::load_text(&path, text.to_string()) {
        Ok(platform) => platform,
        Err(diagnostics) => {
            assert!(!diagnostics.0.is_empty(), "a rejected platform has a diagnostic");
            let lines = text.matches('\n').count() + 1;
            for diagnostic in &diagnostics.0 {
                if let Some(line) = diagnostic.line {
                    assert!((1..=lines).contains(&line), "{diagnostic} names a line the {lines}-line text does not have");
                }
            }
            let _ = diagnostics.to_string();
            return;
        }
    };
    assert_promises(&platform);
    let system = small_system(platform);
    let image = GuestImage { bytes: vec![0xa5; 512], placement: Placement::Image { text_offset: 0 }, footprint: 0x1_0000 };
    let images = vec![image; system.partitions.len()];
    crate::planner::plan_and_check(&system, images, &mut Bytes(&[]));
}

/// What a checked platform promises the planner and EL2.
fn assert_promises(platform: &Platform) {
    let ram = platform.ram;
    assert!(ram.size != 0 && ram.base.0.is_multiple_of(MEMORY_ALIGN) && ram.size.is_multiple_of(MEMORY_ALIGN), "RAM {ram}");
    let addressable = |range: &AddrRange| range.base.0.checked_add(range.size).is_some_and(|end| end <= platform::PHYSICAL_LIMIT);
    assert!(addressable(&ram), "RAM {ram} runs past the address space");
    assert!(ram.contains_range(&platform.kernel) && platform.kernel.base.0.is_multiple_of(MEMORY_ALIGN), "kernel region");
    assert!((1..=MAX_CPUS).contains(&platform.cpus.len()), "{} CPUs", platform.cpus.len());
    let mpidrs: BTreeSet<u64> = platform.cpus.iter().copied().collect();
    assert!(mpidrs.len() == platform.cpus.len() && mpidrs.iter().all(|mpidr| mpidr & !MPIDR_AFFINITY_MASK == 0), "MPIDRs");

    let gic = &platform.gic;
    assert!(matches!(gic.version, 3 | 4), "GIC version {}", gic.version);
    for cpu in 0..platform.cpus.len() {
        let frames = AddrRange::new(gic.rd_frame(cpu).base.0, 2 * platform::REDISTRIBUTOR_FRAME);
        assert!(gic.redistributors.contains_range(&frames), "redistributor frames of CPU {cpu} outside the region");
    }
    if let Some(its) = gic.its {
        assert!((14..=32).contains(&its.lpi_id_bits) && (1..=32).contains(&its.event_bits), "ITS bits");
        if let Some(page) = its.doorbell_page() {
            assert!(its.translation_frame().contains_range(&page), "the doorbell page outside the ITS translation frame");
        }
    }
    for (what, range) in platform.mmio() {
        assert!(!range.overlaps(&ram), "{what} {range} overlaps RAM {ram}");
        assert!(addressable(&range), "{what} {range} runs past the address space");
    }
    let mut names = BTreeSet::new();
    for device in &platform.devices {
        assert!(names.insert(device.name.as_str()), "device name '{}' twice", device.name);
        assert!(device.reg.size != 0 && device.reg.base.0.is_multiple_of(0x1000), "device '{}'", device.name);
        assert!(device.clocks.iter().all(|&clock| clock < platform.clocks.len()), "clocks of '{}'", device.name);
        assert!(device.interrupts.iter().all(|interrupt| interrupt.spi < platform::SPI_LIMIT), "SPIs of '{}'", device.name);
    }
    assert!(platform.console.is_none_or(|console| console < platform.devices.len()), "console");
    if let Some(emulation) = platform.emulation {
        assert!(addressable(&emulation.mmio), "[emulation] {} runs past the address space", emulation.mmio);
        assert!(u64::from(emulation.first_spi) + u64::from(emulation.spi_count) <= u64::from(platform::SPI_LIMIT), "SPIs");
        for (what, range) in platform.mmio() {
            assert!(!emulation.mmio.overlaps(&range), "[emulation] overlaps {what}");
        }
    }
}

/// A partition on each of the first two CPUs of `platform` (the first with every device), with
/// a console link between them and, where the board has an `[emulation]`, a trapped net link.
fn small_system(platform: Platform) -> System {
    let partitions: Vec<Partition> = (0..platform.cpus.len().min(2))
        .map(|cpu| Partition {
            name: format!("p{cpu}"),
            line: 1,
            cpus: vec![cpu],
            memory: MemoryToml { size: 4 * MEMORY_ALIGN, base: None },
            image: ImageRef::Guest("hello".into()),
            devices: if cpu == 0 { (0..platform.devices.len()).collect() } else { Vec::new() },
            bootargs: String::new(),
            restart_limit: 0,
            initrd: None,
            on_fault: OnFault::Stop,
        })
        .collect();
    let mut links = Vec::new();
    if partitions.len() == 2 {
        // Links ring doorbells only where CPU stores reach an ITS; elsewhere both sides poll.
        let polls = platform.gic.doorbell_path().is_none();
        let console = Link {
            name: "console0".into(),
            line: 1,
            kind: Kind::Console,
            device: 0,
            driver: 1,
            queue_size: 16,
            features: 1 << VERSION_1.bit,
            device_polls: polls,
            driver_polls: polls,
            window: MemoryToml { size: 1 << 20, base: None },
            capacity: 0,
            transport: Transport::Doorbell,
        };
        if platform.gic.doorbell_path().is_some() && platform.emulation.is_some() {
            let net = Link { name: "net0".into(), kind: Kind::Net, transport: Transport::MmioTrap, ..console.clone() };
            links.push(net);
        }
        links.push(console);
    }
    System { path: trapless_tools::root().join("tests/systems/fuzz.toml"), platform, partitions, doorbells: Vec::new(), links }
}
