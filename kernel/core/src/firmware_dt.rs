//! The firmware's device tree against the platform in the plan: trapless refuses to start on a
//! machine that is not the one it was built for. EL2 runs [`check`] at boot on the tree the
//! firmware passed (`kernel/src/firmware_dt.rs` finds it); the host tests run the same function
//! on boards' own trees (`tests/boards.rs`).
//!
//! What is compared: RAM (exactly the platform's, or holding it, as the platform says), the
//! memory the firmware reserves (none of it may be what trapless gives out), the CPUs (every
//! firmware CPU is a platform CPU, every CPU a partition uses is there), the GIC's distributor,
//! redistributors and ITS, and EL2's console. Addresses are read through every parent's
//! `ranges`, as the device-tree specification defines them.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use fdt::Fdt;
use fdt::node::FdtNode;
use trapless_abi::dt;
use trapless_plan::{AddrRange, FirmwareRam, MPIDR_AFFINITY_MASK, Plan, PlatformRecord};

/// Bytes below the kernel Image in its region: the loader's (QEMU puts its tree there, a
/// firmware may reserve some), never trapless's.
const BELOW_THE_IMAGE: u64 = 2 << 20;

/// How a node's `reg` addresses map to the root's (CPU physical) addresses.
#[derive(Clone, Debug)]
enum Translation {
    /// The same addresses (the root, or `ranges;` all the way up).
    Identity,
    /// Through these windows: (child address, root address, size).
    Windows(Vec<(u64, u64, u64)>),
    /// Not memory-mapped (a parent without `ranges`: CPUs, I2C devices, ...).
    Unmapped,
}

impl Translation {
    fn apply(&self, address: u64) -> Option<u64> {
        match self {
            Self::Identity => Some(address),
            Self::Windows(windows) => windows
                .iter()
                .find(|&&(child, _, size)| address >= child && address - child < size)
                .map(|&(child, root, _)| root + (address - child)),
            Self::Unmapped => None,
        }
    }

    /// The translation for the children of a node with `ranges` = `value` (`None`: no `ranges`),
    /// whose children use `child_cells` address cells, the node itself `own_cells` address
    /// cells and its children `size_cells` size cells; `self` is the node's own translation.
    fn below(&self, value: Option<&[u8]>, child_cells: usize, own_cells: usize, size_cells: usize) -> Self {
        let Some(value) = value else { return Self::Unmapped };
        if value.is_empty() {
            return self.clone();
        }
        let stride = 4 * (child_cells + own_cells + size_cells);
        if stride == 0 || child_cells > 2 || own_cells > 2 || size_cells > 2 {
            return Self::Unmapped;
        }
        let number = |bytes: &[u8]| dt::cells(bytes).fold(0u64, |value, cell| (value << 32) | u64::from(cell));
        let windows = value
            .chunks_exact(stride)
            .filter_map(|entry| {
                let (child, rest) = entry.split_at(4 * child_cells);
                let (parent, size) = rest.split_at(4 * own_cells);
                Some((number(child), self.apply(number(parent))?, number(size)))
            })
            .collect();
        Self::Windows(windows)
    }
}

/// A node of the tree with its `reg` in root addresses.
struct Found<'a> {
    path: String,
    compatible: Vec<&'a str>,
    device_type: Option<&'a str>,
    /// Its `reg` entries in CPU physical addresses (empty if unmapped).
    reg: Vec<AddrRange>,
    /// Its `reg` entries as written, with its parent's cells (a CPU's MPIDR).
    raw_reg: Vec<u64>,
    enabled: bool,
}

fn cells_of(node: &FdtNode<'_, '_>, name: &str, default: usize) -> usize {
    node.property(name).and_then(|property| dt::cells(property.value).next()).map_or(default, |cells| cells as usize)
}

/// Every node below `node` (whose path is `path`, its `reg` read with `address_cells` and
/// `size_cells` and mapped by `translation`), `node` first, into `found`.
fn walk<'a>(
    node: FdtNode<'_, 'a>,
    path: String,
    address_cells: usize,
    size_cells: usize,
    translation: &Translation,
    found: &mut Vec<Found<'a>>,
) {
    let string = |name: &str| node.property(name).and_then(|property| property.as_str());
    let raw: Vec<(u64, u64)> = node
        .property("reg")
        .map(|property| dt::reg_entries(property.value, address_cells.min(2), size_cells.min(2)).collect())
        .unwrap_or_default();
    let reg = raw
        .iter()
        .filter_map(|&(address, size)| translation.apply(address).map(|base| AddrRange::new(base, size)))
        .collect();
    let compatible = node.compatible().map(|compatible| compatible.all().collect()).unwrap_or_default();
    let enabled = matches!(string("status"), None | Some("okay" | "ok"));
    found.push(Found {
        path: path.clone(),
        compatible,
        device_type: string("device_type"),
        reg,
        raw_reg: raw.iter().map(|&(address, _)| address).collect(),
        enabled,
    });
    let (child_address, child_size) = (cells_of(&node, "#address-cells", 2), cells_of(&node, "#size-cells", 1));
    // The root's children are in CPU physical addresses; below them, only `ranges` maps.
    let below = if path == "/" {
        Translation::Identity
    } else {
        translation.below(node.property("ranges").map(|ranges| ranges.value), child_address, address_cells, child_size)
    };
    for child in node.children() {
        let child_path = if path == "/" { format!("/{}", child.name) } else { format!("{path}/{}", child.name) };
        walk(child, child_path, child_address, child_size, &below, found);
    }
}

/// Sorted, with touching and overlapping ranges merged.
fn merged(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort_by_key(|range| range.base.0);
    let mut out: Vec<AddrRange> = Vec::new();
    for range in ranges.into_iter().filter(|range| range.size != 0) {
        match out.last_mut() {
            Some(last) if range.base.0 <= last.end() => {
                let end = last.end().max(range.end());
                *last = AddrRange::new(last.base.0, end - last.base.0);
            }
            _ => out.push(range),
        }
    }
    out
}

fn list(ranges: &[AddrRange]) -> String {
    if ranges.is_empty() {
        return String::from("none");
    }
    ranges.iter().map(|range| format!("{range}")).collect::<Vec<_>>().join(", ")
}

/// Every way the firmware's tree `tree` disagrees with the plan's platform, one message each.
pub fn check(tree: &[u8], plan: &Plan<'_>) -> Result<(), Vec<String>> {
    let tree = Fdt::new(tree).map_err(|error| alloc::vec![format!("the firmware's device tree is unreadable: {error:?}")])?;
    let platform = plan.platform();
    let mut found = Vec::new();
    if let Some(root) = tree.find_node("/") {
        walk(root, String::from("/"), 2, 1, &Translation::Identity, &mut found);
    }
    let mut problems = Vec::new();
    check_ram(&found, platform, &mut problems);
    check_reserved(&tree, &found, plan, &mut problems);
    check_cpus(&found, plan, &mut problems);
    check_gic(&found, platform, &mut problems);
    if platform.console.size != 0 && !found.iter().any(|node| node.enabled && node.reg.iter().any(|reg| reg.base == platform.console.base)) {
        problems.push(format!(
            "the firmware's device tree has no enabled device at {}, EL2's console in platform {}",
            platform.console.base, platform.name
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// RAM: the platform's RAM, exactly or within the firmware's, as the platform says.
fn check_ram(found: &[Found<'_>], platform: &PlatformRecord, problems: &mut Vec<String>) {
    let ram: Vec<AddrRange> = found
        .iter()
        .filter(|node| node.device_type == Some("memory") && node.enabled)
        .flat_map(|node| node.reg.iter().copied())
        .collect();
    let ram = merged(ram);
    let total: u64 = ram.iter().map(|range| range.size).sum();
    let holds = ram.iter().any(|range| range.contains_range(&platform.ram));
    let fits = match platform.firmware_ram() {
        FirmwareRam::Exact => holds && total == platform.ram.size,
        FirmwareRam::AtLeast => holds,
    };
    if !fits {
        let how = match platform.firmware_ram() {
            FirmwareRam::Exact => "describes",
            FirmwareRam::AtLeast => "uses",
        };
        problems.push(format!(
            "the firmware's device tree has RAM {} ({} MiB), platform {} {how} {} ({} MiB)",
            list(&ram),
            total >> 20,
            platform.name,
            platform.ram,
            platform.ram.size >> 20
        ));
    }
}

/// What the firmware reserves (`/memreserve/` and `/reserved-memory`) must not be what trapless
/// gives out: the kernel Image, its plan and heap, a partition's RAM or a link's window.
fn check_reserved(tree: &Fdt<'_>, found: &[Found<'_>], plan: &Plan<'_>, problems: &mut Vec<String>) {
    let platform = plan.platform();
    let kernel = platform.kernel;
    let mut used = alloc::vec![(
        String::from("the kernel"),
        AddrRange::new(kernel.base.0 + BELOW_THE_IMAGE, kernel.size.saturating_sub(BELOW_THE_IMAGE)),
    )];
    used.extend(plan.partitions().iter().map(|partition| (format!("partition {}", partition.name), partition.memory)));
    used.extend(plan.windows().iter().map(|window| (String::from("a link's window"), window.range)));

    let mut reserved: Vec<(String, AddrRange)> = tree
        .memory_reservations()
        .map(|entry| (String::from("/memreserve/"), AddrRange::new(entry.address() as u64, entry.size() as u64)))
        .collect();
    for node in found.iter().filter(|node| node.path.starts_with("/reserved-memory/") && node.enabled) {
        reserved.extend(node.reg.iter().map(|&range| (node.path.clone(), range)));
    }
    for (source, range) in &reserved {
        for (what, used) in used.iter().filter(|(_, used)| used.overlaps(range)) {
            problems.push(format!("the firmware reserves {range} ({source}), which overlaps {what} at {used}"));
        }
    }
}

/// CPUs: every firmware CPU is a platform CPU, and every CPU a partition uses is there.
fn check_cpus(found: &[Found<'_>], plan: &Plan<'_>, problems: &mut Vec<String>) {
    let platform = plan.platform();
    let firmware_cpus: Vec<u64> = found
        .iter()
        .filter(|node| node.path.starts_with("/cpus/") && node.device_type == Some("cpu") && node.enabled)
        .flat_map(|node| node.raw_reg.iter().map(|mpidr| mpidr & MPIDR_AFFINITY_MASK))
        .collect();
    let platform_mpidrs: Vec<u64> = plan.cpus().iter().map(|cpu| cpu.mpidr).collect();
    for mpidr in firmware_cpus.iter().filter(|mpidr| !platform_mpidrs.contains(mpidr)) {
        problems.push(format!(
            "the firmware's device tree has a CPU with MPIDR {mpidr:#x}, which platform {} does not describe",
            platform.name
        ));
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
}

/// GIC: a GICv3 (or v4) at the platform's distributor and redistributor addresses, and an ITS
/// where the platform says, if it has one.
fn check_gic(found: &[Found<'_>], platform: &PlatformRecord, problems: &mut Vec<String>) {
    let compatible = |node: &&Found<'_>, with: &str| node.enabled && node.compatible.contains(&with);
    match found.iter().find(|node| compatible(node, "arm,gic-v3")) {
        None => problems.push(String::from("the firmware's device tree has no GICv3")),
        Some(gic) => {
            let base = |index: usize| gic.reg.get(index).map(|range| range.base);
            if base(0) != Some(platform.gicd.base) || base(1) != Some(platform.gicr.base) {
                let at = |index: usize| base(index).map_or(String::from("nowhere"), |base| format!("{base}"));
                problems.push(format!(
                    "the GIC distributor / redistributors are at {} / {}, platform {} says {} / {}",
                    at(0),
                    at(1),
                    platform.name,
                    platform.gicd.base,
                    platform.gicr.base
                ));
            }
        }
    }
    if platform.its.size != 0 {
        let its: Vec<u64> = found
            .iter()
            .filter(|node| compatible(node, "arm,gic-v3-its"))
            .filter_map(|node| node.reg.first().map(|range| range.base.0))
            .collect();
        if !its.contains(&platform.its.base.0) {
            let found = if its.is_empty() {
                String::from("no GIC ITS")
            } else {
                let bases: Vec<String> = its.iter().map(|&base| format!("{}", trapless_plan::PhysAddr(base))).collect();
                format!("the GIC ITS at {}", bases.join(", "))
            };
            problems.push(format!("the firmware's device tree has {found}, platform {} says {}", platform.name, platform.its.base));
        }
    }
}
