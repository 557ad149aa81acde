//! Linux as a partition: Debian 12's arm64 kernel, unmodified, beside bare-metal partitions.
//! xtask fetches the kernel and busybox-static with apt into `target/linux/` (once) and builds
//! the initramfs from `partitions/linux/init`; without them these tests fail with the reason.
//!
//! Linux writes straight to its PL011, so its lines carry no `[linux]` prefix: `/init` starts
//! each of its own with `linux: `. The bare-metal partitions print while Linux boots, and
//! characters of two writers to one UART can interleave, so their results are checked by how
//! they stopped (each ends with `SYSTEM_RESET` when its own check fails) and by their exits.

use std::sync::Mutex;
use trapless_tests::{GicEmulation, boot, boot_edited, check, exceptions_to_el2, gic_emulation, linux_lines, linux_said as said, md5_of_repeated};
use trapless_tools::Built;
use trapless_tools::qemu::{Exits, Run};

/// One Linux at a time: three vCPUs each on a loaded 2-core machine are enough.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The MD5 of the `bytes` bytes `/init`'s work writes (`yes trapless-linux-work | head -c`).
fn expected_md5(bytes: usize) -> String {
    md5_of_repeated("trapless-linux-work\n", bytes)
}

/// Checks what Linux said about its partition against the plan.
fn facts_match_the_plan(built: &Built, run: &Run) {
    let plan = &built.plan;
    let linux = plan.partitions.iter().find(|partition| partition.name == "linux").expect("a partition named linux");
    check(run, linux_lines(run).iter().any(|line| line.starts_with("userspace up: 6.1.0-")), "Linux reached /init");
    check(run, said(run, &format!("cpus {}", linux.cpus.len())), "its CPU count is the plan's");
    let memtotal = linux_lines(run)
        .iter()
        .find_map(|line| line.strip_prefix("memtotal ")?.strip_suffix(" kB")?.parse::<u64>().ok())
        .unwrap_or(0);
    let planned_kb = linux.memory.size / 1024;
    check(run, memtotal <= planned_kb && memtotal >= planned_kb * 3 / 4, &format!("MemTotal {memtotal} kB of {planned_kb} kB"));
    check(run, said(run, &format!("model trapless partition linux on {}", plan.platform.name)), "its device tree's model");
    let node = format!("memory node memory@{:x} reg {:016x} {:016x}", linux.memory.base.0, linux.memory.base.0, linux.memory.size);
    check(run, said(run, &node), &node);
}

/// Checks that every data-abort and system-register exit of Linux is the GIC emulation's or a
/// trapped CPU-interface register, and that nothing else but PSCI entered EL2. Returns its
/// exits and the emulation's counts.
fn exits_are_gic_set_up_and_psci(run: &Run) -> (Exits, GicEmulation) {
    let exits = run.exits()["linux"];
    let gic = gic_emulation(run).get("linux").copied().unwrap_or_default();
    eprintln!("linux exits: {exits:?}\nlinux GIC emulation: {gic:?}");
    check(run, exits.data_abort == gic.data_aborts(), &format!("data aborts {} = the emulation's {gic:?}", exits.data_abort));
    check(run, exits.sysreg == gic.sysregs(), &format!("system registers {} = SGI requests and CPU interface {gic:?}", exits.sysreg));
    check(run, exits.smc == 0 && exits.insn_abort == 0 && exits.other == 0, &format!("nothing else: {exits:?}"));
    // PSCI: version, features, CPU_ON of its second CPU, SYSTEM_OFF and a few more probes.
    check(run, (1..=16).contains(&exits.hvc), &format!("a handful of PSCI calls: {exits:?}"));
    check(run, gic.data_aborts() <= 200, &format!("the GIC set-up is bounded: {gic:?}"));
    (exits, gic)
}

/// Boots `tests/systems/linux.toml` with `/init` writing `work` MiB, and checks the run.
fn work(work: usize) -> (Exits, GicEmulation) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let edit = format!("work={work}");
    let (built, run) = boot_edited("linux", &edit, &[("work=64", &edit)], &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    facts_match_the_plan(&built, &run);
    let md5 = expected_md5(work << 20);
    let line = format!("work: {} bytes in tmpfs, md5 written {md5}, read back {md5}", work << 20);
    check(&run, said(&run, &line), &line);
    check(&run, said(&run, "powering off"), "/init powered off");
    check(&run, run.output.contains("\nlinux:/# "), "through an interactive shell, whose prompt shows");
    // The worker's pattern survived (else it resets) and its exits are its two lines and
    // SYSTEM_OFF.
    let worker = run.exits()["worker"];
    check(&run, run.stops().get("worker").map(String::as_str) == Some("system-off"), "the worker finished its own work");
    check(&run, worker.total == 3 && worker.hvc == 3, &format!("worker's exits: {worker:?}"));
    exits_are_gic_set_up_and_psci(&run)
}

/// Linux boots to userspace beside a bare-metal partition, sees what the plan gave it, does
/// real work and powers off; its data aborts are the GIC set-up's alone, the same whether it
/// writes 16 MiB or four times as much.
#[test]
fn linux_boots_beside_bare_metal_and_computes_without_data_aborts() {
    let (small, small_gic) = work(16);
    let (large, large_gic) = work(64);
    let both = format!("16 MiB: {small:?} {small_gic:?}\n64 MiB: {large:?} {large_gic:?}");
    assert_eq!(small.data_abort, large.data_abort, "data aborts differ with the work:\n{both}");
    assert_eq!(small_gic.data_aborts(), large_gic.data_aborts(), "{both}");
    assert_eq!(small.hvc, large.hvc, "PSCI calls differ with the work:\n{both}");
    assert_eq!(small_gic.cpu_interface, large_gic.cpu_interface, "{both}");
    assert_eq!(small_gic.injected_aborts + large_gic.injected_aborts, 0, "{both}");
}

/// With `on-fault = "abort"`, Linux reading another partition's RAM takes a bus error and goes
/// on; it then turns off the distributor, disables, routes and raises the victim's SPI and
/// sends SGIs at the victim's CPU (through the distributor, the victim's SGI frame, and from
/// EL1 through `ICC_SGI1R_EL1` with a module), and none of it reaches the victim: once rung,
/// the victim's timer, SPI and own SGI each arrive once, and nothing else does.
#[test]
fn linux_cannot_reach_another_partition_and_survives_its_own_faults() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let log = std::env::temp_dir().join(format!("trapless-linux-isolation-{}.log", std::process::id()));
    let (built, run) = boot("linux-isolation", &["-d", "int", "-D", log.to_str().unwrap()]);
    let qemu_log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    // EL2's counts, Linux's included, are QEMU's.
    let taken = exceptions_to_el2(&qemu_log) as u64;
    let counted: u64 = run.exits().values().map(|exits| exits.total + exits.parked).sum();
    check(&run, taken == counted, &format!("QEMU saw {taken} exceptions to EL2, EL2 counted {counted}"));
    facts_match_the_plan(&built, &run);
    for report in [
        "trapless: partition linux takes an external abort for: stage-2 data abort: read at IPA 0x7000_0000 (translation fault)",
        "trapless: partition linux takes an external abort for: stage-2 data abort: write at IPA 0x80f_0200 (translation fault)",
    ] {
        check(&run, run.output.lines().any(|line| line.starts_with(report)), report);
    }
    // SIGBUS (7) in devmem, and /init carried on.
    for line in [
        "isolation: read victim RAM 0x70000000: signal 7",
        "isolation: victim CPU's GICR_ISPENDR0: signal 7",
        // Its own GICD_CTLR (a shadow) reads off; the victim's SPI and route read as nothing.
        "isolation: GICD_CTLR before 0x00000053",
        "isolation: GICD_CTLR after 0x00000050",
        "isolation: IROUTER victim SPI reads 0x0000000000000000",
        "isolation: sgi-probe loaded: 1 module(s)",
        "isolation: ringing the victim with EventID 0 and powering off",
    ] {
        check(&run, said(&run, line), line);
    }
    // The module's writes from EL1: to the victim's CPU alone, then to all but self.
    for write in [
        "sgi-probe: SGI 0 to MPIDR 0x2: wrote ICC_SGI1R_EL1 0x4",
        "sgi-probe: SGI 0 to all but self: wrote ICC_SGI1R_EL1 0x10000000000",
    ] {
        check(&run, run.output.lines().any(|line| line.ends_with(write)), write);
    }
    let enables = linux_lines(&run)
        .iter()
        .find_map(|line| u32::from_str_radix(line.strip_prefix("isolation: victim SPI 34 enabled reads 0x")?, 16).ok());
    check(&run, enables.is_some_and(|bits| bits & (1 << 2) == 0 && bits & (1 << 1) != 0), &format!("Linux sees its SPI 33, not 34: {enables:?}"));
    let victim = run.partition_lines("victim");
    let taken = "gic-setup: timer PPI 30 x1, SPI 34 x1 (0 before its alarm), SGI 3 x1; other SGIs 0, unhandled 0";
    check(&run, victim.contains(&taken), taken);
    check(&run, run.stops().get("victim").map(String::as_str) == Some("system-off"), "the victim's interrupts arrived as it set them up");
    let (_, gic) = exits_are_gic_set_up_and_psci(&run);
    check(&run, gic.injected_aborts == 2, &format!("two aborts injected: {gic:?}"));
}

/// With `on-fault = "stop"` (the default), the same read of another partition's RAM stops
/// Linux, with a report naming the IPA; the other partition finishes.
#[test]
fn linux_reading_another_partitions_ram_is_stopped() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let edits = [("on-fault = \"abort\"", "on-fault = \"stop\""), ("mode=isolation", "mode=touch read=0x70000000"), (" wait=go settle-ms=2000", "")];
    let (built, run) = boot_edited("linux-isolation", "stop", &edits, &[]);
    check(&run, !run.timed_out(), "QEMU powered off");
    check(&run, said(&run, "touch: reading 0x70000000 through /dev/mem"), "Linux tried");
    let reason = run.stops().get("linux").cloned().unwrap_or_default();
    check(&run, reason.starts_with("stage-2 data abort: read at IPA 0x7000_0000 (translation fault)"), &format!("Linux stopped: {reason}"));
    check(&run, !said(&run, "touch: still running"), "Linux got no further");
    check(&run, run.stops().get("victim").map(String::as_str) == Some("system-off"), "the victim finished");
    check(&run, gic_emulation(&run).get("linux").is_none_or(|gic| gic.injected_aborts == 0), "no abort injected");
    let verdict = run.verdict(&built.plan).expect_err("a stopped partition fails the run");
    check(&run, verdict.contains("partition linux stopped: stage-2 data abort"), &verdict);
}
