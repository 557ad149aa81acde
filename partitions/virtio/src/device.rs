//! The devices trapless's device partitions implement on top of [`DeviceQueue`]: a console that
//! echoes what it is sent, a network device that echoes every frame, and a block device that
//! serves a disk. Each `service` call does a bounded amount of work, so a driver that keeps the
//! queues full cannot keep the device partition from its other links.

use crate::queue::{Chain, DeviceQueue, QueueError};
use crate::window::{Memory, Visit, Window};

/// A set of a link's queues, by index: those a `service` call gave used buffers to, or those
/// whose driver wants a notification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSet(pub u8);

impl QueueSet {
    /// Adds queue `queue`.
    pub fn mark(&mut self, queue: usize) {
        self.0 |= 1 << queue;
    }

    /// Whether queue `queue` is in the set.
    pub fn has(&self, queue: usize) -> bool {
        self.0 & (1 << queue) != 0
    }
}

/// A device behind a link: it serves its queues.
pub trait Device {
    /// Moves at most `budget` chains through `queues` (the link's, in queue order).
    fn service<M: Memory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError>;

    /// Forgets every chain it holds: the driver has started again.
    fn reset(&mut self);

    /// The queues whose new buffers it needs to hear of before it sleeps: those it would take
    /// work from now. The others are left quiet (no doorbell for each buffer given back).
    fn waits_for(&self, queue_count: usize) -> QueueSet {
        QueueSet(((1u16 << queue_count) - 1) as u8)
    }
}

/// Bytes copied through the device's own memory at a time (block requests).
const CHUNK: usize = 256;

/// Copies the rest of `from`'s readable bytes into `to`'s writable bytes, as far as they go,
/// window to window, showing `visit` each byte; returns how many.
fn copy_across<M: Memory>(
    window: &Window<M>,
    from: &mut crate::queue::Cursor<'_>,
    to: &mut crate::queue::Cursor<'_>,
    visit: &mut impl Visit,
) -> Result<usize, QueueError> {
    let mut copied = 0;
    while let Some((source, len)) = from.piece(usize::MAX) {
        let Some((target, len)) = to.piece(len) else { break };
        window.copy(source, target, len, &mut *visit)?;
        from.advance(len);
        to.advance(len);
        copied += len;
    }
    Ok(copied)
}

/// A transmitted chain being echoed: the chain, and how many of its readable bytes are done.
#[derive(Clone, Copy, Debug)]
struct Held {
    chain: Chain,
    consumed: usize,
}

/// The receive queue (device to driver) and transmit queue (driver to device) of console and
/// net devices.
const RECEIVE: usize = 0;
const TRANSMIT: usize = 1;

/// What an echo device waits for: the transmit queue, and the receive queue while it holds
/// something it has nowhere to echo.
fn echo_waits_for(holding: bool) -> QueueSet {
    let mut queues = QueueSet::default();
    queues.mark(TRANSMIT);
    if holding {
        queues.mark(RECEIVE);
    }
    queues
}

/// A console that writes back everything it is sent, byte for byte, in order.
#[derive(Clone, Debug, Default)]
pub struct ConsoleEcho {
    held: Option<Held>,
    /// Bytes echoed so far.
    pub echoed: u64,
}

impl Device for ConsoleEcho {
    fn reset(&mut self) {
        self.held = None;
    }

    /// Lines to echo; receive buffers only while it holds a line it cannot place.
    fn waits_for(&self, _queue_count: usize) -> QueueSet {
        echo_waits_for(self.held.is_some())
    }

    fn service<M: Memory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        let mut used = QueueSet::default();
        for _ in 0..budget {
            let held = match self.held.take() {
                Some(held) => held,
                None => match queues[TRANSMIT].pop(window)? {
                    Some(chain) => Held { chain, consumed: 0 },
                    None => break,
                },
            };
            let mut reader = held.chain.reader();
            reader.skip(held.consumed);
            if reader.remaining() == 0 {
                queues[TRANSMIT].push(window, held.chain.head, 0)?;
                used.mark(TRANSMIT);
                continue;
            }
            let Some(receive) = queues[RECEIVE].pop(window)? else {
                self.held = Some(held);
                break;
            };
            let mut writer = receive.writer();
            let copied = copy_across(window, &mut reader, &mut writer, &mut ())?;
            queues[RECEIVE].push(window, receive.head, copied)?;
            used.mark(RECEIVE);
            self.echoed += copied as u64;
            self.held = Some(Held { chain: held.chain, consumed: held.consumed + copied });
        }
        Ok(used)
    }
}

/// Bytes of `virtio_net_hdr` with VIRTIO_F_VERSION_1 (its `num_buffers` is at offset 10).
pub const NET_HEADER: usize = 12;

/// A network device that sends every frame it is given straight back.
#[derive(Clone, Debug)]
pub struct NetEcho {
    /// The transmitted frame being echoed (held while `holding`), and the receive chain it goes
    /// into: the device's own slots, filled in place.
    transmit: Chain,
    receive: Chain,
    holding: bool,
    /// Frames echoed, and a checksum of their bytes (see [`checksum`]).
    pub frames: u64,
    pub checksum: u32,
    /// Frames dropped because they did not fit the next receive buffer.
    pub dropped: u64,
}

/// A running checksum of frame bytes, as both sides of the tests compute it: `state`, then
/// each frame's bytes in turn.
pub fn checksum(state: u32, bytes: &[u8]) -> u32 {
    let mut sum = Checksum::new(state);
    // The first four bytes complete the first word ([`Checksum`]).
    let (head, rest) = bytes.split_at(bytes.len().min(Checksum::LEAD));
    head.iter().for_each(|&byte| sum.byte(byte));
    let words = rest.chunks_exact(8);
    let tail = words.remainder();
    for word in words {
        sum.word(u64::from_le_bytes(word.try_into().unwrap_or_default()));
    }
    tail.iter().for_each(|&byte| sum.byte(byte));
    sum.finish(bytes.len())
}

/// [`checksum`] of one frame as its bytes come, in pieces of any size: FNV-1a over 8-byte
/// little-endian words and the frame's length, folded to 32 bits. The words are four zero bytes
/// then the frame (the last word zero-padded): a frame lies after the 12-byte virtio-net header
/// in a buffer aligned to 8, so these are its words as they lie in memory, and a copy mixes each
/// word as it moves it. Fed whole words it costs two multiplications' worth a word, where
/// FNV-1a by bytes costs eight.
#[derive(Clone, Copy, Debug)]
pub struct Checksum {
    state: u64,
    /// Bytes not yet making a whole word (at most seven) in the low bits, and how many in the
    /// top byte: the whole checksum is two words, which a copy takes and gives back in
    /// registers.
    pending: u64,
}

impl Checksum {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    /// Where the count of pending bytes lies in `pending`, and the bytes below it.
    const COUNT: u32 = 56;
    const BYTES: u64 = (1 << Self::COUNT) - 1;

    /// Zero bytes before a frame's first byte in its first word: four, where a frame after
    /// the 12-byte net header starts in an 8-byte-aligned buffer.
    pub const LEAD: usize = NET_HEADER % 8;

    /// A frame's checksum, carrying on from `state`.
    pub fn new(state: u32) -> Self {
        let mut sum = Self { state: Self::BASIS ^ u64::from(state), pending: 0 };
        sum.set_pending(0, Self::LEAD as u32);
        sum
    }

    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(Self::PRIME);
    }

    /// The pending bytes and how many.
    #[inline(always)]
    fn pending(&self) -> (u64, u32) {
        (self.pending & Self::BYTES, (self.pending >> Self::COUNT) as u32)
    }

    /// `count` (at most seven) pending bytes, `bytes` (below bit 56).
    #[inline(always)]
    fn set_pending(&mut self, bytes: u64, count: u32) {
        self.pending = bytes | u64::from(count) << Self::COUNT;
    }

    /// The running state after the frame, of `len` bytes.
    pub fn finish(mut self, len: usize) -> u32 {
        let (bytes, count) = self.pending();
        if count > 0 {
            self.mix(bytes);
        }
        self.mix(len as u64);
        (self.state ^ (self.state >> 32)) as u32
    }
}

impl Visit for Checksum {
    #[inline]
    fn byte(&mut self, value: u8) {
        let (bytes, count) = self.pending();
        let word = bytes | u64::from(value) << (8 * count);
        if count == 7 {
            self.mix(word);
            self.pending = 0;
        } else {
            self.set_pending(word, count + 1);
        }
    }

    /// Its bytes join those pending; a word that fills is mixed, and what is left of the
    /// field stays pending.
    #[inline(always)]
    fn half(&mut self, value: u32) {
        let (bytes, count) = self.pending();
        // Four pending (a frame's first field, or its last after whole words) is the common
        // case: it completes the word.
        if count == 4 {
            self.mix(bytes | u64::from(value) << 32);
            self.pending = 0;
            return;
        }
        let shift = 8 * count;
        let word = bytes | u64::from(value) << shift;
        if count < 4 {
            self.set_pending(word, count + 4);
        } else {
            self.mix(word);
            // The field's bytes past the word.
            self.set_pending(u64::from(value) >> (64 - shift), count - 4);
        }
    }

    /// Four words with the state in registers.
    #[inline]
    fn words(&mut self, values: [u64; 4]) {
        let mut copy = *self;
        values.into_iter().for_each(|value| copy.word(value));
        *self = copy;
    }

    /// At a word's start (nothing pending: a frame's words as they lie), the state alone, in a
    /// register, through every turn.
    #[inline(always)]
    fn runs(&mut self, turns: usize, mut next: impl FnMut(usize) -> [u64; 4]) {
        if self.pending != 0 {
            (0..turns).for_each(|turn| self.words(next(turn)));
            return;
        }
        let mut state = self.state;
        for turn in 0..turns {
            for word in next(turn) {
                state = (state ^ word).wrapping_mul(Self::PRIME);
            }
        }
        self.state = state;
    }

    #[inline]
    fn word(&mut self, value: u64) {
        let (bytes, count) = self.pending();
        if count == 0 {
            self.mix(value);
        } else {
            let shift = 8 * count;
            self.mix(bytes | value << shift);
            self.set_pending(value >> (64 - shift), count);
        }
    }
}

/// The starting value of [`checksum`].
pub const CHECKSUM_SEED: u32 = 0x811c_9dc5;

impl NetEcho {
    /// A fresh device.
    pub fn new() -> Self {
        Self { transmit: Chain::EMPTY, receive: Chain::EMPTY, holding: false, frames: 0, checksum: CHECKSUM_SEED, dropped: 0 }
    }
}

impl Default for NetEcho {
    fn default() -> Self {
        Self::new()
    }
}

impl Device for NetEcho {
    fn reset(&mut self) {
        self.holding = false;
    }

    /// Frames to echo; receive buffers only while it holds a frame it cannot place.
    fn waits_for(&self, _queue_count: usize) -> QueueSet {
        echo_waits_for(self.holding)
    }

    fn service<M: Memory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        let mut used = QueueSet::default();
        for _ in 0..budget {
            if !self.holding && !queues[TRANSMIT].pop_into(window, &mut self.transmit)? {
                break;
            }
            if !queues[RECEIVE].pop_into(window, &mut self.receive)? {
                self.holding = true;
                break;
            }
            self.holding = false;
            let frame = self.transmit.readable_bytes().saturating_sub(NET_HEADER);
            if self.receive.writable_bytes() < NET_HEADER + frame {
                // As a network drops a frame: the receive buffer stays for the next one.
                self.dropped += 1;
                queues[RECEIVE].put_back();
            } else {
                // What the driver's header asks (no offloads are offered) changes nothing; the
                // reply is a plain frame: no offloads, one buffer (`num_buffers`, bytes 10 and
                // 11, is 1).
                let mut sum = Checksum::new(self.checksum);
                let copied = match (self.transmit.readable(), self.receive.writable()) {
                    // One buffer each way, the header whole in each and aligned in the reply (a
                    // pool block is): the header as two fields and the frame in one copy.
                    ([from], [to]) if from.len as usize >= NET_HEADER && to.offset.is_multiple_of(8) => {
                        let (from, to) = (from.offset as usize, to.offset as usize);
                        window.write_u64(to, 0)?;
                        window.write_u32(to + 8, 1 << 16)?;
                        sum = window.copy(from + NET_HEADER, to + NET_HEADER, frame, sum)?;
                        frame
                    }
                    _ => {
                        let mut reader = self.transmit.reader();
                        let mut writer = self.receive.writer();
                        reader.skip(NET_HEADER);
                        let mut reply = [0u8; NET_HEADER];
                        reply[10] = 1;
                        writer.write(window, &reply)?;
                        copy_across(window, &mut reader, &mut writer, &mut sum)?
                    }
                };
                self.checksum = sum.finish(copied);
                self.frames += 1;
                queues[RECEIVE].push(window, self.receive.head, NET_HEADER + copied)?;
                used.mark(RECEIVE);
            }
            queues[TRANSMIT].push(window, self.transmit.head, 0)?;
            used.mark(TRANSMIT);
        }
        Ok(used)
    }
}

/// Storage behind a block device.
pub trait Disk {
    /// Bytes on the disk.
    fn capacity(&self) -> u64;
    /// Copies disk bytes from `offset` into `out` (the caller keeps within the capacity).
    fn read(&self, offset: u64, out: &mut [u8]);
    /// Copies `data` onto the disk at `offset` (the caller keeps within the capacity).
    fn write(&mut self, offset: u64, data: &[u8]);
}

impl Disk for &mut [u8] {
    fn capacity(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, offset: u64, out: &mut [u8]) {
        let start = offset as usize;
        out.copy_from_slice(&self[start..start + out.len()]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        self[start..start + data.len()].copy_from_slice(data);
    }
}

/// Block request types and statuses (virtio 1.x §5.2.6).
pub mod blk {
    pub const T_IN: u32 = 0;
    pub const T_OUT: u32 = 1;
    pub const T_FLUSH: u32 = 4;
    pub const T_GET_ID: u32 = 8;
    pub const S_OK: u8 = 0;
    pub const S_IOERR: u8 = 1;
    pub const S_UNSUPP: u8 = 2;
    /// Bytes of a sector.
    pub const SECTOR: u64 = crate::binding::config::SECTOR;
    /// Bytes of the request header: type, reserved, sector.
    pub const HEADER: usize = 16;
    /// Bytes of the device ID string `GET_ID` returns.
    pub const ID_BYTES: usize = 20;
}

/// A block device serving `disk`.
pub struct BlockDevice<D: Disk> {
    disk: D,
    read_only: bool,
    /// Requests served, and those answered with an error status.
    pub requests: u64,
    pub failed: u64,
}

impl<D: Disk> BlockDevice<D> {
    pub fn new(disk: D, read_only: bool) -> Self {
        Self { disk, read_only, requests: 0, failed: 0 }
    }

    /// Carries out one request; returns the bytes written into its writable buffers (data,
    /// then the status byte, which is the last writable byte).
    fn serve<M: Memory>(&mut self, window: &Window<M>, chain: &Chain) -> Result<usize, QueueError> {
        self.requests += 1;
        let mut reader = chain.reader();
        let mut writer = chain.writer();
        let mut header = [0u8; blk::HEADER];
        let whole_header = reader.read(window, &mut header)? == blk::HEADER;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15]]);
        // Without a byte for the status the request cannot even be answered.
        let Some(data_len) = writer.remaining().checked_sub(1) else {
            self.failed += 1;
            return Ok(0);
        };
        let start = sector.checked_mul(blk::SECTOR);
        let status = match kind {
            _ if !whole_header => blk::S_IOERR,
            blk::T_IN => match start.filter(|&start| self.fits(start, data_len as u64)) {
                Some(mut at) => {
                    let mut chunk = [0u8; CHUNK];
                    while writer.remaining() > 1 {
                        let step = (writer.remaining() - 1).min(CHUNK);
                        self.disk.read(at, &mut chunk[..step]);
                        writer.write(window, &chunk[..step])?;
                        at += step as u64;
                    }
                    blk::S_OK
                }
                None => blk::S_IOERR,
            },
            blk::T_OUT if self.read_only => blk::S_IOERR,
            blk::T_OUT => match start.filter(|&start| self.fits(start, reader.remaining() as u64)) {
                Some(mut at) => {
                    let mut chunk = [0u8; CHUNK];
                    loop {
                        let read = reader.read(window, &mut chunk)?;
                        if read == 0 {
                            break;
                        }
                        self.disk.write(at, &chunk[..read]);
                        at += read as u64;
                    }
                    blk::S_OK
                }
                None => blk::S_IOERR,
            },
            blk::T_FLUSH => blk::S_OK,
            blk::T_GET_ID if data_len >= blk::ID_BYTES => {
                let mut id = [0u8; blk::ID_BYTES];
                id[..13].copy_from_slice(b"trapless-ram0");
                writer.write(window, &id)?;
                blk::S_OK
            }
            _ => blk::S_UNSUPP,
        };
        if status != blk::S_OK {
            self.failed += 1;
        }
        // The status goes in the last writable byte, whatever data went before it.
        writer.skip(writer.remaining() - 1);
        writer.write(window, &[status])?;
        Ok(writer.done)
    }

    /// Whether `len` bytes from disk offset `start` are whole sectors on the disk.
    fn fits(&self, start: u64, len: u64) -> bool {
        len.is_multiple_of(blk::SECTOR) && start.checked_add(len).is_some_and(|end| end <= self.disk.capacity())
    }
}

impl<D: Disk> Device for BlockDevice<D> {
    /// Requests are served whole within a step: nothing is held.
    fn reset(&mut self) {}

    fn service<M: Memory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        let mut used = QueueSet::default();
        for _ in 0..budget {
            let Some(chain) = queues[0].pop(window)? else { break };
            let written = self.serve(window, &chain)?;
            queues[0].push(window, chain.head, written)?;
            used.mark(0);
        }
        Ok(used)
    }
}

/// Any of the devices above: what a partition serving links of every kind keeps per link.
pub enum AnyDevice<'a> {
    Console(ConsoleEcho),
    Net(NetEcho),
    Block(BlockDevice<&'a mut [u8]>),
}

impl Device for AnyDevice<'_> {
    fn service<M: Memory>(&mut self, window: &Window<M>, queues: &mut [DeviceQueue], budget: usize) -> Result<QueueSet, QueueError> {
        match self {
            Self::Console(device) => device.service(window, queues, budget),
            Self::Net(device) => device.service(window, queues, budget),
            Self::Block(device) => device.service(window, queues, budget),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Console(device) => device.reset(),
            Self::Net(device) => device.reset(),
            Self::Block(device) => device.reset(),
        }
    }

    fn waits_for(&self, queue_count: usize) -> QueueSet {
        match self {
            Self::Console(device) => device.waits_for(queue_count),
            Self::Net(device) => device.waits_for(queue_count),
            Self::Block(device) => device.waits_for(queue_count),
        }
    }
}
