//! Linux for partitions: Debian's arm64 kernel and `busybox-static`, fetched with apt-get into
//! `target/linux/` and kept there across runs, and an initramfs of busybox and
//! `partitions/linux/init` written by this module (a `newc` cpio archive: no root rights, no
//! `cpio` program). A system names the results as files, relative to its own folder (e.g.
//! `image = "../../target/linux/Image"`); xtask provides them before it plans the system.
//!
//! The packages come from Debian 12 (bookworm and its security updates) through a private
//! apt configuration (package lists, cache and status under `target/linux/apt/`), so nothing
//! on the host changes and no root rights are needed. The newest `linux-image-6.1.0-NN-arm64-unsigned`
//! the lists offer is taken; a Debian security upload renumbers `NN`, so the choice is made
//! once and kept (delete `target/linux/` to take a newer one).

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// The arm64 Image, as a system names it under [`dir`].
pub const IMAGE: &str = "Image";
/// The initramfs (busybox and the `/init` script), as a system names it under [`dir`].
pub const INITRAMFS: &str = "initramfs.cpio";
/// The statically linked busybox the initramfs is built from.
const BUSYBOX: &str = "busybox";
/// What was fetched: one `package version` line each.
const VERSIONS: &str = "versions.txt";
/// The `/init` script, in the repository.
const INIT_SCRIPT: &str = "partitions/linux/init";
/// Where Debian's archive is, unless `TRAPLESS_DEBIAN_MIRROR` says otherwise.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const MIRROR_VARIABLE: &str = "TRAPLESS_DEBIAN_MIRROR";
/// The key that signs Debian's archive (package `debian-archive-keyring`).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The kernel packages: `linux-image-6.1.0-<abi>-arm64-unsigned`.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-arm64-unsigned";

/// Where xtask keeps what it fetched and built for Linux partitions.
pub fn dir(root: &Path) -> PathBuf {
    root.join("target").join("linux")
}

/// `path` with `.` and `..` resolved by their names, as a file that may not exist yet needs.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether `path` is one of the files this module provides (then it need not exist yet).
pub fn provides(root: &Path, path: &Path) -> bool {
    let path = match std::env::current_dir() {
        Ok(current) if path.is_relative() => normalize(&current.join(path)),
        _ => normalize(path),
    };
    [IMAGE, INITRAMFS].iter().any(|name| path == normalize(&dir(root).join(name)))
}

/// What [`provide`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provided {
    /// The packages the Image and busybox came from (`package version` each).
    pub versions: String,
    /// Whether they were fetched now (else they were in the cache).
    pub fetched: bool,
}

/// Makes sure [`IMAGE`] and [`INITRAMFS`] are in [`dir`]: fetches the kernel and busybox if
/// they are not cached, and writes the initramfs again if `partitions/linux/init` changed.
/// Says on stderr what it fetches; fails with the reason when it cannot.
pub fn provide(root: &Path) -> Result<Provided, String> {
    let dir = dir(root);
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let cached = [IMAGE, BUSYBOX, VERSIONS].iter().all(|name| dir.join(name).is_file());
    if !cached {
        fetch(&dir).map_err(|error| {
            format!(
                "cannot fetch Debian's arm64 Linux kernel and busybox-static into {}: {error}",
                dir.display()
            )
        })?;
    }
    let init = root.join(INIT_SCRIPT);
    let script = std::fs::read(&init).map_err(|error| format!("{}: {error}", init.display()))?;
    let busybox = std::fs::read(dir.join(BUSYBOX)).map_err(|error| format!("{}: {error}", dir.join(BUSYBOX).display()))?;
    let archive = initramfs(&busybox, &script);
    let target = dir.join(INITRAMFS);
    if std::fs::read(&target).ok().as_deref() != Some(archive.as_slice()) {
        write_atomically(&target, &archive)?;
    }
    let versions = std::fs::read_to_string(dir.join(VERSIONS)).unwrap_or_default();
    Ok(Provided { versions: versions.trim().to_string(), fetched: !cached })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("{}: {error}", path.display()))
}

fn found(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// Runs `command`, failing with its stderr.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|error| format!("{what}: cannot run: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
        Err(format!("{what} failed ({}): {}", output.status, last[last.len().saturating_sub(3)..].join(" / ")))
    }
}

/// A private apt: arm64 package lists of Debian 12 under `apt`, nothing of the host's state.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(dir: PathBuf) -> Result<Self, String> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d", "debs", "extracted"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|error| format!("{}: {error}", dir.join(sub).display()))?;
        }
        let mirror = std::env::var(MIRROR_VARIABLE).unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
        let security = mirror.trim_end_matches('/').strip_suffix("/debian").map_or_else(
            || "http://deb.debian.org/debian-security".to_string(),
            |base| format!("{base}/debian-security"),
        );
        let sources = format!(
            "deb [arch=arm64 signed-by={KEYRING}] {mirror} bookworm main\n\
             deb [arch=arm64 signed-by={KEYRING}] {security} bookworm-security main\n"
        );
        std::fs::write(dir.join("sources.list"), sources).map_err(|error| format!("{}: {error}", dir.display()))?;
        std::fs::write(dir.join("status"), "").map_err(|error| format!("{}: {error}", dir.display()))?;
        Ok(Self { dir })
    }

    /// `program` (apt-get or apt-cache) with the private configuration.
    fn command(&self, program: &str) -> Command {
        let at = |name: &str| self.dir.join(name).display().to_string();
        let mut command = Command::new(program);
        command.args(["-q", "-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64"]);
        for (key, value) in [
            ("Dir::State::Lists", at("lists")),
            ("Dir::State::status", at("status")),
            ("Dir::Cache", at("cache")),
            ("Dir::Etc::SourceList", at("sources.list")),
            ("Dir::Etc::SourceParts", at("sources.list.d")),
        ] {
            command.arg("-o").arg(format!("{key}={value}"));
        }
        if is_root() {
            // apt would hand downloads to its `_apt` user, who cannot write under target/.
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        command.env("LC_ALL", "C").stdin(Stdio::null());
        command
    }
}

/// Fetches the newest Debian 12 arm64 kernel and busybox-static, and copies the Image and the
/// busybox binary into `dir`.
fn fetch(dir: &Path) -> Result<(), String> {
    for program in ["apt-get", "apt-cache", "dpkg-deb", "tar"] {
        if !found(program) {
            return Err(format!("{program} not found: fetching needs a Debian-like host with apt"));
        }
    }
    if !Path::new(KEYRING).is_file() {
        if !is_root() {
            return Err(format!("{KEYRING} is missing: install debian-archive-keyring"));
        }
        eprintln!("xtask: installing debian-archive-keyring (it signs the Debian archive Linux comes from)");
        run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends", "debian-archive-keyring"]), "apt-get install debian-archive-keyring")?;
    }
    let apt = Apt::new(dir.join("apt"))?;
    eprintln!("xtask: fetching Debian's arm64 package lists into {}", apt.dir.display());
    run(apt.command("apt-get").arg("update"), "apt-get update")?;
    let names = run(apt.command("apt-cache").args(["pkgnames", KERNEL_PREFIX]), "apt-cache pkgnames")?;
    let kernel = newest_kernel(&names).ok_or_else(|| {
        format!("the package lists offer no {KERNEL_PREFIX}<abi>{KERNEL_SUFFIX}")
    })?;
    eprintln!("xtask: fetching {kernel} and busybox-static (about 61 MB) with apt-get download");
    let debs = apt.dir.join("debs");
    for old in std::fs::read_dir(&debs).map_err(|error| format!("{}: {error}", debs.display()))?.flatten() {
        let _ = std::fs::remove_file(old.path());
    }
    run(apt.command("apt-get").current_dir(&debs).args(["download", &kernel, "busybox-static"]), "apt-get download")?;
    let extracted = apt.dir.join("extracted");
    let mut versions = String::new();
    for entry in std::fs::read_dir(&debs).map_err(|error| format!("{}: {error}", debs.display()))?.flatten() {
        let deb = entry.path();
        let fields = run(Command::new("dpkg-deb").args(["--show", "--showformat=${Package} ${Version}"]).arg(&deb), "dpkg-deb --show")?;
        versions.push_str(fields.trim());
        versions.push('\n');
        // Only what the initramfs and the partition need: the kernel's 300 MB of modules stay packed.
        let wanted = if fields.starts_with("busybox") { "./bin/busybox" } else { "./boot" };
        let script = format!(
            "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" {wanted}",
        );
        run(Command::new("sh").args(["-c", &script, "sh"]).arg(&deb).arg(&extracted), "unpacking a package")?;
    }
    let boot = extracted.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(|error| format!("{}: {error}", boot.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| format!("{kernel} has no boot/vmlinuz-*"))?;
    let copy = |from: &Path, name: &str| {
        let bytes = std::fs::read(from).map_err(|error| format!("{}: {error}", from.display()))?;
        write_atomically(&dir.join(name), &bytes)
    };
    copy(&vmlinuz, IMAGE)?;
    copy(&extracted.join("bin/busybox"), BUSYBOX)?;
    // Last: its presence says the cache is whole.
    write_atomically(&dir.join(VERSIONS), versions.as_bytes())
}

/// The newest `linux-image-6.1.0-<abi>-arm64-unsigned` among `names` (one a line).
fn newest_kernel(names: &str) -> Option<String> {
    names
        .lines()
        .filter_map(|name| {
            let abi = name.trim().strip_prefix(KERNEL_PREFIX)?.strip_suffix(KERNEL_SUFFIX)?;
            Some((abi.parse::<u32>().ok()?, name.trim().to_string()))
        })
        .max()
        .map(|(_, name)| name)
}

/// One file of a `newc` cpio archive.
struct Entry<'a> {
    name: &'a str,
    /// Type and permission bits, as `st_mode`.
    mode: u32,
    /// For a device node: major and minor.
    rdev: (u32, u32),
    data: &'a [u8],
}

const DIRECTORY: u32 = 0o040_000;
const REGULAR: u32 = 0o100_000;
const SYMLINK: u32 = 0o120_000;
const CHARACTER_DEVICE: u32 = 0o020_000;

/// The initramfs: busybox, `/bin/sh` pointing at it, the directories `/init` mounts on,
/// `/dev/console`, and the `/init` script. Owned by root, dated 1970, the same bytes each time.
pub fn initramfs(busybox: &[u8], init: &[u8]) -> Vec<u8> {
    let directory = |name| Entry { name, mode: DIRECTORY | 0o755, rdev: (0, 0), data: &[] };
    let entries = [
        directory("bin"),
        Entry { name: "bin/busybox", mode: REGULAR | 0o755, rdev: (0, 0), data: busybox },
        Entry { name: "bin/sh", mode: SYMLINK | 0o777, rdev: (0, 0), data: b"busybox" },
        directory("dev"),
        Entry { name: "dev/console", mode: CHARACTER_DEVICE | 0o600, rdev: (5, 1), data: &[] },
        directory("proc"),
        directory("sys"),
        directory("tmp"),
        Entry { name: "init", mode: REGULAR | 0o755, rdev: (0, 0), data: init },
    ];
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        push_entry(&mut out, index as u32 + 1, entry);
    }
    push_entry(&mut out, 0, &Entry { name: "TRAILER!!!", mode: 0, rdev: (0, 0), data: &[] });
    // The kernel reads the archive in 512-byte blocks, as cpio writes it.
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

fn push_entry(out: &mut Vec<u8>, inode: u32, entry: &Entry<'_>) {
    let links = if entry.mode & DIRECTORY == DIRECTORY { 2 } else { 1 };
    let fields = [
        inode,
        entry.mode,
        0, // uid
        0, // gid
        if entry.mode == 0 { 1 } else { links },
        0, // mtime
        entry.data.len() as u32,
        0, // device major
        0, // device minor
        entry.rdev.0,
        entry.rdev.1,
        entry.name.len() as u32 + 1,
        0, // checksum (none in newc)
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(entry.name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(entry.data);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_provided_files_are_provided_wherever_the_path_goes_through() {
        let root = Path::new("/repo");
        assert!(provides(root, Path::new("/repo/tests/systems/../../target/linux/Image")));
        assert!(provides(root, Path::new("/repo/target/linux/./initramfs.cpio")));
        assert!(!provides(root, Path::new("/repo/target/linux/busybox")));
        assert!(!provides(root, Path::new("/elsewhere/target/linux/Image")));
    }

    #[test]
    fn the_newest_abi_wins_by_number_not_by_text() {
        let names = "linux-image-6.1.0-9-arm64-unsigned\nlinux-image-6.1.0-57-arm64-unsigned\n\
                     linux-image-6.1.0-100-arm64\nlinux-image-6.1.0-47-arm64-unsigned\n";
        assert_eq!(newest_kernel(names).as_deref(), Some("linux-image-6.1.0-57-arm64-unsigned"));
        assert_eq!(newest_kernel("linux-image-arm64\n"), None);
    }

    /// One entry read back: name, mode, device numbers, data.
    type ReadEntry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads back a newc archive, up to the trailer.
    fn entries(archive: &[u8]) -> Vec<ReadEntry> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(&archive[at..at + 6], b"070701", "magic at {at}");
            let field = |index: usize| {
                let start = at + 6 + 8 * index;
                u32::from_str_radix(std::str::from_utf8(&archive[start..start + 8]).unwrap(), 16).unwrap()
            };
            let (mode, size, rdev, name_size) = (field(1), field(6) as usize, (field(9), field(10)), field(11) as usize);
            let name_start = at + 110;
            let name = std::str::from_utf8(&archive[name_start..name_start + name_size - 1]).unwrap().to_string();
            assert_eq!(archive[name_start + name_size - 1], 0, "{name} is NUL-terminated");
            let data_start = (name_start + name_size).next_multiple_of(4);
            let data = archive[data_start..data_start + size].to_vec();
            at = (data_start + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(archive.len() % 512, 0);
                assert!(archive[at..].iter().all(|&byte| byte == 0));
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn the_initramfs_is_a_newc_archive_with_busybox_the_init_script_and_a_console() {
        let archive = initramfs(b"\x7fELF busybox", b"#!/bin/sh\necho hi\n");
        let found = entries(&archive);
        let names: Vec<&str> = found.iter().map(|entry| entry.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "proc", "sys", "tmp", "init"]);
        let get = |name: &str| found.iter().find(|entry| entry.0 == name).unwrap();
        assert_eq!((get("bin/busybox").1, get("bin/busybox").3.as_slice()), (0o100_755, &b"\x7fELF busybox"[..]));
        assert_eq!((get("bin/sh").1, get("bin/sh").3.as_slice()), (0o120_777, &b"busybox"[..]));
        assert_eq!((get("dev/console").1, get("dev/console").2), (0o020_600, (5, 1)));
        assert_eq!((get("init").1, get("init").3.as_slice()), (0o100_755, &b"#!/bin/sh\necho hi\n"[..]));
        assert_eq!(initramfs(b"\x7fELF busybox", b"#!/bin/sh\necho hi\n"), archive, "the same bytes each time");
    }
}
