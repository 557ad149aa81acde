//! Linux drives static virtio links: Debian's kernel runs its own `virtio_console`,
//! `virtio_net` and `virtio_blk` over the `trapless-virtio` module
//! (`partitions/linux/modules/trapless-virtio`), against trapless's `virtio-device` partition and
//! against a hostile device (`docs/linux.md`). Linux's `/init` does the I/O from userspace with
//! `partitions/linux/programs/trapless-io.c` and prints `linux: ...` lines; the device partition
//! reports what it served.

use std::sync::Mutex;
use trapless_tests::{GicEmulation, boot, boot_edited, check, exceptions_to_el2, gic_emulation, linux_lines, linux_said, md5_of_repeated};
use trapless_tools::qemu::{Exits, Run};

/// One Linux at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How much I/O a boot of `linux-virtio.toml` does.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    lines: usize,
    frames: usize,
    /// MiB to the disk and back.
    block: usize,
}

/// The bytes `trapless-io console` writes for `lines` lines: `line <n>: ` and printable bytes
/// up to 8 + (37 n mod 180) bytes, then a newline.
fn console_bytes(lines: usize) -> usize {
    (0..lines).map(|line| format!("line {line}: ").len().max(8 + line * 37 % 180) + 1).sum()
}

/// The frame sizes `trapless-io net` cycles through.
const FRAME_SIZES: [usize; 12] = [60, 1514, 64, 1000, 128, 1500, 61, 577, 256, 1200, 1513, 90];

/// The bytes of the first `frames` frames `trapless-io net` sends.
fn frame_bytes(frames: usize) -> usize {
    (0..frames).map(|frame| FRAME_SIZES[frame % FRAME_SIZES.len()]).sum()
}

/// What `/init` wrote to a disk: `yes trapless-linux-block | head -c <bytes>`.
fn block_md5(bytes: usize) -> String {
    md5_of_repeated("trapless-linux-block\n", bytes)
}

/// Fails the run on a kernel warning, oops, an interrupt Linux did not expect, or one it turned
/// off for finding nothing.
fn no_kernel_complaints(run: &Run) {
    for complaint in ["WARNING:", "Call trace:", "Unexpected interrupt", "nobody cared", "BUG:", "Oops", "Disabling IRQ"] {
        check(run, !run.output.contains(complaint), &format!("the kernel says '{complaint}'"));
    }
}

/// What `/init` printed of `link`'s notifications for a workload: doorbells rung, LPIs taken,
/// requests, and the line.
fn notifications(run: &Run, link: &str) -> (u64, u64, u64, String) {
    let prefix = format!("{link}: rang the device ");
    let line = linux_lines(run).into_iter().find(|line| line.starts_with(&prefix)).unwrap_or_default().to_string();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|word| word.parse().ok()).collect();
    check(run, numbers.len() >= 3, &format!("{link}: notifications printed: '{line}'"));
    (numbers[0], numbers[1], numbers[2], line)
}

/// Checks that every exit of Linux is its GIC set-up or PSCI, with no IPI (it has one CPU).
fn linux_exits_are_set_up_only(run: &Run) -> (Exits, GicEmulation) {
    let exits = run.exits()["linux"];
    let gic = gic_emulation(run).get("linux").copied().unwrap_or_default();
    check(run, exits.data_abort == gic.data_aborts() && exits.sysreg == gic.sysregs(), &format!("exits {exits:?} are the GIC emulation's {gic:?}"));
    check(run, gic.sgi_requests == 0 && gic.injected_aborts == 0, &format!("no IPI and no fault: {gic:?}"));
    check(run, exits.smc + exits.insn_abort + exits.other == 0 && (1..=16).contains(&exits.hvc), &format!("PSCI only besides: {exits:?}"));
    (exits, gic)
}

/// Boots `linux-virtio.toml` with `sizes`, QEMU logging exceptions, and checks every link's
/// data; returns Linux's and the device's exits.
fn drive(sizes: Sizes) -> (Exits, Exits) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let log = std::env::temp_dir().join(format!("trapless-linux-virtio-{}-{}.log", std::process::id(), sizes.lines));
    let counts = format!("lines={} frames={} block={}", sizes.lines, sizes.frames, sizes.block);
    let edits = [("lines=10 frames=32 block=1", counts.as_str())];
    let (built, run) = boot_edited("linux-virtio", &sizes.lines.to_string(), &edits, &["-d", "int", "-D", log.to_str().unwrap()]);
    let qemu_log = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    check(&run, linux_lines(&run).iter().any(|line| line.starts_with("userspace up: 6.1.0-")) && linux_said(&run, "cpus 1"), "Linux reached /init on one CPU");
    no_kernel_complaints(&run);
    for link in ["console0", "net0", "disk0"] {
        let running = format!("virtio: virtio-{link}: running generation 1, ");
        check(&run, linux_lines(&run).iter().any(|line| line.starts_with(&running)), &format!("{link} started"));
    }
    check(&run, linux_said(&run, "virtio: console /dev/hvc0, network eth0, disk /dev/vda of 8192 sectors"), "the stock drivers made hvc0, eth0 and vda of the link's 4 MiB");

    // The console: every line back byte-exact (trapless-io compares), as many bytes as sent.
    let console = console_bytes(sizes.lines);
    let line = format!("console: {} lines, {console} bytes, echoed byte-exact", sizes.lines);
    check(&run, linux_said(&run, &line), &line);
    // The network: every frame back byte-exact, as the interface's counters and the device say.
    let line = format!("net: {} frames of 60 to 1514 bytes, {} bytes, echoed byte-exact", sizes.frames, frame_bytes(sizes.frames));
    check(&run, linux_said(&run, &line), &line);
    let line = format!("net: eth0 sent {0}, received {0}", sizes.frames);
    check(&run, linux_said(&run, &line), &line);
    // The disk: the pattern written, read back past the page cache, and again after a reload.
    let md5 = block_md5(sizes.block << 20);
    let line = format!("block: {} bytes to /dev/vda, md5 written {md5}, read back {md5}", sizes.block << 20);
    check(&run, linux_said(&run, &line), &line);
    // The module removed (the drivers' devices go) and loaded again (a new generation), then
    // removed for good with stop_on_remove.
    for line in [
        "virtio: removed: 0 eth, 0 vd".to_string(),
        "virtio: loaded again".into(),
        format!("again: console: 2 lines, {} bytes, echoed byte-exact", console_bytes(2)),
        format!("again: net: 4 frames of 60 to 1514 bytes, {} bytes, echoed byte-exact", frame_bytes(4)),
        format!("again: block: read back {md5}"),
        "virtio: stopped".into(),
    ] {
        check(&run, linux_said(&run, &line), &line);
    }
    let probed = |generation: u32| {
        run.output.lines().any(|line| line.contains("trapless-virtio virtio-net0: link net0: net, 2 queue(s) of 64") && line.ends_with(&format!(", generation {generation}")))
    };
    check(&run, probed(0) && probed(1), "the first load finds generation 0, the second carries on from 1");

    // The device served exactly that, and finished when Linux stopped its links (removing the
    // module with stop_on_remove, then resting, so that the device's report is not interleaved
    // with Linux's own lines on the shared UART).
    let backend = run.partition_lines("backend");
    for line in [
        format!("virtio-device: link console0: echoed {} bytes; rang the driver ", console + console_bytes(2)),
        format!("virtio-device: link net0: echoed {} frames (checksum ", sizes.frames + 4),
        "virtio-device: every driver has finished; ".to_string(),
    ] {
        check(&run, backend.iter().any(|said| said.starts_with(&line)), &line);
    }

    // Notifications per request: doorbells and LPIs, never exits.
    for (link, at_least) in [("console0", sizes.lines), ("net0", sizes.frames), ("disk0", 2 * sizes.block)] {
        let (rang, taken, requests, line) = notifications(&run, link);
        check(&run, rang > 0 && taken > 0 && requests as usize >= at_least, &line);
        eprintln!("{link}: {:.2} doorbells and {:.2} LPIs per request ({line})", rang as f64 / requests as f64, taken as f64 / requests as f64);
    }

    let (linux, _) = linux_exits_are_set_up_only(&run);
    let backend = run.exits()["backend"];
    let taken = exceptions_to_el2(&qemu_log) as u64;
    let counted: u64 = run.exits().values().map(|exits| exits.total + exits.parked).sum();
    check(&run, taken == counted, &format!("QEMU saw {taken} exceptions to EL2, EL2 counted {counted}"));
    let init = run.output.lines().find(|line| line.ends_with("Run /init as init process")).unwrap_or_default();
    eprintln!("{sizes:?}: linux {linux:?}\nbackend {backend:?}\nQEMU's count {taken}; the run took {:.1} s; {init}", run.elapsed.as_secs_f64());
    (linux, backend)
}

/// Linux's own drivers carry console lines, frames of mixed sizes and a disk's data over three
/// static links, survive the module's removal and reload, and power off; neither Linux nor the
/// device partition enters EL2 for any of it: their exit counts are the same for twice the
/// data, and QEMU's own count agrees.
#[test]
fn linux_drives_console_net_and_block_with_no_exit_per_io() {
    let small = drive(Sizes { lines: 10, frames: 32, block: 1 });
    let large = drive(Sizes { lines: 20, frames: 64, block: 2 });
    assert_eq!(small, large, "exits (linux, backend) differ with twice the data");
}

/// A hostile device on four of Linux's links: the one whose used ring lies fails, with the
/// reason in Linux's log; 20,000 doorbells on a console it echoes honestly cost Linux at most
/// interrupts (they coalesce), never an exit or a lost byte; 20,000 more on another console
/// before Linux has loaded the module reach its GIC driver as one interrupt no one expected,
/// warned about once, and that console works all the same; a configuration space the device
/// scribbles over is not believed; Linux's other links, and Linux, carry on.
#[test]
fn a_hostile_device_fails_only_its_link() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (built, run) = boot("linux-hostile", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    // The early doorbells: Linux's GIC driver ends the LPI nobody had mapped yet and warns once;
    // nothing else complains.
    let early = run
        .output
        .lines()
        .find_map(|line| line.split("link console2: console, 2 queue(s) of 16, ").nth(1)?.split("LPIs ").nth(1)?.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or_default();
    let unexpected: Vec<&str> = run.output.lines().filter(|line| line.contains("Unexpected interrupt")).collect();
    check(&run, unexpected.len() == 1 && unexpected[0].ends_with(&format!("Unexpected interrupt (irqnr {early})")), &format!("one warning, for console2's LPI {early}: {unexpected:?}"));
    check(&run, run.output.matches("WARNING:").count() == 1, "no other warning");
    for complaint in ["nobody cared", "BUG:", "Oops", "Disabling IRQ"] {
        check(&run, !run.output.contains(complaint), &format!("the kernel says '{complaint}'"));
    }
    // The lie, said by Linux's virtio_ring and by the module, which fails the link.
    check(&run, run.output.contains(": input.0:id 200 out of range"), "virtio_ring saw the used id");
    let failed = "link net0 failed: queue 0: the device broke the used ring (virtio_ring says how)";
    check(&run, run.output.contains(&format!("trapless-virtio virtio-net0: {failed}")), failed);
    check(&run, linux_said(&run, "net: frame 0: no echo within the time limit (error 11)"), "the frame's echo never came");
    check(&run, linux_lines(&run).iter().any(|line| line.starts_with("virtio: virtio-net0: failed: queue 0: the device broke the used ring")), "its state says so");
    // Every other link works to the end.
    let console = console_bytes(10);
    for tty in ["hvc0", "hvc1", "hvc2"] {
        let line = format!("{tty}: console: 10 lines, {console} bytes, echoed byte-exact");
        check(&run, linux_said(&run, &line), &line);
    }
    for (disk, link) in [("vda", "disk0"), ("vdb", "disk1")] {
        let line = format!("{disk}: virtio-{link}: 128 sectors");
        check(&run, linux_said(&run, &line), &format!("{line} (the device tree's capacity, not the scribbled 2^40)"));
    }
    let md5 = block_md5(65536);
    for disk in ["vda", "vdb"] {
        let line = format!("block: 65536 bytes to /dev/{disk}, md5 written {md5}, read back {md5}");
        check(&run, linux_said(&run, &line), &line);
    }
    for link in ["console0", "console1", "console2", "disk0", "disk1"] {
        let said = format!("virtio: virtio-{link}: ");
        let last = linux_lines(&run).into_iter().rfind(|line| line.starts_with(&said)).unwrap_or_default();
        check(&run, last.starts_with(&format!("{said}running generation 1, ")), &format!("{link} still runs at the end"));
        eprintln!("{last}");
    }
    // Every device saw Linux stop its links as it powered off (the module's shutdown), and
    // finished: the verdict above holds every partition to system-off. (Their reports are
    // printed as Linux powers off, through the same UART, so they may be interleaved.)
    linux_exits_are_set_up_only(&run);
    for partition in ["backend", "rogue"] {
        let exits = run.exits()[partition];
        check(&run, exits.data_abort + exits.sysreg <= 1, &format!("{partition}: console lines, power-off and its priority mask only: {exits:?}"));
    }
}
