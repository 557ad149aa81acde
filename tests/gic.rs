//! The GIC a bare-metal partition sees: EL2 emulates the distributor and the first page of its
//! CPUs' RD frames, so a guest that sets the GIC up the standard way (the stock arm-gic driver)
//! runs unchanged, and each emulated access is one exit, counted.

use trapless_tests::{boot_file, check, exceptions_to_el2, gic_emulation, system};

/// Boots `tests/systems/gic-setup.toml` on `platform` and checks what the guest and EL2 say.
fn standard_set_up(platform: Option<&str>) {
    let log = std::env::temp_dir().join(format!("trapless-gic-setup-{}-{}.log", platform.unwrap_or("own"), std::process::id()));
    let (built, run) = boot_file(&system("gic-setup"), platform, &["-d", "int", "-D", log.to_str().unwrap()]);
    let qemu_log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let lines = run.partition_lines("standard");
    for line in [
        // SPI 34 (the RTC's) is its highest: one line of 32 SPIs; LPIs, as EL2 takes them.
        "gic-setup: GICD_TYPER: 32 SPIs, LPIs supported, 16 ID bits",
        "gic-setup: timer PPI 30 x1, SPI 34 x1 (0 before its alarm), SGI 3 x1; other SGIs 0, unhandled 0",
        "gic-setup: done",
    ] {
        check(&run, lines.contains(&line), line);
    }
    let exits = run.exits()["standard"];
    let gic = gic_emulation(&run).get("standard").copied().unwrap_or_default();
    check(&run, gic.data_aborts() > 0 && exits.data_abort == gic.data_aborts(), &format!("each emulated access is one exit: {exits:?} {gic:?}"));
    // ICC_CTLR_EL1 (the driver's set-up), ICC_PMR_EL1 and the SGI.
    check(&run, exits.sysreg == 3 && gic.sgi_requests == 1 && gic.cpu_interface == 2, &format!("{exits:?} {gic:?}"));
    check(&run, exits.hvc == lines.len() as u64 + 1, &format!("one hvc per line and SYSTEM_OFF: {exits:?}"));
    let taken = exceptions_to_el2(&qemu_log) as u64;
    check(&run, taken == exits.total + exits.parked, &format!("QEMU saw {taken} exceptions to EL2, EL2 counted {exits:?}"));
}

#[test]
fn an_unmodified_guest_sets_up_the_gic_the_standard_way_and_takes_its_interrupts() {
    standard_set_up(None);
}

/// On a GICv4 the redistributor's ID page is emulated too, so that its version agrees with the
/// distributor's and with a GICR_TYPER without virtual LPIs (arm-gic refuses a mismatch).
#[test]
fn the_same_guest_runs_unchanged_on_a_gicv4() {
    standard_set_up(Some("qemu-virt-gicv4"));
}
