//! A fresh machine: QEMU installed without its recommended packages has no NIC option ROMs
//! (Debian's `ipxe-qemu`, under `/usr/lib/ipxe`; QEMU's own `/usr/share/qemu/*.rom` point
//! there). trapless's systems must boot without them. Where this machine has the ROMs, the
//! boots here run in a private mount namespace with an empty tmpfs over their folder (root
//! and `unshare` needed, as for the outside check of the README's commands); where it can
//! neither lack nor hide them, the test says why and skips.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use trapless_tests::{BOOT_TIMEOUT, system};
use trapless_tools::{Target, build_system, qemu};

/// Where the NIC option ROMs live once `ipxe-qemu` is installed.
const ROM_FOLDER: &str = "/usr/lib/ipxe";

/// How QEMU is kept from the ROMs on this machine.
#[derive(Clone, Copy)]
enum Hiding {
    /// There are none to hide.
    Absent,
    /// An empty tmpfs over [`ROM_FOLDER`], in a mount namespace of QEMU's own.
    Namespace,
}

impl Hiding {
    /// How, if this machine can boot QEMU without the ROMs; otherwise why not.
    fn here() -> Result<Self, String> {
        if !Path::new(ROM_FOLDER).exists() {
            return Ok(Self::Absent);
        }
        let probe = Command::new("unshare")
            .args(["-m", "sh", "-c", &format!("mount -t tmpfs none {ROM_FOLDER} && ls -A {ROM_FOLDER}")])
            .output()
            .map_err(|error| format!("{ROM_FOLDER} exists and `unshare` cannot run: {error}"))?;
        if !probe.status.success() {
            return Err(format!(
                "{ROM_FOLDER} exists and cannot be hidden in a mount namespace (root needed): {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        Ok(Self::Namespace)
    }

    /// `command`, run where the ROMs cannot be seen.
    fn apply(self, command: Command) -> Command {
        match self {
            Self::Absent => command,
            Self::Namespace => {
                let mut hidden = Command::new("unshare");
                hidden
                    .args(["-m", "sh", "-c", &format!("mount -t tmpfs none {ROM_FOLDER} && exec \"$@\""), "sh"])
                    .arg(command.get_program())
                    .args(command.get_args());
                hidden
            }
        }
    }
}

#[test]
fn the_demo_boots_where_qemu_has_no_nic_option_roms() {
    let hiding = match Hiding::here() {
        Ok(hiding) => hiding,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let path = system("qemu-demo");
    let built = build_system(Target::system(&path)).unwrap_or_else(|error| panic!("{error}"));

    // The control: a NIC asked for by hand needs its ROM, so QEMU must fail here, and xtask
    // must say that QEMU failed and why, not that the partitions never stopped.
    let nic = ["-device".to_string(), "virtio-net-pci".to_string()];
    let control = qemu::command(&built.plan, &built.image, &nic).unwrap();
    let run = qemu::run(hiding.apply(control), Duration::from_secs(30), false).unwrap();
    let verdict = run.verdict(&built.plan).expect_err("a QEMU with a NIC and no ROM for it fails");
    assert!(
        verdict.starts_with("QEMU failed before any partition ran: it exited with exit status: 1; it said:")
            && verdict.contains("failed to find romfile \"efi-virtio.rom\""),
        "the control run's verdict: {verdict}"
    );

    // The demo as xtask boots it.
    let command = qemu::command(&built.plan, &built.image, &[]).unwrap();
    let run = qemu::run(hiding.apply(command), BOOT_TIMEOUT, false).unwrap();
    assert_eq!(run.verdict(&built.plan), Ok(()), "\n--- console ---\n{}--- stderr ---\n{}", run.output, run.stderr);
    assert_eq!(run.stderr, "", "QEMU complained");
}
