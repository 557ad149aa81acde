//! The host side of trapless, behind `cargo xtask`: reading and checking platform and system
//! descriptions, planning a system, generating each partition's device tree, packing one
//! bootable Image, booting it in QEMU, and benchmarking the I/O transports.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cargo;
pub mod diagnostic;
pub mod doorbell;
pub mod dtb;
pub mod fuzz;
pub mod image;
pub mod link;
pub mod linux;
pub mod pack;
pub mod planner;
pub mod platform;
pub mod profile;
pub mod qemu;
pub mod setup;
pub mod size;
pub mod system;

use diagnostic::Diagnostics;
use planner::SystemPlan;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use system::{ImageRef, System};

/// The repository this tool was built from.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tools/ is inside the repository").to_path_buf()
}

/// The system `cargo xtask run` boots by default.
pub fn default_system() -> PathBuf {
    root().join("partitions/systems/qemu-demo.toml")
}

/// Why a command failed.
#[derive(Debug)]
pub enum Error {
    /// The descriptions are wrong: every problem, with file and line.
    Invalid(Diagnostics),
    /// Building, packing or running failed.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(diagnostics) => write!(f, "{diagnostics}"),
            Self::Failed(message) => writeln!(f, "error: {message}"),
        }
    }
}

impl From<Diagnostics> for Error {
    fn from(diagnostics: Diagnostics) -> Self {
        Self::Invalid(diagnostics)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

/// Which system to build, and on which platform if not its own.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub system: &'a Path,
    pub platform: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The system at `path` on the platform it names.
    pub fn system(path: &'a Path) -> Self {
        Self { system: path, platform: None }
    }
}

/// Checks the target's system and plans it: builds the guest crates it names (their sizes
/// decide whether they fit) and loads every image.
pub fn plan_system(target: Target<'_>) -> Result<SystemPlan, Error> {
    let root = root();
    let system: System = system::load(target.system, &root, target.platform)?;
    let provided = |path: &Path| linux::provides(&root, path);
    let needs_linux = system.partitions.iter().any(|partition| {
        matches!(&partition.image, ImageRef::File(path) if provided(path)) || partition.initrd.as_deref().is_some_and(provided)
    });
    if needs_linux {
        let linux = linux::provide(&root)?;
        if linux.fetched {
            eprintln!("xtask: fetched into {}: {}", linux::dir(&root).display(), linux.versions.replace('\n', ", "));
        }
    }
    let mut guests: Vec<String> = system
        .partitions
        .iter()
        .filter_map(|partition| match &partition.image {
            ImageRef::Guest(name) => Some(name.clone()),
            ImageRef::File(_) => None,
        })
        .collect();
    guests.sort();
    guests.dedup();
    let guest_paths = cargo::build_guests(&root, &guests)?;
    let images = planner::load_images(&system, &guest_paths)?;
    Ok(planner::plan(&system, images)?)
}

/// A packed system.
#[derive(Debug)]
pub struct Built {
    pub plan: SystemPlan,
    /// The bootable Image.
    pub image: PathBuf,
    /// Where the Image and each partition's `<name>.dtb` were written.
    pub dir: PathBuf,
}

/// Plans the target, builds the kernel, packs the Image and writes it, with every partition's
/// device tree, to `target/trapless/<system>/` (`<system>-<platform>` for another platform).
pub fn build_system(target: Target<'_>) -> Result<Built, Error> {
    let plan = plan_system(target)?;
    let root = root();
    let kernel_path = cargo::build_kernel(&root)?;
    let kernel = std::fs::read(&kernel_path).map_err(|error| format!("{}: {error}", kernel_path.display()))?;
    let image = pack::pack(&plan, &kernel)?;
    let folder = match target.platform {
        Some(platform) => format!("{}-{platform}", plan.name),
        None => plan.name.clone(),
    };
    let dir = root.join("target").join("trapless").join(folder);
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    // Write then rename, so that a QEMU reading the previous Image never sees half of the next.
    let write = |path: PathBuf, bytes: &[u8]| {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp-{}-{unique}", std::process::id()));
        std::fs::write(&temporary, bytes)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|error| format!("{}: {error}", path.display()))
            .map(|()| path)
    };
    for partition in &plan.partitions {
        write(dir.join(format!("{}.dtb", partition.name)), &partition.dtb)?;
    }
    let image = write(dir.join("trapless.img"), &image)?;
    Ok(Built { plan, image, dir })
}

/// Builds the target and boots it in QEMU with `extra` arguments, giving up after `timeout`;
/// with `echo`, the console is copied to stdout as it comes.
pub fn run_system(target: Target<'_>, extra: &[String], timeout: Duration, echo: bool) -> Result<(Built, qemu::Run), Error> {
    let built = build_system(target)?;
    setup::ensure_qemu()?;
    qemu::ensure_version(&built.plan.platform)?;
    let command = qemu::command(&built.plan, &built.image, extra)?;
    let run = qemu::run(command, timeout, echo)?;
    Ok((built, run))
}
