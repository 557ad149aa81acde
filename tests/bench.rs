//! `cargo xtask bench` with a short run: the report has every transport and workload, and the
//! exit counts are exact (they do not depend on timing); the times themselves are not checked,
//! since this machine is shared and noisy.

use trapless_tools::bench::{Options, Transport, run};

#[test]
fn the_bench_reports_every_transport_and_counts_exits_exactly() {
    let out = trapless_tests::root().join("target").join(format!("bench-test-{}", std::process::id()));
    let options = Options { iterations: 20, size: 64, rounds: 1, platform: None, out: out.clone(), progress: false };
    let report = run(&options).unwrap_or_else(|error| panic!("{error}"));

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["iterations", "size", "rounds", "platform", "machine", "transports", "trap_free_over_trap_emulate", "trap_free_over_polling"] {
        assert!(json.get(key).is_some(), "report.json has no '{key}'");
    }
    for transport in Transport::ALL {
        let name = transport.name();
        let entry = &report.transports[name];
        let (rtt, bulk) = (&entry.round_trip, &entry.bulk);
        assert_eq!((rtt.samples, bulk.frames), (20, 20), "{name}: every I/O was measured");
        let ns = rtt.round_trip_ns;
        assert!(0.0 < ns.p50 && ns.p50 <= ns.p90 && ns.p90 <= ns.p99 && ns.p99 <= ns.max, "{name}: {ns:?}");
        assert!(bulk.throughput_mib_s > 0.0, "{name}: a throughput");
        assert!(entry.exits_agree_with_qemu, "{name}: EL2's exit counts equal QEMU's");
        let json = &json["transports"][name];
        for key in ["p50", "p90", "p99", "max"] {
            assert!(json["round_trip"]["round_trip_ns"][key].is_number(), "{name}: round_trip_ns.{key}");
        }
        for key in ["exits_per_io", "exits_per_io_qemu", "notifications_per_io"] {
            assert!(json["round_trip"][key].is_number() && json["bulk"][key].is_number(), "{name}: {key}");
        }
        let svg = std::fs::read_to_string(out.join(&rtt.histogram)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("round trip"), "{name}: a histogram");
    }
    let of = |name: &str| &report.transports[name];
    // Not one exit for any I/O on the shared-memory transports, by EL2's count and QEMU's.
    for name in ["polling", "trap-free"] {
        let (rtt, bulk) = (&of(name).round_trip, &of(name).bulk);
        assert_eq!([rtt.exits_per_io, rtt.exits_per_io_qemu, bulk.exits_per_io, bulk.exits_per_io_qemu], [0.0; 4], "{name}");
    }
    // The classic path: the notify, the device's hypercall, the status read and its
    // acknowledgement make at least three per round trip.
    let classic = &of("trap-emulate").round_trip;
    assert!(classic.exits_per_io >= 3.0 && classic.exits_per_io_qemu >= 3.0, "trap-emulate: {classic:?}");
    assert!(of("trap-emulate").bulk.exits_per_io > 0.0);
    // Polling sends no notification at all; the others do.
    assert_eq!(of("polling").round_trip.notifications_per_io, 0.0);
    assert!(of("trap-free").round_trip.notifications_per_io > 0.0);
    let _ = std::fs::remove_dir_all(&out);
}
