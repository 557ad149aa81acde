//! What a fresh machine lacks, found and (where we can) installed, so that `cargo xtask run`
//! and `cargo xtask test` are the whole set-up.

use std::path::Path;
use std::process::{Command, Stdio};

/// A program trapless needs and the Debian package that has it.
struct HostTool {
    program: &'static str,
    package: &'static str,
}

/// QEMU boots every system.
const QEMU: HostTool = HostTool { program: "qemu-system-aarch64", package: "qemu-system-arm" };
/// dtc checks the generated device trees in the tests.
const DTC: HostTool = HostTool { program: "dtc", package: "device-tree-compiler" };
/// libfuzzer-sys compiles libFuzzer, which is C++, for the fuzz targets.
const CXX: HostTool = HostTool { program: "c++", package: "g++" };
/// Linux partitions' kernel modules are built with the compiler Debian built the kernel with.
const CROSS_GCC: HostTool = HostTool { program: "aarch64-linux-gnu-gcc-12", package: "gcc-aarch64-linux-gnu" };
const MAKE: HostTool = HostTool { program: "make", package: "make" };

/// Whether `program` runs.
pub fn found(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Whether xtask runs as root (then it may install what is missing with apt-get).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Makes sure the host tools are there: installs the missing ones with apt-get when running as
/// root on a Debian-like system, otherwise says what to install.
fn ensure_host_tools(tools: &[HostTool]) -> Result<(), String> {
    let missing: Vec<&HostTool> = tools.iter().filter(|tool| !found(tool.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
    let programs: Vec<&str> = missing.iter().map(|tool| tool.program).collect();
    if !(is_root() && found("apt-get")) {
        return Err(format!(
            "{} not found; install it first (Debian/Ubuntu: sudo apt-get install {})",
            programs.join(" and "),
            packages.join(" ")
        ));
    }
    eprintln!("xtask: installing {} (for {})", packages.join(" "), programs.join(", "));
    let update = Command::new("apt-get").args(["update", "-q"]).status();
    let install = Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&packages).status();
    match (update, install) {
        (Ok(_), Ok(status)) if status.success() && missing.iter().all(|tool| found(tool.program)) => Ok(()),
        _ => Err(format!("apt-get could not install {}", packages.join(" "))),
    }
}

/// Makes sure QEMU is there, for `run`.
pub fn ensure_qemu() -> Result<(), String> {
    ensure_host_tools(&[QEMU])
}

/// Makes sure QEMU, dtc and a C++ compiler are there, for `test`.
pub fn ensure_test_tools() -> Result<(), String> {
    ensure_host_tools(&[QEMU, DTC, CXX])
}

/// Makes sure the arm64 cross compiler and make are there, to build kernel modules for Linux
/// partitions against Debian's headers.
pub fn ensure_module_tools() -> Result<(), String> {
    ensure_host_tools(&[CROSS_GCC, MAKE])
}

/// Makes sure a C++ compiler is there, for `fuzz`.
pub fn ensure_cxx() -> Result<(), String> {
    ensure_host_tools(&[CXX])
}

/// Makes sure rustup has installed `target` for the toolchain `root/rust-toolchain.toml`
/// names (rustup installs a missing toolchain with its targets, but not a missing target of a
/// toolchain it already has).
pub fn ensure_rust_target(root: &Path, target: &str) -> Result<(), String> {
    let output = Command::new("rustc")
        .current_dir(root)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map_err(|error| format!("cannot run rustc: {error}"))?;
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() && Path::new(&libdir).is_dir() {
        return Ok(());
    }
    eprintln!("xtask: adding the Rust target {target}");
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", target])
        .status()
        .map_err(|error| format!("the Rust target {target} is missing and rustup cannot run: {error}"))?;
    if status.success() { Ok(()) } else { Err(format!("rustup could not add the Rust target {target}")) }
}

/// Makes sure the `llvm-tools` component (llvm-objdump, for the kernel's tests) is installed.
pub fn ensure_llvm_tools(root: &Path) -> Result<(), String> {
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["component", "add", "llvm-tools"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|error| format!("cannot run rustup: {error}"))?;
    if status.success() { Ok(()) } else { Err("rustup could not add the llvm-tools component".into()) }
}
