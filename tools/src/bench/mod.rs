//! `cargo xtask bench`: trap-free I/O against the classic trap-and-emulate path and against the
//! polling limit, measured side by side in one run (`docs/performance.md`).
//!
//! The three transports are three systems (`partitions/systems/bench-*.toml`) that differ only
//! in how their one net link is reached. Each workload runs in rounds; within a round every
//! transport boots once, in an order that rotates from round to round. The number of rounds is
//! rounded up to a multiple of three, so that each transport goes first, second and last
//! equally often and drift on a busy machine falls on all three alike. Latencies come from the guest's counter; exits from EL2's
//! counters, against a boot of the same system that does no I/O, and cross-checked with QEMU's
//! own `-d int` log on a short run of each.

pub mod counted;
pub mod ipi;
pub mod linux;

use crate::qemu::{self, Run};
use crate::{Error, Target, root, run_system};
use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the bench link is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Both sides spin on the rings: no notifications at all.
    Polling,
    /// Doorbells and LPIs, no exit.
    TrapFree,
    /// An emulated virtio-mmio register block, EL2 in the middle.
    TrapEmulate,
}

impl Transport {
    pub const ALL: [Self; 3] = [Self::Polling, Self::TrapFree, Self::TrapEmulate];

    pub fn name(self) -> &'static str {
        match self {
            Self::Polling => "polling",
            Self::TrapFree => "trap-free",
            Self::TrapEmulate => "trap-emulate",
        }
    }

    /// The system file of this transport.
    pub fn system(self) -> PathBuf {
        root().join("partitions/systems").join(format!("bench-{}.toml", self.name()))
    }
}

/// What the bench partition does in a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Round trips of one small frame at a time.
    RoundTrip,
    /// A stream of full-size frames, eight in flight.
    Bulk,
}

impl Workload {
    pub const ALL: [Self; 2] = [Self::RoundTrip, Self::Bulk];

    /// Its name on the bench partition's command line.
    fn arg(self) -> &'static str {
        match self {
            Self::RoundTrip => "rtt",
            Self::Bulk => "bulk",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Round trips, and frames streamed, per transport (at least; see [`Report::iterations`]).
    pub iterations: usize,
    /// Bytes of a round trip's frame.
    pub size: usize,
    /// Boots each workload and transport is split over, rounded up to a multiple of three.
    pub rounds: usize,
    pub platform: Option<String>,
    /// Where the report, the histograms and the scratch files go.
    pub out: PathBuf,
    /// Prints a line per boot to stderr.
    pub progress: bool,
    /// Also measure Linux as the driver ([`linux`]), trap-free.
    pub linux: bool,
}

/// The bench partition's bootargs in the bench system files, which each boot replaces.
const BOOTARGS: &str = "workload=rtt iterations=1000 size=64";
/// How long one boot may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Most iterations of the short boots that cross-check exits with QEMU's log.
const CHECK_ITERATIONS: usize = 100;

/// What one boot showed.
#[derive(Clone, Debug, Default, PartialEq)]
struct Measured {
    /// EL2 entries, over every partition.
    exits: u64,
    /// Exceptions QEMU's `-d int` log shows taken to EL2, when it was on.
    qemu_exits: Option<u64>,
    /// Round trip times, in counter ticks.
    samples: Vec<u64>,
    /// Bulk: frames and bytes echoed, and the ticks they took.
    bulk: Option<Bulk>,
    /// Counter ticks per second.
    frequency: u64,
    /// Notifications both ways: doorbells or `QueueNotify` writes to the device, doorbells or
    /// `LINK_NOTIFY` hypercalls to the driver.
    notifications: u64,
}

/// What a bulk boot echoed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bulk {
    frames: u64,
    bytes: u64,
    ticks: u64,
}

/// A number in `line` right after `label`.
fn number_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

impl Measured {
    /// Reads a boot's console: the bench partition's own UART lines (`bench: ...`), the device
    /// partition's report, and EL2's counters.
    fn read(run: &Run) -> Result<Self, String> {
        let output = &run.output;
        if let Some(line) = output.lines().find(|line| line.starts_with("bench: failed")) {
            return Err(line.to_string());
        }
        let line = |prefix: &str| output.lines().find(|line| line.starts_with(prefix)).unwrap_or("");
        let header = line("bench: workload=");
        let mut measured = Measured {
            exits: run.exits().values().map(|exits| exits.entries()).sum(),
            frequency: number_after(header, "frequency=").ok_or("the bench partition printed no results")?,
            ..Self::default()
        };
        for samples in output.lines().filter_map(|line| line.strip_prefix("bench: samples ")) {
            for sample in samples.split_whitespace() {
                measured.samples.push(sample.parse().map_err(|_| format!("a sample that is no number: {sample}"))?);
            }
        }
        let bulk = line("bench: bulk ");
        if let (Some(frames), Some(bytes), Some(ticks)) = (number_after(bulk, "frames="), number_after(bulk, "bytes="), number_after(bulk, "ticks=")) {
            measured.bulk = Some(Bulk { frames, bytes, ticks });
        }
        let driver_rang = number_after(line("bench: rang the device "), "device ").unwrap_or(0);
        let device_rang = number_after(line("[backend] virtio-device: link net0: "), "rang the driver ").unwrap_or(0);
        let emulated_notifies = number_after(line("trapless: link net0 transport=mmio-trap "), "notifies=").unwrap_or(0);
        measured.notifications = driver_rang + device_rang + emulated_notifies;
        Ok(measured)
    }

    /// How many I/Os of `workload` this boot measured.
    fn ios(&self, workload: Workload) -> u64 {
        match workload {
            Workload::RoundTrip => self.samples.len() as u64,
            Workload::Bulk => self.bulk.map_or(0, |bulk| bulk.frames),
        }
    }
}

/// Boots `transport`'s system with `workload` for `iterations`, with QEMU logging exceptions if
/// `log_exits`, and reads what it showed.
fn boot(options: &Options, transport: Transport, workload: Workload, iterations: usize, log_exits: bool) -> Result<Measured, Error> {
    let how = How { log_exits, counting: false, queue_size: QUEUE_SIZE, bounced: false };
    boot_as(&options.out, options.platform.as_deref(), options.size, transport, workload, iterations, how)
}

/// The bench systems' queue size.
pub const QUEUE_SIZE: u16 = 16;

/// How a bench boot runs.
#[derive(Clone, Copy, Debug)]
struct How {
    /// QEMU logs exceptions, to count exits its own way.
    log_exits: bool,
    /// QEMU counts instructions (`qemu::instruction_counting`).
    counting: bool,
    /// The link's queue size.
    queue_size: u16,
    /// The bench partition keeps its buffers in its own memory, bounced through the window
    /// (`buffers=bounced`), not in the window.
    bounced: bool,
}

/// The text of `transport`'s system for a boot of `workload` with `iterations` of `size`
/// bytes, on a link of `queue_size`, the bench's buffers bounced if `bounced`.
fn system_text(transport: Transport, workload: Workload, iterations: usize, size: usize, queue_size: u16, bounced: bool) -> Result<String, Error> {
    let text = std::fs::read_to_string(transport.system()).map_err(|error| format!("{}: {error}", transport.system().display()))?;
    let queue = format!("queue-size = {QUEUE_SIZE}");
    if !text.contains(BOOTARGS) || !text.contains(&queue) {
        return Err(format!("{} does not set the bench partition's bootargs to \"{BOOTARGS}\" and the link's {queue}", transport.system().display()).into());
    }
    let buffers = if bounced { " buffers=bounced" } else { "" };
    let bootargs = format!("workload={} iterations={iterations} size={size}{buffers}", workload.arg());
    Ok(text.replace(BOOTARGS, &bootargs).replace(&queue, &format!("queue-size = {queue_size}")))
}

fn boot_as(out: &Path, platform: Option<&str>, size: usize, transport: Transport, workload: Workload, iterations: usize, how: How) -> Result<Measured, Error> {
    let How { log_exits, counting, queue_size, bounced } = how;
    let scratch = out.join("systems");
    std::fs::create_dir_all(&scratch).map_err(|error| format!("{}: {error}", scratch.display()))?;
    let kind = match (log_exits, counting) {
        (true, _) => "check",
        (false, true) => "counted",
        (false, false) => "timed",
    };
    let name = format!("bench-{}-{}-{}-q{queue_size}{}", transport.name(), workload.arg(), kind, if bounced { "-bounced" } else { "" });
    let path = scratch.join(format!("{name}.toml"));
    let text = system_text(transport, workload, iterations, size, queue_size, bounced)?;
    std::fs::write(&path, text).map_err(|error| format!("{}: {error}", path.display()))?;
    let log = scratch.join(format!("{name}.log"));
    let mut extra: Vec<String> = if log_exits {
        ["-d", "int", "-D"].iter().map(|word| word.to_string()).chain([log.display().to_string()]).collect()
    } else {
        Vec::new()
    };
    if counting {
        extra.extend(qemu::instruction_counting());
    }
    let (built, run) = run_system(Target { system: &path, platform }, &extra, BOOT_TIMEOUT, false)?;
    run.verdict(&built.plan).map_err(|reason| format!("{name}: {reason}\n{}", run.output))?;
    let mut measured = Measured::read(&run).map_err(|problem| format!("{name}: {problem}\n{}", run.output))?;
    if measured.ios(workload) != iterations as u64 {
        return Err(format!("{name}: the bench partition measured {} of {iterations} I/Os\n{}", measured.ios(workload), run.output).into());
    }
    if log_exits {
        let log_text = std::fs::read_to_string(&log).map_err(|error| format!("{}: {error}", log.display()))?;
        measured.qemu_exits = Some(qemu::exceptions_to_el2(&log_text) as u64);
    }
    Ok(measured)
}

/// Round trip times, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Of `sorted`, round trip times in ticks of a counter at `frequency` Hz.
    pub fn of(sorted: &[u64], frequency: u64) -> Self {
        let nanoseconds = |ticks: u64| ticks as f64 * 1e9 / frequency.max(1) as f64;
        Self {
            p50: nanoseconds(quantile(sorted, 0.5)),
            p90: nanoseconds(quantile(sorted, 0.9)),
            p99: nanoseconds(quantile(sorted, 0.99)),
            max: nanoseconds(sorted.last().copied().unwrap_or(0)),
        }
    }
}

/// One transport's round trips.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundTrips {
    pub samples: usize,
    pub round_trip_ns: Percentiles,
    /// EL2 entries per round trip, from EL2's counters over the timed boots.
    pub exits_per_io: f64,
    /// The same from QEMU's `-d int` log, over a short boot.
    pub exits_per_io_qemu: f64,
    pub notifications_per_io: f64,
    /// The latency histogram, next to the report.
    pub histogram: String,
}

/// One transport's bulk stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stream {
    pub frames: u64,
    pub bytes: u64,
    pub throughput_mib_s: f64,
    pub exits_per_io: f64,
    pub exits_per_io_qemu: f64,
    pub notifications_per_io: f64,
}

/// Everything measured for one transport.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransportReport {
    pub round_trip: RoundTrips,
    pub bulk: Stream,
    /// Whether EL2's exit counts equalled QEMU's on every boot that logged them.
    pub exits_agree_with_qemu: bool,
}

/// How two transports compare: the first's round trip times over the second's (below 1: the
/// first is faster), and its throughput over the second's (above 1: the first is faster). Each
/// is `None` (`null` in the JSON) when either side is not a positive number, so no ratio is
/// ever infinite or NaN; since a boot that measures fewer I/Os than asked fails the bench,
/// that means a time below the counter's resolution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratio {
    pub round_trip_p50: Option<f64>,
    pub round_trip_p99: Option<f64>,
    pub throughput: Option<f64>,
}

/// `first / second`, if both are positive.
fn ratio(first: f64, second: f64) -> Option<f64> {
    (first > 0.0 && second > 0.0).then(|| first / second)
}

/// The whole report (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Round trips, and bulk frames, each transport did: `rounds` times `iterations_per_round`,
    /// which may be more than asked for.
    pub iterations: usize,
    /// `--iterations`, as asked.
    pub iterations_requested: usize,
    pub iterations_per_round: usize,
    pub size: usize,
    /// Rounds run: a multiple of three, each transport first in a third of them.
    pub rounds: usize,
    /// `--rounds`, as asked.
    pub rounds_requested: usize,
    pub platform: String,
    /// The host and the emulator, which the times belong to.
    pub machine: String,
    pub transports: BTreeMap<String, TransportReport>,
    pub trap_free_over_trap_emulate: Ratio,
    pub trap_free_over_polling: Ratio,
    /// Linux as the driver, trap-free, if it was measured.
    pub linux: Option<linux::Report>,
    /// Linux's trap-free rows over the bare-metal driver's trap-free, and over its
    /// trap-emulate (Linux has no trap-emulate row of its own: `linux.trap_emulate` says why).
    pub linux_over_trap_free: Option<Ratio>,
    pub linux_over_trap_emulate: Option<Ratio>,
}

/// The `fraction` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[u64], fraction: f64) -> u64 {
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// The rounds to run for `rounds` asked (at least one, rounded up to a multiple of the number
/// of transports) and the I/Os per round for `iterations` asked (at least one, rounded up).
fn split(iterations: usize, rounds: usize) -> (usize, usize) {
    let rounds = rounds.max(1).next_multiple_of(Transport::ALL.len());
    (rounds, iterations.div_ceil(rounds).max(1))
}

/// The order the transports boot in, in round `round`: rotated by one each round.
fn order(round: usize) -> [Transport; Transport::ALL.len()] {
    core::array::from_fn(|place| Transport::ALL[(round + place) % Transport::ALL.len()])
}

/// Per-I/O difference between a boot that did `count` I/Os and one that did none.
fn per_io(loaded: u64, idle: u64, count: u64) -> f64 {
    if count == 0 { 0.0 } else { (loaded as f64 - idle as f64) / count as f64 }
}

/// What the machine is: the host's processors and the QEMU version.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let qemu = qemu::installed_version().map_or_else(|_| "QEMU (version unknown)".into(), |(_, line)| line);
    format!("{cpus} host CPUs, {qemu} (TCG: emulated time, not hardware time)")
}

/// Runs the bench, writes `report.json` and one histogram per transport to `options.out`, and
/// returns the report.
pub fn run(options: &Options) -> Result<Report, Error> {
    std::fs::create_dir_all(&options.out).map_err(|error| format!("{}: {error}", options.out.display()))?;
    let (rounds, per_round) = split(options.iterations, options.rounds);
    let check = per_round.min(CHECK_ITERATIONS);
    let total = 2 * Transport::ALL.len() * Workload::ALL.len() + rounds * Transport::ALL.len() * Workload::ALL.len();
    let mut done = 0;
    let mut step = |what: String| {
        done += 1;
        if options.progress {
            eprintln!("bench: [{done:>2}/{total}] {what}");
        }
    };

    // Per transport and workload: a boot without I/O and a short one, both logged by QEMU.
    let mut idle = BTreeMap::new();
    let mut checked = BTreeMap::new();
    for transport in Transport::ALL {
        for workload in Workload::ALL {
            step(format!("{} {}: exits without I/O, then {check} I/Os, cross-checked with QEMU", transport.name(), workload.arg()));
            idle.insert((transport.name(), workload.arg()), boot(options, transport, workload, 0, true)?);
            step(format!("{} {}: {check} I/Os logged", transport.name(), workload.arg()));
            checked.insert((transport.name(), workload.arg()), boot(options, transport, workload, check, true)?);
        }
    }
    // The timed boots, the transports' order rotating each round: over a multiple of three
    // rounds, each transport holds each place equally often.
    let mut timed: BTreeMap<(&str, &str), Vec<Measured>> = BTreeMap::new();
    for round in 0..rounds {
        for workload in Workload::ALL {
            for transport in order(round) {
                step(format!("round {}/{rounds}: {} {} x{per_round}", round + 1, transport.name(), workload.arg()));
                let measured = boot(options, transport, workload, per_round, false)?;
                timed.entry((transport.name(), workload.arg())).or_default().push(measured);
            }
        }
    }

    let mut transports = BTreeMap::new();
    for transport in Transport::ALL {
        let key = |workload: Workload| (transport.name(), workload.arg());
        let (rtt, bulk) = (key(Workload::RoundTrip), key(Workload::Bulk));
        let agree = [&idle[&rtt], &checked[&rtt], &idle[&bulk], &checked[&bulk]]
            .iter()
            .all(|measured| measured.qemu_exits == Some(measured.exits));
        let per_io_over = |key: (&str, &str), value: fn(&Measured) -> u64| {
            let runs = &timed[&key];
            let idle = value(&idle[&key]);
            runs.iter().map(|run| per_io(value(run), idle, per_round as u64)).sum::<f64>() / runs.len() as f64
        };
        let qemu_per_io = |key: (&str, &str)| {
            per_io(checked[&key].qemu_exits.unwrap_or(0), idle[&key].qemu_exits.unwrap_or(0), check as u64)
        };

        let frequency = timed[&rtt][0].frequency.max(1);
        let mut samples: Vec<u64> = timed[&rtt].iter().flat_map(|run| run.samples.iter().copied()).collect();
        samples.sort_unstable();
        let histogram = format!("rtt-{}.svg", transport.name());
        draw_histogram(&options.out.join(&histogram), transport.name(), &samples, frequency)?;
        let round_trip = RoundTrips {
            samples: samples.len(),
            round_trip_ns: Percentiles::of(&samples, frequency),
            exits_per_io: per_io_over(rtt, |run| run.exits),
            exits_per_io_qemu: qemu_per_io(rtt),
            notifications_per_io: per_io_over(rtt, |run| run.notifications),
            histogram,
        };

        let total = timed[&bulk].iter().filter_map(|run| run.bulk).fold(Bulk::default(), |sum, run| Bulk {
            frames: sum.frames + run.frames,
            bytes: sum.bytes + run.bytes,
            ticks: sum.ticks + run.ticks,
        });
        let (bytes, seconds) = (total.bytes, total.ticks as f64 / timed[&bulk][0].frequency.max(1) as f64);
        let stream = Stream {
            frames: total.frames,
            bytes,
            throughput_mib_s: if seconds > 0.0 { bytes as f64 / seconds / f64::from(1 << 20) } else { 0.0 },
            exits_per_io: per_io_over(bulk, |run| run.exits),
            exits_per_io_qemu: qemu_per_io(bulk),
            notifications_per_io: per_io_over(bulk, |run| run.notifications),
        };
        transports.insert(transport.name().to_string(), TransportReport { round_trip, bulk: stream, exits_agree_with_qemu: agree });
    }

    let compare = |first: &TransportReport, second: &TransportReport| Ratio {
        round_trip_p50: ratio(first.round_trip.round_trip_ns.p50, second.round_trip.round_trip_ns.p50),
        round_trip_p99: ratio(first.round_trip.round_trip_ns.p99, second.round_trip.round_trip_ns.p99),
        throughput: ratio(first.bulk.throughput_mib_s, second.bulk.throughput_mib_s),
    };
    let linux = if options.linux {
        let linux = linux::Options {
            iterations: per_round * rounds,
            size: options.size.max(linux::MIN_FRAME),
            platform: options.platform.clone(),
            out: options.out.clone(),
            progress: options.progress,
        };
        Some(linux::run(&linux)?)
    } else {
        None
    };
    let as_transport = |linux: &linux::Report| TransportReport {
        round_trip: linux.round_trip.clone(),
        bulk: linux.bulk.clone(),
        exits_agree_with_qemu: linux.exits_agree_with_qemu,
    };
    let free = &transports["trap-free"];
    let report = Report {
        linux_over_trap_free: linux.as_ref().map(|linux| compare(&as_transport(linux), free)),
        linux_over_trap_emulate: linux.as_ref().map(|linux| compare(&as_transport(linux), &transports["trap-emulate"])),
        linux,
        iterations: rounds * per_round,
        iterations_requested: options.iterations,
        iterations_per_round: per_round,
        size: options.size,
        rounds,
        rounds_requested: options.rounds,
        platform: options.platform.clone().unwrap_or_else(|| "qemu-virt".into()),
        machine: machine(),
        trap_free_over_trap_emulate: compare(free, &transports["trap-emulate"]),
        trap_free_over_polling: compare(free, &transports["polling"]),
        transports,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|error| format!("the report: {error}"))?;
    let path = options.out.join("report.json");
    std::fs::write(&path, json + "\n").map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(report)
}

/// Draws the round trip times of `transport` (`samples`, sorted, in ticks of `frequency`) as a
/// histogram of 60 bins up to the 99th percentile (slower ones in the last bin).
fn draw_histogram(path: &Path, transport: &str, samples: &[u64], frequency: u64) -> Result<(), String> {
    const BINS: usize = 60;
    let micros = |ticks: u64| ticks as f64 * 1e6 / frequency as f64;
    let top = micros(quantile(samples, 0.99)).max(1e-3);
    let width = top / BINS as f64;
    let mut counts = [0u32; BINS];
    for &sample in samples {
        counts[((micros(sample) / width) as usize).min(BINS - 1)] += 1;
    }
    let highest = counts.iter().copied().max().unwrap_or(0).max(1);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let area = SVGBackend::new(path, (800, 480)).into_drawing_area();
        area.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&area)
            .caption(format!("round trip, {transport}: {} samples", samples.len()), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..top, 0u32..highest + highest / 10 + 1)?;
        chart
            .configure_mesh()
            .x_desc("microseconds (emulated time); the last bar holds everything above the 99th percentile")
            .y_desc("round trips")
            .draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(bin, &count)| {
            let left = bin as f64 * width;
            Rectangle::new([(left, 0), (left + width, count)], BLUE.mix(0.7).filled())
        }))?;
        area.present()?;
        Ok(())
    };
    draw().map_err(|error| format!("{}: {error}", path.display()))
}

/// One row of the timed table: a transport's (or Linux's) round trip percentiles in µs,
/// throughput, and exits and notifications per round trip / bulk frame.
fn row(name: &str, rtt: &RoundTrips, bulk: &Stream) -> String {
    let us = |ns: f64| ns / 1000.0;
    format!(
        "{:<13} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>6.2}/{:<6.2} {:>6.2}/{:<6.2}\n",
        name,
        us(rtt.round_trip_ns.p50),
        us(rtt.round_trip_ns.p90),
        us(rtt.round_trip_ns.p99),
        us(rtt.round_trip_ns.max),
        bulk.throughput_mib_s,
        rtt.exits_per_io,
        bulk.exits_per_io,
        rtt.notifications_per_io,
        bulk.notifications_per_io,
    )
}

/// The report as a table, with the ratios under it.
pub fn table(report: &Report) -> String {
    let mut text = format!(
        "{} round trips and {} bulk frames per transport, in {} rounds of {}\n",
        report.iterations, report.iterations, report.rounds, report.iterations_per_round
    );
    text += &format!(
        "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>13} {:>13}\n",
        "transport", "p50 us", "p90 us", "p99 us", "max us", "MiB/s", "exits/io", "notify/io"
    );
    for transport in Transport::ALL {
        let entry = &report.transports[transport.name()];
        text += &row(transport.name(), &entry.round_trip, &entry.bulk);
    }
    let times = |value: Option<f64>| value.map_or("n/a".to_string(), |value| format!("{value:.2}x"));
    let line = |name: &str, ratio: &Ratio| {
        format!(
            "{name}: round trip p50 {}, p99 {}, throughput {}\n",
            times(ratio.round_trip_p50),
            times(ratio.round_trip_p99),
            times(ratio.throughput)
        )
    };
    if let Some(linux) = &report.linux {
        text += &row("linux", &linux.round_trip, &linux.bulk);
    }
    text += "(exits/io and notify/io: round trip / bulk frame)\n";
    text += &line("trap-free / trap-emulate", &report.trap_free_over_trap_emulate);
    text += &line("trap-free / polling", &report.trap_free_over_polling);
    if let (Some(linux), Some(free), Some(emulate)) = (&report.linux, &report.linux_over_trap_free, &report.linux_over_trap_emulate) {
        text += &line("linux (trap-free) / trap-free", free);
        text += &line("linux (trap-free) / trap-emulate", emulate);
        text += &format!("linux, trap-emulate: not measured. {}\n", linux.trap_emulate);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!([0.5, 0.9, 0.99, 1.0].map(|fraction| quantile(&sorted, fraction)), [50, 90, 99, 100]);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn rounds_come_in_threes_so_each_transport_goes_first_equally_often() {
        assert_eq!(split(2000, 4), (6, 334), "the default: 2004 I/Os per transport");
        assert_eq!(split(20, 1), (3, 7));
        assert_eq!(split(21, 3), (3, 7));
        assert_eq!(split(0, 0), (3, 1));
        for rounds in [3, 6, 9] {
            for place in 0..3 {
                for transport in Transport::ALL {
                    let times = (0..rounds).filter(|&round| order(round)[place] == transport).count();
                    assert_eq!(times, rounds / 3, "{} in place {place} over {rounds} rounds", transport.name());
                }
            }
        }
    }

    #[test]
    fn a_ratio_with_nothing_measured_on_either_side_is_none() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!([ratio(0.0, 2.0), ratio(3.0, 0.0), ratio(f64::NAN, 2.0)], [None; 3]);
    }

    #[test]
    fn exits_per_io_subtract_the_boot_without_io() {
        assert_eq!(per_io(4013, 13, 1000), 4.0);
        assert_eq!(per_io(7, 7, 500), 0.0);
        assert_eq!(per_io(7, 7, 0), 0.0);
    }

    #[test]
    fn a_boots_console_reads_into_what_it_measured() {
        let output = "\
trapless: EL2 up on platform qemu-virt (4 CPUs); partitions: 2
bench: workload=rtt iterations=3 size=64 frequency=62500000
bench: samples 100 300 200
bench: rang the device 6 times, took 5 interrupts
bench: bulk frames=2 bytes=3028 ticks=900
[backend] virtio-device: link net0: echoed 3 frames (checksum 0x1), dropped 0; rang the driver 6 times
trapless: exits partition=backend total=5 hvc=4 smc=0 data-abort=0 insn-abort=0 sysreg=1 other=0
trapless: exits partition=bench total=14 hvc=1 smc=0 data-abort=12 insn-abort=0 sysreg=1 other=0
trapless: link net0 transport=mmio-trap reads=3 writes=9 notifies=3 interrupts=6
";
        let run = Run { output: output.into(), stderr: String::new(), status: None, elapsed: Duration::ZERO };
        let measured = Measured::read(&run).unwrap();
        assert_eq!(measured.samples, [100, 300, 200]);
        assert_eq!(measured.bulk, Some(Bulk { frames: 2, bytes: 3028, ticks: 900 }));
        assert_eq!((measured.ios(Workload::RoundTrip), measured.ios(Workload::Bulk)), (3, 2));
        assert_eq!((measured.exits, measured.frequency, measured.notifications), (19, 62_500_000, 6 + 6 + 3));
        let failed = Run { output: "bench: failed: the device side is not ready".into(), ..run };
        assert_eq!(Measured::read(&failed), Err("bench: failed: the device side is not ready".into()));
    }
}
