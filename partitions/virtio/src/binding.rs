//! The names and numbers of the static virtio binding: device kinds, the features each may
//! fix, window offsets, and device-tree property names.

/// The kinds of device a link can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Console,
    Net,
    Block,
}

/// A side of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Implements the device.
    Device,
    /// Drives it.
    Driver,
}

impl Role {
    /// The side's name, as a system's `poll` and the device tree's `trapless,role` write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Device => dt::ROLE_DEVICE,
            Self::Driver => dt::ROLE_DRIVER,
        }
    }

    /// The side called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Device, Self::Driver].into_iter().find(|role| role.name() == name)
    }
}

/// A feature a link may fix, with its virtio feature bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub bit: u8,
}

/// `VIRTIO_F_VERSION_1`: every static virtio device is a virtio 1.x device.
pub const VERSION_1: Feature = Feature { name: "VERSION_1", bit: 32 };
/// `VIRTIO_F_EVENT_IDX` (`VIRTIO_RING_F_EVENT_IDX`): notification suppression by ring index.
pub const EVENT_IDX: Feature = Feature { name: "EVENT_IDX", bit: 29 };
/// `VIRTIO_F_ACCESS_PLATFORM`: the device reaches buffers at addresses the platform decides,
/// here always addresses in the window's buffer pool. It changes nothing on the device side;
/// a driver that maps its buffers through a DMA API (Linux's virtio core does so only when the
/// device offers this) bounces them through the pool with it.
pub const ACCESS_PLATFORM: Feature = Feature { name: "ACCESS_PLATFORM", bit: 33 };
/// The features a link of any kind may fix.
pub const COMMON: [Feature; 3] = [VERSION_1, EVENT_IDX, ACCESS_PLATFORM];

impl Kind {
    /// Every kind, in the order their names are listed.
    pub const ALL: [Self; 3] = [Self::Console, Self::Net, Self::Block];

    /// The kind's name in a system description.
    pub fn name(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Net => "net",
            Self::Block => "block",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The virtio device ID.
    pub fn device_id(self) -> u32 {
        match self {
            Self::Net => 1,
            Self::Block => 2,
            Self::Console => 3,
        }
    }

    /// The kind with virtio device ID `id`.
    pub fn from_device_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.device_id() == id)
    }

    /// Its virtqueues: console and net have a receive queue (0, device to driver) and a
    /// transmit queue (1, driver to device); block has one request queue.
    pub fn queue_count(self) -> u16 {
        match self {
            Self::Console | Self::Net => 2,
            Self::Block => 1,
        }
    }

    /// Bytes of its configuration space, as trapless fills it.
    pub fn config_size(self) -> usize {
        match self {
            // cols, rows, max_nr_ports, emerg_wr
            Self::Console => 12,
            // mac, status, max_virtqueue_pairs, mtu
            Self::Net => 12,
            // capacity, size_max, seg_max, geometry, blk_size
            Self::Block => 24,
        }
    }

    /// The features a link of this kind may fix, beyond the [`COMMON`] ones: the ones the
    /// trapless device side implements.
    pub fn features(self) -> &'static [Feature] {
        match self {
            Self::Console => &[Feature { name: "SIZE", bit: 0 }],
            Self::Net => &[
                Feature { name: "MTU", bit: 3 },
                Feature { name: "MAC", bit: 5 },
                Feature { name: "STATUS", bit: 16 },
            ],
            // SEG_MAX: `seg_max` data buffers in a request, which the device's chains hold.
            Self::Block => &[
                Feature { name: "SEG_MAX", bit: 2 },
                Feature { name: "RO", bit: 5 },
                Feature { name: "BLK_SIZE", bit: 6 },
                Feature { name: "FLUSH", bit: 9 },
            ],
        }
    }

    /// The feature of this kind called `name`.
    pub fn feature(self, name: &str) -> Option<Feature> {
        COMMON.into_iter().chain(self.features().iter().copied()).find(|feature| feature.name == name)
    }
}

/// Most links one partition may be on (either side).
pub const MAX_LINKS_PER_PARTITION: usize = 8;

/// The largest queue a split virtqueue can have.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Window offsets: the header, each side's state on its own cache line, the configuration
/// generation, the configuration space, and where the queues start.
pub mod offset {
    pub const HEADER: usize = 0x000;
    pub const DRIVER_STATE: usize = 0x040;
    pub const DEVICE_STATE: usize = 0x080;
    pub const CONFIG_GENERATION: usize = 0x0c0;
    pub const CONFIG: usize = 0x100;
    pub const QUEUES: usize = 0x1000;
}

/// Within a state line: the state, the side's generation, and (device only) why it failed.
pub mod state {
    pub const STATE: usize = 0;
    pub const GENERATION: usize = 4;
    pub const ERROR: usize = 8;

    /// Not ready: starting, or reset.
    pub const RESET: u32 = 0;
    /// Running.
    pub const READY: u32 = 1;
    /// Stopped: the side found the other side's input wrong, or cannot accept the link's fixed
    /// features or layout.
    pub const FAILED: u32 = 2;
    /// Driver only: done with the link (like `RESET`, but it does not mean to start again soon).
    pub const STOPPED: u32 = 3;

    /// Device `ERROR`: the header does not match the device's device tree (for good).
    pub const ERROR_HEADER: u32 = 1;
    /// Device `ERROR`: the driver broke a ring rule (until the driver starts again).
    pub const ERROR_RING: u32 = 2;
}

/// Device-tree names of the binding.
pub mod dt {
    /// `compatible` of a link's node.
    pub const COMPATIBLE: &str = "trapless,virtio-static";
    /// `compatible` of the window's reserved-memory node.
    pub const WINDOW_COMPATIBLE: &str = "trapless,virtio-window";
    /// A link's node is `NODE_PREFIX` and the link's name; its window's is `WINDOW_NODE@<base>`
    /// under `/reserved-memory`.
    pub const NODE_PREFIX: &str = "virtio-";
    pub const WINDOW_NODE: &str = "virtio-window";
    /// The link node's properties.
    pub const WINDOW: &str = "memory-region";
    pub const LINK: &str = "trapless,link";
    pub const ROLE: &str = "trapless,role";
    pub const DEVICE_ID: &str = "trapless,device-id";
    pub const FEATURES: &str = "trapless,features";
    pub const QUEUES: &str = "trapless,queues";
    pub const QUEUE_SIZE: &str = "trapless,queue-size";
    pub const CONFIG: &str = "trapless,config";
    pub const NOTIFY_EVENTS: &str = "trapless,notify-events";
    pub const NOTIFY_LPIS: &str = "trapless,notify-lpis";
    /// Device side of a `mmio-trap` link: notify the driver with hypercall `LINK_NOTIFY` and
    /// this number, instead of a doorbell.
    pub const NOTIFY_HYPERCALL: &str = "trapless,notify-hypercall";
    /// `compatible` of the driver's node of a `mmio-trap` link: standard virtio-mmio.
    pub const MMIO_COMPATIBLE: &str = "virtio,mmio";
    /// Values of [`ROLE`].
    pub const ROLE_DEVICE: &str = "device";
    pub const ROLE_DRIVER: &str = "driver";
}

/// The configuration space of a link, as EL2 writes it into the window (little-endian; see
/// `docs/static-virtio.md`).
pub mod config {
    use super::Kind;

    /// Most bytes of any kind's configuration space.
    pub const MAX: usize = 24;
    /// Console: columns and rows it reports.
    pub const COLS: u16 = 80;
    pub const ROWS: u16 = 25;
    /// Net: the MTU it reports, and the first five bytes of its MAC (the sixth is the link's
    /// index): locally administered, unicast.
    pub const MTU: u16 = 1500;
    pub const MAC_PREFIX: [u8; 5] = [0x02, 0x74, 0x6c, 0x76, 0x00];
    /// Net `status`: the link is up.
    pub const NET_LINK_UP: u16 = 1;
    /// Block: descriptors of data a request may have (a chain's 16, less header and status).
    pub const SEG_MAX: u32 = 14;
    /// Block: bytes of a sector.
    pub const SECTOR: u64 = 512;
    /// Offset of a block device's `capacity` (u64, in sectors).
    const CAPACITY: usize = 0;

    /// The configuration space of link number `index` of `kind`; `capacity` (bytes) is a block
    /// device's disk size.
    pub fn encode(kind: Kind, index: u8, capacity: u64) -> ([u8; MAX], usize) {
        let mut bytes = [0u8; MAX];
        let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
        match kind {
            Kind::Console => {
                put(0, &COLS.to_le_bytes());
                put(2, &ROWS.to_le_bytes());
                put(4, &1u32.to_le_bytes());
            }
            Kind::Net => {
                put(0, &MAC_PREFIX);
                put(5, &[index]);
                put(6, &NET_LINK_UP.to_le_bytes());
                put(8, &1u16.to_le_bytes());
                put(10, &MTU.to_le_bytes());
            }
            Kind::Block => {
                put(CAPACITY, &(capacity / SECTOR).to_le_bytes());
                put(12, &SEG_MAX.to_le_bytes());
                put(20, &(SECTOR as u32).to_le_bytes());
            }
        }
        (bytes, kind.config_size())
    }

    /// A block device's capacity in bytes, from its configuration space.
    pub fn block_capacity(config: &[u8]) -> Option<u64> {
        let sectors = config.get(CAPACITY..CAPACITY + 8)?;
        Some(u64::from_le_bytes(sectors.try_into().ok()?) * SECTOR)
    }
}
