//! The boards' own device trees, from Debian's arm64 kernel package (Linux 6.12, from trixie:
//! bookworm's own lists carry only 6.1, which lacks the RK3588's ITS nodes). Fetched with apt
//! through a private apt directory under `target/`, from the Debian mirror this machine's apt
//! already uses, and cached there: only the two trees are kept. Nothing is installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The trees, as paths inside the kernel package.
pub const ROCK_5B: &str = "rockchip/rk3588-rock-5b.dtb";
pub const FVP_BASE_REVC: &str = "arm/fvp-base-revc.dtb";
/// The suite whose arm64 kernel is 6.12.
const SUITE: &str = "trixie";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where the trees (and the apt state that fetched them) are kept.
fn cache() -> PathBuf {
    trapless_tests::root().join("target/board-dtbs")
}

/// The tree at `inside` (one of [`ROCK_5B`], [`FVP_BASE_REVC`]): fetched on first use, then read
/// from the cache. Panics with the reason when it cannot be fetched.
pub fn tree(inside: &str) -> Vec<u8> {
    static FETCHED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match FETCHED.get_or_init(fetch) {
        Ok(dir) => dir,
        Err(reason) => panic!("cannot get the boards' device trees from Debian's arm64 kernel package: {reason}"),
    };
    let path = dir.join(inside);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The kernel package version the cached trees came from.
pub fn version() -> String {
    std::fs::read_to_string(cache().join("dtbs/VERSION")).unwrap_or_default().trim().to_string()
}

/// The Debian mirror this machine's apt uses: the first `URIs:` (deb822) or `deb` line whose
/// suite is a plain Debian release, from `/etc/apt/sources.list{,.d/*}`.
fn mirror() -> Result<String, String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
        more.sort();
        files.extend(more.into_iter().filter(|path| path.extension().is_some_and(|ext| ext == "sources" || ext == "list")));
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for line in text.lines().map(str::trim) {
            let uri = if let Some(uris) = line.strip_prefix("URIs:") {
                uris.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|word| word.starts_with("http"))
            } else {
                None
            };
            if let Some(uri) = uri.filter(|uri| uri.starts_with("http") && uri.trim_end_matches('/').ends_with("/debian")) {
                return Ok(uri.to_string());
            }
        }
    }
    Err("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d (a line or URIs: ending in /debian)".into())
}

/// Runs `command`, returning its stdout, or why it failed.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|error| format!("{what}: cannot run: {error}"))?;
    if !output.status.success() {
        return Err(format!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fetches the arm64 kernel package of [`SUITE`] with apt into the cache and keeps its two
/// trees. Returns the folder that holds them.
fn fetch() -> Result<PathBuf, String> {
    let dtbs = cache().join("dtbs");
    if [ROCK_5B, FVP_BASE_REVC].iter().all(|tree| dtbs.join(tree).is_file()) {
        return Ok(dtbs);
    }
    let apt = cache().join("apt");
    for dir in ["lists/partial", "archives/partial", "parts", "preferences"] {
        std::fs::create_dir_all(apt.join(dir)).map_err(|error| format!("{}: {error}", apt.display()))?;
    }
    let sources = apt.join("sources.list");
    let line = format!("deb [arch=arm64 signed-by={KEYRING}] {} {SUITE} main\n", mirror()?);
    std::fs::write(&sources, line).map_err(|error| format!("{}: {error}", sources.display()))?;
    std::fs::write(apt.join("status"), "").map_err(|error| format!("{}: {error}", apt.display()))?;
    let options: Vec<String> = [
        ("Dir::Etc::SourceList", sources.clone()),
        ("Dir::Etc::SourceParts", apt.join("parts")),
        ("Dir::Etc::PreferencesParts", apt.join("preferences")),
        ("Dir::Etc::Preferences", PathBuf::from("/dev/null")),
        ("Dir::State::Lists", apt.join("lists")),
        ("Dir::State::status", apt.join("status")),
        ("Dir::Cache", apt.clone()),
        ("Dir::Cache::archives", apt.join("archives")),
    ]
    .iter()
    .map(|(key, path)| format!("{key}={}", path.display()))
    .chain(["APT::Architecture=arm64", "APT::Architectures=arm64", "APT::Sandbox::User=root"].map(String::from))
    .chain(["Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string()])
    .flat_map(|option| ["-o".to_string(), option])
    .collect();
    let apt_get = |words: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(&options).args(["-q", "-y"]).args(words).current_dir(&apt);
        command
    };
    run(&mut apt_get(&["update"]), "apt-get update (for trixie's arm64 lists)")?;
    let depends = run(Command::new("apt-cache").args(&options).args(["depends", "linux-image-arm64"]), "apt-cache depends linux-image-arm64")?;
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-6.12."))
        .ok_or_else(|| format!("linux-image-arm64 of {SUITE} depends on no 6.12 kernel:\n{depends}"))?
        .to_string();
    run(&mut apt_get(&["download", &package]), &format!("apt-get download {package}"))?;
    let deb = std::fs::read_dir(&apt)
        .map_err(|error| format!("{}: {error}", apt.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&format!("{package}_"))))
        .ok_or_else(|| format!("apt-get download left no {package} package in {}", apt.display()))?;
    let unpacked = apt.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).map_err(|error| format!("{}: {error}", unpacked.display()))?;
    let wanted: Vec<String> = [ROCK_5B, FVP_BASE_REVC].iter().map(|tree| format!("*/{tree}")).collect();
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards {}",
        deb.display(),
        unpacked.display(),
        wanted.iter().map(|pattern| format!("'{pattern}'")).collect::<Vec<_>>().join(" ")
    );
    run(Command::new("sh").args(["-c", &script]), &format!("unpacking {}", deb.display()))?;
    for tree in [ROCK_5B, FVP_BASE_REVC] {
        let found = find(&unpacked, tree).ok_or_else(|| format!("{package} has no {tree}"))?;
        let target = dtbs.join(tree);
        std::fs::create_dir_all(target.parent().unwrap()).map_err(|error| format!("{}: {error}", dtbs.display()))?;
        std::fs::copy(&found, &target).map_err(|error| format!("{}: {error}", target.display()))?;
    }
    std::fs::write(dtbs.join("VERSION"), format!("{package}\n")).map_err(|error| format!("{}: {error}", dtbs.display()))?;
    // The package is 90-odd MB; the trees are all the tests read.
    let _ = (std::fs::remove_file(&deb), std::fs::remove_dir_all(&unpacked));
    Ok(dtbs)
}

/// The file under `dir` whose path ends with `tail`.
fn find(dir: &Path, tail: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find(&path, tail) {
                return Some(found);
            }
        } else if path.ends_with(tail) {
            return Some(path);
        }
    }
    None
}
