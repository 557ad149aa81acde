//! The doorbell path proves itself at boot, on QEMU: EL2 rings a probe event of its own before
//! any partition runs and refuses to start, naming the platform and the DeviceID it assumed, if
//! the LPI does not become pending; and a platform that says its GIC cannot snoop (the RK3588's
//! erratum 3588001) gets non-shareable, non-cacheable GIC tables, with the doorbells working.
//! The platforms are qemu-virt with one fact changed, written next to the test's system.

use trapless_tests::{boot_file, check, system};

/// `platform/qemu-virt/platform.toml` named `name`, with `edit` applied, written to a temporary
/// file; returns its path.
fn variant(name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let original = std::fs::read_to_string(trapless_tests::root().join("platform/qemu-virt/platform.toml")).unwrap();
    assert!(original.contains("name = \"qemu-virt\"") && original.contains("device-id = 0 }"), "qemu-virt changed its form");
    let text = edit(&original.replace("name = \"qemu-virt\"", &format!("name = \"{name}\"")));
    let path = std::env::temp_dir().join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Lines of partition `name` on the console.
fn lines<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("[{name}] ");
    output.lines().filter_map(|line| line.strip_prefix(&prefix)).collect()
}

/// Boots the doorbell ping-pong on `platform` (a path) and returns the run.
fn ping_pong(platform: &std::path::Path) -> (trapless_tools::Built, trapless_tools::qemu::Run) {
    let result = boot_file(&system("doorbell"), Some(platform.to_str().unwrap()), &[]);
    let _ = std::fs::remove_file(platform);
    result
}

#[test]
fn a_platform_that_declares_the_wrong_doorbell_device_id_is_refused_at_boot() {
    let platform = variant("qemu-virt-device-id-7", |text| text.replace("device-id = 0 }", "device-id = 7 }"));
    let (built, run) = ping_pong(&platform);
    check(&run, !run.timed_out(), "QEMU powered off");
    let refusal = "trapless: refusing to start: doorbells: platform qemu-virt-device-id-7 says a CPU's store to 0x809_0040 \
                   reaches the ITS with DeviceID 7, but EL2's probe (EventID 2, LPI 8194) did not become pending on the \
                   redistributor of CPU 0: CPU stores do not carry DeviceID 7 to that ITS here (docs/boards.md)";
    check(&run, run.output.lines().any(|line| line == refusal), refusal);
    for partition in &built.plan.partitions {
        check(&run, lines(&run.output, &partition.name).is_empty(), "no partition started");
    }
    check(&run, run.verdict(&built.plan).is_err(), "a refused start is a failed run");
}

#[test]
fn the_right_doorbell_device_id_passes_the_probe_and_the_doorbells_ring() {
    let platform = variant("qemu-virt-device-id-0", |text| text.to_string());
    let (built, run) = ping_pong(&platform);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let proven = "trapless: doorbell path of platform qemu-virt-device-id-0 proven: a CPU store of EventID 2 to 0x809_0040 \
                  (DeviceID 0) raised LPI 8194 on CPU 0";
    check(&run, run.output.lines().any(|line| line == proven), proven);
    // The probe came before any partition, and left nothing behind: no spurious interrupt.
    let probe_at = run.output.find(proven).unwrap();
    check(&run, run.output.find("trapless: partition initiator:").is_some_and(|at| at > probe_at), "probe first");
    let initiator = "ping-pong: initiator rang 'ping' 100 times and was rung by 'pong' (LPI 8193) 100 times";
    check(&run, lines(&run.output, "initiator").contains(&initiator), initiator);
    for name in ["initiator", "responder"] {
        check(&run, lines(&run.output, name).contains(&"ping-pong: 0 spurious interrupts"), &format!("{name}: no spurious interrupt"));
    }
}

#[test]
fn a_gic_that_cannot_snoop_gets_non_cacheable_tables_and_the_doorbells_still_ring() {
    // Erratum 3588001 forced on qemu-virt, whose GIC would take shareable tables.
    let platform = variant("qemu-virt-no-snoop", |text| text.replace("device-id = 0 }", "device-id = 0 }\nsnoops = false"));
    let (built, run) = ping_pong(&platform);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    // What EL2 reads back from GICR_PROPBASER, not what it meant to write.
    let forced = run.output.lines().find(|line| line.starts_with("trapless: LPI tables "));
    check(&run, forced.is_some_and(|line| line.starts_with("trapless: LPI tables non-shareable, non-cacheable, cleaned to memory")), "tables forced");
    let initiator = "ping-pong: initiator rang 'ping' 100 times and was rung by 'pong' (LPI 8193) 100 times";
    check(&run, lines(&run.output, "initiator").contains(&initiator), initiator);

    // The same system on the platform as it is: the GIC takes shareable, cacheable tables.
    let (built, run) = boot_file(&system("doorbell"), None, &[]);
    check(&run, run.verdict(&built.plan).is_ok(), "qemu-virt boots");
    let shared = run.output.lines().find(|line| line.starts_with("trapless: LPI tables "));
    check(&run, shared.is_some_and(|line| line.starts_with("trapless: LPI tables inner shareable, write-back cacheable")), "tables shared");
}
