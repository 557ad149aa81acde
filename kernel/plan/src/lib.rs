//! The plan: fixed-layout tables that the host build writes and the EL2 kernel reads in place.
//!
//! A plan is one little-endian byte string, 8-byte aligned, laid out as
//!
//! | where                  | what                                         |
//! |------------------------|----------------------------------------------|
//! | 0                      | [`Header`] (magic, format version, platform) |
//! | `header.cpus`          | one [`CpuRecord`] per platform CPU            |
//! | `header.partitions`    | one [`PartitionRecord`] per partition         |
//! | `header.regions`       | every partition's stage-2 [`RegionRecord`]s   |
//! | `header.spi_routes`    | one [`SpiRoute`] per passthrough SPI          |
//! | `header.doorbells`     | one [`DoorbellRecord`] per doorbell           |
//! | `header.windows`       | one [`WindowRecord`] per static virtio link   |
//! | `header.emulated_links`| one [`EmulatedLinkRecord`] per `mmio-trap` link |
//! | blobs                  | guest images, DTBs and window contents, each 16-byte aligned |
//!
//! The kernel parses no text: it checks this layout once with [`Plan::parse`] (magic, version,
//! every table and blob inside the plan, every enum and index in range) and then reads the
//! records where they lie. The writer ([`PlanWriter`], feature `alloc`) is the host's half.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!("the plan is little-endian and read in place: build for a little-endian target");

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

mod addr;
#[cfg(any(test, feature = "alloc"))]
mod writer;

pub use addr::{AddrRange, Ipa, PhysAddr, VirtAddr};
#[cfg(any(test, feature = "alloc"))]
pub use writer::{PartitionDraft, PlanWriter, WindowDraft};

use core::fmt;
use core::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first eight bytes of every plan.
pub const MAGIC: [u8; 8] = *b"TRAPLESS";
/// The layout version this crate reads and writes; bump it on any change to a record.
pub const FORMAT_VERSION: u32 = 7;
/// Longest name a [`Name`] holds, in bytes.
pub const NAME_CAPACITY: usize = 31;
/// [`CpuRecord::partition`] of a CPU that no partition owns.
pub const NO_PARTITION: u32 = u32::MAX;
/// Alignment of every blob inside the plan.
pub const BLOB_ALIGN: usize = 16;
/// Most platform CPUs a plan may describe (the kernel keeps a stack and a state slot for each).
pub const MAX_CPUS: usize = 8;
/// Most partitions a plan may hold (VMIDs 1..=MAX_PARTITIONS).
pub const MAX_PARTITIONS: usize = 8;
/// The affinity fields of an MPIDR (Aff3 in bits 39:32, Aff2..Aff0 in 23:0): all a CPU record,
/// a PSCI target or a GIC route may hold.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// Heap the kernel needs at least, between the end of the plan and the end of its region.
pub const MIN_KERNEL_HEAP: u64 = 1 << 20;
/// The first LPI INTID.
pub const FIRST_LPI: u32 = 8192;
/// Most static virtio windows a plan may hold.
pub const MAX_WINDOWS: usize = 16;
/// Most queues an emulated link has.
pub const MAX_LINK_QUEUES: usize = 4;
/// Bytes of an emulated link's register block (one page).
pub const EMULATED_REGISTERS_SIZE: u64 = 0x1000;

/// A NUL-padded UTF-8 name of at most [`NAME_CAPACITY`] bytes.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Name([u8; NAME_CAPACITY + 1]);

impl Name {
    /// Returns the name, or `None` if it is empty, too long or contains a NUL.
    pub fn new(name: &str) -> Option<Self> {
        if name.is_empty() || name.len() > NAME_CAPACITY || name.contains('\0') {
            return None;
        }
        let mut bytes = [0; NAME_CAPACITY + 1];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(Self(bytes))
    }

    /// The name as text. [`Plan::parse`] has checked it is UTF-8.
    pub fn as_str(&self) -> &str {
        self.checked().unwrap_or("<invalid name>")
    }

    fn checked(&self) -> Option<&str> {
        let len = self.0.iter().position(|&byte| byte == 0)?;
        match core::str::from_utf8(&self.0[..len]) {
            Ok(text) if !text.is_empty() => Some(text),
            _ => None,
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a table lies: a byte offset from the start of the plan and a count of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TableRef {
    pub offset: u32,
    pub count: u32,
}

/// A run of records inside a table: the index of the first and how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SliceRef {
    pub first: u32,
    pub count: u32,
}

/// A blob of bytes inside the plan and the address it is copied to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlobRef {
    /// Byte offset from the start of the plan.
    pub offset: u64,
    pub size: u64,
    /// Where EL2 copies it (in the owning partition's RAM; IPA = PA).
    pub load: PhysAddr,
}

/// What EL2 uses as its own console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleKind {
    None,
    Pl011,
    /// A DesignWare APB UART (`snps,dw-apb-uart`), an 8250: 32-bit registers 4 bytes apart,
    /// already set up (baud rate, pins, clock) by the firmware.
    Dw8250,
}

impl ConsoleKind {
    /// The value stored in [`PlatformRecord::console_kind`].
    pub const fn code(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Pl011 => 1,
            Self::Dw8250 => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        [Self::None, Self::Pl011, Self::Dw8250].into_iter().find(|kind| kind.code() == code)
    }
}

/// How the firmware's RAM must compare with the platform's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareRam {
    /// The firmware describes exactly the platform's RAM (a QEMU run with another `-m` is refused).
    Exact,
    /// The firmware's RAM holds the platform's, and may have more, which trapless leaves
    /// unused (a board sold with several RAM sizes, its loader writing what is fitted).
    AtLeast,
}

/// [`PlatformRecord::flags`]: CPU stores reach the ITS's translation at
/// [`PlatformRecord::doorbell_translater`], carrying [`PlatformRecord::doorbell_device`].
pub const FLAG_DOORBELL_PATH: u32 = 1 << 0;
/// [`PlatformRecord::flags`]: the GIC cannot snoop the CPUs' caches (RK3588 erratum 3588001):
/// its tables are given to it non-shareable and non-cacheable, and cleaned to memory.
pub const FLAG_GIC_NO_SNOOP: u32 = 1 << 1;
/// [`PlatformRecord::flags`]: [`FirmwareRam::AtLeast`].
pub const FLAG_FIRMWARE_RAM_AT_LEAST: u32 = 1 << 2;
const KNOWN_FLAGS: u32 = FLAG_DOORBELL_PATH | FLAG_GIC_NO_SNOOP | FLAG_FIRMWARE_RAM_AT_LEAST;

/// The board facts the kernel needs, copied from `platform.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PlatformRecord {
    pub name: Name,
    /// All RAM of the board.
    pub ram: AddrRange,
    /// The region the loader places the kernel Image in, with its payload and heap.
    pub kernel: AddrRange,
    pub gicd: AddrRange,
    /// The redistributor region: one frame per CPU, in platform CPU order.
    pub gicr: AddrRange,
    /// Distance between two CPUs' redistributor frames (0x2_0000 for GICv3, 0x4_0000 for GICv4).
    pub gicr_stride: u64,
    /// EL2's console UART (see [`ConsoleKind`]).
    pub console: AddrRange,
    /// The GIC ITS (its control frame, then its translation frame), or empty.
    pub its: AddrRange,
    /// Where a CPU's 32-bit store of an EventID reaches the ITS's translation (its
    /// `GITS_TRANSLATER`), with [`FLAG_DOORBELL_PATH`]; 0 without.
    pub doorbell_translater: PhysAddr,
    pub console_kind: u32,
    /// 3 or 4.
    pub gic_version: u32,
    /// The DeviceID the ITS sees on a CPU's store to the translater (SoC-specific; 0 on
    /// QEMU), with [`FLAG_DOORBELL_PATH`]: every doorbell is mapped under it.
    pub doorbell_device: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// How a CPU's store reaches the ITS's translation: where, and with which DeviceID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorbellPath {
    pub translater: PhysAddr,
    pub device: u32,
}

impl PlatformRecord {
    /// EL2's console.
    pub fn console_kind(&self) -> ConsoleKind {
        ConsoleKind::from_code(self.console_kind).unwrap_or(ConsoleKind::None)
    }

    /// How CPU stores reach the ITS, or `None` if they do not (or there is no ITS).
    pub fn doorbell_path(&self) -> Option<DoorbellPath> {
        (self.flags & FLAG_DOORBELL_PATH != 0 && self.its.size != 0)
            .then_some(DoorbellPath { translater: self.doorbell_translater, device: self.doorbell_device })
    }

    /// Whether the GIC reads and writes its tables coherently with the CPUs' caches.
    pub fn gic_snoops(&self) -> bool {
        self.flags & FLAG_GIC_NO_SNOOP == 0
    }

    /// How the firmware's RAM must compare with [`PlatformRecord::ram`].
    pub fn firmware_ram(&self) -> FirmwareRam {
        if self.flags & FLAG_FIRMWARE_RAM_AT_LEAST != 0 { FirmwareRam::AtLeast } else { FirmwareRam::Exact }
    }

    /// The redistributor frame of platform CPU `cpu`.
    pub fn redistributor(&self, cpu: usize) -> PhysAddr {
        PhysAddr(self.gicr.base.0 + cpu as u64 * self.gicr_stride)
    }
}

/// One platform CPU, in platform order (its index is the CPU index used everywhere else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CpuRecord {
    /// Affinity fields only ([`MPIDR_AFFINITY_MASK`]).
    pub mpidr: u64,
    /// Index of the owning partition, or [`NO_PARTITION`].
    pub partition: u32,
    pub reserved: u32,
}

impl CpuRecord {
    /// The owning partition's index, if any.
    pub fn owner(&self) -> Option<usize> {
        (self.partition != NO_PARTITION).then_some(self.partition as usize)
    }
}

/// One partition: what it owns and how it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PartitionRecord {
    pub name: Name,
    /// Stage-2 VMID, distinct per partition and never 0.
    pub vmid: u16,
    /// How many times EL2 starts the partition again after it stops by a fault or PSCI
    /// `SYSTEM_RESET` (0: it stays stopped). Never set for a partition on an emulated link.
    pub restart_limit: u16,
    /// The CPU the partition starts on (a platform CPU index it owns).
    pub boot_cpu: u32,
    /// What a stage-2 fault EL2 does not emulate does to it (see [`OnFault`]).
    pub on_fault: u32,
    pub reserved: u32,
    /// Its RAM.
    pub memory: AddrRange,
    /// Where its boot CPU starts at EL1.
    pub entry: Ipa,
    pub image: BlobRef,
    /// Its device tree; the boot CPU gets `x0` = `dtb.load`.
    pub dtb: BlobRef,
    /// Its initial RAM disk (`size` 0: none), which its device tree names in `/chosen`.
    pub initrd: BlobRef,
    /// Its stage-2 map: a run of [`Header::regions`].
    pub regions: SliceRef,
}

impl PartitionRecord {
    /// What a stage-2 fault does to the partition ([`Plan::parse`] has checked the code).
    pub fn on_fault(&self) -> OnFault {
        OnFault::from_code(self.on_fault).unwrap_or(OnFault::Stop)
    }
}

/// What a stage-2 fault that EL2 does not emulate (an access outside the partition's map)
/// does to the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFault {
    /// The partition is stopped, with a report.
    Stop,
    /// EL2 reports it and injects a synchronous external abort into the partition at EL1, as
    /// an access that nothing backs takes on hardware: a guest that probes survives.
    Abort,
}

impl OnFault {
    /// The value stored in [`PartitionRecord::on_fault`].
    pub const fn code(self) -> u32 {
        match self {
            Self::Stop => 0,
            Self::Abort => 1,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        [Self::Stop, Self::Abort].into_iter().find(|kind| kind.code() == code)
    }
}

/// How a stage-2 region is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Normal write-back memory, inner shareable, read/write/execute.
    Ram,
    /// Device-nGnRE, read/write, never executable.
    Device,
    /// Device-nGnRE, read-only, never executable (a redistributor's RD frame: its LPI table
    /// registers must stay EL2's).
    DeviceReadOnly,
    /// Normal write-back memory, inner shareable, read/write, never executable: a static virtio
    /// window, mapped into both partitions of its link.
    SharedRam,
}

impl RegionKind {
    /// The value stored in [`RegionRecord::kind`].
    pub const fn code(self) -> u32 {
        match self {
            Self::Ram => 1,
            Self::Device => 2,
            Self::DeviceReadOnly => 3,
            Self::SharedRam => 4,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        [Self::Ram, Self::Device, Self::DeviceReadOnly, Self::SharedRam].into_iter().find(|kind| kind.code() == code)
    }
}

/// One stage-2 mapping of a partition (page-aligned; IPA = PA today, but both are kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegionRecord {
    pub ipa: Ipa,
    pub pa: PhysAddr,
    pub size: u64,
    /// See [`RegionKind`].
    pub kind: u32,
    pub reserved: u32,
}

impl RegionRecord {
    /// How the region is mapped ([`Plan::parse`] has checked the code).
    pub fn kind(&self) -> RegionKind {
        RegionKind::from_code(self.kind).unwrap_or(RegionKind::Device)
    }
}

/// A shared peripheral interrupt routed to the CPU of the partition that owns its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SpiRoute {
    /// GIC INTID (32..1020).
    pub intid: u32,
    /// Platform CPU index.
    pub cpu: u32,
    /// True (1) for an edge-triggered interrupt, 0 for level.
    pub edge: u32,
    pub reserved: u32,
}

/// A doorbell: partition `sender` writes `event` to `GITS_TRANSLATER`, and LPI `intid` is
/// raised on platform CPU `cpu` of partition `receiver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DoorbellRecord {
    /// EventID, under [`PlatformRecord::doorbell_device`].
    pub event: u32,
    /// LPI INTID (8192 or more).
    pub intid: u32,
    /// Platform CPU index, owned by `receiver`.
    pub cpu: u32,
    pub sender: u32,
    pub receiver: u32,
    pub reserved: u32,
}

/// A static virtio window: RAM shared by the `device` and `driver` partitions of one link.
/// Before any partition runs, EL2 zeroes it and copies `init` (the header and configuration
/// space, `docs/static-virtio.md`) to its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct WindowRecord {
    pub range: AddrRange,
    /// The window's first bytes; `init.load` is `range.base`.
    pub init: BlobRef,
    /// Partition indexes.
    pub device: u32,
    pub driver: u32,
}

/// A static virtio link whose driver reaches it through an emulated virtio-mmio register block
/// (`transport = "mmio-trap"`), the classic trap-and-emulate path: the block is unmapped in the
/// driver's stage 2, so every register access traps to EL2, which emulates virtio-mmio version
/// 2 over the link's window. EL2 rings the device's doorbell for `QueueNotify`, and raises SPI
/// `intid` on the driver when the device notifies it (hypercall `LINK_NOTIFY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EmulatedLinkRecord {
    /// The link's name, for reports.
    pub name: Name,
    /// Where the register block is in the driver's IPA space ([`EMULATED_REGISTERS_SIZE`]).
    pub registers: Ipa,
    /// The link's window: an index into [`Header::windows`] (its partitions are the link's).
    pub window: u32,
    /// The SPI (GIC INTID) raised on the driver, routed to its CPU by a [`SpiRoute`].
    pub intid: u32,
    /// The fixed features.
    pub features: u64,
    /// The virtio device ID.
    pub device_id: u32,
    pub queue_count: u16,
    pub queue_size: u16,
    /// For each queue, the EventID that rings the device (under
    /// [`PlatformRecord::doorbell_device`]).
    pub notify_events: [u32; MAX_LINK_QUEUES],
}

/// The start of every plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    /// `size_of::<Header>()`, as a second check of the version.
    pub header_size: u32,
    /// Bytes in the whole plan, blobs included.
    pub total_size: u64,
    pub platform: PlatformRecord,
    pub cpus: TableRef,
    pub partitions: TableRef,
    pub regions: TableRef,
    pub spi_routes: TableRef,
    pub doorbells: TableRef,
    pub windows: TableRef,
    pub emulated_links: TableRef,
}

/// Why a byte string is not a plan this kernel can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Fewer bytes than a header, or than the header's `total_size`.
    Truncated { needed: u64, have: u64 },
    /// The bytes do not start on an 8-byte boundary.
    Misaligned,
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// Written by a different layout version.
    UnsupportedVersion { found: u32, header_size: u32 },
    /// A table lies (partly) outside the plan or is misaligned.
    TableOutOfBounds { table: &'static str },
    /// A partition's image, DTB or initial RAM disk lies outside the plan.
    BlobOutOfBounds { partition: usize },
    /// A window's contents lie outside the plan, or are bigger than the window.
    WindowOutOfBounds { window: usize },
    /// A name is empty, unterminated or not UTF-8.
    BadName { what: &'static str, index: usize },
    /// An enum field holds a value this version does not define.
    BadValue { field: &'static str, index: usize, value: u64 },
    /// An index points past the end of the table it refers to.
    BadIndex { field: &'static str, index: usize },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { needed, have } => {
                write!(f, "plan truncated: needs {needed} bytes, has {have}")
            }
            Self::Misaligned => f.write_str("plan is not 8-byte aligned"),
            Self::BadMagic => f.write_str("no plan found (bad magic)"),
            Self::UnsupportedVersion { found, header_size } => write!(
                f,
                "plan format {found} (header {header_size} bytes) is not the format {FORMAT_VERSION} this kernel reads"
            ),
            Self::TableOutOfBounds { table } => write!(f, "plan table '{table}' is out of bounds"),
            Self::BlobOutOfBounds { partition } => {
                write!(f, "image, DTB or initrd of partition #{partition} is out of bounds")
            }
            Self::WindowOutOfBounds { window } => {
                write!(f, "contents of window #{window} are out of bounds or larger than the window")
            }
            Self::BadName { what, index } => write!(f, "{what} #{index} has an invalid name"),
            Self::BadValue { field, index, value } => {
                write!(f, "{field} of record #{index} has invalid value {value:#x}")
            }
            Self::BadIndex { field, index } => {
                write!(f, "{field} of record #{index} points outside its table")
            }
        }
    }
}

/// A checked plan, read in place.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    bytes: &'a [u8],
    header: &'a Header,
    cpus: &'a [CpuRecord],
    partitions: &'a [PartitionRecord],
    regions: &'a [RegionRecord],
    spi_routes: &'a [SpiRoute],
    doorbells: &'a [DoorbellRecord],
    windows: &'a [WindowRecord],
    emulated_links: &'a [EmulatedLinkRecord],
}

impl<'a> Plan<'a> {
    /// Reads the total size a plan claims from its header, so that a loader can find its end
    /// before checking the rest.
    pub fn claimed_size(bytes: &[u8]) -> Result<u64, PlanError> {
        let (header, _) = Header::ref_from_prefix(bytes).map_err(|_| short_or_misaligned(bytes))?;
        check_header(header)?;
        Ok(header.total_size)
    }

    /// Checks `bytes` (8-byte aligned, at least the plan's `total_size` long) and returns the plan.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PlanError> {
        let (header, _) = Header::ref_from_prefix(bytes).map_err(|_| short_or_misaligned(bytes))?;
        check_header(header)?;
        if header.total_size > bytes.len() as u64 {
            return Err(PlanError::Truncated {
                needed: header.total_size,
                have: bytes.len() as u64,
            });
        }
        let bytes = &bytes[..header.total_size as usize];
        let plan = Self {
            bytes,
            header,
            cpus: table(bytes, header.cpus, "cpus")?,
            partitions: table(bytes, header.partitions, "partitions")?,
            regions: table(bytes, header.regions, "regions")?,
            spi_routes: table(bytes, header.spi_routes, "spi-routes")?,
            doorbells: table(bytes, header.doorbells, "doorbells")?,
            windows: table(bytes, header.windows, "windows")?,
            emulated_links: table(bytes, header.emulated_links, "emulated links")?,
        };
        plan.check_records()?;
        Ok(plan)
    }

    fn check_records(&self) -> Result<(), PlanError> {
        if self.cpus.len() > MAX_CPUS {
            return Err(bad_value("cpu count", 0, self.cpus.len() as u64));
        }
        if self.partitions.len() > MAX_PARTITIONS {
            return Err(bad_value("partition count", 0, self.partitions.len() as u64));
        }
        let platform = &self.header.platform;
        if platform.name.checked().is_none() {
            return Err(PlanError::BadName { what: "platform", index: 0 });
        }
        if !matches!(platform.gic_version, 3 | 4) {
            return Err(bad_value("gic-version", 0, platform.gic_version.into()));
        }
        if ConsoleKind::from_code(platform.console_kind).is_none() {
            return Err(bad_value("console-kind", 0, platform.console_kind.into()));
        }
        if platform.flags & !KNOWN_FLAGS != 0 {
            return Err(bad_value("platform flags", 0, platform.flags.into()));
        }
        if let Some(path) = platform.doorbell_path() {
            let translater = path.translater.0;
            if !translater.is_multiple_of(4) || platform.ram.contains_span(translater, 4) {
                return Err(bad_value("doorbell translater", 0, translater));
            }
        }
        for (index, cpu) in self.cpus.iter().enumerate() {
            if cpu.owner().is_some_and(|owner| owner >= self.partitions.len()) {
                return Err(PlanError::BadIndex { field: "cpu partition", index });
            }
            if cpu.mpidr & !MPIDR_AFFINITY_MASK != 0 {
                return Err(bad_value("cpu mpidr", index, cpu.mpidr));
            }
        }
        for (index, region) in self.regions.iter().enumerate() {
            if RegionKind::from_code(region.kind).is_none() {
                return Err(bad_value("region kind", index, region.kind.into()));
            }
        }
        for (index, route) in self.spi_routes.iter().enumerate() {
            if !(32..1020).contains(&route.intid) {
                return Err(bad_value("spi intid", index, route.intid.into()));
            }
            if route.cpu as usize >= self.cpus.len() {
                return Err(PlanError::BadIndex { field: "spi cpu", index });
            }
        }
        if !self.doorbells.is_empty() && platform.doorbell_path().is_none() {
            return Err(PlanError::BadIndex { field: "doorbell without a doorbell path", index: 0 });
        }
        for (index, doorbell) in self.doorbells.iter().enumerate() {
            if doorbell.intid < FIRST_LPI {
                return Err(bad_value("doorbell intid", index, doorbell.intid.into()));
            }
            let partitions = self.partitions.len() as u32;
            let cpu_owner = self.cpus.get(doorbell.cpu as usize).and_then(CpuRecord::owner);
            if doorbell.sender >= partitions || cpu_owner != Some(doorbell.receiver as usize) {
                return Err(PlanError::BadIndex { field: "doorbell", index });
            }
        }
        if self.windows.len() > MAX_WINDOWS {
            return Err(bad_value("window count", 0, self.windows.len() as u64));
        }
        for (index, window) in self.windows.iter().enumerate() {
            let partitions = self.partitions.len() as u32;
            if window.device >= partitions || window.driver >= partitions || window.device == window.driver {
                return Err(PlanError::BadIndex { field: "window partitions", index });
            }
            if self.blob_bytes(&window.init).is_none()
                || window.init.size > window.range.size
                || window.init.load != window.range.base
            {
                return Err(PlanError::WindowOutOfBounds { window: index });
            }
        }
        for (index, link) in self.emulated_links.iter().enumerate() {
            if link.name.checked().is_none() {
                return Err(PlanError::BadName { what: "emulated link", index });
            }
            if link.window as usize >= self.windows.len() {
                return Err(PlanError::BadIndex { field: "emulated link window", index });
            }
            if !(32..1020).contains(&link.intid) {
                return Err(bad_value("emulated link intid", index, link.intid.into()));
            }
            if !(1..=MAX_LINK_QUEUES).contains(&usize::from(link.queue_count)) {
                return Err(bad_value("emulated link queue count", index, link.queue_count.into()));
            }
        }
        for (index, partition) in self.partitions.iter().enumerate() {
            if partition.name.checked().is_none() {
                return Err(PlanError::BadName { what: "partition", index });
            }
            if partition.vmid == 0 {
                return Err(bad_value("vmid", index, 0));
            }
            let boot_cpu = partition.boot_cpu as usize;
            if self.cpus.get(boot_cpu).and_then(CpuRecord::owner) != Some(index) {
                return Err(PlanError::BadIndex { field: "boot cpu", index });
            }
            let SliceRef { first, count } = partition.regions;
            if first as usize + count as usize > self.regions.len() {
                return Err(PlanError::BadIndex { field: "regions", index });
            }
            if OnFault::from_code(partition.on_fault).is_none() {
                return Err(bad_value("on-fault", index, partition.on_fault.into()));
            }
            for blob in [partition.image, partition.dtb, partition.initrd] {
                if self.blob_bytes(&blob).is_none() {
                    return Err(PlanError::BlobOutOfBounds { partition: index });
                }
            }
        }
        // EL2 plays the driver of an emulated link and holds its state across a partition's
        // life; neither side of one may start again under it.
        for (index, link) in self.emulated_links.iter().enumerate() {
            let window = &self.windows[link.window as usize];
            if [window.device, window.driver].iter().any(|&side| self.partitions[side as usize].restart_limit != 0) {
                return Err(bad_value("restart limit of a partition on emulated link", index, 1));
            }
        }
        Ok(())
    }

    /// The board facts.
    pub fn platform(&self) -> &'a PlatformRecord {
        &self.header.platform
    }

    /// Every platform CPU, in platform order.
    pub fn cpus(&self) -> &'a [CpuRecord] {
        self.cpus
    }

    /// Every partition.
    pub fn partitions(&self) -> &'a [PartitionRecord] {
        self.partitions
    }

    /// The stage-2 regions of `partition`.
    pub fn regions(&self, partition: &PartitionRecord) -> &'a [RegionRecord] {
        let SliceRef { first, count } = partition.regions;
        &self.regions[first as usize..first as usize + count as usize]
    }

    /// Every passthrough SPI and the CPU it goes to.
    pub fn spi_routes(&self) -> &'a [SpiRoute] {
        self.spi_routes
    }

    /// Every doorbell.
    pub fn doorbells(&self) -> &'a [DoorbellRecord] {
        self.doorbells
    }

    /// Every static virtio window.
    pub fn windows(&self) -> &'a [WindowRecord] {
        self.windows
    }

    /// Every link reached through an emulated register block.
    pub fn emulated_links(&self) -> &'a [EmulatedLinkRecord] {
        self.emulated_links
    }

    /// The platform CPU indexes owned by partition number `partition`.
    pub fn cpus_of(&self, partition: usize) -> impl Iterator<Item = usize> + 'a {
        let cpus = self.cpus;
        (0..cpus.len()).filter(move |&cpu| cpus[cpu].owner() == Some(partition))
    }

    /// The bytes of a partition's image, DTB or initial RAM disk, or of a window's contents.
    pub fn blob(&self, blob: &BlobRef) -> &'a [u8] {
        self.blob_bytes(blob).unwrap_or(&[])
    }

    fn blob_bytes(&self, blob: &BlobRef) -> Option<&'a [u8]> {
        let end = blob.offset.checked_add(blob.size)?;
        self.bytes.get(usize::try_from(blob.offset).ok()?..usize::try_from(end).ok()?)
    }

    /// Bytes in the whole plan.
    pub fn total_size(&self) -> usize {
        self.bytes.len()
    }
}

fn short_or_misaligned(bytes: &[u8]) -> PlanError {
    if bytes.len() < size_of::<Header>() {
        PlanError::Truncated { needed: size_of::<Header>() as u64, have: bytes.len() as u64 }
    } else {
        PlanError::Misaligned
    }
}

fn check_header(header: &Header) -> Result<(), PlanError> {
    if header.magic != MAGIC {
        return Err(PlanError::BadMagic);
    }
    if header.version != FORMAT_VERSION || header.header_size as usize != size_of::<Header>() {
        return Err(PlanError::UnsupportedVersion {
            found: header.version,
            header_size: header.header_size,
        });
    }
    Ok(())
}

fn table<'a, T: FromBytes + Immutable + KnownLayout>(
    bytes: &'a [u8],
    table: TableRef,
    name: &'static str,
) -> Result<&'a [T], PlanError> {
    let start = table.offset as usize;
    let end = start.checked_add(table.count as usize * size_of::<T>());
    let slice = end.and_then(|end| bytes.get(start..end));
    slice
        .and_then(|slice| <[T]>::ref_from_bytes(slice).ok())
        .ok_or(PlanError::TableOutOfBounds { table: name })
}

fn bad_value(field: &'static str, index: usize, value: u64) -> PlanError {
    PlanError::BadValue { field, index, value }
}

#[cfg(test)]
mod tests;
