//! Booting a packed system in QEMU and reading what happened from its console.

use crate::planner::SystemPlan;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Words appended to every QEMU command line xtask builds (e.g. `-d int -D exits.log`).
pub const EXTRA_ARGS_VARIABLE: &str = "TRAPLESS_QEMU_EXTRA";

/// The words of `TRAPLESS_QEMU_EXTRA`, if set.
fn extra_args_from_env() -> Vec<String> {
    std::env::var(EXTRA_ARGS_VARIABLE).map(|extra| extra.split_whitespace().map(String::from).collect()).unwrap_or_default()
}

/// The QEMU command that boots `image` on `plan`'s platform: as many CPUs as the system uses
/// and the platform's RAM, then `extra`, then the words of `TRAPLESS_QEMU_EXTRA`. Every QEMU
/// that xtask, the tests and the bench boot is built here.
pub fn command(plan: &SystemPlan, image: &Path, extra: &[String]) -> Result<Command, String> {
    let platform = &plan.platform;
    let qemu = platform
        .qemu
        .as_ref()
        .ok_or_else(|| format!("platform '{}' has no [qemu] section: it does not run in QEMU", platform.name))?;
    let cpus = plan.partitions.iter().flat_map(|partition| partition.cpus.iter()).max().map_or(1, |&cpu| cpu + 1);
    let mut command = Command::new("qemu-system-aarch64");
    command
        .args(["-M", &qemu.machine, "-cpu", &qemu.cpu])
        .args(["-smp", &cpus.to_string()])
        .args(["-m", &format!("{}M", platform.ram.size >> 20)])
        // Only what the platform describes: no default NIC (its option ROM comes from a package
        // a fresh machine may lack), no default disk, monitor or display.
        .args(["-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(image)
        .args(extra)
        .args(extra_args_from_env());
    Ok(command)
}

/// How many exceptions a QEMU `-d int` log shows taken from a partition (EL1 or EL0) to EL2.
pub fn exceptions_to_el2(log: &str) -> usize {
    log.lines().filter(|line| line.starts_with("...from EL1 to EL2") || line.starts_with("...from EL0 to EL2")).count()
}

/// The exit counts EL2 printed for one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub total: u64,
    pub hvc: u64,
    pub smc: u64,
    pub data_abort: u64,
    pub insn_abort: u64,
    pub sysreg: u64,
    pub other: u64,
}

/// What a QEMU run showed.
#[derive(Clone, Debug)]
pub struct Run {
    /// Everything QEMU wrote to the console, `\r` removed.
    pub output: String,
    /// QEMU's exit status, or `None` if it was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
}

impl Run {
    /// Whether QEMU ran out of time.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// `trapless: partition <name> stopped: <reason>`, by partition.
    pub fn stops(&self) -> BTreeMap<String, String> {
        self.output
            .lines()
            .filter_map(|line| line.strip_prefix("trapless: partition "))
            .filter_map(|rest| rest.split_once(" stopped: "))
            .map(|(name, reason)| (name.to_string(), reason.to_string()))
            .collect()
    }

    /// `trapless: exits partition=<name> ...`, by partition.
    pub fn exits(&self) -> BTreeMap<String, Exits> {
        let mut all = BTreeMap::new();
        for line in self.output.lines() {
            let Some(rest) = line.strip_prefix("trapless: exits ") else { continue };
            let fields: BTreeMap<&str, &str> = rest.split_whitespace().filter_map(|field| field.split_once('=')).collect();
            let count = |key: &str| fields.get(key).and_then(|value| value.parse().ok()).unwrap_or(0);
            let Some(name) = fields.get("partition") else { continue };
            all.insert(
                name.to_string(),
                Exits {
                    total: count("total"),
                    hvc: count("hvc"),
                    smc: count("smc"),
                    data_abort: count("data-abort"),
                    insn_abort: count("insn-abort"),
                    sysreg: count("sysreg"),
                    other: count("other"),
                },
            );
        }
        all
    }

    /// Lines partition `name` wrote through the console hypercall, without the `[name] ` prefix.
    pub fn partition_lines(&self, name: &str) -> Vec<&str> {
        let prefix = format!("[{name}] ");
        self.output.lines().filter_map(|line| line.strip_prefix(prefix.as_str())).collect()
    }

    /// Whether the run succeeded: QEMU powered off by itself, and every partition of `plan`
    /// stopped with `system-off`. Otherwise, why not.
    pub fn verdict(&self, plan: &SystemPlan) -> Result<(), String> {
        if self.timed_out() {
            return Err(format!("QEMU did not power off within {:.0?}", self.elapsed));
        }
        if let Some(line) = self.output.lines().find(|line| line.starts_with("trapless: refusing to start")) {
            return Err(line.to_string());
        }
        if let Some(line) = self.output.lines().find(|line| line.starts_with("trapless: EL2 panic")) {
            return Err(line.to_string());
        }
        let stops = self.stops();
        let mut failures = Vec::new();
        for partition in &plan.partitions {
            match stops.get(&partition.name) {
                Some(reason) if reason == "system-off" => {}
                Some(reason) => failures.push(format!("partition {} stopped: {reason}", partition.name)),
                None => failures.push(format!("partition {} never stopped", partition.name)),
            }
        }
        if !failures.is_empty() {
            return Err(failures.join("; "));
        }
        match self.status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("QEMU exited with {status}")),
            None => unreachable!("checked above"),
        }
    }
}

/// Runs `command` until it exits or `timeout` passes (then kills it), collecting its output and
/// copying it to our stdout as it comes if `echo` is set.
pub fn run(mut command: Command, timeout: Duration, echo: bool) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start qemu-system-aarch64: {error}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stdout.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&chunk[..read]);
                    let _ = out.flush();
                }
                output.lock().expect("reader does not panic").extend_from_slice(&chunk[..read]);
            }
        })
    };
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|error| format!("waiting for QEMU: {error}"))? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let output = String::from_utf8_lossy(&output.lock().expect("reader finished")).replace('\r', "");
    Ok(Run { output, status, elapsed: started.elapsed() })
}
