//! Helpers shared by the integration tests.

use std::path::PathBuf;
use std::time::Duration;
use trapless_tools::qemu::Run;
use trapless_tools::{Built, Target, run_system};

/// How long a QEMU boot in a test may take before it counts as a hang.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository root.
pub fn root() -> PathBuf {
    trapless_tools::root()
}

/// A system file: `tests/systems/<name>.toml`, or the demo for `"qemu-demo"`.
pub fn system(name: &str) -> PathBuf {
    if name == "qemu-demo" {
        trapless_tools::default_system()
    } else {
        root().join("tests/systems").join(format!("{name}.toml"))
    }
}

/// Builds and boots a system with extra QEMU arguments; panics if it cannot be built or run.
pub fn boot(name: &str, extra: &[&str]) -> (Built, Run) {
    boot_file(&system(name), None, extra)
}

/// Builds and boots the system at `path`, on `platform` if given, with extra QEMU arguments.
pub fn boot_file(path: &std::path::Path, platform: Option<&str>, extra: &[&str]) -> (Built, Run) {
    let extra: Vec<String> = extra.iter().map(|word| word.to_string()).collect();
    match run_system(Target { system: path, platform }, &extra, BOOT_TIMEOUT, false) {
        Ok(result) => result,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

/// Panics with the whole console output if `condition` is false.
#[track_caller]
pub fn check(run: &Run, condition: bool, what: &str) {
    assert!(condition, "{what}\n--- console ---\n{}--- end ---", run.output);
}

pub use trapless_tools::qemu::exceptions_to_el2;

/// What EL2's `trapless: gic-emulation partition=<name> ...` line says of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GicEmulation {
    pub distributor_reads: u64,
    pub distributor_writes: u64,
    pub redistributor_reads: u64,
    pub redistributor_writes: u64,
    pub injected_aborts: u64,
    pub sgi_requests: u64,
    pub cpu_interface: u64,
}

impl GicEmulation {
    /// The data-abort exits these account for: every emulated access and injected abort.
    pub fn data_aborts(&self) -> u64 {
        self.distributor_reads + self.distributor_writes + self.redistributor_reads + self.redistributor_writes + self.injected_aborts
    }

    /// The system-register exits these account for.
    pub fn sysregs(&self) -> u64 {
        self.sgi_requests + self.cpu_interface
    }
}

/// The `gic-emulation` lines of `run`, by partition (absent: it touched none of it).
pub fn gic_emulation(run: &Run) -> std::collections::BTreeMap<String, GicEmulation> {
    let emulation = |counts: trapless_tools::qemu::Counts| GicEmulation {
        distributor_reads: counts.get("distributor-reads"),
        distributor_writes: counts.get("distributor-writes"),
        redistributor_reads: counts.get("redistributor-reads"),
        redistributor_writes: counts.get("redistributor-writes"),
        injected_aborts: counts.get("injected-aborts"),
        sgi_requests: counts.get("sgi-requests"),
        cpu_interface: counts.get("cpu-interface"),
    };
    run.counts("gic-emulation").into_iter().map(|(name, counts)| (name, emulation(counts))).collect()
}

/// Boots `tests/systems/<name>.toml` with each `(from, to)` of `edits` replaced in its text.
/// The edited copy is written to `target/systems/`, as deep below the repository as
/// `tests/systems/`, so that paths in it (`../../target/linux/Image`) still lead where they did.
pub fn boot_edited(name: &str, tag: &str, edits: &[(&str, &str)], extra: &[&str]) -> (Built, Run) {
    let mut text = std::fs::read_to_string(system(name)).unwrap_or_else(|error| panic!("{name}.toml: {error}"));
    for (from, to) in edits {
        assert!(text.contains(from), "{name}.toml has no '{from}'");
        text = text.replace(from, to);
    }
    let dir = root().join("target/systems");
    std::fs::create_dir_all(&dir).expect("target/systems");
    let path = dir.join(format!("{name}-{tag}.toml"));
    std::fs::write(&path, text).expect("write the edited system");
    boot_file(&path, None, extra)
}

/// The lines a Linux partition's `/init` printed, without their `linux: ` prefix (Linux writes
/// straight to its UART, so its lines carry no `[name]` prefix of EL2's).
pub fn linux_lines(run: &Run) -> Vec<&str> {
    run.output.lines().filter_map(|line| line.strip_prefix("linux: ")).collect()
}

/// Whether `/init` printed `line`.
pub fn linux_said(run: &Run, line: &str) -> bool {
    linux_lines(run).contains(&line)
}

/// The MD5 of the first `bytes` bytes of `text` repeated (what `yes <text> | head -c` gives),
/// computed on the host with `md5sum`.
pub fn md5_of_repeated(text: &str, bytes: usize) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let data: Vec<u8> = text.bytes().cycle().take(bytes).collect();
    let mut child = Command::new("md5sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("md5sum runs");
    child.stdin.take().expect("piped").write_all(&data).expect("md5sum reads");
    let output = child.wait_with_output().expect("md5sum finishes");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().expect("a digest").to_string()
}
