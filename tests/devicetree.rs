//! Golden device trees: every partition's generated DTB, decompiled by `dtc`, must match
//! `tests/golden/<system>/<partition>.dts` exactly and decompile without a single warning; and
//! the guest runtime must read back from it the facts the plan put in.
//!
//! After an intended change, rewrite the golden files with `TRAPLESS_BLESS=1 cargo xtask test`
//! and review the diff.

use std::io::Write;
use std::process::{Command, Stdio};
use trapless_guest::ConsoleKind;
use trapless_guest::facts::{Role, Transport};
use trapless_tests::{root, system};
use trapless_tools::planner::SystemPlan;
use trapless_tools::{Target, dtb, plan_system};

/// Systems whose device trees are pinned.
const SYSTEMS: [&str; 5] = ["qemu-demo", "smp", "uart", "doorbell", "virtio-dt"];

fn decompile(blob: &[u8]) -> (String, String) {
    let mut child = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dtc is installed (device-tree-compiler)");
    child.stdin.take().unwrap().write_all(blob).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "dtc failed: {}", String::from_utf8_lossy(&output.stderr));
    (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

fn plan(name: &str) -> SystemPlan {
    plan_system(Target::system(&system(name))).unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn device_trees_match_their_golden_files_without_dtc_warnings() {
    let bless = std::env::var_os("TRAPLESS_BLESS").is_some();
    let mut mismatches = Vec::new();
    for name in SYSTEMS {
        for partition in &plan(name).partitions {
            let (dts, warnings) = decompile(&partition.dtb);
            assert_eq!(warnings, "", "dtc warns about {name}/{}", partition.name);
            let golden = root().join("tests/golden").join(name).join(format!("{}.dts", partition.name));
            if bless {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, &dts).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&golden).unwrap_or_default();
            if dts != expected {
                mismatches.push(format!("{}:\n--- expected\n{expected}--- generated\n{dts}", golden.display()));
            }
        }
    }
    assert!(mismatches.is_empty(), "device trees differ from the golden files:\n{}", mismatches.join("\n"));
}

#[test]
fn the_guest_runtime_reads_back_what_the_plan_put_in() {
    for name in SYSTEMS {
        let plan = plan(name);
        for partition in &plan.partitions {
            let blob: &'static [u8] = Box::leak(partition.dtb.clone().into_boxed_slice());
            let facts = trapless_guest::facts::read(blob).unwrap_or_else(|error| panic!("{}: {error}", partition.name));
            assert_eq!(facts.name, partition.name);
            assert_eq!(facts.memory, partition.memory.base.0..partition.memory.end());
            let mpidrs: Vec<u64> = partition.cpus.iter().map(|&cpu| plan.platform.cpus[cpu]).collect();
            assert_eq!(facts.cpus(), mpidrs.as_slice());
            assert_eq!(facts.bootargs, partition.bootargs);
            let expected_console = match dtb::stdout_path(&plan.platform, partition).as_str() {
                "/hypervisor" => ConsoleKind::Hypercall,
                _ => ConsoleKind::Pl011(plan.platform.devices[plan.platform.console.unwrap()].reg.base.0),
            };
            assert_eq!(facts.console, expected_console, "{}", partition.name);

            let index = plan.partitions.iter().position(|other| other.name == partition.name).unwrap();
            let its = plan.platform.gic.its.unwrap();
            // Link doorbells are in their links' nodes, not in the doorbells node's names.
            for doorbell in plan.doorbells.iter().filter(|doorbell| doorbell.link.is_none()) {
                if doorbell.from == index {
                    let outgoing = facts.doorbells.outgoing(&doorbell.name).expect("the sender sees its doorbell");
                    assert_eq!(outgoing.event, doorbell.event);
                    assert_eq!(facts.doorbells.translater, Some(its.range.base.0 + 0x1_0040));
                }
                if doorbell.to == index {
                    let incoming = facts.doorbells.incoming(&doorbell.name).expect("the receiver sees its doorbell");
                    assert_eq!(incoming.lpi, doorbell.lpi);
                    assert_eq!(u64::from(incoming.affinity), plan.platform.cpus[doorbell.cpu]);
                }
            }
            let rings = plan.doorbells.iter().any(|doorbell| doorbell.sent_by(index));
            assert_eq!(facts.doorbells.translater.is_some(), rings, "{}: a doorbell page only for senders", partition.name);

            // Each link it is on, from its side: the window, the fixed parameters, the
            // configuration space, the EventIDs that ring the peer (EL2 rings for the driver of
            // a mmio-trap link), the LPIs it takes, and how it reaches the other side.
            let links: Vec<_> = plan.links.iter().filter(|link| link.device == index || link.driver == index).collect();
            assert_eq!(facts.links().count(), links.len(), "{}", partition.name);
            for (read, link) in facts.links().zip(links) {
                let is_device = link.device == index;
                assert_eq!((read.name, read.kind, read.features, read.queue_size), (link.name.as_str(), link.kind, link.features, link.queue_size));
                assert_eq!(read.role, if is_device { Role::Device } else { Role::Driver });
                assert_eq!(read.window, link.window.base.0..link.window.end());
                assert_eq!((read.config, read.queue_count), (link.config.as_slice(), link.kind.queue_count()));
                let (rings, rung_by) = if is_device { (&link.to_driver, &link.to_device) } else { (&link.to_device, &link.to_driver) };
                let events: Vec<u32> = read.notify_events.iter().flatten().copied().collect();
                let rung_here = rings.iter().filter(|doorbell| doorbell.sent_by(index));
                assert_eq!(events, rung_here.map(|doorbell| doorbell.event).collect::<Vec<_>>(), "{}", link.name);
                let lpis: Vec<(u32, u64)> = read.notify_lpis.iter().flatten().map(|&(lpi, affinity)| (lpi, u64::from(affinity))).collect();
                let expected: Vec<(u32, u64)> = rung_by.iter().map(|doorbell| (doorbell.lpi, plan.platform.cpus[doorbell.cpu])).collect();
                assert_eq!(lpis, expected, "{}", link.name);
                let transport = match link.emulated {
                    None => Transport::Doorbell,
                    Some(emulated) if is_device => Transport::Hypercall(emulated.index as u32),
                    Some(emulated) => Transport::MmioTrap {
                        registers: emulated.registers.base.0..emulated.registers.end(),
                        intid: 32 + emulated.spi,
                    },
                };
                // The driver of a mmio-trap link takes an SPI instead of LPIs.
                let polls = expected.is_empty() && !matches!(transport, Transport::MmioTrap { .. });
                assert_eq!(read.transport, transport, "{}", link.name);
                assert_eq!(read.polls(), polls, "{}", link.name);
            }
        }
    }
}
