//! Reading QEMU's `-d int,exec,nochain,in_asm` log as it streams: which translated block ran,
//! how many times, on which CPU and under which call stack, without keeping the log.
//!
//! The log has, in order (one TCG thread in instruction-counting mode, so lines never
//! interleave):
//!
//! - `IN: ...` then one line per instruction (`0x<pc>:  <hex>  <mnemonic> ...`) when a block is
//!   translated; the next `Trace` line is that block's first run, and names its host address;
//! - `Trace <cpu>: 0x<host> [<cs_base>/<pc>/<flags>/<cflags>] ...` before each run of a block
//!   (`nochain`: every run, none skipped by chaining);
//! - `Stopped execution of TB chain before 0x<host> ...`: the block just logged did not run
//!   after all (the instruction budget ran out at its start);
//! - `cpu_io_recompile: rewound execution of TB to <pc>`: the block just logged ran only up to
//!   `<pc>` (an I/O access in its middle), the rest runs again in blocks of its own;
//! - `Taking exception <n> [...] on CPU <cpu>`, `Exception return from ... PC 0x<pc>` (`int`):
//!   a synchronous fault (1, 3, 4) stops its block at the faulting instruction, which EL2
//!   skips over when it emulates it (it returns to the next one).
//!
//! [`Counter`] turns these into executions per (block, call stack), and the partial runs into
//! instructions to take back, so that the sum is what QEMU's instruction counter counted.

use std::collections::HashMap;

/// How a block's last instruction moves the call stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// A call (`bl`, `blr`): the caller's frame is pushed.
    Call,
    /// A return (`ret`): the top frame is popped.
    Return,
    /// Anything else.
    Straight,
}

impl Flow {
    fn of(mnemonic: &str) -> Self {
        match mnemonic {
            "bl" | "blr" | "blraa" | "blraaz" | "blrab" | "blrabz" => Self::Call,
            "ret" | "retaa" | "retab" => Self::Return,
            _ => Self::Straight,
        }
    }
}

/// One translated block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its first instruction's address; the others follow, 4 bytes apart.
    pub pc: u64,
    pub instructions: u32,
    pub flow: Flow,
}

impl Block {
    /// Index of the instruction at `pc`, if the block has it.
    fn index_of(&self, pc: u64) -> Option<u32> {
        let offset = pc.checked_sub(self.pc)?;
        (offset % 4 == 0 && offset / 4 < u64::from(self.instructions)).then_some((offset / 4) as u32)
    }
}

/// A frame on a CPU's call stack: a function (by the caller's symbol), or an exception entry.
pub type Frame = u32;

/// What the counter needs from the symbols: which frame a call site or an exception makes.
pub trait Frames {
    /// The frame of the function holding `pc`.
    fn function(&mut self, pc: u64) -> Frame;
    /// The frame of an exception entry taken from the function holding `pc`.
    fn exception(&mut self, pc: u64) -> Frame;
}

/// What one run of the log counted: executions of each block under each call stack, and
/// instructions to take back from runs that stopped early.
#[derive(Debug, Default)]
pub struct Counts {
    pub blocks: Vec<Block>,
    pub stacks: Vec<Vec<Frame>>,
    /// (block, stack) -> runs.
    pub runs: HashMap<(u32, u32), i64>,
    /// (block, stack, first instruction not run) -> runs that stopped there.
    pub partial: HashMap<(u32, u32, u32), i64>,
    /// `Trace` lines naming a block the log never showed translated.
    pub unknown_runs: u64,
}

/// Per CPU: its call stack, and what its last block did.
#[derive(Debug, Default)]
struct Cpu {
    stack: Vec<Frame>,
    stack_id: u32,
    /// The last block run (block, stack), and the flow not yet applied to the stack.
    last: Option<(u32, u32)>,
    pending: Option<Flow>,
    /// Exception entries taken on synchronous faults: (stack depth, the block that faulted).
    faults: Vec<(usize, Option<(u32, u32)>)>,
}

/// Deepest call stack kept (deeper calls count as their caller's).
const MAX_DEPTH: usize = 64;

/// The streaming counter.
pub struct Counter {
    counts: Counts,
    /// Host address of a translated block -> block index.
    by_host: HashMap<u64, u32>,
    stack_ids: HashMap<Vec<Frame>, u32>,
    cpus: Vec<Cpu>,
    current: usize,
    /// A block just translated, waiting for its first `Trace`.
    translated: Option<u32>,
    /// The block being read from `IN:` lines.
    reading: Option<Block>,
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

impl Counter {
    pub fn new() -> Self {
        let mut counter = Self {
            counts: Counts::default(),
            by_host: HashMap::new(),
            stack_ids: HashMap::new(),
            cpus: Vec::new(),
            current: 0,
            translated: None,
            reading: None,
        };
        counter.intern(Vec::new());
        counter
    }

    fn intern(&mut self, stack: Vec<Frame>) -> u32 {
        if let Some(&id) = self.stack_ids.get(&stack) {
            return id;
        }
        let id = self.counts.stacks.len() as u32;
        self.counts.stacks.push(stack.clone());
        self.stack_ids.insert(stack, id);
        id
    }

    fn cpu(&mut self, index: usize) -> &mut Cpu {
        if self.cpus.len() <= index {
            self.cpus.resize_with(index + 1, Cpu::default);
        }
        &mut self.cpus[index]
    }

    /// Pushes `frame` on CPU `cpu`'s stack (or pops with `None`).
    fn move_stack(&mut self, cpu: usize, push: Option<Frame>) {
        let state = self.cpu(cpu);
        match push {
            Some(frame) if state.stack.len() < MAX_DEPTH => state.stack.push(frame),
            Some(_) => return,
            None => {
                if state.stack.pop().is_none() {
                    return;
                }
            }
        }
        let stack = self.cpus[cpu].stack.clone();
        let id = self.intern(stack);
        self.cpus[cpu].stack_id = id;
    }

    /// Applies CPU `cpu`'s last block's flow, now that it is known to have run to its end.
    fn settle(&mut self, cpu: usize, frames: &mut impl Frames) {
        let Some(flow) = self.cpu(cpu).pending.take() else { return };
        match flow {
            Flow::Call => {
                let Some((block, _)) = self.cpus[cpu].last else { return };
                let call = self.counts.blocks[block as usize];
                let frame = frames.function(call.pc + 4 * u64::from(call.instructions - 1));
                self.move_stack(cpu, Some(frame));
            }
            Flow::Return => self.move_stack(cpu, None),
            Flow::Straight => {}
        }
    }

    /// Takes back the instructions of CPU `cpu`'s last block from `pc` on.
    fn cut_last(&mut self, cpu: usize, pc: u64) {
        let Some((block, stack)) = self.cpu(cpu).last else { return };
        self.cpus[cpu].pending = None;
        if let Some(index) = self.counts.blocks[block as usize].index_of(pc) {
            *self.counts.partial.entry((block, stack, index)).or_default() += 1;
        }
    }

    /// Reads one line of the log.
    pub fn line(&mut self, line: &str, frames: &mut impl Frames) {
        if let Some(rest) = line.strip_prefix("Trace ") {
            self.trace(rest, frames);
        } else if let Some(block) = self.reading.as_mut() {
            // Inside an `IN:` block: instructions until the empty line.
            let mut words = line.split_whitespace();
            match (words.next().and_then(|pc| pc.strip_suffix(':')).and_then(hex), words.next(), words.next()) {
                (Some(pc), Some(_encoding), mnemonic) => {
                    if block.instructions == 0 {
                        block.pc = pc;
                    }
                    block.instructions += 1;
                    block.flow = Flow::of(mnemonic.unwrap_or(""));
                }
                _ => {
                    let block = self.reading.take().expect("reading");
                    if block.instructions > 0 {
                        self.counts.blocks.push(block);
                        self.translated = Some(self.counts.blocks.len() as u32 - 1);
                    }
                }
            }
        } else if line.starts_with("IN:") {
            self.reading = Some(Block { pc: 0, instructions: 0, flow: Flow::Straight });
        } else if let Some(rest) = line.strip_prefix("Stopped execution of TB chain before ") {
            // The block just logged did not run at all.
            let host = rest.split_whitespace().next().and_then(hex);
            let current = self.current;
            if let Some((block, stack)) = self.cpu(current).last
                && host.is_some_and(|host| self.by_host.get(&host) == Some(&block))
            {
                *self.counts.runs.entry((block, stack)).or_default() -= 1;
                self.cpus[current].pending = None;
                self.cpus[current].last = None;
            }
        } else if let Some(rest) = line.strip_prefix("cpu_io_recompile: rewound execution of TB to ") {
            if let Some(pc) = hex(rest.trim()) {
                self.cut_last(self.current, pc);
            }
        } else if let Some(rest) = line.strip_prefix("Taking exception ") {
            self.exception(rest, frames);
        } else if let Some(rest) = line.strip_prefix("Exception return from ") {
            let pc = rest.rsplit_once("PC ").and_then(|(_, pc)| hex(pc.split_whitespace().next().unwrap_or("")));
            self.exception_return(pc);
        }
    }

    fn trace(&mut self, rest: &str, frames: &mut impl Frames) {
        let Some((cpu, rest)) = rest.split_once(':') else { return };
        let Ok(cpu) = cpu.parse::<usize>() else { return };
        let Some(host) = rest.split_whitespace().next().and_then(hex) else { return };
        if let Some(block) = self.translated.take() {
            self.by_host.insert(host, block);
        }
        self.current = cpu;
        self.settle(cpu, frames);
        let Some(&block) = self.by_host.get(&host) else {
            self.counts.unknown_runs += 1;
            self.cpu(cpu).last = None;
            return;
        };
        let stack = self.cpu(cpu).stack_id;
        *self.counts.runs.entry((block, stack)).or_default() += 1;
        let flow = self.counts.blocks[block as usize].flow;
        let state = &mut self.cpus[cpu];
        state.last = Some((block, stack));
        state.pending = Some(flow);
    }

    fn exception(&mut self, rest: &str, frames: &mut impl Frames) {
        // `<n> [<name>] on CPU <cpu>`
        let number = rest.split_whitespace().next().and_then(|number| number.parse::<u32>().ok());
        let Some(cpu) = rest.rsplit_once("on CPU ").and_then(|(_, cpu)| cpu.trim().parse::<usize>().ok()) else { return };
        // A synchronous fault stops its block at the faulting instruction: what it would have
        // done at its end never happened. An interrupt comes between blocks.
        let synchronous = matches!(number, Some(1 | 3 | 4));
        let faulted = if synchronous {
            self.cpu(cpu).pending = None;
            self.cpus[cpu].last
        } else {
            self.settle(cpu, frames);
            None
        };
        let from = self.cpu(cpu).last.map_or(0, |(block, _)| self.counts.blocks[block as usize].pc);
        let depth = self.cpus[cpu].stack.len();
        self.cpus[cpu].faults.push((depth, faulted));
        let frame = frames.exception(from);
        self.move_stack(cpu, Some(frame));
    }

    fn exception_return(&mut self, pc: Option<u64>) {
        let cpu = self.current;
        // The `eret` ran to its end; it does not move the stack as a return does.
        self.cpu(cpu).pending = None;
        let Some((depth, faulted)) = self.cpus[cpu].faults.pop() else { return };
        while self.cpus[cpu].stack.len() > depth {
            self.move_stack(cpu, None);
        }
        // EL2 emulated the faulting instruction and returns past it: the block ran up to it.
        if let (Some((block, stack)), Some(pc)) = (faulted, pc)
            && let Some(index) = self.counts.blocks[block as usize].index_of(pc.wrapping_sub(4))
        {
            *self.counts.partial.entry((block, stack, index)).or_default() += 1;
        }
    }

    /// What was counted.
    pub fn finish(self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames named by address: a function frame is its pc with the low 12 bits cleared, an
    /// exception 1.
    struct ByPage;

    impl Frames for ByPage {
        fn function(&mut self, pc: u64) -> Frame {
            (pc >> 12) as Frame
        }
        fn exception(&mut self, _pc: u64) -> Frame {
            1
        }
    }

    fn feed(text: &str) -> Counts {
        let mut counter = Counter::new();
        for line in text.lines() {
            counter.line(line, &mut ByPage);
        }
        counter.finish()
    }

    /// Instructions counted, all blocks and stacks together.
    fn total(counts: &Counts) -> i64 {
        let whole: i64 = counts.runs.iter().map(|(&(block, _), &runs)| runs * i64::from(counts.blocks[block as usize].instructions)).sum();
        let cut: i64 = counts
            .partial
            .iter()
            .map(|(&(block, _, index), &runs)| runs * i64::from(counts.blocks[block as usize].instructions - index))
            .sum();
        whole - cut
    }

    const TWO_BLOCKS: &str = "\
----------------
IN: 
0x40001000:  d503201f  nop      
0x40001004:  94000400  bl       #0x40002004

Trace 0: 0x7f0000000100 [0000000000000000/0000000040001000/00000061/ff020200] 
----------------
IN: 
0x40002004:  d503201f  nop      
0x40002008:  d65f03c0  ret      

Trace 0: 0x7f0000000200 [0000000000000000/0000000040002004/00000061/ff020200] 
Trace 0: 0x7f0000000100 [0000000000000000/0000000040001000/00000061/ff020200] 
Trace 0: 0x7f0000000200 [0000000000000000/0000000040002004/00000061/ff020200] 
";

    #[test]
    fn blocks_count_each_run_under_the_callers_stack() {
        let counts = feed(TWO_BLOCKS);
        assert_eq!(counts.blocks.len(), 2);
        assert_eq!(total(&counts), 8);
        // The callee ran twice under a stack of one frame: the caller's page.
        let callee_stack = counts.stacks.iter().position(|stack| stack == &vec![0x40001]).unwrap() as u32;
        assert_eq!(counts.runs[&(1, callee_stack)], 2);
        assert_eq!(counts.runs[&(0, 0)], 2, "the caller ran at the top both times: the return popped");
    }

    #[test]
    fn runs_that_stop_early_are_taken_back() {
        let stopped = format!("{TWO_BLOCKS}Trace 0: 0x7f0000000100 [0/40001000/0/0] \nStopped execution of TB chain before 0x7f0000000100 [0000000040001000] \n");
        assert_eq!(total(&feed(&stopped)), 8, "a block that never started counts nothing");
        let rewound = format!("{TWO_BLOCKS}Trace 0: 0x7f0000000100 [0/40001000/0/0] \ncpu_io_recompile: rewound execution of TB to 0000000040001004\n");
        assert_eq!(total(&feed(&rewound)), 9, "a block rewound to its second instruction ran one");
    }

    #[test]
    fn an_emulated_fault_stops_its_block_where_it_faulted() {
        let log = "\
----------------
IN: 
0x40001000:  d503201f  nop      
0x40001004:  b9400000  ldr      w0, [x0]
0x40001008:  d503201f  nop      
0x4000100c:  14000000  b        #0x4000100c

Trace 1: 0x7f0000000100 [0/40001000/0/0] 
Taking exception 4 [Data Abort] on CPU 1
...from EL1 to EL2
----------------
IN: 
0x40200400:  d69f03e0  eret     

Trace 1: 0x7f0000000300 [0/40200400/0/0] 
Exception return from AArch64 EL2 to AArch64 EL1 PC 0x40001008
";
        // One instruction before the fault, and the eret; the load and the rest never ran.
        assert_eq!(total(&feed(log)), 2);
    }
}
