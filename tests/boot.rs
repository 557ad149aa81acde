//! QEMU boots of real images: each test builds a system, boots it under
//! `qemu-system-aarch64 -M virt,virtualization=on`, and checks what the console shows. A run
//! that does not power off within the timeout fails.

use trapless_tests::{boot, check, exceptions_to_el2};
use trapless_tools::qemu::Run;

/// The lines partition `name` printed through the console hypercall.
fn lines<'a>(run: &'a Run, name: &str) -> Vec<&'a str> {
    run.partition_lines(name)
}

#[test]
fn demo_partitions_print_their_device_tree_facts_and_power_off() {
    let (built, run) = boot("qemu-demo", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    check(&run, run.output.contains("trapless: every partition has stopped; powering off"), "power-off line");
    let exits = run.exits();
    for partition in &built.plan.partitions {
        let memory = partition.memory;
        let mpidrs: Vec<u64> = partition.cpus.iter().map(|&cpu| built.plan.platform.cpus[cpu]).collect();
        let facts = format!(
            "hello from partition {}: memory {:#x}..{:#x} ({} MiB), {} CPU(s) {:x?}",
            partition.name,
            memory.base.0,
            memory.end(),
            memory.size >> 20,
            mpidrs.len(),
            mpidrs
        );
        let printed = lines(&run, &partition.name);
        check(&run, printed.contains(&facts.as_str()), &format!("{} printed: {facts}", partition.name));
        let bootargs = format!("{}: bootargs \"{}\"; done, powering off", partition.name, partition.bootargs);
        check(&run, printed.contains(&bootargs.as_str()), &format!("{} printed: {bootargs}", partition.name));
        // One console hypercall per line, and PSCI SYSTEM_OFF: nothing else enters EL2.
        let counted = exits.get(&partition.name).copied().unwrap_or_default();
        check(&run, counted.hvc == printed.len() as u64 + 1, &format!("{}: hvc exits = lines + 1", partition.name));
        check(&run, counted.total == counted.hvc, &format!("{}: only hvc exits", partition.name));
    }
}

#[test]
fn el2_exit_counts_agree_with_qemu() {
    let log = std::env::temp_dir().join(format!("trapless-exits-{}.log", std::process::id()));
    let (built, run) = boot("qemu-demo", &["-d", "int", "-D", log.to_str().unwrap()]);
    let qemu_log = std::fs::read_to_string(&log).expect("QEMU wrote its -d int log");
    let _ = std::fs::remove_file(&log);
    check(&run, run.verdict(&built.plan).is_ok(), "the demo finishes");
    // Every exception QEMU took from a partition to EL2, against EL2's own counters.
    let taken = exceptions_to_el2(&qemu_log);
    let counted: u64 = run.exits().values().map(|exits| exits.entries()).sum();
    check(&run, counted > 0, "EL2 counted exits");
    check(&run, taken as u64 == counted, &format!("QEMU saw {taken} exceptions to EL2, EL2 counted {counted}"));
}

#[test]
fn a_partition_starts_its_own_cpu_but_not_another_partitions() {
    let (built, run) = boot("smp", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let duo = lines(&run, "duo");
    for expected in [
        "smp: CPU_ON of my CPU 1 (MPIDR 0x1): SUCCESS",
        "smp: CPU 1 is up",
        "smp: all 1 other CPUs came up and turned off",
        "smp: CPU_ON of myself (MPIDR 0x0): ALREADY_ON",
        "smp: CPU_ON of foreign MPIDR 0x2: INVALID_PARAMETERS",
        "smp: AFFINITY_INFO of foreign MPIDR 0x2: INVALID_PARAMETERS",
        "smp: 300 on/off cycles of CPU 1, 0 failed",
        "smp: done",
    ] {
        check(&run, duo.contains(&expected), &format!("duo printed: {expected}"));
    }
    // The bystander owns CPU 2: it ran once, undisturbed, and entered EL2 only for its two
    // lines and SYSTEM_OFF.
    let bystander = lines(&run, "bystander");
    check(&run, bystander.iter().filter(|line| line.ends_with("intact; done")).count() == 1, "bystander finished once");
    let exits = run.exits()["bystander"];
    check(&run, exits.total == 3 && exits.hvc == 3, &format!("bystander exits: {exits:?}"));
}

/// The `PC 0x...` in a fault report.
fn reported_pc(reason: &str) -> u64 {
    let pc = reason.split("PC 0x").nth(1).and_then(|rest| rest.split(',').next()).expect("a PC in the report");
    u64::from_str_radix(&pc.replace('_', ""), 16).expect("a hex PC")
}

#[test]
fn a_partition_touching_another_partitions_memory_is_stopped_alone() {
    let (built, run) = boot("isolation", &[]);
    check(&run, !run.timed_out(), "QEMU powered off");
    check(&run, run.status.is_some_and(|status| status.success()), "QEMU exited cleanly");
    check(&run, run.output.contains("trapless: every partition has stopped; powering off"), "power-off line");
    let stops = run.stops();
    for (name, access, ipa, status) in [
        ("reader", "read", "0x4880_0008", "translation fault"),
        ("writer", "write", "0x4880_0000", "translation fault"),
        // Its own RD frame past the emulated page, mapped read-only: the IPA comes from
        // translating the faulting VA.
        ("rdwriter", "write", "0x810_ffe8", "permission fault"),
    ] {
        let reason = stops.get(name).map(String::as_str).unwrap_or("");
        let expected = format!("stage-2 data abort: {access} at IPA {ipa} ({status}), PC ");
        check(&run, reason.starts_with(&expected), &format!("{name} stopped: {expected}..."));
        let report = format!("trapless: partition {name} faulted and is stopped: {reason}");
        check(&run, run.output.lines().any(|line| line == report), &format!("immediate report: {report}"));
        let memory = built.plan.partitions.iter().find(|p| p.name == name).unwrap().memory;
        let pc = reported_pc(reason);
        check(&run, memory.contains_span(pc, 4), &format!("{name}'s PC {pc:#x} lies in its own memory {memory}"));
        let breach = lines(&run, name).into_iter().any(|line| line.contains("isolation is broken"));
        check(&run, !breach, &format!("{name} never got past its access"));
    }
    check(&run, stops.get("victim").map(String::as_str) == Some("system-off"), "victim finished cleanly");
    check(&run, lines(&run, "victim").contains(&"work: pattern at 0x48800000 intact; done"), "victim's data intact");
    let verdict = run.verdict(&built.plan).expect_err("a run with faults is a failed run");
    check(&run, verdict.contains("partition writer stopped: stage-2 data abort"), &format!("verdict names writer: {verdict}"));
}

#[test]
fn sgis_reach_only_the_senders_own_cpus() {
    let (built, run) = boot("sgi", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    // One request named the sender's CPU 1 and the listener's CPU 2; then "all but self".
    check(&run, lines(&run, "sender").contains(&"sgi: my CPU 1 received SGI 1 x1 and SGI 2 x1"), "own CPU got both");
    check(&run, lines(&run, "listener").contains(&"sgi-listen: received 0 SGIs, 0 unhandled interrupts"), "listener got none");
    // Each SGI request and each CPU's priority-mask write enters EL2 once: CPU 1's mask, two
    // requests and the wake-up.
    let sender = run.exits()["sender"];
    check(&run, sender.sysreg == 4, &format!("sender's system-register exits: {sender:?}"));
}

#[test]
fn a_passthrough_uart_is_written_without_exits() {
    let (built, run) = boot("uart", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    // Written by the partition straight to its PL011: no "[solo] " prefix from EL2.
    check(&run, run.output.lines().any(|line| line.starts_with("hello from partition solo: memory")), "direct output");
    check(&run, run.output.lines().any(|line| line == "solo: console: own PL011 at 0x9000000"), "its own UART");
    check(&run, lines(&run, "solo").is_empty(), "nothing through the console hypercall");
    let exits = run.exits()["solo"];
    check(&run, exits.total == 1 && exits.hvc == 1, &format!("only SYSTEM_OFF enters EL2: {exits:?}"));
}

#[test]
fn trapless_refuses_a_machine_that_is_not_its_platform() {
    let (built, run) = boot("qemu-demo", &["-m", "512M"]);
    check(&run, !run.timed_out(), "QEMU powered off");
    let refusal = "trapless: refusing to start: the firmware's device tree has RAM [0x4000_0000..0x6000_0000) (512 MiB), \
                   platform qemu-virt describes [0x4000_0000..0x8000_0000) (1024 MiB)";
    check(&run, run.output.lines().any(|line| line == refusal), refusal);
    for partition in &built.plan.partitions {
        check(&run, lines(&run, &partition.name).is_empty(), "no partition started");
    }
    check(&run, run.verdict(&built.plan).is_err(), "a refused start is a failed run");
}

#[test]
fn every_cpu_of_a_faulting_partition_stops_with_it() {
    let (built, run) = boot("stop", &[]);
    check(&run, !run.timed_out(), "QEMU powered off");
    check(&run, lines(&run, "pair").contains(&"busy-touch: CPU 1 is spinning"), "CPU 1 was running");
    let reason = run.stops().get("pair").cloned().unwrap_or_default();
    check(&run, reason.starts_with("stage-2 data abort: write at IPA 0x4880_0000"), "pair stopped on its write");
    // The write, then the spinning CPU's first access once its stage 2 was revoked: both
    // entered EL2, and neither went back. The second is counted as parked, not as pair's exit.
    let exits = run.exits()["pair"];
    check(&run, exits.data_abort == 1 && exits.insn_abort == 0 && exits.parked == 1, &format!("pair's aborts: {exits:?}"));
    check(&run, lines(&run, "bystander").contains(&"work: pattern at 0x48800000 intact; done"), "bystander's data intact");
    check(&run, run.stops().get("bystander").map(String::as_str) == Some("system-off"), "bystander finished");
    check(&run, run.verdict(&built.plan).is_err(), "a fault fails the run");
}

#[test]
fn a_cpu_left_running_at_system_off_is_counted_as_parked_not_as_the_partitions_exit() {
    let log = std::env::temp_dir().join(format!("trapless-stop-off-{}.log", std::process::id()));
    let (built, run) = boot("stop-off", &["-d", "int", "-D", log.to_str().unwrap()]);
    let qemu_log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    check(&run, lines(&run, "quitter") == ["busy-off: CPU 1 is spinning; powering off"], "quitter's line");
    // While it ran: CPU_ON, its console line and SYSTEM_OFF. After: CPU 1's
    // one fault on the revoked stage 2, and every entry is one or the other, as QEMU counts.
    let exits = run.exits()["quitter"];
    let expected = trapless_tools::qemu::Exits { total: 3, hvc: 3, parked: 1, ..Default::default() };
    check(&run, exits == expected, &format!("quitter's exits: {exits:?}"));
    let taken = exceptions_to_el2(&qemu_log) as u64;
    check(&run, taken == exits.entries(), &format!("QEMU saw {taken} exceptions to EL2, EL2 counted {}", exits.entries()));
}

/// Boots `tests/systems/<system>.toml` with `from` replaced by `to` in its text, on `platform`,
/// with QEMU logging every exception. Checks that it ran to the end, and returns the run and
/// how many exceptions QEMU saw taken to EL2.
fn boot_edited(system: &str, from: &str, to: &str, platform: Option<&str>) -> (Run, usize) {
    let original = std::fs::read_to_string(trapless_tests::system(system)).unwrap();
    assert!(original.contains(from), "{system}.toml has no '{from}'");
    let words: String = to.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let tag = format!("{system}-{words}-{}-{}", platform.unwrap_or("own"), std::process::id());
    let path = std::env::temp_dir().join(format!("{tag}.toml"));
    let log = std::env::temp_dir().join(format!("{tag}.log"));
    std::fs::write(&path, original.replace(from, to)).unwrap();
    let (built, run) = trapless_tests::boot_file(&path, platform, &["-d", "int", "-D", log.to_str().unwrap()]);
    let qemu_log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&path), std::fs::remove_file(&log), std::fs::remove_dir_all(&built.dir));
    check(&run, run.verdict(&built.plan).is_ok(), &format!("{tag}: {:?}", run.verdict(&built.plan)));
    let taken = exceptions_to_el2(&qemu_log);
    (run, taken)
}

/// Boots `tests/systems/doorbell.toml` with `rounds` round trips on `platform`, with QEMU
/// logging every exception, and returns the run and how many exceptions QEMU saw taken to EL2.
fn ping_pong(rounds: usize, platform: Option<&str>) -> (Run, usize) {
    let (run, taken) = boot_edited("doorbell", "rounds=100", &format!("rounds={rounds}"), platform);
    let initiator = format!("ping-pong: initiator rang 'ping' {rounds} times and was rung by 'pong' (LPI 8193) {rounds} times");
    let responder = format!("ping-pong: responder was rung by 'ping' (LPI 8192) {rounds} times and rang 'pong' as many");
    check(&run, lines(&run, "initiator").contains(&initiator.as_str()), &initiator);
    check(&run, lines(&run, "responder").contains(&responder.as_str()), &responder);
    for name in ["initiator", "responder"] {
        check(&run, lines(&run, name).contains(&"ping-pong: 0 spurious interrupts"), &format!("{name}: no spurious interrupt"));
    }
    (run, taken)
}

/// The ring-to-LPI path never enters EL2: EL2's counters and QEMU's own log show the same
/// number of exits whether the partitions exchange 10 doorbells or 50 times as many.
fn doorbells_cost_no_exits(platform: Option<&str>) {
    let (short, short_to_el2) = ping_pong(10, platform);
    let (long, long_to_el2) = ping_pong(500, platform);
    check(&long, short.exits() == long.exits(), &format!("exits with 10 rounds {:?}, with 500 {:?}", short.exits(), long.exits()));
    let counted: u64 = long.exits().values().map(|exits| exits.entries()).sum();
    check(&long, long_to_el2 == short_to_el2, &format!("QEMU saw {short_to_el2} exceptions to EL2 for 10 rounds, {long_to_el2} for 500"));
    check(&long, long_to_el2 as u64 == counted, &format!("QEMU saw {long_to_el2} exceptions to EL2, EL2 counted {counted}"));
}

#[test]
fn doorbells_ping_pong_with_no_exits_on_gicv3() {
    doorbells_cost_no_exits(None);
}

#[test]
fn doorbells_ping_pong_with_no_exits_on_gicv4() {
    doorbells_cost_no_exits(Some("qemu-virt-gicv4"));
}

#[test]
fn a_doorbell_rung_before_its_cpu_is_up_waits_for_it() {
    let (built, run) = boot("doorbell-early", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let expected = "ping-pong: responder was rung by 'ping' (LPI 8192) 3 times and rang 'pong' as many";
    check(&run, lines(&run, "responder").contains(&expected), expected);
}

#[test]
fn of_the_its_a_partition_reaches_only_the_doorbell_page_and_only_if_it_rings() {
    let (built, run) = boot("its-isolation", &[]);
    check(&run, !run.timed_out(), "QEMU powered off");
    let stops = run.stops();
    // The sender writes GITS_CWRITER in the ITS control frame; the receiver, which rings
    // nothing, writes GITS_TRANSLATER.
    for (name, ipa) in [("sender", "0x808_0088"), ("receiver", "0x809_0040")] {
        let expected = format!("stage-2 data abort: write at IPA {ipa} (translation fault)");
        let reason = stops.get(name).map(String::as_str).unwrap_or("");
        check(&run, reason.starts_with(&expected), &format!("{name} stopped: {expected}"));
    }
    check(&run, run.verdict(&built.plan).is_err(), "faults fail the run");
}

#[test]
fn a_doorbell_storm_from_another_partition_is_spurious_and_costs_no_exits() {
    let (built, run) = boot("storm", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    check(&run, lines(&run, "rogue").contains(&"storm: stored EventID 0 100000 times"), "the storm happened");
    let worker = lines(&run, "worker");
    check(&run, worker.iter().any(|line| line.starts_with("work: pattern at") && line.ends_with("intact; done")), "work done");
    let rings = worker
        .iter()
        .find_map(|line| line.strip_prefix("doorbell-work: 'job' rang ")?.split(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    // Rings coalesce while pending; the storm only has to have reached it.
    check(&run, rings >= 1, &format!("the worker was rung ({rings} times)"));
    let exits = run.exits();
    // Neither the storm nor the rings it caused entered EL2: console lines, the priority-mask
    // write and SYSTEM_OFF only.
    check(&run, exits["worker"].total == worker.len() as u64 + 2 && exits["worker"].sysreg == 1, &format!("worker: {:?}", exits["worker"]));
    check(&run, exits["rogue"].total == 2, &format!("rogue: {:?}", exits["rogue"]));
}

/// A number in `line` right after `label` (decimal, or hex with 0x).
fn number_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    match word.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => word.parse().ok(),
    }
}

/// Boots `system` (a file under `tests/systems/`) with the driver's bootargs replaced by
/// `bootargs`, with QEMU logging every exception; checks that every link carried its data
/// intact, and returns the run and how many exceptions QEMU saw taken to EL2.
fn virtio_run(system: &str, bootargs: &str, platform: Option<&str>) -> (Run, usize) {
    let (run, taken_to_el2) = boot_edited(system, "lines=10 frames=32 passes=1", bootargs, platform);
    let arg = |key: &str| trapless_guest::facts::arg(bootargs, key).and_then(|value| value.parse::<u64>().ok());
    let driver = lines(&run, "frontend");
    let device = lines(&run, "backend");
    fn find<'a>(lines: &[&'a str], prefix: &str) -> Option<&'a str> {
        lines.iter().copied().find(|line| line.starts_with(prefix))
    }

    if let Some(count) = arg("lines") {
        let console = find(&driver, "virtio-driver: link console0: ");
        check(&run, console.is_some_and(|line| line.contains(&format!(": {count} lines (")) && line.ends_with("echoed byte-exact")), "console lines echoed byte-exact");
        let bytes = console.and_then(|line| number_after(line, "lines ("));
        let echoed = find(&device, "virtio-device: link console0: ").and_then(|line| number_after(line, "echoed "));
        check(&run, bytes.is_some() && bytes == echoed, &format!("the device echoed the {bytes:?} bytes sent: {echoed:?}"));
    }
    if let Some(count) = arg("frames") {
        let net = find(&driver, "virtio-driver: link net0: ").unwrap_or_default();
        check(&run, net.starts_with(&format!("virtio-driver: link net0: {count} frames (")), "every frame came back whole");
        let sent = number_after(net, "checksum sent ");
        let received = number_after(net, ", received ");
        let echoed = find(&device, "virtio-device: link net0: ").unwrap_or_default();
        check(&run, echoed.contains(&format!("echoed {count} frames")) && echoed.contains("dropped 0;"), "the device echoed every frame");
        let through = number_after(echoed, "checksum ");
        check(&run, sent.is_some() && sent == received && sent == through, &format!("checksums: sent {sent:?}, through the device {through:?}, received {received:?}"));
    }
    if let Some(passes) = arg("passes") {
        let disk = find(&driver, "virtio-driver: link disk0: ").unwrap_or_default();
        let expected = format!("{passes} pass(es) over 2048 sectors written and read back; a read past the end was refused (IoError)");
        check(&run, disk.ends_with(&expected), &expected);
        // Each pass writes and reads 2048 sectors in requests of 8; then the read past the end.
        let requests = passes * 2 * 2048 / 8 + 1;
        let served = format!("virtio-device: link disk0: served {requests} requests, 1 refused;");
        check(&run, find(&device, &served).is_some(), &served);
    }
    let taken = find(&device, "virtio-device: every driver has finished; LPIs taken: ").and_then(|line| number_after(line, "taken: "));
    check(&run, taken.is_some_and(|taken| taken > 0), &format!("the drivers' doorbells reached the device: {taken:?} LPIs"));
    let taken = find(&driver, "virtio-driver: done; ").and_then(|line| number_after(line, "took "));
    check(&run, taken.is_some_and(|taken| taken > 0), &format!("the device's doorbells reached the driver: {taken:?} LPIs"));
    (run, taken_to_el2)
}

/// The whole virtio data path, for all three kinds at once, never enters EL2: EL2's counters
/// and QEMU's own log show the same exits whether the driver moves some data or five times as
/// much (each partition's exits are its console lines and its power-off).
fn static_virtio_costs_no_exits(system: &str, platform: Option<&str>) {
    let (short, short_to_el2) = virtio_run(system, "lines=10 frames=32 passes=1", platform);
    let (long, long_to_el2) = virtio_run(system, "lines=50 frames=160 passes=5", platform);
    check(&long, short.exits() == long.exits(), &format!("exits with little data {:?}, with five times as much {:?}", short.exits(), long.exits()));
    check(&long, short_to_el2 == long_to_el2, &format!("QEMU saw {short_to_el2} exceptions to EL2 with little data, {long_to_el2} with five times as much"));
    let counted: u64 = long.exits().values().map(|exits| exits.entries()).sum();
    check(&long, long_to_el2 as u64 == counted, &format!("QEMU saw {long_to_el2} exceptions to EL2, EL2 counted {counted}"));
    for (name, exits) in long.exits() {
        let printed = lines(&long, &name).len() as u64;
        // Console lines, power-off, and opening the GIC CPU interface's priority mask.
        check(&long, exits.hvc == printed + 1 && exits.total == exits.hvc + exits.sysreg, &format!("{name}: {exits:?}"));
    }
}

#[test]
fn static_virtio_console_net_and_block_cost_no_exits() {
    static_virtio_costs_no_exits("virtio", None);
}

#[test]
fn static_virtio_costs_no_exits_on_gicv4() {
    static_virtio_costs_no_exits("virtio", Some("qemu-virt-gicv4"));
}

#[test]
fn static_virtio_links_with_polling_sides_carry_the_same_data() {
    static_virtio_costs_no_exits("virtio-poll", None);
}

/// The report EL2 prints for emulated link `name`: (reads, writes, notifies, interrupts).
fn emulated_counts(run: &Run, name: &str) -> Option<[u64; 4]> {
    let line = run.output.lines().find(|line| line.starts_with(&format!("trapless: link {name} transport=mmio-trap ")))?;
    let count = |key: &str| number_after(line, &format!(" {key}="));
    Some([count("reads")?, count("writes")?, count("notifies")?, count("interrupts")?])
}

/// The same three devices reached the classic way carry the same data, but every request traps:
/// the driver's `QueueNotify` writes and the device's `LINK_NOTIFY` hypercalls grow with the
/// number of requests, and EL2's counts still match QEMU's.
#[test]
fn the_trap_and_emulate_baseline_carries_the_same_data_and_exits_on_every_request() {
    let (short, short_to_el2) = virtio_run("virtio-trap", "lines=10 frames=32 passes=1", None);
    let (long, long_to_el2) = virtio_run("virtio-trap", "lines=50 frames=160 passes=5", None);
    for (run, to_el2) in [(&short, short_to_el2), (&long, long_to_el2)] {
        let counted: u64 = run.exits().values().map(|exits| exits.entries()).sum();
        check(run, to_el2 as u64 == counted, &format!("QEMU saw {to_el2} exceptions to EL2, EL2 counted {counted}"));
        for link in ["console0", "net0", "disk0"] {
            let counts = emulated_counts(run, link);
            check(run, counts.is_some_and(|counts| counts.iter().all(|&count| count > 0)), &format!("{link} was emulated: {counts:?}"));
        }
    }
    // Four more passes over the disk are 4 * 2 * 2048 / 8 = 2048 more block requests, each
    // notified (the disk link has no EVENT_IDX) and each completion notified back. Register
    // writes, not all accesses: a driver whose device lets go late polls with reads, as many
    // as the machine's load makes it.
    let more = 2048;
    let completions = long.exits()["backend"].hvc - short.exits()["backend"].hvc;
    check(&long, completions >= more, &format!("the device's hypercalls grew by {completions}, fewer than the {more} extra requests"));
    let disk = |run: &Run, count: usize| emulated_counts(run, "disk0").unwrap_or_default()[count];
    let writes = disk(&long, 1) - disk(&short, 1);
    check(&long, writes >= more, &format!("the driver's register writes (each an exit) grew by {writes}, fewer than the {more} extra requests"));
    check(&long, disk(&long, 2) - disk(&short, 2) >= more, "EL2 rang the disk device for every extra request");
}
