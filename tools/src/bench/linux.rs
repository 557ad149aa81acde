//! `cargo xtask bench`'s Linux rows (`docs/performance.md`): the same round trip and bulk
//! workloads, driven from Linux userspace (`partitions/linux/programs/trapless-io.c`, a raw
//! packet socket) through Linux's own `virtio_net` over the `trapless-virtio` module, against
//! the same `virtio-device` echo (`partitions/systems/bench-linux-trap-free.toml`). The numbers
//! are read as the bare-metal rows' are ([`Measured::read`]): Linux prints the same `bench:`
//! lines, and its notifications are the module's doorbells and LPIs.
//!
//! Boots: one without I/O (the baseline for exits and notifications), then per workload one
//! with QEMU logging exceptions (exits cross-checked) and, past [`CHECK_ITERATIONS`], one
//! unlogged for the times. In instruction-counting mode ([`count`]) each is counted twice.
//!
//! There is no trap-and-emulate row for Linux: see [`NO_TRAP_EMULATE`].

use super::counted::{RoundTrips as CountedRoundTrips, Spread, spread};
use super::{BOOT_TIMEOUT, CHECK_ITERATIONS, Measured, Percentiles, RoundTrips, Stream, Workload, draw_histogram, per_io, quantile};
use crate::qemu;
use crate::{Error, Target, root, run_system};
use serde::Serialize;
use std::path::PathBuf;

/// The Linux bench system, and the bootargs each boot replaces.
const SYSTEM: &str = "partitions/systems/bench-linux-trap-free.toml";
const BOOTARGS: &str = "workload=rtt iterations=1000 size=64";
/// How the system names Debian's kernel, relative to itself; a scratch copy names it absolutely.
const LINUX_FILES: &str = "../../target/linux/";
/// The link's queue size in that system.
const QUEUE_SIZE: u16 = 64;
/// The smallest round trip frame from Linux userspace: a whole Ethernet frame (the bare-metal
/// rows' smaller sizes are raised to it).
pub const MIN_FRAME: usize = 60;

/// Why Linux has no trap-and-emulate row: what EL2's `mmio-trap` emulation would need to
/// serve Linux's own `virtio_mmio` (tried: Linux's `virtio_net` over `virtio_mmio` on a
/// `mmio-trap` link ends with `DRIVER_OK` refused, status 0x4b, and no frame echoed).
pub const NO_TRAP_EMULATE: &str = "Linux's own virtio_mmio cannot be served by EL2's mmio-trap emulation: it allocates its rings \
     itself (dma_alloc_coherent, in Linux's own RAM) where EL2 requires them at the window's fixed offsets, so DRIVER_OK is \
     refused; and it hands the device addresses of Linux's own RAM for every buffer (Debian's kernel has no restricted DMA \
     pool to put them in the window), which the device partition cannot reach. Serving it would take EL2 accepting rings \
     anywhere and copying rings and buffers between Linux's RAM and the window on every notification, or the device \
     partition mapping Linux's RAM";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Round trips, and bulk frames.
    pub iterations: usize,
    /// Bytes of a round trip's frame (60 to 1514: a whole Ethernet frame from userspace).
    pub size: usize,
    pub platform: Option<String>,
    pub out: PathBuf,
    pub progress: bool,
}

/// Linux as the driver, trap-free.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub round_trip: RoundTrips,
    pub bulk: Stream,
    /// Whether EL2's exit counts equalled QEMU's on every boot that logged them.
    pub exits_agree_with_qemu: bool,
    /// Why there is no trap-and-emulate row.
    pub trap_emulate: &'static str,
}

/// Linux as the driver, counted in instructions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counted {
    pub round_trip: CountedRoundTrips,
    pub bulk: super::counted::Bulk,
    /// Whether a second boot of each workload counted the same exits and notifications.
    pub repeatable: bool,
    /// How far apart the two boots' instructions were: round trip p50, bulk per frame (as a
    /// fraction). Linux is not quite deterministic under instruction counting: it draws random
    /// numbers (`-cpu max` has `RNDR`) for its hash seeds and userspace layout.
    pub between_boots: (f64, f64),
}

/// How a boot runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// QEMU logs exceptions, to count exits its own way.
    Logged,
    Timed,
    /// QEMU counts instructions.
    Counted,
}

fn boot(options: &Options, workload: Workload, iterations: usize, kind: Kind) -> Result<Measured, Error> {
    let scratch = options.out.join("systems");
    std::fs::create_dir_all(&scratch).map_err(|error| format!("{}: {error}", scratch.display()))?;
    let name = format!("bench-linux-{}-{iterations}-{kind:?}", workload.arg()).to_lowercase();
    if options.progress {
        eprintln!("bench: linux trap-free {} x{iterations} ({kind:?})", workload.arg());
    }
    let source = root().join(SYSTEM);
    let text = std::fs::read_to_string(&source).map_err(|error| format!("{}: {error}", source.display()))?;
    if !text.contains(BOOTARGS) || !text.contains(LINUX_FILES) {
        return Err(format!("{} does not set \"{BOOTARGS}\" and name {LINUX_FILES}", source.display()).into());
    }
    let bootargs = format!("workload={} iterations={iterations} size={}", workload.arg(), options.size);
    let files = format!("{}/", crate::linux::dir(&root()).display());
    let path = scratch.join(format!("{name}.toml"));
    std::fs::write(&path, text.replace(BOOTARGS, &bootargs).replace(LINUX_FILES, &files)).map_err(|error| format!("{}: {error}", path.display()))?;
    let log = scratch.join(format!("{name}.log"));
    let extra: Vec<String> = match kind {
        Kind::Logged => vec!["-d".into(), "int".into(), "-D".into(), log.display().to_string()],
        Kind::Timed => Vec::new(),
        Kind::Counted => qemu::instruction_counting(),
    };
    let (built, run) = run_system(Target { system: &path, platform: options.platform.as_deref() }, &extra, BOOT_TIMEOUT, false)?;
    run.verdict(&built.plan).map_err(|reason| format!("{name}: {reason}\n{}", run.output))?;
    let mut measured = Measured::read(&run).map_err(|problem| format!("{name}: {problem}\n{}", run.output))?;
    if measured.ios(workload) != iterations as u64 {
        return Err(format!("{name}: Linux measured {} of {iterations} I/Os\n{}", measured.ios(workload), run.output).into());
    }
    if kind == Kind::Logged {
        let text = std::fs::read_to_string(&log).map_err(|error| format!("{}: {error}", log.display()))?;
        measured.qemu_exits = Some(qemu::exceptions_to_el2(&text) as u64);
        let _ = std::fs::remove_file(&log);
    }
    Ok(measured)
}

/// Runs the Linux rows: a boot without I/O, then each workload logged (and timed apart when
/// longer than [`CHECK_ITERATIONS`]).
pub fn run(options: &Options) -> Result<Report, Error> {
    let iterations = options.iterations.max(1);
    let idle = boot(options, Workload::RoundTrip, 0, Kind::Logged)?;
    let mut agree = idle.qemu_exits == Some(idle.exits);
    let mut measure = |workload: Workload| -> Result<(Measured, Measured), Error> {
        let check = iterations.min(CHECK_ITERATIONS);
        let checked = boot(options, workload, check, Kind::Logged)?;
        agree &= checked.qemu_exits == Some(checked.exits);
        let timed = if check == iterations { checked.clone() } else { boot(options, workload, iterations, Kind::Timed)? };
        Ok((checked, timed))
    };
    let (rtt_checked, rtt) = measure(Workload::RoundTrip)?;
    let (bulk_checked, bulk) = measure(Workload::Bulk)?;
    let qemu_per_io = |checked: &Measured, workload: Workload| {
        per_io(checked.qemu_exits.unwrap_or(0), idle.qemu_exits.unwrap_or(0), checked.ios(workload))
    };

    let frequency = rtt.frequency.max(1);
    let mut samples = rtt.samples.clone();
    samples.sort_unstable();
    let histogram = "rtt-linux-trap-free.svg".to_string();
    draw_histogram(&options.out.join(&histogram), "linux trap-free", &samples, frequency)?;
    let count = samples.len() as u64;
    let round_trip = RoundTrips {
        samples: samples.len(),
        round_trip_ns: Percentiles::of(&samples, frequency),
        exits_per_io: per_io(rtt.exits, idle.exits, count),
        exits_per_io_qemu: qemu_per_io(&rtt_checked, Workload::RoundTrip),
        notifications_per_io: per_io(rtt.notifications, idle.notifications, count),
        histogram,
    };
    let stream = bulk.bulk.unwrap_or_default();
    let seconds = stream.ticks as f64 / bulk.frequency.max(1) as f64;
    let bulk = Stream {
        frames: stream.frames,
        bytes: stream.bytes,
        throughput_mib_s: if seconds > 0.0 { stream.bytes as f64 / seconds / f64::from(1 << 20) } else { 0.0 },
        exits_per_io: per_io(bulk.exits, idle.exits, stream.frames),
        exits_per_io_qemu: qemu_per_io(&bulk_checked, Workload::Bulk),
        notifications_per_io: per_io(bulk.notifications, idle.notifications, stream.frames),
    };
    Ok(Report { round_trip, bulk, exits_agree_with_qemu: agree, trap_emulate: NO_TRAP_EMULATE })
}

/// Counts the Linux rows' instructions (QEMU's instruction-counting mode): per round trip,
/// from Linux userspace's send to its receive of the echo, all CPUs and EL2; per bulk frame.
pub fn count(options: &Options) -> Result<Counted, Error> {
    let iterations = options.iterations.max(1);
    let idle = boot(options, Workload::RoundTrip, 0, Kind::Counted)?;
    let rtt = boot(options, Workload::RoundTrip, iterations, Kind::Counted)?;
    let rtt_again = boot(options, Workload::RoundTrip, iterations, Kind::Counted)?;
    let bulk = boot(options, Workload::Bulk, iterations, Kind::Counted)?;
    let bulk_again = boot(options, Workload::Bulk, iterations, Kind::Counted)?;
    let same = |first: &Measured, second: &Measured| (first.exits, first.notifications) == (second.exits, second.notifications);
    let apart = |first: f64, second: f64| if first > 0.0 { (first - second).abs() / first } else { 0.0 };
    let p50 = |measured: &Measured| {
        let mut samples = measured.samples.clone();
        samples.sort_unstable();
        quantile(&samples, 0.5) as f64
    };
    let bulk_ticks = |measured: &Measured| measured.bulk.map_or(0.0, |bulk| bulk.ticks as f64);
    let between_boots = (apart(p50(&rtt), p50(&rtt_again)), apart(bulk_ticks(&bulk), bulk_ticks(&bulk_again)));
    // Counter ticks to instructions: virtual time advances 1 ns per instruction.
    let per_tick = |measured: &Measured| 1e9 / measured.frequency.max(1) as f64;
    let instructions: Vec<f64> = rtt.samples.iter().map(|&ticks| ticks as f64 * per_tick(&rtt)).collect();
    let count = rtt.samples.len() as u64;
    let round_trip = CountedRoundTrips {
        queue_size: QUEUE_SIZE,
        samples: rtt.samples.len(),
        instructions: spread(instructions.clone()),
        ring_max_over_min: super::counted::ring_flatness(&instructions, usize::from(QUEUE_SIZE)),
        notifications_per_io: per_io(rtt.notifications, idle.notifications, count),
        exits_per_io: per_io(rtt.exits, idle.exits, count),
    };
    let stream = bulk.bulk.unwrap_or_default();
    let bulk_counted = super::counted::Bulk {
        frames: stream.frames,
        instructions_per_frame: if stream.frames == 0 { 0.0 } else { stream.ticks as f64 * per_tick(&bulk) / stream.frames as f64 },
        notifications_per_io: per_io(bulk.notifications, idle.notifications, stream.frames),
        exits_per_io: per_io(bulk.exits, idle.exits, stream.frames),
    };
    Ok(Counted { round_trip, bulk: bulk_counted, repeatable: same(&rtt, &rtt_again) && same(&bulk, &bulk_again), between_boots })
}

/// The Linux rows of the counted table.
pub fn counted_rows(counted: &Counted) -> String {
    let trips = &counted.round_trip;
    let Spread { p50, min, max, .. } = trips.instructions;
    let again = |apart: f64| format!("  (second boot {:.2} % apart)", apart * 100.0);
    let mut text = format!(
        "{:<13} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>8.3} {:>10.2} {:>9.2}{}\n",
        "linux",
        trips.queue_size,
        p50,
        min,
        max,
        trips.ring_max_over_min,
        trips.notifications_per_io,
        trips.exits_per_io,
        again(counted.between_boots.0)
    );
    let bulk = &counted.bulk;
    text += &format!(
        "{:<13} {:>6} {:>9.0} per 1514-byte frame {:>17.2} {:>9.2}{}\n",
        "linux",
        "bulk",
        bulk.instructions_per_frame,
        bulk.notifications_per_io,
        bulk.exits_per_io,
        again(counted.between_boots.1)
    );
    if !counted.repeatable {
        text += "linux: NOT repeatable: a second boot counted other exits or notifications\n";
    }
    text
}
