//! Fuzzing on the host (`docs/fuzzing.md`): building the libFuzzer targets of `tests/fuzz` (a
//! cargo-fuzz crate) with a stable toolchain, and running one over its committed corpus.
//!
//! cargo-fuzz itself is not needed: [`build`] passes cargo the coverage flags that
//! `cargo fuzz build --sanitizer none` passes, none of which is a nightly `-Z` flag, so the
//! binaries are the same ones, coverage-guided by libFuzzer (which libfuzzer-sys compiles).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fuzz targets, in the order `cargo xtask fuzz` and the tests run them.
pub const TARGETS: [&str; 4] = ["system", "platform", "planner", "ring"];

/// Instrumentation for libFuzzer, as cargo-fuzz 0.13 sets it with `--sanitizer none`: edge
/// counters and their PC table (coverage), comparison tracing (so that the fuzzer learns the
/// constants the code compares against), stack depth, and no folding of branches away.
const COVERAGE_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cllvm-args=-simplifycfg-branch-fold-threshold=0",
    "--cfg",
    "fuzzing",
];

/// The cargo-fuzz crate.
pub fn crate_dir(root: &Path) -> PathBuf {
    root.join("tests").join("fuzz")
}

/// Where its binaries, new corpus entries and crash inputs go: under the ignored `target/`,
/// apart from the host build (a build started from inside `cargo test` never waits on that
/// test's own build lock).
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("fuzz")
}

/// The committed seed corpus of `target`.
pub fn corpus(root: &Path, target: &str) -> PathBuf {
    crate_dir(root).join("corpus").join(target)
}

/// The host's target triple. The fuzz crate is built for it explicitly, so that the coverage
/// flags reach the crates under test but not build scripts and proc macros.
fn host_triple() -> Result<String, String> {
    let output = Command::new("rustc").arg("-vV").output().map_err(|error| format!("cannot run rustc: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| format!("rustc -vV names no host:\n{text}"))
}

/// Builds every fuzz target and returns the folder holding their binaries.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let compiler_found = Command::new("c++").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !compiler_found {
        return Err("libFuzzer is C++: install a C++ compiler (Debian/Ubuntu: apt-get install g++)".into());
    }
    let triple = host_triple()?;
    // The fuzz crate is a workspace of its own: start it from the root's lock file, so that
    // both build the crates under test with the same dependencies (its copy is ignored by git).
    let lock = crate_dir(root).join("Cargo.lock");
    std::fs::copy(root.join("Cargo.lock"), &lock).map_err(|error| format!("{}: {error}", lock.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--bins", "--manifest-path"])
        .arg(crate_dir(root).join("Cargo.toml"))
        .args(["--target", &triple, "--target-dir"])
        .arg(target_dir(root))
        // The encoded form takes precedence over RUSTFLAGS: drop any the caller has.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", COVERAGE_FLAGS.join(" "))
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !status.success() {
        return Err("building the fuzz targets failed".into());
    }
    Ok(target_dir(root).join(triple).join("release"))
}

/// How long to run a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// This many executions (the corpus's own included).
    Runs(u64),
    /// About this long.
    Time(Duration),
}

/// One run of one target.
#[derive(Clone, Debug)]
pub struct Run {
    pub target: String,
    /// libFuzzer exited 0: no crash, leak, timeout or out-of-memory.
    pub passed: bool,
    /// Inputs it saved as failing (`crash-*`, `timeout-*`, ...).
    pub failing_inputs: Vec<PathBuf>,
    /// Executions done, and edges (`cov`) and features (`ft`) covered at the end, from
    /// libFuzzer's last status line.
    pub executions: u64,
    pub coverage: u64,
    pub features: u64,
    pub elapsed: Duration,
    /// Everything libFuzzer printed (when captured).
    pub output: String,
}

/// What [`run`] is told.
#[derive(Clone, Debug)]
pub struct Options {
    pub limit: Limit,
    /// libFuzzer's `-seed`; `None` for a new one each time.
    pub seed: Option<u64>,
    /// Start from the committed corpus alone (deterministic with a seed), keeping what this run
    /// finds apart, rather than from what earlier runs found too.
    pub fresh: bool,
    /// Keep libFuzzer's output (to report it) instead of showing it as it comes.
    pub capture: bool,
    /// More libFuzzer flags (`-max_len=...`, `-jobs=...`).
    pub extra: Vec<String>,
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|entries| entries.flatten().map(|entry| entry.path()).collect()).unwrap_or_default();
    files.sort();
    files
}

/// Runs fuzz target `target` from `binaries` (see [`build`]) over its committed corpus. New
/// inputs go to `target/fuzz/corpus/<target>` (`target/fuzz/fresh/<target>`, emptied first, for
/// a fresh run), failing ones to `target/fuzz/artifacts/<target>`.
pub fn run(root: &Path, binaries: &Path, target: &str, options: &Options) -> Result<Run, String> {
    let found = target_dir(root).join(if options.fresh { "fresh" } else { "corpus" }).join(target);
    let artifacts = target_dir(root).join("artifacts").join(target);
    if options.fresh {
        let _ = std::fs::remove_dir_all(&found);
    }
    for dir in [&found, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    }
    let before = files_in(&artifacts);
    let mut command = Command::new(binaries.join(target));
    // libFuzzer adds what it finds to the first folder only: the committed corpus is read.
    command.current_dir(root).arg(&found).arg(corpus(root, target));
    if let Some(seed) = options.seed {
        command.arg(format!("-seed={seed}"));
    }
    match options.limit {
        Limit::Runs(runs) => command.arg(format!("-runs={runs}")),
        Limit::Time(time) => command.arg(format!("-max_total_time={}", time.as_secs().max(1))),
    };
    // The words of the TOML files help the targets that read them.
    let dictionary = match target {
        "system" | "planner" => Some("system.dict"),
        "platform" => Some("platform.dict"),
        _ => None,
    };
    if let Some(dictionary) = dictionary {
        command.arg(format!("-dict={}", crate_dir(root).join(dictionary).display()));
    }
    // An input that takes 10 s is a hang to fix; so is one that needs 2 GiB.
    command.args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]);
    command.arg(format!("-artifact_prefix={}/", artifacts.display()));
    command.args(&options.extra);
    command.stdin(Stdio::null());

    let start = Instant::now();
    let (status, output) = if options.capture {
        let output = command.output().map_err(|error| format!("cannot run fuzz target {target}: {error}"))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status, text)
    } else {
        // libFuzzer reports on stderr: show it, and keep its summary lines for the report.
        let mut child =
            command.stderr(Stdio::piped()).spawn().map_err(|error| format!("cannot run fuzz target {target}: {error}"))?;
        let mut text = String::new();
        if let Some(stderr) = child.stderr.take() {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                text.push_str(&line);
                text.push('\n');
            }
        }
        let status = child.wait().map_err(|error| format!("fuzz target {target}: {error}"))?;
        (status, text)
    };
    let failing_inputs = files_in(&artifacts).into_iter().filter(|file| !before.contains(file)).collect();
    let (executions, coverage, features) = last_status(&output);
    Ok(Run {
        target: target.to_string(),
        passed: status.success(),
        failing_inputs,
        executions,
        coverage,
        features,
        elapsed: start.elapsed(),
        output,
    })
}

/// Runs fuzz target `target` from `binaries` on `inputs` only (to reproduce a crash), showing
/// its output; returns whether none of them failed.
pub fn reproduce(root: &Path, binaries: &Path, target: &str, inputs: &[PathBuf]) -> Result<bool, String> {
    let status = Command::new(binaries.join(target))
        .current_dir(root)
        .args(inputs)
        .stdin(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run fuzz target {target}: {error}"))?;
    Ok(status.success())
}

/// Executions, `cov` and `ft` from the last libFuzzer status line (`#1234 ... cov: 56 ft: 78`),
/// or from the final statistics when there is no such line.
fn last_status(output: &str) -> (u64, u64, u64) {
    let field = |line: &str, name: &str| -> Option<u64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let mut status = (0, 0, 0);
    for line in output.lines() {
        if let Some(executions) = line.strip_prefix('#').and_then(|rest| rest.split_whitespace().next()?.parse().ok()) {
            status = (executions, field(line, "cov: ").unwrap_or(status.1), field(line, "ft: ").unwrap_or(status.2));
        } else if let Some(executions) = field(line, "stat::number_of_executed_units: ") {
            status.0 = status.0.max(executions);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_status_lines() {
        let output = "INFO: Seed: 7\n#2\tINITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                      #512\tpulse  cov: 40 ft: 61 corp: 9/80b lim: 8 exec/s: 256 rss: 31Mb\n\
                      #1000\tDONE   cov: 44 ft: 70 corp: 11/99b lim: 12 exec/s: 500 rss: 31Mb\n\
                      stat::number_of_executed_units: 1000\n";
        assert_eq!(last_status(output), (1000, 44, 70));
        assert_eq!(last_status("stat::number_of_executed_units: 42\n"), (42, 0, 0));
    }
}
