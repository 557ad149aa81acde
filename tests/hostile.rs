//! A hostile peer on a static virtio link, both ways round (`docs/static-virtio.md`, "What a
//! hostile peer can and cannot do"): a driver that breaks every ring rule in turn, storms the
//! doorbell and keeps its queue full, against a device partition that also serves an honest
//! driver; and a device that lies to a driver partition running the stock virtio-drivers
//! drivers, which also drives an honest device. Each side fails the hostile link alone, says
//! why, never writes outside the rules or panics, and finishes its other work intact, with no
//! exit to EL2 for any doorbell.

use trapless_tests::{boot, check};
use trapless_tools::qemu::Run;

/// A number in `line` right after `label` (decimal).
fn number_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A hex number in `line` right after `label` (which ends in `0x`).
fn hex_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    u64::from_str_radix(rest.split(|c: char| !c.is_ascii_hexdigit()).next()?, 16).ok()
}

/// The checksums a net link's driver line reports: (sent, received).
fn checksums(line: &str) -> (Option<u64>, Option<u64>) {
    (hex_after(line, "checksum sent 0x"), hex_after(line, ", received 0x"))
}

/// The first line of partition `name` that starts with `prefix`.
fn find<'a>(run: &'a Run, name: &str, prefix: &str) -> Option<&'a str> {
    run.partition_lines(name).into_iter().find(|line| line.starts_with(prefix))
}

/// Every partition entered EL2 only to print its lines, power off and (if it takes
/// interrupts) open its priority mask once: no doorbell, storm or ring exited.
fn exits_are_lines_and_power_off(run: &Run) {
    for (name, exits) in run.exits() {
        let printed = run.partition_lines(&name).len() as u64;
        check(run, exits.hvc == printed + 1 && exits.sysreg <= 1 && exits.total == exits.hvc + exits.sysreg, &format!("{name}: {exits:?} for {printed} lines"));
    }
}

/// The driver-side cases, in the order the hostile driver runs them: what the device must do
/// with each, and for a failed one, what it must say (its `QueueError`).
const DRIVER_CASES: [(&str, &str, &str); 32] = [
    ("doorbell-storm", "served 1", ""),
    ("flood", "served 70000", ""),
    ("legal-write", "served 1", ""),
    ("legal-read", "served 1", ""),
    ("garbage-descriptors", "FAILED ring", ""),
    ("descriptor-loop", "FAILED ring", "a chain is longer than 16 descriptors, or loops"),
    ("self-loop", "FAILED ring", "a chain is longer than 16 descriptors, or loops"),
    ("chain-longer-than-ring", "FAILED ring", "a chain is longer than 16 descriptors, or loops"),
    ("chain-of-17", "FAILED ring", "a chain is longer than 16 descriptors, or loops"),
    ("next-beyond-queue", "FAILED ring", "a descriptor links to 65535, beyond the queue"),
    ("head-beyond-queue", "FAILED ring", "ring entry names descriptor 64, beyond the queue"),
    ("avail-index-jump", "FAILED ring", "available index 65 is more than a queue ahead of 0"),
    ("avail-index-behind", "FAILED ring", "available index 65535 is more than a queue ahead of 0"),
    ("avail-index-half", "FAILED ring", "available index 32768 is more than a queue ahead of 0"),
    ("indirect", "FAILED ring", "an indirect descriptor"),
    ("unknown-flags", "served 1", ""),
    ("read-after-write", "FAILED ring", "a readable buffer after a writable one"),
    ("zero-length-header", "served 1", ""),
    ("no-status-byte", "served 1", ""),
    ("same-head-twice", "served 2", ""),
    ("buffer-below-window", "FAILED ring", "a 16-byte buffer at 0x44fff000 is outside the buffer pool"),
    ("buffer-over-header", "FAILED ring", "a 64-byte buffer at 0x45000000 is outside the buffer pool"),
    ("buffer-over-used-ring", "FAILED ring", "a 16-byte buffer at 0x45002000 is outside the buffer pool"),
    ("buffer-past-window-end", "FAILED ring", "a 16-byte buffer at 0x4503fff8 is outside the buffer pool"),
    ("address-wraps", "FAILED ring", "a 32-byte buffer at 0xfffffffffffffff0 is outside the buffer pool"),
    ("huge-length", "FAILED ring", "a 4294967295-byte buffer at 0x45003000 is outside the buffer pool"),
    ("pool-named-twice", "FAILED ring", "a chain's buffers add up to more than the buffer pool"),
    ("header-garbage", "served 1", ""),
    ("device-line-garbage", "served 1", ""),
    ("used-ring-garbage", "served 1", ""),
    ("driver-line-garbage", "let go", ""),
    ("generation-churn", "served 1", ""),
];

#[test]
fn a_hostile_driver_fails_only_its_own_generations_and_the_device_serves_the_others() {
    let (built, run) = boot("hostile-driver", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let rogue = run.partition_lines("rogue");
    let device = run.partition_lines("backend");
    let cases: Vec<&str> = rogue.iter().copied().filter(|line| line.starts_with("hostile: case ")).collect();
    check(&run, cases.len() == DRIVER_CASES.len(), &format!("{} cases ran", cases.len()));
    for ((name, outcome, reason), line) in DRIVER_CASES.iter().zip(&cases) {
        let expected = format!("hostile: case {name}: device {outcome} (generation ");
        check(&run, line.starts_with(&expected) && line.ends_with(')'), &format!("{line}: expected {expected}..., no violation"));
        // The device said why, for that generation and no other.
        let generation = number_after(line, "(generation ").unwrap_or(0);
        let said = format!("virtio-device: link hostile0: generation {generation} of the driver broke a ring rule (");
        let report = device.iter().find(|line| line.starts_with(&said));
        if *outcome == "FAILED ring" {
            check(&run, report.is_some_and(|report| report.contains(reason)), &format!("the device reported generation {generation} ({name}): {reason}"));
        } else {
            check(&run, report.is_none(), &format!("the device failed generation {generation} ({name})"));
        }
    }
    let summary = format!("hostile: {} cases, 0 unexpected, 0 violations; rang the device ", DRIVER_CASES.len());
    check(&run, rogue.iter().any(|line| line.starts_with(&summary)), &summary);
    check(&run, rogue.contains(&"hostile: storm: rang the device 50000 times with nothing available"), "the storm happened");
    let flood = rogue.iter().find_map(|line| number_after(line, "hostile: flood: ")).unwrap_or(0);
    check(&run, flood >= 70_000, &format!("{flood} requests went through the full queue, wrapping its indices"));

    // The honest driver's work, at the same time, intact.
    let net = find(&run, "frontend", "virtio-driver: link net0: ").unwrap_or_default();
    check(&run, net.starts_with("virtio-driver: link net0: 256 frames ("), "every frame came back whole");
    let (sent, received) = checksums(net);
    let echoed = find(&run, "backend", "virtio-device: link net0: echoed 256 frames (checksum ").unwrap_or_default();
    let through = hex_after(echoed, "(checksum 0x");
    check(&run, sent.is_some() && sent == received && sent == through && echoed.contains("dropped 0;"), &format!("checksums: {net} / {echoed}"));
    let disk = "virtio-driver: link disk0: 2 pass(es) over 512 sectors written and read back; a read past the end was refused (IoError)";
    check(&run, run.partition_lines("frontend").contains(&disk), disk);

    // Bounded work per look: the hostile link never got more than the budget of chains in one
    // step (and its flood reached the budget), at most one step per look, and the honest links
    // were served in the same looks as its flood.
    let stats = |link: &str| {
        let prefix = format!("virtio-device: link {link}: ");
        device.iter().copied().find(|line| line.starts_with(&prefix) && line.contains(" steps, ")).unwrap_or_default()
    };
    let hostile = stats("hostile0");
    let most = number_after(hostile, "at most ").unwrap_or(u64::MAX);
    check(&run, most == 32, &format!("at most {most} chains of the hostile link in one step, the budget: {hostile}"));
    check(&run, hostile.ends_with("the driver broke ring rules 19 times"), "19 generations failed");
    let served = find(&run, "backend", "virtio-device: link hostile0: served ").unwrap_or_default();
    check(&run, number_after(served, "served ").is_some_and(|count| count >= 70_000) && served.contains(" 2 refused;"), served);
    let shared = number_after(hostile, "(budget 32 chains), ").unwrap_or(0);
    check(&run, shared > 0, &format!("the hostile link's work shared looks with the honest links': {hostile}"));
    let looks = find(&run, "backend", "virtio-device: every driver has finished").and_then(|line| number_after(line, "looked at the links ")).unwrap_or(0);
    let steps = number_after(hostile, "hostile0: ").unwrap_or(u64::MAX);
    check(&run, steps <= looks, &format!("one step of the hostile link per look at most: {steps} steps, {looks} looks"));
    exits_are_lines_and_power_off(&run);
}

/// The links the hostile device lies on, and how the driver must report each (after `failed: `).
const DEVICE_FAILURES: [(&str, &str); 5] = [
    ("console1", "the device broke a rule: queue 0: used length 1048576 for chain 0, whose writable buffers hold 4096 bytes"),
    ("console2", "the device broke a rule: queue 0: receive chain 0 came back with 0 bytes"),
    ("net0", "the device broke a rule: queue 0: a used element names descriptor 200, which heads no chain in flight"),
    ("net1", "the device broke a rule: queue 0: the used index jumped from "),
    ("disk1", "the device broke a rule: the device's state line says FAILED (error 57005, generation 1)"),
];

#[test]
fn a_hostile_device_fails_only_its_own_links_and_the_stock_drivers_never_panic() {
    let (built, run) = boot("hostile-device", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    check(&run, !run.output.contains("panic"), "no panic anywhere");
    let driver = run.partition_lines("frontend");
    for (link, reason) in DEVICE_FAILURES {
        let line = find(&run, "frontend", &format!("virtio-driver: link {link}: failed: ")).unwrap_or_default();
        check(&run, line.contains(&format!("link failed: {reason}")), &format!("{link} failed: {reason}"));
        let stopped = format!("hostile: link {link}: case ");
        check(&run, find(&run, "rogue", &stopped).is_some_and(|line| line.contains(": the driver stopped;")), &format!("{link}'s driver stopped the link"));
    }
    check(&run, driver.iter().filter(|line| line.contains(": failed: ")).count() == DEVICE_FAILURES.len(), "no other link failed");
    // The links the driver finished: under the storm, behind a scribbled configuration space
    // (the device tree's capacity of 128 sectors, not 2^40), and on the honest device.
    for done in [
        "virtio-driver: link console0: 10 lines (395 bytes) echoed byte-exact",
        "virtio-driver: link disk0: 1 pass(es) over 128 sectors written and read back; a read past the end was refused (IoError)",
    ] {
        check(&run, driver.contains(&done), done);
    }
    let net = find(&run, "frontend", "virtio-driver: link net2: ").unwrap_or_default();
    let (sent, received) = checksums(net);
    check(&run, net.starts_with("virtio-driver: link net2: 32 frames (") && sent.is_some() && sent == received, net);
    let storm = find(&run, "rogue", "hostile: link console0: case storm: ").and_then(|line| number_after(line, "rang it ")).unwrap_or(0);
    check(&run, storm >= 50_000, &format!("the device rang the driver {storm} times"));
    let taken = find(&run, "frontend", "virtio-driver: done; ").and_then(|line| number_after(line, "took ")).unwrap_or(0);
    check(&run, taken > 0, &format!("the driver took {taken} interrupts"));
    exits_are_lines_and_power_off(&run);
}
