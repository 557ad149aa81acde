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
