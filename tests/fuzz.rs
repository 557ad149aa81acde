//! The fuzz targets (`docs/fuzzing.md`): each runs for a short fixed number of executions with a
//! fixed seed over its committed corpus. A crash, leak, hang or out-of-memory is a failure that
//! names the input libFuzzer saved.

use trapless_tools::fuzz::{self, Limit, Options, TARGETS};

/// Executions per target: a few seconds each on a 2-core machine.
const RUNS: [(&str, u64); 4] = [("system", 30_000), ("platform", 30_000), ("planner", 30_000), ("ring", 200_000)];
/// libFuzzer's seed, so that a run does the same executions every time.
const SEED: u64 = 7;

#[test]
fn every_fuzz_target_survives_a_short_run() {
    let root = trapless_tools::root();
    let binaries = fuzz::build(&root).unwrap_or_else(|error| panic!("{error}"));
    let mut failures = Vec::new();
    for target in TARGETS {
        let runs = RUNS.iter().find(|(name, _)| *name == target).map_or(10_000, |&(_, runs)| runs);
        let options = Options { limit: Limit::Runs(runs), seed: Some(SEED), fresh: true, capture: true, extra: Vec::new() };
        let run = fuzz::run(&root, &binaries, target, &options).unwrap_or_else(|error| panic!("{error}"));
        println!(
            "fuzz target {target}: {} executions in {:.1?}, cov {} ft {}",
            run.executions, run.elapsed, run.coverage, run.features
        );
        if !run.passed {
            let reproduce: Vec<String> = run
                .failing_inputs
                .iter()
                .map(|input| format!("  cargo xtask fuzz --target {target} --input {}\n", input.display()))
                .collect();
            // libFuzzer's report (the panic, the input's bytes) is at the end.
            let lines: Vec<&str> = run.output.lines().collect();
            let report = lines[lines.len().saturating_sub(60)..].join("\n");
            failures.push(format!(
                "fuzz target {target} failed after {} executions; reproduce with\n{}libFuzzer said (last lines):\n{report}\n",
                run.executions,
                if reproduce.is_empty() { "  (libFuzzer saved no input)\n".to_string() } else { reproduce.concat() },
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
