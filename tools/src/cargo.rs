//! Building the kernel and the guest images with cargo, for their own targets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel is soft-float: EL2 must never touch a partition's FP/SIMD/SVE registers.
pub const KERNEL_TARGET: &str = "aarch64-unknown-none-softfloat";
/// Partitions are ordinary hard-float code.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
const KERNEL_PACKAGE: &str = "trapless-kernel";
const KERNEL_BINARY: &str = "trapless";

/// Where cross builds go: apart from the host build, so that a build started from inside a
/// host `cargo test` never waits on that test's own build lock.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("cross")
}

fn build(root: &Path, target: &str, packages: &[&str]) -> Result<(), String> {
    crate::setup::ensure_rust_target(root, target)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--target", target, "--target-dir"])
        .arg(target_dir(root))
        // The target flags in .cargo/config.toml (position independence, the linker script)
        // are what make these binaries bootable; RUSTFLAGS from the environment would replace them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command.status().map_err(|error| format!("cannot run cargo: {error}"))?;
    if status.success() { Ok(()) } else { Err(format!("building {} for {target} failed", packages.join(", "))) }
}

/// Builds the kernel and returns its ELF file.
pub fn build_kernel(root: &Path) -> Result<PathBuf, String> {
    build(root, KERNEL_TARGET, &[KERNEL_PACKAGE])?;
    Ok(target_dir(root).join(KERNEL_TARGET).join("release").join(KERNEL_BINARY))
}

/// Builds the named guest crates and returns each one's ELF file.
pub fn build_guests(root: &Path, names: &[String]) -> Result<BTreeMap<String, PathBuf>, String> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let packages: Vec<&str> = names.iter().map(String::as_str).collect();
    build(root, GUEST_TARGET, &packages)?;
    let out = target_dir(root).join(GUEST_TARGET).join("release");
    Ok(names.iter().map(|name| (name.clone(), out.join(name))).collect())
}
