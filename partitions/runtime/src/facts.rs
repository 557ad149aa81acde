//! The facts a partition reads from the device tree trapless generated for it.

use core::fmt;
use core::ops::Range;
use fdt::Fdt;
use fdt::node::FdtNode;
use trapless_abi::dt;
pub use trapless_virtio::binding::Role;
use trapless_virtio::binding::{self, Kind, config};
use trapless_virtio::layout::MAX_QUEUES;

/// Most CPUs a [`Boot`] lists.
pub const MAX_CPUS: usize = 8;

/// Most doorbells a [`Doorbells`] lists each way.
pub const MAX_DOORBELLS: usize = 32;

/// A doorbell this partition rings: its name and EventID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub name: &'static str,
    pub event: u32,
}

/// A doorbell that rings this partition: its name, its LPI and the CPU that takes it (its
/// affinity packed as Aff3.Aff2.Aff1.Aff0, a byte each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub name: &'static str,
    pub lpi: u32,
    pub affinity: u32,
}

/// The partition's doorbells (`trapless,doorbells` node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Doorbells {
    /// Where to store an EventID to ring one (`GITS_TRANSLATER`), if this partition rings any.
    pub translater: Option<u64>,
    pub outgoing: [Option<Outgoing>; MAX_DOORBELLS],
    pub incoming: [Option<Incoming>; MAX_DOORBELLS],
}

impl Doorbells {
    const NONE: Self = Self { translater: None, outgoing: [None; MAX_DOORBELLS], incoming: [None; MAX_DOORBELLS] };

    /// The doorbell called `name` that this partition rings.
    pub fn outgoing(&self, name: &str) -> Option<Outgoing> {
        self.outgoing.iter().flatten().find(|doorbell| doorbell.name == name).copied()
    }

    /// The doorbell called `name` that rings this partition.
    pub fn incoming(&self, name: &str) -> Option<Incoming> {
        self.incoming.iter().flatten().find(|doorbell| doorbell.name == name).copied()
    }
}

/// Most static virtio links a [`Boot`] lists.
pub const MAX_LINKS: usize = binding::MAX_LINKS_PER_PARTITION;

/// How this side of a link reaches the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Trap-free: the window, and doorbells (`notify_events`, `notify_lpis`) or polling.
    Doorbell,
    /// The driver of a `mmio-trap` link: a `virtio,mmio` register block EL2 emulates, and the
    /// SPI (GIC INTID) EL2 raises when the device notifies.
    MmioTrap { registers: Range<u64>, intid: u32 },
    /// The device of a `mmio-trap` link: it notifies the driver with hypercall `LINK_NOTIFY`
    /// and this link number.
    Hypercall(u32),
}

/// A static virtio link this partition is on (a `trapless,virtio-static` node, or for the
/// driver of a `mmio-trap` link a `virtio,mmio` node with `trapless,link`; see
/// `docs/static-virtio.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: &'static str,
    pub role: Role,
    pub kind: Kind,
    pub features: u64,
    pub queue_count: u16,
    pub queue_size: u16,
    /// The window (its `reserved-memory` node's `reg`).
    pub window: Range<u64>,
    /// The configuration space EL2 wrote into the window.
    pub config: &'static [u8],
    /// Per queue: the EventID that rings the peer (`None`: the peer polls).
    pub notify_events: [Option<u32>; MAX_QUEUES],
    /// Per queue: the LPI the peer's notifications raise here and the affinity of the CPU that
    /// takes it (`None`: this side polls).
    pub notify_lpis: [Option<(u32, u32)>; MAX_QUEUES],
    pub transport: Transport,
}

impl Link {
    /// Whether this side polls (it takes no interrupts for the link).
    pub fn polls(&self) -> bool {
        self.notify_lpis.iter().all(Option::is_none) && !matches!(self.transport, Transport::MmioTrap { .. })
    }

    /// A block device's capacity in bytes.
    pub fn capacity(&self) -> Option<u64> {
        config::block_capacity(self.config).filter(|_| self.kind == Kind::Block)
    }

    /// The header the window must hold.
    pub fn header(&self) -> trapless_virtio::header::Header {
        let window_size = (self.window.end - self.window.start) as u32;
        trapless_virtio::header::Header::for_link(self.kind, self.features, self.queue_size, window_size)
    }
}

/// Where the partition's console output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleKind {
    /// Its own PL011 at this address.
    Pl011(u64),
    /// The trapless console hypercall.
    Hypercall,
    /// None: output is dropped.
    None,
}

/// How the partition calls PSCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

/// What the device tree says about this partition.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The partition's name (`/hypervisor` `trapless,partition`).
    pub name: &'static str,
    /// Its RAM (`/memory`).
    pub memory: Range<u64>,
    /// MPIDRs of its CPUs (`/cpus`), in tree order; the first [`Boot::cpu_count`] are valid.
    pub cpus: [u64; MAX_CPUS],
    pub cpu_count: usize,
    /// `/chosen` `bootargs`, or "".
    pub bootargs: &'static str,
    pub console: ConsoleKind,
    pub psci: Conduit,
    /// The distributor of the GICv3 node (its first `reg`), which EL2 emulates for the partition.
    pub distributor: Range<u64>,
    /// The redistributor regions of the GICv3 node (its `reg` after the distributor); the first
    /// [`Boot::redistributor_region_count`] are valid.
    pub redistributor_regions: [Range<u64>; MAX_CPUS],
    pub redistributor_region_count: usize,
    /// The GICv3 node's `redistributor-stride`: how far apart two CPUs' frames are, where it
    /// says (a GICv4's four 64 KiB frames), else 0 (each `GICR_TYPER` says).
    pub redistributor_stride: u64,
    pub doorbells: Doorbells,
    /// The static virtio links it is on, in tree order (see [`Boot::links`]).
    pub links: [Option<Link>; MAX_LINKS],
    /// The device tree itself.
    pub dtb: &'static [u8],
}

impl Boot {
    /// MPIDRs of the partition's CPUs.
    pub fn cpus(&self) -> &[u64] {
        &self.cpus[..self.cpu_count]
    }

    /// Where the partition's CPUs' redistributors are.
    pub fn redistributor_regions(&self) -> &[Range<u64>] {
        &self.redistributor_regions[..self.redistributor_region_count]
    }

    /// The static virtio links it is on.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.iter().flatten()
    }

    /// The value of `key=value` in the boot arguments, if present.
    pub fn arg(&self, key: &str) -> Option<&'static str> {
        arg(self.bootargs, key)
    }
}

/// The value of `key=value` among whitespace-separated `args`; a bare `key` reads as "".
pub fn arg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split_whitespace().find_map(|word| match word.split_once('=') {
        Some((name, value)) if name == key => Some(value),
        None if word == key => Some(""),
        _ => None,
    })
}

/// Why the device tree does not describe a trapless partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactsError {
    /// Not a device tree.
    Unreadable,
    /// A node or property every trapless partition tree has is missing.
    Missing(&'static str),
    /// More CPUs than [`MAX_CPUS`].
    TooManyCpus,
    /// More doorbells one way than [`MAX_DOORBELLS`], or names and values that do not pair up.
    BadDoorbells,
    /// A static virtio node that is malformed, or more than [`MAX_LINKS`] of them.
    BadLink,
}

impl fmt::Display for FactsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable => f.write_str("the device tree is unreadable"),
            Self::Missing(what) => write!(f, "the device tree has no {what}"),
            Self::TooManyCpus => write!(f, "the device tree lists more than {MAX_CPUS} CPUs"),
            Self::BadDoorbells => write!(f, "the doorbells node is malformed or lists more than {MAX_DOORBELLS} a way"),
            Self::BadLink => write!(f, "a static virtio node is malformed, or there are more than {MAX_LINKS}"),
        }
    }
}

fn text<'a>(node: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let value = node.property(name)?.value;
    core::str::from_utf8(value.strip_suffix(&[0]).unwrap_or(value)).ok()
}

fn cell(node: &FdtNode<'_, '_>, name: &str) -> Option<usize> {
    node.property(name).and_then(|property| dt::cells(property.value).next()).map(|cell| cell as usize)
}

fn is_compatible(node: &FdtNode<'_, '_>, compatible: &str) -> bool {
    node.compatible().is_some_and(|list| list.all().any(|entry| entry == compatible))
}

/// Reads the facts from the device tree in `dtb`.
pub fn read(dtb: &'static [u8]) -> Result<Boot, FactsError> {
    let tree = Fdt::new(dtb).map_err(|_| FactsError::Unreadable)?;
    let root = tree.find_node("/").ok_or(FactsError::Missing("root node"))?;
    let address_cells = cell(&root, "#address-cells").unwrap_or(2);
    let size_cells = cell(&root, "#size-cells").unwrap_or(1);

    let hypervisor = tree
        .find_node(dt::HYPERVISOR_PATH)
        .filter(|node| is_compatible(node, dt::HYPERVISOR_COMPATIBLE))
        .ok_or(FactsError::Missing("/hypervisor node"))?;
    let name = text(&hypervisor, dt::PARTITION_NAME).ok_or(FactsError::Missing("partition name"))?;

    let memory = tree
        .all_nodes()
        .filter(|node| text(node, "device_type") == Some("memory"))
        .find_map(|node| {
            let value = node.property("reg")?.value;
            dt::reg_entries(value, address_cells, size_cells).next()
        })
        .map(|(base, size)| base..base + size)
        .ok_or(FactsError::Missing("/memory"))?;

    let cpus_node = tree.find_node("/cpus").ok_or(FactsError::Missing("/cpus"))?;
    let cpu_cells = cell(&cpus_node, "#address-cells").unwrap_or(1);
    let mut cpus = [0; MAX_CPUS];
    let mut cpu_count = 0;
    for cpu in cpus_node.children().filter(|node| text(node, "device_type") == Some("cpu")) {
        let Some((mpidr, _)) = cpu.property("reg").and_then(|reg| dt::reg_entries(reg.value, cpu_cells, 0).next())
        else {
            continue;
        };
        *cpus.get_mut(cpu_count).ok_or(FactsError::TooManyCpus)? = mpidr;
        cpu_count += 1;
    }

    let chosen = tree.find_node("/chosen").ok_or(FactsError::Missing("/chosen"))?;
    let bootargs = text(&chosen, "bootargs").unwrap_or("");
    let console = match text(&chosen, "stdout-path").map(|path| path.split(':').next().unwrap_or(path)) {
        Some(dt::HYPERCALL_CONSOLE_PATH) => ConsoleKind::Hypercall,
        Some(path) => tree
            .find_node(path)
            .filter(|node| is_compatible(node, "arm,pl011"))
            .and_then(|node| node.property("reg"))
            .and_then(|reg| dt::reg_entries(reg.value, address_cells, size_cells).next())
            .map_or(ConsoleKind::None, |(base, _)| ConsoleKind::Pl011(base)),
        None => ConsoleKind::None,
    };

    let gic = tree.find_compatible(&["arm,gic-v3"]).ok_or(FactsError::Missing("GICv3 node"))?;
    let mut redistributor_regions = [const { 0..0 }; MAX_CPUS];
    let mut redistributor_region_count = 0;
    let gic_reg = gic.property("reg").ok_or(FactsError::Missing("GICv3 reg"))?;
    let distributor = dt::reg_entries(gic_reg.value, address_cells, size_cells)
        .next()
        .map(|(base, size)| base..base + size)
        .ok_or(FactsError::Missing("GICv3 distributor"))?;
    for (base, size) in dt::reg_entries(gic_reg.value, address_cells, size_cells).skip(1) {
        *redistributor_regions.get_mut(redistributor_region_count).ok_or(FactsError::TooManyCpus)? = base..base + size;
        redistributor_region_count += 1;
    }

    let redistributor_stride = gic
        .property("redistributor-stride")
        .and_then(|stride| stride.value.try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);

    let doorbells = match tree.find_compatible(&["trapless,doorbells"]) {
        None => Doorbells::NONE,
        Some(node) => read_doorbells(&node, address_cells, size_cells)?,
    };

    let mut links = [const { None }; MAX_LINKS];
    let nodes = tree.all_nodes().filter(|node| {
        is_compatible(node, binding::dt::COMPATIBLE)
            || is_compatible(node, binding::dt::MMIO_COMPATIBLE) && node.property(binding::dt::LINK).is_some()
    });
    for (slot, node) in nodes.enumerate() {
        *links.get_mut(slot).ok_or(FactsError::BadLink)? = Some(read_link(&tree, &node, address_cells, size_cells)?);
    }

    let psci = tree
        .find_node("/psci")
        .and_then(|node| text(&node, "method"))
        .map(|method| if method == "smc" { Conduit::Smc } else { Conduit::Hvc })
        .ok_or(FactsError::Missing("/psci method"))?;

    Ok(Boot {
        name,
        memory,
        cpus,
        cpu_count,
        bootargs,
        console,
        psci,
        distributor,
        redistributor_regions,
        redistributor_region_count,
        redistributor_stride,
        doorbells,
        links,
        dtb,
    })
}

fn read_link(tree: &Fdt<'static>, node: &FdtNode<'_, 'static>, address_cells: usize, size_cells: usize) -> Result<Link, FactsError> {
    use binding::dt::*;
    let bad = FactsError::BadLink;
    let role = text(node, ROLE).and_then(Role::from_name).ok_or(bad)?;
    let kind = cell(node, DEVICE_ID).and_then(|id| Kind::from_device_id(id as u32)).ok_or(bad)?;
    let features = node.property(FEATURES).and_then(|property| property.as_usize()).ok_or(bad)? as u64;
    let queue_count = cell(node, QUEUES).filter(|&count| count == usize::from(kind.queue_count())).ok_or(bad)?;
    let queue_size = cell(node, QUEUE_SIZE).and_then(|size| u16::try_from(size).ok()).ok_or(bad)?;
    // The window node is under /reserved-memory, whose cells give its `reg`'s shape.
    let reserved = tree.find_node("/reserved-memory").ok_or(bad)?;
    let window_cells = (
        cell(&reserved, "#address-cells").unwrap_or(address_cells),
        cell(&reserved, "#size-cells").unwrap_or(size_cells),
    );
    let window = cell(node, WINDOW)
        .and_then(|phandle| tree.find_phandle(phandle as u32))
        .and_then(|window| window.property("reg"))
        .and_then(|reg| dt::reg_entries(reg.value, window_cells.0, window_cells.1).next())
        .map(|(base, size)| base..base + size)
        .ok_or(bad)?;
    let config = node.property(CONFIG).map(|property| property.value).filter(|bytes| bytes.len() <= config::MAX).ok_or(bad)?;
    let mut notify_events = [None; MAX_QUEUES];
    if let Some(events) = node.property(NOTIFY_EVENTS) {
        let mut events = dt::cells(events.value);
        for slot in &mut notify_events[..queue_count] {
            *slot = Some(events.next().ok_or(bad)?);
        }
    }
    let mut notify_lpis = [None; MAX_QUEUES];
    if let Some(lpis) = node.property(NOTIFY_LPIS) {
        let mut lpis = dt::cells(lpis.value);
        for slot in &mut notify_lpis[..queue_count] {
            *slot = Some(lpis.next().zip(lpis.next()).ok_or(bad)?);
        }
    }
    let transport = if is_compatible(node, MMIO_COMPATIBLE) {
        let registers = node
            .property("reg")
            .and_then(|reg| dt::reg_entries(reg.value, address_cells, size_cells).next())
            .map(|(base, size)| base..base + size)
            .ok_or(bad)?;
        // `interrupts = <GIC_SPI n flags>`: INTID 32 + n.
        let spi = node.property("interrupts").and_then(|property| dt::cells(property.value).nth(1)).ok_or(bad)?;
        Transport::MmioTrap { registers, intid: 32 + spi }
    } else if let Some(link) = cell(node, NOTIFY_HYPERCALL) {
        Transport::Hypercall(link as u32)
    } else {
        Transport::Doorbell
    };
    Ok(Link {
        name: text(node, LINK).ok_or(bad)?,
        role,
        kind,
        features,
        queue_count: queue_count as u16,
        queue_size,
        window,
        config,
        notify_events,
        notify_lpis,
        transport,
    })
}

/// The NUL-separated strings of a property.
fn strings<'a>(node: &FdtNode<'_, 'a>, name: &str) -> impl Iterator<Item = &'a str> {
    let value = node.property(name).map_or(&[][..], |property| property.value);
    value.split(|&byte| byte == 0).filter(|bytes| !bytes.is_empty()).map(|bytes| core::str::from_utf8(bytes).unwrap_or(""))
}

fn read_doorbells(node: &FdtNode<'_, 'static>, address_cells: usize, size_cells: usize) -> Result<Doorbells, FactsError> {
    let mut doorbells = Doorbells::NONE;
    let page = node.property("reg").and_then(|reg| dt::reg_entries(reg.value, address_cells, size_cells).next());
    let offset = cell(node, "trapless,translater");
    doorbells.translater = page.zip(offset).map(|((base, _), offset)| base + offset as u64);

    let events = node.property("trapless,ring-events").map_or(&[][..], |property| property.value);
    let mut events = dt::cells(events);
    for (slot, name) in strings(node, "trapless,ring-names").enumerate() {
        let event = events.next().ok_or(FactsError::BadDoorbells)?;
        *doorbells.outgoing.get_mut(slot).ok_or(FactsError::BadDoorbells)? = Some(Outgoing { name, event });
    }
    let lpis = node.property("trapless,receive-lpis").map_or(&[][..], |property| property.value);
    let mut lpis = dt::cells(lpis);
    for (slot, name) in strings(node, "trapless,receive-names").enumerate() {
        let (lpi, affinity) = lpis.next().zip(lpis.next()).ok_or(FactsError::BadDoorbells)?;
        *doorbells.incoming.get_mut(slot).ok_or(FactsError::BadDoorbells)? = Some(Incoming { name, lpi, affinity });
    }
    Ok(doorbells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_words_with_optional_values() {
        let args = "probe=smp target=0x2 quiet";
        assert_eq!(arg(args, "probe"), Some("smp"));
        assert_eq!(arg(args, "target"), Some("0x2"));
        assert_eq!(arg(args, "quiet"), Some(""));
        assert_eq!(arg(args, "missing"), None);
        assert_eq!(arg("", "probe"), None);
    }
}
