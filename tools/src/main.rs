//! `cargo xtask`: check, build, run and test trapless systems.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trapless_tools::size::describe;
use trapless_tools::{Error, Target, build_system, default_system, plan_system, root, run_system};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, check, run and test trapless systems")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a system description and show how it is planned.
    Check {
        /// The system TOML file.
        file: PathBuf,
        /// Plan it for this platform instead of the one it names.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Build a system into one bootable Image (target/trapless/<system>/trapless.img).
    Build {
        /// The system TOML file [default: partitions/systems/qemu-demo.toml].
        #[arg(long)]
        system: Option<PathBuf>,
        /// Build it for this platform instead of the one it names.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Build a system and boot it in QEMU; succeeds only if every partition powers off cleanly.
    Run {
        /// The system TOML file [default: partitions/systems/qemu-demo.toml].
        #[arg(long)]
        system: Option<PathBuf>,
        /// Run it on this platform instead of the one it names (e.g. qemu-virt-gicv4).
        #[arg(long)]
        platform: Option<String>,
        /// Give up (and fail) after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Measure trap-free I/O against trap-and-emulate and polling, side by side
    /// (docs/performance.md); writes target/bench/report.json and a histogram per transport.
    Bench {
        /// Round trips, and bulk frames, per transport.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        /// Bytes of a round trip's frame (1 to 1514).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Boots each transport's share is split over, rounded up to a multiple of three so that
        /// each transport boots first, second and last equally often.
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Run on this platform instead of qemu-virt (e.g. qemu-virt-gicv4).
        #[arg(long)]
        platform: Option<String>,
        /// Count instructions instead of timing (QEMU's instruction-counting mode): per
        /// transport, instructions per round trip at each queue size and per bulk frame,
        /// notifications, exits, and the split by partition and EL2 (writes
        /// target/bench/counted.json). --iterations is then per boot [default there: 512].
        #[arg(long)]
        icount: bool,
        /// With --icount: the queue sizes the round trips run at.
        #[arg(long, value_delimiter = ',', default_values_t = [16u16, 256])]
        queue_sizes: Vec<u16>,
        /// With --icount: leave out the profile of each transport (the split).
        #[arg(long)]
        no_split: bool,
        /// Leave out the Linux rows (Linux as the driver, trap-free: a few Linux boots).
        #[arg(long)]
        no_linux: bool,
        /// Measure an IPI inside a partition against an hvc exit instead, in the same boot,
        /// under TCG and counting instructions (writes target/bench/ipi.json). --iterations is
        /// then per boot [default there: 1000].
        #[arg(long, conflicts_with = "icount")]
        ipi: bool,
    },
    /// Where a system's instructions go per I/O, by function, partition and EL2: two runs in
    /// QEMU's instruction-counting mode, their exec logs streamed and mapped onto the ELF
    /// symbols, the long minus the short (docs/performance.md). Writes target/profile/<system>/
    /// profile.json and flamegraph.svg.
    Profile {
        /// The system TOML file; its partitions with `iterations=` in their bootargs set the run
        /// length [default: partitions/systems/bench-trap-free.toml].
        #[arg(long)]
        system: Option<PathBuf>,
        /// Run it on this platform instead of the one it names.
        #[arg(long)]
        platform: Option<String>,
        /// A bootargs word for those partitions, e.g. `--set workload=bulk` (repeatable).
        #[arg(long)]
        set: Vec<String>,
        /// The short and the long run's iterations.
        #[arg(long, num_args = 2, value_names = ["SHORT", "LONG"], default_values_t = [40, 120])]
        lengths: Vec<u64>,
        /// Functions listed.
        #[arg(long, default_value_t = 30)]
        top: usize,
    },
    /// Run every test: host unit tests, invalid configs, golden device trees, QEMU boots.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        args: Vec<String>,
    },
    /// Fuzz the system and platform checkers, the planner and the device side of static virtio
    /// with libFuzzer (docs/fuzzing.md); new inputs go to target/fuzz/corpus, crashes to
    /// target/fuzz/artifacts.
    Fuzz {
        /// Only this target: system, platform, planner or ring [default: each in turn].
        #[arg(long)]
        target: Option<String>,
        /// Executions per target.
        #[arg(long, conflicts_with = "seconds")]
        runs: Option<u64>,
        /// Seconds per target [default: 60].
        #[arg(long)]
        seconds: Option<u64>,
        /// libFuzzer's random seed [default: a new one each run].
        #[arg(long)]
        seed: Option<u64>,
        /// Run the target on these inputs only (to reproduce a crash) instead of fuzzing.
        #[arg(long, requires = "target")]
        input: Vec<PathBuf>,
        /// More libFuzzer flags, after `--` (e.g. `-- -jobs=2 -max_len=8192`).
        #[arg(last = true)]
        libfuzzer: Vec<String>,
    },
}

/// `cargo xtask fuzz`: builds the targets, then reproduces `inputs` or fuzzes each target in
/// turn, and sums up.
fn fuzz(
    target: Option<String>,
    limit: trapless_tools::fuzz::Limit,
    seed: Option<u64>,
    inputs: Vec<PathBuf>,
    extra: Vec<String>,
) -> Result<ExitCode, Error> {
    use trapless_tools::fuzz::{self, TARGETS};
    let targets: Vec<&str> = match &target {
        Some(wanted) => match TARGETS.iter().find(|known| **known == wanted.as_str()) {
            Some(known) => vec![known],
            None => return Err(Error::Failed(format!("no fuzz target '{wanted}'; the targets are {}", TARGETS.join(", ")))),
        },
        None => TARGETS.to_vec(),
    };
    let root = root();
    trapless_tools::setup::ensure_cxx()?;
    let binaries = fuzz::build(&root)?;
    if !inputs.is_empty() {
        let passed = fuzz::reproduce(&root, &binaries, targets[0], &inputs)?;
        return Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let options = fuzz::Options { limit, seed, fresh: false, capture: false, extra };
    let mut runs = Vec::new();
    for target in targets {
        runs.push(fuzz::run(&root, &binaries, target, &options)?);
    }
    for run in &runs {
        let verdict = if run.passed { "no crash".to_string() } else { format!("FAILED, inputs saved: {:?}", run.failing_inputs) };
        println!(
            "xtask: fuzz target {:<8} {} executions in {:.0?}, cov {} ft {}: {verdict}",
            run.target, run.executions, run.elapsed, run.coverage, run.features
        );
    }
    Ok(if runs.iter().all(|run| run.passed) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(error) => {
            eprint!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Check { file, platform } => {
            let plan = plan_system(Target { system: &file, platform: platform.as_deref() })?;
            println!("{}: system '{}' on platform '{}' is valid", file.display(), plan.name, plan.platform.name);
            println!("  {:<12} {} ({})", "kernel", plan.platform.kernel, describe(plan.platform.kernel.size));
            for partition in &plan.partitions {
                let devices: Vec<&str> =
                    partition.devices.iter().map(|&device| plan.platform.devices[device].name.as_str()).collect();
                let on_stop = match partition.restart_limit {
                    0 => String::new(),
                    limit => format!(", restarts up to {limit} times"),
                };
                let initrd = match partition.initrd_range() {
                    Some(initrd) => format!(", initrd {} at {:#x}", describe(initrd.size.next_multiple_of(1024)), initrd.base.0),
                    None => String::new(),
                };
                let on_fault = match partition.on_fault {
                    trapless_tools::system::OnFault::Stop => "",
                    trapless_tools::system::OnFault::Abort => ", faults become aborts",
                };
                println!(
                    "  {:<12} CPUs {:?}, memory {} ({}), image {} at {:#x}{initrd}, device tree at {:#x}, devices [{}]{on_stop}{on_fault}",
                    partition.name,
                    partition.cpus,
                    partition.memory,
                    describe(partition.memory.size),
                    describe(partition.image.footprint.next_multiple_of(1024)),
                    partition.image_load,
                    partition.dtb_load,
                    devices.join(", ")
                );
            }
            for (index, link) in plan.links.iter().enumerate() {
                let doorbells: Vec<String> = plan
                    .doorbells
                    .iter()
                    .filter_map(|doorbell| Some((doorbell, doorbell.link.filter(|queue| queue.link == index)?)))
                    .map(|(doorbell, queue)| {
                        let by_el2 = if queue.el2_rings { ", rung by EL2" } else { "" };
                        format!("queue {} to {}: event {}, LPI {}{by_el2}", queue.queue, queue.to.name(), doorbell.event, doorbell.lpi)
                    })
                    .collect();
                let transport = match link.emulated {
                    None => link.transport().name().to_string(),
                    Some(emulated) => {
                        format!("{} (registers {}, SPI {})", link.transport().name(), emulated.registers, emulated.spi)
                    }
                };
                println!(
                    "  {:<12} {} link, transport {transport}, window {} ({}), device {}, driver {}, doorbells [{}]",
                    link.name,
                    link.kind.name(),
                    link.window,
                    describe(link.window.size),
                    plan.partitions[link.device].name,
                    plan.partitions[link.driver].name,
                    doorbells.join("; ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { system, platform } => {
            let system = system.unwrap_or_else(default_system);
            let built = build_system(Target { system: &system, platform: platform.as_deref() })?;
            println!("{}", built.image.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { system, platform, timeout } => {
            let system = system.unwrap_or_else(default_system);
            let target = Target { system: &system, platform: platform.as_deref() };
            let (built, run) = run_system(target, &[], Duration::from_secs(timeout), true)?;
            match run.verdict(&built.plan) {
                Ok(()) => {
                    println!(
                        "xtask: all {} partitions of '{}' finished and the machine powered off ({:.1?})",
                        built.plan.partitions.len(),
                        built.plan.name,
                        run.elapsed
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(reason) => Err(Error::Failed(format!("{}: {reason}", built.plan.name))),
            }
        }
        Command::Bench { iterations, size, rounds, platform, icount, queue_sizes, no_split, no_linux, ipi } => {
            if !(1..=1514).contains(&size) {
                return Err(Error::Failed(format!("--size {size}: a frame holds 1 to 1514 bytes")));
            }
            let out = root().join("target").join("bench");
            if ipi {
                let iterations = if iterations == 2000 { 1000 } else { iterations };
                let options = trapless_tools::bench::ipi::Options { iterations, platform, out: out.clone(), progress: true };
                let report = trapless_tools::bench::ipi::run(&options)?;
                print!("{}", trapless_tools::bench::ipi::table(&report));
                println!("xtask: report in {}", out.join("ipi.json").display());
                return Ok(ExitCode::SUCCESS);
            }
            if icount {
                let iterations = if iterations == 2000 { 512 } else { iterations };
                let options = trapless_tools::bench::counted::Options {
                    iterations,
                    size,
                    queue_sizes,
                    platform,
                    out: out.clone(),
                    split: !no_split,
                    progress: true,
                    transports: trapless_tools::bench::Transport::ALL.to_vec(),
                    linux: !no_linux,
                    bounced: true,
                };
                let report = trapless_tools::bench::counted::run(&options)?;
                print!("{}", trapless_tools::bench::counted::table(&report));
                println!("xtask: report in {}", out.join("counted.json").display());
                return Ok(ExitCode::SUCCESS);
            }
            let options = trapless_tools::bench::Options { iterations, size, rounds, platform, out: out.clone(), progress: true, linux: !no_linux };
            let report = trapless_tools::bench::run(&options)?;
            print!("{}", trapless_tools::bench::table(&report));
            println!("xtask: report in {}, histograms beside it", out.join("report.json").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile { system, platform, set, lengths, top } => {
            let system = system.unwrap_or_else(|| root().join("partitions/systems/bench-trap-free.toml"));
            let stem = system.file_stem().and_then(|stem| stem.to_str()).unwrap_or("system").to_string();
            let out = root().join("target").join("profile").join(stem);
            let options = trapless_tools::profile::Options {
                system,
                platform,
                set,
                lengths: (lengths[0], lengths[1]),
                out: out.clone(),
                progress: true,
            };
            let report = trapless_tools::profile::run(&options)?;
            print!("{}", trapless_tools::profile::table(&report, top));
            println!("xtask: profile in {}, flame graph in {}", out.join("profile.json").display(), report.flame_graph);
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { args } => {
            trapless_tools::setup::ensure_test_tools()?;
            trapless_tools::setup::ensure_llvm_tools(&root())?;
            // Before the tests, whose output is captured: say what the Linux tests get.
            match trapless_tools::linux::provide(&root()) {
                Ok(linux) if linux.fetched => {
                    println!("xtask: fetched for the Linux tests: {}", linux.versions.replace('\n', ", "))
                }
                Ok(_) => {}
                Err(error) => eprintln!("xtask: the Linux tests will fail: {error}"),
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(root())
                .arg("test")
                .args(&args)
                .status()
                .map_err(|error| format!("cannot run cargo test: {error}"))?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Fuzz { target, runs, seconds, seed, input, libfuzzer } => {
            let limit = match runs {
                Some(runs) => trapless_tools::fuzz::Limit::Runs(runs),
                None => trapless_tools::fuzz::Limit::Time(Duration::from_secs(seconds.unwrap_or(60))),
            };
            fuzz(target, limit, seed, input, libfuzzer)
        }
    }
}
