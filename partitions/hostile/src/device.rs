//! `hostile=device`: the device of its links, lying to each driver in the way `<link>=<case>`
//! names, until every driver has stopped:
//!
//! - `used-len` / `used-empty` (console or net): echoes honestly, but says each receive chain
//!   got 2^20 bytes / 0 bytes;
//! - `used-id` (console or net): echoes honestly, but names descriptor 200 for each receive
//!   chain;
//! - `used-idx` (net): echoes two frames or more honestly, then moves the receive queue's used
//!   index 1000 ahead and serves no more;
//! - `config` (block): a RAM disk, honest, that writes a capacity of 2^40 sectors over the
//!   configuration space and changes its generation before every step;
//! - `failed` (block): a RAM disk that serves three requests, then writes `FAILED` (error
//!   0xdead) into its state line and serves no more;
//! - `early` (console): an honest echo that rings the driver `storm=<n>` times as soon as it
//!   opens the link, before any driver has started (a driver must not mind doorbells it did not
//!   expect yet);
//! - `storm` (console): an honest echo that also rings the driver `storm=<n>` times while the
//!   driver is being served.

use crate::count;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use trapless_guest::facts::{Link, Role};
use trapless_guest::virtio::{self, Bells};
use trapless_guest::{Boot, irq, println};
use trapless_virtio::binding::{Kind, offset, state};
use trapless_virtio::device::{BlockDevice, ConsoleEcho, Device, NET_HEADER, NetEcho, QueueSet};
use trapless_virtio::layout::{self, MAX_QUEUES};
use trapless_virtio::link::DeviceLink;
use trapless_virtio::queue::{DeviceQueue, QueueError};
use trapless_virtio::window::{Memory, RawMemory, Window};

/// Chains one step of one link may move.
const BUDGET: usize = 8;
/// Rings of a storm per look at the links.
const BURST: u64 = 500;
/// The id `used-id` names, beyond any queue the stock drivers use.
const BAD_ID: u16 = 200;
/// The length `used-len` reports.
const BAD_LEN: u32 = 1 << 20;
/// The error `failed` writes into its state line.
const QUIT_ERROR: u32 = 0xdead;

static RUNG: AtomicBool = AtomicBool::new(false);
static TAKEN: AtomicU32 = AtomicU32::new(0);

fn rung(_lpi: u32) {
    TAKEN.fetch_add(1, Ordering::Relaxed);
    RUNG.store(true, Ordering::SeqCst);
}

/// What a receive chain is reported as, instead of the truth.
#[derive(Clone, Copy, Debug)]
enum Lie {
    Id(u16),
    Length(u32),
}

/// The receive queue (device to driver) and transmit queue of console and net devices.
const RECEIVE: usize = 0;
const TRANSMIT: usize = 1;

/// A hostile device.
enum Hostile {
    /// Echoes, but reports each receive chain with the lie.
    Liar { lie: Lie, net: bool },
    /// Echoes frames honestly, then moves the receive used index (at window offset `index`)
    /// 1000 ahead and stops.
    Jump { echo: NetEcho, index: usize, jumped: bool },
    /// An honest RAM disk that scribbles over the configuration space.
    Scribbler { disk: BlockDevice<&'static mut [u8]>, generation: u32 },
    /// A RAM disk that says `FAILED` after three requests and stops.
    Quitter { disk: BlockDevice<&'static mut [u8]>, quit: bool },
    /// An honest console echo (the storm is rung by the main loop).
    Storm(ConsoleEcho),
}

impl Device for Hostile {
    fn service<M: Memory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        match self {
            Self::Liar { lie, net } => lie_about(window, queues, budget, *lie, *net),
            Self::Jump { echo, index, jumped } => {
                if *jumped {
                    return Ok(QueueSet::default());
                }
                let used = echo.service(window, queues, budget)?;
                if echo.frames >= 2 {
                    window.write_u16(*index, queues[RECEIVE].used_index().wrapping_add(1000))?;
                    *jumped = true;
                }
                Ok(used)
            }
            Self::Scribbler { disk, generation } => {
                *generation = generation.wrapping_add(1);
                window.write_u64(offset::CONFIG, 1 << 40)?;
                window.write_u32(offset::CONFIG_GENERATION, *generation)?;
                disk.service(window, queues, budget)
            }
            Self::Quitter { disk, quit } => {
                if disk.requests >= 3 {
                    if !*quit {
                        window.write_u32(offset::DEVICE_STATE + state::ERROR, QUIT_ERROR)?;
                        window.write_u32(offset::DEVICE_STATE + state::STATE, state::FAILED)?;
                        *quit = true;
                    }
                    return Ok(QueueSet::default());
                }
                disk.service(window, queues, budget.min(1))
            }
            Self::Storm(echo) => echo.service(window, queues, budget),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Jump { echo, .. } => echo.reset(),
            Self::Storm(echo) => echo.reset(),
            _ => {}
        }
    }
}

/// Echoes each transmitted chain into a receive chain, honestly, and reports the receive chain
/// with `lie`.
fn lie_about<M: Memory>(window: &Window<M>, queues: &mut [DeviceQueue], budget: usize, lie: Lie, net: bool) -> Result<QueueSet, QueueError> {
    let mut used = QueueSet::default();
    let mut data = [0u8; 2048];
    for _ in 0..budget {
        let Some(transmit) = queues[TRANSMIT].pop(window)? else { break };
        let Some(receive) = queues[RECEIVE].pop(window)? else {
            queues[TRANSMIT].put_back();
            break;
        };
        let read = transmit.reader().read(window, &mut data)?;
        if net && read > NET_HEADER {
            // A plain frame: one buffer.
            data[..NET_HEADER].fill(0);
            data[10] = 1;
        }
        let written = receive.writer().write(window, &data[..read])?;
        let (head, len) = match lie {
            Lie::Id(id) => (id, written),
            Lie::Length(len) => (receive.head, len as usize),
        };
        queues[RECEIVE].push(window, head, len)?;
        queues[TRANSMIT].push(window, transmit.head, 0)?;
        used.mark(RECEIVE);
        used.mark(TRANSMIT);
    }
    Ok(used)
}

/// A RAM disk of the link's capacity, from this partition's heap.
fn disk(link: &Link) -> BlockDevice<&'static mut [u8]> {
    let capacity = link.capacity().unwrap_or(0) as usize;
    BlockDevice::new(alloc::vec![0u8; capacity].leak(), false)
}

/// The hostile device `case` names for `link`.
fn hostile(link: &Link, case: &str) -> Option<Hostile> {
    Some(match (case, link.kind) {
        ("used-len", Kind::Console | Kind::Net) => Hostile::Liar { lie: Lie::Length(BAD_LEN), net: link.kind == Kind::Net },
        ("used-empty", Kind::Console | Kind::Net) => Hostile::Liar { lie: Lie::Length(0), net: link.kind == Kind::Net },
        ("used-id", Kind::Console | Kind::Net) => Hostile::Liar { lie: Lie::Id(BAD_ID), net: link.kind == Kind::Net },
        ("used-idx", Kind::Net) => {
            let size = (link.window.end - link.window.start) as usize;
            let layout = layout::compute(link.queue_count, u32::from(link.queue_size), size).ok()?;
            Hostile::Jump { echo: NetEcho::new(), index: layout.queues[RECEIVE].used + 2, jumped: false }
        }
        ("config", Kind::Block) => Hostile::Scribbler { disk: disk(link), generation: 0 },
        ("failed", Kind::Block) => Hostile::Quitter { disk: disk(link), quit: false },
        ("storm" | "early", Kind::Console) => Hostile::Storm(ConsoleEcho::default()),
        _ => return None,
    })
}

/// One link this partition is the hostile device of.
struct Served {
    name: &'static str,
    case: &'static str,
    link: DeviceLink<RawMemory>,
    device: Hostile,
    bells: Bells,
    /// Storm rings still to ring.
    storm: u64,
    done: bool,
}

pub fn run(boot: &Boot) {
    let storm = count(boot, "storm", 50_000);
    let mut links: Vec<Served> = Vec::new();
    for link in boot.links().filter(|link| link.role == Role::Device) {
        let case = boot.arg(link.name).unwrap_or("");
        let Some(device) = hostile(link, case) else {
            crate::fail(&format!("link {}: no hostile {} device '{case}'", link.name, link.kind.name()));
        };
        let opened = match DeviceLink::open(virtio::window(link), link.header(), link.polls()) {
            Ok(opened) => opened,
            Err(error) => crate::fail(&format!("link {}: {error}", link.name)),
        };
        let mut bells = match Bells::new(boot, link) {
            Ok(bells) => bells,
            Err(error) => crate::fail(&format!("link {}: its doorbells: {error:?}", link.name)),
        };
        if let Err(error) = virtio::on_notify(link, rung) {
            crate::fail(&format!("link {}: its LPIs: {error:?}", link.name));
        }
        println!("hostile: device of link {} ({}): case {case}", link.name, link.kind.name());
        if case == "early" {
            for _ in 0..storm {
                bells.ring(0);
            }
        }
        let storm = if case == "storm" { storm } else { 0 };
        links.push(Served { name: link.name, case, link: opened, device, bells, storm, done: false });
    }
    if links.is_empty() {
        crate::fail("this partition is the device of no link");
    }
    irq::init_cpu();
    loop {
        let mut again = false;
        for served in links.iter_mut().filter(|served| !served.done) {
            let step = served.link.step(&mut served.device, BUDGET);
            for queue in 0..MAX_QUEUES {
                if step.notify.has(queue) {
                    served.bells.ring(queue);
                }
            }
            // The storm goes on while the driver is being served (its rings are spurious to it).
            if served.storm > 0 && served.link.serving() != 0 {
                let burst = served.storm.min(BURST);
                for _ in 0..burst {
                    served.bells.ring(0);
                }
                served.storm -= burst;
            }
            if step.stopped {
                served.done = true;
                println!("hostile: link {}: case {}: the driver stopped; rang it {} times", served.name, served.case, served.bells.rung);
            }
            again |= step.more || served.storm > 0;
        }
        if links.iter().all(|served| served.done) {
            break;
        }
        if !again {
            irq::wait_until(|| RUNG.load(Ordering::SeqCst));
        }
        RUNG.store(false, Ordering::SeqCst);
    }
    println!("hostile: every driver has stopped; LPIs taken: {}", TAKEN.load(Ordering::Relaxed));
}
