//! Static virtio links: `[[link]]` in a system. A link is one virtio device that one partition
//! implements and another drives, over a *window* of RAM both map, with a doorbell per queue
//! and direction, or, for the trap-and-emulate baseline (`transport = "mmio-trap"`), a
//! virtio-mmio register block that EL2 emulates for the driver. This module checks the
//! declarations, derives each link's doorbells, and builds what EL2 writes into its window and
//! emulates; `docs/static-virtio.md` is the specification.

use crate::diagnostic::{Diagnostic, Source};
use crate::doorbell::{Doorbell, DoorbellPlan};
use crate::platform::Platform;
use crate::size::{Bytes, describe};
use crate::system::{MEMORY_ALIGN, MemoryToml, Partition, valid_name};
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;
use trapless_plan::{AddrRange, EmulatedLinkRecord, Ipa, MAX_LINK_QUEUES, MAX_WINDOWS, NAME_CAPACITY, Name};
pub use trapless_virtio::binding::Role;
use trapless_virtio::binding::{self, COMMON, Kind, MAX_QUEUE_SIZE, VERSION_1, offset};
use trapless_virtio::header::{self, Header};
use trapless_virtio::layout;

/// Longest link name: the link's device-tree node, `virtio-<name>`, must be a node name of at
/// most 31 characters.
pub const MAX_LINK_NAME: usize = NAME_CAPACITY - binding::dt::NODE_PREFIX.len();

/// A window's size when the link does not give one.
pub const DEFAULT_WINDOW: u64 = 1 << 20;
/// A window's size is a whole number of pages, and fits the header's 32-bit field.
const PAGE: u64 = layout::PAGE as u64;
const WINDOW_LIMIT: u64 = 1 << 32;

/// `[[link]]` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LinkToml {
    name: Spanned<String>,
    /// `console`, `net` or `block`.
    kind: Spanned<String>,
    /// The partition that implements the device.
    device: Spanned<String>,
    /// The partition that drives it.
    driver: Spanned<String>,
    /// Entries in each queue.
    queue_size: Spanned<i64>,
    /// Its size (default 1 MiB), or its size and a fixed base.
    window: Option<Spanned<MemoryToml>>,
    /// Feature names, `VERSION_1` among them.
    features: Spanned<Vec<Spanned<String>>>,
    /// The sides that poll instead of taking doorbells: `device`, `driver`.
    #[serde(default)]
    poll: Vec<Spanned<String>>,
    /// Block only: the disk's size in bytes.
    capacity: Option<Spanned<Bytes>>,
    /// How the driver reaches the device: `doorbell` (the default) or `mmio-trap`.
    transport: Option<Spanned<String>>,
}

/// How the driver side reaches a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Trap-free: both sides use the window and ring each other's doorbells.
    Doorbell,
    /// The trap-and-emulate baseline: the driver sees a virtio-mmio register block that is not
    /// mapped, so every access traps to EL2, which emulates it over the window, rings the
    /// device's doorbells for it and raises an SPI on it when the device notifies.
    MmioTrap,
}

impl Transport {
    pub const ALL: [Self; 2] = [Self::Doorbell, Self::MmioTrap];

    /// Its name in a system file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Doorbell => "doorbell",
            Self::MmioTrap => "mmio-trap",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|transport| transport.name() == name)
    }
}

/// The queue of a link that a derived doorbell serves, and the side it rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkQueue {
    /// Link index.
    pub link: usize,
    pub queue: u16,
    /// The side the doorbell rings: the device ("buffers are available") or the driver
    /// ("buffers are used").
    pub to: Role,
    /// Whether EL2 rings it rather than its sender: the driver-to-device doorbells of a
    /// `mmio-trap` link, which EL2 rings when the driver writes `QueueNotify`. The driver then
    /// gets neither the doorbell page for it nor its EventID.
    pub el2_rings: bool,
}

impl LinkQueue {
    /// `driver-to-device` or `device-to-driver`.
    pub fn direction(&self) -> &'static str {
        match self.to {
            Role::Device => "driver-to-device",
            Role::Driver => "device-to-driver",
        }
    }
}

/// A checked link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// Line of its `name`.
    pub line: usize,
    pub kind: Kind,
    /// Partition indexes.
    pub device: usize,
    pub driver: usize,
    pub queue_size: u16,
    /// The fixed features, as virtio feature bits.
    pub features: u64,
    /// Whether the device side polls (it then gets no doorbells), and the driver side.
    pub device_polls: bool,
    pub driver_polls: bool,
    /// The window's size, and its base if fixed.
    pub window: MemoryToml,
    /// Block: the disk's size in bytes; 0 for other kinds.
    pub capacity: u64,
    pub transport: Transport,
}

/// Checks the `[[link]]`s of a system whose partitions are `partitions`, pushing every problem
/// to `problems`.
pub fn check(
    source: &Source,
    raw: &[Spanned<LinkToml>],
    partitions: &[Partition],
    platform: &Platform,
    problems: &mut Vec<Diagnostic>,
) -> Vec<Link> {
    if raw.len() > MAX_WINDOWS {
        problems.push(source.error(
            &raw[MAX_WINDOWS].span(),
            format!("a system has at most {MAX_WINDOWS} links, this one has {}", raw.len()),
        ));
    }
    // What a fixed window must stay clear of, besides the kernel: partitions at fixed bases
    // (the planner keeps the others clear) and earlier fixed windows. (what, line, range)
    let mut fixed: Vec<(String, usize, AddrRange)> = partitions
        .iter()
        .filter(|partition| partition.memory.size != 0)
        .filter_map(|partition| {
            let base = partition.memory.base?;
            Some((format!("partition '{}'", partition.name), partition.line, AddrRange::new(base, partition.memory.size)))
        })
        .collect();
    let mut names: Vec<(&str, usize)> = Vec::new();
    let mut links = Vec::new();
    for spanned in raw {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().as_str();
        let line = source.line(&raw.name.span());
        let mut found: Vec<Diagnostic> = Vec::new();
        let mut fail = |span: &Range<usize>, message: String| found.push(source.error(span, message));

        if let Some(&(_, first)) = names.iter().find(|(other, _)| *other == name) {
            fail(&raw.name.span(), format!("link name '{name}' is used twice (first at line {first})"));
        } else if !valid_name(name) {
            fail(
                &raw.name.span(),
                format!("link name '{name}' must be 1 to {NAME_CAPACITY} characters of a-z, 0-9 and '-', starting with a letter"),
            );
        } else if name.len() > MAX_LINK_NAME {
            fail(
                &raw.name.span(),
                format!(
                    "link name '{name}' has {} characters, more than {MAX_LINK_NAME}: its device-tree node '{}{name}' would be longer than the {NAME_CAPACITY} characters a node name may have",
                    name.len(),
                    binding::dt::NODE_PREFIX
                ),
            );
        }
        names.push((name, line));

        let kind = Kind::from_name(raw.kind.get_ref());
        if kind.is_none() {
            let kinds: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
            fail(&raw.kind.span(), format!("link '{name}' has kind '{}'; the kinds are {}", raw.kind.get_ref(), kinds.join(", ")));
        }

        let mut partition = |field: &Spanned<String>, role: Role| {
            let wanted = field.get_ref();
            let index = partitions.iter().position(|partition| &partition.name == wanted);
            if index.is_none() {
                fail(
                    &field.span(),
                    format!("link '{name}' has {} partition '{wanted}', which the system does not have", role.name()),
                );
            }
            index
        };
        let device = partition(&raw.device, Role::Device);
        let driver = partition(&raw.driver, Role::Driver);
        if let (Some(device), Some(driver)) = (device, driver)
            && device == driver
        {
            fail(
                &raw.driver.span(),
                format!("link '{name}' has partition '{}' as both its device and its driver", partitions[device].name),
            );
        }

        let queue_size = u16::try_from(*raw.queue_size.get_ref())
            .ok()
            .filter(|size| size.is_power_of_two() && *size <= MAX_QUEUE_SIZE);
        if queue_size.is_none() {
            fail(
                &raw.queue_size.span(),
                format!(
                    "queue size of link '{name}' is {}, not a power of two from 1 to {MAX_QUEUE_SIZE}",
                    raw.queue_size.get_ref()
                ),
            );
        }

        let mut features = 0u64;
        let mut listed: Vec<&str> = Vec::new();
        for feature in raw.features.get_ref() {
            let wanted = feature.get_ref().as_str();
            if listed.contains(&wanted) {
                fail(&feature.span(), format!("link '{name}' lists feature '{wanted}' twice"));
                continue;
            }
            listed.push(wanted);
            match kind.map(|kind| (kind, kind.feature(wanted))) {
                Some((_, Some(known))) => features |= 1 << known.bit,
                Some((kind, None)) => {
                    let allowed: Vec<&str> =
                        COMMON.iter().chain(kind.features()).map(|feature| feature.name).collect();
                    fail(
                        &feature.span(),
                        format!(
                            "link '{name}' asks for feature '{wanted}', which {} links do not have (they may fix {})",
                            kind.name(),
                            allowed.join(", ")
                        ),
                    );
                }
                // An unknown kind is reported above.
                None => {}
            }
        }
        if !listed.contains(&VERSION_1.name) {
            fail(
                &raw.features.span(),
                format!("link '{name}' does not fix feature VERSION_1: every static virtio device is a virtio 1.x device"),
            );
        }

        let (mut device_polls, mut driver_polls) = (false, false);
        for side in &raw.poll {
            let polls = match Role::from_name(side.get_ref()) {
                Some(Role::Device) => &mut device_polls,
                Some(Role::Driver) => &mut driver_polls,
                None => {
                    let other = side.get_ref();
                    fail(&side.span(), format!("link '{name}' has '{other}' in poll, which lists the sides that poll: device, driver"));
                    continue;
                }
            };
            if *polls {
                fail(&side.span(), format!("link '{name}' lists '{}' in poll twice", side.get_ref()));
            }
            *polls = true;
        }

        let transport = match &raw.transport {
            None => Some(Transport::Doorbell),
            Some(wanted) => {
                let transport = Transport::from_name(wanted.get_ref());
                if transport.is_none() {
                    let names: Vec<&str> = Transport::ALL.iter().map(|transport| transport.name()).collect();
                    fail(
                        &wanted.span(),
                        format!("link '{name}' has transport '{}'; the transports are {}", wanted.get_ref(), names.join(", ")),
                    );
                }
                transport
            }
        };
        if let (Some(Transport::MmioTrap), Some(transport)) = (transport, &raw.transport) {
            // EL2 raises the driver's SPI and rings the device's doorbells for the driver: the
            // baseline measures those exits, which a polling side would not take.
            if let Some(side) = raw.poll.first() {
                fail(&side.span(), format!("link '{name}' cannot poll: with transport mmio-trap, EL2 notifies both of its sides"));
            }
            if platform.emulation.is_none() {
                fail(
                    &transport.span(),
                    format!(
                        "link '{name}' has transport mmio-trap, and platform '{}' has no [emulation] range for its register block and SPI",
                        platform.name
                    ),
                );
            }
        }
        if platform.gic.its.is_none() && !(device_polls && driver_polls) {
            fail(
                &raw.name.span(),
                format!(
                    "link '{name}' needs a GIC ITS for its doorbells, and platform '{}' has none (a link whose sides both poll needs none)",
                    platform.name
                ),
            );
        } else if platform.gic.doorbell_path().is_none() && !(device_polls && driver_polls) {
            fail(
                &raw.name.span(),
                format!(
                    "link '{name}' needs doorbells, and {}: make both its sides poll (poll = [\"device\", \"driver\"]), which needs none",
                    crate::platform::no_path(platform)
                ),
            );
        }

        let capacity = match (kind, &raw.capacity) {
            (Some(Kind::Block), None) => {
                fail(&raw.name.span(), format!("block link '{name}' needs a capacity: the disk's size, a multiple of 512 bytes"));
                0
            }
            (Some(Kind::Block), Some(capacity)) => {
                let bytes = capacity.get_ref().0;
                if bytes == 0 {
                    fail(&capacity.span(), format!("capacity of link '{name}' is 0: a disk has at least one 512-byte sector"));
                } else if !bytes.is_multiple_of(binding::config::SECTOR) {
                    fail(&capacity.span(), format!("capacity of link '{name}' is {bytes} bytes, not a multiple of 512 bytes"));
                }
                bytes
            }
            (Some(kind), Some(capacity)) => {
                fail(&capacity.span(), format!("link '{name}' is a {} link: only block links have a capacity", kind.name()));
                0
            }
            (_, None) | (None, Some(_)) => 0,
        };

        // The window: its size, room for the queues and a buffer pool, and a fixed base.
        let window = raw.window.as_ref().map_or(MemoryToml { size: DEFAULT_WINDOW, base: None }, |window| *window.get_ref());
        let window_span = raw.window.as_ref().map_or(raw.name.span(), |window| window.span());
        let size = window.size;
        let size_ok = if !size.is_multiple_of(PAGE) {
            fail(&window_span, format!("window of link '{name}' is {} ({size:#x} bytes), not a multiple of 4 KiB", describe(size)));
            false
        } else if size >= WINDOW_LIMIT {
            fail(&window_span, format!("window of link '{name}' is {} ({size:#x} bytes), not below 4 GiB", describe(size)));
            false
        } else {
            true
        };
        if let (true, Some(kind), Some(queue_size)) = (size_ok, kind, queue_size)
            && let Err(error) = layout::compute(kind.queue_count(), u32::from(queue_size), size as usize)
        {
            fail(&window_span, format!("window of link '{name}': {error}"));
        }
        if let Some(base) = window.base {
            let range = AddrRange::new(base, size);
            if !base.is_multiple_of(MEMORY_ALIGN) {
                fail(&window_span, format!("window of link '{name}' starts at {}, not on a 2 MiB boundary", range.base));
            }
            if size != 0 {
                if !platform.ram.contains_range(&range) {
                    fail(
                        &window_span,
                        format!("window of link '{name}' {range} is outside the RAM of platform '{}' {}", platform.name, platform.ram),
                    );
                }
                if range.overlaps(&platform.kernel) {
                    fail(&window_span, format!("window of link '{name}' {range} overlaps the kernel's region {}", platform.kernel));
                }
                for (other, other_line, other_range) in &fixed {
                    if range.overlaps(other_range) {
                        fail(&window_span, format!("window of link '{name}' {range} overlaps {other} {other_range} (line {other_line})"));
                    }
                }
                fixed.push((format!("the window of link '{name}'"), line, range));
            }
        }

        if let (true, Some(kind), Some(device), Some(driver), Some(queue_size), Some(transport)) =
            (found.is_empty(), kind, device, driver, queue_size, transport)
        {
            links.push(Link {
                name: name.to_string(),
                line,
                kind,
                device,
                driver,
                queue_size,
                features,
                device_polls,
                driver_polls,
                window,
                capacity,
                transport,
            });
        }
        problems.extend(found);
    }
    links
}

/// The doorbells `links` need, before their EventIDs and LPIs are chosen: per link, per queue,
/// one from the driver to the device (unless the device polls) then one from the device to the
/// driver (unless the driver polls), each taken by the receiver's first CPU. A `mmio-trap`
/// link has only the first, which EL2 rings for the driver; EL2 notifies its driver with an
/// SPI instead of the second.
pub fn doorbells(links: &[Link], partitions: &[Partition]) -> Vec<Doorbell> {
    let mut doorbells = Vec::new();
    for (index, link) in links.iter().enumerate() {
        let emulated = link.transport == Transport::MmioTrap;
        for queue in 0..link.kind.queue_count() {
            let ways = [
                (Role::Device, link.driver, link.device, link.device_polls),
                (Role::Driver, link.device, link.driver, link.driver_polls || emulated),
            ];
            for (to_role, from, to, skip) in ways {
                if skip {
                    continue;
                }
                doorbells.push(Doorbell {
                    name: link.name.clone(),
                    line: link.line,
                    from,
                    to,
                    cpu: partitions[to].cpus[0],
                    event: None,
                    lpi: None,
                    link: Some(LinkQueue { link: index, queue, to: to_role, el2_rings: emulated && to_role == Role::Device }),
                });
            }
        }
    }
    doorbells
}

/// A link, planned: everything its window, its two device-tree nodes and EL2 need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPlan {
    pub name: String,
    pub kind: Kind,
    /// Partition indexes.
    pub device: usize,
    pub driver: usize,
    pub window: AddrRange,
    pub features: u64,
    pub queue_size: u16,
    /// The configuration space, as EL2 writes it at [`offset::CONFIG`].
    pub config: Vec<u8>,
    /// Per queue, the doorbell that rings the device; empty if the device polls.
    pub to_device: Vec<DoorbellPlan>,
    /// Per queue, the doorbell that rings the driver; empty if the driver polls or the link is
    /// emulated.
    pub to_driver: Vec<DoorbellPlan>,
    /// For a `mmio-trap` link, where EL2 emulates its registers; `None` for a doorbell link.
    pub emulated: Option<Emulated>,
}

/// Where the driver of a `mmio-trap` link finds its emulated virtio-mmio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emulated {
    /// The link's number among the emulated links: its [`EmulatedLinkRecord`]'s index, and the
    /// number the device passes to hypercall `LINK_NOTIFY`.
    pub index: usize,
    /// The register block in the driver's IPA space, which nothing maps.
    pub registers: AddrRange,
    /// The SPI number (INTID - 32) raised on the driver's first CPU.
    pub spi: u32,
}

impl Link {
    /// The plan of this link, number `index`, with its window at `window`, its doorbells among
    /// `doorbells`, and, for a `mmio-trap` link, its `emulated` register block and SPI.
    pub fn plan(&self, index: usize, window: AddrRange, doorbells: &[DoorbellPlan], emulated: Option<Emulated>) -> LinkPlan {
        let (config, size) = binding::config::encode(self.kind, index as u8, self.capacity);
        let ringing = |role: Role| -> Vec<DoorbellPlan> {
            doorbells
                .iter()
                .filter(|doorbell| doorbell.link.is_some_and(|queue| queue.link == index && queue.to == role))
                .cloned()
                .collect()
        };
        LinkPlan {
            name: self.name.clone(),
            kind: self.kind,
            device: self.device,
            driver: self.driver,
            window,
            features: self.features,
            queue_size: self.queue_size,
            config: config[..size].to_vec(),
            to_device: ringing(Role::Device),
            to_driver: ringing(Role::Driver),
            emulated,
        }
    }
}

impl LinkPlan {
    /// How its driver reaches it.
    pub fn transport(&self) -> Transport {
        if self.emulated.is_some() { Transport::MmioTrap } else { Transport::Doorbell }
    }

    /// What EL2 needs to emulate a `mmio-trap` link whose window is number `window` in the
    /// plan; `None` for a doorbell link.
    pub fn emulated_record(&self, window: usize) -> Option<EmulatedLinkRecord> {
        let emulated = self.emulated?;
        let mut notify_events = [0; MAX_LINK_QUEUES];
        for (slot, doorbell) in notify_events.iter_mut().zip(&self.to_device) {
            *slot = doorbell.event;
        }
        Some(EmulatedLinkRecord {
            name: Name::new(&self.name).expect("link names are checked"),
            registers: Ipa(emulated.registers.base.0),
            window: window as u32,
            intid: emulated.spi + 32,
            features: self.features,
            device_id: self.kind.device_id(),
            queue_count: self.kind.queue_count(),
            queue_size: self.queue_size,
            notify_events,
        })
    }

    /// The side partition `index` is on this link, if it is on it.
    pub fn role_of(&self, index: usize) -> Option<Role> {
        if index == self.device {
            Some(Role::Device)
        } else if index == self.driver {
            Some(Role::Driver)
        } else {
            None
        }
    }

    /// The doorbells side `role` rings (one per queue, or none if the other side polls).
    pub fn rings(&self, role: Role) -> &[DoorbellPlan] {
        match role {
            Role::Device => &self.to_driver,
            Role::Driver => &self.to_device,
        }
    }

    /// The doorbells that ring side `role` (one per queue, or none if it polls).
    pub fn rung_by_peer(&self, role: Role) -> &[DoorbellPlan] {
        match role {
            Role::Device => &self.to_device,
            Role::Driver => &self.to_driver,
        }
    }

    /// The window's header.
    pub fn header(&self) -> Header {
        Header::for_link(self.kind, self.features, self.queue_size, self.window.size as u32)
    }

    /// What EL2 writes at the window's start (it zeroes the rest): the header, zeros (the
    /// state lines and the configuration generation), and the configuration space.
    pub fn window_init(&self) -> Vec<u8> {
        let mut bytes = vec![0; offset::CONFIG + self.config.len()];
        bytes[offset::HEADER..offset::HEADER + header::SIZE].copy_from_slice(&self.header().encode());
        bytes[offset::CONFIG..].copy_from_slice(&self.config);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use trapless_virtio::binding::config;
    use trapless_virtio::window::{CellMemory, Window};

    #[test]
    fn the_window_starts_with_its_header_and_configuration_space() {
        let flush = Kind::Block.feature("FLUSH").unwrap();
        let link = Link {
            name: "disk0".into(),
            line: 1,
            kind: Kind::Block,
            device: 0,
            driver: 1,
            queue_size: 16,
            features: 1 << VERSION_1.bit | 1 << flush.bit,
            device_polls: false,
            driver_polls: false,
            window: MemoryToml { size: 2 << 20, base: None },
            capacity: 4 << 20,
            transport: Transport::Doorbell,
        };
        let plan = link.plan(2, AddrRange::new(0x5000_0000, 2 << 20), &[], None);
        let mut init = plan.window_init();
        assert_eq!(init.len(), 0x100 + 24);

        // The header, field by field at the offsets docs/static-virtio.md gives.
        let u16_at = |at: usize| u16::from_le_bytes(init[at..at + 2].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(init[at..at + 4].try_into().unwrap());
        assert_eq!(&init[..8], b"tlvirtio");
        assert_eq!(u32_at(0x08), 1);
        assert_eq!(u32_at(0x0c), 2);
        assert_eq!(u64::from_le_bytes(init[0x10..0x18].try_into().unwrap()), 0x1_0000_0200);
        assert_eq!((u16_at(0x18), u16_at(0x1a), u16_at(0x1c)), (1, 16, 24));
        assert_eq!(u32_at(0x20), 2 << 20);
        // The state lines and the configuration generation start at zero.
        assert!(init[0x24..0x100].iter().all(|&byte| byte == 0));
        // The configuration space: 8192 sectors, a 512-byte block size.
        assert_eq!(config::block_capacity(&init[0x100..]), Some(4 << 20));
        assert_eq!(u32_at(0x100 + 20), 512);

        // And the device side's own check accepts it.
        let expected = header::Header {
            device_id: 2,
            features: 0x1_0000_0200,
            queue_count: 1,
            queue_size: 16,
            config_size: 24,
            window_size: 2 << 20,
        };
        let cells = Cell::from_mut(&mut init[..]).as_slice_of_cells();
        assert_eq!(Header::check(&Window::new(CellMemory(cells), 0x5000_0000), &expected), Ok(()));
    }

    #[test]
    fn a_net_link_has_its_index_in_its_mac() {
        let link = Link {
            name: "net0".into(),
            line: 1,
            kind: Kind::Net,
            device: 0,
            driver: 1,
            queue_size: 16,
            features: 1 << VERSION_1.bit,
            device_polls: false,
            driver_polls: false,
            window: MemoryToml { size: 1 << 20, base: None },
            capacity: 0,
            transport: Transport::Doorbell,
        };
        let plan = link.plan(5, AddrRange::new(0x4400_0000, 1 << 20), &[], None);
        assert_eq!(&plan.window_init()[0x100..0x106], &[0x02, 0x74, 0x6c, 0x76, 0x00, 5]);
    }
}
