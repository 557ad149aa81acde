//! `cargo xtask bench --ipi`: what an IPI inside a partition costs against an `hvc` exit, both
//! measured in the same boot (`partitions/systems/bench-ipi.toml`, `probe=ipi`): an IPI is a
//! trapped `ICC_SGI1R_EL1` write that EL2 restricts to the partition's own CPUs, then the
//! interrupt on the other CPU; the `hvc` is PSCI `VERSION`, a call and its return.
//!
//! Three runs: under TCG with the receiving CPU spinning (interrupts on) and asleep in `WFI`
//! (times, noisy on a shared machine: ratios from one boot), and in instruction-counting mode
//! with the receiver asleep (instructions, deterministic: a second boot must count the same).

use super::{quantile, ratio};
use crate::qemu;
use crate::{Error, Target, root, run_system};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// `hvc` exits and IPIs per boot.
    pub iterations: usize,
    pub platform: Option<String>,
    pub out: PathBuf,
    pub progress: bool,
}

/// The system every run boots, with its bootargs replaced.
pub fn system() -> PathBuf {
    root().join("partitions/systems/bench-ipi.toml")
}

/// The bootargs in [`system`] that each run replaces.
const BOOTARGS: &str = "probe=ipi iterations=1000 receiver=spin";
/// How long one boot may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Percentiles of one kind of sample, in nanoseconds of the guest's counter (TCG) or in
/// instructions (counting).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

/// One boot's `hvc` exits and IPIs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    /// `tcg` or `counted`, and how the receiver waited (`spin` or `wfi`).
    pub mode: String,
    pub receiver: String,
    /// Nanoseconds (TCG) or instructions (counted).
    pub unit: String,
    pub samples: usize,
    pub hvc: Spread,
    pub ipi: Spread,
    /// The IPI's p50 over the `hvc` exit's.
    pub ipi_over_hvc: Option<f64>,
    /// System-register exits per IPI (EL2's count, minus the one of start-up): 1 when each IPI
    /// is one trapped write.
    pub sysreg_exits_per_ipi: f64,
}

/// The report (`ipi.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub iterations: usize,
    pub platform: String,
    pub runs: Vec<Run>,
    /// Whether a second counted boot gave the same samples.
    pub counted_repeatable: bool,
}

/// The samples of a boot's console, by kind (`hvc`, `sgi`), in counter ticks.
fn samples(output: &str, kind: &str) -> Result<Vec<u64>, String> {
    let prefix = format!("ipi: {kind} samples ");
    let mut all = Vec::new();
    for line in output.lines().filter_map(|line| line.strip_prefix(prefix.as_str())) {
        for word in line.split_whitespace() {
            all.push(word.parse().map_err(|_| format!("a sample that is no number: {word}"))?);
        }
    }
    Ok(all)
}

fn spread(ticks: &[u64], scale: f64) -> Spread {
    let mut sorted = ticks.to_vec();
    sorted.sort_unstable();
    let at = |fraction: f64| quantile(&sorted, fraction) as f64 * scale;
    Spread { p10: at(0.1), p50: at(0.5), p90: at(0.9) }
}

/// One boot; returns the run and the raw samples (hvc then IPI).
fn boot(options: &Options, receiver: &str, counting: bool) -> Result<(Run, Vec<u64>, Vec<u64>), Error> {
    let mode = if counting { "counted" } else { "tcg" };
    if options.progress {
        eprintln!("bench: ipi x{}, receiver {receiver}, {mode}", options.iterations);
    }
    let text = std::fs::read_to_string(system()).map_err(|error| format!("{}: {error}", system().display()))?;
    if !text.contains(BOOTARGS) {
        return Err(format!("{} does not set the bootargs to \"{BOOTARGS}\"", system().display()).into());
    }
    // A sleeping receiver must be back in WFI before the next IPI; counting, virtual time is
    // instructions, and a shorter gap does.
    let gap = match (receiver, counting) {
        ("wfi", false) => 200,
        ("wfi", true) => 20,
        _ => 20,
    };
    let bootargs = format!("probe=ipi iterations={} receiver={receiver} gap-us={gap}", options.iterations);
    let scratch = options.out.join("systems");
    std::fs::create_dir_all(&scratch).map_err(|error| format!("{}: {error}", scratch.display()))?;
    let path = scratch.join(format!("bench-ipi-{receiver}-{mode}.toml"));
    std::fs::write(&path, text.replace(BOOTARGS, &bootargs)).map_err(|error| format!("{}: {error}", path.display()))?;
    let extra = if counting { qemu::instruction_counting() } else { Vec::new() };
    let (built, run) = run_system(Target { system: &path, platform: options.platform.as_deref() }, &extra, BOOT_TIMEOUT, false)?;
    run.verdict(&built.plan).map_err(|reason| format!("{}: {reason}\n{}", path.display(), run.output))?;
    let frequency = run
        .output
        .lines()
        .find_map(|line| line.strip_prefix("ipi: iterations="))
        .and_then(|line| line.split("frequency=").nth(1))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{}: the partition printed no results\n{}", path.display(), run.output))?;
    let (hvc, ipi) = (samples(&run.output, "hvc")?, samples(&run.output, "sgi")?);
    if hvc.len() != options.iterations || ipi.len() != options.iterations {
        return Err(format!("{}: {} hvc and {} IPI samples of {}\n{}", path.display(), hvc.len(), ipi.len(), options.iterations, run.output).into());
    }
    // Nanoseconds per tick; counting, a nanosecond is an instruction.
    let scale = 1e9 / frequency.max(1) as f64;
    let sysreg: u64 = run.exits().values().map(|exits| exits.sysreg).sum();
    let (hvc_spread, ipi_spread) = (spread(&hvc, scale), spread(&ipi, scale));
    let result = Run {
        mode: mode.into(),
        receiver: receiver.into(),
        unit: if counting { "instructions" } else { "ns" }.into(),
        samples: hvc.len(),
        hvc: hvc_spread,
        ipi: ipi_spread,
        ipi_over_hvc: ratio(ipi_spread.p50, hvc_spread.p50),
        // One write opens the CPU interface (ICC_PMR_EL1), and the last IPI ends the receiver.
        sysreg_exits_per_ipi: sysreg.saturating_sub(2) as f64 / options.iterations as f64,
    };
    Ok((result, hvc, ipi))
}

/// Runs the IPI bench; writes `ipi.json` to `options.out`.
pub fn run(options: &Options) -> Result<Report, Error> {
    std::fs::create_dir_all(&options.out).map_err(|error| format!("{}: {error}", options.out.display()))?;
    let mut runs = Vec::new();
    for receiver in ["spin", "wfi"] {
        runs.push(boot(options, receiver, false)?.0);
    }
    let (counted, hvc, ipi) = boot(options, "wfi", true)?;
    let (_, hvc_again, ipi_again) = boot(options, "wfi", true)?;
    runs.push(counted);
    let report = Report {
        iterations: options.iterations,
        platform: options.platform.clone().unwrap_or_else(|| "qemu-virt".into()),
        runs,
        counted_repeatable: hvc == hvc_again && ipi == ipi_again,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|error| format!("the report: {error}"))?;
    let path = options.out.join("ipi.json");
    std::fs::write(&path, json + "\n").map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(report)
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut text = format!("an IPI inside a partition against an hvc exit, {} of each per boot\n", report.iterations);
    text += &format!("{:<8} {:<9} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}\n", "mode", "receiver", "unit", "hvc p10", "hvc p50", "hvc p90", "ipi p10", "ipi p50", "ipi p90", "ipi/hvc", "exits/ipi");
    for run in &report.runs {
        text += &format!(
            "{:<8} {:<9} {:<13} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>10.2}\n",
            run.mode,
            run.receiver,
            run.unit,
            run.hvc.p10,
            run.hvc.p50,
            run.hvc.p90,
            run.ipi.p10,
            run.ipi.p50,
            run.ipi.p90,
            run.ipi_over_hvc.map_or("n/a".into(), |ratio| format!("{ratio:.2}")),
            run.sysreg_exits_per_ipi
        );
    }
    if !report.counted_repeatable {
        text += "(the counted run is NOT repeatable: a second boot counted otherwise)\n";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_kind_and_spread_by_nearest_rank() {
        let output = "ipi: iterations=3 receiver=wfi frequency=62500000\nipi: hvc samples 80 81\nipi: hvc samples 79\nipi: sgi samples 120 140 130\n";
        assert_eq!(samples(output, "hvc"), Ok(vec![80, 81, 79]));
        assert_eq!(samples(output, "sgi"), Ok(vec![120, 140, 130]));
        assert_eq!(spread(&[120, 140, 130], 16.0), Spread { p10: 1920.0, p50: 2080.0, p90: 2240.0 });
        assert!(samples("ipi: hvc samples 1 x", "hvc").is_err());
    }
}
