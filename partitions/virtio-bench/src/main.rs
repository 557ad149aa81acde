//! The driver side of `cargo xtask bench` (`docs/performance.md`): it drives the one net link
//! its device tree gives it with virtio-drivers' `VirtIONetRaw`, against `virtio-device`'s echo,
//! over whichever transport the link has, and times it with the architected counter:
//!
//! - `workload=rtt`: `iterations` round trips, one at a time, of a frame of `size` bytes; the
//!   time of each is a sample.
//! - `workload=bulk`: a stream of `iterations` full-size frames (1514 bytes), eight in flight;
//!   the time from the first send to the last echo.
//!
//! It waits the way its transport does: sleeping in `WFI` until the link's interrupt (a
//! doorbell's LPI, or the SPI EL2 raises on a `mmio-trap` link, which it then acknowledges
//! through the transport, as a driver's interrupt handler does), or spinning on the rings when
//! the link polls. A trap-free link is guarded, as every driver's should be
//! (`StaticTransport::guarded`), with its transmit queue reaped lazily: transmit completions
//! are taken when the driver next looks, and the device is not asked to ring for them. Frames
//! are built once and sent again (only their first payload bytes change), and each echo is
//! checked after its round trip is timed. Results go to its own UART, which costs no exit, so
//! that the exits EL2 counts are the workload's alone; then it stops the link.
//!
//! Its frames and receive buffers live in the link's window (`driver::WindowBuffer`, as a
//! driver keeps DMA buffers where its device reaches them), so the transport shares them in
//! place; `buffers=bounced` keeps them in the partition's own memory instead, and each is then
//! copied through a bounce buffer in the window, as the stock drivers' own buffers are.
//!
//! The queue size is the link's: 16 or 256 (`VirtIONetRaw` takes it as a type parameter).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use trapless_guest::facts::{Link, Role};
use trapless_guest::virtio::{self, Bells};
use trapless_guest::{Boot, irq, println, psci, time};
use trapless_virtio::driver::{self, WindowBuffer, WindowHal};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::Transport;

trapless_guest::entry!(main);

/// Bytes of a receive buffer: the largest frame and the virtio-net header.
const BUFFER: usize = 2048;
/// The bulk workload's frame size (a full Ethernet frame) and frames in flight.
const BULK_FRAME: usize = 1514;
const IN_FLIGHT: usize = 8;
/// How long to wait for the device side to open the link.
const DEVICE_WAIT_SECONDS: u64 = 10;
/// Samples per output line.
const PER_LINE: usize = 24;

/// Set by the link's interrupt; cleared by the waiter.
static WOKEN: AtomicBool = AtomicBool::new(false);
/// Link interrupts taken.
static TAKEN: AtomicU64 = AtomicU64::new(0);

fn woken(_intid: u32) {
    TAKEN.fetch_add(1, Ordering::Relaxed);
    WOKEN.store(true, Ordering::SeqCst);
}

fn fail(problem: &str) -> ! {
    println!("bench: failed: {problem}");
    psci::system_reset()
}

fn number(boot: &Boot, key: &str, default: usize) -> usize {
    match boot.arg(key).map(str::parse) {
        None => default,
        Some(Ok(value)) => value,
        Some(Err(_)) => fail(&format!("{key}= takes a number")),
    }
}

fn main(boot: &Boot) {
    let Some(link) = boot.links().find(|link| link.role == Role::Driver) else { fail("no link to drive") };
    let iterations = number(boot, "iterations", 1000);
    let size = number(boot, "size", 64);
    if size == 0 || size > BULK_FRAME {
        fail(&format!("size={size}: a frame holds 1 to {BULK_FRAME} bytes"));
    }
    let workload = boot.arg("workload").unwrap_or("rtt");
    let bounced = match boot.arg("buffers") {
        None | Some("window") => false,
        Some("bounced") => true,
        Some(other) => fail(&format!("buffers={other}: the buffers are window or bounced")),
    };
    if virtio::on_notify(link, woken).is_err() {
        fail("no interrupt handler slot for the link");
    }
    irq::init_cpu();

    let opened = virtio::open_driver(link, 0, DEVICE_WAIT_SECONDS).unwrap_or_else(|problem| fail(&problem));
    let outcome = match link.queue_size {
        16 => open::<16>(boot, link, opened, Run { workload, iterations, size, bounced }),
        256 => open::<256>(boot, link, opened, Run { workload, iterations, size, bounced }),
        other => Err(format!("a queue of {other}: the bench drives queues of 16 or 256")),
    };
    if let Err(problem) = outcome {
        fail(&problem);
    }
}

/// What to measure.
#[derive(Clone, Copy)]
struct Run<'a> {
    workload: &'a str,
    iterations: usize,
    size: usize,
    /// Buffers in this partition's memory, bounced through the window (else in the window).
    bounced: bool,
}

/// Measures over the link's transport, with queues of `QUEUE`.
fn open<const QUEUE: usize>(boot: &Boot, link: &Link, opened: virtio::Opened, run: Run<'_>) -> Result<(), String> {
    match opened.mmio(link) {
        Some(mmio) => measure::<_, QUEUE>(mmio?, link, run),
        None => {
            let bells = Bells::new(boot, link).map_err(|error| format!("its doorbells: {error:?}"))?;
            measure::<_, QUEUE>(opened.transport(bells).guarded(link.config).lazy(QUEUE_TRANSMIT), link, run)
        }
    }
}

/// A frame or receive buffer: in the link's window (shared in place), or in this partition's
/// memory (bounced).
enum Buffer {
    Window(WindowBuffer<0>),
    Own(Box<[u8]>),
}

impl Buffer {
    /// `len` bytes, zeroed, where `bounced` says.
    fn new(len: usize, bounced: bool) -> Result<Self, String> {
        if bounced {
            return Ok(Self::Own(alloc::vec![0; len].into_boxed_slice()));
        }
        let mut buffer = WindowBuffer::new(len).ok_or("the window's pool has no room for the bench's buffers")?;
        buffer.fill(0);
        Ok(Self::Window(buffer))
    }
}

impl core::ops::Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Window(buffer) => buffer,
            Self::Own(buffer) => buffer,
        }
    }
}

impl core::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Window(buffer) => buffer,
            Self::Own(buffer) => buffer,
        }
    }
}

/// virtio-net's transmit queue.
const QUEUE_TRANSMIT: u16 = 1;

/// The net device, its receive buffers, and how to wait for it.
struct Bench<T: Transport, const QUEUE: usize> {
    net: VirtIONetRaw<WindowHal<0>, T, QUEUE>,
    /// Receive buffers (one more than the queue holds), by number: they stay put, and only
    /// their numbers move.
    buffers: Vec<Buffer>,
    /// The buffer posted under each token (descriptor), if any.
    posted: Vec<Option<usize>>,
    /// The buffer not posted: the last echo, once checked.
    spare: usize,
    polls: bool,
    bounced: bool,
}

impl<T: Transport, const QUEUE: usize> Bench<T, QUEUE> {
    /// Sleeps until the link's interrupt, then acknowledges it through the transport (two
    /// register accesses on `mmio-trap`, nothing on the trap-free transport); or, polling,
    /// just returns to look again.
    fn wait(&mut self) {
        if self.polls {
            trapless_virtio::relax();
            return;
        }
        irq::wait_until(|| WOKEN.load(Ordering::SeqCst));
        WOKEN.store(false, Ordering::SeqCst);
        self.net.ack_interrupt();
    }

    /// Posts buffer `number` for receiving.
    #[inline(always)]
    fn post(&mut self, number: usize) -> Result<(), String> {
        // SAFETY: the buffer stays in `buffers` until its token completes.
        let token = unsafe { self.net.receive_begin(&mut self.buffers[number]) }.map_err(|error| format!("posting a receive buffer: {error:?}"))?;
        self.posted[usize::from(token)] = Some(number);
        Ok(())
    }

    /// Brings in what the device used, on a guarded link (nothing on the others), and says
    /// why the link failed if it did; transmit completions only if `reap` (the transmit queue
    /// is reaped lazily, after the receive it waits for).
    fn look(&self, reap: bool) -> Result<(), String> {
        let failure = if reap { driver::reap(0) } else { driver::sync(0) };
        match failure {
            Some(failure) => Err(format!("the link failed: {failure}")),
            None => Ok(()),
        }
    }

    /// Takes a received frame, if one is there, and gives the device the spare receive buffer
    /// in its place: the frame's buffer number and its payload's range, to check and then make
    /// the spare ([`Self::spare`]).
    #[inline(always)]
    fn take(&mut self) -> Result<Option<(usize, core::ops::Range<usize>)>, String> {
        let Some(token) = self.net.poll_receive() else { return Ok(None) };
        let number = self.posted[usize::from(token)].take().ok_or("a receive completed for no buffer")?;
        // SAFETY: buffer `number` is the one posted under `token`.
        let (header, len) = unsafe { self.net.receive_complete(token, &mut self.buffers[number]) }.map_err(|error| format!("receiving: {error:?}"))?;
        self.post(self.spare)?;
        Ok(Some((number, header..header + len)))
    }
}

/// Whether `a` and `b` hold the same bytes. The partition's target forbids unaligned accesses,
/// so a comparison of byte slices goes byte by byte unless it is shown aligned words: up to
/// `a`'s 16-byte boundary byte by byte, then, if `b` is aligned there too (the bench's frames
/// and buffers are), the differences of its 8-byte words or-ed together four lanes at a time
/// (no early exit, which the compiler keeps to vector instructions, two lanes to a register),
/// then the words and bytes left.
fn same(a: &[u8], b: &[u8]) -> bool {
    let bytes_equal = |a: &[u8], b: &[u8]| a.iter().zip(b).all(|(x, y)| x == y);
    if a.len() != b.len() {
        return false;
    }
    let head = a.as_ptr().align_offset(16).min(a.len());
    let ((a_head, a_rest), (b_head, b_rest)) = (a.split_at(head), b.split_at(head));
    if !bytes_equal(a_head, b_head) {
        return false;
    }
    if !b_rest.as_ptr().cast::<u128>().is_aligned() {
        return bytes_equal(a_rest, b_rest);
    }
    // SAFETY: any bytes are a valid `u64`; both rests start 16-byte aligned, so neither has a
    // prefix and their words and tails have the same lengths.
    let ((_, a_words, a_tail), (_, b_words, b_tail)) = unsafe { (a_rest.align_to::<u64>(), b_rest.align_to::<u64>()) };
    let (a_lanes, b_lanes) = (a_words.chunks_exact(4), b_words.chunks_exact(4));
    let (a_left, b_left) = (a_lanes.remainder(), b_lanes.remainder());
    let mut differ = [0u64; 4];
    for (x, y) in a_lanes.zip(b_lanes) {
        for lane in 0..4 {
            differ[lane] |= x[lane] ^ y[lane];
        }
    }
    // The words left (fewer than four) into the lanes too.
    for (lane, (x, y)) in differ.iter_mut().zip(a_left.iter().zip(b_left)) {
        *lane |= x ^ y;
    }
    differ.iter().fold(0, |any, lane| any | lane) == 0 && bytes_equal(a_tail, b_tail)
}

/// A frame of `len` bytes after the virtio-net header, its payload a pattern.
fn frame<T: Transport, const QUEUE: usize>(bench: &Bench<T, QUEUE>, len: usize) -> Result<Buffer, String> {
    let mut bytes = Buffer::new(NET_HEADER + len, bench.bounced)?;
    let header = bench.net.fill_buffer_header(&mut bytes).map_err(|error| format!("{error:?}"))?;
    for (at, byte) in bytes[header..].iter_mut().enumerate() {
        *byte = (at * 7) as u8;
    }
    Ok(bytes)
}

/// Stamps `frame` with its number `index`: its first payload bytes (the rest is the pattern).
fn stamp(frame: &mut [u8], index: usize) {
    for (byte, value) in frame[NET_HEADER..].iter_mut().zip((index as u32).to_le_bytes()) {
        *byte = value;
    }
}

/// The virtio-net header's bytes, with VERSION_1.
const NET_HEADER: usize = trapless_virtio::device::NET_HEADER;

fn measure<T: Transport, const QUEUE: usize>(transport: T, link: &Link, run: Run<'_>) -> Result<(), String> {
    let Run { workload, iterations, size, bounced } = run;
    let net = VirtIONetRaw::<WindowHal<0>, T, QUEUE>::new(transport).map_err(|error| format!("{error:?}: {:?}", driver::failure(0)))?;
    let buffers = (0..=QUEUE).map(|_| Buffer::new(BUFFER, bounced)).collect::<Result<_, _>>()?;
    let mut bench = Bench { net, buffers, posted: alloc::vec![None; QUEUE], spare: QUEUE, polls: link.polls(), bounced };
    for number in 0..QUEUE {
        bench.post(number)?;
    }
    let frequency = time::frequency();
    match workload {
        "rtt" => {
            let samples = round_trips(&mut bench, iterations, size)?;
            // One write to the UART per line: nothing else runs meanwhile.
            println!("bench: workload=rtt iterations={iterations} size={size} frequency={frequency} buffers={}", if bounced { "bounced" } else { "window" });
            for chunk in samples.chunks(PER_LINE) {
                let mut line = String::from("bench: samples");
                for sample in chunk {
                    let _ = write!(line, " {sample}");
                }
                println!("{line}");
            }
        }
        "bulk" => {
            let ticks = stream(&mut bench, iterations)?;
            let bytes = iterations * BULK_FRAME;
            println!("bench: workload=bulk iterations={iterations} size={BULK_FRAME} frequency={frequency} buffers={}", if bounced { "bounced" } else { "window" });
            println!("bench: bulk frames={iterations} bytes={bytes} ticks={ticks}");
        }
        other => return Err(format!("workload={other}: the workloads are rtt and bulk")),
    }
    println!("bench: rang the device {} times, took {} interrupts", virtio::rung(), TAKEN.load(Ordering::Relaxed));
    // Dropping the driver stops the link, which lets the device partition finish and report;
    // nothing is printed here after that, so the two consoles' lines do not mix.
    drop(bench);
    Ok(())
}

/// `iterations` round trips of a `size`-byte frame; the ticks of each, from the send to the
/// echo taken in and its receive buffer given back. Each echo is checked after its time is
/// taken.
fn round_trips<T: Transport, const QUEUE: usize>(bench: &mut Bench<T, QUEUE>, iterations: usize, size: usize) -> Result<Vec<u64>, String> {
    let mut samples = Vec::with_capacity(iterations);
    let mut frame = frame(bench, size)?;
    for index in 0..iterations {
        stamp(&mut frame, index);
        let start = time::now();
        // SAFETY: `frame` lives until its transmission completes, below.
        let token = unsafe { bench.net.transmit_begin(&frame) }.map_err(|error| format!("sending: {error:?}"))?;
        // Nothing comes back before the device has run: wait first, then look.
        let (echo, payload) = loop {
            bench.wait();
            bench.look(false)?;
            if let Some(echo) = bench.take()? {
                break echo;
            }
        };
        samples.push(time::now() - start);
        if !same(&bench.buffers[echo][payload.clone()], &frame[NET_HEADER..]) {
            return Err(format!("round trip {index}: {size} bytes came back as {} different ones", payload.len()));
        }
        bench.spare = echo;
        // The device gives the transmit buffer back with the echo: reaped now, after the round
        // trip.
        bench.look(true)?;
        while bench.net.poll_transmit() != Some(token) {
            trapless_virtio::relax();
            bench.look(true)?;
        }
        // SAFETY: `frame` is the buffer sent under `token`.
        unsafe { bench.net.transmit_complete(token, &frame) }.map_err(|error| format!("{error:?}"))?;
    }
    Ok(samples)
}

/// Streams `frames` full-size frames, [`IN_FLIGHT`] at a time, and takes their echoes; the
/// ticks from the first send to the last echo. Each echo is compared with the frame sent under
/// its number.
fn stream<T: Transport, const QUEUE: usize>(bench: &mut Bench<T, QUEUE>, frames: usize) -> Result<u64, String> {
    let pattern = frame(bench, BULK_FRAME)?;
    let mut buffers = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let mut frame = Buffer::new(pattern.len(), bench.bounced)?;
        frame.copy_from_slice(&pattern);
        buffers.push(frame);
    }
    // The token each frame buffer is in flight under, if it is.
    let mut sending: [Option<u16>; IN_FLIGHT] = [None; IN_FLIGHT];
    let (mut sent, mut echoed) = (0, 0);
    let start = time::now();
    while echoed < frames {
        let mut progress = false;
        for (frame, slot) in buffers.iter_mut().zip(&mut sending).filter(|(_, slot)| slot.is_none()) {
            if sent == frames {
                break;
            }
            stamp(frame, sent);
            // SAFETY: the frame stays in `buffers` until its transmission completes.
            let token = unsafe { bench.net.transmit_begin(frame) }.map_err(|error| format!("sending: {error:?}"))?;
            *slot = Some(token);
            sent += 1;
        }
        bench.look(true)?;
        while let Some(token) = bench.net.poll_transmit() {
            let at = sending.iter().position(|slot| *slot == Some(token)).ok_or("a send completed twice")?;
            sending[at] = None;
            // SAFETY: frame `at` is the buffer sent under `token`.
            unsafe { bench.net.transmit_complete(token, &buffers[at]) }.map_err(|error| format!("{error:?}"))?;
            progress = true;
        }
        while let Some((echo, payload)) = bench.take()? {
            // Its number, then the pattern.
            let bytes = &bench.buffers[echo][payload.clone()];
            let whole = bytes.len() == BULK_FRAME && bytes[..4].iter().eq(&(echoed as u32).to_le_bytes()) && same(&bytes[4..], &pattern[NET_HEADER + 4..]);
            if !whole {
                return Err(format!("frame {echoed}: {} bytes came back, not the {BULK_FRAME} sent under its number", payload.len()));
            }
            bench.spare = echo;
            echoed += 1;
            progress = true;
        }
        if !progress {
            bench.wait();
        }
    }
    Ok(time::now() - start)
}
