//! The isolation matrix and partition restarts, on QEMU.
//!
//! `tests/systems/matrix.toml` has a prober partition try, one probe per start, every region it
//! was not given and calls about what is not its own, while three other partitions do their
//! work. Each probe must be stopped (or the call refused) and named; the prober restarts by its
//! `on-stop` policy for the next one; the others must finish with their data intact. The test
//! prints the matrix as a table and writes it to `target/isolation/matrix.txt`.

use trapless_tests::{boot, check, root};
use trapless_tools::qemu::Run;

/// One probe of the prober's bootargs: `name/op/value`.
struct Probe<'a> {
    name: &'a str,
    op: &'a str,
    value: u64,
}

fn probes(bootargs: &str) -> Vec<Probe<'_>> {
    let list = trapless_guest::facts::arg(bootargs, "probes").expect("the prober's bootargs list its probes");
    list.split(',')
        .map(|probe| {
            let mut fields = probe.split('/');
            let (name, op, value) = (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
            let value = u64::from_str_radix(value.trim_start_matches("0x"), 16).expect("hex probe values");
            Probe { name, op, value }
        })
        .collect()
}

/// The number after `label` in `line`, read as hex with `_` separators (`0x4880_0008`).
fn hex_after(line: &str, label: &str) -> Option<u64> {
    let rest = line.split(label).nth(1)?.trim_start_matches("0x");
    let digits: String = rest.chars().take_while(|c| c.is_ascii_hexdigit() || *c == '_').filter(|c| *c != '_').collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// What became of `probe`, from the console lines between its announcement and the next one:
/// `Ok(outcome)` if trapless stopped or refused it as it must, else `Err(what happened)`.
fn outcome(probe: &Probe<'_>, lines: &[&str]) -> Result<String, String> {
    let said = |label: &str| {
        lines
            .iter()
            .find_map(|line| line.strip_prefix(&format!("[prober] matrix: probe {}: {label} says ", probe.name)))
    };
    let fault = lines.iter().find_map(|line| line.strip_prefix("trapless: partition prober faulted and is stopped: "));
    match probe.op {
        "r" | "w" | "x" => {
            let kind = match probe.op {
                "r" => "stage-2 data abort: read at IPA",
                "w" => "stage-2 data abort: write at IPA",
                _ => "stage-2 instruction abort: fetch at IPA",
            };
            let Some(fault) = fault else { return Err("not stopped".into()) };
            if !fault.starts_with(kind) || hex_after(fault, "IPA ") != Some(probe.value) {
                return Err(format!("stopped for something else: {fault}"));
            }
            let status = fault.split('(').nth(1).and_then(|rest| rest.split(')').next()).unwrap_or("?");
            Ok(format!("stopped: {status}"))
        }
        "ew" => {
            let said = lines.iter().find_map(|line| line.strip_prefix(&format!("[prober] matrix: probe {}: emulated: ", probe.name)));
            match said.and_then(|said| said.strip_prefix("read ")?.split_once(", wrote 0xffffffff, read ")) {
                Some((before, after)) if before == after => Ok(format!("emulated: no effect ({after})")),
                Some((before, after)) => Err(format!("the write changed {before} to {after}")),
                None => Err(match fault {
                    Some(fault) => format!("stopped instead of emulated: {fault}"),
                    None => "no report".into(),
                }),
            }
        }
        "cpu-on" | "affinity" => {
            let label = if probe.op == "cpu-on" { "CPU_ON" } else { "AFFINITY_INFO" };
            match said(label) {
                Some("INVALID_PARAMETERS") | Some("DENIED") => Ok(format!("refused: {}", said(label).unwrap())),
                other => Err(format!("{label} answered {other:?}")),
            }
        }
        "console" => match said("CONSOLE_WRITE") {
            Some("-2") => Ok("refused: INVALID_PARAMETERS".into()),
            other => Err(format!("CONSOLE_WRITE answered {other:?}")),
        },
        other => Err(format!("unknown op {other}")),
    }
}

/// Whether `line` is the prober announcing a probe: `[prober] matrix: probe <name>: <op> 0x<value>`.
fn is_announcement(line: &str) -> bool {
    let Some((_, rest)) = line.strip_prefix("[prober] matrix: probe ").and_then(|rest| rest.split_once(": ")) else {
        return false;
    };
    let words: Vec<&str> = rest.split(' ').collect();
    words.len() == 2 && words[1].starts_with("0x")
}

fn operation(op: &str) -> &str {
    match op {
        "r" => "read",
        "w" => "write",
        "x" => "execute",
        "ew" => "write",
        other => other,
    }
}

#[test]
fn every_probe_of_the_isolation_matrix_is_stopped_and_the_others_finish_intact() {
    let (built, run) = boot("matrix", &[]);
    check(&run, !run.timed_out(), "QEMU powered off");
    let prober = built.plan.partitions.iter().find(|partition| partition.name == "prober").unwrap();
    let probes = probes(&prober.bootargs);
    let lines: Vec<&str> = run.output.lines().collect();
    let announced: Vec<usize> = (0..lines.len()).filter(|&at| is_announcement(lines[at])).collect();
    check(&run, announced.len() == probes.len(), &format!("{} probes announced, {} listed", announced.len(), probes.len()));

    let mut table = format!("{:<20} {:<10} {:<12} {}\n", "probe", "access", "address", "outcome");
    let mut failures = Vec::new();
    for (index, probe) in probes.iter().enumerate() {
        let start = announced[index];
        let header = format!("[prober] matrix: probe {}: {} {:#x}", probe.name, probe.op, probe.value);
        check(&run, lines[start] == header, &format!("probe {index} announced as {header}"));
        let end = announced.get(index + 1).copied().unwrap_or(lines.len());
        let result = outcome(probe, &lines[start..end]);
        let shown = match &result {
            Ok(outcome) => outcome.clone(),
            Err(problem) => format!("BREACH: {problem}"),
        };
        table += &format!("{:<20} {:<10} {:<12} {}\n", probe.name, operation(probe.op), format!("{:#x}", probe.value), shown);
        if let Err(problem) = result {
            failures.push(format!("{}: {problem}", probe.name));
        }
    }
    let stopped = probes.iter().filter(|probe| matches!(probe.op, "r" | "w" | "x")).count();
    let emulated = probes.iter().filter(|probe| probe.op == "ew").count();
    table += &format!(
        "{} probes: {stopped} accesses stopped, {emulated} emulated writes without effect, {} calls refused\n",
        probes.len(),
        probes.len() - stopped - emulated
    );
    println!("{table}");
    let out = root().join("target/isolation");
    std::fs::create_dir_all(&out).and_then(|()| std::fs::write(out.join("matrix.txt"), &table)).expect("write the matrix");
    check(&run, failures.is_empty(), &format!("probes not contained: {failures:?}\n{table}"));
    check(&run, !run.output.contains("NOT STOPPED"), "no probe got past its access");

    // One restart per probe, then a clean finish.
    let restarted = format!("trapless: partition prober was restarted {} time(s)", probes.len());
    check(&run, lines.contains(&restarted.as_str()), &restarted);
    check(&run, run.partition_lines("prober").contains(&"matrix: link lifeline stopped"), "the prober stopped its link at the end");
    others_finished_intact(&run);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
}

/// The matrix's three other partitions did all their work, with their data intact.
fn others_finished_intact(run: &Run) {
    check(run, run.partition_lines("victim").contains(&"work: pattern at 0x48800000 intact; done"), "victim's pattern intact");
    let disk = "virtio-driver: link disk0: 2 pass(es) over 2048 sectors written and read back; a read past the end was refused (IoError)";
    check(run, run.partition_lines("frontend").contains(&disk), "frontend's disk read back whole");
    let served = run.partition_lines("backend").iter().any(|line| line.starts_with("virtio-device: every driver has finished"));
    check(run, served, "backend served both links to the end");
    let stops = run.stops();
    for name in ["prober", "victim", "backend", "frontend"] {
        check(run, stops.get(name).map(String::as_str) == Some("system-off"), &format!("{name} finished cleanly"));
    }
    // The victim printed two lines and powered off: the probes cost it no exit.
    let exits = run.exits();
    check(run, exits["victim"].total == 3, &format!("victim's exits: {:?}", exits["victim"]));
}

#[test]
fn a_faulting_partition_restarts_with_all_its_cpus_up_to_its_limit() {
    let (built, run) = boot("restart-cpus", &[]);
    check(&run, !run.timed_out(), "QEMU powered off");
    let stops = run.stops();
    for name in ["sleeper", "spinner"] {
        let faults = format!("trapless: partition {name} faulted and is stopped: stage-2 data abort: write at IPA 0x4880_0000");
        let count = run.output.lines().filter(|line| line.starts_with(&faults)).count();
        check(&run, count == 3, &format!("{name} faulted {count} times, not 3 (first start and two restarts)"));
        for restart in 1..=2 {
            let line = format!("trapless: partition {name} restarting ({restart} of 2)");
            check(&run, run.output.lines().any(|printed| printed == line), &line);
        }
        let restarted = format!("trapless: partition {name} was restarted 2 time(s)");
        check(&run, run.output.lines().any(|line| line == restarted), &restarted);
        let reason = stops.get(name).map(String::as_str).unwrap_or("");
        check(&run, reason.starts_with("stage-2 data abort: write at IPA 0x4880_0000"), &format!("{name} stopped for good on its fault"));
    }
    // The sleeping second CPU had to be woken each time; had it not stopped, the restart would
    // have been given up.
    check(&run, !run.output.contains("cannot restart"), "every restart went ahead");
    let sleeper = run.partition_lines("sleeper");
    for start in 0..3 {
        let line = format!("sleep-touch: start {start}");
        check(&run, sleeper.contains(&line.as_str()), &line);
    }
    // Woken to park before each restart, and once more before the machine powered off.
    let exits = run.exits()["sleeper"];
    check(&run, exits.parked == 3 && exits.insn_abort == 0, &format!("the sleeping CPU parked on each stop: {exits:?}"));
    check(&run, run.verdict(&built.plan).is_err(), "a partition stopped by a fault fails the run");
}

#[test]
fn a_driver_restarted_mid_link_takes_it_over_and_loses_no_completed_write() {
    let (built, run) = boot("restart-link", &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let client = run.partition_lines("client");
    for start in 0..3 {
        let wrote = format!("disk-restart: start {start}: wrote 512 sectors, each completed");
        check(&run, client.contains(&wrote.as_str()), &wrote);
        if start > 0 {
            let intact = format!("disk-restart: start {start}: all 512 sectors start {} wrote are intact", start - 1);
            check(&run, client.contains(&intact.as_str()), &intact);
        }
    }
    check(&run, client.contains(&"disk-restart: start 2: link disk0 stopped; done"), "the last start finished the link");
    for line in ["trapless: partition client restarting (1 of 2) after system-reset", "trapless: partition client restarting (2 of 2)"] {
        check(&run, run.output.lines().any(|printed| printed == line), line);
    }
    // Three starts wrote 512 sectors each, two read them back: every request served once.
    let served = run.partition_lines("backend").into_iter().any(|line| line.starts_with("virtio-device: link disk0: served 2560 requests, 0 refused"));
    check(&run, served, "the device served every request of every start, and refused none");
}
