//! A system description (`partitions/systems/*.toml`): its schema, and the checks that turn it
//! into a [`System`]. Every problem is reported at once, each with its file and line, naming
//! the partitions (and ranges) involved.

use crate::diagnostic::{Diagnostic, Diagnostics, Source};
use crate::doorbell::{self, Doorbell, DoorbellToml};
use crate::link::{self, Link, LinkToml};
use crate::platform::{self, Platform};
use crate::size::{Bytes, describe};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use trapless_plan::{AddrRange, MAX_PARTITIONS, NAME_CAPACITY};

/// Partition RAM is placed and sized in 2 MiB blocks (arm64 Images load at 2 MiB boundaries).
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// Most bytes of `bootargs`.
pub const MAX_BOOTARGS: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SystemToml {
    platform: Spanned<String>,
    #[serde(default)]
    partition: Vec<Spanned<PartitionToml>>,
    #[serde(default)]
    doorbell: Vec<Spanned<DoorbellToml>>,
    #[serde(default)]
    link: Vec<Spanned<LinkToml>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct PartitionToml {
    name: Spanned<String>,
    cpus: Spanned<Vec<Spanned<i64>>>,
    memory: Spanned<MemoryToml>,
    image: Spanned<String>,
    #[serde(default)]
    devices: Vec<Spanned<String>>,
    initrd: Option<Spanned<String>>,
    bootargs: Option<Spanned<String>>,
    #[serde(default)]
    on_stop: OnStop,
    #[serde(default)]
    on_fault: OnFault,
    restart_limit: Option<Spanned<i64>>,
}

/// What EL2 does when a partition stops by a fault or PSCI `SYSTEM_RESET` (a `SYSTEM_OFF` is a
/// finish, and always halts it).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnStop {
    /// It stays stopped.
    #[default]
    Halt,
    /// It is loaded afresh and started again, at most `restart-limit` times.
    Restart,
}

/// What a stage-2 fault outside the partition's map (one EL2 does not emulate) does to it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnFault {
    /// EL2 stops the partition, with a report (then `on-stop` applies).
    #[default]
    Stop,
    /// EL2 reports it and injects a synchronous external abort into the partition at EL1, so a
    /// guest that probes, or a driver that touches a missing device, can handle it.
    Abort,
}

impl OnFault {
    /// The plan's policy.
    pub fn plan(self) -> trapless_plan::OnFault {
        match self {
            Self::Stop => trapless_plan::OnFault::Stop,
            Self::Abort => trapless_plan::OnFault::Abort,
        }
    }
}

/// How many times a partition with `on-stop = "restart"` restarts unless it says otherwise.
pub const DEFAULT_RESTART_LIMIT: u16 = 3;
/// The most restarts a partition may ask for.
pub const MAX_RESTART_LIMIT: u16 = 1000;

/// `memory = "64MiB"` or `memory = { size = "64MiB", base = 0x5000_0000 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryToml {
    pub size: u64,
    pub base: Option<u64>,
}

impl<'de> Deserialize<'de> for MemoryToml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Placed {
            size: Bytes,
            base: Option<Bytes>,
        }

        struct MemoryVisitor;

        impl<'de> Visitor<'de> for MemoryVisitor {
            type Value = MemoryToml;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64MiB\", or a table { size = ..., base = ... }")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<MemoryToml, E> {
                let size = u64::try_from(value).map_err(|_| E::custom(crate::size::negative(value)))?;
                Ok(MemoryToml { size, base: None })
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<MemoryToml, E> {
                let size = crate::size::parse_size(value).map_err(E::custom)?;
                Ok(MemoryToml { size, base: None })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MemoryToml, A::Error> {
                let placed = Placed::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MemoryToml { size: placed.size.0, base: placed.base.map(|base| base.0) })
            }
        }

        deserializer.deserialize_any(MemoryVisitor)
    }
}

/// What a partition runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A guest crate under `partitions/` (its binary has the same name).
    Guest(String),
    /// An ELF file or a raw arm64 Image.
    File(PathBuf),
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guest(name) => write!(f, "guest '{name}'"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A checked partition.
#[derive(Clone, Debug)]
pub struct Partition {
    pub name: String,
    /// Line of its `name`, for later diagnostics.
    pub line: usize,
    /// Platform CPU indexes; the first is the boot CPU.
    pub cpus: Vec<usize>,
    pub memory: MemoryToml,
    pub image: ImageRef,
    /// Its initial RAM disk, a file loaded into its RAM and named in its device tree's
    /// `/chosen`.
    pub initrd: Option<PathBuf>,
    /// Platform device indexes.
    pub devices: Vec<usize>,
    pub bootargs: String,
    /// How many times EL2 restarts it after a fault or `SYSTEM_RESET` (0: `on-stop = "halt"`).
    pub restart_limit: u16,
    pub on_fault: OnFault,
}

/// A checked system.
#[derive(Clone, Debug)]
pub struct System {
    /// The file it came from.
    pub path: PathBuf,
    pub platform: Platform,
    pub partitions: Vec<Partition>,
    pub doorbells: Vec<Doorbell>,
    pub links: Vec<Link>,
}

impl System {
    /// The system's name: its file name without `.toml`.
    pub fn name(&self) -> String {
        self.path.file_stem().map_or_else(|| "system".into(), |stem| stem.to_string_lossy().into_owned())
    }

    /// A diagnostic about partition `index`.
    pub fn error(&self, index: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic { path: self.path.clone(), line: Some(self.partitions[index].line), message: message.into() }
    }
}

/// Reads and checks the system description at `path`; `root` is the repository (for
/// `platform/` and `partitions/`). `platform`, if given, replaces the platform the file names
/// (to run one system on several boards).
pub fn load(path: &Path, root: &Path, platform: Option<&str>) -> Result<System, Diagnostics> {
    load_text(path, Source::read(path)?.text, root, platform)
}

/// Checks the system description `text` as [`load`] checks the file at `path` (the fuzz targets
/// give text that no file holds).
pub fn load_text(path: &Path, text: String, root: &Path, platform: Option<&str>) -> Result<System, Diagnostics> {
    let source = Source { path: path.to_path_buf(), text };
    let raw: SystemToml = toml::from_str(&source.text).map_err(|error| source.toml_error(&error))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let platform_name = platform.unwrap_or(raw.platform.get_ref());
    let platform_path = platform::locate(root, base, platform_name);
    if !platform_path.is_file() {
        let message = if platform_name.ends_with(".toml") {
            format!("platform file '{platform_name}' does not exist ({} is not a file)", platform_path.display())
        } else {
            format!(
                "platform '{platform_name}' is not a folder under platform/ with a platform.toml ({} does not exist)",
                platform_path.display()
            )
        };
        return Err(source.error(&raw.platform.span(), message).into());
    }
    let platform = platform::load(&platform_path)?;
    check(&source, raw, platform, root)
}

fn check(source: &Source, raw: SystemToml, platform: Platform, root: &Path) -> Result<System, Diagnostics> {
    let mut problems: Vec<Diagnostic> = Vec::new();
    let at = |span: &Range<usize>, message: String| source.error(span, message);
    let line = |span: &Range<usize>| source.line(span);
    let platform_name = &platform.name;

    if raw.partition.is_empty() {
        problems.push(Diagnostic { path: source.path.clone(), line: None, message: "the system has no [[partition]]".into() });
    }
    if raw.partition.len() > MAX_PARTITIONS {
        problems.push(Diagnostic {
            path: source.path.clone(),
            line: Some(line(&raw.partition[MAX_PARTITIONS].span())),
            message: format!("a system has at most {MAX_PARTITIONS} partitions, this one has {}", raw.partition.len()),
        });
    }

    // Who claimed what first: (partition index, partition name, line). The index tells a
    // partition listing something twice from two partitions that share a name.
    let mut names: Vec<(&str, usize)> = Vec::new();
    let mut cpu_owner: Vec<Option<(usize, &str, usize)>> = vec![None; platform.cpus.len()];
    let mut device_owner: Vec<Option<(usize, &str, usize)>> = vec![None; platform.devices.len()];
    let mut placed: Vec<(&str, usize, AddrRange)> = Vec::new();
    let mut partitions = Vec::new();

    for (position, spanned) in raw.partition.iter().enumerate() {
        let partition = spanned.get_ref();
        let name = partition.name.get_ref().as_str();
        let name_span = partition.name.span();

        if let Some(&(_, first)) = names.iter().find(|(other, _)| *other == name) {
            problems.push(at(&name_span, format!("partition name '{name}' is used twice (first at line {first})")));
        } else if !valid_name(name) {
            problems.push(at(
                &name_span,
                format!(
                    "partition name '{name}' must be 1 to {NAME_CAPACITY} characters of a-z, 0-9 and '-', starting with a letter"
                ),
            ));
        }
        names.push((name, line(&name_span)));

        // CPUs.
        let mut cpus = Vec::new();
        if partition.cpus.get_ref().is_empty() {
            problems.push(at(&partition.cpus.span(), format!("partition '{name}' has no CPU")));
        }
        for cpu in partition.cpus.get_ref() {
            let index = *cpu.get_ref();
            let Some(slot) = usize::try_from(index).ok().and_then(|index| cpu_owner.get_mut(index)) else {
                problems.push(at(
                    &cpu.span(),
                    format!(
                        "partition '{name}' asks for CPU {index}, but platform '{platform_name}' has CPUs 0 to {}",
                        platform.cpus.len() - 1
                    ),
                ));
                continue;
            };
            match *slot {
                Some((owner_position, _, owner_line)) if owner_position == position => {
                    problems.push(at(&cpu.span(), format!("partition '{name}' lists CPU {index} twice (line {owner_line})")));
                }
                Some((_, owner, owner_line)) => problems.push(at(
                    &cpu.span(),
                    format!("CPU {index} of partition '{name}' is already given to partition '{owner}' (line {owner_line})"),
                )),
                None => {
                    *slot = Some((position, name, line(&cpu.span())));
                    cpus.push(index as usize);
                }
            }
        }

        // Devices.
        let mut devices = Vec::new();
        for device in &partition.devices {
            let device_name = device.get_ref();
            // "console" names the platform's console UART, whatever the board calls it, so that
            // a system that shares it with EL2 builds for any platform.
            let console = (device_name == CONSOLE_DEVICE).then_some(platform.console).flatten();
            let Some(index) = platform.device(device_name).or(console) else {
                let known: Vec<&str> = platform.devices.iter().map(|device| device.name.as_str()).collect();
                problems.push(at(
                    &device.span(),
                    format!(
                        "partition '{name}' asks for device '{device_name}', which platform '{platform_name}' does not have (it has: {})",
                        known.join(", ")
                    ),
                ));
                continue;
            };
            match device_owner[index] {
                Some((owner_position, _, owner_line)) if owner_position == position => problems.push(at(
                    &device.span(),
                    format!("partition '{name}' lists device '{device_name}' twice (line {owner_line})"),
                )),
                Some((_, owner, owner_line)) => problems.push(at(
                    &device.span(),
                    format!("device '{device_name}' of partition '{name}' is already given to partition '{owner}' (line {owner_line})"),
                )),
                None => {
                    device_owner[index] = Some((position, name, line(&device.span())));
                    devices.push(index);
                }
            }
        }

        // Memory: size and alignment, and where an explicit base puts it.
        let memory = *partition.memory.get_ref();
        let memory_span = partition.memory.span();
        if memory.size == 0 {
            problems.push(at(&memory_span, format!("memory of partition '{name}' has size 0")));
        } else if memory.size % MEMORY_ALIGN != 0 {
            problems.push(at(
                &memory_span,
                format!(
                    "memory of partition '{name}' is {} ({:#x} bytes), not a multiple of 2 MiB",
                    describe(memory.size),
                    memory.size
                ),
            ));
        }
        if let Some(base) = memory.base {
            let range = AddrRange::new(base, memory.size);
            if base % MEMORY_ALIGN != 0 {
                problems.push(at(&memory_span, format!("memory of partition '{name}' starts at {}, not on a 2 MiB boundary", range.base)));
            }
            if memory.size != 0 {
                if !platform.ram.contains_range(&range) {
                    problems.push(at(
                        &memory_span,
                        format!("memory of partition '{name}' {range} is outside the RAM of platform '{platform_name}' {}", platform.ram),
                    ));
                }
                if range.overlaps(&platform.kernel) {
                    problems.push(at(
                        &memory_span,
                        format!("memory of partition '{name}' {range} overlaps the kernel's region {}", platform.kernel),
                    ));
                }
                for (what, mmio) in platform.mmio() {
                    if range.overlaps(&mmio) {
                        problems.push(at(&memory_span, format!("memory of partition '{name}' {range} overlaps {what} {mmio}")));
                    }
                }
                for &(other, other_line, other_range) in &placed {
                    if range.overlaps(&other_range) {
                        problems.push(at(
                            &memory_span,
                            format!("memory of partition '{name}' {range} overlaps partition '{other}' {other_range} (line {other_line})"),
                        ));
                    }
                }
                placed.push((name, line(&memory_span), range));
            }
        }

        // Image.
        let image_text = partition.image.get_ref();
        let base = source.path.parent().unwrap_or(Path::new("."));
        let image = resolve_image(base, image_text);
        let exists = match &image {
            // A guest is a binary crate: the runtime and the ABI crate beside it are not.
            ImageRef::Guest(guest) => root.join("partitions").join(guest).join("src/main.rs").is_file(),
            ImageRef::File(path) => path.is_file() || crate::linux::provides(root, path),
        };
        if !exists {
            problems.push(at(
                &partition.image.span(),
                format!("image '{image_text}' of partition '{name}' is neither a guest under partitions/ nor a file"),
            ));
        }

        let initrd = partition.initrd.as_ref().map(|initrd| {
            let path = base.join(initrd.get_ref());
            if !path.is_file() && !crate::linux::provides(root, &path) {
                problems.push(at(
                    &initrd.span(),
                    format!("initrd '{}' of partition '{name}' is not a file ({} does not exist)", initrd.get_ref(), path.display()),
                ));
            }
            path
        });

        let bootargs = partition.bootargs.as_ref().map_or(String::new(), |bootargs| bootargs.get_ref().clone());
        if let Some(spanned_bootargs) = &partition.bootargs
            && (bootargs.len() > MAX_BOOTARGS || bootargs.contains('\0'))
        {
            problems.push(at(
                &spanned_bootargs.span(),
                format!("bootargs of partition '{name}' must be at most {MAX_BOOTARGS} bytes without NUL"),
            ));
        }

        let restart_limit = match (partition.on_stop, &partition.restart_limit) {
            (OnStop::Halt, None) => 0,
            (OnStop::Halt, Some(limit)) => {
                problems.push(at(
                    &limit.span(),
                    format!("partition '{name}' sets restart-limit, but it does not restart: add on-stop = \"restart\""),
                ));
                0
            }
            (OnStop::Restart, None) => DEFAULT_RESTART_LIMIT,
            (OnStop::Restart, Some(limit)) => match u16::try_from(*limit.get_ref()) {
                Ok(value @ 1..=MAX_RESTART_LIMIT) => value,
                _ => {
                    problems.push(at(
                        &limit.span(),
                        format!("restart-limit of partition '{name}' is {}, not 1 to {MAX_RESTART_LIMIT}", limit.get_ref()),
                    ));
                    0
                }
            },
        };

        partitions.push(Partition {
            name: name.to_string(),
            line: line(&name_span),
            cpus,
            memory,
            image,
            initrd,
            devices,
            bootargs,
            restart_limit,
            on_fault: partition.on_fault,
        });
    }

    let doorbells = doorbell::check(source, &raw.doorbell, &partitions, &platform, &mut problems);
    let links = link::check(source, &raw.link, &partitions, &platform, &mut problems);
    // EL2 plays the driver of an emulated link and keeps its registers across either side's
    // life, so it could not follow a side that starts again.
    for link in links.iter().filter(|link| link.transport == link::Transport::MmioTrap) {
        for (role, index) in [("device", link.device), ("driver", link.driver)] {
            let partition = &partitions[index];
            if partition.restart_limit != 0 {
                problems.push(Diagnostic {
                    path: source.path.clone(),
                    line: Some(link.line),
                    message: format!(
                        "link '{}' uses transport \"mmio-trap\", but its {role} '{}' restarts (on-stop = \"restart\", line {}): EL2's emulation cannot follow a restart",
                        link.name, partition.name, partition.line
                    ),
                });
            }
        }
    }

    if problems.is_empty() {
        Ok(System { path: source.path.clone(), platform, partitions, doorbells, links })
    } else {
        // In file order, as a reader goes through the file.
        problems.sort_by_key(|problem| problem.line);
        Err(Diagnostics(problems))
    }
}

/// The device name that stands for the platform's console UART (`console` in platform.toml).
pub const CONSOLE_DEVICE: &str = "console";

/// A partition name trapless accepts: it appears in device trees, file names and console lines.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= NAME_CAPACITY
        && chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `image = "hello"` names a guest crate; anything with a `/` or a `.` is a path, relative to
/// the system file.
fn resolve_image(base: &Path, image: &str) -> ImageRef {
    if image.contains('/') || image.contains('.') {
        ImageRef::File(base.join(image))
    } else {
        ImageRef::Guest(image.to_string())
    }
}
