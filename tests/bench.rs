//! `cargo xtask bench` with a short run: every transport and workload measured every I/O, the
//! exits EL2 counted agree with QEMU's, the shared-memory transports take none, and the classic
//! path takes its share. Times are not checked (this machine is shared and noisy), nor exact
//! trap-emulate counts, which vary with EVENT_IDX suppression and interrupt coalescing.

use trapless_tools::bench::{Options, Transport, run};

#[test]
fn the_bench_measures_every_io_and_counts_exits_as_qemu_does() {
    let out = trapless_tests::root().join("target").join(format!("bench-test-{}", std::process::id()));
    // Three rounds of seven: each transport boots first once.
    let options = Options { iterations: 21, size: 64, rounds: 3, platform: None, out: out.clone(), progress: false, linux: false };
    let report = run(&options).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.iterations, report.rounds, report.iterations_per_round), (21, 3, 7));

    for transport in Transport::ALL {
        let name = transport.name();
        let entry = &report.transports[name];
        let (rtt, bulk) = (&entry.round_trip, &entry.bulk);
        // The guest's own counts, summed over the rounds.
        assert_eq!((rtt.samples, bulk.frames), (21, 21), "{name}: every I/O was measured");
        assert_eq!(bulk.bytes, 21 * 1514, "{name}: every bulk frame was echoed whole");
        assert!(rtt.round_trip_ns.p50 > 0.0 && bulk.throughput_mib_s > 0.0, "{name}: the counter moved");
        assert!(entry.exits_agree_with_qemu, "{name}: EL2's exit counts equal QEMU's");
        let svg = std::fs::read_to_string(out.join(&rtt.histogram)).unwrap();
        assert!(svg.contains(&format!("round trip, {name}: 21 samples")), "{name}: a histogram of this run");
    }
    let of = |name: &str| &report.transports[name];
    // Not one exit for any I/O on the shared-memory transports, by EL2's count and QEMU's.
    for name in ["polling", "trap-free"] {
        let (rtt, bulk) = (&of(name).round_trip, &of(name).bulk);
        assert_eq!([rtt.exits_per_io, rtt.exits_per_io_qemu, bulk.exits_per_io, bulk.exits_per_io_qemu], [0.0; 4], "{name}");
    }
    // The classic path: every notification on it is an exit (a QueueNotify write or a
    // LINK_NOTIFY call), so there are at least as many exits as notifications. A round trip
    // takes about six: the frame's QueueNotify wakes the sleeping device, its LINK_NOTIFY the
    // driver, which then reads InterruptStatus and writes InterruptACK, and the receive buffer
    // goes back; EVENT_IDX and coalescing spare some, never down to three.
    let classic = of("trap-emulate");
    let rtt = &classic.round_trip;
    assert!(rtt.notifications_per_io > 0.0 && rtt.exits_per_io >= rtt.notifications_per_io, "trap-emulate round trip: {rtt:?}");
    // QEMU's count comes from one short boot, less steady than the timed rounds' mean.
    assert!(rtt.exits_per_io >= 3.0 && rtt.exits_per_io_qemu > 0.0, "trap-emulate round trip: {rtt:?}");
    // A bulk stream notifies about one frame in four (EVENT_IDX both ways), which the per-frame
    // difference of seven-frame boots cannot tell from the link set-up's own notifications
    // (those vary with when the device sleeps); the frames' exits it can, over the timed rounds.
    // QEMU's per-frame figure is the difference of two single boots, and was seen at 0 (the
    // boot without I/O took as many set-up exits as the frames took): that EL2 counts exactly
    // what QEMU does on the same boots is `exits_agree_with_qemu`, above.
    let bulk = &classic.bulk;
    assert!(bulk.exits_per_io > 0.0, "trap-emulate bulk frame: {bulk:?}");
    // Polling sends no notification at all; on trap-free the device rings the sleeping driver
    // once per round trip at least.
    assert_eq!(of("polling").round_trip.notifications_per_io, 0.0);
    assert!(of("trap-free").round_trip.notifications_per_io >= 1.0, "trap-free: {:?}", of("trap-free").round_trip);
    for ratio in [report.trap_free_over_trap_emulate, report.trap_free_over_polling] {
        assert!(ratio.round_trip_p50.is_some() && ratio.round_trip_p99.is_some() && ratio.throughput.is_some(), "{ratio:?}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `cargo xtask bench --icount` (without the profile, which `cargo xtask profile` runs): the
/// instruction counts are deterministic, so they are held to budgets, as are the
/// notifications and the classic path's exits; and two boots must count the same.
#[test]
fn the_counted_bench_holds_the_lean_path_to_its_instruction_budgets() {
    use trapless_tools::bench::counted::{BOUNCED, Options as Counting, run as count};
    let out = trapless_tests::root().join("target").join(format!("bench-counted-test-{}", std::process::id()));
    // Two passes round a ring of 256, so that every position is compared.
    let transports = Transport::ALL.to_vec();
    let options = Counting { iterations: 512, size: 64, queue_sizes: vec![16, 256], platform: None, out: out.clone(), split: false, progress: false, transports, linux: false, bounced: true };
    let report = count(&options).unwrap_or_else(|error| panic!("{error}"));
    for (name, entry) in &report.transports {
        assert!(entry.repeatable, "{name}: a second boot counted the same");
        assert_eq!(entry.bulk.frames, 512, "{name}");
    }
    let free = &report.transports["trap-free"];
    for trips in &free.round_trips {
        let queue = trips.queue_size;
        assert_eq!(trips.samples, 512, "queue {queue}");
        // Budgets in instructions, all CPUs and EL2: measured 2,000 (p50, the goal) and 2,160
        // (the first pass round the ring) at 16, 2,000 and 2,176 at 256; 28,016 before issue 14's
        // work, 3,696 after its first part, 2,240 and 2,256 after its second
        // (docs/performance.md). A sample moves in whole ticks of the counter (16 instructions),
        // and where a round trip starts against the tick moves with any change to the loop
        // around it: the p50 budget is one tick above.
        assert!(trips.instructions.p50 <= 2_016.0 && trips.instructions.max <= 2_250.0, "queue {queue}: {:?}", trips.instructions);
        // Flat across the ring (a scan in proportion to the index made it 1.51).
        assert!(trips.ring_max_over_min <= 1.05, "queue {queue}: {}", trips.ring_max_over_min);
        // One doorbell each way, none for transmit completions or receive buffers given back.
        assert!(trips.notifications_per_io <= 2.0, "queue {queue}: {}", trips.notifications_per_io);
        assert_eq!(trips.exits_per_io, 0.0, "queue {queue}");
    }
    // Measured 2,928 per 1,514-byte frame (4,470, 14,670 and 98,800 before); the budget is the
    // issue's goal.
    assert!(free.bulk.notifications_per_io <= 0.25, "bulk: {:?}", free.bulk);
    assert!(free.bulk.instructions_per_frame <= 3_000.0, "bulk: {:?}", free.bulk);
    assert_eq!(free.bulk.exits_per_io, 0.0);
    // The same driver with its buffers in its own memory, copied through the window's pool:
    // measured 2,368 and 4,471.
    let bounced = &report.transports[BOUNCED];
    assert!(bounced.round_trips[0].instructions.p50 <= 2_450.0 && bounced.bulk.instructions_per_frame <= 4_600.0, "{bounced:?}");
    assert_eq!(report.transports["polling"].round_trips[0].exits_per_io, 0.0);
    // The classic path, counted: five exits a round trip (its three notifications, each through
    // EL2, and the interrupt's status read and acknowledgement) and 3,168 instructions
    // measured, against trap-free's 2,000.
    let classic = &report.transports["trap-emulate"];
    for trips in &classic.round_trips {
        assert_eq!(trips.exits_per_io, 5.0, "{trips:?}");
        assert!(trips.instructions.p50 <= 3_250.0, "{trips:?}");
    }
    assert!(classic.bulk.exits_per_io > 0.0, "{:?}", classic.bulk);
    assert!(report.trap_free_over_trap_emulate.is_some_and(|ratio| ratio < 0.7), "{:?}", report.trap_free_over_trap_emulate);
    let _ = std::fs::remove_dir_all(&out);
}

/// `cargo xtask bench`'s Linux rows, short: Linux's own virtio_net carries every round trip
/// and bulk frame over the static link with no exit, by EL2's count and QEMU's, and the device
/// rings Linux at least once per round trip (it sleeps between them).
#[test]
fn the_bench_measures_linux_as_a_driver_with_no_exit_per_io() {
    use trapless_tools::bench::linux::{NO_TRAP_EMULATE, Options as Linux, run as linux};
    let out = trapless_tests::root().join("target").join(format!("bench-linux-test-{}", std::process::id()));
    let report = linux(&Linux { iterations: 21, size: 64, platform: None, out: out.clone(), progress: false }).unwrap_or_else(|error| panic!("{error}"));
    let (rtt, bulk) = (&report.round_trip, &report.bulk);
    assert_eq!((rtt.samples, bulk.frames, bulk.bytes), (21, 21, 21 * 1514), "every I/O measured, every frame echoed whole");
    assert!(rtt.round_trip_ns.p50 > 0.0 && bulk.throughput_mib_s > 0.0, "the counter moved");
    assert!(report.exits_agree_with_qemu, "EL2's exit counts equal QEMU's");
    assert_eq!([rtt.exits_per_io, rtt.exits_per_io_qemu, bulk.exits_per_io, bulk.exits_per_io_qemu], [0.0; 4], "{report:?}");
    assert!(rtt.notifications_per_io >= 1.0, "{rtt:?}");
    assert_eq!(report.trap_emulate, NO_TRAP_EMULATE);
    let _ = std::fs::remove_dir_all(&out);
}

/// `cargo xtask bench --ipi`, short: an IPI inside a partition is one trapped `ICC_SGI1R_EL1`
/// write, and, counted in instructions (deterministic, so asserted), costs less than two `hvc`
/// exits measured in the same boot. The TCG runs are checked for their samples only: times are
/// not asserted.
#[test]
fn an_ipi_costs_less_than_two_hvc_exits_in_instructions() {
    use trapless_tools::bench::ipi::{Options, run};
    let out = trapless_tests::root().join("target").join(format!("bench-ipi-test-{}", std::process::id()));
    let report = run(&Options { iterations: 200, platform: None, out: out.clone(), progress: false }).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.runs.len(), 3);
    for run in &report.runs {
        assert_eq!(run.samples, 200, "{run:?}");
        assert_eq!(run.sysreg_exits_per_ipi, 1.0, "one trapped write per IPI: {run:?}");
        assert!(run.hvc.p50 > 0.0 && run.ipi.p50 > 0.0, "{run:?}");
    }
    assert!(report.counted_repeatable, "a second counted boot gave the same samples");
    let counted = report.runs.iter().find(|run| run.mode == "counted").unwrap();
    // Measured 272 instructions an hvc exit and 416 an IPI to a sleeping CPU (docs/performance.md).
    assert!(counted.hvc.p50 <= 300.0 && counted.ipi.p50 <= 450.0, "{counted:?}");
    assert!(counted.ipi_over_hvc.is_some_and(|ratio| ratio <= 2.0), "{counted:?}");
    let _ = std::fs::remove_dir_all(&out);
}
