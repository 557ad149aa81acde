//! Target `planner`: a system description that the checker accepts, planned with made-up guest
//! images, its device trees read back, its plan encoded and read back with
//! [`trapless_plan::Plan::parse`] (what EL2 runs at boot), then damaged and read again.
//!
//! Input: the system's text, then optionally a NUL (which TOML text cannot hold) and bytes that
//! choose each partition's image (shape, size, placement) and the damage done to the plan.
//!
//! Beyond "never panics": a plan keeps partitions, windows, the kernel and the GIC apart; each
//! partition's stage 2 reaches nothing of another's; images and device trees fit their RAM;
//! each device tree parses and states the partition's RAM and CPUs; EventIDs and LPIs are
//! distinct; EL2 reads back exactly what the build wrote; damaged plan bytes are refused or
//! read without a panic.

use crate::Bytes;
use std::collections::BTreeSet;
use trapless_plan::{AddrRange, FIRST_LPI, Plan, RegionKind};
use trapless_tools::image::{GuestImage, Placement};
use trapless_tools::planner::{self, SystemPlan};
use trapless_tools::system::{MEMORY_ALIGN, System};
use zerocopy::IntoBytes;

pub fn run(data: &[u8]) {
    let (text, params) = match data.iter().position(|&byte| byte == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Some(system) = crate::system::check(text) else { return };
    let mut params = Bytes(params);
    let images = images(&system, &mut params);
    plan_and_check(&system, images, &mut params);
}

/// Plans `system` with `images` and checks the plan, its device trees and its bytes as EL2
/// reads them; then damages the bytes as `params` says, and reads them again.
pub fn plan_and_check(system: &System, images: Vec<GuestImage>, params: &mut Bytes) {
    let plan = match planner::plan(system, images) {
        Ok(plan) => plan,
        Err(diagnostics) => {
            assert!(!diagnostics.0.is_empty(), "a refused plan has a diagnostic");
            let _ = diagnostics.to_string();
            return;
        }
    };
    assert_plan(system, &plan);
    let bytes = trapless_tools::pack::plan_bytes(&plan);
    assert_read_back(&plan, &bytes);
    damage_and_read(&bytes, params);
}

/// A guest image per partition, shaped by `params` (all zero: a 4 KiB Image at the RAM base).
fn images(system: &System, params: &mut Bytes) -> Vec<GuestImage> {
    let ram = system.platform.ram;
    system
        .partitions
        .iter()
        .map(|_| {
            let shape = params.u8();
            let footprint = (u64::from(params.u16()) + 1) * 0x1000;
            let placement = match shape % 4 {
                0 => Placement::Image { text_offset: 0 },
                1 => Placement::SelfRelocating { entry: (u64::from(shape >> 2) * 4) % footprint },
                2 => Placement::Image { text_offset: u64::from(shape >> 2) * 0x1_0000 },
                _ => {
                    let load = ram.base.0 + (u64::from(params.u32()) * 0x1000) % ram.size.max(1);
                    Placement::Fixed { load, entry: load + u64::from(shape >> 2) * 4 }
                }
            };
            let bytes = vec![0xa5; footprint.min(512) as usize];
            GuestImage { bytes, placement, footprint }
        })
        .collect()
}

/// The whole 2 MiB blocks a window takes.
fn blocks(window: AddrRange) -> AddrRange {
    AddrRange::new(window.base.0, window.size.next_multiple_of(MEMORY_ALIGN))
}

fn assert_plan(system: &System, plan: &SystemPlan) {
    let platform = &plan.platform;
    let windows: Vec<AddrRange> = plan.links.iter().map(|link| link.window).collect();
    let mut taken: Vec<(String, AddrRange)> = vec![("the kernel".into(), platform.kernel)];
    for partition in &plan.partitions {
        taken.push((format!("partition '{}'", partition.name), partition.memory));
    }
    for ((link, &window), checked) in plan.links.iter().zip(&windows).zip(&system.links) {
        assert_eq!(window.size, checked.window.size, "window of '{}' got another size", link.name);
        taken.push((format!("window of '{}'", link.name), blocks(window)));
    }
    for (index, (what, range)) in taken.iter().enumerate() {
        assert!(platform.ram.contains_range(range), "{what} {range} is outside RAM {}", platform.ram);
        assert!(range.base.0.is_multiple_of(MEMORY_ALIGN), "{what} {range} is not 2 MiB aligned");
        for (other, other_range) in &taken[index + 1..] {
            assert!(!range.overlaps(other_range), "{what} {range} overlaps {other} {other_range}");
        }
    }

    let mut vmids = BTreeSet::new();
    for (index, partition) in plan.partitions.iter().enumerate() {
        let name = &partition.name;
        let memory = partition.memory;
        assert!(partition.vmid != 0 && vmids.insert(partition.vmid), "VMID of '{name}'");
        assert_eq!(memory.size, system.partitions[index].memory.size, "'{name}' got another size");
        assert!(memory.contains_span(partition.image_load, partition.image.footprint), "image of '{name}' outside its RAM");
        assert!(memory.contains_span(partition.entry, 4), "entry of '{name}' outside its RAM");
        let image_end = partition.image_load + partition.image.footprint;
        assert!(partition.dtb_load >= image_end, "device tree of '{name}' on its image");
        assert!(memory.contains_span(partition.dtb_load, partition.dtb.len() as u64), "device tree of '{name}' outside its RAM");

        let on_links: Vec<AddrRange> =
            plan.links.iter().filter(|link| link.role_of(index).is_some()).map(|link| link.window).collect();
        for region in &partition.stage2 {
            let range = region.range;
            match region.kind {
                RegionKind::Ram => assert_eq!(range, memory, "'{name}' maps RAM that is not its own"),
                RegionKind::SharedRam => assert!(on_links.contains(&range), "'{name}' maps {range}, not a window of its links"),
                _ => {
                    assert!(!platform.ram.contains_range(&range), "'{name}' maps RAM {range} as a device");
                    assert!(!range.overlaps(&platform.gic.distributor), "'{name}' maps the GIC distributor");
                }
            }
            for (other, other_range) in &taken {
                let own = *other_range == memory || on_links.iter().any(|&window| blocks(window) == *other_range);
                assert!(own || !range.overlaps(other_range), "'{name}' maps {range}, which overlaps {other} {other_range}");
            }
        }

        let tree = fdt::Fdt::new(&partition.dtb).unwrap_or_else(|error| panic!("device tree of '{name}': {error:?}"));
        let regions: Vec<(usize, Option<usize>)> =
            tree.memory().regions().map(|region| (region.starting_address as usize, region.size)).collect();
        assert_eq!(regions, [(memory.base.0 as usize, Some(memory.size as usize))], "memory node of '{name}'");
        assert_eq!(tree.cpus().count(), partition.cpus.len(), "CPU nodes of '{name}'");
    }

    if let Some(its) = platform.gic.its.filter(|its| its.path.is_some()) {
        let mut events = BTreeSet::new();
        let mut lpis = BTreeSet::new();
        for doorbell in &plan.doorbells {
            assert!(u64::from(doorbell.event) < 1 << its.event_bits && events.insert(doorbell.event), "EventID {}", doorbell.event);
            let lpi = doorbell.lpi;
            assert!(lpi >= FIRST_LPI && u64::from(lpi) < 1 << its.lpi_id_bits && lpis.insert(lpi), "LPI {lpi}");
            assert!(plan.partitions[doorbell.to].cpus.contains(&doorbell.cpu), "doorbell '{}' to another's CPU", doorbell.name);
        }
    } else {
        assert!(plan.doorbells.is_empty(), "doorbells without an ITS CPU stores reach");
    }
}

/// `bytes` copied to 8-byte aligned memory, as EL2 finds its plan.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut buffer = [0; 8];
        buffer[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(buffer);
    }
    words
}

fn assert_read_back(plan: &SystemPlan, bytes: &[u8]) {
    let words = aligned(bytes);
    let parsed = Plan::parse(&words.as_bytes()[..bytes.len()]).unwrap_or_else(|error| panic!("EL2 refuses the plan: {error}"));
    assert_eq!(parsed.total_size(), bytes.len());
    assert_eq!(parsed.platform().name.as_str(), plan.platform.name);
    assert_eq!(parsed.cpus().len(), plan.platform.cpus.len());
    assert_eq!(parsed.partitions().len(), plan.partitions.len());
    for (index, (record, partition)) in parsed.partitions().iter().zip(&plan.partitions).enumerate() {
        assert_eq!(record.name.as_str(), partition.name);
        assert_eq!((record.vmid, record.boot_cpu as usize, record.memory), (partition.vmid, partition.cpus[0], partition.memory));
        assert_eq!(record.entry.0, partition.entry);
        assert_eq!(parsed.cpus_of(index).collect::<BTreeSet<_>>(), partition.cpus.iter().copied().collect());
        let regions: Vec<(u64, u64, u32)> =
            parsed.regions(record).iter().map(|region| (region.pa.0, region.size, region.kind)).collect();
        let expected: Vec<(u64, u64, u32)> =
            partition.stage2.iter().map(|region| (region.range.base.0, region.range.size, region.kind.code())).collect();
        assert_eq!(regions, expected, "stage 2 of '{}'", partition.name);
        assert_eq!(parsed.blob(&record.image), partition.image.bytes.as_slice());
        assert_eq!((parsed.blob(&record.dtb), record.dtb.load), (partition.dtb.as_slice(), trapless_plan::PhysAddr(partition.dtb_load)));
    }
    assert_eq!(parsed.doorbells().len(), plan.doorbells.len());
    assert_eq!(parsed.windows().len(), plan.links.len());
    for (record, link) in parsed.windows().iter().zip(&plan.links) {
        assert_eq!((record.range, record.device as usize, record.driver as usize), (link.window, link.device, link.driver));
    }
    let emulated = plan.links.iter().filter(|link| link.emulated.is_some()).count();
    assert_eq!(parsed.emulated_links().len(), emulated);
}

/// Overwrites bytes of the plan as `params` say, and reads it again: EL2 refuses it or reads
/// it, never panics, and what it reads stays inside the plan.
fn damage_and_read(bytes: &[u8], params: &mut Bytes) {
    if params.is_empty() || bytes.is_empty() {
        return;
    }
    let mut damaged = bytes.to_vec();
    let count = 1 + params.u8() % 16;
    for _ in 0..count {
        // Mostly the header and tables, which come first; now and then anywhere.
        let position = usize::from(params.u16());
        let position = if position & 1 == 0 { (position >> 1) % damaged.len().min(4096) } else { position % damaged.len() };
        damaged[position] = params.u8();
    }
    let words = aligned(&damaged);
    let Ok(parsed) = Plan::parse(&words.as_bytes()[..damaged.len()]) else { return };
    assert!(parsed.total_size() <= damaged.len());
    let _ = parsed.platform().name.to_string();
    for (index, partition) in parsed.partitions().iter().enumerate() {
        let _ = partition.name.to_string();
        for region in parsed.regions(partition) {
            let _ = region.kind();
        }
        let _ = parsed.blob(&partition.image).len() + parsed.blob(&partition.dtb).len();
        let _ = parsed.cpus_of(index).count();
    }
    for window in parsed.windows() {
        assert!(parsed.blob(&window.init).len() as u64 <= window.range.size);
    }
    for link in parsed.emulated_links() {
        let _ = link.name.to_string();
        let _ = parsed.windows()[link.window as usize];
    }
}
