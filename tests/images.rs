//! Guest images of other shapes than trapless's own, built here and booted in QEMU.

use std::path::PathBuf;
use std::process::Command;
use trapless_tests::{boot_file, check, root};
use trapless_tools::image::{self, Placement};

/// Builds `tests/images/self-relocating.rs` into a position-independent ELF linked at 0, with
/// lld's own layout (no linker script, no Image header), and returns its path.
fn build_self_relocating() -> PathBuf {
    let root = root();
    trapless_tools::setup::ensure_rust_target(&root, "aarch64-unknown-none").unwrap();
    let dir = root.join("target/test-images");
    std::fs::create_dir_all(&dir).unwrap();
    let elf = dir.join("self-relocating.elf");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .current_dir(&root)
        .args(["--edition", "2024", "--target", "aarch64-unknown-none", "-C", "opt-level=s", "-C", "panic=abort"])
        .args(["-C", "relocation-model=pie", "-C", "link-arg=-pie", "-C", "link-arg=--no-dynamic-linker"])
        .arg("-o")
        .arg(&elf)
        .arg(root.join("tests/images/self-relocating.rs"))
        .output()
        .expect("rustc runs");
    assert!(output.status.success(), "rustc failed:\n{}", String::from_utf8_lossy(&output.stderr));
    elf
}

/// A field of a line like `... at 0x4200_0000, ...`: the number after `label`.
fn hex_after(line: &str, label: &str) -> u64 {
    let rest = &line[line.find(label).unwrap_or_else(|| panic!("no '{label}' in {line:?}")) + label.len()..];
    let digits: String = rest.trim_start_matches("0x").chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).unwrap()
}

#[test]
fn a_self_relocating_elf_without_an_image_header_is_loaded_and_entered_with_its_device_tree() {
    let elf = build_self_relocating();
    let loaded = image::load(&elf).unwrap();
    let Placement::SelfRelocating { entry } = loaded.placement else {
        panic!("placed as {:?}", loaded.placement);
    };
    // Its BSS (3 MiB and a stack) is in no byte of the file, but in its footprint.
    let file_size = std::fs::metadata(&elf).unwrap().len();
    assert!(loaded.footprint > 3 << 20 && file_size < 1 << 20, "footprint {:#x}, file {file_size:#x}", loaded.footprint);

    let system = elf.with_file_name("self-relocating.toml");
    std::fs::write(
        &system,
        "platform = \"qemu-virt\"\n\n[[partition]]\nname = \"suite\"\ncpus = [0]\nmemory = \"16MiB\"\nimage = \"self-relocating.elf\"\n",
    )
    .unwrap();
    let (built, run) = boot_file(&system, None, &[]);
    check(&run, run.verdict(&built.plan).is_ok(), &format!("verdict: {:?}", run.verdict(&built.plan)));
    let partition = &built.plan.partitions[0];
    let base = partition.memory.base.0;
    assert_eq!((partition.image_load, partition.entry), (base, base + entry));
    let lines = run.partition_lines("suite");
    check(&run, lines.len() == 3, "three lines");
    // Loaded at the start of its RAM, entered with x0 = its device tree, which lies past all
    // the bytes it needs.
    check(&run, lines[0] == format!("self-relocating: loaded at {base:#x}, x0 {:#x} holds a device tree: true", partition.dtb_load), "where it was loaded");
    let bss_end = hex_after(lines[1], "BSS ends at ");
    check(&run, lines[1].ends_with("cleared: true") && bss_end <= base + loaded.footprint && bss_end <= partition.dtb_load, "its BSS, clear and clear of the device tree");
    check(&run, lines[2] == "self-relocating: a relocated pointer reads right", "its relocations applied");
}
