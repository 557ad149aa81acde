//! A device partition: serves every static virtio link its device tree makes it the device of,
//! with `trapless_virtio`'s devices (a console that echoes, a network device that echoes every
//! frame, a RAM disk of the link's capacity), until every driver has come and gone.
//!
//! It sleeps in `WFI` until a driver's doorbell raises one of its LPIs (or, on a link where it
//! polls, looks again at once), then steps each link with a bounded budget, so one busy or
//! hostile driver cannot keep it from the others. A driver that breaks a ring rule is reported,
//! naming the link, the generation and the rule (the first [`REPORTED_FAILURES`] times; then only
//! counted, so that a driver failing on purpose cannot make this partition print, and enter EL2,
//! without end). When a driver says it has stopped, the link is done: the device reports what it
//! served and how much work each look at the link took, and once every link is done it powers
//! off. (A driver that starts again after that finds no one serving it.)

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use trapless_guest::facts::{Link, Role};
use trapless_guest::virtio::{self, Bells};
use trapless_guest::{Boot, irq, println, psci};
use trapless_virtio::binding::Kind;
use trapless_virtio::device::{AnyDevice, BlockDevice, ConsoleEcho, NetEcho};
use trapless_virtio::link::{DeviceLink, Step};
use trapless_virtio::window::RawMemory;

trapless_guest::entry!(main);

/// Chains one step of one link may move.
const BUDGET: usize = 32;
/// Ring-rule failures reported per link; later ones are only counted.
const REPORTED_FAILURES: u64 = 64;

/// A driver rang since the device last looked (every link is looked at on any ring).
static RUNG: AtomicBool = AtomicBool::new(false);
/// LPIs taken.
static TAKEN: AtomicU32 = AtomicU32::new(0);

fn rung(_lpi: u32) {
    TAKEN.fetch_add(1, Ordering::Relaxed);
    RUNG.store(true, Ordering::SeqCst);
}

/// The device for `link`; a block device's disk comes from this partition's heap.
fn device_for(link: &Link) -> Result<AnyDevice<'static>, String> {
    Ok(match link.kind {
        Kind::Console => AnyDevice::Console(ConsoleEcho::default()),
        Kind::Net => AnyDevice::Net(NetEcho::new()),
        Kind::Block => {
            let capacity = link.capacity().unwrap_or(0) as usize;
            let mut disk = Vec::new();
            disk.try_reserve_exact(capacity)
                .map_err(|_| format!("no room for a {capacity}-byte disk in this partition's memory"))?;
            disk.resize(capacity, 0);
            let read_only = link.kind.feature("RO").is_some_and(|ro| link.features & (1 << ro.bit) != 0);
            AnyDevice::Block(BlockDevice::new(disk.leak(), read_only))
        }
    })
}

/// How much work each step gave a link: the used-ring entries it wrote, over all steps and at
/// most in one.
#[derive(Default)]
struct Counted {
    steps: u64,
    used: u64,
    most: u64,
    /// Steps that wrote entries in a look at the links where another link's step did too.
    shared: u64,
}

/// Says what the device of link `name` has done.
fn report(device: &AnyDevice<'_>, name: &str, rang: u64) {
    match device {
        AnyDevice::Console(echo) => println!("virtio-device: link {name}: echoed {} bytes; rang the driver {rang} times", echo.echoed),
        AnyDevice::Net(echo) => println!(
            "virtio-device: link {name}: echoed {} frames (checksum {:#010x}), dropped {}; rang the driver {rang} times",
            echo.frames, echo.checksum, echo.dropped
        ),
        AnyDevice::Block(disk) => println!(
            "virtio-device: link {name}: served {} requests, {} refused; rang the driver {rang} times",
            disk.requests, disk.failed
        ),
    }
}

/// One link this partition serves.
struct Served {
    name: &'static str,
    link: DeviceLink<RawMemory>,
    device: AnyDevice<'static>,
    counted: Counted,
    bells: Bells,
    polls: bool,
    /// Times its driver broke a ring rule.
    failures: u64,
    /// Its step in the current look wrote used entries.
    busy: bool,
    /// The driver has stopped.
    done: bool,
}

fn main(boot: &Boot) {
    let mut links: Vec<Served> = Vec::new();
    for link in boot.links().filter(|link| link.role == Role::Device) {
        let device = match device_for(link) {
            Ok(device) => device,
            Err(problem) => {
                println!("virtio-device: link {}: not served: {problem}", link.name);
                continue;
            }
        };
        // Said before the link opens: a driver that prints on a console of its own once the
        // device is ready must not find this line half written.
        println!(
            "virtio-device: serving link {} ({}, {} queue(s) of {}{})",
            link.name,
            link.kind.name(),
            link.queue_count,
            link.queue_size,
            if link.polls() { ", polling" } else { "" }
        );
        let opened = DeviceLink::open(virtio::window(link), link.header(), link.polls());
        let bells = Bells::new(boot, link);
        let (opened, bells) = match (opened, bells) {
            (Ok(opened), Ok(bells)) => (opened, bells),
            // The window says so to the driver; the other links are served all the same.
            (Err(error), _) => {
                println!("virtio-device: link {}: not served: {error}", link.name);
                continue;
            }
            (_, Err(error)) => fail(&format!("link {}: its doorbells: {error:?}", link.name)),
        };
        if let Err(error) = virtio::on_notify(link, rung) {
            fail(&format!("link {}: its LPIs: {error:?}", link.name));
        }
        links.push(Served { name: link.name, link: opened, device, counted: Counted::default(), bells, polls: link.polls(), failures: 0, busy: false, done: false });
    }
    if links.is_empty() {
        fail("this partition serves no link");
    }
    irq::init_cpu();

    let mut looks = 0u64;
    // Links whose driver has not stopped yet.
    let mut serving = links.len();
    loop {
        looks += 1;
        let mut again = false;
        let mut busy = 0u64;
        for served in links.iter_mut().filter(|served| !served.done) {
            let step: Step = served.link.step(&mut served.device, BUDGET);
            let counted = &mut served.counted;
            counted.steps += 1;
            counted.used += u64::from(step.used);
            counted.most = counted.most.max(u64::from(step.used));
            served.busy = step.used != 0;
            busy += u64::from(served.busy);
            let mut notify = step.notify.0;
            while notify != 0 {
                served.bells.ring(notify.trailing_zeros() as usize);
                notify &= notify - 1;
            }
            if let Some(error) = step.failed {
                served.failures += 1;
                if served.failures <= REPORTED_FAILURES {
                    println!(
                        "virtio-device: link {}: generation {} of the driver broke a ring rule ({error}); waiting for it to start again",
                        served.name,
                        served.link.serving()
                    );
                }
            }
            if step.stopped {
                served.done = true;
                serving -= 1;
                report(&served.device, served.name, served.bells.rung);
                let counted = &served.counted;
                println!(
                    "virtio-device: link {}: {} steps, {} used entries, at most {} in one step (budget {BUDGET} chains), {} steps in looks where another link had work too; the driver broke ring rules {} times",
                    served.name, counted.steps, counted.used, counted.most, counted.shared, served.failures
                );
            }
            again |= step.more || served.polls;
        }
        if busy > 1 {
            links.iter_mut().filter(|served| served.busy).for_each(|served| served.counted.shared += 1);
        }
        if serving == 0 {
            break;
        }
        if !again {
            irq::wait_until(|| RUNG.load(Ordering::SeqCst));
        } else if busy == 0 {
            // Polling with nothing to do: let the driver's CPU go first where that means
            // anything (an emulator running vCPUs in turn, SMT).
            trapless_virtio::relax();
        }
        // Whatever rang from here on is seen by the next steps.
        RUNG.store(false, Ordering::SeqCst);
    }
    println!("virtio-device: every driver has finished; LPIs taken: {}; looked at the links {looks} times", TAKEN.load(Ordering::Relaxed));
}

fn fail(problem: &str) -> ! {
    println!("virtio-device: {problem}");
    psci::system_reset()
}
