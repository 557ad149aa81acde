//! `cargo xtask profile`: where a system's instructions go, per I/O, by function, partition and
//! EL2 (`docs/performance.md`).
//!
//! The system boots twice in QEMU's instruction-counting mode, with two run lengths (the
//! `iterations=` word of every partition's bootargs that has one), each time with the
//! `int,exec,nochain,in_asm` log streamed through a FIFO into [`log::Counter`] and never stored
//! (a short run's log is several GB). Each block's instructions are mapped onto the ELF symbols
//! of the image they lie in (the kernel at its load address, each partition's image at the
//! address the plan loads it), and the long run minus the short one, over the difference in
//! iterations, is what one more I/O costs: boot and power-off cancel out. The same difference
//! of the call stacks is drawn as a flame graph (inferno).

pub mod log;

use crate::qemu;
use crate::{Error, Target, build_system, cargo, root, system};
use log::{Counter, Counts, Frame, Frames};
use object::{Object, ObjectSymbol, SymbolKind};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to profile.
#[derive(Clone, Debug)]
pub struct Options {
    pub system: PathBuf,
    pub platform: Option<String>,
    /// Words put in the bootargs of every partition that has `iterations=` (`workload=bulk`).
    pub set: Vec<String>,
    /// The two run lengths (`iterations=`), short then long.
    pub lengths: (u64, u64),
    /// Where the report, the flame graph and the scratch files go.
    pub out: PathBuf,
    pub progress: bool,
}

/// How long one logged boot may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// Where an instruction ran: EL2 (the kernel image) or a partition's image.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Place(pub String);

/// The place EL2 runs in.
pub const EL2: &str = "EL2";

/// One image's functions, from its ELF symbols, at the address it runs at.
struct Image {
    place: String,
    range: std::ops::Range<u64>,
    /// (start, end, name), sorted by start.
    functions: Vec<(u64, u64, String)>,
}

/// Every image of a system, for mapping addresses to functions.
struct Symbols {
    images: Vec<Image>,
    /// Frame names (functions and exception entries), by [`Frame`].
    names: Vec<(String, String)>,
    frames: HashMap<(String, String), Frame>,
}

impl Symbols {
    /// The functions of the ELF at `path`, linked at `link_base` and running at `load`.
    fn image(place: &str, path: &Path, range: std::ops::Range<u64>, load: u64) -> Result<Image, String> {
        let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let mut functions = Vec::new();
        if let Ok(file) = object::File::parse(&*bytes) {
            for symbol in file.symbols() {
                if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
                    continue;
                }
                let Ok(name) = symbol.name() else { continue };
                let name = format!("{:#}", rustc_demangle::demangle(name));
                functions.push((load + symbol.address(), load + symbol.address() + symbol.size(), name));
            }
        }
        functions.sort();
        functions.dedup_by(|next, previous| next.0 == previous.0);
        Ok(Image { place: place.to_string(), range, functions })
    }

    /// The place and function of `pc`.
    fn locate(&self, pc: u64) -> (String, String) {
        let Some(image) = self.images.iter().find(|image| image.range.contains(&pc)) else {
            return ("?".into(), format!("{pc:#x}"));
        };
        let at = image.functions.partition_point(|function| function.0 <= pc);
        let name = match at.checked_sub(1).map(|at| &image.functions[at]) {
            Some((_, end, name)) if pc < *end => name.clone(),
            _ => "[no symbol]".into(),
        };
        (image.place.clone(), name)
    }

    fn frame(&mut self, key: (String, String)) -> Frame {
        if let Some(&frame) = self.frames.get(&key) {
            return frame;
        }
        let frame = self.names.len() as Frame;
        self.names.push(key.clone());
        self.frames.insert(key, frame);
        frame
    }
}

impl Frames for Symbols {
    fn function(&mut self, pc: u64) -> Frame {
        let key = self.locate(pc);
        self.frame(key)
    }
    fn exception(&mut self, pc: u64) -> Frame {
        let (place, _) = self.locate(pc);
        self.frame((place, "[exception]".into()))
    }
}

/// One function's instructions per I/O.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Function {
    pub place: String,
    pub function: String,
    pub per_io: f64,
}

/// The profile (`profile.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub system: String,
    pub bootargs: String,
    pub lengths: (u64, u64),
    /// Instructions of each whole run, as counted from the log.
    pub run_instructions: (i64, i64),
    /// Instructions per I/O, the whole machine.
    pub per_io: f64,
    /// By place (`EL2`, each partition), largest first.
    pub places: Vec<(String, f64)>,
    /// By function, largest first.
    pub functions: Vec<Function>,
    /// Instructions per I/O in functions whose share went down from the short run to the long
    /// one (0 when the two runs differ only in their iterations).
    pub negative: f64,
    pub flame_graph: String,
}

/// The text of `system` with `iterations=<length>` and `set` in every bootargs that has
/// `iterations=`, and image and platform paths made absolute (the copy lives elsewhere).
/// Returns the text and the bootargs written.
pub fn vary(text: &str, base: &Path, length: u64, set: &[String]) -> Result<(String, String), String> {
    let mut varied = false;
    let mut bootargs = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let value = |key: &str| {
            trimmed
                .strip_prefix(key)
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::trim)
                .and_then(|rest| rest.strip_prefix('"'))
                .and_then(|rest| rest.split_once('"'))
                .map(|(value, _)| value.to_string())
        };
        if let Some(words) = value("bootargs").filter(|words| words.split_whitespace().any(|word| word.starts_with("iterations="))) {
            let mut kept: Vec<String> = words.split_whitespace().map(String::from).collect();
            for word in set.iter().cloned().chain([format!("iterations={length}")]) {
                let key = word.split_once('=').map_or(word.as_str(), |(key, _)| key).to_string();
                kept.retain(|old| old.split_once('=').map_or(old.as_str(), |(key, _)| key) != key);
                kept.push(word);
            }
            bootargs = kept.join(" ");
            out += &format!("bootargs = \"{bootargs}\"\n");
            varied = true;
        } else if let Some(path) = value("image").filter(|image| image.contains('/') || image.contains('.')) {
            out += &format!("image = \"{}\"\n", base.join(path).display());
        } else if let Some(path) = value("platform").filter(|platform| platform.ends_with(".toml")) {
            out += &format!("platform = \"{}\"\n", base.join(path).display());
        } else {
            out += line;
            out += "\n";
        }
    }
    if !varied {
        return Err("no partition has iterations= in its bootargs: there is no run length to vary".into());
    }
    Ok((out, bootargs))
}

/// Boots the system (its copy at `path`) in instruction-counting mode with the exec log
/// streamed into a counter; returns the counts, the symbols and the console.
fn logged_run(options: &Options, path: &Path, scratch: &Path) -> Result<(Counts, Symbols, qemu::Run), Error> {
    let target = Target { system: path, platform: options.platform.as_deref() };
    let built = build_system(target)?;
    crate::setup::ensure_qemu()?;
    let root = root();
    // Each image at the address it runs at.
    let kernel = cargo::build_kernel(&root)?;
    let kernel_load = built.plan.platform.kernel.base.0 + trapless_arm64::image::KERNEL_TEXT_OFFSET;
    let mut images = vec![Symbols::image(EL2, &kernel, built.plan.platform.kernel.base.0..built.plan.platform.kernel.end(), kernel_load)?];
    let loaded = system::load(path, &root, options.platform.as_deref())?;
    for (partition, described) in built.plan.partitions.iter().zip(&loaded.partitions) {
        let elf = match &described.image {
            system::ImageRef::Guest(name) => cargo::target_dir(&root).join(cargo::GUEST_TARGET).join("release").join(name),
            system::ImageRef::File(file) => file.clone(),
        };
        let load = match partition.image.placement {
            crate::image::Placement::Image { .. } | crate::image::Placement::SelfRelocating { .. } => partition.image_load,
            crate::image::Placement::Fixed { .. } => 0,
        };
        images.push(Symbols::image(&partition.name, &elf, partition.memory.base.0..partition.memory.end(), load)?);
    }
    let mut symbols = Symbols { images, names: Vec::new(), frames: HashMap::new() };

    let fifo = scratch.join("exec.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().map_err(|error| format!("mkfifo: {error}"))?;
    if !made.success() {
        return Err(format!("mkfifo {} failed", fifo.display()).into());
    }
    let mut extra = qemu::instruction_counting();
    extra.extend(qemu::exec_log(&fifo));
    let command = qemu::command(&built.plan, &built.image, &extra)?;
    let reader_fifo = fifo.clone();
    let reader = std::thread::spawn(move || -> Result<(Counts, Symbols), String> {
        let file = std::fs::File::open(&reader_fifo).map_err(|error| format!("{}: {error}", reader_fifo.display()))?;
        let mut input = std::io::BufReader::with_capacity(1 << 20, file);
        let mut counter = Counter::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = input.read_until(b'\n', &mut line).map_err(|error| format!("reading QEMU's log: {error}"))?;
            if read == 0 {
                break;
            }
            if let Ok(text) = std::str::from_utf8(&line) {
                counter.line(text.trim_end(), &mut symbols);
            }
        }
        Ok((counter.finish(), symbols))
    });
    let run = qemu::run(command, RUN_TIMEOUT, false);
    // If QEMU never opened the log, open it for writing ourselves so that the reader ends.
    if !reader.is_finished() {
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    let counted = reader.join().map_err(|_| "the log reader panicked".to_string())?;
    let _ = std::fs::remove_file(&fifo);
    let run = run?;
    run.verdict(&built.plan).map_err(|reason| format!("{}: {reason}\n{}", path.display(), run.output))?;
    let (counts, symbols) = counted?;
    Ok((counts, symbols, run))
}

/// Instructions by (place, function) and by folded call stack, from one run's counts.
struct Summed {
    total: i64,
    functions: HashMap<(String, String), i64>,
    folded: HashMap<String, i64>,
    /// By instruction address (and its place and function).
    addresses: HashMap<(u64, String, String), i64>,
}

fn sum(counts: &Counts, symbols: &Symbols) -> Summed {
    let mut located: HashMap<u64, (String, String)> = HashMap::new();
    let mut at = |pc: u64| located.entry(pc).or_insert_with(|| symbols.locate(pc)).clone();
    let mut summed = Summed { total: 0, functions: HashMap::new(), folded: HashMap::new(), addresses: HashMap::new() };
    let mut add = |block: u32, stack: u32, from: u32, runs: i64, summed: &mut Summed| {
        let block = counts.blocks[block as usize];
        for index in from..block.instructions {
            let pc = block.pc + 4 * u64::from(index);
            let (place, function) = at(pc);
            summed.total += runs;
            *summed.addresses.entry((pc, place.clone(), function.clone())).or_default() += runs;
            // The stack's frames in the same place (an exit to EL2 starts a new one).
            let mut folded = place.clone();
            for &frame in &counts.stacks[stack as usize] {
                let (frame_place, name) = &symbols.names[frame as usize];
                if *frame_place == place {
                    folded.push(';');
                    folded.push_str(name);
                }
            }
            folded.push(';');
            folded.push_str(&function);
            *summed.folded.entry(folded).or_default() += runs;
            *summed.functions.entry((place, function)).or_default() += runs;
        }
    };
    for (&(block, stack), &runs) in &counts.runs {
        add(block, stack, 0, runs, &mut summed);
    }
    for (&(block, stack, from), &runs) in &counts.partial {
        add(block, stack, from, -runs, &mut summed);
    }
    summed
}

/// `long - short`, key by key.
fn difference<K: Clone + Ord + std::hash::Hash>(long: &HashMap<K, i64>, short: &HashMap<K, i64>) -> Vec<(K, i64)> {
    let mut keys: Vec<K> = long.keys().chain(short.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let value = long.get(&key).copied().unwrap_or(0) - short.get(&key).copied().unwrap_or(0);
            (key, value)
        })
        .collect()
}

/// Runs the profile; writes `profile.json`, `profile.folded` and `flamegraph.svg` to
/// `options.out`.
pub fn run(options: &Options) -> Result<Report, Error> {
    let (short, long) = options.lengths;
    if short >= long {
        return Err(format!("the run lengths must grow: {short} then {long}").into());
    }
    std::fs::create_dir_all(&options.out).map_err(|error| format!("{}: {error}", options.out.display()))?;
    let text = std::fs::read_to_string(&options.system).map_err(|error| format!("{}: {error}", options.system.display()))?;
    let base = options.system.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = options.system.file_stem().and_then(|stem| stem.to_str()).unwrap_or("system").to_string();
    let mut sums = Vec::new();
    let mut bootargs = String::new();
    let mut runs = Vec::new();
    for length in [short, long] {
        let (varied, args) = vary(&text, &base, length, &options.set)?;
        bootargs = args;
        let path = options.out.join(format!("{stem}-profile-{length}.toml"));
        std::fs::write(&path, varied).map_err(|error| format!("{}: {error}", path.display()))?;
        if options.progress {
            eprintln!("profile: {} with iterations={length}, the exec log streamed", options.system.display());
        }
        let started = std::time::Instant::now();
        let (counts, symbols, _run) = logged_run(options, &path, &options.out)?;
        if options.progress {
            eprintln!("profile: {} blocks, {} stacks, in {:.0?}", counts.blocks.len(), counts.stacks.len(), started.elapsed());
        }
        let summed = sum(&counts, &symbols);
        runs.push(summed.total);
        sums.push(summed);
    }
    let ios = (long - short) as f64;
    let (first, second) = (&sums[0], &sums[1]);
    let functions_diff = difference(&second.functions, &first.functions);
    let mut places: BTreeMap<String, i64> = BTreeMap::new();
    let mut negative = 0;
    let mut functions = Vec::new();
    for ((place, function), value) in functions_diff {
        *places.entry(place.clone()).or_default() += value;
        if value < 0 {
            negative += -value;
        }
        if value != 0 {
            functions.push(Function { place, function, per_io: value as f64 / ios });
        }
    }
    functions.sort_by(|a, b| b.per_io.total_cmp(&a.per_io).then(a.function.cmp(&b.function)));
    let mut places: Vec<(String, f64)> = places.into_iter().map(|(place, value)| (place, value as f64 / ios)).collect();
    places.sort_by(|a, b| b.1.total_cmp(&a.1));

    // The flame graph: the difference of the folded stacks, per I/O (negative ones left out).
    let mut folded: Vec<String> = difference(&second.folded, &first.folded)
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .map(|(stack, value)| format!("{} {}", stack.replace(' ', "_"), value))
        .collect();
    folded.sort();
    let folded_path = options.out.join("profile.folded");
    std::fs::write(&folded_path, folded.join("\n") + "\n").map_err(|error| format!("{}: {error}", folded_path.display()))?;
    let svg = options.out.join("flamegraph.svg");
    let mut flame = inferno::flamegraph::Options::default();
    flame.title = format!("{stem}: instructions over {} iterations ({bootargs})", long - short);
    flame.count_name = "instructions".into();
    let file = std::fs::File::create(&svg).map_err(|error| format!("{}: {error}", svg.display()))?;
    if !folded.is_empty() {
        inferno::flamegraph::from_lines(&mut flame, folded.iter().map(String::as_str), std::io::BufWriter::new(file))
            .map_err(|error| format!("{}: {error}", svg.display()))?;
    }

    // By address, for reading beside a disassembly (`llvm-objdump -d`): inlined code shows
    // which of its instructions cost what.
    let mut addresses: Vec<String> = difference(&second.addresses, &first.addresses)
        .into_iter()
        .filter(|(_, value)| *value != 0)
        .map(|((pc, place, function), value)| format!("{pc:#x} {:.2} {place} {function}", value as f64 / ios))
        .collect();
    addresses.insert(0, "# address, instructions per I/O, place, function (the long run minus the short, over the iterations between)".into());
    let addresses_path = options.out.join("profile.addresses");
    std::fs::write(&addresses_path, addresses.join("\n") + "\n").map_err(|error| format!("{}: {error}", addresses_path.display()))?;
    let report = Report {
        system: options.system.display().to_string(),
        bootargs,
        lengths: (short, long),
        run_instructions: (runs[0], runs[1]),
        per_io: (runs[1] - runs[0]) as f64 / ios,
        places,
        functions,
        negative: negative as f64 / ios,
        flame_graph: svg.display().to_string(),
    };
    let json = serde_json::to_string_pretty(&report).map_err(|error| format!("the profile: {error}"))?;
    let path = options.out.join("profile.json");
    std::fs::write(&path, json + "\n").map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(report)
}

/// The report as a table: the places, then the `top` most expensive functions.
pub fn table(report: &Report, top: usize) -> String {
    let mut text = format!(
        "{}: {} instructions per I/O (iterations {} and {}: {} and {} instructions in all; {})\n",
        report.system, report.per_io.round(), report.lengths.0, report.lengths.1, report.run_instructions.0, report.run_instructions.1, report.bootargs
    );
    for (place, per_io) in &report.places {
        text += &format!("  {place:<12} {:>10.1}\n", per_io);
    }
    text += &format!("{:>10}  {:<12} function\n", "per I/O", "where");
    for function in report.functions.iter().take(top) {
        text += &format!("{:>10.1}  {:<12} {}\n", function.per_io, function.place, function.function);
    }
    if report.negative > 0.0 {
        text += &format!("({:.1} instructions per I/O fewer in the long run than in the short, in the functions above with a negative count)\n", report.negative);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_length_and_the_words_go_in_every_bootargs_with_iterations() {
        let text = "platform = \"qemu-virt\"\n[[partition]]\nname = \"a\"\nbootargs = \"workload=rtt iterations=1000 size=64\"\n[[partition]]\nname = \"b\"\nimage = \"../images/b.elf\"\nbootargs = \"\"\n";
        let (varied, bootargs) = vary(text, Path::new("/x/systems"), 40, &["workload=bulk".into()]).unwrap();
        assert_eq!(bootargs, "size=64 workload=bulk iterations=40");
        assert!(varied.contains("bootargs = \"size=64 workload=bulk iterations=40\"\n"));
        assert!(varied.contains("image = \"/x/systems/../images/b.elf\"\n"), "{varied}");
        assert!(varied.contains("bootargs = \"\"\n"));
        assert!(vary("bootargs = \"size=1\"\n", Path::new("."), 1, &[]).is_err());
    }
}
