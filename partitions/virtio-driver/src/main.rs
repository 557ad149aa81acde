//! A driver partition: drives every static virtio link its device tree makes it the driver of,
//! with the stock virtio-drivers drivers on `trapless_virtio`'s transport, and checks what comes
//! back:
//!
//! - console: sends `lines=N` lines (default 20) and reads each one back, byte-exact;
//! - net: sends `frames=N` frames (default 64) of mixed sizes, eight in flight at a time, and
//!   checks each one comes back whole; reports the checksums both ways;
//! - block: `passes=N` times (default 1) writes a pattern over the whole disk and reads it back;
//!   then reads one sector past the end, which must be refused.
//!
//! Trap-free links are guarded (`StaticTransport::guarded`): whatever the device writes, the
//! stock drivers never see an unchecked used element or configuration byte, so a hostile device
//! fails its link rather than panic this partition. Each driver is dropped when its work is
//! done, or when its link failed, which stops the link: that tells the device partition this
//! driver has finished. A failed link is reported and the other links are driven all the same;
//! at the end, a failed link that `may-fail=<link>,<link>...` does not name resets the
//! partition, so it stops as failed.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use trapless_guest::facts::{Link, Role};
use trapless_guest::virtio::{self, Bells};
use trapless_guest::{Boot, irq, println, psci};
use trapless_virtio::binding::Kind;
use trapless_virtio::device::{CHECKSUM_SEED, checksum};
use trapless_virtio::driver::{self, WindowHal};
use virtio_drivers::transport::Transport;
use virtio_drivers::Error;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::device::net::VirtIONet;

trapless_guest::entry!(main);

/// The net driver's queue size (a type parameter of virtio-drivers' `VirtIONet`): a net link
/// this partition drives must have this `queue-size`.
const NET_QUEUE: usize = 16;
/// Bytes of each net receive buffer: a full Ethernet frame and the virtio-net header.
const NET_BUFFER: usize = 2048;
/// Net frames in flight at once.
const NET_WINDOW: usize = 8;
/// Frame sizes the net stream cycles through: minimum, maximum and odd ones between.
const FRAME_SIZES: [usize; 8] = [60, 1514, 333, 64, 1000, 42, 777, 128];
/// Sectors per block request.
const BLOCK_CHUNK: usize = 8;
/// How long to wait for the device side of a link to open it.
const DEVICE_WAIT_SECONDS: u64 = 10;

/// Link interrupts taken (LPIs, or the SPI of a `mmio-trap` link), over every link.
static TAKEN: AtomicU64 = AtomicU64::new(0);

fn taken(_lpi: u32) {
    TAKEN.fetch_add(1, Ordering::Relaxed);
}

fn main(boot: &Boot) {
    let links: Vec<&Link> = boot.links().filter(|link| link.role == Role::Driver).collect();
    if links.is_empty() {
        fail("this partition is the driver of no link");
    }
    for link in &links {
        if let Err(error) = virtio::on_notify(link, taken) {
            fail(&format!("link {}: its LPIs: {error:?}", link.name));
        }
    }
    irq::init_cpu();
    let may_fail: Vec<&str> = boot.arg("may-fail").map(|names| names.split(',').collect()).unwrap_or_default();
    let mut failed = Vec::new();
    for (slot, link) in links.into_iter().enumerate() {
        let outcome = match slot {
            0 => drive::<0>(boot, link, slot),
            1 => drive::<1>(boot, link, slot),
            2 => drive::<2>(boot, link, slot),
            3 => drive::<3>(boot, link, slot),
            4 => drive::<4>(boot, link, slot),
            5 => drive::<5>(boot, link, slot),
            6 => drive::<6>(boot, link, slot),
            _ => drive::<7>(boot, link, slot),
        };
        match outcome {
            Ok(report) => println!("virtio-driver: link {}: {report}", link.name),
            Err(problem) => {
                println!("virtio-driver: link {}: failed: {problem}", link.name);
                failed.push(link.name);
            }
        }
    }
    println!(
        "virtio-driver: done; rang the device {} times, took {} interrupts",
        virtio::rung(),
        TAKEN.load(Ordering::Relaxed)
    );
    let unexpected: Vec<&str> = failed.iter().copied().filter(|name| !may_fail.contains(name)).collect();
    if !unexpected.is_empty() {
        fail(&format!("links failed: {}", unexpected.join(", ")));
    }
}

fn fail(problem: &str) -> ! {
    println!("virtio-driver: {problem}");
    psci::system_reset()
}

/// A bootarg count, or its default.
fn count(boot: &Boot, key: &str, default: usize) -> usize {
    match boot.arg(key).map(str::parse) {
        None => default,
        Some(Ok(value)) => value,
        Some(Err(_)) => fail(&format!("{key}= takes a number")),
    }
}

/// Opens link `link` in slot `SLOT` and runs its workload; returns what to report.
fn drive<const SLOT: usize>(boot: &Boot, link: &Link, slot: usize) -> Result<String, String> {
    let opened = virtio::open_driver(link, slot, DEVICE_WAIT_SECONDS)?;
    match opened.mmio(link) {
        Some(mmio) => run::<SLOT, _>(boot, link, mmio?),
        None => {
            let bells = Bells::new(boot, link).map_err(|error| format!("its doorbells: {error:?}"))?;
            run::<SLOT, _>(boot, link, opened.transport(bells).guarded(link.config))
        }
    }
}

/// Runs `link`'s workload over `transport`, whose `Hal` is slot `SLOT`'s.
fn run<const SLOT: usize, T: Transport>(boot: &Boot, link: &Link, transport: T) -> Result<String, String> {
    match link.kind {
        Kind::Console => console::<SLOT, T>(transport, count(boot, "lines", 20)),
        Kind::Net => net::<SLOT, T>(transport, count(boot, "frames", 64)),
        Kind::Block => block::<SLOT, T>(transport, count(boot, "passes", 1)),
    }
}

/// On a guarded link, takes in what the device used, and says why the link failed if it did.
/// Drivers that poll for receive buffers call it as they poll.
fn check(slot: usize) -> Result<(), String> {
    match driver::sync(slot) {
        Some(failure) => Err(format!("link failed: {failure}")),
        None => Ok(()),
    }
}

/// `error`, from the stock driver, with why the link failed if it did (asked while the driver
/// lives: the slot is freed with it).
fn stock(what: &str, error: Error, slot: usize) -> String {
    match driver::failure(slot) {
        Some(failure) => format!("{what}: {error:?}; link failed: {failure}"),
        None => format!("{what}: {error:?}"),
    }
}

fn console<const SLOT: usize, T: Transport>(transport: T, lines: usize) -> Result<String, String> {
    let mut console = VirtIOConsole::<WindowHal<SLOT>, _>::new(transport).map_err(|error| stock("starting", error, SLOT))?;
    let mut bytes = 0;
    for index in 0..lines {
        let line = format!("line {index} of {lines}: the quick brown fox {}\n", "*".repeat(index % 40));
        console.send_bytes(line.as_bytes()).map_err(|error| stock(&format!("sending line {index}"), error, SLOT))?;
        let mut echoed = Vec::with_capacity(line.len());
        while echoed.len() < line.len() {
            check(SLOT)?;
            if let Some(byte) = console.recv(true).map_err(|error| stock(&format!("receiving line {index}"), error, SLOT))? {
                echoed.push(byte);
            }
        }
        if echoed != line.as_bytes() {
            return Err(format!("line {index} came back as {:?}", String::from_utf8_lossy(&echoed)));
        }
        bytes += line.len();
    }
    Ok(format!("{lines} lines ({bytes} bytes) echoed byte-exact"))
}

fn frame(index: usize) -> impl Iterator<Item = u8> {
    (0..FRAME_SIZES[index % FRAME_SIZES.len()]).map(move |at| (at * 13 + index) as u8)
}

fn net<const SLOT: usize, T: Transport>(transport: T, frames: usize) -> Result<String, String> {
    let mut net = VirtIONet::<WindowHal<SLOT>, _, NET_QUEUE>::new(transport, NET_BUFFER).map_err(|error| stock("starting", error, SLOT))?;
    let (mut sent, mut received, mut bytes) = (CHECKSUM_SEED, CHECKSUM_SEED, 0);
    let mut next = 0;
    while next < frames {
        let batch = next..(next + NET_WINDOW).min(frames);
        for index in batch.clone() {
            let mut buffer = net.new_tx_buffer(FRAME_SIZES[index % FRAME_SIZES.len()]);
            buffer.packet_mut().iter_mut().zip(frame(index)).for_each(|(byte, value)| *byte = value);
            sent = checksum(sent, buffer.packet());
            net.send(buffer).map_err(|error| stock(&format!("sending frame {index}"), error, SLOT))?;
        }
        for index in batch {
            let back = loop {
                check(SLOT)?;
                match net.receive() {
                    Ok(back) => break back,
                    Err(Error::NotReady) => trapless_virtio::relax(),
                    Err(error) => return Err(stock(&format!("receiving frame {index}"), error, SLOT)),
                }
            };
            if !back.packet().iter().copied().eq(frame(index)) {
                return Err(format!("frame {index} came back as {} different bytes", back.packet().len()));
            }
            received = checksum(received, back.packet());
            bytes += back.packet().len();
            net.recycle_rx_buffer(back).map_err(|error| stock(&format!("recycling frame {index}"), error, SLOT))?;
        }
        next += NET_WINDOW;
    }
    Ok(format!(
        "{frames} frames ({bytes} bytes) sent and received whole; checksum sent {sent:#010x}, received {received:#010x}"
    ))
}

fn pattern(pass: usize, sector: usize, out: &mut [u8]) {
    for (at, byte) in out.iter_mut().enumerate() {
        *byte = (sector * 31 + at * 7 + pass * 101) as u8;
    }
}

fn block<const SLOT: usize, T: Transport>(transport: T, passes: usize) -> Result<String, String> {
    let mut disk = VirtIOBlk::<WindowHal<SLOT>, _>::new(transport).map_err(|error| stock("starting", error, SLOT))?;
    let sectors = disk.capacity() as usize;
    let mut buffer = vec![0u8; BLOCK_CHUNK * SECTOR_SIZE];
    let mut expected = vec![0u8; SECTOR_SIZE];
    for pass in 0..passes {
        for start in (0..sectors).step_by(BLOCK_CHUNK) {
            let chunk = &mut buffer[..(sectors - start).min(BLOCK_CHUNK) * SECTOR_SIZE];
            for (offset, sector) in chunk.chunks_mut(SECTOR_SIZE).enumerate() {
                pattern(pass, start + offset, sector);
            }
            disk.write_blocks(start, chunk).map_err(|error| stock(&format!("writing sector {start}"), error, SLOT))?;
        }
        for start in (0..sectors).step_by(BLOCK_CHUNK) {
            let chunk = &mut buffer[..(sectors - start).min(BLOCK_CHUNK) * SECTOR_SIZE];
            disk.read_blocks(start, chunk).map_err(|error| stock(&format!("reading sector {start}"), error, SLOT))?;
            for (offset, sector) in chunk.chunks(SECTOR_SIZE).enumerate() {
                pattern(pass, start + offset, &mut expected);
                if sector != expected {
                    return Err(format!("pass {pass}: sector {} read back wrong", start + offset));
                }
            }
        }
    }
    let refusal = match disk.read_blocks(sectors, &mut buffer[..SECTOR_SIZE]) {
        Err(error) => format!("{error:?}"),
        Ok(()) => return Err(format!("a read of sector {sectors}, past the end, was not refused")),
    };
    Ok(format!(
        "{passes} pass(es) over {sectors} sectors written and read back; a read past the end was refused ({refusal})"
    ))
}
