//! Target `system`: any text as a system description, checked as `cargo xtask check` checks a
//! file (against the real platforms in `platform/`), up to its diagnostics.
//!
//! Beyond "never panics": a rejected description gets at least one diagnostic, each naming a
//! line of the text; an accepted one keeps every promise the planner relies on (checked again
//! here from the checked [`System`], independently of how the checker got there).

use crate::system_path;
use std::collections::BTreeSet;
use trapless_plan::{AddrRange, MAX_PARTITIONS, MAX_WINDOWS};
use trapless_tools::system::{self, MAX_BOOTARGS, MEMORY_ALIGN, System};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(system) = check(text) {
        assert_promises(&system);
    }
}

/// Checks `text`; on a rejection, checks the diagnostics and returns `None`.
pub fn check(text: &str) -> Option<System> {
    let path = system_path();
    match system::load_text(&path, text.to_string(), &trapless_tools::root(), None) {
        Ok(system) => Some(system),
        Err(diagnostics) => {
            assert!(!diagnostics.0.is_empty(), "a rejected system has a diagnostic");
            let lines = text.matches('\n').count() + 1;
            for diagnostic in diagnostics.0.iter().filter(|diagnostic| diagnostic.path == path) {
                if let Some(line) = diagnostic.line {
                    assert!((1..=lines).contains(&line), "{diagnostic} names a line the {lines}-line text does not have");
                }
            }
            // What `cargo xtask check` prints.
            let _ = diagnostics.to_string();
            None
        }
    }
}

/// What a checked system promises the planner.
pub fn assert_promises(system: &System) {
    let platform = &system.platform;
    let partitions = &system.partitions;
    assert!((1..=MAX_PARTITIONS).contains(&partitions.len()), "{} partitions", partitions.len());

    let mut names = BTreeSet::new();
    let mut cpus = BTreeSet::new();
    let mut devices = BTreeSet::new();
    let mut fixed: Vec<(String, AddrRange)> = Vec::new();
    for partition in partitions {
        let name = &partition.name;
        assert!(system::valid_name(name) && names.insert(name.as_str()), "partition name {name:?}");
        assert!(!partition.cpus.is_empty(), "partition '{name}' has no CPU");
        for &cpu in &partition.cpus {
            assert!(cpu < platform.cpus.len() && cpus.insert(cpu), "CPU {cpu} of '{name}' is not the platform's or is taken");
        }
        for &device in &partition.devices {
            assert!(device < platform.devices.len() && devices.insert(device), "device {device} of '{name}'");
        }
        let memory = partition.memory;
        assert!(memory.size != 0 && memory.size.is_multiple_of(MEMORY_ALIGN), "memory of '{name}' is {:#x} bytes", memory.size);
        if let Some(base) = memory.base {
            let range = AddrRange::new(base, memory.size);
            assert!(base.is_multiple_of(MEMORY_ALIGN) && platform.ram.contains_range(&range), "'{name}' at {range}");
            assert!(!range.overlaps(&platform.kernel), "'{name}' at {range} overlaps the kernel");
            for (what, mmio) in platform.mmio() {
                assert!(!range.overlaps(&mmio), "'{name}' at {range} overlaps {what}");
            }
            fixed.push((format!("partition '{name}'"), range));
        }
        assert!(partition.bootargs.len() <= MAX_BOOTARGS && !partition.bootargs.contains('\0'), "bootargs of '{name}'");
    }

    for doorbell in &system.doorbells {
        assert!(doorbell.from < partitions.len() && doorbell.to < partitions.len() && doorbell.from != doorbell.to);
        assert!(partitions[doorbell.to].cpus.contains(&doorbell.cpu), "doorbell '{}' to a CPU of another", doorbell.name);
        assert!(platform.gic.doorbell_path().is_some(), "doorbell '{}' without a doorbell path", doorbell.name);
    }

    assert!(system.links.len() <= MAX_WINDOWS);
    let mut link_names = BTreeSet::new();
    for link in &system.links {
        let name = &link.name;
        assert!(system::valid_name(name) && link_names.insert(name.as_str()), "link name {name:?}");
        assert!(name.len() <= trapless_tools::link::MAX_LINK_NAME, "link name {name:?} leaves no room for its node name");
        assert!(link.device < partitions.len() && link.driver < partitions.len() && link.device != link.driver, "link '{name}'");
        assert!(link.queue_size.is_power_of_two(), "link '{name}' queue size {}", link.queue_size);
        let window = link.window;
        assert!(window.size != 0 && window.size.is_multiple_of(0x1000) && window.size < 1 << 32, "window of '{name}'");
        assert!(
            trapless_virtio::layout::compute(link.kind.queue_count(), link.queue_size.into(), window.size as usize).is_ok(),
            "window of '{name}' does not lay out"
        );
        if let Some(base) = window.base {
            let range = AddrRange::new(base, window.size);
            assert!(base.is_multiple_of(MEMORY_ALIGN) && platform.ram.contains_range(&range), "window of '{name}' at {range}");
            assert!(!range.overlaps(&platform.kernel), "window of '{name}' at {range} overlaps the kernel");
            fixed.push((format!("window of '{name}'"), range));
        }
    }
    for (index, (what, range)) in fixed.iter().enumerate() {
        for (other, other_range) in &fixed[index + 1..] {
            assert!(!range.overlaps(other_range), "{what} {range} overlaps {other} {other_range}");
        }
    }
}
