//! The board profiles against the boards' own device trees: EL2's firmware-tree check
//! (`trapless_kernel_core::firmware_dt::check`, the very function EL2 runs at boot) on the Rock
//! 5B's and the FVP's trees from Debian's 6.12 kernel, with the memory node their loader
//! (U-Boot) writes, accepts the board; a tree with one fact changed is refused with the message
//! EL2 would print. And every shipped system builds for both boards, its device trees clean
//! under dtc. Nothing here runs on a board.

#[path = "debian_dtbs.rs"]
mod debian_dtbs;

use std::process::Command;
use trapless_plan::{AddrRange, Plan};
use trapless_tools::pack::plan_bytes;
use trapless_tools::{Target, build_system, plan_system};

/// A flattened device tree being written (version 17), as the device-tree specification lays
/// it out. (vm-fdt, which trapless writes its trees with, refuses some of the boards' property
/// names, longer than its limit.)
#[derive(Default)]
struct FdtWriter {
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl FdtWriter {
    fn token(&mut self, token: u32) {
        self.structure.extend(token.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    fn begin_node(&mut self, name: &str) {
        self.token(1);
        self.structure.extend(name.as_bytes());
        self.structure.push(0);
        self.pad();
    }

    fn end_node(&mut self) {
        self.token(2);
    }

    fn property(&mut self, name: &str, value: &[u8]) {
        let offset = self.strings.len() as u32;
        self.strings.extend(name.as_bytes());
        self.strings.push(0);
        self.token(3);
        self.structure.extend((value.len() as u32).to_be_bytes());
        self.structure.extend(offset.to_be_bytes());
        self.structure.extend(value);
        self.pad();
    }

    fn finish(mut self, reservations: &[AddrRange]) -> Vec<u8> {
        self.token(9);
        let reserve: Vec<u8> = reservations
            .iter()
            .flat_map(|range| [range.base.0, range.size])
            .chain([0, 0])
            .flat_map(u64::to_be_bytes)
            .collect();
        let (reserve_at, structure_at) = (40u32, 40 + reserve.len() as u32);
        let strings_at = structure_at + self.structure.len() as u32;
        let total = strings_at + self.strings.len() as u32;
        let header = [0xd00d_feed, total, structure_at, strings_at, reserve_at, 17, 16, 0, self.strings.len() as u32, self.structure.len() as u32];
        let mut out: Vec<u8> = header.iter().flat_map(|word: &u32| word.to_be_bytes()).collect();
        out.extend(reserve);
        out.extend(self.structure);
        out.extend(self.strings);
        out
    }
}

/// One change to a tree.
enum Edit<'a> {
    /// What U-Boot does: every `device_type = "memory"` node goes, and `/memory` says these banks.
    Memory(&'a [AddrRange]),
    /// The node at this path (and what is below it) goes.
    Remove(&'a str),
    /// The node at this path gets this `reg` (2 address and 2 size cells, as the boards' roots).
    Reg(&'a str, &'a [(u64, u64)]),
    /// A `/memreserve/` entry more.
    Reserve(AddrRange),
}

fn cells(pairs: &[(u64, u64)]) -> Vec<u8> {
    pairs.iter().flat_map(|&(address, size)| [address, size]).flat_map(u64::to_be_bytes).collect()
}

/// Copies `node` (at `path`) into `out`, applying `edits`.
fn copy(node: fdt::node::FdtNode<'_, '_>, path: &str, out: &mut FdtWriter, edits: &[Edit<'_>]) {
    let is_memory = node.property("device_type").and_then(|property| property.as_str()) == Some("memory");
    if edits.iter().any(|edit| matches!(edit, Edit::Remove(removed) if *removed == path))
        || (is_memory && edits.iter().any(|edit| matches!(edit, Edit::Memory(_))))
    {
        return;
    }
    let name = if path == "/" { "" } else { node.name };
    out.begin_node(name);
    let reg = edits.iter().find_map(|edit| match edit {
        Edit::Reg(at, reg) if *at == path => Some(cells(reg)),
        _ => None,
    });
    for property in node.properties() {
        let value = if property.name == "reg" { reg.as_deref().unwrap_or(property.value) } else { property.value };
        out.property(property.name, value);
    }
    if path == "/" {
        for edit in edits {
            if let Edit::Memory(banks) = edit {
                out.begin_node("memory");
                out.property("device_type", b"memory\0");
                let pairs: Vec<(u64, u64)> = banks.iter().map(|bank| (bank.base.0, bank.size)).collect();
                out.property("reg", &cells(&pairs));
                out.end_node();
            }
        }
    }
    for child in node.children() {
        let child_path = if path == "/" { format!("/{}", child.name) } else { format!("{path}/{}", child.name) };
        copy(child, &child_path, out, edits);
    }
    out.end_node();
}

/// `tree` with `edits` applied, as a loader hands it on.
fn edited(tree: &[u8], edits: &[Edit<'_>]) -> Vec<u8> {
    let parsed = fdt::Fdt::new(tree).unwrap();
    let mut reservations: Vec<AddrRange> =
        parsed.memory_reservations().map(|entry| AddrRange::new(entry.address() as u64, entry.size() as u64)).collect();
    reservations.extend(edits.iter().filter_map(|edit| match edit {
        Edit::Reserve(range) => Some(*range),
        _ => None,
    }));
    let mut out = FdtWriter::default();
    copy(parsed.find_node("/").unwrap(), "/", &mut out, edits);
    out.finish(&reservations)
}

/// EL2's verdict on `tree` for the demo planned for `platform`: its refusals, as EL2 prints
/// them after `trapless: refusing to start: `.
fn verdict(platform: &str, tree: &[u8]) -> Result<(), Vec<String>> {
    let system = trapless_tools::default_system();
    let plan = plan_system(Target { system: &system, platform: Some(platform) }).unwrap_or_else(|error| panic!("{error}"));
    let bytes = plan_bytes(&plan);
    // EL2 reads the plan in place, 8-byte aligned.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut full = [0; 8];
        full[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(full);
    }
    let aligned: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
    let plan = Plan::parse(&aligned[..bytes.len()]).unwrap();
    trapless_kernel_core::firmware_dt::check(tree, &plan)
}

/// Asserts EL2 refuses `tree` on `platform` with exactly `expected`.
#[track_caller]
fn refused(platform: &str, tree: &[u8], expected: &[&str]) {
    let problems = verdict(platform, tree).expect_err("the changed tree must be refused");
    assert_eq!(problems, expected, "(kernel package {})", debian_dtbs::version());
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The banks U-Boot writes on a Rock 5B with `gib` GiB: the first 2 MiB stay TF-A's, RAM runs
/// to the I/O hole at 0xf000_0000, the rest lies above 4 GiB, around the two gaps RK3588 has
/// on 16 GiB and more (U-Boot's rk3588 DRAM fix-up).
fn rock_5b_banks(gib: u64) -> Vec<AddrRange> {
    let low = AddrRange::new(2 * MIB, 0xf000_0000 - 2 * MIB);
    let high_end = 4 * GIB + (gib * GIB - 0xf000_0000) + 256 * MIB;
    let mut banks = vec![low];
    let mut start = 4 * GIB;
    for (gap_start, gap_end) in [(0x3_fc00_0000u64, 0x3_fc50_0000u64), (0x3_fff0_0000, 0x4_0000_0000)] {
        if high_end > gap_start && start < gap_start {
            banks.push(AddrRange::new(start, gap_start - start));
            start = gap_end;
        }
    }
    banks.push(AddrRange::new(start, high_end.max(start) - start));
    banks
}

#[test]
fn the_rock_5b_profile_passes_el2s_check_on_the_boards_own_tree_for_every_ram_size() {
    let tree = debian_dtbs::tree(debian_dtbs::ROCK_5B);
    for gib in [4, 8, 16, 32] {
        let banks = rock_5b_banks(gib);
        assert_eq!(verdict("rock-5b", &edited(&tree, &[Edit::Memory(&banks)])), Ok(()), "{gib} GiB: {banks:?}");
    }
    // As Linux ships it, the tree has no /memory: U-Boot must write one, and EL2 says so.
    refused(
        "rock-5b",
        &tree,
        &["the firmware's device tree has RAM none (0 MiB), platform rock-5b uses [0x20_0000..0xf000_0000) (3838 MiB)"],
    );
}

#[test]
fn a_rock_5b_tree_with_one_fact_changed_is_refused_with_el2s_message() {
    let tree = debian_dtbs::tree(debian_dtbs::ROCK_5B);
    let banks = rock_5b_banks(8);
    let memory = Edit::Memory(&banks);
    // The distributor 64 KiB off (the redistributors where they are).
    let gic = [(0xfe61_0000, 0x1_0000), (0xfe68_0000, 0x10_0000)];
    refused(
        "rock-5b",
        &edited(&tree, &[Edit::Memory(&banks), Edit::Reg("/interrupt-controller@fe600000", &gic)]),
        &["the GIC distributor / redistributors are at 0xfe61_0000 / 0xfe68_0000, platform rock-5b says 0xfe60_0000 / 0xfe68_0000"],
    );
    // The demo's partition beta runs on CPU 1, the second Cortex-A55: a tree without it.
    refused(
        "rock-5b",
        &edited(&tree, &[Edit::Memory(&banks), Edit::Remove("/cpus/cpu@100")]),
        &["partition beta uses CPU 1 (MPIDR 0x100), which is not among the 7 CPUs of the firmware's device tree"],
    );
    // A board with less RAM than the profile uses (2 GiB in its low bank).
    let small = [AddrRange::new(2 * MIB, 2 * GIB - 2 * MIB)];
    refused(
        "rock-5b",
        &edited(&tree, &[Edit::Memory(&small)]),
        &["the firmware's device tree has RAM [0x20_0000..0x8000_0000) (2046 MiB), platform rock-5b uses [0x20_0000..0xf000_0000) (3838 MiB)"],
    );
    // The ITS the profile rings moved; the other one stays.
    refused(
        "rock-5b",
        &edited(&tree, &[memory, Edit::Reg("/interrupt-controller@fe600000/msi-controller@fe640000", &[(0xfe70_0000, 0x2_0000)])]),
        &["the firmware's device tree has the GIC ITS at 0xfe70_0000, 0xfe66_0000, platform rock-5b says 0xfe64_0000"],
    );
}

/// What U-Boot (vexpress_fvp) writes: DRAM below TF-A's 16 MiB, and the 2 GiB at 0x8_8000_0000.
const FVP_BANKS: [AddrRange; 2] = [AddrRange::new(0x8000_0000, 0x7f00_0000), AddrRange::new(0x8_8000_0000, 0x8000_0000)];

#[test]
fn the_fvp_profile_passes_el2s_check_on_the_models_own_tree() {
    let tree = debian_dtbs::tree(debian_dtbs::FVP_BASE_REVC);
    assert_eq!(verdict("fvp-base-revc", &edited(&tree, &[Edit::Memory(&FVP_BANKS)])), Ok(()));
    // The tree as Linux ships it describes all 4 GiB: that holds the profile's RAM too. Its
    // /memreserve/ of 0x8000_0000 lies below the kernel Image, in the region's first 2 MiB.
    assert_eq!(verdict("fvp-base-revc", &tree), Ok(()));
}

#[test]
fn an_fvp_tree_with_one_fact_changed_is_refused_with_el2s_message() {
    let tree = debian_dtbs::tree(debian_dtbs::FVP_BASE_REVC);
    let memory = || Edit::Memory(&FVP_BANKS);
    // The ITS, read through the GIC's `ranges`, 128 KiB off.
    refused(
        "fvp-base-revc",
        &edited(&tree, &[memory(), Edit::Reg("/interrupt-controller@2f000000/msi-controller@2f020000", &[(0x2f04_0000, 0x2_0000)])]),
        &["the firmware's device tree has the GIC ITS at 0x2f04_0000, platform fvp-base-revc says 0x2f02_0000"],
    );
    // CPU 0 of the second cluster gone: the demo does not use it, but a CPU the platform
    // does not have is refused the other way round.
    assert_eq!(verdict("fvp-base-revc", &edited(&tree, &[memory(), Edit::Remove("/cpus/cpu@10000")])), Ok(()));
    refused(
        "fvp-base-revc",
        &edited(&tree, &[memory(), Edit::Remove("/cpus/cpu@0")]),
        &["partition alpha uses CPU 0 (MPIDR 0x0), which is not among the 7 CPUs of the firmware's device tree"],
    );
    // Firmware that keeps memory trapless gives a partition: the demo's alpha is at 0x8200_0000.
    let reserved = AddrRange::new(0x8300_0000, 0x10_0000);
    refused(
        "fvp-base-revc",
        &edited(&tree, &[memory(), Edit::Reserve(reserved)]),
        &["the firmware reserves [0x8300_0000..0x8310_0000) (/memreserve/), which overlaps partition alpha at [0x8200_0000..0x8600_0000)"],
    );
    // The console UART, behind two buses' ranges, gone.
    refused(
        "fvp-base-revc",
        &edited(&tree, &[memory(), Edit::Remove("/bus@8000000/motherboard-bus@8000000/iofpga-bus@300000000/serial@90000")]),
        &["the firmware's device tree has no enabled device at 0x1c09_0000, EL2's console in platform fvp-base-revc"],
    );
}

#[test]
fn every_shipped_system_builds_for_both_boards_with_trees_dtc_takes_without_a_warning() {
    let mut systems: Vec<_> = std::fs::read_dir(trapless_tests::root().join("partitions/systems"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    systems.sort();
    assert!(systems.len() >= 4, "{systems:?}");
    for platform in ["rock-5b", "fvp-base-revc"] {
        for system in &systems {
            let built = build_system(Target { system, platform: Some(platform) })
                .unwrap_or_else(|error| panic!("{} on {platform}: {error}", system.display()));
            for partition in &built.plan.partitions {
                let dtb = built.dir.join(format!("{}.dtb", partition.name));
                let output = Command::new("dtc").args(["-I", "dtb", "-O", "dts", "-o", "/dev/null"]).arg(&dtb).output().unwrap();
                let warnings = String::from_utf8_lossy(&output.stderr);
                assert!(output.status.success() && warnings.is_empty(), "{}: dtc says:\n{warnings}", dtb.display());
            }
        }
    }
}
