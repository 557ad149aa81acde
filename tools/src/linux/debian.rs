//! Debian's arm64 Linux, fetched with apt-get through a private configuration: Debian 12's
//! package lists (bookworm and its security updates, for arm64 and the host's architecture),
//! cache and package status live under `target/linux/apt/`, so nothing on the host changes and
//! no root rights are needed. The newest `linux-image-6.1.0-<abi>-arm64-unsigned` the lists
//! offer is taken, with the headers and the host's kbuild tools of the same upload (to build
//! modules for it) and `busybox-static`; of the kernel's own modules, only the few a partition
//! loads ([`super::DEBIAN_MODULES`]) are unpacked.

use crate::setup::{found, is_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's archive is, unless `TRAPLESS_DEBIAN_MIRROR` says otherwise.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const MIRROR_VARIABLE: &str = "TRAPLESS_DEBIAN_MIRROR";
/// The key that signs Debian's archive (package `debian-archive-keyring`).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The kernel packages: `linux-image-6.1.0-<abi>-arm64-unsigned`.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-arm64-unsigned";

/// What [`fetch`] unpacked.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// `boot/vmlinuz-*`: the raw arm64 Image.
    pub image: PathBuf,
    /// `bin/busybox`.
    pub busybox: PathBuf,
    /// The kernel's headers (`usr/src/linux-headers-<release>`), ready for `make -C`.
    pub headers: PathBuf,
    /// `package version` per line.
    pub versions: String,
}

/// Runs `command`, failing with (the end of) its stderr.
pub fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|error| format!("{what}: cannot run: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = stderr.lines().chain(stdout.lines()).filter(|line| !line.trim().is_empty()).collect();
        Err(format!("{what} failed ({}): {}", output.status, lines[lines.len().saturating_sub(4)..].join(" / ")))
    }
}

/// A private apt.
struct Apt {
    dir: PathBuf,
    host: String,
}

impl Apt {
    fn new(dir: &Path) -> Result<Self, String> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d", "debs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|error| format!("{}: {error}", dir.join(sub).display()))?;
        }
        let host = run(Command::new("dpkg").arg("--print-architecture"), "dpkg --print-architecture")?.trim().to_string();
        let mirror = std::env::var(MIRROR_VARIABLE).unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
        let mirror = mirror.trim_end_matches('/');
        let security = mirror.strip_suffix("/debian").map_or_else(
            || "http://deb.debian.org/debian-security".to_string(),
            |base| format!("{base}/debian-security"),
        );
        let sources = format!(
            "deb [arch=arm64,{host} signed-by={KEYRING}] {mirror} bookworm main\n\
             deb [arch=arm64,{host} signed-by={KEYRING}] {security} bookworm-security main\n"
        );
        std::fs::write(dir.join("sources.list"), sources).map_err(|error| format!("{}: {error}", dir.display()))?;
        std::fs::write(dir.join("status"), "").map_err(|error| format!("{}: {error}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf(), host })
    }

    /// `program` (apt-get or apt-cache) with the private configuration.
    fn command(&self, program: &str) -> Command {
        let at = |name: &str| self.dir.join(name).display().to_string();
        let mut command = Command::new(program);
        command.args(["-q", "-o", "APT::Architecture=arm64"]).arg("-o").arg(format!("APT::Architectures=arm64,{}", self.host));
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

/// Fetches and unpacks the packages into `dir` (`dir/debs`, `dir/root`), saying so on stderr.
pub fn fetch(dir: &Path) -> Result<Fetched, String> {
    for program in ["apt-get", "apt-cache", "dpkg", "dpkg-deb", "tar"] {
        if !found(program) {
            return Err(format!("{program} not found: fetching needs a Debian-like host with apt"));
        }
    }
    if !Path::new(KEYRING).is_file() {
        if !is_root() {
            return Err(format!("{KEYRING} is missing: install debian-archive-keyring"));
        }
        eprintln!("xtask: installing debian-archive-keyring (it signs the Debian archive Linux comes from)");
        let install = ["install", "-y", "-q", "--no-install-recommends", "debian-archive-keyring"];
        run(Command::new("apt-get").args(install), "apt-get install debian-archive-keyring")?;
    }
    let apt = Apt::new(dir)?;
    eprintln!("xtask: fetching Debian 12's package lists (arm64, {}) into {}", apt.host, apt.dir.display());
    run(apt.command("apt-get").arg("update"), "apt-get update")?;
    let names = run(apt.command("apt-cache").args(["pkgnames", KERNEL_PREFIX]), "apt-cache pkgnames")?;
    let kernel = newest_kernel(&names).ok_or_else(|| format!("the package lists offer no {KERNEL_PREFIX}<abi>{KERNEL_SUFFIX}"))?;
    let release = kernel.trim_start_matches("linux-image-").trim_end_matches("-unsigned").to_string();
    let abi = release.trim_end_matches("-arm64");
    let show = run(apt.command("apt-cache").args(["show", "--no-all-versions", &kernel]), "apt-cache show")?;
    let version = show.lines().find_map(|line| line.strip_prefix("Version: ")).ok_or("no version of the kernel")?.trim().to_string();
    let packages = [
        kernel.clone(),
        format!("linux-headers-{release}"),
        format!("linux-headers-{abi}-common"),
        // The kbuild tools run on the host: its architecture, the kernel's upload.
        format!("linux-kbuild-6.1:{}={version}", apt.host),
        "busybox-static".to_string(),
    ];
    eprintln!("xtask: fetching {} (about 75 MB, 145 MB unpacked) with apt-get download", packages.join(", "));
    let debs = apt.dir.join("debs");
    for old in std::fs::read_dir(&debs).map_err(|error| format!("{}: {error}", debs.display()))?.flatten() {
        let _ = std::fs::remove_file(old.path());
    }
    run(apt.command("apt-get").current_dir(&debs).arg("download").args(&packages), "apt-get download")?;
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    let mut versions = String::new();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(&debs).map_err(|error| format!("{}: {error}", debs.display()))?.flatten().map(|entry| entry.path()).collect();
    entries.sort();
    std::fs::create_dir_all(&root).map_err(|error| format!("{}: {error}", root.display()))?;
    let modules = format!("./lib/modules/{release}/kernel");
    for deb in entries {
        let fields = run(Command::new("dpkg-deb").args(["--show", "--showformat=${Package} ${Version}\n"]).arg(&deb), "dpkg-deb --show")?;
        versions.push_str(&fields);
        // All but the kernel's 300 MB of modules...
        let unpack = "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --exclude './lib/modules/*'";
        run(Command::new("sh").args(["-c", unpack, "sh"]).arg(&deb).arg(&root), "unpacking a package")?;
        // ...but for the few a partition loads (its virtio drivers).
        if fields.starts_with(&format!("{kernel} ")) {
            let unpack = "deb=$1 root=$2; shift 2; dpkg-deb --fsys-tarfile \"$deb\" | tar -x -C \"$root\" \"$@\"";
            let members = super::DEBIAN_MODULES.iter().map(|module| format!("{modules}/{module}"));
            run(Command::new("sh").args(["-c", unpack, "sh"]).arg(&deb).arg(&root).args(members), "unpacking the kernel's virtio modules")?;
        }
    }
    // Unpacked: the packages and the lists are not needed again (a new fetch updates the lists).
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(apt.dir.join("lists"));
    let headers = root.join("usr/src").join(format!("linux-headers-{release}"));
    // The arm64 headers' Makefile includes the common ones by absolute path: point it here.
    let makefile = headers.join("Makefile");
    let text = std::fs::read_to_string(&makefile).map_err(|error| format!("{}: {error}", makefile.display()))?;
    let text = text.replace("include /usr/src/", &format!("include {}/usr/src/", root.display()));
    std::fs::write(&makefile, text).map_err(|error| format!("{}: {error}", makefile.display()))?;
    Ok(Fetched {
        image: root.join("boot").join(format!("vmlinuz-{release}")),
        busybox: root.join("bin/busybox"),
        headers,
        versions,
    })
}

/// The newest `linux-image-6.1.0-<abi>-arm64-unsigned` among `names` (one a line).
pub fn newest_kernel(names: &str) -> Option<String> {
    names
        .lines()
        .filter_map(|name| {
            let abi = name.trim().strip_prefix(KERNEL_PREFIX)?.strip_suffix(KERNEL_SUFFIX)?;
            Some((abi.parse::<u32>().ok()?, name.trim().to_string()))
        })
        .max()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_abi_wins_by_number_not_by_text() {
        let names = "linux-image-6.1.0-9-arm64-unsigned\nlinux-image-6.1.0-57-arm64-unsigned\n\
                     linux-image-6.1.0-100-arm64\nlinux-image-6.1.0-47-arm64-unsigned\n";
        assert_eq!(newest_kernel(names).as_deref(), Some("linux-image-6.1.0-57-arm64-unsigned"));
        assert_eq!(newest_kernel("linux-image-arm64\n"), None);
    }
}
