//! `platform/<board>/platform.toml`: the facts of one board, checked into a [`Platform`].

use crate::diagnostic::{Diagnostic, Diagnostics, Source};
use crate::size::Bytes;
use crate::system::valid_name;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;
use trapless_plan::{AddrRange, EMULATED_REGISTERS_SIZE, MPIDR_AFFINITY_MASK, NAME_CAPACITY};

mod its;
pub use its::{DoorbellPath, GITS_TRANSLATER, ITS_TRANSLATION_FRAME, Its, MAX_DOORBELL_DEVICE, no_path};
pub use trapless_plan::FirmwareRam;

/// A base address and a size.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeToml {
    pub base: Bytes,
    pub size: Bytes,
}

impl RangeToml {
    pub fn range(&self) -> AddrRange {
        AddrRange::new(self.base.0, self.size.0)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct PlatformToml {
    name: Spanned<String>,
    ram: Spanned<RangeToml>,
    /// Whether the firmware's RAM is exactly `ram` (the default) or may be more.
    firmware_ram: Option<FirmwareRamToml>,
    kernel: Spanned<RangeToml>,
    psci_conduit: Spanned<String>,
    console: Option<Spanned<String>>,
    qemu: Option<Qemu>,
    gic: GicToml,
    timer: TimerToml,
    cpu: Spanned<Vec<Spanned<CpuToml>>>,
    #[serde(default)]
    clock: Vec<Spanned<Clock>>,
    #[serde(default)]
    device: Vec<Spanned<DeviceToml>>,
    emulation: Option<EmulationToml>,
}

/// `firmware-ram`: `"exact"` or `"at-least"`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FirmwareRamToml {
    Exact,
    AtLeast,
}

/// How `cargo xtask run` starts this platform in QEMU.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Qemu {
    /// `-M` value.
    pub machine: String,
    /// `-cpu` value.
    pub cpu: String,
    /// The oldest QEMU that emulates what `machine` asks for (e.g. `"7.0"` for GICv4).
    pub minimum_version: Option<QemuVersion>,
}

/// A QEMU release: `major.minor[.micro]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct QemuVersion(pub [u32; 3]);

impl TryFrom<String> for QemuVersion {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let numbers: Option<Vec<u32>> = parts.iter().map(|part| part.parse().ok()).collect();
        match numbers.as_deref() {
            Some(&[major, minor]) => Ok(Self([major, minor, 0])),
            Some(&[major, minor, micro]) => Ok(Self([major, minor, micro])),
            _ => Err(format!("\"{text}\" is not a QEMU version (write e.g. \"7.0\" or \"7.2.1\")")),
        }
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [major, minor, micro] = self.0;
        write!(f, "{major}.{minor}.{micro}")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct GicToml {
    version: Spanned<u32>,
    distributor: Spanned<RangeToml>,
    redistributors: Spanned<RangeToml>,
    redistributor_stride: Spanned<Bytes>,
    its: Option<Spanned<RangeToml>>,
    /// INTID bits the GIC implements (`GICD_TYPER.IDbits` + 1): LPIs go up to 2^n - 1.
    lpi_id_bits: Option<Spanned<u8>>,
    /// EventID bits the ITS implements (`GITS_TYPER.IDbits` + 1).
    its_event_bits: Option<Spanned<u8>>,
    /// How a CPU's store reaches the ITS's translation, and the DeviceID it carries (SoC-specific).
    doorbell_path: Option<Spanned<its::DoorbellPathToml>>,
    /// Whether the GIC's own table reads and writes snoop the CPUs' caches (default true).
    snoops: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TimerToml {
    /// PPI numbers (INTID - 16): secure physical, non-secure physical, virtual, hypervisor.
    interrupts: Spanned<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CpuToml {
    mpidr: u64,
}

/// A fixed clock that devices reference.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Clock {
    pub name: String,
    pub frequency: u32,
    /// `clock-output-names`, if the board's own tree gives one.
    pub output_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct DeviceToml {
    name: String,
    /// The device-tree node name (`serial`, `rtc`, ...); the unit address is added.
    node: String,
    compatible: Vec<String>,
    reg: RangeToml,
    #[serde(default)]
    interrupts: Vec<InterruptToml>,
    #[serde(default)]
    clocks: Vec<String>,
    #[serde(default)]
    clock_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct InterruptToml {
    spi: u32,
    trigger: Trigger,
}

/// `[emulation]`: where trapless may put devices that EL2 emulates.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct EmulationToml {
    /// Guest-physical pages with nothing behind them, for emulated register blocks.
    mmio: Spanned<RangeToml>,
    /// SPIs wired to nothing, that EL2 may raise.
    spis: Spanned<SpisToml>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SpisToml {
    /// SPI number (INTID - 32).
    first: u32,
    count: u32,
}

/// How an SPI is signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    LevelHigh,
    EdgeRising,
}

/// The GIC of the board.
#[derive(Clone, Debug)]
pub struct Gic {
    /// 3 or 4.
    pub version: u32,
    pub distributor: AddrRange,
    /// The redistributor region: one frame per CPU, in CPU order.
    pub redistributors: AddrRange,
    pub redistributor_stride: u64,
    pub its: Option<Its>,
    /// Whether the GIC reads and writes its tables coherently with the CPUs' caches (RK3588,
    /// erratum 3588001: no).
    pub snoops: bool,
}

impl Gic {
    /// How CPU stores reach the ITS, if there is an ITS and they do.
    pub fn doorbell_path(&self) -> Option<DoorbellPath> {
        self.its.and_then(|its| its.path)
    }
}

/// Bytes of one redistributor frame (RD, SGI, ...).
pub const REDISTRIBUTOR_FRAME: u64 = 0x1_0000;

impl Gic {
    /// The RD frame of CPU `cpu`: control, and the LPI table registers.
    pub fn rd_frame(&self, cpu: usize) -> AddrRange {
        AddrRange::new(self.redistributors.base.0 + cpu as u64 * self.redistributor_stride, REDISTRIBUTOR_FRAME)
    }

    /// The SGI frame of CPU `cpu`: its SGIs' and PPIs' configuration.
    pub fn sgi_frame(&self, cpu: usize) -> AddrRange {
        let rd = self.rd_frame(cpu);
        AddrRange::new(rd.end(), REDISTRIBUTOR_FRAME)
    }
}

/// A shared peripheral interrupt of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// SPI number (INTID - 32).
    pub spi: u32,
    pub trigger: Trigger,
}

/// A device that can be passed through to a partition.
#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub node: String,
    pub compatible: Vec<String>,
    pub reg: AddrRange,
    pub interrupts: Vec<Interrupt>,
    /// Indexes into [`Platform::clocks`], with their `clock-names`.
    pub clocks: Vec<usize>,
    pub clock_names: Vec<String>,
}

/// Where EL2 emulates devices for partitions (the register blocks of `mmio-trap` links): an
/// address range no partition has anything at, and SPIs no device raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emulation {
    /// Whole pages, clear of RAM, the GIC and every device.
    pub mmio: AddrRange,
    /// SPI numbers (INTID - 32) `first_spi..first_spi + spi_count`, all below [`SPI_LIMIT`].
    pub first_spi: u32,
    pub spi_count: u32,
}

impl Emulation {
    /// The register block and the SPI of emulated device number `index`: the `index`-th page
    /// of the range and the `index`-th SPI, if the range and the SPIs reach that far.
    pub fn slot(&self, index: usize) -> Option<(AddrRange, u32)> {
        if index >= self.capacity() {
            return None;
        }
        let base = self.mmio.base.0.checked_add(index as u64 * EMULATED_REGISTERS_SIZE)?;
        Some((AddrRange::new(base, EMULATED_REGISTERS_SIZE), self.first_spi + index as u32))
    }

    /// How many emulated devices it has room for: one page and one SPI each.
    pub fn capacity(&self) -> usize {
        (self.mmio.size / EMULATED_REGISTERS_SIZE).min(self.spi_count.into()) as usize
    }
}

/// The compatible string of an Arm PL011 UART.
pub const PL011: &str = "arm,pl011";
/// The compatible string of a DesignWare APB UART (an 8250 with 32-bit registers 4 bytes apart).
pub const DW_APB_UART: &str = "snps,dw-apb-uart";

/// The kind of UART EL2 can print on that `device` is, if any.
pub fn console_kind(device: &Device) -> Option<trapless_plan::ConsoleKind> {
    let is = |wanted: &str| device.compatible.iter().any(|compatible| compatible == wanted);
    if is(PL011) {
        Some(trapless_plan::ConsoleKind::Pl011)
    } else if is(DW_APB_UART) {
        Some(trapless_plan::ConsoleKind::Dw8250)
    } else {
        None
    }
}

/// SPIs a GIC may have: INTIDs 32 to 1019.
pub const SPI_LIMIT: u32 = 988;

/// A checked platform description.
#[derive(Clone, Debug)]
pub struct Platform {
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    pub ram: AddrRange,
    /// How the firmware's RAM compares with `ram`.
    pub firmware_ram: FirmwareRam,
    /// Where the loader puts the kernel Image (2 MiB aligned base), its payload and its heap.
    pub kernel: AddrRange,
    /// Index into [`Platform::devices`] of EL2's console.
    pub console: Option<usize>,
    pub qemu: Option<Qemu>,
    pub gic: Gic,
    /// Architected timer PPIs: secure physical, non-secure physical, virtual, hypervisor.
    pub timer: [u32; 4],
    /// MPIDR of each CPU; the index is the platform CPU index.
    pub cpus: Vec<u64>,
    pub clocks: Vec<Clock>,
    pub devices: Vec<Device>,
    /// `[emulation]`, if the board gives one.
    pub emulation: Option<Emulation>,
}

impl Platform {
    /// Finds a device by name.
    pub fn device(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|device| device.name == name)
    }

    /// Every MMIO range of the platform that is not RAM, with what it is, for overlap checks.
    pub fn mmio(&self) -> Vec<(String, AddrRange)> {
        let mut ranges = vec![
            ("the GIC distributor".to_string(), self.gic.distributor),
            ("the GIC redistributors".to_string(), self.gic.redistributors),
        ];
        if let Some(its) = self.gic.its {
            ranges.push(("the GIC ITS".to_string(), its.range));
        }
        ranges.extend(self.devices.iter().map(|device| (format!("device '{}'", device.name), device.reg)));
        ranges
    }
}

/// The platform file for `name`: `platform/<name>/platform.toml` under `root`, or `name` itself
/// if it is a path to a `.toml` file (relative to `base`).
pub fn locate(root: &Path, base: &Path, name: &str) -> PathBuf {
    if name.ends_with(".toml") { base.join(name) } else { root.join("platform").join(name).join("platform.toml") }
}

const PAGE: u64 = 4096;
const BLOCK_2M: u64 = 2 << 20;
/// GIC register frames are 64 KiB, and so aligned.
const GIC_FRAME: u64 = 0x1_0000;
/// The physical addresses the kernel's and the partitions' translation tables reach: 48 bits
/// (`PS`/`IPS` = 5). Everything a platform places must end below it, or its end would not even
/// fit in 64 bits.
pub const PHYSICAL_LIMIT: u64 = 1 << 48;

/// Whether `range` ends inside the physical address space the tables reach.
fn addressable(range: &AddrRange) -> bool {
    range.base.0.checked_add(range.size).is_some_and(|end| end <= PHYSICAL_LIMIT)
}

/// The message for a range that is not [`addressable`].
fn beyond_address_space(what: &str, range: &AddrRange) -> String {
    format!("{what} {range} does not end inside the 48-bit physical address space (below {})", trapless_plan::PhysAddr(PHYSICAL_LIMIT))
}

/// What [`valid_node_name`] accepts, for messages.
const NODE_NAME_RULE: &str = "1 to 31 characters of letters, digits and `,._+-`, starting with a letter";

/// A device-tree node name without its unit address, as the device-tree specification has it.
fn valid_node_name(name: &str) -> bool {
    name.len() <= 31
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || ",._+-".contains(c))
}

/// Reads and checks a platform file.
pub fn load(path: &Path) -> Result<Platform, Diagnostics> {
    load_text(path, Source::read(path)?.text)
}

/// Checks the platform description `text` as [`load`] checks the file at `path` (the fuzz
/// targets give text that no file holds).
pub fn load_text(path: &Path, text: String) -> Result<Platform, Diagnostics> {
    let source = Source { path: path.to_path_buf(), text };
    let raw: PlatformToml = toml::from_str(&source.text).map_err(|error| source.toml_error(&error))?;
    check(&source, raw)
}

fn check(source: &Source, raw: PlatformToml) -> Result<Platform, Diagnostics> {
    let mut problems = Vec::new();
    let mut problem = |span: &std::ops::Range<usize>, message: String| problems.push(source.error(span, message));

    let name = raw.name.get_ref();
    if !valid_name(name) {
        problem(
            &raw.name.span(),
            format!("platform name '{name}' must be 1 to {NAME_CAPACITY} characters of a-z, 0-9 and '-', starting with a letter"),
        );
    }
    let ram = raw.ram.get_ref().range();
    if ram.size == 0 || !ram.base.0.is_multiple_of(BLOCK_2M) || !ram.size.is_multiple_of(BLOCK_2M) {
        problem(&raw.ram.span(), format!("RAM {ram} must be non-empty and 2 MiB aligned"));
    }
    if !addressable(&ram) {
        problem(&raw.ram.span(), beyond_address_space("RAM", &ram));
    }
    let kernel = raw.kernel.get_ref().range();
    if !ram.contains_range(&kernel) || !kernel.base.0.is_multiple_of(BLOCK_2M) || !kernel.size.is_multiple_of(BLOCK_2M) {
        problem(&raw.kernel.span(), format!("the kernel region {kernel} must be 2 MiB aligned and inside RAM {ram}"));
    }
    let conduit = raw.psci_conduit.get_ref();
    if conduit != "smc" {
        problem(
            &raw.psci_conduit.span(),
            format!("psci-conduit must be \"smc\": EL2 reaches the firmware's PSCI through SMC (an HVC from EL2 comes back to EL2), not \"{conduit}\""),
        );
    }

    let version = *raw.gic.version.get_ref();
    let expected_stride = match version {
        3 => Some(0x2_0000),
        4 => Some(0x4_0000),
        _ => {
            problem(&raw.gic.version.span(), format!("GIC version {version} is not supported (3 or 4)"));
            None
        }
    };
    let stride = raw.gic.redistributor_stride.get_ref().0;
    if expected_stride.is_some_and(|expected| expected != stride) {
        problem(
            &raw.gic.redistributor_stride.span(),
            format!("a GICv{version} redistributor stride is {:#x}, not {stride:#x}", expected_stride.unwrap_or(0)),
        );
    }
    let redistributors = raw.gic.redistributors.get_ref().range();
    let raw_cpus = raw.cpu.get_ref();
    if (raw_cpus.len() as u64).checked_mul(stride).is_none_or(|needed| redistributors.size < needed) {
        problem(
            &raw.gic.redistributors.span(),
            format!(
                "the redistributor region {redistributors} is too small for {} CPUs: each CPU's frames take the stride, {stride:#x} bytes",
                raw_cpus.len()
            ),
        );
    }
    for (what, spanned) in [("the GIC distributor", &raw.gic.distributor), ("the GIC redistributors", &raw.gic.redistributors)] {
        let range = spanned.get_ref().range();
        if !(range.base.0.is_multiple_of(GIC_FRAME) && range.size.is_multiple_of(GIC_FRAME)) {
            problem(&spanned.span(), format!("{what} {range} must be whole 64 KiB frames"));
        }
    }
    let facts = its::ItsFacts {
        its: &raw.gic.its,
        lpi_id_bits: &raw.gic.lpi_id_bits,
        event_bits: &raw.gic.its_event_bits,
        path: &raw.gic.doorbell_path,
    };
    let its = its::check(facts, &mut problem);
    let timer = raw.timer.interrupts.get_ref();
    let timer: [u32; 4] = match timer.as_slice().try_into() {
        Ok(ppis) if timer.iter().all(|&ppi| ppi < 16) => ppis,
        _ => {
            problem(
                &raw.timer.interrupts.span(),
                format!("timer interrupts must be four PPI numbers from 0 to 15 (INTID - 16), not {timer:?}"),
            );
            [13, 14, 11, 10]
        }
    };

    let mut cpus = Vec::new();
    for (index, cpu) in raw_cpus.iter().enumerate() {
        let mpidr = cpu.get_ref().mpidr;
        if mpidr & !MPIDR_AFFINITY_MASK != 0 {
            problem(
                &cpu.span(),
                format!(
                    "MPIDR {mpidr:#x} has bits outside the affinity fields (mask {MPIDR_AFFINITY_MASK:#x}): give Aff3..Aff0 only"
                ),
            );
        } else if let Some(first) = cpus.iter().position(|&other| other == mpidr) {
            problem(
                &cpu.span(),
                format!("MPIDR {mpidr:#x} of CPU {index} is already CPU {first}'s (line {})", source.line(&raw_cpus[first].span())),
            );
        }
        cpus.push(mpidr & MPIDR_AFFINITY_MASK);
    }
    if cpus.is_empty() || cpus.len() > trapless_plan::MAX_CPUS {
        problems.push(Diagnostic {
            path: source.path.clone(),
            // The first CPU too many, or `cpu = []`.
            line: Some(source.line(&raw_cpus.get(trapless_plan::MAX_CPUS).map_or(raw.cpu.span(), |cpu| cpu.span()))),
            message: format!("a platform has 1 to {} CPUs, not {}", trapless_plan::MAX_CPUS, cpus.len()),
        });
    }

    // The GIC's frames: no partition may map them whole, so they are neither RAM nor a device.
    let mut gic = vec![
        ("the GIC distributor", raw.gic.distributor.get_ref().range(), source.line(&raw.gic.distributor.span())),
        ("the GIC redistributors", redistributors, source.line(&raw.gic.redistributors.span())),
    ];
    if let Some(its) = &raw.gic.its {
        gic.push(("the GIC ITS", its.get_ref().range(), source.line(&its.span())));
    }
    for (index, &(what, range, line)) in gic.iter().enumerate() {
        // Partitions map their CPUs' redistributor frames and the ITS's doorbell page: frames
        // that shared an address with the distributor or each other would hand them more.
        for &(other, other_range, other_line) in &gic[..index] {
            if range.overlaps(&other_range) {
                problems.push(Diagnostic {
                    path: source.path.clone(),
                    line: Some(line),
                    message: format!("{what} {range} overlaps {other} {other_range} (line {other_line})"),
                });
            }
        }
        if range.overlaps(&ram) {
            problems.push(Diagnostic {
                path: source.path.clone(),
                line: Some(line),
                message: format!("{what} {range} overlaps RAM {ram}"),
            });
        }
        if !addressable(&range) {
            problems.push(Diagnostic { path: source.path.clone(), line: Some(line), message: beyond_address_space(what, &range) });
        }
    }

    // Clocks become device-tree nodes named after them.
    let mut clocks: Vec<Clock> = Vec::new();
    for spanned in &raw.clock {
        let clock = spanned.get_ref();
        let mut problem = |message: String| problems.push(source.error(&spanned.span(), message));
        if let Some(first) = clocks.iter().position(|other| other.name == clock.name) {
            let line = source.line(&raw.clock[first].span());
            problem(format!("clock name '{}' is used twice (first at line {line})", clock.name));
        } else if !valid_node_name(&clock.name) {
            problem(format!("clock name '{}' is not a device-tree node name: {NODE_NAME_RULE}", clock.name));
        }
        if clock.output_name.as_ref().is_some_and(|name| name.contains('\0')) {
            problem(format!("the output-name of clock '{}' contains a NUL", clock.name));
        }
        clocks.push(clock.clone());
    }

    let mut devices: Vec<Device> = Vec::new();
    for (position, spanned) in raw.device.iter().enumerate() {
        let device = spanned.get_ref();
        let mut problem = |message: String| problems.push(source.error(&spanned.span(), message));
        if let Some(first) = devices.iter().position(|other| other.name == device.name) {
            let line = source.line(&raw.device[first].span());
            problem(format!("device name '{}' is used twice (first at line {line})", device.name));
        }
        if !valid_node_name(&device.node) {
            problem(format!("node '{}' of device '{}' is not a device-tree node name: {NODE_NAME_RULE}", device.node, device.name));
        }
        if device.compatible.iter().chain(&device.clock_names).any(|text| text.contains('\0')) {
            problem(format!("device '{}' has a compatible or clock-names string that contains a NUL", device.name));
        }
        let reg = device.reg.range();
        if reg.size == 0 || reg.base.0 % PAGE != 0 || reg.size % PAGE != 0 {
            problem(format!("device '{}' registers {reg} must be whole 4 KiB pages", device.name));
        }
        if reg.overlaps(&ram) {
            problem(format!("device '{}' registers {reg} overlap RAM {ram}", device.name));
        }
        if !addressable(&reg) {
            problem(beyond_address_space(&format!("device '{}' registers", device.name), &reg));
        }
        // A partition maps its devices whole: one overlapping another, or the GIC, would hand it
        // what it does not own.
        for &(what, range, line) in &gic {
            if reg.overlaps(&range) {
                problem(format!("device '{}' registers {reg} overlap {what} {range} (line {line})", device.name));
            }
        }
        for (other, earlier) in devices.iter().zip(&raw.device[..position]) {
            if reg.overlaps(&other.reg) {
                let line = source.line(&earlier.span());
                problem(format!("device '{}' registers {reg} overlap device '{}' {} (line {line})", device.name, other.name, other.reg));
            }
        }
        let mut clock_indexes = Vec::new();
        for clock in &device.clocks {
            match clocks.iter().position(|known| &known.name == clock) {
                Some(index) => clock_indexes.push(index),
                None => problem(format!("device '{}' uses clock '{clock}', which is not a [[clock]]", device.name)),
            }
        }
        if device.clock_names.len() != device.clocks.len() {
            problem(format!("device '{}' needs one clock-names entry per clock", device.name));
        }
        for interrupt in &device.interrupts {
            if interrupt.spi >= SPI_LIMIT {
                problem(format!("device '{}' has SPI {}, beyond the {SPI_LIMIT} SPIs a GIC can have", device.name, interrupt.spi));
            }
        }
        devices.push(Device {
            name: device.name.clone(),
            node: device.node.clone(),
            compatible: device.compatible.clone(),
            reg,
            interrupts: device.interrupts.iter().map(|i| Interrupt { spi: i.spi, trigger: i.trigger }).collect(),
            clocks: clock_indexes,
            clock_names: device.clock_names.clone(),
        });
    }
    let console = raw.console.as_ref().and_then(|console| {
        let name = console.get_ref();
        let index = devices.iter().position(|device| &device.name == name);
        match index {
            None => {
                let known: Vec<&str> = devices.iter().map(|device| device.name.as_str()).collect();
                let message = format!("console '{name}' is not a [[device]] of this platform (it has: {})", known.join(", "));
                problems.push(source.error(&console.span(), message));
            }
            Some(index) if console_kind(&devices[index]).is_none() => {
                let line = source.line(&raw.device[index].span());
                let message = format!(
                    "console '{name}' is not a UART EL2 drives: device '{name}' (line {line}) is compatible with neither \"{PL011}\" nor \"{DW_APB_UART}\""
                );
                problems.push(source.error(&console.span(), message));
            }
            Some(_) => {}
        }
        index
    });

    let emulation = raw.emulation.as_ref().map(|emulation| check_emulation(source, &raw, emulation, &mut problems));

    if !problems.is_empty() {
        // In file order, as a reader goes through the file.
        problems.sort_by_key(|problem| problem.line);
        return Err(Diagnostics(problems));
    }
    Ok(Platform {
        name: raw.name.into_inner(),
        path: source.path.clone(),
        ram,
        firmware_ram: match raw.firmware_ram {
            None | Some(FirmwareRamToml::Exact) => FirmwareRam::Exact,
            Some(FirmwareRamToml::AtLeast) => FirmwareRam::AtLeast,
        },
        kernel,
        console,
        qemu: raw.qemu,
        gic: Gic {
            version,
            distributor: raw.gic.distributor.get_ref().range(),
            redistributors,
            redistributor_stride: stride,
            its,
            snoops: raw.gic.snoops.unwrap_or(true),
        },
        timer,
        cpus,
        clocks,
        devices,
        emulation,
    })
}

/// Checks `[emulation]` of the platform `raw`: its range is whole pages that hold nothing the
/// board has, and its SPIs are SPIs that no device raises.
fn check_emulation(source: &Source, raw: &PlatformToml, emulation: &EmulationToml, problems: &mut Vec<Diagnostic>) -> Emulation {
    let mmio = emulation.mmio.get_ref().range();
    let mut problem = |span: &std::ops::Range<usize>, message: String| problems.push(source.error(span, message));
    if mmio.size == 0 || !mmio.base.0.is_multiple_of(PAGE) || !mmio.size.is_multiple_of(PAGE) {
        problem(&emulation.mmio.span(), format!("the [emulation] mmio range {mmio} must be whole 4 KiB pages"));
    }
    if !addressable(&mmio) {
        problem(&emulation.mmio.span(), beyond_address_space("the [emulation] mmio range", &mmio));
    }
    // Everything at a physical address the board describes: (what, its range, its line).
    let line = |span: std::ops::Range<usize>| source.line(&span);
    let mut taken = vec![
        ("RAM".to_string(), raw.ram.get_ref().range(), line(raw.ram.span())),
        ("the GIC distributor".to_string(), raw.gic.distributor.get_ref().range(), line(raw.gic.distributor.span())),
        ("the GIC redistributors".to_string(), raw.gic.redistributors.get_ref().range(), line(raw.gic.redistributors.span())),
    ];
    if let Some(its) = &raw.gic.its {
        taken.push(("the GIC ITS".to_string(), its.get_ref().range(), line(its.span())));
    }
    for device in &raw.device {
        taken.push((format!("device '{}'", device.get_ref().name), device.get_ref().reg.range(), line(device.span())));
    }
    for (what, range, other_line) in taken {
        if mmio.overlaps(&range) {
            problem(&emulation.mmio.span(), format!("the [emulation] mmio range {mmio} overlaps {what} {range} (line {other_line})"));
        }
    }

    let SpisToml { first, count } = *emulation.spis.get_ref();
    let spis = u64::from(first)..u64::from(first) + u64::from(count);
    if count == 0 || spis.end > u64::from(SPI_LIMIT) {
        problem(
            &emulation.spis.span(),
            format!(
                "the [emulation] spis ({count} from SPI {first}) must be at least one SPI, all below {SPI_LIMIT} so that each INTID (SPI + 32) is below 1020"
            ),
        );
    }
    for device in &raw.device {
        for interrupt in device.get_ref().interrupts.iter().filter(|interrupt| spis.contains(&u64::from(interrupt.spi))) {
            problem(
                &emulation.spis.span(),
                format!(
                    "the [emulation] spis ({count} from SPI {first}) include SPI {} of device '{}' (line {})",
                    interrupt.spi,
                    device.get_ref().name,
                    line(device.span())
                ),
            );
        }
    }
    Emulation { mmio, first_spi: first, spi_count: count }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_emulated_device_takes_the_next_page_and_spi_while_both_last() {
        let emulation = Emulation { mmio: AddrRange::new(0x0b00_0000, 0x3000), first_spi: 48, spi_count: 16 };
        assert_eq!(emulation.slot(0), Some((AddrRange::new(0x0b00_0000, 0x1000), 48)));
        assert_eq!(emulation.slot(2), Some((AddrRange::new(0x0b00_2000, 0x1000), 50)));
        // Three pages: the fourth device has an SPI but no page.
        assert_eq!((emulation.capacity(), emulation.slot(3)), (3, None));
        let two_spis = Emulation { spi_count: 2, ..emulation };
        assert_eq!((two_spis.capacity(), two_spis.slot(2)), (2, None));
    }
}
