//! `hostile=driver`: a driver that breaks the ring rules of its block link one case at a time,
//! and checks what the device did about each: failed the generation, served it (where the input
//! was legal after all), or let go of the rings. Whatever it did, it may have written nothing
//! but its used ring and the device-writable buffers of chains it used, and reported no more
//! bytes than those buffers hold.

use crate::count;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use trapless_guest::facts::Role;
use trapless_guest::virtio::{self, Bells};
use trapless_guest::{Boot, println, time};
use trapless_virtio::binding::{Kind, offset, state};
use trapless_virtio::device::blk;
use trapless_virtio::header::Header;
use trapless_virtio::layout::{self, DESCRIPTOR_SIZE, QueueLayout, USED_ELEMENT_SIZE};
use trapless_virtio::link::{DriverSide, Peer};
use trapless_virtio::queue::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use trapless_virtio::window::{RawMemory, Window};

/// The byte the buffer pool is filled with before each case.
const CANARY: u8 = 0xc5;
const CANARY_WORD: u64 = u64::from_ne_bytes([CANARY; 8]);
/// How long the device has to answer a case.
const ANSWER_SECONDS: u64 = 3;
/// Pool offsets of a request's header, data and status byte.
const HEADER: usize = 0;
const DATA: usize = 0x1000;
const STATUS: usize = 0x2000;
/// The flood's requests: header `i` at `FLOOD + 16 i`, status `i` at `FLOOD_STATUS + i`.
const FLOOD: usize = 0x3000;
const FLOOD_STATUS: usize = 0x4000;
/// Requests the flood keeps in flight.
const FLOOD_DEPTH: u16 = 32;
/// Restarts in the generation churn.
const CHURN: u32 = 100;
/// The sector the legal requests write and read.
const SECTOR: u64 = 3;

/// What the device did with a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Its line says `FAILED` for this generation, with this error.
    Failed(u32),
    /// It used this many chains.
    Served(u32),
    /// It let go of the rings (generation 0).
    LetGo,
    /// Nothing within [`ANSWER_SECONDS`].
    NoAnswer,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Failed(state::ERROR_RING) => f.write_str("FAILED ring"),
            Self::Failed(error) => write!(f, "FAILED error {error}"),
            Self::Served(chains) => write!(f, "served {chains}"),
            Self::LetGo => f.write_str("let go"),
            Self::NoAnswer => f.write_str("no answer"),
        }
    }
}

/// The driver of one block link, and what the current case put where.
struct Rogue {
    window: Window<RawMemory>,
    queue: QueueLayout,
    size: u16,
    pool: Range<usize>,
    bells: Bells,
    side: DriverSide,
    generation: u32,
    /// The next available index, and the used entries taken.
    avail: u16,
    used: u16,
    /// This case's chain heads made available; its bytes written into the pool (window
    /// offset, bytes); where the device may write (head, window offset, len).
    heads: Vec<u16>,
    readable: Vec<(usize, Vec<u8>)>,
    writable: Vec<(u16, usize, usize)>,
    /// The header page (header, lines, configuration) as EL2 wrote it.
    header_page: Vec<u8>,
    cases: u32,
    unexpected: u32,
    violations: u32,
}

/// The first `len` bytes of `window` at `at`.
fn bytes(window: &Window<RawMemory>, at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    let _ = window.read_bytes(at, &mut out);
    out
}

impl Rogue {
    /// The address of pool offset `at`.
    fn address(&self, at: usize) -> u64 {
        self.window.base() + (self.pool.start + at) as u64
    }

    fn descriptor(&self, index: u16, address: u64, len: u32, flags: u16, next: u16) {
        let at = self.queue.desc + DESCRIPTOR_SIZE * usize::from(index);
        let _ = self.window.write_u64(at, address);
        let _ = self.window.write_u32(at + 8, len);
        let _ = self.window.write_u16(at + 12, flags);
        let _ = self.window.write_u16(at + 14, next);
    }

    /// Puts `heads` in the available ring and moves the index past them.
    fn make_available(&mut self, heads: &[u16]) {
        for &head in heads {
            let slot = usize::from(self.avail % self.size);
            let _ = self.window.write_u16(self.queue.avail + 4 + 2 * slot, head);
            self.avail = self.avail.wrapping_add(1);
            self.heads.push(head);
        }
        self.set_avail_index(self.avail);
    }

    fn set_avail_index(&self, index: u16) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        let _ = self.window.write_u16(self.queue.avail + 2, index);
    }

    /// Writes `data` at pool offset `at`, and remembers it for the canary check.
    fn write_pool(&mut self, at: usize, data: &[u8]) {
        let _ = self.window.write_bytes(self.pool.start + at, data);
        self.readable.push((self.pool.start + at, data.to_vec()));
    }

    fn may_write(&mut self, head: u16, at: usize, len: usize) {
        self.writable.push((head, self.pool.start + at, len));
    }

    /// A legal block request in descriptors `head..`: its header, then `data` (readable bytes
    /// for a write, or this many writable bytes for a read), then the status byte.
    fn request(&mut self, head: u16, kind: u32, data: Option<Result<&[u8], usize>>) {
        let mut header = [0u8; blk::HEADER];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&SECTOR.to_le_bytes());
        self.write_pool(HEADER, &header);
        self.descriptor(head, self.address(HEADER), blk::HEADER as u32, DESC_F_NEXT, head + 1);
        let mut next = head + 1;
        match data {
            Some(Ok(bytes)) => {
                self.write_pool(DATA, bytes);
                self.descriptor(next, self.address(DATA), bytes.len() as u32, DESC_F_NEXT, next + 1);
                next += 1;
            }
            Some(Err(len)) => {
                self.may_write(head, DATA, len);
                self.descriptor(next, self.address(DATA), len as u32, DESC_F_WRITE | DESC_F_NEXT, next + 1);
                next += 1;
            }
            None => {}
        }
        self.may_write(head, STATUS, 1);
        self.descriptor(next, self.address(STATUS), 1, DESC_F_WRITE, 0);
    }

    fn ring(&mut self) {
        self.bells.ring(0);
    }

    /// Starts the link again: lets the device go of the old rings, clears them, fills the pool
    /// with the canary, and starts a new generation; waits until the device serves it.
    fn restart(&mut self) -> bool {
        let bells = &mut self.bells;
        self.side.let_go(&self.window, state::RESET, || bells.ring(0));
        for at in (self.queue.desc..self.queue.end).step_by(8) {
            let _ = self.window.write_u64(at, 0);
        }
        for at in self.pool.clone().step_by(8) {
            let _ = self.window.write_u64(at, CANARY_WORD);
        }
        self.avail = 0;
        self.used = 0;
        self.heads.clear();
        self.readable.clear();
        self.writable.clear();
        self.side.start(&self.window);
        self.generation = self.window.read_u32(offset::DRIVER_STATE + state::GENERATION).unwrap_or(0);
        self.ring();
        let deadline = time::now() + ANSWER_SECONDS * time::frequency();
        while time::now() < deadline {
            let device = Peer::read(&self.window);
            if device.state == state::READY && device.generation == self.generation {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }

    /// Waits for the device's answer: it fails this generation, lets go of it, or uses
    /// `chains` chains.
    fn answer(&self, chains: u32) -> Outcome {
        let deadline = time::now() + ANSWER_SECONDS * time::frequency();
        loop {
            let device = Peer::read(&self.window);
            if device.state == state::FAILED && device.generation == self.generation {
                return Outcome::Failed(device.error);
            }
            if device.generation == 0 && matches!(device.state, state::READY | state::FAILED) {
                return Outcome::LetGo;
            }
            let used = self.window.read_u16(self.queue.used + 2).unwrap_or(0).wrapping_sub(self.used);
            if u32::from(used) >= chains {
                return Outcome::Served(u32::from(used));
            }
            if time::now() >= deadline {
                return Outcome::NoAnswer;
            }
            core::hint::spin_loop();
        }
    }

    /// Takes the used entries the device wrote: each must name a head of this case and report
    /// no more bytes than that chain's writable buffers hold. Returns what is wrong, and the
    /// (head, len) taken.
    fn take_used(&mut self, problems: &mut Vec<String>) -> Vec<(u16, u32)> {
        let index = self.window.read_u16(self.queue.used + 2).unwrap_or(self.used);
        let mut taken = Vec::new();
        while self.used != index {
            let element = self.queue.used + 4 + USED_ELEMENT_SIZE * usize::from(self.used % self.size);
            let id = self.window.read_u32(element).unwrap_or(u32::MAX);
            let len = self.window.read_u32(element + 4).unwrap_or(u32::MAX);
            self.used = self.used.wrapping_add(1);
            let Some(head) = u16::try_from(id).ok().filter(|head| self.heads.contains(head)) else {
                problems.push(format!("used id {id} names no chain made available"));
                continue;
            };
            let room: usize = self.writable.iter().filter(|(owner, ..)| *owner == head).map(|&(_, _, len)| len).sum();
            if len as usize > room {
                problems.push(format!("used length {len} for chain {head}, whose writable buffers hold {room}"));
            }
            taken.push((head, len));
        }
        taken
    }

    /// What the device wrote outside its used ring and the writable buffers it may write:
    /// the driver area (descriptors, available ring) must be as `driver_area` was, the header
    /// page as EL2 wrote it (but the state lines), and the pool the canary but for what this
    /// case wrote.
    fn check_writes(&self, driver_area: &[u8], header_scribbled: bool, problems: &mut Vec<String>) {
        if bytes(&self.window, self.queue.desc, driver_area.len()) != driver_area {
            problems.push(String::from("the descriptor table or available ring changed"));
        }
        let page = bytes(&self.window, 0, self.header_page.len());
        let lines = offset::DRIVER_STATE..offset::CONFIG_GENERATION;
        let same = page.iter().zip(&self.header_page).enumerate().all(|(at, (now, was))| lines.contains(&at) || now == was);
        if !header_scribbled && !same {
            problems.push(String::from("the header or configuration space changed"));
        }
        let spans: Vec<(usize, usize)> = self
            .readable
            .iter()
            .map(|(at, data)| (*at, data.len()))
            .chain(self.writable.iter().map(|&(_, at, len)| (at, len)))
            .collect();
        for word in self.pool.clone().step_by(8) {
            let busy = spans.iter().any(|&(at, len)| at < word + 8 && word < at + len);
            if !busy {
                if self.window.read_u64(word) != Ok(CANARY_WORD) {
                    problems.push(format!("the pool changed at window offset {word:#x}"));
                    return;
                }
                continue;
            }
            for at in word..word + 8 {
                if self.writable.iter().any(|&(_, start, len)| (start..start + len).contains(&at)) {
                    continue;
                }
                let expected = self
                    .readable
                    .iter()
                    .rev()
                    .find(|(start, data)| (*start..start + data.len()).contains(&at))
                    .map_or(CANARY, |(start, data)| data[at - start]);
                if self.window.read_u8(at) != Ok(expected) {
                    problems.push(format!("the pool changed at window offset {at:#x}"));
                    return;
                }
            }
        }
    }

    /// Runs one case: starts the link again, lets `set_up` write the rings and make `chains`
    /// chains available, rings, and reports what the device did against `expected`; `verify`
    /// then checks what a served case got back.
    fn case(&mut self, name: &str, expected: Outcome, set_up: impl FnOnce(&mut Self), verify: impl FnOnce(&Self, &[(u16, u32)]) -> Option<String>) {
        self.cases += 1;
        let mut problems = Vec::new();
        if !self.restart() {
            problems.push(String::from("the device did not serve the new generation"));
        }
        set_up(self);
        let driver_area = bytes(&self.window, self.queue.desc, self.queue.used - self.queue.desc);
        self.ring();
        let wanted = match expected {
            Outcome::Served(chains) => chains,
            _ => 1,
        };
        let outcome = self.answer(wanted);
        let taken = self.take_used(&mut problems);
        self.check_writes(&driver_area, name == "header-garbage", &mut problems);
        if let Some(problem) = verify(self, &taken) {
            problems.push(problem);
        }
        self.report(name, outcome, expected, problems);
    }

    fn report(&mut self, name: &str, outcome: Outcome, expected: Outcome, problems: Vec<String>) {
        let mut line = format!("hostile: case {name}: device {outcome} (generation {})", self.generation);
        if outcome != expected {
            self.unexpected += 1;
            line += &format!("; UNEXPECTED, expected {expected}");
        }
        if !problems.is_empty() {
            self.violations += 1;
            line += &format!("; VIOLATION: {}", problems.join("; "));
        }
        println!("{line}");
    }

    /// The status byte of the single request of a case.
    fn status(&self) -> u8 {
        self.window.read_u8(self.pool.start + STATUS).unwrap_or(0xff)
    }
}

/// A small deterministic generator (xorshift64*), for the garbage.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The sector the legal write puts down, and the legal read must get back.
fn pattern() -> Vec<u8> {
    (0..512).map(|at| (at * 7 + 3) as u8).collect()
}

/// `verify` for a case whose single request must come back with `status`, `len` bytes used.
fn answered(status: u8, len: u32) -> impl FnOnce(&Rogue, &[(u16, u32)]) -> Option<String> {
    move |rogue, taken| {
        let got = (rogue.status(), taken.first().map(|&(_, len)| len));
        (got != (status, Some(len))).then(|| format!("status {} and used length {:?}, not {status} and {len}", got.0, got.1))
    }
}

fn nothing(_: &Rogue, _: &[(u16, u32)]) -> Option<String> {
    None
}

pub fn run(boot: &Boot) {
    let Some(link) = boot.links().find(|link| link.role == Role::Driver) else { crate::fail("this partition drives no link") };
    if link.kind != Kind::Block || link.queue_size < 64 {
        crate::fail("the hostile driver wants a block link of at least 64 entries");
    }
    let window = virtio::window(link);
    if let Err(error) = Header::check(&window, &link.header()) {
        crate::fail(&format!("link {}: {error:?}", link.name));
    }
    let layout = match layout::compute(1, u32::from(link.queue_size), window.len()) {
        Ok(layout) => layout,
        Err(error) => crate::fail(&format!("link {}: {error}", link.name)),
    };
    if let Err(device) = virtio::wait_for_device(&window, 10) {
        crate::fail(&format!("link {}: the device is not ready (state {})", link.name, device.state));
    }
    let bells = match Bells::new(boot, link) {
        Ok(bells) => bells,
        Err(error) => crate::fail(&format!("link {}: its doorbells: {error:?}", link.name)),
    };
    let side = DriverSide::new(&window);
    let header_page = bytes(&window, 0, offset::CONFIG + link.config.len());
    let mut rogue = Rogue {
        queue: layout.queues[0],
        size: link.queue_size,
        pool: layout.pool.clone(),
        window,
        bells,
        side,
        generation: 0,
        avail: 0,
        used: 0,
        heads: Vec::new(),
        readable: Vec::new(),
        writable: Vec::new(),
        header_page,
        cases: 0,
        unexpected: 0,
        violations: 0,
    };
    println!("hostile: driving link {} ({} entries, pool {:#x} bytes)", link.name, link.queue_size, layout.pool.len());
    // The load first, while the device partition's other drivers are at work.
    load(&mut rogue, count(boot, "storm", 50_000), count(boot, "flood", 20_000));
    ring_rules(&mut rogue);
    window_and_lines(&mut rogue);
    let bells = &mut rogue.bells;
    rogue.side.let_go(&rogue.window, state::STOPPED, || bells.ring(0));
    println!(
        "hostile: {} cases, {} unexpected, {} violations; rang the device {} times",
        rogue.cases, rogue.unexpected, rogue.violations, rogue.bells.rung
    );
}

/// Legal requests, then one case for each ring rule.
fn ring_rules(rogue: &mut Rogue) {
    let fail = Outcome::Failed(state::ERROR_RING);
    let size = rogue.size;
    rogue.case("legal-write", Outcome::Served(1), |r| {
        r.request(0, blk::T_OUT, Some(Ok(&pattern())));
        r.make_available(&[0]);
    }, answered(blk::S_OK, 1));
    rogue.case("legal-read", Outcome::Served(1), |r| {
        r.request(0, blk::T_IN, Some(Err(512)));
        r.make_available(&[0]);
    }, |r, taken| {
        let data = bytes(&r.window, r.pool.start + DATA, 512);
        answered(blk::S_OK, 513)(r, taken).or_else(|| (data != pattern()).then(|| String::from("the sector read back wrong")))
    });
    rogue.case("garbage-descriptors", fail, |r| {
        let mut random = Random(0x6861_7374_696c_6521);
        for at in (r.queue.desc..r.queue.avail).step_by(8) {
            let _ = r.window.write_u64(at, random.next());
        }
        r.make_available(&[0]);
    }, nothing);
    rogue.case("descriptor-loop", fail, |r| {
        r.descriptor(0, r.address(HEADER), 16, DESC_F_NEXT, 1);
        r.descriptor(1, r.address(HEADER), 16, DESC_F_NEXT, 0);
        r.make_available(&[0]);
    }, nothing);
    rogue.case("self-loop", fail, |r| {
        r.descriptor(0, r.address(HEADER), 16, DESC_F_NEXT, 0);
        r.make_available(&[0]);
    }, nothing);
    rogue.case("chain-longer-than-ring", fail, |r| {
        for index in 0..size {
            r.descriptor(index, r.address(HEADER), 16, DESC_F_NEXT, (index + 1) % size);
        }
        r.make_available(&[0]);
    }, nothing);
    rogue.case("chain-of-17", fail, |r| {
        for index in 0..17 {
            r.descriptor(index, r.address(HEADER), 16, if index < 16 { DESC_F_NEXT } else { 0 }, index + 1);
        }
        r.make_available(&[0]);
    }, nothing);
    rogue.case("next-beyond-queue", fail, |r| {
        r.descriptor(0, r.address(HEADER), 16, DESC_F_NEXT, u16::MAX);
        r.make_available(&[0]);
    }, nothing);
    rogue.case("head-beyond-queue", fail, |r| r.make_available(&[size]), nothing);
    rogue.case("avail-index-jump", fail, |r| r.set_avail_index(size + 1), nothing);
    rogue.case("avail-index-behind", fail, |r| r.set_avail_index(u16::MAX), nothing);
    rogue.case("avail-index-half", fail, |r| r.set_avail_index(0x8000), nothing);
    rogue.case("indirect", fail, |r| {
        r.descriptor(0, r.address(HEADER), 16, DESC_F_INDIRECT, 0);
        r.make_available(&[0]);
    }, nothing);
    rogue.case("unknown-flags", Outcome::Served(1), |r| {
        r.request(0, blk::T_FLUSH, None);
        // Bits 3 to 15: no meaning for a split ring; the device ignores them.
        r.descriptor(0, r.address(HEADER), 16, DESC_F_NEXT | 0xfff8, 1);
        r.make_available(&[0]);
    }, answered(blk::S_OK, 1));
    rogue.case("read-after-write", fail, |r| {
        r.descriptor(0, r.address(STATUS), 1, DESC_F_WRITE | DESC_F_NEXT, 1);
        r.descriptor(1, r.address(HEADER), 16, 0, 0);
        r.make_available(&[0]);
    }, nothing);
    rogue.case("zero-length-header", Outcome::Served(1), |r| {
        r.request(0, blk::T_FLUSH, None);
        r.descriptor(0, r.address(HEADER), 0, DESC_F_NEXT, 1);
        r.make_available(&[0]);
    }, answered(blk::S_IOERR, 1));
    rogue.case("no-status-byte", Outcome::Served(1), |r| {
        r.request(0, blk::T_FLUSH, None);
        r.descriptor(0, r.address(HEADER), 16, 0, 0);
        r.writable.clear();
        r.make_available(&[0]);
    }, |_, taken| (taken != [(0, 0)]).then(|| format!("used {taken:?}, not chain 0 with 0 bytes")));
    rogue.case("same-head-twice", Outcome::Served(2), |r| {
        r.request(0, blk::T_FLUSH, None);
        r.make_available(&[0, 0]);
    }, |r, taken| (taken != [(0, 1), (0, 1)] || r.status() != blk::S_OK).then(|| format!("used {taken:?}")));
}

/// Buffers that leave the pool, and garbage in the window outside the rings.
fn window_and_lines(rogue: &mut Rogue) {
    let fail = Outcome::Failed(state::ERROR_RING);
    let base = rogue.window.base();
    let window_size = rogue.window.len() as u64;
    // A chain of one buffer.
    let alone = |address: u64, len: u32, flags: u16| {
        move |r: &mut Rogue| {
            r.descriptor(0, address, len, flags, 0);
            r.make_available(&[0]);
        }
    };
    rogue.case("buffer-below-window", fail, alone(base - 0x1000, 16, 0), nothing);
    rogue.case("buffer-over-header", fail, alone(base, 64, DESC_F_WRITE), nothing);
    let used = base + rogue.queue.used as u64;
    rogue.case("buffer-over-used-ring", fail, alone(used, 16, DESC_F_WRITE), nothing);
    rogue.case("buffer-past-window-end", fail, alone(base + window_size - 8, 16, DESC_F_WRITE), nothing);
    rogue.case("address-wraps", fail, alone(u64::MAX - 15, 32, DESC_F_WRITE), nothing);
    let pool = rogue.address(0);
    rogue.case("huge-length", fail, alone(pool, u32::MAX, DESC_F_WRITE), nothing);
    let whole = rogue.pool.len() as u32;
    rogue.case("pool-named-twice", fail, |r| {
        r.descriptor(0, pool, whole, DESC_F_NEXT, 1);
        r.descriptor(1, pool, whole, 0, 0);
        r.make_available(&[0]);
    }, nothing);
    rogue.case("header-garbage", Outcome::Served(1), |r| {
        // The magic, the queue size and the window size, and a capacity of 2^62 sectors.
        let _ = r.window.write_u64(0, 0);
        let _ = r.window.write_u16(0x1a, u16::MAX);
        let _ = r.window.write_u32(0x20, 0);
        let _ = r.window.write_u64(offset::CONFIG, 1 << 62);
        r.request(0, blk::T_FLUSH, None);
        r.make_available(&[0]);
    }, |r, taken| {
        let verdict = answered(blk::S_OK, 1)(r, taken);
        let _ = r.window.write_bytes(0, &r.header_page);
        verdict
    });
    rogue.case("device-line-garbage", Outcome::Served(1), |r| {
        for (field, value) in [(state::ERROR, u32::MAX), (state::GENERATION, 0xa5a5_a5a5), (state::STATE, 0x5a5a_5a5a)] {
            let _ = r.window.write_u32(offset::DEVICE_STATE + field, value);
        }
        r.request(0, blk::T_FLUSH, None);
        r.make_available(&[0]);
    }, answered(blk::S_OK, 1));
    rogue.case("used-ring-garbage", Outcome::Served(1), |r| {
        let _ = r.window.write_u16(r.queue.used, 0xffff);
        for at in (r.queue.used + 4..r.queue.end).step_by(4) {
            let _ = r.window.write_u32(at, 0xdead_beef);
        }
        r.request(0, blk::T_FLUSH, None);
        r.make_available(&[0]);
    }, answered(blk::S_OK, 1));
    rogue.case("driver-line-garbage", Outcome::LetGo, |r| {
        let _ = r.window.write_u32(offset::DRIVER_STATE + state::GENERATION, 0x1234_5678);
        let _ = r.window.write_u32(offset::DRIVER_STATE + state::STATE, 0xdead_beef);
    }, nothing);
    rogue.case("generation-churn", Outcome::Served(1), |r| {
        for _ in 0..CHURN {
            r.restart();
        }
        r.request(0, blk::T_FLUSH, None);
        r.make_available(&[0]);
    }, answered(blk::S_OK, 1));
}

/// A doorbell storm with nothing to do, then a full queue kept full.
fn load(rogue: &mut Rogue, storm: u64, flood: u64) {
    rogue.case("doorbell-storm", Outcome::Served(1), |r| {
        for _ in 0..storm {
            r.ring();
        }
        r.request(0, blk::T_FLUSH, None);
        r.make_available(&[0]);
    }, answered(blk::S_OK, 1));
    println!("hostile: storm: rang the device {storm} times with nothing available");
    flood_queue(rogue, flood);
}

/// Keeps [`FLOOD_DEPTH`] flush requests in flight, making each available again as soon as the
/// device used it, until `total` were used: a driver that keeps its queue full. Every used
/// element must name one of them and report its one status byte, which must say OK.
fn flood_queue(rogue: &mut Rogue, total: u64) {
    rogue.cases += 1;
    let mut problems = Vec::new();
    if !rogue.restart() {
        problems.push(String::from("the device did not serve the new generation"));
    }
    let heads: Vec<u16> = (0..FLOOD_DEPTH).map(|request| 2 * request).collect();
    for &head in &heads {
        let request = usize::from(head / 2);
        let mut header = [0u8; blk::HEADER];
        header[..4].copy_from_slice(&blk::T_FLUSH.to_le_bytes());
        rogue.write_pool(FLOOD + 16 * request, &header);
        rogue.may_write(head, FLOOD_STATUS + request, 1);
        rogue.descriptor(head, rogue.address(FLOOD + 16 * request), blk::HEADER as u32, DESC_F_NEXT, head + 1);
        rogue.descriptor(head + 1, rogue.address(FLOOD_STATUS + request), 1, DESC_F_WRITE, 0);
    }
    let table = bytes(&rogue.window, rogue.queue.desc, rogue.queue.avail - rogue.queue.desc);
    rogue.make_available(&heads);
    rogue.ring();
    let mut done = 0u64;
    let deadline = time::now() + 10 * ANSWER_SECONDS * time::frequency();
    let outcome = loop {
        let device = Peer::read(&rogue.window);
        if device.state == state::FAILED {
            break Outcome::Failed(device.error);
        }
        let taken = rogue.take_used(&mut problems);
        for &(head, len) in &taken {
            let status = rogue.window.read_u8(rogue.pool.start + FLOOD_STATUS + usize::from(head / 2));
            if len != 1 || status != Ok(blk::S_OK) {
                problems.push(format!("request {head} came back with {len} bytes, status {status:?}"));
            }
            // Again, as soon as it is back (the available ring may run a queue ahead).
            let slot = usize::from(rogue.avail % rogue.size);
            let _ = rogue.window.write_u16(rogue.queue.avail + 4 + 2 * slot, head);
            rogue.avail = rogue.avail.wrapping_add(1);
        }
        if !taken.is_empty() {
            done += taken.len() as u64;
            rogue.set_avail_index(rogue.avail);
            rogue.ring();
        }
        if done >= total || !problems.is_empty() {
            break Outcome::Served(done.min(total) as u32);
        }
        if time::now() >= deadline {
            break Outcome::NoAnswer;
        }
        core::hint::spin_loop();
    };
    if bytes(&rogue.window, rogue.queue.desc, table.len()) != table {
        problems.push(String::from("the descriptor table changed"));
    }
    let expected = Outcome::Served(total as u32);
    rogue.report("flood", outcome, expected, problems);
    println!("hostile: flood: {done} requests through a queue kept {FLOOD_DEPTH} deep");
}
