//! Booting a packed system in QEMU and reading what happened from its console.

use crate::planner::SystemPlan;
use crate::platform::{Platform, QemuVersion};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The QEMU that boots every system.
pub const PROGRAM: &str = "qemu-system-aarch64";

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
    let mut command = Command::new(PROGRAM);
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

/// The arguments that put QEMU in instruction-counting mode: virtual time advances 1 ns per
/// instruction executed, every vCPU in turn on one thread, never waiting for the host. The
/// guest's counter (62.5 MHz on `virt`) then counts 16 instructions a tick, all CPUs' together,
/// and two runs give the same counts (`docs/performance.md`).
pub fn instruction_counting() -> Vec<String> {
    ["-icount", "shift=0,align=off,sleep=off"].map(String::from).to_vec()
}

/// The arguments that make QEMU log every exception, every block it translates and every run
/// of a block, unchained, to `path` (a FIFO that `profile` reads as it comes).
pub fn exec_log(path: &Path) -> Vec<String> {
    vec!["-d".into(), "int,exec,nochain,in_asm".into(), "-D".into(), path.display().to_string()]
}

/// How many exceptions a QEMU `-d int` log shows taken from a partition (EL1 or EL0) to EL2.
pub fn exceptions_to_el2(log: &str) -> usize {
    log.lines().filter(|line| line.starts_with("...from EL1 to EL2") || line.starts_with("...from EL0 to EL2")).count()
}

/// The exit counts EL2 printed for one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    /// Exits the partition took while it ran.
    pub total: u64,
    pub hvc: u64,
    pub smc: u64,
    pub data_abort: u64,
    pub insn_abort: u64,
    pub sysreg: u64,
    pub other: u64,
    /// Entries of its CPUs that were still running when it stopped, parked by EL2.
    pub parked: u64,
}

/// The counts of one of EL2's `trapless: <what> partition=<name> key=<count> ...` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    /// The count of `key`, 0 if the line has none.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

impl Exits {
    /// Every entry to EL2 from the partition's CPUs, while it ran or after: what QEMU's
    /// `-d int` log counts.
    pub fn entries(&self) -> u64 {
        self.total + self.parked
    }
}

/// What a QEMU run showed.
#[derive(Clone, Debug)]
pub struct Run {
    /// Everything QEMU wrote to the console, `\r` removed.
    pub output: String,
    /// What QEMU itself wrote to its standard error (its own complaints, not the machine's).
    pub stderr: String,
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

    /// The `key=<count>` fields of each `trapless: <what> partition=<name> ...` line EL2 prints
    /// at power-off, by partition; a field that is absent or no number counts 0.
    pub fn counts(&self, what: &str) -> BTreeMap<String, Counts> {
        let prefix = format!("trapless: {what} ");
        let mut all = BTreeMap::new();
        for line in self.output.lines() {
            let Some(rest) = line.strip_prefix(prefix.as_str()) else { continue };
            let fields: BTreeMap<&str, &str> = rest.split_whitespace().filter_map(|field| field.split_once('=')).collect();
            let Some(name) = fields.get("partition") else { continue };
            let counts = fields.iter().filter_map(|(key, value)| Some((key.to_string(), value.parse().ok()?))).collect();
            all.insert(name.to_string(), Counts(counts));
        }
        all
    }

    /// `trapless: exits partition=<name> ...`, by partition.
    pub fn exits(&self) -> BTreeMap<String, Exits> {
        let exits = |counts: Counts| Exits {
            total: counts.get("total"),
            hvc: counts.get("hvc"),
            smc: counts.get("smc"),
            data_abort: counts.get("data-abort"),
            insn_abort: counts.get("insn-abort"),
            sysreg: counts.get("sysreg"),
            other: counts.get("other"),
            parked: counts.get("parked"),
        };
        self.counts("exits").into_iter().map(|(name, counts)| (name, exits(counts))).collect()
    }

    /// Lines partition `name` wrote through the console hypercall, without the `[name] ` prefix.
    pub fn partition_lines(&self, name: &str) -> Vec<&str> {
        let prefix = format!("[{name}] ");
        self.output.lines().filter_map(|line| line.strip_prefix(prefix.as_str())).collect()
    }

    /// Whether the run succeeded: QEMU powered off by itself, and every partition of `plan`
    /// stopped with `system-off`. Otherwise, why not.
    pub fn verdict(&self, plan: &SystemPlan) -> Result<(), String> {
        if let Some(failure) = self.qemu_failure() {
            return Err(failure);
        }
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
            Some(status) => Err(format!("QEMU exited with {status}{}", self.said())),
            None => unreachable!("checked above"),
        }
    }

    /// Why QEMU failed by itself, if it exited before the machine ran anything of trapless's
    /// (EL2 prints a line first thing): its exit status and what it wrote to stderr.
    fn qemu_failure(&self) -> Option<String> {
        let status = self.status?;
        if self.output.lines().any(|line| line.starts_with("trapless: ")) {
            return None;
        }
        Some(format!("QEMU failed before any partition ran: it exited with {status}{}", self.said()))
    }

    /// `; it said:` and QEMU's stderr lines, if it wrote any.
    fn said(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|line| !line.trim().is_empty()).collect();
        if lines.is_empty() { String::new() } else { format!("; it said:\n  {}", lines.join("\n  ")) }
    }
}

/// The version `qemu-system-aarch64 --version` reports, and that line; asked once per process.
pub fn installed_version() -> Result<(QemuVersion, String), String> {
    static VERSION: OnceLock<Result<(QemuVersion, String), String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let output = Command::new(PROGRAM)
                .arg("--version")
                .output()
                .map_err(|error| format!("cannot run {PROGRAM}: {error}"))?;
            let text = String::from_utf8_lossy(&output.stdout);
            let first = text.lines().next().unwrap_or("").trim().to_string();
            parse_version(&first).map(|version| (version, first.clone())).ok_or_else(|| {
                format!("{PROGRAM} --version printed {first:?}, which names no version")
            })
        })
        .clone()
}

/// The version in QEMU's `--version` line: `QEMU emulator version 7.2.0 (Debian ...)`.
pub fn parse_version(line: &str) -> Option<QemuVersion> {
    let word = line.strip_prefix("QEMU emulator version ")?.split_whitespace().next()?;
    QemuVersion::try_from(word.to_string()).ok()
}

/// Whether QEMU `installed` (its version and `--version` line) can run `platform`.
pub fn check_version(platform: &Platform, installed: QemuVersion, line: &str) -> Result<(), String> {
    let Some(minimum) = platform.qemu.as_ref().and_then(|qemu| qemu.minimum_version) else { return Ok(()) };
    if installed >= minimum {
        return Ok(());
    }
    let machine = platform.qemu.as_ref().map_or("", |qemu| qemu.machine.as_str());
    Err(format!("platform '{}' needs QEMU {minimum} or newer for -M {machine}; {PROGRAM} here is {installed} ({line})", platform.name))
}

/// Checks that the QEMU on this machine is new enough for `platform`.
pub fn ensure_version(platform: &Platform) -> Result<(), String> {
    let (installed, line) = installed_version()?;
    check_version(platform, installed, &line)
}

/// Runs `command` until it exits or `timeout` passes (then kills it), collecting its console
/// and its stderr, and copying them to ours as they come if `echo` is set.
pub fn run(mut command: Command, timeout: Duration, echo: bool) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", command.get_program().to_string_lossy()))?;
    let stdout = collect(child.stdout.take().expect("stdout is piped"), echo.then(|| Box::new(std::io::stdout()) as Echo));
    let stderr = collect(child.stderr.take().expect("stderr is piped"), echo.then(|| Box::new(std::io::stderr()) as Echo));
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
    let text = |(reader, bytes): Collected| {
        let _ = reader.join();
        String::from_utf8_lossy(&bytes.lock().expect("reader finished")).replace('\r', "")
    };
    Ok(Run { output: text(stdout), stderr: text(stderr), status, elapsed: started.elapsed() })
}

/// Where a stream read by [`collect`] is copied to as it comes.
type Echo = Box<dyn Write + Send>;

/// A reader thread and what it has read so far.
type Collected = (std::thread::JoinHandle<()>, Arc<Mutex<Vec<u8>>>);

/// Reads `from` to its end on a thread of its own, keeping the bytes and copying them to `echo`.
fn collect(mut from: impl Read + Send + 'static, mut echo: Option<Echo>) -> Collected {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bytes);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(read) = from.read(&mut chunk) {
            if read == 0 {
                break;
            }
            if let Some(echo) = echo.as_mut() {
                let _ = echo.write_all(&chunk[..read]);
                let _ = echo.flush();
            }
            kept.lock().expect("reader does not panic").extend_from_slice(&chunk[..read]);
        }
    });
    (reader, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(name: &str) -> Platform {
        crate::platform::load(&crate::root().join("platform").join(name).join("platform.toml")).unwrap()
    }

    #[test]
    fn reads_the_version_from_the_version_line() {
        assert_eq!(parse_version("QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7+deb12u18)"), Some(QemuVersion([7, 2, 0])));
        assert_eq!(parse_version("QEMU emulator version 10.0.2"), Some(QemuVersion([10, 0, 2])));
        assert_eq!(parse_version("qemu-img version 7.2.0"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn a_qemu_older_than_the_platform_needs_is_refused_by_name() {
        let gicv4 = platform("qemu-virt-gicv4");
        assert_eq!(check_version(&gicv4, QemuVersion([7, 0, 0]), "QEMU emulator version 7.0.0"), Ok(()));
        assert_eq!(
            check_version(&gicv4, QemuVersion([6, 2, 0]), "QEMU emulator version 6.2.0"),
            Err("platform 'qemu-virt-gicv4' needs QEMU 7.0.0 or newer for -M virt,virtualization=on,gic-version=4; \
                 qemu-system-aarch64 here is 6.2.0 (QEMU emulator version 6.2.0)"
                .into())
        );
        assert!(check_version(&platform("qemu-virt"), QemuVersion([6, 2, 0]), "").is_ok());
        assert!(check_version(&platform("qemu-virt"), QemuVersion([6, 1, 1]), "").is_err());
    }

    #[test]
    fn a_qemu_that_exits_before_el2_speaks_is_reported_with_its_status_and_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'qemu-system-aarch64: failed to find romfile \"efi-virtio.rom\"' >&2; exit 1"]);
        let run = run(command, Duration::from_secs(10), false).unwrap();
        assert_eq!(run.output, "");
        assert_eq!(
            run.qemu_failure().unwrap(),
            "QEMU failed before any partition ran: it exited with exit status: 1; it said:\n  \
             qemu-system-aarch64: failed to find romfile \"efi-virtio.rom\""
        );
    }

    #[test]
    fn a_qemu_that_ran_trapless_is_not_a_qemu_failure() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'trapless: EL2 up on platform qemu-virt (1 CPUs); partitions: 1'; exit 0"]);
        let run = run(command, Duration::from_secs(10), false).unwrap();
        assert_eq!(run.qemu_failure(), None);
        assert_eq!(run.stderr, "");
    }
}
