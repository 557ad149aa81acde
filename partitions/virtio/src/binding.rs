//! The names and numbers of the static virtio binding: device kinds, the features each may
//! fix, window offsets, and device-tree property names.

/// The kinds of device a link can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Console,
    Net,
    Block,
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

    /// The features a link of this kind may fix, beyond [`VERSION_1`] and [`EVENT_IDX`]: the
    /// ones the trapless device side implements.
    pub fn features(self) -> &'static [Feature] {
        match self {
            Self::Console => &[Feature { name: "SIZE", bit: 0 }],
            Self::Net => &[
                Feature { name: "MTU", bit: 3 },
                Feature { name: "MAC", bit: 5 },
                Feature { name: "STATUS", bit: 16 },
            ],
            Self::Block => &[
                Feature { name: "RO", bit: 5 },
                Feature { name: "BLK_SIZE", bit: 6 },
                Feature { name: "FLUSH", bit: 9 },
            ],
        }
    }

    /// The feature of this kind called `name`.
    pub fn feature(self, name: &str) -> Option<Feature> {
        [VERSION_1, EVENT_IDX].into_iter().chain(self.features().iter().copied()).find(|feature| feature.name == name)
    }
}

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
    /// Stopped for good: the side found the other side's input wrong, or cannot accept the
    /// link's fixed features or layout.
    pub const FAILED: u32 = 2;
}

/// Device-tree names of the binding.
pub mod dt {
    /// `compatible` of a link's node.
    pub const COMPATIBLE: &str = "trapless,virtio-static";
    /// `compatible` of the window's reserved-memory node.
    pub const WINDOW_COMPATIBLE: &str = "trapless,virtio-window";
}
