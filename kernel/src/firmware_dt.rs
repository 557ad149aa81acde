//! Checks the firmware's device tree against the platform description in the plan: trapless
//! refuses to start on a machine that is not the one it was built for.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use fdt::Fdt;
use fdt::node::FdtNode;
use trapless_abi::dt;
use trapless_plan::{AddrRange, MPIDR_AFFINITY_MASK, Plan};

/// FDT header magic, big-endian at offset 0.
const FDT_MAGIC: u32 = 0xd00d_feed;

fn be32(address: usize) -> u32 {
    // SAFETY: the caller checked `address` lies in RAM, which EL2 maps; the header fields are
    // 4-byte aligned as the FDT format requires.
    u32::from_be(unsafe { (address as *const u32).read_volatile() })
}

/// The device tree the firmware passed in `x0`, if there is one.
fn firmware_tree(address: usize, plan: &Plan<'_>) -> Result<Fdt<'static>, String> {
    let ram = plan.platform().ram;
    if !address.is_multiple_of(8) || !ram.contains_span(address as u64, 8) || be32(address) != FDT_MAGIC {
        return Err(format!("the firmware passed no device tree (x0 = {address:#x})"));
    }
    let size = be32(address + 4) as usize;
    if !ram.contains_span(address as u64, size as u64) {
        return Err(format!("the firmware's device tree at {address:#x} runs out of RAM"));
    }
    // SAFETY: the tree lies in RAM (checked above) and nothing writes it while we read it.
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    Fdt::new(bytes).map_err(|error| format!("the firmware's device tree is unreadable: {error:?}"))
}

fn cells(node: &FdtNode<'_, '_>, name: &str) -> Vec<u64> {
    node.property(name).map(|property| dt::cells(property.value).map(u64::from).collect()).unwrap_or_default()
}

/// `reg` as (address, size) pairs with the given cell counts.
fn reg(node: &FdtNode<'_, '_>, address_cells: usize, size_cells: usize) -> Vec<(u64, u64)> {
    node.property("reg")
        .map(|property| dt::reg_entries(property.value, address_cells, size_cells).collect())
        .unwrap_or_default()
}

fn is_device_type(node: &FdtNode<'_, '_>, device_type: &str) -> bool {
    node.property("device_type").and_then(|property| property.as_str()) == Some(device_type)
}

/// Every way the firmware's tree at `address` disagrees with the plan's platform.
pub fn check(address: usize, plan: &Plan<'_>) -> Result<(), Vec<String>> {
    let tree = firmware_tree(address, plan).map_err(|problem| alloc::vec![problem])?;
    let platform = plan.platform();
    let root = tree.find_node("/");
    let root_cell = |name: &str, default: u64| {
        root.as_ref().and_then(|node| cells(node, name).first().copied()).unwrap_or(default) as usize
    };
    let (address_cells, size_cells) = (root_cell("#address-cells", 2), root_cell("#size-cells", 1));
    let mut problems = Vec::new();

    // RAM: the platform's RAM is one firmware memory region, and nothing more is there.
    let ram: Vec<AddrRange> = tree
        .all_nodes()
        .filter(|node| is_device_type(node, "memory"))
        .flat_map(|node| reg(&node, address_cells, size_cells))
        .map(|(base, size)| AddrRange::new(base, size))
        .collect();
    let total: u64 = ram.iter().map(|range| range.size).sum();
    if !ram.iter().any(|range| range.contains_range(&platform.ram)) || total != platform.ram.size {
        let found = ram.iter().map(|range| format!("{range}")).collect::<Vec<_>>().join(", ");
        problems.push(format!(
            "the firmware's device tree has RAM {found} ({} MiB), platform {} describes {} ({} MiB)",
            total >> 20,
            platform.name,
            platform.ram,
            platform.ram.size >> 20
        ));
    }

    // CPUs: every firmware CPU is a platform CPU, and every CPU a partition uses is there.
    let cpus = tree.find_node("/cpus");
    let cpu_cells = cpus.as_ref().and_then(|node| cells(node, "#address-cells").first().copied()).unwrap_or(1);
    let firmware_cpus: Vec<u64> = cpus
        .iter()
        .flat_map(|node| node.children())
        .filter(|node| is_device_type(node, "cpu"))
        .flat_map(|node| reg(&node, cpu_cells as usize, 0))
        .map(|(mpidr, _)| mpidr & MPIDR_AFFINITY_MASK)
        .collect();
    let platform_mpidrs: Vec<u64> = plan.cpus().iter().map(|cpu| cpu.mpidr).collect();
    for mpidr in &firmware_cpus {
        if !platform_mpidrs.contains(mpidr) {
            problems.push(format!(
                "the firmware's device tree has a CPU with MPIDR {mpidr:#x}, which platform {} does not describe",
                platform.name
            ));
        }
    }
    for (index, cpu) in plan.cpus().iter().enumerate() {
        let mpidr = cpu.mpidr;
        if let Some(owner) = cpu.owner().filter(|_| !firmware_cpus.contains(&mpidr)) {
            problems.push(format!(
                "partition {} uses CPU {index} (MPIDR {mpidr:#x}), which is not among the {} CPUs of the firmware's device tree",
                plan.partitions()[owner].name,
                firmware_cpus.len()
            ));
        }
    }

    // GIC: a GICv3 (or v4) at the platform's distributor and redistributor addresses, and its
    // ITS where the platform says, if it has one.
    match tree.find_compatible(&["arm,gic-v3"]) {
        None => problems.push(String::from("the firmware's device tree has no GICv3")),
        Some(gic) => {
            let regions = reg(&gic, address_cells, size_cells);
            let found = |index: usize| regions.get(index).map(|&(base, _)| base);
            if found(0) != Some(platform.gicd.base.0) || found(1) != Some(platform.gicr.base.0) {
                problems.push(format!(
                    "the GIC distributor / redistributors are at {:#x?} / {:#x?}, platform {} says {} / {}",
                    found(0),
                    found(1),
                    platform.name,
                    platform.gicd.base,
                    platform.gicr.base
                ));
            }
        }
    }
    if platform.its.size != 0 {
        let its = tree.find_compatible(&["arm,gic-v3-its"]);
        let its_cells = |name: &str, default: u64| {
            tree.find_compatible(&["arm,gic-v3"])
                .and_then(|gic| cells(&gic, name).first().copied())
                .unwrap_or(default) as usize
        };
        let base = its
            .and_then(|node| reg(&node, its_cells("#address-cells", 2), its_cells("#size-cells", 2)).first().copied())
            .map(|(base, _)| base);
        if base != Some(platform.its.base.0) {
            problems.push(format!(
                "the firmware's device tree has the GIC ITS at {base:#x?}, platform {} says {}",
                platform.name, platform.its.base
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}
