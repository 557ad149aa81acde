//! `cargo xtask bench --icount`: the bench in QEMU's instruction-counting mode
//! (`qemu::instruction_counting`), where the guest's counter counts the instructions every CPU
//! executed and two runs give the same numbers (`docs/performance.md`). Per transport: the
//! instructions of each round trip (at each queue size asked for, and how flat they are across
//! the ring's positions) and of each bulk frame, the notifications and exits per I/O, and,
//! from `cargo xtask profile`, how an I/O's instructions split between the partitions and EL2.

use super::{How, Measured, Transport, Workload, boot_as, per_io, ratio, system_text};
use crate::Error;
use crate::profile;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Round trips, and bulk frames, per boot.
    pub iterations: usize,
    pub size: usize,
    /// Queue sizes the round trips run at (the first is the bulk's).
    pub queue_sizes: Vec<u16>,
    pub platform: Option<String>,
    pub out: PathBuf,
    /// Also profile each transport and workload for the split by partition and EL2 (two runs
    /// with QEMU's exec log each).
    pub split: bool,
    pub progress: bool,
    /// The transports counted.
    pub transports: Vec<Transport>,
    /// Also count Linux as the driver (`bench::linux`).
    pub linux: bool,
    /// Also count trap-free with the bench's buffers in its own memory, bounced through the
    /// window (`buffers=bounced`), as the stock drivers' own buffers are: round trips at the
    /// first queue size and the bulk stream, without the profile.
    pub bounced: bool,
}

/// The name of the bounced trap-free entry in the report.
pub const BOUNCED: &str = "trap-free, bounced";

/// Instructions of the round trips of one boot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// Round trips at one queue size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundTrips {
    pub queue_size: u16,
    pub samples: usize,
    /// Instructions from the send to the echo taken and its receive buffer given back, all
    /// CPUs and EL2 together (counter ticks times instructions per tick).
    pub instructions: Spread,
    /// The largest over the smallest mean per ring position (index modulo the queue size),
    /// the first pass round the ring left out.
    pub ring_max_over_min: f64,
    pub notifications_per_io: f64,
    pub exits_per_io: f64,
}

/// The bulk stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bulk {
    pub frames: u64,
    /// From the first send to the last echo, over the frames.
    pub instructions_per_frame: f64,
    pub notifications_per_io: f64,
    pub exits_per_io: f64,
}

/// One transport.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counted {
    pub round_trips: Vec<RoundTrips>,
    pub bulk: Bulk,
    /// Whether a second boot of each gave the same counts (samples, exits, notifications).
    pub repeatable: bool,
    /// Instructions per I/O by place (`EL2`, each partition), from the profile: round trip,
    /// then bulk frame (including each workload's own loop).
    pub split_round_trip: Option<Vec<(String, f64)>>,
    pub split_bulk: Option<Vec<(String, f64)>>,
    /// EL2's share of those instructions (round trip, bulk frame).
    pub el2_share: Option<(f64, f64)>,
}

/// The report (`counted.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub iterations: usize,
    pub size: usize,
    pub platform: String,
    pub transports: BTreeMap<String, Counted>,
    /// Trap-free's instructions per round trip (p50, first queue size) over trap-emulate's,
    /// and per bulk frame.
    pub trap_free_over_trap_emulate: Option<f64>,
    /// Linux as the driver, trap-free (its link's queues hold 64).
    pub linux: Option<super::linux::Counted>,
    pub trap_free_over_trap_emulate_bulk: Option<f64>,
}

pub(super) fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    let at = |fraction: f64| values.get(((fraction * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1)) - 1).copied().unwrap_or(0.0);
    let mean = if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
    Spread { p50: at(0.5), min: values.first().copied().unwrap_or(0.0), max: values.last().copied().unwrap_or(0.0), mean }
}

/// The largest over the smallest mean per ring position of `samples`, leaving out the first
/// pass round a ring of `queue_size` (the buffers' first use).
pub fn ring_flatness(samples: &[f64], queue_size: usize) -> f64 {
    let mut sums = vec![(0.0, 0u32); queue_size.max(1)];
    for (index, &sample) in samples.iter().enumerate().skip(queue_size) {
        let slot = &mut sums[index % queue_size.max(1)];
        slot.0 += sample;
        slot.1 += 1;
    }
    let means: Vec<f64> = sums.iter().filter(|(_, count)| *count > 0).map(|(sum, count)| sum / f64::from(*count)).collect();
    let (low, high) = means.iter().fold((f64::MAX, 0.0f64), |(low, high), &mean| (low.min(mean), high.max(mean)));
    if means.is_empty() || low <= 0.0 { 0.0 } else { high / low }
}

/// Runs the counted bench; writes `counted.json` to `options.out`.
pub fn run(options: &Options) -> Result<Report, Error> {
    std::fs::create_dir_all(&options.out).map_err(|error| format!("{}: {error}", options.out.display()))?;
    let first = *options.queue_sizes.first().ok_or_else(|| "no queue size to run at".to_string())?;
    let boot = |transport: Transport, workload: Workload, iterations: usize, queue_size: u16, bounced: bool| {
        if options.progress {
            let buffers = if bounced { ", buffers bounced" } else { "" };
            eprintln!("bench: counting {} {} x{iterations}, queues of {queue_size}{buffers}", transport.name(), workload.arg());
        }
        let how = How { log_exits: false, counting: true, queue_size, bounced };
        boot_as(&options.out, options.platform.as_deref(), options.size, transport, workload, iterations, how)
    };
    let per_instruction = |measured: &Measured| 1e9 / measured.frequency.max(1) as f64;
    let mut variants: Vec<(Transport, bool)> = options.transports.iter().map(|&transport| (transport, false)).collect();
    if options.bounced {
        variants.push((Transport::TrapFree, true));
    }
    let mut transports = BTreeMap::new();
    for (transport, bounced) in variants {
        let mut repeatable = true;
        let mut round_trips = Vec::new();
        let queue_sizes = if bounced { &options.queue_sizes[..1] } else { &options.queue_sizes[..] };
        for &queue_size in queue_sizes {
            let idle = boot(transport, Workload::RoundTrip, 0, queue_size, bounced)?;
            let measured = boot(transport, Workload::RoundTrip, options.iterations, queue_size, bounced)?;
            if queue_size == first {
                let again = boot(transport, Workload::RoundTrip, options.iterations, queue_size, bounced)?;
                repeatable &= again.samples == measured.samples && (again.exits, again.notifications) == (measured.exits, measured.notifications);
            }
            let scale = per_instruction(&measured);
            let instructions: Vec<f64> = measured.samples.iter().map(|&ticks| ticks as f64 * scale).collect();
            let count = measured.samples.len() as u64;
            round_trips.push(RoundTrips {
                queue_size,
                samples: measured.samples.len(),
                instructions: spread(instructions.clone()),
                ring_max_over_min: ring_flatness(&instructions, usize::from(queue_size)),
                notifications_per_io: per_io(measured.notifications, idle.notifications, count),
                exits_per_io: per_io(measured.exits, idle.exits, count),
            });
        }
        let idle = boot(transport, Workload::Bulk, 0, first, bounced)?;
        let measured = boot(transport, Workload::Bulk, options.iterations, first, bounced)?;
        let again = boot(transport, Workload::Bulk, options.iterations, first, bounced)?;
        repeatable &= again.bulk == measured.bulk && (again.exits, again.notifications) == (measured.exits, measured.notifications);
        let stream = measured.bulk.unwrap_or_default();
        let bulk = Bulk {
            frames: stream.frames,
            instructions_per_frame: if stream.frames == 0 { 0.0 } else { stream.ticks as f64 * per_instruction(&measured) / stream.frames as f64 },
            notifications_per_io: per_io(measured.notifications, idle.notifications, stream.frames),
            exits_per_io: per_io(measured.exits, idle.exits, stream.frames),
        };
        let (mut split_round_trip, mut split_bulk) = (None, None);
        if options.split && !bounced {
            for (workload, split) in [(Workload::RoundTrip, &mut split_round_trip), (Workload::Bulk, &mut split_bulk)] {
                let path = options.out.join("systems").join(format!("profile-{}-{}.toml", transport.name(), workload.arg()));
                std::fs::write(&path, system_text(transport, workload, 1, options.size, first, false)?).map_err(|error| format!("{}: {error}", path.display()))?;
                let profiled = profile::run(&profile::Options {
                    system: path,
                    platform: options.platform.clone(),
                    set: Vec::new(),
                    lengths: (20, 60),
                    out: options.out.join("profile").join(format!("{}-{}", transport.name(), workload.arg())),
                    progress: options.progress,
                })?;
                *split = Some(profiled.places);
            }
        }
        let el2_share = split_round_trip.as_deref().zip(split_bulk.as_deref()).map(|(round_trip, bulk)| (el2_share(round_trip), el2_share(bulk)));
        let name = if bounced { BOUNCED.to_string() } else { transport.name().to_string() };
        transports.insert(name, Counted { round_trips, bulk, repeatable, split_round_trip, split_bulk, el2_share });
    }
    let p50 = |name: &str| transports.get(name).and_then(|counted: &Counted| counted.round_trips.first()).map_or(0.0, |trips| trips.instructions.p50);
    let linux = if options.linux {
        let linux = super::linux::Options {
            iterations: options.iterations,
            size: options.size.max(super::linux::MIN_FRAME),
            platform: options.platform.clone(),
            out: options.out.clone(),
            progress: options.progress,
        };
        Some(super::linux::count(&linux)?)
    } else {
        None
    };
    let per_frame = |name: &str| transports.get(name).map_or(0.0, |counted: &Counted| counted.bulk.instructions_per_frame);
    let report = Report {
        linux,
        iterations: options.iterations,
        size: options.size,
        platform: options.platform.clone().unwrap_or_else(|| "qemu-virt".into()),
        trap_free_over_trap_emulate: ratio(p50("trap-free"), p50("trap-emulate")),
        trap_free_over_trap_emulate_bulk: ratio(per_frame("trap-free"), per_frame("trap-emulate")),
        transports,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|error| format!("the report: {error}"))?;
    let path = options.out.join("counted.json");
    std::fs::write(&path, json + "\n").map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(report)
}

/// EL2's instructions over all of them, in a split by place (0 if there are none).
pub fn el2_share(split: &[(String, f64)]) -> f64 {
    let total: f64 = split.iter().map(|(_, value)| value).sum();
    let el2: f64 = split.iter().filter(|(place, _)| place == profile::EL2).map(|(_, value)| value).sum();
    if total > 0.0 { el2 / total } else { 0.0 }
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut text = format!(
        "instructions per I/O, all CPUs and EL2 (QEMU instruction counting, {} I/Os a boot, {}-byte round trips)\n",
        report.iterations, report.size
    );
    text += &format!(
        "{:<19} {:>6} {:>9} {:>9} {:>9} {:>8} {:>10} {:>9}\n",
        "transport", "queue", "rtt p50", "rtt min", "rtt max", "max/min", "notify/io", "exits/io"
    );
    let names = Transport::ALL.iter().map(|transport| transport.name()).chain([BOUNCED]);
    for name in names {
        let Some(entry) = report.transports.get(name) else { continue };
        for trips in &entry.round_trips {
            text += &format!(
                "{:<19} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>8.3} {:>10.2} {:>9.2}\n",
                name,
                trips.queue_size,
                trips.instructions.p50,
                trips.instructions.min,
                trips.instructions.max,
                trips.ring_max_over_min,
                trips.notifications_per_io,
                trips.exits_per_io
            );
        }
        let bulk = &entry.bulk;
        text += &format!(
            "{:<19} {:>6} {:>9.0} per 1514-byte frame {:>17.2} {:>9.2}{}\n",
            name,
            "bulk",
            bulk.instructions_per_frame,
            bulk.notifications_per_io,
            bulk.exits_per_io,
            if entry.repeatable { "" } else { "  (NOT repeatable: a second boot counted otherwise)" }
        );
        for (what, split) in [("round trip", &entry.split_round_trip), ("bulk frame", &entry.split_bulk)] {
            if let Some(split) = split {
                let parts: Vec<String> = split.iter().map(|(place, value)| format!("{place} {value:.0}")).collect();
                text += &format!("{:<19} per {what}, whole loop: {}\n", "", parts.join(", "));
            }
        }
        if let Some((round_trip, bulk)) = entry.el2_share {
            text += &format!("{:<19} EL2's share: {:.1} % of a round trip, {:.1} % of a bulk frame\n", "", 100.0 * round_trip, 100.0 * bulk);
        }
    }
    if let Some(linux) = &report.linux {
        text += &super::linux::counted_rows(linux);
    }
    if let Some(ratio) = report.trap_free_over_trap_emulate {
        text += &format!("trap-free / trap-emulate, instructions per round trip (p50): {ratio:.2}");
        if let Some(bulk) = report.trap_free_over_trap_emulate_bulk {
            text += &format!(", per bulk frame: {bulk:.2}");
        }
        text += "\n";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatness_compares_ring_positions_after_the_first_pass() {
        // A ring of 4: the first pass is slow, then position 3 costs 10 % more.
        let samples = [50.0, 50.0, 50.0, 50.0, 100.0, 100.0, 100.0, 110.0, 100.0, 100.0, 100.0, 110.0];
        assert!((ring_flatness(&samples, 4) - 1.1).abs() < 1e-9);
        assert_eq!(ring_flatness(&[7.0; 3], 4), 0.0, "no second pass: nothing to compare");
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Spread { p50: 2.0, min: 1.0, max: 3.0, mean: 2.0 });
    }

    #[test]
    fn el2s_share_is_its_instructions_over_all_of_them() {
        let split = [("bench".to_string(), 600.0), (profile::EL2.to_string(), 300.0), ("backend".to_string(), 100.0)];
        assert!((el2_share(&split) - 0.3).abs() < 1e-9);
        assert_eq!(el2_share(&[]), 0.0);
    }
}
