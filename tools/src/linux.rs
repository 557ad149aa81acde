//! Linux for partitions: Debian's arm64 kernel, the few of its own modules a partition loads
//! ([`DEBIAN_MODULES`]) and `busybox-static`, fetched with apt-get into `target/linux/` and kept
//! there across runs ([`debian`]), the kernel modules under `partitions/linux/modules/` built
//! against the same kernel's headers, the programs under `partitions/linux/programs/` built
//! for its userspace, and an initramfs of busybox, the modules, the programs and
//! `partitions/linux/init` (a `newc` cpio archive written here: no root rights, no `cpio`
//! program). A system names the results as files, relative to its own
//! folder (e.g. `image = "../../target/linux/Image"`); xtask provides them before it plans the
//! system.
//!
//! The kernel is fetched once and kept (a Debian security upload renumbers its ABI, and modules
//! are tied to one: delete `target/linux/` to take a newer one); the modules and the initramfs
//! are made again on every build, which takes about a second.

mod debian;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The arm64 Image, as a system names it under [`dir`].
pub const IMAGE: &str = "Image";
/// The initramfs (busybox, the modules, the `/init` script), as a system names it under [`dir`].
pub const INITRAMFS: &str = "initramfs.cpio";
/// The statically linked busybox the initramfs is built from.
const BUSYBOX: &str = "busybox";
/// What was fetched: one `package version` line each. Written last: its presence says the
/// cache is whole.
const VERSIONS: &str = "versions.txt";
/// Where the fetched packages are unpacked.
const APT: &str = "apt";
/// The `/init` script and the kernel modules' sources, in the repository.
const INIT_SCRIPT: &str = "partitions/linux/init";
const MODULES: &str = "partitions/linux/modules";
/// The userspace programs' sources (one C file each, built without a C library).
const PROGRAMS: &str = "partitions/linux/programs";
/// Where the initramfs holds the modules built here, Debian's own, and the programs.
const MODULES_IN_INITRAMFS: &str = "lib/trapless";
const DEBIAN_MODULES_IN_INITRAMFS: &str = "lib/debian";
const PROGRAMS_IN_INITRAMFS: &str = "bin";

/// The kernel's own modules the initramfs carries (under `lib/modules/<release>/kernel/`), in
/// the order `/init` loads them: the stock virtio drivers the static virtio links run
/// (`virtio_net` needs `net_failover`, which needs `failover`). Debian builds them as modules.
pub const DEBIAN_MODULES: [&str; 5] = [
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/char/virtio_console.ko",
];

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
    /// The packages the Image, busybox and the headers came from (`package version` each).
    pub versions: String,
    /// Whether they were fetched now (else they were in the cache).
    pub fetched: bool,
    /// The modules in the initramfs.
    pub modules: Vec<String>,
}

/// Makes sure [`IMAGE`] and [`INITRAMFS`] are in [`dir`]: fetches the kernel, its headers and
/// busybox if they are not cached, builds the modules (installing the arm64 cross compiler with
/// apt-get as root if it is missing) and writes the initramfs again if anything in it changed.
/// Says on stderr what it fetches or installs; fails with the reason when it cannot.
pub fn provide(root: &Path) -> Result<Provided, String> {
    let dir = dir(root);
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let headers = headers(&dir);
    let cached = [IMAGE, BUSYBOX, VERSIONS].iter().all(|name| dir.join(name).is_file())
        && headers.is_some()
        && debian_modules(&dir).is_some_and(|found| DEBIAN_MODULES.iter().all(|module| found.join(module).is_file()));
    let headers = match headers.filter(|_| cached) {
        Some(headers) => headers,
        None => {
            let _ = std::fs::remove_file(dir.join(VERSIONS));
            let fetched = debian::fetch(&dir.join(APT)).map_err(|error| {
                format!("cannot fetch Debian's arm64 Linux kernel, its headers and busybox-static into {}: {error}", dir.display())
            })?;
            copy(&fetched.image, &dir.join(IMAGE))?;
            copy(&fetched.busybox, &dir.join(BUSYBOX))?;
            write_atomically(&dir.join(VERSIONS), fetched.versions.as_bytes())?;
            fetched.headers
        }
    };
    let modules = build_modules(root, &dir, &headers)?;
    let programs = build_programs(root, &dir)?;
    let kernel_modules = debian_modules(&dir).ok_or("Debian's kernel modules are missing")?;
    let mut debian = Vec::new();
    for module in DEBIAN_MODULES {
        let path = kernel_modules.join(module);
        let bytes = std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        let name = module.rsplit('/').next().unwrap_or(module).trim_end_matches(".ko");
        debian.push((name.to_string(), bytes));
    }
    let init = root.join(INIT_SCRIPT);
    let script = std::fs::read(&init).map_err(|error| format!("{}: {error}", init.display()))?;
    let busybox = std::fs::read(dir.join(BUSYBOX)).map_err(|error| format!("{}: {error}", dir.join(BUSYBOX).display()))?;
    let archive = initramfs(&busybox, &script, &Contents { modules: &modules, debian: &debian, programs: &programs });
    let target = dir.join(INITRAMFS);
    if std::fs::read(&target).ok().as_deref() != Some(archive.as_slice()) {
        write_atomically(&target, &archive)?;
    }
    let versions = std::fs::read_to_string(dir.join(VERSIONS)).unwrap_or_default();
    let modules = modules.into_iter().map(|(name, _)| name).collect();
    Ok(Provided { versions: versions.trim().to_string(), fetched: !cached, modules })
}

/// The unpacked kernel's own modules (`lib/modules/<release>/kernel`), if they are there.
fn debian_modules(dir: &Path) -> Option<PathBuf> {
    let modules = dir.join(APT).join("root/lib/modules");
    std::fs::read_dir(modules).ok()?.flatten().map(|entry| entry.path().join("kernel")).find(|path| path.is_dir())
}

/// The unpacked arm64 headers (`usr/src/linux-headers-*-arm64`), if they are there.
fn headers(dir: &Path) -> Option<PathBuf> {
    let src = dir.join(APT).join("root/usr/src");
    std::fs::read_dir(src).ok()?.flatten().map(|entry| entry.path()).find(|path| {
        path.file_name().is_some_and(|name| {
            let name = name.to_string_lossy();
            name.starts_with("linux-headers-") && name.ends_with("-arm64")
        }) && path.join("Makefile").is_file()
    })
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = std::fs::read(from).map_err(|error| format!("{}: {error}", from.display()))?;
    write_atomically(to, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// Builds each module under `partitions/linux/modules/<name>/` (a `Kbuild` file and its C
/// sources) against `headers`, in a copy under `dir/modules/`, and returns each `.ko` by name.
fn build_modules(root: &Path, dir: &Path, headers: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let sources = root.join(MODULES);
    let mut names: Vec<String> = std::fs::read_dir(&sources)
        .map_err(|error| format!("{}: {error}", sources.display()))?
        .flatten()
        .filter(|entry| entry.path().join("Kbuild").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    crate::setup::ensure_module_tools()?;
    let mut built = Vec::new();
    for name in names {
        let build = dir.join("modules").join(&name);
        std::fs::create_dir_all(&build).map_err(|error| format!("{}: {error}", build.display()))?;
        for entry in std::fs::read_dir(sources.join(&name)).map_err(|error| format!("{name}: {error}"))?.flatten() {
            let (from, to) = (entry.path(), build.join(entry.file_name()));
            // Only what changed, so that make sees what is new.
            let bytes = std::fs::read(&from).map_err(|error| format!("{}: {error}", from.display()))?;
            if std::fs::read(&to).ok().as_deref() != Some(bytes.as_slice()) {
                std::fs::write(&to, &bytes).map_err(|error| format!("{}: {error}", to.display()))?;
            }
        }
        let mut make = Command::new("make");
        make.arg("-C").arg(headers).arg(format!("M={}", build.display()));
        make.args(["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "modules"]);
        debian::run(&mut make, &format!("building the kernel module {name}"))?;
        let module = build.join(format!("{}.ko", name.replace('-', "_")));
        // Without its debugging information: a tenth of the size in the initramfs.
        let stripped = build.join("stripped.ko");
        let mut strip = Command::new("aarch64-linux-gnu-strip");
        strip.arg("--strip-debug").arg(&module).arg("-o").arg(&stripped);
        debian::run(&mut strip, &format!("stripping the kernel module {name}"))?;
        let bytes = std::fs::read(&stripped).map_err(|error| format!("{}: {error}", stripped.display()))?;
        built.push((name, bytes));
    }
    Ok(built)
}

/// Builds each program `partitions/linux/programs/<name>.c` for Linux's arm64 userspace, as a
/// static executable that needs no C library (none is installed for the cross compiler: the
/// programs make their system calls themselves), and returns each by name.
fn build_programs(root: &Path, dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let sources = root.join(PROGRAMS);
    let mut names: Vec<String> = match std::fs::read_dir(&sources) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_string_lossy().strip_suffix(".c").map(str::to_string))
            .collect(),
        Err(_) => return Ok(Vec::new()),
    };
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    crate::setup::ensure_module_tools()?;
    let build = dir.join("programs");
    std::fs::create_dir_all(&build).map_err(|error| format!("{}: {error}", build.display()))?;
    let mut built = Vec::new();
    for name in names {
        let output = build.join(&name);
        let mut gcc = Command::new("aarch64-linux-gnu-gcc-12");
        gcc.args(["-std=gnu11", "-Os", "-Wall", "-Wextra", "-Werror", "-static", "-nostdlib", "-ffreestanding"]);
        gcc.args(["-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-s", "-o"]).arg(&output);
        gcc.arg(sources.join(format!("{name}.c"))).arg("-lgcc");
        debian::run(&mut gcc, &format!("building the program {name}"))?;
        let bytes = std::fs::read(&output).map_err(|error| format!("{}: {error}", output.display()))?;
        built.push((name, bytes));
    }
    Ok(built)
}

/// What the initramfs carries besides busybox and `/init`, each by name.
pub struct Contents<'a> {
    /// The modules built here: `/lib/trapless/<name>.ko`.
    pub modules: &'a [(String, Vec<u8>)],
    /// Debian's own modules: `/lib/debian/<name>.ko`.
    pub debian: &'a [(String, Vec<u8>)],
    /// The programs: `/bin/<name>`.
    pub programs: &'a [(String, Vec<u8>)],
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
/// `/dev/console`, the modules and programs of `contents`, and the `/init` script. Owned by
/// root, dated 1970, the same bytes each time.
pub fn initramfs(busybox: &[u8], init: &[u8], contents: &Contents<'_>) -> Vec<u8> {
    let directory = |name| Entry { name, mode: DIRECTORY | 0o755, rdev: (0, 0), data: &[] };
    let files = |list: &'_ [(String, Vec<u8>)], folder: &str, suffix: &str| -> Vec<String> {
        list.iter().map(|(name, _)| format!("{folder}/{name}{suffix}")).collect()
    };
    let modules = files(contents.modules, MODULES_IN_INITRAMFS, ".ko");
    let debian = files(contents.debian, DEBIAN_MODULES_IN_INITRAMFS, ".ko");
    let programs = files(contents.programs, PROGRAMS_IN_INITRAMFS, "");
    let mut entries = vec![
        directory("bin"),
        Entry { name: "bin/busybox", mode: REGULAR | 0o755, rdev: (0, 0), data: busybox },
        Entry { name: "bin/sh", mode: SYMLINK | 0o777, rdev: (0, 0), data: b"busybox" },
        directory("dev"),
        Entry { name: "dev/console", mode: CHARACTER_DEVICE | 0o600, rdev: (5, 1), data: &[] },
        directory("proc"),
        directory("sys"),
        directory("tmp"),
        directory("lib"),
        directory(MODULES_IN_INITRAMFS),
        directory(DEBIAN_MODULES_IN_INITRAMFS),
    ];
    for (path, (_, bytes)) in modules.iter().zip(contents.modules).chain(debian.iter().zip(contents.debian)) {
        entries.push(Entry { name: path, mode: REGULAR | 0o644, rdev: (0, 0), data: bytes });
    }
    for (path, (_, bytes)) in programs.iter().zip(contents.programs) {
        entries.push(Entry { name: path, mode: REGULAR | 0o755, rdev: (0, 0), data: bytes });
    }
    entries.push(Entry { name: "init", mode: REGULAR | 0o755, rdev: (0, 0), data: init });
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

    fn get_mode_and_data(found: &[ReadEntry], name: &str) -> (u32, Vec<u8>) {
        let entry = found.iter().find(|entry| entry.0 == name).unwrap();
        (entry.1, entry.3.clone())
    }

    #[test]
    fn the_initramfs_is_a_newc_archive_with_busybox_the_modules_the_programs_the_init_script_and_a_console() {
        let modules = [("sgi-probe".to_string(), b"\x7fELF module".to_vec())];
        let debian = [("virtio_blk".to_string(), b"\x7fELF debian".to_vec())];
        let programs = [("trapless-io".to_string(), b"\x7fELF program".to_vec())];
        let contents = Contents { modules: &modules, debian: &debian, programs: &programs };
        let archive = initramfs(b"\x7fELF busybox", b"#!/bin/sh\necho hi\n", &contents);
        let found = entries(&archive);
        let names: Vec<&str> = found.iter().map(|entry| entry.0.as_str()).collect();
        let expected = [
            "bin", "bin/busybox", "bin/sh", "dev", "dev/console", "proc", "sys", "tmp", "lib", "lib/trapless", "lib/debian",
            "lib/trapless/sgi-probe.ko", "lib/debian/virtio_blk.ko", "bin/trapless-io", "init",
        ];
        assert_eq!(names, expected);
        assert_eq!(get_mode_and_data(&found, "lib/trapless/sgi-probe.ko"), (0o100_644, b"\x7fELF module".to_vec()));
        assert_eq!(get_mode_and_data(&found, "lib/debian/virtio_blk.ko"), (0o100_644, b"\x7fELF debian".to_vec()));
        assert_eq!(get_mode_and_data(&found, "bin/trapless-io"), (0o100_755, b"\x7fELF program".to_vec()));
        let get = |name: &str| found.iter().find(|entry| entry.0 == name).unwrap();
        assert_eq!((get("bin/busybox").1, get("bin/busybox").3.as_slice()), (0o100_755, &b"\x7fELF busybox"[..]));
        assert_eq!((get("bin/sh").1, get("bin/sh").3.as_slice()), (0o120_777, &b"busybox"[..]));
        assert_eq!((get("dev/console").1, get("dev/console").2), (0o020_600, (5, 1)));
        assert_eq!((get("init").1, get("init").3.as_slice()), (0o100_755, &b"#!/bin/sh\necho hi\n"[..]));
        assert_eq!(initramfs(b"\x7fELF busybox", b"#!/bin/sh\necho hi\n", &contents), archive, "the same bytes each time");
    }
}
